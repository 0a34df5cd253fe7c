"""The NumPy backend: the host library, and the default backend.

NumPy returns scalars (``numpy.float64``) for 0-d results; the Backend turns them back into
0-d arrays (``scalar_type``). Scatter-add is ``bincount``.
"""

from __future__ import annotations

import functools
from typing import Any

import array_api_compat
import array_api_compat.numpy as xp
import numpy as np

from . import Backend
from .special import scipy_special

__all__ = ["load", "owns", "private", "scatter_add", "replay_fn"]


def load() -> Backend:
    return Backend("numpy", xp, np.ndarray, scalar_type=np.generic, scalar_to_array=np.asarray,
                   scatter_add=scatter_add, special=scipy_special,
                   replay_fn=replay_fn, private=private)


def private(a: Any) -> bool:
    """Its own writable memory: not a view (``base`` is None: a broadcast, a reshape and a
    slice all have one) and writeable."""
    return a.base is None and bool(a.flags.writeable)


# numpy.sum(a, axis, dtype, keepdims=...) of an ndarray is, after a Python wrapper
# (fromnumeric._wrapreduction) that costs ~2 us, exactly numpy.add.reduce(a, axis, dtype,
# keepdims=...); likewise prod, max and min (which take no dtype). The staged replay calls the
# ufunc's reduce directly: the same C loop, bit-identical results.
_REDUCE = {
    np.sum: (np.add.reduce, frozenset({"axis", "keepdims", "dtype"})),
    np.prod: (np.multiply.reduce, frozenset({"axis", "keepdims", "dtype"})),
    np.max: (np.maximum.reduce, frozenset({"axis", "keepdims"})),
    np.min: (np.minimum.reduce, frozenset({"axis", "keepdims"})),
}


def replay_fn(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """A faster, bit-identical function for a traced call (see ``Backend.replay_fn``)."""
    try:
        entry = _REDUCE.get(fn)
    except TypeError:  # unhashable
        return None
    if (entry is None or not 1 <= len(args) <= 2 or type(args[0]) is not np.ndarray
            or not entry[1].issuperset(kwargs) or (len(args) == 2 and "axis" in kwargs)):
        return None
    if len(args) == 1 and "axis" not in kwargs:  # ufunc.reduce's own default axis is 0
        return functools.partial(entry[0], axis=None)
    return entry[0]


def owns(a: Any) -> bool:
    """A NumPy array or scalar (``numpy.matrix`` is not an Array API array)."""
    return isinstance(a, np.generic) or (
        array_api_compat.is_array_api_obj(a) and array_api_compat.is_numpy_array(a))


def scatter_add(xp: Any, n: int, index: Any, values: Any) -> Any:
    # bincount sums in float64 in one pass; add.at is an order of magnitude slower. It takes
    # real weights only: a complex sum is two of them, real and imaginary parts.
    if values.dtype.kind == "c":
        out = np.empty(n, dtype=values.dtype)
        out.real = np.bincount(index, weights=values.real, minlength=n)
        out.imag = np.bincount(index, weights=values.imag, minlength=n)
        return out
    return np.bincount(index, weights=values, minlength=n).astype(values.dtype, copy=False)
