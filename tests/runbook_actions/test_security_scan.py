"""``security_log_scan`` over files: only inside the allowed folders (links and ``..``
cannot lead out), the newest lines within the window, and a suspicious source announced
as ``security.suspicious_activity`` in its own transaction."""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from app.core.context import AppContext
from app.outbox.models import OutboxEvent
from app.runbooks.actions.security import (
    SUSPICIOUS_ACTIVITY,
    SecurityLogScanParams,
    SuspiciousActivityData,
    read_lines,
    security_log_scan,
)
from app.runs.models import Level, StepStatus
from tests.runbook_actions.helpers import RUN_ID, step_context

SECRET = "QueryStringSecret42"


def failed_login(ip: str) -> str:
    """An access-log line of a refused login, written five minutes ago (a fixed date would
    fall out of the scan's default 24-hour window one day later)."""
    at = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    return (
        f'{ip} - - [{at:%d/%b/%Y:%H:%M:%S} +0000] "POST /api/auth/login?token={SECRET} '
        'HTTP/1.1" 401 61 "-" "curl/8.0"\n'
    )


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    allowed, outside = tmp_path / "logs", tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    (outside / "secret.log").write_text(failed_login("192.0.2.99") * 50)
    return allowed, outside


async def events(context: AppContext) -> list[OutboxEvent]:
    async with context.sessionmaker() as session:
        rows = await session.scalars(
            select(OutboxEvent).where(OutboxEvent.type == SUSPICIOUS_ACTIVITY)
        )
        return list(rows)


class TestThreshold:
    async def test_repeated_failures_of_one_source_are_a_warning_and_an_event(
        self, context: AppContext, folders: tuple[Path, Path]
    ) -> None:
        allowed, _ = folders
        (allowed / "access.log").write_text(
            failed_login("203.0.113.7") * 12 + failed_login("198.51.100.4") * 2
        )
        ctx, logged = step_context(context, log_paths=[allowed])
        params = SecurityLogScanParams(
            environment="production", paths=[str(allowed)], threshold=10, since_minutes=None
        )
        outcome = await security_log_scan(params, ctx)
        assert outcome.status == StepStatus.SUCCESS
        assert outcome.level == Level.WARNING
        assert outcome.data["suspicious"] == ["203.0.113.7"]
        assert outcome.data["failed_logins"] == 14
        assert [s["failures"] for s in outcome.data["top_sources"]] == [12, 2]
        assert logged == ["203.0.113.7: 12 failure(s)"]
        assert SECRET not in json.dumps(outcome.data) + outcome.output

        [event] = await events(context)
        data = SuspiciousActivityData.model_validate(event.data)
        assert (data.environment, data.source, data.failures, data.threshold) == (
            "production",
            "203.0.113.7",
            12,
            10,
        )
        assert data.run_id == RUN_ID
        assert data.sample_lines
        assert SECRET not in json.dumps(event.data)
        assert "[redacted]" in data.sample_lines[0]

    async def test_below_the_threshold_no_event(
        self, context: AppContext, folders: tuple[Path, Path]
    ) -> None:
        allowed, _ = folders
        (allowed / "access.log").write_text(failed_login("203.0.113.7") * 9)
        ctx, _ = step_context(context, log_paths=[allowed])
        params = SecurityLogScanParams(paths=[str(allowed / "access.log")], threshold=10)
        outcome = await security_log_scan(params, ctx)
        assert (outcome.status, outcome.level) == (StepStatus.SUCCESS, Level.OK)
        assert outcome.data["top_sources"][0]["failures"] == 9
        assert await events(context) == []


@pytest.mark.one_backend("sqlite")
class TestAllowedFolders:
    @pytest.mark.parametrize(
        "path",
        [
            "{outside}/secret.log",
            "{outside}",
            "{allowed}/../outside/secret.log",
            "{allowed}/sub/../access.log",  # lands inside, still refused as written
            "logs/access.log",
            "/",
        ],
    )
    async def test_a_path_outside_is_refused(
        self, context: AppContext, folders: tuple[Path, Path], path: str
    ) -> None:
        allowed, outside = folders
        (allowed / "sub").mkdir()
        (allowed / "access.log").write_text(failed_login("203.0.113.7"))
        ctx, _ = step_context(context, log_paths=[allowed])
        given = path.format(allowed=allowed, outside=outside)
        params = SecurityLogScanParams(paths=[str(allowed), given], threshold=1)
        outcome = await security_log_scan(params, ctx)
        assert outcome.status == StepStatus.FAILURE
        assert outcome.error is not None
        assert outcome.error.startswith("refused:")
        assert await events(context) == []

    async def test_a_link_that_leads_out_is_refused(
        self, context: AppContext, folders: tuple[Path, Path]
    ) -> None:
        allowed, outside = folders
        (allowed / "escape.log").symlink_to(outside / "secret.log")
        (allowed / "escape").symlink_to(outside)
        ctx, _ = step_context(context, log_paths=[allowed])
        for path in (allowed / "escape.log", allowed / "escape", allowed / "escape/secret.log"):
            params = SecurityLogScanParams(paths=[str(path)], threshold=1)
            outcome = await security_log_scan(params, ctx)
            assert outcome.status == StepStatus.FAILURE, path
            assert "outside the allowed folders" in (outcome.error or "")

    async def test_a_folder_scan_does_not_follow_links(
        self, context: AppContext, folders: tuple[Path, Path]
    ) -> None:
        allowed, outside = folders
        (allowed / "access.log").write_text(failed_login("203.0.113.7"))
        (allowed / "escape.log").symlink_to(outside / "secret.log")
        ctx, _ = step_context(context, log_paths=[allowed])
        params = SecurityLogScanParams(paths=[str(allowed)], threshold=1)
        outcome = await security_log_scan(params, ctx)
        assert outcome.status == StepStatus.SUCCESS
        assert outcome.data["lines_scanned"] == 1
        assert outcome.data["files"] == [str((allowed / "access.log").resolve())]

    async def test_nothing_is_allowed_but_the_own_service_logs_by_default(
        self, context: AppContext, folders: tuple[Path, Path]
    ) -> None:
        allowed, _ = folders
        (allowed / "access.log").write_text(failed_login("203.0.113.7"))
        ctx, _ = step_context(context)
        outcome = await security_log_scan(SecurityLogScanParams(paths=[str(allowed)]), ctx)
        assert outcome.status == StepStatus.FAILURE
        own = context.settings.state_dir / "processes" / "prod"
        own.mkdir(parents=True, exist_ok=True)
        (own / "api.log").write_text(failed_login("203.0.113.7"))
        outcome = await security_log_scan(SecurityLogScanParams(paths=[str(own)]), ctx)
        assert outcome.status == StepStatus.SUCCESS
        assert outcome.data["failed_logins"] == 1


@pytest.mark.one_backend("sqlite")
class TestBounds:
    async def test_files_older_than_the_window_are_skipped(
        self, context: AppContext, folders: tuple[Path, Path]
    ) -> None:
        allowed, _ = folders
        (allowed / "old.log").write_text(failed_login("203.0.113.7") * 5)
        (allowed / "new.log").write_text(failed_login("198.51.100.4") * 2)
        (allowed / "rotated.log.1.gz").write_bytes(b"\x1f\x8b")
        hours_ago = time.time() - 3 * 3600
        os.utime(allowed / "old.log", (hours_ago, hours_ago))
        ctx, _ = step_context(context, log_paths=[allowed])
        params = SecurityLogScanParams(paths=[str(allowed)], since_minutes=60, threshold=100)
        outcome = await security_log_scan(params, ctx)
        assert outcome.level == Level.OK  # nothing unreadable
        assert outcome.data["files"] == [str((allowed / "new.log").resolve())]
        reasons = {Path(s["path"]).name: s["reason"] for s in outcome.data["skipped"]}
        assert reasons == {
            "old.log": "not modified in the window",
            "rotated.log.1.gz": "compressed",
        }

    async def test_max_lines_reads_the_newest_lines(
        self, context: AppContext, folders: tuple[Path, Path]
    ) -> None:
        allowed, _ = folders
        lines = failed_login("203.0.113.7") * 30 + failed_login("198.51.100.4") * 7
        (allowed / "access.log").write_text(lines)
        ctx, _ = step_context(context, log_paths=[allowed])
        params = SecurityLogScanParams(
            paths=[str(allowed / "access.log")], max_lines=10, threshold=100
        )
        outcome = await security_log_scan(params, ctx)
        assert outcome.data["lines_scanned"] == 10
        counts = {s["source"]: s["failures"] for s in outcome.data["top_sources"]}
        assert counts == {"198.51.100.4": 7, "203.0.113.7": 3}

    async def test_a_missing_file_is_a_warning(
        self, context: AppContext, folders: tuple[Path, Path]
    ) -> None:
        allowed, _ = folders
        ctx, _ = step_context(context, log_paths=[allowed])
        params = SecurityLogScanParams(paths=[str(allowed / "gone.log")])
        outcome = await security_log_scan(params, ctx)
        assert (outcome.status, outcome.level) == (StepStatus.SUCCESS, Level.WARNING)
        assert outcome.data["skipped"][0]["reason"] == "No such file or directory"


@pytest.mark.parametrize("trailing_newline", [True, False])
@pytest.mark.parametrize("wanted", [1, 1234, 4999, 5000, 6000])
def test_the_last_lines_of_a_file_larger_than_a_block(
    tmp_path: Path, wanted: int, trailing_newline: bool
) -> None:
    text = "".join(f"line {n:05d} {'x' * 50}\n" for n in range(5000))
    path = tmp_path / "big.log"
    path.write_text(text if trailing_newline else text.rstrip("\n"))
    read = list(read_lines([path], wanted, threading.Event()))
    expected = min(wanted, 5000)
    assert len(read) == expected
    assert read[0].startswith(f"line {5000 - expected:05d} ")
    assert read[-1].startswith("line 04999 ")
