"""Special functions over agnograd Tensors (``ag.special.erf``, ``ag.special.lgamma``, ...),
**beyond the Array API standard**, with SciPy's and JAX's names and signatures.

Each is differentiable (to any order) on every backend. The forward is the backend's own
implementation where it has one (SciPy for NumPy, installed with the ``special`` extra;
``cupyx.scipy.special``; ``torch.special``; ``jax.scipy.special``), and a standard-op
approximation of documented accuracy elsewhere (array_api_strict, Dask, NumPy without SciPy);
see docs/special.md. The functions live in ``agnograd/_ops/special.py`` next to their rules.
"""

from __future__ import annotations

from ._ops.special import (
    digamma,
    erf,
    erfc,
    erfinv,
    expit,
    lgamma,
    log_ndtr,
    log_softmax,
    logit,
    logsumexp,
    polygamma,
    softmax,
    xlogy,
)

__all__ = [
    "digamma",
    "erf",
    "erfc",
    "erfinv",
    "expit",
    "lgamma",
    "log_ndtr",
    "log_softmax",
    "logit",
    "logsumexp",
    "polygamma",
    "softmax",
    "xlogy",
]
