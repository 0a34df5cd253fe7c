"""Statistical functions of the Array API standard (plus ``logsumexp``), with their VJP rules.

A reduction's rule first puts the cotangent back into the reduced axes (``_expand``: reshape
to the keepdims shape, then broadcast to the input's shape) and then applies the local
derivative. Subgradients: ``max``/``min`` split the gradient equally between tied maxima (as
JAX does); ``prod`` uses products of the *other* elements, so zeros are handled exactly.
"""

from __future__ import annotations

import math
from typing import Any

from ..autograd.forward import defjvp
from ._common import (
    OUT,
    Tensor,
    grad_on,
    is_complex,
    normalize_axes,
    normalize_axis,
    raw_dtype,
    record,
    to_tensor,
    wrap,
)

__all__ = [
    "cumulative_prod",
    "cumulative_sum",
    "logsumexp",
    "max",
    "mean",
    "min",
    "prod",
    "std",
    "sum",
    "var",
]


def _kept_shape(shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


def _expand(xp: Any, g: Any, kshape: tuple[int, ...], shape: tuple[int, ...],
            like: Any = None) -> Any:
    """A reduction's cotangent broadcast back over the reduced axes.

    ``like`` is the reduced input on a lazy backend (Dask): ``zeros_like(like) + g`` keeps its
    chunks, where ``broadcast_to`` would make one chunk as long as the reduced axes.
    """
    if like is not None:
        return xp.zeros_like(like) + xp.reshape(g, kshape)
    return xp.broadcast_to(xp.reshape(g, kshape), shape)


def _lazy_like(x: Tensor) -> Any:
    """The raw input for :func:`_expand` on a lazy backend (a graph reference, no data), else
    ``None``: on eager backends ``broadcast_to`` is a free view and ``x`` need not be kept."""
    return x.data if x._backend.lazy else None


def _prepare(x: Any, axis: Any, op: str) -> tuple[Tensor, tuple[int, ...], tuple[int, ...]]:
    x = to_tensor(x, op)
    axes = normalize_axes(axis, x.ndim, op)
    return x, axes, _kept_shape(tuple(x.data.shape), axes)


def _count(shape: tuple[int, ...], axes: tuple[int, ...]) -> int:
    return math.prod(shape[a] for a in axes)


def _sum_back(xp: Any, g: Any, kshape: tuple[int, ...], shape: tuple[int, ...],
              like: Any) -> Any:
    return _expand(xp, g, kshape, shape, like)


def _reduced(kshape: tuple[int, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(i for i, (k, s) in enumerate(zip(kshape, shape)) if k != s)


# JVP rules (tangent v, the output y, then the VJP rule's arguments).
defjvp(_sum_back, lambda xp, v, y, kshape, shape, like: xp.reshape(
    xp.sum(v, axis=_reduced(kshape, shape), keepdims=True), y.shape))


def sum(x: Any, /, *, axis: int | tuple[int, ...] | None = None, dtype: Any = None,
        keepdims: bool = False) -> Tensor:
    """Sum over ``axis`` (all axes by default). VJP: ``x̄ = broadcast(ḡ)`` over the summed axes."""
    x, axes, kshape = _prepare(x, axis, "sum")
    b = x._backend
    y = b.xp.sum(x.data, axis=axes, dtype=raw_dtype(b, dtype), keepdims=keepdims)
    if x._requires_grad and grad_on():
        meta = None if y.dtype == x.data.dtype else ((x.data.shape, x.data.dtype),)
        return record("sum", y, b, (x,), (_sum_back,), meta=meta,
                      params=(kshape, x.data.shape, _lazy_like(x)))
    return wrap(y, b)


def _mean_back(xp: Any, g: Any, kshape: tuple[int, ...], shape: tuple[int, ...], n: int,
               like: Any) -> Any:
    return _expand(xp, g / n, kshape, shape, like)


defjvp(_mean_back, lambda xp, v, y, kshape, shape, n, like: xp.reshape(
    xp.sum(v, axis=_reduced(kshape, shape), keepdims=True), y.shape) / n)


def mean(x: Any, /, *, axis: int | tuple[int, ...] | None = None, keepdims: bool = False
         ) -> Tensor:
    """Arithmetic mean over ``axis``. VJP: ``x̄ = broadcast(ḡ)/N``, N the number of elements reduced."""
    x, axes, kshape = _prepare(x, axis, "mean")
    b = x._backend
    y = b.xp.mean(x.data, axis=axes, keepdims=keepdims)
    if x._requires_grad and grad_on():
        return record("mean", y, b, (x,), (_mean_back,),
                      params=(kshape, x.data.shape, _count(x.data.shape, axes), _lazy_like(x)))
    return wrap(y, b)


def _moved_flat(xp: Any, x: Any, axes: tuple[int, ...]) -> Any:
    """``x`` with the reduced axes moved last and merged into one."""
    rest = tuple(i for i in range(x.ndim) if i not in axes)
    moved = xp.permute_dims(x, rest + axes)
    return xp.reshape(moved, tuple(x.shape[i] for i in rest) + (-1,)), rest


def _prod_back(xp: Any, g: Any, x: Any, axes: tuple[int, ...], kshape: tuple[int, ...]) -> Any:
    # x̄_i = ḡ · prod_{j≠i} x_j, from exclusive cumulative products from the left and the right:
    # exact when x has zeros (no division).
    return _expand(xp, g, kshape, tuple(x.shape)) * _prod_others(xp, x, axes)


def _prod_back_complex(xp: Any, g: Any, x: Any, axes: tuple[int, ...], kshape: tuple[int, ...]
                       ) -> Any:
    # holomorphic in each x_i: x̄_i = ḡ · conj(prod_{j≠i} x_j)
    return _expand(xp, g, kshape, tuple(x.shape)) * xp.conj(_prod_others(xp, x, axes))


def _prod_others(xp: Any, x: Any, axes: tuple[int, ...]) -> Any:
    """``prod_{j≠i} x_j`` over ``axes`` for every element ``i``."""
    flat, rest = _moved_flat(xp, x, axes)
    ones = xp.ones_like(flat[..., :1])
    left = xp.cumulative_prod(xp.concat([ones, flat[..., :-1]], axis=-1), axis=-1)
    rev = xp.flip(flat, axis=-1)
    right = xp.flip(xp.cumulative_prod(xp.concat([ones, rev[..., :-1]], axis=-1), axis=-1), axis=-1)
    others = left * right
    moved_shape = tuple(x.shape[i] for i in rest) + tuple(x.shape[i] for i in axes)
    order = rest + axes
    inverse = tuple(sorted(range(len(order)), key=order.__getitem__))
    return xp.permute_dims(xp.reshape(others, moved_shape), inverse)


def prod(x: Any, /, *, axis: int | tuple[int, ...] | None = None, dtype: Any = None,
         keepdims: bool = False) -> Tensor:
    """Product over ``axis``. VJP: ``x̄_i = ḡ · Π_{j≠i} x_j`` (exact with zeros in ``x``;
    complex: ``ḡ · conj(Π_{j≠i} x_j)``)."""
    x, axes, kshape = _prepare(x, axis, "prod")
    b = x._backend
    y = b.xp.prod(x.data, axis=axes, dtype=raw_dtype(b, dtype), keepdims=keepdims)
    if x._requires_grad and grad_on():
        if not axes:
            return record("prod", y, b, (x,), (lambda xp, g: g,))
        meta = None if y.dtype == x.data.dtype else ((x.data.shape, x.data.dtype),)
        rule = _prod_back_complex if is_complex(b, y.dtype) else _prod_back
        return record("prod", y, b, (x,), (rule,), saved=(x,), meta=meta,
                      params=(axes, kshape))
    return wrap(y, b)


def _extreme_back(xp: Any, g: Any, x: Any, y: Any, axes: tuple[int, ...],
                  kshape: tuple[int, ...]) -> Any:
    # Ties share the gradient equally: x̄ = ḡ · [x = max] / #ties.
    hit = xp.astype(x == xp.reshape(y, kshape), x.dtype)
    ties = xp.sum(hit, axis=axes, keepdims=True)
    return _expand(xp, g, kshape, tuple(x.shape)) * (hit / ties)


def _extreme_jvp(xp: Any, v: Any, out: Any, x: Any, y: Any, axes: tuple[int, ...],
                 kshape: tuple[int, ...]) -> Any:
    # the transpose of the tie-splitting VJP: the mean of v over the tied extremes
    hit = xp.astype(x == xp.reshape(y, kshape), x.dtype)
    ties = xp.sum(hit, axis=axes, keepdims=True)
    return xp.reshape(xp.sum(v * (hit / ties), axis=axes, keepdims=True), out.shape)


defjvp(_extreme_back, _extreme_jvp)


def _extreme(name: str, x: Any, axis: Any, keepdims: bool) -> Tensor:
    x, axes, kshape = _prepare(x, axis, name)
    b = x._backend
    if x.size == 0 and any(x.data.shape[a] == 0 for a in axes):
        raise ValueError(f"{name}: reduction over a zero-size axis of shape {x.shape} has no identity")
    y = getattr(b.xp, name)(x.data, axis=axes, keepdims=keepdims)
    if x._requires_grad and grad_on():
        return record(name, y, b, (x,), (_extreme_back,), saved=(x, OUT), params=(axes, kshape))
    return wrap(y, b)


def max(x: Any, /, *, axis: int | tuple[int, ...] | None = None, keepdims: bool = False
        ) -> Tensor:
    """Maximum over ``axis``. VJP: ``ḡ`` to the maximal elements, split equally between ties."""
    return _extreme("max", x, axis, keepdims)


def min(x: Any, /, *, axis: int | tuple[int, ...] | None = None, keepdims: bool = False
        ) -> Tensor:
    """Minimum over ``axis``. VJP: ``ḡ`` to the minimal elements, split equally between ties."""
    return _extreme("min", x, axis, keepdims)


def _var_back(xp: Any, g: Any, x: Any, axes: tuple[int, ...], kshape: tuple[int, ...],
              dof: float) -> Any:
    centered = x - xp.mean(x, axis=axes, keepdims=True)
    return _expand(xp, g, kshape, tuple(x.shape)) * centered * (2.0 / dof)



def _centered_dot(xp: Any, v: Any, x: Any, axes: tuple[int, ...]) -> Any:
    """Σ conj(x - mean)·v over ``axes`` (kept): the engine takes the real part for a complex x."""
    centered = x - xp.mean(x, axis=axes, keepdims=True)
    if xp.isdtype(centered.dtype, "complex floating"):
        centered = xp.conj(centered)
    return xp.sum(centered * v, axis=axes, keepdims=True)


# JVP (forward mode): d var = 2·Re Σ conj(x - mean)·v / (N - correction).
defjvp(_var_back, lambda xp, v, y, x, axes, kshape, dof: xp.reshape(
    _centered_dot(xp, v, x, axes) * (2.0 / dof), y.shape))


def var(x: Any, /, *, axis: int | tuple[int, ...] | None = None, correction: float = 0.0,
        keepdims: bool = False) -> Tensor:
    """Variance over ``axis`` with ``correction`` (Bessel's is 1).

    VJP: ``x̄ = ḡ · 2(x - mean)/(N - correction)``.
    """
    x, axes, kshape = _prepare(x, axis, "var")
    b = x._backend
    y = b.xp.var(x.data, axis=axes, correction=correction, keepdims=keepdims)
    if x._requires_grad and grad_on():
        dof = _count(x.data.shape, axes) - correction
        return record("var", y, b, (x,), (_var_back,), saved=(x,), params=(axes, kshape, dof))
    return wrap(y, b)


def _std_back(xp: Any, g: Any, x: Any, s: Any, axes: tuple[int, ...], kshape: tuple[int, ...],
              dof: float) -> Any:
    # x̄ = ḡ (x - mean) / ((N - c) std); 0 where std = 0 (as PyTorch), not 0/0.
    centered = x - xp.mean(x, axis=axes, keepdims=True)
    s = xp.reshape(s, kshape)
    scale = xp.where(s == 0, 0.0, 1.0 / (dof * xp.where(s == 0, 1.0, s)))
    return _expand(xp, g, kshape, tuple(x.shape)) * centered * scale



def _std_jvp(xp: Any, v: Any, y: Any, x: Any, s: Any, axes: tuple[int, ...],
             kshape: tuple[int, ...], dof: float) -> Any:
    # d std = Re Σ conj(x - mean)·v / ((N - c) std); 0 where std = 0, as the VJP
    s = xp.reshape(s, kshape)
    scale = xp.where(s == 0, 0.0, 1.0 / (dof * xp.where(s == 0, 1.0, s)))
    return xp.reshape(_centered_dot(xp, v, x, axes) * scale, y.shape)


defjvp(_std_back, _std_jvp)


def std(x: Any, /, *, axis: int | tuple[int, ...] | None = None, correction: float = 0.0,
        keepdims: bool = False) -> Tensor:
    """Standard deviation over ``axis`` with ``correction``.

    VJP: ``x̄ = ḡ · (x - mean)/((N - correction)·std)`` (0 where std = 0).
    """
    x, axes, kshape = _prepare(x, axis, "std")
    b = x._backend
    y = b.xp.std(x.data, axis=axes, correction=correction, keepdims=keepdims)
    if x._requires_grad and grad_on():
        dof = _count(x.data.shape, axes) - correction
        return record("std", y, b, (x,), (_std_back,), saved=(x, OUT),
                      params=(axes, kshape, dof))
    return wrap(y, b)


def _cum_axis(x: Tensor, axis: int | None, op: str) -> int:
    if axis is None:
        if x.ndim != 1:
            raise ValueError(f"{op}: axis is required for a {x.ndim}-d array (shape {x.shape})")
        return 0
    return normalize_axis(axis, x.ndim, op)


def _drop_initial(g: Any, axis: int) -> Any:
    return g[(slice(None),) * axis + (slice(1, None), ...)]


def _revcumsum(xp: Any, g: Any, axis: int) -> Any:
    return xp.flip(xp.cumulative_sum(xp.flip(g, axis=axis), axis=axis), axis=axis)


def _cumsum_back(xp: Any, g: Any, axis: int, initial: bool) -> Any:
    # out_k = Σ_{j≤k} x_j, so x̄_j = Σ_{k≥j} ḡ_k: a reversed cumulative sum.
    if initial:
        g = _drop_initial(g, axis)
    return _revcumsum(xp, g, axis)


defjvp(_cumsum_back, lambda xp, v, y, axis, initial: xp.cumulative_sum(
    v, axis=axis, include_initial=initial))


def cumulative_sum(x: Any, /, *, axis: int | None = None, dtype: Any = None,
                   include_initial: bool = False) -> Tensor:
    """Cumulative sum along ``axis``. VJP: ``x̄_j = Σ_{k≥j} ḡ_k`` (a reversed cumulative sum)."""
    x = to_tensor(x, "cumulative_sum")
    b = x._backend
    ax = _cum_axis(x, axis, "cumulative_sum")
    y = b.xp.cumulative_sum(x.data, axis=ax, dtype=raw_dtype(b, dtype),
                            include_initial=include_initial)
    if x._requires_grad and grad_on():
        meta = None if y.dtype == x.data.dtype else ((x.data.shape, x.data.dtype),)
        return record("cumulative_sum", y, b, (x,), (_cumsum_back,), meta=meta,
                      params=(ax, include_initial))
    return wrap(y, b)


def _cumprod_back(xp: Any, g: Any, x: Any, y: Any, axis: int, initial: bool) -> Any:
    # out_k = Π_{j≤k} x_j. Before the first zero of x, x̄_j = Σ_{k≥j} ḡ_k out_k / x_j. At the
    # first zero z, x̄_z = Σ_{k≥z} ḡ_k Π_{j≤k, j≠z} x_j: the same sum over the products taken
    # with x_z replaced by 1. After it, every product holds x_z = 0, so x̄ = 0. Exact, O(n).
    if initial:
        g = _drop_initial(g, axis)
        y = _drop_initial(y, axis)
    zero = x == 0
    zeros_so_far = xp.cumulative_sum(xp.astype(zero, x.dtype), axis=axis)
    first = zero & (zeros_so_far == 1)
    before = zeros_so_far == 0
    safe_x = xp.where(zero, 1.0, x)
    y_skip = xp.cumulative_prod(xp.where(first, 1.0, x), axis=axis)
    plain = _revcumsum(xp, g * y, axis) / safe_x
    at_zero = _revcumsum(xp, g * y_skip, axis)
    return xp.where(before, plain, xp.where(first, at_zero, 0.0))


def _cumprod_back_complex(xp: Any, g: Any, x: Any, y: Any, axis: int, initial: bool) -> Any:
    # holomorphic: the real rule with every product conjugated; conj is multiplicative, so
    # that is the real rule of conj(x) and conj(out)
    return _cumprod_back(xp, g, xp.conj(x), xp.conj(y), axis, initial)


def cumulative_prod(x: Any, /, *, axis: int | None = None, dtype: Any = None,
                    include_initial: bool = False) -> Tensor:
    """Cumulative product along ``axis``.

    VJP: ``x̄_j = Σ_{k≥j} ḡ_k Π_{i≤k, i≠j} x_i``, computed in O(n) and exact with zeros
    (complex: the products conjugated).
    """
    x = to_tensor(x, "cumulative_prod")
    b = x._backend
    ax = _cum_axis(x, axis, "cumulative_prod")
    y = b.xp.cumulative_prod(x.data, axis=ax, dtype=raw_dtype(b, dtype),
                             include_initial=include_initial)
    if x._requires_grad and grad_on():
        meta = None if y.dtype == x.data.dtype else ((x.data.shape, x.data.dtype),)
        rule = _cumprod_back_complex if is_complex(b, y.dtype) else _cumprod_back
        return record("cumulative_prod", y, b, (x,), (rule,), saved=(x, OUT), meta=meta,
                      params=(ax, include_initial))
    return wrap(y, b)


def _logsumexp_back(xp: Any, g: Any, x: Any, y: Any, kshape: tuple[int, ...]) -> Any:
    return _expand(xp, g, kshape, tuple(x.shape)) * xp.exp(x - xp.reshape(y, kshape))


def _logsumexp_back_complex(xp: Any, g: Any, x: Any, y: Any, kshape: tuple[int, ...]) -> Any:
    return _expand(xp, g, kshape, tuple(x.shape)) * xp.conj(xp.exp(x - xp.reshape(y, kshape)))



def _logsumexp_jvp(xp: Any, v: Any, out: Any, x: Any, y: Any, kshape: tuple[int, ...]) -> Any:
    # d logsumexp = Σ softmax(x)·v (holomorphic: the same for complex x)
    axes = _reduced(kshape, tuple(x.shape))
    w = xp.exp(x - xp.reshape(y, kshape))
    return xp.reshape(xp.sum(w * v, axis=axes, keepdims=True), out.shape)


defjvp(_logsumexp_back, _logsumexp_jvp)
defjvp(_logsumexp_back_complex, _logsumexp_jvp)


def logsumexp(x: Any, /, *, axis: int | tuple[int, ...] | None = None, keepdims: bool = False
              ) -> Tensor:
    """``log Σ exp(x)`` over ``axis``, computed stably (shifted by the maximum).

    VJP: ``x̄ = ḡ · exp(x - logsumexp(x))`` (the softmax; complex: its conjugate). Not part of
    the standard.
    """
    x, axes, kshape = _prepare(x, axis, "logsumexp")
    b = x._backend
    xp = b.xp
    if x.size == 0:
        raise ValueError(f"logsumexp: empty input of shape {x.shape}")
    cplx = is_complex(b, x.data.dtype)
    # Shift by the largest real part (the standard's max is for real inputs; a complex shift's
    # imaginary part would cancel anyway): exp never overflows.
    m = xp.max(xp.real(x.data) if cplx else x.data, axis=axes, keepdims=True)
    m = xp.where(xp.isfinite(m), m, 0.0)  # all -inf (or inf) along an axis: no shift
    y = xp.log(xp.sum(xp.exp(x.data - m), axis=axes, keepdims=True)) + m
    if not keepdims:
        y = xp.reshape(y, tuple(n for i, n in enumerate(x.data.shape) if i not in axes))
    if x._requires_grad and grad_on():
        rule = _logsumexp_back_complex if cplx else _logsumexp_back
        return record("logsumexp", y, b, (x,), (rule,), saved=(x, OUT),
                      params=(kshape,))
    return wrap(y, b)
