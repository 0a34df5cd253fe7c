"""Complex autodiff conventions and the fft extension beyond the op table.

The convention is PyTorch's: for a real loss L of z = x + iy, ``z.grad = ∂L/∂x + i·∂L/∂y``.
The op table (``tests/op_table/fft.py``) checks every transform by finite differences; here:
the engine's conventions, agreement with PyTorch's autograd, dtypes, and errors.
"""

from __future__ import annotations

import types

import numpy as np
import pytest

import agnograd as ag
from agnograd.testing import check_grad

from .conftest import BACKENDS, CPU_BACKENDS

RNG = np.random.default_rng(7)


def _c(*shape):
    return RNG.standard_normal(shape) + 1j * RNG.standard_normal(shape)


# ---------------------------------------------------------------------------------------------
# The engine's conventions


@pytest.mark.parametrize("backend", BACKENDS)
def test_complex_leaves_require_grad_and_descend(backend):
    """L = Σ|z - c|²: the gradient is 2(z - c), and z -= lr·z.grad descends."""
    c = ag.tensor(_c(4), backend=backend)
    z = ag.tensor(_c(4), backend=backend, requires_grad=True)
    loss = ag.sum(ag.abs(z - c) ** 2)
    loss.backward()
    assert z.grad.dtype == ag.complex128
    np.testing.assert_allclose(np.asarray(ag.to_backend(z.grad, "numpy").data),
                               2 * (np.asarray(ag.to_backend(z, "numpy").data) - _host(c)),
                               rtol=1e-12)
    with ag.no_grad():
        z2 = z - 0.1 * z.grad
    assert float(ag.sum(ag.abs(z2 - c) ** 2).item()) < float(loss.item())


def _host(t):
    return np.asarray(ag.to_backend(t, "numpy").data)


def test_integer_tensors_still_refuse_requires_grad():
    with pytest.raises(TypeError, match="real or complex"):
        ag.tensor([1, 2]).requires_grad_()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_real_complex_real_paths_give_real_gradients(backend):
    """astype to complex, fft of a real input, products with complex constants: the real
    leaf's gradient is real (the real part of the complex cotangent), in its own dtype."""
    x = ag.tensor(RNG.standard_normal(5), backend=backend, requires_grad=True)
    c = ag.tensor(_c(5), backend=backend)
    fns = [
        lambda x: ag.real(ag.astype(x, ag.complex128)) * x,
        lambda x: ag.fft.irfft(ag.fft.fft(x)[:3] + c[:3], n=5),
        lambda x: ag.abs(ag.fft.fft(x * x)),
        lambda x: ag.real(x * (0.5 + 2j)),
    ]
    for f in fns:
        check_grad(f, x)
        x.grad = None
        ag.sum(f(x)).backward()
        assert x.grad.dtype == ag.float64


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_real_cotangent_of_a_complex_leaf_is_made_complex(backend):
    z = ag.tensor(_c(3), backend=backend, requires_grad=True)
    ag.sum(ag.real(z)).backward()
    assert z.grad.dtype == ag.complex128
    np.testing.assert_array_equal(_host(z.grad), np.ones(3, dtype=complex))
    (g,) = ag.vjp(lambda z: ag.real(z), z)[1](ag.ones((3,), dtype=ag.float64)
                                            if backend == "numpy" else
                                            ag.tensor(np.ones(3), backend=backend))
    assert g.dtype == ag.complex128


def test_a_complex_output_needs_an_explicit_cotangent():
    z = ag.tensor(_c(3), requires_grad=True)
    with pytest.raises(RuntimeError, match="complex cotangent"):
        ag.sum(z).backward()
    with pytest.raises(TypeError, match="explicit complex cotangent"):
        ag.grad(lambda z: ag.sum(z))(z)
    # backward(grad=v) means L = Re(sum(conj(v)·y)): for y = z, z.grad = v.
    v = ag.tensor(_c(3))
    (z * 1.0).backward(v)
    np.testing.assert_allclose(z.grad.data, v.data)
    y, vjp_fn = ag.vjp(lambda z: ag.fft.fft(z), z)
    (g,) = vjp_fn(v)
    np.testing.assert_allclose(g.data, 3 * np.fft.ifft(v.data), rtol=1e-12)
    # A real seed is accepted for a complex output (cast), a complex one for a real output not.
    with pytest.raises(TypeError, match="real floating"):
        ag.real(z * 1.0).backward(ag.tensor(_c(3)))


def test_the_jax_convention_is_the_conjugate():
    """Documented: JAX's grad of a real function of a complex input is the conjugate."""
    z = ag.tensor(_c(3), requires_grad=True)
    ag.sum(ag.abs(z) ** 2).backward()
    np.testing.assert_allclose(z.grad.data, 2 * z.data)  # ours (PyTorch's)
    jax_grad = np.conj(z.grad.data)  # what jax.grad returns: 2·conj(z)
    np.testing.assert_allclose(jax_grad, 2 * np.conj(z.data))


# ---------------------------------------------------------------------------------------------
# Agreement with PyTorch's autograd (torch.fft), values and gradients


CASES = [
    ("fft", dict(n=7, norm="ortho"), "c", (2, 5)),
    ("fft", dict(n=3), "r", (2, 6)),
    ("ifft", dict(norm="forward"), "c", (2, 6)),
    ("fftn", dict(s=(3, 6), axes=(0, 1)), "c", (4, 5)),
    ("ifftn", dict(norm="ortho"), "c", (3, 4)),
    ("rfft", dict(), "r", (2, 7)),
    ("rfft", dict(n=6, norm="forward"), "r", (2, 9)),
    ("irfft", dict(), "c", (2, 5)),
    ("irfft", dict(n=9, norm="ortho"), "c", (2, 5)),
    ("rfftn", dict(s=(3, 5)), "r", (4, 6)),
    ("irfftn", dict(s=(4, 7), norm="forward"), "c", (3, 4)),
    ("hfft", dict(), "c", (2, 4)),
    ("hfft", dict(n=7, norm="ortho"), "c", (2, 5)),
    ("ihfft", dict(norm="forward"), "r", (2, 7)),
    ("fftshift", dict(), "c", (3, 4)),
    ("ifftshift", dict(axes=(1,)), "r", (3, 5)),
]


@pytest.mark.parametrize(("name", "kw", "kind", "shape"), CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_agrees_with_torch_autograd(name, kw, kind, shape):
    torch = pytest.importorskip("torch")
    x = _c(*shape) if kind == "c" else RNG.standard_normal(shape)
    t_kw = {("dim" if k in ("axis", "axes") else k): v for k, v in kw.items()}
    xt = torch.tensor(x, requires_grad=True)
    yt = getattr(torch.fft, name)(xt, **t_kw)
    v = _c(*yt.shape) if yt.is_complex() else RNG.standard_normal(tuple(yt.shape))
    yt.backward(torch.tensor(v))
    xa = ag.tensor(x, requires_grad=True)
    ya = getattr(ag.fft, name)(xa, **kw)
    ya.backward(ag.tensor(v))
    np.testing.assert_allclose(ya.data, yt.detach().resolve_conj().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(xa.grad.data, xt.grad.resolve_conj().numpy(), rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# Agreement with PyTorch's complex autograd: every elementwise, reduction and product rule


def _off_axes(*shape, rng=None):
    """Complex values off both axes (no branch cut, no kink at 0 within reach)."""
    rng = RNG if rng is None else rng
    re = rng.uniform(0.2, 1.2, size=shape) * rng.choice([-1.0, 1.0], size=shape)
    im = rng.uniform(0.2, 0.8, size=shape) * rng.choice([-1.0, 1.0], size=shape)
    return re + 1j * im


_T_UNARY = ["abs", "acos", "acosh", "asin", "asinh", "atan", "atanh", "conj", "cos", "cosh",
            "exp", "expm1", "imag", "log", "log1p", "log2", "log10", "negative", "positive", "real",
            "reciprocal", "sin", "sinh", "sqrt", "square", "tan", "tanh"]
# (id, agnograd fn, torch fn (given the torch module), input kinds: "c" complex, "r" real, shapes)
_T_CASES = (
    [(n, lambda x, n=n: getattr(ag, n)(x), lambda t, x, n=n: getattr(t, n)(x), "c", [(2, 3)])
     for n in _T_UNARY]
    + [
        ("sign", ag.sign, lambda t, x: t.sgn(x), "c", [(2, 3)]),
        ("abs-squared", lambda x: x * ag.conj(x), lambda t, x: x * t.conj(x), "c", [(4,)]),
        ("add", ag.add, lambda t, x, y: x + y, "cc", [(2, 3), (3,)]),
        ("subtract", ag.subtract, lambda t, x, y: x - y, "rc", [(2, 3), (2, 3)]),
        ("multiply", ag.multiply, lambda t, x, y: x * y, "cc", [(2, 3), (3,)]),
        ("multiply-real-complex", ag.multiply, lambda t, x, y: x * y, "rc", [(2, 3), (2, 3)]),
        ("multiply-complex-scalar", lambda x: x * (0.5 - 2j), lambda t, x: x * (0.5 - 2j), "r",
         [(3,)]),
        ("divide", ag.divide, lambda t, x, y: x / y, "cc", [(2, 3), (2, 3)]),
        ("divide-complex-real", ag.divide, lambda t, x, y: x / y, "cr", [(2, 3), (3,)]),
        ("pow", ag.pow, lambda t, x, y: x ** y, "cc", [(2, 3), (2, 3)]),
        ("pow-complex-real", ag.pow, lambda t, x, y: x ** y, "cr", [(2, 3), (2, 3)]),
        ("pow-scalar-exponent", lambda x: x ** (1.5 - 0.5j), lambda t, x: x ** (1.5 - 0.5j), "c",
         [(3,)]),
        ("pow-scalar-base", lambda x: (0.5 + 1j) ** x, lambda t, x: (0.5 + 1j) ** x, "c", [(3,)]),
        ("sum", lambda x: ag.sum(x, axis=0), lambda t, x: t.sum(x, dim=0), "c", [(2, 3)]),
        ("mean", lambda x: ag.mean(x, axis=1), lambda t, x: t.mean(x, dim=1), "c", [(2, 3)]),
        ("prod", lambda x: ag.prod(x, axis=1), lambda t, x: t.prod(x, dim=1), "c", [(2, 4)]),
        ("cumulative_prod", lambda x: ag.cumulative_prod(x, axis=1),
         lambda t, x: t.cumprod(x, dim=1), "c", [(2, 4)]),
        ("cumulative_sum", lambda x: ag.cumulative_sum(x, axis=0),
         lambda t, x: t.cumsum(x, dim=0), "c", [(3, 2)]),
        ("var", lambda x: ag.var(x, axis=1, correction=1),
         lambda t, x: t.var(x, dim=1, correction=1), "c", [(2, 4)]),
        ("std", lambda x: ag.std(x), lambda t, x: t.std(x, correction=0), "c", [(5,)]),
        ("logsumexp", lambda x: ag.logsumexp(x, axis=1), lambda t, x: t.logsumexp(x, dim=1), "c",
         [(2, 3)]),
        ("matmul", ag.matmul, lambda t, x, y: x @ y, "cc", [(2, 2, 3), (3, 4)]),
        ("matmul-vector", ag.matmul, lambda t, x, y: x @ y, "cc", [(3,), (2, 3, 2)]),
        ("matmul-real-complex", ag.matmul, lambda t, x, y: x.to(y.dtype) @ y, "rc", [(2, 3), (3, 2)]),
        ("vecdot", ag.vecdot, lambda t, x, y: t.linalg.vecdot(x, y), "cc", [(2, 3), (3,)]),
        ("vecdot-complex-real", ag.vecdot, lambda t, x, y: t.linalg.vecdot(x, y.to(x.dtype)),
         "cr", [(2, 3), (2, 3)]),
        ("tensordot", lambda x, y: ag.tensordot(x, y, axes=((0, 2), (2, 0))),
         lambda t, x, y: t.tensordot(x, y, dims=((0, 2), (2, 0))), "cc", [(3, 2, 4), (4, 2, 3)]),
        ("outer", ag.linalg.outer, lambda t, x, y: t.outer(x, y), "cc", [(3,), (2,)]),
        ("cross", ag.linalg.cross, lambda t, x, y: t.linalg.cross(x, y), "cc", [(2, 3), (2, 3)]),
    ]
)


@pytest.mark.parametrize(("name", "fn", "tfn", "kinds", "shapes"), _T_CASES,
                         ids=[c[0] for c in _T_CASES])
def test_complex_rules_agree_with_torch_autograd(name, fn, tfn, kinds, shapes):
    """Each op's gradient for random complex (and mixed real/complex) inputs is PyTorch's."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(zlib_seed(name))
    xs = [_off_axes(*s, rng=rng) if k == "c" else rng.uniform(0.3, 1.5, size=s)
          for k, s in zip(kinds, shapes)]
    ts = [torch.tensor(x, requires_grad=True) for x in xs]
    yt = tfn(torch, *ts)
    v = (_off_axes(*yt.shape, rng=rng) if yt.is_complex()
         else rng.uniform(0.5, 1.5, size=tuple(yt.shape)))
    yt.backward(torch.tensor(v))
    xa = [ag.tensor(x, requires_grad=True) for x in xs]
    ya = fn(*xa)
    ya.backward(ag.tensor(v))
    np.testing.assert_allclose(ya.data, yt.detach().resolve_conj().numpy(), rtol=1e-10,
                               atol=1e-12)
    for a, t in zip(xa, ts):
        assert a.grad.dtype == a.dtype
        np.testing.assert_allclose(a.grad.data, t.grad.resolve_conj().numpy(), rtol=1e-10,
                                   atol=1e-12, err_msg=name)


def zlib_seed(name):
    import zlib

    return zlib.crc32(name.encode())


def test_second_order_of_abs_and_sign_for_complex():
    """abs's rule is ḡ·sign(x): its derivative runs through sign's complex rule (not zero)."""
    z = ag.tensor(_off_axes(4))
    check_grad(lambda z: ag.grad(lambda z: ag.sum(ag.abs(z) ** 3 + ag.abs(z)))(z), z)
    check_grad(lambda z: ag.grad(lambda z: ag.sum(ag.real(ag.sign(z) * (1 + 2j))))(z), z)


def test_second_order_agrees_with_torch():
    """A Hessian-vector product through holomorphic and non-holomorphic complex ops."""
    torch = pytest.importorskip("torch")
    x = _off_axes(4)
    u = _off_axes(4)

    zt = torch.tensor(x, requires_grad=True)
    wt = torch.exp(zt) * torch.sin(zt) / (zt * zt + 2.0)
    lt = (torch.abs(wt) ** 2).sum() + (wt * torch.conj(zt)).real.sum()
    (gt,) = torch.autograd.grad(lt, zt, create_graph=True)
    (ht,) = torch.autograd.grad((gt * torch.tensor(u).conj()).real.sum(), zt)

    def f(z):
        w = ag.exp(z) * ag.sin(z) / (z * z + 2.0)
        return ag.sum(ag.abs(w) ** 2) + ag.sum(ag.real(w * ag.conj(z)))

    def h(z):
        return ag.sum(ag.real(ag.grad(f)(z) * ag.conj(ag.tensor(u))))

    za = ag.tensor(x)
    np.testing.assert_allclose(ag.grad(h)(za).data, ht.resolve_conj().numpy(), rtol=1e-10)


# ---------------------------------------------------------------------------------------------
# Dtypes, second order, errors


TRANSFORMS = [("fft", "c"), ("ifft", "c"), ("fftn", "c"), ("ifftn", "c"), ("rfft", "r"),
              ("irfft", "c"), ("rfftn", "r"), ("irfftn", "c"), ("hfft", "c"), ("ihfft", "r")]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("name", "kind"), TRANSFORMS)
def test_output_dtypes_follow_the_standard(name, kind, backend):
    """float32 in, complex64 out (and back): no upcasting, on every backend; gradients in the
    input's dtype."""
    x = RNG.standard_normal((2, 6)) if kind == "r" else _c(2, 6)
    t = ag.tensor(x, backend=backend, dtype=ag.float32 if kind == "r" else ag.complex64,
                  requires_grad=True)
    y = getattr(ag.fft, name)(t)
    real_out = name in ("irfft", "irfftn", "hfft")
    assert y.dtype == (ag.float32 if real_out else ag.complex64)
    y.backward(ag.ones_like(y))
    assert t.grad.dtype == t.dtype and t.grad.shape == t.shape


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_second_order_through_transforms(backend):
    """A Hessian-vector product through rfft -> nonlinearity -> irfft, against finite
    differences of the gradient."""
    x = ag.tensor(RNG.standard_normal(6), backend=backend)
    u = ag.tensor(RNG.standard_normal(6), backend=backend)

    def f(x):
        y = ag.fft.irfft(ag.fft.rfft(x ** 3, norm="ortho") * 2.0, n=6)
        return ag.sum(ag.fft.hfft(ag.fft.ihfft(y * x), n=6) ** 2)

    check_grad(lambda x: ag.sum(ag.grad(f)(x) * u), x, eps=1e-5, rtol=1e-5, atol=1e-7)


def test_fftfreq_and_rfftfreq():
    np.testing.assert_allclose(ag.fft.fftfreq(5, d=0.5).data, np.fft.fftfreq(5, d=0.5))
    np.testing.assert_allclose(ag.fft.rfftfreq(6).data, np.fft.rfftfreq(6))
    f = ag.fft.fftfreq(4, dtype=ag.float32)
    assert f.dtype == ag.float32 and not f.requires_grad
    assert ag.fft.rfftfreq(8, device=f.device).shape == (5,)
    with pytest.raises(ValueError, match="positive integer"):
        ag.fft.fftfreq(0)
    with pytest.raises(TypeError, match="real floating"):
        ag.fft.fftfreq(4, dtype=ag.complex64)


def test_errors_say_what_to_do():
    with pytest.raises(TypeError, match="real input"):
        ag.fft.rfft(ag.tensor(_c(4)))
    with pytest.raises(TypeError, match="floating-point"):
        ag.fft.fft(ag.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="norm"):
        ag.fft.fft(ag.tensor(_c(4)), norm="unitary")
    with pytest.raises(ValueError, match="positive"):
        ag.fft.fft(ag.tensor(_c(4)), n=0)
    with pytest.raises(ValueError, match="2·\\(m-1\\)"):
        ag.fft.irfft(ag.tensor(_c(1)))
    with pytest.raises(ValueError, match="repeated"):
        ag.fft.fftn(ag.tensor(_c(2, 2)), axes=(0, 0))
    with pytest.raises(ValueError, match="at least one dimension"):
        ag.fft.fft(ag.tensor(1.0 + 0j))


def test_a_backend_without_fft_raises_clearly(monkeypatch):
    b = ag.get_backend("numpy")
    fake = types.SimpleNamespace(**{k: getattr(b.xp, k) for k in dir(b.xp)
                                    if not k.startswith("__") and k != "fft"})
    monkeypatch.setattr(b, "xp", fake)
    with pytest.raises(NotImplementedError, match="no fft extension"):
        ag.fft.rfft(ag.tensor(np.ones(4)))


def test_dask_gradients_when_available():
    if "dask" not in ag.available_backends():
        pytest.skip("dask is not installed")
    x = ag.tensor(RNG.standard_normal((2, 6)), backend="dask", requires_grad=True)
    ag.sum(ag.abs(ag.fft.rfft(x, norm="ortho")) ** 2).backward()
    # Parseval with the half spectrum: bins 1..n/2-1 count twice in the full spectrum.
    ref = ag.tensor(np.asarray(ag.to_backend(x, "numpy").data), requires_grad=True)
    ag.sum(ag.abs(ag.fft.rfft(ref, norm="ortho")) ** 2).backward()
    np.testing.assert_allclose(_host(x.grad), ref.grad.data, rtol=1e-12)


# ---------------------------------------------------------------------------------------------
