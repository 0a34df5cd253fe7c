"""Nested forward mode: ``jvp`` inside ``jvp`` (``jacfwd(jacfwd(f))``), its mixtures with reverse
mode, and ``custom_jvp`` under higher-order derivatives.

* perturbation confusion (Siskind & Pearlmutter 2005; JAX's ``testPerturbationConfusion``
  style): each nested ``jvp`` differentiates with its own perturbation;
* forward-over-forward runs in forward mode (no backward pass, no double VJP), and
  ``jacfwd(jacfwd(f))`` equals ``ag.hessian`` and ``torch.func.jacfwd(jacfwd)`` for elementwise
  ops, matmul, reductions, indexing and a small MLP, on NumPy and array_api_strict; complex
  values through ``jvp`` of ``jvp``; third order;
* mixtures with ``grad`` (``jvp`` of ``grad`` of ``jvp``, ``jvp`` of ``jvp`` of ``grad``,
  ``grad`` of ``jvp`` of ``jvp``) against ``torch.func``;
* ``custom_jvp`` under ``hessian``, ``grad`` of ``grad``, ``jvp`` of ``grad`` and ``jvp`` of
  ``jvp``, against the same function without the custom rule.
"""

from __future__ import annotations

import numpy as np
import pytest

import agnograd as ag
from agnograd import func

from .conftest import CPU_BACKENDS

torch = pytest.importorskip("torch")
tf = torch.func


def _np(y):
    return np.asarray(y.numpy() if type(y) is ag.Tensor else y)


# ---------------------------------------------------------------------------------------------
# Perturbation confusion


def test_perturbation_confusion_siskind_pearlmutter():
    # D(λx. x · D(λy. x + y)(1))(1) = 1; a confused implementation (one ε) answers 2.
    def outer(x):
        return x * ag.jvp(lambda y: x + y, (1.0,), (1.0,))[1]

    assert ag.jvp(outer, (1.0,), (1.0,))[1] == pytest.approx(1.0, abs=1e-15)
    # d/dx [x · d/dy (x·y)] = d/dx x² = 2x, at any point and any y
    for x0, y0 in ((3.0, 5.0), (-0.5, 0.25), (2.0, -7.0)):
        def g(x, y0=y0):
            return x * ag.jvp(lambda y: x * y, (y0,), (1.0,))[1]

        value, d = ag.jvp(g, (x0,), (1.0,))
        assert value == pytest.approx(x0 * x0) and d == pytest.approx(2 * x0, rel=1e-14)


def test_perturbation_confusion_with_arrays_and_closures():
    # JAX's test_jvp_of_jvp_closure shape: the inner function closes over the outer variable
    # and the inner primal is an outer tangent-carrying value too.
    x = np.array([0.3, -1.2, 2.0])
    v = np.array([1.0, 0.5, -0.25])

    def f(x):
        _, t = ag.jvp(lambda y: ag.sin(x * y), (x,), (v,))  # d/dε sin(x (x + εv)) = x v cos(x²)
        return t

    _, got = ag.jvp(f, (x,), (v,))
    # d/dx [x v cos(x²)] · v = v² cos(x²) - 2 x² v² sin(x²)
    np.testing.assert_allclose(got, v * v * np.cos(x * x) - 2 * x * x * v * v * np.sin(x * x),
                               rtol=1e-13)


def test_forward_over_forward_runs_no_backward(monkeypatch):
    from agnograd.autograd import walk

    x = np.array([0.3, -0.7, 1.1])
    f = lambda x: ag.sum(ag.exp(x) * ag.sin(x[::-1]) @ ag.tanh(x))  # noqa: E731
    want = ag.hessian(f)(x)

    def refuse(*a, **k):
        raise AssertionError("forward-over-forward ran a backward pass / two VJPs")

    monkeypatch.setattr(func, "_jvp_double_vjp", refuse)
    monkeypatch.setattr(func, "backward", refuse)
    monkeypatch.setattr(walk, "backward", refuse)
    np.testing.assert_allclose(ag.jacfwd(ag.jacfwd(f))(x), want, rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------------------------------------
# jacfwd(jacfwd(f)) against ag.hessian and torch.func


def _mlp(m, x):
    w1 = np.linspace(-1.0, 1.0, 12).reshape(3, 4)
    w2 = np.cos(np.arange(4.0))
    if m is torch:
        w1, w2 = torch.tensor(w1), torch.tensor(w2)
    else:
        w1, w2 = ag.tensor(w1, backend=x.backend), ag.tensor(w2, backend=x.backend)
    h = m.tanh(x @ w1)
    return m.sum(h * w2) + m.sum(x * x) / 10


def _max(m, x):
    return m.max(x * x) if m is ag else torch.max(x * x)


def _logsumexp(m, x):
    return ag.logsumexp(ag.sin(x)) if m is ag else torch.logsumexp(torch.sin(x), 0)


def _take(m, x):
    idx = [2, 0, 0, 1]
    if m is ag:
        return ag.sum(ag.take(x, ag.tensor(np.array(idx), backend=x.backend)) ** 3)
    return torch.sum(torch.take(x, torch.tensor(idx)) ** 3)


def _matmul(m, x):
    a = m.reshape(x[:2], (2, 1)) if m is ag else x[:2].reshape(2, 1)
    b = m.reshape(x[1:], (1, 2)) if m is ag else x[1:].reshape(1, 2)
    return m.sum(m.tanh(a @ b) ** 2)


SCALAR_FNS = {
    "elementwise": lambda m, x: m.sum(m.sin(x) * m.exp(x[0] * x) / (2 + m.cos(x))),
    "matmul": _matmul,
    "sum_mean": lambda m, x: m.sum(x) * m.mean(x ** 3),
    "max": _max,
    "logsumexp": _logsumexp,
    "prod": lambda m, x: m.prod(x + 2),  # its JVP is the transposed VJP rule
    "getitem": lambda m, x: m.sum(x[1:] * x[:-1] ** 2) + x[0] ** 3,
    "take": _take,
    "mlp": _mlp,
}


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("name", list(SCALAR_FNS))
def test_jacfwd_of_jacfwd_matches_hessian_and_torch(name, backend):
    fn = SCALAR_FNS[name]
    x0 = np.array([0.3, -0.7, 1.1])
    x = ag.tensor(x0, backend=backend)
    got = _np(ag.jacfwd(ag.jacfwd(lambda x: fn(ag, x)))(x))
    np.testing.assert_allclose(got, _np(ag.hessian(lambda x: fn(ag, x))(x)), rtol=1e-11,
                               atol=1e-12)
    want = tf.jacfwd(tf.jacfwd(lambda x: fn(torch, x)))(torch.tensor(x0)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_jacfwd_of_jacfwd_of_a_vector_function(backend):
    x0 = np.array([0.4, -0.2, 0.9])
    f = lambda m, x: m.tanh(x * x[0]) @ (x[::-1] if m is ag else x.flip(0)) * x  # noqa: E731
    got = _np(ag.jacfwd(ag.jacfwd(lambda x: f(ag, x)))(ag.tensor(x0, backend=backend)))
    want = tf.jacfwd(tf.jacfwd(lambda x: f(torch, x)))(torch.tensor(x0)).numpy()
    assert got.shape == (3, 3, 3)
    np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-12)


def test_third_order_forward_mode():
    x = np.array([0.3, 0.5, 0.7, -0.2])
    g = lambda x: ag.tanh(ag.reshape(x, (2, 2)) @ ag.reshape(x, (2, 2)))  # noqa: E731
    got = ag.jacfwd(ag.jacfwd(ag.jacfwd(g)))(x)
    np.testing.assert_allclose(got, ag.jacrev(ag.jacrev(ag.jacrev(g)))(x), rtol=1e-11,
                               atol=1e-13)
    v1, v2, v3 = np.eye(4)[0], np.eye(4)[1], np.array([0.5, 0.1, 0.2, -1.0])
    f = lambda x: ag.sum(ag.sin(x) * x[0] * x)  # noqa: E731
    d3 = ag.jvp(lambda x: ag.jvp(lambda x: ag.jvp(f, (x,), (v1,))[1], (x,), (v2,))[1],
                (x,), (v3,))[1]
    tfn = lambda x: torch.sum(torch.sin(x) * x[0] * x)  # noqa: E731
    want = tf.jvp(lambda x: tf.jvp(lambda x: tf.jvp(tfn, (x,), (torch.tensor(v1),))[1], (x,),
                                   (torch.tensor(v2),))[1], (torch.tensor(x),),
                  (torch.tensor(v3),))[1]
    assert d3 == pytest.approx(float(want), rel=1e-12)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_third_order_through_transposed_rules(backend):
    # prod and cholesky take the transposed VJP rule; three levels deep it is evaluated per
    # output element in forward mode (no reverse pass under two levels of tangents)
    x = ag.tensor(np.array([0.3, 0.5, 0.7, 0.1]), backend=backend)
    fns = [lambda x: ag.prod(x + 2) * ag.sum(x),
           lambda x: ag.sum(ag.linalg.cholesky(
               ag.reshape(x, (2, 2)) @ ag.reshape(x, (2, 2)).mT
               + ag.tensor(np.eye(2), backend=backend)) ** 2)]
    for f in fns:
        got = _np(ag.jacfwd(ag.jacfwd(ag.jacfwd(f)))(x))
        np.testing.assert_allclose(got, _np(ag.jacrev(ag.jacrev(ag.jacrev(f)))(x)), rtol=1e-10,
                                   atol=1e-12)
    z0 = np.array([0.3 + 0.2j, 0.5 - 0.1j])
    vs = [np.array([1, 0.5j]), np.array([0.2 - 1j, 1]), np.array([1j, 1.0])]

    def q(m, z):
        return m.prod(z * z + 1) * m.sin(z[0])

    z = ag.tensor(z0, backend=backend)
    tv = [ag.tensor(v, backend=backend) for v in vs]
    got = ag.jvp(lambda z: ag.jvp(lambda z: ag.jvp(lambda z: q(ag, z), (z,), (tv[0],))[1],
                                  (z,), (tv[1],))[1], (z,), (tv[2],))[1]
    tt = [torch.tensor(v) for v in vs]
    want = tf.jvp(lambda z: tf.jvp(lambda z: tf.jvp(lambda z: q(torch, z), (z,), (tt[0],))[1],
                                   (z,), (tt[1],))[1], (torch.tensor(z0),), (tt[2],))[1]
    np.testing.assert_allclose(_np(got), want.numpy(), rtol=1e-12)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_jvp_of_jvp_with_complex_values(backend):
    z0 = np.array([0.3 + 0.4j, -0.5 + 0.1j])
    v1 = np.array([1.0 - 0.5j, 0.25 + 1j])
    v2 = np.array([0.5 + 0.5j, -1.0 + 0.0j])

    def f(m, z):
        return m.exp(z) * m.sin(z * z[0]) + m.conj(z) * z[1]

    def ag_f(z):
        return ag.jvp(lambda z: f(ag, z), (z,), (ag.tensor(v1, backend=backend),))[1]

    z = ag.tensor(z0, backend=backend)
    got = _np(ag.jvp(ag_f, (z,), (ag.tensor(v2, backend=backend),))[1])
    want = tf.jvp(lambda z: tf.jvp(lambda z: f(torch, z), (z,), (torch.tensor(v1),))[1],
                  (torch.tensor(z0),), (torch.tensor(v2),))[1].numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12)
    # a real function of complex inputs: its jacfwd inside a jvp
    r = lambda z: ag.sum(ag.abs(z) ** 2 * ag.real(z))  # noqa: E731
    _, jj = ag.jvp(ag.jacfwd(r), (z,), (ag.tensor(v2, backend=backend),))
    _, hv = ag.jvp(ag.jacrev(r), (z,), (ag.tensor(v2, backend=backend),))
    np.testing.assert_allclose(_np(jj), _np(hv), rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# Mixtures with reverse mode


def _mix_case():
    x = np.array([0.3, 0.5, 0.7])
    vs = [np.array([1.0, 2.0, 0.0]), np.array([0.0, 1.0, -1.0])]
    f = lambda x: ag.sum(ag.sin(x) * x[0] * x)  # noqa: E731
    tfn = lambda x: torch.sum(torch.sin(x) * x[0] * x)  # noqa: E731
    return x, vs, f, tfn, torch.tensor(x), [torch.tensor(v) for v in vs]


def test_jvp_of_grad_of_jvp():
    x, (v1, v2), f, tfn, X, (V1, V2) = _mix_case()
    got = ag.jvp(ag.grad(lambda x: ag.jvp(f, (x,), (v1,))[1]), (x,), (v2,))[1]
    want = tf.jvp(tf.grad(lambda x: tf.jvp(tfn, (x,), (V1,))[1]), (X,), (V2,))[1]
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-12)


def test_jvp_of_jvp_of_grad():
    x, (v1, v2), f, tfn, X, (V1, V2) = _mix_case()
    got = ag.jvp(lambda x: ag.jvp(ag.grad(f), (x,), (v1,))[1], (x,), (v2,))[1]
    want = tf.jvp(lambda x: tf.jvp(tf.grad(tfn), (x,), (V1,))[1], (X,), (V2,))[1]
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-12)


def test_grad_of_jvp_of_jvp():
    x, (v1, v2), f, tfn, X, (V1, V2) = _mix_case()
    got = ag.grad(lambda x: ag.jvp(lambda x: ag.jvp(f, (x,), (v1,))[1], (x,), (v2,))[1])(x)
    want = tf.grad(lambda x: tf.jvp(lambda x: tf.jvp(tfn, (x,), (V1,))[1], (x,), (V2,))[1])(X)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# custom_jvp under higher-order derivatives


def _softplus(custom: bool):
    def softplus(x, k):
        return ag.logaddexp(x * k, 0.0)

    if not custom:
        return softplus
    softplus = ag.custom_jvp(softplus)

    @softplus.defjvp
    def _(primals, tangents):
        (x, k), (vx, vk) = primals, tangents
        s = 1 / (1 + ag.exp(-x * k))
        return softplus(x, k), s * (vx * k + x * vk)

    return softplus


X_SP = np.array([-3.0, 0.5, 4.0])
K_SP = np.array([1.0, 2.0, 0.5])
V_SP = np.array([1.0, -1.0, 0.5])
W_SP = np.array([0.3, 0.2, 0.1])
CUSTOM_CASES = {
    "hessian": lambda sp: ag.hessian(lambda x: ag.sum(sp(x, K_SP)))(X_SP),
    "hessian_two_args": lambda sp: ag.hessian(lambda x, k: ag.sum(sp(x, k) * x),
                                              argnums=(0, 1))(X_SP, K_SP),
    "grad_of_grad": lambda sp: ag.grad(lambda x: ag.sum(
        ag.grad(lambda x: ag.sum(sp(x, K_SP) ** 2))(x) * x))(X_SP),
    "third_order": lambda sp: ag.jacrev(ag.hessian(lambda x: ag.sum(sp(x, K_SP))))(X_SP),
    "jvp_of_grad": lambda sp: ag.jvp(ag.grad(lambda x: ag.sum(sp(x, K_SP) ** 2)), (X_SP,),
                                     (V_SP,))[1],
    "jvp_of_jvp": lambda sp: ag.jvp(lambda x: ag.jvp(lambda x: sp(x, K_SP), (x,), (V_SP,))[1],
                                    (X_SP,), (W_SP,))[1],
    "jacfwd_of_jacfwd": lambda sp: ag.jacfwd(ag.jacfwd(lambda x: sp(x, x * K_SP)))(X_SP),
    "grad_of_jvp": lambda sp: ag.grad(lambda x: ag.sum(
        ag.jvp(lambda x: sp(x, K_SP), (x,), (V_SP,))[1] ** 2))(X_SP),
}


@pytest.mark.parametrize("name", list(CUSTOM_CASES))
def test_custom_jvp_higher_order_matches_the_plain_function(name):
    got = CUSTOM_CASES[name](_softplus(True))
    want = CUSTOM_CASES[name](_softplus(False))
    for g, w in zip(np.atleast_1d(np.asarray(got, dtype=object)).ravel(),
                    np.atleast_1d(np.asarray(want, dtype=object)).ravel()):
        np.testing.assert_allclose(_np(g).astype(float), _np(w).astype(float), rtol=1e-12,
                                   atol=1e-14)


def test_custom_jvp_hessian_uses_the_rule():
    # the rule is stable where autodiff of the function overflows: d²/dx² log(1 + eˣ) = σ(x)(1-σ(x))
    @ag.custom_jvp
    def log1pexp(x):
        return ag.log1p(ag.exp(x))

    @log1pexp.defjvp
    def _(primals, tangents):
        (x,), (v,) = primals, tangents
        return log1pexp(x), v / (1 + ag.exp(-x))

    z = np.array([-50.0, 0.0, 40.0, 800.0])
    e = np.exp(-np.abs(z))
    want = e / (1 + e) ** 2  # σ(z)(1 - σ(z)), without cancellation
    with np.errstate(over="ignore"):
        h = ag.hessian(lambda z: ag.sum(log1pexp(z)))(z)
        hv = ag.jvp(ag.grad(lambda z: ag.sum(log1pexp(z))), (z,), (np.ones(4),))[1]
        hf = ag.jacfwd(ag.jacfwd(lambda z: ag.sum(log1pexp(z))))(z)
    np.testing.assert_allclose(np.diag(h), want, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(hv, want, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(hf, h, rtol=1e-12, atol=1e-300)


# ---------------------------------------------------------------------------------------------
# In-place writes through views under forward mode (PyTorch's forward AD semantics)


def _idx(m, a, like):
    return ag.tensor(np.array(a), backend=like.backend) if m is ag else torch.tensor(a)


def _diag(m, y):
    return ag.linalg.diagonal(y) if m is ag else torch.diagonal(y)


def _w_setall(x, m):
    y = x * 1
    v = y[1:]
    v[...] = v * 2
    return y


def _w_imul_view(x, m):
    y = x * 1
    v = y[1:3]
    v *= x[:2]
    return y * v[0]


def _w_slice_imul(x, m):
    y = x * 1
    y[1:3] *= 2
    return y


def _w_view_of_view(x, m):
    y = x * 1
    z = y[1:]
    z += 1
    z2 = z[1:]
    z2[...] = m.sin(z2)
    return y, z


def _w_root_then_view(x, m):
    y = x * 1
    z = y[1:]
    y[2] = 5 * x[0]
    return z * 1, y * 1


def _w_diagonal(x, m):
    y = m.reshape(x * 1, (2, 2))
    d = _diag(m, y)
    d *= m.exp(d)
    return y * 1


def _w_transpose(x, m):
    y = m.reshape(x * 1, (2, 2))
    t = y.T
    t[0, :] = x[:2] ** 2
    return y * 1, t * 1


def _w_into_zeros(x, m):
    y = m.zeros_like(x)
    z = y[::2]
    z += x[1:3] ** 3
    return y * 1


def _w_int_index(x, m):
    y = x * 1
    y[_idx(m, [0, 2], x)] = x[1:3] ** 2
    return y


def _w_mask(x, m):
    y = x * 1
    y[y > 0.6] = x[0] * 2
    return y


def _w_input_view(x, m):
    z = x[1:]
    z *= 3
    return x * 1


def _w_detached_view(x, m):
    # a detach() view takes the values written, its base keeps its tangent (as torch.func.jvp)
    y = x * 1
    d = y.detach()
    d[0] = x[1] * 3
    d[1:] *= x[1:]
    return y


VIEW_WRITES = {f.__name__[3:]: f for f in (
    _w_setall, _w_imul_view, _w_slice_imul, _w_view_of_view, _w_root_then_view, _w_diagonal,
    _w_transpose, _w_into_zeros, _w_int_index, _w_mask, _w_input_view, _w_detached_view)}


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("name", list(VIEW_WRITES))
def test_jvp_through_in_place_writes_matches_torch(name, backend):
    fn = VIEW_WRITES[name]
    x0, v0 = np.array([0.3, 0.5, 0.7, 1.1]), np.array([1.0, 2.0, 3.0, 4.0])
    y, jv = ag.jvp(lambda x: fn(x, ag), (ag.tensor(x0, backend=backend),),
                   (ag.tensor(v0, backend=backend),))
    yt, jvt = tf.jvp(lambda x: fn(x, torch), (torch.tensor(x0),), (torch.tensor(v0),))
    pairs = zip(*(p if isinstance(p, tuple) else (p,) for p in (y, jv, yt, jvt)))
    for a, t, at, tt in pairs:
        np.testing.assert_allclose(_np(a), at.detach().numpy(), rtol=1e-13)
        np.testing.assert_allclose(_np(t), tt.detach().numpy(), rtol=1e-13, atol=1e-15)


def test_view_writes_under_nested_forward_and_forward_over_reverse():
    def g(x, m):
        y = x * 1
        z = y[1:]
        z *= m.sin(x[:-1])
        y[0] = x[1] * x[3]
        return m.sum(y * y * y)

    x0, v0 = np.array([0.3, 0.5, 0.7, 1.1]), np.array([1.0, 2.0, 3.0, 4.0])
    want = tf.hessian(lambda x: g(x, torch))(torch.tensor(x0)).numpy()
    np.testing.assert_allclose(ag.jacfwd(ag.jacfwd(lambda x: g(x, ag)))(x0), want, rtol=1e-12)
    _, hv = ag.jvp(ag.grad(lambda x: g(x, ag)), (x0,), (v0,))
    np.testing.assert_allclose(hv, want @ v0, rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# Every op-table record of order >= 2: forward-over-forward against reverse-over-reverse

from .op_table import OPS, cases_of  # noqa: E402
from .test_forward_mode import _direction, _host_inputs, _rdot, _real_loss, _seed, _t  # noqa: E402

SECOND = [(op, shapes) for op, shapes in cases_of(OPS) if op.order >= 2]
SECOND_IDS = [f"{op.name}-{'x'.join(str(s) for s in shapes) or 'scalar'}" for op, shapes in SECOND]
# the second-order sweeps: NumPy on every run; array_api_strict (the first-order sweep proves the
# JVP rules standard there) with `-m slow`, to keep the default suite within its time
SECOND_ORDER_BACKENDS = [p for p in CPU_BACKENDS if p.values[0] == "numpy"] + [
    pytest.param(p.values[0], marks=[*p.marks, pytest.mark.slow], id=p.id)
    for p in CPU_BACKENDS if p.values[0] != "numpy"]


@pytest.mark.parametrize("backend", SECOND_ORDER_BACKENDS)
@pytest.mark.parametrize(("op", "shapes"), SECOND, ids=SECOND_IDS)
def test_jvp_of_jvp_matches_the_hessian_vector_product(op, shapes, backend, monkeypatch):
    """⟨u, H v⟩ by two nested jvps (each JVP rule run on Tensors that carry the outer
    tangents; no fallback to two VJPs) = ⟨u, hvp(v)⟩ by reverse-over-reverse."""
    if backend in op.skip:
        pytest.skip(op.skip[backend])
    real = func._jvp_double_vjp
    monkeypatch.setattr(func, "_jvp_double_vjp", lambda *a: pytest.fail("two VJPs ran"))
    host = _host_inputs(op, shapes)
    rng = np.random.default_rng(_seed(op, shapes) + 2)
    vs = [_direction(rng, a) for a in host]
    us = [_direction(rng, a) for a in host]
    xs = [_t(a, backend) for a in host]
    with ag.no_grad():
        y0 = op.fn(*xs)
    w = _t(np.linspace(0.5, 1.5, max(y0.size, 1)).reshape(y0.shape), backend)
    loss = _real_loss(op.fn, w)
    tv = [_t(v, backend) for v in vs]
    _, uhv = ag.jvp(lambda *xs: ag.jvp(loss, xs, tv)[1], xs, [_t(u, backend) for u in us])
    monkeypatch.setattr(func, "_jvp_double_vjp", real)
    _, hv = ag.hvp(loss, xs, tv)
    want = sum(_rdot(u, _np(h)) for u, h in zip(us, hv))
    got = float(_np(uhv))
    assert abs(got - want) <= 1e-7 * (1 + abs(want)), (op.name, got, want)


def _scaled_sin():
    """sin whose custom_vjp rule is twice the derivative: shows which rule a mode uses."""
    @ag.custom_vjp
    def ssin(x):
        return ag.sin(x)

    ssin.defvjp(lambda x: (ssin(x), ag.cos(x)), lambda c, g: (2 * c * g,))
    return ssin


def test_custom_vjp_under_nested_forward_mode_uses_its_rule():
    ssin = _scaled_sin()
    x = np.array([0.5, -2.0, 1.0])
    v, u = np.array([1.0, 0.5, -1.0]), np.array([0.3, 1.0, 2.0])
    f = lambda x: ag.sum(ssin(x) * x)  # noqa: E731
    # the gradient by the rule is 2 cos(x)·x + ssin(x); its derivative, by the rule again
    # where ssin is differentiated: -2 sin(x)·x + 2 cos(x) + 2 cos(x)
    want = np.diag(-2 * np.sin(x) * x + 4 * np.cos(x))
    np.testing.assert_allclose(ag.hessian(f)(x), want, rtol=1e-12)
    np.testing.assert_allclose(ag.jacfwd(ag.jacfwd(f))(x), want, rtol=1e-12)
    _, uhv = ag.jvp(lambda x: ag.jvp(ssin, (x,), (v,))[1], (x,), (u,))
    np.testing.assert_allclose(uhv, -2 * np.sin(x) * v * u, rtol=1e-12)
    _, d3 = ag.jvp(lambda x: ag.jvp(lambda x: ag.jvp(ssin, (x,), (v,))[1], (x,), (u,))[1],
                   (x,), (v,))
    np.testing.assert_allclose(d3, -2 * np.cos(x) * v * u * v, rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# Leaked perturbations: a value made inside a jvp that has returned is a constant to every later
# trace -- a level number alone would confuse it with a sibling trace's own perturbation


def test_a_value_leaked_from_a_finished_jvp_is_a_constant_in_the_next():
    leak = []
    x = ag.tensor([1.0, 2.0])

    def f(z):
        leak.append(z * 2.0)
        return z * 1.0

    ag.jvp(f, (x,), (ag.tensor([1.0, 1.0]),))
    y, t = ag.jvp(lambda z: z + leak[0], (x,), (ag.tensor([10.0, 10.0]),))
    np.testing.assert_array_equal(y.numpy(), [3.0, 6.0])
    np.testing.assert_array_equal(t.numpy(), [10.0, 10.0])  # not 12: the leak's tangent is dead
    y, t = ag.jvp(lambda z: leak[0] * 1.0, (x,), (ag.tensor([10.0, 10.0]),))
    np.testing.assert_array_equal(t.numpy(), [0.0, 0.0])
    # and at level 2 of a later nest: still a constant
    def outer(z):
        return ag.jvp(lambda w: w * leak[0], (z,), (ag.tensor([1.0, 1.0]),))[1]

    y, t = ag.jvp(outer, (x,), (ag.tensor([1.0, 1.0]),))
    np.testing.assert_array_equal(y.numpy(), [2.0, 4.0])
    np.testing.assert_array_equal(t.numpy(), [0.0, 0.0])


def test_sibling_nested_jvps_do_not_share_a_perturbation():
    leak = []
    x, v = ag.tensor([1.0, 2.0]), ag.tensor([1.0, 1.0])

    def inner1(z):
        leak.append(z * 3.0)
        return z * 1.0

    def outer_tangent(z):
        ag.jvp(inner1, (z,), (ag.tensor([1.0, 1.0]),))
        return ag.jvp(lambda w: w + leak[-1], (z,), (ag.tensor([5.0, 5.0]),))[1]

    y, t = ag.jvp(outer_tangent, (x,), (v,))
    np.testing.assert_array_equal(y.numpy(), [5.0, 5.0])  # not 8: the sibling's 3 is no tangent
    np.testing.assert_array_equal(t.numpy(), [0.0, 0.0])

    def outer_value(z):  # the leak is 3z to the outer (live) trace: it keeps that tangent
        ag.jvp(inner1, (z,), (ag.tensor([1.0, 1.0]),))
        return ag.jvp(lambda w: w + leak[-1], (z,), (ag.tensor([5.0, 5.0]),))[0]

    y, t = ag.jvp(outer_value, (x,), (v,))
    np.testing.assert_array_equal(y.numpy(), [4.0, 8.0])
    np.testing.assert_array_equal(t.numpy(), [4.0, 4.0])
    # jacfwd of the same: d(4z)/dz
    np.testing.assert_array_equal(ag.jacfwd(outer_value)(x).numpy(), 4.0 * np.eye(2))
