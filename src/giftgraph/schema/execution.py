"""The plain execution context: Strawberry's, suggesting no names in production.

graphql-core's `hide_suggestions` (public) is never passed by Strawberry: `quiet()` makes
a class that passes it. The fast paths (giftgraph.accel.executor) subclass this one.
"""

from __future__ import annotations

from typing import Any, ClassVar

from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from giftgraph.live.frames import LiveFrame


class ExecutionContext(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's execution context; `quiet()` hides suggestions."""

    # False (`quiet`): no error of the variables' coercion or of execution suggests a
    # name (graphql-core's `hide_suggestions`, which Strawberry never passes).
    suggest: ClassVar[bool] = True

    @classmethod
    def build(cls, *args: Any, hide_suggestions: bool = False, **kwargs: Any) -> Any:
        return super().build(*args,  # type: ignore[misc]
                             hide_suggestions=hide_suggestions or not cls.suggest, **kwargs)

    def execute_operation(self, serially: bool | None = None) -> Any:
        """A live query's event (`LiveFrame`) is its result already, executed once for all
        its subscribers (giftgraph.live.queries): nothing is resolved per subscriber."""
        if isinstance(self.root_value, LiveFrame):
            return self.root_value.result()
        return super().execute_operation(serially)

    @classmethod
    def quiet(cls) -> type[ExecutionContext]:
        """This class, suggesting nothing (production)."""
        return type(f"Quiet{cls.__name__}", (cls,), {"suggest": False})
