"""Weight initialisation: Glorot (Xavier) and He (Kaiming), drawn from a seeded host generator
and then moved to the chosen backend, so one seed gives the same weights on every backend.

A shape is read as ``(fan_in, fan_out, *kernel)``: the first axis counts inputs. (PyTorch's
weight layouts put the outputs first: :class:`~agnograd.nn.Linear` and the ``Conv`` layers draw
in this layout and store the transpose, ``(out_features, in_features)``.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import agnograd as ag

from ..backends.host import HostRNG, host_rng

__all__ = ["glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "initializer",
           "default_dtype"]

Seed = int | Sequence[int] | HostRNG | None


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) < 1:
        raise ValueError("initialisers need a shape with at least one dimension")
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[2:])
    return shape[0] * receptive, shape[1] * receptive


def default_dtype(dtype: Any = None) -> Any:
    """The dtype of new parameters: ``dtype`` if given, else the one set by
    :func:`agnograd.set_default_dtype`, else float32 (on every backend)."""
    if dtype is not None:
        return dtype
    return ag.get_default_dtype() or ag.float32


def _make(host: Any, backend: str | None, dtype: Any, requires_grad: bool) -> ag.Tensor:
    return ag.tensor(host, backend=backend, dtype=default_dtype(dtype), requires_grad=requires_grad)


def glorot_uniform(shape: tuple[int, ...], seed: Seed = None, backend: str | None = None,
                   dtype: Any = None, requires_grad: bool = True) -> ag.Tensor:
    """Uniform on ``±√(6 / (fan_in + fan_out))`` (Glorot & Bengio, 2010): for tanh, sigmoid
    and linear layers. ``dtype`` defaults to :func:`default_dtype`."""
    fan_in, fan_out = _fans(shape)
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return _make(host_rng(seed).uniform(-limit, limit, size=shape), backend, dtype, requires_grad)


def glorot_normal(shape: tuple[int, ...], seed: Seed = None, backend: str | None = None,
                  dtype: Any = None, requires_grad: bool = True) -> ag.Tensor:
    """Normal with standard deviation ``√(2 / (fan_in + fan_out))``."""
    fan_in, fan_out = _fans(shape)
    std = math.sqrt(2.0 / (fan_in + fan_out))
    return _make(host_rng(seed).normal(0.0, std, size=shape), backend, dtype, requires_grad)


def he_uniform(shape: tuple[int, ...], seed: Seed = None, backend: str | None = None,
               dtype: Any = None, requires_grad: bool = True) -> ag.Tensor:
    """Uniform on ``±√(6 / fan_in)`` (He et al., 2015): for ReLU-like layers."""
    fan_in, _ = _fans(shape)
    limit = math.sqrt(6.0 / fan_in)
    return _make(host_rng(seed).uniform(-limit, limit, size=shape), backend, dtype, requires_grad)


def he_normal(shape: tuple[int, ...], seed: Seed = None, backend: str | None = None,
              dtype: Any = None, requires_grad: bool = True) -> ag.Tensor:
    """Normal with standard deviation ``√(2 / fan_in)`` (He et al., 2015)."""
    fan_in, _ = _fans(shape)
    std = math.sqrt(2.0 / fan_in)
    return _make(host_rng(seed).normal(0.0, std, size=shape), backend, dtype, requires_grad)


_BY_NAME = {
    "glorot": glorot_uniform, "glorot_uniform": glorot_uniform, "glorot_normal": glorot_normal,
    "xavier": glorot_uniform, "he": he_normal, "he_normal": he_normal, "he_uniform": he_uniform,
    "kaiming": he_normal,
}


def initializer(name: str) -> Any:
    """The initialiser called ``name``: ``"glorot"`` (= ``"glorot_uniform"``),
    ``"glorot_normal"``, ``"he"`` (= ``"he_normal"``) or ``"he_uniform"``."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown initialiser {name!r}; choose one of {', '.join(sorted(_BY_NAME))}"
                         ) from None
