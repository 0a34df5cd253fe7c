"""Data type functions of the Array API standard: ``astype`` (differentiable) and the dtype
queries ``can_cast``, ``finfo``, ``iinfo``, ``isdtype`` and ``result_type``.

The queries work on agnograd's own :class:`~agnograd._dtypes.DType` objects (``ag.float32``),
on any backend's dtype objects, and on Tensors or raw arrays, and they answer with agnograd
DTypes. Type promotion is the standard's table, written out here in pure Python, so it is the
same on every backend: no cross-kind promotion (integer with floating raises), ``uint64`` does
not mix with signed integers, and Python scalars take the dtype of the array they meet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .._dtypes import ALL, DType
from ..autograd.forward import defjvp
from ..backends import backend_of_array
from ._common import (
    PY_SCALARS,
    Tensor,
    TensorLike,
    from_backend_dtype,
    grad_on,
    record,
    to_backend_dtype,
    to_tensor,
    wrap,
)

__all__ = ["astype", "can_cast", "finfo", "iinfo", "isdtype", "result_type"]

_KIND_NAMES = {"b": "bool", "i": "signed integer", "u": "unsigned integer",
               "f": "real floating", "c": "complex floating"}


# ---------------------------------------------------------------------------------------------
# Turning arguments into agnograd DTypes


def _as_dtype(obj: Any, fn: str, what: str = "argument") -> DType:
    """An agnograd DType for a DType, a backend dtype, a Tensor or a raw array."""
    if isinstance(obj, DType):
        return obj
    if type(obj) is Tensor:
        return obj.dtype
    if not isinstance(obj, type) and backend_of_array(obj) is not None and hasattr(obj, "dtype"):
        return from_backend_dtype(obj.dtype)
    try:
        return from_backend_dtype(obj)
    except TypeError:
        raise TypeError(
            f"{fn}: {what} {obj!r} is not a data type or an array; pass an agnograd dtype "
            "(e.g. ag.float32), a backend's dtype, or a Tensor"
        ) from None


def _dtype_only(obj: Any, fn: str, what: str) -> DType:
    """An agnograd DType for a DType or a backend dtype (arrays are not accepted)."""
    if isinstance(obj, DType):
        return obj
    if type(obj) is Tensor or (not isinstance(obj, type) and backend_of_array(obj) is not None):
        raise TypeError(f"{fn}: {what} must be a data type, not an array; pass x.dtype")
    return _as_dtype(obj, fn, what)


# ---------------------------------------------------------------------------------------------
# The promotion table


def _precision(d: DType) -> int:
    """Bits of the real component: float32/complex64 -> 32, float64/complex128 -> 64."""
    return d.bits if d.kind == "f" else d.bits // 2


def _promote(a: DType, b: DType, fn: str) -> DType:
    """The standard's type promotion of two dtypes; TypeError where the table has no entry."""
    if a is b:
        return a
    ka, kb = a.kind, b.kind
    if ka in "iu" and kb in "iu":
        if ka == kb:
            return a if a.bits >= b.bits else b
        signed, unsigned = (a, b) if ka == "i" else (b, a)
        if unsigned.bits == 64:
            raise TypeError(
                f"{fn}: {a.name} and {b.name} do not promote: no integer dtype holds both "
                "uint64 and a signed integer; cast one of them first with ag.astype"
            )
        return ALL[f"int{max(signed.bits, 2 * unsigned.bits)}"]
    if ka in "fc" and kb in "fc":
        bits = max(_precision(a), _precision(b))
        if ka == "c" or kb == "c":
            return ALL[f"complex{2 * bits}"]
        return ALL[f"float{bits}"]
    raise TypeError(
        f"{fn}: {a.name} ({_KIND_NAMES[ka]}) and {b.name} ({_KIND_NAMES[kb]}) do not promote: "
        "the Array API standard does not mix dtype kinds; cast explicitly, e.g. "
        f"ag.astype(x, ag.{b.name if kb in 'fc' else a.name})"
    )


def _promote_scalar(d: DType, s: bool | int | float | complex, fn: str) -> DType:
    """The dtype of ``d`` meeting the Python scalar ``s`` (the scalar takes the array's dtype,
    except that a complex scalar makes a real floating dtype complex)."""
    k = d.kind
    if isinstance(s, bool):
        ok = k == "b"
    elif isinstance(s, int):
        ok = k in "iufc"
    elif isinstance(s, float):
        ok = k in "fc"
    else:
        ok = k in "fc"
        if ok and k == "f":
            return ALL[f"complex{2 * d.bits}"]
    if not ok:
        raise TypeError(
            f"{fn}: a Python {type(s).__name__} does not promote with {d.name}; the standard "
            "allows bool with bool, int with numeric dtypes, and float/complex with floating "
            "dtypes. Cast the array first with ag.astype, or pass a matching scalar"
        )
    return d


def result_type(*arrays_and_dtypes: Any) -> DType:
    """The dtype the standard's type promotion gives for the arguments.

    Arguments may be Tensors, raw arrays, agnograd or backend dtypes, and Python scalars
    (``bool``, ``int``, ``float``, ``complex``); at least one must be an array or a dtype.
    Returns an agnograd DType. Raises TypeError for pairs the standard's table leaves out
    (integer with floating, bool with numbers, uint64 with signed integers).
    """
    dtypes: list[DType] = []
    scalars: list[Any] = []
    for a in arrays_and_dtypes:
        if type(a) in PY_SCALARS:
            scalars.append(a)
        else:
            dtypes.append(_as_dtype(a, "result_type"))
    if not dtypes:
        raise ValueError(
            "result_type: at least one argument must be an array or a dtype (Python scalars "
            "alone have no dtype); e.g. result_type(ag.float32, 1.0)"
        )
    result = dtypes[0]
    for d in dtypes[1:]:
        result = _promote(result, d, "result_type")
    for s in scalars:
        result = _promote_scalar(result, s, "result_type")
    return result


def can_cast(from_: Any, to: Any, /) -> bool:
    """Whether ``from_`` (a dtype, Tensor or array) casts to dtype ``to`` by the standard's
    promotion rules (``result_type(from_, to) == to``); cross-kind casts are False."""
    src = _as_dtype(from_, "can_cast", "from_")
    dst = _dtype_only(to, "can_cast", "to")
    try:
        return _promote(src, dst, "can_cast") is dst
    except TypeError:
        return False


def isdtype(dtype: Any, kind: Any) -> bool:
    """Whether ``dtype`` is of ``kind``: a dtype, one of ``'bool'``, ``'signed integer'``,
    ``'unsigned integer'``, ``'integral'``, ``'real floating'``, ``'complex floating'``,
    ``'numeric'``, or a tuple of these (any match)."""
    d = _dtype_only(dtype, "isdtype", "dtype")
    if isinstance(kind, tuple):
        if any(isinstance(k, tuple) for k in kind):
            raise TypeError("isdtype: kind may be a tuple of dtypes and kind names, not nested")
        return any(isdtype(d, k) for k in kind)
    if isinstance(kind, str):
        if kind in ALL and kind != "bool":
            raise ValueError(
                f"isdtype: {kind!r} is a dtype name, not a kind; pass the dtype ag.{kind}"
            )
        kinds = _KINDS.get(kind)
        if kinds is None:
            raise ValueError(
                f"isdtype: unknown kind {kind!r}; use one of {', '.join(map(repr, _KINDS))}, "
                "a dtype, or a tuple of these"
            )
        return d.kind in kinds
    return d is _dtype_only(kind, "isdtype", "kind")


_KINDS = {
    "bool": "b",
    "signed integer": "i",
    "unsigned integer": "u",
    "integral": "iu",
    "real floating": "f",
    "complex floating": "c",
    "numeric": "iufc",
}


# ---------------------------------------------------------------------------------------------
# finfo / iinfo


@dataclass(frozen=True, eq=False)
class finfo_object:
    """Machine limits of a floating-point dtype (``dtype`` is the real dtype of the values)."""

    bits: int
    eps: float
    max: float
    min: float
    smallest_normal: float
    dtype: DType


@dataclass(frozen=True, eq=False)
class iinfo_object:
    """Limits of an integer dtype."""

    bits: int
    max: int
    min: int
    dtype: DType


_F32_MAX = (2.0 - 2.0**-23) * 2.0**127
_F64_MAX = (2.0 - 2.0**-52) * 2.0**1023
_FINFO = {
    32: finfo_object(32, 2.0**-23, _F32_MAX, -_F32_MAX, 2.0**-126, ALL["float32"]),
    64: finfo_object(64, 2.0**-52, _F64_MAX, -_F64_MAX, 2.0**-1022, ALL["float64"]),
}


def finfo(type: Any, /) -> finfo_object:
    """Limits of a floating-point dtype (or a Tensor's): ``bits``, ``eps``, ``max``, ``min``,
    ``smallest_normal`` and ``dtype`` (for complex dtypes, those of the real component)."""
    d = _as_dtype(type, "finfo", "type")
    if d.kind not in "fc":
        raise TypeError(f"finfo: {d.name} is not a floating-point dtype; use ag.iinfo for integers")
    return _FINFO[_precision(d)]


def iinfo(type: Any, /) -> iinfo_object:
    """Limits of an integer dtype (or a Tensor's): ``bits``, ``max``, ``min`` and ``dtype``."""
    d = _as_dtype(type, "iinfo", "type")
    if d.kind not in "iu":
        raise TypeError(f"iinfo: {d.name} is not an integer dtype; use ag.finfo for floating types")
    if d.kind == "i":
        return iinfo_object(d.bits, 2 ** (d.bits - 1) - 1, -(2 ** (d.bits - 1)), d)
    return iinfo_object(d.bits, 2**d.bits - 1, 0, d)


# ---------------------------------------------------------------------------------------------
# astype


def _astype_back(xp: Any, g: Any) -> Any:
    return g  # the engine casts it back to the input's dtype (meta)


defjvp(_astype_back, lambda xp, v, y: v)  # (the engine casts v to the output's dtype)


def astype(x: TensorLike, dtype: Any, /, *, copy: bool = True, device: Any = None) -> Tensor:
    """``x`` converted to ``dtype`` (an agnograd or backend dtype), same shape; on ``device``
    if given.

    With ``copy=False`` and nothing to convert, ``x`` itself is returned. Differentiable
    between floating dtypes, real or complex; a result of any other dtype never requires grad.
    Casting complex to a real dtype is refused (the standard leaves it undefined).

    VJP: ``x̄ = astype(ḡ, x.dtype)``; real to complex: ``x̄ = Re ḡ`` (the engine's cast).
    """
    x = to_tensor(x, "astype")
    b = x._backend
    try:
        want = to_backend_dtype(b.xp, dtype)
    except TypeError as exc:
        raise TypeError(f"astype: {exc}") from None
    if want is None:
        raise TypeError("astype: dtype is required (e.g. ag.float32)")
    src = x.data.dtype
    same = src == want
    if same and not copy:
        y = x
    else:
        sk, dk = from_backend_dtype(src).kind, from_backend_dtype(want).kind
        if sk == "c" and dk != "c":
            raise TypeError(
                f"astype: casting {x.dtype.name} to {from_backend_dtype(want).name} (shape "
                f"{x.shape}) would drop the imaginary part; take ag.real(x) or ag.abs(x) first"
            )
        data = b.fix(b.xp.astype(x.data, want, copy=copy))
        if x._requires_grad and grad_on() and sk in "fc" and dk in "fc":  # real -> complex too
            meta = None if same else ((x.data.shape, src),)
            y = record("astype", data, b, (x,), (_astype_back,), meta=meta)
        else:
            y = wrap(data, b)
    if device is not None and device != b.device_of(y.data):
        from .manipulation import to_device

        y = to_device(y, device)
    return y
