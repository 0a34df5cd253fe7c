"""The PyTorch backend, through array-api-compat's wrapper.

Tensors may sit on several devices (``multi_device``). Tensors on a GPU come to the host through
``.cpu()``: DLPack and ``__array__`` refuse them. This module imports PyTorch only in
:func:`load`, so :func:`agnograd.backends.host_array` can route any object of the ``torch``
package here.
"""

from __future__ import annotations

from typing import Any

import array_api_compat

from . import Backend, compat_namespace, sample_array_type
from ._fallbacks import host_copy
from .special import torch_special

__all__ = ["load", "owns", "private", "to_host"]


def load() -> Backend:
    xp = compat_namespace("torch", "array_api_compat.torch")
    return Backend("torch", xp, sample_array_type("torch", xp), multi_device=True,
                   on_host=lambda device: getattr(device, "type", None) == "cpu",
                   special=torch_special, private=private)


def private(a: Any) -> bool:
    """Its own memory: not a view of another tensor (``_base`` is None; ``expand``, ``view``,
    slices and lazy conjugates have one)."""
    return getattr(a, "_base", 0) is None


def owns(a: Any) -> bool:
    return bool(array_api_compat.is_torch_array(a))


def to_host(a: Any) -> Any:
    """A NumPy copy of a tensor; one on a GPU goes through ``.cpu()`` (DLPack and
    ``__array__`` refuse it). A lazy conjugate (``torch.conj``, ``torch.fft.ihfft`` return
    one) is resolved first: DLPack and ``numpy()`` refuse the conjugate bit too."""
    if getattr(a, "is_conj", None) is not None and a.is_conj():
        a = a.resolve_conj()
    if getattr(a, "device", None) is not None and a.device.type != "cpu":
        return a.detach().cpu().numpy()
    return host_copy(a)
