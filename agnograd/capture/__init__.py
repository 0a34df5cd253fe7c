"""Compiled steps: ``ag.capture`` and ``ag.jit``, one room.

- :mod:`._state` -- the per-thread capture-safety flag (``refuse``, ``recording``) and
  :class:`CaptureError`; free of any array library and of ``Tensor``, so the op modules and
  ``Tensor`` import it from below.
- :mod:`.program` -- trace a step once into the backend calls it makes
  (:mod:`agnograd.backends.tracing`) and compile them into a :class:`StagedProgram`.
- :mod:`.guards` -- what a recording assumed about the world outside its arrays (gradient
  buffers, ``requires_grad``, module and optimizer structure, hyperparameters, global modes),
  checked again before every replay.
- :mod:`.recordings` -- the recordings of one compiled function, chosen by input signature and
  guards: shared by ``capture`` and ``jit``.
- :mod:`.step` -- ``ag.capture`` (input and output buffers, CUDA graphs on CuPy).
- :mod:`.jit` -- ``ag.jit`` (fresh outputs, an LRU cache of recordings).

The heavy modules import ``Tensor``; this package's ``__init__`` imports none of them at
import time (``Tensor`` itself imports :mod:`._state` through it), so its public names are
loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._state import CaptureError

if TYPE_CHECKING:
    from .jit import JitFunction, jit
    from .program import StagedProgram
    from .step import CapturedStep, CheckResult, capture

__all__ = ["capture", "CapturedStep", "CaptureError", "CheckResult", "jit", "JitFunction",
           "StagedProgram"]

_LAZY = {"capture": "step", "CapturedStep": "step", "CheckResult": "step", "jit": "jit",
         "JitFunction": "jit", "StagedProgram": "program"}


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'agnograd.capture' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{mod}"), name)
