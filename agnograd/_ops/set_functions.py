"""Set functions of the Array API standard: ``isin`` and the four ``unique_*`` functions.

They return the standard's named tuples of Tensors (field names as in the standard). None is
differentiable. As in PyTorch (``torch.unique``), the unique *values* of an input that requires
grad (while grad mode records) require grad too, and a backward pass that reaches them raises
``NotImplementedError`` naming the op -- never a silent zero gradient; detach the input
(``x.detach()``) when the values are only data. Indices and counts never require grad.
``x`` of any shape is flattened first;
``inverse_indices`` has ``x``'s shape. The standard leaves the order of the unique values
unspecified; the NumPy-based backends return them sorted.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..backends import Backend
from ..capture import _state as _capture
from ._common import PY_SCALARS, Tensor, grad_on, record, to_tensor, wrap

__all__ = ["isin", "unique_all", "unique_counts", "unique_inverse", "unique_values"]


def isin(x1: Any, x2: Any, /, *, invert: bool = False) -> Tensor:
    """For each element of ``x1``, whether it equals (:func:`agnograd.equal`) some element of
    ``x2`` (``invert=True``: whether it equals none). Either may be a Python scalar (not both);
    the result is boolean with ``x1``'s shape (0-d for a scalar ``x1``). Not differentiable.

    Written with the standard's functions (2025.12 added ``isin``; backends need not have it):
    ``x2`` flattened and sorted, ``searchsorted`` for each element of ``x1``, then one
    comparison: O((n + m) log m). Complex and boolean operands, which the standard does not
    sort, compare every pair instead.
    """
    if isinstance(x1, PY_SCALARS) and isinstance(x2, PY_SCALARS):
        raise TypeError("isin: at least one of x1 and x2 must be an array (a Tensor or a backend "
                        f"array), not two Python scalars ({x1!r}, {x2!r}); use x1 == x2")
    if isinstance(x1, PY_SCALARS):
        t2 = to_tensor(x2, "isin")
        b = t2._backend
        xp = b.xp
        out = xp.any(xp.reshape(t2.data, (-1,)) == x1)
    elif isinstance(x2, PY_SCALARS):
        t1 = to_tensor(x1, "isin")
        b = t1._backend
        out = t1.data == x2
    else:
        t1 = to_tensor(x1, "isin")
        b = t1._backend
        xp = b.xp
        a1, a2 = t1.data, to_tensor(x2, "isin", b).data
        if a1.dtype != a2.dtype:
            dt = xp.result_type(a1.dtype, a2.dtype)
            a1, a2 = xp.astype(a1, dt), xp.astype(a2, dt)
        out = _isin_arrays(b, a1, xp.reshape(a2, (-1,)))
    if invert:
        out = b.xp.logical_not(out)
    return wrap(out, b)


def _isin_arrays(b: Backend, a1: Any, flat2: Any) -> Any:
    xp = b.xp
    n = flat2.shape[0]
    if n == 0 or 0 in a1.shape:
        return xp.zeros(a1.shape, dtype=xp.bool, device=b.device_of(a1))
    if not xp.isdtype(a1.dtype, ("integral", "real floating")):  # complex, bool: every pair
        return xp.any(xp.expand_dims(a1, axis=-1) == flat2, axis=-1)
    s = xp.sort(flat2)
    flat1 = xp.reshape(a1, (-1,))
    pos = xp.clip(xp.searchsorted(s, flat1), 0, n - 1)
    return xp.reshape(xp.take(s, pos) == flat1, a1.shape)


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


def _no_derivative(xp: Any, g: Any, name: str) -> Any:
    raise NotImplementedError(
        f"{name}: the derivative of the unique values is not implemented (as in PyTorch, whose "
        "torch.unique refuses backward too); the values were computed from a tensor that "
        f"requires grad. Call {name} on x.detach() if they are only data, or write the "
        "differentiable part without unique (e.g. gather x at the indices of unique_all)")


def _values(name: str, x: Tensor, values: Any, b: Backend) -> Tensor:
    """The unique values as a Tensor: one that refuses backward when ``x`` requires grad."""
    if x._requires_grad and grad_on():
        return record(name, values, b, (x,), (_no_derivative,), params=(name,))
    return wrap(values, b)


def _unique(name: str, x: Any) -> tuple[Tensor, ...]:
    x = to_tensor(x, name)
    _capture.refuse(name, _capture.WHY_SHAPE)
    b = x._backend
    res = getattr(b.xp, name)(x.data)
    return (_values(name, x, res[0], b), *(wrap(a, b) for a in res[1:]))


def unique_all(x: Any, /) -> UniqueAllResult:
    """The unique values of ``x``, the index of each one's first occurrence in the
    flattened ``x``, the position in ``values`` of every element of ``x`` (``x``'s shape), and
    how often each value occurs. Not differentiable: ``values`` refuses backward (see the
    module docstring)."""
    return UniqueAllResult(*_unique("unique_all", x))


def unique_counts(x: Any, /) -> UniqueCountsResult:
    """The unique values of ``x`` and how often each occurs. Not differentiable: ``values``
    refuses backward."""
    return UniqueCountsResult(*_unique("unique_counts", x))


def unique_inverse(x: Any, /) -> UniqueInverseResult:
    """The unique values of ``x`` and, for every element of ``x`` (``x``'s shape), its
    position in ``values``. Not differentiable: ``values`` refuses backward."""
    return UniqueInverseResult(*_unique("unique_inverse", x))


def unique_values(x: Any, /) -> Tensor:
    """The unique values of ``x`` (1-d). Not differentiable: the result refuses backward when
    ``x`` requires grad, as ``torch.unique``'s does."""
    x = to_tensor(x, "unique_values")
    _capture.refuse("unique_values", _capture.WHY_SHAPE)
    b = x._backend
    return _values("unique_values", x, b.xp.unique_values(x.data), b)
