"""Elementwise functions of the Array API standard, each with its VJP rule beside it.

Rules read ``(xp, g, *saved) -> cotangent of one input``, with ``g = dL/d(output)``; ``x``/``y``
name the saved inputs and ``out`` the saved output. The engine reduces broadcast cotangents back
to each input's shape and casts them to its dtype, so rules are written for equal shapes.

Subgradients at kinks (documented in docs/math.md): ``abs``/``sign`` at 0 -> 0; ``maximum`` and
``minimum`` at ties split the gradient equally; ``clip`` passes the gradient to ``x`` on the
closed interval; ``floor``/``ceil``/``round``/``trunc``/``sign`` have zero gradient.
"""

from __future__ import annotations

import cmath
import math
import operator
from collections.abc import Callable
from typing import Any, TypeAlias

from ..autograd import grad_mode, record_binary, record_unary
from ..autograd.forward import defjvp, elementwise
from ..backends import Backend, backend_of_array
from ._common import (
    PY_SCALARS,
    Tensor,
    TensorLike,
    binary_operands,
    from_backend_dtype,
    grad_on,
    is_complex,
    record,
    share_version,
    to_tensor,
    wrap,
)

__all__ = [
    "abs", "acos", "acosh", "asin", "asinh", "atan", "atanh", "cos", "cosh", "exp", "expm1", "log",
    "log1p", "log2", "log10", "negative", "positive", "reciprocal", "sin", "sinh", "sqrt", "square",
    "tan", "tanh", "ceil", "floor", "round", "trunc", "sign", "real", "conj", "imag", "isfinite",
    "isinf", "isnan", "signbit", "logical_not", "bitwise_invert",
    "add", "subtract", "multiply", "divide", "pow", "atan2", "hypot", "logaddexp", "copysign",
    "maximum", "minimum", "floor_divide", "remainder", "equal", "not_equal", "less", "less_equal",
    "greater", "greater_equal", "logical_and", "logical_or", "logical_xor", "bitwise_and",
    "bitwise_or", "bitwise_xor", "bitwise_left_shift", "bitwise_right_shift", "nextafter",
    "clip", "where",
]

Rule = Callable[..., Any]
# What the factories return: the op itself, typed for callers (``ag.tanh(x)`` is a Tensor).
UnaryOp: TypeAlias = Callable[[TensorLike], Tensor]
BinaryOp: TypeAlias = Callable[[TensorLike, TensorLike], Tensor]


def _name_op(name: str, fn: Any) -> None:
    fn.__name__ = fn.__qualname__ = name
    fn.__module__ = "agnograd"


# ---------------------------------------------------------------------------------------------
# Standard forwards where backends deviate from the standard's special cases (the conformance
# suite finds them; docs/conformance.md). Each runs the backend's function, then patches only
# the special values with ``where``; the other ops keep calling the backend directly.

def _is_real_floating(dt: Any) -> bool:
    return from_backend_dtype(dt).kind == "f"  # (from_backend_dtype caches per dtype)


def _complex_from(xp: Any, re: Any, sign_of_im: Any, like: Any) -> Any:
    """``re ± 0j`` in ``like``'s complex dtype, the zero's sign that of ``sign_of_im`` (a real
    array): built without multiplying by ``1j``, which would turn an infinite ``re`` to NaN."""
    z = xp.astype(re, like.dtype)
    return xp.where(xp.signbit(sign_of_im), xp.conj(z), z)


def _expm1_standard(b: Backend, a: Any) -> Any:
    """``expm1`` with the standard's complex special cases (NumPy differs at signed zeros,
    infinities and NaN: ``expm1(-0+0j)``, ``expm1(inf+0j)``, ``expm1(-inf+infj)``, ...)."""
    xp = b.xp
    y = xp.expm1(a)
    if not is_complex(b, a.dtype):  # the real path: one dict lookup
        return y
    re, im = xp.real(a), xp.imag(a)
    # On the real axis the result is the real expm1 with b's zero (and +0 at a = ±0).
    axis = _complex_from(xp, xp.where(re == 0, xp.zeros_like(re), xp.expm1(re)), im, y)
    y = xp.where(im == 0, axis, y)
    bad_im = ~xp.isfinite(im)  # b infinite or NaN: -1 ± 0j at a = -inf, inf + NaN j at a = +inf
    y = xp.where((re == -math.inf) & bad_im, xp.full_like(y, -1.0), y)
    return xp.where((re == math.inf) & bad_im, xp.full_like(y, complex(math.inf, math.nan)), y)


def _tanh_standard(b: Backend, a: Any) -> Any:
    """``tanh`` with the standard's complex special cases: ``tanh(±inf + bj)`` for finite b is
    ``±1`` with the imaginary zero of b's sign (NumPy's sign follows ``sin(2b)``)."""
    xp = b.xp
    y = xp.tanh(a)
    if not is_complex(b, a.dtype):  # the real path: one dict lookup
        return y
    re, im = xp.real(a), xp.imag(a)
    ones = _complex_from(xp, xp.sign(re), im, y)
    return xp.where(xp.isinf(re) & xp.isfinite(im), ones, y)


_STANDARD_FORWARD: dict[str, Callable[[Backend, Any], Any]] = {
    "expm1": _expm1_standard, "tanh": _tanh_standard,
}


def _floor_divide_standard(a1: Any, a2: Any) -> Any:
    """``a1 // a2`` with the standard's special cases at infinities: where exactly one operand
    is infinite, the result is ``a1 / a2`` (``inf // 2 -> inf``, ``1 // -inf -> -0``); NumPy
    follows Python (``nan`` and ``-1``). Integer dtypes are the backend's as they are."""
    q = a1 // a2
    b = backend_of_array(q)
    if b is None:
        return q
    xp = b.xp
    if not _is_real_floating(q.dtype):
        return q
    return xp.where(_isinf(xp, a1) ^ _isinf(xp, a2), a1 / a2, q)


def _isinf(xp: Any, a: Any) -> Any:
    return math.isinf(a) if isinstance(a, PY_SCALARS) else xp.isinf(a)


def _ifloordiv_standard(a: Any, o: Any) -> Any:
    """``a //= o`` (in place where the backend divides in place) with the standard's special
    cases, as :func:`_floor_divide_standard`."""
    b = backend_of_array(a)
    original = a
    if b is None or not _is_real_floating(a.dtype):
        a //= o
        return a
    xp = b.xp
    fix = xp.isinf(a) ^ _isinf(xp, o)
    quotient = a / o  # before a is overwritten
    a //= o
    out = xp.where(fix, quotient, a)
    if a is original:  # divided in place: write the patch in place too, so views see it
        try:
            a[...] = out
            return a
        except (TypeError, ValueError, NotImplementedError):
            pass
    return out


# ---------------------------------------------------------------------------------------------
# Unary functions: (name, what the rule saves, rule, the math in one line)

def _unary(name: str, save: str | None, rule: Rule | None, math_: str,
           crule: Rule | None = None, csave: str | None = None) -> UnaryOp:
    """``crule`` (reading ``csave``), when given, is the rule recorded for a complex input;
    ``rule`` serves real inputs, which so pay no ``conj`` (one dict lookup picks, at record
    time, and only for ops that have a complex rule)."""
    fwd = _STANDARD_FORWARD.get(name)
    if rule is None:  # non-differentiable: never records
        def op(x: Any) -> Tensor:
            x = to_tensor(x, name)
            b = x._backend
            return wrap(getattr(b.xp, name)(x.data), b)
    else:
        codes = {None: 0, "x": 1, "out": 2}
        elementwise(rule, crule)  # the JVP rules, derived (agnograd.autograd.forward)
        rules = (rule,)
        save_code = codes[save]
        crules = None if crule is None else (crule,)
        csave_code = codes[csave]

        def op(x: Any) -> Tensor:
            if type(x) is not Tensor:
                x = to_tensor(x, name)
            b = x._backend
            a = x.data
            # the standard's forward where the backend's deviates (expm1, tanh), else the backend's
            y = getattr(b.xp, name)(a) if fwd is None else fwd(b, a)
            if x._requires_grad and grad_mode.enabled:
                if crules is not None:
                    try:
                        cplx = b.complex_kinds[a.dtype]
                    except KeyError:
                        cplx = is_complex(b, a.dtype)
                    if cplx:
                        return record_unary(name, y, b, x, crules, csave_code)
                return record_unary(name, y, b, x, rules, save_code)
            return wrap(y, b)

    op.__doc__ = (
        f"Elementwise ``{name}`` of the Array API standard; same shape, the standard's dtypes.\n\n"
        + (f"VJP: ``{math_}``." if rule is not None else "Not differentiable: the result never "
           "requires grad.")
    )
    _name_op(name, op)
    return op


def _zeros(xp: Any, g: Any, *_: Any) -> Any:
    return xp.zeros_like(g)


_LN2 = math.log(2.0)
_LN10 = math.log(10.0)

# A holomorphic f (every one below with a complex rule but abs, sign, conj, imag) has the
# complex VJP x̄ = ḡ·conj(f'(x)) (docs/complex.md); the real rule is the same without conj.
_cj = "  complex: ḡ·conj(f'(x))"

abs = _unary("abs", "x", lambda xp, g, x: g * xp.sign(x), "x̄ = ḡ·sign(x)  (0 at x = 0; "
             "complex: ḡ·x/|x|)")
acos = _unary("acos", "x", lambda xp, g, x: -g / xp.sqrt(1 - x * x), "x̄ = -ḡ/√(1-x²)" + _cj,
              lambda xp, g, x: -g / xp.conj(xp.sqrt(1 - x * x)), "x")
# acosh' = 1/(√(x-1)·√(x+1)), which is 1/√(x²-1) for real x > 1 but not across the imaginary
# axis (the cut of √(x²-1)) for complex x.
acosh = _unary("acosh", "x", lambda xp, g, x: g / xp.sqrt(x * x - 1), "x̄ = ḡ/√(x²-1)" + _cj,
               lambda xp, g, x: g / xp.conj(xp.sqrt(x - 1) * xp.sqrt(x + 1)), "x")
asin = _unary("asin", "x", lambda xp, g, x: g / xp.sqrt(1 - x * x), "x̄ = ḡ/√(1-x²)" + _cj,
              lambda xp, g, x: g / xp.conj(xp.sqrt(1 - x * x)), "x")
asinh = _unary("asinh", "x", lambda xp, g, x: g / xp.sqrt(x * x + 1), "x̄ = ḡ/√(x²+1)" + _cj,
               lambda xp, g, x: g / xp.conj(xp.sqrt(x * x + 1)), "x")
atan = _unary("atan", "x", lambda xp, g, x: g / (1 + x * x), "x̄ = ḡ/(1+x²)" + _cj,
              lambda xp, g, x: g / xp.conj(1 + x * x), "x")
atanh = _unary("atanh", "x", lambda xp, g, x: g / (1 - x * x), "x̄ = ḡ/(1-x²)" + _cj,
               lambda xp, g, x: g / xp.conj(1 - x * x), "x")
cos = _unary("cos", "x", lambda xp, g, x: -g * xp.sin(x), "x̄ = -ḡ·sin(x)" + _cj,
             lambda xp, g, x: -g * xp.conj(xp.sin(x)), "x")
cosh = _unary("cosh", "x", lambda xp, g, x: g * xp.sinh(x), "x̄ = ḡ·sinh(x)" + _cj,
              lambda xp, g, x: g * xp.conj(xp.sinh(x)), "x")
exp = _unary("exp", "out", lambda xp, g, y: g * y, "x̄ = ḡ·exp(x)  (the saved output)" + _cj,
             lambda xp, g, y: g * xp.conj(y), "out")
expm1 = _unary("expm1", "out", lambda xp, g, y: g * (y + 1), "x̄ = ḡ·(expm1(x)+1)" + _cj,
               lambda xp, g, y: g * xp.conj(y + 1), "out")
log = _unary("log", "x", lambda xp, g, x: g / x, "x̄ = ḡ/x" + _cj,
             lambda xp, g, x: g / xp.conj(x), "x")
log1p = _unary("log1p", "x", lambda xp, g, x: g / (x + 1), "x̄ = ḡ/(1+x)" + _cj,
               lambda xp, g, x: g / xp.conj(x + 1), "x")
log2 = _unary("log2", "x", lambda xp, g, x: g / (x * _LN2), "x̄ = ḡ/(x·ln 2)" + _cj,
              lambda xp, g, x: g / (xp.conj(x) * _LN2), "x")
log10 = _unary("log10", "x", lambda xp, g, x: g / (x * _LN10), "x̄ = ḡ/(x·ln 10)" + _cj,
               lambda xp, g, x: g / (xp.conj(x) * _LN10), "x")
negative = _unary("negative", None, lambda xp, g: -g, "x̄ = -ḡ")
positive = _unary("positive", None, lambda xp, g: g, "x̄ = ḡ")
reciprocal = _unary("reciprocal", "out", lambda xp, g, y: -g * y * y, "x̄ = -ḡ/x²" + _cj,
                    lambda xp, g, y: -g * xp.conj(y * y), "out")
sin = _unary("sin", "x", lambda xp, g, x: g * xp.cos(x), "x̄ = ḡ·cos(x)" + _cj,
             lambda xp, g, x: g * xp.conj(xp.cos(x)), "x")
sinh = _unary("sinh", "x", lambda xp, g, x: g * xp.cosh(x), "x̄ = ḡ·cosh(x)" + _cj,
              lambda xp, g, x: g * xp.conj(xp.cosh(x)), "x")
sqrt = _unary("sqrt", "out", lambda xp, g, y: g / (2 * y), "x̄ = ḡ/(2√x)" + _cj,
              lambda xp, g, y: g / (2 * xp.conj(y)), "out")
square = _unary("square", "x", lambda xp, g, x: g * (2 * x), "x̄ = 2x·ḡ" + _cj,
                lambda xp, g, x: g * (2 * xp.conj(x)), "x")
tan = _unary("tan", "out", lambda xp, g, y: g * (1 + y * y), "x̄ = ḡ·(1+tan²x)" + _cj,
             lambda xp, g, y: g * xp.conj(1 + y * y), "out")
tanh = _unary("tanh", "out", lambda xp, g, y: g * (1 - y * y), "x̄ = ḡ·(1-tanh²x)" + _cj,
              lambda xp, g, y: g * xp.conj(1 - y * y), "out")
ceil = _unary("ceil", None, _zeros, "x̄ = 0")
floor = _unary("floor", None, _zeros, "x̄ = 0")
round = _unary("round", None, _zeros, "x̄ = 0")
trunc = _unary("trunc", None, _zeros, "x̄ = 0")


def _sign_complex(xp: Any, g: Any, x: Any) -> Any:
    # sign(x) = x/|x| = s: x̄ = (ḡ - Re(ḡ·conj(s))·s)/|x| (ḡ's part tangent to the unit
    # circle, over the radius); 0 at x = 0, as PyTorch's sgn.
    r = xp.abs(x)
    zero = r == 0
    s = x / xp.where(zero, 1.0, r)
    return xp.where(zero, 0.0, (g - xp.real(g * xp.conj(s)) * s) / xp.where(zero, 1.0, r))


# sign(z) = z/|z| is neither holomorphic nor real: its Jacobian (a projection over |z|) is
# self-adjoint, so the JVP rule is the VJP rule.
defjvp(_sign_complex, lambda xp, v, y, x: _sign_complex(xp, v, x))
sign = _unary("sign", None, _zeros, "x̄ = 0  (complex: (ḡ - Re(ḡ·conj(s))·s)/|x|, s = x/|x|; 0 "
              "at x = 0)", _sign_complex, "x")
# real and conj are the identity for real inputs and imag is zero; for complex ones real's ḡ
# (real) is x̄, conj's is conj(ḡ), imag's is i·ḡ (x̄ = ∂L/∂Re x + i·∂L/∂Im x).
real = _unary("real", None, lambda xp, g: g, "x̄ = ḡ  (made complex for a complex x)")
conj = _unary("conj", None, lambda xp, g: g, "x̄ = ḡ  (complex: conj(ḡ))",
              lambda xp, g: xp.conj(g))
imag = _unary("imag", None, _zeros, "x̄ = 0  (complex: i·ḡ)", lambda xp, g: g * 1j)
isfinite = _unary("isfinite", None, None, "")
isinf = _unary("isinf", None, None, "")
isnan = _unary("isnan", None, None, "")
signbit = _unary("signbit", None, None, "")
logical_not = _unary("logical_not", None, None, "")
bitwise_invert = _unary("bitwise_invert", None, None, "")


# ---------------------------------------------------------------------------------------------
# Binary functions: (name, forward on raw arrays or None for xp.<name>, saves, rule for x1,
# rule for x2, the math). ``x``/``y`` are the operands, ``out`` the result.

def _binary(
    name: str,
    fwd: Callable[[Any, Any], Any] | None,
    save: str,
    rule1: Rule | None,
    rule2: Rule | None,
    math_: str,
    crule1: Rule | None = None,
    crule2: Rule | None = None,
) -> BinaryOp:
    """``crule1``/``crule2``, when given, are recorded when the result is complex (an operand
    is): real operands keep ``rule1``/``rule2``, which pay no ``conj``."""
    rules = (rule1, rule2)
    crules = None if crule1 is None else (crule1, crule2)
    elementwise(rule1, rule2, crule1, crule2)  # the JVP rules, derived (autograd.forward)
    differentiable = rule1 is not None or rule2 is not None
    # What the rules read, from (x1, x2, out): resolved once, not per call.
    picks = tuple({"x": 0, "y": 1, "o": 2}[c] for c in save)
    cross = name == "multiply"  # each operand read only by the other's rule

    def op(x1: Any, x2: Any) -> Tensor:
        # The hottest lines of the library: Tensor-op-scalar and Tensor-op-Tensor on one
        # single-device backend are served inline; everything else (and these cases' errors)
        # goes through the one conversion, binary_operands. Calling it for every op made
        # ``x * 2.0`` on a shape-(4,) NumPy Tensor ~8% slower (timeit), so this prefix stays;
        # it tests exact types (a float subclass such as np.float64 takes the general path).
        t2 = type(x2)
        if type(x1) is Tensor and (t2 is float or t2 is int or (
                t2 is Tensor and x2._backend is x1._backend and not x1._backend.multi_device)):
            b = x1._backend
            a1 = x1.data
            a2 = x2.data if t2 is Tensor else x2
        else:
            b, x1, x2, a1, a2 = binary_operands(x1, x2, name)
        try:
            y = fwd(a1, a2) if fwd is not None else getattr(b.xp, name)(a1, a2)
        except (ValueError, TypeError) as exc:
            raise _operand_error(name, x1, x2, b, exc) from exc
        if y is NotImplemented:
            raise TypeError(f"{name}: unsupported operands {type(a1).__name__}, {type(a2).__name__}")
        if differentiable and grad_mode.enabled and (
            (type(x1) is Tensor and x1._requires_grad) or (type(x2) is Tensor and x2._requires_grad)
        ):
            if crules is not None:
                try:
                    cplx = b.complex_kinds[y.dtype]
                except KeyError:
                    cplx = is_complex(b, y.dtype)
                if cplx:
                    return record_binary(name, y, b, x1, x2, crules, picks, _meta(x1, x2, y),
                                         cross)
            return record_binary(name, y, b, x1, x2, rules, picks, _meta(x1, x2, y), cross)
        return wrap(y, b)

    op.__doc__ = (
        f"Elementwise ``{name}(x1, x2)`` with broadcasting and the standard's type promotion "
        "(either argument may be a Python scalar).\n\n"
        + (f"VJP: ``{math_}``; broadcast cotangents are summed back to each input's shape."
           if differentiable else "Not differentiable: the result never requires grad.")
    )
    _name_op(name, op)
    return op


def _describe(x: Any) -> str:
    return f"{x.dtype.name} {x.shape}" if type(x) is Tensor else f"Python {type(x).__name__}"


def _operand_error(name: str, x1: Any, x2: Any, b: Any, exc: Exception) -> Exception:
    """The backend's error, restated with the op, the operands and the backend."""
    kind = ValueError if isinstance(exc, ValueError) else TypeError
    hint = ""
    if name == "pow" and "negative" in str(exc).lower():
        hint = ("; raise a floating tensor instead (ag.astype(x, ag.float64) ** -1): an integer "
                "result cannot hold a fraction")
    return kind(f"{name}: cannot combine {_describe(x1)} with {_describe(x2)} on backend "
                f"'{b.name}' (shapes must broadcast, dtypes must promote): {exc}{hint}")


def _meta(x1: Any, x2: Any, y: Any) -> tuple[Any, Any] | None:
    """(shape, dtype) of each Tensor input whose cotangent may need reducing or casting."""
    shape, dt = y.shape, y.dtype
    m1 = m2 = None
    # ``is`` first: comparing dtype objects is slow, and they are usually the same object.
    if type(x1) is Tensor:
        a = x1.data
        if a.shape != shape or (a.dtype is not dt and a.dtype != dt):
            m1 = (a.shape, a.dtype)
    if type(x2) is Tensor:
        a = x2.data
        if a.shape != shape or (a.dtype is not dt and a.dtype != dt):
            m2 = (a.shape, a.dtype)
    return None if m1 is None and m2 is None else (m1, m2)


def _pow_x(xp: Any, g: Any, x: Any, y: Any) -> Any:
    # d/dx x**y = y x**(y-1); defined as 0 where y == 0 (also at x == 0), as PyTorch does.
    d = y * x ** (y - 1)
    if isinstance(y, PY_SCALARS):
        return g * d if y != 0 else xp.zeros_like(g)
    return g * xp.where(y == 0, 0.0, d)


def _pow_y(xp: Any, g: Any, x: Any, y: Any, out: Any) -> Any:
    # d/dy x**y = x**y log x; 0 where x == 0 and y >= 0 (the limit), as PyTorch does.
    if isinstance(x, PY_SCALARS):
        if x > 0:
            return g * (out * math.log(x))
        return xp.where(y >= 0, 0.0, g * math.nan) if x == 0 else g * math.nan
    zero = x == 0
    return g * xp.where(zero & (y >= 0), 0.0, out * xp.log(xp.where(zero, 1.0, x)))


def _tie_split(xp: Any, g: Any, win: Any, tie: Any) -> Any:
    return xp.where(win, g, xp.where(tie, g * 0.5, 0.0))


# Complex rules (the result is complex): both operands are holomorphic arguments of multiply,
# divide and pow, so each cotangent is ḡ·conj(∂out/∂operand). An operand may be a Python scalar.

def _conj(xp: Any, v: Any) -> Any:
    return v.conjugate() if type(v) in PY_SCALARS else xp.conj(v)


def _is_cplx(v: Any) -> bool:
    """Whether a rule's operand (raw array, Tensor when differentiating twice, or Python
    scalar) is complex; read by the complex rules only."""
    if type(v) in PY_SCALARS:
        return type(v) is complex
    dt = v.dtype
    return (dt if type(v) is Tensor else from_backend_dtype(dt)).kind == "c"


def _pow_x_complex(xp: Any, g: Any, x: Any, y: Any, o: Any) -> Any:
    # x̄ = ḡ·conj(y·x^(y-1)); 0 where y == 0.
    d = y * x ** (y - 1)
    if isinstance(y, PY_SCALARS):
        return g * xp.conj(d) if y != 0 else xp.zeros_like(g)
    return g * xp.conj(xp.where(y == 0, 0.0, d))


def _pow_y_complex(xp: Any, g: Any, x: Any, y: Any, out: Any) -> Any:
    # ȳ = ḡ·conj(x^y·log x), with the principal log of x as a complex number (a negative real
    # base has log|x| + iπ); 0 where x == 0 and Re y >= 0 (the limit), as PyTorch does.
    if isinstance(x, PY_SCALARS):
        if x == 0:
            re_y = xp.real(y) if _is_cplx(y) else y
            return xp.where(re_y >= 0, 0.0, g * math.nan)
        return g * (xp.conj(out) * cmath.log(complex(x)).conjugate())
    xc = x if _is_cplx(x) else xp.astype(x, out.dtype)
    zero = x == 0
    d = out * xp.log(xp.where(zero, 1.0, xc))
    if isinstance(y, PY_SCALARS):
        if complex(y).real >= 0:
            d = xp.where(zero, 0.0, d)
    else:
        d = xp.where(zero & ((xp.real(y) if _is_cplx(y) else y) >= 0), 0.0, d)
    return g * xp.conj(d)


add = _binary("add", operator.add, "", lambda xp, g: g, lambda xp, g: g, "x̄ = ḡ, ȳ = ḡ")
subtract = _binary("subtract", operator.sub, "", lambda xp, g: g, lambda xp, g: -g,
                   "x̄ = ḡ, ȳ = -ḡ")
multiply = _binary("multiply", operator.mul, "xy",
                   lambda xp, g, x, y: g * y, lambda xp, g, x, y: g * x,
                   "x̄ = ḡ·y, ȳ = ḡ·x  (complex: ḡ·conj(y), ḡ·conj(x))",
                   lambda xp, g, x, y: g * _conj(xp, y), lambda xp, g, x, y: g * _conj(xp, x))
divide = _binary("divide", operator.truediv, "yo",
                 lambda xp, g, y, o: g / y, lambda xp, g, y, o: -g * o / y,
                 "x̄ = ḡ/y, ȳ = -ḡ·x/y²  (complex: ḡ/conj(y), -ḡ·conj(x/y²))",
                 lambda xp, g, y, o: g / _conj(xp, y), lambda xp, g, y, o: -g * xp.conj(o / y))
pow = _binary("pow", operator.pow, "xyo",
              lambda xp, g, x, y, o: _pow_x(xp, g, x, y), _pow_y,
              "x̄ = ḡ·y·x^(y-1), ȳ = ḡ·x^y·log x  (complex: ḡ·conj(...) of each)",
              _pow_x_complex, _pow_y_complex)
atan2 = _binary("atan2", None, "xy",
                lambda xp, g, y, x: g * x / (x * x + y * y), lambda xp, g, y, x: -g * y / (x * x + y * y),
                "ā = ḡ·b/(a²+b²), b̄ = -ḡ·a/(a²+b²)")
hypot = _binary("hypot", None, "xyo",
                lambda xp, g, x, y, o: g * x / o, lambda xp, g, x, y, o: g * y / o,
                "x̄ = ḡ·x/hypot, ȳ = ḡ·y/hypot")
logaddexp = _binary("logaddexp", None, "xyo",
                    lambda xp, g, x, y, o: g * xp.exp(x - o), lambda xp, g, x, y, o: g * xp.exp(y - o),
                    "x̄ = ḡ·e^(x-out), ȳ = ḡ·e^(y-out)")
copysign = _binary("copysign", None, "xo",
                   lambda xp, g, x, o: g * xp.where(x == 0, 0.0, o / x), lambda xp, g, x, o: xp.zeros_like(g),
                   "x̄ = ḡ·out/x (0 at x = 0), ȳ = 0")
maximum = _binary("maximum", None, "xy",
                  lambda xp, g, x, y: _tie_split(xp, g, x > y, x == y),
                  lambda xp, g, x, y: _tie_split(xp, g, y > x, x == y), "to the larger; ties split ḡ/2")
minimum = _binary("minimum", None, "xy",
                  lambda xp, g, x, y: _tie_split(xp, g, x < y, x == y),
                  lambda xp, g, x, y: _tie_split(xp, g, y < x, x == y), "to the smaller; ties split ḡ/2")
floor_divide = _binary("floor_divide", _floor_divide_standard, "",
                       lambda xp, g: xp.zeros_like(g), lambda xp, g: xp.zeros_like(g), "x̄ = 0, ȳ = 0")
remainder = _binary("remainder", operator.mod, "xy",
                    lambda xp, g, x, y: g, lambda xp, g, x, y: -g * xp.floor_divide(x, y),
                    "x̄ = ḡ, ȳ = -ḡ·floor(x/y)")
# Comparisons, logical and bitwise functions: not differentiable.
equal = _binary("equal", operator.eq, "", None, None, "")
not_equal = _binary("not_equal", operator.ne, "", None, None, "")
less = _binary("less", operator.lt, "", None, None, "")
less_equal = _binary("less_equal", operator.le, "", None, None, "")
greater = _binary("greater", operator.gt, "", None, None, "")
greater_equal = _binary("greater_equal", operator.ge, "", None, None, "")
logical_and = _binary("logical_and", None, "", None, None, "")
logical_or = _binary("logical_or", None, "", None, None, "")
logical_xor = _binary("logical_xor", None, "", None, None, "")
bitwise_and = _binary("bitwise_and", operator.and_, "", None, None, "")
bitwise_or = _binary("bitwise_or", operator.or_, "", None, None, "")
bitwise_xor = _binary("bitwise_xor", operator.xor, "", None, None, "")
bitwise_left_shift = _binary("bitwise_left_shift", operator.lshift, "", None, None, "")
bitwise_right_shift = _binary("bitwise_right_shift", operator.rshift, "", None, None, "")
nextafter = _binary("nextafter", None, "", None, None, "")


# ---------------------------------------------------------------------------------------------
# clip and where: operands that are optional or non-differentiable


def clip(x: Any, /, min: Any = None, max: Any = None) -> Tensor:
    """Clamp ``x`` to ``[min, max]`` (either bound may be ``None``, a scalar or an array).

    The result has ``x``'s dtype and the broadcast shape of ``x``, ``min`` and ``max``.
    VJP: ``x̄ = ḡ`` where ``min ≤ x ≤ max`` (the closed interval), else 0; a bound that is a
    Tensor gets ``ḡ`` where it was the active one.
    """
    x = to_tensor(x, "clip")
    b = x._backend
    xp = b.xp
    lo = min if min is None or isinstance(min, PY_SCALARS) else to_tensor(min, "clip", b)
    hi = max if max is None or isinstance(max, PY_SCALARS) else to_tensor(max, "clip", b)
    rlo = lo.data if type(lo) is Tensor else lo
    rhi = hi.data if type(hi) is Tensor else hi
    y = xp.clip(x.data, rlo, rhi)
    if y.dtype != x.data.dtype:
        y = xp.astype(y, x.data.dtype)
    needs = grad_on() and any(type(t) is Tensor and t._requires_grad for t in (x, lo, hi))
    if not needs:
        return wrap(y, b)
    meta = tuple(
        (t.data.shape, t.data.dtype)
        if type(t) is Tensor and (t.data.shape != y.shape or t.data.dtype != y.dtype) else None
        for t in (x, lo, hi)
    )
    return record("clip", y, b, (x, lo, hi), (_clip_x, _clip_lo, _clip_hi), (x, lo, hi),
                  meta if any(m is not None for m in meta) else None)


def _clip_x(xp: Any, g: Any, x: Any, lo: Any, hi: Any) -> Any:
    inside = None
    if lo is not None:
        inside = x >= lo
    if hi is not None:
        inside = (x <= hi) if inside is None else inside & (x <= hi)
    return g if inside is None else xp.where(inside, g, 0.0)


def _clip_lo(xp: Any, g: Any, x: Any, lo: Any, hi: Any) -> Any:
    active = x < lo
    if hi is not None:
        active = active & (lo <= hi)
    return xp.where(active, g, 0.0)


def _clip_hi(xp: Any, g: Any, x: Any, lo: Any, hi: Any) -> Any:
    active = x > hi
    if lo is not None:
        active = active & (lo <= hi)
    return xp.where(active, g, 0.0)


def where(condition: Any, x1: Any, x2: Any, /) -> Tensor:
    """Elementwise ``x1 if condition else x2`` with broadcasting (x1/x2 may be scalars).

    VJP: ``x̄1 = ḡ`` where the condition holds, else 0; ``x̄2`` the complement.
    """
    b, x1, x2, a1, a2 = binary_operands(x1, x2, "where")
    cond = to_tensor(condition, "where", b)
    y = b.xp.where(cond.data, a1, a2)
    if grad_on() and any(type(t) is Tensor and t._requires_grad for t in (x1, x2)):
        m = _meta(x1, x2, y)
        return record("where", y, b, (cond, x1, x2), (None, _where_1, _where_2), (cond,),
                      None if m is None else (None, *m))
    return wrap(y, b)


elementwise(_clip_x, _clip_lo, _clip_hi)


def _where_1(xp: Any, g: Any, c: Any) -> Any:
    return xp.where(c, g, 0.0)


def _where_2(xp: Any, g: Any, c: Any) -> Any:
    return xp.where(c, 0.0, g)


elementwise(_where_1, _where_2)


# ``real``, ``imag`` and ``conj`` may answer with a view of ``x`` (NumPy's ``real`` of a real
# array is the array itself, of a complex one a view; ``imag`` of a complex one too): their
# results share ``x``'s version counter, like the manipulation functions' (share_version).
def _aliasing(op: Callable[[Any], Tensor]) -> Callable[[Any], Tensor]:
    def aliasing_op(x: Any) -> Tensor:
        y = op(x)
        if type(x) is Tensor:
            share_version(x, y)
        return y

    aliasing_op.__name__ = aliasing_op.__qualname__ = op.__name__
    aliasing_op.__module__ = op.__module__
    aliasing_op.__doc__ = op.__doc__
    return aliasing_op


real = _aliasing(real)
imag = _aliasing(imag)
conj = _aliasing(conj)
