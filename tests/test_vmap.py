"""``ag.vmap``: every op-table record batched, against a loop over the examples.

For every record of ``tests/op_table``, on NumPy and array_api_strict, with the batch drawn on
a different axis per input (``0``, the last, or ``None`` -- shared by every example):

* ``vmap(f)`` equals the stack of ``f`` on each example;
* ``vmap(grad(sum f))`` -- per-example gradients, the VJP rules batched -- equals the loop;

and in every call a :class:`~agnograd.VmapFallbackWarning` (a namespace function with no batching
rule) is an error, so a public op that lacks a rule fails here. Then the transform itself:
in_axes/out_axes prefixes, nesting, composition with every other transform, the errors.
"""

from __future__ import annotations

import warnings
import zlib

import numpy as np
import pytest

import agnograd as ag

from .conftest import CPU_BACKENDS
from .op_table import OPS, cases_of
from .op_table.core import draw

CASES = cases_of(OPS)
IDS = [f"{op.name}-{'x'.join(str(s) for s in shapes) or 'scalar'}" for op, shapes in CASES]
N = 3  # examples


def _t(a, backend):
    return ag.tensor(a, backend=backend, dtype=ag.complex128 if np.iscomplexobj(a) else ag.float64)


def _np(y):
    return np.asarray(y.numpy() if type(y) is ag.Tensor else y)


def _batch(op, shapes):
    """Per input: the examples (N of them, or one shared) and its in_axis."""
    seed = zlib.crc32(f"vmap{op.name}{shapes}".encode())
    rng = np.random.default_rng(seed)
    examples = [draw(op, shapes, seed + k) for k in range(N)]
    axes = []
    for i, s in enumerate(shapes):
        choice = (seed >> (2 * i)) % 4
        if i == 0 and choice == 3:
            choice = 0  # the first input is always mapped, so the batch is never empty
        axes.append(None if choice == 3 else (0 if choice in (0, 1) or not s else -1))
    del rng
    stacked = []
    for i, a in enumerate(axes):
        if a is None:
            stacked.append(examples[0][i])
        else:
            stacked.append(np.stack([ex[i] for ex in examples], axis=a))
    per = [[examples[k][i] if axes[i] is not None else examples[0][i] for i in range(len(shapes))]
           for k in range(N)]
    return stacked, axes, per


def _real(y):
    return ag.real(y) if y.dtype in (ag.complex64, ag.complex128) else y


@pytest.fixture(autouse=False)
def strict_rules():
    with warnings.catch_warnings():
        warnings.simplefilter("error", ag.VmapFallbackWarning)
        yield


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize(("op", "shapes"), CASES, ids=IDS)
def test_vmap_of_every_op_equals_the_loop(op, shapes, backend, strict_rules):
    if backend in op.skip:
        pytest.skip(op.skip[backend])
    stacked, axes, per = _batch(op, shapes)
    xs = [_t(a, backend) for a in stacked]
    if op.vmap:
        with pytest.raises(ag.VmapError, match="ag.vmap"):
            ag.vmap(op.fn, in_axes=tuple(axes))(*xs)
        return
    y = ag.vmap(op.fn, in_axes=tuple(axes))(*xs)
    ref = np.stack([_np(op.fn(*[_t(a, backend) for a in ex])) for ex in per])
    np.testing.assert_allclose(_np(y), ref, rtol=1e-10, atol=1e-12,
                               err_msg=f"vmap of {op.name} vs the loop ({backend})")


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize(("op", "shapes"), CASES, ids=IDS)
def test_vmap_of_grad_of_every_op_equals_the_loop(op, shapes, backend, strict_rules):
    if backend in op.skip:
        pytest.skip(op.skip[backend])
    if op.vmap:
        pytest.skip(f"vmap refuses it: {op.vmap}")
    stacked, axes, per = _batch(op, shapes)
    nums = tuple(range(len(shapes)))

    def loss(*xs):
        return ag.sum(_real(op.fn(*xs)))

    g = ag.grad(loss, argnums=nums)
    got = ag.vmap(g, in_axes=tuple(axes))(*[_t(a, backend) for a in stacked])
    refs = [g(*[_t(a, backend) for a in ex]) for ex in per]
    for i in range(len(shapes)):
        ref = np.stack([_np(r[i]) for r in refs])
        np.testing.assert_allclose(_np(got[i]), ref, rtol=1e-9, atol=1e-11,
                                   err_msg=f"vmap(grad) of {op.name}, input {i} ({backend})")
