"""With the database unreachable the receiver answers 503 with Retry-After (a problem),
which Alertmanager retries; never a 500 and never a 2xx that would lose the alerts."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
from pydantic import SecretStr

from app.auth.secrets import new_token, new_token_id
from app.bootstrap import build_context
from app.core.settings import Settings
from app.main import create_app
from tests.alerts import payloads
from tests.alerts.conftest import RECEIVER
from tests.helpers import REDIS_URL, free_port


async def test_a_database_outage_is_a_503_to_retry(tmp_path: Path) -> None:
    # Nothing listens on this loopback port: every connection is refused.
    settings = Settings(
        state_dir=tmp_path,
        database_url=SecretStr(f"postgresql://postgres@127.0.0.1:{free_port()}/none"),
        redis_url=SecretStr(REDIS_URL),
        redis_prefix=f"formula-ops-test-{uuid.uuid4().hex[:12]}",
        ready_timeout_seconds=1,
    )
    context = build_context(settings)
    try:
        app = create_app(settings, context=context)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            # A well-formed token whose row cannot be read.
            token, _ = new_token(new_token_id())
            answer = await client.post(
                RECEIVER, json=payloads.firing(), headers={"Authorization": f"Bearer {token}"}
            )
    finally:
        await context.aclose()
    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert int(answer.headers["retry-after"]) > 0
