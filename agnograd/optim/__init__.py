"""Optimizers that update agnograd parameters in place, on whatever backend they live.

``SGD`` (momentum, Nesterov, weight decay), ``Adam`` and ``AdamW`` (``amsgrad``), ``RMSprop``
and ``Adagrad`` follow PyTorch's update rules (all with ``maximize``);
``agnograd.optim.lr_scheduler`` holds PyTorch's ``StepLR``, ``MultiStepLR``, ``ExponentialLR``,
``CosineAnnealingLR``, ``CosineAnnealingWarmRestarts``, ``LinearLR``, ``ConstantLR``,
``PolynomialLR``, ``LambdaLR``, ``MultiplicativeLR``, ``OneCycleLR``, ``CyclicLR``,
``ReduceLROnPlateau``, ``SequentialLR`` and ``ChainedScheduler``.
Updates run under :func:`agnograd.no_grad` with in-place operators, so the parameter Tensors (and the model
holding them) keep their identity; the optimizer state is created with
``ag.zeros_like`` and so lives on the parameters' backend and device.
"""

from __future__ import annotations

from . import lr_scheduler
from .methods import SGD, Adagrad, Adam, AdamW, RMSprop
from .optimizer import Optimizer, ParamGroup

__all__ = ["Optimizer", "ParamGroup", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "lr_scheduler"]
