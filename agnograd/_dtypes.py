"""agnograd's data types: one set of dtype objects that means the same thing on every backend.

Backends spell their dtypes differently (``numpy.dtype('float32')``, ``array_api_strict.float32``,
``torch.float32``). ``ag.float32`` is a backend-neutral :class:`DType`; ``Tensor.dtype`` returns it,
and every function that takes ``dtype=`` accepts it (or a backend's own dtype object).
"""

from __future__ import annotations

from typing import Any

from .backends import PY_SCALARS

__all__ = [
    "PY_SCALARS",
    "DType",
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float32",
    "float64",
    "complex64",
    "complex128",
    "set_default_dtype",
    "get_default_dtype",
]

_builtin_bool = bool

# PY_SCALARS (the Python scalar types an op takes in place of an array) is defined once, in
# agnograd.backends (the lowest layer, which the backends themselves use), and re-exported here
# for the ops.


class DType:
    """A backend-neutral data type (compare with ``==``; each name has one instance)."""

    __slots__ = ("name", "kind", "bits")

    def __init__(self, name: str, kind: str, bits: int) -> None:
        self.name = name
        self.kind = kind  # 'b', 'i', 'u', 'f', 'c'
        self.bits = bits

    def __repr__(self) -> str:
        return f"agnograd.{self.name}"

    def __eq__(self, other: object) -> _builtin_bool:
        if isinstance(other, DType):
            return self is other
        name = _backend_dtype_name(other)
        return name == self.name

    def __hash__(self) -> int:
        return hash(("agnograd.dtype", self.name))

    def __reduce__(self) -> str:
        return self.name

    @property
    def is_floating(self) -> _builtin_bool:
        return self.kind == "f"


bool = DType("bool", "b", 8)
int8 = DType("int8", "i", 8)
int16 = DType("int16", "i", 16)
int32 = DType("int32", "i", 32)
int64 = DType("int64", "i", 64)
uint8 = DType("uint8", "u", 8)
uint16 = DType("uint16", "u", 16)
uint32 = DType("uint32", "u", 32)
uint64 = DType("uint64", "u", 64)
float32 = DType("float32", "f", 32)
float64 = DType("float64", "f", 64)
complex64 = DType("complex64", "c", 64)
complex128 = DType("complex128", "c", 128)

ALL: dict[str, DType] = {
    d.name: d
    for d in (bool, int8, int16, int32, int64, uint8, uint16, uint32, uint64,
              float32, float64, complex64, complex128)
}


def _backend_dtype_name(dt: Any) -> str | None:
    """Name of a backend's dtype object (``numpy.dtype``, strict, torch, ...), or ``None``."""
    if isinstance(dt, str):
        return dt if dt in ALL else None
    name = getattr(dt, "name", None)  # numpy / cupy dtypes, array_api_strict dtypes
    if isinstance(name, str) and name in ALL:
        return name
    text = str(dt)  # torch.float32 -> 'torch.float32'
    tail = text.rsplit(".", 1)[-1]
    if tail in ALL:
        return tail
    type_name = getattr(dt, "__name__", None)  # scalar types such as numpy.float32
    if isinstance(type_name, str) and type_name in ALL:
        return type_name
    return None


def to_backend_dtype(xp: Any, dtype: Any) -> Any:
    """The namespace ``xp``'s own dtype for an agnograd or foreign dtype (``None`` stays ``None``)."""
    if dtype is None:
        return None
    name = dtype.name if isinstance(dtype, DType) else _backend_dtype_name(dtype)
    if name is None:
        raise TypeError(f"not a data type: {dtype!r}; use one of agnograd's dtypes, e.g. ag.float32")
    try:
        return getattr(xp, name)
    except AttributeError:
        raise TypeError(f"dtype {name} is not supported by this backend") from None


def from_backend_dtype(dt: Any, _cache: dict[tuple[type, Any], DType] = {}) -> DType:  # noqa: B006 - a cache
    """agnograd's :class:`DType` for a backend dtype object (cached per object)."""
    key = (type(dt), dt)  # the type first: never compare dtypes of two libraries
    try:
        return _cache[key]
    except (KeyError, TypeError):
        pass
    name = _backend_dtype_name(dt)
    if name is None:
        raise TypeError(f"agnograd has no dtype for {dt!r}")
    d = ALL[name]
    try:
        _cache[key] = d
    except TypeError:
        pass
    return d


# ---------------------------------------------------------------------------------------------
# The default floating dtype (PyTorch's ``torch.set_default_dtype``): unset, each backend keeps
# its own (NumPy float64, PyTorch float32) and nn layers use float32.

_default_float: DType | None = None


def set_default_dtype(dtype: Any) -> None:
    """Make ``dtype`` (``ag.float32`` or ``ag.float64``) the one default floating dtype, for
    every backend: ``ag.tensor`` of Python floats (and of lists of them), the creation
    functions called without ``dtype`` (``zeros``, ``ones``, ``empty``, ``eye``, ``linspace``,
    ``full`` with a float, ``arange`` with a float), and the parameters of ``agnograd.nn``
    layers (and ``nn.init``) created without ``dtype``. ``None`` restores the behaviour of a
    fresh session: each backend's own default (NumPy float64, PyTorch float32), float32 layers.

    Process-wide, as PyTorch's; arrays passed in keep their dtype.
    """
    global _default_float
    if dtype is None:
        _default_float = None
        return
    name = _backend_dtype_name(dtype)
    if name not in ("float32", "float64"):
        raise TypeError(f"set_default_dtype: the default must be float32 or float64, not {dtype!r}")
    _default_float = ALL[name]


def get_default_dtype() -> DType | None:
    """The dtype set by :func:`set_default_dtype`, or ``None`` when unset (each backend's own
    default applies, and nn layers use float32)."""
    return _default_float


def default_float_for(kind: str) -> DType | None:
    """The default to apply to a new array of ``kind`` (``'f'`` or ``'c'``) made without a dtype,
    or ``None`` (unset, or another kind)."""
    d = _default_float
    if d is None:
        return None
    if kind == "f":
        return d
    if kind == "c":
        return complex64 if d is float32 else complex128
    return None
