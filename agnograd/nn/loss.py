"""Loss modules (PyTorch's ``nn.CrossEntropyLoss`` and friends): each holds the options of
the function of the same name in :mod:`agnograd.nn.functional` and calls it in ``forward``.

Class weights (``weight``, ``pos_weight``) are buffers, as in PyTorch: in ``state_dict`` under
the same keys when given, not parameters, and converted by ``astype``/``to_backend``. The
deprecated ``size_average``/``reduce`` arguments map to ``reduction`` as PyTorch maps them.
"""

from __future__ import annotations

from typing import Any

import agnograd as ag

from . import functional as F
from .functional import _legacy_reduction
from .module import Module

__all__ = ["CrossEntropyLoss", "NLLLoss", "MSELoss", "L1Loss", "HuberLoss", "SmoothL1Loss",
           "BCELoss", "BCEWithLogitsLoss", "KLDivLoss"]


def _buffer(v: Any) -> ag.Tensor | None:
    """``v`` as a Tensor (``None`` stays ``None``)."""
    if v is None or isinstance(v, ag.Tensor):
        return v
    return ag.asarray(v)


class _Loss(Module):
    """A loss with a ``reduction`` (``"mean"``, ``"sum"`` or ``"none"``)."""

    reduction: str

    def __init__(self, size_average: bool | None = None, reduce: bool | None = None,
                 reduction: str = "mean") -> None:
        self.reduction = _legacy_reduction(size_average, reduce, reduction)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}" if self.reduction != "mean" else ""


class _WeightedLoss(_Loss):
    weight: ag.Tensor | None

    def __init__(self, weight: Any = None, size_average: bool | None = None,
                 reduce: bool | None = None, reduction: str = "mean") -> None:
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", _buffer(weight))


class CrossEntropyLoss(_WeightedLoss):
    """:func:`~agnograd.nn.functional.cross_entropy` as a module: ``loss(input, target)`` with
    logits ``input`` ``(N, C)``, ``(N, C, d1, ...)`` or ``(C,)`` and integer class labels or
    class probabilities ``target``.

    Args:
        weight: one weight per class (a buffer), or ``None``.
        size_average: PyTorch's deprecated spelling of ``reduction`` (``False``: ``"sum"``).
        reduce: PyTorch's deprecated spelling of ``reduction`` (``False``: ``"none"``).
        ignore_index: a label that contributes nothing.
        reduction: ``"mean"`` (weighted by the labels' class weights), ``"sum"`` or ``"none"``.
        label_smoothing: ``ε`` in ``[0, 1]``: the target is ``(1 - ε) target + ε / C``.
    """

    def __init__(self, weight: Any = None, size_average: bool | None = None,
                 ignore_index: int = -100, reduce: bool | None = None, reduction: str = "mean",
                 label_smoothing: float = 0.0) -> None:
        super().__init__(weight, size_average, reduce, reduction)
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing

    def forward(self, input: ag.Tensor, target: Any) -> ag.Tensor:
        return F.cross_entropy(input, target, weight=self.weight, ignore_index=self.ignore_index,
                               reduction=self.reduction,  # type: ignore[arg-type]
                               label_smoothing=self.label_smoothing)


class NLLLoss(_WeightedLoss):
    """:func:`~agnograd.nn.functional.nll_loss` as a module: ``loss(input, target)`` with
    log-probabilities ``input`` ``(N, C)``, ``(N, C, d1, ...)`` or ``(C,)`` and integer labels.

    Args:
        weight: one weight per class (a buffer), or ``None``.
        size_average: PyTorch's deprecated spelling of ``reduction`` (``False``: ``"sum"``).
        reduce: PyTorch's deprecated spelling of ``reduction`` (``False``: ``"none"``).
        ignore_index: a label that contributes nothing.
        reduction: ``"mean"`` (weighted), ``"sum"`` or ``"none"``.
    """

    def __init__(self, weight: Any = None, size_average: bool | None = None,
                 ignore_index: int = -100, reduce: bool | None = None,
                 reduction: str = "mean") -> None:
        super().__init__(weight, size_average, reduce, reduction)
        self.ignore_index = ignore_index

    def forward(self, input: ag.Tensor, target: Any) -> ag.Tensor:
        return F.nll_loss(input, target, weight=self.weight, ignore_index=self.ignore_index,
                          reduction=self.reduction)  # type: ignore[arg-type]


class MSELoss(_Loss):
    """:func:`~agnograd.nn.functional.mse_loss` as a module: ``(input - target)²``, reduced.

    Args:
        size_average: PyTorch's deprecated spelling of ``reduction`` (``False``: ``"sum"``).
        reduce: PyTorch's deprecated spelling of ``reduction`` (``False``: ``"none"``).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
    """

    def forward(self, input: ag.Tensor, target: Any) -> ag.Tensor:
        return F.mse_loss(input, target, reduction=self.reduction)  # type: ignore[arg-type]


class L1Loss(_Loss):
    """:func:`~agnograd.nn.functional.l1_loss` as a module: ``|input - target|``, reduced.

    Args:
        size_average: PyTorch's deprecated spelling of ``reduction`` (``False``: ``"sum"``).
        reduce: PyTorch's deprecated spelling of ``reduction`` (``False``: ``"none"``).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
    """

    def forward(self, input: ag.Tensor, target: Any) -> ag.Tensor:
        return F.l1_loss(input, target, reduction=self.reduction)  # type: ignore[arg-type]


class HuberLoss(_Loss):
    """:func:`~agnograd.nn.functional.huber_loss` as a module.

    Args:
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        delta: where the loss turns from quadratic to linear (positive).
    """

    def __init__(self, reduction: str = "mean", delta: float = 1.0) -> None:
        super().__init__(reduction=reduction)
        self.delta = delta

    def forward(self, input: ag.Tensor, target: Any) -> ag.Tensor:
        return F.huber_loss(input, target, reduction=self.reduction,  # type: ignore[arg-type]
                            delta=self.delta)


class SmoothL1Loss(_Loss):
    """:func:`~agnograd.nn.functional.smooth_l1_loss` as a module.

    Args:
        size_average: PyTorch's deprecated spelling of ``reduction`` (``False``: ``"sum"``).
        reduce: PyTorch's deprecated spelling of ``reduction`` (``False``: ``"none"``).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        beta: where the loss turns from quadratic to linear (non-negative; 0 is ``L1Loss``).
    """

    def __init__(self, size_average: bool | None = None, reduce: bool | None = None,
                 reduction: str = "mean", beta: float = 1.0) -> None:
        super().__init__(size_average, reduce, reduction)
        self.beta = beta

    def forward(self, input: ag.Tensor, target: Any) -> ag.Tensor:
        return F.smooth_l1_loss(input, target, reduction=self.reduction,  # type: ignore[arg-type]
                                beta=self.beta)


class BCELoss(_WeightedLoss):
    """:func:`~agnograd.nn.functional.binary_cross_entropy` as a module: ``loss(input, target)``
    with probabilities ``input`` in ``[0, 1]`` (logs clamped at -100, as PyTorch's).

    Args:
        weight: a weight per element, broadcast to the input (a buffer), or ``None``.
        size_average: PyTorch's deprecated spelling of ``reduction`` (``False``: ``"sum"``).
        reduce: PyTorch's deprecated spelling of ``reduction`` (``False``: ``"none"``).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
    """

    def forward(self, input: ag.Tensor, target: Any) -> ag.Tensor:
        return F.binary_cross_entropy(input, target, weight=self.weight, reduction=self.reduction)


class BCEWithLogitsLoss(_Loss):
    """:func:`~agnograd.nn.functional.binary_cross_entropy_with_logits` as a module.

    Args:
        weight: a weight per element, broadcast to the logits (a buffer), or ``None``.
        size_average: PyTorch's deprecated spelling of ``reduction`` (``False``: ``"sum"``).
        reduce: PyTorch's deprecated spelling of ``reduction`` (``False``: ``"none"``).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        pos_weight: the positive term's weight, one per class (a buffer), or ``None``.
    """

    weight: ag.Tensor | None
    pos_weight: ag.Tensor | None

    def __init__(self, weight: Any = None, size_average: bool | None = None,
                 reduce: bool | None = None, reduction: str = "mean",
                 pos_weight: Any = None) -> None:
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", _buffer(weight))
        self.register_buffer("pos_weight", _buffer(pos_weight))

    def forward(self, input: ag.Tensor, target: Any) -> ag.Tensor:
        return F.binary_cross_entropy_with_logits(
            input, target, weight=self.weight, reduction=self.reduction,  # type: ignore[arg-type]
            pos_weight=self.pos_weight)


class KLDivLoss(_Loss):
    """:func:`~agnograd.nn.functional.kl_div` as a module: ``loss(input, target)`` with
    log-probabilities ``input``.

    Args:
        size_average: PyTorch's deprecated spelling of ``reduction`` (``False``: ``"sum"``).
        reduce: PyTorch's deprecated spelling of ``reduction`` (``False``: ``"none"``).
        reduction: ``"mean"`` (over every element), ``"batchmean"`` (the divergence),
            ``"sum"`` or ``"none"``.
        log_target: ``target`` is given as log-probabilities.
    """

    def __init__(self, size_average: bool | None = None, reduce: bool | None = None,
                 reduction: str = "mean", log_target: bool = False) -> None:
        super().__init__(size_average, reduce, reduction)
        self.log_target = log_target

    def forward(self, input: ag.Tensor, target: Any) -> ag.Tensor:
        return F.kl_div(input, target, reduction=self.reduction, log_target=self.log_target)
