"""Linear-algebra behaviour the op table cannot express: non-differentiable outputs,
unsupported gradients, mixed dtypes."""

from __future__ import annotations

import numpy as np
import pytest

import agnograd as ag

from .conftest import CPU_BACKENDS


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_non_differentiable_outputs_never_require_grad(backend):
    a = ag.tensor(np.array([[2.0, 1.0], [0.5, 3.0]]), backend=backend, requires_grad=True)
    sign, logabsdet = ag.linalg.slogdet(a)
    assert not sign.requires_grad and logabsdet.requires_grad
    assert not ag.linalg.matrix_rank(a).requires_grad
    logabsdet.backward()
    np.testing.assert_allclose(a.grad.numpy(), np.linalg.inv(a.numpy()).T, rtol=1e-12)


def test_complete_qr_of_a_tall_matrix_refuses_a_gradient_clearly():
    a = ag.tensor(np.random.default_rng(0).normal(size=(4, 2)), requires_grad=True)
    q, r = ag.linalg.qr(a, mode="complete")
    with pytest.raises(NotImplementedError, match="complete"):
        ag.sum(q).backward()


def test_matmul_of_mixed_precision_keeps_each_gradient_dtype():
    a = ag.tensor(np.ones((2, 3), dtype=np.float32), requires_grad=True)
    b = ag.tensor(np.ones((3, 2), dtype=np.float64), requires_grad=True)
    y = a @ b
    assert y.dtype == ag.float64
    ag.sum(y).backward()
    assert a.grad.dtype == ag.float32 and b.grad.dtype == ag.float64
    np.testing.assert_allclose(a.grad.numpy(), np.full((2, 3), 2.0))


def test_matmul_shape_mismatch_names_the_shapes():
    a = ag.tensor(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 3\)"):
        a @ a
