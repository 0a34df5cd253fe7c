"""Transforms nested in transforms against ``torch.func``: vmap, grad, jvp, vjp, jacfwd, jacrev,
hessian, jit, checkpoint, custom_vjp and custom_jvp composed two and three deep, float64, on the
same function written in both libraries."""

from __future__ import annotations

import numpy as np
import pytest

import agnograd as ag

torch = pytest.importorskip("torch")
tf = torch.func

RNG = np.random.default_rng(2)
A = RNG.normal(size=(3, 3))
X = RNG.normal(size=(4, 3))


def fa(x):
    return ag.sum(ag.tanh(ag.matmul(ag.tensor(A), x)) * ag.sin(x)) + ag.sum(x ** 3) / 3


def ft(x):
    return (torch.tanh(torch.tensor(A) @ x) * torch.sin(x)).sum() + (x ** 3).sum() / 3


@ag.custom_vjp
def _cube(x):
    return x ** 3


_cube.defvjp(lambda x: (x ** 3, (x,)), lambda res, g: (3 * res[0] ** 2 * g,))


@ag.custom_jvp
def _square(x):
    return x * x


@_square.defjvp
def _square_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return x * x, 2 * x * t


def fc(x):  # the custom rules inside
    return ag.sum(_cube(ag.sin(x))) + ag.sum(_square(x) * x)


def fct(x):
    return (torch.sin(x) ** 3).sum() + (x * x * x).sum()


def _x(k=None):
    return ag.tensor(X if k is None else X[k])


def _t(k=None):
    return torch.tensor(X if k is None else X[k])


CASES = {
    "vmap(grad)": (lambda: ag.vmap(ag.grad(fa))(_x()), lambda: tf.vmap(tf.grad(ft))(_t())),
    "vmap(hessian)": (lambda: ag.vmap(ag.hessian(fa))(_x()), lambda: tf.vmap(tf.hessian(ft))(_t())),
    "vmap(jacfwd(grad))": (lambda: ag.vmap(ag.jacfwd(ag.grad(fa)))(_x()),
                           lambda: tf.vmap(tf.jacfwd(tf.grad(ft)))(_t())),
    "vmap(jacrev(grad))": (lambda: ag.vmap(ag.jacrev(ag.grad(fa)))(_x()),
                           lambda: tf.vmap(tf.jacrev(tf.grad(ft)))(_t())),
    "jacrev(vmap(grad))": (lambda: ag.jacrev(ag.vmap(ag.grad(fa)))(_x()),
                           lambda: tf.jacrev(tf.vmap(tf.grad(ft)))(_t())),
    "jacfwd(vmap(grad))": (lambda: ag.jacfwd(ag.vmap(ag.grad(fa)))(_x()),
                           lambda: tf.jacfwd(tf.vmap(tf.grad(ft)))(_t())),
    "grad(sum(vmap(grad)**2))": (
        lambda: ag.grad(lambda x: ag.sum(ag.vmap(ag.grad(fa))(x) ** 2))(_x()),
        lambda: tf.grad(lambda x: (tf.vmap(tf.grad(ft))(x) ** 2).sum())(_t())),
    "vmap(jvp(grad))": (
        lambda: ag.vmap(lambda x: ag.jvp(ag.grad(fa), (x,), (ag.ones_like(x),))[1])(_x()),
        lambda: tf.vmap(lambda x: tf.jvp(tf.grad(ft), (x,), (torch.ones_like(x),))[1])(_t())),
    "vmap(vmap(grad))": (lambda: ag.vmap(ag.vmap(ag.grad(fa)))(ag.tensor(X.reshape(2, 2, 3))),
                         lambda: tf.vmap(tf.vmap(tf.grad(ft)))(torch.tensor(X.reshape(2, 2, 3)))),
    "vmap(grad(jit))": (lambda: ag.vmap(ag.grad(ag.jit(fa)))(_x()),
                        lambda: tf.vmap(tf.grad(ft))(_t())),
    "grad(jit(vmap)) x3": (
        lambda: [ag.grad(lambda x: ag.sum(ag.jit(ag.vmap(fa))(x)))(_x()) for _ in range(3)][-1],
        lambda: tf.grad(lambda x: tf.vmap(ft)(x).sum())(_t())),
    "vmap(grad(checkpoint))": (lambda: ag.vmap(ag.grad(lambda x: ag.checkpoint(fa, x)))(_x()),
                               lambda: tf.vmap(tf.grad(ft))(_t())),
    "hessian(sum(vmap))": (lambda: ag.hessian(lambda x: ag.sum(ag.vmap(fa)(x)))(_x()),
                           lambda: tf.hessian(lambda x: tf.vmap(ft)(x).sum())(_t())),
    "vmap(grad) in_axes=1": (lambda: ag.vmap(ag.grad(fa), in_axes=1)(ag.tensor(X.T)),
                             lambda: tf.vmap(tf.grad(ft), in_dims=1)(torch.tensor(X.T))),
    "vmap(grad) out_axes=1": (lambda: ag.vmap(ag.grad(fa), out_axes=1)(_x()),
                              lambda: tf.vmap(tf.grad(ft), out_dims=1)(_t())),
    "vmap(vjp)": (
        lambda: ag.vmap(lambda x: ag.vjp(lambda y: ag.sin(y) * y, x)[1](ag.ones_like(x))[0])(_x()),
        lambda: tf.vmap(lambda x: tf.vjp(lambda y: torch.sin(y) * y, x)[1](
            torch.ones_like(x))[0])(_t())),
    "jacrev(jacfwd)": (lambda: ag.jacrev(ag.jacfwd(fa))(_x(0)),
                       lambda: tf.jacrev(tf.jacfwd(ft))(_t(0))),
    "jacfwd(jacrev(jacfwd))": (lambda: ag.jacfwd(ag.jacrev(ag.jacfwd(fa)))(_x(0)),
                               lambda: tf.jacfwd(tf.jacrev(tf.jacfwd(ft)))(_t(0))),
    "jit(vmap(grad)) x3": (lambda: [ag.jit(ag.vmap(ag.grad(fa)))(_x()) for _ in range(3)][-1],
                           lambda: tf.vmap(tf.grad(ft))(_t())),
    "jit(hessian) x3": (lambda: [ag.jit(ag.hessian(fa))(_x(0)) for _ in range(3)][-1],
                        lambda: tf.hessian(ft)(_t(0))),
    "jit(jacfwd) x3": (lambda: [ag.jit(ag.jacfwd(fa))(_x(0)) for _ in range(3)][-1],
                       lambda: tf.jacfwd(ft)(_t(0))),
    "vmap(value_and_grad)": (lambda: ag.vmap(ag.value_and_grad(fa))(_x())[1],
                             lambda: tf.vmap(tf.grad_and_value(ft))(_t())[0]),
    "vmap(grad, argnums=1, in_axes=(0, None))": (
        lambda: ag.vmap(ag.grad(lambda a, b: ag.sum(a * ag.sin(b) * b), argnums=1),
                        in_axes=(0, None))(_x(), _x(1)),
        lambda: tf.vmap(tf.grad(lambda a, b: (a * torch.sin(b) * b).sum(), argnums=1),
                        in_dims=(0, None))(_t(), _t(1))),
    "vmap(grad(custom))": (lambda: ag.vmap(ag.grad(fc))(_x()), lambda: tf.vmap(tf.grad(fct))(_t())),
    "hessian(custom)": (lambda: ag.hessian(fc)(_x(0)), lambda: tf.hessian(fct)(_t(0))),
    "jacfwd(grad(custom))": (lambda: ag.jacfwd(ag.grad(fc))(_x(0)),
                             lambda: tf.jacfwd(tf.grad(fct))(_t(0))),
    "jvp(checkpoint)": (
        lambda: ag.jvp(lambda x: ag.checkpoint(fa, x), (_x(0),), (ag.ones(3, dtype=ag.float64),))[1],
        lambda: tf.jvp(ft, (_t(0),), (torch.ones(3, dtype=torch.float64),))[1]),
    "grad(checkpoint(vmap))": (
        lambda: ag.grad(lambda x: ag.sum(ag.checkpoint(ag.vmap(fa), x)))(_x()),
        lambda: tf.grad(lambda x: tf.vmap(ft)(x).sum())(_t())),
}


@pytest.mark.filterwarnings("ignore::agnograd.JitEagerWarning")
@pytest.mark.parametrize("name", sorted(CASES))
def test_nested_transforms_match_torch_func(name):
    ours, theirs = CASES[name]
    got = np.asarray(ours().numpy())
    want = theirs().detach().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-10)
