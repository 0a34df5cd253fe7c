"""The NumPy backend: the host library, and the default backend.

NumPy returns scalars (``numpy.float64``) for 0-d results; the Backend turns them back into
0-d arrays (``scalar_type``). Scatter-add is ``bincount``.
"""

from __future__ import annotations

import functools
from typing import Any

import array_api_compat
import array_api_compat.numpy as xp
import numpy as np

from . import Backend
from ._fallbacks import (
    GELU_C,
    GELU_C3,
    INV_SQRT_2PI,
    PHI_B,
    PHI_P,
    layer_norm_grad_standard,
    layer_norm_standard,
)
from .special import scipy_special

__all__ = ["fold", "gelu", "layer_norm", "layer_norm_grad", "load", "owns", "private",
           "replay_fn", "scatter_add", "scatter_add_rows", "subtract_at_labels", "windows"]


def load() -> Backend:
    return Backend("numpy", xp, np.ndarray, scalar_type=np.generic, scalar_to_array=np.asarray,
                   scatter_add=scatter_add, special=scipy_special,
                   replay_fn=replay_fn, private=private,
                   subtract_at_labels=subtract_at_labels, windows=windows, fold=fold,
                   scatter_add_rows=scatter_add_rows, gelu=gelu,
                   layer_norm=layer_norm, layer_norm_grad=layer_norm_grad)


def private(a: Any) -> bool:
    """Its own writable memory: not a view (``base`` is None: a broadcast, a reshape and a
    slice all have one) and writeable."""
    return a.base is None and bool(a.flags.writeable)


# numpy.sum(a, axis, dtype, keepdims=...) of an ndarray is, after a Python wrapper
# (fromnumeric._wrapreduction) that costs ~2 us, exactly numpy.add.reduce(a, axis, dtype,
# keepdims=...); likewise prod, max and min (which take no dtype). The staged replay calls the
# ufunc's reduce directly: the same C loop, bit-identical results.
_REDUCE = {
    np.sum: (np.add.reduce, frozenset({"axis", "keepdims", "dtype"})),
    np.prod: (np.multiply.reduce, frozenset({"axis", "keepdims", "dtype"})),
    np.max: (np.maximum.reduce, frozenset({"axis", "keepdims"})),
    np.min: (np.minimum.reduce, frozenset({"axis", "keepdims"})),
}


def replay_fn(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """A faster, bit-identical function for a traced call (see ``Backend.replay_fn``)."""
    try:
        entry = _REDUCE.get(fn)
    except TypeError:  # unhashable
        return None
    if (entry is None or not 1 <= len(args) <= 2 or type(args[0]) is not np.ndarray
            or not entry[1].issuperset(kwargs) or (len(args) == 2 and "axis" in kwargs)):
        return None
    if len(args) == 1 and "axis" not in kwargs:  # ufunc.reduce's own default axis is 0
        return functools.partial(entry[0], axis=None)
    return entry[0]


def owns(a: Any) -> bool:
    """A NumPy array or scalar (``numpy.matrix`` is not an Array API array)."""
    return isinstance(a, np.generic) or (
        array_api_compat.is_array_api_obj(a) and array_api_compat.is_numpy_array(a))


def scatter_add(xp: Any, n: int, index: Any, values: Any) -> Any:
    # bincount sums in float64 in one pass; add.at is an order of magnitude slower. It takes
    # real weights only: a complex sum is two of them, real and imaginary parts.
    if values.dtype.kind == "c":
        out = np.empty(n, dtype=values.dtype)
        out.real = np.bincount(index, weights=values.real, minlength=n)
        out.imag = np.bincount(index, weights=values.imag, minlength=n)
        return out
    return np.bincount(index, weights=values, minlength=n).astype(values.dtype, copy=False)


def subtract_at_labels(a: Any, index: Any, values: Any) -> Any:
    """``a[i, index[i, 0]] -= values[i]`` in place on the fresh ``a`` (see
    ``Backend.subtract_at_labels``): ``m`` writes instead of an ``(m, C)`` comparison."""
    m = a.shape[0]
    v = np.asarray(values)
    a[np.arange(m), np.reshape(index, (m,))] -= v if v.ndim == 0 else np.reshape(v, (m,))
    return a


def windows(x: Any, kernel: tuple[int, ...], stride: tuple[int, ...],
            dilation: tuple[int, ...], out: tuple[int, ...]) -> Any:
    """The sliding windows of ``x`` ``(N, C, *spatial)`` as a read-only strided view
    ``(N, C, *kernel, *out)`` (see ``Backend.windows``): no copy."""
    st = x.strides
    sp = st[2:]
    strides = (*st[:2], *(s * d for s, d in zip(sp, dilation)),
               *(s * k for s, k in zip(sp, stride)))
    return np.lib.stride_tricks.as_strided(x, shape=(*x.shape[:2], *kernel, *out),
                                           strides=strides, writeable=False)


def fold(g: Any, shape: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...],
         dilation: tuple[int, ...]) -> Any:
    """The adjoint of :func:`windows` (see ``Backend.fold``): each kernel offset's slice of
    ``g`` added in place into one array of zeros."""
    nd = len(kernel)
    pieces = g if isinstance(g, list) else None
    first = g[0] if pieces is not None else g
    out = first.shape[2:] if pieces is not None else g.shape[2 + nd:]
    res = np.zeros(shape, dtype=first.dtype)
    for i, offset in enumerate(np.ndindex(*kernel)):
        key = (slice(None), slice(None)) + tuple(
            slice(o * d, o * d + s * (m - 1) + 1, s)
            for o, d, s, m in zip(offset, dilation, stride, out))
        res[key] += pieces[i] if pieces is not None else g[(slice(None), slice(None)) + offset]
    return res


def scatter_add_rows(n: int, index: Any, values: Any) -> Any:
    """``out[index[k]] += values[k]`` for a zero ``out`` ``(n, d)`` (see
    ``Backend.scatter_add_rows``): every row written in place at once (``out[index] =
    values``), then each repeated index's rows (found by ``bincount``, sorted stably among
    themselves) summed in their order: its first row written again, the later ones added one
    round per repeat (past the ninth, by ``add.at``). No sort or gather of all the rows."""
    out = np.zeros((n, values.shape[1]), dtype=values.dtype)
    if index.shape[0] == 0:
        return out
    out[index] = values
    # the positions of the repeated indices (bincount: no sort of all of them), grouped by
    # index in their order
    dup = np.flatnonzero(np.bincount(index, minlength=n)[index] > 1)
    if not dup.shape[0]:
        return out
    order = dup[np.argsort(index[dup], kind="stable")]
    s = index[order]
    later = np.equal(s[1:], s[:-1])  # later[j]: sorted row j + 1 repeats row j's index
    starts = np.flatnonzero(np.concatenate(([True], ~later)))
    out[s[starts]] = values[order[starts]]  # a repeated index's first row, alone again
    rest = np.flatnonzero(later) + 1
    ri, rp = s[rest], order[rest]
    for _ in range(8):  # one round per repeat: each index at most once a round, in order
        if not ri.shape[0]:
            return out
        first = np.empty(ri.shape[0], dtype=bool)
        first[0] = True
        np.not_equal(ri[1:], ri[:-1], out=first[1:])
        out[ri[first]] += values[rp[first]]
        keep = ~first
        ri, rp = ri[keep], rp[keep]
    if ri.shape[0]:  # an index repeated more than 9 times: the rest in order, by add.at
        np.add.at(out, ri, values[rp])
    return out


# ---------------------------------------------------------------------------------------------
# The fused GELU and layer norm: the operations of the standard paths
# (agnograd/backends/_fallbacks.py), in the same order -- so the results are bit-identical --
# but in place, a block at a time: the temporaries stay in cache, and the only arrays of the
# input's size allocated are the results.

_BLOCK = 1 << 16  # elements per block (256 kB of float32)


def _flat(a: Any) -> Any:
    return np.ascontiguousarray(a).reshape(-1)


_GELU_BLOCK = 1 << 15  # elements per block: its four temporaries and x, y, d stay in L2
_F32 = np.float32
_PHI_P, _PHI_B, _INV_SQRT_2PI = _F32(PHI_P), tuple(_F32(c) for c in PHI_B), _F32(INV_SQRT_2PI)
_ONE, _MINUS_HALF, _MINUS_TWO, _ZERO = _F32(1.0), _F32(-0.5), _F32(-2.0), _F32(0.0)


def gelu(x: Any, approximate: str, grad: bool) -> tuple[Any, Any]:
    """``Backend.gelu``: ``(gelu(x), gelu'(x) or None)``, for float32 (the exact form as
    :func:`~agnograd.backends._fallbacks.gelu_float32_standard`: one ``exp`` for ``Φ`` and the
    derivative, about 24 passes where an ``erf`` took 32) or the tanh form of any floating
    dtype (:func:`~agnograd.backends._fallbacks.gelu_standard`'s), in place a block at a time."""
    y = np.empty(x.shape, dtype=x.dtype)
    d = np.empty(x.shape, dtype=x.dtype) if grad else None
    src, ys = _flat(x), y.reshape(-1)
    ds = None if d is None else d.reshape(-1)
    n = src.shape[0]
    m = max(1, min(n, _GELU_BLOCK))
    s, t, p, q = (np.empty(m, dtype=x.dtype) for _ in range(4))
    for i in range(0, n, m):
        k = min(m, n - i)
        xb, yb, sb, tb, pb, qb = src[i:i + k], ys[i:i + k], s[:k], t[:k], p[:k], q[:k]
        if approximate == "tanh":  # s = tanh(C·(x + 0.044715·(x·x·x))); y = (0.5·x)·(1 + s)
            np.multiply(xb, xb, out=tb)
            tb *= xb
            tb *= 0.044715
            tb += xb
            tb *= GELU_C
            np.tanh(tb, out=sb)
            np.add(sb, 1.0, out=tb)
            np.multiply(xb, 0.5, out=yb)
            yb *= tb
            if ds is not None:  # (0.5·s + 0.5) + (h - h·(s·s))·(C3·(x·x) + C), h = 0.5·x
                db = ds[i:i + k]
                np.multiply(sb, 0.5, out=db)
                db += 0.5
                np.multiply(xb, 0.5, out=pb)
                np.multiply(sb, sb, out=qb)
                qb *= pb
                np.subtract(pb, qb, out=pb)
                np.multiply(xb, xb, out=qb)
                qb *= GELU_C3
                qb += GELU_C
                pb *= qb
                db += pb
            continue
        # t = 1/(|x|·p + 1); q = Φ(-|x|) = (t·B(t))·exp((x·x)·-0.5); Φ = (q·-2 + 1)·[x ≥ 0] + q
        np.abs(xb, out=tb)
        tb *= _PHI_P
        tb += _ONE
        np.divide(_ONE, tb, out=tb)
        np.multiply(tb, _PHI_B[4], out=pb)
        pb += _PHI_B[3]
        for c in _PHI_B[2::-1]:
            pb *= tb
            pb += c
        pb *= tb
        np.multiply(xb, xb, out=qb)
        qb *= _MINUS_HALF
        np.exp(qb, out=qb)
        pb *= qb  # q
        np.greater_equal(xb, _ZERO, out=sb)
        np.multiply(pb, _MINUS_TWO, out=tb)
        tb += _ONE
        tb *= sb
        tb += pb  # Φ
        np.multiply(xb, tb, out=yb)
        if ds is not None:  # x·(e·(1/√(2π))) + Φ
            db = ds[i:i + k]
            qb *= _INV_SQRT_2PI
            np.multiply(xb, qb, out=db)
            db += tb
    return y, d


def _rows(n: int, k: int) -> int:
    return max(1, min(n, _BLOCK // max(k, 1)))


def layer_norm(x: Any, eps: float, w: Any, b: Any) -> tuple[Any, Any, Any]:
    """``Backend.layer_norm`` of the rows of ``x`` ``(M, K)``: ``(y, mean, r)``; ``x̂`` lives
    only in a block-sized temporary. The row sums are BLAS products with a vector of ones
    (``matmul``, ``vecdot``: several times faster than NumPy's reduction over short rows), so
    the results equal the standard path's within rounding, not bit for bit. NumPy's product
    of an array by a per-row column costs two to three times a same-shape one (an inner loop
    per row), so ``r ⊗ w`` is formed once per block and ``b`` tiled once per call."""
    if any(a is not None and a.dtype != x.dtype for a in (w, b)):
        return layer_norm_standard(np, x, eps, w, b)  # (rare) the standard path
    x = np.ascontiguousarray(x)
    n, k = x.shape
    mu = np.empty((n, 1), dtype=x.dtype)
    r = np.empty((n, 1), dtype=x.dtype)
    y = np.empty(x.shape, dtype=x.dtype)
    step = _rows(n, k)
    t = np.empty((step, k), dtype=x.dtype)
    rw = np.empty((step, k), dtype=x.dtype) if w is not None else None
    tile = np.broadcast_to(b, (step, k)).copy() if b is not None else None
    ones = np.ones((k, 1), dtype=x.dtype)
    for i in range(0, n, step):
        j = min(n, i + step)
        xb, mb, rb, tb, yb = x[i:j], mu[i:j], r[i:j], t[:j - i], y[i:j]
        np.matmul(xb, ones, out=mb)
        mb /= k
        np.subtract(xb, mb, out=tb)  # d = x - mean
        var = np.vecdot(tb, tb)[:, None]
        var /= k
        var += eps
        np.sqrt(var, out=var)
        np.divide(1.0, var, out=rb)  # r = 1/sqrt(var + eps)
        if rw is not None:  # y = d·(r ⊗ w) (+ b)
            rwb = rw[:j - i]
            np.multiply(rb, w, out=rwb)
            np.multiply(tb, rwb, out=yb)
        else:
            np.multiply(tb, rb, out=yb)
        if tile is not None:
            yb += tile[:j - i]
    return y, mu, r


def layer_norm_grad(g: Any, x: Any, mu: Any, r: Any, w: Any, sums: tuple[bool, bool]
                    ) -> tuple[Any, Any, Any]:
    """``Backend.layer_norm_grad``: ``r ĝ - r mean(ĝ) - d·r³ mean(ĝ d)`` (that is ``r (ĝ -
    mean(ĝ) - x̂ mean(ĝ x̂))``), ``ĝ = ḡ·w``, ``d = x - mean`` recomputed a block at a time, and
    the column sums of ``ḡ x̂`` and ``ḡ`` asked for, from one read of ``ḡ`` and ``x``. The
    row means are BLAS products with ``w/K`` (``ĝ`` is never formed for them), the column
    sums products with ``r`` and with ones: equal to the standard path's within rounding."""
    dt = x.dtype
    if g.shape != x.shape or g.dtype != dt or (w is not None and w.dtype != dt):
        return layer_norm_grad_standard(np, g, x, mu, r, w, sums)  # (rare) the standard path
    g = np.ascontiguousarray(g)
    x = np.ascontiguousarray(x)
    n, k = x.shape
    out = np.empty(x.shape, dtype=dt)
    gw = np.zeros(k, dtype=dt) if sums[0] else None
    gb = np.zeros(k, dtype=dt) if sums[1] else None
    step = _rows(n, k)
    a, h = (np.empty((step, k), dtype=dt) for _ in range(2))
    ones_n = np.ones((1, step), dtype=dt)
    wk = (np.ones(k, dtype=dt) if w is None else w).reshape(k, 1) / dt.type(k)  # mean with ĝ
    for i in range(0, n, step):
        j = min(n, i + step)
        gblk, ab, hb, on, rb = g[i:j], a[:j - i], h[:j - i], ones_n[:, :j - i], r[i:j]
        np.subtract(x[i:j], mu[i:j], out=hb)  # d = x - mean (x̂ = d·r, never formed)
        np.multiply(gblk, hb, out=ab)  # ḡ d
        if gw is not None:  # Σ ḡ x̂ = rᵀ (ḡ d)
            gw += np.matmul(rb.T, ab)[0]
        if gb is not None:
            gb += np.matmul(on, gblk)[0]
        b3 = np.matmul(ab, wk)  # mean(ĝ d)
        m1 = np.matmul(gblk, wk)  # mean(ĝ)
        b3 *= rb
        b3 *= rb
        b3 *= rb
        m1 *= rb
        if w is not None:  # r ĝ = ḡ·(r ⊗ w)
            np.multiply(rb, w, out=ab)
            ab *= gblk
        else:
            np.multiply(gblk, rb, out=ab)
        ab -= m1
        hb *= b3
        np.subtract(ab, hb, out=out[i:j])
    return out, gw, gb
