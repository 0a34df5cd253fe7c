"""Forward mode: every op-table record's JVP, checked two ways, and the forward transforms.

For every record of ``tests/op_table`` (on NumPy and array_api_strict):

* ``ag.jvp`` against central finite differences along a random direction;
* ``ag.jvp`` against ``ag.vjp`` through the transposition identity ``⟨u, J v⟩ = ⟨Jᵀu, v⟩``
  (the real inner product, a complex number being a pair of reals);
* for records with ``order >= 2``, forward-over-reverse (``jvp`` of ``grad``) against the
  reverse-over-reverse Hessian-vector product (``ag.hvp``).

Then ``jvp``/``jacfwd``/``jacrev``/``linearize`` against ``torch.func``, ``custom_jvp``, the mode
``jacobian`` picks, nesting, and the errors.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

import agnograd as ag
from agnograd.autograd import forward

from .conftest import CPU_BACKENDS
from .op_table import OPS, cases_of
from .op_table.core import OPS_BY_CATEGORY, draw

CASES = cases_of(OPS)
IDS = [f"{op.name}-{'x'.join(str(s) for s in shapes) or 'scalar'}" for op, shapes in CASES]
SECOND = [(op, shapes) for op, shapes in CASES if op.order >= 2]
SECOND_IDS = [f"{op.name}-{'x'.join(str(s) for s in shapes) or 'scalar'}" for op, shapes in SECOND]
# the second-order sweeps: NumPy on every run; array_api_strict (the first-order sweep proves the
# JVP rules standard there) with `-m slow`, to keep the default suite within its time
SECOND_ORDER_BACKENDS = [p for p in CPU_BACKENDS if p.values[0] == "numpy"] + [
    pytest.param(p.values[0], marks=[*p.marks, pytest.mark.slow], id=p.id)
    for p in CPU_BACKENDS if p.values[0] != "numpy"]


def _seed(op, shapes) -> int:
    return zlib.crc32(f"jvp{op.name}{shapes}".encode())


def _host_inputs(op, shapes):
    return draw(op, shapes, zlib.crc32(f"{op.name}{shapes}".encode()))


def _direction(rng, a):
    v = rng.uniform(-1, 1, size=a.shape)
    if np.iscomplexobj(a):
        v = v + 1j * rng.uniform(-1, 1, size=a.shape)
    return v


def _t(a, backend):
    return ag.tensor(a, backend=backend, dtype=ag.complex128 if np.iscomplexobj(a) else ag.float64)


def _np(y):
    return np.asarray(y.numpy() if type(y) is ag.Tensor else y)


def _rdot(a, b) -> float:
    """The real inner product Re Σ conj(a)·b."""
    return float(np.real(np.sum(np.conj(np.asarray(a)) * np.asarray(b))))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize(("op", "shapes"), CASES, ids=IDS)
def test_jvp_against_finite_differences_and_the_vjp(op, shapes, backend):
    if backend in op.skip:
        pytest.skip(op.skip[backend])
    host = _host_inputs(op, shapes)
    rng = np.random.default_rng(_seed(op, shapes))
    vs = [_direction(rng, a) for a in host]
    xs = [_t(a, backend) for a in host]
    tangents = [_t(v, backend) for v in vs]
    y, jv = ag.jvp(op.fn, xs, tangents)
    assert jv.shape == y.shape and jv.dtype == y.dtype, (op.name, jv.dtype, y.dtype)
    jv = _np(jv)
    # central differences along v (complex inputs: a step in the complex direction v)
    eps = 1e-6
    with ag.no_grad():
        plus = _np(op.fn(*[_t(a + eps * v, backend) for a, v in zip(host, vs)]))
        minus = _np(op.fn(*[_t(a - eps * v, backend) for a, v in zip(host, vs)]))
    fd = (plus - minus) / (2 * eps)
    tol = max(op.rtol, 1e-6) * 10
    np.testing.assert_allclose(jv, fd, rtol=tol, atol=max(op.atol, 1e-7) * 10 + tol * 1e-2,
                               err_msg=f"jvp of {op.name} vs finite differences ({backend})")
    # the transposition identity <u, J v> = <Jᵀ u, v>
    u = _direction(rng, np.asarray(_np(y)))
    _, vjp_fn = ag.vjp(op.fn, *xs)
    cts = vjp_fn(_t(u, backend))
    lhs = _rdot(u, jv)
    rhs = sum(_rdot(_np(c), v) for c, v in zip(cts, vs))
    assert abs(lhs - rhs) <= 1e-8 * (1 + abs(lhs)), (op.name, lhs, rhs)


def _real_loss(fn, w):
    def loss(*xs):
        y = fn(*xs)
        if y.dtype.kind == "c":
            return ag.sum(ag.real(y) * w) + ag.sum(ag.imag(y) * (w * w))
        return ag.sum(y * w)
    return loss


@pytest.mark.parametrize("backend", SECOND_ORDER_BACKENDS)
@pytest.mark.parametrize(("op", "shapes"), SECOND, ids=SECOND_IDS)
def test_forward_over_reverse_matches_the_hessian_vector_product(op, shapes, backend):
    """jvp of grad (the tangents carried through the backward pass) = reverse-over-reverse."""
    if backend in op.skip:
        pytest.skip(op.skip[backend])
    host = _host_inputs(op, shapes)
    rng = np.random.default_rng(_seed(op, shapes) + 1)
    vs = [_direction(rng, a) for a in host]
    xs = [_t(a, backend) for a in host]
    with ag.no_grad():
        y0 = op.fn(*xs)
    w = _t(np.linspace(0.5, 1.5, max(y0.size, 1)).reshape(y0.shape), backend)
    loss = _real_loss(op.fn, w)
    nums = tuple(range(len(xs)))
    _, fwd_rev = ag.jvp(ag.grad(loss, argnums=nums), xs, [_t(v, backend) for v in vs])
    _, rev_rev = ag.hvp(loss, xs, [_t(v, backend) for v in vs])
    for a, b in zip(fwd_rev, rev_rev):
        np.testing.assert_allclose(_np(a), _np(b), rtol=1e-7, atol=1e-9,
                                   err_msg=f"jvp(grad) of {op.name} vs hvp ({backend})")


# ---------------------------------------------------------------------------------------------
# Every differentiable record has a JVP rule


def test_every_elementwise_record_has_its_own_jvp_rule():
    """Elementwise ops derive their JVP rule from their VJP rule: none is transposed at run
    time (the slow generic path)."""
    from agnograd._ops import elementwise as ew

    names = {op.name for op in OPS_BY_CATEGORY["elementwise"]}
    ran = 0
    for op, shapes in CASES:
        if op.name not in names:
            continue
        xs = [_t(a, "numpy") for a in _host_inputs(op, shapes)]
        forward.transposed.clear()
        ag.jvp(op.fn, xs, xs)
        assert not set(forward.transposed) & set(ew.__all__), (op.name, forward.transposed)
        ran += 1
    assert ran > 20


# The ops whose JVP comes from transposing their VJP rule at run time (exact, but a few times the
# rule's cost): the list may only shrink. An op that loses its own JVP rule, or a new op without
# one, fails the test below until it gets a rule (forward.defjvp / forward.elementwise) or is
# added here on purpose.
TRANSPOSED = {
    "batch_norm", "group_norm", "instance_norm",
    "cholesky", "cross", "cross_entropy", "cumulative_prod", "diagonal", "eig", "eigh", "eigvals",
    "eigvalsh", "matrix_norm", "matrix_power", "meshgrid", "pinv", "prod", "qr", "repeat",
    "setitem", "slogdet", "sort", "svd", "svdvals", "tensordot", "tile", "unstack",
}


def test_every_record_has_a_jvp_rule_or_is_listed_as_transposed():
    forward.transposed.clear()
    for op, shapes in CASES:
        xs = [_t(a, "numpy") for a in _host_inputs(op, shapes)]
        ag.jvp(op.fn, xs, xs)
    unlisted = sorted(set(forward.transposed) - TRANSPOSED)
    assert not unlisted, (f"ops without a JVP rule of their own: {unlisted}; give them one "
                          "(agnograd.autograd.forward.defjvp beside the VJP rule)")


# ---------------------------------------------------------------------------------------------
# Forward mode is forward mode


def test_jvp_keeps_no_graph_and_runs_no_backward(monkeypatch):
    from agnograd.autograd import walk

    calls = []
    real = walk.backward
    monkeypatch.setattr(walk, "backward", lambda *a, **k: calls.append(1) or real(*a, **k))
    seen = {}

    def f(x):
        y = ag.tanh(ag.sin(x) * x + 1.0)
        seen["node"] = y._node
        return y

    x = np.linspace(-1, 1, 5)
    y, jv = ag.jvp(f, (x,), (np.ones(5),))
    assert seen["node"] is None and not calls
    d = np.cos(x) * x + np.sin(x)
    np.testing.assert_allclose(jv, (1 - np.tanh(np.sin(x) * x + 1) ** 2) * d, rtol=1e-12)


def test_complex_jvp_follows_the_real_pair_convention():
    z = np.array([0.3 + 0.4j, -1.2 + 0.1j])
    v = np.array([1.0 - 0.5j, 0.2 + 2j])
    _, jv = ag.jvp(lambda z: ag.exp(z) * ag.conj(z) + ag.abs(z), (z,), (v,))
    want = np.exp(z) * v * np.conj(z) + np.exp(z) * np.conj(v) + np.real(np.conj(z) * v) / np.abs(z)
    np.testing.assert_allclose(jv, want, rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# Against torch.func


def _pair():
    torch = pytest.importorskip("torch")

    def f(m, x, w):
        h = m.tanh(x @ w) * m.exp(-x.sum() * 0.1)
        return m.sin(h) + h * h

    def fa(x, w):
        return f(ag, x, w)

    def ft(x, w):
        return f(torch, x, w)

    return torch, fa, ft


X = np.linspace(-1.0, 1.0, 6).reshape(2, 3)
W = np.linspace(0.5, -0.7, 12).reshape(3, 4)


def test_jvp_and_linearize_match_torch_func():
    torch, fa, ft = _pair()
    vx, vw = np.cos(np.arange(6.0)).reshape(2, 3), np.sin(np.arange(12.0)).reshape(3, 4)
    y, jv = ag.jvp(fa, (X, W), (vx, vw))
    yt, jvt = torch.func.jvp(ft, (torch.tensor(X), torch.tensor(W)),
                             (torch.tensor(vx), torch.tensor(vw)))
    np.testing.assert_allclose(y, yt.numpy(), rtol=1e-12)
    np.testing.assert_allclose(jv, jvt.numpy(), rtol=1e-10)
    out, f_jvp = ag.linearize(fa, X, W)
    np.testing.assert_allclose(out, yt.numpy(), rtol=1e-12)
    np.testing.assert_allclose(f_jvp(vx, vw), jvt.numpy(), rtol=1e-10)
    _, lt = torch.func.linearize(ft, torch.tensor(X), torch.tensor(W))
    np.testing.assert_allclose(f_jvp(vx, vw), lt(torch.tensor(vx), torch.tensor(vw)).numpy(),
                               rtol=1e-10)


@pytest.mark.parametrize("argnums", [0, 1, (0, 1)])
def test_jacfwd_jacrev_jacobian_match_torch_func(argnums):
    torch, fa, ft = _pair()
    want = torch.func.jacfwd(ft, argnums=argnums)(torch.tensor(X), torch.tensor(W))
    want = [w.numpy() for w in (want if isinstance(want, tuple) else (want,))]
    for jac in (ag.jacfwd, ag.jacrev, ag.jacobian):
        got = jac(fa, argnums=argnums)(X, W)
        got = got if isinstance(got, tuple) else (got,)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12, err_msg=jac.__name__)


def test_forward_over_reverse_hvp_matches_torch_func():
    torch = pytest.importorskip("torch")
    x = np.linspace(-1, 1, 5)
    v = np.cos(np.arange(5.0))

    def f(m, x):
        return m.sum(m.sin(x) * x[::-1] ** 2 if m is ag else m.sin(x) * x.flip(0) ** 2)

    _, hv = ag.jvp(ag.grad(lambda x: f(ag, x)), (x,), (v,))
    _, hvt = torch.func.jvp(torch.func.grad(lambda x: f(torch, x)), (torch.tensor(x),),
                            (torch.tensor(v),))
    np.testing.assert_allclose(hv, hvt.numpy(), rtol=1e-12)


def test_grad_of_jvp_and_jvp_of_jvp_are_right():
    x = np.array([0.3, -0.7, 1.1])
    v = np.array([1.0, 0.5, -0.25])
    # d/dx <cos(x)·v, 1> = -sin(x)·v (reverse over forward)
    g = ag.grad(lambda x: ag.sum(ag.jvp(ag.sin, (x,), (v,))[1]))(x)
    np.testing.assert_allclose(g, -np.sin(x) * v, rtol=1e-12)
    # forward over forward: d/dx (cos(x)·v) · v = -sin(x)·v²
    _, jj = ag.jvp(lambda x: ag.jvp(ag.sin, (x,), (v,))[1], (x,), (v,))
    np.testing.assert_allclose(jj, -np.sin(x) * v * v, rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# jacobian's mode


def test_jacobian_picks_forward_when_inputs_are_fewer(monkeypatch):
    from agnograd import func

    used = []
    real_jvp = func.jvp
    monkeypatch.setattr(func, "jvp", lambda *a, **k: used.append("fwd") or real_jvp(*a, **k))
    tall = lambda x: ag.sin(ag.reshape(x, (2, 1)) * ag.ones((1, 5)))  # noqa: E731  R^2 -> R^10
    J = ag.jacobian(tall)(np.array([0.1, 0.2]))
    assert len(used) == 1 and J.shape == (2, 5, 2)  # one jvp, vmap-ed over the 2 unit tangents
    used.clear()
    wide = lambda x: ag.sum(ag.sin(x))  # noqa: E731  R^5 -> R
    ag.jacobian(wide)(np.linspace(0, 1, 5))
    assert not used


def test_jacfwd_of_a_complex_output_of_real_inputs():
    x = np.array([0.4, -0.2])
    f = lambda x: ag.exp(1j * x)  # noqa: E731
    np.testing.assert_allclose(ag.jacfwd(f)(x), ag.jacrev(f)(x), rtol=1e-12)
    np.testing.assert_allclose(ag.jacfwd(f)(x), np.diag(1j * np.exp(1j * x)), rtol=1e-12)


def test_jacfwd_of_a_real_output_of_complex_inputs_matches_jacrev():
    z = np.array([0.4 + 0.1j, -0.2 + 0.3j])
    f = lambda z: ag.abs(z) ** 2 + ag.real(z)  # noqa: E731
    np.testing.assert_allclose(ag.jacfwd(f)(z), ag.jacrev(f)(z), rtol=1e-12)
    with pytest.raises(TypeError, match="holomorphic"):
        ag.jacfwd(lambda z: z * z)(z)


# ---------------------------------------------------------------------------------------------
# custom_jvp


def _softplus():
    @ag.custom_jvp
    def softplus(x, k):
        return ag.logaddexp(x * k, 0.0)

    @softplus.defjvp
    def _(primals, tangents):
        (x, k), (vx, vk) = primals, tangents
        s = 1 / (1 + ag.exp(-x * k))
        return softplus(x, k), s * (vx * k + x * vk)

    return softplus


def test_custom_jvp_in_forward_and_reverse_mode():
    sp = _softplus()
    x = np.array([-30.0, 0.5, 40.0])
    k = np.array([1.0, 2.0, 0.5])
    s = 1 / (1 + np.exp(-x * k))
    _, jv = ag.jvp(sp, (x, k), (np.ones(3), np.zeros(3)))
    np.testing.assert_allclose(jv, s * k, rtol=1e-12)
    gx, gk = ag.grad(lambda x, k: ag.sum(sp(x, k)), argnums=(0, 1))(x, k)
    np.testing.assert_allclose(gx, s * k, rtol=1e-12)
    np.testing.assert_allclose(gk, s * x, rtol=1e-12)
    np.testing.assert_allclose(ag.jacfwd(lambda x: sp(x, k))(x), ag.jacrev(lambda x: sp(x, k))(x),
                               rtol=1e-12)
    t = ag.tensor(x, requires_grad=True)
    ag.sum(sp(t, ag.tensor(k))).backward()
    np.testing.assert_allclose(t.grad.numpy(), s * k, rtol=1e-12)


def test_custom_jvp_higher_order_reverse_is_right_and_defjvp_is_required():
    # (the derived VJP is differentiable: tests/test_forward_nested.py checks it in depth)
    sp = _softplus()
    k = ag.tensor(np.ones(2))
    x = np.array([0.1, 0.2])
    s = 1 / (1 + np.exp(-x))
    np.testing.assert_allclose(ag.hessian(lambda x: ag.sum(sp(x, k)))(x), np.diag(s * (1 - s)),
                               rtol=1e-12)
    with pytest.raises(TypeError, match="defjvp"):
        ag.custom_jvp(lambda x: x)(ag.tensor([1.0]))


def test_jvp_of_a_custom_vjp_uses_its_rule_transposed():
    @ag.custom_vjp
    def cube(x):
        return x * x * x

    cube.defvjp(lambda x: (cube(x), x), lambda x, g: (3 * x * x * g,))
    x = np.array([0.5, -2.0])
    _, jv = ag.jvp(cube, (x,), (np.array([1.0, 0.5]),))
    np.testing.assert_allclose(jv, 3 * x * x * np.array([1.0, 0.5]), rtol=1e-12)


def test_jvp_errors_are_clear():
    with pytest.raises(ValueError, match="2 primals but 1 tangents"):
        ag.jvp(lambda a, b: a + b, (1.0, 2.0), (1.0,))
    with pytest.raises(TypeError, match="real tangent"):
        ag.jvp(ag.sin, (np.ones(2),), (np.ones(2) * 1j,))


def test_jacfwd_of_random_draws_is_the_jacobian_at_one_draw_and_jacobian_stays_reverse():
    # jacfwd vmaps one jvp over the unit tangents: f runs once per input leaf, every column
    # sees the same draws (torch.func.jacfwd refuses randomness by default)
    noisy = lambda x, y: x * y * ag.random.uniform(shape=(2,), dtype=ag.float64)  # noqa: E731
    x = np.array([0.5, 1.5])
    ag.manual_seed(3)
    jf = ag.jacfwd(noisy, argnums=(0, 1))(x, x)
    after = ag.random.uniform(shape=(1,), dtype=ag.float64).numpy()
    ag.manual_seed(3)
    jr = ag.jacrev(noisy, argnums=(0, 1))(x, x)
    np.testing.assert_allclose(jf[0], jr[0], rtol=1e-14)
    np.testing.assert_allclose(jf[1], jr[1], rtol=1e-14)
    np.testing.assert_allclose(ag.random.uniform(shape=(1,), dtype=ag.float64).numpy(), after)
    tall = lambda x: ag.reshape(x, (2, 1)) * ag.random.uniform(shape=(1, 3), dtype=ag.float64)  # noqa: E731
    ag.manual_seed(3)
    J = ag.jacobian(tall)(x)  # R^2 -> R^6, but random: reverse mode, one draw
    ag.manual_seed(3)
    u = ag.random.uniform(shape=(1, 3), dtype=ag.float64).numpy()
    np.testing.assert_allclose(J, np.einsum("ij,ik->ijk", np.ones((2, 3)) * u, np.eye(2)))


def test_jvp_of_a_jitted_function_runs_the_function_itself():
    f = ag.jit(lambda t: ag.sin(t) * t)
    x, v = np.array([0.3, -0.5]), np.array([1.0, 2.0])
    want = (np.cos(x) * x + np.sin(x)) * v
    for _ in range(3):
        np.testing.assert_allclose(ag.jvp(f, (x,), (v,))[1], want, rtol=1e-12)
        np.testing.assert_allclose(ag.jacfwd(f)(x), np.diag(want / v), rtol=1e-12)


def test_jvp_through_a_jitted_call_inside_carries_its_tangent():
    g = ag.jit(lambda t: ag.sin(t) * t)
    x, v = np.array([0.3, -0.5]), np.array([1.0, 2.0])
    want = (np.cos(x) * x + np.sin(x)) * v * 2
    for _ in range(3):  # warm-up (eager), trace, replay
        np.testing.assert_allclose(ag.jvp(lambda t: g(t) * 2.0, (x,), (v,))[1], want, rtol=1e-12)


def test_jvp_through_a_captured_step_inside_carries_its_tangent():
    w = ag.tensor(np.array([0.3, -0.5]))
    step = ag.capture(lambda t: ag.sin(t) * w, ag.tensor(np.zeros(2)), warmup=1)
    x, v = np.array([0.3, -0.5]), np.array([1.0, 2.0])
    want = np.cos(x) * np.array([0.3, -0.5]) * v
    for _ in range(2):
        np.testing.assert_allclose(ag.jvp(lambda t: step(t), (x,), (v,))[1], want, rtol=1e-12)
