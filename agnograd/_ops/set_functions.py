"""Set functions of the Array API standard: the four ``unique_*`` functions.

They return the standard's named tuples of Tensors (field names as in the standard). None is
differentiable: results never require grad. ``x`` of any shape is flattened first;
``inverse_indices`` has ``x``'s shape. The standard leaves the order of the unique values
unspecified; the NumPy-based backends return them sorted.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .. import _capture_state as _capture
from ._common import Tensor, to_tensor, wrap

__all__ = ["unique_all", "unique_counts", "unique_inverse", "unique_values"]


class UniqueAllResult(NamedTuple):
    values: Tensor
    indices: Tensor
    inverse_indices: Tensor
    counts: Tensor


class UniqueCountsResult(NamedTuple):
    values: Tensor
    counts: Tensor


class UniqueInverseResult(NamedTuple):
    values: Tensor
    inverse_indices: Tensor


def _unique(name: str, x: Any) -> tuple[Tensor, ...]:
    x = to_tensor(x, name)
    _capture.refuse(name, _capture.WHY_SHAPE)
    b = x._backend
    res = getattr(b.xp, name)(x.data)
    return tuple(wrap(a, b) for a in res)


def unique_all(x: Any, /) -> UniqueAllResult:
    """The unique values of ``x``, the index of each one's first occurrence in the
    flattened ``x``, the position in ``values`` of every element of ``x`` (``x``'s shape), and
    how often each value occurs. Not differentiable."""
    return UniqueAllResult(*_unique("unique_all", x))


def unique_counts(x: Any, /) -> UniqueCountsResult:
    """The unique values of ``x`` and how often each occurs. Not differentiable."""
    return UniqueCountsResult(*_unique("unique_counts", x))


def unique_inverse(x: Any, /) -> UniqueInverseResult:
    """The unique values of ``x`` and, for every element of ``x`` (``x``'s shape), its
    position in ``values``. Not differentiable."""
    return UniqueInverseResult(*_unique("unique_inverse", x))


def unique_values(x: Any, /) -> Tensor:
    """The unique values of ``x`` (1-d). Not differentiable."""
    x = to_tensor(x, "unique_values")
    _capture.refuse("unique_values", _capture.WHY_SHAPE)
    b = x._backend
    return wrap(b.xp.unique_values(x.data), b)
