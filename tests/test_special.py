"""ag.special: the standard-op approximations against SciPy over wide ranges (the accuracy the
docs state), NumPy without SciPy, agreement with torch.special (values and gradients), and
second derivatives through the polygamma chain."""

from __future__ import annotations

import numpy as np
import pytest

import agnograd as ag

sc = pytest.importorskip("scipy.special")
S = ag.special


def _strict(f, x):
    return f(ag.tensor(x, backend="array_api_strict")).numpy()


def _away_from_poles(x):
    return x[np.abs(x - np.round(x)) > 1e-3]


# (name, function, SciPy reference, inputs, bound on the max error, relative?)
ACCURACY = [
    ("erf", S.erf, sc.erf, np.linspace(-6, 6, 20001), 1.2e-7, True),
    ("erfc", S.erfc, sc.erfc, np.linspace(-6, 26, 20001), 1.2e-7, True),
    ("erfinv", S.erfinv, sc.erfinv, np.linspace(-0.999999, 0.999999, 20001), 1.2e-7, True),
    ("erfinv-tail", S.erfinv, sc.erfinv, 1 - np.logspace(-15, -1, 2001), 1.2e-7, True),
    ("lgamma", S.lgamma, sc.gammaln, np.linspace(-9.95, 30, 20001), 1e-11, False),
    ("lgamma-large", S.lgamma, sc.gammaln, np.linspace(30, 1e6, 2001), 1e-13, True),
    ("digamma", S.digamma, sc.psi, _away_from_poles(np.linspace(-9.95, 30, 20001)), 1e-10, True),
    ("trigamma", lambda t: S.polygamma(1, t), lambda x: sc.polygamma(1, x),
     _away_from_poles(np.linspace(-9.95, 30, 20001)), 1e-10, True),
    ("polygamma2", lambda t: S.polygamma(2, t), lambda x: sc.polygamma(2, x),
     _away_from_poles(np.linspace(-9.95, 30, 20001)), 1e-10, True),
    ("polygamma3", lambda t: S.polygamma(3, t), lambda x: sc.polygamma(3, x),
     np.linspace(0.5, 30, 2001), 1e-10, True),
    ("log_ndtr", S.log_ndtr, sc.log_ndtr, np.linspace(-40, 8, 20001), 2e-7, True),
    ("expit", S.expit, sc.expit, np.linspace(-700, 700, 20001), 1e-14, True),
    ("logit", S.logit, sc.logit, np.linspace(1e-6, 1 - 1e-6, 20001), 1e-12, True),
]


@pytest.mark.parametrize(("name", "f", "ref", "x", "bound", "relative"), ACCURACY,
                         ids=[a[0] for a in ACCURACY])
def test_approximations_against_scipy(name, f, ref, x, bound, relative):
    got, want = _strict(f, x), ref(x)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    m = np.isfinite(want)
    err = np.abs(got[m] - want[m])
    if relative:
        err = err / np.where(want[m] == 0, 1.0, np.abs(want[m]))
    assert err.max() < bound, f"{name}: max error {err.max():.3g} at x = {x[m][err.argmax()]}"


def test_edges():
    x = np.array([-1.0, 1.0, 1.5, -0.0])
    np.testing.assert_array_equal(_strict(S.erfinv, x)[:3], [-np.inf, np.inf, np.nan])
    assert _strict(S.lgamma, np.array([0.0, -2.0])).tolist() == [np.inf, np.inf]
    assert np.isnan(_strict(S.digamma, np.array([-1.0, -3.0]))).all()
    assert _strict(lambda t: S.polygamma(1, t), np.array([-1.0, 0.0])).tolist() == [np.inf, np.inf]
    np.testing.assert_allclose(_strict(S.log_ndtr, np.array([-1e3])), sc.log_ndtr(-1e3), rtol=1e-12)
    xs = ag.tensor([0.0, 0.0, 2.0], backend="array_api_strict", requires_grad=True)
    ys = ag.tensor([0.0, 3.0, 3.0], backend="array_api_strict", requires_grad=True)
    out = S.xlogy(xs, ys)
    np.testing.assert_array_equal(out.numpy(), [0.0, 0.0, 2 * np.log(3.0)])
    ag.sum(out).backward()
    np.testing.assert_allclose(xs.grad.numpy(), [0.0, np.log(3.0), np.log(3.0)])  # as torch
    np.testing.assert_allclose(ys.grad.numpy(), [0.0, 0.0, 2 / 3])
    with pytest.raises(TypeError, match=r"special.erf: needs a real floating.*int64"):
        S.erf(ag.tensor([1, 2]))
    with pytest.raises(TypeError, match="non-negative Python int"):
        S.polygamma(-1, ag.tensor([1.0]))


def test_numpy_without_scipy_uses_the_approximations(monkeypatch):
    b = ag.get_backend("numpy")
    monkeypatch.setattr(type(b), "special", property(lambda self: None))
    x = np.linspace(-3, 3, 101)
    np.testing.assert_allclose(S.erf(ag.tensor(x)).numpy(), sc.erf(x), rtol=1.2e-7, atol=1e-15)
    np.testing.assert_allclose(S.lgamma(ag.tensor(x + 3.5)).numpy(), sc.gammaln(x + 3.5), rtol=1e-12)


def test_numpy_uses_scipy():
    assert ag.get_backend("numpy").special is not None
    x = np.linspace(-3, 3, 11)
    np.testing.assert_array_equal(S.erf(ag.tensor(x)).numpy(), sc.erf(x))


@pytest.mark.parametrize("backend", ["numpy", "array_api_strict"])
def test_second_order_through_the_polygamma_chain(backend):
    x = np.array([0.7, 1.9, 3.3])
    h = ag.grad(lambda t: ag.sum(ag.grad(lambda u: ag.sum(S.lgamma(u)))(t)))(ag.tensor(x, backend=backend))
    np.testing.assert_allclose(h.numpy(), sc.polygamma(1, x), rtol=1e-10)
    d3 = ag.grad(lambda t: ag.sum(ag.grad(lambda u: ag.sum(S.digamma(u)))(t)))(ag.tensor(x, backend=backend))
    np.testing.assert_allclose(d3.numpy(), sc.polygamma(2, x), rtol=1e-10)


TORCH = [
    ("erf", S.erf, "erf", np.linspace(-3, 3, 13)),
    ("erfc", S.erfc, "erfc", np.linspace(-3, 3, 13)),
    ("erfinv", S.erfinv, "erfinv", np.linspace(-0.95, 0.95, 13)),
    ("lgamma", S.lgamma, "gammaln", np.linspace(0.1, 6, 13)),
    ("digamma", S.digamma, "digamma", np.linspace(0.1, 6, 13)),
    ("log_ndtr", S.log_ndtr, "log_ndtr", np.linspace(-10, 4, 13)),
    ("expit", S.expit, "expit", np.linspace(-10, 10, 13)),
    ("logit", S.logit, "logit", np.linspace(0.05, 0.95, 13)),
]


@pytest.mark.parametrize(("name", "f", "tname", "x"), TORCH, ids=[t[0] for t in TORCH])
@pytest.mark.parametrize("backend", ["numpy", "array_api_strict", "torch"])
def test_agrees_with_torch_special(name, f, tname, x, backend):
    torch = pytest.importorskip("torch")
    tx = torch.tensor(x, requires_grad=True)
    ty = getattr(torch.special, tname)(tx)
    ty.sum().backward()
    t = ag.tensor(x, backend=backend, requires_grad=True)
    y = f(t)
    ag.sum(y).backward()
    # torch's own trigamma (digamma's gradient) is good to ~5e-10
    tol = 1e-6 if backend == "array_api_strict" else 1e-8
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(t.grad.numpy(), tx.grad.numpy(), rtol=tol, atol=tol)


def test_softmax_family_and_xlogy_agree_with_torch_and_scipy():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).standard_normal((3, 4))
    np.testing.assert_allclose(S.softmax(x).numpy() if hasattr(S.softmax(x), "numpy") else 0,
                               sc.softmax(x), rtol=1e-12)
    np.testing.assert_allclose(S.log_softmax(ag.tensor(x), axis=1).numpy(), sc.log_softmax(x, axis=1))
    np.testing.assert_allclose(S.logsumexp(ag.tensor(x), axis=0).numpy(), sc.logsumexp(x, axis=0))
    a, b = np.abs(x) + 0.1, np.abs(x[0]) + 0.5
    ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    torch.special.xlogy(ta, tb).sum().backward()
    ga, gb = ag.grad(lambda u, v: ag.sum(S.xlogy(u, v)), argnums=(0, 1))(a, b)
    np.testing.assert_allclose(ga, ta.grad.numpy())
    np.testing.assert_allclose(gb, tb.grad.numpy())
