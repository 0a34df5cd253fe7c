"""Creation functions of the Array API standard.

Arrays made from shapes and scalars (``zeros``, ``arange``, ``eye``, ...) live on the default
backend (:func:`agnograd.get_default_backend`) -- or on the backend whose device object
``device=`` names; ``*_like`` functions use the backend of ``x``; ``asarray`` keeps a Tensor's or
a raw array's backend. ``dtype=`` takes agnograd dtypes (``ag.float32``) or a backend's own.

These results need no gradient, except: ``tril``/``triu`` (VJP: the same triangle of ``ḡ``),
``meshgrid`` (VJP: each input gets ``ḡ`` of its grid summed over the other axes), and
``asarray`` of a Tensor, which returns the Tensor itself when nothing needs converting and
otherwise converts it with the differentiable :func:`astype` / ``to_device``.
"""

from __future__ import annotations

import functools
from typing import Any

from .._dtypes import default_float_for
from .._tensor import check_array_dtype, export_error, with_default_dtype
from ..autograd.forward import defjvp
from ..backends import (
    Backend,
    backend_of_array,
    backend_of_device,
    get_default_backend,
    host_array,
)
from ..capture import _state as _capture
from ._common import (
    PY_SCALARS,
    Tensor,
    grad_on,
    operands,
    record,
    record_multi,
    share_version,
    to_backend_dtype,
    to_tensor,
    wrap,
)
from .data_types import astype, result_type

__all__ = [
    "arange",
    "asarray",
    "empty",
    "empty_like",
    "eye",
    "from_dlpack",
    "full",
    "full_like",
    "linspace",
    "meshgrid",
    "ones",
    "ones_like",
    "tril",
    "triu",
    "zeros",
    "zeros_like",
]

def _creation_backend(device: Any) -> Backend:
    """The default backend, unless ``device`` is plainly another backend's device object (so
    ``ag.zeros(s, device=g.device)`` lands where ``g`` lives)."""
    b = get_default_backend()
    if device is None:
        return b
    owner = backend_of_device(device)
    # (a tracing backend of agnograd.capture.program wraps the owner's arrays: it stays the target)
    if owner is not None and owner is not b.base:
        return owner
    return b


def _dtype(b: Backend, dtype: Any, fn: str) -> Any:
    try:
        return to_backend_dtype(b.xp, dtype)
    except TypeError as exc:
        raise TypeError(f"{fn}: {exc} (backend '{b.name}')") from None


def _kwargs(dtype: Any, device: Any) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    if dtype is not None:
        kw["dtype"] = dtype
    if device is not None:
        kw["device"] = device
    return kw


def _scalar(v: Any, fn: str = "", hint: str = "") -> Any:
    """A Python scalar argument; a one-element Tensor is accepted and read out -- unless it
    requires grad, whose gradient reading it out would silently cut (then ``hint`` says what
    to write instead)."""
    if type(v) is Tensor:
        if v._requires_grad and grad_on():
            raise TypeError(
                f"{fn}: an argument is a Tensor that requires grad (shape {v.shape}); {fn} reads "
                f"it as a plain number, so no gradient would reach it; {hint}"
            )
        return v.item()
    return v


def _default_for(fn: str, args: tuple[Any, ...]) -> Any:
    """The dtype ``ag.set_default_dtype`` gives a creation function called without one, or
    ``None`` (unset, or an integer/bool/complex result)."""
    if fn in ("empty", "zeros", "ones", "eye"):
        return default_float_for("f")
    values = args[1:2] if fn == "full" else [a for a in args if a is not None]
    if fn == "linspace" and any(isinstance(a, complex) for a in values):
        return default_float_for("c")
    if fn in ("full", "arange", "linspace") and (fn == "linspace" or any(
            isinstance(a, float) for a in values)) and not any(
            isinstance(a, (complex, bool)) for a in values):
        return default_float_for("f")
    if fn == "full" and any(isinstance(a, complex) for a in values):
        return default_float_for("c")
    return None


def _make(fn: str, args: tuple[Any, ...], dtype: Any, device: Any, **extra: Any) -> Tensor:
    b = _creation_backend(device)
    if dtype is None:
        dtype = _default_for(fn, args)
    dt = _dtype(b, dtype, fn)
    try:
        data = getattr(b.xp, fn)(*args, **_kwargs(dt, device), **extra)
    except (TypeError, ValueError) as exc:
        shown = ", ".join(repr(a) for a in args)
        raise _same_kind(exc, f"{fn}({shown}) on backend '{b.name}' failed: {exc}") from exc
    return wrap(data, b)


def _same_kind(exc: Exception, message: str) -> Exception:
    """A TypeError, ValueError or OverflowError (as ``exc`` was) carrying ``message``."""
    for kind in (TypeError, OverflowError, ValueError):
        if isinstance(exc, kind):
            return kind(message)
    return ValueError(message)


def _like(fn: str, x: Any, dtype: Any, device: Any, *args: Any) -> Tensor:
    x = to_tensor(x, fn)
    b = x._backend
    dt = _dtype(b, dtype, fn)
    return wrap(getattr(b.xp, fn)(x.data, *args, **_kwargs(dt, device)), b)


# ---------------------------------------------------------------------------------------------
# From shapes and scalars (default backend; never require grad)


def arange(start: int | float, /, stop: int | float | None = None, step: int | float = 1, *,
           dtype: Any = None, device: Any = None) -> Tensor:
    """Evenly spaced values in ``[start, stop)`` (``[0, start)`` when ``stop`` is None), 1-d."""
    hint = "arange's values are not differentiable: pass start, stop and step as numbers"
    start = _scalar(start, "arange", hint)
    stop = None if stop is None else _scalar(stop, "arange", hint)
    step = _scalar(step, "arange", hint)
    if step == 0:
        raise ValueError("arange: step must not be 0")
    return _make("arange", (start, stop, step), dtype, device)


def empty(shape: int | tuple[int, ...], *, dtype: Any = None, device: Any = None) -> Tensor:
    """An uninitialized array of ``shape`` (default floating dtype unless ``dtype``)."""
    return _make("empty", (shape,), dtype, device)


def zeros(shape: int | tuple[int, ...], *, dtype: Any = None, device: Any = None) -> Tensor:
    """An array of ``shape`` filled with 0 (default floating dtype unless ``dtype``)."""
    return _make("zeros", (shape,), dtype, device)


def ones(shape: int | tuple[int, ...], *, dtype: Any = None, device: Any = None) -> Tensor:
    """An array of ``shape`` filled with 1 (default floating dtype unless ``dtype``)."""
    return _make("ones", (shape,), dtype, device)


def full(shape: int | tuple[int, ...], fill_value: bool | int | float | complex, *,
         dtype: Any = None, device: Any = None) -> Tensor:
    """An array of ``shape`` filled with ``fill_value``; the dtype follows the scalar's kind
    (bool, default integer, default floating, default complex) unless ``dtype`` is given."""
    hint = "for a result differentiable with respect to it, use ag.broadcast_to(t, shape)"
    return _make("full", (shape, _scalar(fill_value, "full", hint)), dtype, device)


def eye(n_rows: int, n_cols: int | None = None, /, *, k: int = 0, dtype: Any = None,
        device: Any = None) -> Tensor:
    """A 2-d ``(n_rows, n_cols)`` array with ones on the ``k``-th diagonal, zeros elsewhere."""
    return _make("eye", (n_rows, n_cols), dtype, device, k=k)


def linspace(start: int | float | complex, stop: int | float | complex, /, num: int, *,
             dtype: Any = None, device: Any = None, endpoint: bool = True) -> Tensor:
    """``num`` evenly spaced values from ``start`` to ``stop`` (included when ``endpoint``)."""
    if not isinstance(num, int) or num < 0:
        raise ValueError(f"linspace: num must be a non-negative integer, not {num!r}")
    hint = ("for a result differentiable with respect to them, use "
            "start + (stop - start) * ag.linspace(0.0, 1.0, num)")
    start = _scalar(start, "linspace", hint)
    stop = _scalar(stop, "linspace", hint)
    return _make("linspace", (start, stop, num), dtype, device, endpoint=endpoint)


def from_dlpack(x: Any, /, *, device: Any = None, copy: bool | None = None) -> Tensor:
    """An array of the default backend sharing (or, with ``copy=True``, copying) the memory of
    any object with ``__dlpack__`` (a Tensor, a CuPy/PyTorch/NumPy array, ...). The result
    needs no gradient, so a Tensor that requires grad is refused (RuntimeError, as its
    ``__dlpack__`` is): import ``x.detach()``, or use ``ag.asarray(x)`` to stay in the graph."""
    b = _creation_backend(device)
    if type(x) is Tensor and x._requires_grad:  # as x.__dlpack__() refuses, the raw data too
        raise export_error(x, "from_dlpack")
    src = x.data if type(x) is Tensor else x
    if not hasattr(src, "__dlpack__"):
        raise TypeError(f"from_dlpack: {type(x).__name__} does not support DLPack "
                        "(no __dlpack__ method); use ag.asarray instead")
    kw: dict[str, Any] = {}
    if device is not None:
        kw["device"] = device
    if copy is not None:
        kw["copy"] = copy
    try:
        data = b.xp.from_dlpack(src, **kw)
    except BufferError:
        if not copy:
            raise
        # Some libraries copy only to the host through DLPack (CuPy): import, then copy.
        del kw["copy"]
        data = b.asarray(b.xp.from_dlpack(src, **kw), copy=True)
    if type(x) is Tensor and not copy:  # shares x's memory: and so its version counter
        return share_version(x, wrap(data, b))
    return wrap(data, b)


# ---------------------------------------------------------------------------------------------
# *_like (the backend of x; never require grad)


def empty_like(x: Any, /, *, dtype: Any = None, device: Any = None) -> Tensor:
    """An uninitialized array with ``x``'s shape (and dtype/device unless given)."""
    return _like("empty_like", x, dtype, device)


def zeros_like(x: Any, /, *, dtype: Any = None, device: Any = None) -> Tensor:
    """Zeros with ``x``'s shape (and dtype/device unless given)."""
    return _like("zeros_like", x, dtype, device)


def ones_like(x: Any, /, *, dtype: Any = None, device: Any = None) -> Tensor:
    """Ones with ``x``'s shape (and dtype/device unless given)."""
    return _like("ones_like", x, dtype, device)


def full_like(x: Any, /, fill_value: bool | int | float | complex, *, dtype: Any = None,
              device: Any = None) -> Tensor:
    """``fill_value`` in ``x``'s shape (and dtype/device unless given)."""
    hint = "for a result differentiable with respect to it, use ag.broadcast_to(t, x.shape)"
    return _like("full_like", x, dtype, device, _scalar(fill_value, "full_like", hint))


# ---------------------------------------------------------------------------------------------
# asarray


def asarray(obj: Any, /, *, dtype: Any = None, device: Any = None, copy: bool | None = None
            ) -> Tensor:
    """``obj`` as a Tensor: a Tensor, an array of any backend (kept on its backend), a Python
    scalar or a nested sequence (default backend; may contain Tensors or arrays).

    ``copy=None`` copies only when a conversion needs it, ``True`` always copies, ``False``
    never does (ValueError if a copy is needed). A Tensor that needs no conversion is returned
    itself (gradient history included); converting one goes through the differentiable
    :func:`astype` and ``to_device``. Everything else needs no gradient.
    """
    if type(obj) is Tensor:
        return _convert(obj, dtype, device, copy)
    ob = backend_of_array(obj)
    if ob is not None:
        check_array_dtype(obj, obj, "asarray")  # a NumPy object/string array: refused now
        return _convert(wrap(obj, ob), dtype, device, copy)
    if copy is False and (type(obj) in PY_SCALARS or isinstance(obj, (list, tuple))):
        raise ValueError(
            f"asarray: copy=False, but a Python {type(obj).__name__} must be copied into a new "
            "array; pass copy=None"
        )
    if _capture.ACTIVE:
        _capture.refuse("ag.asarray of host data (Python scalars or lists)", _capture.WHY_HOST)
    b = _creation_backend(device)
    if isinstance(obj, (list, tuple)) and _may_hold_arrays(obj):
        found: list[Tensor] = []
        scalars: list[Any] = []
        plain = _unnest(obj, found, scalars)
        if found:
            for t in found[1:]:
                if t._backend is not found[0]._backend:
                    raise TypeError(
                        f"asarray: the sequence mixes '{found[0].backend}' and '{t.backend}' "
                        f"arrays; move them to one backend first, e.g. "
                        f"ag.to_backend(t, '{found[0].backend}')"
                    )
            if device is None:
                b = found[0]._backend
            if dtype is None:
                try:
                    dtype = result_type(*found, *scalars)
                except (TypeError, ValueError):
                    dtype = None
            if grad_on() and any(t._requires_grad for t in found):
                # Differentiable: stack the elements (as ag.stack does), never via host lists.
                fb = found[0]._backend
                out = _stack_nested(obj, fb, _dtype(fb, dtype, "asarray"),
                                    fb.device_of(found[0].data), ())
                return _convert(out, None, device, copy)
            obj = plain
    dt = _dtype(b, dtype, "asarray")
    try:
        data = b.asarray(obj, dtype=dt, device=device, copy=copy)
    except (TypeError, ValueError, OverflowError) as exc:
        raise _same_kind(exc, f"asarray: cannot make a '{b.name}' array from "
                         f"{type(obj).__name__}: {exc}") from exc
    if dt is None:
        data = with_default_dtype(b, data)
    check_array_dtype(data, obj, "asarray")
    return wrap(data, b)


def _stack_nested(obj: Any, b: Backend, dt: Any, dev: Any, where: tuple[int, ...]) -> Tensor:
    """A nested sequence of Tensors, arrays and Python scalars as one Tensor, built with the
    differentiable :func:`stack` level by level (so each Tensor element gets its gradient)."""
    if type(obj) is Tensor:
        return obj if dt is None or obj.data.dtype == dt else astype(obj, dt)
    ob = backend_of_array(obj)
    if ob is not None:
        t = wrap(obj, ob)
        return t if dt is None or t.data.dtype == dt else astype(t, dt)
    if isinstance(obj, (list, tuple)):
        from .manipulation import stack

        parts = [_stack_nested(o, b, dt, dev, where + (i,)) for i, o in enumerate(obj)]
        if not parts or any(p.shape != parts[0].shape for p in parts):
            shapes = ", ".join(str(p.shape) for p in parts) or "none"
            at = f"at index {list(where)}" if where else "at the top level"
            raise ValueError(
                f"asarray: the elements {at} of the nested sequence have "
                f"shapes {shapes}; a sequence holding Tensors must be regular (equal shapes at "
                "each level, like ag.stack needs)"
            )
        return stack(parts, axis=0)
    if type(obj) in PY_SCALARS:
        return wrap(b.asarray(obj, dtype=dt, device=dev), b)
    raise TypeError(f"asarray: cannot put a {type(obj).__name__} into an array "
                    f"(at index {list(where)}); use numbers, arrays or Tensors")


def _convert(t: Tensor, dtype: Any, device: Any, copy: bool | None) -> Tensor:
    b = t._backend
    want = _dtype(b, dtype, "asarray")
    cast = want is not None and t.data.dtype != want
    move = device is not None and device != b.device_of(t.data)
    if copy is False and (cast or move):
        raise ValueError(
            f"asarray: copy=False, but converting the {t.dtype.name} array of shape {t.shape} "
            f"(device {b.device_of(t.data)}) to the requested dtype/device needs a copy; pass "
            "copy=None"
        )
    out = t
    if cast or copy:
        out = astype(t, want if want is not None else t.data.dtype, copy=True)
    if move:
        from .manipulation import to_device

        out = to_device(out, device)
    return out


def _may_hold_arrays(seq: list[Any] | tuple[Any, ...]) -> bool:
    """Whether a nested sequence holds anything but Python scalars (a quick pass, so plain
    nested lists go straight to the backend)."""
    for o in seq:
        t = type(o)
        if t in PY_SCALARS:
            continue
        if t is list or t is tuple:
            if _may_hold_arrays(o):
                return True
            continue
        return True
    return False


def _unnest(obj: Any, found: list[Tensor], scalars: list[Any]) -> Any:
    """A nested sequence with every Tensor/array replaced by nested Python lists (collected in
    ``found``; the Python scalars met in ``scalars``)."""
    if type(obj) in PY_SCALARS:
        scalars.append(obj)
        return obj
    if type(obj) is Tensor:
        found.append(obj)
        return host_array(obj.data).tolist()
    ob = backend_of_array(obj)
    if ob is not None:
        check_array_dtype(obj, obj, "asarray")  # an object array inside a list: refused too
        found.append(wrap(obj, ob))
        return host_array(obj).tolist()
    if isinstance(obj, (list, tuple)):
        return [_unnest(o, found, scalars) for o in obj]
    return obj


# ---------------------------------------------------------------------------------------------
# Differentiable: meshgrid, tril, triu


def _meshgrid_back(xp: Any, gs: tuple[Any, ...], *, i: int, axis: int, ndim: int) -> Any:
    others = tuple(a for a in range(ndim) if a != axis)
    return xp.sum(gs[i], axis=others) if others else gs[i]


def meshgrid(*arrays: Any, indexing: str = "xy") -> tuple[Tensor, ...]:
    """Coordinate grids from 1-d arrays: a tuple (2025.12) of N-d arrays, one per input, each of shape
    ``(len(a_1), ..., len(a_N))`` for ``indexing='ij'``; ``'xy'`` swaps the first two axes.

    VJP: input i receives its grid's ``ḡ`` summed over every axis but its own.
    """
    if indexing not in ("xy", "ij"):
        raise ValueError(f"meshgrid: indexing must be 'xy' or 'ij', not {indexing!r}")
    if not arrays:
        return ()
    b, ts = operands(arrays, "meshgrid")
    for t in ts:
        if t.ndim != 1:
            shapes = ", ".join(str(s.shape) for s in ts)
            raise ValueError(f"meshgrid: every input must be 1-d, got shapes {shapes}; flatten "
                             "them with ag.reshape(x, (-1,))")
    ys = [b.fix(y) for y in b.xp.meshgrid(*[t.data for t in ts], indexing=indexing)]
    n = len(ts)
    if not (grad_on() and any(t._requires_grad for t in ts)):
        return tuple(wrap(y, b) for y in ys)

    def axis_of(i: int) -> int:
        if indexing == "xy" and n >= 2 and i < 2:
            return 1 - i
        return i

    rules = tuple(functools.partial(_meshgrid_back, i=i, axis=axis_of(i), ndim=n)
                  for i in range(n))
    return tuple(record_multi("meshgrid", tuple(ys), b, tuple(ts), rules))


def _tril_back(xp: Any, g: Any, k: int) -> Any:
    return xp.tril(g, k=k)


def _triu_back(xp: Any, g: Any, k: int) -> Any:
    return xp.triu(g, k=k)


# JVP (forward mode): the same triangle of the tangent (the masking is self-adjoint).
defjvp(_tril_back, lambda xp, v, y, k: _tril_back(xp, v, k))
defjvp(_triu_back, lambda xp, v, y, k: _triu_back(xp, v, k))


def _triangle(name: str, x: Any, k: int, rule: Any) -> Tensor:
    x = to_tensor(x, name)
    if x.ndim < 2:
        raise ValueError(f"{name}: needs an array of at least 2 dimensions (a matrix or a stack "
                         f"of matrices), not shape {x.shape}")
    if not isinstance(k, int):
        raise TypeError(f"{name}: k must be an int, not {type(k).__name__}")
    b = x._backend
    y = getattr(b.xp, name)(x.data, k=k)
    if x._requires_grad and grad_on():
        return record(name, y, b, (x,), (rule,), params=(k,))
    return wrap(y, b)


def tril(x: Any, /, *, k: int = 0) -> Tensor:
    """The lower triangle of (each matrix of) ``x``: zeros above the ``k``-th diagonal.

    VJP: ``x̄ = tril(ḡ, k)``.
    """
    return _triangle("tril", x, k, _tril_back)


def triu(x: Any, /, *, k: int = 0) -> Tensor:
    """The upper triangle of (each matrix of) ``x``: zeros below the ``k``-th diagonal.

    VJP: ``x̄ = triu(ḡ, k)``.
    """
    return _triangle("triu", x, k, _triu_back)
