"""The status page in a real headless Chromium (Debian's ``chromium``, driven by the
``playwright`` package; no browser is ever downloaded): what a reader sees for "all
operational", "P1 incident on Backend API" and "maintenance in progress", with a
screenshot of each under ``test-artifacts/status/``.

The application is served by uvicorn on 127.0.0.1 (``served``, tests/status/conftest.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.core.context import AppContext
from tests.status import data

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "status"
# /work/shared RECIPES: headless Chromium on this machine kind.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.slow

if not CHROMIUM.exists():
    if os.environ.get("CI") == "true":
        pytest.fail(
            "/usr/bin/chromium is missing: CI installs it "
            "(apt-get install -y --no-install-recommends chromium)",
            pytrace=False,
        )
    pytest.skip(
        "/usr/bin/chromium is not installed (apt-get install -y --no-install-recommends chromium)",
        allow_module_level=True,
    )


async def scenario(name: str, context: AppContext) -> None:
    page = await data.seed_components(context)
    if name == "p1-incident-backend-api":
        await data.open_incident(context, page)
    elif name == "maintenance-in-progress":
        await data.maintenance(context, page)


EXPECTED = {
    "all-operational": {
        "status": "All Systems Operational",
        "rows": {"Backend API": "Operational", "Database": "Operational"},
        "present": ["No maintenance is scheduled."],
        "absent": ["Active incidents", "Maintenance in progress"],
    },
    "p1-incident-backend-api": {
        "status": "Partial System Outage",
        "rows": {"Backend API": "Partial outage", "Frontend": "Operational"},
        "present": [
            "Active incidents",
            "Elevated error rate on the Backend API",
            "Major impact",
            "We are investigating elevated error rates on the API.",
        ],
        "absent": [data.INTERNAL_UPDATE, "P1", data.COMMANDER],
    },
    "maintenance-in-progress": {
        "status": "Service Under Maintenance",
        "rows": {"Database": "Under maintenance", "Backend API": "Operational"},
        "present": [
            "Maintenance in progress",
            "Database upgrade to PostgreSQL 16",
            "The database upgrade is under way.",
        ],
        "absent": ["Active incidents"],
    },
}


@pytest.mark.parametrize("name", list(EXPECTED))
async def test_what_a_reader_sees(
    name: str,
    served: str,
    context: AppContext,
    backend: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from playwright.async_api import async_playwright

    await scenario(name, context)
    expected = EXPECTED[name]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / f"{name}-{backend}.png"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=FLAGS,
            java_script_enabled=False,  # the page needs none
            viewport={"width": 1000, "height": 900},
        )
        try:
            tab = await browser.new_page()
            # Nothing but this server: any other request fails the test.
            others: list[str] = []

            async def only_loopback(route: object) -> None:
                request = route.request  # type: ignore[attr-defined]
                if request.url.startswith(served):
                    await route.continue_()  # type: ignore[attr-defined]
                else:
                    others.append(request.url)
                    await route.abort()  # type: ignore[attr-defined]

            await tab.route("**/*", only_loopback)
            response = await tab.goto(f"{served}/status")
            assert response is not None
            assert response.status == 200
            assert await tab.title() == f"Formula Ops status: {expected['status']}"
            heading = tab.get_by_role("heading", level=1)
            assert await heading.inner_text() == "Formula Ops status"
            overall = await tab.get_by_role("status").inner_text()
            assert expected["status"] in overall
            visible = await tab.locator("body").inner_text()
            for component, label in expected["rows"].items():
                row = tab.locator("ul.components li", has_text=component)
                assert label in await row.inner_text(), (component, label)
            for text in expected["present"]:
                assert text in visible, text
            for text in expected["absent"]:
                assert text not in visible, text
            await tab.screenshot(path=str(shot), full_page=True)
            assert not others, others
        finally:
            await browser.close()
    assert shot.stat().st_size > 1000
    with capsys.disabled():
        print(f"\nscreenshot: {shot}")
