"""The CuPy backend (NVIDIA GPUs), through array-api-compat's wrapper.

Arrays may sit on several GPUs (``multi_device``). Scatter-add is CuPy's atomic ``add.at``.
Arrays come to the host with ``.get()`` and from it with ``cupy.asarray`` (the Array API
``asarray`` of CuPy refuses host arrays). ``ag.capture`` records steps as CUDA graphs with
:class:`agnograd.backends.cuda_graph.CudaGraphRecorder` (``graph_recorder``).

The Backend's ``xp`` is array-api-compat's CuPy namespace as
:func:`~agnograd.backends.cuda_graph.graph_safe_namespace` wraps it, once, here: four of its
functions can also be recorded into a CUDA graph, and behave as array-api-compat's own in any
thread that is not recording one. So a capture never changes the Backend (see that module).
"""

from __future__ import annotations

from typing import Any

import array_api_compat
import array_api_compat.cupy as xp
import cupy

from . import Backend, BackendError
from ._fallbacks import host_copy
from .cuda_graph import CudaGraphRecorder, graph_safe_namespace
from .special import cupy_special

__all__ = ["describe_device", "load", "owns", "private", "scatter_add", "to_host"]


def load() -> Backend:
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDA driver missing or broken
        raise BackendError(
            f"backend 'cupy' is installed but CUDA is not usable here ({exc}); "
            "use a machine with an NVIDIA GPU and driver, or pick backend='numpy'"
        ) from exc
    if count == 0:
        raise BackendError(
            "backend 'cupy' is installed but no CUDA device is visible; "
            "use a machine with an NVIDIA GPU, or pick backend='numpy'"
        )
    return Backend("cupy", graph_safe_namespace(xp), cupy.ndarray, multi_device=True,
                   scatter_add=scatter_add, from_host=cupy.asarray,
                   graph_recorder=CudaGraphRecorder, special=cupy_special, private=private)


def private(a: Any) -> bool:
    """Its own memory: not a view of another array (``base`` is None)."""
    return a.base is None


def owns(a: Any) -> bool:
    return bool(array_api_compat.is_cupy_array(a))


def to_host(a: Any) -> Any:
    """A NumPy copy of a CuPy array (``.get()``)."""
    get = getattr(a, "get", None)
    if callable(get):
        return get()
    return host_copy(a)


def describe_device(device: Any) -> str:
    """``cuda:0 (NVIDIA H100 ...)``."""
    try:
        name = cupy.cuda.runtime.getDeviceProperties(device.id)["name"].decode()
    except Exception:  # no driver answer: the number alone
        name = ""
    return f"cuda:{device.id}" + (f" ({name})" if name else "")


def scatter_add(xp: Any, n: int, index: Any, values: Any) -> Any:
    if values.dtype.kind == "c":  # atomic adds are real: the two parts, each on its own
        re = scatter_add(xp, n, index, values.real)
        im = scatter_add(xp, n, index, values.imag)
        return (re + 1j * im).astype(values.dtype, copy=False)
    out = xp.zeros(n, dtype=values.dtype)
    cupy.add.at(out, index, values)  # atomic adds on the device
    return out
