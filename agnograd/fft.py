"""The Array API ``fft`` extension over agnograd Tensors (``ag.fft.fft``, ``ag.fft.rfft``, ...).

Every transform (and ``fftshift``/``ifftshift``) is differentiable, with complex gradients in
PyTorch's convention (see docs/complex.md); ``fftfreq``/``rfftfreq`` are creation functions.
The functions live in ``agnograd/_ops/fft.py`` next to their rules; this module is the public
namespace. It works on every backend whose namespace has ``fft`` (NumPy, CuPy, PyTorch,
array_api_strict, Dask); on one without, each function raises ``NotImplementedError``. Names
are listed statically, so type checkers see them (a test checks ``__all__`` against the
extension's names, ``_ops.fft.EXTENSION_ALL``).
"""

from __future__ import annotations

from ._ops.fft import (
    fft,
    fftfreq,
    fftn,
    fftshift,
    hfft,
    ifft,
    ifftn,
    ifftshift,
    ihfft,
    irfft,
    irfftn,
    rfft,
    rfftfreq,
    rfftn,
)

__all__ = [
    "fft",
    "fftfreq",
    "fftn",
    "fftshift",
    "hfft",
    "ifft",
    "ifftn",
    "ifftshift",
    "ihfft",
    "irfft",
    "irfftn",
    "rfft",
    "rfftfreq",
    "rfftn",
]
