"""``ag.vmap``: map a function over a batch axis by running it once on batched arrays.

``vmap(f)(xs)`` runs ``f`` once. Each mapped input enters as a Tensor of the *batching backend*
(:mod:`agnograd.backends.batching`), whose data keep the batch as a hidden leading axis; every
op, VJP rule, JVP rule and transform inside ``f`` then runs unchanged, and the backend's batching
rules make each Array API call act on the whole batch at once. At the end each output leaves the
level with its batch axis moved to ``out_axes``.

The two crossings are differentiable ops, so ``vmap`` composes with every transform in either
order:

- *enter* (moving the mapped axis to the front): its VJP moves the cotangent's batch axis back;
- *leave*: its VJP gives the cotangent the batch axis again;
- *lift*: a Tensor from outside the level (a closure, a model's parameter, an unmapped input)
  meeting a batched one in an op is used as it is, unbatched; its VJP sums the cotangent over
  the batch -- the transpose of broadcasting it to every example. So ``grad`` of a ``vmap``-ed
  loss accumulates the examples' contributions into a parameter, while ``vmap(grad(f))`` gives
  the per-example gradients: ``grad`` inside ``vmap`` makes its variables inside the level.

In the picture of the engine, dL/dx_i = Σ_{j ∈ children(i)} (∂x_j/∂x_i)ᵀ dL/dx_j holds per
example; a value shared by all examples has every example's x_j among its children, hence the
sum.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from ._ops.statistics import sum as _sum
from ._tensor import Tensor
from .autograd import grad_mode, record
from .autograd.forward import defjvp
from .backends import Backend, backend_of_array, get_default_backend
from .backends import batching as _b
from .backends.batching import BatchingBackend, VmapError, VmapFallbackWarning, batching_backend
from .pytree import TreeDef, tree_flatten, tree_unflatten

__all__ = ["vmap", "VmapError", "VmapFallbackWarning", "lift", "unlift"]

_wrap = Tensor._wrap


# ---------------------------------------------------------------------------------------------
# The crossings, as differentiable ops


def _enter_back(xp: Any, g: Any, axis: int, n: int, bb: BatchingBackend) -> Any:
    """Enter's VJP: the cotangent's batch axis back to ``axis`` (broadcast if unbatched). Under
    ``create_graph`` (``g`` a Tensor) it is recorded: leave is enter's transpose."""
    if type(g) is Tensor:
        return _leave(g if g._backend is bb else lift(g, bb), axis, n, bb)
    return _physical(g, axis, n, bb)


def _enter_jvp(xp: Any, v: Any, y: Any, axis: int, n: int, bb: BatchingBackend) -> Any:
    return bb.atype(bb.bx.moveaxis(v, axis, 0))


defjvp(_enter_back, _enter_jvp)


def _leave_back(xp: Any, g: Any, axis: int, n: int, bb: BatchingBackend) -> Any:
    """Leave's VJP: the cotangent's ``axis`` becomes the batch axis again (under
    ``create_graph``, recorded: enter is leave's transpose)."""
    if type(g) is Tensor:
        return _enter(g, axis, n, bb)
    return bb.atype(bb.bx.moveaxis(g, axis, 0))


def _leave_jvp(xp: Any, v: Any, y: Any, axis: int, n: int, bb: BatchingBackend) -> Any:
    return _physical(v, axis, n, bb)


defjvp(_leave_back, _leave_jvp)


def _lift_back(xp: Any, g: Any, to: Backend, sizes: tuple[int | None, ...]) -> Any:
    """Lift's VJP: the cotangent summed over every batch axis above the Tensor's own level
    (the transpose of using one value for every example); a cotangent shared by the examples
    counts once per example."""
    d = _b.depth_of(to)
    if type(g) is Tensor:  # create_graph: the same sums, recorded
        return _lift_back_recorded(g, d, sizes)
    while isinstance(g, _b.LevelArray) and g._bb.depth > d:
        if isinstance(g, _b.BatchedArray):
            g = g._bb.bx.sum(g._v, axis=0)
            continue
        n = sizes[g._bb.depth - d - 1] if g._bb.depth - d - 1 < len(sizes) else None
        if n is None:
            raise VmapError("ag.vmap: a gradient shared by every example reached a tensor from "
                            "outside vmap after the vmap call returned, with the batch size "
                            "unknown; differentiate while the vmap call runs (grad of a "
                            "function that calls vmap)")
        g = g._v * n
    return g


def _lift_back_recorded(g: Tensor, d: int, sizes: tuple[int | None, ...]) -> Tensor:
    """:func:`_lift_back` on a Tensor cotangent, with differentiable ops (``create_graph``)."""
    while isinstance(g._backend, BatchingBackend) and g._backend.depth > d:
        lvl = g._backend
        if type(g.data) is lvl.atype:
            g = _sum(_leave(g, 0, int(g.data._v.shape[0]), lvl), axis=0)
            continue
        k = lvl.depth - d - 1
        n = sizes[k] if k < len(sizes) else None
        if n is None:
            raise VmapError("ag.vmap: a gradient shared by every example reached a tensor from "
                            "outside vmap after the vmap call returned, with the batch size "
                            "unknown; differentiate while the vmap call runs")
        g = unlift(g, lvl.base) * n
    return g


def _lift_jvp(xp: Any, v: Any, y: Any, to: Backend, sizes: tuple[int | None, ...]) -> Any:
    return v


defjvp(_lift_back, _lift_jvp)


def lift(t: Tensor, bb: Backend) -> Tensor:
    """``t`` (a Tensor of a level under ``bb``) as an unbatched Tensor of ``bb``: the same data,
    and a node whose VJP sums the cotangent over the batch (see the module docstring)."""
    if not isinstance(bb, BatchingBackend):
        raise TypeError(f"lift: '{bb.name}' is not a vmap level")
    data = _b.share(bb, t.data)  # (several levels up: shared at each)
    if t._requires_grad and grad_mode.enabled:
        # the batch sizes of the levels crossed, innermost last (known while they run)
        sizes: list[int | None] = []
        b: Backend = bb
        while isinstance(b, BatchingBackend) and b is not t._backend:
            sizes.insert(0, _b.size_of(b))
            b = b.base
        return record("vmap_lift", data, bb, (t,), (_lift_back,), params=(t._backend, tuple(sizes)))
    return _wrap(data, bb)


def _physical(data: Any, axis: int | None, n: int, bb: BatchingBackend) -> Any:
    """A value of level ``bb`` as a real array of the level below, the batch at ``axis``."""
    v = _b.physical(bb, data, n)
    return v if axis == 0 else bb.bx.moveaxis(v, 0, axis)


def _enter(t: Tensor, axis: int, n: int, bb: BatchingBackend) -> Tensor:
    data = bb.atype(t.data if axis == 0 else bb.bx.moveaxis(t.data, axis, 0))
    if t._requires_grad and grad_mode.enabled:
        return record("vmap_enter", data, bb, (t,), (_enter_back,), params=(axis, n, bb))
    return _wrap(data, bb)


def _leave(y: Tensor, axis: int, n: int, bb: BatchingBackend) -> Tensor:
    data = _physical(y.data, axis, n, bb)
    base = bb.base
    if y._requires_grad and grad_mode.enabled:
        return record("vmap_leave", data, base, (y,), (_leave_back,), params=(axis, n, bb))
    return _wrap(data, base)


# ---------------------------------------------------------------------------------------------
# in_axes / out_axes


def _prefix_axes(prefix: Any, tree: TreeDef, what: str, path: str) -> list[Any]:
    """One axis (or ``None``) per leaf of ``tree``, from ``prefix``: a pytree prefix of it whose
    leaves are ints or ``None`` (JAX's rule)."""
    if prefix is None or isinstance(prefix, int):
        if isinstance(prefix, bool):
            raise TypeError(f"vmap: {what} must hold ints or None, not a bool (at {path or 'top'})")
        return [prefix] * tree.num_leaves
    if tree.kind is None:
        raise ValueError(f"vmap: {what} has a container ({type(prefix).__name__}) at "
                         f"{path or 'top'} where the argument is a single value; give an int or "
                         "None there")
    kind = type(prefix)
    same = kind is tree.kind or (kind in (tuple, list) and tree.kind in (tuple, list)) or (
        isinstance(prefix, dict) and tree.kind is not None and issubclass(tree.kind, dict))
    if not same:
        raise ValueError(f"vmap: {what} has a {kind.__name__} at {path or 'top'} where the "
                         f"argument has a {tree.kind.__name__}; {what} must be a pytree prefix "
                         "of the arguments")
    if isinstance(prefix, dict):
        keys = tree.meta[1] if tree.kind.__name__ == "defaultdict" else tree.meta
        if set(prefix) != set(keys):
            raise ValueError(f"vmap: {what} at {path or 'top'} has keys {sorted(map(str, prefix))} "
                             f"but the argument has {sorted(map(str, keys))}")
        children = [prefix[k] for k in keys]
    else:
        children = list(prefix)
        if len(children) != len(tree.children):
            raise ValueError(f"vmap: {what} at {path or 'top'} has {len(children)} entries but the "
                             f"argument has {len(tree.children)}")
    out: list[Any] = []
    for i, (p, c) in enumerate(zip(children, tree.children)):
        out.extend(_prefix_axes(p, c, what, f"{path}[{i}]"))
    return out


def _norm_axis(axis: int, ndim: int, what: str, where: str) -> int:
    if not -ndim <= axis < ndim:
        raise ValueError(f"vmap: {what}={axis} is out of range for {where} of {ndim} dimension(s)"
                         + ("; a 0-d value cannot be mapped: give None for it" if ndim == 0 else ""))
    return axis % ndim


# ---------------------------------------------------------------------------------------------
# The transform


def vmap(f: Callable[..., Any], in_axes: Any = 0, out_axes: Any = 0, *,
         axis_size: int | None = None) -> Callable[..., Any]:
    """``f`` mapped over a batch axis of its inputs, as ``jax.vmap``: one call of ``f`` on
    batched Tensors, not a loop.

    Args:
        f: a function of Tensors (and pytrees of them) returning a Tensor or a pytree of them.
        in_axes: per positional argument, the axis to map over, or ``None`` for an argument
            shared by every example: an int, ``None``, or a pytree prefix of the arguments (a
            tuple with one entry per argument, dicts by key, ...). Negative axes count from the
            end. Keyword arguments are mapped over axis 0.
        out_axes: where each output gets the batch axis (same forms, a prefix of the output);
            ``None`` for an output that does not depend on the batch.
        axis_size: the batch size when no input is mapped.

    Shapes: an input of shape ``s`` with ``s[in_axis] = n`` is seen by ``f`` without that axis;
    an output of per-example shape ``r`` comes back with ``n`` inserted at ``out_axes``.
    Raw arrays and Python scalars are accepted like Tensors; when no input is a Tensor the
    outputs come back as raw arrays of the inputs' backend.

    Composes with ``grad``, ``vjp``, ``jvp``, ``jacfwd``, ``jacrev``, ``hessian``, ``checkpoint``,
    ``jit`` and ``vmap`` itself, in either order. Reading a batched value on the host (``float``,
    ``bool``, ``if``) raises :class:`VmapError`. Random ops draw the same numbers for every
    example (one generator state, as JAX's one key): draw a batch outside and map over it for
    per-example noise.
    """
    if not callable(f):
        raise TypeError(f"vmap: expected a function, not {type(f).__name__}")

    @functools.wraps(f)
    def batched(*args: Any, **kwargs: Any) -> Any:
        return _call(f, in_axes, out_axes, axis_size, args, kwargs)

    return batched


def _call(f: Callable[..., Any], in_axes: Any, out_axes: Any, axis_size: int | None,
          args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if isinstance(in_axes, list):
        in_axes = tuple(in_axes)
    leaves, spec = tree_flatten(args)
    if isinstance(in_axes, tuple) and len(in_axes) != len(args):
        raise ValueError(f"vmap: in_axes has {len(in_axes)} entries but the function got "
                         f"{len(args)} positional argument(s); give one per argument (or one int)")
    axes = _prefix_axes(in_axes, spec, "in_axes", "")
    kw_leaves, kw_spec = tree_flatten(kwargs)
    all_leaves = leaves + kw_leaves
    all_axes = axes + [0] * len(kw_leaves)

    # the batch size, and the level below the new one
    n = axis_size
    sizes = []
    base: Backend | None = None
    any_tensor = False
    for x, a in zip(all_leaves, all_axes):
        tx = type(x) is Tensor
        any_tensor = any_tensor or tx
        if a is None:
            continue
        b = x._backend if tx else backend_of_array(x)
        if b is None:
            raise ValueError(f"vmap: in_axes asks to map over axis {a} of a "
                             f"{type(x).__name__}, which has no axes; give None for it")
        shape = tuple(x.shape)
        ax = _norm_axis(a, len(shape), "in_axes", f"an argument of shape {shape}")
        sizes.append((shape[ax], shape))
        if base is None or _b.below(base, b):
            base = b
    if sizes:
        n = sizes[0][0]
        if any(s != n for s, _ in sizes) or (axis_size is not None and axis_size != n):
            found = ", ".join(f"{s} (shape {sh})" for s, sh in sizes)
            raise ValueError(f"vmap: the mapped axes have different sizes: {found}"
                             + (f" and axis_size={axis_size}" if axis_size is not None else "")
                             + "; every mapped input needs the same batch size")
    elif n is None:
        raise ValueError("vmap: no input is mapped (every in_axes is None); pass axis_size=n "
                         "to map n times")
    inner = _b.innermost()
    if base is None:
        base = inner if inner is not None else get_default_backend()
    elif inner is not None and (inner is base or _b.below(base, inner)):
        base = inner
    bb = batching_backend(base)

    new_leaves = []
    for x, a in zip(all_leaves, all_axes):
        if a is None:
            new_leaves.append(x)
            continue
        t = x if type(x) is Tensor else _wrap(base.fix(x), backend_of_array(x))  # type: ignore[arg-type]
        if t._backend is not base:
            if not _b.below(t._backend, base):
                raise TypeError(f"vmap: an input is on backend '{t._backend.name}' but the batch "
                                f"runs on '{base.name}'; move it with ag.to_backend")
            t = lift(t, base)
        new_leaves.append(_enter(t, a % t.ndim, n, bb))
    new_args = tree_unflatten(spec, new_leaves[:len(leaves)])
    new_kwargs = tree_unflatten(kw_spec, new_leaves[len(leaves):])

    _b.push(bb, n)
    try:
        out = f(*new_args, **new_kwargs)
    finally:
        _b.pop()

    out_leaves, out_spec = tree_flatten(out)
    if isinstance(out_axes, list):
        out_axes = tuple(out_axes)
    oaxes = _prefix_axes(out_axes, out_spec, "out_axes", "")
    raw = not any_tensor
    results = []
    for y, a in zip(out_leaves, oaxes):
        results.append(_output(y, a, n, bb, raw))
    return tree_unflatten(out_spec, results)


def _output(y: Any, a: int | None, n: int, bb: BatchingBackend, raw: bool) -> Any:
    """One output leaf with the batch axis at ``a``."""
    if type(y) is not Tensor:
        b = backend_of_array(y)
        if b is None:  # a Python value: the same for every example
            if a is None:
                return y
            if not isinstance(y, (bool, int, float, complex)):
                raise TypeError(f"vmap: the function returned a {type(y).__name__}; return "
                                "Tensors, arrays or numbers (in pytrees)")
            y = _wrap(bb.base.asarray(y), bb.base)
        else:
            y = _wrap(y, b)
    if a is None:
        if isinstance(y.data, _b.BatchedArray) and y.data._bb is bb:
            raise VmapError("vmap: out_axes=None for an output that depends on the mapped inputs "
                            f"(per-example shape {y.shape}); give it an axis")
        if y._backend is bb:  # an unbatched value of this level: a value of the level below
            out = unlift(y, bb.base)
        else:
            out = y
    else:
        if y._backend is not bb:
            if not _b.below(y._backend, bb):
                raise TypeError(f"vmap: an output is on backend '{y._backend.name}', not "
                                f"'{bb.base.name}'")
            y = lift(y, bb)
        axis = _norm_axis(a, y.ndim + 1, "out_axes", "an output (with the batch axis)")
        out = _leave(y, axis, n, bb)
    if raw and not out._requires_grad:
        return out.data
    return out


def _unlift_back(xp: Any, g: Any) -> Any:
    return g


def _unlift_jvp(xp: Any, v: Any, y: Any) -> Any:
    return v


defjvp(_unlift_back, _unlift_jvp)




def unlift(y: Tensor, to: Backend) -> Tensor:
    """An unbatched Tensor of a level as a Tensor of the level ``to`` under it (its data are
    already a value there): the identity, recorded."""
    data = y.data
    d = _b.depth_of(to)
    while isinstance(data, _b.SharedArray) and data._bb.depth > d:
        data = data._v
    if y._requires_grad and grad_mode.enabled:
        return record("vmap_unlift", data, to, (y,), (_unlift_back,))
    return _wrap(data, to)
