"""Function transforms and graph control, on NumPy and array_api_strict."""

from __future__ import annotations

from typing import NamedTuple

import array_api_compat
import numpy as np
import pytest

import agnograd as ag
from agnograd.testing import numerical_grad

from .conftest import BACKENDS, CPU_BACKENDS


def _raw(backend, values):
    return ag.tensor(np.asarray(values, dtype=np.float64), backend=backend).data


def _np(a):
    return np.asarray(ag.tensor(a).numpy()) if not isinstance(a, np.ndarray) else a


def f_scalar(x, y):
    return ag.sum(ag.sin(x) * y**2) + ag.sum(x * x) * 0.5


def f_vector(x):
    return ag.concat([ag.sin(x) * x[0], ag.exp(x[1:]) ** 2], axis=0)


def _fd(f, *xs, backend="numpy"):
    ts = [ag.tensor(x, backend=backend) for x in xs]
    return numerical_grad(f, ts)


# ---------------------------------------------------------------------------------------------
# grad and value_and_grad


@pytest.mark.parametrize("backend", BACKENDS)
def test_grad_matches_finite_differences_and_returns_raw_arrays(backend):
    x = _raw(backend, [0.3, -1.2, 2.0])
    y = _raw(backend, [1.5, 0.5, -0.7])
    gx = ag.grad(f_scalar)(x, y)
    assert type(gx) is type(x)                       # NumPy in, NumPy out; strict in, strict out
    fx, fy = _fd(f_scalar, x, y, backend=backend)
    np.testing.assert_allclose(_np(gx), fx, rtol=1e-6)
    gx2, gy2 = ag.grad(f_scalar, argnums=(0, 1))(x, y)
    np.testing.assert_allclose(_np(gy2), fy, rtol=1e-6)
    value, g = ag.value_and_grad(f_scalar, argnums=1)(x, y)
    assert float(ag.tensor(value).item()) == pytest.approx(float(f_scalar(ag.tensor(x), ag.tensor(y)).item()))
    np.testing.assert_allclose(_np(g), fy, rtol=1e-6)


def test_grad_of_tensors_returns_tensors_and_of_scalars_floats():
    x = ag.tensor([1.0, 2.0])
    g = ag.grad(lambda t: ag.sum(t**3))(x)
    assert isinstance(g, ag.Tensor) and not g.requires_grad
    np.testing.assert_allclose(g.numpy(), [3.0, 12.0])
    assert ag.grad(lambda t: t**3)(2.0) == pytest.approx(12.0)


def test_grad_has_aux_and_pytrees():
    params = {"w": np.array([1.0, 2.0]), "b": [np.array(0.5), 3.0]}

    def loss(p, scale):
        value = ag.sum(p["w"] ** 2) * scale + p["b"][0] * p["b"][1]
        return value, {"note": "aux"}

    g, aux = ag.grad(loss, has_aux=True)(params, 2.0)
    assert aux == {"note": "aux"}
    assert set(g) == {"w", "b"} and isinstance(g["b"], list)
    np.testing.assert_allclose(g["w"], [4.0, 8.0])
    assert float(g["b"][0]) == 3.0 and g["b"][1] == pytest.approx(0.5)


def test_third_order_grad():
    f = lambda x: ag.sin(x) * x**3
    d3 = ag.grad(ag.grad(ag.grad(f)))(0.7)
    v = 0.7
    expected = -v**3 * np.cos(v) - 9 * v**2 * np.sin(v) + 18 * v * np.cos(v) + 6 * np.sin(v)
    assert d3 == pytest.approx(expected, rel=1e-12)


def test_grad_of_third_party_array_api_code():
    """A function written only against array_api_compat.array_namespace becomes differentiable."""

    def softmax_entropy(x):
        xp = array_api_compat.array_namespace(x)
        z = x - xp.max(x)
        p = xp.exp(z) / xp.sum(xp.exp(z))
        return -xp.sum(p * xp.log(p))

    x = np.array([0.2, -1.0, 0.5, 2.0])
    g = ag.grad(softmax_entropy)(x)
    (fd,) = _fd(softmax_entropy, x)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9)


def test_grad_errors_are_clear():
    with pytest.raises(TypeError, match=r"scalar.*shape \(2,\).*vjp"):
        ag.grad(lambda x: x * 2)(np.ones(2))
    with pytest.raises(IndexError, match="argnums=3"):
        ag.grad(lambda x: ag.sum(x))(np.ones(2), argnums=None) if False else ag.grad(
            lambda x: ag.sum(x), argnums=3)(np.ones(2))
    with pytest.raises(TypeError, match="int64"):
        ag.grad(lambda x: ag.sum(x))(np.array([1, 2]))
    with pytest.raises(TypeError, match="pair"):
        ag.grad(lambda x: ag.sum(x), has_aux=True)(np.ones(2))


# ---------------------------------------------------------------------------------------------
# vjp, jvp, jacobian, hessian, hvp: checked against finite differences and each other


@pytest.mark.parametrize("backend", BACKENDS)
def test_jacobian_rows_equal_vjps_with_unit_vectors(backend):
    x = _raw(backend, [0.4, 0.9, -0.3])
    J = _np(ag.jacobian(f_vector)(x))
    assert J.shape == (5, 3)
    out, vjp_fn = ag.vjp(f_vector, x)
    for k in range(5):
        e = np.zeros(5)
        e[k] = 1.0
        (row,) = vjp_fn(_raw(backend, e))
        np.testing.assert_allclose(_np(row), J[k], rtol=1e-12, atol=1e-14)
    # and against finite differences of each output
    for k in range(5):
        (fd,) = _fd(lambda t, k=k: f_vector(t)[k], x, backend=backend)
        np.testing.assert_allclose(J[k], fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("backend", BACKENDS)
def test_jvp_equals_jacobian_times_v(backend):
    x = _raw(backend, [0.4, 0.9, -0.3])
    v = np.array([0.5, -1.0, 2.0])
    out, jv = ag.jvp(f_vector, (x,), (_raw(backend, v),))
    J = _np(ag.jacobian(f_vector)(x))
    np.testing.assert_allclose(_np(jv), J @ v, rtol=1e-12)
    np.testing.assert_allclose(_np(out), _np(f_vector(ag.tensor(x))), rtol=1e-15)


@pytest.mark.parametrize("backend", BACKENDS)
def test_hvp_equals_hessian_times_v_and_finite_differences(backend):
    f = lambda x: ag.sum(ag.sin(x) * x) * ag.sum(x**2)
    x = _raw(backend, [0.4, 0.9, -0.3])
    v = np.array([0.5, -1.0, 2.0])
    H = _np(ag.hessian(f)(x))
    assert H.shape == (3, 3)
    np.testing.assert_allclose(H, H.T, rtol=1e-12)
    value, (hv,) = ag.hvp(f, (x,), (_raw(backend, v),))
    np.testing.assert_allclose(_np(hv), H @ v, rtol=1e-12)
    for i in range(3):  # each Hessian row = finite differences of one gradient component
        (fd,) = _fd(lambda t, i=i: ag.grad(f)(t)[i], x, backend=backend)
        np.testing.assert_allclose(H[i], fd, rtol=1e-5, atol=1e-7)


def test_hessian_of_the_three_layer_loss_matches_finite_differences_of_its_gradient():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 3))
    labels = np.eye(2)[rng.integers(0, 2, size=6)]
    W1, W2 = rng.normal(size=(3, 4)) * 0.5, rng.normal(size=(4, 4)) * 0.5
    W3 = rng.normal(size=(2, 2)) * 0.5  # the small weight matrix: 4 entries, a 2x2x2x2 Hessian
    W3_in = rng.normal(size=(4, 2)) * 0.5

    def loss(w3):
        h1 = ag.tanh(ag.tensor(x) @ W1)
        h2 = ag.tanh(h1 @ W2)
        logits = (h2 @ W3_in) @ w3
        logp = logits - ag.logsumexp(logits, axis=1, keepdims=True)
        return -ag.mean(ag.sum(ag.tensor(labels) * logp, axis=1))

    H = ag.hessian(loss)(W3)
    assert H.shape == (2, 2, 2, 2)
    grad_fn = ag.grad(loss)
    eps = 1e-6
    for i in range(2):
        for j in range(2):
            d = np.zeros((2, 2))
            d[i, j] = eps
            fd = (grad_fn(W3 + d) - grad_fn(W3 - d)) / (2 * eps)
            np.testing.assert_allclose(H[:, :, i, j], fd, rtol=1e-5, atol=1e-8)


def test_vjp_fn_can_be_called_twice_and_checks_cotangent_shape():
    out, fn = ag.vjp(lambda a, b: a * b, np.array([1.0, 2.0]), np.array([3.0, 4.0]))
    ga, gb = fn(np.ones(2))
    ga2, _ = fn(np.array([2.0, 2.0]))
    np.testing.assert_allclose(ga2, 2 * ga)
    with pytest.raises(ValueError, match="cotangent"):
        fn(np.ones(3))


def test_transforms_inside_backward_keep_the_graph():
    """A gradient penalty: grad of a Tensor that requires grad stays differentiable."""
    w = ag.tensor([0.5, -1.0], requires_grad=True)
    g = ag.grad(lambda t: ag.sum(ag.sin(t) * t))(w)
    assert g.requires_grad
    ag.sum(g * g).backward()
    wv = np.array([0.5, -1.0])
    gv = np.cos(wv) * wv + np.sin(wv)
    np.testing.assert_allclose(w.grad.numpy(), 2 * gv * (2 * np.cos(wv) - wv * np.sin(wv)))


# ---------------------------------------------------------------------------------------------
# custom rules


@ag.custom_vjp
def softplus(x):
    return ag.logaddexp(x, 0.0)


def _softplus_fwd(x):
    return softplus(x), (x,)


def _softplus_bwd(res, g):
    (x,) = res
    return (g * ag.exp(-ag.logaddexp(-x, 0.0)),)   # sigmoid(x), stable for large |x|


softplus.defvjp(_softplus_fwd, _softplus_bwd)


def test_custom_vjp_stable_softplus():
    naive = lambda x: ag.log(1 + ag.exp(x))
    x = np.array([-800.0, 0.0, 800.0])
    with np.errstate(over="ignore", invalid="ignore"):
        g_naive = ag.grad(lambda t: ag.sum(naive(t)))(x)
    assert not np.all(np.isfinite(g_naive))             # the naive rule overflows
    g = ag.grad(lambda t: ag.sum(softplus(t)))(x)
    np.testing.assert_allclose(g, [0.0, 0.5, 1.0])
    # higher order through the custom bwd: d²/dx² softplus = sigmoid(x)(1 - sigmoid(x))
    d2 = ag.grad(ag.grad(lambda t: softplus(t)))(0.3)
    s = 1 / (1 + np.exp(-0.3))
    assert d2 == pytest.approx(s * (1 - s), rel=1e-12)
    assert float(softplus(ag.tensor(0.0)).item()) == pytest.approx(np.log(2.0))


class Cube(ag.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x**3

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 3 * x**2 * g


def test_function_class():
    x = ag.tensor([1.0, 2.0], requires_grad=True)
    y = Cube.apply(x)
    ag.sum(y).backward()
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 12.0])
    assert ag.grad(ag.grad(lambda t: Cube.apply(t)))(2.0) == pytest.approx(12.0)


def test_custom_vjp_bwd_arity_is_checked():
    @ag.custom_vjp
    def f(x, y):
        return x * y

    f.defvjp(lambda x, y: (x * y, (x, y)), lambda res, g: (g,))
    with pytest.raises(TypeError, match="one cotangent per positional input"):
        ag.grad(lambda a: ag.sum(f(a, a)))(np.ones(2))


# ---------------------------------------------------------------------------------------------
# hooks, checkpoint, anomaly detection, graph export


def test_hooks_inspect_and_replace_gradients():
    x = ag.tensor([1.0, 2.0], requires_grad=True)
    seen = []
    h = ag.exp(x)
    handle = h.register_hook(lambda g: seen.append(g.numpy().copy()))
    x.register_hook(lambda g: g * 10.0)
    ag.sum(h * 2.0).backward()
    np.testing.assert_allclose(seen[0], [2.0, 2.0])
    np.testing.assert_allclose(x.grad.numpy(), 10 * 2 * np.exp([1.0, 2.0]))
    handle.remove()
    with pytest.raises(RuntimeError, match="does not require grad"):
        ag.tensor(1.0).register_hook(print)


def test_checkpoint_saves_less_and_gives_identical_gradients():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(64, 64)) * 0.1
    x0 = rng.normal(size=(32, 64))

    def block(x, W):
        for _ in range(4):
            x = ag.tanh(x @ W)
        return x

    W1 = ag.tensor(w, requires_grad=True)
    y1 = ag.sum(block(ag.tensor(x0), W1) ** 2)
    W2 = ag.tensor(w, requires_grad=True)
    y2 = ag.sum(ag.checkpoint(block, ag.tensor(x0), W2) ** 2)
    assert ag.saved_nbytes(y2) < ag.saved_nbytes(y1) / 3
    y1.backward()
    y2.backward()
    np.testing.assert_allclose(W2.grad.numpy(), W1.grad.numpy(), rtol=1e-12)
    # second order through a checkpoint
    h1 = ag.hessian(lambda t: ag.sum(block(ag.tensor(x0[:2, :3]), t)))(w[:3, :3])
    h2 = ag.hessian(lambda t: ag.sum(ag.checkpoint(block, ag.tensor(x0[:2, :3]), t)))(w[:3, :3])
    np.testing.assert_allclose(h2, h1, rtol=1e-10, atol=1e-12)


def test_detect_anomaly_names_the_op_and_where_it_was_made():
    x = ag.tensor([0.0, 1.0], requires_grad=True)
    with ag.detect_anomaly(), np.errstate(divide="ignore"):
        y = ag.sum(ag.sqrt(x))          # d sqrt/dx = inf at 0
        with pytest.raises(FloatingPointError, match=r"'sqrt'.*test_func\.py:\d+"):
            y.backward()
    assert x.grad is None               # the check fails before any .grad is touched
    with np.errstate(divide="ignore"):
        ag.sum(ag.sqrt(x)).backward()   # outside the block: IEEE inf, no error
    assert np.isinf(x.grad.numpy()[0])


def test_detect_anomaly_is_a_grad_mode_of_the_autograd_package():
    from agnograd import autograd, custom

    assert ag.detect_anomaly is autograd.detect_anomaly is autograd.mode.detect_anomaly
    assert custom.detect_anomaly is ag.detect_anomaly  # the old home still works
    assert not autograd.anomaly_mode.enabled
    with ag.detect_anomaly():
        assert autograd.anomaly_mode.enabled
        with ag.detect_anomaly():
            pass
        assert autograd.anomaly_mode.enabled  # nested blocks restore, not clear
    assert not autograd.anomaly_mode.enabled


def test_detect_anomaly_blames_the_first_op_in_backward_order():
    """The flags are read back once after the walk; the error still names the op nearest the
    loss whose gradient went non-finite (log at sqrt(0) = 0), not a later victim (sqrt)."""
    x = ag.tensor([0.0, 4.0], requires_grad=True)
    with ag.detect_anomaly(), np.errstate(divide="ignore", invalid="ignore"):
        y = ag.sum(ag.log(ag.sqrt(x)) * 2.0)
        with pytest.raises(FloatingPointError, match=r"'log' produced .* input 0 \(shape \(2,\)\)"):
            y.backward()
        ag.sum(ag.sqrt(x + 1.0)).backward()  # finite everywhere: no error
    np.testing.assert_allclose(x.grad.numpy(), [0.5, 0.5 / 5 ** 0.5])


def test_graph_export_draws_the_three_layer_chain():
    rng = np.random.default_rng(0)
    x = ag.tensor(rng.normal(size=(4, 3)))
    t1 = ag.tensor(rng.normal(size=(3, 5)), requires_grad=True)
    t2 = ag.tensor(rng.normal(size=(5, 5)), requires_grad=True)
    t3 = ag.tensor(rng.normal(size=(5, 2)), requires_grad=True)
    x1 = ag.tanh(x @ t1)
    x2 = ag.tanh(x1 @ t2)
    x3 = x2 @ t3
    L = ag.mean(x3 ** 2)
    names = {"x": x, "θ1": t1, "θ2": t2, "θ3": t3, "x1": x1, "x2": x2, "x3": x3, "L": L}
    dot = ag.to_dot(L, names)
    mer = ag.to_mermaid(L, names)
    for label in ("x (4, 3)", "θ1 (3, 5)", "θ2", "θ3", "x1 = tanh", "x2 = tanh", "x3 = matmul",
                  "L = mean"):
        assert label in dot and label in mer
    assert dot.startswith("digraph") and mer.startswith("flowchart LR")
    # the chain: x1's node feeds x2's matmul, which feeds x2, ...
    ids = {}
    for line in dot.splitlines():
        if "[label=" in line:
            ids[line.split('label="')[1].split('"')[0]] = line.split()[0]
    assert f"{ids['x1 = tanh']} ->" in dot
    assert f"{ids['θ3 (5, 2)']} -> {ids['x3 = matmul']};" in dot


# ---------------------------------------------------------------------------------------------
# Pytree outputs (as JAX's vjp / jvp / jacrev / hessian)


class _Pair(NamedTuple):
    a: object
    b: object


def _tree_f(x, y):
    return {"s": ag.sum(x * x), "v": (ag.sin(x), _Pair(x[:2] * y, ag.exp(y)))}


_X = np.array([1.0, 2.0, 3.0])
_Y = np.array([0.5, -1.0])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_vjp_of_a_pytree_output(backend):
    x, y = ag.tensor(_X, backend=backend), ag.tensor(_Y, backend=backend)
    out, fn = ag.vjp(_tree_f, x, y)
    assert set(out) == {"s", "v"} and isinstance(out["v"][1], _Pair)
    np.testing.assert_allclose(out["v"][1].b.numpy(), np.exp(_Y))
    ct = {"s": 2.0, "v": (np.ones(3), _Pair(np.full(2, 3.0), np.ones(2)))}
    ct = ag.pytree.tree_map(lambda c: c if isinstance(c, float) else ag.tensor(c, backend=backend), ct)
    gx, gy = fn(ct)
    np.testing.assert_allclose(gx.numpy(), 4 * _X + np.cos(_X) + 3 * np.r_[_Y, 0.0])
    np.testing.assert_allclose(gy.numpy(), 3 * _X[:2] + np.exp(_Y))
    with pytest.raises(ValueError, match="structure"):
        fn((1.0, 2.0))


def test_jvp_of_a_pytree_output():
    out, tan = ag.jvp(_tree_f, (_X, _Y), (np.ones(3), np.array([1.0, 0.0])))
    assert isinstance(tan["v"][1], _Pair)
    np.testing.assert_allclose(tan["s"], 2 * _X.sum())
    np.testing.assert_allclose(tan["v"][0], np.cos(_X))
    np.testing.assert_allclose(tan["v"][1].a, _Y + _X[:2] * np.array([1.0, 0.0]))
    np.testing.assert_allclose(tan["v"][1].b, np.exp(_Y) * np.array([1.0, 0.0]))


def test_jacobian_of_a_pytree_output_nests_out_outside_in_inside():
    J = ag.jacobian(_tree_f, argnums=(0, 1))(_X, _Y)
    assert isinstance(J["v"][1], _Pair) and isinstance(J["s"], tuple)
    np.testing.assert_allclose(J["s"][0], 2 * _X)
    np.testing.assert_allclose(J["s"][1], np.zeros(2))
    np.testing.assert_allclose(J["v"][0][0], np.diag(np.cos(_X)))
    np.testing.assert_allclose(J["v"][1].a[0], np.c_[np.diag(_Y), np.zeros(2)])
    np.testing.assert_allclose(J["v"][1].a[1], np.diag(_X[:2]))
    single = ag.jacobian(lambda x: (2 * x, ag.sum(x)))(_X)
    np.testing.assert_allclose(single[0], 2 * np.eye(3))
    np.testing.assert_allclose(single[1], np.ones(3))
    # a pytree input and a pytree output
    Jd = ag.jacobian(lambda p: [p["a"] * p["b"][0]])({"a": _X, "b": _Y})
    np.testing.assert_allclose(Jd[0]["a"], np.eye(3) * _Y[0])
    np.testing.assert_allclose(Jd[0]["b"], np.c_[_X, np.zeros(3)])


def test_hessian_of_pytree_inputs_is_nested():
    f = lambda p: ag.sum(p["a"] ** 2 * p["b"][0]) + ag.sum(p["b"] ** 3)
    H = ag.hessian(f)({"a": _X, "b": _Y})
    np.testing.assert_allclose(H["a"]["a"], 2 * _Y[0] * np.eye(3))
    np.testing.assert_allclose(H["a"]["b"], np.c_[2 * _X, np.zeros(3)])
    np.testing.assert_allclose(H["b"]["a"], np.c_[2 * _X, np.zeros(3)].T)
    np.testing.assert_allclose(H["b"]["b"], np.diag(6 * _Y))
    H2 = ag.hessian(lambda a, b: ag.sum(a ** 2) * ag.sum(b), argnums=(0, 1))(_X, _Y)
    np.testing.assert_allclose(H2[0][1], np.outer(2 * _X, np.ones(2)))
    np.testing.assert_allclose(H2[1][1], np.zeros((2, 2)))


def test_vjp_of_a_pytree_output_against_torch():
    torch = pytest.importorskip("torch")
    x = torch.tensor(_X, requires_grad=True)
    y = torch.tensor(_Y, requires_grad=True)
    outs = (torch.sin(x) * 2, (x[:2] * y).sum())
    gx, gy = torch.autograd.grad(outs, (x, y), (torch.ones(3), torch.tensor(1.5)))
    _, fn = ag.vjp(lambda a, b: (ag.sin(a) * 2, ag.sum(a[:2] * b)), _X, _Y)
    ours = fn((np.ones(3), 1.5))
    np.testing.assert_allclose(ours[0], gx.numpy())
    np.testing.assert_allclose(ours[1], gy.numpy())
