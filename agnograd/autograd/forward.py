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

__all__ = ["Dual", "JVP", "JVP_OP", "defjvp", "elementwise", "fwd_state", "forward_trace", "tangent_of",
           "transposed"]

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
    whether the Tensor that carries it also requires grad in reverse mode."""

    __slots__ = ("t", "rev")

    def __init__(self, t: Any, rev: bool) -> None:
        self.t = t
        self.rev = rev


class _FwdState(threading.local):
    on = False  # a forward trace is active in this thread and not suspended
    depth = 0


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
def forward_trace() -> Iterator[None]:
    """Within the block, ops propagate the tangents of the Tensors that carry them."""
    from . import recording

    if fwd_state.depth:
        raise NotImplementedError(
            "jvp inside jvp (forward-over-forward, e.g. jacfwd(jacfwd(f))) is not supported by "
            "agnograd's forward mode yet; take second derivatives as jacfwd(jacrev(f)), "
            "jvp of grad (forward-over-reverse), or ag.hessian")
    fwd_state.depth += 1
    fwd_state.on = True
    recording.FWD_ON += 1
    try:
        yield
    finally:
        recording.FWD_ON -= 1
        fwd_state.depth -= 1
        fwd_state.on = False


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
        vt = _wrap(v, backend)
        if r.dtype.kind == "c" and vt.dtype.kind == "c":
            s = agx.sum(agx.real(r * agx.conj(vt)))
        elif r.dtype.kind == "c":
            s = agx.sum(agx.real(r) * vt)
        else:
            s = agx.sum(r * vt)
        if not s._requires_grad:
            return ()
        ones = xp.ones(s.data.shape, dtype=s.data.dtype, device=backend.device_of(s.data))
        gs = backward([s], [ones], retain_graph=False, create_graph=False, targets=us)
    finally:
        fwd_state.on = was_on
        grad_mode.enabled = was_grad
    return tuple(None if g is None else (g.data if type(g) is Tensor else g) for g in gs)
