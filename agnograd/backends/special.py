"""The special functions a backend library has of its own (``Backend.special``): one small
adapter per library, each imported only when first asked for. Results come back in the input's
dtype (SciPy's ``polygamma`` returns float64 for a float32 input).

NumPy's float32 ``erf`` is not SciPy's (which computes in float64, ~13 ms for a million
elements): :func:`erf_float32` evaluates the rational approximation of Eigen and XLA in float32
(~2.5 ms), within 7 ulps of SciPy's correctly rounded result (``tests/test_special_values.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["SpecialFunctions", "erf_block", "erf_float32", "scipy_special", "cupy_special", "torch_special",
           "jax_special"]


class SpecialFunctions:
    """Raw-array special functions of one library (see :attr:`Backend.special`)."""

    __slots__ = ("erf", "erfc", "erfinv", "lgamma", "digamma", "polygamma", "log_ndtr")

    def __init__(self, lib: Any, cast: Callable[[Any, Any], Any]) -> None:
        def one(f: Any) -> Callable[[Any], Any]:
            return lambda x: cast(f(x), x)

        self.erf = one(lib.erf)
        self.erfc = one(lib.erfc)
        self.erfinv = one(lib.erfinv)
        self.lgamma = one(lib.gammaln)
        self.digamma = one(lib.digamma)
        self.log_ndtr = one(lib.log_ndtr)
        self.polygamma = lambda n, x: cast(lib.polygamma(n, x), x)


def scipy_special() -> SpecialFunctions | None:
    """SciPy's ``scipy.special`` for NumPy arrays; ``None`` without SciPy (an optional extra:
    ``pip install 'agnograd[special]'``)."""
    try:
        import scipy.special as sc
    except ImportError:
        return None
    fns = SpecialFunctions(sc, lambda y, x: np.asarray(y).astype(x.dtype, copy=False))
    scipy_erf = fns.erf
    f32 = np.dtype(np.float32)

    def erf(x: Any) -> Any:
        return erf_float32(x) if getattr(x, "dtype", None) == f32 else scipy_erf(x)

    fns.erf = erf
    return fns


# Eigen's generic_fast_erf_float and XLA's ErfImpl32 (Apache-2.0): erf(x) = x·P(x²)/Q(x²), P of
# degree 4 and Q of degree 6 in x², accurate to a few float32 ulps on |x| <= 4 (beyond, erf
# rounds to ±1 in float32; the quotient, slightly above 1 there, is clipped back).
_ERF_P = (0.00022905065861350646, 0.0034082910107109506, 0.050955695062380861,
          0.18520832239976145, 1.128379143519084)
_ERF_Q = (-1.1791602954361697e-7, 0.000023547966471313185, 0.0010179625278914885,
          0.014070470171167667, 0.11098505178285362, 0.49746925110067538, 1.0)
_ERF_BLOCK = 1 << 16  # elements per block: the block and its three temporaries stay in L2


_PC = tuple(np.float32(c) for c in _ERF_P)
_QC = tuple(np.float32(c) for c in _ERF_Q)
_SIXTEEN, _ONE = np.float32(16.0), np.float32(1.0)


def erf_float32(x: Any, out: Any = None) -> Any:
    """``erf`` of a float32 NumPy array, in float32 (into ``out`` if given: it may be ``x``).

    ``x·P(x²)/Q(x²)`` with ``x²`` clamped to 16 (``|x|`` to 4), clipped to [-1, 1]: within 7 float32 ulps of
    the correctly rounded ``erf`` (FMA-free evaluation; Eigen states 3 with FMA), exact at ±0,
    ±1 for ``|x| >= 4`` and ±inf, NaN for NaN. Evaluated in place, a block of ``2**16``
    elements at a time, so that the 24 passes of the two polynomials run in cache."""
    x = np.asarray(x)
    if out is None:
        out = np.empty(x.shape, dtype=np.float32)
    elif not out.flags.c_contiguous:
        raise ValueError("erf_float32: out must be C-contiguous")
    src = x.reshape(-1)  # (a copy only when x is not contiguous)
    dst = out.reshape(-1)
    n = src.shape[0]
    if n == 0:
        return out
    m = min(n, _ERF_BLOCK)
    t, p, q = (np.empty(m, dtype=np.float32) for _ in range(3))
    for i in range(0, n, m):
        k = min(m, n - i)
        erf_block(src[i:i + k], dst[i:i + k], t[:k], p[:k], q[:k])
    return out


def erf_block(x: Any, out: Any, t: Any, p: Any, q: Any) -> None:
    """:func:`erf_float32` of one float32 block ``x`` into ``out`` (which may be ``x``), with
    three temporaries of its size."""
    # x² clamped to 16 (|x| <= 4); beyond, x·P(16)/Q(16) >= erf(4) rounds to ±1 after the clip
    # below (±inf too), exactly as clamping x would give
    np.multiply(x, x, out=t)
    np.minimum(t, _SIXTEEN, out=t)
    np.multiply(t, _PC[0], out=p)
    p += _PC[1]
    for c in _PC[2:]:
        p *= t
        p += c
    np.multiply(t, _QC[0], out=q)
    q += _QC[1]
    for c in _QC[2:]:
        q *= t
        q += c
    p *= x
    np.divide(p, q, out=out)
    np.clip(out, -_ONE, _ONE, out=out)


def cupy_special() -> SpecialFunctions | None:
    try:
        import cupyx.scipy.special as sc
    except ImportError:  # pragma: no cover - CuPy ships it
        return None
    return SpecialFunctions(sc, lambda y, x: y.astype(x.dtype, copy=False))


def torch_special() -> SpecialFunctions | None:
    import torch

    return SpecialFunctions(torch.special, lambda y, x: y if y.dtype == x.dtype else y.to(x.dtype))


def jax_special() -> SpecialFunctions | None:
    try:
        import jax.scipy.special as sc
    except ImportError:  # pragma: no cover
        return None
    return SpecialFunctions(sc, lambda y, x: y.astype(x.dtype))
