"""What a function read from outside itself: the one walk over the graph a call just recorded.

A function's own graph is the nodes created after a :func:`~.node.creation_mark` taken before
it ran. :func:`outside_reads` walks that graph back from the function's outputs and collects
every edge that leaves it: a leaf Tensor, or an output of a node made earlier. ``custom_vjp`` /
``Function`` use it to refuse a rule that reads a Tensor requiring grad that is not one of its
arguments (its gradient would be dropped); ``checkpoint`` to find those Tensors and make them
edges of its node, and to check the recomputation reads the same ones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .node import Node, edge_of, edge_target

if TYPE_CHECKING:
    from collections.abc import Iterable

    from .._tensor import Tensor

__all__ = ["outside_reads", "read_key", "reads_other"]


def read_key(t: Tensor) -> Any:
    """The key under which :func:`outside_reads` reports reading ``t``: ``id(t)`` for a leaf,
    ``(node, k)`` for output ``k`` of a node."""
    return id(t) if t._node is None else (t._node, t._index)


def outside_reads(roots: Iterable[Tensor], start: int,
                  cells: list[tuple[list[int], int]] | None = None) -> dict[Any, Any]:
    """Walk the graph recorded after ``start`` (nodes with ``seq > start``) back from the
    Tensors ``roots``, and return what it reads from outside, in the order the walk meets it:
    key -> edge, a key being ``id(leaf)`` for a leaf (its edge is the leaf Tensor itself) or
    ``(node, k)`` for output ``k`` of an earlier node (see :func:`read_key`). A root that is
    itself a leaf or an earlier node's output is reported too.

    Given a list ``cells``, appends to it the version cell and count ``(cell, count)`` of every
    Tensor the walked nodes saved, so a caller can later see whether one changed in place.
    """
    found: dict[Any, Any] = {}
    seen: set[Node] = set()
    stack: list[Node] = []

    def visit(edge: Any) -> None:
        p, k = edge_target(edge)
        if type(p) is Node:
            if p.seq > start:
                if p not in seen:
                    seen.add(p)
                    stack.append(p)
            else:
                found.setdefault((p, k), edge)
        else:
            found.setdefault(id(p), p)

    for r in roots:
        visit(edge_of(r))
    while stack:
        n = stack.pop()
        if cells is not None and n.versions is not None:
            v = n.versions
            cells.extend((v[j + 1], v[j + 2]) for j in range(0, len(v), 3))
        for e in n.edges:
            if e is not None:
                visit(e)
    return found


def reads_other(roots: Iterable[Tensor], start: int, allowed: set[Any]) -> bool:
    """Whether the graph recorded after ``start`` reads, back from ``roots``, anything from
    outside it other than the :func:`read_key` keys in ``allowed``: a leaf that (still)
    requires grad or an earlier node's output. The same walk as :func:`outside_reads`, stopping at the first
    such read (``agnograd.func``: does a transform's function close over a Tensor that an outer
    transform or graph differentiates?)."""
    seen: set[Node] = set()
    stack: list[Node] = []
    for r in roots:
        if r._requires_grad:
            e = edge_of(r)
            p, k = edge_target(e)
            if type(p) is Node and p.seq > start:
                seen.add(p)
                stack.append(p)
            elif type(p) is Node:
                if (p, k) not in allowed:
                    return True
            elif p._requires_grad and id(p) not in allowed:
                return True
    while stack:
        n = stack.pop()
        for e in n.edges:
            if e is None:
                continue
            p, k = edge_target(e)
            if type(p) is Node:
                if p.seq > start:
                    if p not in seen:
                        seen.add(p)
                        stack.append(p)
                elif (p, k) not in allowed:
                    return True
            elif p._requires_grad and id(p) not in allowed:
                return True
    return False
