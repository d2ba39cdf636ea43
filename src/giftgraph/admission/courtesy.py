"""Work on a new document in the analysis thread, courteous to the event loop.

The thread and the loop share the interpreter's lock. A waiting thread gets it only after
the switch interval (5 ms by default), and each of a delivery's wake-ups (the change's
notification, the send) waited that long behind a validation of ~100 ms: a victim's
delivery p99 was 9x its idle one in `giftgraph bench fairness`'s `new_documents` class.
While the thread works, the interval is `SWITCH_S`, and its validation (`Courteous`, a
rule run with the others) sleeps `PAUSE_S` after each `SLICE_S` of work, so the loop runs
then without waiting at all. Measured in bench/NOTES.md (2026-11-26)."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from graphql.validation import ASTValidationRule, ValidationContext

SWITCH_S = 0.0005
SLICE_S = 0.002
PAUSE_S = 0.001
_local = threading.local()


@contextmanager
def courteous() -> Iterator[None]:
    """This thread's work on a document, with the short switch interval and `Courteous`
    in its validation (one analysis thread: nothing else sets the interval meanwhile)."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_S)
    _local.on = True
    try:
        yield
    finally:
        _local.on = False
        sys.setswitchinterval(before)


def rules() -> tuple[type[ASTValidationRule], ...]:
    """`(Courteous,)` inside `courteous()`, else nothing (on the loop it would only slow
    the loop down)."""
    return (Courteous,) if getattr(_local, "on", False) else ()


class Courteous(ASTValidationRule):
    """Not a check: a pause of `PAUSE_S` after every `SLICE_S` of the validation's work
    (looked at every 32 nodes visited, ~1 ms here)."""

    def __init__(self, context: ValidationContext) -> None:
        super().__init__(context)
        self.visited = 0
        self.since = time.perf_counter()

    def enter(self, *_: Any) -> None:
        self.visited += 1
        if self.visited & 31 == 0 and time.perf_counter() - self.since > SLICE_S:
            time.sleep(PAUSE_S)
            self.since = time.perf_counter()
