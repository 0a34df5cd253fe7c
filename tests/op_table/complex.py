"""Table records: complex inputs of the elementwise, statistical and product functions.

Inputs are complex128 (complex64 in the float32 cross-backend comparison), drawn off both axes
(``|Re| >= 0.2``, ``|Im| >= 0.2``, ``|Im| <= 0.8``) so no finite difference crosses a branch cut
(log, sqrt, the inverse trigonometric and hyperbolic functions have theirs on the axes) or the
kink of abs/sign at 0. Finite differences run along both the real and the imaginary part of every
element (``agnograd.testing.check_grad``), so these records check the convention
``x̄ = ∂L/∂Re x + i·∂L/∂Im x`` for holomorphic and non-holomorphic rules alike. Records that mix
a real operand with a complex one check that the real operand's gradient is the real part.

Kept apart from the real records (``elementwise.py``, ...) so that category modules stay about
their functions' real behaviour; the names start with the op's name, as the coverage test reads
them.
"""

from __future__ import annotations

import numpy as np

import agnograd as ag

from .core import BINARY, UNARY, Op, category


def _c(rng, s):
    re = rng.uniform(0.2, 1.2, size=s) * rng.choice([-1.0, 1.0], size=s)
    im = rng.uniform(0.2, 0.8, size=s) * rng.choice([-1.0, 1.0], size=s)
    return re + 1j * im


def cplx(rng, shapes):
    """Complex inputs off both axes, one per shape."""
    return [_c(rng, s) for s in shapes]


def _real_then_complex(rng, shapes):
    return [rng.uniform(-1.5, 1.5, size=shapes[0]), _c(rng, shapes[1])]


def _complex_then_real(rng, shapes):
    return [_c(rng, shapes[0]), rng.uniform(-1.5, 1.5, size=shapes[1])]


def _u(name, **kw):
    fn = getattr(ag, name)
    return Op(f"{name}-complex", lambda x, fn=fn: fn(x), UNARY, make=cplx, **kw)


_STRICT_REAL_ONLY = {"array_api_strict": "the standard defines var/std for real inputs only "
                                         "(NumPy, PyTorch take complex)"}

ELEMENTWISE = [
    # holomorphic: x̄ = ḡ·conj(f'(x))
    *(_u(n) for n in ("acos", "acosh", "asin", "asinh", "atan", "atanh", "cos", "cosh", "exp",
                      "expm1", "log", "log1p", "log2", "log10", "negative", "positive",
                      "reciprocal", "sin", "sinh", "sqrt", "square", "tan", "tanh")),
    # not holomorphic: each by its own derivation
    _u("abs"),
    _u("sign"),
    _u("real"),
    _u("imag"),
    _u("conj"),
    Op("abs-squared-complex", lambda x: x * ag.conj(x), UNARY, make=cplx, covers=("multiply",)),
    Op("real-imag-mixed-complex", lambda x: ag.real(x) * ag.imag(x) + ag.abs(x) ** 3, UNARY,
       make=cplx),
    Op("add-complex", lambda x, y: x + y, BINARY, make=cplx),
    Op("subtract-complex", lambda x, y: x - y, BINARY, make=cplx),
    Op("multiply-complex", lambda x, y: x * y, BINARY, make=cplx),
    Op("divide-complex", lambda x, y: x / y, BINARY, make=cplx),
    Op("pow-complex", lambda x, y: x ** y, BINARY, make=cplx),
    # a real operand with a complex one: the real operand's gradient is the real part
    Op("multiply-real-complex", lambda x, y: ag.multiply(x, y),
       [((2, 3), (2, 3)), ((3,), (2, 3))], make=_real_then_complex),
    Op("divide-real-complex", lambda x, y: ag.divide(x, y) + ag.divide(y, x),
       [((2, 3), (2, 3))], make=lambda rng, s: [rng.uniform(0.3, 1.5, size=s[0]) *
                                                 rng.choice([-1.0, 1.0], size=s[0]),
                                                 _c(rng, s[1])]),
    Op("pow-real-base-complex-exponent", lambda x, y: ag.pow(x, y), [((2, 3), (2, 3))],
       make=lambda rng, s: [rng.uniform(0.3, 1.5, size=s[0]), _c(rng, s[1])]),
    # a negative real base with a complex exponent: the principal log, log|x| + iπ
    Op("pow-negative-base-complex-exponent", lambda x, y: ag.pow(x, y), [((4,), (4,))],
       make=lambda rng, s: [-rng.uniform(0.3, 1.5, size=s[0]), _c(rng, s[1])]),
    Op("pow-complex-base-real-exponent", lambda x, y: ag.pow(x, y), [((2, 3), (3,))],
       make=_complex_then_real),
    Op("pow-complex-scalars", lambda x: x ** 3 + x ** (0.5 - 0.25j) + (1.5 + 0.5j) ** x
       + (-2.0) ** x + 2.0 ** x, UNARY, make=cplx),
    Op("scalar-operands-complex", lambda x: (2.0 - 1j * x) * (3 + 1j) / (1.5j + x) - x / (2 - 1j)
       + (0.5 + 1j) / x, UNARY, make=cplx),
    Op("where-complex", lambda x, y: ag.where(ag.real(x) > 0, x * y, y),
       [((2, 3), (2, 3)), ((2, 3), (3,))], make=cplx),
]

STATISTICS = [
    Op("sum-complex", lambda x: ag.sum(x, axis=1), [((2, 3, 4),)], make=cplx),
    Op("mean-complex", lambda x: ag.mean(x, axis=(0, 2)), [((2, 3, 4),)], make=cplx),
    Op("prod-complex", lambda x: ag.prod(x), [((),), ((4,),), ((2, 3),)], make=cplx),
    Op("prod-axis-complex", lambda x: ag.prod(x, axis=1, keepdims=True), [((2, 3, 4),)],
       make=cplx),
    Op("prod-one-zero-complex", lambda x: ag.prod(x, axis=-1), [((2, 4),)],
       make=lambda rng, s: [np.where(np.arange(8).reshape(2, 4) == 1, 0.0, _c(rng, s[0]))]),
    Op("cumulative_sum-complex", lambda x: ag.cumulative_sum(x, axis=1, include_initial=True),
       [((2, 4),)], make=cplx),
    Op("cumulative_prod-complex", lambda x: ag.cumulative_prod(x), [((5,),)], make=cplx),
    Op("cumulative_prod-axis-initial-complex",
       lambda x: ag.cumulative_prod(x, axis=0, include_initial=True), [((3, 2),)], make=cplx),
    Op("cumulative_prod-zeros-complex", lambda x: ag.cumulative_prod(x, axis=1), [((2, 5),)],
       make=lambda rng, s: [np.where(np.array([[0, 1, 0, 0, 0], [0, 0, 1, 0, 1]]) == 1, 0.0,
                                     _c(rng, s[0]))], order=1),
    # var and std of complex input are real: mean(|x - mean|²) and its square root
    Op("var-complex", lambda x: ag.var(x, axis=1, correction=1), [((2, 3, 4),)], make=cplx,
       skip=_STRICT_REAL_ONLY),
    Op("std-complex", lambda x: ag.std(x), [((3,),), ((2, 3),)], make=cplx,
       skip=_STRICT_REAL_ONLY),
    # not in the standard; its forward shifts by the largest real part (max is for reals)
    Op("logsumexp-complex", lambda x: ag.logsumexp(x, axis=1), [((2, 3),)], make=cplx),
]

LINALG = [
    Op("linalg.matmul-complex", lambda a, b: a @ b,
       [((2, 3), (3, 4)), ((2, 2, 3), (2, 3, 2)), ((3,), (3,)), ((3,), (2, 3, 2)),
        ((2, 2, 3), (3,))], make=cplx),
    Op("linalg.matmul-real-complex", lambda a, b: ag.matmul(a, b) + ag.matmul(b, a),
       [((3, 3), (3, 3))], make=_real_then_complex),
    Op("linalg.vecdot-complex", lambda a, b: ag.vecdot(a, b),
       [((3,), (3,)), ((2, 3), (3,)), ((4, 1, 3), (2, 3))], make=cplx),
    Op("linalg.vecdot-real-complex", lambda a, b: ag.vecdot(a, b) + ag.vecdot(b, a),
       [((2, 3), (2, 3))], make=_real_then_complex),
    Op("linalg.tensordot-complex", lambda a, b: ag.tensordot(a, b, axes=((0, 2), (2, 0))),
       [((3, 2, 4), (4, 2, 3))], make=cplx),
    Op("linalg.outer-complex", lambda a, b: ag.linalg.outer(a, b), [((3,), (2,))], make=cplx),
    Op("linalg.cross-complex", lambda a, b: ag.linalg.cross(a, b), [((2, 3), (3,))], make=cplx),
]

category("complex", ELEMENTWISE + STATISTICS + LINALG)
