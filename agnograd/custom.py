"""User-defined derivative rules and graph control: ``custom_vjp``, ``Function``, ``checkpoint``,
``detect_anomaly``.

``custom_vjp`` follows ``jax.custom_vjp``: ``f.defvjp(fwd, bwd)`` where ``fwd(*args)`` returns
``(out, residuals)`` and ``bwd(residuals, g)`` returns one cotangent per positional input. The
forward runs with grad mode as it is, so residuals computed from the inputs stay connected to
the graph; ``bwd`` written with agnograd ops is therefore differentiable again (higher order).
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ._tensor import Tensor, as_tensor
from .autograd import anomaly_mode, backward, enable_grad, is_grad_enabled, no_grad, record

__all__ = ["custom_vjp", "Function", "FunctionCtx", "checkpoint", "detect_anomaly"]


class _Residuals:
    """Holds residual Tensors in a node's saved tuple (freed with it after backward)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def _call_bwd(bwd: Callable[..., Any], n: int, name: str) -> tuple[Callable[..., Any], ...]:
    """One rule per input over a single call of ``bwd`` per backward visit (cached by ``g``)."""
    cache: list[Any] = [None, None]

    def run(xp: Any, g: Any, residuals: _Residuals, backend: Any) -> tuple[Any, ...]:
        if cache[0] is g:
            return cache[1]  # type: ignore[no-any-return]
        raw = type(g) is not Tensor
        gt = Tensor._wrap(g, backend) if raw else g
        ctx = no_grad() if raw else enable_grad()
        with ctx:
            out = bwd(residuals.value, gt)
        if not isinstance(out, tuple) or len(out) != n:
            raise TypeError(f"{name}: bwd must return a tuple with one cotangent per positional "
                            f"input ({n}), got {type(out).__name__}"
                            + (f" of length {len(out)}" if isinstance(out, tuple) else ""))
        res = tuple(None if c is None else (as_tensor(c, backend).data if raw else as_tensor(c, backend))
                    for c in out)
        cache[0], cache[1] = g, res
        return res

    def rule_for(i: int) -> Callable[..., Any]:
        def rule(xp: Any, g: Any, residuals: _Residuals, backend: Any) -> Any:
            return run(xp, g, residuals, backend)[i]

        return rule

    return tuple(rule_for(i) for i in range(n))


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
        functools.update_wrapper(self, f)

    def defvjp(self, fwd: Callable[..., Any], bwd: Callable[..., Any]) -> None:
        self.fwd, self.bwd = fwd, bwd

    def __call__(self, *args: Any) -> Any:
        if self.fwd is None or self.bwd is None:
            raise TypeError(f"{getattr(self.f, '__name__', 'custom_vjp')}: call .defvjp(fwd, bwd) "
                            "before using it")
        needs = is_grad_enabled() and any(
            type(a) is Tensor and a._requires_grad for a in args)
        if not needs or getattr(self._in_fwd, "on", False):
            return self.f(*args)
        self._in_fwd.on = True
        try:
            out, residuals = self.fwd(*args)
        finally:
            self._in_fwd.on = False
        out = as_tensor(out)
        name = getattr(self.f, "__name__", "custom_vjp")
        rules = _call_bwd(self.bwd, len(args), name)
        inputs = tuple(a if type(a) is Tensor else None for a in args)
        meta = tuple((a.data.shape, a.data.dtype) if type(a) is Tensor else None for a in args)
        return record(name, out.data, out._backend, inputs,
                      tuple(r if type(a) is Tensor else None for r, a in zip(rules, args)),
                      saved=(_Residuals(residuals),), meta=meta, params=(out._backend,))


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
            with no_grad():
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
        op.defvjp(fwd, bwd)
        return op(*args)


def checkpoint(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` without keeping its intermediates: backward runs ``fn`` again (on the saved
    inputs) and backpropagates through that recomputation. Trades compute for memory; the
    gradients are identical."""
    tensors = [a for a in args if type(a) is Tensor]
    if not (is_grad_enabled() and any(t._requires_grad for t in tensors)):
        return fn(*args)
    with no_grad():
        out = as_tensor(fn(*args))
    n = len(args)

    def recompute(xp: Any, g: Any, *saved_and_params: Any) -> tuple[Any, ...]:
        *inputs, backend = saved_and_params
        raw = type(g) is not Tensor
        leaves = []
        for a in inputs:
            if type(a) is Tensor:
                leaves.append(a)
            elif backend.is_array(a):
                t = Tensor._wrap(a, backend)
                t._requires_grad = _floating(t)
                leaves.append(t)
            else:
                leaves.append(a)
        with enable_grad():
            y = as_tensor(fn(*leaves))
            targets = [t for t in leaves if type(t) is Tensor and t._requires_grad]
            gs = (backward([y], [g], retain_graph=not raw, create_graph=not raw, targets=targets)
                  if targets else [])
        it = iter(gs)
        return tuple(next(it) if type(t) is Tensor and t._requires_grad else None for t in leaves)

    cache: list[Any] = [None, None]

    def rule_for(i: int) -> Callable[..., Any]:
        def rule(xp: Any, g: Any, *rest: Any) -> Any:
            if cache[0] is not g:
                cache[0], cache[1] = g, recompute(xp, g, *rest)
            r = cache[1][i]
            return None if r is None else (r.data if type(g) is not Tensor else r)

        return rule

    rules = tuple(rule_for(i) if type(a) is Tensor and a._requires_grad else None
                  for i, a in enumerate(args))
    saved = tuple(args)
    return record(getattr(fn, "__name__", "checkpoint"), out.data, out._backend, tuple(args), rules,
                  saved=saved, params=(out._backend,)) if n else out


def _floating(t: Tensor) -> bool:
    return t.dtype.is_floating


@contextlib.contextmanager
def detect_anomaly() -> Iterator[None]:
    """Within the block, ops record where they were created (file:line), and backward checks
    every gradient it computes: the first op whose gradient contains NaN or inf raises
    ``FloatingPointError`` naming the op and that place. Costs a host sync per op: debug only."""
    previous = anomaly_mode.enabled
    anomaly_mode.enabled = True
    try:
        yield
    finally:
        anomaly_mode.enabled = previous
