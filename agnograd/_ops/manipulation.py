"""Manipulation functions of the Array API standard, each with its VJP rule beside it.

These ops only move elements, so every rule moves the cotangent back: reshape it, permute it
with the inverse permutation, slice out an input's part, or sum the copies that broadcasting,
``repeat`` and ``tile`` made.

The ones the standard lets a backend answer with a view of the input (``reshape``,
``permute_dims``, ``broadcast_to``, ``expand_dims``, ``squeeze``, ``flip``, ``moveaxis``,
``unstack``) give their result the input's version counter (:func:`share_version`), graph or
not, so an in-place change through any alias invalidates every graph that saved another.
"""

from __future__ import annotations

import functools
from typing import Any

from ..autograd.forward import JVP_OP, defjvp
from ..backends import Backend, get_backend, transfer
from ..capture import _state as _capture
from ._common import (
    Tensor,
    TensorLike,
    grad_on,
    normalize_axes,
    normalize_axis,
    operands,
    record,
    record_multi,
    to_tensor,
    view_of,
    wrap,
)
from .indexing import scatter_add

__all__ = [
    "broadcast_arrays",
    "broadcast_shapes",
    "broadcast_to",
    "concat",
    "expand_dims",
    "flip",
    "moveaxis",
    "permute_dims",
    "repeat",
    "reshape",
    "roll",
    "squeeze",
    "stack",
    "tile",
    "unstack",
    "to_backend",
]


def _needs(*ts: Any) -> bool:
    return grad_on() and any(type(t) is Tensor and t._requires_grad for t in ts)


def _reshape_back(xp: Any, g: Any, shape: tuple[int, ...]) -> Any:
    return xp.reshape(g, shape)


# JVP rules (tangent v, the output y, then the VJP rule's arguments): a linear op's JVP is the
# op itself applied to the tangent.
defjvp(_reshape_back, lambda xp, v, y, shape: xp.reshape(v, y.shape))


def reshape(x: Any, /, shape: tuple[int, ...], *, copy: bool | None = None) -> Tensor:
    """``x`` with a new shape (one dimension may be -1). VJP: ``x̄ = reshape(ḡ, x.shape)``."""
    x = to_tensor(x, "reshape")
    b = x._backend
    kw = {} if copy is None else {"copy": copy}
    try:
        y = b.xp.reshape(x.data, tuple(shape), **kw)
    except Exception as exc:
        raise ValueError(f"reshape: cannot reshape an array of shape {x.shape} into {tuple(shape)}: "
                         f"{exc}") from exc
    if _needs(x):
        return view_of(x, record("reshape", y, b, (x,), (_reshape_back,), params=(x.data.shape,)),
                       reshape, (shape,))
    return view_of(x, wrap(y, b), reshape, (shape,))


def _permute_back(xp: Any, g: Any, inverse: tuple[int, ...]) -> Any:
    return xp.permute_dims(g, inverse)


def _permute_jvp(xp: Any, v: Any, y: Any, inverse: tuple[int, ...]) -> Any:
    axes = [0] * len(inverse)
    for i, a in enumerate(inverse):
        axes[a] = i
    return xp.permute_dims(v, tuple(axes))


defjvp(_permute_back, _permute_jvp)


def permute_dims(x: Any, /, axes: tuple[int, ...]) -> Tensor:
    """Permute the axes of ``x``. VJP: ``x̄ = permute_dims(ḡ, inverse(axes))``."""
    x = to_tensor(x, "permute_dims")
    b = x._backend
    axes = tuple(normalize_axis(a, x.ndim, "permute_dims") for a in axes)
    if sorted(axes) != list(range(x.ndim)):
        raise ValueError(f"permute_dims: {axes} is not a permutation of the {x.ndim} axes")
    y = b.xp.permute_dims(x.data, axes)
    if _needs(x):
        inverse = tuple(sorted(range(len(axes)), key=axes.__getitem__))
        return view_of(x, record("permute_dims", y, b, (x,), (_permute_back,), params=(inverse,)),
                       permute_dims, (axes,))
    return view_of(x, wrap(y, b), permute_dims, (axes,))


def transpose_2d(x: Tensor) -> Tensor:
    """``x.T``: the transpose of a 2-d tensor (the standard defines ``.T`` for 2-d only)."""
    if x.ndim != 2:
        raise ValueError(f".T needs a 2-d tensor, not {x.ndim}-d (shape {x.shape}); use .mT "
                         "for stacks of matrices or ag.permute_dims for other orders")
    return permute_dims(x, (1, 0))


def _identity(xp: Any, g: Any) -> Any:
    return g


defjvp(_identity, lambda xp, v, y: v)  # (broadcast_to: the engine broadcasts v to y's shape)


def broadcast_to(x: Any, /, shape: tuple[int, ...]) -> Tensor:
    """Broadcast ``x`` to ``shape``. VJP: ``ḡ`` summed over the broadcast axes (by the engine)."""
    x = to_tensor(x, "broadcast_to")
    b = x._backend
    try:
        y = b.xp.broadcast_to(x.data, tuple(shape))
    except Exception as exc:
        raise ValueError(f"broadcast_to: cannot broadcast shape {x.shape} to {tuple(shape)}") from exc
    if _needs(x):
        return view_of(x, record("broadcast_to", y, b, (x,), (_identity,),
                                 meta=((x.data.shape, x.data.dtype),)), broadcast_to, (shape,))
    return view_of(x, wrap(y, b), broadcast_to, (shape,))


def broadcast_arrays(*arrays: Any) -> tuple[Tensor, ...]:
    """Broadcast all arguments to their common shape (a tuple, as the 2025.12 standard says);
    each result is a :func:`broadcast_to`."""
    b, ts = operands(arrays, "broadcast_arrays")
    shape = tuple(b.xp.broadcast_arrays(*[t.data for t in ts])[0].shape) if ts else ()
    return tuple(broadcast_to(t, shape) for t in ts)


def broadcast_shapes(*shapes: tuple[int | None, ...]) -> tuple[int | None, ...]:
    """The shape that arrays of ``shapes`` broadcast to (``()`` for no shapes); raises
    ``ValueError`` if they do not broadcast. A ``None`` (unknown) size stays unknown unless
    another shape fixes that axis to a size other than 1. Pure shape arithmetic: no arrays,
    nothing to differentiate."""
    ndim = max((len(s) for s in shapes), default=0)
    out: list[int | None] = []
    for k in range(ndim, 0, -1):  # from the leading axis of the result
        size: int | None = 1
        for s in shapes:
            d = s[-k] if k <= len(s) else 1
            if d is None:
                if size == 1:
                    size = None
            elif d != 1:
                if size is not None and size != 1 and size != d:
                    listed = ", ".join(str(tuple(x)) for x in shapes)
                    raise ValueError(f"broadcast_shapes: shapes {listed} do not broadcast (sizes "
                                     f"{size} and {d} on axis {-k}); each axis needs equal sizes "
                                     "or size 1")
                size = d
        out.append(size)
    return tuple(out)


def _concat_part(xp: Any, g: Any, axis: int | None, start: int, stop: int,
                 shape: tuple[int, ...]) -> Any:
    if axis is None:
        return xp.reshape(g[start:stop], shape)
    key = (slice(None),) * axis + (slice(start, stop), ...)
    return g[key]


def concat(arrays: Any, /, *, axis: int | None = 0) -> Tensor:
    """Join arrays along ``axis`` (flattened first when ``axis=None``).

    VJP: each input gets its own slice of ``ḡ`` along ``axis``.
    """
    b, ts = operands(arrays, "concat")
    xp = b.xp
    if axis is not None:
        axis = normalize_axis(axis, ts[0].ndim, "concat")
    try:
        y = xp.concat([t.data for t in ts], axis=axis)
    except Exception as exc:
        shapes = ", ".join(str(t.shape) for t in ts)
        raise ValueError(f"concat: cannot join shapes {shapes} along axis {axis}: {exc}") from exc
    if not _needs(*ts):
        return wrap(y, b)
    rules = []
    start = 0
    for t in ts:
        n: Any = t.size if axis is None else t.data.shape[axis]
        rules.append(functools.partial(_concat_part, axis=axis, start=start, stop=start + n,
                                       shape=t.data.shape))
        start += n
    meta = tuple((t.data.shape, t.data.dtype) if t.data.dtype != y.dtype else None for t in ts)
    return record("concat", y, b, tuple(ts), tuple(rules),
                  meta=meta if any(m is not None for m in meta) else None)


def _stack_part(xp: Any, g: Any, axis: int, i: int) -> Any:
    return g[(slice(None),) * axis + (i, ...)]


def _tangents_or_zeros(xp: Any, vs: list[Any], inputs: tuple[Any, ...], y: Any) -> list[Any]:
    return [v if v is not None else xp.zeros(t.data.shape, dtype=y.dtype,
                                             device=t._backend.device_of(t.data))
            for v, t in zip(vs, inputs)]


# JVP rules of the whole op (forward.JVP_OP): the op applied to the tangents (zeros for inputs
# that carry none); the per-input rules are partials.
JVP_OP["concat"] = lambda xp, vs, y, inputs, vjps: xp.concat(
    _tangents_or_zeros(xp, vs, inputs, y), axis=vjps[0].keywords["axis"])
JVP_OP["stack"] = lambda xp, vs, y, inputs, vjps: xp.stack(
    _tangents_or_zeros(xp, vs, inputs, y), axis=vjps[0].keywords["axis"])


def stack(arrays: Any, /, *, axis: int = 0) -> Tensor:
    """Join same-shaped arrays along a new ``axis``. VJP: input i gets ``ḡ`` at index i of ``axis``."""
    b, ts = operands(arrays, "stack")
    axis = normalize_axis(axis, ts[0].ndim + 1, "stack")
    try:
        y = b.xp.stack([t.data for t in ts], axis=axis)
    except Exception as exc:
        shapes = ", ".join(str(t.shape) for t in ts)
        raise ValueError(f"stack: cannot stack shapes {shapes}: {exc}") from exc
    if not _needs(*ts):
        return wrap(y, b)
    rules = tuple(functools.partial(_stack_part, axis=axis, i=i) for i in range(len(ts)))
    meta = tuple((t.data.shape, t.data.dtype) if t.data.dtype != y.dtype else None for t in ts)
    return record("stack", y, b, tuple(ts), rules,
                  meta=meta if any(m is not None for m in meta) else None)


def _unstack_back(xp: Any, gs: tuple[Any, ...], axis: int) -> Any:
    return xp.stack(list(gs), axis=axis)


def unstack(x: Any, /, *, axis: int = 0) -> tuple[Tensor, ...]:
    """Split ``x`` along ``axis`` into a tuple of arrays. VJP: ``x̄ = stack(ḡ_0, ..., axis)``."""
    x = to_tensor(x, "unstack")
    b = x._backend
    axis = normalize_axis(axis, x.ndim, "unstack")
    ys = tuple(b.xp.unstack(x.data, axis=axis))
    if _needs(x):
        outs = record_multi("unstack", ys, b, (x,), (_unstack_back,), params=(axis,))
    else:
        outs = tuple(wrap(y, b) for y in ys)
    for i, t in enumerate(outs):
        view_of(x, t, _unstack_pick, (axis, i))
    return outs


def _unstack_pick(x: Tensor, axis: int, i: int) -> Tensor:
    """The view function of ``unstack(x, axis=axis)[i]``."""
    return unstack(x, axis=axis)[i]


def expand_dims(x: Any, /, axis: int | tuple[int, ...] = 0) -> Tensor:
    """Insert a size-1 axis at ``axis``, or at each position of a tuple of them (positions in
    the result, which has ``x.ndim + len(axis)`` axes; 2025.12). VJP: ``x̄ = reshape(ḡ,
    x.shape)``."""
    x = to_tensor(x, "expand_dims")
    b = x._backend
    if isinstance(axis, int):
        axis = normalize_axis(axis, x.ndim + 1, "expand_dims")
        y = b.xp.expand_dims(x.data, axis=axis)
    else:
        ndim = x.ndim + len(axis)
        axes = normalize_axes(tuple(axis), ndim, "expand_dims")
        rest = iter(x.data.shape)
        y = b.xp.reshape(x.data, tuple(1 if k in axes else next(rest) for k in range(ndim)))
    if _needs(x):
        return view_of(x, record("expand_dims", y, b, (x,), (_reshape_back,),
                                  params=(x.data.shape,)), expand_dims, (axis,))
    return view_of(x, wrap(y, b), expand_dims, (axis,))


def squeeze(x: Any, /, axis: int | tuple[int, ...]) -> Tensor:
    """Remove size-1 axes ``axis``. VJP: ``x̄ = reshape(ḡ, x.shape)``."""
    x = to_tensor(x, "squeeze")
    b = x._backend
    axes = normalize_axes(axis, x.ndim, "squeeze")
    for a in axes:
        if x.data.shape[a] != 1:
            raise ValueError(f"squeeze: axis {a} of shape {x.shape} has size {x.data.shape[a]}, not 1")
    y = b.xp.squeeze(x.data, axis=axes)
    if _needs(x):
        return view_of(x, record("squeeze", y, b, (x,), (_reshape_back,), params=(x.data.shape,)),
                       squeeze, (axis,))
    return view_of(x, wrap(y, b), squeeze, (axis,))


def _flip_back(xp: Any, g: Any, axis: Any) -> Any:
    return xp.flip(g, axis=axis)


defjvp(_flip_back, lambda xp, v, y, axis: xp.flip(v, axis=axis))


def flip(x: Any, /, *, axis: int | tuple[int, ...] | None = None) -> Tensor:
    """Reverse the order of elements along ``axis`` (all axes by default). VJP: flip ``ḡ`` back."""
    x = to_tensor(x, "flip")
    b = x._backend
    y = b.xp.flip(x.data, axis=axis)
    if _needs(x):
        return view_of(x, record("flip", y, b, (x,), (_flip_back,), params=(axis,)), _flip, (axis,))
    return view_of(x, wrap(y, b), _flip, (axis,))


def _flip(x: Tensor, axis: Any) -> Tensor:
    return flip(x, axis=axis)


def _roll_back(xp: Any, g: Any, shift: Any, axis: Any) -> Any:
    return xp.roll(g, shift=shift, axis=axis)


defjvp(_roll_back, lambda xp, v, y, back, axis: xp.roll(
    v, shift=tuple(-s for s in back) if isinstance(back, tuple) else -back, axis=axis))


def roll(x: Any, /, shift: int | tuple[int, ...], *, axis: int | tuple[int, ...] | None = None
         ) -> Tensor:
    """Roll elements along ``axis`` (the flattened array when ``None``). VJP: roll ``ḡ`` by ``-shift``."""
    x = to_tensor(x, "roll")
    b = x._backend
    y = b.xp.roll(x.data, shift=shift, axis=axis)
    if _needs(x):
        back = tuple(-s for s in shift) if isinstance(shift, tuple) else -shift
        return record("roll", y, b, (x,), (_roll_back,), params=(back, axis))
    return wrap(y, b)


def _moveaxis_back(xp: Any, g: Any, source: Any, destination: Any) -> Any:
    return xp.moveaxis(g, destination, source)


defjvp(_moveaxis_back, lambda xp, v, y, source, destination: xp.moveaxis(v, source, destination))


def moveaxis(x: Any, source: int | tuple[int, ...], destination: int | tuple[int, ...], /
             ) -> Tensor:
    """Move axes ``source`` to ``destination``. VJP: move them back."""
    x = to_tensor(x, "moveaxis")
    b = x._backend
    y = b.xp.moveaxis(x.data, source, destination)
    if _needs(x):
        return view_of(x, record("moveaxis", y, b, (x,), (_moveaxis_back,),
                                 params=(source, destination)), moveaxis, (source, destination))
    return view_of(x, wrap(y, b), moveaxis, (source, destination))


def _repeat_int_back(xp: Any, g: Any, axis: int, n: int, repeats: int, shape: tuple[int, ...]
                     ) -> Any:
    # Output index n*r + k along axis came from input n: fold (n, repeats) apart, sum the copies.
    split = g.shape[:axis] + (n, repeats) + g.shape[axis + 1:]
    return xp.reshape(xp.sum(xp.reshape(g, split), axis=axis + 1), shape)


def _repeat_array_back(xp: Any, g: Any, pos: Any, size: int, shape: tuple[int, ...]) -> Any:
    return xp.reshape(scatter_add(xp, size, pos, xp.reshape(g, (-1,))), shape)


def repeat(x: Any, repeats: int | Any, /, *, axis: int | None = None) -> Tensor:
    """Repeat each element ``repeats`` times along ``axis`` (the flattened array when ``None``).

    VJP: the copies of each element are summed (reshape-and-sum for an integer ``repeats``, a
    scatter-add of the element positions for an array of repeat counts).
    """
    x = to_tensor(x, "repeat")
    b = x._backend
    xp = b.xp
    r = repeats.data if type(repeats) is Tensor else repeats
    y = xp.repeat(x.data, r, axis=axis)
    if not _needs(x):
        return wrap(y, b)
    src = x.data if axis is not None else xp.reshape(x.data, (-1,))
    ax = 0 if axis is None else normalize_axis(axis, x.ndim, "repeat")
    if isinstance(r, int):
        return record("repeat", y, b, (x,), (_repeat_int_back,),
                      params=(ax, src.shape[ax], r, x.data.shape))
    pos = xp.repeat(xp.reshape(xp.arange(x.size, device=b.device_of(x.data)), src.shape), r,
                    axis=ax)
    return record("repeat", y, b, (x,), (_repeat_array_back,), saved=(xp.reshape(pos, (-1,)),),
                  params=(x.size, x.data.shape))


def _tile_back(xp: Any, g: Any, padded: tuple[int, ...], reps: tuple[int, ...],
               shape: tuple[int, ...]) -> Any:
    split: list[int] = []
    for r, s in zip(reps, padded):
        split += [r, s]
    g = xp.sum(xp.reshape(g, tuple(split)), axis=tuple(range(0, 2 * len(reps), 2)))
    return xp.reshape(g, shape)


def tile(x: Any, repetitions: tuple[int, ...], /) -> Tensor:
    """Repeat the whole of ``x`` ``repetitions[i]`` times along each axis.

    VJP: ``ḡ`` is split into the tiles and they are summed.
    """
    x = to_tensor(x, "tile")
    b = x._backend
    reps = tuple(repetitions)
    y = b.xp.tile(x.data, reps)
    if not _needs(x):
        return wrap(y, b)
    n = max(len(reps), x.ndim)
    reps_p = (1,) * (n - len(reps)) + reps
    shape_p = (1,) * (n - x.ndim) + tuple(x.data.shape)
    return record("tile", y, b, (x,), (_tile_back,), params=(shape_p, reps_p, x.data.shape))


def _to_device_back(xp: Any, g: Any, backend: Any, device: Any) -> Any:
    return g.to_device(device) if type(g) is Tensor else backend.to_device(g, device)


def to_device(x: Tensor, device: Any, /, *, stream: Any = None) -> Tensor:
    """``x`` copied to ``device`` of the same backend. VJP: ``ḡ`` copied back to ``x``'s device."""
    b = x._backend
    here = b.device_of(x.data)
    if device == here:
        return x
    y = b.to_device(x.data, device)
    if _needs(x):
        return record("to_device", y, b, (x,), (_to_device_back,), params=(b, here))
    return wrap(y, b)


def _to_backend_back(xp: Any, g: Any, source: Backend) -> Any:
    if type(g) is Tensor:
        return to_backend(g, source)
    return transfer(g, source)


def to_backend(x: TensorLike, backend: str | Backend, /) -> Tensor:
    """``x`` moved to another backend (``"numpy"``, ``"cupy"``, ...), through DLPack where it can
    cross, else through a host copy. Differentiable: VJP ``x̄ = ḡ`` moved back to ``x``'s backend,
    so a graph may start on one backend and continue on another."""
    x = to_tensor(x, "to_backend")
    target = get_backend(backend)
    if target is x._backend:
        return x
    _capture.refuse(f"ag.to_backend(x, {target.name!r})", _capture.WHY_TRANSFER)
    y = transfer(x.data, target)
    if _needs(x):
        return record("to_backend", y, target, (x,), (_to_backend_back,), params=(x._backend,))
    return wrap(y, target)
