"""The batching rules of ``ag.vmap``'s backend (:mod:`agnograd.backends.batching`), one per
Array API function, by the standard's categories.

A rule is ``rule(bb, fn, *args, **kwargs)``: ``bb`` the level (a
:class:`~agnograd.backends.batching.BatchingBackend`), ``fn`` the function of the namespace below,
the arguments as the program passed them, with the level's shared arrays already unwrapped --
so an argument is either batched (``type(a) is bb.atype``: a real array ``a._v``, batch first) or
a value of the level below, used as it is for every example. A rule returns batched arrays or
values of the level below; the namespace shares the latter.

- *elementwise* (``add``, ``sin``, ``where``, ``clip``): batched operands get unit axes after the
  batch axis up to the highest per-example rank, so per-example broadcasting holds;
- *axis-taking* (reductions, ``sort``, ``cumulative_sum``, ``flip``, ``concat``, ``stack``,
  ``fft``): per-example axes shift past the batch axis (negative ones stay);
- *stacks of matrices* (``matmul``, ``linalg``): the standard maps over leading axes already;
  vector operands become matrices first;
- *indexing* (``[]``, ``take``, ``take_along_axis``) and *manipulation* (``reshape``,
  ``permute_dims``): keys and shapes gain the batch axis; integer-array keys become one ``take``;
- *creation*: no array argument, an unbatched result; ``*_like`` keep the batch;
- value-dependent shapes (``nonzero``, ``unique_*``, a batched boolean mask) raise
  :class:`~agnograd.backends.batching.VmapError`, as JAX and ``torch.func`` refuse them.

:data:`RULES` maps each function name to its rule; a function without one runs as a loop over
the examples (:func:`_loop`, with a one-time warning).
"""

from __future__ import annotations

import math
import operator
import threading
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .batching import BatchingBackend


class VmapError(RuntimeError):
    """A program under ``ag.vmap`` did something that cannot be batched: read a batched value
    on the host (Python control flow on it), or made a shape that depends on its values."""


class VmapFallbackWarning(UserWarning):
    """A namespace function without a batching rule ran as a Python loop over the examples."""


# ---------------------------------------------------------------------------------------------
# Helpers of the rules: ``bb`` is the level, ``bx`` the namespace below, ``at`` the array type


def _nd(a: Any) -> int:
    return len(a.shape) if hasattr(a, "shape") else 0


def _pad(bb: BatchingBackend, v: Any, k: int) -> Any:
    """``v`` (batch first) with ``k`` unit axes inserted after the batch axis."""
    if k <= 0:
        return v
    s = tuple(v.shape)
    return bb.bx.reshape(v, (s[0],) + (1,) * k + s[1:])


def _full(bb: BatchingBackend, a: Any, n: int) -> Any:
    """The real, batch-first array of ``a``: a batched value's own, an unbatched one broadcast."""
    if type(a) is bb.atype:
        return a._v
    bx = bb.bx
    return bx.broadcast_to(bx.expand_dims(a, axis=0), (n,) + tuple(a.shape))


def _size(bb: BatchingBackend, *trees: Any) -> int | None:
    """The batch size of the first batched value among ``trees`` (lists and tuples searched)."""
    at = bb.atype
    for t in trees:
        if type(t) is at:
            return int(t._v.shape[0])
        if type(t) in (list, tuple):
            n = _size(bb, *t)
            if n is not None:
                return n
        elif type(t) is dict:
            n = _size(bb, *t.values())
            if n is not None:
                return n
    return None


def _shift(axis: Any, nd: int) -> Any:
    """A per-example axis (or tuple of them) as an axis of the batch-first array."""
    if axis is None:
        return tuple(range(1, nd + 1))
    if isinstance(axis, (tuple, list)):
        return tuple(a + 1 if a >= 0 else a for a in axis)
    return axis + 1 if axis >= 0 else axis


def _norm(axis: int, nd: int) -> int:
    return axis + nd if axis < 0 else axis


def _wrap(bb: BatchingBackend, r: Any) -> Any:
    at = bb.atype
    if isinstance(r, (tuple, list)):
        return _rebuild(r, [at(e) for e in r])
    return at(r)


def _rebuild(r: Any, items: list[Any]) -> Any:
    """A sequence result of ``r``'s type holding ``items``: a tuple or list, a NamedTuple
    (``eigh``, ``qr``, ``svd``, ``slogdet``), or a struct sequence (PyTorch's return types)."""
    t = type(r)
    if t is tuple or t is list:
        return t(items)
    if hasattr(t, "_fields"):
        return t(*items)
    try:
        return t(items)
    except TypeError:
        return tuple(items)


def refuse(what: str, why: str) -> VmapError:
    return VmapError(f"ag.vmap: {what}: {why}")


_DATA_SHAPE = ("the result's shape depends on the values, which differ per example; "
               "compute it outside vmap, or use a fixed-size form (ag.where, a mask)")


# ---------------------------------------------------------------------------------------------
# Rules by category. A rule is ``rule(bb, fn, *args, **kwargs)``: ``fn`` the base function.


def _elementwise(bb: BatchingBackend, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Elementwise and broadcasting functions: batched operands get unit axes after the batch
    axis up to the highest per-example rank, so per-example broadcasting is kept."""
    at = bb.atype
    rank = 0
    batched = False
    for a in (*args, *kwargs.values()) if kwargs else args:
        if type(a) is at:
            batched = True
            r = a._v.ndim - 1
        else:
            r = _nd(a)
        if r > rank:
            rank = r
    if not batched:
        return fn(*args, **kwargs)
    args = tuple(_pad(bb, a._v, rank - a._v.ndim + 1) if type(a) is at else a for a in args)
    if kwargs:
        kwargs = {k: _pad(bb, a._v, rank - a._v.ndim + 1) if type(a) is at else a
                  for k, a in kwargs.items()}
    return at(fn(*args, **kwargs))


def _same(bb: BatchingBackend, fn: Any, x: Any, *args: Any, **kwargs: Any) -> Any:
    """Functions of the last axes only (stacks of matrices: ``inv``, ``det``, ``tril``, ...) or of
    each element (``astype``): the batch axis is one more leading axis."""
    if type(x) is not bb.atype:
        return fn(x, *args, **kwargs)
    return _wrap(bb, fn(x._v, *args, **kwargs))


def _unbatched_only(bb: BatchingBackend, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Functions that take no arrays (``arange``, ``eye``, ``zeros``): unbatched results."""
    if _size(bb, args, kwargs) is not None:
        return _loop(bb, fn, args, kwargs, fn.__name__)
    return fn(*args, **kwargs)


def _reduction(bb: BatchingBackend, fn: Any, x: Any, /, *, axis: Any = None, **kwargs: Any) -> Any:
    """Reductions and other ``axis=None``-means-all functions (sum, mean, var, any, ...)."""
    if type(x) is not bb.atype:
        return fn(x, axis=axis, **kwargs)
    return bb.atype(fn(x._v, axis=_shift(axis, x.ndim), **kwargs))


def _arg_reduction(bb: BatchingBackend, fn: Any, x: Any, /, *, axis: Any = None,
                   keepdims: bool = False) -> Any:
    """argmax/argmin: ``axis=None`` indexes the flattened example."""
    if type(x) is not bb.atype:
        return fn(x, axis=axis, keepdims=keepdims)
    bx = bb.bx
    if axis is None:
        v = x._v
        n = v.shape[0]
        r = fn(bx.reshape(v, (n, -1)), axis=1, keepdims=False)
        if keepdims:
            r = bx.reshape(r, (n,) + (1,) * x.ndim)
        return bb.atype(r)
    return bb.atype(fn(x._v, axis=_shift(axis, x.ndim), keepdims=keepdims))


def _cumulative(bb: BatchingBackend, fn: Any, x: Any, /, *, axis: Any = None, **kwargs: Any) -> Any:
    if type(x) is not bb.atype:
        return fn(x, axis=axis, **kwargs)
    if axis is None:
        if x.ndim > 1:  # the function's own error for the example
            raise ValueError(f"{fn.__name__}: axis must be given for a {x.ndim}-d array")
        axis = 0
    return bb.atype(fn(x._v, axis=_shift(axis, x.ndim), **kwargs))


def _axis_default(default: Any) -> Callable[..., Any]:
    """Functions with one per-example ``axis`` (default ``default``): sort, argsort, unstack,
    softmax-like; ``axis`` may be passed by position after ``x``."""

    def rule(bb: BatchingBackend, fn: Any, x: Any, *args: Any, **kwargs: Any) -> Any:
        if type(x) is not bb.atype:
            return fn(x, *args, **kwargs)
        if args:
            axis, args = args[0], args[1:]
        else:
            axis = kwargs.pop("axis", default)
        return _wrap(bb, fn(x._v, *args, axis=_shift(axis, x.ndim), **kwargs))

    return rule


def _flip(bb: BatchingBackend, fn: Any, x: Any, /, *, axis: Any = None) -> Any:
    if type(x) is not bb.atype:
        return fn(x, axis=axis)
    return bb.atype(fn(x._v, axis=_shift(axis, x.ndim)))


def _roll(bb: BatchingBackend, fn: Any, x: Any, /, shift: Any, *, axis: Any = None) -> Any:
    if type(x) is not bb.atype:
        return fn(x, shift, axis=axis)
    if axis is None:  # the flattened example
        bx = bb.bx
        v = x._v
        n = v.shape[0]
        return bb.atype(bx.reshape(fn(bx.reshape(v, (n, -1)), shift, axis=1), tuple(v.shape)))
    return bb.atype(fn(x._v, shift, axis=_shift(axis, x.ndim)))


def _squeeze(bb: BatchingBackend, fn: Any, x: Any, /, axis: Any) -> Any:
    if type(x) is not bb.atype:
        return fn(x, axis=axis)
    return bb.atype(fn(x._v, axis=_shift(axis, x.ndim)))


def _expand_dims(bb: BatchingBackend, fn: Any, x: Any, /, *, axis: Any = 0) -> Any:
    if type(x) is not bb.atype:
        return fn(x, axis=axis)
    return bb.atype(fn(x._v, axis=_shift(axis, x.ndim + 1)))


def _moveaxis(bb: BatchingBackend, fn: Any, x: Any, source: Any, destination: Any, /) -> Any:
    if type(x) is not bb.atype:
        return fn(x, source, destination)
    return bb.atype(fn(x._v, _shift(source, x.ndim), _shift(destination, x.ndim)))


def _permute_dims(bb: BatchingBackend, fn: Any, x: Any, /, axes: Any) -> Any:
    if type(x) is not bb.atype:
        return fn(x, axes)
    nd = x.ndim
    return bb.atype(fn(x._v, (0,) + tuple(_norm(a, nd) + 1 for a in axes)))


def _reshape(bb: BatchingBackend, fn: Any, x: Any, /, shape: Any, **kwargs: Any) -> Any:
    if type(x) is not bb.atype:
        return fn(x, shape, **kwargs)
    return bb.atype(fn(x._v, (x._v.shape[0],) + tuple(shape), **kwargs))


def _broadcast_to(bb: BatchingBackend, fn: Any, x: Any, /, shape: Any) -> Any:
    if type(x) is not bb.atype:
        return fn(x, shape)
    shape = tuple(shape)
    v = _pad(bb, x._v, len(shape) - x.ndim)
    return bb.atype(fn(v, (v.shape[0],) + shape))


def _broadcast_shape(shapes: list[tuple[Any, ...]]) -> tuple[Any, ...]:
    r = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(r):
        d = 1
        for s in shapes:
            k = i - (r - len(s))
            if k >= 0 and s[k] != 1:
                if d != 1 and d != s[k]:
                    raise ValueError(f"broadcast_arrays: shapes {shapes} do not broadcast")
                d = s[k]
        out.append(d)
    return tuple(out)


def _broadcast_arrays(bb: BatchingBackend, fn: Any, *arrays: Any) -> Any:
    n = _size(bb, arrays)
    if n is None:
        return fn(*arrays)
    shape = _broadcast_shape([tuple(a.shape) for a in arrays])
    xp = bb.xp
    return [xp.broadcast_to(a, shape) for a in arrays]


def _stack(bb: BatchingBackend, fn: Any, arrays: Any, /, *, axis: int = 0) -> Any:
    n = _size(bb, arrays)
    if n is None:
        return fn(arrays, axis=axis)
    nd = arrays[0].ndim
    return bb.atype(fn([_full(bb, a, n) for a in arrays], axis=_shift(axis, nd + 1)))


def _concat(bb: BatchingBackend, fn: Any, arrays: Any, /, *, axis: Any = 0) -> Any:
    n = _size(bb, arrays)
    if n is None:
        return fn(arrays, axis=axis)
    full = [_full(bb, a, n) for a in arrays]
    if axis is None:
        bx = bb.bx
        return bb.atype(fn([bx.reshape(v, (n, -1)) for v in full], axis=1))
    return bb.atype(fn(full, axis=_shift(axis, arrays[0].ndim)))


def _tile(bb: BatchingBackend, fn: Any, x: Any, repetitions: Any, /) -> Any:
    if type(x) is not bb.atype:
        return fn(x, repetitions)
    reps = tuple(repetitions)
    nd = x.ndim
    v = _pad(bb, x._v, len(reps) - nd)
    reps = (1,) * (max(nd, len(reps)) - len(reps)) + reps
    return bb.atype(fn(v, (1,) + reps))


def _repeat(bb: BatchingBackend, fn: Any, x: Any, repeats: Any, /, *, axis: Any = None) -> Any:
    if type(repeats) is bb.atype:
        raise refuse("repeat with batched repeats", _DATA_SHAPE)
    if type(x) is not bb.atype:
        return fn(x, repeats, axis=axis)
    v = x._v
    if axis is None:
        v = bb.bx.reshape(v, (v.shape[0], -1))
        return bb.atype(fn(v, repeats, axis=1))
    return bb.atype(fn(v, repeats, axis=_shift(axis, x.ndim)))


def _unstack(bb: BatchingBackend, fn: Any, x: Any, /, *, axis: int = 0) -> Any:
    if type(x) is not bb.atype:
        return fn(x, axis=axis)
    return tuple(bb.atype(e) for e in fn(x._v, axis=_shift(axis, x.ndim)))


def _diff(bb: BatchingBackend, fn: Any, x: Any, /, *, axis: int = -1, n: int = 1,
          prepend: Any = None, append: Any = None) -> Any:
    size = _size(bb, [x, prepend, append])
    if size is None:
        return fn(x, **_given(axis=axis, n=n, prepend=prepend, append=append))
    kw = _given(prepend=None if prepend is None else _full(bb, prepend, size),
                append=None if append is None else _full(bb, append, size))
    return bb.atype(fn(_full(bb, x, size), axis=_shift(axis, x.ndim), n=n, **kw))


def _given(**kwargs: Any) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if v is not None}


def _like(bb: BatchingBackend, fn: Any, x: Any, /, *args: Any, **kwargs: Any) -> Any:
    """``zeros_like``, ``ones_like``, ``empty_like``, ``full_like``: the batch is kept (a batched
    ``fill_value`` makes the example's fill)."""
    fill = args[0] if args else kwargs.get("fill_value")
    if type(fill) is bb.atype:
        xp = bb.xp
        return xp.multiply(xp.ones_like(x, **_given(dtype=kwargs.get("dtype"),
                                                     device=kwargs.get("device"))), fill)
    if type(x) is not bb.atype:
        return fn(x, *args, **kwargs)
    return bb.atype(fn(x._v, *args, **kwargs))


def _full_rule(bb: BatchingBackend, fn: Any, shape: Any, fill_value: Any, **kwargs: Any) -> Any:
    if type(fill_value) is not bb.atype:
        return fn(shape, fill_value, **kwargs)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    v = fill_value._v
    n = v.shape[0]
    bx = bb.bx
    ones = bx.ones((n,) + shape, **kwargs)
    return bb.atype(ones * bx.reshape(v, (n,) + (1,) * len(shape)))


def _asarray(bb: BatchingBackend, fn: Any, obj: Any, /, **kwargs: Any) -> Any:
    if type(obj) is bb.atype:
        return bb.atype(fn(obj._v, **kwargs))
    if type(obj) in (list, tuple) and _size(bb, obj) is not None:
        return bb.xp.stack([bb.xp.asarray(e, **kwargs) for e in obj])
    return fn(obj, **kwargs)


def _by_dtype(bb: BatchingBackend, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``result_type``, ``can_cast``, ``finfo``, ``iinfo``: only dtypes matter."""
    at = bb.atype
    return fn(*(a._v if type(a) is at else a for a in args),
              **{k: (a._v if type(a) is at else a) for k, a in kwargs.items()})


def _refuse_batched(why: str) -> Callable[..., Any]:
    def rule(bb: BatchingBackend, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if _size(bb, args, kwargs) is not None:
            raise refuse(f"{fn.__name__} of a batched array", why)
        return fn(*args, **kwargs)

    return rule


def _matmul(bb: BatchingBackend, fn: Any, x1: Any, x2: Any, /) -> Any:
    """``x1 @ x2`` per example: vectors become matrices first (a batched vector would otherwise
    read as a matrix), then batch axes broadcast as the standard's stacks do."""
    at = bb.atype
    b1, b2 = type(x1) is at, type(x2) is at
    if not (b1 or b2):
        return fn(x1, x2)
    bx = bb.bx
    n1, n2 = _nd(x1), _nd(x2)
    v1 = x1._v if b1 else x1
    v2 = x2._v if b2 else x2
    if n1 == 1:  # (k,) -> (1, k)
        v1 = bx.expand_dims(v1, axis=-2)
    if n2 == 1:  # (k,) -> (k, 1)
        v2 = bx.expand_dims(v2, axis=-1)
    m1, m2 = max(n1, 2), max(n2, 2)
    rank = max(m1, m2)
    if b1:
        v1 = _pad(bb, v1, rank - m1)
    if b2:
        v2 = _pad(bb, v2, rank - m2)
    if not b1:  # (..., N, K) against a batch-first x2: a unit batch axis in front
        v1 = bx.reshape(v1, (1,) * (rank + 1 - m1) + tuple(v1.shape))
    if not b2:
        v2 = bx.reshape(v2, (1,) * (rank + 1 - m2) + tuple(v2.shape))
    r = fn(v1, v2)
    if n1 == 1 and n2 == 1:
        r = bx.reshape(r, tuple(r.shape[:-2]))
    elif n1 == 1:
        r = bx.squeeze(r, axis=-2)
    elif n2 == 1:
        r = bx.squeeze(r, axis=-1)
    return at(r)


def _vecdot(bb: BatchingBackend, fn: Any, x1: Any, x2: Any, /, *, axis: int = -1) -> Any:
    at = bb.atype
    if type(x1) is not at and type(x2) is not at:
        return fn(x1, x2, axis=axis)
    rank = max(_nd(x1), _nd(x2))
    if axis >= 0:
        axis -= rank  # as a negative axis, it means the same on every operand once aligned
    v1 = _pad(bb, x1._v, rank - x1.ndim) if type(x1) is at else x1
    v2 = _pad(bb, x2._v, rank - x2.ndim) if type(x2) is at else x2
    return at(fn(v1, v2, axis=axis))


def _cross(bb: BatchingBackend, fn: Any, x1: Any, x2: Any, /, *, axis: int = -1) -> Any:
    at = bb.atype
    if type(x1) is not at and type(x2) is not at:
        return fn(x1, x2, axis=axis)
    rank = max(_nd(x1), _nd(x2))
    if axis >= 0:
        axis -= rank
    v1 = _pad(bb, x1._v, rank - x1.ndim) if type(x1) is at else x1
    v2 = _pad(bb, x2._v, rank - x2.ndim) if type(x2) is at else x2
    return at(fn(v1, v2, axis=axis))


def _outer(bb: BatchingBackend, fn: Any, x1: Any, x2: Any, /) -> Any:
    at = bb.atype
    if type(x1) is not at and type(x2) is not at:
        return fn(x1, x2)
    xp = bb.xp
    return xp.multiply(xp.expand_dims(x1, axis=-1), xp.expand_dims(x2, axis=0))


def _tensordot(bb: BatchingBackend, fn: Any, x1: Any, x2: Any, /, *, axes: Any = 2) -> Any:
    at = bb.atype
    b1, b2 = type(x1) is at, type(x2) is at
    if not (b1 or b2):
        return fn(x1, x2, axes=axes)
    n1, n2 = _nd(x1), _nd(x2)
    if isinstance(axes, int):
        a1 = tuple(range(n1 - axes, n1))
        a2 = tuple(range(axes))
    else:
        a1 = tuple(_norm(a, n1) for a in axes[0])
        a2 = tuple(_norm(a, n2) for a in axes[1])
    bx = bb.bx
    if b1 and not b2:
        return at(fn(x1._v, x2, axes=(tuple(a + 1 for a in a1), a2)))
    if b2 and not b1:
        r = fn(x1, x2._v, axes=(a1, tuple(a + 1 for a in a2)))
        return at(bx.moveaxis(r, n1 - len(a1), 0))
    # both batched: one batched matrix product over the contracted axes
    v1, v2 = x1._v, x2._v
    n = v1.shape[0]
    free1 = [a for a in range(n1) if a not in a1]
    free2 = [a for a in range(n2) if a not in a2]
    p1 = bx.permute_dims(v1, (0,) + tuple(a + 1 for a in free1) + tuple(a + 1 for a in a1))
    p2 = bx.permute_dims(v2, (0,) + tuple(a + 1 for a in a2) + tuple(a + 1 for a in free2))
    s1 = tuple(x1.shape[a] for a in free1)
    s2 = tuple(x2.shape[a] for a in free2)
    k = math.prod(x1.shape[a] for a in a1)
    m = bx.reshape(p1, (n, math.prod(s1), k)) @ bx.reshape(p2, (n, k, math.prod(s2)))
    return at(bx.reshape(m, (n,) + s1 + s2))


def _solve(bb: BatchingBackend, fn: Any, x1: Any, x2: Any, /) -> Any:
    at = bb.atype
    b1, b2 = type(x1) is at, type(x2) is at
    if not (b1 or b2):
        return fn(x1, x2)
    bx = bb.bx
    n2 = _nd(x2)
    v1 = x1._v if b1 else x1
    v2 = x2._v if b2 else x2
    if n2 == 1:
        v2 = bx.expand_dims(v2, axis=-1)
    m1, m2 = _nd(x1), max(n2, 2)
    rank = max(m1, m2)
    v1 = _pad(bb, v1, rank - m1) if b1 else bx.reshape(v1, (1,) * (rank + 1 - m1) + tuple(v1.shape))
    v2 = _pad(bb, v2, rank - m2) if b2 else bx.reshape(v2, (1,) * (rank + 1 - m2) + tuple(v2.shape))
    if tuple(v1.shape[:-2]) != tuple(v2.shape[:-2]):  # solve broadcasts only where stacks match
        lead = _broadcast_shape([tuple(v1.shape[:-2]), tuple(v2.shape[:-2])])
        v1 = bx.broadcast_to(v1, lead + tuple(v1.shape[-2:]))
        v2 = bx.broadcast_to(v2, lead + tuple(v2.shape[-2:]))
    r = fn(v1, v2)
    if n2 == 1:
        r = bx.squeeze(r, axis=-1)
    return at(r)


def _vector_norm(bb: BatchingBackend, fn: Any, x: Any, /, *, axis: Any = None, **kwargs: Any) -> Any:
    if type(x) is not bb.atype:
        return fn(x, axis=axis, **kwargs)
    return bb.atype(fn(x._v, axis=_shift(axis, x.ndim), **kwargs))


def _take(bb: BatchingBackend, fn: Any, x: Any, indices: Any, /, *, axis: Any = None) -> Any:
    at = bb.atype
    bx_, bi = type(x) is at, type(indices) is at
    if not (bx_ or bi):
        return fn(x, indices, **_given(axis=axis))
    if axis is None:
        if x.ndim != 1:
            raise ValueError(f"take: axis must be given for a {x.ndim}-d array")
        axis = 0
    nd = x.ndim
    a = _norm(axis, nd)
    bx = bb.bx
    if bx_ and not bi:
        return at(fn(x._v, indices, axis=a + 1))
    if bi and not bx_:
        i = indices._v  # (n, k)
        n, k = i.shape[0], i.shape[1]
        r = fn(x, bx.reshape(i, (-1,)), axis=a)  # (..., n*k, ...)
        s = tuple(r.shape)
        r = bx.reshape(r, s[:a] + (n, k) + s[a + 1:])
        return at(bx.moveaxis(r, a, 0))
    # both batched: example b reads row b of x moved to axis 0 and flattened with axis a
    v = bx.moveaxis(x._v, a + 1, 1)  # (n, d, ...rest)
    n, d = v.shape[0], v.shape[1]
    rest = tuple(v.shape[2:])
    flat = bx.reshape(v, (n * d,) + rest)
    i = indices._v
    off = bx.reshape(bx.arange(n, dtype=i.dtype, device=bb.base.device_of(i)) * d, (n, 1))
    r = fn(flat, bx.reshape(i + off, (-1,)), axis=0)  # (n*k, ...rest)
    r = bx.reshape(r, (n, i.shape[1]) + rest)
    return at(bx.moveaxis(r, 1, a + 1))


def _take_along_axis(bb: BatchingBackend, fn: Any, x: Any, indices: Any, /, *, axis: int = -1) -> Any:
    n = _size(bb, [x, indices])
    if n is None:
        return fn(x, indices, axis=axis)
    nd = max(_nd(x), _nd(indices))
    at = bb.atype
    v = _full(bb, x, n) if type(x) is at else _full(bb, x, n)
    i = _full(bb, indices, n)
    return at(fn(v, i, axis=_shift(axis, nd)))


def _searchsorted(bb: BatchingBackend, fn: Any, x1: Any, x2: Any, /, *, side: str = "left",
                  sorter: Any = None) -> Any:
    at = bb.atype
    if type(x1) is not at and type(sorter) is not at:
        if type(x2) is not at:
            return fn(x1, x2, side=side, **_given(sorter=sorter))
        return at(fn(x1, x2._v, side=side, **_given(sorter=sorter)))
    # a sorted row per example: count the elements below each value (exact, standard ops)
    xp = bb.xp
    s = x1 if sorter is None else xp.take_along_axis(x1, sorter, axis=-1)
    s = xp.reshape(s, (1,) * _nd(x2) + tuple(s.shape))
    v = xp.expand_dims(x2, axis=-1)
    below = (s < v) if side == "left" else (s <= v)
    return xp.astype(xp.sum(xp.astype(below, xp.int64), axis=-1), xp.int64)


def _where(bb: BatchingBackend, fn: Any, condition: Any, x1: Any, x2: Any, /) -> Any:
    return _elementwise(bb, fn, condition, x1, x2)


def _clip(bb: BatchingBackend, fn: Any, x: Any, /, min: Any = None, max: Any = None) -> Any:
    return _elementwise(bb, fn, x, **_given(min=min, max=max))


def _meshgrid(bb: BatchingBackend, fn: Any, *arrays: Any, indexing: str = "xy") -> Any:
    if _size(bb, arrays) is None:
        return fn(*arrays, indexing=indexing)
    xp = bb.xp
    k = len(arrays)
    shapes = [a.shape[0] for a in arrays]
    order = list(range(k))
    if indexing == "xy" and k >= 2:
        order[0], order[1] = 1, 0
    out_shape = tuple(shapes[order[j]] for j in range(k))
    outs = []
    for i, a in enumerate(arrays):
        pos = order.index(i)
        s = [1] * k
        s[pos] = shapes[i]
        outs.append(xp.broadcast_to(xp.reshape(a, tuple(s)), out_shape))
    return outs


def _fft_1d(bb: BatchingBackend, fn: Any, x: Any, /, *args: Any, **kwargs: Any) -> Any:
    """fft, ifft, rfft, irfft, hfft, ihfft: ``(x, n=None, axis=-1, norm=...)``."""
    if type(x) is not bb.atype:
        return fn(x, *args, **kwargs)
    rest = list(args)
    if len(rest) >= 2:
        rest[1] = _shift(rest[1], x.ndim)
    elif "axis" in kwargs:
        kwargs["axis"] = _shift(kwargs["axis"], x.ndim)
    return bb.atype(fn(x._v, *rest, **kwargs))


def _fft_nd(bb: BatchingBackend, fn: Any, x: Any, /, *args: Any, **kwargs: Any) -> Any:
    """fftn, ifftn, rfftn, irfftn: ``(x, s=None, axes=None, norm=...)``."""
    if type(x) is not bb.atype:
        return fn(x, *args, **kwargs)
    rest = list(args)
    s = rest[0] if rest else kwargs.get("s")
    if len(rest) >= 2:
        axes = rest.pop(1)
    else:
        axes = kwargs.pop("axes", None)
    if axes is None:
        axes = tuple(range(x.ndim)) if s is None else tuple(range(-len(s), 0))
    kwargs["axes"] = _shift(tuple(axes), x.ndim)
    return bb.atype(fn(x._v, *rest, **kwargs))


def _fftshift(bb: BatchingBackend, fn: Any, x: Any, /, *, axes: Any = None) -> Any:
    if type(x) is not bb.atype:
        return fn(x, **_given(axes=axes))
    return bb.atype(fn(x._v, axes=_shift(axes, x.ndim)))


def _isin(bb: BatchingBackend, fn: Any, x1: Any, x2: Any, /, **kwargs: Any) -> Any:
    """Membership per example: a shared ``x2`` is one call; a batched one is compared with
    every element of the example's ``x1``."""
    at = bb.atype
    if type(x2) is not at:
        if type(x1) is not at:
            return fn(x1, x2, **kwargs)
        return at(fn(x1._v, x2, **kwargs))
    bx = bb.bx
    n = x2._v.shape[0]
    v1 = _full(bb, x1, n)
    v2 = bx.reshape(x2._v, (n,) + (1,) * (v1.ndim - 1) + (-1,))
    r = bx.any(bx.expand_dims(v1, axis=-1) == v2, axis=-1)
    return at(bx.logical_not(r) if kwargs.get("invert") else r)


def _no_arrays(bb: BatchingBackend, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Functions of shapes and dtypes only (``broadcast_shapes``)."""
    return fn(*args, **kwargs)


def _from_dlpack(bb: BatchingBackend, fn: Any, x: Any, /, **kwargs: Any) -> Any:
    if type(x) is bb.atype:
        raise refuse("from_dlpack of a batched array", "DLPack cannot export the batch; pass "
                     "the array itself")
    return fn(x, **kwargs)


_ELEMENTWISE = """abs acos acosh add asin asinh atan atan2 atanh bitwise_and bitwise_invert
bitwise_left_shift bitwise_or bitwise_right_shift bitwise_xor ceil conj copysign cos cosh divide
equal exp expm1 floor floor_divide greater greater_equal hypot imag isfinite isinf isnan less
less_equal log log1p log2 log10 logaddexp logical_and logical_not logical_or logical_xor maximum
minimum multiply negative nextafter not_equal positive pow real reciprocal remainder round sign
signbit sin sinh sqrt square subtract tan tanh trunc""".split()

_SAME = """astype tril triu matrix_transpose cholesky det diagonal eigh eigvalsh inv matrix_norm
matrix_power matrix_rank pinv qr slogdet svd svdvals trace eig eigvals""".split()

_NO_ARRAYS = "arange empty eye linspace ones zeros fftfreq rfftfreq".split()

RULES: dict[str, Callable[..., Any]] = {name: _elementwise for name in _ELEMENTWISE}
RULES.update({name: _same for name in _SAME})
RULES.update({name: _unbatched_only for name in _NO_ARRAYS})
RULES.update({
    # statistics and utility: axis=None means the whole example
    **{name: _reduction for name in ("sum", "prod", "mean", "var", "std", "max", "min", "all",
                                     "any", "count_nonzero")},
    "argmax": _arg_reduction, "argmin": _arg_reduction,
    "cumulative_sum": _cumulative, "cumulative_prod": _cumulative,
    "diff": _diff,
    # sorting
    "sort": _axis_default(-1), "argsort": _axis_default(-1),
    # manipulation
    "flip": _flip, "roll": _roll, "squeeze": _squeeze, "expand_dims": _expand_dims,
    "moveaxis": _moveaxis, "permute_dims": _permute_dims, "reshape": _reshape,
    "broadcast_to": _broadcast_to, "broadcast_arrays": _broadcast_arrays, "stack": _stack,
    "concat": _concat, "tile": _tile, "repeat": _repeat, "unstack": _unstack,
    # creation
    "zeros_like": _like, "ones_like": _like, "empty_like": _like, "full_like": _like,
    "full": _full_rule, "asarray": _asarray, "meshgrid": _meshgrid, "from_dlpack": _from_dlpack,
    # data types
    "result_type": _by_dtype, "can_cast": _by_dtype, "finfo": _by_dtype, "iinfo": _by_dtype,
    "isdtype": _by_dtype, "broadcast_shapes": _no_arrays, "isin": _isin,
    # indexing and searching
    "take": _take, "take_along_axis": _take_along_axis, "searchsorted": _searchsorted,
    "where": _where, "clip": _clip,
    "nonzero": _refuse_batched(_DATA_SHAPE),
    "unique_all": _refuse_batched(_DATA_SHAPE), "unique_counts": _refuse_batched(_DATA_SHAPE),
    "unique_inverse": _refuse_batched(_DATA_SHAPE), "unique_values": _refuse_batched(_DATA_SHAPE),
    # linear algebra
    "matmul": _matmul, "vecdot": _vecdot, "tensordot": _tensordot, "outer": _outer,
    "cross": _cross, "solve": _solve, "vector_norm": _vector_norm,
    # fft
    **{name: _fft_1d for name in ("fft", "ifft", "rfft", "irfft", "hfft", "ihfft")},
    **{name: _fft_nd for name in ("fftn", "ifftn", "rfftn", "irfftn")},
    "fftshift": _fftshift, "ifftshift": _fftshift,
})
"""Namespace function name -> its batching rule (sub-namespaces' functions by their own name)."""


# ---------------------------------------------------------------------------------------------
# Indexing


def _expand_key(key: Any, nd: int) -> tuple[Any, ...]:
    """``key`` as a tuple with no Ellipsis (slices filling the axes it stood for)."""
    if type(key) is not tuple:
        key = (key,)
    used = sum(1 for k in key if k is not None and k is not Ellipsis)
    out: list[Any] = []
    seen = False
    for k in key:
        if k is Ellipsis:
            if seen:
                raise IndexError("an index can only have a single ellipsis ('...')")
            seen = True
            out.extend([slice(None)] * (nd - used))
        else:
            out.append(k)
    return tuple(out)


def _is_array(k: Any) -> bool:
    return hasattr(k, "shape") and hasattr(k, "dtype")


def _is_bool(k: Any) -> bool:
    return "bool" in str(k.dtype)


def _getitem(bb: BatchingBackend, x: Any, key: Any) -> Any:
    """``x[key]`` per example. Basic keys (ints, slices, ``...``, ``None``) gain a leading
    ``slice(None)``; integer-array keys (batched or not) become one ``take`` from the array with
    the batch and the indexed axes flattened together -- the standard forbids mixing slices
    with integer arrays, and this also places the indexed axes as NumPy and the standard do."""
    at = bb.atype
    keys = key if type(key) is tuple else (key,)
    batched_keys = any(type(k) is at for k in keys)
    if type(x) is not at and not batched_keys:
        return x[key]
    for k in keys:
        if type(k) is at and _is_bool(k):
            raise refuse("indexing with a batched boolean mask", _DATA_SHAPE)
    nd = _nd(x)
    n = _size(bb, [x, *keys])
    assert n is not None
    v = _full(bb, x, n)
    ek = _expand_key(key, nd)
    if not any(_is_array(k) for k in ek):
        return at(v[(slice(None),) + ek])
    bx = bb.bx
    # a boolean mask shared by the examples: its integer positions (the same for each)
    flat: list[Any] = []
    for k in ek:
        if _is_array(k) and type(k) is not at and _is_bool(k):
            flat.extend(bx.nonzero(k))
        else:
            flat.append(k)
    if any(k is None for k in flat):
        return _loop(bb, operator.getitem, (x, key), {}, "__getitem__ (None with arrays)")
    adv = [i for i, k in enumerate(flat) if _is_array(k) or isinstance(k, int)]
    # 1. the slices, with the advanced axes kept whole
    v = v[(slice(None),) + tuple(slice(None) if i in adv else k for i, k in enumerate(flat))]
    dims = tuple(v.shape[1:])
    rest = [i for i in range(len(flat)) if i not in adv]
    # 2. the advanced axes to the front (after the batch), flattened with it
    v = bx.permute_dims(v, (0,) + tuple(i + 1 for i in adv) + tuple(i + 1 for i in rest))
    sizes = [dims[i] for i in adv]
    total = math.prod(sizes)
    rest_shape = tuple(dims[i] for i in rest)
    v = bx.reshape(v, (n * total,) + rest_shape)
    terms = []
    stride = total
    dev = bb.base.device_of(v)
    for i, d in zip(adv, sizes):
        stride //= d
        k = flat[i]
        kb = type(k) is at
        if kb:
            k = k._v
        elif isinstance(k, int):
            k = bx.asarray(k, device=dev)
        if k.dtype != bx.int64:
            k = bx.astype(k, bx.int64)
        terms.append((bx.where(k < 0, k + d, k) * stride, kb))
    ishape = _broadcast_shape([tuple(k.shape[1:]) if kb else tuple(k.shape) for k, kb in terms])
    r_i = len(ishape)
    linear: Any = bx.reshape(bx.arange(n, dtype=bx.int64, device=dev) * total, (n,) + (1,) * r_i)
    for k, kb in terms:  # each batch-first, broadcast against the others
        s_k = tuple(k.shape[1:]) if kb else tuple(k.shape)
        lead = (n,) if kb else (1,)
        linear = linear + bx.reshape(k, lead + (1,) * (r_i - len(s_k)) + s_k)
    r = bx.take(v, bx.reshape(linear, (-1,)), axis=0)
    r = bx.reshape(r, (n,) + ishape + rest_shape)
    # 3. where the indexed axes go: in place of adjacent advanced keys, else first
    adjacent = adv == list(range(adv[0], adv[-1] + 1))
    before = sum(1 for i in rest if i < adv[0])
    if adjacent and before and ishape:
        r = bx.moveaxis(r, tuple(range(1, 1 + len(ishape))),
                        tuple(range(1 + before, 1 + before + len(ishape))))
    return at(r)


def _setitem(bb: BatchingBackend, x: Any, key: Any, value: Any) -> None:
    at = bb.atype
    keys = key if type(key) is tuple else (key,)
    if any(type(k) is at for k in keys):
        m = keys[0]
        if (len(keys) == 1 and "bool" in str(m.dtype) and m.ndim == x.ndim
                and (not _is_array(value) or _nd(value) == 0)):
            # x[mask] = scalar: the same as where(mask, scalar, x), per example
            x._v = _elementwise(bb, bb.bx.where, m, value, x)._v
            return
        raise refuse("an assignment at batched indices", "write with ag.where (a mask) instead, "
                     "or index outside vmap")
    v = x._v
    ek = _expand_key(key, x.ndim)
    if type(value) is at:
        # the value's example axes are right-aligned against the selection: line it up behind the
        # batch axis
        sel = v[(slice(None),) + ek]
        val = _pad(bb, value._v, (len(sel.shape) - 1) - value.ndim)
        v[(slice(None),) + ek] = val
    else:
        v[(slice(None),) + ek] = value


# ---------------------------------------------------------------------------------------------
# The loop fallback

_warned: set[str] = set()
_warn_lock = threading.Lock()


def _loop(bb: BatchingBackend, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
          name: str) -> Any:
    """``fn`` once per example, results stacked: for a function with no batching rule."""
    with _warn_lock:
        first = name not in _warned
        _warned.add(name)
    if first:
        warnings.warn(f"ag.vmap: no batching rule for '{name}'; it runs as a Python loop over "
                      "the examples (slow). Please report it.", VmapFallbackWarning, stacklevel=4)
    n = _size(bb, args, kwargs)
    assert n is not None
    at = bb.atype

    def pick(a: Any, i: int) -> Any:
        if type(a) is at:
            return a._v[i, ...]
        if type(a) in (list, tuple):
            return type(a)(pick(e, i) for e in a)
        if type(a) is dict:
            return {k: pick(e, i) for k, e in a.items()}
        return a

    outs = [fn(*pick(args, i), **pick(kwargs, i)) for i in range(n)]
    bx = bb.bx
    first_out = outs[0]
    if isinstance(first_out, (tuple, list)):
        return _rebuild(first_out, [at(bx.stack([o[j] for o in outs]))
                                    for j in range(len(first_out))])
    if not hasattr(first_out, "shape"):
        return first_out  # metadata
    return at(bx.stack(outs))
