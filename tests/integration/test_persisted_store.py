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
)
from tests.conftest import make_settings

QUERY = "{ me { id } }"
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
        await one.resolve(None, apq(key), None)
    assert caught.value.code == NOT_FOUND
    assert str(caught.value) == "PersistedQueryNotFound"

    sent = await one.resolve(QUERY, apq(key), None)
    assert sent == Resolved(QUERY, register=key)
    await one.remember(key, QUERY)
    assert await one.resolve(None, apq(key), None) == Resolved(QUERY)
    # another instance (its own LRU, empty) finds it in PostgreSQL
    other = Documents(sessions=db.sessions)
    assert await other.resolve(None, apq(key), None) == Resolved(QUERY)
    assert other.recent.get(key) == QUERY
    # registering again changes nothing
    await other.remember(key, QUERY)
    async with db.sessions() as session:
        assert await session.scalar(text("SELECT count(*) FROM persisted_documents")) == 1


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
        await documents.resolve(query, extensions, document_id)
    assert caught.value.code == "BAD_USER_INPUT"


async def test_a_registration_whose_hash_does_not_match_stores_nothing(db: Database) -> None:
    documents = Documents(sessions=db.sessions)
    await documents.remember(digest(OTHER), QUERY)
    async with db.sessions() as session:
        assert await session.scalar(text("SELECT count(*) FROM persisted_documents")) == 0
    assert documents.recent.get(digest(OTHER)) is None


def write_manifest(tmp_path: Path, entries: dict[str, str]) -> Path:
    path = tmp_path / "persisted-documents.json"
    path.write_bytes(orjson.dumps(entries))
    return path


async def test_trusted_documents_by_document_id_and_the_allow_list(db: Database,
                                                                  tmp_path: Path) -> None:
    manifest = load_manifest(write_manifest(tmp_path, {digest(QUERY): QUERY}))
    only = Documents(manifest, only_trusted=True, sessions=db.sessions)
    assert await only.resolve(None, None, "sha256:" + digest(QUERY)) == Resolved(QUERY)
    assert await only.resolve(None, None, digest(QUERY)) == Resolved(QUERY)
    assert await only.resolve(None, apq(digest(QUERY)), None) == Resolved(QUERY)
    assert await only.resolve(QUERY, None, None) == Resolved(QUERY)  # the trusted text itself
    for query, extensions in ((OTHER, None), (OTHER, apq(digest(OTHER))), (None, None)):
        with pytest.raises(PersistedQueryNotAllowed) as caught:
            await only.resolve(query, extensions, None)
        assert caught.value.code == NOT_ALLOWED
    # a document registered through APQ elsewhere is not trusted here
    await Documents(sessions=db.sessions).remember(digest(OTHER), OTHER)
    with pytest.raises(PersistedQueryNotFound):
        await only.resolve(None, None, "sha256:" + digest(OTHER))
    await only.remember(digest(OTHER), OTHER)
    assert only.recent.get(digest(OTHER)) is None


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
        await documents.remember(digest(t), t)
    assert await stored() == {digest(texts[1]), digest(texts[2])}
    other = Documents(sessions=db.sessions)  # another instance: only the table
    assert (await other.resolve(None, apq(digest(texts[2])), None)).query == texts[2]
    with pytest.raises(PersistedQueryNotFound):
        await other.resolve(None, apq(digest(texts[0])), None)
    await documents.remember(digest(texts[0]), texts[0])  # its client registers it again
    assert await stored() == {digest(texts[2]), digest(texts[0])}
    await documents.remember(digest(texts[2]), texts[2])  # known: nothing changes
    assert await stored() == {digest(texts[2]), digest(texts[0])}
