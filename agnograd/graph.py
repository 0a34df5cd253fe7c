"""Looking at a graph: export to Graphviz DOT or Mermaid, and count the bytes it holds."""

from __future__ import annotations

from typing import Any

from ._dtypes import from_backend_dtype
from ._tensor import Tensor
from .autograd import FREED, Node, edge_target

__all__ = ["to_dot", "to_mermaid", "saved_nbytes"]


def _need_tensor(t: Any, what: str, names: dict[str, Any] | None = None) -> None:
    if type(t) is not Tensor:
        raise TypeError(
            f"{what} takes a Tensor produced by agnograd ops (whose graph it reads), not "
            f"{type(t).__name__}; call it on the result of a computation on tensors that "
            "require grad, e.g. ag.to_dot(loss)"
        )
    for k, v in (names or {}).items():
        if type(v) is not Tensor:
            raise TypeError(f"{what}: names[{k!r}] is a {type(v).__name__}; names maps labels "
                            "to Tensors of the graph")


def _walk(t: Tensor) -> list[Node]:
    """Nodes reachable from ``t`` (iteratively), in discovery order."""
    if t._node is None:
        return []
    order, seen, stack = [], {t._node}, [t._node]
    while stack:
        n = stack.pop()
        order.append(n)
        for e in n.edges:
            p = None if e is None else edge_target(e)[0]
            if type(p) is Node and p not in seen:
                seen.add(p)
                stack.append(p)
    return order


def _nbytes(a: Any) -> int:
    try:
        size = 1
        for n in a.shape:
            size *= n
        return size * from_backend_dtype(a.dtype).bits // 8
    except (AttributeError, TypeError):
        return 0


def saved_nbytes(t: Tensor) -> int:
    """Bytes of the arrays that the graph producing ``t`` holds for its backward pass."""
    _need_tensor(t, "saved_nbytes")
    total = 0
    for n in _walk(t):
        if n.saved is not FREED:
            total += sum(_nbytes(a) for a in n.saved if hasattr(a, "shape"))
    return total


def _graph(t: Tensor, names: dict[str, Tensor] | None) -> tuple[list[tuple[str, str, str]],
                                                                   list[tuple[str, str]]]:
    """(id, label, kind) vertices and (src, dst) edges, data flowing towards ``t``."""
    names = names or {}
    by_leaf = {id(v): k for k, v in names.items() if v._node is None}
    by_slot = {(id(v._node), v._index): k for k, v in names.items() if v._node is not None}
    by_data = {id(v.data): k for k, v in names.items()}
    verts: dict[str, tuple[str, str]] = {}
    edges: list[tuple[str, str]] = []
    for n in _walk(t):
        nid = f"n{id(n)}"
        label = n.name
        slot = by_slot.get((id(n), 0))
        if slot:
            label = f"{slot} = {n.name}"
        verts[nid] = (label, "op")
        for i, e in enumerate(n.edges):
            if e is None:
                # A constant input: drawn only when its array is saved (so it can be named).
                if n.src is not None and n.saved is not FREED:
                    for k, s in enumerate(n.src):
                        if s == i and id(n.saved[k]) in by_data:
                            cid = f"c{id(n.saved[k])}"
                            verts[cid] = (f"{by_data[id(n.saved[k])]} {tuple(n.saved[k].shape)}",
                                          "const")
                            edges.append((cid, nid))
                continue
            src, _ = edge_target(e)
            if type(src) is Node:
                edges.append((f"n{id(src)}", nid))
            else:
                lid = f"l{id(src)}"
                name = by_leaf.get(id(src), "leaf")
                verts[lid] = (f"{name} {src.shape}", "param" if src._requires_grad else "const")
                edges.append((lid, nid))
    out = f"n{id(t._node)}" if t._node is not None else f"l{id(t)}"
    if t._node is None:
        verts[out] = (f"{by_leaf.get(id(t), 'leaf')} {t.shape}", "param")
    final = [k for k, v in names.items() if v is t]
    if final:
        verts[out] = (f"{final[0]} = {verts[out][0].split(' = ')[-1]}", verts[out][1])
    return [(k, lab, kind) for k, (lab, kind) in verts.items()], list(dict.fromkeys(edges))


def to_dot(t: Tensor, names: dict[str, Tensor] | None = None) -> str:
    """Graphviz DOT text of the graph that produced ``t``: ops as boxes, leaves that require grad
    as filled ellipses, named constants as plain ellipses. ``names`` labels tensors (leaves or
    op results), e.g. ``{"x": x, "W1": W1, "x1": x1, "L": loss}``."""
    _need_tensor(t, "to_dot", names)
    verts, edges = _graph(t, names)
    lines = ["digraph agnograd {", "  rankdir=LR;"]
    style = {"op": "shape=box", "param": 'shape=ellipse, style=filled, fillcolor="#cde4ff"',
             "const": "shape=ellipse"}
    for vid, label, kind in verts:
        lines.append(f'  {vid} [label="{label}", {style[kind]}];')
    for a, b in edges:
        lines.append(f"  {a} -> {b};")
    lines.append("}")
    return "\n".join(lines)


def to_mermaid(t: Tensor, names: dict[str, Tensor] | None = None) -> str:
    """Mermaid ``flowchart`` text of the graph that produced ``t`` (see :func:`to_dot`)."""
    _need_tensor(t, "to_mermaid", names)
    verts, edges = _graph(t, names)
    lines = ["flowchart LR"]
    for vid, label, kind in verts:
        text = label.replace('"', "'")
        lines.append(f'  {vid}["{text}"]' if kind == "op" else f'  {vid}(["{text}"])')
    for a, b in edges:
        lines.append(f"  {a} --> {b}")
    return "\n".join(lines)
