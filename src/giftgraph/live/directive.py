"""`query @live { … }` over a socket (the graphql-live-query convention): the same as
`subscription { live { … } }`, its results being the query's own (`data` the selection's,
error paths from the query's root).

`live_subscription_of` rewrites such a document before Strawberry sees it: the operation to
run becomes a subscription whose one field is `live`, with the query's selection, name,
variables and fragments. `@live` itself never reaches validation, so the schema does not
declare it (a declared operation directive would make Strawberry wrap every field's
resolver). The live subscription then knows from `UNWRAPPED` that its results are the
query's, not the `live` field's. The rewritten document is made of the query's own nodes,
so an error's `locations` are places in the document the client sent.
"""

from __future__ import annotations

import hashlib
import weakref
from contextvars import ContextVar

from graphql import (
    DocumentNode,
    FieldNode,
    NameNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    print_ast,
)

# Set (in its own task) for an operation sent as `query @live`.
UNWRAPPED: ContextVar[bool] = ContextVar("giftgraph_live_unwrapped", default=False)

Rewrite = tuple[str, DocumentNode]
# Each parsed document's rewrites (by operation name), by the document object's id and
# forgotten with it: the parse cache hands back the same object for the same text, and
# bounds these with it. Printing a rewrite costs about what parsing its text did, which
# admission charged once; made on every request, it was work a caller could repeat
# uncharged. Only rewrites are kept: a name that matches no `query @live` costs a scan of
# the document's definitions, and kept, any number of names would grow this without bound.
# A rewrite is shared by every request that sends the document, as the parse cache shares
# documents: nothing changes a parsed document's nodes.
_REWRITES: dict[int, dict[str | None, Rewrite]] = {}


def may_be_live(query: str | None, max_chars: int) -> bool:
    """Whether `query` may be a `query @live` worth parsing (`admission.checks.preparse`)
    to rewrite it (`live_subscription_of`)."""
    return query is not None and "@live" in query and len(query) <= max_chars


def live_subscription_of(document: DocumentNode, operation_name: str | None) -> Rewrite | None:
    """`rewrite`'s answer, made once per document and operation name."""
    key = id(document)
    known = _REWRITES.get(key)
    if known is not None and operation_name in known:
        return known[operation_name]
    made = rewrite(document, operation_name)
    if made is not None:
        if known is None:
            known = _REWRITES[key] = {}
            weakref.finalize(document, _REWRITES.pop, key, None)
        known[operation_name] = made
    return made


def rewrite(document: DocumentNode, operation_name: str | None) -> Rewrite | None:
    """The live subscription for a `query @live` document, as text and as a document, or
    None (any other document: it goes on as it is). The document keeps the query's nodes
    and locations (the operation's, the document's: the caches that key on them see the
    text the client sent); only the `live` field is new, and has none. The text ends with
    a comment naming the query's own text by its digest: two texts that print alike
    (another caller's, laid out otherwise) have rewrites of their own, and so do their
    documents (each with its own places) in the parse cache."""
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    chosen = [op for op in operations
              if operation_name is None or (op.name and op.name.value == operation_name)]
    if len(chosen) != 1 or (operation_name is None and len(operations) != 1):
        return None
    operation = chosen[0]
    directives = [d for d in operation.directives or () if d.name.value != "live"]
    if operation.operation != OperationType.QUERY \
            or len(directives) == len(operation.directives or ()):
        return None
    live = FieldNode(name=NameNode(value="live"), arguments=(), directives=(),
                     selection_set=operation.selection_set)
    subscription = OperationDefinitionNode(
        operation=OperationType.SUBSCRIPTION, name=operation.name,
        variable_definitions=operation.variable_definitions, directives=tuple(directives),
        selection_set=SelectionSetNode(selections=(live,)), loc=operation.loc)
    rewritten = DocumentNode(
        definitions=tuple(subscription if d is operation else d for d in document.definitions),
        loc=document.loc)
    sent = document.loc.source.body if document.loc is not None else print_ast(document)
    digest = hashlib.blake2b(sent.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
    # Printed without indentation: indented, a block string nested deep prints at up to
    # ~130 times its length (a 1.5 K query, a 196 K rewrite), past the length limit.
    return f"{print_ast(rewritten, max_indent_depth=0)}\n# query @live {digest}", rewritten
