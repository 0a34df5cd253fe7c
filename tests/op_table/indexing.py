"""Table records: indexing (getitem, setitem, take, take_along_axis)."""

from __future__ import annotations

import agnograd as ag

from .core import Op, category, like


def _set_slice(x, v):
    y = x * 1.0
    y[1:, 0] = v * 2.0  # value broadcast over the selected (1,) column
    return y * y


def _set_mask(x):
    y = x * 1.0
    y[x > 0] = 0.5
    return y * x


def _set_scalar_index(x, v):
    y = ag.exp(x)
    y[0, ...] = v
    return y


OPS = [
    Op("getitem-int", lambda x: x[1, ...] + x[2, 1], [((3, 4),)]),
    Op("getitem-slices", lambda x: x[:, 1:3], [((3, 4),)]),
    Op("getitem-step-newaxis", lambda x: x[..., None, ::2], [((2, 5),)]),
    Op("getitem-negative-ellipsis", lambda x: x[-1, ...], [((3, 2, 2),)]),
    Op("getitem-0d", lambda x: x[()] * x[...], [((),)]),
    Op("getitem-mask", lambda x: x[x > 0], [((3, 4),)],
       vmap="a boolean mask of a batched value selects a different number of elements per example"),
    Op("getitem-int-array-repeats", lambda x: x[like(x, [0, 2, 0, 0])], [((3,),)]),
    Op("getitem-int-arrays-2d", lambda x: x[like(x, [0, 2, 2]), like(x, [1, 0, 1])], [((3, 2),)]),
    Op("getitem-tensor-int", lambda x: x[like(x, 1), like(x, 0)] * x[like(x, [2, 1]), like(x, 1)],
       [((3, 2),)]),
    Op("setitem-slice", _set_slice, [((3, 2), (1,))]),
    Op("setitem-mask", _set_mask, [((3, 4),)]),
    Op("setitem-index", _set_scalar_index, [((2, 3), (3,))]),
    Op("take", lambda x: ag.take(x, like(x, [2, 0, 2]), axis=1), [((2, 3),)]),
    Op("take-1d", lambda x: ag.take(x, like(x, [3, 3, 1, 0, 3])), [((4,),)]),
    Op("take-axis0", lambda x: ag.take(x, like(x, [1, 1]), axis=0), [((3, 2, 2),)]),
    Op("take_along_axis", lambda x: ag.take_along_axis(x, like(x, [[0, 0, 2], [1, 2, 2]]), axis=1),
       [((2, 3),)]),
    Op("take_along_axis-axis0", lambda x: ag.take_along_axis(x, like(x, [[2, 0, 1, 1]]), axis=0),
       [((3, 4),)]),
]

category("indexing", OPS)
