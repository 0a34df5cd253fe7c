"""The Array API ``fft`` extension over agnograd Tensors (``ag.fft.fft``, ``ag.fft.rfft``, ...).

Every transform (and ``fftshift``/``ifftshift``) is differentiable, with complex gradients in
PyTorch's convention (see docs/complex.md); ``fftfreq``/``rfftfreq`` are creation functions.
The functions live in ``agnograd/_ops/fft.py`` next to their rules; this module is the public
namespace. It works on every backend whose namespace has ``fft`` (NumPy, CuPy, PyTorch,
array_api_strict, Dask); on one without, each function raises ``NotImplementedError``.
"""

from __future__ import annotations

from typing import Any

from ._ops import fft as _impl

__all__ = list(_impl.EXTENSION_ALL)


def __getattr__(name: str) -> Any:  # pragma: no cover - only for names added after import
    if name in _impl.EXTENSION_ALL:
        return getattr(_impl, name)
    raise AttributeError(f"module 'agnograd.fft' has no attribute {name!r}")


globals().update({_name: getattr(_impl, _name) for _name in __all__})
