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

__all__ = ["fold", "load", "owns", "private", "replay_fn", "scatter_add", "scatter_add_rows",
           "subtract_at_labels", "windows"]


def load() -> Backend:
    return Backend("numpy", xp, np.ndarray, scalar_type=np.generic, scalar_to_array=np.asarray,
                   scatter_add=scatter_add, special=scipy_special,
                   replay_fn=replay_fn, private=private,
                   subtract_at_labels=subtract_at_labels, windows=windows, fold=fold,
                   scatter_add_rows=scatter_add_rows)


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


def subtract_at_labels(a: Any, index: Any, values: Any) -> Any:
    """``a[i, index[i, 0]] -= values[i]`` in place on the fresh ``a`` (see
    ``Backend.subtract_at_labels``): ``m`` writes instead of an ``(m, C)`` comparison."""
    m = a.shape[0]
    v = np.asarray(values)
    a[np.arange(m), np.reshape(index, (m,))] -= v if v.ndim == 0 else np.reshape(v, (m,))
    return a


def windows(x: Any, kernel: tuple[int, ...], stride: tuple[int, ...],
            dilation: tuple[int, ...], out: tuple[int, ...]) -> Any:
    """The sliding windows of ``x`` ``(N, C, *spatial)`` as a read-only strided view
    ``(N, C, *kernel, *out)`` (see ``Backend.windows``): no copy."""
    st = x.strides
    sp = st[2:]
    strides = (*st[:2], *(s * d for s, d in zip(sp, dilation)),
               *(s * k for s, k in zip(sp, stride)))
    return np.lib.stride_tricks.as_strided(x, shape=(*x.shape[:2], *kernel, *out),
                                           strides=strides, writeable=False)


def fold(g: Any, shape: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...],
         dilation: tuple[int, ...]) -> Any:
    """The adjoint of :func:`windows` (see ``Backend.fold``): each kernel offset's slice of
    ``g`` added in place into one array of zeros."""
    nd = len(kernel)
    pieces = g if isinstance(g, list) else None
    first = g[0] if pieces is not None else g
    out = first.shape[2:] if pieces is not None else g.shape[2 + nd:]
    res = np.zeros(shape, dtype=first.dtype)
    for i, offset in enumerate(np.ndindex(*kernel)):
        key = (slice(None), slice(None)) + tuple(
            slice(o * d, o * d + s * (m - 1) + 1, s)
            for o, d, s, m in zip(offset, dilation, stride, out))
        res[key] += pieces[i] if pieces is not None else g[(slice(None), slice(None)) + offset]
    return res


def scatter_add_rows(n: int, index: Any, values: Any) -> Any:
    """``out[index[k]] += values[k]`` for a zero ``out`` ``(n, d)`` (see
    ``Backend.scatter_add_rows``): one stable sort of the indices; the first row of each index
    is written, the repeated ones (usually few) added by ``add.at`` in their order."""
    out = np.zeros((n, values.shape[1]), dtype=values.dtype)
    if index.shape[0] == 0:
        return out
    order = np.argsort(index, kind="stable")
    s = index[order]
    v = values[order]
    first = np.empty(s.shape[0], dtype=bool)
    first[0] = True
    np.not_equal(s[1:], s[:-1], out=first[1:])
    out[s[first]] = v[first]
    if not first.all():
        rest = ~first
        np.add.at(out, s[rest], v[rest])
    return out
