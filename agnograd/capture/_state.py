"""The capture-safety flag: is this thread recording a captured step (:func:`agnograd.capture`)?

Kept apart from ``agnograd/capture.py`` so the op modules and ``Tensor`` can import it without
import cycles, and free of any array library. Only the rare operations that synchronise with the
host (``Tensor.item()``, ``float(t)``, boolean-mask indexing, ``nonzero``, ``unique_*``, arrays
made from host data, transfers, host-drawn random numbers) call :func:`refuse`; elementwise ops
and the engine never look at the flag, so ordinary steps pay nothing for it.

``ACTIVE`` counts the threads recording right now: a one-load test that hot-ish paths (indexing)
make before looking at the thread-local flag.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["CaptureError", "ACTIVE", "capturing", "refuse", "recording", "register", "WHY_HOST",
           "WHY_TRANSFER", "WHY_SHAPE", "WHY_RANDOM", "who", "WORLD", "BACKWARDS", "touch", "Holder"]


class CaptureError(RuntimeError):
    """A step cannot be captured or replayed as recorded.

    Raised while :func:`agnograd.capture` records a step that synchronises with the host
    (``.item()``, ``float(t)``, boolean-mask indexing, ``nonzero``, host data, ...) -- on every
    backend, so a step that would break a CUDA graph fails on the CPU too -- and by a captured
    step called with inputs of the wrong shape, dtype or backend. The message names the op and
    why.
    """


class _State(threading.local):
    recording = False
    participants: list[Any] | None = None
    who = "ag.capture"  # the transform recording now, for error messages


# The world epoch: every change of the structure a recording may have assumed -- a Module
# attribute assigned or deleted, ``requires_grad`` switched, a ``.grad`` assigned, a hook added
# or removed, an optimizer's state replaced -- adds one. A replay whose epoch is unchanged since
# its guards last held skips their structural half (agnograd.capture.guards).
WORLD = [0]

# Backward walks run so far (every thread): a compiled function whose call ran none but returned
# a Tensor that requires grad is being used for its graph, which a replay does not have.
BACKWARDS = [0]


def touch() -> None:
    """Count a change of the world outside the arrays (see ``WORLD``)."""
    WORLD[0] += 1


class Holder:
    """Marker base of the objects whose attributes a recording guards (``nn.Module``,
    ``optim.Optimizer``): what they point to, and their Python values, are checked before each
    replay. ``_guard_items()`` lists them as ``(name, value)``; containers are walked."""

    __slots__ = ()

    def _guard_items(self) -> list[tuple[str, Any]]:
        return [(k, v) for k, v in vars(self).items() if not k.startswith("_")]


_state = _State()
ACTIVE = 0  # threads recording now (process-wide; the thread-local flag is the authority)
_lock = threading.Lock()

_WHY_SYNC = ("it reads device data on the host: a synchronisation that a recording (a CUDA graph) "
             "cannot contain, and the value would stay frozen at its recorded value; keep the "
             "value on the device as a Tensor, or compute it outside the step")
WHY_HOST = ("it copies host data to the device, a transfer a CUDA graph cannot record (and it would "
            "freeze the values); pass the data as an input of the step, or create constants with "
            "ag.full / ag.zeros_like, which run on the device")
WHY_TRANSFER = ("it moves data between backends through the host, which a recording cannot "
                "contain; move the data before the step")
WHY_SHAPE = ("the size of its result depends on the data, so the device must report it to the "
             "host; captured steps need static shapes (use ag.where with a mask instead)")
WHY_RANDOM = ("its random numbers are drawn on the host and copied in; a recording would replay "
              "the same numbers every step")


def capturing() -> bool:
    """Whether this thread is recording a captured step now."""
    return _state.recording


def who() -> str:
    """``"ag.jit"`` or ``"ag.capture"``: the transform recording in this thread (for messages)."""
    return _state.who


def refuse(op: str, why: str = _WHY_SYNC, hint: str = "") -> None:
    """Raise :class:`CaptureError` naming ``op`` and ``why`` if this thread is recording."""
    if _state.recording:
        raise CaptureError(f"{op} is not allowed inside a step recorded by {_state.who}: {why}"
                           + (f". {hint}" if hint else ""))


def register(obj: Any) -> None:
    """Remember ``obj`` (a capturable optimizer) as taking part in the step being recorded: the
    captured step syncs its hyperparameters before every replay and snapshots its state in
    ``check()``."""
    parts = _state.participants
    if _state.recording and parts is not None and all(p is not obj for p in parts):
        parts.append(obj)


@contextlib.contextmanager
def recording(who: str = "ag.capture") -> Iterator[list[Any]]:
    """Turn the flag on for this thread; yields the list that :func:`register` fills. ``who``
    (``"ag.capture"`` or ``"ag.jit"``) is named by the errors raised meanwhile."""
    global ACTIVE
    if _state.recording:
        raise CaptureError(f"{who}: a step is already being recorded in this thread by "
                           f"{_state.who}; ag.capture and ag.jit cannot be nested")
    parts: list[Any] = []
    _state.recording = True
    _state.participants = parts
    previous, _state.who = _state.who, who
    with _lock:
        ACTIVE += 1
    try:
        yield parts
    finally:
        _state.recording = False
        _state.participants = None
        _state.who = previous
        with _lock:
            ACTIVE -= 1
