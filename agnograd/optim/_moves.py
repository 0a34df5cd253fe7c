"""Tensors a module conversion replaced (``Module.astype``, ``Module.to_backend``), so that an
optimizer built before the conversion follows its parameters to the new Tensors.

PyTorch's conversions (``model.double()``, ``model.to(device)``) keep the Parameter objects and
swap their data, so an optimizer made earlier keeps training the model. agnograd's make new
Tensors (a compiled step's guards see a replaced tensor by identity); without this record the
optimizer would go on updating the old ones -- the model would silently stop learning. No
array library here: the conversion of the optimizer's state is the optimizer's.
"""

from __future__ import annotations

import weakref
from typing import Any

__all__ = ["EPOCH", "current", "note"]

_MOVED: dict[int, tuple[weakref.ref[Any], Any]] = {}  # id(old) -> (weakref to old, new)
EPOCH = [0]
"""Bumped by every :func:`note`: an optimizer compares it with the value it last followed."""


def note(old: Any, new: Any) -> None:
    """Record that ``new`` replaced ``old`` (the entry lives as long as ``old`` does)."""
    key = id(old)

    def gone(ref: weakref.ref[Any], key: int = key) -> None:
        entry = _MOVED.get(key)
        if entry is not None and entry[0] is ref:
            del _MOVED[key]

    _MOVED[key] = (weakref.ref(old, gone), new)
    EPOCH[0] += 1


def current(t: Any) -> Any:
    """The Tensor that stands for ``t`` now: ``t``, or what replaced it (followed through
    several conversions)."""
    while True:
        entry = _MOVED.get(id(t))
        if entry is None or entry[0]() is not t:
            return t
        t = entry[1]
