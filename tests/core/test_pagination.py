"""Keyset pagination over the real ``run`` table, on both databases.

A listing route built only from the shared helpers is added to the app for the test
(the run listing itself belongs to the run-engine issue).
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import json
import re

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from pydantic import BaseModel, ConfigDict
from sqlalchemy import select

from app.auth.secrets import new_token_id
from app.cli.admin import render_openapi
from app.core.context import AppContext
from app.core.deps import CursorParamsDep, SessionDep
from app.core.ids import new_id
from app.core.pagination import (
    Cursor,
    Page,
    decode_cursor,
    encode_cursor,
    paginate,
)
from app.runs.models import Run, RunKind, RunStatus


class RunItem(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    created_at: dt.datetime


listing = APIRouter()


@listing.get("/v1/_probe/runs")
async def list_runs(session: SessionDep, page: CursorParamsDep) -> Page[RunItem]:
    rows, next_cursor = await paginate(
        session, select(Run), page, created_at=Run.created_at, id=Run.id
    )
    return Page[RunItem](items=[RunItem.model_validate(r) for r in rows], next_cursor=next_cursor)


@pytest.fixture
def app(fresh_app: FastAPI) -> FastAPI:
    fresh_app.include_router(listing)
    return fresh_app


async def insert_runs(context: AppContext, count: int, *, same_instant: bool = False) -> list[str]:
    base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    async with context.unit_of_work() as uow:
        runs = [
            Run(
                kind=RunKind.HEALTH_CHECK.value,
                status=RunStatus.QUEUED.value,
                params={},
                created_at=base if same_instant else base + dt.timedelta(seconds=i),
            )
            for i in range(count)
        ]
        uow.session.add_all(runs)
    return [r.id for r in runs]


async def walk(client: httpx.AsyncClient, limit: int) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        response = await client.get("/v1/_probe/runs", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append([item["id"] for item in body["items"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


class TestKeysetPagination:
    async def test_pages_cover_every_row_once_newest_first(
        self, client: httpx.AsyncClient, context: AppContext
    ) -> None:
        ids = await insert_runs(context, 23)
        pages = await walk(client, limit=5)
        assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
        assert [i for p in pages for i in p] == list(reversed(ids))

    async def test_ties_on_created_at_are_broken_by_id(
        self, client: httpx.AsyncClient, context: AppContext
    ) -> None:
        ids = await insert_runs(context, 7, same_instant=True)
        seen = [i for p in await walk(client, limit=3) for i in p]
        assert sorted(seen) == sorted(ids)
        assert len(seen) == len(set(seen))

    async def test_exact_multiple_ends_without_an_empty_page(
        self, client: httpx.AsyncClient, context: AppContext
    ) -> None:
        await insert_runs(context, 10)
        assert [len(p) for p in await walk(client, limit=5)] == [5, 5]

    async def test_stable_under_inserts(
        self, client: httpx.AsyncClient, context: AppContext
    ) -> None:
        ids = await insert_runs(context, 6)
        first = (await client.get("/v1/_probe/runs", params={"limit": 3})).json()
        async with context.unit_of_work() as uow:  # newer rows arrive between the pages
            uow.session.add(
                Run(
                    kind="health_check",
                    status="queued",
                    params={},
                    created_at=dt.datetime.now(dt.UTC),
                )
            )
        second = (
            await client.get("/v1/_probe/runs", params={"limit": 3, "cursor": first["next_cursor"]})
        ).json()
        got = [i["id"] for i in first["items"]] + [i["id"] for i in second["items"]]
        assert got == list(reversed(ids))
        assert second["next_cursor"] is None

    async def test_empty_list(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/v1/_probe/runs")
        assert response.json() == {"items": [], "next_cursor": None}

    async def test_default_limit_is_50(
        self, client: httpx.AsyncClient, context: AppContext
    ) -> None:
        await insert_runs(context, 51)
        body = (await client.get("/v1/_probe/runs")).json()
        assert len(body["items"]) == 50
        assert body["next_cursor"]


class TestBadParameters:
    @pytest.mark.parametrize(
        "cursor",
        [
            "not-base64!!",
            base64.urlsafe_b64encode(b"[1,2,3]").decode(),
            base64.urlsafe_b64encode(b'["yesterday","x"]').decode(),
            base64.urlsafe_b64encode(b'["2026-01-01T00:00:00","x"]').decode(),  # no zone
            base64.urlsafe_b64encode(b'["2026-01-01T00:00:00+00:00",7]').decode(),
            base64.urlsafe_b64encode(b"\xff\xfe").decode(),
            "",
        ],
    )
    async def test_bad_cursor_is_422_problem(self, client: httpx.AsyncClient, cursor: str) -> None:
        response = await client.get("/v1/_probe/runs", params={"cursor": cursor})
        if cursor == "":
            assert response.status_code == 200  # an empty cursor means the first page
            return
        assert response.status_code == 422
        body = response.json()
        assert body["type"] == "/problems/invalid-cursor"
        assert body["errors"][0]["loc"] == ["query", "cursor"]

    @pytest.mark.parametrize("limit", ["0", "201", "-1", "ten", "1.5"])
    async def test_limit_out_of_range_is_422(self, client: httpx.AsyncClient, limit: str) -> None:
        response = await client.get("/v1/_probe/runs", params={"limit": limit})
        assert response.status_code == 422
        assert response.json()["errors"][0]["loc"] == ["query", "limit"]


class TestDeclaredPattern:
    """The cursor pattern in the schema is exactly what the API emits and accepts."""

    async def test_emitted_cursors_match_the_declared_pattern(
        self, client: httpx.AsyncClient, context: AppContext
    ) -> None:
        await insert_runs(context, 5)
        declared = re.compile(_declared_cursor_pattern())
        cursor = (await client.get("/v1/_probe/runs", params={"limit": 2})).json()["next_cursor"]
        assert declared.fullmatch(cursor)

    @pytest.mark.parametrize(
        "cursor",
        [
            "0.a",
            "-1.0",
            "999999999999999999.zz_-",  # beyond year 9999: after the newest item
            "-999999999999999999.x",  # before year 1: nothing precedes it
            "000000000000000001." + "Z" * 64,
        ],
    )
    async def test_every_declared_cursor_is_accepted(
        self, client: httpx.AsyncClient, context: AppContext, cursor: str
    ) -> None:
        assert re.fullmatch(_declared_cursor_pattern(), cursor)
        ids = await insert_runs(context, 2)
        response = await client.get("/v1/_probe/runs", params={"cursor": cursor})
        assert response.status_code == 200, response.text
        got = [item["id"] for item in response.json()["items"]]
        assert got == (list(reversed(ids)) if cursor.startswith("9") else [])

    @pytest.mark.parametrize("cursor", ["1.", ".a", "1.a\n", "1.a.b", "1:a", "1.a b", "+1.a"])
    async def test_anything_else_is_refused(self, client: httpx.AsyncClient, cursor: str) -> None:
        assert not re.fullmatch(_declared_cursor_pattern(), cursor)
        response = await client.get("/v1/_probe/runs", params={"cursor": cursor})
        assert response.status_code == 422
        assert response.json()["type"] == "/problems/invalid-cursor"


@functools.cache  # rendering the whole document takes seconds; 13 tests read it
def _declared_cursor_pattern() -> str:
    document = json.loads(render_openapi())
    (cursor,) = (
        p
        for p in document["paths"]["/v1/deployments"]["get"]["parameters"]
        if p["name"] == "cursor"
    )
    pattern: str = cursor["schema"]["pattern"]
    return pattern


@pytest.mark.parametrize(  # fixed ids: xdist workers must collect the same test names
    "id", [new_id(), new_token_id(), "a" * 63], ids=["row-id", "token-id", "longest"]
)
def test_every_kind_of_id_fits_a_cursor(id: str) -> None:
    at = dt.datetime(2026, 5, 4, 3, 2, 1, 123456, tzinfo=dt.UTC)
    assert decode_cursor(encode_cursor(at, id)) == Cursor(at, id)


def test_cursor_round_trip() -> None:
    at = dt.datetime(2026, 5, 4, 3, 2, 1, 123456, tzinfo=dt.UTC)
    cursor = decode_cursor(encode_cursor(at, "0192-abc"))
    assert (cursor.created_at, cursor.id) == (at, "0192-abc")
