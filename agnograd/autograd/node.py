"""Graph nodes, and the few small facts about them every part of the engine shares.

A :class:`Node` is one differentiable op application. An *edge* says where an input's cotangent
goes: :func:`edge_of` builds one, :func:`edge_target` reads one back. :func:`version_cell` is
the in-place change counter an op snapshots when it saves an input, so backward can refuse a
gradient computed from overwritten data. :data:`FREED` marks a node whose saved arrays a
backward already released.

This module knows nothing of Tensor beyond its attributes (``_node``, ``_index``, ``_version``),
so it sits below ``agnograd._tensor`` in the import order.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

from .._tensor import share_version, shares_storage, version_cell
from .mode import anomaly_mode

if TYPE_CHECKING:
    from .._tensor import Tensor
    from ..backends import Backend

__all__ = ["Node", "Out", "OUT", "out", "FREED", "edge_of", "edge_target", "version_cell",
           "share_version", "shares_storage"]


class Out:
    """A marker an op passes in ``saved`` to mean "this op's k-th output" (see :func:`out`)."""

    __slots__ = ("k",)

    def __init__(self, k: int) -> None:
        self.k = k


OUT = Out(0)
"""The op's (first) output, in ``saved``."""


def out(k: int) -> Out:
    """The marker for the op's ``k``-th output, in ``saved``."""
    return OUT if k == 0 else Out(k)


FREED = ("<freed>",)
"""``node.saved`` after a backward without ``retain_graph`` released the saved arrays."""

_sequence = itertools.count()  # node creation order, which backward walks in reverse


def creation_mark() -> int:
    """A number below the ``seq`` of every node created after this call (and above every earlier
    one): the graph a function records while it runs is the nodes with ``seq`` above the mark."""
    return next(_sequence)


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # agnograd/


def creation_site() -> str:
    """file:line of the first caller outside agnograd (recorded only in anomaly mode)."""
    f: FrameType | None = sys._getframe(1)
    while f is not None and os.path.abspath(f.f_code.co_filename).startswith(_PACKAGE_DIR):
        f = f.f_back
    if f is None:
        return "<unknown>"
    return f"{f.f_code.co_filename}:{f.f_lineno}"


class Node:
    """One differentiable op application in the graph.

    Holds only what backward needs: one VJP rule per input, an edge per input to where that
    input's cotangent goes (``None`` when that input needs no gradient), and the raw arrays the
    rules read (freed after use unless the graph is retained), plus static ``params`` (axes,
    shapes) that stay. A rule is called ``rule(xp, g, *saved, *params)``.

    An edge is the parent :class:`Node` itself when the input is that node's only output, the
    leaf Tensor for a leaf, or ``(node, k)`` for output ``k`` of a multi-output node: the common
    cases cost no extra object per edge. ``src`` says where each saved array came from (input
    index ``i >= 0``, output ``-1-k``, or ``None`` for a constant) so ``create_graph`` can
    re-attach it to the graph. Outputs are never referenced by their node (no cycles): a saved
    output is its raw array.
    """

    __slots__ = ("seq", "name", "backend", "vjps", "edges", "saved", "src", "params", "meta", "outs",
                 "hooks", "where", "versions", "ftan", "__weakref__")

    def __init__(
        self,
        name: str,
        backend: Backend,
        vjps: tuple[Callable[..., Any] | None, ...],
        edges: tuple[Any, ...],
        saved: tuple[Any, ...],
        src: tuple[int | None, ...] | None,
        params: tuple[Any, ...],
        meta: tuple[Any, ...] | None,
        outs: tuple[tuple[tuple[int, ...], Any], ...] | None,
        versions: tuple[Any, ...] | None = None,
    ) -> None:
        self.seq = next(_sequence)  # creation order: a node is created after all it reads from
        self.name = name
        self.backend = backend
        self.vjps = vjps
        self.edges = edges
        self.saved = saved
        self.src = src
        self.params = params  # static arguments of the rules (axes, shapes): never freed
        self.meta = meta  # per input (shape, raw dtype) when the gradient may need reducing/casting
        self.outs = outs  # per output (shape, raw dtype) for multi-output nodes, else None
        self.hooks: dict[int, list[Callable[..., Any]]] | None = None  # per output index
        self.where: str | None = creation_site() if anomaly_mode.enabled else None
        # Flat (saved index, version cell, count when saved, ...) of each saved input Tensor: an
        # in-place change before backward would make the gradient silently wrong, so backward
        # checks.
        self.versions = versions

    def __repr__(self) -> str:
        return f"<{self.name} node>"


def edge_of(t: Tensor) -> Any:
    """Where a cotangent for input ``t`` goes: its node, ``(node, k)`` for output ``k`` of a
    multi-output node, or ``t`` itself for a leaf (see :class:`Node`)."""
    p = t._node
    if p is None:
        return t
    return p if p.outs is None else (p, t._index)


def edge_target(edge: Any) -> tuple[Any, int]:
    """An edge as ``(node or leaf Tensor, output index)``."""
    if type(edge) is tuple:
        return edge
    return edge, 0
