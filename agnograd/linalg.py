"""The Array API ``linalg`` extension over agnograd Tensors (``ag.linalg.inv``, ...).

Every function here is differentiable; see each docstring for its VJP rule. The functions live
in ``agnograd/_ops/linalg.py`` next to their rules; this module is the public namespace.
"""

from __future__ import annotations

from typing import Any

from ._ops import linalg as _impl

__all__ = list(_impl.EXTENSION_ALL)


def __getattr__(name: str) -> Any:  # pragma: no cover - only for names added after import
    if name in _impl.EXTENSION_ALL:
        return getattr(_impl, name)
    raise AttributeError(f"module 'agnograd.linalg' has no attribute {name!r}")


globals().update({_name: getattr(_impl, _name) for _name in __all__})
