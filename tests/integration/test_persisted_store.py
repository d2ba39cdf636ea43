"""giftgraph.persisted: how a request's hash, documentId or query becomes the document to run,
on the real `persisted_documents` table."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from sqlalchemy import text

from giftgraph.db.engine import Database, create_database
from giftgraph.persisted import (
    NOT_ALLOWED,
    NOT_FOUND,
    BadPersistedQuery,
    Documents,
    ManifestError,
    PersistedQueryNotAllowed,
    PersistedQueryNotFound,
    Recent,
    Resolved,
    digest,
    load_manifest,
    scoped,
)
from tests.conftest import make_settings

QUERY = "{ me { id } }"
A = "family:a"  # the scope (a family) most tests register and look up in
OTHER = "{ family { name } }"


def apq(key: str) -> dict[str, object]:
    return {"persistedQuery": {"version": 1, "sha256Hash": key}}


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = create_database(database_url, make_settings(database_url))
    async with database.sessions() as session, session.begin():
        await session.execute(text("TRUNCATE persisted_documents"))
    yield database
    await database.dispose()


async def test_an_unknown_hash_alone_is_not_found_then_registered_and_shared(
        db: Database) -> None:
    key = digest(QUERY)
    one = Documents(sessions=db.sessions)
    with pytest.raises(PersistedQueryNotFound) as caught:
        await one.resolve(None, apq(key), None, A)
    assert caught.value.code == NOT_FOUND
    assert str(caught.value) == "PersistedQueryNotFound"

    sent = await one.resolve(QUERY, apq(key), None, A)
    assert sent == Resolved(QUERY, register=key)
    await one.remember(key, QUERY, A)
    assert await one.resolve(None, apq(key), None, A) == Resolved(QUERY)
    # another instance (its own LRU, empty) finds it in PostgreSQL
    other = Documents(sessions=db.sessions)
    assert await other.resolve(None, apq(key), None, A) == Resolved(QUERY)
    assert other.recent.get(scoped(A, key)) == QUERY
    # registering again changes nothing
    await other.remember(key, QUERY, A)
    async with db.sessions() as session:
        assert await session.scalar(text("SELECT count(*) FROM persisted_documents")) == 1


async def test_a_registration_is_found_only_in_its_callers_scope_on_every_instance(
        db: Database, tmp_path: Path) -> None:
    """A hash registered by one family is found by that family, on this instance and
    another sharing the table, and by no other family or anonymous caller: for them it is
    unknown (PERSISTED_QUERY_NOT_FOUND), as a hash no one registered, and they may register
    it in their own scope. The manifest's documents are found by everyone."""
    key = digest(QUERY)
    one = Documents(sessions=db.sessions)
    await one.remember(key, QUERY, A)
    other = Documents(sessions=db.sessions)  # another instance: only the table
    for documents in (one, other):
        assert await documents.resolve(None, apq(key), None, A) == Resolved(QUERY)
        assert await documents.resolve(None, None, "sha256:" + key, A) == Resolved(QUERY)
        for stranger in ("family:b", "ip:127.0.0.1"):
            for extensions, document_id in ((apq(key), None), (None, "sha256:" + key)):
                with pytest.raises(PersistedQueryNotFound):
                    await documents.resolve(None, extensions, document_id, stranger)
            # sending the document registers it in the stranger's own scope
            assert await documents.resolve(QUERY, apq(key), None, stranger) == Resolved(
                QUERY, register=key)
    await other.remember(key, QUERY, "family:b")
    assert await one.resolve(None, apq(key), None, "family:b") == Resolved(QUERY)
    with pytest.raises(PersistedQueryNotFound):
        await one.resolve(None, apq(key), None, "ip:127.0.0.1")
    async with db.sessions() as session:  # one row per scope, none under the bare hash
        stored = set(await session.scalars(text("SELECT hash FROM persisted_documents")))
    assert stored == {scoped(A, key), scoped("family:b", key)}
    manifest = load_manifest(write_manifest(tmp_path, {digest(OTHER): OTHER}))
    trusted = Documents(manifest, sessions=db.sessions)
    for scope in (A, "family:b", "ip:127.0.0.1"):
        assert await trusted.resolve(None, apq(digest(OTHER)), None, scope) == Resolved(OTHER)


@pytest.mark.parametrize(("query", "extensions", "document_id", "says"), [
    (QUERY, apq(digest(OTHER)), None, "does not match"),
    (QUERY, apq("A" * 64), None, "lower-case hex"),
    (QUERY, apq("abc"), None, "lower-case hex"),
    (QUERY, {"persistedQuery": {"version": 2, "sha256Hash": digest(QUERY)}}, None, "version"),
    (QUERY, {"persistedQuery": "x"}, None, "version"),
    (123, apq(digest(QUERY)), None, "string"),
    (QUERY, None, "sha256:" + digest(QUERY), "not both"),
    (None, None, 42, "string"),
])
async def test_malformed_requests_are_bad_user_input(db: Database, query: object,
                                                     extensions: object, document_id: object,
                                                     says: str) -> None:
    documents = Documents(sessions=db.sessions)
    with pytest.raises(BadPersistedQuery, match=says) as caught:
        await documents.resolve(query, extensions, document_id, A)
    assert caught.value.code == "BAD_USER_INPUT"


async def test_a_registration_whose_hash_does_not_match_stores_nothing(db: Database) -> None:
    documents = Documents(sessions=db.sessions)
    await documents.remember(digest(OTHER), QUERY, A)
    async with db.sessions() as session:
        assert await session.scalar(text("SELECT count(*) FROM persisted_documents")) == 0
    assert documents.recent.get(scoped(A, digest(OTHER))) is None


def write_manifest(tmp_path: Path, entries: dict[str, str]) -> Path:
    path = tmp_path / "persisted-documents.json"
    path.write_bytes(orjson.dumps(entries))
    return path


async def test_trusted_documents_by_document_id_and_the_allow_list(db: Database,
                                                                  tmp_path: Path) -> None:
    manifest = load_manifest(write_manifest(tmp_path, {digest(QUERY): QUERY}))
    only = Documents(manifest, only_trusted=True, sessions=db.sessions)
    assert await only.resolve(None, None, "sha256:" + digest(QUERY), A) == Resolved(QUERY)
    assert await only.resolve(None, None, digest(QUERY), A) == Resolved(QUERY)
    assert await only.resolve(None, apq(digest(QUERY)), None, A) == Resolved(QUERY)
    assert await only.resolve(QUERY, None, None, A) == Resolved(QUERY)  # the trusted text
    for query, extensions in ((OTHER, None), (OTHER, apq(digest(OTHER))), (None, None)):
        with pytest.raises(PersistedQueryNotAllowed) as caught:
            await only.resolve(query, extensions, None, A)
        assert caught.value.code == NOT_ALLOWED
    # a document registered through APQ elsewhere is not trusted here
    await Documents(sessions=db.sessions).remember(digest(OTHER), OTHER, A)
    with pytest.raises(PersistedQueryNotFound):
        await only.resolve(None, None, "sha256:" + digest(OTHER), A)
    await only.remember(digest(OTHER), OTHER, A)
    assert only.recent.get(scoped(A, digest(OTHER))) is None


def test_a_manifest_is_checked_when_loaded(tmp_path: Path) -> None:
    assert load_manifest(write_manifest(tmp_path, {"sha256:" + digest(QUERY): QUERY})) == {
        digest(QUERY): QUERY}
    for bad in ({digest(OTHER): QUERY}, {"nothex": QUERY}, {digest(QUERY): 1}):
        with pytest.raises(ManifestError):
            load_manifest(write_manifest(tmp_path, bad))  # type: ignore[arg-type]
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(ManifestError):
        load_manifest(tmp_path / "list.json")
    with pytest.raises(ManifestError):
        load_manifest(tmp_path / "missing.json")


def test_the_lru_is_bounded_in_entries_and_characters() -> None:
    recent = Recent(entries=2, chars=10)
    recent.put("a", "12345")
    recent.put("b", "12345")
    assert recent.get("a") == "12345"  # now the most recent
    recent.put("c", "1")  # over 2 entries: b, the least recent, goes
    assert set(recent.held) == {"a", "c"}
    recent.put("d", "123456789")  # 15 characters: a, the least recent, goes
    assert set(recent.held) == {"c", "d"}
    recent.put("e", "x" * 11)  # larger than the whole LRU: not kept
    assert recent.get("e") is None
    assert recent.size == 10


async def test_the_table_keeps_a_bounded_number_of_documents(db: Database) -> None:
    """Past `most` documents the oldest registrations give way: whoever fills the table
    never stops another client's registrations (a full table used to refuse them all).
    A document given way is registered again as ever."""
    documents = Documents(sessions=db.sessions, most=2)
    texts = [f"{{ me {{ id }} __typename a{k}: __typename }}" for k in range(3)]

    async def stored() -> set[str]:
        async with db.sessions() as session:
            return set(await session.scalars(text("SELECT hash FROM persisted_documents")))

    for t in texts:
        await documents.remember(digest(t), t, A)
    assert await stored() == {scoped(A, digest(texts[1])), scoped(A, digest(texts[2]))}
    other = Documents(sessions=db.sessions)  # another instance: only the table
    assert (await other.resolve(None, apq(digest(texts[2])), None, A)).query == texts[2]
    with pytest.raises(PersistedQueryNotFound):
        await other.resolve(None, apq(digest(texts[0])), None, A)
    await documents.remember(digest(texts[0]), texts[0], A)  # its client registers it again
    assert await stored() == {scoped(A, digest(texts[2])), scoped(A, digest(texts[0]))}
    await documents.remember(digest(texts[2]), texts[2], A)  # known: nothing changes
    assert await stored() == {scoped(A, digest(texts[2])), scoped(A, digest(texts[0]))}
