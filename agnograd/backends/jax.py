"""The JAX backend: JAX implements the standard in ``jax.numpy`` itself. Arrays may sit on
several devices (``multi_device``)."""

from __future__ import annotations

from typing import Any

import array_api_compat
import jax.numpy as xp

from . import Backend, sample_array_type
from .special import jax_special

__all__ = ["load", "owns"]


def load() -> Backend:
    return Backend("jax", xp, sample_array_type("jax", xp), multi_device=True,
                   on_host=lambda device: getattr(device, "platform", None) == "cpu",
                   special=jax_special, private=lambda a: True)  # immutable arrays


def owns(a: Any) -> bool:
    return bool(array_api_compat.is_jax_array(a))
