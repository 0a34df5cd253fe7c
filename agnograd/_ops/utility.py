"""Utility functions of the Array API standard: ``all``, ``any`` and the differentiable
``diff`` (``count_nonzero`` is with the searching functions).

``diff`` is composed of differentiable ops (``concat``, slicing and ``subtract``), so its
gradient -- and its second derivative -- come from theirs: ``x̄_j = ḡ_{j-1} - ḡ_j`` for n = 1.
"""

from __future__ import annotations

import builtins
from typing import Any

from . import elementwise as _ew
from ._common import PY_SCALARS, Tensor, normalize_axes, normalize_axis, to_tensor, wrap
from .manipulation import concat

__all__ = ["all", "any", "diff"]


def _logical(name: str, x: Any, axis: Any, keepdims: bool) -> Tensor:
    x = to_tensor(x, name)
    b = x._backend
    if axis is not None:
        axis = normalize_axes(axis, x.ndim, name)
    return wrap(getattr(b.xp, name)(x.data, axis=axis, keepdims=keepdims), b)


def all(x: Any, /, *, axis: int | tuple[int, ...] | None = None,
        keepdims: bool = False) -> Tensor:
    """Whether every element along ``axis`` (all axes by default) is true (nonzero); a bool
    array. Not differentiable."""
    return _logical("all", x, axis, keepdims)


def any(x: Any, /, *, axis: int | tuple[int, ...] | None = None,
        keepdims: bool = False) -> Tensor:
    """Whether some element along ``axis`` (all axes by default) is true (nonzero); a bool
    array. Not differentiable."""
    return _logical("any", x, axis, keepdims)


def _edge(v: Any, x: Tensor, axis: int, what: str) -> Tensor:
    """``prepend``/``append`` as a Tensor shaped like ``x`` except along ``axis``."""
    b = x._backend
    if type(v) in PY_SCALARS:
        shape = tuple(1 if i == axis else n for i, n in enumerate(x.data.shape))
        return wrap(b.xp.full(shape, v, dtype=x.data.dtype, device=b.device_of(x.data)), b)
    t = to_tensor(v, "diff", b)
    same = t.ndim == x.ndim and builtins.all(
        m == k for i, (m, k) in enumerate(zip(t.shape, x.shape)) if i != axis)
    if not same:
        raise ValueError(
            f"diff: {what} has shape {t.shape} but x has shape {x.shape}; it must match x "
            f"in every axis except axis {axis}"
        )
    return t


def diff(x: Any, /, *, axis: int = -1, n: int = 1, prepend: Any = None, append: Any = None
         ) -> Tensor:
    """The ``n``-th forward difference ``out[i] = x[i+1] - x[i]`` along ``axis``, after joining
    ``prepend`` and ``append`` (arrays shaped like ``x`` except along ``axis``, or scalars) to
    ``x``. The axis shrinks by ``n``; bool inputs give ``x[i+1] != x[i]``.

    VJP (n = 1): ``x̄_j = ḡ_{j-1} - ḡ_j`` (from the ops it is composed of).
    """
    x = to_tensor(x, "diff")
    if x.ndim == 0:
        raise ValueError("diff: the input is 0-d; it needs at least one dimension")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"diff: n must be a non-negative integer, not {n!r}")
    ax = normalize_axis(axis, x.ndim, "diff")
    parts = [x]
    if prepend is not None:
        parts.insert(0, _edge(prepend, x, ax, "prepend"))
    if append is not None:
        parts.append(_edge(append, x, ax, "append"))
    y = concat(parts, axis=ax) if len(parts) > 1 else x
    head = (slice(None),) * ax
    later = head + (slice(1, None), ...)
    earlier = head + (slice(None, -1), ...)
    step = _ew.not_equal if y.dtype.kind == "b" else _ew.subtract
    for _ in range(min(n, y.data.shape[ax])):  # once the axis is empty it stays empty
        y = step(y[later], y[earlier])
    return y
