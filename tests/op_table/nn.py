"""Table records: ``agnograd.nn.functional`` -- its fused primitives (one node with its own rule,
not a composition: cross_entropy) and its compositions of standard ops (activations, the other
losses, dropout with a seed), so they get the same finite-difference and cross-backend checks
as the standard's functions."""

from __future__ import annotations

import agnograd as ag
import agnograd.nn.functional as F

from .core import Op, category, like


def _away_from_zero(rng, shapes):  # relu: finite differences must not cross its kink
    return [rng.uniform(0.2, 2.0, size=s) * rng.choice([-1.0, 1.0], size=s) for s in shapes]


def _labels(x):
    return like(x, [0, 2, 1, 2], dtype=ag.int64)


OPS = [
    Op("nn.cross_entropy-probs-mean", lambda x, p: F.cross_entropy(x, p), [((4, 3), (4, 3))]),
    Op("nn.cross_entropy-probs-sum", lambda x, p: F.cross_entropy(x * 3.0, p, reduction="sum"),
       [((4, 3), (4, 3))]),
    Op("nn.cross_entropy-probs-none", lambda x, p: F.cross_entropy(x, p, reduction="none"),
       [((4, 3), (4, 3)), ((1, 1), (1, 1))]),
    Op("nn.cross_entropy-labels-mean", lambda x: F.cross_entropy(x, _labels(x)), [((4, 3),)]),
    Op("nn.cross_entropy-labels-none",
       lambda x: F.cross_entropy(x, _labels(x), reduction="none"), [((4, 3),)]),
    Op("nn.relu", F.relu, [((5,),), ((2, 3),)], make=_away_from_zero),
    Op("nn.tanh", F.tanh, [((5,),)]),
    Op("nn.sigmoid", F.sigmoid, [((5,),), ((),)], domain=(-6.0, 6.0)),
    Op("nn.softplus", F.softplus, [((5,),)], domain=(-6.0, 6.0)),
    Op("nn.gelu", F.gelu, [((5,),)]),
    Op("nn.gelu-tanh", lambda x: F.gelu(x, approximate="tanh"), [((5,),)]),
    Op("nn.softmax", F.softmax, [((4, 3),), ((3,),)]),
    Op("nn.softmax-axis0", lambda x: F.softmax(x, axis=0), [((4, 3),)]),
    Op("nn.log_softmax", F.log_softmax, [((4, 3),), ((3,),)]),
    Op("nn.mse_loss", F.mse_loss, [((4, 3), (4, 3))]),
    Op("nn.mse_loss-sum-none", lambda x, t: F.mse_loss(x, t, reduction="sum")
       + ag.sum(F.mse_loss(x, t, reduction="none") * x), [((4, 3), (4, 3))]),
    Op("nn.binary_cross_entropy_with_logits",
       lambda x, t: F.binary_cross_entropy_with_logits(x, 0.5 * ag.tanh(t) + 0.5), [((4, 3), (4, 3))]),
    Op("nn.binary_cross_entropy_with_logits-none", lambda x: F.binary_cross_entropy_with_logits(
        x, like(x, [[0.0, 1.0, 0.3]] * 4), reduction="none"), [((4, 3),)]),
    # a fixed seed draws the same mask on every call and every backend
    Op("nn.dropout", lambda x: F.dropout(x, 0.3, seed=0), [((4, 5),)]),
]

category("nn", OPS)
