"""Table records: elementwise functions (unary, binary, clip, where)."""

from __future__ import annotations

import numpy as np

import agnograd as ag

from .core import BINARY, UNARY, Op, category


def _away_from_zero(rng, shapes):
    return [rng.uniform(0.3, 2.0, size=s) * rng.choice([-1.0, 1.0], size=s) for s in shapes]


def _distinct_pair(rng, shapes):
    # maximum/minimum: keep the operands apart so finite differences do not cross a tie.
    while True:
        a, b = (rng.uniform(-2, 2, size=s) for s in shapes)
        if np.min(np.abs(np.subtract(a, b)), initial=1.0) > 0.1:
            return [a, b]


def _u(name, domain=(-2.0, 2.0), make=None, **kw):
    fn = getattr(ag, name)
    return Op(name, lambda x, fn=fn: fn(x), UNARY, domain=domain, make=make, **kw)


def _b(name, domain=(-2.0, 2.0), make=None, cases=BINARY, **kw):
    fn = getattr(ag, name)
    return Op(name, lambda x, y, fn=fn: fn(x, y), cases, domain=domain, make=make, **kw)


OPS = [
    _u("abs", make=_away_from_zero),
    _u("acos", (-0.8, 0.8)),
    _u("acosh", (1.2, 3.0)),
    _u("asin", (-0.8, 0.8)),
    _u("asinh"),
    _u("atan"),
    _u("atanh", (-0.8, 0.8)),
    _u("cos"),
    _u("cosh"),
    _u("exp"),
    _u("expm1"),
    _u("log", (0.2, 3.0)),
    _u("log1p", (-0.7, 2.0)),
    _u("log2", (0.2, 3.0)),
    _u("log10", (0.2, 3.0)),
    _u("negative"),
    _u("positive"),
    _u("reciprocal", make=_away_from_zero),
    _u("sin"),
    _u("sinh"),
    _u("sqrt", (0.2, 3.0)),
    _u("square"),
    _u("tan", (-1.2, 1.2)),
    _u("tanh"),
    _u("real"),
    _u("conj"),
    # Piecewise-constant functions: gradient 0 away from their jumps.
    Op("floor-ceil-round-trunc-sign",
       lambda x: ag.floor(x) + ag.ceil(x) + ag.round(x) + ag.trunc(x) + ag.sign(x) + x,
       UNARY, make=lambda rng, s: [rng.integers(-3, 3, size=s[0]) + rng.uniform(0.2, 0.4, size=s[0])],
       covers=("ceil", "round", "trunc", "sign")),
    _b("add"),
    _b("subtract"),
    _b("multiply"),
    _b("divide", make=_away_from_zero),
    _b("pow", make=lambda rng, s: [rng.uniform(0.3, 2.0, size=s[0]), rng.uniform(-2, 2, size=s[1])]),
    Op("pow-scalar-exponent", lambda x: x ** 3.0 + x ** 2 + ag.pow(x, 0.5), UNARY, domain=(0.3, 2.0)),
    Op("pow-scalar-base", lambda y: 2.0 ** y, UNARY),
    Op("pow-zero-base", lambda x, y: ag.pow(x * 0.0, y) + ag.pow(x, y * 0.0), [((3,), (3,))],
       make=lambda rng, s: [rng.uniform(0.5, 1.0, size=3), rng.uniform(1.5, 2.5, size=3)]),
    _b("atan2", make=_away_from_zero),
    _b("hypot", make=_away_from_zero),
    _b("logaddexp"),
    _b("copysign", make=_away_from_zero),
    _b("maximum", make=_distinct_pair),
    _b("minimum", make=_distinct_pair),
    _b("remainder", make=lambda rng, s: [rng.uniform(0.1, 0.9, size=s[0]) + rng.integers(-3, 3, size=s[0]),
                                         rng.uniform(1.0, 2.0, size=s[1]) * 1.0]),
    Op("floor_divide", lambda x, y: ag.floor_divide(x, y) + x * y, [((2, 3), (3,))],
       make=lambda rng, s: [rng.uniform(0.1, 0.9, size=s[0]) + rng.integers(-3, 3, size=s[0]),
                            rng.uniform(1.1, 1.9, size=s[1])]),
    Op("scalar-operands", lambda x: (2.0 - x) * 3 / (1.5 + x) - 1 + x / 2.0 - 4.0 / (x + 3), UNARY,
       domain=(0.2, 2.0)),
    Op("clip-scalars", lambda x: ag.clip(x, -0.5, 0.5), [((2, 5),)],
       make=lambda rng, s: [np.array([[-1.5, -0.7, -0.2, 0.3, 0.9], [1.1, 0.1, -0.9, 0.45, -0.3]])]),
    Op("clip-arrays", lambda x, lo, hi: ag.clip(x, lo, hi), [((2, 3), (3,), (2, 1))],
       make=lambda rng, s: [np.array([[-2.0, 0.1, 2.0], [0.6, -0.6, 0.05]]),
                            np.array([-1.0, -0.3, -0.2]), np.array([[1.0], [0.5]])]),
    Op("clip-bounds-broadcast-x", lambda x, lo: ag.clip(x, lo, 0.5), [((3,), (2, 1))],
       make=lambda rng, s: [np.array([-2.0, 0.1, 2.0]), np.array([[-1.0], [0.3]])]),
    Op("clip-min-only", lambda x: ag.clip(x, min=0.1), [((2, 3),)],
       make=lambda rng, s: [np.array([[-2.0, 0.5, 2.0], [0.6, -0.6, 0.05]])]),
    Op("where", lambda x, y: ag.where(x > 0, x * y, y), [((2, 3), (2, 3)), ((2, 3), (3,)), ((), (2,))],
       make=_away_from_zero),
    Op("where-scalar", lambda x: ag.where(x > 0, x, 0.0) + ag.where(x < 0, 1.0, x * x), UNARY,
       make=_away_from_zero),
]

category("elementwise", OPS)
