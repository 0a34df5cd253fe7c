"""Learning-rate schedules with PyTorch's semantics: ``StepLR``, ``ExponentialLR``,
``CosineAnnealingLR`` and ``LinearLR`` (linear warm-up).

A scheduler sets ``group["lr"]`` in its optimizer's parameter groups. Call
``scheduler.step()`` after ``optimizer.step()``, once per epoch (or per step, as the schedule is
meant). The rates follow PyTorch's recursive ("chainable") formulas, so the sequence equals
``torch.optim.lr_scheduler``'s to the last bit.

Several schedulers on one optimizer compose as in PyTorch: each ``get_lr`` scales the rate the
others left in ``group["lr"]``, and every scheduler's ``base_lrs`` is the group's
``initial_lr`` -- the rate before any scheduler touched it, recorded in the group by the first
scheduler created (``group.setdefault("initial_lr", group["lr"])``). A linear warm-up then a
cosine decay, both created on the same optimizer and both stepped every epoch, give PyTorch's
documented sequence. ``initial_lr`` travels with the optimizer's ``state_dict``; a scheduler
created with ``last_epoch=k`` (resuming at epoch ``k``, as PyTorch's) takes its ``base_lrs``
from it and needs it in every group.

A capturable optimizer (``capturable=True``) keeps its learning rates on the device; it copies
``group["lr"]`` there before every replay of a step recorded by :func:`agnograd.capture` (and
before every eager step), so a captured step sees the rate a scheduler set between replays.
``initial_lr`` is never read by a step, and a recording does not check it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

from .optimizer import Optimizer

__all__ = ["LRScheduler", "StepLR", "ExponentialLR", "CosineAnnealingLR", "LinearLR"]

# PyTorch's scheduler state dicts hold these too; they are bookkeeping of a step in progress.
_TRANSIENT = ("_is_initial", "_get_lr_called_within_step")


class LRScheduler:
    """Base class: ``step()`` advances ``last_epoch`` and writes :meth:`get_lr` into the
    optimizer's groups.

    Args:
        optimizer: the optimizer whose ``group["lr"]`` the scheduler sets.
        last_epoch: ``-1`` (the default) starts the schedule: every group without an
            ``initial_lr`` gets its current ``lr`` as one. ``k >= 0`` resumes a schedule after
            epoch ``k`` (PyTorch's rule): the groups must already hold ``initial_lr`` (load the
            optimizer's state dict first), and the constructor's step takes epoch ``k + 1``.

    Attributes:
        optimizer: the optimizer.
        base_lrs: every group's ``initial_lr`` (its rate before any scheduler changed it).
        last_epoch: the epoch of the last :meth:`step` (0 right after ``last_epoch=-1``).

    Raises:
        TypeError: ``optimizer`` is not an agnograd Optimizer, or ``last_epoch`` not an int.
        KeyError: ``last_epoch != -1`` and a group has no ``initial_lr`` (as PyTorch).
    """

    _is_initial: bool = False

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__} needs an agnograd Optimizer, not "
                            f"{type(optimizer).__name__}")
        if isinstance(last_epoch, bool) or not isinstance(last_epoch, int):
            raise TypeError(f"{type(self).__name__}: last_epoch must be an int (-1 for a new "
                            f"schedule), not {last_epoch!r}")
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for i, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise KeyError(
                        f"{type(self).__name__}(last_epoch={last_epoch}): param_groups[{i}] has "
                        "no 'initial_lr'. A scheduler resumed with last_epoch >= 0 takes its "
                        "base rates from the groups' 'initial_lr', which the first scheduler on "
                        "an optimizer records: load the optimizer's state_dict (saved after a "
                        "scheduler was created) before creating this one, or pass "
                        "last_epoch=-1 to start a new schedule")
        self.base_lrs: list[float] = [g["initial_lr"] for g in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()  # as PyTorch: the constructor takes the first epoch
        finally:
            self._is_initial = False

    def get_lr(self) -> list[float]:
        """The learning rates for ``last_epoch``, from the current ones (the chainable form)."""
        raise NotImplementedError

    def _get_closed_form_lr(self) -> list[float]:
        """The learning rates for ``last_epoch`` from ``base_lrs`` alone (the closed form)."""
        raise NotImplementedError

    def get_last_lr(self) -> list[float]:
        """The learning rates the last :meth:`step` set, one per parameter group."""
        return list(self._last_lr)

    def step(self, epoch: int | None = None) -> None:
        """Advance the schedule by one and set every ``group["lr"]``; call it after
        ``optimizer.step()``.

        ``epoch`` (deprecated, as in PyTorch; it warns) jumps to that epoch and sets the closed
        form's rates, which ignore any other scheduler on the optimizer.
        """
        self._step_count += 1
        if epoch is None:
            self.last_epoch += 1
            values = self.get_lr()
        else:
            warnings.warn(f"{type(self).__name__}.step(epoch) is deprecated (as in PyTorch): it "
                          "sets the closed form's rate for that epoch, ignoring other schedulers "
                          "on the optimizer; call step() once per epoch instead",
                          UserWarning, stacklevel=2)
            self.last_epoch = epoch
            values = self._get_closed_form_lr()
        for group, lr in zip(self.optimizer.param_groups, values):
            group["lr"] = lr
        self._last_lr = [float(g["lr"]) for g in self.optimizer.param_groups]

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Every attribute but the optimizer (plain numbers and lists: JSON-serialisable), as
        PyTorch's."""
        return {k: (list(v) if isinstance(v, list) else v) for k, v in vars(self).items()
                if k != "optimizer" and k not in _TRANSIENT}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (the optimizer's ``group["lr"]`` and ``initial_lr`` are
        restored by the optimizer's own ``load_state_dict``). A PyTorch scheduler's state dict
        of the same class loads too (its bookkeeping of a step in progress is skipped).

        Raises:
            ValueError: an entry this scheduler does not have.
        """
        entries = {k: v for k, v in state_dict.items() if k not in _TRANSIENT}
        unknown = [k for k in entries if k not in vars(self) or k == "optimizer"]
        if unknown:
            raise ValueError(f"{type(self).__name__}.load_state_dict: unknown entries "
                             f"{', '.join(map(repr, unknown))}")
        for k, v in entries.items():
            setattr(self, k, list(v) if isinstance(v, (list, tuple)) else v)

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.state_dict().items()
                         if k not in ("base_lrs", "_last_lr", "last_epoch", "_step_count"))
        return f"{type(self).__name__}({opts}, last_epoch={self.last_epoch})"

    def _lrs(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]


class StepLR(LRScheduler):
    """Multiply the learning rate by ``gamma`` every ``step_size`` steps (PyTorch's ``StepLR``):
    ``lr = base_lr · gamma ** (last_epoch // step_size)``."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1,
                 last_epoch: int = -1) -> None:
        if not (isinstance(step_size, int) and step_size >= 1):
            raise ValueError(f"StepLR: step_size must be a positive integer, not {step_size!r}")
        self.step_size = step_size
        self.gamma = float(gamma)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return self._lrs()
        return [lr * self.gamma for lr in self._lrs()]

    def _get_closed_form_lr(self) -> list[float]:
        return [base * self.gamma ** (self.last_epoch // self.step_size) for base in self.base_lrs]


class ExponentialLR(LRScheduler):
    """Multiply the learning rate by ``gamma`` at every step (PyTorch's ``ExponentialLR``):
    ``lr = base_lr · gamma ** last_epoch``."""

    def __init__(self, optimizer: Optimizer, gamma: float, last_epoch: int = -1) -> None:
        self.gamma = float(gamma)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        if self._is_initial:
            return self._lrs()
        return [lr * self.gamma for lr in self._lrs()]

    def _get_closed_form_lr(self) -> list[float]:
        return [base * self.gamma**self.last_epoch for base in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """Cosine annealing from the initial rate to ``eta_min`` over ``T_max`` steps, without
    restarts (PyTorch's ``CosineAnnealingLR``, recursive form):
    ``lr ≈ eta_min + (base_lr - eta_min) (1 + cos(π · last_epoch / T_max)) / 2``; past
    ``T_max`` the rate rises again along the cosine, as PyTorch's does."""

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0,
                 last_epoch: int = -1) -> None:
        if not (isinstance(T_max, int) and T_max >= 1):
            raise ValueError(f"CosineAnnealingLR: T_max must be a positive integer, not {T_max!r}")
        self.T_max = T_max
        self.eta_min = float(eta_min)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        e, T, lo = self.last_epoch, self.T_max, self.eta_min
        if self._is_initial:
            return self._lrs()
        if self._step_count == 1 and e > 0:  # PyTorch's closed-form branch
            return [lo + (base - lo) * (1 + math.cos(e * math.pi / T)) / 2 for base in self.base_lrs]
        if (e - 1 - T) % (2 * T) == 0:
            return [lr + (base - lo) * (1 - math.cos(math.pi / T)) / 2
                    for base, lr in zip(self.base_lrs, self._lrs())]
        return [(1 + math.cos(math.pi * e / T)) / (1 + math.cos(math.pi * (e - 1) / T)) * (lr - lo) + lo
                for lr in self._lrs()]

    def _get_closed_form_lr(self) -> list[float]:
        e, T, lo = self.last_epoch, self.T_max, self.eta_min
        return [lo + (base - lo) * (1 + math.cos(math.pi * e / T)) / 2 for base in self.base_lrs]


class LinearLR(LRScheduler):
    """Scale the learning rate by a factor going linearly from ``start_factor`` to
    ``end_factor`` over ``total_iters`` steps, then hold it (PyTorch's ``LinearLR``): a linear
    warm-up with the defaults ``start_factor=1/3, end_factor=1``."""

    def __init__(self, optimizer: Optimizer, start_factor: float = 1.0 / 3, end_factor: float = 1.0,
                 total_iters: int = 5, last_epoch: int = -1) -> None:
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
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        e, a, b, n = self.last_epoch, self.start_factor, self.end_factor, self.total_iters
        if e == 0:
            return [lr * a for lr in self._lrs()]
        if self._is_initial or e > n:
            return self._lrs()
        return [lr * (1.0 + (b - a) / (n * a + (e - 1) * (b - a))) for lr in self._lrs()]

    def _get_closed_form_lr(self) -> list[float]:
        e, a, b, n = self.last_epoch, self.start_factor, self.end_factor, self.total_iters
        return [base * (a + (b - a) * min(n, e) / n) for base in self.base_lrs]
