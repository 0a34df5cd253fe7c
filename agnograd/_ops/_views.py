"""In-place writes through views, with PyTorch's semantics on every backend.

A view op (basic indexing, reshape, permute_dims, ``.T``/``.mT``, expand_dims, squeeze, flip,
diagonal, unstack, moveaxis, broadcast_to, ``detach()``) registers its result with the root
tensor whose storage it shows (:func:`agnograd._tensor.view_of`): the result remembers the
chain of view functions from the root's data to its own. Ops never look at that; only an
in-place write (``x += y``, ``x[k] = v``, ...) on a tensor whose storage has live views does,
and then goes through :func:`write`:

- the new value of the written tensor ``t`` is computed out of place (recorded when a graph
  is: grad mode on and ``t`` or the operand requires grad);
- written through a view, it is scattered into the root's old value (PyTorch's CopySlices):
  ``root' = where(covered, take(new_view_values, idx), root)``, where ``covered`` and ``idx``
  come from replaying the view chain on the root's element positions, so the scatter is made
  of standard functions only, differentiable to any order (the root's cotangent is ``ḡ`` with
  the view region zeroed, the view values' is the view chain applied to ``ḡ``);
- recorded, the root takes that result as its data and graph position (``_become``: its node
  moves there); not recorded, the new values are copied into the root's storage where the
  backend allows it (NumPy: every alias keeps seeing one memory), else the root is rebound;
- the shared version counter counts up, so every graph that saved the old value of any
  alias refuses at backward, as PyTorch's do;
- every live view is regenerated from the root by replaying its chain: its data always (a
  backend that cannot alias, Dask or a copying reshape, sees the write too), its node when a
  graph was recorded (later uses differentiate through the write).
"""

from __future__ import annotations

import weakref
from typing import Any

from .._tensor import Tensor, Views, plain_alias
from ..autograd import grad_mode
from . import data_types, elementwise, indexing, manipulation
from ._common import PY_SCALARS, aliased_inplace_error, wrap

__all__ = ["aliases", "write", "scatter_into", "setitem_functional", "setitem_through"]


def aliases(t: Tensor) -> tuple[Tensor, tuple[Any, ...], Views, bool] | None:
    """``(root, chain, registry, grad)`` when a write to ``t`` must reach other tensors (``t``
    is a registered view, or the root of live views), else ``None`` (the plain path)."""
    cell = t._version
    if cell is None or len(cell) < 3 or cell[2] is None:
        return None
    reg: Views = cell[2]
    if reg.root() is t:
        if not reg.refs or not reg.live():
            return None
        return t, (), reg, True
    try:
        root, chain, grad = t._view
    except AttributeError:  # a plain alias (from_dlpack, real) of a root with views
        return None
    return root, chain, reg, grad


def _apply(x: Tensor, chain: tuple[Any, ...]) -> Tensor:
    for fn, args in chain:
        x = fn(x, *args)
    return x


def _scatter_index(root: Tensor, chain: tuple[Any, ...]) -> tuple[Any, Any, int]:
    """For each element of ``root``: whether the view ``chain`` shows it (``covered``) and
    which flat element of the view it is (``idx``; the last one where several are, as NumPy's
    setitem does), computed from the element positions with standard functions."""
    b = root._backend
    xp = b.xp
    shape = tuple(root.data.shape)
    n = 1
    for s in shape:
        n *= s
    dev = b.device_of(root.data)
    pos = wrap(xp.reshape(xp.arange(n, dtype=xp.int64, device=dev), shape), b)
    prev = grad_mode.enabled
    grad_mode.enabled = False
    try:
        p = _apply(pos, chain).data
    finally:
        grad_mode.enabled = prev
    pf = xp.reshape(p, (-1,))
    m = int(pf.shape[0])
    if m == 0:
        return None, None, 0
    order = xp.argsort(pf, stable=True)
    sp = xp.take(pf, order)
    q = xp.arange(n, dtype=sp.dtype, device=dev)
    j = xp.searchsorted(sp, q, side="right") - 1
    jc = xp.clip(j, 0, m - 1)
    covered = (j >= 0) & (xp.take(sp, jc) == q)
    idx = xp.take(order, jc)
    return xp.reshape(covered, shape), idx, m


def scatter_into(root: Tensor, chain: tuple[Any, ...], new: Tensor) -> Tensor:
    """``root`` with the elements the view ``chain`` shows replaced by ``new`` (the view's
    shape): out of place, recorded when grad mode is on and an input requires grad.

    VJP: ``root̄ = where(covered, 0, ḡ)``; ``new̄ = chain(ḡ)`` (through ``take``)."""
    covered, idx, m = _scatter_index(root, chain)
    if m == 0:
        return root
    flat = manipulation.reshape(new, (-1,))
    taken = manipulation.reshape(indexing.take(flat, wrap(idx, root._backend)), root.shape)
    return elementwise.where(wrap(covered, root._backend), taken, root)


def setitem_functional(t: Tensor, raw: Any, value: Any) -> Tensor:
    """``t`` with ``t[raw] = value`` applied, out of place (recorded when a graph is).
    Basic and boolean-mask keys go through the ``setitem`` op; integer-array keys scatter
    into the elements they select (:func:`scatter_into`)."""
    if indexing._assignable(raw):
        if grad_mode.enabled:
            tmp = _fresh(t)
        else:  # setitem writes in place when nothing is recorded: into a copy here
            tmp = wrap(t._backend.copy(t.data), t._backend)
        indexing.setitem(tmp, raw, value)
        return tmp
    b = t._backend
    sel = tuple(t.data[raw].shape)
    if isinstance(value, PY_SCALARS):
        v = wrap(b.xp.full(sel, value, dtype=t.data.dtype, device=b.device_of(t.data)), b)
    else:
        v = value if type(value) is Tensor else wrap(value, b)
        if v.data.dtype != t.data.dtype:
            v = data_types.astype(v, t.data.dtype)
        if tuple(v.data.shape) != sel:
            v = manipulation.broadcast_to(v, sel)
    return scatter_into(t, ((indexing.getitem, (raw,)),), v)


def _fresh(t: Tensor) -> Tensor:
    """``t``'s data and graph position under a new version counter: the out-of-place
    computation of its new value saves the old value, which is never overwritten (a recorded
    write rebinds), so the shared counter's bump must not condemn that save."""
    f = wrap(t.data, t._backend, t._node, t._index)
    f._requires_grad = t._requires_grad
    d = getattr(t, "_tangent", None)
    if d is not None:  # forward mode: the new value's tangent is computed from t's
        f._tangent = d
    return f


def _tangent_only(x: Any) -> bool:
    """Whether ``x`` needs no reverse-mode graph: not a Tensor that requires grad, or one that
    requires it only to carry a forward-mode tangent."""
    if type(x) is not Tensor or not x._requires_grad:
        return True
    d = getattr(x, "_tangent", None)
    return d is not None and not d.rev and x._node is None


def write(t: Tensor, state: tuple[Tensor, tuple[Any, ...], Views, bool], new_value: Any,
          operand_grad: bool, what: str, form: str, operand: Any = None) -> None:
    """Write ``new_value(t')`` -- ``t``'s new value, computed out of place from ``t'``, a
    fresh handle on ``t`` -- into ``t`` and every alias of its storage (see the module
    docstring). ``operand_grad``: whether the written operand (``operand``) requires grad.

    Forward mode (``ag.jvp``): the new values' tangents follow the write like a graph does
    (the out-of-place value carries them, and the root and its views take them), as PyTorch's
    forward AD; a ``detach()`` view takes the values only, its base keeping its tangent."""
    root, chain, reg, grad = state
    for fn, _ in chain:
        if fn is manipulation.broadcast_to:
            raise RuntimeError(
                f"{what}: the tensor (shape {t.shape}) is a broadcast view (broadcast_to / "
                "broadcast_arrays): several of its elements are one element of the base, so a "
                "write is ambiguous (PyTorch refuses it too; NumPy's broadcast views are "
                "read-only). Write to a copy: v = ag.asarray(v, copy=True)")
    tracked = grad_mode.enabled and (t._requires_grad or operand_grad)
    if tracked and not grad and _tangent_only(t) and _tangent_only(operand):
        tracked = False  # forward mode only: as torch.func.jvp, a detached view drops tangents
    if tracked:
        if not grad:
            raise RuntimeError(
                f"{what}: the tensor (shape {t.shape}) is a view made by detach() or under "
                "no_grad() of a tensor that requires grad, and the write would record a graph: "
                "the view has no graph to record it in (PyTorch refuses this too). Write to the "
                "base tensor instead, or take the view with grad mode on.")
        if root._node is None and root._requires_grad and getattr(root, "_tangent", None) is None:
            which = "a view of a leaf tensor" if root is not t else "a leaf tensor"
            raise RuntimeError(
                f"{what}: {which} that requires grad (the leaf has shape {root.shape}) is being "
                "changed in place while a graph is recorded: its gradient history would be "
                "lost. Do it inside `with ag.no_grad():` (e.g. a parameter update), or work on a "
                "copy (x = ag.asarray(leaf, copy=True)). PyTorch refuses the same.")
        if plain_alias(root):
            raise RuntimeError(aliased_inplace_error(what, t, form))
        new = new_value(_fresh(t))
        new_root = new if root is t else scatter_into(root, chain, new)
        root._become(new_root)
        _regenerate(reg, root, True)
        return
    prev = grad_mode.enabled
    grad_mode.enabled = False
    try:
        new = new_value(_fresh(t))
        if root is not t:
            new = scatter_into(_fresh(root), chain, new)
        _store(root, new.data)
        cell = root._version
        if cell is not None:
            cell[0] += 1  # graphs that saved any alias's old value refuse at backward
        _regenerate(reg, root, False)
    finally:
        grad_mode.enabled = prev


def setitem_through(x: Tensor, raw: Any, value: Any, key: Any) -> bool:
    """``x[key] = value`` when ``x``'s storage has other registered aliases: written through
    all of them (:func:`write`); ``False`` when it has none (the caller's plain path)."""
    state = aliases(x)
    if state is None:
        return False
    vg = type(value) is Tensor and value._requires_grad
    write(x, state, lambda t: setitem_functional(t, raw, value), vg, f"x[{key!r}] = ...",
          "ag.where, or ag.concat of the parts", value)
    return True


def _store(root: Tensor, data: Any) -> None:
    """The root's new values: copied into its storage when the backend allows (so arrays the
    caller holds, e.g. from ``.numpy()``, see them), else the root is rebound."""
    b = root._backend
    if not b.lazy:
        try:
            root.data[...] = data
            return
        except (TypeError, ValueError, AttributeError, RuntimeError):
            pass
    root.data = b.fix(data) if type(data) is not b.array_type else data


def _regenerate(reg: Views, root: Tensor, tracked: bool) -> None:
    """Bring every live view of ``root`` up to date by replaying its chain: the data always,
    the node too when the write was recorded."""
    views = reg.live()
    prev = grad_mode.enabled
    try:
        for w in views:
            _, chain, grad = w._view
            if tracked and grad:
                grad_mode.enabled = True
                nv = _apply(root, chain)
                w.data, w._node, w._index = nv.data, nv._node, nv._index
                w._requires_grad = nv._requires_grad
                if getattr(nv, "_tangent", None) is not None or getattr(
                        w, "_tangent", None) is not None:
                    w._tangent = getattr(nv, "_tangent", None)  # forward mode: it follows
                hooks = w._hooks
                if hooks is not None and w._node is not None and hasattr(hooks[0], "moved"):
                    hooks[0].moved(w)
            else:
                grad_mode.enabled = False
                w.data = _apply(root, chain).data
    finally:
        grad_mode.enabled = prev
    reg.refs = [weakref.ref(w) for w in views]  # (the replays' own results are dropped)
