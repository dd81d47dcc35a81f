"""``/v1/thresholds`` over HTTP: the runbook's five thresholds read by viewers, changed by
admins only (with ETags, audited), every change checked as a whole; bad input answered
with problems."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from app.auth.roles import Role
from app.core.context import AppContext
from app.thresholds import service
from tests.factories import IssuedToken, issue_token
from tests.helpers import audit_events_after, last_audit_seq

PROBLEM = "application/problem+json"
NAMES = [
    "backup_age",
    "backup_verified_age",
    "cpu",
    "disk",
    "error_rate",
    "latency_p95",
    "memory",
]


@pytest.fixture
async def viewer(context: AppContext) -> IssuedToken:
    return await issue_token(context, Role.VIEWER)


@pytest.fixture
async def operator(context: AppContext) -> IssuedToken:
    return await issue_token(context, Role.OPERATOR)


def assert_problem(response: httpx.Response, status: int, type_: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM, response.text
    if type_ is not None:
        assert response.json()["type"] == type_, response.text


async def patch(
    client: httpx.AsyncClient, token: IssuedToken, name: str, body: Any, **headers: str
) -> httpx.Response:
    return await client.patch(
        f"/v1/thresholds/{name}", json=body, headers={**token.headers, **headers}
    )


async def test_viewers_read_the_runbooks_thresholds(
    client: httpx.AsyncClient, viewer: IssuedToken
) -> None:
    listed = await client.get("/v1/thresholds", headers=viewer.headers)
    assert listed.status_code == 200, listed.text
    items = {t["name"]: t for t in listed.json()["items"]}
    assert list(items) == NAMES
    assert listed.json()["next_cursor"] is None
    error_rate = items["error_rate"]
    assert (error_rate["warning"], error_rate["critical"]) == (1.0, 5.0)
    assert (error_rate["warning_severity"], error_rate["critical_severity"]) == ("P2", "P1")
    assert error_rate["unit"] == "percent"
    assert "HighErrorRate" in error_rate["alert_names"]
    assert "$service" in error_rate["prometheus_query"]
    assert (items["latency_p95"]["warning"], items["latency_p95"]["critical"]) == (1000, 2000)
    assert (items["disk"]["warning"], items["disk"]["critical"]) == (80, 95)
    assert (items["memory"]["warning"], items["memory"]["critical"]) == (85, None)
    assert (items["cpu"]["warning"], items["cpu"]["critical"]) == (80, None)

    one = await client.get("/v1/thresholds/disk", headers=viewer.headers)
    assert one.status_code == 200
    assert one.json() == items["disk"]
    assert one.headers["etag"] == '"disk.1"'
    assert one.headers["location"] == "/v1/thresholds/disk"

    pages, cursor, names = 0, "", []
    while True:
        page = await client.get(
            "/v1/thresholds", params={"limit": 2, "cursor": cursor}, headers=viewer.headers
        )
        names += [t["name"] for t in page.json()["items"]]
        pages += 1
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert (names, pages) == (NAMES, 4)


async def test_admins_change_a_threshold_with_etags_and_audit(
    context: AppContext, client: httpx.AsyncClient, admin: IssuedToken
) -> None:
    seq = await last_audit_seq(context)
    tag = (await client.get("/v1/thresholds/error_rate", headers=admin.headers)).headers["etag"]
    changed = await patch(
        client,
        admin,
        "error_rate",
        {
            "warning": 2,
            "critical": 10,
            "critical_severity": "P0",
            "alert_names": ["HighErrorRate", "ApiErrors"],
            "prometheus_query": 'sum(rate(errors{env="$environment"}[$window]))',
        },
        **{"If-Match": tag},
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["warning"], body["critical"], body["critical_severity"]) == (2, 10, "P0")
    assert body["warning_severity"] == "P2"  # absent: kept
    assert body["alert_names"] == ["HighErrorRate", "ApiErrors"]
    assert body["updated_by"] == f"token:{admin.id}"
    assert body["version"] == 2
    assert changed.headers["etag"] == '"error_rate.2"'

    stale = await patch(client, admin, "error_rate", {"warning": 3}, **{"If-Match": tag})
    assert_problem(stale, 412, "/problems/precondition-failed")

    # the services read the new values
    async with context.sessionmaker() as session:
        loaded = await service.load(session)
    assert service.grade(loaded["error_rate"], 6) == "warning"
    assert service.grade(loaded["error_rate"], 10.5) == "critical"
    assert service.severity_for(loaded["error_rate"], "critical") == "P0"
    assert service.for_alert(loaded, "apierrors", {}) is loaded["error_rate"]

    audit = await audit_events_after(context, seq, action="threshold.update")
    assert [(e.outcome, e.resource_id) for e in audit] == [
        ("success", "error_rate"),
        ("failed", "error_rate"),
    ]
    assert audit[0].summary["changes"]["critical"] == {"from": 5.0, "to": 10}
    assert audit[0].actor_token_id == admin.id


async def test_a_level_may_be_removed_and_set_again(
    context: AppContext, client: httpx.AsyncClient, admin: IssuedToken
) -> None:
    removed = await patch(client, admin, "disk", {"warning": None})
    assert removed.status_code == 200, removed.text
    assert (removed.json()["warning"], removed.json()["critical"]) == (None, 95)
    async with context.sessionmaker() as session:
        disk = (await service.load(session))["disk"]
    assert service.grade(disk, 90) == "ok"
    # the stored critical level bounds a new warning
    assert_problem(await patch(client, admin, "disk", {"warning": 95}), 422)
    again = await patch(client, admin, "disk", {"warning": 70})
    assert (again.json()["warning"], again.json()["critical"]) == (70, 95)
    nothing = await patch(client, admin, "disk", {"warning": 70})
    assert nothing.json()["version"] == again.json()["version"]


async def test_only_admins_change_thresholds(
    client: httpx.AsyncClient,
    viewer: IssuedToken,
    operator: IssuedToken,
    deployer: IssuedToken,
    admin: IssuedToken,
) -> None:
    for token in (viewer, deployer, operator):
        assert (await client.get("/v1/thresholds/cpu", headers=token.headers)).status_code == 200
        assert_problem(await patch(client, token, "cpu", {"warning": 50}), 403)
    assert (await client.get("/v1/thresholds")).status_code == 401
    read = await client.get("/v1/thresholds/cpu", headers=admin.headers)
    assert (read.json()["warning"], read.json()["version"]) == (80, 1)


BAD_PATCHES: list[tuple[str, Any]] = [
    ("error_rate", {"warning": 5}),  # equal to the stored critical
    ("error_rate", {"warning": 6}),  # above it
    ("error_rate", {"warning": 3, "critical": 2}),
    ("error_rate", {"critical": 101}),  # a percentage
    ("latency_p95", {"warning": 3000}),  # above the stored critical (ms)
    ("error_rate", {"warning": -1}),
    ("error_rate", {"warning": "high"}),
    ("error_rate", {"warning": True}),
    ("latency_p95", {"critical": 1e10}),
    ("error_rate", {"warning_severity": "P4"}),
    ("error_rate", {"warning_severity": "p1"}),
    ("error_rate", {"critical_severity": "P3"}),  # milder than the warning's P2
    ("error_rate", {"warning_severity": "P0"}),  # more severe than the critical's P1
    ("error_rate", {"title": ""}),
    ("error_rate", {"title": None}),
    ("error_rate", {"title": "line\nbreak"}),
    ("error_rate", {"description": "bell\x07"}),
    ("error_rate", {"alert_names": None}),
    ("error_rate", {"alert_names": ["A", "a"]}),
    ("error_rate", {"alert_names": [""]}),
    ("error_rate", {"alert_names": [" Padded"]}),
    ("error_rate", {"alert_names": ["tab\tinside"]}),
    ("error_rate", {"alert_names": "HighErrorRate"}),
    ("error_rate", {"alert_names": [f"A{i}" for i in range(51)]}),
    ("error_rate", {"prometheus_query": ""}),
    ("error_rate", {"prometheus_query": "rate(x[$interval])"}),
    ("error_rate", {"prometheus_query": 'up{job="${job}"}'}),
    ("error_rate", {"prometheus_query": "cost_in_$"}),
    ("error_rate", {"prometheus_query": "nul\x00"}),
    ("error_rate", {"unit": "seconds"}),  # not changeable
    ("error_rate", {"name": "errors"}),
    ("error_rate", {"version": 9}),
    ("error_rate", []),
]


async def test_bad_changes_are_problems_and_change_nothing(
    client: httpx.AsyncClient, admin: IssuedToken
) -> None:
    before = (await client.get("/v1/thresholds", headers=admin.headers)).json()
    for name, body in BAD_PATCHES:
        response = await patch(client, admin, name, body)
        assert response.status_code == 422, (name, body, response.text)
        assert_problem(response, 422)
        assert response.json()["errors"], (body, response.text)
    for raw in (b'{"warning": NaN}', b'{"critical": Infinity}', b"{not json"):
        response = await client.patch(
            "/v1/thresholds/error_rate",
            content=raw,
            headers={**admin.headers, "content-type": "application/json"},
        )
        assert_problem(response, 422)
    assert_problem(await patch(client, admin, "errors", {"warning": 1}), 404)
    assert_problem(await patch(client, admin, "Error-Rate", {"warning": 1}), 422)
    assert_problem(
        await client.get("/v1/thresholds/nothing", headers=admin.headers),
        404,
        "/problems/threshold-not-found",
    )
    for params in ({"cursor": "Not-A-Name"}, {"limit": 0}, {"limit": 500}, {"unit": "percent"}):
        response = await client.get("/v1/thresholds", params=params, headers=admin.headers)
        assert_problem(response, 422)
    stale = await patch(client, admin, "cpu", {"warning": 70}, **{"If-Match": '"cpu.0"'})
    assert_problem(stale, 412)
    after = (await client.get("/v1/thresholds", headers=admin.headers)).json()
    assert after == before


async def test_an_alert_name_measures_one_quantity(
    client: httpx.AsyncClient, admin: IssuedToken
) -> None:
    taken = await patch(
        client, admin, "latency_p95", {"alert_names": ["HighLatency", "higherrorrate"]}
    )
    assert_problem(taken, 409, "/problems/alert-name-taken")
    assert "error_rate" in taken.json()["detail"]
    freed = await patch(client, admin, "error_rate", {"alert_names": ["ErrorRateHigh"]})
    assert freed.status_code == 200, freed.text
    moved = await patch(
        client, admin, "latency_p95", {"alert_names": ["HighLatency", "HighErrorRate"]}
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["alert_names"] == ["HighLatency", "HighErrorRate"]
