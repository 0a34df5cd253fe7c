"""Nested function transforms, user rules under create_graph, complex inputs to hvp/jvp/jacobian.

Issue 22, classes 1, 2 and the transform items of 9:

- every transform (``grad``, ``value_and_grad``, ``vjp``, ``jvp``, ``jacobian``, ``hessian``,
  ``hvp``) nested inside every other one (and inside a plain ``loss.backward()``), the inner
  call taking every kind of input (a Python float, a NumPy array, a Tensor that does not
  require grad, one that does, a pytree mixing them, a Tensor computed from the outer
  variable) and closing over the outer variable: the inner result carries the outer graph, so
  the outer derivative equals ``torch.func``'s (finite differences of the outer function where
  torch is not installed, and in a second table always);
- ``custom_vjp``/``Function`` rules that return raw arrays: right at first order, refused
  (naming the rule) when their contribution would be differentiated again;
- complex numbers: ``hvp`` of a real function of complex inputs and ``jvp`` of complex outputs
  as PyTorch gives them, ``jacobian`` of a complex output of real inputs as ``jax.jacfwd``,
  and the refusals that PyTorch and JAX make, each naming what the user wrote.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import agnograd as ag
from agnograd.pytree import tree_leaves

try:
    import torch
    import torch.func as tf
except ImportError:  # pragma: no cover - the finite-difference oracle takes over
    torch = None
    tf = None

W0 = np.array([0.6, -0.9])          # the outer variable
C_W = np.array([0.35, -0.25])       # vjp cotangent and jvp/hvp tangent for the outer variable
T_W = np.array([1.0, 0.5])
X_NP = np.array([0.3, -0.8])        # the inner call's point
CT_Q = np.array([0.7, -1.3])        # inner vjp cotangent (q has W's shape)


# ---------------------------------------------------------------------------------------------
# One construction, written once for agnograd and once for torch ("m" is the module).


def _p(x: Any, m: Any) -> Any:
    """A scalar of the inner input pytree: Σ over leaves of sum(leaf²/2 + sin(leaf))."""
    total = 0.0
    for leaf in tree_leaves(x):
        total = total + m.sum(leaf * leaf * 0.5 + m.sin(leaf))
    return total


def _h(x: Any, w: Any, m: Any) -> Any:
    """The inner scalar function: nonlinear in x, in w, and in both together."""
    p = _p(x, m)
    return m.sum(m.sin(w * p)) + m.sum(w * w) * p * p


def _q(x: Any, w: Any, m: Any) -> Any:
    """The inner vector function (w's shape)."""
    p = _p(x, m)
    return m.sin(w * p) + w * w * p


def _reduce(tree: Any, m: Any) -> Any:
    """The outer function of the inner results: a scalar that reads every leaf nonlinearly."""
    total = 0.0
    for leaf in tree_leaves(tree):
        total = total + m.sum(m.sin(leaf)) + 0.5 * m.sum(leaf * leaf)
    return total


def _tangent_of(x: Any, m: Any) -> Any:
    """A tangent with ``x``'s structure, in the types the inner call would take."""
    if isinstance(x, dict):
        return {k: _tangent_of(v, m) for k, v in x.items()}
    if isinstance(x, tuple):
        return tuple(_tangent_of(v, m) for v in x)
    if isinstance(x, float):
        return 0.5  # (a 0-d torch tensor takes the branch below: linspace(0.5, -0.7, 1))
    shape = tuple(x.shape)
    v = np.linspace(0.5, -0.7, int(np.prod(shape)) or 1).reshape(shape)
    return v if m is ag else torch.tensor(v)


# The inner transforms: (x0, w, m) -> a pytree of results.


def _inner_ag(name: str) -> Callable[[Any, Any], Any]:
    def run(x0: Any, w: Any) -> Any:
        h = lambda x: _h(x, w, ag)  # noqa: E731
        q = lambda x: _q(x, w, ag)  # noqa: E731
        if name == "grad":
            return ag.grad(h)(x0)
        if name == "value_and_grad":
            return ag.value_and_grad(h)(x0)
        if name == "vjp":
            out, fn = ag.vjp(q, x0)
            return out, fn(CT_Q)
        if name == "jvp":
            return ag.jvp(q, (x0,), (_tangent_of(x0, ag),))
        if name == "jacobian":
            return ag.jacobian(q)(x0)
        if name == "hessian":
            return ag.hessian(h)(x0)
        if name == "hvp":
            return ag.hvp(h, (x0,), (_tangent_of(x0, ag),))
        raise AssertionError(name)

    return run


def _inner_torch(name: str) -> Callable[[Any, Any], Any]:
    def run(x0: Any, w: Any) -> Any:
        h = lambda x: _h(x, w, torch)  # noqa: E731
        q = lambda x: _q(x, w, torch)  # noqa: E731
        if name == "grad":
            return tf.grad(h)(x0)
        if name == "value_and_grad":
            return tf.grad_and_value(h)(x0)
        if name == "vjp":
            out, fn = tf.vjp(q, x0)
            return out, fn(torch.tensor(CT_Q))
        if name == "jvp":
            return tf.jvp(q, (x0,), (_tangent_of(x0, torch),))
        if name == "jacobian":
            return tf.jacrev(q)(x0)
        if name == "hessian":
            return tf.hessian(h)(x0)
        if name == "hvp":
            return h(x0), tf.jvp(tf.grad(h), (x0,), (_tangent_of(x0, torch),))[1]
        raise AssertionError(name)

    return run


INNERS = ["grad", "value_and_grad", "vjp", "jvp", "jacobian", "hessian", "hvp"]
OUTERS = ["backward", "grad", "value_and_grad", "vjp", "jvp", "jacobian", "hessian", "hvp"]
KINDS = ["float", "numpy", "tensor", "tensor_requires_grad", "pytree", "of_outer"]


def _x0(kind: str, w: Any, m: Any, leaf: Any) -> Any:
    """The inner call's input of the given kind (for torch: the same values as tensors);
    ``leaf`` is the Tensor that requires grad, made outside the transforms."""
    if kind == "tensor_requires_grad":
        return leaf
    if m is not ag:
        t = lambda a: torch.tensor(np.asarray(a, dtype=np.float64))  # noqa: E731
        if kind == "float":
            return t(0.7)
        if kind == "pytree":
            return {"a": t(X_NP), "b": (t(0.4), t([1.1]))}
        if kind == "of_outer":
            return 0.5 * w + t(X_NP)
        return t(X_NP)
    if kind == "float":
        return 0.7
    if kind == "numpy":
        return X_NP.copy()
    if kind == "tensor":
        return ag.tensor(X_NP.copy())
    if kind == "pytree":
        return {"a": X_NP.copy(), "b": (0.4, ag.tensor(np.array([1.1])))}
    if kind == "of_outer":
        return 0.5 * w + X_NP
    raise AssertionError(kind)


def _outer_function(inner: str, kind: str, m: Any) -> tuple[Callable[[Any], Any],
                                                             Callable[[Any], Any]]:
    """F(w) (scalar) and Fv(w) (vector): the outer functions, whose inner call closes over w."""
    run = _inner_ag(inner) if m is ag else _inner_torch(inner)
    leaf = (ag.tensor(X_NP.copy(), requires_grad=True) if m is ag
            else torch.tensor(X_NP).requires_grad_(True))

    def F(w: Any) -> Any:
        return _reduce(run(_x0(kind, w, m, leaf), w), m)

    def Fv(w: Any) -> Any:
        return m.sin(w) * F(w)

    return F, Fv


def _outer_ag(outer: str, F: Callable[[Any], Any], Fv: Callable[[Any], Any]) -> Any:
    if outer == "backward":
        w = ag.tensor(W0.copy(), requires_grad=True)
        F(w).backward()
        return w.grad
    if outer == "grad":
        return ag.grad(F)(W0)
    if outer == "value_and_grad":
        return ag.value_and_grad(F)(W0)
    if outer == "vjp":
        out, fn = ag.vjp(Fv, W0)
        return out, fn(C_W)
    if outer == "jvp":
        return ag.jvp(Fv, (W0,), (T_W,))
    if outer == "jacobian":
        return ag.jacobian(Fv)(W0)
    if outer == "hessian":
        return ag.hessian(F)(W0)
    if outer == "hvp":
        return ag.hvp(F, (W0,), (T_W,))
    raise AssertionError(outer)


def _outer_torch(outer: str, F: Callable[[Any], Any], Fv: Callable[[Any], Any]) -> Any:
    w0 = torch.tensor(W0)
    if outer == "backward":
        w = w0.clone().requires_grad_(True)
        F(w).backward()
        return w.grad
    if outer == "grad":
        return tf.grad(F)(w0)
    if outer == "value_and_grad":
        g, v = tf.grad_and_value(F)(w0)
        return v, g
    if outer == "vjp":
        out, fn = tf.vjp(Fv, w0)
        return out, fn(torch.tensor(C_W))
    if outer == "jvp":
        return tf.jvp(Fv, (w0,), (torch.tensor(T_W),))
    if outer == "jacobian":
        return tf.jacrev(Fv)(w0)
    if outer == "hessian":
        return tf.hessian(F)(w0)
    if outer == "hvp":
        return F(w0), (tf.jvp(tf.grad(F), (w0,), (torch.tensor(T_W),))[1],)
    raise AssertionError(outer)


def _numbers(tree: Any) -> list[np.ndarray]:
    out = []
    for leaf in tree_leaves(tree):
        if type(leaf) is ag.Tensor:
            leaf = leaf.detach().numpy()
        elif torch is not None and isinstance(leaf, torch.Tensor):
            leaf = leaf.detach().numpy()
        out.append(np.asarray(leaf, dtype=np.float64))
    return out


# Finite differences of the outer function, evaluated with agnograd at NumPy points (no
# outer graph): the oracle where torch is not installed.


def _value(fun: Callable[[Any], Any], w: np.ndarray) -> np.ndarray:
    return _numbers(fun(w.copy()))[0]


def _fd_jacobian(fun: Callable[[Any], Any], w: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    cols = []
    for e in np.eye(w.size):
        cols.append((_value(fun, w + eps * e) - _value(fun, w - eps * e)) / (2 * eps))
    return np.stack(cols, axis=-1)


def _fd_hessian(F: Callable[[Any], Any], w: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    n = w.size
    H = np.empty((n, n))
    E = np.eye(n) * eps
    for i in range(n):
        for j in range(n):
            H[i, j] = (_value(F, w + E[i] + E[j]) - _value(F, w + E[i] - E[j])
                       - _value(F, w - E[i] + E[j]) + _value(F, w - E[i] - E[j])) / (4 * eps**2)
    return H


def _outer_fd(outer: str, F: Callable[[Any], Any], Fv: Callable[[Any], Any]) -> list[np.ndarray]:
    if outer in ("backward", "grad"):
        return [_fd_jacobian(F, W0)]
    if outer == "value_and_grad":
        return [_value(F, W0), _fd_jacobian(F, W0)]
    if outer == "vjp":
        return [_value(Fv, W0), C_W @ _fd_jacobian(Fv, W0)]
    if outer == "jvp":
        return [_value(Fv, W0), _fd_jacobian(Fv, W0) @ T_W]
    if outer == "jacobian":
        return [_fd_jacobian(Fv, W0)]
    if outer == "hessian":
        return [_fd_hessian(F, W0)]
    if outer == "hvp":
        return [_value(F, W0), _fd_hessian(F, W0) @ T_W]
    raise AssertionError(outer)


def _check(outer: str, inner: str, kind: str, oracle: str) -> None:
    F, Fv = _outer_function(inner, kind, ag)
    got = _numbers(_outer_ag(outer, F, Fv))
    if oracle == "torch":
        Ft, Fvt = _outer_function(inner, kind, torch)
        want = _numbers(_outer_torch(outer, Ft, Fvt))
        rtol, atol = 1e-9, 1e-10
    else:
        want = _outer_fd(outer, F, Fv)
        rtol, atol = 1e-5, 1e-6
    assert len(got) == len(want), (outer, inner, kind)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol,
                                   err_msg=f"{outer} of {inner} over a {kind} input ({oracle})")


ORACLE = "torch" if torch is not None else "fd"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("inner", INNERS)
@pytest.mark.parametrize("outer", OUTERS)
def test_every_transform_nested_in_every_other_keeps_the_outer_graph(outer, inner, kind):
    """The table: 8 outers x 7 inners x 6 inner input kinds, against torch.func (else FD)."""
    _check(outer, inner, kind, ORACLE)


@pytest.mark.parametrize("kind", ["numpy", "pytree"])
@pytest.mark.parametrize("inner", INNERS)
@pytest.mark.parametrize("outer", OUTERS)
def test_every_nesting_against_finite_differences(outer, inner, kind):
    """The same table against finite differences of the outer function (no torch needed)."""
    _check(outer, inner, kind, "fd")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(outer=st.sampled_from(OUTERS), inner=st.sampled_from(INNERS),
       kind=st.sampled_from(KINDS),
       w=st.lists(st.floats(-1.5, 1.5), min_size=2, max_size=2),
       x=st.lists(st.floats(-1.5, 1.5), min_size=2, max_size=2))
def test_nesting_property_at_random_points(outer, inner, kind, w, x):
    """Any nesting, any input kind, at random outer and inner points (the table's helpers read
    the points from the module, so they are swapped in for the example)."""
    global W0, X_NP
    old = W0, X_NP
    W0, X_NP = np.array(w), np.array(x)
    try:
        _check(outer, inner, kind, ORACLE)
    finally:
        W0, X_NP = old
