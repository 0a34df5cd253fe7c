"""The standard fallbacks: what a backend gets when its module sets nothing better.

- :func:`scatter_add_standard`: scatter-add with Array API functions only (the standard has none).
- :func:`windows_standard`, :func:`fold_standard`: sliding windows (stacked slices) and their
  adjoint (padded slices summed), for convolutions and pooling.
- :func:`gelu_standard`, :func:`layer_norm_standard`, :func:`layer_norm_grad_standard`: the
  fused GELU (and its derivative) and layer norm (and its input's gradient), as
  compositions of standard functions (they also run on agnograd Tensors: ``create_graph``).
- :func:`host_copy`: a NumPy copy (or view) of any array, through DLPack or ``__array__``.
- :func:`clone_namespace`: a copy of a namespace module with some functions replaced (the Dask
  backend's fixes, the CuPy backend's graph-safe namespace).
"""

from __future__ import annotations

import itertools
import math
import struct
import types
from collections.abc import Mapping
from typing import Any

import array_api_compat
import numpy as np

__all__ = ["clone_namespace", "fold_standard", "gelu_float32_standard", "gelu_standard", "host_copy",
           "layer_norm_grad_standard", "layer_norm_standard", "scatter_add_standard",
           "windows_standard"]

SQRT1_2 = math.sqrt(0.5)
GELU_C = math.sqrt(2.0 / math.pi)  # the tanh form's √(2/π)
GELU_C3 = 3 * 0.044715 * GELU_C
LOG_INV_SQRT_2PI = -0.5 * math.log(2.0 * math.pi)


def _f32(c: float) -> float:
    """``c`` rounded to float32, as a Python float: the same constant whether a float32 array's
    namespace or NumPy's float32 scalars multiply by it."""
    return float(struct.unpack("f", struct.pack("f", c))[0])


# Abramowitz & Stegun 26.2.17: Φ(-u) = φ(u)·t·B(t), t = 1/(1 + p u) for u ≥ 0, |error| < 7.5e-8,
# with φ's 1/√(2π) folded into B's coefficients (so that B(1) = 0.5 exactly in float32: Φ(0) and
# gelu'(0) are exactly 0.5).
PHI_P = _f32(0.2316419)
PHI_B = tuple(_f32(b / math.sqrt(2.0 * math.pi)) for b in (
    0.319381530, -0.356563782, 1.781477937, -1.821255978, 1.330274429))
INV_SQRT_2PI = _f32(1.0 / math.sqrt(2.0 * math.pi))


def scatter_add_standard(xp: Any, n: int, index: Any, values: Any) -> Any:
    """Scatter-add written with Array API functions only (see :meth:`Backend.scatter_add`)."""
    dev = array_api_compat.device(values)
    order = xp.argsort(index, stable=True)
    sorted_index = xp.take(index, order)
    # Accumulate in float64 where the device has it: differences of a running sum lose the
    # low bits of small segments next to a large total.
    acc_dtype = values.dtype
    if values.dtype == xp.float32 and _has_float64(xp, dev):
        acc_dtype = xp.float64
    sorted_values = xp.astype(xp.take(values, order), acc_dtype)
    csum = xp.cumulative_sum(sorted_values, include_initial=True)
    targets = xp.arange(n, dtype=index.dtype, device=dev)
    lo = xp.searchsorted(sorted_index, targets, side="left")
    hi = xp.searchsorted(sorted_index, targets, side="right")
    return xp.astype(xp.take(csum, hi) - xp.take(csum, lo), values.dtype)


def _has_float64(xp: Any, dev: Any) -> bool:
    try:
        return "real floating" in xp.__array_namespace_info__().default_dtypes(device=dev) and (
            xp.__array_namespace_info__().dtypes(device=dev, kind="real floating").get("float64")
            is not None
        )
    except Exception:  # a namespace without the inspection API: assume the common case
        return True


def host_copy(a: Any) -> Any:
    """A NumPy copy (or view) of an array whose backend has no path of its own to the host:
    NumPy arrays as they are, NumPy scalars as 0-d arrays, anything else through DLPack, else
    through ``__array__``."""
    if isinstance(a, np.ndarray):
        return a
    if isinstance(a, np.generic):
        return np.asarray(a)
    try:
        return np.from_dlpack(a)
    except Exception:
        return np.asarray(a)


# What makes a module object the module on disk: not copied, so the copy is its own module.
_MODULE_IDENTITY = ("__name__", "__spec__", "__loader__", "__package__", "__path__", "__file__",
                    "__cached__")


def clone_namespace(base: Any, name: str, overrides: Mapping[str, Any]) -> types.ModuleType:
    """A new module object called ``name`` holding every name of the namespace module ``base``
    (its docstring, ``__array_api_version__``, ``__array_namespace_info__``, ``linalg``, ...),
    with ``overrides`` (name -> object) put over them. ``base`` itself is left untouched."""
    ns = types.ModuleType(name, getattr(base, "__doc__", None))
    ns.__dict__.update({k: v for k, v in vars(base).items() if k not in _MODULE_IDENTITY})
    ns.__dict__.update(overrides)
    return ns


def windows_standard(xp: Any, x: Any, kernel: tuple[int, ...], stride: tuple[int, ...],
                     dilation: tuple[int, ...], out: tuple[int, ...]) -> Any:
    """:meth:`Backend.windows` with standard functions: ``prod(kernel)`` strided slices of ``x``
    stacked on axis 2, then split into the kernel's axes: ``(N, C, *kernel, *out)``."""
    slices = []
    for offset in itertools.product(*(range(k) for k in kernel)):
        key = (slice(None), slice(None)) + tuple(
            slice(o * d, o * d + s * (m - 1) + 1, s)
            for o, d, s, m in zip(offset, dilation, stride, out))
        slices.append(x[key])
    w = xp.stack(slices, axis=2)
    return w if len(kernel) == 1 else xp.reshape(w, (*w.shape[:2], *kernel, *out))


def fold_standard(xp: Any, g: Any, shape: tuple[int, ...], kernel: tuple[int, ...],
                  stride: tuple[int, ...], dilation: tuple[int, ...], inplace: bool = True
                  ) -> Any:
    """:meth:`Backend.fold` with standard functions: each kernel offset's slice of ``g`` (or
    ``g[i]``, where ``g`` is a list of the offsets' pieces) added into its strided slice of
    one array of zeros with the standard's ``__setitem__``; with ``inplace=False`` (lazy
    backends, whose arrays are not assigned into) each piece is spread by the stride (zeros
    stacked between its elements), padded with zeros to its place in ``shape`` (``concat``),
    and the ``prod(kernel)`` pieces summed."""
    nd = len(kernel)
    offsets = list(itertools.product(*(range(k) for k in kernel)))
    if isinstance(g, (list, tuple)):
        pieces = list(g)
    else:
        pieces = [g[(slice(None), slice(None)) + offset + (...,)] for offset in offsets]
    dev = array_api_compat.device(pieces[0])
    if inplace:  # one array of zeros, each piece added into its strided slice (3 calls each)
        out = pieces[0].shape[2:]
        res = xp.zeros(shape, dtype=pieces[0].dtype, device=dev)
        for offset, piece in zip(offsets, pieces):
            where = (slice(None), slice(None)) + tuple(
                slice(o * d, o * d + s * (m - 1) + 1, s)
                for o, d, s, m in zip(offset, dilation, stride, out))
            res[where] = res[where] + piece
        return res
    total = None
    for offset, piece in zip(offsets, pieces):  # piece: (N, C, *out)
        for i, (o, d, s, n) in enumerate(zip(offset, dilation, stride, shape[2:])):
            axis = 2 + i
            m = piece.shape[axis]
            if s > 1 and m > 1:
                z = xp.zeros(piece.shape, dtype=piece.dtype, device=dev)
                spread = xp.stack([piece] + [z] * (s - 1), axis=axis + 1)
                merged = list(piece.shape)
                merged[axis] = m * s
                piece = xp.reshape(spread, tuple(merged))
                key = [slice(None)] * (nd + 2)
                key[axis] = slice(0, s * (m - 1) + 1)
                piece = piece[tuple(key)]
            lo = o * d
            hi = n - lo - piece.shape[axis]
            parts = []
            for k in (lo, hi):
                if k:
                    pad = list(piece.shape)
                    pad[axis] = k
                    parts.append(xp.zeros(tuple(pad), dtype=piece.dtype, device=dev))
                else:
                    parts.append(None)
            if lo or hi:
                piece = xp.concat([p for p in (parts[0], piece, parts[1]) if p is not None],
                                  axis=axis)
        total = piece if total is None else total + piece
    return total


# ---------------------------------------------------------------------------------------------
# The fused GELU and layer norm (Backend.gelu, .layer_norm, .layer_norm_grad). A
# backend's fast path must compute exactly these operations in this order (NumPy's does, in
# place and by blocks: tests/test_nn_fused.py holds the two bit-identical).


def gelu_standard(xp: Any, x: Any, approximate: str, erf: Any, grad: bool) -> tuple[Any, Any]:
    """``(gelu(x), gelu'(x))`` (the derivative ``None`` unless ``grad``): ``x Φ(x)`` with
    ``Φ(x) = erf(x/√2)·0.5 + 0.5`` (``erf`` the backend's) and ``gelu' = Φ(x) + x φ(x)`` (φ the
    normal density), or for ``approximate="tanh"`` ``(0.5 x)(1 + t)``, ``t = tanh(√(2/π)(x +
    0.044715 x³))``, and ``gelu' = ½(1 + t) + ½x(1 - t²)·√(2/π)(1 + 3·0.044715 x²)``. The
    derivative is computed here, from the ``Φ`` (the ``t``) just computed, so that the backward
    is one product."""
    if approximate == "tanh":
        t = xp.tanh(GELU_C * (x + 0.044715 * (x * x * x)))
        y = (0.5 * x) * (1.0 + t)
        if not grad:
            return y, None
        half_x = 0.5 * x
        return y, (0.5 * t + 0.5) + (half_x - half_x * (t * t)) * (GELU_C3 * (x * x) + GELU_C)
    z = x * SQRT1_2
    phi = erf(z) * 0.5 + 0.5
    y = x * phi
    if not grad:
        return y, None
    return y, phi + x * xp.exp(LOG_INV_SQRT_2PI - z * z)  # x φ(x) = x exp(-z²)/√(2π)


def gelu_float32_standard(xp: Any, x: Any, grad: bool) -> tuple[Any, Any]:
    """The exact-form ``(gelu(x), gelu'(x))`` of a float32 ``x`` without ``erf``: ``x Φ(x)`` and
    ``Φ(x) + x φ(x)`` with ``Φ`` by Abramowitz & Stegun 26.2.17, ``q = Φ(-|x|) = t·B(t)·e``,
    ``e = exp(-x²/2)``, ``t = 1/(1 + 0.2316419|x|)``; ``Φ(x) = q`` for ``x < 0`` and ``1 - q``
    otherwise. One ``exp`` serves both ``Φ`` and the derivative (an ``erf`` needs its own
    polynomials), and the lower tail is ``q`` itself, relative to itself, not ``1 + erf``'s
    difference of nearly equal numbers. Error (``tests/test_nn_fused.py``): under 5e-7 absolute
    on ``gelu`` and ``gelu'``, ``Φ(0)`` exactly 0.5, relative under 0.4% for ``x ≥ -6``. NumPy's
    float32 kernel computes exactly these operations in this order."""
    t = 1.0 / (xp.abs(x) * PHI_P + 1.0)
    r = t * PHI_B[4] + PHI_B[3]
    r = r * t + PHI_B[2]
    r = r * t + PHI_B[1]
    r = r * t + PHI_B[0]
    r = r * t
    e = xp.exp((x * x) * -0.5)
    q = r * e  # Φ(-|x|)
    # Φ(x) = q + [x ≥ 0](1 - 2q): q exactly below 0 (a multiply by 0.0 and an add of 0.0, not a
    # select: NumPy's where is ~20x slower on mixed signs)
    phi = (q * -2.0 + 1.0) * xp.astype(x >= 0, x.dtype) + q
    y = x * phi
    if not grad:
        return y, None
    return y, x * (e * INV_SQRT_2PI) + phi


def layer_norm_standard(xp: Any, x: Any, eps: float, w: Any, b: Any) -> tuple[Any, Any, Any]:
    """Layer norm of the rows of ``x`` ``(M, K)``: ``(y, mean, r)`` with ``mean`` and ``r =
    1/sqrt(var + eps)`` ``(M, 1)`` (biased variance) and ``y = x̂·w + b``, ``x̂ = (x - mean)·r``
    (``w``, ``b`` of shape ``(K,)`` or ``None``). ``x̂`` is not kept: the gradient recomputes
    it from ``x``, ``mean`` and ``r`` (the same operations, the same bits)."""
    mu = xp.mean(x, axis=-1, keepdims=True)
    d = x - mu
    r = 1.0 / xp.sqrt(xp.mean(d * d, axis=-1, keepdims=True) + eps)
    xhat = d * r
    y = xhat if w is None else xhat * w
    return (y if b is None else y + b), mu, r


def layer_norm_grad_standard(xp: Any, g: Any, x: Any, mu: Any, r: Any, w: Any,
                             sums: tuple[bool, bool]) -> tuple[Any, Any, Any]:
    """The cotangent of :func:`layer_norm_standard`'s ``x``, ``r (ĝ - mean(ĝ) - x̂ mean(ĝ x̂))``
    with ``ĝ = ḡ·w`` (``ḡ`` without a weight) and ``x̂ = (x - mean)·r``, row by row; and, where
    ``sums`` asks, those of ``w`` and ``b``: the column sums of ``ḡ x̂`` and of ``ḡ`` (else
    ``None``)."""
    xhat = (x - mu) * r
    gh = g if w is None else g * w
    m1 = xp.mean(gh, axis=-1, keepdims=True)
    m2 = xp.mean(gh * xhat, axis=-1, keepdims=True)
    dx = (gh - m1 - xhat * m2) * r
    return (dx, xp.sum(g * xhat, axis=0) if sums[0] else None,
            xp.sum(g, axis=0) if sums[1] else None)
