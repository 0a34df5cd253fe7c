"""Table records: ag.special (beyond the standard).

NumPy computes with SciPy and array_api_strict with agnograd's standard-op approximations, so
the float64 cross-backend tolerances (``f64_rtol``) and the finite-difference tolerances on the
strict backend match the approximations' documented accuracy (see agnograd/_ops/special.py;
measured in tests/test_special.py)."""

from __future__ import annotations

import agnograd as ag

from .core import UNARY, Op, category

S = ag.special
# erf-family fits: ~1.2e-7 relative in value; finite differences of the fit see its error too
FIT = dict(rtol=1e-5, atol=1e-7, f64_rtol=1e-6, f64_atol=1e-7)
SERIES = dict(rtol=1e-6, atol=1e-8, f64_rtol=1e-9, f64_atol=1e-11)

OPS = [
    Op("special.erf", S.erf, UNARY, **FIT),
    Op("special.erfc", S.erfc, UNARY, **FIT),
    Op("special.erfinv", S.erfinv, UNARY, domain=(-0.9, 0.9), **FIT),
    Op("special.lgamma", S.lgamma, UNARY, domain=(0.2, 4.0), **SERIES),
    Op("special.lgamma-negative", S.lgamma, UNARY, domain=(-2.9, -2.1), **SERIES),
    Op("special.digamma", S.digamma, UNARY, domain=(0.2, 4.0), **SERIES),
    Op("special.polygamma-1", lambda x: S.polygamma(1, x), UNARY, domain=(0.3, 4.0), **SERIES),
    Op("special.polygamma-2", lambda x: S.polygamma(2, x), UNARY, domain=(0.6, 3.0), **SERIES),
    # below 0.5 the approximation reflects for n <= 2 only: ψ⁽³⁾ there is NaN, so first order
    Op("special.polygamma-1-negative", lambda x: S.polygamma(1, x), UNARY, domain=(-1.8, -1.2),
       order=1, **SERIES),
    Op("special.log_ndtr", S.log_ndtr, UNARY, domain=(-8.0, 3.0), **FIT),
    Op("special.logsumexp", lambda x: S.logsumexp(x), UNARY),
    Op("special.logsumexp-axis-keepdims", lambda x: S.logsumexp(x, axis=1, keepdims=True),
       [((2, 3),)]),
    Op("special.softmax", lambda x: S.softmax(x), UNARY),
    Op("special.softmax-axis0", lambda x: S.softmax(x, axis=0), [((3, 2),)]),
    Op("special.log_softmax", lambda x: S.log_softmax(x, axis=-1), [((2, 3),), ((4,),)]),
    Op("special.xlogy", S.xlogy, [((2, 3), (2, 3)), ((2, 3), (3,)), ((), (2,))], domain=(0.3, 2.0)),
    Op("special.expit", S.expit, UNARY, domain=(-6.0, 6.0)),
    Op("special.logit", S.logit, UNARY, domain=(0.1, 0.9)),
]

category("special", OPS)
