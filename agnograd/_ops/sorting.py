"""Sorting functions of the Array API standard: ``argsort`` and the differentiable ``sort``.

``sort`` is a permutation of its input, so its VJP permutes the cotangent back: with
``idx = argsort(x)`` and ``out = take_along_axis(x, idx)``, the inverse permutation
``inv = argsort(idx)`` (saved as a constant integer array) gives ``x̄ = take_along_axis(ḡ, inv)``.
"""

from __future__ import annotations

from typing import Any

from ._common import Tensor, grad_on, normalize_axis, record, to_tensor, wrap

__all__ = ["argsort", "sort"]


def _axis(x: Tensor, axis: int, op: str) -> int:
    if x.ndim == 0:
        raise ValueError(f"{op}: the input is 0-d; sorting needs at least one dimension")
    return normalize_axis(axis, x.ndim, op)


def argsort(x: Any, /, *, axis: int = -1, descending: bool = False, stable: bool = True
            ) -> Tensor:
    """Indices that sort ``x`` along ``axis`` (ascending unless ``descending``; ties keep their
    order when ``stable``). Same shape as ``x``, default integer dtype. Not differentiable."""
    x = to_tensor(x, "argsort")
    b = x._backend
    ax = _axis(x, axis, "argsort")
    return wrap(b.xp.argsort(x.data, axis=ax, descending=descending, stable=stable), b)


def _sort_back(xp: Any, g: Any, inv: Any, axis: int) -> Any:
    return xp.take_along_axis(g, inv, axis=axis)


def sort(x: Any, /, *, axis: int = -1, descending: bool = False, stable: bool = True) -> Tensor:
    """``x`` sorted along ``axis`` (ascending unless ``descending``); same shape and dtype.

    VJP: ``x̄ = take_along_axis(ḡ, inv, axis)``, ``inv = argsort(argsort(x))`` the inverse
    permutation (tied elements each get the cotangent of the position they were sorted to).
    """
    x = to_tensor(x, "sort")
    b = x._backend
    xp = b.xp
    ax = _axis(x, axis, "sort")
    if not (x._requires_grad and grad_on()):
        return wrap(xp.sort(x.data, axis=ax, descending=descending, stable=stable), b)
    idx = xp.argsort(x.data, axis=ax, descending=descending, stable=stable)
    y = xp.take_along_axis(x.data, idx, axis=ax)
    inv = b.fix(xp.argsort(idx, axis=ax))
    return record("sort", y, b, (x,), (_sort_back,), saved=(inv,), params=(ax,))
