"""The backward walk.

For every node x_i of the graph, backward computes

    dL/dx_i = Σ_{j ∈ children(i)} (∂x_j/∂x_i)ᵀ dL/dx_j

exactly once, visiting nodes in reverse creation order: a node is always created after the
nodes it reads from, so once it is the latest-created node holding a cotangent, every child
has reported to it. A heap keyed by creation number gives that order without a counting pass,
without recursion, and in linear time on a 100,000-op chain. The transposed Jacobians are never
formed: each op's VJP rule maps the cotangent ``g = dL/dx_j`` straight to its input's
contribution, and a node's saved arrays are freed right after its rules have run.

VJP rules are written against an Array API namespace ``xp``. A plain backward runs them on raw
backend arrays with the backend's namespace; ``create_graph=True`` runs the *same* rules on
Tensors with the agnograd namespace, so the backward pass is itself recorded and can be
differentiated again.

:func:`backward` sets up, :func:`_walk` is the loop -- the common node (one output, no hooks,
no targets, no ``create_graph``, no anomaly mode) is handled inline there -- and the helpers
below it handle each rare case.
"""

from __future__ import annotations

from collections.abc import Callable
from heapq import heappop, heappush
from typing import TYPE_CHECKING, Any, overload

from .._dtypes import from_backend_dtype
from .._tensor import RetainGrad, Tensor
from ..backends import batching as _batching
from ..capture import _state as _capture
from .mode import anomaly_mode
from .node import FREED, Node, edge_of, edge_target

if TYPE_CHECKING:
    from ..backends import Backend

__all__ = ["backward"]

_wrap = Tensor._wrap
_BACKWARDS = _capture.BACKWARDS


@overload
def backward(roots: list[Tensor], root_grads: list[Any], *, retain_graph: bool,
             create_graph: bool, targets: None = None) -> None: ...
@overload
def backward(roots: list[Tensor], root_grads: list[Any], *, retain_graph: bool,
             create_graph: bool, targets: list[Tensor]) -> list[Any]: ...
def backward(
    roots: list[Tensor],
    root_grads: list[Any],
    *,
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
    # dL/d(output) waiting at each node: the array itself for a single-output node, a list per
    # output for a multi-output one. Leaves collect theirs by id (Tensors are not hashable).
    _BACKWARDS[0] += 1
    pending: dict[Node, Any] = {}
    leaf_grads: dict[int, list[Any]] = {}
    # Nodes holding a cotangent, latest-created first. A node is created after every node it
    # reads from, so when it is the latest one left, every child that will ever report to it
    # has reported: its dL/dx is complete. No counting pass over the graph is needed.
    heap: list[tuple[int, Node]] = []
    for r, g in zip(roots, root_grads):
        _send(edge_of(r), g, pending, heap, leaf_grads)
    wanted = None if targets is None else _Targets(roots, targets)
    # Under create_graph the rules run on Tensors with the agnograd namespace, which a Tensor
    # names (asked, not imported: this module comes before the namespace in the import order).
    xp = roots[0].__array_namespace__() if create_graph else None
    # under ag.vmap a cotangent may carry a batch the graph it walks was made without (vmap of
    # a vjp_fn made outside): each node then runs its rules on that level (_level)
    _batching.active.walks += 1
    try:
        checks = _walk(heap, pending, leaf_grads, wanted, xp, retain_graph, create_graph,
                       bool(_batching.ACTIVE) and not create_graph)
    finally:
        _batching.active.walks -= 1
    if checks:  # before any .grad is touched: a failed check changes nothing
        _raise_first_nonfinite(checks)
    # the seeds are the caller's arrays: a leaf's .grad never aliases one (see _deliver)
    results = _deliver(leaf_grads, wanted, create_graph, {id(g) for g in root_grads})
    if results is not None:  # a target that is an op's output: its gradient in its dtype
        for k, (r, t) in enumerate(zip(results, targets)):  # type: ignore[arg-type]
            if r is not None and r.data.dtype != t.data.dtype:
                b = _backend_of(r, t._backend)
                results[k] = (_cast(r.__array_namespace__(), r, r.data.dtype, t.data.dtype)
                              if create_graph else
                              _wrap(_cast(b.xp, r.data, r.data.dtype, t.data.dtype), b))
    return results


def _walk(heap: list[tuple[int, Node]], pending: dict[Node, Any], leaf_grads: dict[int, Any],
          wanted: _Targets | None, xp: Any, retain_graph: bool, create_graph: bool,
          vmap_on: bool = False) -> list[tuple[Node, int, tuple[int, ...], Any]]:
    """Pop the latest-created node holding a cotangent; its dL/dx_i = Σ_children (∂x_j/∂x_i)ᵀ
    dL/dx_j is complete, and each rule sends one term of a parent's sum. Every gradient is
    computed once, and no Jacobian is ever formed. Returns ``detect_anomaly()``'s flags."""
    anomaly = anomaly_mode.enabled
    checks: list[tuple[Node, int, tuple[int, ...], Any]] = []
    while heap:
        node = heappop(heap)[1]
        g = pending.pop(node)
        edges = node.edges
        if wanted is not None or node.hooks:
            g, edges = _visit_rare(node, g, wanted, create_graph)
            if edges is None:
                continue  # a root no target can be reached from, or a target (a cut point)
        saved = node.saved
        if saved is FREED:
            raise _freed_error(node)
        v = node.versions
        # (index, cell, count) per saved array: one or two (an input and the output, or both
        # inputs) are checked inline; _check_versions raises for the first that changed
        if v is not None and (v[1][0] != v[2] or (
                len(v) > 3 and (len(v) != 6 or v[4][0] != v[5]))):
            _check_versions(node)
        backend = node.backend
        params = node.params
        if vmap_on:
            lvl = _level(backend, g)
            if lvl is not backend:  # saved arrays as the level's (shared) values
                backend = lvl
                saved = tuple(_batching.share(lvl, a) for a in saved)  # type: ignore[arg-type]
                params = tuple(_batching.share(lvl, a) for a in params)  # type: ignore[arg-type]
        if create_graph:
            saved = _reattach(node, saved)
        else:
            xp = backend.xp
        if node.outs is not None:
            g = _node_cotangent(node, g, backend, create_graph)
        array_type = backend.array_type
        meta = node.meta
        args = saved + params if params else saved
        vjps = node.vjps
        i = -1
        for edge in edges:
            i += 1
            if edge is None:
                continue
            gi = vjps[i](xp, g, *args)  # type: ignore[misc]  # an edge always has its rule
            if gi is None:  # a rule may say "no gradient flows" (a zero): nothing to send
                continue
            if not create_graph and type(gi) is not array_type:
                gi = backend.fix(gi)
            if meta is not None and meta[i] is not None:
                gi = _fit(xp, gi, meta[i], backend, create_graph)
            if anomaly:  # a flag on the device, read back once after the walk
                checks.append(_finite_flag(node, i, gi, create_graph))
            if type(edge) is Node:  # _send(), inlined for the commonest edge: fan-out sums
                prev = pending.get(edge)
                if prev is None:
                    pending[edge] = gi
                    heappush(heap, (-edge.seq, edge))
                else:
                    pending[edge] = prev + gi
            else:
                _send(edge, gi, pending, heap, leaf_grads)
        if not retain_graph and node.saved:
            node.saved = FREED  # the saved arrays go as soon as the node's rules have run
        del g, saved, args
    return checks


def _level(b: Backend, g: Any) -> Backend:
    """The backend a node of backend ``b`` runs its rules on: ``b``, or the ``vmap`` level of
    its cotangent when that level is above ``b``."""
    if type(g) is list:
        g = next((e for e in g if e is not None), None)
    if isinstance(g, _batching.LevelArray) and _batching.below(b, g._bb):
        return g._bb
    return b


def _backend_of(g: Any, b: Backend) -> Backend:
    """The backend of a gradient for a tensor of backend ``b`` (a vmap level above it, or ``b``)."""
    return _batching.level_of(g.data if type(g) is Tensor else g, b)


def _send(edge: Any, g: Any, pending: dict[Node, Any], heap: list[tuple[int, Node]],
          leaf_grads: dict[int, list[Any]]) -> None:
    """Add ``g`` to what waits at ``edge``: a node (queued on first arrival), output ``k`` of a
    multi-output node, or a leaf."""
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


# ---------------------------------------------------------------------------------------------
# Targets: returning gradients instead of accumulating them (agnograd.func, custom.py, testing)


class _Targets:
    """The gradients ``backward(..., targets=...)`` returns, and the part of the graph worth
    walking for them: nodes from which a target can be reached (``useful``); targets that are
    outputs of nodes are cut points."""

    __slots__ = ("results", "nodes", "leaves", "cut", "useful")

    def __init__(self, roots: list[Tensor], targets: list[Tensor]) -> None:
        self.results: list[Any] = [None] * len(targets)
        self.nodes: dict[tuple[Node, int], int] = {}
        self.leaves: dict[int, int] = {}
        for k, t in enumerate(targets):
            if t._node is not None:
                self.nodes[(t._node, t._index)] = k
            else:
                self.leaves[id(t)] = k
        self.cut = {n for n, _ in self.nodes}
        root_nodes = dict.fromkeys(r._node for r in roots if r._node is not None)
        self.useful = _useful_nodes(list(root_nodes), self.cut, self.leaves)

    def live(self, edge: Any) -> Any:
        """``edge`` if a cotangent sent along it reaches something we need, else ``None``."""
        p = edge_target(edge)[0] if edge is not None else None
        if type(p) is Node:
            return edge if p in self.useful else None
        return edge if p is not None and id(p) in self.leaves else None


def _visit_rare(node: Node, g: Any, wanted: _Targets | None, create_graph: bool
                ) -> tuple[Any, Any]:
    """A node with hooks, or a walk with targets: run the hooks, take the gradients asked for,
    and say which edges to follow. Returns ``(g, edges)``, ``edges`` ``None`` to skip the node."""
    if wanted is not None and node not in wanted.useful:
        return g, None  # a root from which no target can be reached
    if node.hooks or (wanted is not None and wanted.nodes):
        slots = [g] if node.outs is None else g
        if node.hooks:
            for k, hooks in node.hooks.items():
                if hooks and slots[k] is not None:
                    slots[k] = _run_hooks(hooks, slots[k], node.backend, create_graph,
                                          wanted is None)
        if wanted is not None:
            for k, gk in enumerate(slots):
                w = wanted.nodes.get((node, k))
                if w is not None and gk is not None:
                    wanted.results[w] = gk if create_graph else _wrap(
                        gk, _backend_of(gk, node.backend))
        g = slots[0] if node.outs is None else slots
    if wanted is None:
        return g, node.edges
    if node in wanted.cut:
        return g, None
    return g, tuple(wanted.live(e) for e in node.edges)


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


# ---------------------------------------------------------------------------------------------
# Leaves: hooks, then .grad (or the returned gradients)


def _deliver(leaf_grads: dict[int, list[Any]], wanted: _Targets | None, create_graph: bool,
             seen: set[int]) -> list[Any] | None:
    """Run leaf hooks, then accumulate into ``.grad`` -- or, with targets, return the results.

    Every ``.grad`` is its own writable array: a rule may hand one array to two inputs (``add``
    sends ``ḡ`` to both), or a read-only broadcast view (``sum``), so a gradient that becomes a
    new ``.grad`` is copied when it might be shared -- it is an array already handed to
    another leaf (or a seed, ``seen``: ids, all alive in ``leaf_grads``), or the backend cannot
    vouch that it is private memory (``Backend.is_private``: a view, read-only). Accumulation
    makes a new array anyway."""
    for leaf, g in leaf_grads.values():
        have = g.data.dtype if create_graph else g.dtype
        want = leaf.data.dtype
        lb = leaf._backend
        b = _backend_of(g, lb) if _batching.ACTIVE else lb
        if have is not want and have != want:  # e.g. real(z) sends a real ḡ to a complex leaf
            g = _cast(g.__array_namespace__() if create_graph else b.xp, g, have, want)
        if leaf._hooks:
            g = _run_hooks(leaf._hooks, g, leaf._backend, create_graph)
        if wanted is not None:
            w = wanted.leaves.get(id(leaf))
            if w is not None:
                wanted.results[w] = g if create_graph else _wrap(g, b)
            continue
        if not leaf._requires_grad:
            continue
        if b is not lb:
            raise _batching.VmapError(
                "backward() inside ag.vmap with a batched gradient: a leaf's .grad would have to "
                "hold one gradient per example; take per-example gradients with ag.grad or "
                "ag.vjp inside vmap")
        if create_graph:
            if leaf._grad is not None:
                leaf._grad = leaf._grad + g
            elif id(g) in seen or not b.is_private(g.data):
                leaf._grad = g.__array_namespace__().asarray(g, copy=True)  # a recorded copy
            else:
                leaf._grad = g
        elif leaf._grad is not None:
            leaf._grad = _wrap(b.fix(leaf._grad.data + g), b)
        elif id(g) in seen or not b.is_private(g):
            leaf._grad = _wrap(b.copy(g), b)
        else:
            leaf._grad = _wrap(g, b)
        seen.add(id(g))
    return None if wanted is None else wanted.results


def _run_hooks(hooks: list[Callable[..., Any]], g: Any, backend: Backend, create_graph: bool,
               retain: bool = True) -> Any:
    """Call tensor hooks on a cotangent; a hook may return a replacement. ``retain=False``
    (a walk that returns gradients) skips :meth:`Tensor.retain_grad`'s hooks."""
    gt = g if create_graph else _wrap(g, backend)
    for hook in list(hooks):
        if not retain and type(hook) is RetainGrad:
            continue
        new = hook(gt)
        if new is not None:
            if (type(new) is not Tensor or new._backend is not gt._backend or new.shape != gt.shape
                    or new.data.dtype != gt.data.dtype):
                got = (f"a Tensor of shape {new.shape}, dtype {new.dtype.name} on backend "
                       f"'{new.backend}'" if type(new) is Tensor else type(new).__name__)
                raise (ValueError if type(new) is Tensor and new.shape != gt.shape else TypeError)(
                    f"a gradient hook ({getattr(hook, '__qualname__', repr(hook))}) returned "
                    f"{got}; it must return None or a Tensor of shape {gt.shape}, dtype "
                    f"{gt.dtype.name} on backend '{gt.backend}' (the gradient's)"
                )
            gt = new
    return gt if create_graph else gt.data


# ---------------------------------------------------------------------------------------------
# Shapes and dtypes of cotangents


def _fit(xp: Any, gi: Any, meta: tuple[Any, Any], backend: Backend, create_graph: bool) -> Any:
    """An input's cotangent summed back over broadcast axes and cast to the input's dtype."""
    shape, dt = meta
    if gi.shape != shape:
        gi = _unbroadcast(xp, gi, shape)
        if not create_graph:
            gi = backend.fix(gi)
    have = gi.data.dtype if create_graph else gi.dtype
    if have is not dt and have != dt:
        gi = _cast(xp, gi, have, dt)
    return gi


def _cast(xp: Any, g: Any, have: Any, dt: Any) -> Any:
    """Cotangent ``g`` (raw dtype ``have``) in dtype ``dt``. A complex cotangent reaching a real
    input gives its real part: in the convention ``x̄ = ∂L/∂Re x + i·∂L/∂Im x`` a real input has
    no imaginary direction, so ``Re`` is the gradient (and ``astype`` complex -> real is refused
    by the standard). A real cotangent of a complex input is the same number, made complex."""
    if from_backend_dtype(have).kind == "c" and from_backend_dtype(dt).kind != "c":
        g = xp.real(g)
        have = g.data.dtype if type(g) is Tensor else g.dtype
        if have is dt or have == dt:
            return g
    return xp.astype(g, dt)


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


def _node_cotangent(node: Node, slots: list[Any], backend: Backend, as_tensor: bool) -> Any:
    """The cotangent handed to a multi-output node's rules: a tuple, zeros where none came."""
    gs = []
    for g, (shape, dt) in zip(slots, node.outs):  # type: ignore[arg-type]
        if g is None:
            z = backend.xp.zeros(shape, dtype=dt, device=_device_of_slots(slots, backend))
            g = _wrap(backend.fix(z), backend) if as_tensor else backend.fix(z)
        gs.append(g)
    return tuple(gs)


def _device_of_slots(slots: list[Any], backend: Backend) -> Any:
    for g in slots:
        if g is not None:
            return backend.device_of(g.data if type(g) is Tensor else g)
    return None  # pragma: no cover - a node runs only once some cotangent reached it


def _reattach(node: Node, saved: tuple[Any, ...]) -> tuple[Any, ...]:
    """Saved raw arrays as Tensors connected to the graph, so rules record a differentiable
    backward pass (``create_graph=True``)."""
    ftan = getattr(node, "ftan", None)
    if ftan is not None:  # recorded under a forward trace: the saved arrays' tangents too
        return _with_tangents(_reattach_plain(node, saved), ftan)
    return _reattach_plain(node, saved)


def _with_tangents(ts: tuple[Any, ...], ftan: tuple[Any, ...]) -> tuple[Any, ...]:
    from .forward import Dual

    for t, d in zip(ts, ftan):
        if d is not None and type(t) is Tensor and getattr(t, "_tangent", None) is None:
            t._tangent = Dual(d, t._node is not None)
            t._requires_grad = True
    return ts


def _reattach_plain(node: Node, saved: tuple[Any, ...]) -> tuple[Any, ...]:
    backend = node.backend
    src = node.src
    out = []
    for k, a in enumerate(saved):
        s = None if src is None else src[k]
        if s is None:
            out.append(_wrap(a, backend) if backend.is_array(a) else a)
        elif s >= 0:
            edge = node.edges[s]
            if edge is None:
                out.append(_wrap(a, backend))
            else:
                p, j = edge_target(edge)
                # the producing node's output, or the leaf itself
                out.append(_wrap(a, backend, p, j) if type(p) is Node else p)
        else:
            out.append(_wrap(a, backend, node, -1 - s))
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# Errors and anomaly mode


def _freed_error(node: Node) -> RuntimeError:
    return RuntimeError(
        f"backward through the '{node.name}' op a second time: its saved arrays were freed "
        "by the first backward. Pass retain_graph=True to the first backward (or "
        "create_graph=True) if you need to backpropagate through this graph again."
    )


def _check_versions(node: Node) -> None:
    """Raise if a saved input or output was modified in place (through any alias) since the
    node saved it."""
    v: Any = node.versions
    for j in range(0, len(v), 3):
        if v[j + 1][0] != v[j + 2]:
            k, cell, count = v[j], v[j + 1], v[j + 2]
            shape = tuple(node.saved[k].shape)
            i = node.src[k]  # type: ignore[index]
            which = f"input {i}" if i >= 0 else f"output {-1 - i}"
            raise RuntimeError(
                f"a tensor of shape {shape} that the '{node.name}' op saved for backward (its "
                f"{which}) was modified in place afterwards (version {count} -> {cell[0]}), so its "
                "gradient would be wrong. Do the in-place update after backward, or use the "
                "out-of-place form (x = x + y instead of x += y)."
            )


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
