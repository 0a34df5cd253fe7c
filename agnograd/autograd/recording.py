"""Recording: how an op attaches its :class:`~agnograd.autograd.node.Node` to the graph.

Every differentiable op computes its forward on raw arrays, then hands the result here with its
inputs and VJP rules. :func:`record` is the general form; :func:`record_unary` and
:func:`record_binary` are the same thing spelled out for the commonest ops (per-op overhead is
what users feel on small arrays), and :func:`record_multi` is for ops with several outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._tensor import Tensor
from .forward import _DIAG as DIAG
from .forward import JVP, Dual, fwd_state, nested_tangents, output_tangent, top_level
from .mode import grad_mode
from .node import OUT, Node, Out, edge_of, version_cell

if TYPE_CHECKING:
    from ..backends import Backend

__all__ = ["record", "record_unary", "record_binary", "record_multi", "unpack_saved"]

_wrap = Tensor._wrap

FWD_ON = 0
"""How many forward traces (``agnograd.autograd.forward``) are active, in any thread: while
none is, recording pays one global read for forward mode."""


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
    if not grad_mode.enabled:
        return _wrap(out_data, backend)
    if FWD_ON and fwd_state.on:
        return _forward(name, (out_data,), backend, inputs, vjps, saved, meta, params, False)[0]
    if len(inputs) == 1:  # the one-input case, spelled out
        t = inputs[0]
        if vjps[0] is None or type(t) is not Tensor or not t._requires_grad:
            return _wrap(out_data, backend)
        edges = (edge_of(t),)
    else:  # (elementwise binary ops and matmul take record_binary)
        found = _edges(inputs, vjps)
        if found is None:
            return _wrap(out_data, backend)
        edges = found
    if saved:
        raw, src, versions = unpack_saved(inputs, saved, (out_data,))
        node = Node(name, backend, vjps, edges, raw, src, params, meta, None, versions)
        if src is not None and -1 in src:  # the output is saved: it carries the node's cell
            return _with_out_cells(node, (_wrap(out_data, backend, node, 0),))[0]
    else:
        node = Node(name, backend, vjps, edges, (), None, params, meta, None)
    return _wrap(out_data, backend, node, 0)


# record_unary and record_binary, the per-op hot path of every elementwise op and matmul, spell
# out edge_of() and version_cell() inline -- the one place they are copied: the two calls cost
# about 3-4% of the recording forward on the 2,000-op chain of benchmarks/op_overhead.py
# (measured paired, in one process). Keep the copies identical to the helpers in node.py.


def record_unary(name: str, out_data: Any, backend: Backend, x: Tensor,
                 vjps: tuple[Callable[..., Any]], save: int) -> Tensor:
    """:func:`record` for a one-input elementwise op, the commonest kind, spelled out: the
    caller has checked that ``x`` requires grad and grad mode is on. ``save`` says what the
    rule reads: 0 nothing, 1 the input, 2 the output."""
    if FWD_ON and fwd_state.on:
        d = getattr(x, "_dual", None)  # (a dead trace's Dual takes _forward, which skips it)
        if d is not None and d.trace.alive and not d.rev and d.p is None and JVP.get(
                vjps[0]) is DIAG:
            # forward mode's hot path: a real elementwise op, its VJP rule is its JVP rule
            v = d.t
            dt = out_data.dtype
            if (v.dtype is dt or v.dtype == dt) and not backend.complex_kinds.get(dt, True):
                tv = vjps[0](backend.xp, v) if save == 0 else vjps[0](
                    backend.xp, v, x.data if save == 1 else out_data)
                t = _wrap(out_data, backend)
                t._requires_grad = True
                t._dual = Dual(tv, False, 1, None, d.trace)
                return t
        return _forward(name, (out_data,), backend, (x,), vjps,
                        ((), (x,), (OUT,))[save], None, (), False)[0]
    p = x._node
    edges = (x if p is None else p if p.outs is None else (p, x._index),)
    if save == 1:
        cell = x._version
        if cell is None:
            cell = x._version = [0]
        node = Node(name, backend, vjps, edges, (x.data,), _SRC_INPUT[0], (), None, None,
                    (0, cell, cell[0]))
    elif save == 2:  # the output is saved: a new counter, carried by the output Tensor
        cell = [0]
        node = Node(name, backend, vjps, edges, (out_data,), _SRC_OUTPUT, (), None, None,
                    (0, cell, 0))
        t = _wrap(out_data, backend, node, 0)
        t._version = cell
        return t
    else:
        node = Node(name, backend, vjps, edges, (), None, (), None, None)
    return _wrap(out_data, backend, node, 0)


def record_binary(name: str, out_data: Any, backend: Backend, x1: Any, x2: Any,
                  vjps: tuple[Callable[..., Any] | None, Callable[..., Any] | None],
                  picks: tuple[int, ...], meta: tuple[Any, ...] | None,
                  cross: bool = False) -> Tensor:
    """:func:`record` for a two-operand op -- the elementwise ones (either operand may be a
    Python scalar) and ``matmul`` -- spelled out: the caller has checked that grad mode is on
    and an operand requires grad. ``picks`` names what the rules read, in order: 0 ``x1``,
    1 ``x2``, 2 the output. ``cross``: each operand is read only by the other's rule
    (``multiply``, ``matmul``), so an operand is version-checked at backward only when the
    other one needs a gradient -- as PyTorch saves it only then (an in-place change of ``x``
    after ``x * 2.0`` is no error)."""
    if FWD_ON and fwd_state.on:
        t = _forward_binary(out_data, backend, x1, x2, vjps, picks)
        if t is not None:
            return t
        return _forward(name, (out_data,), backend, (x1, x2), vjps,
                        tuple(OUT if k == 2 else (x2 if k else x1) for k in picks), meta, (),
                        False)[0]
    e0 = e1 = None
    if vjps[0] is not None and type(x1) is Tensor and x1._requires_grad:
        p = x1._node
        e0 = x1 if p is None else p if p.outs is None else (p, x1._index)
    if vjps[1] is not None and type(x2) is Tensor and x2._requires_grad:
        p = x2._node
        e1 = x2 if p is None else p if p.outs is None else (p, x2._index)
    raw: tuple[Any, ...] = ()
    src: tuple[int | None, ...] = ()
    versions: tuple[Any, ...] = ()
    out_cell = None
    for k in picks:
        if k == 2:
            out_cell = [0]
            versions += (len(raw), out_cell, 0)
            raw += (out_data,)
            src += (-1,)
            continue
        t = x2 if k else x1
        if type(t) is Tensor:
            if cross and (e0 if k else e1) is None:  # read by a rule that never runs
                raw += (t.data,)
                src += (k,)
                continue
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
    t = _wrap(out_data, backend, node, 0)
    if out_cell is not None:
        t._version = out_cell
    return t


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
    if FWD_ON and fwd_state.on and grad_mode.enabled:
        return _forward(name, out_datas, backend, inputs, vjps, saved, None, params, True)
    edges = _edges(inputs, vjps) if grad_mode.enabled else None
    if edges is None:
        return tuple(_wrap(d, backend) for d in out_datas)
    raw, src, versions = unpack_saved(inputs, saved, out_datas)
    outs = tuple((d.shape, d.dtype) for d in out_datas)
    node = Node(name, backend, vjps, edges, raw, src, params, None, outs, versions)
    ts = tuple(_wrap(d, backend, node, k) for k, d in enumerate(out_datas))
    if src is not None and any(i is not None and i < 0 for i in src):
        _with_out_cells(node, ts)
    return ts


def _forward_binary(out_data: Any, backend: Backend, x1: Any, x2: Any,
                    vjps: tuple[Callable[..., Any] | None, Callable[..., Any] | None],
                    picks: tuple[int, ...]) -> Tensor | None:
    """Forward mode's hot path for a real elementwise binary op whose operands carry tangents
    or are constants (``None`` for anything else: :func:`_forward` handles it)."""
    dt = out_data.dtype
    if backend.complex_kinds.get(dt, True):
        return None
    d1 = d2 = None
    if type(x1) is Tensor and x1._requires_grad:
        d1 = getattr(x1, "_dual", None)
        if (d1 is None or not d1.trace.alive or d1.rev or d1.p is not None
                or JVP.get(vjps[0]) is not DIAG):
            return None
    if type(x2) is Tensor and x2._requires_grad:
        d2 = getattr(x2, "_dual", None)
        if (d2 is None or not d2.trace.alive or d2.rev or d2.p is not None
                or JVP.get(vjps[1]) is not DIAG):
            return None
    if picks:
        vals = (x1.data if type(x1) is Tensor else x1, x2.data if type(x2) is Tensor else x2,
                out_data)
        args: tuple[Any, ...] = (
            (vals[picks[0]], vals[picks[1]]) if len(picks) == 2 else tuple(vals[k] for k in picks))
    else:
        args = ()
    total = None if d1 is None else vjps[0](backend.xp, d1.t, *args)  # type: ignore[misc]
    if d2 is not None:
        c = vjps[1](backend.xp, d2.t, *args)  # type: ignore[misc]
        total = c if total is None else total + c
    if total is None:
        return None
    if total.dtype != dt:
        total = backend.xp.astype(total, dt)
    if total.shape != out_data.shape:
        total = backend.xp.broadcast_to(total, out_data.shape)
    t = _wrap(out_data, backend)
    t._requires_grad = True
    t._dual = Dual(total, False, 1, None, (d1 if d1 is not None else d2).trace)  # type: ignore[union-attr]
    return t


def _forward(name: str, outs: tuple[Any, ...], backend: Backend, inputs: tuple[Any, ...],
             vjps: tuple[Callable[..., Any] | None, ...], saved: tuple[Any, ...],
             meta: tuple[Any, ...] | None, params: tuple[Any, ...], multi: bool
             ) -> tuple[Tensor, ...]:
    """Recording under a forward trace: the outputs' tangents from the inputs' (JVP rules), and
    a graph node only when an input requires grad in reverse mode too (its tangents are kept
    on the node, so a ``create_graph`` backward -- ``jvp`` of ``grad`` -- carries them)."""
    if fwd_state.depth > 1:
        level = top_level(inputs)
        if level > 1:
            return _forward_nested(level, name, outs, backend, inputs, vjps, saved, meta, params,
                                   multi)
    raw, src, _ = unpack_saved(inputs, saved, outs)
    tans = output_tangent(name, backend, inputs, vjps, raw, params, outs, multi)
    rev = False
    masked = []
    for t, rule in zip(inputs, vjps):
        if type(t) is Tensor and t._requires_grad:
            d = getattr(t, "_tangent", None)
            if d is not None and not d.rev:
                masked.append(t)
            elif rule is not None:
                rev = True
    res: tuple[Tensor, ...]
    if rev:
        for t in masked:
            t._requires_grad = False
        fwd_state.on = False
        try:
            if multi:
                res = record_multi(name, outs, backend, inputs, vjps, saved, params)
            else:
                res = (record(name, outs[0], backend, inputs, vjps, saved, meta, params),)
        finally:
            fwd_state.on = True
            for t in masked:
                t._requires_grad = True
        node = res[0]._node
        if node is not None and src is not None:
            ftan = []
            for s in src:
                d = None
                if s is not None and s >= 0:
                    d = getattr(inputs[s], "_tangent", None)
                    d = None if d is None else d.t
                elif s is not None and tans is not None:
                    d = tans[-1 - s]
                ftan.append(d)
            node.ftan = tuple(ftan)
    else:
        res = tuple(_wrap(o, backend) for o in outs)
    if tans is not None:
        for t, tan in zip(res, tans):
            if tan is not None:
                t._tangent = Dual(tan, rev)
                t._requires_grad = True
    return res


def _forward_nested(level: int, name: str, outs: tuple[Any, ...], backend: Backend,
                    inputs: tuple[Any, ...], vjps: tuple[Callable[..., Any] | None, ...],
                    saved: tuple[Any, ...], meta: tuple[Any, ...] | None, params: tuple[Any, ...],
                    multi: bool) -> tuple[Tensor, ...]:
    """Recording under nested forward traces, for an op whose inputs carry a Dual of ``level``
    > 1 (:class:`~agnograd.autograd.forward.Dual`): the outputs as the levels below see them
    are recorded from the inputs as those levels see them (recursively), then the
    level-``level`` tangents come from the JVP rules run on those Tensors
    (:func:`~agnograd.autograd.forward.nested_tangents`), so they carry the lower tangents."""
    low: list[Any] = []
    vs: list[Any] = []
    for t in inputs:
        d = getattr(t, "_tangent", None) if type(t) is Tensor else None
        if d is not None and d.level == level:
            low.append(d.p)
            vs.append(d.t)
        else:
            low.append(t)
            vs.append(None)
    low_in = tuple(low)
    low_saved = tuple(low_in[_position(inputs, s)] if type(s) is Tensor else s for s in saved)
    lows: tuple[Tensor, ...]
    if multi:
        lows = record_multi(name, outs, backend, low_in, vjps, low_saved, params)
    else:
        lows = (record(name, outs[0], backend, low_in, vjps, low_saved, meta, params),)
    sv = tuple(s if type(s) is Tensor else lows[s.k] if type(s) is Out
               else _wrap(s, backend) if backend.is_array(s) else s for s in low_saved)
    tans = nested_tangents(level, name, backend, low_in, vs, vjps, sv, params, lows, multi)
    res = []
    for o, lo, tan in zip(outs, lows, tans):
        if tan is None:
            res.append(lo)
            continue
        t = _wrap(o, backend)
        t._tangent = Dual(tan, False, level, lo)
        t._requires_grad = True
        res.append(t)
    return tuple(res)


def _with_out_cells(node: Node, ts: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Give each output Tensor whose array ``node`` saved the counter the node checks for it, so
    an in-place change of that output (or of a view of it) before backward is refused."""
    v = node.versions
    src = node.src
    for j in range(0, len(v), 3):  # type: ignore[arg-type]
        i = src[v[j]]  # type: ignore[index]
        if i is not None and i < 0:
            ts[-1 - i]._version = v[j + 1]  # type: ignore[index]
    return ts


def _edges(inputs: tuple[Any, ...], vjps: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """Per input, where its cotangent goes; ``None`` when no input needs a gradient."""
    edges = []
    found = False
    for t, rule in zip(inputs, vjps):
        if rule is not None and type(t) is Tensor and t._requires_grad:
            edges.append(edge_of(t))
            found = True
        else:
            edges.append(None)
    return tuple(edges) if found else None


# Interned ``src`` tuples: the same few patterns recur for every op, so nodes share them.
_SRC: dict[tuple[int | None, ...], tuple[int | None, ...]] = {}
_SRC_INPUT = tuple((i,) for i in range(4))  # one saved item: input i
_SRC_OUTPUT = (-1,)  # one saved item: the (only) output


def unpack_saved(inputs: tuple[Any, ...], saved: tuple[Any, ...], outs: tuple[Any, ...]
                  ) -> tuple[tuple[Any, ...], tuple[int | None, ...] | None, Any]:
    """Raw arrays to keep, where each came from (input i, output -1-k, None: constant), and
    the flat (index, version cell, count) triples of the saved input Tensors and outputs (a new
    cell for each output: the caller gives it to the output Tensor, see _with_out_cells)."""
    if len(saved) == 1:  # the common case (x or out of a unary op), without building lists
        s = saved[0]
        ts = type(s)
        if ts is Tensor:
            i = _position(inputs, s)
            cell = version_cell(s)
            return (s.data,), (_SRC_INPUT[i] if i < 4 else (i,)), (0, cell, cell[0])
        if ts is Out and s.k == 0:
            return (outs[0],), _SRC_OUTPUT, (0, [0], 0)
    raw: list[Any] = []
    src: list[int | None] = []
    versions: tuple[Any, ...] = ()
    known = False
    for s in saved:
        ts = type(s)
        if ts is Tensor:
            cell = version_cell(s)
            versions += (len(raw), cell, cell[0])
            raw.append(s.data)
            src.append(_position(inputs, s))
            known = True
        elif ts is Out:  # a new counter, which the output Tensor will carry
            versions += (len(raw), [0], 0)
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
