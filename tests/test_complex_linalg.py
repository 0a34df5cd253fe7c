"""The linalg extension on complex input beyond the op table: agreement with PyTorch's autograd
for every function's complex gradient, the phase check of eigenvectors and singular vectors,
``eig``/``eigvals`` dtypes and backends.

Agreement with PyTorch: both libraries run the same function of the same input; PyTorch also
turns agnograd's outputs into the cotangents of a real loss (``loss_t``), which agnograd then
backpropagates (so the loss itself needs no complex multiply on agnograd's side).
"""

from __future__ import annotations

import numpy as np
import pytest

import agnograd as ag
from agnograd import autograd
from agnograd._ops import linalg as _linalg_ops

from .conftest import CPU_BACKENDS

RNG = np.random.default_rng(11)
L = ag.linalg


def _c(*shape):
    return RNG.standard_normal(shape) + 1j * RNG.standard_normal(shape)


def _unitary(m, k):
    return np.linalg.qr(_c(m, k))[0]


def _inv(n):
    return _c(n, n) * 0.3 + 2.0 * np.eye(n)


def _hpd(n):
    q = _c(n, n)
    return q @ q.conj().T + n * np.eye(n)


def _herm_sep(n):
    v = _unitary(n, n)
    return (v * (np.arange(n) * 1.3 - 1.0)) @ v.conj().T


def _sv_sep(m, n):
    k = min(m, n)
    return (_unitary(m, k) * (0.8 + np.arange(k)[::-1] * 0.7)) @ _unitary(n, k).conj().T


def _eig_sep(n, complex_=True):
    lam = (np.arange(n) * 1.1 + 0.5) * (np.exp(1j * RNG.uniform(-3, 3, n)) if complex_ else 1.0)
    v = (_c(n, n) if complex_ else RNG.standard_normal((n, n))) * 0.3 + np.eye(n)
    a = (v * lam) @ np.linalg.inv(v)
    return a if complex_ else a.real


def _ag_herm(a):  # (A + Aᴴ)/2 with complex-ready ops only: conj(z) = 2·Re(z) - z
    at = ag.matrix_transpose(a)
    return (a + (ag.real(at) * 2.0 - at)) * 0.5


def _t_herm(a):
    return (a + a.mH) / 2


def _phase_normalized(torch, v):
    """PyTorch's gradcheck wrapper for eig: each eigenvector's phase fixed by its first row."""
    return v * v[..., :1, :].conj() / v[..., :1, :].abs()


def _weights(torch, outs):
    return [torch.tensor(_c(*o.shape) if o.is_complex() else RNG.standard_normal(tuple(o.shape)))
            for o in outs]


def _dot(torch, outs, ws):
    return sum(torch.real((o * w.conj()).sum()) if o.is_complex() else (o * w).sum()
               for o, w in zip(outs, ws))


# (name, agnograd fn -> tuple of outputs, torch fn -> tuple, post-processing of the outputs in
# torch that makes the loss well defined (gauge invariant), inputs)
def _cases():
    import torch

    tl = torch.linalg
    same = lambda *o: o  # noqa: E731
    norm_v = lambda w, v: (w, _phase_normalized(torch, v))  # noqa: E731
    return [
        ("inv", lambda a: (L.inv(a),), lambda a: (tl.inv(a),), same, [_inv(3)]),
        ("det", lambda a: (L.det(a),), lambda a: (tl.det(a),), same, [_inv(3)]),
        ("slogdet", lambda a: tuple(L.slogdet(a)), lambda a: tuple(tl.slogdet(a)), same,
         [_inv(3)]),
        ("solve", lambda a, b: (L.solve(a, b),), lambda a, b: (tl.solve(a, b),), same,
         [_inv(3), _c(3, 2)]),
        ("solve-vector", lambda a, b: (L.solve(a, b),), lambda a, b: (tl.solve(a, b),), same,
         [_inv(3), _c(3)]),
        ("cholesky", lambda a: (L.cholesky(_ag_herm(a)),),
         lambda a: (tl.cholesky(_t_herm(a)),), same, [_hpd(3)]),
        ("cholesky-upper", lambda a: (L.cholesky(_ag_herm(a), upper=True),),
         lambda a: (tl.cholesky(_t_herm(a), upper=True),), same, [_hpd(3)]),
        ("eigh", lambda a: tuple(L.eigh(_ag_herm(a))), lambda a: tuple(tl.eigh(_t_herm(a))),
         norm_v, [_herm_sep(4)]),
        ("eigvalsh", lambda a: (L.eigvalsh(_ag_herm(a)),), lambda a: (tl.eigvalsh(_t_herm(a)),),
         same, [_herm_sep(3)]),
        # U·Vh (the polar factor) and S: invariant under the phases, and it exercises the
        # imaginary diagonal term of svd's complex rule
        ("svd", lambda a: tuple(L.svd(a, full_matrices=False)),
         lambda a: tuple(tl.svd(a, full_matrices=False)), lambda u, s, vh: (u @ vh, s),
         [_sv_sep(4, 3)]),
        ("svd-wide", lambda a: tuple(L.svd(a, full_matrices=False)),
         lambda a: tuple(tl.svd(a, full_matrices=False)), lambda u, s, vh: (u @ vh, s),
         [_sv_sep(2, 4)]),
        ("svdvals", lambda a: (L.svdvals(a),), lambda a: (tl.svdvals(a),), same, [_sv_sep(3, 4)]),
        ("qr", lambda a: tuple(L.qr(a)), lambda a: tuple(tl.qr(a)), same, [_sv_sep(4, 3)]),
        ("qr-wide", lambda a: tuple(L.qr(a)), lambda a: tuple(tl.qr(a)), same, [_sv_sep(2, 4)]),
        ("pinv", lambda a: (L.pinv(a),), lambda a: (tl.pinv(a),), same, [_sv_sep(4, 3)]),
        ("matrix_norm-fro", lambda a: (L.matrix_norm(a),), lambda a: (tl.matrix_norm(a),), same,
         [_c(2, 3)]),
        ("matrix_norm-nuc", lambda a: (L.matrix_norm(a, ord="nuc"),),
         lambda a: (tl.matrix_norm(a, ord="nuc"),), same, [_sv_sep(3, 2)]),
        ("matrix_norm-2", lambda a: (L.matrix_norm(a, ord=2),),
         lambda a: (tl.matrix_norm(a, ord=2),), same, [_sv_sep(3, 2)]),
        ("vector_norm", lambda a: (L.vector_norm(a, ord=3),), lambda a: (tl.vector_norm(a, ord=3),),
         same, [_c(5)]),
        ("trace", lambda a: (L.trace(a),), lambda a: (torch.trace(a),), same, [_c(3, 3)]),
        ("diagonal", lambda a: (L.diagonal(a, offset=1),),
         lambda a: (torch.diagonal(a, offset=1),), same, [_c(3, 4)]),
        ("matrix_power", lambda a: (L.matrix_power(a, -1),),
         lambda a: (tl.matrix_power(a, -1),), same, [_inv(3)]),
        ("cross", lambda a, b: (L.cross(a, b),), lambda a, b: (tl.cross(a, b),), same,
         [_c(2, 3), _c(2, 3)]),
        ("eig", lambda a: tuple(L.eig(a)), lambda a: tuple(tl.eig(a)), norm_v, [_eig_sep(4)]),
        ("eig-real", lambda a: tuple(L.eig(a)), lambda a: tuple(tl.eig(a)), norm_v,
         [_eig_sep(4, complex_=False)]),
        ("eigvals", lambda a: (L.eigvals(a),), lambda a: (tl.eigvals(a),), same, [_eig_sep(3)]),
    ]


CASE_NAMES = ["inv", "det", "slogdet", "solve", "solve-vector", "cholesky", "cholesky-upper",
              "eigh", "eigvalsh", "svd", "svd-wide", "svdvals", "qr", "qr-wide", "pinv",
              "matrix_norm-fro", "matrix_norm-nuc", "matrix_norm-2", "vector_norm", "trace",
              "diagonal", "matrix_power", "cross", "eig", "eig-real", "eigvals"]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_complex_gradients_agree_with_torch(name):
    torch = pytest.importorskip("torch")
    case = {c[0]: c for c in _cases()}[name]
    _, ag_fn, t_fn, post, inputs = case
    # PyTorch end to end
    xt = [torch.tensor(a, requires_grad=True) for a in inputs]
    outs_t = post(*t_fn(*xt))
    ws = _weights(torch, outs_t)
    _dot(torch, outs_t, ws).backward()
    # agnograd: its outputs, the cotangents of the same loss from PyTorch, its backward
    xa = [ag.tensor(a, requires_grad=True) for a in inputs]
    outs_a = ag_fn(*xa)
    leaves = [torch.tensor(np.asarray(o.data), requires_grad=True) for o in outs_a]
    _dot(torch, post(*leaves), ws).backward()
    cots = [np.zeros(o.shape, dtype=o.data.dtype) if t.grad is None
            else t.grad.resolve_conj().numpy().astype(o.data.dtype) for o, t in zip(outs_a, leaves)]
    wanted = [(o, c) for o, c in zip(outs_a, cots) if o.requires_grad]
    gs = autograd.backward([o for o, _ in wanted], [c for _, c in wanted], retain_graph=False,
                           create_graph=False, targets=xa)
    for g, t in zip(gs, xt):
        np.testing.assert_allclose(g.data, t.grad.resolve_conj().numpy(), rtol=1e-8, atol=1e-10)


# ---------------------------------------------------------------------------------------------
# The phase check


PHASE_DEPENDENT = [
    # Σ Re(V): the backends make one component of each vector real, not all of them
    ("eig", lambda a: ag.sum(ag.real(L.eig(a).eigenvectors)), lambda: _eig_sep(3)),
    ("eigh", lambda a: ag.sum(ag.real(L.eigh(_ag_herm(a)).eigenvectors)), lambda: _herm_sep(3)),
    ("svd", lambda a: ag.sum(ag.real(L.svd(a, full_matrices=False).U)), lambda: _sv_sep(3, 3)),
]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize(("op", "fn", "make"), PHASE_DEPENDENT, ids=[p[0] for p in PHASE_DEPENDENT])
def test_a_loss_that_depends_on_the_phase_raises(op, fn, make, backend):
    x = ag.tensor(make(), backend=backend, requires_grad=True)
    with pytest.raises(RuntimeError, match=rf"{op}: the loss depends on the phase"):
        fn(x).backward()


def test_phase_invariant_losses_do_not_raise():
    """|V| and the phase-normalised eigenvectors (PyTorch's gradcheck wrapper) are fine."""
    x = ag.tensor(_eig_sep(3), requires_grad=True)
    ag.sum(ag.abs(L.eig(x).eigenvectors)).backward()
    assert np.isfinite(x.grad.data).all()


def test_without_a_cheap_host_read_the_phase_check_gives_nan():
    """On Dask (lazy: no cheap read) a phase-dependent loss gets NaN in that matrix's gradient,
    never a silent wrong number; the other matrices of the stack keep theirs."""
    pytest.importorskip("dask")
    a = np.stack([_eig_sep(3), _eig_sep(3)])
    x = ag.tensor(a, backend="dask", requires_grad=True)
    v = L.eig(x).eigenvectors
    ag.sum(ag.real(v[0])).backward()
    g = np.asarray(ag.to_backend(x.grad, "numpy").data)
    assert np.isnan(g[0]).all() and np.isfinite(g[1]).all()


# ---------------------------------------------------------------------------------------------
# eig / eigvals: dtypes, values, backends


@pytest.mark.parametrize("backend", ["numpy", "array_api_strict", "torch", "dask"])
@pytest.mark.parametrize("dtype", ["float32", "float64", "complex64", "complex128"])
def test_eig_dtypes_and_values(backend, dtype):
    if backend not in ag.available_backends():
        pytest.skip(f"{backend} is not installed")
    a = _eig_sep(3, complex_=dtype.startswith("complex"))
    x = ag.tensor(a, backend=backend, dtype=getattr(ag, dtype))
    w, v = L.eig(x)
    cdt = {"float32": ag.complex64, "float64": ag.complex128}.get(dtype, getattr(ag, dtype))
    assert w.dtype == cdt and v.dtype == cdt and L.eigvals(x).dtype == cdt
    wn, vn = (np.asarray(ag.to_backend(t, "numpy").data) for t in (w, v))
    tol = 1e-9 if dtype in ("float64", "complex128") else 1e-4
    np.testing.assert_allclose(a @ vn, vn * wn[None, :], atol=tol * 10)
    np.testing.assert_allclose(np.sort_complex(np.asarray(ag.to_backend(L.eigvals(x), "numpy").data)),
                               np.sort_complex(wn), atol=tol * 10)


def test_eig_on_a_backend_without_an_eigensolver_raises():
    class NoEig:
        name = "fake"
        xp = type("ns", (), {"linalg": object()})()

    with pytest.raises(NotImplementedError, match=r"linalg.eig: the 'fake' backend has no"):
        _linalg_ops._eig_namespace_fn(NoEig(), "eig")


def test_slogdet_sign_requires_grad_only_for_complex_input():
    xr = ag.tensor(RNG.standard_normal((3, 3)) + 3 * np.eye(3), requires_grad=True)
    xc = ag.tensor(_inv(3), requires_grad=True)
    assert not L.slogdet(xr).sign.requires_grad
    assert L.slogdet(xc).sign.requires_grad and L.slogdet(xc).logabsdet.dtype == ag.float64
