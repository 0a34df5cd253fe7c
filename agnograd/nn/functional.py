"""Activations, losses and dropout as functions of Tensors (``agnograd.nn.functional``).

Everything here is written with agnograd ops only, so it runs -- and differentiates -- on every
backend. The losses are computed in their numerically stable forms: ``log_softmax`` and
``cross_entropy`` through ``logsumexp`` (shifted by the maximum), the sigmoid losses through
``logaddexp``; none of them overflows or produces NaN gradients at logits of ±1000.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import agnograd as ag

from .. import _capture_state as _capture
from ..autograd import record as _record
from ..backends.host import HostRNG, host_rng
from ..recompute import host_random

__all__ = [
    "relu", "tanh", "sigmoid", "gelu", "softplus", "softmax", "log_softmax", "mse_loss",
    "cross_entropy", "binary_cross_entropy_with_logits", "dropout",
]

Reduction = Literal["mean", "sum", "none"]


def _t(x: Any, like: ag.Tensor | None = None) -> ag.Tensor:
    if isinstance(x, ag.Tensor):
        return x
    return ag.tensor(x, backend=None if like is None else like.backend)


def relu(x: ag.Tensor) -> ag.Tensor:
    """``max(x, 0)``; its gradient at ``x = 0`` is 0 (as in PyTorch and JAX)."""
    x = _t(x)
    return ag.where(x > 0, x, ag.zeros_like(x))


def tanh(x: ag.Tensor) -> ag.Tensor:
    """The hyperbolic tangent (``ag.tanh``); its VJP is ``ḡ (1 - y²)``."""
    return ag.tanh(_t(x))


def sigmoid(x: ag.Tensor) -> ag.Tensor:
    """``1 / (1 + exp(-x))``, computed as ``(1 + tanh(x/2)) / 2``: no overflow at any ``x``."""
    x = _t(x)
    return 0.5 * ag.tanh(0.5 * x) + 0.5


def softplus(x: ag.Tensor) -> ag.Tensor:
    """``log(1 + exp(x))`` computed as ``logaddexp(x, 0)``: exact for large ``|x|`` and its
    gradient (the sigmoid) never NaN."""
    return ag.logaddexp(_t(x), 0.0)


# Abramowitz & Stegun 7.1.26: |erf(x) - approximation| < 1.5e-7 for all x.
_AS_P = 0.3275911
_AS_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def _erf(x: ag.Tensor) -> ag.Tensor:
    s = ag.sign(x)
    a = ag.abs(x)
    t = 1.0 / (1.0 + _AS_P * a)
    poly = t * (_AS_A[0] + t * (_AS_A[1] + t * (_AS_A[2] + t * (_AS_A[3] + t * _AS_A[4]))))
    return s * (1.0 - poly * ag.exp(-a * a))


def gelu(x: ag.Tensor, approximate: Literal["none", "tanh"] = "none") -> ag.Tensor:
    """The Gaussian error linear unit ``x Φ(x)``.

    ``approximate="none"`` evaluates ``Φ(x) = (1 + erf(x/√2))/2`` with a polynomial erf (absolute
    error below 1.5e-7, the Array API has no ``erf``); ``"tanh"`` uses the usual
    ``0.5 x (1 + tanh(√(2/π)(x + 0.044715 x³)))``.
    """
    x = _t(x)
    if approximate == "tanh":
        c = math.sqrt(2.0 / math.pi)
        return 0.5 * x * (1.0 + ag.tanh(c * (x + 0.044715 * x * x * x)))
    if approximate != "none":
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', not {approximate!r}")
    return 0.5 * x * (1.0 + _erf(x * (1.0 / math.sqrt(2.0))))


def log_softmax(x: ag.Tensor, axis: int = -1) -> ag.Tensor:
    """``x - logsumexp(x)`` along ``axis``: stable for any logits (no ``exp`` overflows)."""
    x = _t(x)
    return x - ag.logsumexp(x, axis=axis, keepdims=True)


def softmax(x: ag.Tensor, axis: int = -1) -> ag.Tensor:
    """``exp(x) / Σ exp(x)`` along ``axis``, as ``exp(log_softmax(x))`` (stable)."""
    return ag.exp(log_softmax(x, axis=axis))


def _reduce(loss: ag.Tensor, reduction: str, what: str) -> ag.Tensor:
    if reduction == "mean":
        return ag.mean(loss)
    if reduction == "sum":
        return ag.sum(loss)
    if reduction == "none":
        return loss
    raise ValueError(f"{what}: reduction must be 'mean', 'sum' or 'none', not {reduction!r}")


def mse_loss(input: ag.Tensor, target: Any, reduction: Reduction = "mean") -> ag.Tensor:
    """Squared error ``(input - target)²``, averaged (``"mean"``), summed or elementwise."""
    input = _t(input)
    target = _t(target, input)
    if input.shape != target.shape:
        raise ValueError(f"mse_loss: input shape {input.shape} and target shape {target.shape} "
                         "differ")
    d = input - target
    return _reduce(d * d, reduction, "mse_loss")


def cross_entropy(logits: ag.Tensor, target: Any, reduction: Reduction = "mean") -> ag.Tensor:
    """Softmax cross-entropy from unnormalised ``logits`` of shape ``(N, C)``.

    ``target`` is either integer class labels of shape ``(N,)`` (values in ``0..C-1``) or class
    probabilities of shape ``(N, C)``. The per-sample loss is ``-Σ_c p_c log softmax(x)_c``,
    computed stably (shifted by the row maximum), so logits of ±1000 give finite losses and
    gradients. It is one graph node whose rule is the fused gradient
    ``x̄ = ḡ·(softmax(x)·Σ_c p_c - p)`` (``ḡ/N`` for ``"mean"``) and ``p̄ = -ḡ·log softmax(x)``:
    one node instead of the ten a composition of ``max``, ``exp``, ``log``, ``sum`` records.

    Labels outside ``0..C-1`` (``C`` or more, or negative) never give a silent number. Where the
    labels are in host memory -- NumPy, array_api_strict, PyTorch or JAX on the CPU -- they are
    read once (one ``any`` over the batch) and a bad one raises ``IndexError`` naming the label,
    its position and ``C``. Where that read would cost a host synchronisation -- Dask (a compute),
    a GPU (CuPy, PyTorch or JAX on CUDA), or a step being recorded by :func:`agnograd.capture`
    -- nothing is read: the loss of each bad sample is NaN (so the ``"mean"``/``"sum"`` loss is
    NaN, and ``"none"`` is NaN in those rows only) and so is its row of the logits' gradient;
    the other rows are untouched, and inside :func:`agnograd.detect_anomaly` backward raises
    ``FloatingPointError`` naming ``cross_entropy``. Boolean or complex targets raise
    ``TypeError``; a floating-point target of shape ``(N,)`` raises ``ValueError`` (floating
    targets are probabilities of shape ``(N, C)``).
    """
    logits = _t(logits)
    if logits.ndim != 2:
        raise ValueError(f"cross_entropy: logits must have shape (N, C), not {logits.shape}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"cross_entropy: reduction must be 'mean', 'sum' or 'none', not "
                         f"{reduction!r}")
    n, c = logits.shape
    target = _t(target, logits)
    if target.backend != logits.backend:
        raise TypeError(f"cross_entropy: target on backend '{target.backend}' but logits on "
                        f"'{logits.backend}'; move one with ag.to_backend")
    kind = target.dtype.kind
    if kind == "f":
        if target.shape != logits.shape:
            hint = ("; for class labels pass an integer tensor (ag.astype(target, ag.int64))"
                    if target.shape == (n,) else "")
            raise ValueError(f"cross_entropy: a floating-point target is read as class "
                             f"probabilities, which must have the logits' shape {logits.shape}, "
                             f"not {target.shape}{hint}")
        if target.dtype != logits.dtype:
            target = ag.astype(target, logits.dtype)
        normalized = False
    elif kind in ("i", "u"):
        if target.shape != (n,):
            raise ValueError(f"cross_entropy: integer labels must have shape ({n},), not "
                             f"{target.shape}")
        target = _one_hot(target, c, logits.dtype, _can_check_on_host(target))
        normalized = True
    else:
        raise TypeError(f"cross_entropy: target of dtype {target.dtype} is neither integer class "
                        "labels nor floating-point class probabilities; convert it with "
                        "ag.astype(target, ag.int64) (labels) or to the logits' dtype "
                        "(probabilities)")
    return _softmax_cross_entropy(logits, target, reduction, normalized)


def _can_check_on_host(labels: ag.Tensor) -> bool:
    """Whether checking the labels' range is one cheap host read: arrays in host memory
    (NumPy, array_api_strict, PyTorch or JAX on the CPU), outside a captured step. On a GPU it
    would be a synchronisation per loss, on Dask a compute, inside ag.capture it is refused."""
    if _capture.capturing():
        return False
    return labels._backend.reads_cheaply(labels.data)


def _one_hot(labels: ag.Tensor, c: int, dtype: Any, check: bool) -> ag.Tensor:
    """Integer ``labels`` of shape ``(N,)`` as one-hot rows (constants) of ``dtype``.

    A label outside ``0..c-1`` has no row of its own: with ``check`` the labels are read on the
    host once and such a label raises ``IndexError`` naming it, its position and ``c``; without
    (no cheap host read), its row becomes NaN, so that sample's loss and gradient are NaN and
    ``ag.detect_anomaly()`` names ``cross_entropy``. Never a row of zeros: that would give
    loss 0 with a nonzero gradient.
    """
    n = labels.shape[0]
    xp = labels._backend.xp
    raw = labels.data
    top = xp.iinfo(raw.dtype).max
    if c - 1 > top:  # arange(c) would wrap around in the labels' dtype: compare in a wider one
        labels = ag.astype(labels, ag.int32 if c - 1 <= 2**31 - 1 else ag.int64)
        raw = labels.data
        top = c  # now every class fits
    signed = labels.dtype.kind == "i"
    if check:
        bad = raw >= c if c <= top else None
        if signed:
            bad = raw < 0 if bad is None else (raw < 0) | bad
        if bad is not None and bool(xp.any(bad)):  # the one host read
            i = int(xp.nonzero(bad)[0][0])
            count = int(xp.nonzero(bad)[0].shape[0])
            more = f" ({count} labels are out of range)" if count > 1 else ""
            raise IndexError(f"cross_entropy: label {int(raw[i])} at position {i} is out of range "
                             f"for {c} classes (valid: 0..{c - 1}){more}")
    with ag.default_backend(labels.backend):  # the labels' backend, not the default one
        classes = ag.arange(c, dtype=labels.dtype, device=labels.device)
    onehot = ag.astype(ag.reshape(labels, (n, 1)) == classes, dtype)
    if check:
        return onehot
    bad_t = ag.greater_equal(labels, c) if c <= top else None
    if signed:
        neg = ag.less(labels, 0)
        bad_t = neg if bad_t is None else ag.logical_or(neg, bad_t)
    if bad_t is None:
        return onehot
    return ag.where(ag.reshape(bad_t, (n, 1)), ag.full_like(onehot, math.nan), onehot)


def _log_softmax_raw(xp: Any, x: Any) -> Any:
    z = x - xp.max(x, axis=1, keepdims=True)
    return z - xp.log(xp.sum(xp.exp(z), axis=1, keepdims=True))


def _xent_scale(xp: Any, g: Any, n: int, reduction: str) -> Any:
    """The loss cotangent as a factor on each row: ḡ/N (mean), ḡ (sum), ḡ_n per row (none)."""
    if reduction == "none":
        return xp.reshape(g, (n, 1))
    return g / n if reduction == "mean" else g


def _xent_x(xp: Any, g: Any, x: Any, p: Any, s: Any, reduction: str, normalized: bool) -> Any:
    if isinstance(x, ag.Tensor):
        # create_graph: the softmax saved by the forward is a constant here, so recompute it
        # from x (the rule's result must stay differentiable in x).
        e = xp.exp(x - xp.max(x, axis=1, keepdims=True))
        s = e / xp.sum(e, axis=1, keepdims=True)
    d = s - p if normalized else s * xp.sum(p, axis=1, keepdims=True) - p
    return _xent_scale(xp, g, x.shape[0], reduction) * d


def _xent_p(xp: Any, g: Any, x: Any, p: Any, s: Any, reduction: str, normalized: bool) -> Any:
    return -_xent_scale(xp, g, x.shape[0], reduction) * _log_softmax_raw(xp, x)


def _softmax_cross_entropy(x: ag.Tensor, p: ag.Tensor, reduction: str, normalized: bool
                           ) -> ag.Tensor:
    b = x._backend
    xp = b.xp
    z = x.data - xp.max(x.data, axis=1, keepdims=True)
    e = xp.exp(z)
    se = xp.sum(e, axis=1, keepdims=True)
    terms = p.data * (xp.log(se) - z)  # -p log softmax(x), elementwise
    if reduction == "none":
        loss = xp.sum(terms, axis=1)
    else:  # one reduction over everything: cheaper than per-row sums and then their mean
        loss = xp.sum(terms)
        if reduction == "mean":
            loss = loss / x.shape[0]
    # The softmax is saved for the rule: the plain backward is then two elementwise ops.
    return _record("cross_entropy", loss, b, (x, p), (_xent_x, _xent_p), (x, p, e / se),
                   params=(reduction, normalized))


def binary_cross_entropy_with_logits(logits: ag.Tensor, target: Any,
                                     reduction: Reduction = "mean") -> ag.Tensor:
    """Binary cross-entropy of ``sigmoid(logits)`` against ``target`` in ``[0, 1]``:
    ``softplus(x) - x t``, exact at any logit (gradient ``sigmoid(x) - t``)."""
    logits = _t(logits)
    target = _t(target, logits)
    if target.shape != logits.shape:
        raise ValueError(f"binary_cross_entropy_with_logits: target shape {target.shape} differs "
                         f"from the logits' {logits.shape}")
    if target.dtype != logits.dtype:
        target = ag.astype(target, logits.dtype)
    return _reduce(softplus(logits) - logits * target, reduction, "binary_cross_entropy_with_logits")


def dropout(x: ag.Tensor, p: float = 0.5, training: bool = True,
            seed: int | Sequence[int] | HostRNG | None = None) -> ag.Tensor:
    """Zero each element with probability ``p`` and scale the rest by ``1/(1-p)`` (training);
    the identity when ``training`` is false or ``p == 0``.

    The mask is drawn on the host from ``seed`` (an int, a sequence of ints, or a host generator
    such as :func:`agnograd.nn.host_rng` gives, which advances from call to call) and moved to
    ``x``'s backend, so a seed gives the same mask on every backend. Inside
    :func:`agnograd.checkpoint` the mask is recorded (one byte per element, on the host) and the
    recomputation reuses it, so the gradient is zero exactly where the forward pass dropped and
    the generator advances once, as without the checkpoint.
    """
    x = _t(x)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must be in [0, 1], not {p}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    _capture.refuse("dropout (training, 0 < p < 1)", _capture.WHY_RANDOM,
                    "Random ops are not capture-safe: capture the step without dropout, or use "
                    "model.eval() / training=False in the captured step")
    # Through host_random: inside ag.checkpoint, the recomputation gets this very mask back.
    shape = x.shape
    mask = host_random(lambda: host_rng(seed).random(shape) >= p, shape)
    keep = ag.tensor(mask, backend=x.backend, device=x.device)
    return x * (ag.astype(keep, x.dtype) * (1.0 / (1.0 - p)))
