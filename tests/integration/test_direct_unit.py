"""A unit of work with no ORM session (`OperationDb.write_direct`), on a real PostgreSQL:
its transaction begun and ended on the asyncpg connection itself, and the connection back
in the pool outside any transaction whatever ended the unit (a commit, a failed statement,
an error of the mutation's, a cancellation). `setListItemStatus` runs in one."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from giftgraph.config import Settings
from giftgraph.db.engine import Database, create_database
from giftgraph.db.session import (
    PENDING_KEY,
    DirectUnit,
    OperationDb,
    Prepared,
    after_commit,
    execute_in,
)
from giftgraph.errors import NotFound
from giftgraph.ids import encode_id
from tests.conftest import Account

ADD = Prepared(text("INSERT INTO families (id, name, created_at, updated_at)"
                    " VALUES (:id, :name, now(), now()) RETURNING id"))


@pytest.fixture
async def database(settings: Settings, database_url: str) -> AsyncIterator[Database]:
    db = create_database(database_url, settings)
    yield db
    await db.dispose()


async def _names(database: Database) -> list[str]:
    async with database.engine.connect() as conn:
        return list((await conn.execute(text("SELECT name FROM families ORDER BY name")))
                    .scalars())


async def _clean(database: Database) -> None:
    """Nothing checked out, and the pool's connection (LIFO: the unit's) outside any
    transaction, as the next request takes it."""
    pool = database.engine.sync_engine.pool
    assert pool.checkedout() == 0
    async with database.engine.connect() as conn:
        driver = (await conn.get_raw_connection()).driver_connection
        assert driver is not None
        assert await driver.fetchval("SELECT 1") == 1  # after whatever was in flight on it
        assert not driver.is_in_transaction()


async def _add(unit: Any, name: str) -> None:
    await execute_in(unit, ADD, {"id": uuid.uuid4(), "name": name})


async def test_a_unit_commits_once_then_publishes_and_runs_its_hooks(
        database: Database) -> None:
    published: list[Any] = []
    ran: list[str] = []

    async def publish(events: list[Any]) -> None:
        assert await _names(database) == ["a", "b"]  # after COMMIT
        published.extend(events)

    async def hook() -> None:
        ran.append("after commit")

    op = OperationDb(database, publish)
    try:
        async with op.write_direct() as unit:
            assert isinstance(unit, DirectUnit)
            await _add(unit, "a")
            await _add(unit, "b")
            unit.info.setdefault(PENDING_KEY, []).append("event")
            after_commit(unit, hook)
            assert await _names(database) == []  # not committed yet: another connection
        assert op.commits == 1
        assert published == ["event"]
        assert ran == ["after commit"]
    finally:
        await op.end()
    await _clean(database)


async def test_a_failed_statement_rolls_the_unit_back(database: Database) -> None:
    published: list[Any] = []

    async def publish(events: list[Any]) -> None:
        published.extend(events)

    op = OperationDb(database, publish)

    async def divide() -> None:
        async with op.write_direct() as unit:
            await _add(unit, "a")
            unit.info.setdefault(PENDING_KEY, []).append("event")
            await execute_in(unit, Prepared(text("SELECT 1/0")), {})

    async def go_on_after_a_failure() -> None:
        """The aborted transaction runs nothing more, and says so as a DBAPIError."""
        async with op.write_direct() as unit:
            await _add(unit, "c")
            with pytest.raises(DBAPIError):
                await execute_in(unit, Prepared(text("SELECT 1/0")), {})
            await _add(unit, "d")

    try:
        with pytest.raises(DBAPIError) as failed:
            await divide()
        assert "division by zero" in str(failed.value.orig)
        with pytest.raises(DBAPIError):
            await go_on_after_a_failure()
        assert op.commits == 0
        assert published == []
    finally:
        await op.end()
    assert await _names(database) == []
    await _clean(database)


async def test_an_error_of_the_mutation_rolls_the_unit_back(database: Database) -> None:
    op = OperationDb(database)

    async def not_found() -> None:
        async with op.write_direct() as unit:
            await _add(unit, "a")
            raise NotFound("ListItem")

    try:
        with pytest.raises(NotFound):
            await not_found()
        async with op.write_direct() as unit:  # the next unit of the operation
            await _add(unit, "b")
        assert op.commits == 1
    finally:
        await op.end()
    assert await _names(database) == ["b"]
    await _clean(database)


async def test_a_cancelled_unit_leaves_no_transaction_behind(database: Database) -> None:
    """Cancelled while a statement runs (its client gone, the server stopping): the
    connection goes back rolled back, or is closed; never inside the transaction."""
    op = OperationDb(database)
    started = asyncio.Event()

    async def slow() -> None:
        async with op.write_direct() as unit:
            await _add(unit, "a")
            started.set()
            await execute_in(unit, Prepared(text("SELECT pg_sleep(5)")), {})

    task = asyncio.ensure_future(slow())
    await started.wait()
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await op.end()
    assert await _names(database) == []
    await _clean(database)


async def test_a_unit_cancelled_while_its_begin_is_in_flight_leaves_no_transaction(
        database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cancelled once BEGIN is sent and before its answer (a client's `complete` or reset
    at that moment, adversary 2026-11-29): the server still begins the transaction, so the
    unit rolls back (or drops the connection) all the same."""
    command = DirectUnit.command

    async def cancelled_in_flight(self: DirectUnit, sql: str) -> None:
        if sql == "BEGIN":
            task = asyncio.current_task()
            assert task is not None
            task.cancel()  # delivered at the first wait: BEGIN's answer
        await command(self, sql)

    monkeypatch.setattr(DirectUnit, "command", cancelled_in_flight)
    op = OperationDb(database)

    async def unit() -> None:
        async with op.write_direct() as unit:
            await _add(unit, "never")

    with pytest.raises(asyncio.CancelledError):
        await unit()
    await op.end()
    monkeypatch.undo()
    await _clean(database)
    op = OperationDb(database)
    try:
        async with op.write_direct() as unit:  # the pool's connections all usable
            await _add(unit, "a")
        async with op.write() as session:
            await session.execute(text("SELECT 1"))
    finally:
        await op.end()
    assert await _names(database) == ["a"]


async def test_without_direct_statements_the_unit_is_a_session(database: Database) -> None:
    """Where every statement must go through SQLAlchemy (tracing's span per statement),
    the unit is a session, and the same statements run through it."""
    database.direct_statements = False
    op = OperationDb(database)
    try:
        async with op.write_direct() as unit:
            assert isinstance(unit, AsyncSession)
            await _add(unit, "a")
        assert op.commits == 1
    finally:
        await op.end()
    assert await _names(database) == ["a"]


async def test_the_status_pipeline_and_row_changes_open_no_orm_session(
        app: Any, alice: Account, monkeypatch: pytest.MonkeyPatch) -> None:
    """The status pipeline's mutation reads its item and list as a row, writes with
    `execute_in` and commits on the connection: no ORM session is made for it (the
    unit's begin, commit and close were ~0.5 ms of a mutation's server CPU); nor for the
    other changes of a row's columns (`updateList`, `updatePerson`, `assignListItem`)."""
    c = alice.client
    gl = (await c('mutation { createList(input: {name: "L", kind: IDEAS}) { id } }')
          ).data["createList"]["id"]
    item = (await c('mutation($l: ID!) { addListItem(listId: $l, input: {gift: {name: "G"}})'
                    " { id } }", {"l": gl})).data["addListItem"]["id"]
    database = app.state.giftgraph.db()
    made: list[Any] = []
    sessions = database.sessions

    def counted(*args: Any, **kwargs: Any) -> Any:
        made.append(args)
        return sessions(*args, **kwargs)

    monkeypatch.setattr(database, "sessions", counted)
    for status in ("SELECTED", "PURCHASED", "SELECTED"):
        r = await c("mutation($i: ID!, $s: ItemStatus!) { setListItemStatus(id: $i,"
                    " status: $s) { id status quantity list { id } } }",
                    {"i": item, "s": status})
        assert not r.errors, r.errors
        assert r.data["setListItemStatus"] == {"id": item, "status": status, "quantity": 1,
                                               "list": {"id": gl}}
    assert made == []
    r = await c("mutation($i: ID!) { setListItemStatus(id: $i, status: RECEIVED) { id } }",
                {"i": item})
    assert r.errors[0]["extensions"]["code"] == "INVALID_TRANSITION"
    assert r.errors[0]["extensions"]["current"] == "SELECTED"
    r = await c("mutation($i: ID!) { setListItemStatus(id: $i, status: IDEA) { id } }",
                {"i": encode_id("ListItem", uuid.uuid4())})
    assert r.errors[0]["extensions"]["code"] == "NOT_FOUND"
    assert made == []
    person = (await c('mutation { createPerson(input: {name: "Ann"}) { id } }')
              ).data["createPerson"]["id"]
    assert len(made) == 1  # creating a row: a session, as before
    made.clear()
    # The other mutations that lock a row and change its columns run in one too, an ID
    # they point at included (locked FOR KEY SHARE): moving a list to a person, assigning.
    r = await c("mutation($l: ID!, $p: ID!) { updateList(id: $l, input: {name: \"M\","
                " personId: $p}) { name person { id } } }", {"l": gl, "p": person})
    assert r.data["updateList"] == {"name": "M", "person": {"id": person}}
    r = await c("mutation($i: ID!, $u: ID!) { assignListItem(id: $i, userId: $u)"
                " { assignee { id } } }", {"i": item, "u": alice.user_id})
    assert r.data["assignListItem"] == {"assignee": {"id": alice.user_id}}
    r = await c('mutation($p: ID!) { updatePerson(id: $p, input: {name: "Bo"}) { name } }',
                {"p": person})
    assert r.data["updatePerson"] == {"name": "Bo"}
    r = await c("mutation($l: ID!, $p: ID!) { updateList(id: $l, input: {personId: $p})"
                " { name } }", {"l": gl, "p": gl})
    assert r.errors[0]["extensions"]["code"] == "NOT_FOUND"
    assert made == []
    events = (await c("{ events(first: 4) { edges { node { seq kind entityType } } } }")
              ).data["events"]["edges"]
    assert [(e["node"]["kind"], e["node"]["entityType"]) for e in events[:3]] == [
        ("UPDATED", "Person"), ("ASSIGNED", "ListItem"), ("UPDATED", "GiftList")]
    seqs = [int(e["node"]["seq"]) for e in events]
    assert seqs == sorted(seqs, reverse=True)
