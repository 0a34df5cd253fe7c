"""Activations, losses and dropout as functions of Tensors (``agnograd.nn.functional``).

Everything here is written with agnograd ops only, so it runs -- and differentiates -- on every
backend. The losses are computed in their numerically stable forms: ``log_softmax`` and
``cross_entropy`` through ``logsumexp`` (shifted by the maximum), the sigmoid losses through
``logaddexp``; none of them overflows or produces NaN gradients at logits of ±1000.
"""

from __future__ import annotations

import itertools
import math
import numbers
import operator
import struct
import weakref
from collections.abc import Sequence
from typing import Any, Literal, cast

import agnograd as ag
from agnograd.backends import batching as _batching

from .. import random as _random
from .._ops._common import higher as _higher
from .._ops._common import lift_to as _lift_to
from .._ops.special import _approx_erf
from .._ops.special import _forward as _special_forward
from ..autograd import record as _record
from ..autograd.forward import defjvp, elementwise
from ..autograd.node import OUT
from ..backends.host import HostRNG, host_rng
from ..capture import _state as _capture
from ..random import Generator
from ..recompute import host_random

__all__ = [
    "relu", "tanh", "sigmoid", "gelu", "softplus", "leaky_relu", "elu", "silu", "softmax",
    "log_softmax", "mse_loss", "l1_loss", "huber_loss", "smooth_l1_loss", "cross_entropy",
    "nll_loss", "binary_cross_entropy", "binary_cross_entropy_with_logits", "one_hot", "dropout",
    "layer_norm",
    "embedding", "conv1d", "conv2d", "max_pool1d", "max_pool2d", "avg_pool1d", "avg_pool2d",
    "linear", "pad", "interpolate", "normalize", "cosine_similarity", "kl_div",
    "batch_norm", "group_norm", "instance_norm",
    "scaled_dot_product_attention",  # rnn
    "conv_transpose1d", "conv_transpose2d",  # speed
]

Reduction = Literal["mean", "sum", "none"]


def _t(x: Any, like: ag.Tensor | None = None) -> ag.Tensor:
    if isinstance(x, ag.Tensor):
        return x
    # an operand, wrapped as it is (ag.tensor would copy the caller's array on every call)
    return ag.as_tensor(x, None if like is None else ag.get_backend(like.backend))


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


def softplus(x: ag.Tensor, beta: float = 1.0, threshold: float = 20.0) -> ag.Tensor:
    """``log(1 + exp(beta x)) / beta``, computed as ``logaddexp(beta x, 0) / beta``: exact for
    large ``|x|`` and its gradient (the sigmoid) never NaN. As in PyTorch, it is ``x`` itself
    where ``beta x > threshold`` (the two differ by less than ``exp(-threshold)``)."""
    x = _t(x)
    if beta == 1.0:
        y = ag.logaddexp(x, 0.0)
    else:
        y = ag.logaddexp(x * beta, 0.0) * (1.0 / beta)
    return ag.where(x * beta > threshold, x, y)


def leaky_relu(x: ag.Tensor, negative_slope: float = 0.01) -> ag.Tensor:
    """``x`` where ``x > 0``, else ``negative_slope · x`` (its gradient at 0 is
    ``negative_slope``, as in PyTorch)."""
    x = _t(x)
    return ag.where(x > 0, x, x * negative_slope)


def elu(x: ag.Tensor, alpha: float = 1.0) -> ag.Tensor:
    """``x`` where ``x > 0``, else ``alpha (exp(x) - 1)`` (gradient ``alpha`` at 0, as in
    PyTorch). The ``expm1`` reads 0 where ``x > 0``, so the branch not taken never overflows and
    its gradient is never NaN."""
    x = _t(x)
    pos = x > 0
    return ag.where(pos, x, alpha * ag.expm1(ag.where(pos, ag.zeros_like(x), x)))


def silu(x: ag.Tensor) -> ag.Tensor:
    """The sigmoid linear unit (swish) ``x · sigmoid(x)``."""
    x = _t(x)
    return x * sigmoid(x)


def gelu(x: ag.Tensor, approximate: Literal["none", "tanh"] = "none") -> ag.Tensor:
    """The Gaussian error linear unit ``x Φ(x)``.

    ``approximate="none"`` evaluates ``Φ(x) = (1 + erf(x/√2))/2`` with the backend's erf
    (:func:`agnograd.special.erf`: SciPy's, else a standard-op approximation; in float32 on
    NumPy ``Φ`` by Abramowitz & Stegun 26.2.17 instead, within 5e-7, see
    :func:`agnograd.backends._fallbacks.gelu_float32_standard`); ``"tanh"`` uses the usual
    ``0.5 x (1 + tanh(√(2/π)(x + 0.044715 x³)))``. One node for a real floating input
    (:meth:`agnograd.Backend.gelu`: NumPy evaluates it in place, a block at a time). When a
    gradient is recorded the forward also computes the analytic derivative ``Φ(x) + x φ(x)``
    (``φ`` the normal density; for ``"tanh"`` that of its formula) from the ``Φ(x)`` (the
    ``tanh``) it just computed, while its block is in cache; the rule is then ``ḡ·gelu'(x)``.
    """
    x = _t(x)
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', not {approximate!r}")
    b = x._backend
    if x.dtype.kind != "f":  # integers (promoted) and complex: the composition
        return cast(ag.Tensor, b.gelu(ag, x, approximate, ag.special.erf, False)[0])
    y, d = b.gelu(b.xp, x.data, approximate,
                  lambda z: _special_forward(b, "erf", _approx_erf, z),  # the raw erf
                  x.requires_grad and ag.is_grad_enabled())
    return _record("gelu", y, b, (x,), (_gelu_x,), (x, d), params=(approximate, b))


def _gelu_x(xp: Any, g: Any, x: Any, d: Any, approximate: str, b: Any) -> Any:
    """``ḡ·gelu'(x)``, the derivative from the forward (recomputed from ``x`` under
    ``create_graph``: the rule's result must be differentiable in ``x``)."""
    if isinstance(x, ag.Tensor):
        d = b.gelu(xp, x, approximate, ag.special.erf, True)[1]
    return g * d


elementwise(_gelu_x)  # its JVP rule, derived (agnograd.autograd.forward)


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


def mse_loss(input: ag.Tensor, target: Any, size_average: bool | None = None,
             reduce: bool | None = None, reduction: Reduction = "mean", weight: Any = None
             ) -> ag.Tensor:
    """Squared error ``(input - target)²``, averaged (``"mean"``), summed or elementwise, with
    PyTorch's arguments (``size_average``/``reduce``: its deprecated spellings of
    ``reduction``; ``weight``: one per element, the ``"mean"`` then ``Σ w·l / Σ w``)."""
    reduction = _legacy_args("mse_loss", size_average, reduce, reduction)  # type: ignore[assignment]
    input = _t(input)
    target = _t(target, input)
    if input.shape != target.shape:
        raise ValueError(f"mse_loss: input shape {input.shape} and target shape {target.shape} "
                         "differ")
    d = input - target
    return _weighted_reduce(d * d, weight, input, reduction, "mse_loss", True)


def _legacy_args(what: str, size_average: Any, reduce: Any, reduction: str) -> str:
    """``reduction`` from PyTorch's deprecated ``size_average``/``reduce`` (in its positions);
    a string or an int in their place -- a reduction or an ``ignore_index`` passed by
    position, as agnograd's older signatures took them -- raises instead of being read as a
    flag."""
    for name, v in (("size_average", size_average), ("reduce", reduce)):
        if v is None or isinstance(v, bool):
            continue
        if isinstance(v, str):
            raise TypeError(f"{what}: {v!r} is in the place of {name} (PyTorch's deprecated "
                            f"argument, in its order); pass reduction={v!r} by keyword")
        raise TypeError(f"{what}: {name} (PyTorch's deprecated argument, in its order) must be "
                        f"a bool or None, not {v!r}; pass the argument you meant (ignore_index, "
                        "reduction, ...) by keyword")
    return _legacy_reduction(size_average, reduce, reduction)


def _weighted_reduce(loss: ag.Tensor, weight: Any, input: ag.Tensor, reduction: str, what: str,
                     by_weight: bool) -> ag.Tensor:
    """PyTorch's elementwise ``weight`` of the regression losses (the input's shape): the
    loss times it, and a ``"mean"`` that divides by ``Σ weight`` (``by_weight``: mse, l1) or
    by the element count (huber)."""
    if weight is None:
        return _reduce(loss, reduction, what)
    w = _float_like(weight, input, what, "weight")
    if w.shape != input.shape:
        raise ValueError(f"{what}: weight shape {w.shape} differs from the input's {input.shape} "
                         "(PyTorch: 'Weights and input must have the same size')")
    loss = loss * w
    if reduction == "mean" and by_weight:
        return ag.sum(loss) / ag.sum(w)
    return _reduce(loss, reduction, what)


def cross_entropy(input: ag.Tensor, target: Any, weight: Any = None, size_average: bool | None = None,
                  ignore_index: int = -100, reduce: bool | None = None,
                  reduction: Reduction = "mean", label_smoothing: float = 0.0) -> ag.Tensor:
    """Softmax cross-entropy from unnormalised ``logits``, with PyTorch's arguments and semantics.

    ``logits`` has shape ``(N, C)``, ``(N, C, d1, ...)`` (classes on axis 1) or ``(C,)``
    (unbatched). ``target`` is either integer class labels of shape ``(N,)``, ``(N, d1, ...)``
    or ``()`` (values in ``0..C-1``), or floating-point class probabilities of the logits' shape.
    The per-sample loss is ``-Σ_c p_c log softmax(x)_c``, computed stably (shifted by the
    maximum), so logits of ±1000 give finite losses and gradients. It is one graph node whose
    rule is the fused gradient ``x̄ = ḡ·(softmax(x)·Σ_c p_c - p)`` (``ḡ/N`` for ``"mean"``) and
    ``p̄ = -ḡ·log softmax(x)``: one node instead of the ten a composition records.

    ``weight`` (shape ``(C,)``, not differentiated, as in PyTorch) rescales each class; with labels
    ``"mean"`` divides by the summed weights of the non-ignored samples' labels, with
    probabilities by the number of samples. Labels equal to ``ignore_index`` contribute zero loss
    and zero gradient; as in PyTorch, a ``"mean"`` whose denominator is zero is NaN -- with a
    zero gradient when every label is ignored, and NaN gradients in the samples not ignored when
    their weights are all zero. Probabilities have no ignore_index. ``label_smoothing`` ``ε`` in
    ``[0, 1]`` mixes the target with the uniform
    distribution: ``(1 - ε) p + ε/C``. The parameters are PyTorch's, in its order, the deprecated
    ``size_average``/``reduce`` included (mapped to ``reduction`` as PyTorch maps them); a
    string in ``weight``'s, ``size_average``'s or ``reduce``'s place, or an int in
    ``size_average``'s, raises ``TypeError`` (pass ``reduction`` and ``ignore_index`` by
    keyword). ``input`` holds the logits.

    Labels outside ``0..C-1`` (``C`` or more, or negative), other than ``ignore_index``, never
    give a silent number. Where the labels are in host memory -- NumPy, array_api_strict, PyTorch
    or JAX on the CPU -- they are read once (one count of the labels that match a class) and a
    bad one raises ``IndexError`` naming the label, its position and ``C``. Where that read
    would cost a host synchronisation -- Dask (a compute), a GPU (CuPy, PyTorch or JAX on CUDA),
    or a step being recorded by :func:`agnograd.capture` -- nothing is read (the check is one
    ``searchsorted`` of the labels and a lookup, inside the loss's one node; see
    :func:`_xent_int`): the loss of each bad sample is NaN
    (so the ``"mean"``/``"sum"`` loss is NaN, and ``"none"`` is NaN in those samples only) and so
    is its row of the logits' gradient; the other rows are untouched, and inside
    :func:`agnograd.detect_anomaly` backward raises ``FloatingPointError`` naming
    ``cross_entropy``. Boolean or complex targets raise ``TypeError``; a floating-point target
    not of the logits' shape raises ``ValueError`` (floating targets are probabilities).
    """
    what = "cross_entropy"
    logits = _t(input)
    if isinstance(weight, str):
        raise TypeError(f"{what}: the third argument is weight (as in PyTorch), not the reduction "
                        f"{weight!r}; pass reduction={weight!r} by keyword")
    reduction = _legacy_args(what, size_average, reduce, reduction)  # type: ignore[assignment]
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{what}: reduction must be 'mean', 'sum' or 'none', not {reduction!r}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{what}: label_smoothing must be in [0, 1], not {label_smoothing}")
    if logits.ndim < 1:
        raise ValueError(f"{what}: logits must have shape (N, C), (N, C, d1, ...) or (C,), not ()")
    target = _t(target, logits)
    if _unrelated(target, logits):
        raise TypeError(f"{what}: target on backend '{target.backend}' but logits on "
                        f"'{logits.backend}'; move one with ag.to_backend")
    kind = target.dtype.kind
    if kind not in ("f", "i", "u"):
        raise TypeError(f"{what}: target of dtype {target.dtype} is neither integer class "
                        "labels nor floating-point class probabilities; convert it with "
                        "ag.astype(target, ag.int64) (labels) or to the logits' dtype "
                        "(probabilities)")
    plain = logits.ndim == 2 and weight is None and label_smoothing == 0.0
    n, c = (1, logits.shape[0]) if logits.ndim == 1 else logits.shape[:2]
    if kind == "f":
        if target.shape != logits.shape:
            hint = ("; for class labels pass an integer tensor (ag.astype(target, ag.int64))"
                    if target.shape == (n, *logits.shape[2:]) else "")
            raise ValueError(f"{what}: a floating-point target is read as class "
                             f"probabilities, which must have the logits' shape {logits.shape}, "
                             f"not {target.shape}{hint}")
        if target.dtype != logits.dtype:
            target = ag.astype(target, logits.dtype)
        if plain:  # the common case: one node
            return _softmax_cross_entropy(logits, target, reduction, False)
        return _xent_probs(logits, target, weight, reduction, label_smoothing)
    expected = (n, *logits.shape[2:])
    if target.shape != (expected if logits.ndim > 1 else ()):
        raise ValueError(f"{what}: integer labels must have shape "
                         f"{expected if logits.ndim > 1 else ()}, not {target.shape}")
    check = _can_check_on_host(target)
    if weight is None and label_smoothing == 0.0:  # the common case: one node
        x = logits if logits.ndim == 2 else _rows(logits)
        flat = target if target.ndim == 1 else ag.reshape(target, (x.shape[0],))
        loss = _xent_int(x, flat, ignore_index, reduction, check,
                         None if logits.ndim <= 2 else expected)
        return _per_sample(loss, logits) if reduction == "none" and logits.ndim != 2 else loss
    return _xent_labels(logits, target, weight, ignore_index, reduction, label_smoothing, check)


def _rows(x: ag.Tensor) -> ag.Tensor:
    """``(N, C, d1, ...)`` or ``(C,)`` as the ``(M, C)`` rows the fused node takes."""
    if x.ndim == 1:
        return ag.reshape(x, (1, x.shape[0]))
    if x.ndim > 2:
        x = ag.moveaxis(x, 1, -1)
    return ag.reshape(x, (-1, x.shape[-1]))


def _class_weight(weight: Any, like: ag.Tensor, c: int) -> ag.Tensor:
    w = _float_like(weight, like, "cross_entropy", "weight")
    if w.shape != (c,):
        raise ValueError(f"cross_entropy: weight must have shape ({c},) (one per class), not "
                         f"{w.shape}")
    return ag.reshape(w, (1, c))


def _per_sample(loss: ag.Tensor, logits: ag.Tensor) -> ag.Tensor:
    """The ``(M,)`` losses of ``"none"`` in the shape of the samples: ``(N, d1, ...)`` or ``()``."""
    return ag.reshape(loss, () if logits.ndim == 1 else (logits.shape[0], *logits.shape[2:]))


def _xent_probs(logits: ag.Tensor, p: ag.Tensor, weight: Any, reduction: str, eps: float
                ) -> ag.Tensor:
    """Probabilities with weight, label smoothing or extra dimensions: the fused node on the
    transformed target ``((1 - ε) p + ε/C)·w``; ``"mean"`` divides by the number of samples."""
    x = _rows(logits)
    c = x.shape[1]
    p = _rows(p)
    if eps:
        p = p * (1.0 - eps) + eps / c
    if weight is not None:
        p = p * _class_weight(weight, x, c)
    loss = _softmax_cross_entropy(x, p, reduction, False)
    return _per_sample(loss, logits) if reduction == "none" else loss


def _xent_labels(logits: ag.Tensor, target: ag.Tensor, weight: Any, ignore_index: int,
                 reduction: str, eps: float, check: bool) -> ag.Tensor:
    """Labels with a class weight or label smoothing: one node on the target distribution
    ``p = (1 - ε) w_t onehot(t) + ε/C · w`` (zero rows where ignored, NaN rows where out of
    range, as in :func:`_xent_int`); ``"mean"`` divides by ``Σ w_t`` over the samples not
    ignored, as PyTorch does (see :func:`_xent_p_rows`)."""
    x = logits if logits.ndim == 2 else _rows(logits)
    m, c = x.shape
    flat = target if target.ndim == 1 else ag.reshape(target, (m,))
    shape = None if logits.ndim <= 2 else (logits.shape[0], *logits.shape[2:])
    w = None if weight is None else _class_weight(weight, x, c).data  # (1, c), not differentiated
    b = x._backend
    xp = b.xp
    raw, ignore, exact, classes, edges, _, _, ktab, one, nan, _, _ = _xent_prep(x, flat,
                                                                                ignore_index)
    xd = x.data
    t2 = raw[:, None]  # (m, 1)
    eq = t2 == classes
    a = xp.astype(eq, xd.dtype)  # the one-hot rows, then weighted: w_t at t
    if w is not None:
        a = a * w
    k = None  # per row: 1 valid, 0 ignored, NaN out of range (None: every label valid)
    if edges is not None:
        if check and exact and int(xp.count_nonzero(eq)) == m:  # the one host read
            pass
        else:
            if check:
                _raise_bad_label(flat, c, ignore, shape)
            k = _lookup(b, ktab, xp.searchsorted(edges, t2, side="right"))
    if eps:
        smooth = (eps / c) * (one if w is None else w)
        p = a * (1.0 - eps) + (smooth if k is None else k * smooth)
    else:
        p = a if k is None else a * k  # 0·NaN: a NaN row where out of range
    z = xd - xp.max(xd, axis=1, keepdims=True)
    e = xp.exp(z)
    se = xp.sum(e, axis=1, keepdims=True)
    terms = p * (xp.log(se) - z)
    keep = None
    if reduction == "none":
        loss = xp.sum(terms, axis=1)
        den = None
    else:
        loss = xp.sum(terms)
        den = None
        if reduction == "mean":
            den = xp.sum(a) if (w is not None or k is not None) else None
            if den is None:
                den = float(m)
            else:
                # PyTorch: at a zero denominator the mean is NaN and so is the gradient of
                # every sample not ignored; an ignored sample's gradient stays zero
                den = xp.where(den > 0.0, den, nan)
                if k is not None:
                    keep = k != 0.0
            loss = loss / den
        loss = b.fix(loss)
    out = _record("cross_entropy", loss, b, (x,), (_xent_p_rows,), (x, e / se, p, den, keep),
                  params=(reduction,))
    return _per_sample(out, logits) if reduction == "none" else out


def _xent_p_rows(xp: Any, g: Any, x: Any, s: Any, p: Any, den: Any, keep: Any, reduction: str
                 ) -> Any:
    """The gradient of :func:`_xent_labels`: ``(softmax(x)·Σ_c p_c - p)·ḡ`` per row (``ḡ/den``
    for ``"mean"``, and zero in the rows ``keep`` leaves out)."""
    if isinstance(x, ag.Tensor):  # create_graph: recompute the softmax from x
        e = xp.exp(x - xp.max(x, axis=1, keepdims=True))
        s = e / xp.sum(e, axis=1, keepdims=True)
    d = s * xp.sum(p, axis=1, keepdims=True) - p
    if reduction == "none":
        return xp.reshape(g, (-1, 1)) * d
    d = (g if den is None else g / den) * d
    return d if keep is None else xp.where(keep, d, xp.zeros_like(d))


_CONSTS: dict[tuple[Any, ...], tuple[Any, ...]] = {}


def _xent_prep(x: ag.Tensor, t: ag.Tensor, ignore: int) -> tuple[Any, ...]:
    """The labels' raw array (widened where its dtype cannot hold every class), the
    constants of :func:`_xent_consts` after ``wide`` and then ``index``, for logits ``x``
    ``(m, C)``, labels ``t`` ``(m,)`` and ``ignore_index`` ``ignore`` (``None`` in the
    constants where the dtype cannot hold it)."""
    b = x._backend
    raw = t.data
    base = b.root
    device = b.device_of(raw) if b.multi_device else None
    key: tuple[Any, ...] = (id(base), device, raw.dtype, x.data.dtype, x.shape[1], ignore)
    try:
        hit = _CONSTS.get(key)
    except TypeError:  # an unhashable device or dtype
        key = tuple(map(str, key))
        hit = _CONSTS.get(key)
    if hit is None or hit[0] is not base:
        hit = (base, *_xent_consts(b, raw, x.data.dtype, x.shape[1], ignore, device))
        if len(_CONSTS) > 64:
            _CONSTS.clear()
        _CONSTS[key] = hit
    wide = hit[2]
    if wide is not None:
        raw = b.xp.astype(raw, wide)
    return (raw, *hit[3:-1], hit[1], hit[-1])  # ..., nan, index, f


def _xent_consts(b: Any, raw: Any, fdtype: Any, c: int, ignore_index: int, device: Any
                 ) -> tuple[Any, ...]:
    """The constants of :func:`_xent_int` for one backend, device, pair of dtypes, class count
    and ignore_index, made once by :func:`_xent_prep` (the staged replay folds them; on a GPU
    they are not copied to the device on every call): ``(index, wide, ignore, exact, classes,
    edges, q, v, k, one, nan, f)``.

    ``index`` is the namespace's default indexing dtype when the labels (after ``wide``) have
    another one: the gather of :func:`_xent_int` takes its indices in it (else ``None``).

    ``wide`` is the dtype the labels are compared in when theirs cannot hold every class (else
    ``None``); ``ignore`` is ``ignore_index``, or ``None`` where the dtype cannot hold it;
    ``exact`` says that a label matches one of ``classes`` only if it is valid. ``classes`` is
    ``arange(c)`` in it (``ignore`` replaced by -1 when it is a class, so an ignored label
    matches no class; a label -1, out of range, then matches it: not exact); ``edges`` the sorted
    bounds of the label ranges that are valid, ignored or out of range; ``q[i]`` and ``v[i]``
    for the range ``i`` (``searchsorted(edges, t, side="right")``) are 1 and 1 (valid), ``inf``
    and 0 (ignored), NaN and 0 (out of range: ``v`` counts the valid labels), and
    ``k[i] = 1/q[i]``: 1, 0, NaN; ``f[i]`` (the one-hot path's loss of a row that picks no
    class) is 0, 0, NaN. ``edges`` is
    ``None`` when no label of the dtype can be out of range or ignored."""
    base = b.root
    xp = base.xp
    ldtype = raw.dtype
    info = xp.iinfo(ldtype)
    lo, hi = int(info.min), int(info.max)
    ignore: int | None = ignore_index if lo <= ignore_index <= hi else None
    wide = None
    if c - 1 > hi or (ignore is not None and 0 <= ignore < c and lo == 0):
        # arange(c) would wrap around in the labels' dtype (or no unsigned label is left to
        # stand for the ignored class): compare in a wider one
        wide = xp.int64
        ldtype = wide
        lo, hi = -(2**63), 2**63 - 1
    classes = list(range(c))
    if ignore is not None and 0 <= ignore < c:
        classes[ignore] = -1  # a bad label (its row is NaN): it never stands for a class
    points = sorted({v for v in (0, c, ignore, None if ignore is None else ignore + 1)
                     if v is not None and lo < v <= hi})

    def kind(v: int) -> tuple[float, float, float, float]:
        if v == ignore:
            return math.inf, 0.0, 0.0, 0.0
        return (1.0, 1.0, 1.0, 0.0) if 0 <= v < c else (math.nan, 0.0, math.nan, math.nan)

    reps = [lo] + points  # one label of each range: its first value
    kinds = [kind(v) for v in reps]
    with_edges = any(k != (1.0, 1.0, 1.0, 0.0) for k in kinds)

    def arr(v: Any, dtype: Any) -> Any:
        return base.asarray(v, dtype=dtype, device=device)

    try:  # the dtype the gather's indices are given in (PyTorch's take_along_dim wants int64)
        index = xp.__array_namespace_info__().default_dtypes(device=device)["indexing"]
    except Exception:  # a namespace without the inspection API
        index = xp.int64
    return (
        None if index == ldtype else index,
        wide,
        ignore,
        not (ignore is not None and 0 <= ignore < c),
        arr(classes, ldtype),
        arr(points, ldtype) if with_edges else None,
        arr([k[0] for k in kinds], fdtype) if with_edges else None,
        arr([k[1] for k in kinds], fdtype) if with_edges else None,
        arr([k[2] for k in kinds], fdtype) if with_edges else None,
        arr(1.0, fdtype),
        arr(math.nan, fdtype),
        arr([k[3] for k in kinds], fdtype) if with_edges else None,
    )


def _lookup(b: Any, table: Any, code: Any) -> Any:
    """``table[code]`` for integer ``code`` of shape ``(m, 1)``: integer-array indexing, one
    cheap call (``take_along_axis`` on lazy backends, where Dask indexes with 1-d arrays only)."""
    if b.lazy:
        return b.xp.take_along_axis(b.xp.reshape(table, (1, -1)), code, axis=1)
    if b is not b.base:  # traced: the constant as a traced value, so the indexing is recorded
        table = b.xp.asarray(table)
    return table[code]


# From this many classes on, the integer-label loss gathers the label logits and scatters their
# gradient; below, the one-hot rows are cheaper (a small step's per-call cost).
_GATHER_MIN_CLASSES = 1024


def _xent_int(x: ag.Tensor, t: ag.Tensor, ignore_index: int, reduction: str, check: bool,
              shape: tuple[int, ...] | None) -> ag.Tensor:
    """Cross-entropy of logits ``x`` ``(m, C)`` at integer labels ``t`` ``(m,)``, no weight and
    no smoothing: one node, whose label handling is folded into its own arithmetic, and no
    ``(m, C)`` one-hot target.

    With ``z = x - max(x)`` and ``se = Σ exp(z)``, the loss of a row is ``(log(se) - z_t)·k``,
    ``z_t`` gathered by one ``take_along_axis`` at the label (clipped into ``0..C-1``), and its
    gradient ``(exp(z)/se)·k·ḡ`` with ``k·ḡ`` subtracted at the label (``ḡ/n`` for ``"mean"``,
    ``n`` the number of valid labels) -- a scatter: :meth:`agnograd.Backend.subtract_at_labels`, an
    in-place indexed add on NumPy and PyTorch, a comparison with the class indices elsewhere.
    ``k`` is 1 for a valid label, 0 for an ignored one (zero loss and gradient) and NaN for one
    out of range (NaN loss and gradient row); it comes from one ``searchsorted`` of the labels
    over the bounds of those ranges and one lookup, where no host read is allowed (a device,
    Dask, a replay). Where a host read is cheap, the same ``(m,)`` lookup read back says whether
    every label is valid (the common case: no ``k`` at all); else a bad label raises
    ``IndexError`` naming it.
    """
    m, c = x.shape
    if c < _GATHER_MIN_CLASSES:
        return _xent_int_onehot(x, t, ignore_index, reduction, check, shape)
    b = x._backend
    xp = b.xp
    raw, ignore, _, classes, edges, _, vtab, ktab, one, _, index, _ = _xent_prep(x, t,
                                                                                 ignore_index)
    xd = x.data
    t2 = raw[:, None]  # (m, 1)
    den: Any = None  # the number of valid labels ("mean"): a Python number, or an array
    k = None  # per row: 1 valid, 0 ignored, NaN out of range (None: every label valid)
    if edges is not None:
        code = xp.searchsorted(edges, t2, side="right")
        k = _lookup(b, ktab, code)
        if check:  # the one host read, of (m, 1) values
            n = int(xp.count_nonzero(k == one))
            if n == m:
                k = None
            else:
                if int(xp.count_nonzero(k != k)):
                    _raise_bad_label(t, c, ignore, shape)
                den = n
        elif reduction == "mean":
            den = xp.sum(_lookup(b, vtab, code))
        if k is not None:
            t2 = xp.clip(t2, 0, c - 1)  # a row not valid gathers a class, then scaled by k
    if index is not None:
        t2 = xp.astype(t2, index)
    z = xd - xp.max(xd, axis=1, keepdims=True)
    e = xp.exp(z)
    se = xp.sum(e, axis=1, keepdims=True)
    lz = xp.log(se) - xp.take_along_axis(z, t2, axis=1)  # (m, 1): -log softmax at the label
    kd = k  # k over the gradient's denominator: the cotangent's factor per row
    if reduction == "none":
        loss = xp.reshape(lz if k is None else lz * k, (m,))  # 0 ignored, NaN out of range
        scale: Any = None
    else:
        # Σ k·lz as one contraction: an ignored row adds 0, a bad one NaN
        scale = None
        if reduction == "mean" and den is not None and not isinstance(den, int):
            # the device's count: divided before the contraction, whose 0-d array needs no
            # fixing (NaN where every label is ignored, as in PyTorch; their gradient is zero,
            # as in PyTorch: k is 0 there and the count taken as 1)
            loss = xp.tensordot(k, lz / den, axes=2)
            kd = k / xp.maximum(den, one)
        else:
            loss = xp.sum(lz) if k is None else xp.tensordot(k, lz, axes=2)
            if reduction == "mean":
                if k is None:
                    den = m
                loss = loss / den if den else loss * math.nan  # 0/0 without a warning
                scale = max(den, 1)
                if k is not None:
                    kd = k / scale
        loss = b.fix(loss)
    return _record("cross_entropy", loss, b, (x,), (_xent_int_x,),
                   (x, e / se, t2, kd, classes, scale), params=(reduction, b))


def _xent_int_x(xp: Any, g: Any, x: Any, s: Any, t2: Any, kd: Any, classes: Any, scale: Any,
                reduction: str, b: Any) -> Any:
    """The gradient of :func:`_xent_int`: ``softmax(x)·ḡ·kd`` per row, less ``ḡ·kd`` at the
    label ``t2`` (``kd`` is ``k``, over the number of valid labels for ``"mean"``; ``None``
    where every label is valid, then ``ḡ/scale``)."""
    if reduction == "none":
        g = xp.reshape(g, (-1, 1))
    if isinstance(x, ag.Tensor):
        # create_graph: recompute the softmax from x (the saved one is a constant here) and
        # subtract the one-hot rows (a differentiable expression: no in-place scatter)
        e = xp.exp(x - xp.max(x, axis=1, keepdims=True))
        s = e / xp.sum(e, axis=1, keepdims=True)
        oh = ag.astype(ag.as_tensor(t2 == classes, b), x.dtype)
        gk = (g if scale is None else g / scale) if kd is None else g * kd
        return gk * (s - oh)
    gk = (g if scale is None else g / scale) if kd is None else g * kd
    return b.subtract_at_labels(xp, s * gk, t2, gk, classes)


def _xent_int_onehot(x: ag.Tensor, t: ag.Tensor, ignore_index: int, reduction: str, check: bool,
                     shape: tuple[int, ...] | None) -> ag.Tensor:
    """:func:`_xent_int` for few classes (``C < _GATHER_MIN_CLASSES``): the one-hot rows
    ``(m, C)`` cost less than a gather and a scatter there (fewer calls, each on a small array).

    With ``z = x - max(x)``, ``se = Σ exp(z)`` and the one-hot rows ``oh`` (``t == classes``;
    an ignored or out-of-range label matches no class), the loss of a row is
    ``log(se·q) - z_t`` and its gradient ``(exp(z)/(se·q) - oh)·ḡ`` (``ḡ/n`` for ``"mean"``,
    ``n`` the number of valid labels). ``q`` is 1 for a valid label, ``inf`` for an ignored one
    (its softmax is then 0: zero gradient, and it picks no loss) and NaN for one out of range
    (NaN loss and gradient row); ``q`` comes from one ``searchsorted`` of the labels over the
    bounds of those ranges and one lookup -- four calls in all, the range check and ignore_index
    together, where no host read is allowed (a device, Dask, a replay). Where a host read is
    cheap, one ``count_nonzero`` of the one-hot rows read back says whether every label is
    valid (the common case: no ``q`` at all); else a bad label raises ``IndexError`` naming it.
    """
    b = x._backend
    xp = b.xp
    m, c = x.shape
    raw, ignore, exact, classes, edges, qtab, _, _, one, _, _, ftab = _xent_prep(x, t,
                                                                                 ignore_index)
    xd = x.data
    t2 = raw[:, None]  # (m, 1)
    eq = t2 == classes  # (m, C): the one-hot rows
    oh = xp.astype(eq, xd.dtype)
    den: Any = None  # the number of valid labels ("mean"): a Python number, or an array
    if edges is None:  # every label of the dtype is a class, none ignored
        q = None
    elif check:
        n = int(xp.count_nonzero(eq))  # the one host read
        if n == m and exact:
            q = None
        else:
            _raise_bad_label(t, c, ignore, shape)
            den = n
            q = _lookup(b, qtab, xp.searchsorted(edges, t2, side="right"))
    else:
        code = xp.searchsorted(edges, t2, side="right")
        q = _lookup(b, qtab, code)
        f = _lookup(b, ftab, code)
    z = xd - xp.max(xd, axis=1, keepdims=True)
    e = xp.exp(z)
    se = xp.sum(e, axis=1, keepdims=True)
    if q is not None:
        se = se * q
    lz = xp.log(se) - z  # -log softmax; inf in an ignored row, NaN in a bad one
    if q is None:
        terms = oh * lz
    else:  # an ignored row picks nothing, a bad row its NaN
        terms = xp.where(eq, lz, f if not check else xp.zeros_like(one))
    if reduction == "none":
        loss = xp.sum(terms, axis=1)
        scale: Any = None
    else:
        loss = xp.sum(terms)
        scale = None
        if reduction == "mean":
            if q is None:
                den = m
            elif den is None:
                den = xp.sum(oh)
            if isinstance(den, int):
                loss = loss / den if den else loss * math.nan  # 0/0 without a warning
                scale = max(den, 1)
            else:
                loss = loss / den  # NaN where every label is ignored, as in PyTorch
                scale = xp.maximum(den, one)  # (their gradient is zero, as in PyTorch)
        loss = b.fix(loss)
    return _record("cross_entropy", loss, b, (x,), (_xent_onehot_x,), (x, e / se, oh, q, scale),
                   params=(reduction,))


def _xent_onehot_x(xp: Any, g: Any, x: Any, s: Any, oh: Any, q: Any, scale: Any, reduction: str
                   ) -> Any:
    """The gradient of :func:`_xent_int_onehot`: ``(softmax(x)/q - onehot)·ḡ`` per row (``ḡ/scale``
    for ``"mean"``: ``scale`` is the number of valid labels, at least 1)."""
    if isinstance(x, ag.Tensor):
        # create_graph: recompute the softmax from x (the saved one is a constant here); 1/q is
        # 1, 0 or NaN (no inf in a differentiated expression)
        e = xp.exp(x - xp.max(x, axis=1, keepdims=True))
        s = e / xp.sum(e, axis=1, keepdims=True)
        if q is not None:
            s = s * (1.0 / q)
    d = s - oh
    if reduction == "none":
        return xp.reshape(g, (-1, 1)) * d
    return (g if scale is None else g / scale) * d


def _raise_bad_label(t: ag.Tensor, c: int, ignore: int | None,
                     shape: tuple[int, ...] | None) -> None:
    """Raise the ``IndexError`` of :func:`_out_of_range` for the first label of ``t`` outside
    ``0..c-1`` other than ``ignore`` (host reads: called only where they are cheap)."""
    flat = t
    if ignore is not None:
        flat = ag.where(ag.not_equal(t, ignore), t, ag.zeros_like(t))
    _out_of_range(flat, c, True, "cross_entropy", shape=shape)


def _can_check_on_host(labels: ag.Tensor) -> bool:
    """Whether checking the labels' range is one cheap host read: arrays in host memory
    (NumPy, array_api_strict, PyTorch or JAX on the CPU), outside a captured step. On a GPU it
    would be a synchronisation per loss, on Dask a compute, inside ag.capture it is refused."""
    if _capture.capturing():
        return False
    return labels._backend.reads_cheaply(labels.data)


def _position(flat: int, shape: tuple[int, ...] | None) -> str:
    """A flat position as the user sees it: ``3``, or ``(1, 0)`` in a target of ``shape``."""
    if shape is None or len(shape) <= 1:
        return str(flat)
    index = []
    for n in reversed(shape):
        index.append(flat % n)
        flat //= n
    return str(tuple(reversed(index)))


_INT_MAX: dict[tuple[int, Any], int] = {}


def _int_max(xp: Any, dtype: Any) -> int:
    """``iinfo(dtype).max``, remembered (NumPy builds an ``iinfo`` object on every call)."""
    key = (id(xp), dtype)  # the namespace first: dtypes of two libraries may hash alike
    try:
        return _INT_MAX[key]
    except (KeyError, TypeError):
        top = int(xp.iinfo(dtype).max)
        try:
            _INT_MAX[key] = top
        except TypeError:
            pass
        return top


def _out_of_range(labels: ag.Tensor, c: int, check: bool, op: str, noun: str = "label",
                  shape: tuple[int, ...] | None = None, of: str = "classes") -> ag.Tensor | None:
    """The labels' range check shared by the losses, ``one_hot`` and ``embedding``.

    With ``check`` (a cheap host read, see :func:`_can_check_on_host`) the labels are read once
    and one outside ``0..c-1`` raises ``IndexError`` naming ``op``, the label, its position (in
    ``shape``, the caller's layout of the flat ``labels``) and ``c``; ``None`` is returned.
    Without, nothing is read: the result is the boolean Tensor of the bad labels (``None`` when
    the dtype cannot hold one), for the caller to turn into NaN (never a silent number).
    """
    raw = labels.data
    xp = labels._backend.xp
    top = _int_max(xp, raw.dtype)
    signed = labels.dtype.kind == "i"
    if check:
        bad = raw >= c if c <= top else None
        if signed:
            bad = raw < 0 if bad is None else (raw < 0) | bad
        if bad is not None and int(xp.count_nonzero(bad)):  # the one host read
            where = xp.nonzero(xp.reshape(bad, (-1,)))[0]
            i = int(where[0])
            count = int(where.shape[0])
            more = f" ({count} {noun}s are out of range)" if count > 1 else ""
            raise IndexError(f"{op}: {noun} {int(xp.reshape(raw, (-1,))[i])} at position "
                             f"{_position(i, shape)} is out of range for {c} {of} "
                             f"(valid: 0..{c - 1}){more}")
        return None
    bad_t = ag.greater_equal(labels, c) if c <= top else None
    if signed:
        neg = ag.less(labels, 0)
        bad_t = neg if bad_t is None else ag.logical_or(neg, bad_t)
    return bad_t


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


def binary_cross_entropy_with_logits(input: ag.Tensor, target: Any, weight: Any = None,
                                     size_average: bool | None = None, reduce: bool | None = None,
                                     reduction: Reduction = "mean", pos_weight: Any = None
                                     ) -> ag.Tensor:
    """Binary cross-entropy of ``sigmoid(logits)`` against ``target`` in ``[0, 1]``:
    ``softplus(x) - x t``, exact at any logit (gradient ``sigmoid(x) - t``).

    ``weight`` (broadcast to the logits) rescales each element's loss; ``pos_weight`` (broadcast
    along the last axis: one per class) weighs the positive term, as in PyTorch:
    ``(1 - t) x + (1 + (pos_weight - 1) t) softplus(-x)``. ``input`` holds the logits;
    ``size_average``/``reduce`` are PyTorch's deprecated spellings of ``reduction``.
    """
    what = "binary_cross_entropy_with_logits"
    reduction = _legacy_args(what, size_average, reduce, reduction)  # type: ignore[assignment]
    logits = _t(input)
    target = _t(target, logits)
    if target.shape != logits.shape:
        raise ValueError(f"{what}: target shape {target.shape} differs from the logits' "
                         f"{logits.shape}")
    if target.dtype != logits.dtype:
        target = ag.astype(target, logits.dtype)
    if pos_weight is None:
        loss = softplus(logits) - logits * target
    else:
        pw = _float_like(pos_weight, logits, what, "pos_weight")
        loss = (1.0 - target) * logits + (1.0 + (pw - 1.0) * target) * softplus(-logits)
    if weight is not None:
        loss = loss * _float_like(weight, logits, what, "weight")
    return _reduce(loss, reduction, what)


def binary_cross_entropy(input: ag.Tensor, target: Any, weight: Any = None,
                         size_average: bool | None = None, reduce: bool | None = None,
                         reduction: str = "mean") -> ag.Tensor:
    """Binary cross-entropy of probabilities ``input`` in ``[0, 1]`` against ``target`` of the
    same shape, as PyTorch's ``F.binary_cross_entropy``:
    ``-weight · (t · log x + (1 - t) · log(1 - x))`` with each log clamped at ``-100`` (so
    ``x = 0`` or ``1`` gives a finite loss), then reduced. ``weight`` broadcasts to the input.

    One node whose rules are PyTorch's: ``x̄ = ḡ (x - t) / max(x (1 - x), ε)`` (``ε`` 1e-12 in
    float32; finite at 0 and 1) and ``t̄ = -ḡ logit(x)`` (unclamped: ±inf at 0 and 1). Prefer
    :func:`binary_cross_entropy_with_logits` on logits: it is exact where ``sigmoid`` rounds to
    0 or 1. Inputs outside ``[0, 1]`` (or NaN) raise ``ValueError`` where the input is in host
    memory (as PyTorch's CPU check); elsewhere (GPU, Dask, inside ``ag.capture``) they give NaN.
    ``size_average``/``reduce`` are PyTorch's deprecated spellings of ``reduction``.
    """
    what = "binary_cross_entropy"
    x = _t(input)
    if x.dtype.kind != "f":
        raise TypeError(f"{what}: input must be floating-point probabilities, not {x.dtype}")
    reduction = _legacy_args(what, size_average, reduce, reduction)
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{what}: reduction must be 'mean', 'sum' or 'none', not {reduction!r}")
    t = _lift_to(_float_like(target, x, what, "target"), x._backend, what)
    if t.shape != x.shape:
        raise ValueError(f"{what}: target shape {t.shape} differs from the input's {x.shape} "
                         "(PyTorch refuses it too); reshape one of them")
    if x.size and _can_check_on_host(x):
        lo, hi = float(ag.min(x).item()), float(ag.max(x).item())
        if not (0.0 <= lo and hi <= 1.0):
            raise ValueError(f"{what}: all elements of input should be between 0 and 1 (got "
                             f"values in [{lo}, {hi}], shape {x.shape}); for logits use "
                             "binary_cross_entropy_with_logits")
    b = x._backend
    xd, td = x.data, t.data
    out = -(td * _clamped_log(b.xp, xd) + (1.0 - td) * _clamped_log(b.xp, 1.0 - xd))
    loss = _record(what, out, b, (x, t), (_bce_x, _bce_t), (x, t))
    if weight is not None:
        loss = loss * _float_like(weight, x, what, "weight")
    return _reduce(loss, reduction, what)


def _clamped_log(xp: Any, v: Any) -> Any:
    """``max(log v, -100)`` for ``v`` in ``[0, 1]`` (no warning at 0), PyTorch's BCE log."""
    pos = v > 0.0
    return xp.where(pos, xp.maximum(xp.log(xp.where(pos, v, 1.0)), -100.0), -100.0)


_BCE_EPS = 9.999999960041972e-13  # PyTorch's EPSILON: 1e-12 rounded to float32


def _bce_x(xp: Any, g: Any, x: Any, t: Any) -> Any:
    return g * (x - t) / xp.maximum((1.0 - x) * x, _BCE_EPS)


def _bce_t(xp: Any, g: Any, x: Any, t: Any) -> Any:
    # PyTorch's -logit(x), unclamped (±inf at 1 and 0), without log(0)'s warning
    inside = (x > 0.0) & (x < 1.0)
    safe = xp.where(inside, x, 0.5)
    edge = xp.where(x > 0.0, xp.full_like(x, -math.inf), math.inf)
    return g * xp.where(inside, xp.log1p(-safe) - xp.log(safe), edge)


elementwise(_bce_x, _bce_t)  # JVP rules derived: each is ḡ times a function of (x, t)


def _unrelated(a: ag.Tensor, b: ag.Tensor) -> bool:
    """Whether two operands' backends cannot meet in one op: different, neither a vmap level
    over the other (whose ops lift the lower one: a parameter shared by the examples), nor a
    traced step's backend over its base."""
    ba, bb = a._backend, b._backend
    # (and a constant Tensor made inside a traced step, on the trace's base backend: the ops
    # take it as a constant of the trace, as agnograd._ops._common.higher does)
    return ba is not bb and not (_batching.below(ba, bb) or _batching.below(bb, ba)
                                 or ba.base is bb or bb.base is ba)


def _float_like(v: Any, like: ag.Tensor, what: str, name: str) -> ag.Tensor:
    """``v`` as a Tensor on ``like``'s backend with ``like``'s floating dtype."""
    t = _t(v, like)
    if _unrelated(t, like):
        raise TypeError(f"{what}: {name} on backend '{t.backend}' but the input on "
                        f"'{like.backend}'; move one with ag.to_backend")
    return t if t.dtype == like.dtype else ag.astype(t, like.dtype)


def _pair(input: ag.Tensor, target: Any, what: str) -> tuple[ag.Tensor, ag.Tensor]:
    input = _t(input)
    target = _float_like(target, input, what, "target")
    if input.shape != target.shape:
        raise ValueError(f"{what}: input shape {input.shape} and target shape {target.shape} "
                         "differ")
    return input, target


def l1_loss(input: ag.Tensor, target: Any, size_average: bool | None = None,
            reduce: bool | None = None, reduction: Reduction = "mean", weight: Any = None
            ) -> ag.Tensor:
    """Absolute error ``|input - target|`` (gradient ``sign(input - target)``, 0 at a tie), with
    PyTorch's arguments (see :func:`mse_loss`)."""
    reduction = _legacy_args("l1_loss", size_average, reduce, reduction)  # type: ignore[assignment]
    input, target = _pair(input, target, "l1_loss")
    return _weighted_reduce(ag.abs(input - target), weight, input, reduction, "l1_loss", True)


def huber_loss(input: ag.Tensor, target: Any, reduction: Reduction = "mean",
               delta: float = 1.0, weight: Any = None) -> ag.Tensor:
    """``½ d²`` where ``|d| < delta``, else ``delta (|d| - ½ delta)``, for ``d = input - target``;
    ``weight`` (the input's shape) multiplies each element's loss, and (as PyTorch) the
    ``"mean"`` of a weighted loss divides by the element count, not by ``Σ weight``."""
    if not delta > 0:
        raise ValueError(f"huber_loss: delta must be positive, not {delta}")
    input, target = _pair(input, target, "huber_loss")
    d = input - target
    a = ag.abs(d)
    return _weighted_reduce(ag.where(a < delta, 0.5 * d * d, delta * (a - 0.5 * delta)), weight,
                            input, reduction, "huber_loss", False)


def smooth_l1_loss(input: ag.Tensor, target: Any, size_average: bool | None = None,
                   reduce: bool | None = None, reduction: Reduction = "mean", beta: float = 1.0
                   ) -> ag.Tensor:
    """``½ d² / beta`` where ``|d| < beta``, else ``|d| - ½ beta`` (``huber_loss / beta``;
    ``beta = 0`` is :func:`l1_loss`); ``size_average``/``reduce`` as in :func:`mse_loss`."""
    reduction = _legacy_args("smooth_l1_loss", size_average, reduce, reduction)  # type: ignore[assignment]
    if beta < 0:
        raise ValueError(f"smooth_l1_loss: beta must be non-negative, not {beta}")
    input, target = _pair(input, target, "smooth_l1_loss")
    d = input - target
    a = ag.abs(d)
    if beta == 0:
        return _reduce(a, reduction, "smooth_l1_loss")
    return _reduce(ag.where(a < beta, (0.5 / beta) * d * d, a - 0.5 * beta), reduction,
                   "smooth_l1_loss")


def _int_target(target: Any, like: ag.Tensor, what: str) -> ag.Tensor:
    t = _t(target, like)
    if _unrelated(t, like):
        raise TypeError(f"{what}: target on backend '{t.backend}' but input on '{like.backend}'; "
                        "move one with ag.to_backend")
    if t.dtype.kind not in ("i", "u"):
        raise TypeError(f"{what}: target must hold integer class labels, not {t.dtype}; convert "
                        "it with ag.astype(target, ag.int64)")
    return t


def nll_loss(input: ag.Tensor, target: Any, weight: Any = None, size_average: bool | None = None,
             ignore_index: int = -100, reduce: bool | None = None, reduction: Reduction = "mean"
             ) -> ag.Tensor:
    """The negative log-likelihood ``-weight[t] · input[n, t]`` of log-probabilities ``input``
    of shape ``(N, C)`` or ``(N, C, d1, ...)`` (or ``(C,)``) at integer labels ``target`` of
    shape ``(N,)`` or ``(N, d1, ...)`` (or ``()``), as in PyTorch.

    Labels equal to ``ignore_index`` contribute nothing; ``"mean"`` divides by the summed
    weights of the others (``weight``: one per class, default 1). As in PyTorch, a zero
    denominator gives a NaN mean: with a zero gradient when every label is ignored, and NaN
    gradients in the samples not ignored when their weights are all zero. Other labels outside
    ``0..C-1`` follow :func:`cross_entropy`: an ``IndexError``
    naming the label, its position and ``C`` where a host read is cheap; elsewhere (GPU, Dask,
    inside :func:`agnograd.capture`) that sample's loss and its gradient are NaN. The gradient
    reaches ``input`` through a gather (its VJP a scatter-add), so other classes' entries may be
    ``-inf`` without harm.
    """
    what = "nll_loss"
    if isinstance(weight, str):
        raise TypeError(f"{what}: the third argument is weight (as in PyTorch), not the reduction "
                        f"{weight!r}; pass reduction={weight!r} by keyword")
    reduction = _legacy_args(what, size_average, reduce, reduction)  # type: ignore[assignment]
    x = _t(input)
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{what}: reduction must be 'mean', 'sum' or 'none', not {reduction!r}")
    t = _int_target(target, x, what)
    if x.ndim < 1:
        raise ValueError(f"{what}: input must have shape (N, C, ...) or (C,), not ()")
    unbatched = x.ndim == 1
    if unbatched:
        x = ag.reshape(x, (1, x.shape[0]))
        t = ag.reshape(t, (1, *t.shape))
    c = x.shape[1]
    expected = (x.shape[0], *x.shape[2:])
    if t.shape != expected:
        raise ValueError(f"{what}: target shape {tuple(t.shape[unbatched:])} does not fit input "
                         f"{tuple(x.shape[unbatched:])}; expected {expected[unbatched:]}")
    if x.ndim > 2:
        x = ag.moveaxis(x, 1, -1)
    m = math.prod(expected)
    xm = ag.reshape(x, (m, c))
    flat = ag.reshape(t, (m,))
    valid = ag.not_equal(flat, ignore_index)
    zero = ag.zeros_like(flat)
    bad = _out_of_range(ag.where(valid, flat, zero), c, _can_check_on_host(t), what,
                        shape=None if unbatched else expected)
    keep = valid if bad is None else ag.logical_and(valid, ag.logical_not(bad))
    idx = ag.where(keep, flat, zero)  # always a valid index: the gather never reads outside
    picked = ag.reshape(ag.take_along_axis(xm, ag.reshape(idx, (m, 1)), axis=1), (m,))
    if weight is None:
        wi = ag.astype(keep, x.dtype)
    else:
        w = _float_like(weight, x, what, "weight")
        if w.shape != (c,):
            raise ValueError(f"{what}: weight must have shape ({c},) (one per class), not {w.shape}")
        wi = ag.where(keep, ag.take(w, idx), ag.zeros_like(picked))
    loss = ag.where(keep, -picked * wi, ag.zeros_like(picked))
    if bad is not None:  # NaN in the loss and (through the product) the gradient of bad samples
        # NaN in the bad rows only, 0 elsewhere: the where's zero cotangent of the other rows
        # times this factor stays 0 (times NaN everywhere it would poison every row)
        nan = ag.where(bad, ag.full_like(picked, math.nan), ag.zeros_like(picked))
        loss = ag.where(bad, -picked * nan, loss)
    if reduction == "none":
        return ag.reshape(loss, () if unbatched else expected)
    total = ag.sum(loss)
    if reduction == "sum":
        return total
    # PyTorch: at a zero denominator (every label ignored, or zero weights) the mean is NaN and
    # so is the gradient of every sample not ignored, while the ignored ones keep a zero
    # gradient: the NaN comes from a constant (no 0/0) and the wheres above gate it
    den = ag.sum(wi)
    return total / ag.where(den > 0.0, den, ag.full_like(den, math.nan))


def one_hot(tensor: Any, num_classes: int = -1) -> ag.Tensor:
    """Integer labels of any shape as one-hot vectors: ``int64`` of shape
    ``(*tensor.shape, num_classes)``, as in PyTorch.

    ``num_classes=-1`` takes one more than the largest label, which needs a read of the labels:
    it is allowed only where that read is cheap (arrays in host memory, outside
    :func:`agnograd.capture`); elsewhere pass ``num_classes``. Labels outside
    ``0..num_classes-1`` raise ``IndexError`` naming the label and its position where a host
    read is cheap; elsewhere (GPU, Dask, inside capture) such a label's vector is all ``-1``,
    never a plausible one-hot row. Not differentiable (its result is integer).
    """
    t = _t(tensor)
    if t.dtype.kind not in ("i", "u"):
        raise TypeError(f"one_hot: labels must be integers, not {t.dtype}; convert them with "
                        "ag.astype(labels, ag.int64)")
    check = _can_check_on_host(t)
    if num_classes == -1:
        if not check:
            raise ValueError(f"one_hot: num_classes=-1 reads the labels' maximum, which on the "
                             f"'{t.backend}' backend (or inside ag.capture / ag.jit) costs a host "
                             "synchronisation; pass num_classes")
        if t.size == 0:
            raise ValueError("one_hot: num_classes=-1 cannot be inferred from empty labels; pass "
                             "num_classes")
        num_classes = int(ag.max(t).item()) + 1
    if num_classes < 1:
        raise ValueError(f"one_hot: num_classes must be positive (or -1), not {num_classes}")
    flat = ag.reshape(t, (-1,))
    bad = _out_of_range(flat, num_classes, check, "one_hot", shape=t.shape)
    wide = ag.astype(flat, ag.int64)
    with ag.default_backend(t.backend):
        classes = ag.arange(num_classes, dtype=ag.int64, device=t.device)
    out = ag.astype(ag.reshape(wide, (-1, 1)) == classes, ag.int64)
    if bad is not None:
        out = ag.where(ag.reshape(bad, (-1, 1)), ag.full_like(out, -1), out)
    return ag.reshape(out, (*t.shape, num_classes))


def dropout(x: ag.Tensor, p: float = 0.5, training: bool = True,
            seed: int | Sequence[int] | HostRNG | None = None,
            generator: Generator | None = None) -> ag.Tensor:
    """Zero each element with probability ``p`` and scale the rest by ``1/(1-p)`` (training);
    the identity when ``training`` is false or ``p == 0``.

    Without ``seed`` the mask is drawn on the device, from ``generator`` (an
    :class:`agnograd.random.Generator`) or the default generator of ``x``'s backend and device
    (seeded by :func:`agnograd.manual_seed`): element ``j`` is kept when the Philox word ``w_j``
    has ``w_j >= round(p 2**32)``. The same seed gives the same mask on every backend, no host
    data is read or copied, and :func:`agnograd.capture` / :func:`agnograd.jit` replays draw a
    fresh mask on every call, as eager calls do. Inside :func:`agnograd.checkpoint` the
    recomputation restores the generator's state of the forward pass, so it draws the same mask
    and the generator advances once.

    With ``seed`` (an int, a sequence of ints, or a host generator such as
    :func:`agnograd.nn.host_rng` gives, which advances from call to call) the mask is drawn on
    the host with NumPy and moved to ``x``'s backend, as before; inside
    :func:`agnograd.checkpoint` it is recorded (one byte per element, on the host) and reused.
    That path copies host data into the step, so ``ag.capture`` and ``ag.jit`` refuse it.
    """
    x = _t(x)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must be in [0, 1], not {p}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    b = x._backend
    if seed is None:
        if generator is None:
            gen = _random.default_generator(b, x.device if b.multi_device else None)
        else:
            gen = generator
        keep_raw = _random.threshold_words(gen, b, tuple(x.data.shape), p, below=False)
        keep = ag.Tensor._wrap(keep_raw, b)
    else:
        if generator is not None:
            raise TypeError("dropout: give seed (a host generator) or generator (a device "
                            "generator), not both")
        _capture.refuse("dropout with seed= (training, 0 < p < 1)", _capture.WHY_RANDOM,
                        "Draw the mask on the device instead: drop seed= and seed the device "
                        "generator with ag.manual_seed(seed), or pass "
                        "generator=ag.random.Generator(seed); or use model.eval() / "
                        "training=False in the captured step")
        # Through host_random: inside ag.checkpoint, the recomputation gets this very mask back.
        shape = x.shape
        mask = host_random(lambda: host_rng(seed).random(shape) >= p, shape)
        keep = ag.tensor(mask, backend=x.backend, device=x.device)
    return x * (ag.astype(keep, x.dtype) * (1.0 / (1.0 - p)))


# ---------------------------------------------------------------------------------------------
# Normalisation and embedding


def layer_norm(input: ag.Tensor, normalized_shape: int | Sequence[int], weight: Any = None,
               bias: Any = None, eps: float = 1e-5) -> ag.Tensor:
    """Normalise over the last ``len(normalized_shape)`` axes (which must equal
    ``normalized_shape``): ``(x - mean) / sqrt(var + eps) · weight + bias``, with the biased
    variance, as in PyTorch.

    One node for a real floating input (weight and bias in its dtype): the forward keeps the
    rows' mean and ``r = 1/sqrt(var + eps)`` (``x̂ = (x - mean)·r`` is recomputed from ``x``:
    no array of the input's size is saved), and the rules are the analytic
    ``x̄ = r (ĝ - mean(ĝ) - x̂ mean(ĝ x̂))`` with ``ĝ = ḡ·weight``, ``weight̄ = Σ ḡ x̂`` and
    ``bias̄ = Σ ḡ`` over the leading axes (under ``create_graph`` the mean and ``r`` are
    recomputed from ``x``, so every order of derivative is right)."""
    x = _t(input)
    shape = (int(normalized_shape),) if isinstance(normalized_shape, int) else tuple(
        int(n) for n in normalized_shape)
    k = len(shape)
    if k == 0 or x.ndim < k or tuple(x.shape[x.ndim - k:]) != shape:
        raise ValueError(f"layer_norm: normalized_shape {shape} must be the last axes of the "
                         f"input, whose shape is {x.shape}")
    axes = tuple(range(x.ndim - k, x.ndim))
    ps: list[ag.Tensor | None] = []
    for name, p in (("weight", weight), ("bias", bias)):
        if p is None:
            ps.append(None)
            continue
        pt = _float_like(p, x, "layer_norm", name)
        if pt.shape != shape:
            raise ValueError(f"layer_norm: {name} must have shape {shape}, not {pt.shape}")
        ps.append(pt)
    w, bt = ps
    if x.dtype.kind != "f":  # complex: composed of standard ops
        mu = ag.mean(x, axis=axes, keepdims=True)
        d = x - mu
        y = d / ag.sqrt(ag.mean(d * d, axis=axes, keepdims=True) + eps)
        y = y if w is None else y * w
        return y if bt is None else y + bt
    b = x._backend
    xp = b.xp
    m = math.prod(shape)
    raw = [None if p is None else xp.reshape(p.data, (m,)) for p in ps]
    y, mu, r = b.layer_norm(xp, xp.reshape(x.data, (-1, m)), eps, raw[0], raw[1])
    inputs: tuple[Any, ...] = (x,) + tuple(p for p in ps if p is not None)
    rules = (_ln_x,) + tuple(rule for p, rule in zip(ps, (_ln_w, _ln_b)) if p is not None)
    return _record("layer_norm", xp.reshape(y, x.shape), b, inputs, rules, (x, mu, r, w),
                   params=(shape, eps, b, bt is not None, _LNSums()))


class _LNSums:
    """The weight's and bias's cotangents that :func:`_ln_x`'s one pass over ``ḡ`` and ``x̂``
    computed beside the input's, kept for the rules of ``w`` and ``b``, which the walk runs
    next with the same ``ḡ``: ``(weakref to ḡ, Σ ḡ x̂, Σ ḡ)``, each taken once. Only column
    sums are kept (no reference to ``ḡ``), and a rule uses them only for the very ``ḡ`` they
    came from -- otherwise (a walk that skipped ``x``, ``create_graph``) it computes its own."""

    __slots__ = ("entry",)

    def __init__(self) -> None:
        self.entry: tuple[Any, Any, Any] | None = None

    def __repr__(self) -> str:
        return "_LNSums()"

    def take(self, g: Any, k: int) -> Any:
        e = self.entry
        if e is None or e[k] is None or e[0]() is not g:
            return None
        rest = (e[0], None if k == 1 else e[1], None if k == 2 else e[2])
        self.entry = rest if rest[1] is not None or rest[2] is not None else None
        return e[k]


# The rules see the rows (M, K) of x, and the mean and r of the forward (recomputed from x under
# create_graph, through the standard path on Tensors, so that every order is right); x̂ = (x -
# mean)·r is recomputed where needed (the same operations as the forward's: the same bits).


def _ln_rows(xp: Any, g: Any, x: Any, mu: Any, r: Any, shape: tuple[int, ...], eps: float,
             b: Any) -> tuple[Any, Any, Any, Any, int]:
    m = math.prod(shape)
    x2 = xp.reshape(x, (-1, m))
    if isinstance(x, ag.Tensor):
        _, mu, r = b.layer_norm(xp, x2, eps, None, None)
    return xp.reshape(g, (-1, m)), x2, mu, r, m


def _ln_x(xp: Any, g: Any, x: Any, mu: Any, r: Any, w: Any, shape: tuple[int, ...],
          eps: float, b: Any, has_b: bool, sums: _LNSums) -> Any:
    g2, x2, mu, r, m = _ln_rows(xp, g, x, mu, r, shape, eps, b)
    w2 = None if w is None else xp.reshape(w, (m,))
    key = None
    if not isinstance(g, ag.Tensor):
        try:
            key = weakref.ref(g)
        except TypeError:  # an array type without weak references: no sums kept
            pass
    want = (key is not None and w is not None, key is not None and has_b)
    dx, gw, gb = b.layer_norm_grad(xp, g2, x2, mu, r, w2, want)
    if gw is not None or gb is not None:
        sums.entry = (key, gw, gb)
    return xp.reshape(dx, x.shape)


def _ln_w(xp: Any, g: Any, x: Any, mu: Any, r: Any, w: Any, shape: tuple[int, ...],
          eps: float, b: Any, has_b: bool, sums: _LNSums) -> Any:
    gw = sums.take(g, 1)
    if gw is None:
        g2, x2, mu, r, _ = _ln_rows(xp, g, x, mu, r, shape, eps, b)
        gw = xp.sum(g2 * ((x2 - mu) * r), axis=0)
    return xp.reshape(gw, shape)


def _ln_b(xp: Any, g: Any, x: Any, mu: Any, r: Any, w: Any, shape: tuple[int, ...],
          eps: float, b: Any, has_b: bool, sums: _LNSums) -> Any:
    gb = sums.take(g, 2)
    if gb is None:
        gb = xp.sum(xp.reshape(g, (-1, math.prod(shape))), axis=0)
    return xp.reshape(gb, shape)


def _ln_x_jvp(xp: Any, v: Any, y: Any, x: Any, mu: Any, r: Any, w: Any,
              shape: tuple[int, ...], eps: float, b: Any, *_: Any) -> Any:
    # x̂'s Jacobian r (I - 11ᵀ/n - x̂x̂ᵀ/n) is symmetric: the VJP rule's map, then the weight.
    # (Run on Tensors -- nested forward mode -- mean and r are recomputed from x, so that the
    # outer level differentiates them too, as the VJP rule does under create_graph.)
    v2, x2, mu, r, m = _ln_rows(xp, v, x, mu, r, shape, eps, b)
    p = b.layer_norm_grad(xp, v2, x2, mu, r, None)[0]
    return xp.reshape(p if w is None else p * xp.reshape(w, (m,)), y.shape)


def _ln_w_jvp(xp: Any, v: Any, y: Any, x: Any, mu: Any, r: Any, w: Any,
              shape: tuple[int, ...], eps: float, b: Any, *_: Any) -> Any:
    _, x2, mu, r, m = _ln_rows(xp, x, x, mu, r, shape, eps, b)
    return xp.reshape(((x2 - mu) * r) * xp.reshape(v, (m,)), y.shape)


defjvp(_ln_x, _ln_x_jvp)
defjvp(_ln_w, _ln_w_jvp)
defjvp(_ln_b, lambda xp, v, *_: v)


def embedding(input: Any, weight: ag.Tensor, padding_idx: int | None = None) -> ag.Tensor:
    """Rows of ``weight`` (shape ``(num_embeddings, embedding_dim)``) at the integer indices
    ``input`` (any shape): the result has shape ``(*input.shape, embedding_dim)``.

    The gradient of ``weight`` is the cotangent scatter-added into the rows read (repeated
    indices summed: :meth:`agnograd.Backend.scatter_add`). The row ``padding_idx`` receives no
    gradient, as in PyTorch. An index outside ``0..num_embeddings-1`` raises ``IndexError``
    naming it and its position where a host read is cheap; elsewhere (GPU, Dask, inside
    :func:`agnograd.capture`) its output row is NaN (never another row's vector).
    """
    w = _t(weight)
    if w.ndim != 2:
        raise ValueError(f"embedding: weight must have shape (num_embeddings, embedding_dim), "
                         f"not {w.shape}")
    idx = _int_target(input, w, "embedding")
    n, dim = w.shape
    if padding_idx is not None:
        if not -n <= padding_idx < n:
            raise ValueError(f"embedding: padding_idx {padding_idx} is out of range for {n} "
                             "embeddings")
        padding_idx %= n
    flat = ag.reshape(idx, (-1,))
    bad = _out_of_range(flat, n, _can_check_on_host(idx), "embedding", noun="index",
                        shape=idx.shape, of="embeddings")
    safe = flat if bad is None else ag.where(bad, ag.zeros_like(flat), flat)
    rows = _take_rows(w, safe)
    if padding_idx is not None and w.requires_grad:
        pad = ag.reshape(ag.equal(safe, padding_idx), (-1, 1))
        rows = ag.where(pad, ag.take(w.detach(), safe, axis=0), rows)
    if bad is not None:
        rows = ag.where(ag.reshape(bad, (-1, 1)), ag.full_like(rows, math.nan), rows)
    return ag.reshape(rows, (*idx.shape, dim))


def _take_rows(w: ag.Tensor, idx: ag.Tensor) -> ag.Tensor:
    """``w[idx]``: the rows of ``w`` ``(n, d)`` at the 1-d integer ``idx``, as one node whose
    gradient scatter-adds the cotangent's rows (:meth:`agnograd.Backend.scatter_add_rows`; no
    ``n·d`` table of positions, unlike a generic ``take``)."""
    b = w._backend
    if idx._backend is not b:  # batched indices (ag.vmap): the table is shared by the examples
        b = _higher(b, idx._backend, "embedding")
        w = _lift_to(w, b, "embedding")
    raw = idx.data
    return _record("embedding", b.xp.take(w.data, raw, axis=0), b, (w,), (_take_rows_w,), (),
                   params=(raw, w.shape[0], b))


def _take_rows_w(xp: Any, g: Any, idx: Any, n: int, b: Any) -> Any:
    if isinstance(g, ag.Tensor):  # create_graph: the differentiable scatter-add of positions
        d = g.shape[1]
        pos = b.xp.reshape(idx[:, None] * d + b.xp.arange(d, dtype=idx.dtype,
                                                          device=b.device_of(idx)), (-1,))
        from .._ops.indexing import scatter_add

        return ag.reshape(scatter_add(xp, n * d, pos, ag.reshape(g, (-1,))), (n, d))
    return b.scatter_add_rows(xp, n, idx, g)


# ---------------------------------------------------------------------------------------------
# Convolution and pooling: windows cut by strided slicing (no backend-specific kernel)


def _linear_x(xp: Any, g: Any, x: Any, w: Any) -> Any:
    return g @ w  # (..., out) @ (out, in)


def _linear_w(xp: Any, g: Any, x: Any, w: Any) -> Any:
    if g.ndim == 2:
        return g.T @ x  # (out, N) @ (N, in)
    out_f, in_f = w.shape
    return xp.reshape(g, (-1, out_f)).T @ xp.reshape(x, (-1, in_f))


def _linear_b(xp: Any, g: Any, x: Any, w: Any) -> Any:
    return g if g.ndim == 1 else xp.sum(g, axis=tuple(range(g.ndim - 1)))


_LINEAR_RULES = (_linear_x, _linear_w, _linear_b)
# JVP rules (forward mode) of y = x Wᵀ + b: v Wᵀ, x Vᵀ and v.
defjvp(_linear_x, lambda xp, v, y, x, w: xp.matmul(v, xp.matrix_transpose(w)))
defjvp(_linear_w, lambda xp, v, y, x, w: xp.matmul(x, xp.matrix_transpose(v)))
defjvp(_linear_b, lambda xp, v, y, x, w: v)


def _linear(x: Any, w: ag.Tensor, bias: ag.Tensor | None) -> ag.Tensor:
    """``x Wᵀ + b`` as one recorded node (PyTorch's ``F.linear``) where it can be: a real
    floating Tensor ``x (..., in)`` of ``W``'s backend and dtype, ``W (out, in)``. VJP:
    ``x̄ = ḡ W``, ``W̄ = ḡᵀ x`` (batch axes flattened), ``b̄ = Σ ḡ`` over the batch axes.
    Anything else takes the general ops (``x @ W.mT + b``)."""
    b = w._backend
    wd = w.data
    if (type(x) is not ag.Tensor or x._backend is not b or b.multi_device or x.ndim == 0
            or x.data.dtype != wd.dtype or x.shape[-1] != w.shape[1] or w.dtype.kind != "f"
            or (bias is not None and (bias.data.dtype != wd.dtype or bias._backend is not b
                                      or bias.shape != (w.shape[0],)))):
        # (a bias that broadcasts -- () or (1,), as PyTorch allows -- takes the general ops,
        # whose gradient sums back to its shape; the fused rule's is (out,))
        y: ag.Tensor = x @ w.mT
        return y if bias is None else y + bias
    try:
        out = x.data @ wd.T
    except NotImplementedError:  # CuPy refuses cuBLAS while a CUDA graph is captured
        out = b.xp.matmul(x.data, b.xp.matrix_transpose(wd))
    if bias is not None:
        out = out + bias.data
        return _record("linear", out, b, (x, w, bias), _LINEAR_RULES, (x, w))
    return _record("linear", out, b, (x, w), _LINEAR_RULES[:2], (x, w))


def linear(input: ag.Tensor, weight: ag.Tensor, bias: ag.Tensor | None = None) -> ag.Tensor:
    """``input Wᵀ + b`` (PyTorch's ``F.linear``): ``input (..., in)``, ``weight (out, in)``,
    ``bias (out,)`` -> ``(..., out)``. VJP: ``x̄ = ḡ W``, ``W̄ = ḡᵀ x``, ``b̄ = Σ ḡ`` over the
    batch axes."""
    weight = _t(weight)
    x = _t(input, weight)
    b = None if bias is None else _t(bias, weight)
    if weight.ndim == 1:  # a single output feature, dropped from the shape (as PyTorch)
        y: ag.Tensor = x @ weight
        return y if b is None else y + b
    return _linear(x, weight, b)


def _ntuple(v: int | Sequence[int], n: int, what: str, name: str, low: int) -> tuple[int, ...]:
    t = (v,) * n if isinstance(v, int) else tuple(v)
    if len(t) != n or not all(isinstance(i, int) and i >= low for i in t):
        raise ValueError(f"{what}: {name} must be an int >= {low} or a tuple of {n} of them, "
                         f"not {v!r}")
    return t


def _pad_spatial(x: ag.Tensor, pads: Sequence[tuple[int, int]], value: float) -> ag.Tensor:
    """``x`` (``(N, C, *spatial)``) with ``pads[i]`` constants before and after spatial axis i."""
    for i, (lo, hi) in enumerate(pads):
        if lo == 0 and hi == 0:
            continue
        axis = 2 + i
        parts = []
        with ag.default_backend(x.backend):
            for k in (lo, hi):
                shape = list(x.shape)
                shape[axis] = k
                parts.append(ag.full(tuple(shape), value, dtype=x.dtype, device=x.device)
                             if k else None)
        x = ag.concat([p for p in (parts[0], x, parts[1]) if p is not None], axis=axis)
    return x


def _out_size(x: ag.Tensor, kernel: tuple[int, ...], stride: tuple[int, ...],
              dilation: tuple[int, ...], what: str) -> tuple[int, ...]:
    """The number of windows along each spatial axis of padded ``x`` ``(N, C, *spatial)``."""
    out = []
    for n, k, s, d in zip(x.shape[2:], kernel, stride, dilation):
        span = d * (k - 1) + 1
        if n < span:
            raise ValueError(f"{what}: the (padded) input size {n} is smaller than the "
                             f"(dilated) kernel size {span}; input shape {x.shape}")
        out.append((n - span) // s + 1)
    return tuple(out)


def _windows(x: ag.Tensor, kernel: tuple[int, ...], stride: tuple[int, ...],
             dilation: tuple[int, ...], what: str) -> tuple[ag.Tensor, tuple[int, ...]]:
    """The sliding windows of padded ``x`` (``(N, C, *spatial)``) as ``(N, C, *kernel, *out)``
    (one node: :meth:`agnograd.Backend.windows`, a strided view on NumPy, stacked slices
    elsewhere; its gradient :func:`_fold`), and the output size ``out``."""
    o = _out_size(x, kernel, stride, dilation, what)
    b = x._backend
    data = b.windows(b.xp, x.data, kernel, stride, dilation, o)
    return _record("windows", data, b, (x,), (_windows_x,), (),
                   params=(tuple(x.shape), kernel, stride, dilation, b)), o


def _windows_x(xp: Any, g: Any, shape: tuple[int, ...], kernel: tuple[int, ...],
               stride: tuple[int, ...], dilation: tuple[int, ...], b: Any) -> Any:
    """The gradient of :func:`_windows`: its adjoint, :func:`_fold` (a recorded node where the
    gradient is differentiated again)."""
    if isinstance(g, ag.Tensor):
        return _fold(g, shape, kernel, stride, dilation)
    return b.fold(xp, g, shape, kernel, stride, dilation)


def _fold(g: ag.Tensor, shape: tuple[int, ...], kernel: tuple[int, ...],
          stride: tuple[int, ...], dilation: tuple[int, ...]) -> ag.Tensor:
    """``g`` ``(N, C, *kernel, *out)`` summed back into ``shape`` (:meth:`agnograd.Backend.fold`),
    as one node whose gradient is :func:`_windows` (the two are adjoint)."""
    b = g._backend
    data = b.fold(b.xp, g.data, shape, kernel, stride, dilation)
    out = tuple(g.shape[2 + len(kernel):])
    return _record("fold", data, b, (g,), (_fold_g,), (),
                   params=(kernel, stride, dilation, out, b))


def _fold_g(xp: Any, g: Any, kernel: tuple[int, ...], stride: tuple[int, ...],
            dilation: tuple[int, ...], out: tuple[int, ...], b: Any) -> Any:
    if isinstance(g, ag.Tensor):
        return _windows(g, kernel, stride, dilation, "fold")[0]
    return b.windows(xp, g, kernel, stride, dilation, out)


def _batched(x: ag.Tensor, nd: int, what: str) -> tuple[ag.Tensor, bool]:
    if x.ndim == nd + 1:  # unbatched (C, *spatial)
        return ag.expand_dims(x, axis=0), True
    if x.ndim != nd + 2:
        spatial = ("L",) if nd == 1 else ("H", "W")
        raise ValueError(f"{what}: input must have shape (N, C, {', '.join(spatial)}) or "
                         f"(C, {', '.join(spatial)}), not {x.shape}")
    return x, False


def _convnd(nd: int, input: ag.Tensor, weight: ag.Tensor, bias: Any, stride: Any, padding: Any,
            dilation: Any, groups: int) -> ag.Tensor:
    what = f"conv{nd}d"
    x, unbatched = _batched(_t(input), nd, what)
    w = _float_like(weight, x, what, "weight")
    if w.ndim != nd + 2:
        raise ValueError(f"{what}: weight must have shape (C_out, C_in/groups, "
                         f"{', '.join(['k'] * nd)}), not {w.shape}")
    c_in, c_out, cg = x.shape[1], w.shape[0], w.shape[1]
    if not isinstance(groups, int) or groups < 1 or c_out % groups:
        raise ValueError(f"{what}: groups={groups!r} must be a positive int dividing the output "
                         f"channels {c_out} (weight {w.shape})")
    if cg * groups != c_in:
        raise ValueError(f"{what}: weight {w.shape} expects {cg * groups} input channels "
                         f"({cg} per group x {groups} groups), the input {x.shape} has {c_in}")
    kernel = tuple(int(k) for k in w.shape[2:])
    stride_t = _ntuple(stride, nd, what, "stride", 1)
    dil = _ntuple(dilation, nd, what, "dilation", 1)
    if isinstance(padding, str):
        if padding == "valid":
            pads = [(0, 0)] * nd
        elif padding == "same":
            if any(s != 1 for s in stride_t):
                raise ValueError(f"{what}: padding='same' needs stride 1, not {stride!r}")
            # PyTorch's split: the extra element (even total) goes after
            pads = [((d * (k - 1)) // 2, d * (k - 1) - (d * (k - 1)) // 2)
                    for k, d in zip(kernel, dil)]
        else:
            raise ValueError(f"{what}: padding must be an int, a tuple, 'valid' or 'same', not "
                             f"{padding!r}")
    else:
        pads = [(p, p) for p in _ntuple(padding, nd, what, "padding", 0)]
    cols, out = _windows(_pad_spatial(x, pads, 0.0), kernel, stride_t, dil, what)
    n, k = x.shape[0], math.prod(kernel)
    length = math.prod(out)
    # Every reshape only splits or only merges axes (Dask refuses a reshape that does both);
    # the one that merges (C/groups, *kernel) and *out copies a strided window view (im2col).
    # No broadcast batch axis on the weight: NumPy's matmul leaves BLAS for the transposed,
    # broadcast weight of the gradient (5x slower at conv1d (16, 64, 2048)).
    if groups == 1:
        cols = ag.reshape(cols, (n, cg * k, length))
        wm = ag.reshape(w, (c_out, cg * k))
    else:
        cols = ag.reshape(ag.reshape(cols, (n, groups, cg, *kernel, *out)),
                          (n, groups, cg * k, length))
        wm = ag.reshape(ag.reshape(w, (c_out, cg * k)), (groups, c_out // groups, cg * k))
    y = ag.reshape(ag.reshape(wm @ cols, (n, c_out, length)), (n, c_out, *out))
    if bias is not None:
        b = _float_like(bias, x, what, "bias")
        if b.shape != (c_out,):
            raise ValueError(f"{what}: bias must have shape ({c_out},), not {b.shape}")
        y = y + ag.reshape(b, (1, c_out) + (1,) * nd)
    return y[0, ...] if unbatched else y


def conv1d(input: ag.Tensor, weight: ag.Tensor, bias: Any = None, stride: int | Sequence[int] = 1,
           padding: int | Sequence[int] | str = 0, dilation: int | Sequence[int] = 1,
           groups: int = 1) -> ag.Tensor:
    """1-d cross-correlation, as ``torch.nn.functional.conv1d``: ``input`` of shape
    ``(N, C_in, L)`` (or ``(C_in, L)``), ``weight`` ``(C_out, C_in/groups, k)``, ``bias``
    ``(C_out,)``; zero ``padding`` (an int, a 1-tuple, ``"valid"`` or ``"same"``).

    Built from standard ops: the windows are cut by strided slicing, stacked, and multiplied
    with the weight by one batched ``matmul``, so it runs and differentiates (to any order) on
    every backend.
    """
    return _convnd(1, input, weight, bias, stride, padding, dilation, groups)


def conv2d(input: ag.Tensor, weight: ag.Tensor, bias: Any = None, stride: int | Sequence[int] = 1,
           padding: int | Sequence[int] | str = 0, dilation: int | Sequence[int] = 1,
           groups: int = 1) -> ag.Tensor:
    """2-d cross-correlation, as ``torch.nn.functional.conv2d``: ``input`` of shape
    ``(N, C_in, H, W)`` (or ``(C_in, H, W)``), ``weight`` ``(C_out, C_in/groups, kH, kW)``,
    ``bias`` ``(C_out,)``; ``stride``, ``padding`` (zeros; also ``"valid"``/``"same"``) and
    ``dilation`` are ints or pairs. Built from standard ops like :func:`conv1d`."""
    return _convnd(2, input, weight, bias, stride, padding, dilation, groups)


def _conv_transposend(nd: int, input: ag.Tensor, weight: ag.Tensor, bias: Any, stride: Any,
                      padding: Any, output_padding: Any, groups: int, dilation: Any
                      ) -> ag.Tensor:
    what = f"conv_transpose{nd}d"
    x, unbatched = _batched(_t(input), nd, what)
    w = _float_like(weight, x, what, "weight")
    if w.ndim != nd + 2:
        raise ValueError(f"{what}: weight must have shape (C_in, C_out/groups, "
                         f"{', '.join(['k'] * nd)}), not {w.shape}")
    c_in, cg_out = x.shape[1], w.shape[1]
    if not isinstance(groups, int) or groups < 1 or w.shape[0] % groups:
        raise ValueError(f"{what}: groups={groups!r} must be a positive int dividing the "
                         f"weight's first axis {w.shape[0]} (weight {w.shape})")
    if w.shape[0] != c_in:
        raise ValueError(f"{what}: weight {w.shape} expects {w.shape[0]} input channels, the "
                         f"input {x.shape} has {c_in}")
    c_out = cg_out * groups
    kernel = tuple(int(k) for k in w.shape[2:])
    stride_t = _ntuple(stride, nd, what, "stride", 1)
    pad = _ntuple(padding, nd, what, "padding", 0)
    opad = _ntuple(output_padding, nd, what, "output_padding", 0)
    dil = _ntuple(dilation, nd, what, "dilation", 1)
    if any(o >= max(s, d) for o, s, d in zip(opad, stride_t, dil)):
        raise ValueError(f"{what}: output_padding {output_padding!r} must be smaller than "
                         f"either stride {stride!r} or dilation {dilation!r}")
    n, k = x.shape[0], math.prod(kernel)
    spatial = tuple(x.shape[2:])
    full = tuple((m - 1) * s + d * (kk - 1) + 1 + o
                 for m, s, d, kk, o in zip(spatial, stride_t, dil, kernel, opad))
    out = tuple(f - 2 * p for f, p in zip(full, pad))
    if any(o < 1 for o in out):
        raise ValueError(f"{what}: the output size {out} is not positive (input {x.shape}, "
                         f"weight {w.shape}, stride {stride!r}, padding {padding!r})")
    length = math.prod(spatial)
    cg_in = c_in // groups
    # The adjoint of conv: per group, one matrix product W_g^T x_g gives every window's
    # contribution (N, C_out/groups · k, L), and the windows are summed into place (fold).
    if groups == 1:  # (no broadcast batch axis on the weight: see _convnd)
        xm = ag.reshape(x, (n, c_in, length))
        wm = ag.reshape(w, (c_in, cg_out * k))
    else:
        xm = ag.reshape(ag.reshape(x, (n, c_in, length)), (n, groups, cg_in, length))
        wm = ag.reshape(ag.reshape(w, (c_in, cg_out * k)), (groups, cg_in, cg_out * k))
    cols = ag.matrix_transpose(wm) @ xm  # (n, [groups,] cg_out·k, length)
    cols = ag.reshape(ag.reshape(cols, (n, c_out * k, length)), (n, c_out, *kernel, *spatial))
    y = _fold(cols, (n, c_out, *full), kernel, stride_t, dil)
    if any(pad):
        y = y[(slice(None), slice(None)) + tuple(slice(p, p + o) for p, o in zip(pad, out))]
    if bias is not None:
        b = _float_like(bias, x, what, "bias")
        if b.shape != (c_out,):
            raise ValueError(f"{what}: bias must have shape ({c_out},), not {b.shape}")
        y = y + ag.reshape(b, (1, c_out) + (1,) * nd)
    return y[0, ...] if unbatched else y


def conv_transpose1d(input: ag.Tensor, weight: ag.Tensor, bias: Any = None,
                     stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0,
                     output_padding: int | Sequence[int] = 0, groups: int = 1,
                     dilation: int | Sequence[int] = 1) -> ag.Tensor:
    """1-d transposed convolution, as ``torch.nn.functional.conv_transpose1d`` (its argument
    order): ``input`` ``(N, C_in, L)`` (or ``(C_in, L)``), ``weight`` ``(C_in, C_out/groups, k)``,
    ``bias`` ``(C_out,)``. The output length is
    ``(L - 1)·stride - 2·padding + dilation·(k - 1) + output_padding + 1``.

    It is the adjoint (the input gradient) of :func:`conv1d`: one matrix product per group gives
    each input position's window of the output, and the windows are summed into place
    (:meth:`agnograd.Backend.fold`); differentiable to any order on every backend.
    """
    return _conv_transposend(1, input, weight, bias, stride, padding, output_padding, groups,
                             dilation)


def conv_transpose2d(input: ag.Tensor, weight: ag.Tensor, bias: Any = None,
                     stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0,
                     output_padding: int | Sequence[int] = 0, groups: int = 1,
                     dilation: int | Sequence[int] = 1) -> ag.Tensor:
    """2-d transposed convolution, as ``torch.nn.functional.conv_transpose2d``: ``input``
    ``(N, C_in, H, W)`` (or ``(C_in, H, W)``), ``weight`` ``(C_in, C_out/groups, kH, kW)``;
    ``stride``, ``padding``, ``output_padding`` and ``dilation`` are ints or pairs. See
    :func:`conv_transpose1d`."""
    return _conv_transposend(2, input, weight, bias, stride, padding, output_padding, groups,
                             dilation)


def _poolnd(nd: int, kind: str, input: ag.Tensor, kernel_size: Any, stride: Any, padding: Any,
            dilation: Any, ceil_mode: bool, count_include_pad: bool = True) -> ag.Tensor:
    what = f"{kind}_pool{nd}d"
    if ceil_mode:
        raise NotImplementedError(f"{what}: ceil_mode=True is not supported; pad the input "
                                  "instead")
    x, unbatched = _batched(_t(input), nd, what)
    kernel = _ntuple(kernel_size, nd, what, "kernel_size", 1)
    stride_t = kernel if stride is None or stride == () else _ntuple(stride, nd, what, "stride", 1)
    dil = _ntuple(dilation, nd, what, "dilation", 1)
    pad = _ntuple(padding, nd, what, "padding", 0)
    if any(2 * p > k for p, k in zip(pad, kernel)):
        raise ValueError(f"{what}: padding {padding!r} must be at most half the kernel size "
                         f"{kernel_size!r}")
    pads = [(p, p) for p in pad]
    fill = -math.inf if kind == "max" else 0.0
    xpad = _pad_spatial(x, pads, fill)
    if kind == "max":
        y = _max_pool(xpad, kernel, stride_t, dil, what)
        return y[0, ...] if unbatched else y
    win, _ = _windows(xpad, kernel, stride_t, dil, what)
    axes = tuple(range(2, 2 + nd))  # the kernel's axes
    if count_include_pad or not any(pad):
        y = ag.mean(win, axis=axes)
    else:  # divide by the number of real (not padding) elements in each window
        ones = ag.ones_like(x[0:1, 0:1, ...])
        count, _ = _windows(_pad_spatial(ones, pads, 0.0), kernel, stride_t, dil, what)
        y = ag.sum(win, axis=axes) / ag.sum(count, axis=axes)
    return y[0, ...] if unbatched else y


def _offsets(x: Any, kernel: tuple[int, ...], stride: tuple[int, ...], dilation: tuple[int, ...],
             out: tuple[int, ...]) -> list[Any]:
    """The ``prod(kernel)`` strided slices of ``x`` ``(N, C, *spatial)`` at the kernel offsets
    (each ``(N, C, *out)``: element ``o`` of every window), in C order of the offsets."""
    return [x[(slice(None), slice(None)) + tuple(
        slice(o * d, o * d + s * (m - 1) + 1, s) for o, d, s, m in zip(off, dilation, stride, out))]
        for off in itertools.product(*(range(k) for k in kernel))]


def _max_pool(x: ag.Tensor, kernel: tuple[int, ...], stride: tuple[int, ...],
              dilation: tuple[int, ...], what: str) -> ag.Tensor:
    """The maximum over each window of padded ``x``: one node, ``maximum`` of the
    ``prod(kernel)`` strided slices (elementwise over the output: fast on every backend, no
    reduction over a strided window axis); gradient :func:`_max_pool_x`."""
    o = _out_size(x, kernel, stride, dilation, what)
    b = x._backend
    xp = b.xp
    pieces = _offsets(x.data, kernel, stride, dilation, o)
    y = pieces[0]
    for p in pieces[1:]:
        y = xp.maximum(y, p)
    return _record("max_pool", y, b, (x,), (_max_pool_x,), (x, OUT),
                   params=(kernel, stride, dilation, o, b))


def _max_pool_x(xp: Any, g: Any, x: Any, y: Any, kernel: tuple[int, ...],
                stride: tuple[int, ...], dilation: tuple[int, ...], out: tuple[int, ...],
                b: Any) -> Any:
    """The gradient of :func:`_max_pool`: ``ḡ`` to each element equal to its window's maximum,
    split equally between ties (``ḡ/count``), summed back into ``x`` (:func:`_fold`)."""
    tensor = isinstance(g, ag.Tensor)
    xd = x.data if isinstance(x, ag.Tensor) else x
    yd = y.data if isinstance(y, ag.Tensor) else y
    rx = b.xp if tensor else xp  # the masks and counts are constants: raw arrays
    masks = [p == yd for p in _offsets(xd, kernel, stride, dilation, out)]
    count = rx.astype(masks[0], yd.dtype)
    for m in masks[1:]:
        count = count + rx.astype(m, yd.dtype)
    gs = g / count
    if tensor:
        zeros = ag.zeros_like(gs)
        parts = [ag.where(ag.as_tensor(m, b), gs, zeros) for m in masks]
        full = ag.reshape(ag.stack(parts, axis=2), (*gs.shape[:2], *kernel, *out))
        return _fold(full, tuple(xd.shape), kernel, stride, dilation)
    parts = [xp.where(m, gs, 0.0) for m in masks]
    return b.fold(xp, parts, tuple(xd.shape), kernel, stride, dilation)


# JVP rules (forward mode): windows and fold apply themselves to the tangent (they are linear),
# embedding gathers the tangent's rows, max-pool takes the tangent at each window's maximum
# (averaged over ties, the transpose of its VJP rule).
def _windows_jvp(xp: Any, v: Any, y: Any, shape: tuple[int, ...], kernel: tuple[int, ...],
                 stride: tuple[int, ...], dilation: tuple[int, ...], b: Any) -> Any:
    if isinstance(v, ag.Tensor):
        return _windows(v, kernel, stride, dilation, "windows")[0]
    return b.windows(xp, v, kernel, stride, dilation, tuple(y.shape[2 + len(kernel):]))


def _fold_jvp(xp: Any, v: Any, y: Any, kernel: tuple[int, ...], stride: tuple[int, ...],
              dilation: tuple[int, ...], out: tuple[int, ...], b: Any) -> Any:
    if isinstance(v, ag.Tensor):
        return _fold(v, tuple(y.shape), kernel, stride, dilation)
    return b.fold(xp, v, tuple(y.shape), kernel, stride, dilation)


def _take_rows_jvp(xp: Any, v: Any, y: Any, idx: Any, n: int, b: Any) -> Any:
    if isinstance(v, ag.Tensor):
        return ag.take(v, ag.as_tensor(idx, b), axis=0)
    return xp.take(v, idx, axis=0)


def _max_pool_jvp(xp: Any, v: Any, out_y: Any, x: Any, y: Any, kernel: tuple[int, ...],
                  stride: tuple[int, ...], dilation: tuple[int, ...], out: tuple[int, ...],
                  b: Any) -> Any:
    xd = x.data if isinstance(x, ag.Tensor) else x
    yd = y.data if isinstance(y, ag.Tensor) else y
    tensor = isinstance(v, ag.Tensor)
    rx = b.xp if tensor else xp
    masks = [p == yd for p in _offsets(xd, kernel, stride, dilation, out)]
    count = rx.astype(masks[0], yd.dtype)
    for m in masks[1:]:
        count = count + rx.astype(m, yd.dtype)
    total = None
    for m, p in zip(masks, _offsets(v, kernel, stride, dilation, out)):
        if tensor:
            term = ag.where(ag.as_tensor(m, b), p, ag.zeros_like(p))
        else:
            term = xp.where(m, p, 0.0)
        total = term if total is None else total + term
    return total / count


defjvp(_windows_x, _windows_jvp)
defjvp(_fold_g, _fold_jvp)
defjvp(_take_rows_w, _take_rows_jvp)
defjvp(_max_pool_x, _max_pool_jvp)


def max_pool1d(input: ag.Tensor, kernel_size: int | Sequence[int],
               stride: int | Sequence[int] | None = None, padding: int | Sequence[int] = 0,
               dilation: int | Sequence[int] = 1, ceil_mode: bool = False) -> ag.Tensor:
    """The maximum over each window of ``input`` ``(N, C, L)`` (or ``(C, L)``), as
    ``torch.nn.functional.max_pool1d`` (``stride`` defaults to ``kernel_size``; padding is
    ``-inf``). The gradient goes to the maximal element, split equally between ties (PyTorch
    gives all of it to one of them)."""
    return _poolnd(1, "max", input, kernel_size, stride, padding, dilation, ceil_mode)


def max_pool2d(input: ag.Tensor, kernel_size: int | Sequence[int],
               stride: int | Sequence[int] | None = None, padding: int | Sequence[int] = 0,
               dilation: int | Sequence[int] = 1, ceil_mode: bool = False) -> ag.Tensor:
    """The maximum over each window of ``input`` ``(N, C, H, W)`` (or ``(C, H, W)``), as
    ``torch.nn.functional.max_pool2d``; see :func:`max_pool1d`."""
    return _poolnd(2, "max", input, kernel_size, stride, padding, dilation, ceil_mode)


def avg_pool1d(input: ag.Tensor, kernel_size: int | Sequence[int],
               stride: int | Sequence[int] | None = None, padding: int | Sequence[int] = 0,
               ceil_mode: bool = False, count_include_pad: bool = True) -> ag.Tensor:
    """The mean over each window of ``input`` ``(N, C, L)`` (or ``(C, L)``), as
    ``torch.nn.functional.avg_pool1d`` (zero padding, counted in the mean unless
    ``count_include_pad=False``)."""
    return _poolnd(1, "avg", input, kernel_size, stride, padding, 1, ceil_mode, count_include_pad)


def avg_pool2d(input: ag.Tensor, kernel_size: int | Sequence[int],
               stride: int | Sequence[int] | None = None, padding: int | Sequence[int] = 0,
               ceil_mode: bool = False, count_include_pad: bool = True) -> ag.Tensor:
    """The mean over each window of ``input`` ``(N, C, H, W)`` (or ``(C, H, W)``), as
    ``torch.nn.functional.avg_pool2d``; see :func:`avg_pool1d`."""
    return _poolnd(2, "avg", input, kernel_size, stride, padding, 1, ceil_mode, count_include_pad)


# -- padding, resampling, normalisation, similarity, divergence ---------------------------------

def _along(x: ag.Tensor, axis: int, start: int | None, stop: int | None) -> ag.Tensor:
    """``x[..., start:stop, ...]`` along ``axis``."""
    return x[(slice(None),) * axis + (slice(start, stop), ...)]


def pad(input: ag.Tensor, pad: Sequence[int], mode: str = "constant",
        value: float | None = None) -> ag.Tensor:
    """Pad ``input`` as PyTorch's ``F.pad``: ``pad = (left, right)`` for the last axis, then
    ``(left, right, top, bottom)`` for the last two, and so on (pairs from the last axis
    backwards). ``mode``: ``"constant"`` (``value``, default 0; negative amounts crop),
    ``"reflect"`` (mirror without repeating the edge: each amount below the axis length),
    ``"replicate"`` (repeat the edge) or ``"circular"`` (wrap around: each amount at most the
    axis length). In the other modes negative amounts crop first. Built from slices, flips and
    concatenations, so the gradient of a padded element flows back to the element it copies.
    """
    x = _t(input)
    pads = tuple(_as_int(p) for p in pad)  # (NumPy integers too, as PyTorch takes them)
    if (len(pads) % 2 or not all(isinstance(p, int) and not isinstance(p, bool) for p in pads)
            or len(pads) // 2 > x.ndim):
        raise ValueError(f"pad: pad must be an even-length sequence of ints, at most 2 per axis of "
                         f"the input (shape {x.shape}), not {pad!r}")
    if mode not in ("constant", "reflect", "replicate", "circular"):
        raise ValueError(f"pad: mode must be 'constant', 'reflect', 'replicate' or 'circular', "
                         f"not {mode!r}")
    if mode != "constant" and value not in (None, 0, 0.0):
        raise ValueError(f"pad: a value ({value}) is only used by mode='constant', not {mode!r}")
    for k in range(len(pads) // 2):
        axis = x.ndim - 1 - k
        lo, hi = pads[2 * k], pads[2 * k + 1]
        if lo < 0 or hi < 0:  # crop
            n = x.shape[axis]
            # as PyTorch: cropping more than the axis holds, or (reflect, replicate) leaving
            # nothing to copy from, is an error -- never a silently empty or made-up result
            if max(-lo, 0) + max(-hi, 0) > n:
                raise ValueError(f"pad: the pads ({lo}, {hi}) crop more than the {n} elements of "
                                 f"axis {axis} (input shape {x.shape}); crop less")
            if mode in ("reflect", "replicate") and n + lo + hi <= 0:
                raise ValueError(f"pad: the pads ({lo}, {hi}) leave axis {axis} (input shape "
                                 f"{x.shape}) with {n + lo + hi} elements, which mode={mode!r} "
                                 "cannot pad; crop less")
            x = _along(x, axis, max(-lo, 0), n - max(-hi, 0))
            lo, hi = max(lo, 0), max(hi, 0)
        if lo == 0 and hi == 0:
            continue
        n = x.shape[axis]
        if mode == "constant":
            shape = list(x.shape)
            parts = []
            with ag.default_backend(x.backend):
                for amount in (lo, hi):
                    shape[axis] = amount
                    parts.append(ag.full(tuple(shape), 0.0 if value is None else value,
                                         dtype=x.dtype, device=x.device) if amount else None)
            x = ag.concat([p for p in (parts[0], x, parts[1]) if p is not None], axis=axis)
            continue
        if mode == "reflect" and (lo >= n or hi >= n):
            raise ValueError(f"pad: reflect padding ({lo}, {hi}) must be below the size {n} of "
                             f"axis {axis} (input shape {x.shape}); use mode='replicate' or pad "
                             "less")
        if mode == "circular" and (lo > n or hi > n):
            raise ValueError(f"pad: circular padding ({lo}, {hi}) must be at most the size {n} of "
                             f"axis {axis} (input shape {x.shape})")
        if n == 0:
            raise ValueError(f"pad: cannot {mode}-pad axis {axis} of size 0 (input shape "
                             f"{x.shape})")
        if mode == "reflect":
            left = ag.flip(_along(x, axis, 1, lo + 1), axis=axis) if lo else None
            right = ag.flip(_along(x, axis, n - 1 - hi, n - 1), axis=axis) if hi else None
        elif mode == "replicate":
            left = _edge(x, axis, 0, lo) if lo else None
            right = _edge(x, axis, n - 1, hi) if hi else None
        else:  # circular
            left = _along(x, axis, n - lo, n) if lo else None
            right = _along(x, axis, 0, hi) if hi else None
        x = ag.concat([p for p in (left, x, right) if p is not None], axis=axis)
    return x


def _edge(x: ag.Tensor, axis: int, i: int, amount: int) -> ag.Tensor:
    """Element ``i`` of ``axis`` repeated ``amount`` times along it."""
    shape = list(x.shape)
    shape[axis] = amount
    return ag.broadcast_to(_along(x, axis, i, i + 1), tuple(shape))


_RESAMPLE: dict[tuple[Any, ...], tuple[Any, ...]] = {}


def _resample_consts(x: ag.Tensor, key: tuple[Any, ...], make: Any) -> tuple[Any, ...]:
    """The index (and weight) arrays of one axis of :func:`interpolate`, made from the host
    lists ``make()`` returns -- int64 indices, weights in ``x``'s dtype -- once per backend,
    device, dtype and ``key`` (so a GPU does not copy them to the device on every call, and a
    captured step finds them made)."""
    b = x._backend
    base = b.root
    device = b.device_of(x.data) if b.multi_device else None
    full: tuple[Any, ...] = (id(base), device, x.data.dtype, *key)
    try:
        hit = _RESAMPLE.get(full)
    except TypeError:  # an unhashable device or dtype
        full = tuple(map(str, full))
        hit = _RESAMPLE.get(full)
    if hit is None or hit[0] is not base:
        xp = base.xp
        dev = x.device
        arrays = []
        for values in make():
            if values and isinstance(values[0], float):
                arrays.append(xp.asarray(values, dtype=x.data.dtype, device=dev))
            else:
                arrays.append(xp.asarray(values, dtype=xp.int64, device=dev))
        hit = (base, *arrays)
        if len(_RESAMPLE) > 64:
            _RESAMPLE.clear()
        _RESAMPLE[full] = hit
    return hit[1:]


def _take(x: ag.Tensor, idx: Any, axis: int) -> ag.Tensor:
    """``x`` at the index array ``idx`` along ``axis`` (a gather; its VJP a scatter-add)."""
    return ag.take(x, ag.Tensor._wrap(idx, x._backend), axis=axis)


def _f32(v: float) -> float:
    """``v`` rounded to float32 (PyTorch computes nearest-neighbour indices in float32)."""
    return float(struct.unpack("f", struct.pack("f", v))[0])


_LINEAR_MODES = {"linear": 1, "bilinear": 2, "trilinear": 3, "bicubic": 2}


def interpolate(input: ag.Tensor, size: int | Sequence[int] | None = None,
                scale_factor: float | Sequence[float] | None = None, mode: str = "nearest",
                align_corners: bool | None = None, recompute_scale_factor: bool | None = None,
                antialias: bool = False) -> ag.Tensor:
    """Resize the spatial axes of ``input`` (``(N, C, *spatial)``) as PyTorch's
    ``F.interpolate``, to ``size`` or by ``scale_factor`` (output size
    ``floor(in · scale_factor)``).

    Modes: ``"nearest"`` (source index ``floor(i · scale)``, ``scale = 1 / scale_factor`` when
    a factor is given and ``recompute_scale_factor`` is not true, else ``in / out``),
    ``"nearest-exact"`` (``floor((i + ½) · scale)``), ``"linear"`` (3-D input), ``"bilinear"``
    (4-D), ``"trilinear"`` (5-D): with ``align_corners=False`` (the default) the source
    coordinate is ``max((i + ½) · scale - ½, 0)``, with ``True`` it is
    ``i · (in - 1) / (out - 1)``; each axis is interpolated in turn between its two nearest
    source elements. ``"bicubic"`` (4-D): PyTorch's cubic convolution (``A = -0.75``) on the
    four nearest source elements of each axis (edges repeated), the coordinate not clamped.
    As PyTorch does, an axis whose output size equals its input size is copied by the linear
    and antialiased modes whatever ``scale_factor`` says, and a 4-D ``"nearest"`` copies such an axis
    and takes ``i // 2`` where the output is twice the input. The gradient is the transposed
    interpolation (gathers' scatter-adds). ``"area"`` is PyTorch's adaptive average pooling to
    the output size (output ``i`` averages ``[floor(i·in/out), ceil((i+1)·in/out))``), one
    matrix product per axis. ``antialias=True`` (``"bilinear"``/``"bicubic"``, 4-D) is
    PyTorch's antialiased resampling (a triangle or ``a = -0.5`` cubic filter whose support
    widens with the downsampling factor, weights normalised), one matrix product per axis.
    """
    x = _t(input)
    if mode not in ("nearest", "nearest-exact", "area", *_LINEAR_MODES):
        raise NotImplementedError(f"interpolate: mode {mode!r} is not implemented; agnograd "
                                  "supports 'nearest', 'nearest-exact', 'area', 'linear' (3-D "
                                  "input), 'bilinear' and 'bicubic' (4-D) and 'trilinear' (5-D)")
    if antialias and (mode not in ("bilinear", "bicubic") or x.ndim != 4):
        raise ValueError(f"interpolate: antialias=True applies to mode 'bilinear' or 'bicubic' on "
                         f"a 4-D input (as in PyTorch), not mode {mode!r} on shape {x.shape}")
    nd = x.ndim - 2
    if nd < 1:
        raise ValueError(f"interpolate: input must be (N, C, *spatial), got shape {x.shape}")
    want = _LINEAR_MODES.get(mode)
    if (want is not None or mode == "area") and x.dtype.kind != "f":
        # (the weights would be made in the input's dtype: truncated to 0, a silent wrong result)
        raise TypeError(f"interpolate: mode {mode!r} needs a floating-point input, not "
                        f"{x.dtype} (shape {x.shape}; PyTorch refuses it too); convert it with "
                        "ag.astype(x, ag.float32), or use mode='nearest'")
    if want is not None and nd != want:
        raise ValueError(f"interpolate: mode {mode!r} needs a {want + 2}-D input, got shape "
                         f"{x.shape}")
    if want is None and align_corners is not None:
        raise ValueError(f"interpolate: align_corners only applies to the linear and cubic "
                         f"modes, not {mode!r}; leave it None")
    if (size is None) == (scale_factor is None):
        raise ValueError("interpolate: give exactly one of size and scale_factor")
    ins = x.shape[2:]
    factors: tuple[float, ...] | None = None
    if size is not None:
        if recompute_scale_factor:
            raise ValueError("interpolate: recompute_scale_factor is not meaningful with an "
                             "explicit size (as PyTorch says); drop it or pass scale_factor")
        one = _as_int(size)
        outs = (one,) * nd if isinstance(one, int) else tuple(
            _as_int(o) for o in cast("Sequence[int]", size))
        if len(outs) != nd or not all(isinstance(o, int) and o > 0 for o in outs):
            raise ValueError(f"interpolate: size must be a positive int or {nd} of them, not "
                             f"{size!r}")
    else:
        assert scale_factor is not None
        factors = ((float(scale_factor),) * nd if isinstance(scale_factor, numbers.Real)
                   else tuple(float(s) for s in cast("Sequence[float]", scale_factor)))
        if len(factors) != nd or not all(s > 0 for s in factors):
            raise ValueError(f"interpolate: scale_factor must be a positive number or {nd} of "
                             f"them, not {scale_factor!r}")
        outs = tuple(int(math.floor(n * s)) for n, s in zip(ins, factors))
        if not all(o > 0 for o in outs):
            raise ValueError(f"interpolate: scale_factor {scale_factor!r} makes an empty output "
                             f"from spatial size {ins}")
        if recompute_scale_factor:
            factors = None
    b = x._backend
    ac = bool(align_corners)
    for k in range(nd):
        axis, n, m = 2 + k, ins[k], outs[k]
        if n == m and (factors is None or factors[k] == 1.0 or antialias
                       or mode in ("linear", "bilinear", "trilinear")
                       or (mode == "nearest" and nd == 2)):
            continue  # PyTorch copies an axis of unchanged size (linear, antialiased, 2-d nearest)
        scale = n / m if factors is None else 1.0 / factors[k]
        if mode == "area" or antialias:  # one (m, n) matrix per axis
            if antialias:  # PyTorch's antialiased filter (support widened when downsampling)
                sc = ((n - 1) / (m - 1) if m > 1 else 0.0) if ac else scale
                (mat,) = _resample_consts(
                    x, ("aa", n, m, sc, mode),
                    lambda n=n, m=m, sc=sc: [_aa_matrix(n, m, sc, mode == "bicubic")])
            else:  # PyTorch's adaptive average pooling
                (mat,) = _resample_consts(x, ("area", n, m), lambda n=n, m=m: [_area_matrix(n, m)])
            moved = ag.moveaxis(x, axis, -1)
            a = ag.Tensor._wrap(b.xp.reshape(mat, (m, n)), b)
            x = ag.moveaxis(moved @ ag.matrix_transpose(a), -1, axis)
            continue
        if mode in ("nearest", "nearest-exact"):
            exact = mode == "nearest-exact"
            # PyTorch's 2-d nearest takes i // 2 at twice the size, whatever the factor
            half = not exact and nd == 2 and m == 2 * n
            (idx,) = _resample_consts(
                x, (mode, n, m, scale, half),
                lambda n=n, m=m, scale=scale, exact=exact, half=half: [
                    [i // 2 for i in range(m)] if half else _nearest_index(n, m, scale, exact)])
            x = _take(x, idx, axis)
            continue
        shape = [1] * x.ndim
        shape[axis] = m
        if mode == "bicubic":
            consts = _resample_consts(
                x, ("cubic", n, m, scale, ac),
                lambda n=n, m=m, scale=scale: _cubic_index(n, m, scale, ac))
            y = None
            for idx, w in zip(consts[:4], consts[4:]):
                term = _take(x, idx, axis) * ag.Tensor._wrap(b.xp.reshape(w, tuple(shape)), b)
                y = term if y is None else y + term
            assert y is not None
            x = y
            continue
        i0, i1, w = _resample_consts(
            x, ("linear", n, m, scale, ac),
            lambda n=n, m=m, scale=scale: _linear_index(n, m, scale, ac))
        wt = ag.Tensor._wrap(b.xp.reshape(w, tuple(shape)), b)
        lo = _take(x, i0, axis)
        x = lo + (_take(x, i1, axis) - lo) * wt
    return x


def _as_int(v: Any) -> Any:
    """``v`` as a Python int when it is an integer (a NumPy or PyTorch one included, not a
    bool); anything else as it is, for the caller's check to name."""
    if isinstance(v, bool) or isinstance(v, int):
        return v
    try:
        return operator.index(v)
    except TypeError:
        return v


def _nearest_index(n: int, m: int, scale: float, exact: bool = False) -> list[int]:
    """PyTorch's nearest source indices: ``min(floor(i · scale), n - 1)`` in float32 (for
    ``"nearest-exact"``, ``floor((i + ½) · scale)``)."""
    s32 = _f32(scale)
    off = 0.5 if exact else 0.0
    return [min(int(math.floor(_f32((i + off) * s32))), n - 1) for i in range(m)]


def _linear_index(n: int, m: int, scale: float, align_corners: bool
                  ) -> tuple[list[int], list[int], list[float]]:
    """The two source indices and the weight of the second for each of ``m`` outputs of a
    linear resampling of ``n`` inputs (PyTorch's source coordinate)."""
    if align_corners:
        src = [i * ((n - 1) / (m - 1)) if m > 1 else 0.0 for i in range(m)]
    else:
        src = [max((i + 0.5) * scale - 0.5, 0.0) for i in range(m)]
    i0 = [min(int(math.floor(v)), n - 1) for v in src]
    i1 = [min(i + 1, n - 1) for i in i0]
    return i0, i1, [float(v - i) for v, i in zip(src, i0)]


def _area_matrix(n: int, m: int) -> list[float]:
    """The ``(m, n)`` averaging matrix (row-major, flat) of PyTorch's adaptive average pooling
    of ``n`` elements into ``m``: output ``i`` is the mean of
    ``[floor(i n / m), ceil((i + 1) n / m))``."""
    rows = [0.0] * (m * n)
    for i in range(m):
        lo, hi = (i * n) // m, -((-(i + 1) * n) // m)
        for j in range(lo, hi):
            rows[i * n + j] = 1.0 / (hi - lo)
    return rows


def _aa_matrix(n: int, m: int, scale: float, cubic: bool) -> list[float]:
    """The ``(m, n)`` matrix (row-major, flat) of PyTorch's antialiased resampling along one
    axis: a triangle (bilinear) or ``a = -0.5`` cubic filter centred at ``scale (i + ½)``, its
    support widened by ``scale`` when downsampling, the weights normalised to sum to 1."""

    def filt(v: float) -> float:
        v = abs(v)
        if not cubic:
            return 1.0 - v if v < 1.0 else 0.0
        a = -0.5
        if v < 1.0:
            return ((a + 2) * v - (a + 3)) * v * v + 1
        return (((v - 5) * v + 8) * v - 4) * a if v < 2.0 else 0.0

    half = 2.0 if cubic else 1.0
    support = half * scale if scale >= 1.0 else half
    inv = 1.0 / scale if scale >= 1.0 else 1.0
    rows = [0.0] * (m * n)
    for i in range(m):
        center = scale * (i + 0.5)
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), n)
        ws = [filt((j - center + 0.5) * inv) for j in range(lo, hi)]
        total = sum(ws)
        for j, w in zip(range(lo, hi), ws):
            rows[i * n + j] = w / total if total else 0.0
    return rows


def _cubic_index(n: int, m: int, scale: float, align_corners: bool) -> tuple[list[Any], ...]:
    """PyTorch's bicubic taps along one axis: four source indices (clamped to the axis) and
    their cubic-convolution weights (``A = -0.75``) for each of ``m`` outputs."""
    a = -0.75

    def near(t: float) -> float:  # |t| <= 1
        return ((a + 2) * t - (a + 3)) * t * t + 1

    def far(t: float) -> float:  # 1 < |t| < 2
        return ((a * t - 5 * a) * t + 8 * a) * t - 4 * a

    if align_corners:
        step = (n - 1) / (m - 1) if m > 1 else 0.0
        src = [i * step for i in range(m)]
    else:
        src = [(i + 0.5) * scale - 0.5 for i in range(m)]
    idx: list[list[int]] = [[], [], [], []]
    wts: list[list[float]] = [[], [], [], []]
    for v in src:
        i0 = min(int(math.floor(v)), n - 1)
        t = min(max(v - i0, 0.0), 1.0)
        for j, wj in enumerate((far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t))):
            idx[j].append(min(max(i0 - 1 + j, 0), n - 1))
            wts[j].append(float(wj))
    return (*idx, *wts)


def normalize(input: ag.Tensor, p: float = 2.0, dim: int = 1, eps: float = 1e-12) -> ag.Tensor:
    """``input / max(‖input‖_p, eps)`` with the norm along ``dim`` (PyTorch's
    ``F.normalize``); a zero vector stays zero (with a finite gradient)."""
    x = _t(input)
    n = ag.linalg.vector_norm(x, ord=p, axis=dim, keepdims=True)
    return x / ag.maximum(n, eps)


def cosine_similarity(x1: ag.Tensor, x2: ag.Tensor, dim: int = 1, eps: float = 1e-8
                      ) -> ag.Tensor:
    """``Σ x1 x2 / (max(‖x1‖, eps) · max(‖x2‖, eps))`` along ``dim`` after broadcasting the
    two (PyTorch's ``F.cosine_similarity``): each vector is divided by its clamped norm, then
    the products summed. As in PyTorch, the clamp is not differentiated (PyTorch clamps the
    norms in place under ``no_grad``): a vector whose norm is below ``eps`` but not zero gets
    the gradient of ``x / ‖x‖`` through its norm, evaluated with the denominator ``eps``."""
    a = _t(x1)
    c = _t(x2, a)
    shape = cast("tuple[int, ...]", ag.broadcast_shapes(a.shape, c.shape))
    if a.shape != shape:
        a = ag.broadcast_to(a, shape)
    if c.shape != shape:
        c = ag.broadcast_to(c, shape)
    na = _clamped_norm(a, dim, eps)
    nc = _clamped_norm(c, dim, eps)
    return ag.sum((a / na) * (c / nc), axis=dim)


def _clamped_norm(x: ag.Tensor, dim: int, eps: float) -> ag.Tensor:
    """``max(‖x‖, eps)`` along ``dim`` (kept) whose gradient is the norm's, unclamped:
    PyTorch's ``norm.clamp_min_(eps)`` under ``no_grad``. The value is exactly the clamp
    (``n - n`` is 0), the derivative ``∂‖x‖``."""
    n = ag.linalg.vector_norm(x, axis=dim, keepdims=True)
    nd = n.detach()
    # (an overflowed norm stays inf, as PyTorch's: inf - inf would be NaN)
    nf = ag.where(ag.isfinite(nd), n, ag.zeros_like(nd))
    return ag.maximum(nd, eps) + (nf - nf.detach())


def _legacy_reduction(size_average: bool | None, reduce: bool | None, reduction: str) -> str:
    """PyTorch's mapping of the deprecated ``size_average``/``reduce`` to ``reduction``."""
    if size_average is None and reduce is None:
        return reduction
    if reduce is False:
        return "none"
    return "sum" if size_average is False else "mean"


def kl_div(input: ag.Tensor, target: Any, size_average: bool | None = None,
           reduce: bool | None = None, reduction: str = "mean", log_target: bool = False
           ) -> ag.Tensor:
    """The Kullback-Leibler divergence of ``target`` from log-probabilities ``input`` (PyTorch's
    ``F.kl_div``): ``target · (log target - input)`` elementwise (0 where ``target`` is 0), or
    with ``log_target=True`` (``target`` given as log-probabilities)
    ``exp(target) · (target - input)``. ``reduction``: ``"mean"`` (over every element, as
    PyTorch's, which is not the divergence), ``"batchmean"`` (sum / batch size: the
    divergence), ``"sum"`` or ``"none"``; ``size_average``/``reduce`` are PyTorch's deprecated
    spellings of it."""
    x = _t(input)
    t = _float_like(target, x, "kl_div", "target")
    reduction = _legacy_reduction(size_average, reduce, reduction)
    if log_target:
        loss = ag.exp(t) * (t - x)
    else:
        loss = ag.special.xlogy(t, t) - t * x
    if reduction == "batchmean":
        return ag.sum(loss) / (x.shape[0] if x.ndim else 1)
    return _reduce(loss, reduction, "kl_div")


# ---------------------------------------------------------------------------------------------
# Batch, group and instance normalisation (helper `norm`)


def _norm_stats(x: ag.Tensor, axes: tuple[int, ...]) -> tuple[ag.Tensor, ag.Tensor]:
    """The mean and the biased variance of ``x`` over ``axes`` (kept as size-1 axes)."""
    mu = ag.mean(x, axis=axes, keepdims=True)
    d = x - mu
    return mu, ag.mean(d * d, axis=axes, keepdims=True)


def _channel_affine(y: ag.Tensor, x: ag.Tensor, weight: Any, bias: Any, c: int,
                    what: str) -> ag.Tensor:
    """``y · weight + bias`` with ``weight`` and ``bias`` of shape ``(C,)`` broadcast along
    axis 1 of ``x`` ``(N, C, *)``."""
    view = (c,) + (1,) * (x.ndim - 2)
    for name, p in (("weight", weight), ("bias", bias)):
        if p is None:
            continue
        pt = ag.reshape(_checked_channel(p, x, c, what, name), view)
        y = y * pt if name == "weight" else y + pt
    return y


def _checked_channel(p: Any, x: ag.Tensor, c: int, what: str, name: str) -> ag.Tensor:
    """``p`` as a ``(C,)`` Tensor of ``x``'s backend and dtype, or a ``ValueError``."""
    pt = _float_like(p, x, what, name)
    if pt.shape != (c,):
        raise ValueError(f"{what}: {name} must have shape ({c},) (one value per channel of "
                         f"the input of shape {x.shape}), not {pt.shape}")
    return pt


def _update_running(running: ag.Tensor, stat: ag.Tensor, momentum: float | ag.Tensor,
                    what: str, name: str) -> None:
    """``running ← (1 - momentum) · running + momentum · stat`` in place, without a graph (a
    captured or jitted step replays it on the same memory)."""
    if not isinstance(running, ag.Tensor):
        raise TypeError(f"{what}: {name} must be a Tensor (it is updated in place), not "
                        f"{type(running).__name__}")
    if running.shape != stat.shape:
        raise ValueError(f"{what}: {name} has shape {running.shape} but the input has "
                         f"{stat.shape[0]} channels; it must have shape {stat.shape}")
    if running.requires_grad:
        raise ValueError(f"{what}: {name} requires grad, but running statistics are updated in "
                         "place outside the graph; pass a buffer (requires_grad=False)")
    if _batching.is_batched(stat.data) and not _batching.is_batched(running.data):
        # refused before any write, so the buffer is left as it was
        _batching.settle(running._backend, stat.data, f"{what}'s update of {name}", running.shape)
    with ag.no_grad():
        s = stat.detach()
        if s.dtype != running.dtype:
            s = ag.astype(s, running.dtype)
        m = momentum
        if isinstance(m, ag.Tensor) and m.dtype != running.dtype:
            m = ag.astype(m, running.dtype)
        running *= 1.0 - m
        running += m * s


def _bn_xhat(xp: Any, x: Any, axes: tuple[int, ...], eps: float) -> tuple[Any, Any]:
    """``((x - mean) · rstd, rstd)`` over ``axes`` with ``rstd = 1 / sqrt(var + eps)``."""
    mu = xp.mean(x, axis=axes, keepdims=True)
    d = x - mu
    rstd = 1.0 / xp.sqrt(xp.mean(d * d, axis=axes, keepdims=True) + eps)
    return d * rstd, rstd


def _bn_x(xp: Any, g: Any, x: Any, w: Any, xhat: Any, rstd: Any, axes: tuple[int, ...],
          waxes: tuple[int, ...], view: tuple[int, ...], eps: float) -> Any:
    if isinstance(x, ag.Tensor):  # create_graph: the saved xhat is a constant; recompute it
        xhat, rstd = _bn_xhat(xp, x, axes, eps)
    k = rstd if w is None else rstd * xp.reshape(w, view)  # per channel: w leaves the means
    return (g - xp.mean(g, axis=axes, keepdims=True)
            - xhat * xp.mean(g * xhat, axis=axes, keepdims=True)) * k


def _bn_w(xp: Any, g: Any, x: Any, w: Any, xhat: Any, rstd: Any, axes: tuple[int, ...],
          waxes: tuple[int, ...], view: tuple[int, ...], eps: float) -> Any:
    if isinstance(x, ag.Tensor):
        xhat, _ = _bn_xhat(xp, x, axes, eps)
    return xp.sum(g * xhat, axis=waxes)


def _bn_b(xp: Any, g: Any, x: Any, w: Any, xhat: Any, rstd: Any, axes: tuple[int, ...],
          waxes: tuple[int, ...], view: tuple[int, ...], eps: float) -> Any:
    return xp.sum(g, axis=waxes)


def _fused_norm(x: ag.Tensor, weight: Any, bias: Any, axes: tuple[int, ...], eps: float,
                name: str) -> tuple[ag.Tensor, Any, Any] | None:
    """Normalisation of ``x`` ``(N, C, *)`` by its own mean and biased variance over ``axes``,
    then ``· weight + bias`` (``(C,)``, or ``None``), as one recorded node where it can be: a
    real floating ``x`` with ``weight``/``bias`` Tensors of its backend and dtype. Returns
    ``(y, mean, var)`` (the statistics as raw arrays, ``axes`` kept as size 1), or ``None`` for
    the composed path. VJP, with ``x̂ = (x - μ)·r``, ``r = 1/sqrt(σ² + eps)``:
    ``x̄ = r·w·(ḡ - mean(ḡ) - x̂·mean(ḡ·x̂))`` (means over ``axes``), ``w̄ = Σ ḡ·x̂``,
    ``b̄ = Σ ḡ`` (sums over every axis but 1). Under ``create_graph`` the rules recompute
    ``x̂`` from ``x``, so higher derivatives are exact."""
    b = x._backend
    xd = x.data
    if type(x) is not ag.Tensor or b.multi_device or x.dtype.kind != "f":
        return None
    c = x.shape[1]
    for p in (weight, bias):
        if p is not None and (type(p) is not ag.Tensor or p._backend is not b
                              or p.data.dtype != xd.dtype or p.shape != (c,)):
            return None
    xp = b.xp
    view = (c,) + (1,) * (x.ndim - 2)
    waxes = (0,) + tuple(range(2, x.ndim))
    mu = xp.mean(xd, axis=axes, keepdims=True)
    d = xd - mu
    var = xp.mean(d * d, axis=axes, keepdims=True)
    rstd = 1.0 / xp.sqrt(var + eps)
    xhat = d * rstd
    out = xhat if weight is None else xhat * xp.reshape(weight.data, view)
    if bias is not None:
        out = out + xp.reshape(bias.data, view)
    inputs: list[Any] = [x]
    rules: list[Any] = [_bn_x]
    for p, rule in ((weight, _bn_w), (bias, _bn_b)):
        if p is not None:
            inputs.append(p)
            rules.append(rule)
    y = _record(name, out, b, tuple(inputs), tuple(rules), (x, weight, xhat, rstd),
                params=(axes, waxes, view, eps))
    return y, mu, var


def batch_norm(input: ag.Tensor, running_mean: ag.Tensor | None, running_var: ag.Tensor | None,
               weight: Any = None, bias: Any = None, training: bool = False,
               momentum: float | ag.Tensor = 0.1, eps: float = 1e-5) -> ag.Tensor:
    """Batch normalisation of ``input`` ``(N, C, *)`` per channel, as
    ``torch.nn.functional.batch_norm``: ``y = (x - mean) / sqrt(var + eps) · weight + bias``.

    ``training=True``: ``mean`` and the biased ``var`` are taken over every axis but the channel
    axis 1, and ``running_mean`` / ``running_var`` (shape ``(C,)``, when given) are updated in
    place, without a graph: ``r ← (1 - momentum) · r + momentum · s``, with the *unbiased*
    variance (``n / (n - 1)`` times the biased one) for ``running_var``. ``momentum`` may be a
    0-d Tensor (``nn.BatchNorm*`` passes ``1 / num_batches_tracked`` for ``momentum=None``).
    ``training=False``: ``running_mean`` and ``running_var`` are used and not changed.

    Raises:
        ValueError: the input has fewer than 2 axes, one value per channel when training, or
            no running statistics in evaluation mode; a shape that does not fit.
    """
    x = _t(input)
    what = "batch_norm"
    if x.ndim < 2:
        raise ValueError(f"{what}: the input must have shape (N, C, *), not {x.shape}")
    c = x.shape[1]
    if training:
        n = (x.size or 0) // max(c, 1)
        if n <= 1:
            raise ValueError(f"{what}: expected more than 1 value per channel when training, got "
                             f"input of shape {x.shape}; use a batch of 2 or more, or eval mode")
        axes = (0,) + tuple(range(2, x.ndim))
        if (running_mean is None) != (running_var is None):
            raise ValueError(f"{what}: give both running_mean and running_var, or neither")
        fused = _fused_norm(x, weight, bias, axes, eps, "batch_norm")
        if fused is not None:
            y, mu_raw, var_raw = fused
            mu, var = ag.Tensor._wrap(mu_raw, x._backend), ag.Tensor._wrap(var_raw, x._backend)
        else:
            mu, var = _norm_stats(x, axes)
        if running_mean is not None and running_var is not None:
            _update_running(running_mean, ag.reshape(mu, (c,)), momentum, what, "running_mean")
            _update_running(running_var, ag.reshape(var, (c,)) * (n / (n - 1)), momentum, what,
                            "running_var")
        if fused is not None:
            return y
        y = (x - mu) / ag.sqrt(var + eps)
    else:
        if running_mean is None or running_var is None:
            raise ValueError(f"{what}: running_mean and running_var are needed in evaluation mode "
                             "(training=False); pass them, or training=True to use the batch's "
                             "statistics")
        stats = []
        for name, r in (("running_mean", running_mean), ("running_var", running_var)):
            rt = _float_like(r, x, what, name)
            if rt.shape != (c,):
                raise ValueError(f"{what}: {name} must have shape ({c},), not {rt.shape}")
            stats.append(rt)
        # x·α + β with per-channel α = w / sqrt(var + eps), β = b - mean·α (PyTorch's CPU form):
        # two passes over x, the rest on (C,) vectors
        alpha = 1.0 / ag.sqrt(stats[1] + eps)
        if weight is not None:
            alpha = alpha * _checked_channel(weight, x, c, what, "weight")
        beta = -stats[0] * alpha
        if bias is not None:
            beta = beta + _checked_channel(bias, x, c, what, "bias")
        view = (c,) + (1,) * (x.ndim - 2)
        return x * ag.reshape(alpha, view) + ag.reshape(beta, view)
    return _channel_affine(y, x, weight, bias, c, what)


def instance_norm(input: ag.Tensor, running_mean: ag.Tensor | None = None,
                  running_var: ag.Tensor | None = None, weight: Any = None, bias: Any = None,
                  use_input_stats: bool = True, momentum: float | ag.Tensor = 0.1,
                  eps: float = 1e-5) -> ag.Tensor:
    """Instance normalisation of ``input`` ``(N, C, *)``: every ``(n, c)`` slice normalised over
    its spatial axes, as ``torch.nn.functional.instance_norm``; ``weight``/``bias`` ``(C,)``.

    ``use_input_stats=True``: the slices' own mean and biased variance; ``running_mean`` /
    ``running_var`` ``(C,)`` (when given) are updated in place with their mean over the batch
    (unbiased variances), as in PyTorch. ``use_input_stats=False``: the running statistics
    normalise every slice.
    """
    x = _t(input)
    what = "instance_norm"
    if x.ndim < 3:
        raise ValueError(f"{what}: the input must have shape (N, C, *spatial), not {x.shape}")
    c = x.shape[1]
    if not use_input_stats:
        return batch_norm(x, running_mean, running_var, weight, bias, False, momentum, eps)
    axes = tuple(range(2, x.ndim))
    n = math.prod(x.shape[2:])
    if n <= 1:
        raise ValueError(f"{what}: expected more than 1 spatial element when training, got input "
                         f"of shape {x.shape}")
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{what}: give both running_mean and running_var, or neither")
    fused = _fused_norm(x, weight, bias, axes, eps, "instance_norm")
    if fused is not None:
        y, mu_raw, var_raw = fused
        mu, var = ag.Tensor._wrap(mu_raw, x._backend), ag.Tensor._wrap(var_raw, x._backend)
    else:
        mu, var = _norm_stats(x, axes)
    if running_mean is not None and running_var is not None:
        flat = (x.shape[0], c)
        _update_running(running_mean, ag.mean(ag.reshape(mu, flat), axis=0), momentum, what,
                        "running_mean")
        _update_running(running_var, ag.mean(ag.reshape(var, flat), axis=0) * (n / (n - 1)),
                        momentum, what, "running_var")
    if fused is not None:
        return y
    y = (x - mu) / ag.sqrt(var + eps)
    return _channel_affine(y, x, weight, bias, c, what)


def group_norm(input: ag.Tensor, num_groups: int, weight: Any = None, bias: Any = None,
               eps: float = 1e-5) -> ag.Tensor:
    """Group normalisation of ``input`` ``(N, C, *)``, as ``torch.nn.functional.group_norm``:
    the channels are split into ``num_groups`` groups of ``C / num_groups`` and every
    ``(sample, group)`` is normalised by its mean and biased variance, then scaled by the
    per-channel ``weight`` and shifted by ``bias`` ``(C,)``."""
    x = _t(input)
    what = "group_norm"
    g = int(num_groups)
    if x.ndim < 2:
        raise ValueError(f"{what}: the input must have shape (N, C, *), not {x.shape}")
    c = x.shape[1]
    if g < 1 or c % g:
        raise ValueError(f"{what}: the {c} channels of the input (shape {x.shape}) cannot be "
                         f"split into {num_groups} groups; num_groups must divide C")
    # (N, G, C/G, *): a split of the channel axis only, which every backend's reshape takes
    # (Dask cannot merge C/G with the spatial axes across its chunks)
    grouped = ag.reshape(x, (x.shape[0], g, c // g, *x.shape[2:]))
    axes = tuple(range(2, grouped.ndim))
    fused = _fused_norm(grouped, None, None, axes, eps, "group_norm")
    if fused is not None:
        normed = fused[0]
    else:
        mu, var = _norm_stats(grouped, axes)
        normed = (grouped - mu) / ag.sqrt(var + eps)
    return _channel_affine(ag.reshape(normed, x.shape), x, weight, bias, c, what)


# --- attention (rnn: the implementation is agnograd.nn.attention, which imports this module) ---


def scaled_dot_product_attention(query: ag.Tensor, key: ag.Tensor, value: ag.Tensor,
                                 attn_mask: Any = None, dropout_p: float = 0.0,
                                 is_causal: bool = False, scale: float | None = None,
                                 enable_gqa: bool = False) -> ag.Tensor:
    """PyTorch's ``F.scaled_dot_product_attention``: ``softmax(q kᵀ · scale + M) v`` with
    ``scale = 1/√E`` by default; ``query (..., L, E)``, ``key (..., S, E)``, ``value (..., S, Ev)``
    -> ``(..., L, Ev)``. ``attn_mask``: boolean (``True`` takes part) or floating (added);
    ``is_causal``: the top-left lower-triangular mask. See
    :func:`agnograd.nn.attention.scaled_dot_product_attention`."""
    from .attention import scaled_dot_product_attention as sdpa

    return sdpa(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)
