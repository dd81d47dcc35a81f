"""Approval steps and their answers over HTTP, with a real worker: the long-running
query playbook ends a real query only once approved; refusals are problems."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import select

from app.auth.roles import Role
from app.core.context import AppContext
from app.core.notify import wait_for
from app.models import OutboxEvent, RunEvent
from app.runbooks.actions.approval import ApprovalParams, approval
from app.runbooks.events import ApprovalDecidedData, ApprovalRequestedData
from app.runbooks.models import RunApproval
from app.runs.actions import StepContext
from app.runs.service import StepSpec
from tests.factories import IssuedToken, issue_token
from tests.helpers import audit_events_after, last_audit_seq
from tests.runbook_actions.conftest import add_environment, create

PROBLEM = "application/problem+json"
LONG_QUERY = "SELECT pg_sleep(600)"


@pytest.fixture
async def operator(context: AppContext) -> IssuedToken:
    return await issue_token(context, Role.OPERATOR)


async def awaiting(
    client: httpx.AsyncClient, run_id: str, token: IssuedToken, limit: float = 30
) -> dict[str, Any]:
    """The run once it waits for an approval."""
    deadline = time.monotonic() + limit
    while True:
        body: dict[str, Any] = (
            await client.get(f"/v1/runs/{run_id}", headers=token.headers)
        ).json()
        if body["awaiting_approval"] is not None:
            return body
        assert body["status"] in ("queued", "in_progress"), body
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.05)


async def finished(client: httpx.AsyncClient, run_id: str, token: IssuedToken) -> dict[str, Any]:
    response = await client.get(f"/v1/runs/{run_id}?wait=30", headers=token.headers)
    body: dict[str, Any] = response.json()
    assert body["status"] not in ("queued", "in_progress"), body
    return body


def approval_step(timeout: float = 60, **params: Any) -> StepSpec:
    return StepSpec(
        "approve it",
        "approval",
        {"prompt": "End the long queries?", "timeout_seconds": timeout, **params},
        timeout_seconds=timeout + 30,
    )


# -- the long-running-query playbook --------------------------------------------------

OLDER_THAN = (
    "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    " AND state = 'active' AND now() - query_start > make_interval(secs => :seconds)"
)


def playbook() -> list[StepSpec]:
    return [
        StepSpec(
            "queries running longer than the limit",
            "sql",
            {
                "environment": "shop",
                "query": f"SELECT pid, now() - query_start AS duration, query {OLDER_THAN}",
                "binds": {"seconds": 1},
                "warning_rows": 1,
            },
            timeout_seconds=60,
        ),
        approval_step(),
        StepSpec(
            "end them",
            "sql",
            {
                "environment": "shop",
                "query": f"SELECT pg_terminate_backend(pid) AS ended {OLDER_THAN}",
                "binds": {"seconds": 1},
                "write": True,
            },
            idempotent=False,
            timeout_seconds=60,
        ),
    ]


@pytest.fixture
async def long_query(scratch_pg: str) -> AsyncIterator[asyncio.Task[Any]]:
    """``SELECT pg_sleep(600)`` on a connection of its own in the scratch database,
    running for more than a second."""
    conn = await psycopg.AsyncConnection.connect(scratch_pg, autocommit=True)
    task = asyncio.create_task(conn.execute(LONG_QUERY))
    await asyncio.sleep(1.5)
    assert not task.done()
    yield task
    if not task.done():
        await conn.cancel_safe()
    await asyncio.gather(task, return_exceptions=True)
    await conn.close()


def still_running(url: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND query = %s AND state = 'active'",
            [LONG_QUERY],
        ).fetchone()
    return bool(row and row[0] == 1)


@pytest.mark.one_backend("postgres")
class TestLongRunningQueryPlaybook:
    async def test_the_query_ends_only_after_the_approval(
        self,
        client: httpx.AsyncClient,
        context: AppContext,
        operator: IssuedToken,
        worker: None,
        scratch_pg: str,
        long_query: asyncio.Task[Any],
    ) -> None:
        await add_environment(context, "shop", scratch_pg)
        seq = await last_audit_seq(context)
        run_id = await create(
            context, playbook(), environment="shop", params={"runbook": "db-long-running-queries"}
        )
        body = await awaiting(client, run_id, operator)
        assert body["awaiting_approval"] == {
            "position": 1,
            "name": "approve it",
            "prompt": "End the long queries?",
        }
        listed = body["steps"][0]
        assert listed["level"] == "warning"
        assert [row[2] for row in listed["result"]["rows"]] == [LONG_QUERY]
        await asyncio.sleep(0.5)
        assert still_running(scratch_pg)
        assert not long_query.done()

        response = await client.post(
            f"/v1/runs/{run_id}/approve", json={"reason": "checked"}, headers=operator.headers
        )
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["decision"] == "approved"
        assert answer["decided_by"] == f"token:{operator.id}"

        body = await finished(client, run_id, operator)
        assert body["status"] == "success", body
        assert body["awaiting_approval"] is None
        assert body["steps"][1]["result"]["decision"] == "approved"
        assert body["steps"][1]["output"] == f"approved by token {operator.id}: checked"
        assert body["steps"][2]["result"]["rows"] == [[True]]
        with pytest.raises(psycopg.errors.AdminShutdown):
            await asyncio.wait_for(long_query, 10)

        [audit] = await audit_events_after(context, seq, action="run.approve")
        assert audit.resource_id == run_id
        async with context.sessionmaker() as session:
            types = [
                e.type
                for e in await session.scalars(
                    select(RunEvent).where(RunEvent.run_id == run_id).order_by(RunEvent.seq)
                )
            ]
            outbox = {
                e.type: e.data
                for e in await session.scalars(
                    select(OutboxEvent).where(OutboxEvent.type.like("runbook.approval_%"))
                )
            }
        assert types.index("approval.requested") < types.index("approval.decided")
        requested = ApprovalRequestedData.model_validate(outbox["runbook.approval_requested"])
        decided = ApprovalDecidedData.model_validate(outbox["runbook.approval_decided"])
        assert requested.runbook == decided.runbook == "db-long-running-queries"
        assert requested.position == decided.position == 1
        assert decided.decision == "approved"
        assert decided.reason == "checked"

    async def test_a_rejection_fails_the_run_and_the_query_goes_on(
        self,
        client: httpx.AsyncClient,
        context: AppContext,
        operator: IssuedToken,
        worker: None,
        scratch_pg: str,
        long_query: asyncio.Task[Any],
    ) -> None:
        await add_environment(context, "shop", scratch_pg)
        run_id = await create(context, playbook(), environment="shop")
        await awaiting(client, run_id, operator)
        response = await client.post(
            f"/v1/runs/{run_id}/reject",
            json={"reason": "the report must finish"},
            headers=operator.headers,
        )
        assert response.status_code == 200, response.text
        body = await finished(client, run_id, operator)
        assert body["status"] == "failure"
        expected = f"rejected by token {operator.id}: the report must finish"
        assert body["steps"][1]["error"] == expected
        assert expected in body["failure"]["detail"]
        assert body["steps"][2]["status"] in ("pending", "skipped")  # never ran
        assert still_running(scratch_pg)
        assert not long_query.done()


# -- the endpoints' refusals --------------------------------------------------------


def assert_problem(response: httpx.Response, status: int, type_: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.json()["type"] == type_


class TestAnswers:
    async def test_unknown_and_invisible_runs_are_404(
        self, client: httpx.AsyncClient, context: AppContext, operator: IssuedToken
    ) -> None:
        run_id = await create(context, [approval_step()], environment="production")
        staging = await issue_token(context, Role.OPERATOR, environment="staging")
        for token, run in ((operator, "no-such-run"), (staging, run_id)):
            for verb, body in (("approve", {}), ("reject", {"reason": "no"})):
                response = await client.post(
                    f"/v1/runs/{run}/{verb}", json=body, headers=token.headers
                )
                assert_problem(response, 404, "/problems/run-not-found")

    async def test_a_run_not_waiting_for_approval_is_409(
        self, client: httpx.AsyncClient, context: AppContext, operator: IssuedToken
    ) -> None:
        # Queued (no worker): its approval step has not started.
        run_id = await create(context, [approval_step()])
        response = await client.post(f"/v1/runs/{run_id}/approve", headers=operator.headers)
        assert_problem(response, 409, "/problems/no-pending-approval")
        viewer = await issue_token(context, Role.VIEWER)
        response = await client.post(f"/v1/runs/{run_id}/approve", headers=viewer.headers)
        assert_problem(response, 403, "/problems/forbidden")
        response = await client.post(f"/v1/runs/{run_id}/reject", json={}, headers=operator.headers)
        assert_problem(response, 422, "/problems/validation-error")

    async def test_the_first_answer_counts_and_the_requester_may_not_approve(
        self,
        client: httpx.AsyncClient,
        context: AppContext,
        operator: IssuedToken,
        worker: None,
    ) -> None:
        requester = await issue_token(context, Role.OPERATOR)
        run_id = await create(context, [approval_step()], requested_by=f"token:{requester.id}")
        await awaiting(client, run_id, operator)
        response = await client.post(f"/v1/runs/{run_id}/approve", headers=requester.headers)
        assert_problem(response, 403, "/problems/approval-by-requester")

        key = {"Idempotency-Key": "approve-once"}
        first = await client.post(f"/v1/runs/{run_id}/approve", headers={**operator.headers, **key})
        assert first.status_code == 200, first.text
        replay = await client.post(
            f"/v1/runs/{run_id}/approve", headers={**operator.headers, **key}
        )
        assert replay.status_code == 200
        assert replay.json() == first.json()
        assert replay.headers["idempotent-replayed"] == "true"
        for verb, body in (("approve", {}), ("reject", {"reason": "too late"})):
            again = await client.post(
                f"/v1/runs/{run_id}/{verb}", json=body, headers=operator.headers
            )
            assert_problem(again, 409, "/problems/no-pending-approval")
        assert (await finished(client, run_id, operator))["status"] == "success"
        async with context.sessionmaker() as session:
            answers = list(await session.scalars(select(RunApproval)))
        assert [(a.decision, a.decided_by) for a in answers] == [
            ("approved", f"token:{operator.id}")
        ]

    async def test_the_requester_may_reject_and_an_admin_step_needs_an_admin(
        self,
        client: httpx.AsyncClient,
        context: AppContext,
        operator: IssuedToken,
        worker: None,
    ) -> None:
        run_id = await create(
            context,
            [approval_step(approvers_role="admin")],
            requested_by=f"token:{operator.id}",
        )
        await awaiting(client, run_id, operator)
        response = await client.post(
            f"/v1/runs/{run_id}/reject", json={"reason": "no"}, headers=operator.headers
        )
        assert_problem(response, 403, "/problems/forbidden")
        admin = await issue_token(context, Role.ADMIN)
        response = await client.post(
            f"/v1/runs/{run_id}/reject", json={"reason": "not now"}, headers=admin.headers
        )
        assert response.status_code == 200, response.text
        body = await finished(client, run_id, operator)
        assert body["status"] == "failure"
        assert body["steps"][0]["error"] == f"rejected by token {admin.id}: not now"

    async def test_no_answer_in_time_fails_the_step(
        self,
        client: httpx.AsyncClient,
        context: AppContext,
        operator: IssuedToken,
        worker: None,
    ) -> None:
        run_id = await create(context, [approval_step(timeout=1)])
        body = await finished(client, run_id, operator)
        assert body["status"] == "failure"
        assert body["steps"][0]["error"] == "no answer within 1 s"
        response = await client.post(f"/v1/runs/{run_id}/approve", headers=operator.headers)
        assert_problem(response, 409, "/problems/no-pending-approval")

    async def test_a_cancellation_ends_the_wait(
        self,
        client: httpx.AsyncClient,
        context: AppContext,
        operator: IssuedToken,
        worker: None,
    ) -> None:
        run_id = await create(context, [approval_step(), approval_step()])
        await awaiting(client, run_id, operator)
        started = time.monotonic()
        response = await client.post(f"/v1/runs/{run_id}/cancel", headers=operator.headers)
        assert response.status_code == 200, response.text
        body = await finished(client, run_id, operator)
        assert time.monotonic() - started < 10
        assert body["steps"][0]["error"] == "cancelled while waiting for approval"
        assert body["steps"][1]["status"] in ("pending", "skipped", "cancelled")


class TestResumedStep:
    async def test_it_asks_once_and_reads_the_stored_answer(self, context: AppContext) -> None:
        """A step run again (its worker died) keeps its first request and expiry and
        finds the answer given meanwhile."""
        run_id = await create(context, [approval_step()])

        async def log(line: str) -> None:
            pass

        step = StepContext(context, log, run_id, 0)
        params = ApprovalParams(prompt="Go?", timeout_seconds=60)
        with context.notifier.watch(run_id) as changed:
            waiting = asyncio.create_task(approval(params, step))
            async with asyncio.timeout(10):
                while not await requested_events(context, run_id):
                    await wait_for(changed, 0.5)
                    changed.clear()
        async with context.unit_of_work() as uow:
            uow.session.add(
                RunApproval(run_id=run_id, position=0, decision="approved", decided_by="ops")
            )
        await context.notifier.publish(run_id)
        first = await asyncio.wait_for(waiting, 10)
        again = await asyncio.wait_for(approval(params, step), 10)
        assert first.status == again.status == "success"
        assert again.output == first.output == "approved by ops"
        [asked] = await requested_events(context, run_id)
        assert asked["prompt"] == "Go?"


async def requested_events(context: AppContext, run_id: str) -> list[dict[str, Any]]:
    async with context.sessionmaker() as session:
        return list(
            await session.scalars(
                select(RunEvent.data).where(
                    RunEvent.run_id == run_id, RunEvent.type == "approval.requested"
                )
            )
        )
