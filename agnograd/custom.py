"""User-defined derivative rules: ``custom_vjp`` and ``Function``. (``checkpoint`` lives in
:mod:`agnograd.recompute` and ``detect_anomaly``, a gradient mode, in
:mod:`agnograd.autograd.mode`; both are re-exported here for code that imported them from this
module.)

``custom_vjp`` follows ``jax.custom_vjp``: ``f.defvjp(fwd, bwd)`` where ``fwd(*args)`` returns
``(out, residuals)`` and ``bwd(residuals, g)`` returns one cotangent per positional input. The
forward runs with grad mode as it is, so residuals computed from the inputs stay connected to
the graph; ``bwd`` written with agnograd ops is therefore differentiable again (higher order).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

from ._dtypes import DType
from ._ops.data_types import astype
from ._ops.elementwise import conj as _conj
from ._ops.elementwise import real as _real
from ._ops.manipulation import broadcast_to
from ._ops.statistics import sum as _sum
from ._tensor import Tensor, as_tensor
from .autograd import (
    creation_mark,
    detect_anomaly,
    edge_target,
    enable_grad,
    is_grad_enabled,
    no_grad,
    outside_reads,
    read_key,
    record,
)
from .autograd.forward import Dual, fwd_state, tangent_of
from .autograd.walk import backward
from .backends import backend_of_array
from .backends import batching as _batching
from .pytree import tree_leaves
from .recompute import checkpoint  # re-exported: agnograd.custom.checkpoint stays importable

__all__ = ["custom_vjp", "custom_jvp", "Function", "FunctionCtx", "checkpoint", "detect_anomaly"]


class _Residuals:
    """Holds residual Tensors in a node's saved tuple (freed with it after backward)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def _call_bwd(bwd: Callable[..., Any], specs: tuple[Any, ...], who: str
              ) -> tuple[Callable[..., Any], ...]:
    """One rule per input over a single call of ``bwd`` per backward visit (cached by ``g``).
    ``specs[i]`` is input i's Tensor when it requires grad (its cotangent is checked against
    it), else None (its cotangent is ignored); ``who`` names the rule in errors
    (``"custom_vjp function 'f': bwd"`` or ``"MyOp.backward"``)."""
    cache: list[Any] = [None, None]
    n = len(specs)

    def run(xp: Any, g: Any, residuals: _Residuals, backend: Any) -> tuple[Any, ...]:
        if cache[0] is g:
            return cache[1]  # type: ignore[no-any-return]
        raw = type(g) is not Tensor
        gt = Tensor._wrap(g, _batching.level_of(g, backend)) if raw else g
        ctx = no_grad() if raw else enable_grad()
        with ctx:
            out = bwd(residuals.value, gt)
        if not isinstance(out, tuple) or len(out) != n:
            got = type(out).__name__ + (f" of length {len(out)}" if isinstance(out, tuple) else "")
            single = " (or, for one input, a single Tensor)" if who.endswith(".backward") else ""
            raise TypeError(f"{who} must return a tuple with one cotangent per positional "
                            f"input ({n}; None for no gradient){single}, got {got}")
        if not raw:
            _refuse_raw_under_create_graph(out, specs, gt, residuals.value, who)
        res = tuple(None if c is None or x is None else _check_cotangent(c, x, i, who, raw)
                    for i, (c, x) in enumerate(zip(out, specs)))
        cache[0], cache[1] = g, res
        return res

    def rule_for(i: int) -> Callable[..., Any]:
        def rule(xp: Any, g: Any, residuals: _Residuals, backend: Any) -> Any:
            return run(xp, g, residuals, backend)[i]

        return rule

    return tuple(rule_for(i) for i in range(n))


def _refuse_raw_under_create_graph(out: tuple[Any, ...], specs: tuple[Any, ...], g: Tensor,
                                   residuals: Any, who: str) -> None:
    """Under ``create_graph`` (hessian, hvp, jvp, grad of grad, a gradient penalty) the rule's
    cotangents are differentiated again. A raw backend array has no graph, so its dependence on
    ``g`` and on the residuals would silently vanish from the higher derivative: refuse it when
    either may carry one (a raw array is a true constant otherwise)."""
    for i, (c, x) in enumerate(zip(out, specs)):
        if c is None or x is None or type(c) is Tensor or backend_of_array(c) is None:
            continue
        if not (g._requires_grad or _tracks(residuals)):
            return
        raise TypeError(
            f"{who} returned a raw {type(c).__module__}.{type(c).__name__} as the cotangent of "
            f"input {i} while the backward pass is recorded to be differentiated again "
            "(create_graph: ag.hessian, ag.hvp, ag.jvp, grad of grad, or a result kept for an "
            "outer derivative). A raw array has no graph, so this rule's part of the higher "
            "derivative would silently be lost. Return Tensors computed with ag ops from the "
            "saved Tensors and g (both are Tensors here), or, if the result is not "
            "differentiated again, run the transform under ag.no_grad()"
        )


_PLAIN = (type(None), bool, int, float, complex, str, bytes, type, DType)


def _tracks(residuals: Any) -> bool:
    """Whether the residuals (a pytree, or a Function's ctx and its attributes) may carry a
    graph: a Tensor that requires grad, or an object this cannot see into (counted as one, so
    a doubt refuses rather than drops a derivative)."""
    leaves = tree_leaves(residuals)
    for ctx in [r for r in leaves if isinstance(r, FunctionCtx)]:  # a Function's: one level
        leaves.extend(r for r in tree_leaves(list(vars(ctx).values()))
                      if not isinstance(r, FunctionCtx))
    for r in leaves:
        if isinstance(r, FunctionCtx):
            continue
        if type(r) is Tensor:
            if r._requires_grad:
                return True
        elif not isinstance(r, _PLAIN) and backend_of_array(r) is None:
            return True
    return False


def _check_cotangent(c: Any, x: Tensor, i: int, who: str, raw: bool) -> Any:
    """A user rule's cotangent for input ``x``: exactly ``x``'s shape, on ``x``'s backend, real
    floating (another precision is cast to ``x``'s dtype); anything else raises -- it is never
    broadcast-reduced or cast from an integer."""
    want = (f"it must return None or a Tensor of shape {x.shape}, dtype {x.dtype.name} on "
            f"backend '{x.backend}' (the input's)")
    if type(c) is Tensor:
        t = c
    else:
        ob = backend_of_array(c)
        if ob is None:
            raise TypeError(f"{who} returned {type(c).__name__} as the cotangent of input {i}; "
                            f"{want}")
        t = Tensor._wrap(c, ob)
    if t._backend is not x._backend and not _batching.below(x._backend, t._backend):
        # (a cotangent of a vmap level over the input's -- a batched backward -- is allowed)
        raise TypeError(f"{who} returned a cotangent on backend '{t.backend}' for input {i}; "
                        f"{want}")
    if t.shape != x.shape:
        raise ValueError(f"{who} returned a cotangent of shape {t.shape} for input {i}; {want} "
                         "(cotangents are not broadcast or summed down)")
    if t.data.dtype != x.data.dtype:
        if not t.dtype.is_floating:
            raise TypeError(f"{who} returned a {t.dtype.name} cotangent for input {i}; {want}")
        t = astype(t, x.data.dtype) if not raw else Tensor._wrap(
            t._backend.xp.astype(t.data, x.data.dtype), t._backend)
    return t.data if raw else t


def _closed_over(out: Any, args: tuple[Any, ...], start: int) -> Any:
    """A leaf Tensor (or an older graph Node) requiring grad that ``out``'s graph reads without
    going through one of ``args`` (a closure or a global), or None. Walks only the nodes made
    after ``start`` (the function's own ops)."""
    if type(out) is not Tensor or not out._requires_grad:
        return None
    allowed = {read_key(a) for a in args if type(a) is Tensor and a._requires_grad}
    for key, edge in outside_reads((out,), start).items():
        if key not in allowed:
            return edge_target(edge)[0]  # a leaf, or an older intermediate (named by its op)
    return None


def _closure_error(who: str, found: Any, fix: str) -> TypeError:
    if type(found) is Tensor:
        what = f"a Tensor of shape {found.shape} that requires grad"
    else:
        what = f"a Tensor (the output of the '{found.name}' op) that requires grad"
    return TypeError(
        f"{who} reads {what} that is not one of its arguments (a closure or a global); its "
        f"gradient would be silently dropped, since the rule returns cotangents for the "
        f"arguments only. {fix}"
    )


class custom_vjp:  # noqa: N801 - named after jax.custom_vjp
    """Decorate ``f`` to give it a hand-written VJP (see the module docstring).

    Example (a softplus whose naive gradient overflows)::

        @ag.custom_vjp
        def softplus(x):
            return ag.logaddexp(x, 0.0)

        def fwd(x):
            return softplus(x), (x,)

        def bwd(res, g):
            (x,) = res
            return (g / (1 + ag.exp(-x)),)

        softplus.defvjp(fwd, bwd)
    """

    def __init__(self, f: Callable[..., Any]) -> None:
        self.f = f
        self.fwd: Callable[..., Any] | None = None
        self.bwd: Callable[..., Any] | None = None
        self._in_fwd = threading.local()  # fwd may call f itself (as in JAX): that call is primal
        self._method = "bwd"  # "backward" when built by Function.apply (named so in errors)
        functools.update_wrapper(self, f)

    def defvjp(self, fwd: Callable[..., Any], bwd: Callable[..., Any]) -> None:
        self.fwd, self.bwd = fwd, bwd

    def __call__(self, *args: Any) -> Any:
        if self.fwd is None or self.bwd is None:
            raise TypeError(f"{getattr(self.f, '__name__', 'custom_vjp')}: call .defvjp(fwd, bwd) "
                            "before using it")
        grad_on = is_grad_enabled()
        needs = grad_on and any(type(a) is Tensor and a._requires_grad for a in args)
        name = getattr(self.f, "__name__", "custom_vjp")
        if getattr(self._in_fwd, "on", False):
            return self.f(*args)
        if needs and fwd_state.on:
            duals = [tangent_of(a) for a in args]
            level = max((d.level for d in duals if d is not None), default=0)
            if level > 1:
                return self._nested(args, duals, level, name)
        if not needs:
            out = self.f(*args)
            # No argument requires grad, so a result that does read some other Tensor.
            found = _closed_over(out, args, -1) if grad_on else None  # the whole graph
            if found is not None:
                raise _closure_error(self._who("forward" if self._method == "backward"
                                               else "the function"), found, self._fix())
            return out
        start = creation_mark()
        self._in_fwd.on = True
        fwd_on = fwd_state.on  # forward mode: the tangents come from bwd's rules, transposed
        fwd_state.on = False
        try:
            out, residuals = self.fwd(*args)
        finally:
            self._in_fwd.on = False
            fwd_state.on = fwd_on
        out = as_tensor(out)
        found = _closed_over(out, args, start)
        if found is not None:
            raise _closure_error(self._who("forward" if self._method == "backward" else "fwd"),
                                 found, self._fix())
        specs = tuple(a if type(a) is Tensor and a._requires_grad else None for a in args)
        rules = _call_bwd(self.bwd, specs, self._who(self._method))
        inputs = tuple(a if type(a) is Tensor else None for a in args)
        return record(name, out.data, out._backend, inputs,
                      tuple(r if type(a) is Tensor else None for r, a in zip(rules, args)),
                      saved=(_Residuals(residuals),), params=(out._backend,))

    def _nested(self, args: tuple[Any, ...], duals: list[Any], level: int, name: str) -> Tensor:
        """Under nested forward traces (``jvp`` of ``jvp``): the output as the levels below
        ``level`` see it (this function at the inputs as they see them), and its
        level-``level`` tangent from ``bwd``'s rules transposed, at residuals that ``fwd``
        computes with those levels' tangents on -- so they differentiate the rule too."""
        from .autograd.forward import nested_tangents

        assert self.fwd is not None and self.bwd is not None  # (checked by __call__)
        prims = tuple(d.p if d is not None and d.level == level else a
                      for a, d in zip(args, duals))
        vs = [d.t if d is not None and d.level == level else None for d in duals]
        low = as_tensor(self(*prims))
        self._in_fwd.on = True
        try:
            _, residuals = self.fwd(*prims)
        finally:
            self._in_fwd.on = False
        specs = tuple(p if type(p) is Tensor and (p._requires_grad or v is not None) else None
                      for p, v in zip(prims, vs))
        rules = tuple(r if type(p) is Tensor else None
                      for r, p in zip(_call_bwd(self.bwd, specs, self._who(self._method)), prims))
        (tan,) = nested_tangents(level, name, low._backend, prims, vs, rules,
                                 (_Residuals(residuals),), (low._backend,), (low,), False)
        if tan is None:
            return low
        res = Tensor._wrap(low.data, low._backend)
        res._requires_grad = True
        res._tangent = Dual(tan, False, level, low)
        return res

    def _who(self, method: str) -> str:
        """How errors name the rule: ``MyOp.backward`` for a Function, ``custom_vjp function
        'f': bwd`` for custom_vjp."""
        name = getattr(self.f, "__name__", "custom_vjp")
        if self._method == "backward":
            return f"{name}.{method}"
        return f"custom_vjp function '{name}': {method}"

    def _fix(self) -> str:
        name = getattr(self.f, "__name__", "f")
        if self._method == "backward":
            return (f"Pass it to {name}.apply as an argument (and return its cotangent from "
                    "backward), or detach it (t.detach()) if it is a constant")
        return (f"Pass it as an argument ({name}(x, w), with a cotangent for it from bwd), or "
                "detach it (t.detach()) if it is a constant")


class FunctionCtx:
    """The ``ctx`` of :class:`Function`: ``save_for_backward(*tensors)``, ``saved_tensors``, and
    any attributes ``forward`` sets."""

    def __init__(self) -> None:
        self.saved_tensors: tuple[Any, ...] = ()

    def save_for_backward(self, *tensors: Any) -> None:
        self.saved_tensors = tensors


class Function:
    """PyTorch-style custom op: subclass with ``forward(ctx, *args)`` and
    ``backward(ctx, g) -> one cotangent per input`` (static methods), call ``MyOp.apply(*args)``.
    Built on :class:`custom_vjp`, so ``backward`` written with agnograd ops is differentiable."""

    @staticmethod
    def forward(ctx: FunctionCtx, *args: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    @staticmethod
    def backward(ctx: FunctionCtx, g: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def apply(cls, *args: Any) -> Any:
        def f(*a: Any) -> Any:
            # Grad mode as it is: no argument requires grad here, so nothing is recorded unless
            # forward reads another Tensor that does -- which custom_vjp then refuses.
            return cls.forward(FunctionCtx(), *a)

        def fwd(*a: Any) -> tuple[Any, Any]:
            ctx = FunctionCtx()
            out = cls.forward(ctx, *a)
            return out, ctx

        def bwd(ctx: FunctionCtx, g: Any) -> tuple[Any, ...]:
            res = cls.backward(ctx, g)
            return res if isinstance(res, tuple) else (res,)

        f.__name__ = cls.__name__
        op = custom_vjp(f)
        op._method = "backward"
        op.defvjp(fwd, bwd)
        return op(*args)


class custom_jvp:  # noqa: N801 - named after jax.custom_jvp
    """Decorate ``f`` to give it a hand-written JVP rule, as ``jax.custom_jvp``.

    ``f.defjvp(rule)`` where ``rule(primals, tangents) -> (out, tangent_out)`` takes one tangent
    per positional argument (a zero Tensor for one that carries none; ``0.0`` for a Python
    number) and returns ``f(*primals)`` and ``J·tangents``, written with agnograd ops and linear
    in the tangents. ``f`` returns one Tensor.

    Forward mode (``ag.jvp``, ``jacfwd``, ``linearize``) uses ``rule``. Reverse mode (``grad``,
    ``vjp``, ``.backward()``) derives the VJP from it by transposition, as JAX does: the
    cotangent of input ``i`` is ``∇_{vᵢ} ⟨ḡ, rule(x, v)[1]⟩``, one differentiation of the
    (linear) rule per input. That derived VJP is differentiable (``create_graph``, ``hessian``,
    ``grad`` of ``grad``, ``jvp`` of ``grad``): under ``create_graph`` the rule runs at the
    saved inputs and the transposition records its graph. Under nested forward traces
    (``jvp`` of ``jvp``) the outer levels differentiate the rule itself.

    Example::

        @ag.custom_jvp
        def log1pexp(x):
            return ag.log1p(ag.exp(x))

        @log1pexp.defjvp
        def _(primals, tangents):
            (x,), (v,) = primals, tangents
            return log1pexp(x), v * ag.sigmoid(x)   # ag.sigmoid: any stable form
    """

    def __init__(self, f: Callable[..., Any]) -> None:
        self.f = f
        self.jvp: Callable[..., Any] | None = None
        functools.update_wrapper(self, f)

    def defjvp(self, jvp: Callable[..., Any]) -> Callable[..., Any]:
        self.jvp = jvp
        return jvp

    def _name(self) -> str:
        return getattr(self.f, "__name__", "custom_jvp")

    def __call__(self, *args: Any) -> Any:
        if self.jvp is None:
            raise TypeError(f"{self._name()}: call .defjvp(rule) before using it")
        duals = [tangent_of(a) for a in args]
        if fwd_state.on and any(d is not None for d in duals) and not any(
                d is not None and d.rev for d in duals):
            level = max(d.level for d in duals if d is not None)
            if level > 1:
                return self._nested(args, duals, level)
            prims = tuple(Tensor._wrap(a.data, a._backend) if type(a) is Tensor else a
                          for a in args)
            tans = tuple(_tangent_arg(a, d) for a, d in zip(args, duals))
            fwd_state.on = False
            try:
                with no_grad():
                    out, tout = self._rule(prims, tans)
            finally:
                fwd_state.on = True
            res = Tensor._wrap(out.data, out._backend)
            xp = out._backend.xp
            t = tout.data
            if t.dtype != out.data.dtype:
                t = xp.astype(xp.real(t) if tout.dtype.kind == "c" and out.dtype.kind != "c"
                              else t, out.data.dtype)
            if tuple(t.shape) != tuple(out.data.shape):
                t = xp.broadcast_to(t, out.data.shape)
            res._requires_grad = True
            res._tangent = Dual(t, False)
            return res
        # Reverse mode (and forward-over-reverse: an input that requires grad and carries a
        # tangent; the recorder then takes the tangent from the transposed rules, transposed
        # back -- the rule itself).
        if not (is_grad_enabled() and any(type(a) is Tensor and a._requires_grad for a in args)):
            return self.f(*args)
        prims = tuple(a.detach() if type(a) is Tensor else a for a in args)
        fwd_on = fwd_state.on
        fwd_state.on = False
        try:
            with no_grad():
                out = as_tensor(self.f(*prims))
        finally:
            fwd_state.on = fwd_on
        saved = tuple(a for a in args if type(a) is Tensor)
        pos: list[int | None] = []
        k = 0
        for a in args:
            pos.append(k if type(a) is Tensor else None)
            k += type(a) is Tensor
        rules = tuple(self._transposed(i, prims, tuple(pos)) if type(a) is Tensor
                      and a._requires_grad else None for i, a in enumerate(args))
        return record(self._name(), out.data, out._backend,
                      tuple(a if type(a) is Tensor else None for a in args), rules, saved=saved)

    def _nested(self, args: tuple[Any, ...], duals: list[Any], level: int) -> Tensor:
        """Under nested forward traces (``jvp`` of ``jvp``): the rule at the primals and tangents
        as the levels below ``level`` see them, run with forward mode on, so that those levels
        differentiate the rule itself (as JAX does)."""
        prims = tuple(d.p if d is not None and d.level == level else a
                      for a, d in zip(args, duals))
        tans = tuple(d.t if d is not None and d.level == level else _tangent_arg(p, None)
                     for p, d in zip(prims, duals))
        out, tout = self._rule(prims, tans)
        if tout.dtype != out.dtype:
            tout = astype(_real(tout) if tout.dtype.kind == "c" and out.dtype.kind != "c"
                          else tout, out.dtype)
        if tout.shape != out.shape:
            tout = broadcast_to(tout, out.shape)
        res = Tensor._wrap(out.data, out._backend)
        res._requires_grad = True
        res._tangent = Dual(tout, False, level, out)
        return res

    def _rule(self, prims: tuple[Any, ...], tans: tuple[Any, ...]) -> tuple[Tensor, Tensor]:
        res = self.jvp(prims, tans)  # type: ignore[misc]
        if not (isinstance(res, (tuple, list)) and len(res) == 2):
            raise TypeError(f"custom_jvp function '{self._name()}': the JVP rule must return a "
                            "pair (out, tangent_out)")
        out, tout = as_tensor(res[0]), as_tensor(res[1])
        if tout.shape != out.shape and tout.ndim > out.ndim:
            raise ValueError(f"custom_jvp function '{self._name()}': the JVP rule returned a "
                             f"tangent of shape {tout.shape} for an output of shape {out.shape}")
        return out, tout

    def _transposed(self, i: int, prims: tuple[Any, ...], pos: tuple[int | None, ...]
                    ) -> Callable[..., Any]:
        """Input ``i``'s VJP rule: ``∇_{vᵢ} ⟨ḡ, rule(x, v)[1]⟩``. In a ``create_graph`` backward
        (``g`` a Tensor) the rule runs at the saved inputs, which then carry their graph, and the
        transposition records its own: the derived VJP is differentiable to any order, as JAX's
        linearize-and-transpose is."""

        def rule(xp: Any, g: Any, *saved: Any) -> Any:
            if type(g) is Tensor:
                at = tuple(p if k is None else saved[k] for p, k in zip(prims, pos))
                return self._cotangent(i, at, g, True)
            gb = _batching.level_of(g, prims[i]._backend)
            gi = self._cotangent(i, prims, Tensor._wrap(g, gb), False)
            return gi.data

        return rule

    def _cotangent(self, i: int, prims: tuple[Any, ...], gt: Tensor, create: bool) -> Tensor:
        x = prims[i]
        b = x._backend
        with enable_grad():
            vs: list[Any] = []
            for p in prims:
                if type(p) is Tensor:
                    pb = p._backend
                    z = pb.xp.zeros(p.data.shape, dtype=p.data.dtype, device=pb.device_of(p.data))
                    if gt._backend is not pb and _batching.below(pb, gt._backend):
                        # a batched cotangent (a vmap level over this graph): the tangents are
                        # variables of that level, so each example gets its own gradient
                        v = Tensor._wrap(_batching.share(gt._backend, z), gt._backend)  # type: ignore[arg-type]
                    else:
                        v = Tensor._wrap(z, pb)
                    v._requires_grad = True
                    vs.append(v)
                else:
                    vs.append(0.0)
            _, tout = self._rule(prims, tuple(vs))
            if tout.dtype.kind == "c":
                s = _sum(_real(tout * _conj(gt)))
            else:
                s = _sum(tout * (_real(gt) if gt.dtype.kind == "c" else gt))
            gi = None
            if s._requires_grad:
                ones = b.xp.ones(s.data.shape, dtype=s.data.dtype, device=b.device_of(s.data))
                (gi,) = backward([s], [Tensor._wrap(ones, b) if create else ones],
                                 retain_graph=create, create_graph=create, targets=[vs[i]])
        if gi is None:
            return Tensor._wrap(b.xp.zeros(x.data.shape, dtype=x.data.dtype,
                                           device=b.device_of(x.data)), b)
        return gi if type(gi) is Tensor else Tensor._wrap(gi, b)


def _tangent_arg(a: Any, d: Any) -> Any:
    if type(a) is not Tensor:
        return 0.0
    if d is not None:
        return Tensor._wrap(d.t, a._backend)
    b = a._backend
    return Tensor._wrap(b.xp.zeros(a.data.shape, dtype=a.data.dtype, device=b.device_of(a.data)), b)
