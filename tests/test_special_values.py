"""Gradients at kinks and edges follow the documented conventions (docs/math.md), and infinities
and NaNs propagate as IEEE arithmetic says."""

from __future__ import annotations

import numpy as np
import pytest

import agnograd as ag


def _grad(f, x):
    t = ag.tensor(np.asarray(x, dtype=np.float64), requires_grad=True)
    with np.errstate(all="ignore"):
        ag.sum(f(t)).backward()
    return t.grad.numpy()


def test_abs_and_sign_at_zero():
    np.testing.assert_array_equal(_grad(ag.abs, [-1.0, 0.0, 2.0]), [-1.0, 0.0, 1.0])
    np.testing.assert_array_equal(_grad(ag.sign, [0.0, 3.0]), [0.0, 0.0])


def test_sqrt_and_log_at_zero_are_ieee_infinities():
    g = _grad(ag.sqrt, [0.0, 4.0])
    assert g[0] == np.inf and g[1] == 0.25
    g = _grad(ag.log, [0.0, 2.0])
    assert g[0] == np.inf and g[1] == 0.5
    # 0 * inf: a gradient of zero times an infinite local derivative is NaN, as IEEE says
    g = _grad(lambda x: ag.sqrt(x) * 0.0, [0.0])
    assert np.isnan(g[0])


def test_max_and_maximum_ties_split_the_gradient():
    np.testing.assert_allclose(_grad(ag.max, [1.0, 3.0, 3.0, 2.0]), [0.0, 0.5, 0.5, 0.0])
    np.testing.assert_allclose(_grad(lambda x: ag.max(x, axis=1), [[2.0, 2.0, 2.0], [1.0, 0.0, 1.0]]),
                               [[1 / 3, 1 / 3, 1 / 3], [0.5, 0.0, 0.5]])
    x = ag.tensor([1.0, 2.0], requires_grad=True)
    y = ag.tensor([1.0, 1.0], requires_grad=True)
    ag.sum(ag.maximum(x, y)).backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.5, 1.0])
    np.testing.assert_array_equal(y.grad.numpy(), [0.5, 0.0])


def test_relu_at_zero():
    np.testing.assert_array_equal(_grad(lambda x: ag.maximum(x, 0.0), [-1.0, 0.0, 1.0]), [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(_grad(lambda x: ag.where(x > 0, x, 0.0), [-1.0, 0.0, 1.0]),
                                  [0.0, 0.0, 1.0])


def test_prod_with_zeros_is_exact():
    np.testing.assert_array_equal(_grad(ag.prod, [2.0, 0.0, 3.0]), [0.0, 6.0, 0.0])
    np.testing.assert_array_equal(_grad(ag.prod, [0.0, 0.0, 3.0]), [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(_grad(lambda x: ag.cumulative_prod(x), [2.0, 0.0, 3.0]),
                                  [1.0, 2.0 + 6.0, 0.0])


def test_norm_at_the_zero_vector_is_zero():
    np.testing.assert_array_equal(_grad(ag.linalg.vector_norm, [0.0, 0.0, 0.0]), [0.0, 0.0, 0.0])
    np.testing.assert_allclose(_grad(ag.linalg.vector_norm, [3.0, 4.0]), [0.6, 0.8])


def test_clip_passes_the_gradient_on_the_closed_interval():
    np.testing.assert_array_equal(_grad(lambda x: ag.clip(x, -1.0, 1.0), [-2.0, -1.0, 0.0, 1.0, 2.0]),
                                  [0.0, 1.0, 1.0, 1.0, 0.0])


def test_std_of_a_constant_has_zero_gradient():
    np.testing.assert_array_equal(_grad(ag.std, [2.0, 2.0, 2.0]), [0.0, 0.0, 0.0])


def test_cholesky_of_a_badly_conditioned_matrix_stays_finite_and_accurate():
    # condition number ~1e8: the gradient is large but finite, and matches finite differences
    # of a smooth function of it to the accuracy the conditioning allows.
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))
    a = q @ np.diag([1.0, 1e-4, 1e-8]) @ q.T
    a = (a + a.T) / 2
    t = ag.tensor(a, requires_grad=True)
    ag.sum(ag.linalg.cholesky(t)).backward()
    g = t.grad.numpy()
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g, g.T, rtol=1e-6, atol=1e-6 * np.abs(g).max())


def test_infinities_and_nans_propagate():
    g = _grad(lambda x: x * 2.0, [np.inf, np.nan, 1.0])
    np.testing.assert_array_equal(g, [2.0, 2.0, 2.0])  # d(2x)/dx does not depend on x
    g = _grad(ag.exp, [np.inf, -np.inf, np.nan])
    assert g[0] == np.inf and g[1] == 0.0 and np.isnan(g[2])
    g = _grad(lambda x: x * x, [np.inf])
    assert g[0] == np.inf


@pytest.mark.parametrize("op", [ag.floor, ag.ceil, ag.round, ag.trunc])
def test_piecewise_constant_functions_have_zero_gradient(op):
    np.testing.assert_array_equal(_grad(op, [0.5, 1.0, -2.5]), [0.0, 0.0, 0.0])
