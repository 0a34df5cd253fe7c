"""Special functions (``ag.special``), **beyond the Array API standard**, each with its VJP rule.

The forward is the backend's own implementation where it has one (``Backend.special``: SciPy's
``scipy.special`` for NumPy when SciPy is installed, ``cupyx.scipy.special`` for CuPy,
``torch.special`` for PyTorch, ``jax.scipy.special`` for JAX); elsewhere (array_api_strict,
Dask, NumPy without SciPy) a standard-op approximation below, of the accuracy its docstring
states (measured against SciPy in float64 by ``tests/test_special.py``). The rules are written
with standard functions and the functions of this module, so every order of derivative works.

Approximations (float64, relative error against SciPy unless said):

- ``erfc``: Numerical Recipes' Chebyshev-fitted ``erfcc`` (``t·exp(-z² + P(t))``,
  ``t = 1/(1 + z/2)``): relative error below 1.2e-7 on all of ``z ≥ 0``, tails included;
  ``erfc(-z) = 2 - erfc(z)``.
- ``erf``: Maclaurin series (13 terms) for ``|x| < 0.5`` (1e-15), ``1 - erfc`` beyond (< 1.2e-7).
- ``erfinv``: Giles' single-precision polynomial, then three Newton steps on ``erf`` (on
  ``log erfc`` for ``|x| > 0.5``): the error of the fits above, about 1e-7.
- ``lgamma``: Lanczos (g = 7, 9 terms) for ``x ≥ 0.5``, the reflection formula below: absolute
  error about 1e-14 (relative error is larger only near the zeros at 1 and 2).
- ``digamma`` and ``polygamma(n)`` (n = 1, 2; more for ``x ≥ 0.5``): recurrence up to
  ``x + 10`` and the asymptotic (Bernoulli) series, reflection for ``x < 0.5``: about 1e-13.
- ``log_ndtr``: ``log(erfc(-x/√2)/2)`` from the log of the ``erfc`` fit (no underflow in the
  far left tail), ``log1p(-erfc(x/√2)/2)`` on the right: about 2e-7.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ..autograd import OUT
from ..autograd.forward import elementwise
from ..backends import backend_of_array
from ._common import Tensor, binary_operands, grad_on, record, to_tensor, wrap
from .elementwise import _meta
from .elementwise import exp as _exp
from .elementwise import subtract as _subtract
from .statistics import logsumexp as _logsumexp

__all__ = ["erf", "erfc", "erfinv", "lgamma", "digamma", "polygamma", "log_ndtr", "logsumexp",
           "softmax", "log_softmax", "xlogy", "expit", "logit"]

_SQRT_PI = math.sqrt(math.pi)
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
_SQRT1_2 = math.sqrt(0.5)

# ---------------------------------------------------------------------------------------------
# Standard-op approximations on raw arrays (``xp`` the backend namespace)

_NR = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806, 0.27886807, -1.13520398,
       1.48851587, -0.82215223, 0.17087277)


def _log_erfc_pos(xp: Any, z: Any) -> tuple[Any, Any]:
    """``(t, log(erfc(z)) - log t)`` for ``z ≥ 0`` (Numerical Recipes' erfcc, relative error of
    erfc below 1.2e-7)."""
    t = 1.0 / (1.0 + 0.5 * z)
    p = _NR[-1]
    for c in _NR[-2::-1]:
        p = c + t * p
    return t, -z * z + p


def _erfc_pos(xp: Any, z: Any) -> Any:
    t, rest = _log_erfc_pos(xp, z)
    return t * xp.exp(rest)


def _approx_erfc(xp: Any, x: Any) -> Any:
    e = _erfc_pos(xp, xp.abs(x))
    return xp.where(x >= 0, e, 2.0 - e)


def _approx_erf(xp: Any, x: Any) -> Any:
    z = xp.abs(x)
    small = z < 0.5
    xs = xp.where(small, x, 0.0)
    x2 = xs * xs
    # 2/√π Σ (-1)^n x^(2n+1) / (n! (2n+1)), 13 terms (error < 1e-16 for |x| < 0.5)
    term = xs
    total = xs
    for n in range(1, 13):
        term = term * (-x2 / n)
        total = total + term / (2 * n + 1)
    big = 1.0 - _erfc_pos(xp, z)
    return xp.where(small, total * (2.0 / _SQRT_PI), xp.where(x >= 0, big, -big))


_GILES_C = (2.81022636e-08, 3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087,
            -0.00125372503, -0.00417768164, 0.246640727, 1.50140941)
_GILES_T = (-0.000200214257, 0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773,
            -0.0076224613, 0.00943887047, 1.00167406, 2.83297682)


def _approx_erfinv(xp: Any, x: Any) -> Any:
    z = xp.abs(x)
    inside = z < 1.0
    zc = xp.where(inside, z, 0.5)
    w = -xp.log((1.0 - zc) * (1.0 + zc))
    central = w < 5.0
    wc = xp.where(central, w, 5.0) - 2.5
    wt = xp.sqrt(xp.where(central, 5.0, w)) - 3.0
    pc = _GILES_C[0]
    for c in _GILES_C[1:]:
        pc = c + pc * wc
    pt = _GILES_T[0]
    for c in _GILES_T[1:]:
        pt = c + pt * wt
    y = xp.where(central, pc, pt) * zc
    tail = zc > 0.5
    log_q = xp.log(1.0 - zc)  # 1 - z is exact for z > 0.5
    for _ in range(3):
        # Newton on erf(y) = z near 0; on log erfc(y) = log(1 - z) in the tail (converges there,
        # where erfc is too steep for Newton in the linear scale)
        t, rest = _log_erfc_pos(xp, xp.where(tail, y, 1.0))
        log_erfc = xp.log(t) + rest
        dlog = -(2.0 / _SQRT_PI) * xp.exp(-y * y - log_erfc)
        step_tail = (log_erfc - log_q) / dlog
        step_mid = (_approx_erf(xp, y) - zc) / ((2.0 / _SQRT_PI) * xp.exp(-y * y))
        y = y - xp.where(tail, step_tail, step_mid)
    y = xp.where(inside, y, xp.where(z == 1.0, xp.full_like(y, math.inf), math.nan))
    return xp.where(x < 0, -y, y)


_LANCZOS = (0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313,
            -176.61502916214059, 12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6,
            1.5056327351493116e-7)


def _approx_lgamma(xp: Any, x: Any) -> Any:
    reflect = x < 0.5
    z = xp.where(reflect, 1.0 - x, x) - 1.0
    a = _LANCZOS[0]
    for i, c in enumerate(_LANCZOS[1:], start=1):
        a = a + c / (z + i)
    t = z + 7.5
    pos = _LOG_SQRT_2PI + (z + 0.5) * xp.log(t) - t + xp.log(a)
    s = xp.abs(xp.sin(math.pi * xp.where(reflect, x, 0.5)))
    ref = xp.where(x == xp.floor(x), xp.full_like(pos, math.inf), math.log(math.pi) - xp.log(s) - pos)
    return xp.where(reflect, ref, pos)  # +inf at the poles 0, -1, -2, ... (as SciPy's gammaln)


# Bernoulli numbers B_2 .. B_12
_BERN = (1.0 / 6, -1.0 / 30, 1.0 / 42, -1.0 / 30, 5.0 / 66, -691.0 / 2730)


def _digamma_pos(xp: Any, z: Any) -> Any:
    """ψ(z) for z ≥ 0.5: shifted to z + 10 when small, then the asymptotic series."""
    small = z < 10.0
    acc = 0.0
    for k in range(10):
        acc = acc + 1.0 / (z + k)
    zz = xp.where(small, z + 10.0, z)
    inv2 = 1.0 / (zz * zz)
    series = 0.0
    p = inv2
    for k, b in enumerate(_BERN, start=1):
        series = series + b / (2 * k) * p
        p = p * inv2
    return xp.log(zz) - 0.5 / zz - series - xp.where(small, acc, 0.0)


def _approx_digamma(xp: Any, x: Any) -> Any:
    reflect = x < 0.5
    pos = _digamma_pos(xp, xp.where(reflect, 1.0 - x, x))
    xr = xp.where(reflect, x, 0.25)
    ref = xp.where(x == xp.floor(x), math.nan, pos - math.pi / xp.tan(math.pi * xr))
    return xp.where(reflect, ref, pos)  # NaN at the poles 0, -1, -2, ...


def _polygamma_pos(xp: Any, n: int, z: Any) -> Any:
    """ψ⁽ⁿ⁾(z), n ≥ 1, z ≥ 0.5: recurrence to z + 10, then
    (-1)^(n+1) [(n-1)!/z^n + n!/(2 z^(n+1)) + Σ B_2k (2k+n-1)!/((2k)! z^(2k+n))]."""
    small = z < 10.0
    acc = 0.0
    for k in range(10):
        acc = acc + 1.0 / (z + k) ** (n + 1)
    zz = xp.where(small, z + 10.0, z)
    inv = 1.0 / zz
    s = math.factorial(n - 1) * inv ** n + math.factorial(n) / 2 * inv ** (n + 1)
    for k, b in enumerate(_BERN, start=1):
        s = s + b * math.factorial(2 * k + n - 1) / math.factorial(2 * k) * inv ** (2 * k + n)
    sign = 1.0 if n % 2 else -1.0
    return sign * (s + math.factorial(n) * xp.where(small, acc, 0.0))


def _approx_polygamma(xp: Any, n: int, x: Any) -> Any:
    if n == 0:
        return _approx_digamma(xp, x)
    reflect = x < 0.5
    pos = _polygamma_pos(xp, n, xp.where(reflect, 1.0 - x, x))
    xr = xp.where(reflect, x, 0.25)
    s = xp.sin(math.pi * xr)
    if n == 1:  # ψ1(x) = π²/sin²(πx) - ψ1(1-x)
        ref = math.pi ** 2 / (s * s) - pos
    elif n == 2:  # ψ2(x) = ψ2(1-x) - 2π³ cos(πx)/sin³(πx)
        ref = pos - 2 * math.pi ** 3 * xp.cos(math.pi * xr) / (s * s * s)
    else:  # no reflection formula here for n ≥ 3: NaN, never a wrong number
        ref = xp.full_like(pos, math.nan)
    # at the poles 0, -1, -2, ...: +inf for odd n (both sides tend to it), NaN for even n
    pole = xp.full_like(pos, math.inf if n % 2 else math.nan)
    return xp.where(reflect, xp.where(x == xp.floor(x), pole, ref), pos)


def _approx_log_ndtr(xp: Any, x: Any) -> Any:
    left = x < 0
    zl = xp.where(left, -x, 0.0) * _SQRT1_2
    t, rest = _log_erfc_pos(xp, zl)
    log_left = math.log(0.5) + xp.log(t) + rest
    zr = xp.where(left, 0.0, x) * _SQRT1_2
    log_right = xp.log1p(-0.5 * _erfc_pos(xp, zr))
    return xp.where(left, log_left, log_right)


# ---------------------------------------------------------------------------------------------
# The ops


def _forward(b: Any, name: str, approx: Callable[..., Any], data: Any, *n: int) -> Any:
    sp = b.special
    if sp is not None:
        return b.fix(getattr(sp, name)(*n, data))
    return b.fix(approx(b.xp, *n, data))


def _floating(x: Any, what: str) -> Tensor:
    t = to_tensor(x, what)
    if t.dtype.kind != "f":
        raise TypeError(f"{what}: needs a real floating-point input, not {t.dtype.name} (shape "
                        f"{t.shape}); convert it first, e.g. ag.astype(x, ag.float64)")
    return t


def _call(name: str, xp: Any, x: Any, *n: int) -> Any:
    """A special function inside a rule: differentiable on Tensors (``create_graph``), the
    backend's raw forward on raw arrays."""
    if type(x) is Tensor:
        return polygamma(n[0], x) if n else _PUBLIC[name](x)
    b = backend_of_array(x)
    approx = _approx_polygamma if n else _APPROX[name]
    return _forward(b, name, approx, x, *n)


def _expit_back(xp: Any, g: Any, s: Any) -> Any:
    return g * (s * (1.0 - s))


def _logit_back(xp: Any, g: Any, p: Any) -> Any:
    return g / (p * (1.0 - p))


elementwise(_expit_back, _logit_back)  # their JVP rules, derived (agnograd.autograd.forward)


def _unary(name: str, approx: Callable[..., Any], rule: Callable[..., Any],
           saved: tuple[Any, ...], math_: str, accuracy: str) -> Callable[[Any], Tensor]:
    what = f"special.{name}"

    def op(x: Any) -> Tensor:
        x = _floating(x, what)
        b = x._backend
        y = _forward(b, name, approx, x.data)
        if x._requires_grad and grad_on():
            return record(what, y, b, (x,), (rule,), saved=tuple(x if s == "x" else OUT for s in saved))
        return wrap(y, b)

    elementwise(rule)  # the JVP rule, derived (agnograd.autograd.forward)
    op.__name__ = op.__qualname__ = name
    op.__module__ = "agnograd.special"
    op.__doc__ = (f"``{name}(x)``, elementwise (SciPy's ``scipy.special.{name}``"
                  f"{', named gammaln there' if name == 'lgamma' else ''}). Beyond the Array API "
                  f"standard.\n\nThe backend's own implementation where it has one; elsewhere a "
                  f"standard-op approximation: {accuracy}\n\nVJP: ``{math_}``.")
    return op


erf = _unary("erf", _approx_erf, lambda xp, g, x: g * ((2.0 / _SQRT_PI) * xp.exp(-x * x)), ("x",),
             "x̄ = ḡ·2/√π·exp(-x²)", "Maclaurin series for |x| < 0.5, 1 - erfc beyond; float64 "
             "relative error below 1.2e-7.")
erfc = _unary("erfc", _approx_erfc, lambda xp, g, x: g * ((-2.0 / _SQRT_PI) * xp.exp(-x * x)),
              ("x",), "x̄ = -ḡ·2/√π·exp(-x²)", "Numerical Recipes' Chebyshev fit; float64 relative "
              "error below 1.2e-7, tails included.")
erfinv = _unary("erfinv", _approx_erfinv, lambda xp, g, y: g * ((_SQRT_PI / 2) * xp.exp(y * y)),
                ("out",), "x̄ = ḡ·√π/2·exp(erfinv(x)²)", "Giles' polynomial and three Newton steps; "
                "float64 relative error about 1e-7 (±inf at ±1, NaN outside [-1, 1]).")
lgamma = _unary("lgamma", _approx_lgamma, lambda xp, g, x: g * _call("digamma", xp, x), ("x",),
                "x̄ = ḡ·digamma(x)", "Lanczos (g = 7) with reflection; float64 absolute error "
                "about 1e-14.")
digamma = _unary("digamma", _approx_digamma, lambda xp, g, x: g * _call("polygamma", xp, x, 1),
                 ("x",), "x̄ = ḡ·polygamma(1, x)", "recurrence, asymptotic series and reflection; "
                 "float64 error about 1e-13.")
log_ndtr = _unary("log_ndtr", _approx_log_ndtr,
                  lambda xp, g, x, y: g * xp.exp(-0.5 * x * x - _LOG_SQRT_2PI - y), ("x", "out"),
                  "x̄ = ḡ·φ(x)/Φ(x) = ḡ·exp(-x²/2 - log√(2π) - log_ndtr(x))",
                  "the log of the erfc fit (no underflow in the left tail); float64 relative error "
                  "about 2e-7.")

_APPROX: dict[str, Callable[..., Any]] = {"erf": _approx_erf, "erfc": _approx_erfc,
                                          "erfinv": _approx_erfinv, "lgamma": _approx_lgamma,
                                          "digamma": _approx_digamma, "log_ndtr": _approx_log_ndtr}
_PUBLIC: dict[str, Callable[[Any], Tensor]] = {"erf": erf, "erfc": erfc, "erfinv": erfinv,
                                               "lgamma": lgamma, "digamma": digamma,
                                               "log_ndtr": log_ndtr}


def _polygamma_back(xp: Any, g: Any, x: Any, n: int) -> Any:
    return g * _call("polygamma", xp, x, n + 1)


def polygamma(n: int, x: Any) -> Tensor:
    """``polygamma(n, x)``, the n-th derivative of ``digamma`` (SciPy's and JAX's
    ``polygamma``), elementwise; ``n`` a non-negative Python int. Beyond the Array API standard.

    The backend's own where it has one; elsewhere recurrence, asymptotic series and reflection
    (float64 error about 1e-13; for ``n ≥ 3`` only ``x ≥ 0.5``, NaN below). VJP:
    ``x̄ = ḡ·polygamma(n + 1, x)`` (so every order works)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise TypeError(f"special.polygamma: n must be a non-negative Python int, not {n!r}")
    if n == 0:
        return digamma(x)
    x = _floating(x, "special.polygamma")
    b = x._backend
    y = _forward(b, "polygamma", _approx_polygamma, x.data, n)
    if x._requires_grad and grad_on():
        elementwise(_polygamma_back)
        return record("special.polygamma", y, b, (x,), (_polygamma_back,), saved=(x,),
                      params=(n,))
    return wrap(y, b)


def _expit_forward(xp: Any, x: Any) -> Any:
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def expit(x: Any) -> Tensor:
    """The logistic sigmoid ``1/(1 + exp(-x))`` (SciPy's ``expit``), computed without overflow
    from standard ops. Beyond the Array API standard. VJP: ``x̄ = ḡ·s·(1 - s)``."""
    x = _floating(x, "special.expit")
    b = x._backend
    y = b.fix(_expit_forward(b.xp, x.data))
    if x._requires_grad and grad_on():
        return record("special.expit", y, b, (x,), (_expit_back,), saved=(OUT,))
    return wrap(y, b)


def logit(x: Any) -> Tensor:
    """``log(p/(1 - p))``, the inverse of :func:`expit` (SciPy's ``logit``), as
    ``log(p) - log1p(-p)``. Beyond the Array API standard. VJP: ``x̄ = ḡ/(p(1 - p))``."""
    x = _floating(x, "special.logit")
    b = x._backend
    xp = b.xp
    y = b.fix(xp.log(x.data) - xp.log1p(-x.data))
    if x._requires_grad and grad_on():
        return record("special.logit", y, b, (x,), (_logit_back,), saved=(x,))
    return wrap(y, b)


def _xlogy_x(xp: Any, g: Any, x: Any, y: Any) -> Any:
    # log y everywhere (the derivative of x·log y in x, also at x = 0), but 0 where x == 0 and
    # y <= 0, where xlogy is the constant 0 (PyTorch's rule).
    flat = (x == 0) & (y <= 0)
    return g * xp.where(flat, 0.0, xp.log(xp.where(flat, 1.0, y)))


def _xlogy_y(xp: Any, g: Any, x: Any, y: Any) -> Any:
    # x / y (0 at x == 0, y != 0, with the derivative 1/y in x there: second order is right);
    # 0 at x == y == 0, where PyTorch's x / y is NaN.
    both = (x == 0) & (y == 0)
    return g * xp.where(both, 0.0, x / xp.where(both, 1.0, y))


def xlogy(x: Any, y: Any) -> Tensor:
    """``x·log(y)``, 0 where ``x == 0`` (even where ``y == 0``; NaN where ``y`` is NaN), with
    broadcasting (SciPy's and PyTorch's ``xlogy``). Beyond the Array API standard. VJP
    (PyTorch's): ``x̄ = ḡ·log y``, also at ``x == 0`` (0 only where ``x == 0`` and ``y <= 0``),
    ``ȳ = ḡ·x/y`` (0 where ``x == y == 0``); differentiable again (mixed second derivative
    ``1/y``)."""
    b, x, y, a1, a2 = binary_operands(x, y, "special.xlogy")
    xp = b.xp
    # A Python scalar beside a floating array: an array of that dtype (the result's dtype
    # anyway), since the standard's where() and the rules below need an array operand.
    if type(x) is not Tensor and xp.isdtype(a2.dtype, "real floating"):
        a1 = xp.full_like(a2, a1)
        x = wrap(a1, b)
    elif type(y) is not Tensor and xp.isdtype(a1.dtype, "real floating"):
        a2 = xp.full_like(a1, a2)
        y = wrap(a2, b)
    zero = (a1 == 0) & (a2 == a2)  # x == 0 and y not NaN (xlogy(0, NaN) is NaN, as SciPy's)
    out = b.fix(xp.where(zero, 0.0, a1 * xp.log(xp.where(zero, 1.0, a2))))
    if grad_on() and any(type(t) is Tensor and t._requires_grad for t in (x, y)):
        elementwise(_xlogy_x, _xlogy_y)
        return record("special.xlogy", out, b, (x, y), (_xlogy_x, _xlogy_y), saved=(x, y),
                      meta=_meta(x, y, out))
    return wrap(out, b)


def logsumexp(a: Any, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
    """``log Σ exp(a)`` over ``axis`` (all axes by default), stably (SciPy's ``logsumexp``
    without ``b``/``return_sign``); ``ag.logsumexp`` with SciPy's signature."""
    return _logsumexp(a, axis=axis, keepdims=keepdims)


def log_softmax(x: Any, axis: int | tuple[int, ...] | None = None) -> Tensor:
    """``x - logsumexp(x, axis, keepdims=True)`` (SciPy's ``log_softmax``: all axes by default;
    ``ag.nn.functional.log_softmax`` defaults to the last)."""
    t = to_tensor(x, "special.log_softmax")
    return _subtract(t, _logsumexp(t, axis=axis, keepdims=True))


def softmax(x: Any, axis: int | tuple[int, ...] | None = None) -> Tensor:
    """``exp(x) / Σ exp(x)`` over ``axis`` (SciPy's ``softmax``: all axes by default), as
    ``exp(log_softmax(x))`` (no overflow)."""
    return _exp(log_softmax(x, axis=axis))
