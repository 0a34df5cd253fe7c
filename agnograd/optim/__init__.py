"""Optimizers that update agnograd parameters in place, on whatever backend they live.

``SGD`` (momentum, Nesterov, weight decay), ``Adam`` and ``AdamW`` follow PyTorch's update
rules. Updates run under :func:`agnograd.no_grad` with in-place operators, so the parameter
Tensors (and the model holding them) keep their identity; the optimizer state is created with
``ag.zeros_like`` and so lives on the parameters' backend and device.
"""

from __future__ import annotations

from .methods import SGD, Adam, AdamW
from .optimizer import Optimizer, ParamGroup

__all__ = ["Optimizer", "ParamGroup", "SGD", "Adam", "AdamW"]
