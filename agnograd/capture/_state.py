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
           "WHY_TRANSFER", "WHY_SHAPE", "WHY_RANDOM"]


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


def refuse(op: str, why: str = _WHY_SYNC, hint: str = "") -> None:
    """Raise :class:`CaptureError` naming ``op`` and ``why`` if this thread is recording."""
    if _state.recording:
        raise CaptureError(f"{op} is not allowed inside a step recorded by ag.capture: {why}"
                           + (f". {hint}" if hint else ""))


def register(obj: Any) -> None:
    """Remember ``obj`` (a capturable optimizer) as taking part in the step being recorded: the
    captured step syncs its hyperparameters before every replay and snapshots its state in
    ``check()``."""
    parts = _state.participants
    if _state.recording and parts is not None and all(p is not obj for p in parts):
        parts.append(obj)


@contextlib.contextmanager
def recording() -> Iterator[list[Any]]:
    """Turn the flag on for this thread; yields the list that :func:`register` fills."""
    global ACTIVE
    if _state.recording:
        raise CaptureError("ag.capture: a step is already being recorded in this thread; "
                           "captures cannot be nested")
    parts: list[Any] = []
    _state.recording = True
    _state.participants = parts
    with _lock:
        ACTIVE += 1
    try:
        yield parts
    finally:
        _state.recording = False
        _state.participants = None
        with _lock:
            ACTIVE -= 1
