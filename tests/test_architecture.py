"""The shape of the package: the module-level imports inside ``agnograd/`` form no cycle.

The graph is built from the source with ``ast``, without importing anything:

- a node is a module of ``agnograd/`` (a package is its ``__init__.py``);
- an edge A -> B is an ``import``/``from ... import`` *at module level* in A (function bodies
  are not module level: a deliberate, commented call-time import is how a lower layer reaches a
  higher one), relative imports resolved; ``from P import x`` where ``x`` is a submodule of
  ``P`` counts as importing ``x`` too;
- importing ``P.Q.m`` first runs the ``__init__`` of the subpackages ``P.Q`` on the way, so it
  is an edge to each of those too (an ``__init__`` that imports its heavier submodules would
  otherwise hide a cycle that depends on which module is imported first), except the
  importer's own packages, which are already being imported when it runs;
- imports under ``if TYPE_CHECKING:`` are not executed and do not count.

The package face, ``agnograd/__init__.py``, is the one exception. It imports the whole package
to build the namespace, and a few modules built *on* that namespace (``nn``, ``optim``,
``cli``, ``datasets``: ``import agnograd as ag``) need it back. That is a cycle only in form:
the face imports those modules last, once its namespace is complete. So edges *into* the face
(``import agnograd``, ``from agnograd import ...``, and the implicit run of the root
``__init__``) are left out of the cycle check, and a second test holds the face to its side of
the bargain: every module that uses the face is imported by the face after all its other
imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "agnograd"
FACE = "agnograd"


def _modules() -> dict[str, Path]:
    mods = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _module_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Import statements executed when the module is imported (not in functions or classes'
    methods, not under ``if TYPE_CHECKING:``)."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(stmts: list[ast.stmt]) -> None:
        for s in stmts:
            if isinstance(s, (ast.Import, ast.ImportFrom)):
                found.append(s)
            elif isinstance(s, ast.If):
                test = s.test
                name = test.id if isinstance(test, ast.Name) else (
                    test.attr if isinstance(test, ast.Attribute) else None)
                if name != "TYPE_CHECKING":
                    visit(s.body)
                visit(s.orelse)
            elif isinstance(s, (ast.Try, ast.With)):
                visit(s.body)
                for h in getattr(s, "handlers", []):
                    visit(h.body)
                visit(getattr(s, "orelse", []))
                visit(getattr(s, "finalbody", []))
            elif isinstance(s, ast.ClassDef):
                visit(s.body)  # a class body runs at import time

    visit(tree.body)
    return found


def _targets(importer: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The agnograd modules an import statement runs (before the implicit packages)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name == FACE or a.name.startswith(FACE + ".")]
    if node.level:
        base = importer.split(".")
        if not _is_package(importer):
            base = base[:-1]
        base = base[: len(base) - (node.level - 1)]
        mod = ".".join(base + ([node.module] if node.module else []))
    else:
        mod = node.module or ""
    if not (mod == FACE or mod.startswith(FACE + ".")):
        return []
    subs = [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in MODULES]
    # `from P import submodule` imports the submodule; any other name is read from P itself.
    return subs if len(subs) == len(node.names) else [mod, *subs]


def _with_packages(importer: str, target: str) -> list[str]:
    """``target`` and the subpackages whose ``__init__`` runs on the way to it."""
    parts = target.split(".")
    names = [".".join(parts[:k]) for k in range(2, len(parts) + 1)]
    own = {".".join(importer.split(".")[:k]) for k in range(1, importer.count(".") + 2)}
    return [n for n in names if n in MODULES and (n == target or n not in own)]


def import_graph() -> dict[str, set[str]]:
    """Module -> the agnograd modules it imports at module level, edges into the face left out."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in _module_level_imports(tree):
            for t in _targets(name, node):
                for m in _with_packages(name, t):
                    if m != name and m != FACE:
                        graph[name].add(m)
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle, as a path that ends where it starts (iterative depth-first search)."""
    WHITE, GREY, BLACK = 0, 1, 2
    color = dict.fromkeys(graph, WHITE)
    for start in sorted(graph):
        if color[start] != WHITE:
            continue
        stack = [(start, iter(sorted(graph[start])))]
        path = [start]
        color[start] = GREY
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                color[node] = BLACK
                stack.pop()
                path.pop()
            elif color[nxt] == GREY:
                return path[path.index(nxt):] + [nxt]
            elif color[nxt] == WHITE:
                color[nxt] = GREY
                stack.append((nxt, iter(sorted(graph[nxt]))))
                path.append(nxt)
    return None


def test_the_graph_is_found():
    graph = import_graph()
    assert "agnograd._tensor" in graph and "agnograd.autograd.walk" in graph
    assert "agnograd._tensor" in graph["agnograd.autograd.walk"]
    assert "agnograd.autograd" in graph["agnograd._ops._common"]


def test_module_level_imports_have_no_cycle():
    cycle = _find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_check_sees_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) in (
        ["a", "b", "c", "a"], ["b", "c", "a", "b"], ["c", "a", "b", "c"])
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_modules_that_use_the_face_are_imported_by_it_last():
    face_users = set()
    for name, path in MODULES.items():
        if name == FACE:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        if any(FACE in _targets(name, n) for n in _module_level_imports(tree)):
            face_users.add(name)
    assert face_users, "expected nn/optim/cli/datasets to use `import agnograd as ag`"
    graph = import_graph()

    def reaches_face_user(m: str, seen: set[str]) -> bool:
        if m in face_users:
            return True
        seen.add(m)
        return any(reaches_face_user(n, seen) for n in graph[m] if n not in seen)

    tree = ast.parse(MODULES[FACE].read_text(encoding="utf-8"))
    late = False
    for node in _module_level_imports(tree):
        mods = [m for t in _targets(FACE, node) for m in _with_packages(FACE, t) if m != FACE]
        uses_face = any(reaches_face_user(m, set()) for m in mods)
        assert not (late and not uses_face), (
            f"agnograd/__init__.py line {node.lineno} imports {mods} after a module that uses "
            "the package face: import those last")
        late = late or uses_face
