"""The ``notify`` step action writes one ``runbook.notification`` event, once."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.core.context import AppContext
from app.core.settings import Settings
from app.models import OutboxEvent, RunEvent
from app.runbooks.actions.notify import NotifyParams, notify
from app.runbooks.events import RunbookNotificationData
from app.runs.actions import StepContext
from app.runs.service import StepSpec
from tests.helpers import run_worker_burst
from tests.runbook_actions.conftest import create, read


async def notifications(context: AppContext) -> list[OutboxEvent]:
    async with context.sessionmaker() as session:
        return list(
            await session.scalars(
                select(OutboxEvent).where(OutboxEvent.type == "runbook.notification")
            )
        )


class TestNotify:
    async def test_the_event_carries_the_run_the_runbook_and_the_message(
        self, context: AppContext, settings: Settings
    ) -> None:
        run_id = await create(
            context,
            [
                StepSpec(
                    "tell the team",
                    "notify",
                    {"message": "2 queries were ended", "severity": "warning"},
                )
            ],
            environment="production",
            params={"runbook": "db-long-running-queries"},
        )
        await run_worker_burst(settings)
        run = await read(context, run_id)
        assert run.status == "success"
        assert run.steps[0].result is not None
        assert run.steps[0].result["summary"] == "warning: 2 queries were ended"
        [event] = await notifications(context)
        data = RunbookNotificationData.model_validate(event.data)
        assert data.id == run_id
        assert data.runbook == "db-long-running-queries"
        assert data.environment == "production"
        assert (data.severity, data.message, data.position) == (
            "warning",
            "2 queries were ended",
            0,
        )
        assert data.links.self == f"/v1/runs/{run_id}"

    async def test_a_step_run_again_sends_nothing_twice(self, context: AppContext) -> None:
        run_id = await create(context, [StepSpec("say", "notify", {"message": "hello"})])

        async def log(line: str) -> None:
            pass

        step = StepContext(context, log, run_id, 0)
        first = await notify(NotifyParams(message="hello"), step)
        again = await notify(NotifyParams(message="hello"), step)
        assert first.status == again.status == "success"
        assert again.output.startswith("sent already")
        [event] = await notifications(context)
        assert event.data["severity"] == "info"
        assert event.data["runbook"] is None
        async with context.sessionmaker() as session:
            marks = list(
                await session.scalars(
                    select(RunEvent.data).where(
                        RunEvent.run_id == run_id, RunEvent.type == "notification.sent"
                    )
                )
            )
        assert marks == [{"position": 0, "severity": "info", "event_id": event.id}]

    def test_messages_are_bounded(self) -> None:
        with pytest.raises(ValueError, match="at most 2000 characters"):
            NotifyParams(message="x" * 2001)
        with pytest.raises(ValueError, match="severity"):
            NotifyParams.model_validate({"message": "x", "severity": "panic"})
