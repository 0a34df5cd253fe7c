"""Gradient mode and anomaly mode: two per-thread switches the ops and the walk read.

``grad_mode.enabled`` says whether ops called in this thread record a graph (``no_grad`` and
friends set it); ``anomaly_mode.enabled`` whether new nodes remember where they were created and
backward checks every gradient for NaN/inf (:func:`detect_anomaly` sets it). Both are
``threading.local`` objects read as a plain attribute, because every recorded op reads one.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

__all__ = [
    "grad_mode",
    "anomaly_mode",
    "is_grad_enabled",
    "no_grad",
    "enable_grad",
    "set_grad_enabled",
    "GradModeContext",
    "detect_anomaly",
]

F = TypeVar("F", bound=Callable[..., Any])


class _GradMode(threading.local):
    enabled = True


class _AnomalyMode(threading.local):
    enabled = False


grad_mode = _GradMode()
"""``grad_mode.enabled``: whether ops called in this thread record a graph."""

anomaly_mode = _AnomalyMode()
"""``anomaly_mode.enabled``: whether this thread runs under ``agnograd.detect_anomaly()``."""


def is_grad_enabled() -> bool:
    """Whether ops called in this thread now record a graph."""
    return grad_mode.enabled


class GradModeContext:
    """Context manager and decorator that sets the gradient mode of the current thread."""

    __slots__ = ("_enabled", "_previous")

    def __init__(self, enabled: bool) -> None:
        self._enabled = enabled
        self._previous: list[bool] = []

    def __enter__(self) -> None:
        self._previous.append(grad_mode.enabled)
        grad_mode.enabled = self._enabled

    def __exit__(self, *exc: object) -> None:
        grad_mode.enabled = self._previous.pop()

    def __call__(self, fn: F) -> F:
        enabled = self._enabled

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with GradModeContext(enabled):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]


def no_grad() -> GradModeContext:
    """Ops inside do not record a graph (``with ag.no_grad():`` or ``@ag.no_grad()``)."""
    return GradModeContext(False)


def enable_grad() -> GradModeContext:
    """Ops inside record a graph, even within :func:`no_grad`."""
    return GradModeContext(True)


class _SetGradMode(GradModeContext):
    """What :func:`set_grad_enabled` returns: the mode is already set, so entering only keeps
    the one from before the call, which exiting restores (entering used to push the new mode
    too, and ``with ag.set_grad_enabled(False):`` left gradients off after the block)."""

    __slots__ = ()

    def __enter__(self) -> None:
        pass


def set_grad_enabled(mode: bool) -> GradModeContext:
    """Set the mode for the current thread now; as a context manager, restore it on exit."""
    ctx = _SetGradMode(bool(mode))
    ctx._previous.append(grad_mode.enabled)
    grad_mode.enabled = bool(mode)
    return ctx


@contextlib.contextmanager
def detect_anomaly() -> Iterator[None]:
    """Within the block, ops record where they were created (file:line), and backward checks
    every gradient it computes: the first op whose gradient contains NaN or inf raises
    ``FloatingPointError`` naming the op and that place. Costs a host sync per op: debug only."""
    previous = anomaly_mode.enabled
    anomaly_mode.enabled = True
    try:
        yield
    finally:
        anomaly_mode.enabled = previous
