"""Table records: statistical functions and logsumexp."""

from __future__ import annotations

import numpy as np

import agnograd as ag

from .core import Op, category, distinct

RED = [((),), ((3,),), ((2, 3, 4),)]  # reductions over all axes
AX = [((2, 3, 4),)]  # reductions over chosen axes




def _with_zeros(rng, shapes):
    x = rng.uniform(0.5, 1.5, size=shapes[0]) * rng.choice([-1.0, 1.0], size=shapes[0])
    flat = x.reshape(-1)
    if flat.size >= 3:
        flat[1] = 0.0
    return [x]


OPS = [
    Op("sum", lambda x: ag.sum(x), RED),
    Op("sum-axis", lambda x: ag.sum(x, axis=1), AX),
    Op("sum-axes-keepdims", lambda x: ag.sum(x, axis=(0, 2), keepdims=True), AX),
    Op("sum-negative-axis", lambda x: ag.sum(x, axis=-1), AX),
    Op("sum-dtype", lambda x: ag.sum(x, axis=0, dtype=ag.float64), AX),
    Op("mean", lambda x: ag.mean(x), RED),
    Op("mean-axis", lambda x: ag.mean(x, axis=(0, 1)), AX),
    Op("prod", lambda x: ag.prod(x), [((),), ((4,),), ((2, 3),)], domain=(0.5, 1.5)),
    Op("prod-axis", lambda x: ag.prod(x, axis=1, keepdims=True), AX, domain=(0.5, 1.5)),
    Op("prod-one-zero", lambda x: ag.prod(x, axis=-1), [((2, 4),)], make=_with_zeros),
    Op("prod-two-zeros", lambda x: ag.prod(x), [((4,),)],
       make=lambda rng, s: [np.array([0.0, 1.5, 0.0, 2.0])], order=1),
    Op("max", lambda x: ag.max(x), RED, make=distinct),
    Op("max-axis", lambda x: ag.max(x, axis=1), AX, make=distinct),
    Op("min", lambda x: ag.min(x), RED, make=distinct),
    Op("min-axes-keepdims", lambda x: ag.min(x, axis=(0, 2), keepdims=True), AX, make=distinct),
    Op("var", lambda x: ag.var(x), [((3,),), ((2, 3, 4),)]),
    Op("var-axis-correction", lambda x: ag.var(x, axis=1, correction=1), AX),
    Op("std", lambda x: ag.std(x), [((3,),), ((2, 3, 4),)]),
    Op("std-axis-correction", lambda x: ag.std(x, axis=(0, 2), correction=1, keepdims=True), AX),
    Op("cumulative_sum", lambda x: ag.cumulative_sum(x), [((5,),)]),
    Op("cumulative_sum-axis-initial",
       lambda x: ag.cumulative_sum(x, axis=1, include_initial=True), [((2, 4),)]),
    Op("cumulative_prod", lambda x: ag.cumulative_prod(x), [((5,),)], domain=(0.5, 1.5)),
    # order=1: the rule's value is exact at zeros, but its own derivative after the first zero
    # is not (it treats the zero as a constant); see docs/math.md.
    Op("cumulative_prod-zeros",
       lambda x: ag.cumulative_prod(x, axis=1),
       [((3, 5),)], make=lambda rng, s: [np.array([[0.5, 0.0, 1.2, 0.0, 0.7],
                                                   [1.1, 0.9, 0.0, 1.3, 0.8],
                                                   [0.0, 1.4, 0.6, 1.0, 1.2]])], order=1),
    Op("cumulative_prod-axis-initial",
       lambda x: ag.cumulative_prod(x, axis=0, include_initial=True), [((3, 2),)], domain=(0.5, 1.5)),
    Op("logsumexp", lambda x: ag.logsumexp(x), RED),
    Op("logsumexp-axis", lambda x: ag.logsumexp(x * 10.0, axis=1), AX, atol=1e-6),
]

category("statistics", OPS)
