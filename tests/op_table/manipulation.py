"""Table records: manipulation functions."""

from __future__ import annotations

import agnograd as ag

from .core import Op, category, like

OPS = [
    Op("reshape", lambda x: ag.reshape(x, (4, -1)) * like(x, [[1.0, 2.0, 3.0]]), [((2, 2, 3),)]),
    Op("reshape-0d", lambda x: ag.reshape(x, (1, 1)), [((),)]),
    Op("permute_dims", lambda x: ag.permute_dims(x, (2, 0, 1)), [((2, 3, 4),)]),
    Op("permute_dims-negative", lambda x: ag.permute_dims(x, (-1, 0, -2)), [((2, 3, 4),)]),
    Op("T", lambda x: x.T, [((2, 3),)]),
    Op("broadcast_to", lambda x: ag.broadcast_to(x, (2, 3, 4)), [((3, 1),), ((),), ((1, 4),)]),
    Op("broadcast_arrays", lambda x, y: ag.sum(ag.stack(ag.broadcast_arrays(x, y)), axis=0) * y,
       [((2, 1), (3,))]),
    Op("concat", lambda x, y: ag.concat([x, y, x], axis=1), [((2, 3), (2, 1))]),
    Op("concat-none", lambda x, y: ag.concat([x, y], axis=None), [((2, 3), (4,))]),
    Op("concat-negative-axis", lambda x, y: ag.concat((x, y), axis=-2), [((1, 3), (2, 3))]),
    Op("stack", lambda x, y: ag.stack([x, y, x], axis=1), [((2, 3), (2, 3))]),
    Op("stack-0d", lambda x, y: ag.stack([x, y, x]), [((), ())]),
    Op("unstack", lambda x: ag.unstack(x, axis=1)[0] * 2.0 + ag.unstack(x, axis=1)[2], [((2, 3),)]),
    Op("unstack-one-used", lambda x: ag.unstack(x)[1], [((3, 2),)]),
    Op("expand_dims", lambda x: ag.expand_dims(x, axis=-1), [((2, 3),), ((),)]),
    # 2025.12: a tuple of positions in the result (negative ones count from its end)
    Op("expand_dims-tuple", lambda x: ag.expand_dims(x, axis=(-1, 0, 2)) * like(x, [1.0, 2.0, 3.0]),
       [((2, 3),)]),
    Op("expand_dims-tuple-0d", lambda x: ag.expand_dims(x, axis=(1, 0)), [((),)]),
    Op("squeeze", lambda x: ag.squeeze(x, axis=(0, 2)), [((1, 3, 1),)]),
    Op("flip", lambda x: ag.flip(x, axis=0) * like(x, [1.0, 2.0, 3.0]), [((2, 3),)]),
    Op("flip-all", lambda x: ag.flip(x), [((2, 3),)]),
    Op("roll", lambda x: ag.roll(x, 2, axis=1), [((2, 4),)]),
    Op("roll-flat", lambda x: ag.roll(x, -1), [((2, 3),)]),
    Op("roll-multi", lambda x: ag.roll(x, (1, 2), axis=(0, 1)), [((3, 4),)]),
    Op("moveaxis", lambda x: ag.moveaxis(x, 0, -1), [((2, 3, 4),)]),
    Op("repeat-int", lambda x: ag.repeat(x, 3, axis=1), [((2, 3),)]),
    Op("repeat-flat", lambda x: ag.repeat(x, 2), [((2, 2),)]),
    Op("repeat-array", lambda x: ag.repeat(x, like(x, [2, 0, 1]), axis=0), [((3, 2),)]),
    Op("tile", lambda x: ag.tile(x, (2, 3)), [((2, 2),), ((3,),)]),
    Op("tile-more-reps", lambda x: ag.tile(x, (2, 1, 2)), [((2, 3),)]),
]

category("manipulation", OPS)
