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
    result = _outer_ag(outer, F, Fv)
    if outer != "backward" and kind != "tensor_requires_grad":
        # the outer call's input is a NumPy array and nothing else it reads requires grad (the
        # inner call's private aliases do not count): its results are NumPy arrays
        kinds = {type(leaf).__name__ for leaf in tree_leaves(result)}
        assert kinds == {"ndarray"}, (outer, inner, kind, kinds)
    got = _numbers(result)
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


# ---------------------------------------------------------------------------------------------
# Class 1: named regressions


def test_gradient_penalty_with_inner_grad_at_a_fixed_numpy_point():
    """Issue 22's example: the inner grad at a NumPy point closes over w; its whole term used
    to vanish from the outer gradient (zeros)."""
    x_fixed = np.array([0.3, 0.7])

    def penalty(w):
        g = ag.grad(lambda x: ag.sum(ag.sin(w * x)))(x_fixed)   # = w·cos(w·x)
        return ag.sum(g * g)

    w0 = np.array([0.5, -1.0])
    # d/dw Σ (w cos(wx))² = 2 w cos(wx) (cos(wx) - w x sin(wx))
    c, s = np.cos(w0 * x_fixed), np.sin(w0 * x_fixed)
    want = 2 * w0 * c * (c - w0 * x_fixed * s)
    np.testing.assert_allclose(ag.grad(penalty)(w0), want, rtol=1e-12)
    w = ag.tensor(w0, requires_grad=True)                       # the plain-backward outer
    penalty(w).backward()
    np.testing.assert_allclose(w.grad.numpy(), want, rtol=1e-12)


def test_inner_results_are_tensors_exactly_when_they_carry_a_graph():
    w = ag.tensor([0.5, -1.0], requires_grad=True)
    for x0 in (0.7, np.array([0.3, 0.7]), ag.tensor([0.3, 0.7])):
        g = ag.grad(lambda x: ag.sum(w * x * x))(x0)           # closes over w
        assert type(g) is ag.Tensor and g.requires_grad
        value, g = ag.value_and_grad(lambda x: ag.sum(w * x * x))(x0)
        assert type(value) is ag.Tensor and value.requires_grad
        # nothing read requires grad: the input's type, as before
        g2 = ag.grad(lambda x: ag.sum(w.detach() * x * x))(x0)
        assert type(g2) is type(x0) if not isinstance(x0, ag.Tensor) else not g2.requires_grad
    # nested in an outer transform but independent of its variable: still the input's type
    seen = []

    def outer(v):
        seen.append(ag.grad(lambda x: ag.sum(x ** 3))(np.array([1.0, 2.0])))
        return ag.sum(v * v)

    ag.grad(outer)(np.array([1.0]))
    assert type(seen[0]) is np.ndarray


def test_a_transform_under_no_grad_returns_results_without_a_graph():
    """As torch.func.grad under torch.no_grad: gradients are computed, no graph is kept."""
    w = ag.tensor([0.5, -1.0], requires_grad=True)
    with ag.no_grad():
        g = ag.grad(lambda x: ag.sum(w * x * x))(np.array([0.3, 0.7]))
        gw = ag.grad(lambda t: ag.sum(t ** 3))(w)
    assert type(g) is np.ndarray
    np.testing.assert_allclose(g, 2 * np.array([0.5, -1.0]) * [0.3, 0.7])
    assert not gw.requires_grad


def test_vjp_fn_with_a_cotangent_that_requires_grad_keeps_its_graph():
    """vjp_fn(u) is linear in u: an outer derivative with respect to u sees it."""
    x0 = np.array([0.4, -0.3])
    f = lambda x: ag.sin(x) * x  # noqa: E731

    def outer(u):
        (g,) = ag.vjp(f, x0)[1](u)
        return ag.sum(g * g)

    u0 = np.array([1.5, -0.5])
    d = np.cos(x0) * x0 + np.sin(x0)               # diagonal Jacobian
    np.testing.assert_allclose(ag.grad(outer)(u0), 2 * d * d * u0, rtol=1e-12)


def test_jvp_and_hvp_with_a_tangent_that_requires_grad_keep_their_graph():
    x0 = np.array([0.4, -0.3])
    f = lambda x: ag.sin(x) * x  # noqa: E731
    d = np.cos(x0) * x0 + np.sin(x0)
    v0 = np.array([1.5, -0.5])
    outer = lambda v: ag.sum(ag.jvp(f, (x0,), (v,))[1] ** 2)  # noqa: E731
    np.testing.assert_allclose(ag.grad(outer)(v0), 2 * d * d * v0, rtol=1e-12)
    s = lambda x: ag.sum(ag.sin(x) * x)  # noqa: E731   H = diag(2cos x - x sin x)
    h = 2 * np.cos(x0) - x0 * np.sin(x0)
    outer_h = lambda v: ag.sum(ag.hvp(s, (x0,), (v,))[1][0] ** 2)  # noqa: E731
    np.testing.assert_allclose(ag.grad(outer_h)(v0), 2 * h * h * v0, rtol=1e-12)


def test_a_mixed_pytree_of_a_tensor_requiring_grad_and_an_array_keeps_both_gradients_graphs():
    """grad over (w, x) with x a NumPy array: ∂/∂x = w depends on w, so it comes back as a
    Tensor with its graph (it used to be a raw array, dropping it)."""
    w = ag.tensor([0.5, -1.0], requires_grad=True)
    gw, gx = ag.grad(lambda p: ag.sum(p[0] * p[1] * p[1]))((w, np.array([0.3, 0.7])))
    assert type(gx) is ag.Tensor and gx.requires_grad
    ag.sum(gx).backward()                           # Σ 2 w x -> 2 x
    np.testing.assert_allclose(w.grad.numpy(), 2 * np.array([0.3, 0.7]))


def test_private_aliases_collect_no_grad_in_an_outer_backward():
    """An outer backward through an inner result reaches the inner call's private alias of its
    NumPy input: no gradient accumulates there, only in the user's leaves."""
    w = ag.tensor([0.5, -1.0], requires_grad=True)
    g = ag.grad(lambda x: ag.sum(w * x * x))(np.array([0.3, 0.7]))
    ag.sum(g).backward()
    np.testing.assert_allclose(w.grad.numpy(), 2 * np.array([0.3, 0.7]))
    aliases = [n for n in _leaves_of(g) if n is not w]
    assert aliases and all(a.grad is None and not a.requires_grad for a in aliases)


def _leaves_of(t):
    from agnograd.autograd import edge_target

    out, stack, seen = [], [t._node], set()
    while stack:
        n = stack.pop()
        if n is None or n in seen:
            continue
        seen.add(n)
        for e in n.edges:
            if e is None:
                continue
            p = edge_target(e)[0]
            if type(p) is ag.Tensor:
                out.append(p)
            else:
                stack.append(p)
    return out


# ---------------------------------------------------------------------------------------------
# Class 2: user rules that return raw arrays


def _raw_cube() -> Any:
    @ag.custom_vjp
    def cube(x):
        return x ** 3

    def fwd(x):
        return cube(x), (x,)

    def bwd(res, g):
        (x,) = res
        return (3 * x.data ** 2 * g.data,)          # a raw NumPy array

    cube.defvjp(fwd, bwd)
    return cube


class _RawSquare(ag.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x.data * g.data                   # a raw NumPy array


class _TensorSquare(ag.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * g                             # ag ops on the saved Tensor


X2 = np.array([0.5, -1.0])


@pytest.mark.parametrize("rule", ["custom_vjp", "Function"])
def test_a_raw_array_cotangent_is_right_at_first_order(rule):
    op = _raw_cube() if rule == "custom_vjp" else _RawSquare.apply
    want = 3 * X2 ** 2 if rule == "custom_vjp" else 2 * X2
    np.testing.assert_allclose(ag.grad(lambda t: ag.sum(op(t)))(X2), want)
    x = ag.tensor(X2, requires_grad=True)
    ag.sum(op(x)).backward()
    np.testing.assert_allclose(x.grad.numpy(), want)


@pytest.mark.parametrize("how", ["hessian", "grad_of_grad", "jvp", "hvp", "create_graph"])
@pytest.mark.parametrize("rule", ["custom_vjp", "Function"])
def test_a_raw_array_cotangent_under_create_graph_raises_naming_the_rule(rule, how):
    """Its contribution to the higher derivative used to vanish (a zero Hessian)."""
    op = _raw_cube() if rule == "custom_vjp" else _RawSquare.apply
    f = lambda t: ag.sum(op(t))  # noqa: E731
    who = "custom_vjp function 'cube': bwd" if rule == "custom_vjp" else "_RawSquare.backward"
    with pytest.raises(TypeError) as err:
        if how == "hessian":
            ag.hessian(f)(X2)
        elif how == "grad_of_grad":
            ag.grad(lambda t: ag.sum(ag.grad(f)(t)))(X2)
        elif how == "jvp":
            ag.jvp(op, (X2,), (np.ones(2),))
        elif how == "hvp":
            ag.hvp(f, (X2,), (np.ones(2),))
        else:
            x = ag.tensor(X2, requires_grad=True)
            ag.sum(op(x)).backward(create_graph=True)
    msg = str(err.value)
    assert who in msg and "input 0" in msg and "raw numpy.ndarray" in msg
    assert "Return Tensors computed with ag ops from the saved Tensors" in msg


def test_a_raw_constant_cotangent_is_allowed_under_create_graph():
    """A linear rule whose raw cotangent reads only a constant g (no graph anywhere) is a true
    constant: its Hessian contribution is exactly zero, so it is not refused."""
    @ag.custom_vjp
    def double(x):
        return 2 * x

    double.defvjp(lambda x: (double(x), None), lambda res, g: (2 * g.data,))
    np.testing.assert_array_equal(ag.hessian(lambda t: ag.sum(double(t)))(X2), np.zeros((2, 2)))


def test_a_rule_returning_tensors_composes_to_any_order_against_torch():
    torch_ = pytest.importorskip("torch")
    f = lambda t: ag.sum(ag.sin(_TensorSquare.apply(t)))  # noqa: E731
    H = ag.hessian(f)(X2)
    Ht = torch_.func.hessian(lambda t: torch_.sin(t * t).sum())(torch_.tensor(X2))
    np.testing.assert_allclose(H, Ht.numpy(), rtol=1e-12)
    gg = ag.grad(lambda t: ag.sum(ag.grad(f)(t) ** 2))(X2)
    ggt = torch_.func.grad(lambda t: (torch_.func.grad(lambda u: torch_.sin(u * u).sum())(t) ** 2)
                           .sum())(torch_.tensor(X2))
    np.testing.assert_allclose(gg, ggt.numpy(), rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# Class 9: complex inputs and outputs of hvp, hessian, jvp, jacobian


Z = np.array([1 + 2j, 0.5 - 1j])
VZ = np.array([1 + 0j, 1j])


def test_hvp_of_a_real_function_of_complex_inputs_matches_torch():
    """It used to refuse, naming a complex output ("grad: the output is complex128, shape ()")
    that the user never wrote."""
    torch_ = pytest.importorskip("torch")
    f = lambda t: ag.sum(ag.abs(t) ** 2 * ag.real(t)) + ag.sum(ag.sin(ag.imag(t) * ag.real(t)))  # noqa: E731
    ft = lambda t: ((t.abs() ** 2) * t.real).sum() + torch_.sin(t.imag * t.real).sum()  # noqa: E731
    for v in (VZ, np.array([0.3 - 0.7j, -1.1 + 0.2j])):
        value, (hv,) = ag.hvp(f, (Z,), (v,))
        vt, hvt = torch_.autograd.functional.hvp(ft, torch_.tensor(Z), torch_.tensor(v))
        np.testing.assert_allclose(value, vt.numpy(), rtol=1e-12)
        np.testing.assert_allclose(hv, hvt.numpy(), rtol=1e-12)
    # a real tangent for a complex primal: its imaginary part is 0
    (_, (hv,)) = ag.hvp(f, (Z,), (np.array([1.0, 0.0]),))
    hvt = torch_.autograd.functional.hvp(ft, torch_.tensor(Z), torch_.tensor([1 + 0j, 0j]))[1]
    np.testing.assert_allclose(hv, hvt.numpy(), rtol=1e-12)


def test_hessian_of_complex_inputs_raises_naming_the_input_and_the_ways_out():
    with pytest.raises(TypeError) as err:
        ag.hessian(lambda t: ag.sum(ag.abs(t) ** 2))(Z)
    msg = str(err.value)
    assert msg.startswith("hessian: an input is complex128 (shape (2,))")
    assert "ag.hvp" in msg and "argnums=(0, 1)" in msg and "output" not in msg.split(";")[0]


def test_the_suggested_real_hessian_over_the_parts_works():
    f = lambda z: ag.sum(ag.abs(z) ** 2 * ag.real(z))  # noqa: E731  (x² + y²)·x
    x, y = np.real(Z), np.imag(Z)
    H = ag.hessian(lambda a, b: f(a + 1j * b), argnums=(0, 1))(x, y)
    np.testing.assert_allclose(H[0][0], np.diag(6 * x))
    np.testing.assert_allclose(H[0][1], np.diag(2 * y))
    np.testing.assert_allclose(H[1][1], np.diag(2 * x))


@pytest.mark.parametrize("case", ["holomorphic", "conj", "abs", "real_to_complex", "fft"])
def test_jvp_of_complex_functions_matches_torch_func_jvp(case):
    """jvp used to refuse complex outputs with grad's error ("no single gradient")."""
    torch_ = pytest.importorskip("torch")
    x_real = np.array([0.4, -1.2])
    fns = {
        "holomorphic": (lambda t: ag.exp(t) * t, lambda t: torch_.exp(t) * t, Z, VZ),
        "conj": (lambda t: ag.conj(t) * ag.real(t), lambda t: t.conj() * t.real, Z, VZ),
        "abs": (lambda t: ag.abs(t) ** 2, lambda t: t.abs() ** 2, Z, VZ),
        "real_to_complex": (lambda t: ag.exp(t * (1 + 2j)), lambda t: torch_.exp(t * (1 + 2j)),
                            x_real, np.array([1.0, -0.5])),
        "fft": (lambda t: ag.fft.fft(t * t), lambda t: torch_.fft.fft(t * t), Z, VZ),
    }
    f, ft, z, v = fns[case]
    out, jv = ag.jvp(f, (z,), (v,))
    out_t, jv_t = torch_.func.jvp(ft, (torch_.tensor(z),), (torch_.tensor(v),))
    np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(jv, jv_t.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_jvp_of_a_real_primal_with_a_complex_tangent_raises():
    with pytest.raises(TypeError, match="a real input has no imaginary direction"):
        ag.jvp(ag.sin, (np.array([0.4]),), (np.array([1j]),))


def test_jacobian_of_a_complex_output_of_real_inputs_is_the_complex_jacobian():
    """As jax.jacfwd; checked against torch's Jacobian of view_as_real(f(x))."""
    torch_ = pytest.importorskip("torch")
    x = np.array([0.4, -1.2, 0.3])
    J = ag.jacobian(lambda t: ag.exp(t * (1 + 2j)) * ag.sum(t))(x)
    Jr = torch_.func.jacrev(lambda t: torch_.view_as_real(torch_.exp(t * (1 + 2j)) * t.sum()))(
        torch_.tensor(x)).numpy()
    assert J.dtype == np.complex128 and J.shape == (3, 3)
    np.testing.assert_allclose(J, Jr[:, 0, :] + 1j * Jr[:, 1, :], rtol=1e-12)
    # and it agrees with jvp, column by column
    for k, e in enumerate(np.eye(3)):
        np.testing.assert_allclose(J[:, k], ag.jvp(lambda t: ag.exp(t * (1 + 2j)) * ag.sum(t),
                                                   (x,), (e,))[1], rtol=1e-12)


def test_jacobian_of_a_real_output_of_complex_inputs_matches_torch_autograd_functional():
    torch_ = pytest.importorskip("torch")
    J = ag.jacobian(lambda t: ag.abs(t) ** 2 * ag.real(t))(Z)
    Jt = torch_.autograd.functional.jacobian(lambda t: t.abs() ** 2 * t.real, torch_.tensor(Z))
    np.testing.assert_allclose(J, Jt.numpy(), rtol=1e-12)


def test_jacobian_of_a_complex_output_of_complex_inputs_raises_a_jacobian_message():
    with pytest.raises(TypeError) as err:
        ag.jacobian(lambda t: t * t)(Z)
    msg = str(err.value)
    assert msg.startswith("jacobian: the output is complex128 (shape (2,)) and differentiated "
                          "input 0 is complex")
    assert "holomorphic" in msg and "ag.jvp" in msg and "no single gradient" not in msg


def test_grad_and_hvp_of_a_complex_output_name_the_transform_called():
    for call, name in [(lambda: ag.grad(lambda t: ag.sum(t * 1j))(np.ones(2)), "grad"),
                       (lambda: ag.hvp(lambda t: ag.sum(t * 1j), (np.ones(2),), (np.ones(2),)),
                        "hvp"),
                       (lambda: ag.hessian(lambda t: ag.sum(t * 1j))(np.ones(2)), "hessian")]:
        with pytest.raises(TypeError, match=f"^{name}: the output is complex128"):
            call()


# ---------------------------------------------------------------------------------------------
# The same guarantees on every backend, and through a checkpoint


def test_gradient_penalty_over_a_raw_array_on_every_backend(backend):
    x_np = np.array([0.3, 0.7])
    x_fixed = ag.tensor(x_np, backend=backend).data        # the backend's own raw array
    w0 = np.array([0.5, -1.0])

    def penalty(w):
        g = ag.grad(lambda x: ag.sum(ag.sin(w * x)))(x_fixed)
        return ag.sum(g * g)

    c, s = np.cos(w0 * x_np), np.sin(w0 * x_np)
    want = 2 * w0 * c * (c - w0 * x_np * s)
    w = ag.tensor(w0, backend=backend, requires_grad=True)
    penalty(w).backward()
    np.testing.assert_allclose(w.grad.numpy(), want, rtol=1e-12)
    got = ag.grad(penalty)(ag.tensor(w0, backend=backend).data)
    assert type(got) is type(x_fixed)
    np.testing.assert_allclose(ag.tensor(got).numpy(), want, rtol=1e-12)


def test_an_inner_transform_over_a_checkpoint_that_closes_over_the_outer_variable():
    x_fixed = np.array([0.3, 0.7])
    w0 = np.array([0.5, -1.0])

    def outer(w, ckpt):
        body = lambda x: ag.sum(ag.sin(w * x))  # noqa: E731
        f = (lambda x: ag.checkpoint(body, x)) if ckpt else body
        g = ag.grad(f)(x_fixed)
        return ag.sum(g * g)

    np.testing.assert_allclose(ag.grad(lambda w: outer(w, True))(w0),
                               ag.grad(lambda w: outer(w, False))(w0), rtol=1e-12)


class _RawScale(ag.Function):
    """Linear: its raw cotangent reads only g and a plain number kept on ctx."""

    @staticmethod
    def forward(ctx, x):
        ctx.k = 3.0
        return x * 3.0

    @staticmethod
    def backward(ctx, g):
        return ctx.k * g.data


def test_raw_cotangents_are_judged_by_what_the_rule_can_read():
    """Accepted when g and every residual are visibly constant (a linear rule, numbers on
    ctx); refused when a residual is an object that may hold a graph (it cannot be seen
    into), so a doubt refuses rather than drops a derivative."""
    np.testing.assert_array_equal(ag.hessian(lambda t: ag.sum(_RawScale.apply(t)))(X2),
                                  np.zeros((2, 2)))

    class Box:
        def __init__(self, t):
            self.t = t

    @ag.custom_vjp
    def cube(x):
        return x ** 3

    cube.defvjp(lambda x: (cube(x), Box(x)), lambda res, g: (3 * res.t.data ** 2 * g.data,))
    with pytest.raises(TypeError, match="custom_vjp function 'cube': bwd returned a raw"):
        ag.hessian(lambda t: ag.sum(cube(t)))(X2)
