"""`load_now`: a loaded row is converted once per operation, however many parents share it."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from giftgraph.schema.loaders import Loader, RowLoader, load_now, prefetch


async def test_a_shared_row_is_converted_once() -> None:
    batches: list[list[int]] = []

    async def load(keys: list[int]) -> list[dict[str, int] | None]:
        batches.append(keys)
        return [{"k": k} if k != 3 else None for k in keys]

    loader: RowLoader[int, Any] = RowLoader(load)
    made: list[int] = []

    def convert(row: dict[str, int]) -> tuple[str, int]:
        made.append(row["k"])
        return ("object", row["k"])

    await prefetch((loader, [1, 2, 3, 1]))
    first = [load_now(loader, k, convert) for k in (1, 2, 1, 1, 3)]
    assert first == [("object", 1), ("object", 2), ("object", 1), ("object", 1), None]
    assert first[0] is first[2] is first[3]  # one object for the row 1
    assert made == [1, 2]  # each row converted once; the missing one stays None
    assert batches == [[1, 2, 3]]
    # Another conversion of the same row is its own object.
    assert load_now(loader, 1, lambda r: ("other", r["k"])) == ("other", 1)
    # After clear_all (a mutation changed rows), rows load and convert afresh.
    loader.clear_all()
    pending = load_now(loader, 1, convert)
    assert await pending == ("object", 1)  # type: ignore[misc]
    assert made == [1, 2, 1]
    assert batches == [[1, 2, 3], [1]]


async def test_a_required_row_deleted_meanwhile_is_not_found() -> None:
    """Reads run in autocommit: an item's gift can be deleted between the item's statement
    and the gift's. That is NOT_FOUND, prefetched or loaded late, not a null in a non-null
    field (which graphql-core reports as an INTERNAL_SERVER_ERROR)."""
    import pytest

    from giftgraph.errors import NotFound
    from giftgraph.schema.loaders import load_required

    async def load(keys: list[int]) -> list[dict[str, int] | None]:
        return [{"k": k} if k != 3 else None for k in keys]

    loader: RowLoader[int, Any] = RowLoader(load)
    pending = load_required(loader, 3, dict, "Gift")  # not loaded yet: an awaitable
    with pytest.raises(NotFound, match="Gift not found"):
        await pending  # type: ignore[misc]
    with pytest.raises(NotFound):
        load_required(loader, 3, dict, "Gift")  # loaded: raised at once
    assert await load_required(RowLoader(load), 1, dict, "Gift") == {"k": 1}  # type: ignore[misc]


def test_a_required_load_left_unawaited_leaves_no_coroutine_behind() -> None:
    """The lean executor closes the coroutines it will not await (`close_unawaited`); a
    required load is one coroutine, so nothing inside it is left never awaited (a
    RuntimeWarning, seen in the fuzz tests, when it awaited another coroutine)."""
    import asyncio
    import gc
    import warnings

    from giftgraph.accel.values import close_unawaited
    from giftgraph.schema.loaders import load_required

    async def load(keys: list[int]) -> list[dict[str, int] | None]:
        return [{"k": k} for k in keys]

    async def leave() -> None:
        pending = load_required(RowLoader(load), 1, dict, "Gift")
        assert asyncio.iscoroutine(pending)
        close_unawaited(pending)

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        asyncio.run(leave())
        gc.collect()
    assert [str(w.message) for w in seen if "never awaited" in str(w.message)] == []


async def test_an_operations_loaders_are_made_when_first_read() -> None:
    """A shared scope per event and per dashboard version makes a `Loaders`; one that made
    all its loaders up front filled the garbage collector's young generation with
    loaders no field read."""
    import gc
    import uuid

    from strawberry.dataloader import DataLoader

    from giftgraph.schema.loaders import Loaders

    loaders = Loaders(None, uuid.uuid4())  # type: ignore[arg-type]  # no statement runs here
    assert not any(isinstance(v, DataLoader) for v in vars(loaders).values())
    assert not any(isinstance(o, DataLoader) for o in gc.get_referents(loaders.__dict__))
    gift = loaders.gift
    assert isinstance(gift, RowLoader)
    assert loaders.gift is gift  # one per operation: its cache is the operation's
    assert loaders.list_items is loaders.list_items
    assert [k for k, v in vars(loaders).items() if isinstance(v, DataLoader)] == \
        ["gift", "list_items"]
    gift.prime(uuid.uuid4(), None)
    loaders.clear()  # clears what was made
    assert not gift.cache_map.cache_map
    loaders.close()
    assert vars(loaders) == {}
    with pytest.raises(AttributeError):  # its operation is over: no loader is made again
        loaders.gift  # noqa: B018
    assert vars(loaders) == {}
    assert "gift" in vars(Loaders)  # the class's reads describe, as with a plain attribute


async def test_a_cancelled_caller_leaves_the_others_their_row() -> None:
    """graphql-core cancels the sibling fields still pending when one fails: a field of one
    item cancelled the list's one shared future, and every other item of the list failed
    with CancelledError. Each caller now waits on its own future."""
    started, release = asyncio.Event(), asyncio.Event()
    batches: list[list[int]] = []

    async def load(keys: list[int]) -> list[str]:
        batches.append(keys)
        started.set()
        await release.wait()
        return [f"row {k}" for k in keys]

    loader: Loader[int, str] = Loader(load)

    async def read(key: int) -> str:
        return await loader.load(key)

    doomed, sibling, other = (asyncio.create_task(read(k)) for k in (7, 7, 8))
    await started.wait()
    doomed.cancel()
    await asyncio.sleep(0)
    release.set()
    assert await sibling == "row 7"
    assert await other == "row 8"
    assert doomed.cancelled()
    assert batches == [[7, 8]]  # one batch, one statement
    assert await loader.load(7) == "row 7"  # kept for the rest of the operation


async def test_when_every_caller_is_cancelled_the_batch_is_too() -> None:
    """No load outlives its operation (on the connection the operation gave back): the
    last caller to go cancels the key's future, and Strawberry then cancels the batch's
    statement, as it did when callers waited on the key's future itself."""
    started = asyncio.Event()
    cancelled: list[list[int]] = []

    async def load(keys: list[int]) -> list[str]:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(keys)
            raise
        return []  # pragma: no cover - never reached

    loader: Loader[int, str] = Loader(load)
    readers = [asyncio.create_task(_await(loader.load(k))) for k in (1, 1, 2)]
    await started.wait()
    for reader in readers[:2]:  # every caller of 1: 2's still waits, the batch goes on
        reader.cancel()
    await asyncio.sleep(0.01)
    assert cancelled == []
    readers[2].cancel()
    await asyncio.sleep(0.01)
    assert cancelled == [[1, 2]]
    assert not loader._waiting


async def test_a_failed_load_fails_each_caller_and_is_reported_once(
        caplog: pytest.LogCaptureFixture) -> None:
    async def load(keys: list[int]) -> list[str]:
        raise RuntimeError("database unavailable")

    loader: Loader[int, str] = Loader(load)
    results = await asyncio.gather(loader.load(1), loader.load(1), return_exceptions=True)
    assert [str(r) for r in results] == ["database unavailable"] * 2
    gc.collect()
    assert "never retrieved" not in caplog.text


async def _await(pending: Any) -> Any:
    return await pending
