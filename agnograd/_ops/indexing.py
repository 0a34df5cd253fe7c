"""Indexing: ``x[key]``, ``x[key] = v``, ``take``, ``take_along_axis`` and their VJP rules.

A gather's cotangent must be scattered back into the input's shape. Keys that select every
element at most once (ints, slices, ``None``, ``...``, or one boolean mask) are undone with the
standard's ``__setitem__`` into zeros. Integer-array gathers may repeat elements, so their
rules scatter-*add*: each gather records, for every output element, the flat position it was
read from, and the rule sums the cotangent into those positions
(:meth:`agnograd.Backend.scatter_add`: a standard-only fallback, plus NumPy/CuPy fast paths).
Scatter-add and gather are each other's VJP, so higher orders come for free.
"""

from __future__ import annotations

from typing import Any

from .._tensor import plain_alias, view_of
from ..autograd.forward import defjvp
from ..backends import Backend, backend_of_array
from ..backends import batching as _batching
from ..capture import _state as _capture
from ._common import (
    PY_SCALARS,
    Tensor,
    aliased_inplace_error,
    grad_on,
    higher,
    lift_to,
    mixing_error,
    normalize_axis,
    record,
    to_tensor,
    wrap,
)

__all__ = ["take", "take_along_axis"]

# Late-bound (installed by ``_operators.install_operators``): ``[setitem_through,
# setitem_functional]`` of ``_views.py``, which builds on this module. A write to a tensor
# whose storage has registered views goes through the first; a recorded integer-array write
# through the second.
VIEW_WRITES: list[Any] = [None, None]


# ---------------------------------------------------------------------------------------------
# Keys


class _Higher(Exception):
    """A key of a ``vmap`` level above the indexed tensor's."""

    def __init__(self, b: Backend) -> None:
        self.b = b


def _raw_key(key: Any, b: Backend) -> Any:
    """The key with Tensors replaced by their raw arrays (same backend checked)."""
    if isinstance(key, tuple):
        return tuple(_raw_key(k, b) for k in key)
    if type(key) is Tensor:
        if key._backend is not b and not _batching.below(key._backend, b):
            if _batching.below(b, key._backend):
                raise _Higher(key._backend)  # a batched key (vmap): the getitem lifts x
            raise mixing_error("indexing", b, key._backend)
        return key.data
    return key


def _refuse_mask(raw: Any, op: str) -> None:
    """While a step is recorded (:func:`agnograd.capture`): refuse a boolean-mask key."""
    for k in raw if isinstance(raw, tuple) else (raw,):
        if _is_array(k) and str(getattr(k, "dtype", "")).endswith("bool"):
            _capture.refuse(f"{op} with a boolean mask", _capture.WHY_SHAPE.replace(
                "use ag.where with a mask instead", "use ag.where(mask, x, y) instead"))


def _is_array(k: Any) -> bool:
    return not (k is None or k is Ellipsis or isinstance(k, (int, slice)))


def _assignable(key: Any) -> bool:
    """Does ``key`` select each element at most once and suit ``__setitem__``? (basic indexing,
    or a single boolean array)"""
    parts = key if isinstance(key, tuple) else (key,)
    arrays = [k for k in parts if _is_array(k)]
    if not arrays:
        return True
    return len(parts) == 1 and str(getattr(arrays[0], "dtype", "")).endswith("bool")


def _basic(key: Any) -> bool:
    """Is ``key`` basic indexing (ints, slices, ``None``, ``...``: no arrays)? Its result may be
    a view of the indexed array (it is on NumPy); array keys always copy."""
    if isinstance(key, tuple):
        for k in key:
            if _is_array(k):
                return False
        return True
    return not _is_array(key)


def _positions(b: Backend, x: Any) -> Any:
    """The flat position of every element of raw array ``x``, shaped like ``x``."""
    xp = b.xp
    size = 1
    for n in x.shape:
        size *= n
    return xp.reshape(xp.arange(size, device=b.device_of(x)), x.shape)


# ---------------------------------------------------------------------------------------------
# Scatter-add and gather of flat positions: each the other's VJP.


def scatter_add(xp: Any, n: int, index: Any, values: Any) -> Any:
    """Length-``n`` vector with ``values[k]`` summed into ``index[k]``. On raw arrays it calls
    the backend's kernel; on Tensors (``create_graph``) it is the differentiable op."""
    if type(values) is Tensor:
        return _scatter_add_op(n, index, values)
    b = backend_of_array(values)
    return b.scatter_add(n, index, values)  # type: ignore[union-attr]


def _gather_back(xp: Any, g: Any, index: Any) -> Any:
    return xp.take(g, index)


def _scatter_add_op(n: int, index: Any, values: Tensor) -> Tensor:
    """Differentiable scatter-add (used by rules under ``create_graph``). VJP: ``v̄ = ḡ[index]``."""
    b = values._backend
    idx = index.data if type(index) is Tensor else index
    y = b.scatter_add(n, idx, values.data)
    if values._requires_grad and grad_on():
        return record("scatter_add", y, b, (values,), (_gather_back,), saved=(idx,))
    return wrap(y, b)


def _scatter_back(xp: Any, g: Any, pos: Any, size: int, shape: tuple[int, ...]) -> Any:
    flat = scatter_add(xp, size, xp.reshape(pos, (-1,)), xp.reshape(g, (-1,)))
    return xp.reshape(flat, shape)


# JVP (forward mode): the gather itself, applied to the tangent at the saved positions.
defjvp(_scatter_back, lambda xp, v, y, pos, size, shape: xp.reshape(
    xp.take(xp.reshape(v, (-1,)), xp.reshape(pos, (-1,)), axis=0), y.shape))


# ---------------------------------------------------------------------------------------------
# x[key]


def _put_back(xp: Any, g: Any, key: Any, shape: tuple[int, ...], device: Any,
              selected: tuple[int, ...] | None) -> Any:
    # x̄ = zeros with x̄[key] = ḡ (key selects each element at most once). Axes that the key
    # added with None are dropped first: the standard's __setitem__ takes no None.
    if selected is not None:
        g = xp.reshape(g, selected)
    if type(g) is Tensor:
        return _put_op(g, key, shape, device)
    return backend_of_array(g).put(xp, shape, key, g, g.dtype, device)  # type: ignore[union-attr]


# JVP (forward mode): the same selection of the tangent.
defjvp(_put_back, lambda xp, v, y, key, shape, device, selected: xp.reshape(v[key], y.shape))


def _put_op(g: Tensor, key: Any, shape: tuple[int, ...], device: Any) -> Tensor:
    """Differentiable "zeros with z[key] = g" (rules under ``create_graph``). VJP: ``ḡ[key]``."""
    b = g._backend
    z = b.put(b.xp, shape, key, g.data, g.data.dtype, device)
    if g._requires_grad and grad_on():
        return record("index_put", z, b, (g,), (_take_key,), params=(key,))
    return wrap(z, b)


def _take_key(xp: Any, g: Any, key: Any) -> Any:
    return g[key]


def getitem(x: Tensor, key: Any) -> Tensor:
    """``x[key]`` with the standard's indexing: ints, slices, ``...``, ``None``, a boolean mask,
    and integer arrays (also as Tensors).

    VJP: ``x̄`` is zero except at the selected elements, which receive ``ḡ`` (summed where an
    integer-array key selects an element more than once).
    """
    b = x._backend
    try:
        raw = _raw_key(key, b)
    except _Higher:  # batched keys (vmap): x is lifted to their level
        for k in key if isinstance(key, tuple) else (key,):
            if type(k) is Tensor and k._backend is not b:
                b = higher(b, k._backend, "indexing")
        x = lift_to(x, b, "indexing")
        raw = _raw_key(key, b)
    if _capture.ACTIVE:
        _refuse_mask(raw, "x[mask]")
    try:
        y = x.data[raw]
    except IndexError as exc:
        raise IndexError(f"index {key!r} is invalid for a tensor of shape {x.shape}: {exc}") from exc
    if not (x._requires_grad and grad_on()):
        if _basic(raw):  # the backend may return a view: share x's version counter
            return view_of(x, wrap(y, b), getitem, (raw,))
        return wrap(y, b)
    if b.lazy and any(n != n for n in y.shape):  # NaN: a size only the data can tell
        raise ValueError(
            f"getitem on the '{b.name}' backend: the result's shape {tuple(y.shape)} depends on "
            "the data (a boolean mask), so its gradient cannot be built lazily; use "
            "ag.where(mask, x, 0.0), which keeps the shape, or compute the mask first")
    if _assignable(raw):
        key0 = raw
        parts = raw if isinstance(raw, tuple) else (raw,)
        selected = None
        if any(k is None for k in parts):
            raw = tuple(k for k in parts if k is not None)
            selected = tuple(x.data[raw].shape)
        out = record("getitem", y, b, (x,), (_put_back,),
                     params=(raw, x.data.shape, b.device_of(x.data), selected))
        return view_of(x, out, getitem, (key0,)) if _basic(parts) else out
    pos = _positions(b, x.data)[raw]
    return record("getitem", y, b, (x,), (_scatter_back,), saved=(pos,),
                  params=(x.size, x.data.shape))


# ---------------------------------------------------------------------------------------------
# x[key] = value


def _setitem_x(xp: Any, g: Any, mask: Any, key: Any) -> Any:
    return xp.where(mask, 0.0, g)


def _setitem_value(xp: Any, g: Any, mask: Any, key: Any) -> Any:
    return g[key]


def setitem(x: Tensor, key: Any, value: Any) -> None:
    """``x[key] = value`` (basic indexing or a boolean mask; ``value`` broadcasts).

    When no graph is recorded for it, ``x.data`` is modified in place (and every view of it with
    it, where the backend made views) and the version counter ``x`` shares with its aliases
    counts up. When one is (grad mode on and ``x`` or ``value`` requires grad), the new array is
    computed out of place and ``x`` is rebound to it, so arrays saved by earlier ops stay intact.
    When ``x`` is a view or views of its storage are alive, the write reaches all of them
    (``_views.py``). Integer-array keys are supported when a graph is recorded (a scatter into
    the selected elements; repeated indices: the last value wins).
    VJP: ``x̄ = ḡ`` with zeros at ``key``; ``v̄ = ḡ[key]`` summed back to ``value``'s shape.
    """
    b = x._backend
    try:
        raw = _raw_key(key, b)
    except _Higher:
        raise _batching.VmapError(
            f"ag.vmap: x[key] = value with a batched key (per-example positions) into a tensor "
            f"of shape {x.shape} that every example shares; make the tensor per example first "
            "(e.g. x = ag.zeros_like(...) of a mapped input inside the function), or use "
            "ag.where") from None
    if _capture.ACTIVE:
        _refuse_mask(raw, "x[mask] = value")
    v = value
    if type(v) is not Tensor and not isinstance(v, PY_SCALARS):
        v = to_tensor(v, "setitem", b)
    if type(v) is Tensor and v._backend is not b:
        if _batching.below(b, v._backend):  # a value of a vmap level into a tensor under it
            if _batching.is_batched(v.data):
                raise _batching.VmapError(
                    f"ag.vmap: x[{key!r}] = value writes a batched value (per-example shape "
                    f"{v.shape}) into a tensor shared by every example (shape {x.shape}); make "
                    "the tensor batched first (e.g. x = ag.zeros_like(value) inside the "
                    "function), or build the result with ag.where or ag.concat")
            from ..batching import unlift

            v = unlift(v, b)
        else:  # a value shared by the examples into a batched tensor, or an error
            v = lift_to(v, b, "setitem")
    cell = x._version
    if cell is not None and len(cell) > 2 and cell[2] is not None and VIEW_WRITES[0](x, raw, v, key):
        return  # written through every alias of x's storage
    rv = v.data if type(v) is Tensor else v
    tracked = grad_on() and (x._requires_grad or (type(v) is Tensor and v._requires_grad))
    if not tracked:
        x.data[raw] = rv
        if x._version is not None:
            x._version[0] += 1  # graphs that saved this data will refuse to use it
        return
    if x._node is None and x._requires_grad and getattr(
            x, "_tangent", None) is None:  # (a forward-mode dual is no leaf)
        raise RuntimeError(
            f"x[{key!r}] = ... on a leaf tensor that requires grad (shape {x.shape}) would lose its "
            "gradient history; do it inside `with ag.no_grad():`, or build a new tensor (e.g. with "
            "ag.where or ag.concat)"
        )
    if plain_alias(x):
        raise RuntimeError(aliased_inplace_error(f"x[{key!r}] = ...", x,
                                                 "ag.where, or ag.concat of the parts"))
    if not _assignable(raw):  # integer arrays: a scatter into the elements they select
        x._become(VIEW_WRITES[1](x, raw, v))
        return
    xp = b.xp
    new = xp.asarray(x.data, copy=True)
    new[raw] = rv
    mask = b.put(xp, x.data.shape, raw, True, xp.bool, b.device_of(x.data))
    meta = None
    if type(v) is Tensor:
        selected = x.data[raw].shape
        if v.data.shape != selected or v.data.dtype != new.dtype:
            meta = (None, (v.data.shape, v.data.dtype))
    res = record("setitem", new, b, (x, v), (_setitem_x, _setitem_value), saved=(mask,),
                 meta=meta, params=(raw,))
    x._become(res)


# ---------------------------------------------------------------------------------------------
# take, take_along_axis


def take(x: Any, indices: Any, /, *, axis: int | None = None) -> Tensor:
    """Elements of ``x`` at integer ``indices`` along ``axis`` (``x`` must be 1-d when ``axis`` is
    ``None``). VJP: ``ḡ`` scatter-added back to the positions read (repeats summed)."""
    x = to_tensor(x, "take")
    b = x._backend
    if type(indices) is Tensor and indices._backend is not b:  # batched indices (vmap)
        b = higher(b, indices._backend, "take")
        x = lift_to(x, b, "take")
    idx = to_tensor(indices, "take", b).data
    if axis is None:
        if x.ndim != 1:
            raise ValueError(f"take: axis is required for a {x.ndim}-d array (shape {x.shape})")
        ax = 0
    else:
        ax = normalize_axis(axis, x.ndim, "take")
    y = b.xp.take(x.data, idx, axis=ax)
    if not (x._requires_grad and grad_on()):
        return wrap(y, b)
    pos = b.xp.take(_positions(b, x.data), idx, axis=ax)
    return record("take", y, b, (x,), (_scatter_back,), saved=(pos,), params=(x.size, x.data.shape))


def take_along_axis(x: Any, indices: Any, /, *, axis: int = -1) -> Tensor:
    """Elements of ``x`` at ``indices`` (same rank as ``x``) along ``axis``.

    VJP: ``ḡ`` scatter-added back to the positions read (repeats summed).
    """
    x = to_tensor(x, "take_along_axis")
    b = x._backend
    if type(indices) is Tensor and indices._backend is not b:  # batched indices (vmap)
        b = higher(b, indices._backend, "take_along_axis")
        x = lift_to(x, b, "take_along_axis")
    idx = to_tensor(indices, "take_along_axis", b).data
    ax = normalize_axis(axis, x.ndim, "take_along_axis")
    y = b.xp.take_along_axis(x.data, idx, axis=ax)
    if not (x._requires_grad and grad_on()):
        return wrap(y, b)
    pos = b.xp.take_along_axis(_positions(b, x.data), idx, axis=ax)
    return record("take_along_axis", y, b, (x,), (_scatter_back,), saved=(pos,),
                  params=(x.size, x.data.shape))
