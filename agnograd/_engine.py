"""The reverse-mode engine: graph nodes, gradient mode, and the one backward walk.

For every node x_i of the graph, backward computes

    dL/dx_i = sum over children j of x_i of (dx_j/dx_i)^T dL/dx_j

exactly once, visiting nodes in reverse creation order: a node is always created after the
nodes it reads from, so once it is the latest-created node holding a cotangent, every child
has reported to it. A heap keyed by creation number gives that order without a counting pass,
without recursion, and in linear time on a 100,000-op chain. The transposed Jacobians are never
formed: each op's VJP rule maps the cotangent ``g = dL/dx_j`` straight to its input's
contribution.

VJP rules are written against an Array API namespace ``xp``. A plain backward runs them on raw
backend arrays with the backend's namespace; ``create_graph=True`` runs the *same* rules on
Tensors with the agnograd namespace, so the backward pass is itself recorded and can be
differentiated again.
"""

from __future__ import annotations

import functools
import itertools
import os
import sys
import threading
from collections.abc import Callable
from heapq import heappop, heappush
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from ._backend import Backend
    from ._tensor import Tensor

__all__ = ["Node", "no_grad", "enable_grad", "is_grad_enabled", "set_grad_enabled"]

F = TypeVar("F", bound=Callable[..., Any])

# ---------------------------------------------------------------------------------------------
# Gradient mode (per thread)


class _GradMode(threading.local):
    enabled = True


_mode = _GradMode()


def is_grad_enabled() -> bool:
    """Whether ops called in this thread now record a graph."""
    return _mode.enabled


class _GradModeContext:
    """Context manager and decorator that sets the gradient mode of the current thread."""

    __slots__ = ("_enabled", "_previous")

    def __init__(self, enabled: bool) -> None:
        self._enabled = enabled
        self._previous: list[bool] = []

    def __enter__(self) -> None:
        self._previous.append(_mode.enabled)
        _mode.enabled = self._enabled

    def __exit__(self, *exc: object) -> None:
        _mode.enabled = self._previous.pop()

    def __call__(self, fn: F) -> F:
        enabled = self._enabled

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with _GradModeContext(enabled):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]


def no_grad() -> _GradModeContext:
    """Ops inside do not record a graph (``with ag.no_grad():`` or ``@ag.no_grad()``)."""
    return _GradModeContext(False)


def enable_grad() -> _GradModeContext:
    """Ops inside record a graph, even within :func:`no_grad`."""
    return _GradModeContext(True)


def set_grad_enabled(mode: bool) -> _GradModeContext:
    """Set the mode for the current thread now; as a context manager, restore it on exit."""
    ctx = _GradModeContext(bool(mode))
    ctx._previous.append(_mode.enabled)
    _mode.enabled = bool(mode)
    return ctx


# ---------------------------------------------------------------------------------------------
# Nodes

# Markers an op passes in ``saved`` to mean "this op's k-th output".
class _Out:
    __slots__ = ("k",)

    def __init__(self, k: int) -> None:
        self.k = k


OUT = _Out(0)


def out(k: int) -> _Out:
    return OUT if k == 0 else _Out(k)


_FREED = ("<freed>",)
_sequence = itertools.count()  # node creation order, which backward walks in reverse


class _AnomalyMode(threading.local):
    enabled = False


_anomaly = _AnomalyMode()
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _creation_site() -> str:
    """file:line of the first caller outside agnograd (recorded only in anomaly mode)."""
    f = sys._getframe(1)
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
                 "hooks", "where", "versions", "__weakref__")

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
        self.where: str | None = _creation_site() if _anomaly.enabled else None
        # Flat (saved index, version cell, count when saved, ...) of each saved input Tensor: an
        # in-place change before backward would make the gradient silently wrong, so backward
        # checks.
        self.versions = versions

    def __repr__(self) -> str:
        return f"<{self.name} node>"


def edge_target(edge: Any) -> tuple[Any, int]:
    """An edge as ``(node or leaf Tensor, output index)``."""
    if type(edge) is tuple:
        return edge  # type: ignore[no-any-return]
    return edge, 0


def _edge(t: Tensor) -> Any:
    """Where a cotangent for input ``t`` goes (see :class:`Node`)."""
    p = t._node
    if p is None:
        return t
    return p if p.outs is None else (p, t._index)


def record(
    name: str,
    out_data: Any,
    backend: Backend,
    inputs: tuple[Any, ...],
    vjps: tuple[Callable[..., Any] | None, ...],
    saved: tuple[Any, ...] = (),
    meta: tuple[Any, ...] | None = None,
    params: tuple[Any, ...] = (),
) -> Tensor:
    """Wrap ``out_data`` in a Tensor and, if any input requires grad, attach a :class:`Node`.

    ``inputs`` are the op's operands (Tensors or constants), ``vjps[i]`` the rule
    ``(xp, g, *saved, *params) -> input i's cotangent`` (``None`` for a non-differentiable
    operand). ``saved`` items are input Tensors, :data:`OUT`, or raw constants (arrays, scalars);
    ``params`` are static values (shapes, axes) that are never freed. ``meta[i]``, when given, is
    input i's ``(shape, raw dtype)``: the engine sums a broadcast cotangent back to that shape
    and casts it to that dtype.
    """
    T = _tensor_cls
    if not _mode.enabled:
        return T._wrap(out_data, backend)
    # Per-op overhead is what users feel on small arrays: the one-input case is spelled out,
    # and an edge is the parent node itself (no tuple) in the common case.
    n = len(inputs)
    if n == 1:
        t = inputs[0]
        if vjps[0] is None or type(t) is not T or not t._requires_grad:
            return T._wrap(out_data, backend)
        p = t._node
        edges: tuple[Any, ...] = (t if p is None else p if p.outs is None else (p, t._index),)
    else:  # (elementwise binary ops and matmul take record_binary)
        edges = _edges(inputs, vjps)  # type: ignore[assignment]
        if edges is None:
            return T._wrap(out_data, backend)
    if saved:
        raw, src, versions = _unpack_saved(inputs, saved, (out_data,))
        node = Node(name, backend, vjps, edges, raw, src, params, meta, None, versions)
    else:
        node = Node(name, backend, vjps, edges, (), None, params, meta, None)
    return T._wrap(out_data, backend, node, 0)


def record_unary(name: str, out_data: Any, backend: Backend, x: Tensor,
                 vjps: tuple[Callable[..., Any]], save: int) -> Tensor:
    """:func:`record` for a one-input elementwise op, the commonest kind, spelled out: the
    caller has checked that ``x`` requires grad and grad mode is on. ``save`` says what the
    rule reads: 0 nothing, 1 the input, 2 the output."""
    p = x._node
    edges = (x if p is None else p if p.outs is None else (p, x._index),)
    if save == 1:
        cell = x._version
        if cell is None:
            cell = x._version = [0]
        node = Node(name, backend, vjps, edges, (x.data,), _SRC_INPUT[0], (), None, None,
                    (0, cell, cell[0]))
    elif save == 2:
        node = Node(name, backend, vjps, edges, (out_data,), _SRC_OUTPUT, (), None, None)
    else:
        node = Node(name, backend, vjps, edges, (), None, (), None, None)
    return _tensor_cls._wrap(out_data, backend, node, 0)


def record_binary(name: str, out_data: Any, backend: Backend, x1: Any, x2: Any,
                  vjps: tuple[Callable[..., Any] | None, Callable[..., Any] | None],
                  picks: tuple[int, ...], meta: tuple[Any, ...] | None) -> Tensor:
    """:func:`record` for a two-operand op -- the elementwise ones (either operand may be a
    Python scalar) and ``matmul`` -- spelled out: the caller has checked that grad mode is on
    and an operand requires grad. ``picks`` names what the rules read, in order: 0 ``x1``,
    1 ``x2``, 2 the output."""
    T = _tensor_cls
    e0 = e1 = None
    if vjps[0] is not None and type(x1) is T and x1._requires_grad:
        p = x1._node
        e0 = x1 if p is None else p if p.outs is None else (p, x1._index)
    if vjps[1] is not None and type(x2) is T and x2._requires_grad:
        p = x2._node
        e1 = x2 if p is None else p if p.outs is None else (p, x2._index)
    raw: tuple[Any, ...] = ()
    src: tuple[int | None, ...] = ()
    versions: tuple[Any, ...] = ()
    for k in picks:
        if k == 2:
            raw += (out_data,)
            src += (-1,)
            continue
        t = x2 if k else x1
        if type(t) is T:
            cell = t._version
            if cell is None:
                cell = t._version = [0]
            versions += (len(raw), cell, cell[0])
            raw += (t.data,)
            src += (k,)
        else:  # a Python scalar
            raw += (t,)
            src += (None,)
    node = Node(name, backend, vjps, (e0, e1), raw, _SRC.setdefault(src, src) if src else None,
                (), meta, None, versions or None)
    return T._wrap(out_data, backend, node, 0)


def record_multi(
    name: str,
    out_datas: tuple[Any, ...],
    backend: Backend,
    inputs: tuple[Any, ...],
    vjps: tuple[Callable[..., Any] | None, ...],
    saved: tuple[Any, ...] = (),
    params: tuple[Any, ...] = (),
) -> tuple[Tensor, ...]:
    """Like :func:`record` for ops with several outputs; rules receive a tuple of cotangents
    (zeros for outputs that got none)."""
    T = _tensor_cls
    edges = _edges(inputs, vjps) if _mode.enabled else None
    if edges is None:
        return tuple(T._wrap(d, backend) for d in out_datas)
    raw, src, versions = _unpack_saved(inputs, saved, out_datas)
    outs = tuple((d.shape, d.dtype) for d in out_datas)
    node = Node(name, backend, vjps, edges, raw, src, params, None, outs, versions)
    return tuple(T._wrap(d, backend, node, k) for k, d in enumerate(out_datas))


def _edges(inputs: tuple[Any, ...], vjps: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """Per input, where its cotangent goes; ``None`` when no input needs a gradient."""
    T = _tensor_cls
    edges = []
    found = False
    for t, rule in zip(inputs, vjps):
        if rule is not None and type(t) is T and t._requires_grad:
            edges.append(_edge(t))
            found = True
        else:
            edges.append(None)
    return tuple(edges) if found else None


# Interned ``src`` tuples: the same few patterns recur for every op, so nodes share them.
_SRC: dict[tuple[int | None, ...], tuple[int | None, ...]] = {}
_SRC_INPUT = tuple((i,) for i in range(4))  # one saved item: input i
_SRC_OUTPUT = (-1,)  # one saved item: the (only) output


def _unpack_saved(inputs: tuple[Any, ...], saved: tuple[Any, ...], outs: tuple[Any, ...]
                  ) -> tuple[tuple[Any, ...], tuple[int | None, ...] | None, Any]:
    """Raw arrays to keep, where each came from (input i, output -1-k, None: constant), and
    the flat (index, version cell, count) triples of the saved input Tensors."""
    T = _tensor_cls
    if len(saved) == 1:  # the common case (x or out of a unary op), without building lists
        s = saved[0]
        ts = type(s)
        if ts is T:
            i = _position(inputs, s)
            cell = s._version
            if cell is None:
                cell = s._version = [0]
            return (s.data,), (_SRC_INPUT[i] if i < 4 else (i,)), (0, cell, cell[0])
        if ts is _Out and s.k == 0:
            return (outs[0],), _SRC_OUTPUT, None
    raw = []
    src: list[int | None] = []
    versions: tuple[Any, ...] = ()
    known = False
    for s in saved:
        ts = type(s)
        if ts is T:
            cell = s._version
            if cell is None:
                cell = s._version = [0]
            versions += (len(raw), cell, cell[0])
            raw.append(s.data)
            src.append(_position(inputs, s))
            known = True
        elif ts is _Out:
            raw.append(outs[s.k])
            src.append(-1 - s.k)
            known = True
        else:
            raw.append(s)
            src.append(None)
    if not known:
        return tuple(raw), None, None
    key = tuple(src)
    return tuple(raw), _SRC.setdefault(key, key), (versions or None)


def _position(inputs: tuple[Any, ...], t: Any) -> int:
    """Index of ``t`` among the op's inputs, by identity (``==`` is elementwise on Tensors)."""
    i = 0
    for x in inputs:
        if x is t:
            return i
        i += 1
    raise ValueError("a saved Tensor must be one of the op's inputs")


# Set by agnograd/__init__ once the ops are installed: Tensor (for type checks) and the agnograd
# namespace (for running rules on Tensors under create_graph). This breaks the import cycle
# engine <- tensor <- ops deliberately, in one place.
_tensor_cls: Any = None
_namespace: Any = None


def install(tensor_cls: type, namespace: Any) -> None:
    global _tensor_cls, _namespace
    _tensor_cls = tensor_cls
    _namespace = namespace


# ---------------------------------------------------------------------------------------------
# Backward


def _unbroadcast(xp: Any, g: Any, shape: tuple[int, ...]) -> Any:
    """Sum ``g`` over the axes that broadcasting added or stretched, back to ``shape``."""
    lead = g.ndim - len(shape)
    if lead and g.shape[lead:] == shape:  # only leading axes were added (a bias): one sum
        return xp.sum(g, axis=0 if lead == 1 else tuple(range(lead)))  # an int axis is cheaper
    axes = tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(shape) if n == 1 and g.shape[lead + i] != 1
    )
    if axes:
        g = xp.sum(g, axis=axes, keepdims=True)
    if lead or g.shape != shape:
        g = xp.reshape(g, shape)
    return g


def backward(
    roots: list[Tensor],
    root_grads: list[Any],
    retain_graph: bool,
    create_graph: bool,
    targets: list[Tensor] | None = None,
) -> list[Any] | None:
    """Backpropagate ``root_grads`` (dL/droot) from ``roots``.

    Without ``targets`` the leaves' ``.grad`` accumulate the result (``Tensor.backward``). With
    ``targets`` nothing is accumulated: the gradient reaching each target (leaf or intermediate)
    is returned (``None`` where none reaches it), only the part of the graph between the roots
    and the targets is walked, and targets are cut points: paths that continue past a target
    are not followed (``agnograd.func`` passes fresh aliases of its inputs, so this is exact).
    """
    T = _tensor_cls
    # dL/d(output) waiting at each node: the array itself for a single-output node, a list per
    # output for a multi-output one. Leaves collect theirs by id (Tensors are not hashable).
    pending: dict[Node, Any] = {}
    leaf_grads: dict[int, list[Any]] = {}
    # Nodes holding a cotangent, latest-created first. A node is created after every node it
    # reads from, so when it is the latest one left, every child that will ever report to it
    # has reported: its dL/dx is complete. No counting pass over the graph is needed.
    heap: list[tuple[int, Node]] = []

    def send(edge: Any, g: Any) -> None:
        te = type(edge)
        if te is Node:
            prev = pending.get(edge)
            if prev is None:
                pending[edge] = g
                heappush(heap, (-edge.seq, edge))
            else:
                pending[edge] = prev + g
        elif te is tuple:
            node, k = edge
            slots = pending.get(node)
            if slots is None:
                slots = pending[node] = [None] * len(node.outs)
                heappush(heap, (-node.seq, node))
            prev = slots[k]
            slots[k] = g if prev is None else prev + g
        else:
            entry = leaf_grads.get(id(edge))
            if entry is None:
                leaf_grads[id(edge)] = [edge, g]
            else:
                entry[1] = entry[1] + g

    root_nodes: list[Node] = []
    for r, g in zip(roots, root_grads):
        if r._node is not None:
            root_nodes.append(r._node)
        send(_edge(r), g)

    wanted_nodes: dict[tuple[Node, int], int] = {}
    wanted_leaves: dict[int, int] = {}
    results: list[Any] = []
    useful: set[Node] | None = None
    cut_nodes: set[Node] = set()
    if targets is not None:
        results = [None] * len(targets)
        for k, t in enumerate(targets):
            if t._node is not None:
                wanted_nodes[(t._node, t._index)] = k
            else:
                wanted_leaves[id(t)] = k
        cut_nodes = {n for n, _ in wanted_nodes}
        useful = _useful_nodes(list(dict.fromkeys(root_nodes)), cut_nodes, wanted_leaves)

    def live(e: Any) -> bool:
        """Does a cotangent sent along edge ``e`` reach something we need?"""
        te = type(e)
        if te is Node:
            return e in useful  # type: ignore[operator]
        if te is tuple:
            return e[0] in useful  # type: ignore[operator]
        return id(e) in wanted_leaves

    # Walk: pop the latest-created node holding a cotangent; its
    # dL/dx_i = Σ_children (∂x_j/∂x_i)ᵀ dL/dx_j is complete, and each rule sends one term of a
    # parent's sum. Every gradient is computed once, and no Jacobian is ever formed.
    anomaly = _anomaly.enabled
    checks: list[tuple[Node, int, tuple[int, ...], Any]] = []  # detect_anomaly()'s flags
    xp = _namespace
    while heap:
        node = heappop(heap)[1]
        g = pending.pop(node)
        if useful is not None and node not in useful:
            continue  # a root from which no target can be reached
        if node.hooks or wanted_nodes:
            slots = [g] if node.outs is None else g
            if node.hooks:
                _run_node_hooks(node, slots, create_graph)
            for k, gk in enumerate(slots):
                w = wanted_nodes.get((node, k))
                if w is not None and gk is not None:
                    results[w] = gk if create_graph else T._wrap(gk, node.backend)
            g = slots[0] if node.outs is None else slots
        if cut_nodes and node in cut_nodes:
            continue
        saved = node.saved
        if saved is _FREED:
            raise RuntimeError(
                f"backward through the '{node.name}' op a second time: its saved arrays were freed "
                "by the first backward. Pass retain_graph=True to the first backward (or "
                "create_graph=True) if you need to backpropagate through this graph again."
            )
        v = node.versions
        if v is not None and (len(v) > 3 or v[1][0] != v[2]):  # one saved input: checked inline
            _check_versions(node)
        backend = node.backend
        if create_graph:
            saved = _reattach(node, saved)
        else:
            xp = backend.xp
        if node.outs is not None:
            g = _node_cotangent(node, g, backend, create_graph)
        array_type = backend.array_type
        meta = node.meta
        args = saved + node.params if node.params else saved
        vjps = node.vjps
        i = -1
        for edge in node.edges:
            i += 1
            if edge is None or (useful is not None and not live(edge)):
                continue
            gi = vjps[i](xp, g, *args)
            if gi is None:  # a rule may say "no gradient flows" (a zero): nothing to send
                continue
            if not create_graph and type(gi) is not array_type:
                gi = backend.fix(gi)
            if meta is not None and meta[i] is not None:
                gi = _fit(xp, gi, meta[i], backend, create_graph)
            if anomaly:  # a flag on the device, read back once after the walk
                checks.append(_finite_flag(node, i, gi, create_graph))
            if type(edge) is Node:  # send(), inlined for the commonest edge: fan-out sums
                prev = pending.get(edge)
                if prev is None:
                    pending[edge] = gi
                    heappush(heap, (-edge.seq, edge))
                else:
                    pending[edge] = prev + gi
            else:
                send(edge, gi)
        if not retain_graph and node.saved:
            node.saved = _FREED
        del g, saved, args

    if checks:  # before any .grad is touched: a failed check changes nothing
        _raise_first_nonfinite(checks)

    # 3. Deliver leaf gradients: leaf hooks first, then accumulate into .grad (or return them).
    for leaf, g in leaf_grads.values():
        if leaf._hooks:
            g = _run_hooks(leaf._hooks, g, leaf._backend, create_graph)
        if targets is not None:
            w = wanted_leaves.get(id(leaf))
            if w is not None:
                results[w] = g if create_graph else T._wrap(g, leaf._backend)
            continue
        if not leaf._requires_grad:
            continue
        if create_graph:
            leaf._grad = g if leaf._grad is None else leaf._grad + g
        elif leaf._grad is None:
            leaf._grad = T._wrap(g, leaf._backend)
        else:
            leaf._grad = T._wrap(leaf._backend.fix(leaf._grad.data + g), leaf._backend)
    return results if targets is not None else None


def _fit(xp: Any, gi: Any, meta: tuple[Any, Any], backend: Backend, create_graph: bool) -> Any:
    """An input's cotangent summed back over broadcast axes and cast to the input's dtype."""
    shape, dt = meta
    if gi.shape != shape:
        gi = _unbroadcast(xp, gi, shape)
        if not create_graph:
            gi = backend.fix(gi)
    have = gi.data.dtype if create_graph else gi.dtype
    if have is not dt and have != dt:
        gi = xp.astype(gi, dt)
    return gi


def _useful_nodes(roots: list[Node], target_nodes: set[Node], target_leaves: dict[int, int]
                  ) -> set[Node]:
    """Nodes from which a target can be reached (iterative post-order; targets are cut points)."""
    useful: set[Node] = set()
    done: set[Node] = set()
    stack: list[tuple[Node, bool]] = [(n, False) for n in roots]
    while stack:
        n, expanded = stack.pop()
        if n in done:
            continue
        if n in target_nodes:
            useful.add(n)
            done.add(n)
            continue
        if not expanded:
            stack.append((n, True))
            for e in n.edges:
                if e is not None:
                    p = edge_target(e)[0]
                    if type(p) is Node and p not in done:
                        stack.append((p, False))
            continue
        done.add(n)
        for e in n.edges:
            if e is None:
                continue
            p = edge_target(e)[0]
            if (type(p) is Node and p in useful) or (type(p) is not Node and id(p) in target_leaves):
                useful.add(n)
                break
    return useful


def _run_hooks(hooks: list[Callable[..., Any]], g: Any, backend: Backend, create_graph: bool) -> Any:
    """Call tensor hooks on a cotangent; a hook may return a replacement."""
    T = _tensor_cls
    gt = g if create_graph else T._wrap(g, backend)
    for hook in list(hooks):
        new = hook(gt)
        if new is not None:
            if (type(new) is not T or new._backend is not gt._backend or new.shape != gt.shape
                    or new.data.dtype != gt.data.dtype):
                got = (f"a Tensor of shape {new.shape}, dtype {new.dtype.name} on backend "
                       f"'{new.backend}'" if type(new) is T else type(new).__name__)
                raise (ValueError if type(new) is T and new.shape != gt.shape else TypeError)(
                    f"a gradient hook ({getattr(hook, '__qualname__', repr(hook))}) returned "
                    f"{got}; it must return None or a Tensor of shape {gt.shape}, dtype "
                    f"{gt.dtype.name} on backend '{gt.backend}' (the gradient's)"
                )
            gt = new
    return gt if create_graph else gt.data


def _run_node_hooks(node: Node, slots: list[Any], create_graph: bool) -> None:
    for k, hooks in node.hooks.items():  # type: ignore[union-attr]
        if hooks and slots[k] is not None:
            slots[k] = _run_hooks(hooks, slots[k], node.backend, create_graph)


def _finite_flag(node: Node, i: int, gi: Any, create_graph: bool
                 ) -> tuple[Node, int, tuple[int, ...], Any]:
    """detect_anomaly(): whether node's cotangent for input ``i`` is all finite, as a 0-d array
    left on the device (no host sync, no Dask compute per node)."""
    raw = gi.data if create_graph else gi
    xp = node.backend.xp
    return node, i, tuple(raw.shape), xp.all(xp.isfinite(raw))


def _raise_first_nonfinite(checks: list[tuple[Node, int, tuple[int, ...], Any]]) -> None:
    """Read every flag back in one transfer per backend (one compute on Dask, one
    synchronisation on CuPy) and raise for the first op, in walk order, whose gradient has a
    NaN or inf."""
    by_backend: dict[Any, list[int]] = {}
    for k, check in enumerate(checks):
        by_backend.setdefault(check[0].backend, []).append(k)
    first: int | None = None
    for backend, ks in by_backend.items():
        j = backend.first_false([checks[k][3] for k in ks])
        if j is not None and (first is None or ks[j] < first):
            first = ks[j]
    if first is not None:
        node, i, shape, _ = checks[first]
        raise FloatingPointError(
            f"the backward of '{node.name}' produced a non-finite gradient (NaN or inf) for its "
            f"input {i} (shape {shape}); the op was created at {node.where or '<unknown>'}"
        )


def _check_versions(node: Node) -> None:
    v: Any = node.versions
    for j in range(0, len(v), 3):
        if v[j + 1][0] != v[j + 2]:
            k, cell, count = v[j], v[j + 1], v[j + 2]
            shape = tuple(node.saved[k].shape)
            i = node.src[k]  # type: ignore[index]
            raise RuntimeError(
                f"a tensor of shape {shape} that the '{node.name}' op saved for backward (its input "
                f"{i}) was modified in place afterwards (version {count} -> {cell[0]}), so its "
                "gradient would be wrong. Do the in-place update after backward, or use the "
                "out-of-place form (x = x + y instead of x += y)."
            )


def _node_cotangent(node: Node, slots: list[Any], backend: Backend, as_tensor: bool) -> Any:
    """The cotangent handed to a node's rules: one array, or a tuple (zeros where none came)."""
    if node.outs is None:
        return slots[0]
    gs = []
    for g, (shape, dt) in zip(slots, node.outs):
        if g is None:
            z = backend.xp.zeros(shape, dtype=dt, device=_device_of_slots(slots, backend))
            g = _tensor_cls._wrap(backend.fix(z), backend) if as_tensor else backend.fix(z)
        gs.append(g)
    return tuple(gs)


def _device_of_slots(slots: list[Any], backend: Backend) -> Any:
    for g in slots:
        if g is not None:
            return backend.device_of(g.data if type(g) is _tensor_cls else g)
    return None  # pragma: no cover - a node runs only once some cotangent reached it


def _reattach(node: Node, saved: tuple[Any, ...]) -> tuple[Any, ...]:
    """Saved raw arrays as Tensors connected to the graph, so rules record a differentiable
    backward pass (``create_graph=True``)."""
    T = _tensor_cls
    backend = node.backend
    src = node.src
    out = []
    for k, a in enumerate(saved):
        s = None if src is None else src[k]
        if s is None:
            out.append(T._wrap(a, backend) if backend.is_array(a) else a)
        elif s >= 0:
            edge = node.edges[s]
            if edge is None:
                out.append(T._wrap(a, backend))
            else:
                p, k = edge_target(edge)
                # the producing node's output, or the leaf itself
                out.append(T._wrap(a, backend, p, k) if type(p) is Node else p)
        else:
            out.append(T._wrap(a, backend, node, -1 - s))
    return tuple(out)

