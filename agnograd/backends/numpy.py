"""The NumPy backend: the host library, and the default backend.

NumPy returns scalars (``numpy.float64``) for 0-d results; the Backend turns them back into
0-d arrays (``scalar_type``). Scatter-add is ``bincount``.
"""

from __future__ import annotations

from typing import Any

import array_api_compat
import array_api_compat.numpy as xp
import numpy as np

from . import Backend
from .special import scipy_special

__all__ = ["load", "owns", "scatter_add"]


def load() -> Backend:
    return Backend("numpy", xp, np.ndarray, scalar_type=np.generic, scalar_to_array=np.asarray,
                   scatter_add=scatter_add, special=scipy_special)


def owns(a: Any) -> bool:
    """A NumPy array or scalar (``numpy.matrix`` is not an Array API array)."""
    return isinstance(a, np.generic) or (
        array_api_compat.is_array_api_obj(a) and array_api_compat.is_numpy_array(a))


def scatter_add(xp: Any, n: int, index: Any, values: Any) -> Any:
    # bincount sums in float64 in one pass; add.at is an order of magnitude slower.
    return np.bincount(index, weights=values, minlength=n).astype(values.dtype, copy=False)
