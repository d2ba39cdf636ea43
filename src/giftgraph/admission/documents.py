"""A GraphQL document's bounds: tokens, depth, aliases, cost, overlaps, mutation fields.

The order is the order of their price. The parser stops at the token limit
(`ParseWithTokenLimit`, in `admission/checks.py`); the measure below is linear in the
document; only then does graphql-core validate it (some of its rules are super-linear in
what they compare) and execute it. `DocumentBounds` (`admission/checks.py`) measures from
`on_validate`, before the validation (cached or not) of every request, over HTTP and over
a socket alike, so that nothing cached lets a document skip it.

The measure of a selection set is computed once: an operation's sets as they are walked,
a fragment's the first time it is spread, then added again at every further spread, never
expanded again. `fragment F1 on Query { ...F0 ...F0 }`, F2 of F1 and so on select
2^k fields in ~10·k tokens: each is counted, none is visited. The walk is iterative (a
document may nest hundreds of levels within its tokens) and visits each selection of the
document at most once.

- cost: every field of the expanded selection counts 1 (`__typename` too), a free-text
  field or a URL as many names as its longest value holds (`LONG_TEXT`: 10-25), and a
  connection's subtree counts once per node it may return: its `first`/`last` (a variable
  priced by its value, anything but an integer or null at the largest page) or the
  default page size; a list that is not a connection as the most entries it may hold
  (`FIXED_LISTS`; the largest page where nothing else bounds it). Introspection
  (`__schema`, `__type`) counts its fields but no pages;
- depth: levels of selection sets, fragments expanded; not counted below `__schema` and
  `__type` (GraphiQL's type references are nested that deep; graphql-core's
  MaxIntrospectionDepthRule bounds the nesting of introspection's lists);
- aliases: aliased fields of the expanded selection;
- fields: root fields of the operation, fragments expanded: what a mutation is charged;
- overlaps: what graphql-core's OverlappingFieldsCanBeMerged will compare, in selections.
  It compares, in each selection set, every field with every other of the same response
  name and every fragment spread with every other, through their selections: quadratic
  in a set's width (200 `persons(first: i) { totalCount }` fit in the token limit).
  Counted per selection set as written (graphql-core compares each set once and
  remembers fragment pairs), a set's inline fragments with the set.

Every operation of the document is measured and bounded (validation reads all of them),
and the limits apply to each; the mutation budget is charged for the one that runs.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    NullValueNode,
    OperationDefinitionNode,
    SelectionNode,
    ValueNode,
    VariableNode,
)

from giftgraph.errors import QueryTooComplex

# Counts stop growing here: far over any limit, and small integers however a document
# multiplies its fragments.
CAP = 1 << 48
META = frozenset(("__schema", "__type"))
# Free-text fields and URLs, each counted as the names (200 characters) its longest value
# holds (validation.py: 5,000, 2,048 and 2,000 characters). Counted as 1, 40,000
# descriptions fit in the cost bound: a compiled read of them made PostgreSQL write 720 MB
# of JSON, 10 s and 4-7 GB of its memory until statement_timeout (adversary, 2026-11-27);
# now at most 2,000 (~60 MB as JSON escapes at worst), as many as a family's 20 lists of
# 20 items with their notes and their gifts' descriptions need, twice over.
# tests/integration/test_documents.py checks the table against validation.py.
LONG_TEXT = {("Gift", "description"): 25, ("Occasion", "description"): 25,
             ("Person", "notes"): 25, ("ListItem", "notes"): 25, ("Comment", "body"): 10,
             ("Gift", "url"): 10, ("Gift", "imageUrl"): 10}
# Lists that are not connections, each priced as the most entries it may hold: the
# dashboard's lists (resolvers/queries.py: NEXT_OCCASIONS, RECENT_IDEAS, RECENT_ACTIVITY)
# and, for a family's persons or members (no bound of their own), the largest page. (A
# family's currencies, `spentByCurrency`, are leaves: counted once.) Counted once,
# `dashboard { activity { node { ... items(first: 100) } } }` cost 7,404 and rendered
# 20 x 100 items, 2.25 MB a snapshot (adversary, 2026-11-27).
# tests/integration/test_documents.py checks the dashboard's against the resolvers.
FIXED_LISTS = {("Dashboard", "nextOccasions"): 5, ("Dashboard", "recentIdeas"): 10,
               ("Dashboard", "activity"): 20}
UNBOUNDED_LISTS = frozenset({("Dashboard", "people"), ("OccasionSummary", "people"),
                             ("Presence", "viewers")})
# What comparing two fragments costs graphql-core beyond their selections, in selections;
# how many pairs of leaves without arguments compare in the time of one selection.
PAIR = 8
LEAVES = 8


@dataclass(slots=True)
class Measure:
    """What a selection set selects, its fragments expanded."""

    cost: int = 0
    depth: int = 1
    aliases: int = 0
    fields: int = 0  # fields at this level, outside introspection

    def add(self, other: Measure) -> None:
        """`other` selected at this level (a fragment's selections)."""
        self.cost = min(CAP, self.cost + other.cost)
        self.aliases = min(CAP, self.aliases + other.aliases)
        self.fields = min(CAP, self.fields + other.fields)
        self.depth = max(self.depth, other.depth)


class _Frame:
    """A selection set being measured; what it adds to the frame below when done."""

    __slots__ = ("fragment", "index", "inline", "measure", "meta", "names", "nodes", "pages",
                 "parent", "response", "selections", "spreads")

    def __init__(self, selections: Sequence[SelectionNode], parent: Any, *, pages: int = 0,
                 meta: bool = False, fragment: str | None = None, response: str | None = None,
                 shared: _Frame | None = None) -> None:
        self.selections = selections
        self.parent = parent  # the named type its fields are looked up on (None: unknown)
        self.measure = Measure()
        self.index = 0
        self.pages = pages  # a field's set: its field costs 1 + pages * the set's cost
        self.meta = meta  # a field's set below `__schema`/`__type`: adds no depth
        self.fragment = fragment  # a fragment's set: kept for every further spread
        # For the overlaps (see `Walker._overlaps`): selections within, as written; the
        # fields of this set by response name ([count, their selections]) and the fragments
        # spread in it, both shared with its inline fragments (graphql-core compares them
        # as one set).
        self.response = response  # a field's set: the field's response name
        self.inline = shared is not None
        self.nodes = 0
        self.names: dict[str, list[int]] = shared.names if shared is not None else {}
        self.spreads: set[str] = shared.spreads if shared is not None else set()


class Walker:
    """Measures the operations and fragments of one document (see the module's notes)."""

    def __init__(self, schema: GraphQLSchema, document: DocumentNode,
                 variables: dict[str, Any], default_page: int, max_page: int) -> None:
        self.schema = schema
        self.definitions = {d.name.value: d for d in document.definitions
                            if isinstance(d, FragmentDefinitionNode)}
        self.variables = variables
        self.defaults: dict[str, ValueNode] = {}
        self.default_page = default_page
        self.max_page = max_page
        self.done: dict[str, Measure] = {}
        self.open: set[str] = set()
        self.sizes: dict[str, int] = {}  # a fragment's selections, as written
        self.visits = 0  # selections visited: at most the document's
        self.overlaps = 0
        self.capped: set[str] = set()  # response names whose first/last was over the max

    def operation(self, op: OperationDefinitionNode) -> Measure:
        root = {"query": self.schema.query_type, "mutation": self.schema.mutation_type,
                "subscription": self.schema.subscription_type}[op.operation.value]
        self.defaults = {d.variable.name.value: d.default_value
                         for d in op.variable_definitions or () if d.default_value is not None}
        return self.walk(_Frame(op.selection_set.selections, root))

    def walk(self, first: _Frame) -> Measure:
        stack = [first]
        while True:
            frame = stack[-1]
            if frame.index == len(frame.selections):
                stack.pop()
                done = frame.measure
                if not frame.inline:
                    self.overlaps = min(CAP, self.overlaps + self._overlaps(frame))
                if frame.fragment is not None:
                    self.done[frame.fragment] = done
                    self.sizes[frame.fragment] = frame.nodes
                    self.open.discard(frame.fragment)
                if not stack:
                    return done
                stack[-1].nodes = min(CAP, stack[-1].nodes + frame.nodes)
                if frame.response is not None:
                    _named(stack[-1].names, frame.response, 1 + frame.nodes)
                below = stack[-1].measure
                if frame.pages:  # a field's selection set
                    below.cost = min(CAP, below.cost + 1 + done.cost * frame.pages)
                    below.aliases = min(CAP, below.aliases + done.aliases)
                    if not frame.meta:
                        below.depth = max(below.depth, 1 + done.depth)
                else:  # a fragment's, inline or named
                    below.add(done)
                continue
            node = frame.selections[frame.index]
            frame.index += 1
            frame.nodes += 1
            self.visits += 1
            if isinstance(node, FieldNode):
                child = self._field(frame, node)
                if child is not None:
                    stack.append(child)
            elif isinstance(node, InlineFragmentNode):
                condition = node.type_condition
                parent = self.schema.get_type(condition.name.value) if condition \
                    else frame.parent
                stack.append(_Frame(node.selection_set.selections, parent, shared=frame))
            elif isinstance(node, FragmentSpreadNode):
                name = node.name.value
                frame.spreads.add(name)
                known = self.done.get(name)
                if known is not None:
                    frame.measure.add(known)
                    frame.nodes = min(CAP, frame.nodes + self.sizes[name])
                elif name not in self.open and name in self.definitions:
                    # (a spread of an unknown fragment or a cycle adds nothing here:
                    # validation refuses both)
                    self.open.add(name)
                    stack.append(self._fragment_frame(name))

    def fragment(self, name: str) -> Measure:
        """A fragment's measure (walked if not yet): every fragment is validated, used or
        not."""
        known = self.done.get(name)
        if known is None:
            self.open.add(name)
            known = self.walk(self._fragment_frame(name))
        return known

    def _fragment_frame(self, name: str) -> _Frame:
        definition = self.definitions[name]
        return _Frame(definition.selection_set.selections,
                      self.schema.get_type(definition.type_condition.name.value),
                      fragment=name)

    def _field(self, frame: _Frame, node: FieldNode) -> _Frame | None:
        """Counts a field in `frame`; the frame of its selection set, if it has one."""
        measure = frame.measure
        name = node.name.value
        meta = frame.meta or name in META
        # (one at a time, a frame's counts stay within its selections: only what a
        # fragment or a page multiplies is capped)
        if node.alias is not None:
            measure.aliases += 1
            response = node.alias.value
        else:
            response = name
        if name[:2] != "__":
            measure.fields += 1
        if node.selection_set is None:
            parent = frame.parent
            measure.cost += 1 if parent is None else LONG_TEXT.get((parent.name, name), 1)
            # (two leaves without arguments compare in a fraction of a selection's time)
            _named(frame.names, response, 1 if node.arguments else 0)
            return None
        fields = getattr(frame.parent, "fields", None)
        definition = fields.get(name) if isinstance(fields, dict) else None
        child = definition.type if definition is not None else None
        while child is not None and hasattr(child, "of_type"):  # list, non-null
            child = child.of_type
        if name == "__schema":
            child = self.schema.get_type("__Schema")
        elif name == "__type":
            child = self.schema.get_type("__Type")
        pages = 1
        if child is not None and child.name.endswith("Connection") and not meta:
            pages = max(1, self._page_size(node))
        elif frame.parent is not None and not meta:
            key = (frame.parent.name, name)
            pages = self.max_page if key in UNBOUNDED_LISTS else FIXED_LISTS.get(key, 1)
        return _Frame(node.selection_set.selections, child, pages=pages, meta=meta,
                      response=response)

    def _overlaps(self, frame: _Frame) -> int:
        """What graphql-core's OverlappingFieldsCanBeMerged compares in a selection set:
        each field with every other of its response name, each fragment spread with every
        other, each comparison going through their selections."""
        found = 0
        for count, nodes in frame.names.values():
            if count > 1:
                found += (count - 1) * nodes + count * (count - 1) // LEAVES
        if len(frame.spreads) > 1:
            found += (len(frame.spreads) - 1) * sum(PAIR + self.sizes.get(name, 0)
                                                    for name in frame.spreads)
        return found

    def _page_size(self, node: FieldNode) -> int:
        size = None
        for argument in node.arguments or ():
            if argument.name.value in ("first", "last"):
                asked = self._int(argument.value)
                size = asked if size is None else max(size, asked)
        if size is not None and size > self.max_page:
            self.capped.add(node.alias.value if node.alias else node.name.value)
        return self.default_page if size is None else max(0, min(size, self.max_page))

    def _int(self, value: ValueNode) -> int:
        """An Int argument's value; the largest page for anything validation or
        coercion will refuse (measured before either)."""
        if isinstance(value, VariableNode):
            name = value.name.value
            if name in self.variables:
                given = self.variables[name]
                if given is None:
                    return self.default_page
                return given if type(given) is int else self.max_page
            default = self.defaults.get(name)
            return self.default_page if default is None else self._int(default)
        if isinstance(value, IntValueNode):
            try:
                return int(value.value)
            except ValueError:
                return self.max_page
        if isinstance(value, NullValueNode):
            return self.default_page
        return self.max_page


def _named(names: dict[str, list[int]], response: str, nodes: int) -> None:
    """One more field of this response name, with `nodes` selections (itself included)."""
    entry = names.get(response)
    if entry is None:
        names[response] = [1, nodes]
    else:
        entry[0] += 1
        entry[1] += nodes


@dataclass(slots=True)
class Found:
    """A document's measure: the largest of its operations', and the one that runs."""

    worst: Measure
    running: Measure | None
    visits: int
    overlaps: int
    capped: frozenset[str] = frozenset()  # fields whose first/last the maximum capped


def measure(schema: GraphQLSchema, document: DocumentNode, running: str | None,
            variables: Any, default_page: int, max_page: int) -> Found:
    """Every operation and fragment of `document` measured; `running` names the operation
    a request runs (None: the only one)."""
    walker = Walker(schema, document, variables if isinstance(variables, dict) else {},
                    default_page, max_page)
    worst = Measure(cost=0, depth=0)
    chosen = None
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    for op in operations:
        found = walker.operation(op)
        worst.cost, worst.aliases = max(worst.cost, found.cost), max(worst.aliases,
                                                                      found.aliases)
        worst.depth = max(worst.depth, found.depth)
        name = op.name.value if op.name else None
        if (running is None and len(operations) == 1) or (running is not None
                                                          and name == running):
            chosen = found
    for name in walker.definitions:
        walker.fragment(name)
    return Found(worst, chosen, walker.visits, walker.overlaps, frozenset(walker.capped))


class Measured:
    """`measure`, remembered for the last `size` (document, operation, variables, page
    sizes) it was asked: clients send the same few documents over and over, and the
    parser cache hands back the same document object for the same text. Variables are
    part of the key (page sizes can be variables) while their JSON is small; larger ones
    are measured each time. A `Found` is never changed after it is made."""

    VARIABLES_KEY_BYTES = 1024

    def __init__(self, size: int = 512) -> None:
        self.size = size
        self.entries: OrderedDict[tuple[Any, ...], tuple[weakref.ref[GraphQLSchema],
                                                         weakref.ref[DocumentNode], Found]] \
            = OrderedDict()

    def __call__(self, schema: GraphQLSchema, document: DocumentNode, running: str | None,
                 variables: Any, default_page: int, max_page: int) -> Found:
        try:
            given = orjson.dumps(variables, option=orjson.OPT_SORT_KEYS) if variables else b""
        except TypeError:  # not JSON (only from an in-process caller): not remembered
            given = None
        if given is None or len(given) > self.VARIABLES_KEY_BYTES:
            return measure(schema, document, running, variables, default_page, max_page)
        # Schema and document by identity, checked through weak references (an entry
        # keeps no document alive, and an id reused after one is gone does not match)
        key = (id(schema), id(document), running, given, default_page, max_page)
        entry = self.entries.get(key)
        if entry is not None and entry[0]() is schema and entry[1]() is document:
            self.entries.move_to_end(key)
            return entry[2]
        found = measure(schema, document, running, variables, default_page, max_page)
        self.entries[key] = (weakref.ref(schema), weakref.ref(document), found)
        if len(self.entries) > self.size:
            self.entries.popitem(last=False)
        return found


def over_limit(found: Found, settings: Any) -> QueryTooComplex | None:
    """The first bound `found` exceeds, as the error to answer with."""
    worst = found.worst
    for what, value, limit in (
        ("depth", worst.depth, settings.max_query_depth),
        ("aliases", worst.aliases, settings.max_aliases),
        ("cost", worst.cost, settings.max_query_cost),
        ("overlaps", found.overlaps, settings.max_query_overlaps),
    ):
        if value > limit:
            return QueryTooComplex(f"Query {what} {value} exceeds the limit of {limit}",
                                   limit=limit, actual=value, measure=what)
    return None


def count_refusal(context: Any, bound: str) -> None:
    metrics = getattr(context, "metrics", None)
    if metrics is not None:
        metrics.refusals.count(bound)
