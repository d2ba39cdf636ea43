"""A mutation whose transaction PostgreSQL aborts for a concurrent one (deadlock,
serialization failure) runs again; one that keeps colliding fails cleanly, retryable."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import text

from giftgraph.db.session import Prepared, execute_in
from giftgraph.ids import decode_id
from tests.conftest import GQL, Account, _dsn, make_settings, sign_up

SET_STATUS = ("mutation($i: ID!, $s: ItemStatus!) { setListItemStatus(id: $i, status: $s)"
              " { id status } }")


async def _item(alice: Account) -> tuple[str, str]:
    """A new item of Alice's and her family's ID."""
    c = alice.client
    gl = (await c('mutation { createList(input: {name: "L", kind: IDEAS}) { id } }')
          ).data["createList"]["id"]
    item = (await c('mutation($l: ID!) { addListItem(listId: $l, input: {gift: {name: "G"}})'
                    " { id } }", {"l": gl})).data["addListItem"]["id"]
    family = (await c("{ me { family { id } } }")).data["me"]["family"]["id"]
    return item, str(decode_id(family, "Family"))


def retries(app: Any, reason: str) -> float:
    registry = app.state.giftgraph.metrics.registry
    return registry.get_sample_value("giftgraph_transaction_retries_total",
                                     {"reason": reason}) or 0.0


async def _events(database_url: str, item: str) -> int:
    """How many status changes of the item were committed."""
    conn = await asyncpg.connect(_dsn(database_url))
    try:
        return int(await conn.fetchval(
            "SELECT count(*) FROM events WHERE entity_id = $1 AND kind = 'STATUS_CHANGED'"
            " AND topic = 'family'",  # one row per topic: one change, one on `family`
            decode_id(item, "ListItem")))
    finally:
        await conn.close()


SERIALIZATION_FAILURE = ("DO $$ BEGIN RAISE EXCEPTION 'could not serialize access' "
                         "USING ERRCODE = 'serialization_failure'; END $$")


def _after_recording(monkeypatch: pytest.MonkeyPatch, *statements: str) -> list[int]:
    """setListItemStatus runs `statements` in its transaction once it has recorded the
    change; the list counts its attempts (one entry each)."""
    from giftgraph.resolvers import lists

    attempts: list[int] = []
    original = lists._record_item

    async def record(info: Any, session: Any, *args: Any, **kwargs: Any) -> None:
        attempts.append(1)
        await original(info, session, *args, **kwargs)
        for sql in statements:
            await execute_in(session, Prepared(text(sql)), {})

    monkeypatch.setattr(lists, "_record_item", record)
    return attempts


async def test_a_mutation_chosen_as_a_deadlock_victim_runs_again(
        app: Any, alice: Account, database_url: str) -> None:
    """A real deadlock: another transaction holds the family's event lock and then asks
    for the item the mutation has locked. PostgreSQL aborts the mutation (the first to
    wait, so the first to check: the other's deadlock_timeout is long); it runs again once
    the other commits, and the client sees only its success (it got
    INTERNAL_SERVER_ERROR before). One change, one event."""
    item, family = await _item(alice)
    other = await asyncpg.connect(_dsn(database_url))
    try:
        await other.execute("SET deadlock_timeout = '60s'")
        tx = other.transaction()
        await tx.start()
        await other.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", family)
        change = asyncio.create_task(alice.client(SET_STATUS, {"i": item, "s": "SELECTED"}))
        for _ in range(200):  # until the mutation waits for the family's lock
            waiting = await other.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'advisory'"
                " AND datname = current_database()")
            if waiting:
                break
            await asyncio.sleep(0.025)
        assert waiting == 1
        # The item the mutation holds: a deadlock, which the mutation loses (in ~1 s).
        await asyncio.wait_for(other.execute(
            "SELECT id FROM list_items WHERE id = $1 FOR UPDATE", decode_id(item, "ListItem")),
            20)
        await tx.commit()
    finally:
        await other.close()
    r = await asyncio.wait_for(change, 20)
    assert not r.errors, r.errors
    assert r.data["setListItemStatus"]["status"] == "SELECTED"
    assert retries(app, "deadlock") == 1
    assert await _events(database_url, item) == 1
    listed = await alice.client("query($i: ID!) { node(id: $i) { ... on ListItem { status } } }",
                                {"i": item})
    assert listed.data["node"]["status"] == "SELECTED"


async def test_a_mutation_that_keeps_colliding_fails_retryable_and_changes_nothing(
        app: Any, alice: Account, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each attempt is aborted by PostgreSQL with a serialization failure (raised by the
    database itself inside the mutation's transaction): after 3 attempts the client gets
    INTERNAL_SERVER_ERROR, retryable, with no SQL in the message; nothing is applied or
    published. Any other database error is not retried."""
    from giftgraph.resolvers import lists

    item, _ = await _item(alice)
    attempts = _after_recording(monkeypatch, SERIALIZATION_FAILURE)
    r = await alice.client(SET_STATUS, {"i": item, "s": "SELECTED"})
    assert len(attempts) == 3
    assert retries(app, "serialization") == 2
    error = r.body["errors"][0]
    assert error["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    assert error["extensions"]["retryable"] is True
    assert "serialize" not in error["message"].lower()
    assert "RAISE" not in str(r.body)
    assert await _events(database_url, item) == 0

    attempts = 0

    async def fail(info: Any, session: Any, *args: Any, **kwargs: Any) -> None:
        nonlocal attempts
        attempts += 1
        await execute_in(session, Prepared(text("SELECT 1/0")), {})

    monkeypatch.setattr(lists, "_record_item", fail)
    r = await alice.client(SET_STATUS, {"i": item, "s": "SELECTED"})
    assert attempts == 1
    assert r.body["errors"][0]["extensions"] == {
        "code": "INTERNAL_SERVER_ERROR", "traceId": r.body["errors"][0]["extensions"]["traceId"]}
    monkeypatch.undo()
    r = await alice.client(SET_STATUS, {"i": item, "s": "SELECTED"})
    assert r.data["setListItemStatus"]["status"] == "SELECTED"
    assert await _events(database_url, item) == 1


async def test_a_statement_that_runs_out_of_time_answers_retryable_and_changes_nothing(
        app: Any, alice: Account, database_url: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """PostgreSQL cancels a statement of the mutation's transaction for its
    `statement_timeout` (57014, as a wait on a row another transaction holds would be):
    the unit rolls back, and the client gets INTERNAL_SERVER_ERROR, retryable, saying it
    took too long and nothing of it was applied, with nothing of the SQL; no event is
    written or published, and the server logs a warning, not an unexpected error with its
    traceback. It is not run again (a timeout is not a collision)."""
    from giftgraph.schema.extensions import TIMED_OUT

    item, _ = await _item(alice)
    attempts = _after_recording(monkeypatch, "SELECT set_config('statement_timeout', '50', true)",
                                "SELECT pg_sleep(2)")
    logger = logging.getLogger("giftgraph")
    logger.addHandler(caplog.handler)
    try:
        r = await alice.client(SET_STATUS, {"i": item, "s": "SELECTED"})
    finally:
        logger.removeHandler(caplog.handler)
    assert len(attempts) == 1
    (error,) = r.body["errors"]
    assert error["message"] == TIMED_OUT
    assert error["extensions"] == {"code": "INTERNAL_SERVER_ERROR", "retryable": True,
                                   "traceId": error["extensions"]["traceId"]}
    assert "pg_sleep" not in str(r.body)
    assert "canceling statement" not in str(r.body)
    assert await _events(database_url, item) == 0
    mine = [rec for rec in caplog.records if error["extensions"]["traceId"] in rec.getMessage()
            and rec.levelno >= logging.WARNING]
    assert [rec.levelno for rec in mine] == [logging.WARNING]
    assert not mine[0].exc_info
    monkeypatch.undo()
    listed = await alice.client("query($i: ID!) { node(id: $i) { ... on ListItem { status } } }",
                                {"i": item})
    assert listed.data["node"]["status"] == "IDEA"


async def test_a_collision_after_the_commit_is_not_retried(
        app: Any, alice: Account, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A transient error that surfaces after the unit of work committed (here from the
    publish step, which runs after COMMIT) must not run the mutation again: that would
    apply the change twice. The client gets an unexpected error, not "retry"."""
    item, _ = await _item(alice)
    hub = app.state.giftgraph.live.hub
    engine = app.state.giftgraph.db().engine

    async def publish(events: list[Any]) -> None:
        async with engine.connect() as conn:
            await conn.execute(text(
                "DO $$ BEGIN RAISE EXCEPTION 'could not serialize access' "
                "USING ERRCODE = 'serialization_failure'; END $$"))

    monkeypatch.setattr(hub, "publish", publish)
    r = await alice.client(SET_STATUS, {"i": item, "s": "SELECTED"})
    assert r.body["errors"][0]["extensions"] == {
        "code": "INTERNAL_SERVER_ERROR", "traceId": r.body["errors"][0]["extensions"]["traceId"]}
    assert await _events(database_url, item) == 1  # applied once
    assert retries(app, "serialization") == 0


def test_sign_in_mutations_are_not_retried() -> None:
    """`login` and the other sign-in mutations do work outside their transaction (the login
    rate limit's hit, password hashing) that another attempt would repeat; every other
    mutation is retried."""
    from giftgraph.schema.retry import NOT_RETRIED
    from giftgraph.schema.schema import build_schema

    fields = build_schema()._schema.mutation_type.fields
    wrapped = {name for name, f in fields.items()
               if getattr(f.resolve, "__name__", "") == "resolve_again_on_collision"}
    assert {"signUp", "login", "refreshToken", "logout"} == NOT_RETRIED
    assert wrapped == set(fields) - NOT_RETRIED
    assert "setListItemStatus" in wrapped


@pytest.fixture
async def hasty(database_url: str) -> AsyncIterator[Account]:
    """An account on an app whose statements run out of time after 300 ms."""
    from giftgraph.app import create_app

    app = create_app(make_settings(database_url, statement_timeout_ms=300))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        yield await sign_up(GQL(http), "Hasty")


async def _locked(database_url: str, sql: str, *args: Any) -> tuple[Any, Any]:
    """Another session holding what `sql` locks, in its open transaction."""
    other = await asyncpg.connect(_dsn(database_url))
    tx = other.transaction()
    await tx.start()
    await other.execute(sql, *args)
    return other, tx


def _applied_then_failed(error: dict[str, Any]) -> bool:
    return (error["extensions"]["code"], error["extensions"]["retryable"]) == (
        "INTERNAL_SERVER_ERROR", False) and error["message"].endswith(
        "after this operation's change was applied. Read it back before trying again")


async def test_a_timeout_after_the_change_is_applied_is_not_called_retryable(
        hasty: Account, database_url: str) -> None:
    """A mutation that committed, then whose payload's read ran out of time (another
    transaction holds the items' table): the answer says the change was applied, not
    retryable (it said "nothing applied, please retry": a client that did made the change
    again, adversary). The same for a later root field whose own unit of work ran out of
    time after an earlier one committed."""
    item, _ = await _item(hasty)
    gl = (await hasty.client("query($i: ID!) { node(id: $i) { ... on ListItem { list { id } }"
                             " } }", {"i": item})).data["node"]["list"]["id"]
    person = (await hasty.client('mutation { createPerson(input: {name: "P"}) { id } }')
              ).data["createPerson"]["id"]
    other, tx = await _locked(database_url, "LOCK TABLE list_items IN ACCESS EXCLUSIVE MODE")
    try:
        r = await hasty.client('mutation($l: ID!) { updateList(id: $l, input: {name: "Renamed"})'
                               " { id name items(first: 5) { totalCount } } }", {"l": gl})
    finally:
        await tx.rollback()
        await other.close()
    (error,) = r.body["errors"]
    assert _applied_then_failed(error), error
    listed = await hasty.client("query($l: ID!) { node(id: $l) { ... on GiftList { name } } }",
                                {"l": gl})
    assert listed.data["node"]["name"] == "Renamed"
    other, tx = await _locked(database_url, "SELECT id FROM list_items WHERE id = $1 FOR UPDATE",
                              decode_id(item, "ListItem"))
    try:
        r = await hasty.client(
            'mutation($p: ID!, $i: ID!) { a: updatePerson(id: $p, input: {name: "Changed"})'
            " { id } b: setListItemStatus(id: $i, status: SELECTED) { id } }",
            {"p": person, "i": item})
    finally:
        await tx.rollback()
        await other.close()
    (error,) = r.body["errors"]
    assert error["path"] == ["b"]
    assert _applied_then_failed(error), error
    named = await hasty.client("query($p: ID!) { node(id: $p) { ... on Person { name } } }",
                               {"p": person})
    assert named.data["node"]["name"] == "Changed"
    assert await _events(database_url, item) == 0


async def test_a_field_that_keeps_colliding_after_an_earlier_one_committed_says_so(
        app: Any, alice: Account, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The second root field keeps colliding (retried, then given up) after the first
    committed: not "not applied, please retry" but that the operation's change was
    applied."""
    item, _ = await _item(alice)
    person = (await alice.client('mutation { createPerson(input: {name: "P"}) { id } }')
              ).data["createPerson"]["id"]
    attempts = _after_recording(monkeypatch, SERIALIZATION_FAILURE)
    r = await alice.client(
        'mutation($p: ID!, $i: ID!) { a: updatePerson(id: $p, input: {name: "Changed"})'
        " { id } b: setListItemStatus(id: $i, status: SELECTED) { id } }",
        {"p": person, "i": item})
    (error,) = r.body["errors"]
    assert error["path"] == ["b"]
    assert _applied_then_failed(error), error
    assert "serialize" not in error["message"]
    assert len(attempts) == 3
    assert retries(app, "serialization") == 2
    assert await _events(database_url, item) == 0
