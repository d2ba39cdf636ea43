"""Library internals are used only in giftgraph.accel.

Outside it, no module imports a library's private module or name, and no attribute whose
name starts with `_` is read off anything but the module's own objects (`self`, `cls`, a
class of its own). A few names are the public API despite the underscore (namedtuple's
`_make`, SQLAlchemy's `Row._fields`/`_mapping`); the exceptions below say why each is
allowed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import giftgraph

PACKAGE = Path(giftgraph.__file__).resolve().parent
ACCEL = PACKAGE / "accel"
LIBRARIES = ("strawberry", "graphql", "uvicorn", "broadcaster", "starlette", "websockets",
             "sqlalchemy", "asyncpg", "redis", "limits", "cross_web")
# The private names the fast paths were written around: none may appear outside accel.
KNOWN = ("_schema", "_raw_info", "_field", "_send_result_stream", "_OperationStreamClosed",
         "_subscribers", "_relevant_sub_fields", "_get_field_exception_handlers",
         "_provided_operation_name", "_is_default", "_strawberry_schema")
# Public despite the underscore: namedtuple's and SQLAlchemy Row's documented API.
PUBLIC = {"_make", "_fields", "_asdict", "_replace", "_mapping", "_t", "_tuple"}
# Modules not (yet) moved here, each with its reason.
EXCEPTIONS: set[tuple[str, str]] = set()  # (module, imported private module) allowed


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if ACCEL not in p.parents)


def project_private_names() -> set[str]:
    """The private names GiftGraph defines itself (methods, functions, attributes it
    assigns, class fields): reading one of those off another of its objects is its own
    business."""
    names = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                names.add(node.value)  # __slots__ entries
    return {n for n in names if n.startswith("_") and not n.startswith("__")} - set(KNOWN)


def own_names(tree: ast.Module) -> set[str]:
    """Names a module defines itself (its classes, functions and module-level names)."""
    names = {"self", "cls", "super"}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


OURS: set[str] = set()


def offences(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    rel = path.relative_to(PACKAGE).as_posix()
    own = own_names(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            root = node.module.split(".")[0]
            if root in LIBRARIES:
                private = [p for p in node.module.split(".") if p.startswith("_")]
                private += [a.name for a in node.names if a.name.startswith("_")]
                if private and (rel, node.module) not in EXCEPTIONS:
                    found.append(f"{rel}:{node.lineno} from {node.module} import ...")
        elif isinstance(node, ast.Attribute):
            attr = node.attr
            if not attr.startswith("_") or attr.startswith("__") or attr in PUBLIC:
                continue
            base = node.value
            if isinstance(base, ast.Name) and base.id in ("self", "cls"):
                continue  # the object's own
            if attr not in KNOWN and ((isinstance(base, ast.Name) and base.id in own)
                                      or attr in OURS):
                continue
            found.append(f"{rel}:{node.lineno} .{attr}")
        elif isinstance(node, ast.Constant) and node.value in KNOWN:
            found.append(f"{rel}:{node.lineno} {node.value!r}")
    return found


def test_no_private_library_name_outside_accel() -> None:
    OURS.update(project_private_names())
    found = [o for path in modules() for o in offences(path)]
    assert not found, "library internals belong in giftgraph.accel:\n" + "\n".join(found)


def test_the_scan_finds_what_it_looks_for(tmp_path: Path) -> None:
    """The scan itself: each kind of use it must catch, caught."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from strawberry.subscriptions.protocols.graphql_transport_ws import handlers\n"
        "from broadcaster._backends.base import BroadcastBackend\n"
        "def f(schema, info, proto):\n"
        "    return schema._schema, info._raw_info, proto.close_sent, getattr(x, '_field')\n",
        encoding="utf-8")
    found = offences_at(sample)
    assert any("broadcaster._backends" in o for o in found)
    assert any("._schema" in o for o in found)
    assert any("._raw_info" in o for o in found)
    assert any("'_field'" in o for o in found)


def offences_at(path: Path) -> list[str]:
    """`offences` for a file outside the package (the scan's own test)."""
    global PACKAGE
    saved, PACKAGE = PACKAGE, path.parent
    try:
        return offences(path)
    finally:
        PACKAGE = saved
