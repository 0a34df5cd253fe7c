"""Table records: the fused primitives of ``agnograd.nn.functional`` (one node with its own rule,
not a composition), so they get the same finite-difference and cross-backend checks as the
standard's functions."""

from __future__ import annotations

import agnograd as ag
import agnograd.nn.functional as F

from .core import Op, category, like


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
]

category("nn", OPS)
