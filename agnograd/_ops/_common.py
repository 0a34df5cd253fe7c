"""What every op module shares: turning operands into Tensors of one backend, and recording.

An op takes Tensors, raw arrays of the same backend, or Python scalars. It resolves the backend
once (from its first Tensor operand), computes the forward with ``backend.xp`` on raw arrays,
and calls :func:`record` only when some input requires grad and grad mode is on.
"""

from __future__ import annotations

from typing import Any

from .._dtypes import PY_SCALARS, DType, from_backend_dtype, to_backend_dtype
from .._tensor import Tensor, TensorLike, check_array_dtype, tensor, view_of
from ..autograd import OUT, grad_mode, out, record, record_multi, share_version
from ..backends import Backend, backend_of_array, get_default_backend
from ..backends import batching as _batching

__all__ = [
    "OUT",
    "Tensor",
    "TensorLike",
    "DType",
    "out",
    "record",
    "record_multi",
    "share_version",
    "view_of",
    "grad_on",
    "to_tensor",
    "binary_operands",
    "operands",
    "mixing_error",
    "lift_to",
    "higher",
    "aliased_inplace_error",
    "raw_dtype",
    "is_float",
    "normalize_axis",
    "normalize_axes",
    "wrap",
    "from_backend_dtype",
    "to_backend_dtype",
    "PY_SCALARS",
    "host_scalar",
    "is_complex",
]

wrap = Tensor._wrap


def grad_on() -> bool:
    """Whether ops record now (thread-local)."""
    return grad_mode.enabled


def mixing_error(op: str, a: Backend, b: Backend) -> TypeError:
    return TypeError(
        f"{op}: cannot mix a '{a.name}' tensor with a '{b.name}' tensor in one op; move one "
        f"to the other's backend first, e.g. ag.to_backend(t, '{a.name}')"
    )


def aliased_inplace_error(what: str, x: Tensor, form: str) -> str:
    """The message for an in-place op that would have to rebind ``x`` to a new array (it records
    a graph) while a Tensor that is not a registered view shares ``x``'s storage (made by
    ``from_dlpack`` or ``real``): it could not be brought up to date, so agnograd refuses.
    (Views are written through: see ``_views.py``.)"""
    return (
        f"{what} on a tensor of shape {x.shape} that shares its storage with other tensors "
        "made by from_dlpack or real/imag/conj (aliases that are not views, which "
        "an in-place write recording a graph cannot update) while a graph is recorded. Use the "
        f"out-of-place form ({form}), or do it under `with ag.no_grad():` (then backward "
        "refuses graphs that saved any alias)"
    )


def device_mismatch(op: str, a: Tensor, b: Tensor) -> RuntimeError:
    return RuntimeError(
        f"{op}: operands are on different devices of backend '{a.backend}' ({a.device} and "
        f"{b.device}); move one with t.to_device(other.device)"
    )


def lift_to(t: Tensor, b: Backend, op: str) -> Tensor:
    """``t`` as a Tensor of ``b``: the same Tensor, or -- ``t`` from a level under ``b``'s
    ``vmap`` (a closure, a parameter) -- lifted unbatched (:func:`agnograd.batching.lift`)."""
    if t._backend is b:
        return t
    if _batching.below(t._backend, b):
        from ..batching import lift

        if _batching.size_of(b) is None and not _batching.active.walks:  # type: ignore[arg-type]
            raise _batching.VmapError(
                f"ag.vmap: {op} mixes a value of a vmap call that has returned (kept in a list, "
                "a global or an attribute while the call ran: its batch belongs to that call) "
                "with a value from outside; return it from the vmapped function instead (vmap "
                "stacks it along out_axes), or compute it outside vmap")
        return lift(t, b)
    if b.base is t._backend and b is not t._backend and not t._requires_grad:
        return wrap(t.data, b)  # a constant Tensor made inside a traced step (ag.jit)
    raise mixing_error(op, b, t._backend)


def higher(a: Backend, b: Backend, op: str) -> Backend:
    """Of two backends of one op's operands, the one the op runs on: the same one, or the inner
    ``vmap`` level of the two (the other is a level under it); else a mixing error."""
    if a is b or _batching.below(b, a) or a.base is b:  # (a traced step's constants: b)
        return a
    if _batching.below(a, b) or b.base is a:
        return b
    raise mixing_error(op, a, b)


def to_tensor(x: Any, op: str, backend: Backend | None = None) -> Tensor:
    """An operand as a Tensor on ``backend`` (if given): raw arrays are wrapped without copying;
    Python scalars and lists become tensors of the default (or given) backend."""
    if type(x) is Tensor:
        if backend is not None and x._backend is not backend:
            return lift_to(x, backend, op)
        return x
    ob = backend_of_array(x)
    if ob is not None:
        if backend is not None and ob is not backend:
            # a raw array beside traced tensors (a constant of the trace), or beside batched
            # ones (a value shared by every example)
            if backend.base is ob and not isinstance(backend, _batching.BatchingBackend):
                return wrap(x, backend)
            if _batching.below(ob, backend):
                return wrap(_batching.share(backend, x), backend)  # type: ignore[arg-type]
            raise mixing_error(op, backend, ob)
        check_array_dtype(x, x, op)  # a NumPy object or string array: refused here, by name
        return wrap(x, ob)
    if isinstance(x, (list, tuple)) or isinstance(x, PY_SCALARS):
        return tensor(x, backend=backend or get_default_backend())
    raise TypeError(f"{op}: expected a Tensor, an array or a Python scalar, not {type(x).__name__}")


def host_scalar(x: Any, b: Backend) -> Any:
    """A stray scalar of another backend (NumPy's ``np.float64(2.0)``, ``np.int32(1)``) as the
    Python scalar of its kind, for an op on backend ``b``; anything else as it is. Such scalars
    are that backend's 0-d values, which ``b`` refuses; as operands they mean the plain number."""
    ob = backend_of_array(x)
    if ob is not None and ob is not b and ob.scalar_type is not None and isinstance(x, ob.scalar_type):
        return x.item()
    return x


def binary_operands(x1: Any, x2: Any, op: str) -> tuple[Backend, Any, Any, Any, Any]:
    """The one conversion of a binary op's operands: ``(backend, x1, x2, a1, a2)``.

    ``x1``/``x2`` come back as Tensors or Python scalars (the standard's promotion keeps scalars
    weak): Tensors stay, same-backend raw arrays and lists become constant Tensors; ``a1``/``a2``
    are what to compute with (a Tensor's ``.data``, or the scalar). Raises for operands on two
    backends or two devices, and for two scalars. Used by the elementwise binary ops (behind an
    inline fast path of their own), ``where`` and the in-place operators.
    """
    t1 = type(x1) is Tensor
    t2 = type(x2) is Tensor
    if t1 and t2:
        b = x1._backend
        if x2._backend is not b:  # one is a vmap level over the other's, or an error
            b = higher(b, x2._backend, op)
            x1, x2 = lift_to(x1, b, op), lift_to(x2, b, op)
        if b.multi_device and x1.data.device != x2.data.device:
            raise device_mismatch(op, x1, x2)
        return b, x1, x2, x1.data, x2.data
    if t1:
        b = x1._backend
        if type(x2) not in PY_SCALARS:  # a NumPy scalar on another backend: the plain number
            x2 = host_scalar(x2, b)
        if isinstance(x2, PY_SCALARS):
            return b, x1, x2, x1.data, x2
        x2 = to_tensor(x2, op, b)
        return b, x1, x2, x1.data, x2.data
    if t2:
        b = x2._backend
        if type(x1) not in PY_SCALARS:  # a NumPy scalar on another backend: the plain number
            x1 = host_scalar(x1, b)
        if isinstance(x1, PY_SCALARS):
            return b, x1, x2, x1, x2.data
        x1 = to_tensor(x1, op, b)
        return b, x1, x2, x1.data, x2.data
    if isinstance(x1, PY_SCALARS) and isinstance(x2, PY_SCALARS):
        raise TypeError(f"{op}: at least one argument must be an array or Tensor, not two scalars")
    if isinstance(x1, PY_SCALARS):
        x2 = to_tensor(x2, op)
        return x2._backend, x1, x2, x1, x2.data
    x1 = to_tensor(x1, op)
    if isinstance(x2, PY_SCALARS):
        return x1._backend, x1, x2, x1.data, x2
    x2 = to_tensor(x2, op, x1._backend)
    return x1._backend, x1, x2, x1.data, x2.data


def operands(xs: Any, op: str) -> tuple[Backend, list[Tensor]]:
    """A sequence of array operands as Tensors of one backend (for concat, stack, ...)."""
    xs = list(xs)
    b = None
    for x in xs:
        if type(x) is Tensor:
            b = x._backend if b is None else higher(b, x._backend, op)
    out_ = [to_tensor(x, op, b) for x in xs]
    if not out_:
        raise ValueError(f"{op}: needs at least one array")
    first = out_[0]
    b = first._backend
    for t in out_[1:]:
        if t._backend is not b:
            raise mixing_error(op, b, t._backend)
        if b.multi_device and t.data.device != first.data.device:
            raise device_mismatch(op, first, t)
    return b, out_


def raw_dtype(b: Backend, dtype: Any) -> Any:
    return to_backend_dtype(b.xp, dtype)


def is_float(raw_dt: Any) -> bool:
    return from_backend_dtype(raw_dt).kind == "f"


def is_complex(b: Backend, raw_dt: Any) -> bool:
    """Whether ``raw_dt`` (a dtype of backend ``b``) is complex: ops record their complex VJP
    rules by it. The hot ops inline the lookup ``b.complex_kinds[raw_dt]`` and call this only
    on a miss (it fills the cache)."""
    try:
        return b.complex_kinds[raw_dt]
    except KeyError:
        c = b.complex_kinds[raw_dt] = from_backend_dtype(raw_dt).kind == "c"
        return c
    except TypeError:  # an unhashable dtype object
        return from_backend_dtype(raw_dt).kind == "c"


def normalize_axis(axis: int, ndim: int, op: str) -> int:
    if not -ndim <= axis < max(ndim, 1):
        raise IndexError(f"{op}: axis {axis} is out of bounds for a {ndim}-d array")
    return axis % ndim if ndim else 0


def normalize_axes(axis: int | tuple[int, ...] | None, ndim: int, op: str) -> tuple[int, ...]:
    """Axes as a sorted tuple of non-negative ints (all axes for ``None``)."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, int):
        axis = (axis,)
    axes = tuple(sorted(normalize_axis(a, ndim, op) for a in axis))
    if len(set(axes)) != len(axes):
        raise ValueError(f"{op}: repeated axis in {axis}")
    return axes
