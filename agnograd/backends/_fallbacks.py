"""The standard fallbacks: what a backend gets when its module sets nothing better.

- :func:`scatter_add_standard`: scatter-add with Array API functions only (the standard has none).
- :func:`host_copy`: a NumPy copy (or view) of any array, through DLPack or ``__array__``.
- :func:`clone_namespace`: a copy of a namespace module with some functions replaced (the Dask
  backend's fixes, the CuPy backend's graph-safe namespace).
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Any

import array_api_compat
import numpy as np

__all__ = ["clone_namespace", "host_copy", "scatter_add_standard"]


def scatter_add_standard(xp: Any, n: int, index: Any, values: Any) -> Any:
    """Scatter-add written with Array API functions only (see :meth:`Backend.scatter_add`)."""
    dev = array_api_compat.device(values)
    order = xp.argsort(index, stable=True)
    sorted_index = xp.take(index, order)
    # Accumulate in float64 where the device has it: differences of a running sum lose the
    # low bits of small segments next to a large total.
    acc_dtype = values.dtype
    if values.dtype == xp.float32 and _has_float64(xp, dev):
        acc_dtype = xp.float64
    sorted_values = xp.astype(xp.take(values, order), acc_dtype)
    csum = xp.cumulative_sum(sorted_values, include_initial=True)
    targets = xp.arange(n, dtype=index.dtype, device=dev)
    lo = xp.searchsorted(sorted_index, targets, side="left")
    hi = xp.searchsorted(sorted_index, targets, side="right")
    return xp.astype(xp.take(csum, hi) - xp.take(csum, lo), values.dtype)


def _has_float64(xp: Any, dev: Any) -> bool:
    try:
        return "real floating" in xp.__array_namespace_info__().default_dtypes(device=dev) and (
            xp.__array_namespace_info__().dtypes(device=dev, kind="real floating").get("float64")
            is not None
        )
    except Exception:  # a namespace without the inspection API: assume the common case
        return True


def host_copy(a: Any) -> Any:
    """A NumPy copy (or view) of an array whose backend has no path of its own to the host:
    NumPy arrays as they are, NumPy scalars as 0-d arrays, anything else through DLPack, else
    through ``__array__``."""
    if isinstance(a, np.ndarray):
        return a
    if isinstance(a, np.generic):
        return np.asarray(a)
    try:
        return np.from_dlpack(a)
    except Exception:
        return np.asarray(a)


# What makes a module object the module on disk: not copied, so the copy is its own module.
_MODULE_IDENTITY = ("__name__", "__spec__", "__loader__", "__package__", "__path__", "__file__",
                    "__cached__")


def clone_namespace(base: Any, name: str, overrides: Mapping[str, Any]) -> types.ModuleType:
    """A new module object called ``name`` holding every name of the namespace module ``base``
    (its docstring, ``__array_api_version__``, ``__array_namespace_info__``, ``linalg``, ...),
    with ``overrides`` (name -> object) put over them. ``base`` itself is left untouched."""
    ns = types.ModuleType(name, getattr(base, "__doc__", None))
    ns.__dict__.update({k: v for k, v in vars(base).items() if k not in _MODULE_IDENTITY})
    ns.__dict__.update(overrides)
    return ns
