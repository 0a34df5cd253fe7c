"""``__array_namespace_info__``: the standard's inspection API for the agnograd namespace.

agnograd has no devices or dtypes of its own: every answer comes from the default backend's
own ``__array_namespace_info__`` (read when the info object is made), with its dtypes
translated to agnograd's :class:`~agnograd._dtypes.DType` objects. Backends without the
inspection API are probed instead.
"""

from __future__ import annotations

from typing import Any

from ._dtypes import ALL, DType, from_backend_dtype
from ._ops.data_types import _KINDS  # the standard's dtype kinds, defined once
from .backends import Backend, available_backends, get_backend, get_default_backend

__all__ = ["__array_namespace_info__"]



class Info:
    """What the default backend (at the time this object was made) offers, in agnograd's
    dtypes: ``capabilities()``, ``default_device()``, ``default_dtypes()``, ``dtypes()``,
    ``devices()``."""

    __slots__ = ("_backend", "_native")

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        make = getattr(backend.xp, "__array_namespace_info__", None)
        self._native: Any = make() if make is not None else None

    def __repr__(self) -> str:
        return f"<agnograd namespace info for backend '{self._backend.name}'>"

    def capabilities(self) -> dict[str, Any]:
        """``boolean indexing``, ``data-dependent shapes`` (True unless the backend says it
        cannot) and ``max dimensions`` (the backend's, None if it sets no limit or does not
        say)."""
        native: dict[str, Any] = {}
        if self._native is not None:
            native = dict(self._native.capabilities())
        return {
            "boolean indexing": bool(native.get("boolean indexing", True)),
            "data-dependent shapes": bool(native.get("data-dependent shapes", True)),
            "max dimensions": native.get("max dimensions"),
        }

    def default_device(self) -> Any:
        """The default backend's default device."""
        if self._native is not None:
            return self._native.default_device()
        return self._backend.device_of(self._backend.xp.asarray(0))

    def devices(self) -> tuple[Any, ...]:
        """The devices the default backend can create arrays on (a tuple, as 2025.12 says)."""
        if self._native is not None:
            return tuple(self._native.devices())
        return (self.default_device(),)

    def _for(self, device: Any) -> Info | None:
        """The info of the backend that owns ``device`` when that is not this one's."""
        if device is None:
            return None
        b = _owner(self, device)
        return None if b is self._backend else Info(b)

    def default_dtypes(self, *, device: Any = None) -> dict[str, DType]:
        """The default ``'real floating'``, ``'complex floating'``, ``'integral'`` and
        ``'indexing'`` dtypes (agnograd DTypes) on ``device`` (the default device if None; a
        device of another backend is answered by that backend)."""
        other = self._for(device)
        if other is not None:
            return other.default_dtypes(device=device)
        if self._native is not None:
            raw = self._native.default_dtypes(device=device)
            return {k: from_backend_dtype(v) for k, v in raw.items()}
        xp = self._backend.xp
        kw = {} if device is None else {"device": device}
        integral = from_backend_dtype(xp.asarray(0, **kw).dtype)
        return {
            "real floating": from_backend_dtype(xp.asarray(0.0, **kw).dtype),
            "complex floating": from_backend_dtype(xp.asarray(0j, **kw).dtype),
            "integral": integral,
            "indexing": integral,
        }

    def dtypes(self, *, device: Any = None, kind: str | tuple[str, ...] | None = None
               ) -> dict[str, DType]:
        """The dtypes available on ``device``, name -> agnograd DType, optionally only those of
        ``kind`` (a kind name as for :func:`agnograd.isdtype`, or a tuple of them); a device of
        another backend is answered by that backend."""
        other = self._for(device)
        if other is not None:
            return other.dtypes(device=device, kind=kind)
        if self._native is not None:
            raw = self._native.dtypes(device=device, kind=kind)
            return {name: from_backend_dtype(dt) for name, dt in raw.items()}
        kinds = _kind_letters(kind)
        xp = self._backend.xp
        return {name: d for name, d in ALL.items() if d.kind in kinds and hasattr(xp, name)}


def _has_device(info: Info, device: Any) -> bool:
    try:
        return any(d is device or d == device for d in info.devices())
    except Exception:  # a backend that cannot list or compare its devices: not this one
        return False


def _owner(info: Info, device: Any) -> Backend:
    """The backend whose devices include ``device``: ``info``'s own first, then the other
    available backends in agnograd's order (so ``"cpu"`` is the default backend's if it has
    one)."""
    if _has_device(info, device):
        return info._backend
    names = available_backends()
    for name in names:
        b = get_backend(name)
        if b is not info._backend and _has_device(Info(b), device):
            return b
    raise ValueError(
        f"device {device!r} ({type(device).__name__}) belongs to none of the available backends "
        f"({', '.join(names)}); pass a device from ag.__array_namespace_info__().devices(), "
        "or t.device of a Tensor"
    )


def _kind_letters(kind: str | tuple[str, ...] | None) -> str:
    if kind is None:
        return "biufc"
    if isinstance(kind, tuple):
        return "".join(_kind_letters(k) for k in kind)
    letters = _KINDS.get(kind)
    if letters is None:
        known = ", ".join(map(repr, _KINDS))
        raise ValueError(f"dtypes: unknown kind {kind!r}; use one of {known}, or a tuple of them")
    return letters


def __array_namespace_info__() -> Info:
    """The inspection API of the agnograd namespace, answering for the default backend."""
    return Info(get_default_backend())
