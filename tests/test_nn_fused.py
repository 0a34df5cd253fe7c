"""The fused ``F.gelu`` and ``F.layer_norm`` nodes and NumPy's float32 ``erf`` (issue 25's
embedding + layer_norm + gelu workload): values and gradients against PyTorch in float32 and
float64, finite differences, second order and forward mode against PyTorch, on NumPy and
array_api_strict; NumPy's in-place kernels equal to the standard paths (gelu's bit for bit);
the staged replay bit-identical to eager; the float32 ``erf`` within 7 ulps of SciPy."""

from __future__ import annotations

import math

import numpy as np
import pytest

import agnograd as ag
import agnograd.nn.functional as F
from agnograd.backends import _fallbacks
from agnograd.testing import check_grad

BACKENDS = ["numpy", "array_api_strict"]
RNG = np.random.default_rng(2525)


def _torch():
    return pytest.importorskip("torch")


def _host(t):
    return np.asarray(ag.backends.host_array(t.data if isinstance(t, ag.Tensor) else t))


# ---------------------------------------------------------------------------------------------
# NumPy's float32 erf (agnograd.backends.special.erf_float32)


def _ulps(got, want):
    """Distance in float32 ulps (the float32 bit patterns of finite values, ordered)."""
    def key(a):
        i = a.astype(np.float32).view(np.int32).astype(np.int64)
        return np.where(i < 0, -(i & 0x7FFFFFFF), i)

    return np.abs(key(got) - key(want))


def _erf_ulps(x):
    sc = pytest.importorskip("scipy.special")
    from agnograd.backends.special import erf_float32

    want = sc.erf(x.astype(np.float64)).astype(np.float32)  # correctly rounded
    return _ulps(erf_float32(x), want)


def test_float32_erf_is_within_7_ulps_of_scipy():
    top = int(np.float32(6.0).view(np.int32))
    grid = np.arange(0, top, 401, dtype=np.int32).view(np.float32)  # 2.7M floats in [0, 6]
    dense = np.arange(*np.float32([3.6, 3.9]).view(np.int32), dtype=np.int32).view(np.float32)
    x = np.concatenate([grid, -grid, dense, -dense])
    u = _erf_ulps(x)
    assert u.max() <= 7, (u.max(), x[np.argmax(u)])
    assert u.mean() < 1.0


@pytest.mark.slow
def test_float32_erf_every_float_in_0_6():
    top = int(np.float32(6.0).view(np.int32))
    for lo in range(0, top, 1 << 26):
        x = np.arange(lo, min(top, lo + (1 << 26)), dtype=np.int32).view(np.float32)
        assert _erf_ulps(x).max() <= 7


def test_float32_erf_special_values():
    from agnograd.backends.special import erf_float32

    x = np.float32([0.0, -0.0, np.inf, -np.inf, np.nan, 4.0, -4.0, 5.0, 1e30, -1e30, 1e-40,
                    -1e-45, np.finfo(np.float32).tiny])
    y = erf_float32(x)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y[:4], [0.0, -0.0, 1.0, -1.0])
    assert np.signbit(y[1]) and not np.signbit(y[0])
    assert np.isnan(y[4])
    np.testing.assert_array_equal(y[5:10], [1.0, -1.0, 1.0, 1.0, -1.0])
    # subnormals and the smallest normal: 2/√π·x, rounded (no flush to zero)
    assert _erf_ulps(x[10:]).max() <= 1
    assert np.all(np.abs(erf_float32(np.linspace(-50, 50, 10001, dtype=np.float32))) <= 1.0)


def test_float32_erf_shapes_and_out():
    from agnograd.backends.special import erf_float32

    x = RNG.normal(size=(300, 500)).astype(np.float32)  # 150,000: three blocks, one partial
    want = erf_float32(x.copy())
    np.testing.assert_array_equal(erf_float32(x.T), want.T)  # not contiguous
    assert erf_float32(np.float32(0.5)).shape == ()
    assert erf_float32(np.zeros((0, 3), np.float32)).shape == (0, 3)
    y = x.copy()
    assert erf_float32(y, out=y) is y  # in place
    np.testing.assert_array_equal(y, want)
    with pytest.raises(ValueError, match="C-contiguous"):
        erf_float32(x, out=np.empty((500, 300), np.float32).T)


def test_special_erf_uses_it_in_float32_and_scipy_in_float64():
    sc = pytest.importorskip("scipy.special")
    from agnograd.backends.special import erf_float32

    x = np.linspace(-5, 5, 1001)
    np.testing.assert_array_equal(ag.special.erf(ag.tensor(x)).numpy(), sc.erf(x))
    x32 = x.astype(np.float32)
    y = ag.special.erf(ag.tensor(x32))
    assert y.dtype == ag.float32
    np.testing.assert_array_equal(y.numpy(), erf_float32(x32))


# ---------------------------------------------------------------------------------------------
# NumPy's in-place kernels compute exactly what the standard paths compute


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("grad", [True, False])
def test_numpy_gelu_kernel_is_the_standard_path(approximate, dtype, grad):
    b = ag.get_backend("numpy")
    x = (RNG.normal(size=(3, 70001)) * 3).astype(dtype)  # blocks of 2**16, the last partial
    x[0, :4] = [0.0, -0.0, 30.0, -30.0]
    x[1, :6] = [1e-40, -1e-44, 1e-30, np.nan, np.inf, -np.inf]  # subnormal, tiny, non-finite
    erf = b.special.erf if b.special is not None else None
    if erf is None and approximate == "none":
        pytest.skip("no SciPy: NumPy's exact gelu is the standard path")
    for xs in (x, x[:, ::-1].T):  # and a non-contiguous input
        with np.errstate(invalid="ignore"):  # gelu'(±inf): inf·0, NaN (as the composition gave)
            got = b.gelu(b.xp, xs, approximate, erf, grad)
            if approximate == "none" and dtype == np.float32:
                want = _fallbacks.gelu_float32_standard(b.xp, xs, grad)
            else:
                want = _fallbacks.gelu_standard(b.xp, xs, approximate, erf, grad)
        np.testing.assert_array_equal(got[0], want[0])
        if grad:
            np.testing.assert_array_equal(got[1], want[1])
        else:
            assert got[1] is None and want[1] is None


def _gelu_exact(x):
    """float64 ``x Φ(x)`` and ``Φ(x) + x φ(x)``, Φ through erfc (no cancellation in the tail)."""
    erfc = np.vectorize(math.erfc)
    phi = 0.5 * erfc(-x / math.sqrt(2.0))
    return x * phi, phi + x * np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


@pytest.mark.parametrize("backend", ["numpy", "array_api_strict"])
def test_float32_gelu_accuracy(backend):
    """The float32 exact form against float64: what the NumPy kernel (Abramowitz & Stegun) and
    the erf composition (other backends) both keep. Absolute error under 5e-7 on the value and
    derivative; Φ(0) = gelu'(0) = 0.5 exactly; ±0 keep their sign; in the lower tail the
    relative error stays small (PyTorch's ``1 + erf`` loses it: up to 27% in [-5, -3])."""
    x = np.concatenate([np.linspace(-12, 12, 48001), [0.0, -0.0, 1e-30, -1e-30, 1e-42]])
    x32 = x.astype(np.float32)
    t = ag.tensor(x32, backend=backend, requires_grad=True)
    y = F.gelu(t)
    ag.sum(y).backward()
    got_y, got_d = np.asarray(y.numpy(), np.float64), np.asarray(t.grad.numpy(), np.float64)
    want_y, want_d = _gelu_exact(x32.astype(np.float64))
    assert np.abs(got_y - want_y).max() < 5e-7
    assert np.abs(got_d - want_d).max() < 5e-7
    assert got_d[-5] == got_d[-4] == 0.5 and got_d[-3] == got_d[-2] == 0.5
    assert np.signbit(got_y[-4]) and not np.signbit(got_y[-5])
    if backend == "numpy":  # the kernel's lower tail: q itself
        def rel(lo, hi):
            m = (x32 >= lo) & (x32 < hi)
            return (np.abs(got_y[m] - want_y[m]) / np.abs(want_y[m])).max()

        assert rel(-6, -3) < 4e-3 and rel(-3, -1) < 1e-4 and rel(-1, 0) < 1e-6


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("affine", ["wb", "w", "b", ""])
def test_numpy_layer_norm_kernels_equal_the_standard_path(dtype, affine):
    b = ag.get_backend("numpy")
    x = (RNG.normal(size=(700, 300)) * 2 + 1).astype(dtype)  # blocks of 218 rows
    w = RNG.normal(size=300).astype(dtype) if "w" in affine else None
    bias = RNG.normal(size=300).astype(dtype) if "b" in affine else None
    g = RNG.normal(size=(700, 300)).astype(dtype)
    got = b.layer_norm(b.xp, x, 1e-5, w, bias)
    want = _fallbacks.layer_norm_standard(b.xp, x, 1e-5, w, bias)
    # NumPy's row sums are BLAS products with ones, the standard path's are reductions: equal
    # within rounding
    tol = 4e-6 if dtype == np.float32 else 1e-13
    for a, c in zip(got, want, strict=True):
        np.testing.assert_allclose(a, c, rtol=tol, atol=tol)
    _, mu, r = want
    sums = (w is not None, bias is not None)
    gx, gw, gb = b.layer_norm_grad(b.xp, g, x, mu, r, w, sums)
    wx, ww, wb = _fallbacks.layer_norm_grad_standard(b.xp, g, x, mu, r, w, sums)
    np.testing.assert_allclose(gx, wx, rtol=tol, atol=tol * 4)
    for a, c in ((gw, ww), (gb, wb)):
        if c is None:
            assert a is None
        else:
            np.testing.assert_allclose(a, c, rtol=tol * 10, atol=tol * 100)


# ---------------------------------------------------------------------------------------------
# Against PyTorch: values, gradients, second order, forward mode


def _gelu_pair(approximate):
    torch = _torch()
    return (lambda x: F.gelu(x, approximate=approximate),
            lambda x: torch.nn.functional.gelu(x, approximate=approximate))


def _ln_pair(ns, affine, eps=1e-5):
    torch = _torch()
    nst = (ns,) if isinstance(ns, int) else tuple(ns)

    def fa(x, *p):
        return F.layer_norm(x, ns, p[0] if "w" in affine else None,
                            p[-1] if "b" in affine else None, eps)

    def ft(x, *p):
        w, b = p[0] if "w" in affine else None, p[-1] if "b" in affine else None
        if w is None:  # (torch's layer_norm has no second derivative without a weight)
            dims = tuple(range(x.ndim - len(nst), x.ndim))
            d = x - x.mean(dims, keepdim=True)
            y = d / torch.sqrt((d * d).mean(dims, keepdim=True) + eps)
            return y if b is None else y + b
        return torch.nn.functional.layer_norm(x, nst, w, b, eps)

    return fa, ft


def _ln_args(shape, ns, affine):
    nst = (ns,) if isinstance(ns, int) else tuple(ns)
    return [RNG.normal(size=shape) * 2 + 0.5] + [RNG.normal(size=nst) for _ in affine]


CASES = [("gelu", "none", [(4, 33)]), ("gelu", "tanh", [(4, 33)]),
         ("ln", ((2, 3, 8), 8, "wb"), None), ("ln", ((5, 6), 6, "w"), None),
         ("ln", ((2, 3, 4), (3, 4), "b"), None), ("ln", ((3, 7), 7, ""), None)]


def _tol(case, backend, rtol):
    """The exact gelu on a backend without its own erf: the standard-op approximation's
    relative error, about 1.2e-7 (docs/special.md)."""
    if case[:2] == ("gelu", "none") and ag.get_backend(backend).special is None:
        return max(rtol, 2e-6)
    return rtol


def _case(case):
    kind, opt, shapes = case
    if kind == "gelu":
        fa, ft = _gelu_pair(opt)
        x = RNG.normal(size=shapes[0]) * 3
        x[0, :3] = [0.0, 8.0, -8.0]
        return fa, ft, [x]
    shape, ns, affine = opt
    fa, ft = _ln_pair(ns, affine)
    return fa, ft, _ln_args(shape, ns, affine)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1] if c[0] == 'gelu' else c[1][2]}")
def test_values_and_gradients_match_torch(case, dtype, backend):
    torch = _torch()
    fa, ft, arrays = _case(case)
    arrays = [a.astype(dtype) for a in arrays]
    xa = [ag.tensor(a, backend=backend, requires_grad=True) for a in arrays]
    xt = [torch.tensor(a, requires_grad=True) for a in arrays]
    ya, yt = fa(*xa), ft(*xt)
    assert ya.dtype == getattr(ag, dtype)
    rtol = atol = _tol(case, backend, 2e-6 if dtype == "float32" else 1e-12)
    np.testing.assert_allclose(_host(ya), yt.detach().numpy(), rtol=rtol, atol=atol)
    v = RNG.normal(size=yt.shape).astype(dtype)
    ag.sum(ya * ag.tensor(v, backend=backend)).backward()
    (yt * torch.tensor(v)).sum().backward()
    for a, t in zip(xa, xt, strict=True):
        scale = max(1.0, float(np.max(np.abs(t.grad.numpy()))))
        np.testing.assert_allclose(_host(a.grad), t.grad.numpy(), rtol=rtol * 5,
                                   atol=atol * 5 * scale)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1] if c[0] == 'gelu' else c[1][2]}")
def test_finite_differences_float64(case, backend):
    fa, _, arrays = _case(case)
    args = [ag.tensor(a[:2] if a.ndim > 1 and case[0] == "gelu" else a, backend=backend)
            for a in arrays]
    check_grad(fa, *args, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1] if c[0] == 'gelu' else c[1][2]}")
def test_second_order_matches_torch(case, backend):
    """grad of ⟨grad of ⟨f, v⟩, u⟩ with respect to every input (create_graph through the rules:
    Φ, x̂ and r recomputed from x), in float64, against PyTorch."""
    torch = _torch()
    fa, ft, arrays = _case(case)
    xa = [ag.tensor(a, backend=backend, requires_grad=True) for a in arrays]
    xt = [torch.tensor(a, requires_grad=True) for a in arrays]
    ya, yt = fa(*xa), ft(*xt)
    v = RNG.normal(size=yt.shape)
    us = [RNG.normal(size=a.shape) for a in arrays]
    ag.sum(ya * ag.tensor(v, backend=backend)).backward(create_graph=True)
    ga = [a.grad for a in xa]
    for a in xa:
        a.grad = None
    sum(ag.sum(g * ag.tensor(u, backend=backend)) for g, u in zip(ga, us)).backward()
    gt = torch.autograd.grad((yt * torch.tensor(v)).sum(), xt, create_graph=True)
    ht = torch.autograd.grad(sum((g * torch.tensor(u)).sum() for g, u in zip(gt, us)
                                 if g.requires_grad), xt, allow_unused=True)
    for a, g, t, tg in zip(xa, ga, ht, gt, strict=True):
        tol = _tol(case, backend, 1e-10)
        np.testing.assert_allclose(_host(g), tg.detach().numpy(), rtol=tol, atol=tol)
        want = np.zeros(a.shape) if t is None else t.numpy()
        got = np.zeros(a.shape) if a.grad is None else _host(a.grad)
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1] if c[0] == 'gelu' else c[1][2]}")
def test_forward_mode_matches_torch(case, backend):
    torch = _torch()
    fa, ft, arrays = _case(case)
    vs = [RNG.normal(size=a.shape) for a in arrays]
    _, ta = ag.jvp(fa, tuple(ag.tensor(a, backend=backend) for a in arrays),
                   tuple(ag.tensor(v, backend=backend) for v in vs))
    _, tt = torch.func.jvp(ft, tuple(torch.tensor(a) for a in arrays),
                           tuple(torch.tensor(v) for v in vs))
    tol = _tol(case, backend, 1e-10)
    np.testing.assert_allclose(_host(ta), tt.numpy(), rtol=tol, atol=tol)


def test_layer_norm_sums_are_only_reused_for_their_own_cotangent():
    """The input's rule computes the weight's and bias's cotangents in the same pass; a second
    backward through the retained graph, and a gradient of the weight alone, get their own."""
    torch = _torch()
    x0, w0, b0 = _ln_args((6, 5), 5, "wb")
    fa, ft = _ln_pair(5, "wb")
    xa = [ag.tensor(a, requires_grad=True) for a in (x0, w0, b0)]
    xt = [torch.tensor(a, requires_grad=True) for a in (x0, w0, b0)]
    ya, yt = fa(*xa), ft(*xt)
    for _ in range(2):
        v = RNG.normal(size=(6, 5))
        ya.backward(ag.tensor(v), retain_graph=True)
        yt.backward(torch.tensor(v), retain_graph=True)
    for a, t in zip(xa, xt, strict=True):
        np.testing.assert_allclose(a.grad.numpy(), t.grad.numpy(), rtol=1e-12, atol=1e-12)
    # a walk to x alone (the sums computed, not taken), then one to w alone (x's rule skipped)
    from agnograd.autograd.walk import backward

    for targets in ([xa[0]], [xa[1]], [xa[2]]):
        v = RNG.normal(size=(6, 5))
        got = backward([ya], [v], retain_graph=True, create_graph=False, targets=targets)
        i = [id(t) for t in xa].index(id(targets[0]))
        want = torch.autograd.grad(yt, [xt[i]], torch.tensor(v), retain_graph=True)
        np.testing.assert_allclose(got[0], want[0].numpy(), rtol=1e-12, atol=1e-12)


def test_gelu_and_layer_norm_are_one_node_each():
    x = ag.tensor(RNG.normal(size=(4, 6)), requires_grad=True)
    w = ag.tensor(RNG.normal(size=6), requires_grad=True)
    y = F.gelu(F.layer_norm(x, 6, w, w))
    assert y._node.name == "gelu"
    assert y._node.edges[0].name == "layer_norm"
    with ag.no_grad():
        assert F.gelu(x)._node is None


# ---------------------------------------------------------------------------------------------
# The staged replay: bit-identical to eager (NumPy replays its in-place kernels)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_captured_step_is_bit_identical_to_eager(backend, approximate):
    rng = np.random.default_rng(7)
    w = ag.tensor(rng.normal(size=(16,)).astype(np.float32), backend=backend, requires_grad=True)
    bias = ag.tensor(rng.normal(size=(16,)).astype(np.float32), backend=backend,
                     requires_grad=True)

    def step(x, r):
        x.grad = w.grad = bias.grad = None
        y = F.gelu(F.layer_norm(x, 16, w, bias), approximate=approximate)
        loss = ag.sum(y * r)
        loss.backward()
        return loss, y

    def draw():
        return (ag.tensor(rng.normal(size=(70, 16)).astype(np.float32) * 3, backend=backend,
                          requires_grad=True),
                ag.tensor(rng.normal(size=(70, 16)).astype(np.float32), backend=backend))

    s = ag.capture(step, *draw(), warmup=1)
    assert s.replay == "staged"
    for _ in range(2):
        x, r = draw()
        got = [_host(t) for t in s(x, r)]
        got_grads = [_host(t.grad) for t in (s.inputs[0], w, bias)]
        want = [_host(t) for t in step(x, r)]
        want_grads = [_host(t.grad) for t in (x, w, bias)]
        for a, b in zip(got + got_grads, want + want_grads, strict=True):
            np.testing.assert_array_equal(a, b)
