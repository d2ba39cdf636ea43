"""Strawberry's extension hooks, resolved once per extension class instead of per request.

For every operation Strawberry enters four hook stages (operation, parsing, validation,
execution; a subscription also one per result), and for each stage it asks every one of
the schema's extensions (a dozen here) whether it overrides that hook, which kind of
function the hook is (`inspect`), and wraps it in a new `contextlib.contextmanager`
(`functools.update_wrapper` each time). The answer depends only on the extension's class,
so here it is worked out once per (stage, class): the runner's stages are Strawberry's own
context managers with the hooks list built from that answer. Entering, the order of the
hooks and what they are called with are Strawberry's (tests/unit/test_fast_hooks.py runs
both runners side by side).

The runner comes in through `Schema.create_extensions_runner`, which Strawberry calls to
make each operation's runner (`giftgraph.schema.schema.GiftGraphSchema`).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable
from typing import Any, ClassVar

from strawberry.extensions import SchemaExtension
from strawberry.extensions.context import (
    ExecutingContextManager,
    ExtensionContextManagerBase,
    OperationContextManager,
    ParsingContextManager,
    StreamResultContextManager,
    ValidationContextManager,
    WrappedHook,
)
from strawberry.extensions.runner import SchemaExtensionsRunner

Maker = Callable[[ExtensionContextManagerBase, SchemaExtension], WrappedHook]


def _maker(stage: type[ExtensionContextManagerBase], cls: type[Any]) -> Maker | None:
    """How `stage` wraps the hook of an extension of class `cls` (None: it has none),
    as `ExtensionContextManagerBase.get_hook` decides it."""
    hook_fn = getattr(cls, stage.HOOK_NAME)
    if hook_fn is getattr(SchemaExtension, stage.HOOK_NAME):
        return None
    if inspect.isgeneratorfunction(hook_fn):
        manager = contextlib.contextmanager(hook_fn)
        return lambda _, ext: WrappedHook(ext, functools.partial(manager, ext), False)
    if inspect.isasyncgenfunction(hook_fn):
        async_manager = contextlib.asynccontextmanager(hook_fn)
        return lambda _, ext: WrappedHook(ext, functools.partial(async_manager, ext), True)
    # A plain function or coroutine function (or not callable: Strawberry's error)
    return lambda stage_cm, ext: stage_cm.get_hook(ext)  # type: ignore[return-value]


class Resolved:
    """A stage whose hooks list is built from `_maker`, remembered per extension class and
    its hook function as found now (a hook replaced on the class is looked at anew, as
    Strawberry looks it up each time). The stage classes keep Strawberry's `__slots__`;
    the cache is a class attribute, let go past `LIMIT` classes (a schema built with
    tracing on makes its own extension class)."""

    __slots__ = ()
    LIMIT = 256
    makers: ClassVar[dict[type[Any], tuple[Any, Maker | None]]]

    def __init__(self, extensions: list[SchemaExtension]) -> None:
        stage: Any = self
        name = stage.HOOK_NAME
        stage.default_hook = getattr(SchemaExtension, name)
        hooks: list[WrappedHook] = []
        makers = self.makers
        for extension in extensions:
            cls = type(extension)
            hook_fn = getattr(cls, name)
            known = makers.get(cls)
            if known is None or known[0] is not hook_fn:
                if len(makers) >= self.LIMIT:
                    makers.clear()
                known = makers[cls] = (hook_fn, _maker(type(self), cls))  # type: ignore[arg-type]
            if known[1] is not None:
                hooks.append(known[1](stage, extension))
        stage.hooks = hooks

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.makers = {}


class Operation(Resolved, OperationContextManager):
    __slots__ = ()


class Parsing(Resolved, ParsingContextManager):
    __slots__ = ()


class Validation(Resolved, ValidationContextManager):
    __slots__ = ()


class Executing(Resolved, ExecutingContextManager):
    __slots__ = ()


class StreamResult(Resolved, StreamResultContextManager):
    __slots__ = ()

    def __init__(self, extensions: list[SchemaExtension], result: Any) -> None:
        self.result = result
        super().__init__(extensions)


class Runner(SchemaExtensionsRunner):
    """Strawberry's runner with the stages above."""

    def operation(self) -> OperationContextManager:
        return Operation(self.extensions)

    def validation(self) -> ValidationContextManager:
        return Validation(self.extensions)

    def parsing(self) -> ParsingContextManager:
        return Parsing(self.extensions)

    def executing(self) -> ExecutingContextManager:
        return Executing(self.extensions)

    def on_stream_result(self, result: Any) -> StreamResultContextManager:
        return StreamResult(self.extensions, result)


def shape_ok() -> bool:
    """Strawberry's stages still keep their hooks in `hooks` as `WrappedHook`s, take the
    extensions as their one argument (the stream stage: and the result), and the schema
    still makes its runner through `create_extensions_runner`."""
    import strawberry

    stages = (OperationContextManager, ParsingContextManager, ValidationContextManager,
              ExecutingContextManager)
    return (WrappedHook._fields == ("extension", "hook", "is_async")
            and "hooks" in ExtensionContextManagerBase.__slots__
            and "default_hook" in ExtensionContextManagerBase.__slots__
            and all(list(inspect.signature(s).parameters) == ["extensions"] for s in stages)
            and list(inspect.signature(StreamResultContextManager).parameters)
            == ["extensions", "result"]
            and hasattr(strawberry.Schema, "create_extensions_runner"))
