"""The array-api-strict backend: the standard's reference implementation, nothing more (the
test suite's check that agnograd uses only standard functions)."""

from __future__ import annotations

from typing import Any

import array_api_compat
import array_api_strict as xp

from . import Backend

__all__ = ["load", "owns", "private"]


def load() -> Backend:
    return Backend("array_api_strict", xp, type(xp.asarray(0)), private=private)


def private(a: Any) -> bool:
    """Its own writable memory: the NumPy array inside (``_array``) is no view and writeable
    (array-api-strict's ``broadcast_to`` gives a read-only view)."""
    inner = getattr(a, "_array", None)
    return inner is not None and inner.base is None and bool(inner.flags.writeable)


def owns(a: Any) -> bool:
    return hasattr(a, "__array_namespace__") and bool(
        array_api_compat.is_array_api_strict_namespace(a.__array_namespace__()))
