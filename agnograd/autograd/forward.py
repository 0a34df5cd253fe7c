"""Forward mode: tangents carried beside the forward pass, one JVP rule per VJP rule.

A JVP rule is a field of the same record as the op's VJP rule: :data:`JVP` maps each VJP rule
function (what an op hands to :func:`~agnograd.autograd.record`) to its JVP rule, called with
the same arguments, the tangent in the cotangent's place::

    vjp rule:  (xp, ḡ, *saved, *params) -> x̄ᵢ = Jᵢᵀ ḡ      (cotangent of input i)
    jvp rule:  (xp, vᵢ, y, *saved, *params) -> Jᵢ vᵢ       (input i's part of the output tangent)

(``y`` is the output's raw array -- a tuple of them for a multi-output op -- which a VJP rule
never needs but a JVP rule may, for its shape.)

The output tangent is ``Σᵢ Jᵢ vᵢ``; the engine broadcasts it to the output's shape and casts
it to the output's dtype (the real part for a real output), so rules, like VJP rules, are
written for equal shapes. Three ways to get a JVP rule, so that no rule can be registered half:

- :func:`elementwise` (the elementwise ops' factories call it on every rule): an elementwise
  op's Jacobian is diagonal, so for real values ``J v = Jᵀ v`` -- the VJP rule *is* the JVP
  rule -- and for complex ones ``J v = conj(Jᵀ conj(v))`` whenever the op is holomorphic or has
  a real output (docs/complex.md's convention: ``x̄ = ḡ·conj(f'(x))``). ``sign`` of a complex
  number, neither, registers its own;
- :func:`defjvp`: an explicit rule (``matmul``: ``v₁ @ x₂ + x₁ @ v₂``; the linear ops --
  reshape, permute_dims, sum, mean, ... -- apply themselves to the tangent);
- every other VJP rule is transposed on the fly: ``Jᵢ vᵢ = ∇_u ⟨Jᵢᵀ u, vᵢ⟩`` (the rule is
  linear in ``u``), the rule run once on agnograd Tensors and differentiated back to ``u``
  (the rules are differentiable: ``create_graph`` runs the same ones). Exact wherever the VJP
  rule is, at a few times the rule's cost. :data:`transposed` counts its uses per op name.

Tangents live on Tensors (``Tensor._tangent``, a :class:`Dual`); a Tensor that carries one
requires grad so that every op hands its result to ``record``, which computes the output
tangent here and builds a graph node only when some input also requires grad in reverse mode
(nesting: ``jvp`` of ``grad``). No graph is kept and no backward runs otherwise.

Forward traces nest (``jvp`` of ``jvp``): each has a level, and a tangent of level ``L > 1``
is computed by :func:`nested_tangents` -- the same JVP rules, run as agnograd ops on Tensors
that carry the levels below, so those levels differentiate it (:class:`Dual`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .._dtypes import from_backend_dtype
from .._tensor import Tensor

if TYPE_CHECKING:
    from ..backends import Backend

__all__ = ["JVP", "JVP_OP", "Dual", "Trace", "defjvp", "elementwise", "forward_trace",
           "fwd_state", "tangent_of", "transposed"]

Rule = Callable[..., Any]

JVP: dict[Any, Any] = {}
"""VJP rule -> its JVP rule (or :data:`_DIAG` for an elementwise rule)."""

_DIAG = object()

JVP_OP: dict[str, Any] = {}
"""Op name -> a JVP rule for the whole op, ``(xp, vs, y, inputs, vjps) -> output tangent``
(``vs[i]`` input i's tangent or ``None``): for ops of many inputs (``concat``, ``stack``),
whose per-input rules would each build an output-sized array."""

transposed: dict[str, int] = {}
"""How many times each op's output tangent came from transposing its VJP rule (no own rule)."""

_wrap = Tensor._wrap


class Dual:
    """A tangent ``t`` (a raw array of the primal's backend, shape and dtype); ``rev`` says
    whether the Tensor that carries it also requires grad in reverse mode.

    Nested forward traces (``jvp`` inside ``jvp``, ``jacfwd(jacfwd(f))``) number their levels
    1, 2, ... from the outermost. A Tensor carries the Dual of the highest level it depends on;
    at ``level`` 1, ``t`` is a raw array and ``p`` is ``None``; at a level ``L > 1`` both are
    Tensors that may carry Duals of the levels below ``L``: ``t`` the tangent (whose own
    tangents are the mixed derivatives) and ``p`` the primal as the levels below see it (the
    same array, with its tangents of those levels). A value ``x`` with tangents at levels 1 and 2
    is ``x = p + ε₂·t`` with ``p = x₀ + ε₁·t₁`` and ``t = t₂ + ε₁·t₁₂`` (JAX's nested
    JVPTracers). Only level-1 Duals take the raw-array hot paths of ``recording``."""

    __slots__ = ("t", "rev", "level", "p", "trace")

    def __init__(self, t: Any, rev: bool, level: int = 1, p: Any = None,
                 trace: Trace | None = None) -> None:
        self.t = t
        self.rev = rev
        self.level = level
        self.p = p
        # the trace of that level now running: a Dual made after it ended is dead from birth
        self.trace = trace if trace is not None else (
            fwd_state.traces[level - 1] if level <= len(fwd_state.traces) else _ENDED)


class Trace:
    """One forward trace (one ``jvp`` call): its Duals are live while it runs. A level number
    alone cannot tell a leaked Dual from the current trace's: sibling traces share it."""

    __slots__ = ("alive",)

    def __init__(self) -> None:
        self.alive = True


_ENDED = Trace()
_ENDED.alive = False


class _FwdState(threading.local):
    on = False  # a forward trace is active in this thread and not suspended
    depth = 0  # how many forward traces are nested here (the innermost one's level)

    def __init__(self) -> None:
        self.traces: list[Trace] = []  # the running traces, outermost first


fwd_state = _FwdState()


def defjvp(vjp_rule: Rule, jvp_rule: Rule) -> Rule:
    """Register ``jvp_rule`` as the JVP rule of ``vjp_rule`` (same arguments, tangent first)."""
    JVP[vjp_rule] = jvp_rule
    return vjp_rule


def elementwise(*rules: Rule | None) -> None:
    """Mark VJP rules of elementwise ops: their JVP rule is derived (module docstring)."""
    for r in rules:
        if r is not None and r not in JVP:
            JVP[r] = _DIAG


def tangent_of(t: Any) -> Dual | None:
    """The :class:`Dual` a Tensor carries, or ``None``."""
    return getattr(t, "_tangent", None) if type(t) is Tensor else None


@contextmanager
def forward_trace() -> Iterator[int]:
    """Within the block, ops propagate the tangents of the Tensors that carry them. Traces
    nest; the block gets its level (1 for the outermost, see :class:`Dual`)."""
    from . import recording

    was_on = fwd_state.on
    trace = Trace()
    fwd_state.traces.append(trace)
    fwd_state.depth += 1
    fwd_state.on = True
    recording.FWD_ON += 1
    try:
        yield fwd_state.depth
    finally:
        recording.FWD_ON -= 1
        fwd_state.depth -= 1
        fwd_state.on = was_on
        trace.alive = False  # its Duals are constants from now on (Tensor._tangent)
        fwd_state.traces.pop()


def _is_c(b: Backend, a: Any) -> bool:
    if not hasattr(a, "dtype"):
        return type(a) is complex
    try:
        return bool(b.complex_kinds[a.dtype])
    except (KeyError, TypeError):
        return from_backend_dtype(a.dtype).kind == "c"


def _conj(xp: Any, b: Backend, a: Any) -> Any:
    return xp.conj(a) if _is_c(b, a) else a


def output_tangent(name: str, backend: Backend, inputs: tuple[Any, ...], vjps: tuple[Any, ...],
                   raw: tuple[Any, ...], params: tuple[Any, ...], outs: tuple[Any, ...],
                   multi: bool) -> list[Any] | None:
    """The tangent of each output (raw arrays, ``None`` where zero), or ``None`` when no input
    carries a tangent."""
    xp = backend.xp
    whole = JVP_OP.get(name)
    if whole is not None and not multi:
        vs = [None if type(t) is not Tensor or getattr(t, "_tangent", None) is None
              else t._tangent.t for t in inputs]
        if all(v is None for v in vs):
            return None
        return [_fit(xp, backend, whole(xp, vs, outs[0], inputs, vjps), outs[0])]
    total: list[Any] = [None] * len(outs)
    found = False
    for t, rule in zip(inputs, vjps):
        if rule is None or type(t) is not Tensor:
            continue
        d = getattr(t, "_tangent", None)
        if d is None:
            continue
        found = True
        v = d.t
        j = JVP.get(rule)
        if j is _DIAG:
            if _is_c(backend, v) or _is_c(backend, outs[0]):
                c = _conj(xp, backend, rule(xp, _conj(xp, backend, v), *raw, *params))
            else:
                c = rule(xp, v, *raw, *params)
            parts: Any = (c,)
        elif j is not None:
            c = j(xp, v, outs if multi else outs[0], *raw, *params)
            parts = c if multi else (c,)
        else:
            parts = _transpose(name, backend, rule, v, t, raw, params, outs, multi)
        for k, c in enumerate(parts):
            if c is None:
                continue
            total[k] = c if total[k] is None else total[k] + c
    if not found:
        return None
    return [None if c is None else _fit(xp, backend, c, o) for c, o in zip(total, outs)]


def _fit(xp: Any, b: Backend, c: Any, o: Any) -> Any:
    """A tangent in the output's dtype (the real part for a real output) and shape."""
    if not hasattr(c, "dtype"):  # a Python scalar
        return xp.full(o.shape, c, dtype=o.dtype, device=b.device_of(o))
    if c.dtype != o.dtype:
        if _is_c(b, c) and not _is_c(b, o):
            c = xp.real(c)
        if c.dtype != o.dtype:
            c = xp.astype(c, o.dtype)
    if tuple(c.shape) != tuple(o.shape):
        c = xp.broadcast_to(c, o.shape)
    return c


def _transpose(name: str, backend: Backend, rule: Rule, v: Any, x: Tensor, raw: tuple[Any, ...],
               params: tuple[Any, ...], outs: tuple[Any, ...], multi: bool) -> tuple[Any, ...]:
    """``J v = ∇_u ⟨Jᵀ u, v⟩``: the VJP rule, linear in ``u``, run on Tensors and differentiated
    once, with forward mode suspended (its ops carry no tangents)."""
    from .mode import grad_mode
    from .walk import backward

    transposed[name] = transposed.get(name, 0) + 1
    xp = backend.xp
    was_on, was_grad = fwd_state.on, grad_mode.enabled
    fwd_state.on = False
    grad_mode.enabled = True
    try:
        us = []
        for o in outs:
            u = _wrap(xp.zeros(o.shape, dtype=o.dtype, device=backend.device_of(o)), backend)
            u._requires_grad = True
            us.append(u)
        agx = us[0].__array_namespace__()
        saved = tuple(_wrap(a, backend) if backend.is_array(a) else a for a in raw)
        r = rule(agx, tuple(us) if multi else us[0], *saved, *params)
        if r is None:
            return ()
        s = _real_dot(agx, r, _wrap(v, backend))
        if not s._requires_grad:
            return ()
        ones = xp.ones(s.data.shape, dtype=s.data.dtype, device=backend.device_of(s.data))
        gs = backward([s], [ones], retain_graph=False, create_graph=False, targets=us)
    finally:
        fwd_state.on = was_on
        grad_mode.enabled = was_grad
    return tuple(None if g is None else (g.data if type(g) is Tensor else g) for g in gs)


# ---------------------------------------------------------------------------------------------
# Nested forward traces: a level-L tangent computed with agnograd ops, so that the levels below
# L differentiate it in turn (forward-over-forward).


def top_level(inputs: tuple[Any, ...]) -> int:
    """The highest forward-trace level among the inputs' Duals (0 when none carries one)."""
    top = 0
    for t in inputs:
        if type(t) is Tensor:
            d = getattr(t, "_tangent", None)
            if d is not None and d.level > top:
                top = d.level
    return top


def _cplx(t: Any) -> bool:
    return type(t) is Tensor and t.dtype.kind == "c"


def _fit_t(agx: Any, b: Backend, c: Any, o: Tensor) -> Tensor:
    """:func:`_fit` on Tensors: the level-L tangent in the output's dtype and shape."""
    if type(c) is not Tensor:
        if b.is_array(c):
            c = _wrap(c, b)
        else:  # a Python scalar
            return _wrap(b.xp.full(o.data.shape, c, dtype=o.data.dtype,
                                   device=b.device_of(o.data)), b)
    if c.dtype != o.dtype:
        if c.dtype.kind == "c" and o.dtype.kind != "c":
            c = agx.real(c)
        if c.dtype != o.dtype:
            c = agx.astype(c, o.dtype)
    if tuple(c.shape) != tuple(o.shape):
        c = agx.broadcast_to(c, tuple(o.shape))
    return c  # type: ignore[no-any-return]


def nested_tangents(level: int, name: str, backend: Backend, inputs: tuple[Any, ...],
                    vs: list[Any], vjps: tuple[Any, ...], saved: tuple[Any, ...],
                    params: tuple[Any, ...], lows: tuple[Tensor, ...], multi: bool
                    ) -> list[Tensor | None]:
    """The level-``level`` tangent of each output (``None`` where zero), as Tensors.

    ``inputs`` and ``saved`` are the op's operands and saved values as the levels below see them
    (Tensors carrying those levels' Duals), ``vs[i]`` input i's level-``level`` tangent (a
    Tensor) or ``None``, ``lows`` the outputs as the levels below see them. The JVP rules run on
    agnograd Tensors (the ``xp`` they get is agnograd's namespace) with the forward trace on, so
    every op of a rule propagates the lower levels' tangents: the tangent of the tangent."""
    agx = lows[0].__array_namespace__()
    whole = JVP_OP.get(name)
    if whole is not None and not multi:
        return [_fit_t(agx, backend, whole(agx, vs, lows[0], inputs, vjps), lows[0])]
    total: list[Any] = [None] * len(lows)
    for v, rule in zip(vs, vjps):
        if v is None or rule is None:
            continue
        j = JVP.get(rule)
        if j is _DIAG:
            if _cplx(v) or _cplx(lows[0]):
                c = rule(agx, agx.conj(v) if _cplx(v) else v, *saved, *params)
                parts: Any = (agx.conj(c) if _cplx(c) else c,)
            else:
                parts = (rule(agx, v, *saved, *params),)
        elif j is not None:
            c = j(agx, v, lows if multi else lows[0], *saved, *params)
            parts = c if multi else (c,)
        else:
            parts = (_transpose_by_rows(name, backend, rule, v, saved, params, lows, multi)
                     if level > 2 else
                     _transpose_nested(name, backend, rule, v, saved, params, lows, multi))
        for k, c in enumerate(parts):
            if c is None:
                continue
            total[k] = c if total[k] is None else total[k] + c
    return [None if c is None else _fit_t(agx, backend, c, o) for c, o in zip(total, lows)]


def _transpose_nested(name: str, backend: Backend, rule: Rule, v: Tensor, saved: tuple[Any, ...],
                      params: tuple[Any, ...], lows: tuple[Tensor, ...], multi: bool
                      ) -> tuple[Any, ...]:
    """:func:`_transpose` for level 2: ``∇_u ⟨Jᵀ u, v⟩`` with the forward trace on, a
    ``create_graph`` backward whose ops carry the level-1 tangents (forward-over-reverse;
    deeper levels take :func:`_transpose_by_rows`)."""
    from .mode import grad_mode
    from .walk import backward

    transposed[name] = transposed.get(name, 0) + 1
    was_grad = grad_mode.enabled
    grad_mode.enabled = True
    try:
        us = []
        for o in lows:
            u = _wrap(backend.xp.zeros(o.data.shape, dtype=o.data.dtype,
                                       device=backend.device_of(o.data)), backend)
            u._requires_grad = True
            us.append(u)
        agx = us[0].__array_namespace__()
        r = rule(agx, tuple(us) if multi else us[0], *saved, *params)
        if r is None:
            return ()
        s = _real_dot(agx, r, v)
        if not s._requires_grad:
            return ()
        ones = backend.xp.ones(s.data.shape, dtype=s.data.dtype, device=backend.device_of(s.data))
        gs = backward([s], [_wrap(ones, backend)], retain_graph=False, create_graph=True,
                      targets=us)
    finally:
        grad_mode.enabled = was_grad
    out: list[Any] = []
    for g in gs:  # (reverse mode inside forward-over-forward: two levels at most, see below)
        if g is None:
            out.append(None)
            continue
        g = g if type(g) is Tensor else _wrap(g, backend)
        # keep g's level-1 tangent, not the graph the backward recorded
        t = _wrap(g.data, backend)
        d = getattr(g, "_tangent", None)
        if d is not None:
            t._tangent = Dual(d.t, False, 1, None, d.trace)
            t._requires_grad = True
        out.append(t)
    return tuple(out)


def _real_dot(agx: Any, r: Any, v: Tensor) -> Any:
    """The real inner product ``Re Σ conj(r)·v`` (a complex number being a pair of reals)."""
    if r.dtype.kind == "c" and v.dtype.kind == "c":
        return agx.sum(agx.real(r * agx.conj(v)))
    if r.dtype.kind == "c":
        return agx.sum(agx.real(r) * v)
    return agx.sum(r * v)


def _transpose_by_rows(name: str, backend: Backend, rule: Rule, v: Tensor,
                       saved: tuple[Any, ...], params: tuple[Any, ...], lows: tuple[Tensor, ...],
                       multi: bool) -> tuple[Any, ...]:
    """``J v`` for a transposed rule three or more levels deep, in forward mode only: output
    element ``k`` of ``J v`` is ``⟨Jᵀeₖ, v⟩`` (plus ``i·⟨Jᵀ(i eₖ), v⟩`` for a complex output),
    one evaluation of the VJP rule per output element, each an agnograd computation that the
    lower levels differentiate. (Reverse mode under two levels of tangents is not supported:
    this costs ``m`` rule evaluations instead of one backward.)"""
    transposed[name] = transposed.get(name, 0) + 1
    xp = backend.xp
    agx = v.__array_namespace__()
    zeros = [xp.zeros(o.data.shape, dtype=o.data.dtype, device=backend.device_of(o.data))
             for o in lows]
    parts: list[Any] = []
    for j, o in enumerate(lows):
        m = 1
        for n in o.data.shape:
            m *= n
        units = (1.0, 1j) if o.dtype.kind == "c" else (1.0,)
        cols: list[list[Any]] = [[] for _ in units]
        for k in range(m):
            e = xp.reshape(xp.astype(xp.arange(m, device=backend.device_of(o.data)) == k,
                                     o.data.dtype), o.data.shape)
            for c, unit in enumerate(units):
                us = [_wrap(e * unit if i == j else zeros[i], backend) for i in range(len(lows))]
                r = rule(agx, tuple(us) if multi else us[0], *saved, *params)
                cols[c].append(_wrap(xp.zeros((), dtype=xp.float64), backend) if r is None
                               else _real_dot(agx, r, v))
        if m == 0:
            parts.append(None)
            continue
        re = agx.reshape(agx.stack(cols[0]), tuple(o.shape))
        parts.append(re if len(units) == 1 else
                     re + agx.reshape(agx.stack(cols[1]), tuple(o.shape)) * 1j)
    return tuple(parts)
