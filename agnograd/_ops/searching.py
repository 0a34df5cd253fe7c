"""Searching functions of the Array API standard: ``argmax``, ``argmin``, ``nonzero``,
``searchsorted`` and ``count_nonzero`` (``where`` lives with the elementwise functions).

All return integer indices or counts, so none is differentiable: results never require grad.
"""

from __future__ import annotations

from typing import Any

from ..capture import _state as _capture
from ._common import PY_SCALARS, Tensor, normalize_axes, normalize_axis, to_tensor, wrap

__all__ = ["argmax", "argmin", "count_nonzero", "nonzero", "searchsorted"]


def _arg_extreme(name: str, x: Any, axis: int | None, keepdims: bool) -> Tensor:
    x = to_tensor(x, name)
    b = x._backend
    if axis is not None:
        axis = normalize_axis(axis, x.ndim, name)
        if x.data.shape[axis] == 0:
            raise ValueError(f"{name}: axis {axis} of shape {x.shape} is empty; there is no "
                             "index to return")
    elif x.size == 0:
        raise ValueError(f"{name}: the input of shape {x.shape} is empty; there is no index to "
                         "return")
    return wrap(getattr(b.xp, name)(x.data, axis=axis, keepdims=keepdims), b)


def argmax(x: Any, /, *, axis: int | None = None, keepdims: bool = False) -> Tensor:
    """Index of the (first) maximum along ``axis`` (of the flattened array when None), in the
    default integer dtype. Not differentiable."""
    return _arg_extreme("argmax", x, axis, keepdims)


def argmin(x: Any, /, *, axis: int | None = None, keepdims: bool = False) -> Tensor:
    """Index of the (first) minimum along ``axis`` (of the flattened array when None), in the
    default integer dtype. Not differentiable."""
    return _arg_extreme("argmin", x, axis, keepdims)


def nonzero(x: Any, /) -> tuple[Tensor, ...]:
    """Indices of the nonzero (True) elements: a tuple of ``x.ndim`` 1-d integer arrays, in
    row-major order. ``x`` must have at least one dimension. Not differentiable."""
    x = to_tensor(x, "nonzero")
    _capture.refuse("nonzero", _capture.WHY_SHAPE)
    if x.ndim == 0:
        raise ValueError("nonzero: the input is 0-d; the standard requires at least one "
                         "dimension (use ag.reshape(x, (1,)) first)")
    b = x._backend
    return tuple(wrap(i, b) for i in b.xp.nonzero(x.data))


def count_nonzero(x: Any, /, *, axis: int | tuple[int, ...] | None = None,
                  keepdims: bool = False) -> Tensor:
    """Number of nonzero elements along ``axis`` (all axes by default), in the default integer
    dtype. Not differentiable."""
    x = to_tensor(x, "count_nonzero")
    b = x._backend
    if axis is not None:
        axis = normalize_axes(axis, x.ndim, "count_nonzero")
    return wrap(b.xp.count_nonzero(x.data, axis=axis, keepdims=keepdims), b)


def searchsorted(x1: Any, x2: Any, /, *, side: str = "left", sorter: Any = None) -> Tensor:
    """Indices where the elements of ``x2`` would be inserted into the 1-d ``x1`` (ascending,
    or ascending in the order ``sorter`` gives) to keep it sorted; ``side`` picks the first
    (``'left'``) or last (``'right'``) suitable position. Shape of ``x2``; default integer
    dtype. Not differentiable."""
    if side not in ("left", "right"):
        raise ValueError(f"searchsorted: side must be 'left' or 'right', not {side!r}")
    x1 = to_tensor(x1, "searchsorted")
    b = x1._backend
    if x1.ndim != 1:
        raise ValueError(f"searchsorted: x1 must be 1-d, not shape {x1.shape}")
    if type(x2) in PY_SCALARS:
        v = b.asarray(x2, dtype=x1.data.dtype, device=b.device_of(x1.data))
    else:
        v = to_tensor(x2, "searchsorted", b).data
    kw: dict[str, Any] = {"side": side}
    if sorter is not None:
        s = to_tensor(sorter, "searchsorted", b)
        if s.shape != x1.shape:
            raise ValueError(f"searchsorted: sorter has shape {s.shape} but x1 has shape "
                             f"{x1.shape}; it must be a permutation of x1's indices")
        kw["sorter"] = s.data
    return wrap(b.xp.searchsorted(x1.data, v, **kw), b)
