"""The lean query executor answers exactly as graphql-core does, and declines to it whenever
the query is not the ordinary case (errors, nulls in non-null positions, abstract types)."""

from __future__ import annotations

import asyncio
import datetime
import enum
import gc
import warnings
from typing import Annotated, Any

import pytest
import strawberry
from strawberry.dataloader import DataLoader
from strawberry.scalars import JSON
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from giftgraph.accel.executor import LeanExecutionContext as ExecutionContext
from giftgraph.accel.resolvers import install_lean_resolvers
from giftgraph.errors import NotFound

# Tests of a fast path itself (giftgraph.accel): skipped with GIFTGRAPH_ACCEL=false.
pytestmark = pytest.mark.accel


@strawberry.enum
class Mood(enum.Enum):
    HAPPY = "happy"
    GRUMPY = "grumpy"


@strawberry.interface
class Named:
    name: str


@strawberry.type
class Toy(Named):
    squeaks: bool


@strawberry.type
class Owner:
    name: str
    since: datetime.date | None


LOADS: list[list[str]] = []
INFOS: list[Any] = []


async def load_owners(keys: list[str]) -> list[Owner | None]:
    LOADS.append(list(keys))
    return [None if k == "stray" else Owner(name=f"owner of {k}", since=datetime.date(2020, 1, 2))
            for k in keys]


@strawberry.type
class Pet(Named):
    mood: Mood
    age: int | None
    tags: list[str | None]
    chew: Toy | None = None  # an object read off the source (with Strawberry's is_type_of)

    @strawberry.field
    def loud(self) -> str:
        return self.name.upper()

    @strawberry.field
    def repeat(self, times: int = 2) -> str:
        return self.name * times

    @strawberry.field
    async def owner(self, info: strawberry.Info) -> Owner | None:
        return await info.context["owners"].load(self.name)

    @strawberry.field
    def owner_now(self, info: strawberry.Info) -> Owner | None:  # a future, not a coroutine
        return info.context["owners"].load(self.name)  # type: ignore[no-any-return]

    @strawberry.field
    def keeper(self, info: strawberry.Info) -> str:
        INFOS.append(info)
        return f"{info.field_name} of {self.name}"

    @strawberry.field
    async def friends(self) -> list[Pet]:
        return [Pet(name=f"{self.name}'s friend", mood=Mood.HAPPY, age=None, tags=[])]

    @strawberry.field
    def toys(self) -> list[Toy]:
        return [Toy(name="ball", squeaks=True)]

    @strawberry.field
    def favourite(self) -> Named:
        return Toy(name="bone", squeaks=False)

    @strawberry.field
    def odd_favourite(self) -> Named:
        return Owner(name="not a Named", since=None)  # type: ignore[return-value]

    @strawberry.field
    def thing(self) -> Annotated[Toy | Owner, strawberry.union("Thing")]:
        return Toy(name="rope", squeaks=True) if self.name == "rex" \
            else Owner(name="someone", since=datetime.date(2021, 3, 4))

    @strawberry.field
    def broken(self) -> str | None:
        if self.name == "tom":
            raise ValueError("tom is broken")
        return "fine"

    @strawberry.field
    async def broken_later(self) -> str | None:
        if self.name == "tom":
            raise ValueError("tom is broken later")
        return "fine"

    @strawberry.field
    async def gone_later(self) -> str | None:  # an expected error (NOT_FOUND), nullable
        if self.name == "tom":
            raise NotFound("Toy")
        return "here"

    @strawberry.field
    async def gone_required(self) -> str:  # ... in a non-null position
        if self.name == "tom":
            raise NotFound("Toy")
        return "here"

    @strawberry.field
    def must(self) -> str:
        return None if self.name.startswith("tom") else "ok"  # type: ignore[return-value]


@strawberry.type
class Box:
    """Values a resolver might hand over that a first, declined run must not spoil."""

    nums: list[int]  # a generator: can be read only once
    raw: JSON | None  # an exception object where a value should be
    broken: str | None = None

    @strawberry.field
    def fails(self) -> str | None:
        raise ValueError("box is broken")


@strawberry.type
class Held:
    held: list[int]  # coroutines, awaited as list items


async def _number(n: int) -> int:
    await asyncio.sleep(0)
    return n


PETS: list[Pet] = []
BOXES: dict[bool, Box] = {}


def boxes() -> dict[bool, Box]:
    return {raw_error: Box(nums=(n for n in range(3)),  # type: ignore[arg-type]
                           raw=ValueError("boom") if raw_error else {"a": 1})
            for raw_error in (False, True)}


@strawberry.type
class Query:
    @strawberry.field
    def pets(self, limit: Annotated[int, strawberry.argument()] = 10) -> list[Pet]:
        return PETS[:limit]

    @strawberry.field
    async def pet(self, name: str) -> Pet | None:
        return next((p for p in PETS if p.name == name), None)

    @strawberry.field
    def count(self) -> int:
        return len(PETS)

    @strawberry.field
    def box(self, raw_error: bool = False) -> Box:
        return BOXES[raw_error]  # the same object for a declined run and graphql-core's

    @strawberry.field
    def held(self) -> Held:
        return Held(held=[_number(n) for n in range(3)])  # type: ignore[misc]

    @strawberry.field
    def numbers(self) -> list[int]:
        return [_number(n) for n in range(3)]  # type: ignore[misc]

    @strawberry.field
    def futures(self) -> list[int]:
        return [asyncio.ensure_future(_number(n)) for n in range(3)]  # type: ignore[misc]


def pets() -> list[Pet]:
    return [Pet(name="rex", mood=Mood.HAPPY, age=3, tags=["a", None],
                chew=Toy(name="stick", squeaks=False)),
            Pet(name="tom", mood=Mood.GRUMPY, age=None, tags=[]),
            Pet(name="stray", mood=Mood.HAPPY, age=1, tags=["b"])]


FIELDS = ("name mood age tags chew { name squeaks } loud repeat(times: 3) keeper"
          " owner { name since } friends { name }")
ORDINARY = [
    f"{{ pets {{ {FIELDS} }} count }}",
    "query($n: Int!, $loud: Boolean!) { first: pets(limit: $n) { nick: name "
    "loud @include(if: $loud) age @skip(if: $loud) ...More } } fragment More on Pet "
    "{ __typename ... on Pet { repeat owner { name } } toys { name squeaks __typename } }",
    '{ pet(name: "rex") { name ownerNow { name } friends { friends { name mood } } } '
    'missing: pet(name: "nobody") { name } __typename }',
    "{ pets { ownerNow { name } owner { since } } }",
    "{ pets { favourite { __typename name ... on Toy { squeaks } } } }",  # an interface
    "{ pets { thing { __typename ... on Toy { name } ... on Owner { since } } } }",  # a union
    "{ box { raw } futures }",  # futures as list items: completed in a later wave
]
DECLINED = [
    "{ pets { name broken } }",  # an error in a nullable field
    "{ pets { name brokenLater } }",  # ... raised by a coroutine
    "{ pets { name must } }",  # null in a non-null field
    "{ pets { name goneRequired } }",  # an expected error in a non-null field
    "{ pets { name oddFavourite { name } } }",  # an interface resolving to no type
    "{ pets { name friends { must } } }",  # a null found in a later wave
    "{ box { nums fails } }",  # a generator read, then an error
    "{ held { held } box { fails } }",  # coroutines in a list: awaitable only once
    "{ numbers }",  # ... even when the list is a resolver's
    "{ box(rawError: true) { raw } }",  # an exception object as a scalar's value
]
VARIABLES = {"n": 2, "loud": True}


class Counting(ExecutionContext):
    """Counts the fields graphql-core's own path executes."""

    graphql_core_fields = 0

    def execute_field(self, *args: Any, **kwargs: Any) -> Any:
        Counting.graphql_core_fields += 1
        return super().execute_field(*args, **kwargs)


async def answer(query: str, context: type[Any]) -> dict[str, Any]:
    schema = strawberry.Schema(Query, types=[Toy], execution_context_class=context)
    if context is not StrawberryGraphQLCoreExecutionContext:
        install_lean_resolvers(schema)
    PETS[:] = pets()
    BOXES.update(boxes())
    LOADS.clear()
    result = await schema.execute(query, variable_values=VARIABLES,
                                  context_value={"owners": DataLoader(load_owners)})
    return {"data": result.data,
            "errors": sorted((e.message, tuple(e.path or ())) for e in result.errors or []),
            "loads": list(LOADS)}


@pytest.mark.parametrize("query", ORDINARY)
async def test_ordinary_queries_are_served_lean_with_graphql_cores_answer(query: str) -> None:
    Counting.graphql_core_fields = 0
    lean = await answer(query, Counting)
    assert Counting.graphql_core_fields == 0  # nothing went through graphql-core's path
    reference = await answer(query, StrawberryGraphQLCoreExecutionContext)
    assert lean["data"] == reference["data"]
    assert list(lean["data"]) == list(reference["data"])  # the same key order
    assert lean["errors"] == reference["errors"] == []


@pytest.mark.parametrize("query", ["{ pets { name goneLater } }",
                                   "{ pets { goneLater friends { goneLater name } } count }"])
async def test_an_expected_error_of_a_nullable_field_is_answered_lean(query: str) -> None:
    """A resolver's AppError (NOT_FOUND, FORBIDDEN...) in a nullable field: null and the
    error at its path, without graphql-core's run of the whole operation (an adversary's
    failing field had every value of its answer built twice, the second time slowly)."""
    Counting.graphql_core_fields = 0
    lean = await answer(query, Counting)
    assert Counting.graphql_core_fields == 0
    reference = await answer(query, StrawberryGraphQLCoreExecutionContext)
    assert lean == reference
    assert lean["errors"]
    assert all(m == "Toy not found" for m, _ in lean["errors"])


async def test_a_waves_values_are_completed_in_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    """Completing a wave (here 300 owners) gives other tasks turns of the event loop every
    `SLICE_S` (0 here: after each value), instead of holding it for the whole wave."""
    from giftgraph.accel import executor

    monkeypatch.setattr(executor, "SLICE_S", 0.0)
    schema = strawberry.Schema(Query, types=[Toy], execution_context_class=Counting)
    install_lean_resolvers(schema)
    PETS[:] = [Pet(name=f"p{i}", mood=Mood.HAPPY, age=i, tags=[]) for i in range(300)]
    ticks = 0
    done = False

    async def ticker() -> None:
        nonlocal ticks
        while not done:
            ticks += 1
            await asyncio.sleep(0)

    running = asyncio.ensure_future(ticker())
    Counting.graphql_core_fields = 0
    result = await schema.execute("{ pets(limit: 300) { owner { name } } }",
                                  context_value={"owners": DataLoader(load_owners)})
    done = True
    await running
    assert result.errors is None
    assert len(result.data["pets"]) == 300  # type: ignore[index]
    assert Counting.graphql_core_fields == 0
    assert ticks >= 250  # a turn between (nearly) every two of the wave's values


async def test_a_sliced_wave_still_loads_in_one_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loads a wave's completion asks for are held until it ends (`held_loads`): one
    batch a loader, as without the slices; each slice's turn had dispatched its own."""
    from giftgraph.accel import executor
    from giftgraph.schema.loaders import Loader

    monkeypatch.setattr(executor, "SLICE_S", 0.0)
    schema = strawberry.Schema(Query, types=[Toy], execution_context_class=Counting)
    install_lean_resolvers(schema)
    PETS[:] = [Pet(name=f"p{i}", mood=Mood.HAPPY, age=i, tags=[]) for i in range(200)]
    LOADS.clear()
    Counting.graphql_core_fields = 0
    result = await schema.execute(  # ownerNow: a load made while the wave completes
        "{ pets(limit: 200) { friends { ownerNow { name } } } }",
        context_value={"owners": Loader(load_owners)})
    assert result.errors is None
    assert Counting.graphql_core_fields == 0
    owners = [o["name"] for p in result.data["pets"]  # type: ignore[index]
              for f in p["friends"] for o in [f["ownerNow"]] if o]
    assert owners
    assert len(LOADS) == 1  # one batch for every friend's owner


@pytest.mark.parametrize("query", DECLINED)
async def test_anything_else_is_left_to_graphql_core(query: str) -> None:
    Counting.graphql_core_fields = 0
    gc.collect()  # earlier tests' garbage warns here, not below
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lean = await answer(query, Counting)
        gc.collect()
    assert Counting.graphql_core_fields > 0  # declined: graphql-core ran it
    reference = await answer(query, StrawberryGraphQLCoreExecutionContext)
    assert lean["data"] == reference["data"]
    assert lean["errors"] == reference["errors"]
    if "held" not in query and "numbers" not in query:  # coroutines in a list are left
        # unawaited (the list may be read again): a list a resolver made warns
        assert not [w for w in caught if "never awaited" in str(w.message)]


async def test_a_wave_batches_every_sibling_load() -> None:
    """All pets' owners are loaded in one batch, as graphql-core's gather does."""
    lean = await answer("{ pets { owner { name } ownerNow { name } } }", ExecutionContext)
    assert lean["loads"] == [["rex", "tom", "stray"]]
    assert lean["data"]["pets"][2] == {"owner": None, "ownerNow": None}


async def test_a_resolver_step_builds_its_info_once_for_all_its_objects() -> None:
    """A plain `def field(self, info)` resolver gets its step's one Info (the same field,
    nodes, parent type and context for every object), not one built per object."""
    query = "{ pets { keeper } again: pets(limit: 2) { keeper } }"
    INFOS.clear()
    lean = await answer(query, ExecutionContext)
    assert [p["keeper"] for p in lean["data"]["pets"]] == [
        "keeper of rex", "keeper of tom", "keeper of stray"]
    assert len(INFOS) == 5
    assert len({id(i) for i in INFOS}) == 2  # one per step: each root field has its own
    assert all(i.context is INFOS[0].context for i in INFOS)
    INFOS.clear()
    reference = await answer(query, StrawberryGraphQLCoreExecutionContext)
    assert reference["data"] == lean["data"]
    assert len({id(i) for i in INFOS}) == 5  # graphql-core's path: one per object


async def test_errors_are_reported_once_with_their_paths() -> None:
    lean = await answer("{ pets { name broken } }", ExecutionContext)
    assert lean["errors"] == [("tom is broken", ("pets", 1, "broken"))]
    assert lean["data"]["pets"][1] == {"name": "tom", "broken": None}


async def test_mutations_and_sync_execution_keep_graphql_cores_path() -> None:
    schema = strawberry.Schema(Query, types=[Toy], execution_context_class=Counting)
    PETS[:] = pets()
    Counting.graphql_core_fields = 0
    result = schema.execute_sync("{ count pets { name loud } }")
    assert result.errors is None
    assert result.data == {"count": 3, "pets": [{"name": "rex", "loud": "REX"},
                                                {"name": "tom", "loud": "TOM"},
                                                {"name": "stray", "loud": "STRAY"}]}
    assert Counting.graphql_core_fields == 0  # a synchronous query is served lean too


class Recovering(ExecutionContext):
    calls: list[str] = []

    async def before_rerun(self) -> None:
        Recovering.calls.append("recover")
        await super().before_rerun()


async def test_a_declined_wave_lets_the_context_recover_its_reads_first() -> None:
    """A read that failed may have aborted the operation's transaction: the context's
    `recover_reads` runs before graphql-core runs the query again."""

    class Context(dict):  # type: ignore[type-arg]
        async def recover_reads(self) -> None:
            Recovering.calls.append("context")

    schema = strawberry.Schema(Query, types=[Toy], execution_context_class=Recovering)
    PETS[:] = pets()
    Recovering.calls = []
    result = await schema.execute("{ pets { brokenLater } }",
                                  context_value=Context(owners=DataLoader(load_owners)))
    assert [e.message for e in result.errors or []] == ["tom is broken later"]
    assert Recovering.calls == ["recover", "context"]
    Recovering.calls = []
    await schema.execute("{ pets { owner { name } } }",
                         context_value=Context(owners=DataLoader(load_owners)))
    assert Recovering.calls == []  # nothing declined


def test_global_ids_of_equal_keys_of_other_types_differ() -> None:
    from giftgraph.ids import encode_id

    assert encode_id("Event", 1) != encode_id("Event", True)  # equal, and hash alike
    assert encode_id("Event", True) != encode_id("Event", 1)


async def test_cancellation_propagates() -> None:
    schema = strawberry.Schema(Query, types=[Toy], execution_context_class=ExecutionContext)
    PETS[:] = pets()
    started = asyncio.Event()

    async def slow_load(keys: list[str]) -> list[Owner | None]:
        started.set()
        await asyncio.sleep(10)
        return [None for _ in keys]

    task = asyncio.ensure_future(schema.execute(
        "{ pets { owner { name } } }", context_value={"owners": DataLoader(slow_load)}))
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_task_started_while_loads_are_held_loads_as_usual_after() -> None:
    """A task started inside `held_loads` has a copy of its context: a load it asks for
    once the held ones are made is made as usual, not held for good."""
    from giftgraph.schema.loaders import Loader, held_loads

    loader = Loader(load_owners)
    gate = asyncio.Event()

    async def load_later() -> Owner | None:
        await gate.wait()
        return await loader.load("late")

    with held_loads():
        first = loader.load("rex")
        task = asyncio.ensure_future(load_later())
    gate.set()
    assert (await first).name == "owner of rex"  # type: ignore[union-attr]
    late = await asyncio.wait_for(task, 5)
    assert late is not None
    assert late.name == "owner of late"
