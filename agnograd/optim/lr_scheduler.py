"""Learning-rate schedules with PyTorch's semantics: ``StepLR``, ``ExponentialLR``,
``CosineAnnealingLR`` and ``LinearLR`` (linear warm-up).

A scheduler sets ``group["lr"]`` in its optimizer's parameter groups. Call
``scheduler.step()`` after ``optimizer.step()``, once per epoch (or per step, as the schedule is
meant). The rates follow PyTorch's recursive ("chainable") formulas, so the sequence equals
``torch.optim.lr_scheduler``'s to the last bit; two schedulers on one optimizer compose as in
PyTorch.

A capturable optimizer (``capturable=True``) keeps its learning rates on the device; it copies
``group["lr"]`` there before every replay of a step recorded by :func:`agnograd.capture` (and
before every eager step), so a captured step sees the rate a scheduler set between replays.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .optimizer import Optimizer

__all__ = ["LRScheduler", "StepLR", "ExponentialLR", "CosineAnnealingLR", "LinearLR"]


class LRScheduler:
    """Base class: ``step()`` advances ``last_epoch`` and writes :meth:`get_lr` into the
    optimizer's groups.

    Attributes:
        optimizer: the optimizer whose ``group["lr"]`` the scheduler sets.
        base_lrs: every group's learning rate when the scheduler was created.
        last_epoch: the number of ``step()`` calls so far (0 right after construction).
    """

    def __init__(self, optimizer: Optimizer) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__} needs an agnograd Optimizer, not "
                            f"{type(optimizer).__name__}")
        self.optimizer = optimizer
        self.base_lrs: list[float] = [float(g["lr"]) for g in optimizer.param_groups]
        self.last_epoch = -1
        self._initial = True
        self.step()  # as PyTorch: the constructor takes step 0
        self._initial = False

    def get_lr(self) -> list[float]:
        """The learning rates for ``last_epoch`` (computed from the current ones)."""
        raise NotImplementedError

    def get_last_lr(self) -> list[float]:
        """The learning rates the last :meth:`step` set, one per parameter group."""
        return list(self._last_lr)

    def step(self) -> None:
        """Advance the schedule by one and set every ``group["lr"]``; call it after
        ``optimizer.step()``."""
        self.last_epoch += 1
        values = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, values):
            group["lr"] = lr
        self._last_lr = [float(g["lr"]) for g in self.optimizer.param_groups]

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Every attribute but the optimizer (plain numbers and lists: JSON-serialisable)."""
        return {k: (list(v) if isinstance(v, list) else v) for k, v in vars(self).items()
                if k != "optimizer" and not k.startswith("_initial")}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (the optimizer's ``group["lr"]`` is restored by the
        optimizer's own ``load_state_dict``).

        Raises:
            ValueError: an entry this scheduler does not have.
        """
        unknown = [k for k in state_dict if k not in vars(self) or k == "optimizer"]
        if unknown:
            raise ValueError(f"{type(self).__name__}.load_state_dict: unknown entries "
                             f"{', '.join(map(repr, unknown))}")
        for k, v in state_dict.items():
            setattr(self, k, list(v) if isinstance(v, (list, tuple)) else v)

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.state_dict().items()
                         if k not in ("base_lrs", "_last_lr", "last_epoch"))
        return f"{type(self).__name__}({opts}, last_epoch={self.last_epoch})"

    def _lrs(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]


class StepLR(LRScheduler):
    """Multiply the learning rate by ``gamma`` every ``step_size`` steps (PyTorch's ``StepLR``):
    ``lr = base_lr · gamma ** (last_epoch // step_size)``."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        if not (isinstance(step_size, int) and step_size >= 1):
            raise ValueError(f"StepLR: step_size must be a positive integer, not {step_size!r}")
        self.step_size = step_size
        self.gamma = float(gamma)
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return self._lrs()
        return [lr * self.gamma for lr in self._lrs()]


class ExponentialLR(LRScheduler):
    """Multiply the learning rate by ``gamma`` at every step (PyTorch's ``ExponentialLR``):
    ``lr = base_lr · gamma ** last_epoch``."""

    def __init__(self, optimizer: Optimizer, gamma: float) -> None:
        self.gamma = float(gamma)
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        if self._initial:
            return self._lrs()
        return [lr * self.gamma for lr in self._lrs()]


class CosineAnnealingLR(LRScheduler):
    """Cosine annealing from the initial rate to ``eta_min`` over ``T_max`` steps, without
    restarts (PyTorch's ``CosineAnnealingLR``, recursive form):
    ``lr ≈ eta_min + (base_lr - eta_min) (1 + cos(π · last_epoch / T_max)) / 2``; past
    ``T_max`` the rate rises again along the cosine, as PyTorch's does."""

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0) -> None:
        if not (isinstance(T_max, int) and T_max >= 1):
            raise ValueError(f"CosineAnnealingLR: T_max must be a positive integer, not {T_max!r}")
        self.T_max = T_max
        self.eta_min = float(eta_min)
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        e, T, lo = self.last_epoch, self.T_max, self.eta_min
        if self._initial:
            return self._lrs()
        if (e - 1 - T) % (2 * T) == 0:
            return [lr + (base - lo) * (1 - math.cos(math.pi / T)) / 2
                    for base, lr in zip(self.base_lrs, self._lrs())]
        return [(1 + math.cos(math.pi * e / T)) / (1 + math.cos(math.pi * (e - 1) / T)) * (lr - lo) + lo
                for lr in self._lrs()]


class LinearLR(LRScheduler):
    """Scale the learning rate by a factor going linearly from ``start_factor`` to
    ``end_factor`` over ``total_iters`` steps, then hold it (PyTorch's ``LinearLR``): a linear
    warm-up with the defaults ``start_factor=1/3, end_factor=1``."""

    def __init__(self, optimizer: Optimizer, start_factor: float = 1.0 / 3, end_factor: float = 1.0,
                 total_iters: int = 5) -> None:
        if not 0 < start_factor <= 1:
            raise ValueError(f"LinearLR: start_factor must be in (0, 1], not {start_factor!r}")
        if not 0 <= end_factor <= 1:
            raise ValueError(f"LinearLR: end_factor must be in [0, 1], not {end_factor!r}")
        if not (isinstance(total_iters, int) and total_iters >= 0):
            raise ValueError(f"LinearLR: total_iters must be a non-negative integer, not "
                             f"{total_iters!r}")
        self.start_factor = float(start_factor)
        self.end_factor = float(end_factor)
        self.total_iters = total_iters
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        e, a, b, n = self.last_epoch, self.start_factor, self.end_factor, self.total_iters
        if e == 0:
            return [lr * a for lr in self._lrs()]
        if self._initial or e > n:
            return self._lrs()
        return [lr * (1.0 + (b - a) / (n * a + (e - 1) * (b - a))) for lr in self._lrs()]
