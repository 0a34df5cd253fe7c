"""Functions at their edges (issue 22, class 8): ``special.xlogy``'s derivatives at ``x == 0``
(first and second order, against PyTorch), and the set functions' values refusing backward
as ``torch.unique``'s do."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import agnograd as ag
from agnograd import special as S

# Every combination of x in {0, -0, positive, negative} and y in {0, positive, negative}.
XS = [0.0, -0.0, 1.5, -2.0]
YS = [0.0, 3.0, -0.5]
GRID = np.array(list(itertools.product(XS, YS)))


def test_xlogy_gradient_in_x_at_zero_is_log_y():
    """Regression (issue 22): d xlogy / dx at x = 0 was 0; PyTorch and JAX give log y."""
    x = ag.tensor([0.0, 0.0], requires_grad=True)
    y = ag.tensor([2.0, 0.5])
    ag.sum(S.xlogy(x, y)).backward()
    np.testing.assert_allclose(x.grad.numpy(), np.log([2.0, 0.5]))


@pytest.mark.parametrize("backend", ["numpy", "array_api_strict"])
def test_xlogy_first_derivatives_match_torch_everywhere(backend):
    torch = pytest.importorskip("torch")
    x = ag.tensor(GRID[:, 0], backend=backend, requires_grad=True)
    y = ag.tensor(GRID[:, 1], backend=backend, requires_grad=True)
    w = np.arange(1.0, len(GRID) + 1)
    ag.sum(S.xlogy(x, y) * ag.tensor(w, backend=backend)).backward()
    tx = torch.tensor(GRID[:, 0], requires_grad=True)
    ty = torch.tensor(GRID[:, 1], requires_grad=True)
    (torch.special.xlogy(tx, ty) * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(ag.to_backend(x.grad, "numpy").numpy(), tx.grad.numpy())
    gy, tgy = ag.to_backend(y.grad, "numpy").numpy(), ty.grad.numpy()
    both_zero = (GRID[:, 0] == 0) & (GRID[:, 1] == 0)  # torch: 0/0 = NaN; here 0
    np.testing.assert_allclose(gy[~both_zero], tgy[~both_zero])
    assert np.isnan(tgy[both_zero]).all() and (gy[both_zero] == 0).all()


def test_xlogy_second_derivatives_match_torch():
    torch = pytest.importorskip("torch")
    keep = ~((GRID[:, 0] == 0) & (GRID[:, 1] == 0)) & (GRID[:, 1] > 0)  # where torch is finite
    pts = GRID[keep]

    def ours(x, y):
        return ag.sum(S.xlogy(x, y))

    hx = ag.grad(lambda x, y: ag.sum(ag.grad(ours, argnums=0)(x, y)), argnums=(0, 1))
    hy = ag.grad(lambda x, y: ag.sum(ag.grad(ours, argnums=1)(x, y)), argnums=(0, 1))
    x, y = ag.tensor(pts[:, 0]), ag.tensor(pts[:, 1])
    tx = torch.tensor(pts[:, 0], requires_grad=True)
    ty = torch.tensor(pts[:, 1], requires_grad=True)
    gx, gy = torch.autograd.grad(torch.special.xlogy(tx, ty).sum(), (tx, ty), create_graph=True)
    for ours_h, first in ((hx, gx), (hy, gy)):
        theirs = torch.autograd.grad(first.sum(), (tx, ty), allow_unused=True)
        for a, b in zip(ours_h(x, y), theirs):
            b = np.zeros(len(pts)) if b is None else b.detach().numpy()
            np.testing.assert_allclose(a.numpy(), b, rtol=1e-12, atol=1e-15)


def test_xlogy_values_are_unchanged():
    x = ag.tensor(GRID[:, 0])
    y = ag.tensor(GRID[:, 1])
    with np.errstate(all="ignore"):
        ref = np.where(GRID[:, 0] == 0, 0.0, GRID[:, 0] * np.log(GRID[:, 1]))
    np.testing.assert_array_equal(S.xlogy(x, y).numpy(), ref)


# ---------------------------------------------------------------------------------------------
# unique_*


UNIQUE = [
    ("unique_values", lambda x: ag.unique_values(x)),
    ("unique_counts", lambda x: ag.unique_counts(x).values),
    ("unique_inverse", lambda x: ag.unique_inverse(x).values),
    ("unique_all", lambda x: ag.unique_all(x).values),
]


@pytest.mark.parametrize("name, values", UNIQUE, ids=[n for n, _ in UNIQUE])
def test_unique_values_refuse_to_be_differentiated(name, values):
    """Regression (issue 22): the unique values silently detached, so a loss through them got
    a zero gradient. As torch.unique: they require grad, and backward raises naming the op."""
    torch = pytest.importorskip("torch")
    tx = torch.tensor([1.0, 2.0, 2.0, 3.0], requires_grad=True)
    tu = torch.unique(tx)
    assert tu.requires_grad
    with pytest.raises(NotImplementedError):
        tu.sum().backward()

    x = ag.tensor([1.0, 2.0, 2.0, 3.0], requires_grad=True)
    u = values(x)
    assert u.requires_grad and u.numpy().tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(NotImplementedError, match=f"{name}: the derivative.*x.detach()"):
        ag.sum(u * u).backward()
    with pytest.raises(NotImplementedError, match=name):
        ag.grad(lambda x: ag.sum(values(x)))(x)
    # Not recorded: no grad mode, a detached input, or an input that needs no grad.
    with ag.no_grad():
        assert not values(x).requires_grad
    assert not values(x.detach()).requires_grad
    # Used only as data (not on the path to the loss), they are harmless.
    loss = ag.sum(x * ag.max(values(x)).detach())
    loss.backward()
    np.testing.assert_allclose(x.grad.numpy(), [3.0] * 4)


def test_unique_indices_and_counts_never_require_grad():
    x = ag.tensor([1.0, 2.0, 2.0, 3.0], requires_grad=True)
    r = ag.unique_all(x)
    assert [t.requires_grad for t in r] == [True, False, False, False]
    c = ag.unique_counts(x)
    assert not c.counts.requires_grad
    assert not ag.unique_inverse(x).inverse_indices.requires_grad


@pytest.mark.parametrize("backend", ["numpy", "array_api_strict"])
def test_xlogy_of_nan_and_python_scalars(backend):
    """xlogy(0, NaN) is NaN (SciPy, PyTorch), not 0; a Python scalar operand works on every
    backend (array_api_strict's where() refused two scalars) and differentiates."""
    torch = pytest.importorskip("torch")
    x = ag.tensor([0.0, 0.0, 1.0], backend=backend, requires_grad=True)
    y = ag.tensor([np.nan, 0.0, np.nan], backend=backend)
    ref = torch.special.xlogy(torch.tensor([0.0, 0.0, 1.0]), torch.tensor([np.nan, 0.0, np.nan]))
    np.testing.assert_array_equal(ag.to_backend(S.xlogy(x, y), "numpy").numpy(), ref.numpy())
    np.testing.assert_array_equal(ag.to_backend(S.xlogy(0.0, y), "numpy").numpy(), ref.numpy())
    g = ag.grad(lambda x: ag.sum(S.xlogy(x, 2.0)))(x)
    np.testing.assert_allclose(ag.to_backend(g, "numpy").numpy(), [np.log(2.0)] * 3)
    yv = ag.tensor([0.5, 2.0], backend=backend, requires_grad=True)
    gy = ag.grad(lambda y: ag.sum(S.xlogy(3.0, y)))(yv)
    np.testing.assert_allclose(ag.to_backend(gy, "numpy").numpy(), [6.0, 1.5])
