"""Table records: the differentiable creation, data type, utility and sorting functions
(``astype``, ``asarray``, ``tril``/``triu``, ``meshgrid``, ``diff``, ``sort``)."""

from __future__ import annotations

import agnograd as ag

from .core import Op, category, distinct


def _roundtrip(x):
    return ag.astype(ag.astype(x, ag.float32), ag.float64)


# float32 rounding spoils central differences (eps = 1e-6) unless a float32 ulp of the values
# is far below eps: near 0 (|x| <= 1e-3) the ulp is ~1e-10, so the error stays ~1e-4 relative.
_SMALL = (-1e-3, 1e-3)

OPS = [
    Op("misc.astype-roundtrip", _roundtrip, [((),), ((2, 3),)], domain=_SMALL, rtol=1e-3,
       atol=1e-6, order=1),
    Op("misc.astype-float32-math",
       lambda x: ag.astype(ag.astype(x, ag.float32) * 3.0 - ag.astype(x, ag.float32), ag.float64)
       * x, [((3, 2),)], domain=_SMALL, rtol=1e-3, atol=1e-6, order=1),
    Op("misc.astype-same-dtype", lambda x: ag.astype(x, x.dtype) * x, [((2, 3),)]),
    Op("misc.asarray-tensor", lambda x: ag.asarray(x) * ag.asarray(x, copy=True), [((2, 3),)]),
    Op("misc.asarray-convert", lambda x: ag.asarray(ag.asarray(x, dtype=ag.float32),
                                                    dtype=ag.float64),
       [((4,),)], domain=_SMALL, rtol=1e-3, atol=1e-6, order=1),
    Op("misc.tril", lambda x: ag.tril(x) * x, [((3, 3),), ((3, 4),), ((2, 3, 3),)]),
    Op("misc.tril-k1", lambda x: ag.tril(x, k=1), [((3, 4),)]),
    Op("misc.tril-k-1", lambda x: ag.tril(x, k=-1) * x, [((4, 3),), ((2, 3, 3),)]),
    Op("misc.triu", lambda x: ag.triu(x) * x, [((3, 3),), ((3, 4),), ((2, 3, 3),)]),
    Op("misc.triu-k2", lambda x: ag.triu(x, k=2), [((3, 4),)]),
    Op("misc.triu-k-1", lambda x: ag.triu(x, k=-1) * x, [((4, 3),)]),
    Op("misc.meshgrid-xy", lambda x, y: ag.meshgrid(x, y)[0] * ag.meshgrid(x, y)[1] * 2.0
       + ag.meshgrid(x, y)[0], [((3,), (2,))]),
    Op("misc.meshgrid-ij-3", lambda x, y, z: ag.sum(ag.stack(ag.meshgrid(x, y, z, indexing="ij"))
                                                     * ag.meshgrid(x, y, z, indexing="ij")[2],
                                                     axis=0),
       [((2,), (3,), (2,))]),
    Op("misc.meshgrid-one-used", lambda x, y: ag.meshgrid(x, y, indexing="ij")[1] * 3.0,
       [((2,), (4,))]),
    Op("misc.diff", lambda x: ag.diff(x) * x[..., 1:], [((5,),), ((3, 4),)]),
    Op("misc.diff-n2-axis0", lambda x: ag.diff(x, axis=0, n=2), [((4, 3),)]),
    Op("misc.diff-n3-squared", lambda x: ag.diff(x * x, n=3), [((6,),)]),
    Op("misc.diff-n0", lambda x: ag.diff(x, n=0) * x, [((3,),)]),
    Op("misc.diff-prepend-append", lambda x, p, a: ag.diff(x, axis=1, prepend=p, append=a) * 1.5,
       [((2, 3), (2, 1), (2, 2))]),
    Op("misc.diff-append-n2", lambda x, a: ag.diff(x, axis=0, n=2, append=a) * x[:1, ...],
       [((3, 2), (1, 2))]),
    Op("misc.diff-scalar-prepend", lambda x: ag.diff(x, prepend=0.5, append=-1.0), [((4,),)]),
    Op("misc.sort", lambda x: ag.sort(x), [((5,),), ((3, 4),)], make=distinct),
    Op("misc.sort-descending", lambda x: ag.sort(x, descending=True), [((5,),), ((3, 4),)],
       make=distinct),
    Op("misc.sort-axis0", lambda x: ag.sort(x, axis=0), [((4, 3),)], make=distinct),
    Op("misc.sort-axis0-descending", lambda x: ag.sort(x, axis=0, descending=True) * x,
       [((3, 2),)], make=distinct),
    Op("misc.sort-axis1", lambda x: ag.sort(x, axis=1, stable=False), [((2, 3, 2),)],
       make=distinct),
    Op("misc.sort-exp", lambda x: ag.sort(ag.exp(x), axis=-1) * ag.sort(x, axis=-1),
       [((2, 4),)], make=distinct),
]

category("misc", OPS)
