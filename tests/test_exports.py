"""Exports never detach silently (issue 22, class 3).

Every way of handing a Tensor's values to another library -- NumPy's ``np.asarray``/``np.array``
(``__array__``), DLPack (``t.__dlpack__()``, ``np.from_dlpack``, ``torch.from_dlpack``,
``ag.from_dlpack``), and the constructors that use them (``torch.tensor``, ``torch.asarray``,
``array_api_strict.asarray``, ``np.stack``) -- gives the importer numbers without the graph:
whatever it computes is a constant to agnograd, so a gradient through it would silently be
missing. On a Tensor that
requires grad (a leaf, an op's output, a transform's input) each of them raises, as PyTorch's
do, with a message naming ``.detach()``; on a Tensor that needs no gradient each works.

Then the libraries users call on Tensors: SciPy's Array-API-aware functions (with
``SCIPY_ARRAY_API=1``, read once at SciPy's import, so in a fresh interpreter) and
array-api-extra's. Each is either differentiable (its gradient agrees with finite differences),
or raises, or its result is a true constant (the finite-difference derivative is 0): never a
result cut from the graph whose derivative is not zero.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import agnograd as ag

ROOT = pathlib.Path(__file__).resolve().parents[1]
DETACH = r"requires grad.*\.detach\(\)"

EXPORT_BACKENDS = [b for b in ("numpy", "array_api_strict", "torch", "dask")
                   if b in ag.available_backends()]


def _export_paths() -> dict[str, Callable[[Any], Any]]:
    paths: dict[str, Callable[[Any], Any]] = {
        "np.asarray": np.asarray,
        "np.array": np.array,
        "__array__": lambda t: t.__array__(),
        "np.asarray-dtype": lambda t: np.asarray(t, dtype=np.float32),
        "__dlpack__": lambda t: t.__dlpack__(),
        "np.from_dlpack": np.from_dlpack,
        "ag.from_dlpack": ag.from_dlpack,
        "ag.from_dlpack-copy": lambda t: ag.from_dlpack(t, copy=True),
    }
    paths["np.stack"] = lambda t: np.stack([t, t])
    if importlib.util.find_spec("torch") is not None:
        import torch

        paths["torch.from_dlpack"] = torch.from_dlpack
        paths["torch.tensor"] = torch.tensor
        paths["torch.as_tensor"] = torch.as_tensor
        paths["torch.asarray"] = torch.asarray
    if importlib.util.find_spec("array_api_strict") is not None:
        import array_api_strict

        paths["array_api_strict.asarray"] = array_api_strict.asarray
    return paths


PATHS = _export_paths()
# DLPack exports a backend's arrays cannot make (Dask arrays have no __dlpack__)
NO_DLPACK = {"dask"}


def _needing_grad(backend: str) -> dict[str, Callable[[], ag.Tensor]]:
    """Tensors that require grad, each made another way."""
    def leaf() -> ag.Tensor:
        return ag.tensor([1.0, -2.0, 3.0], backend=backend, requires_grad=True)

    return {"leaf": leaf, "op-output": lambda: leaf() * 2.0, "view": lambda: leaf()[1:]}


@pytest.mark.parametrize("path", ["np.asarray", "__dlpack__"])
@pytest.mark.parametrize("backend", ["numpy", "array_api_strict"])
def test_export_of_a_transform_input_raises_while_its_graph_records(backend: str,
                                                                      path: str) -> None:
    """Inside ag.grad the input requires grad (its graph is recording): exporting it would cut
    the gradient. (After the call, the transform's private copy no longer requires grad.)"""
    def f(x: ag.Tensor) -> ag.Tensor:
        assert x.requires_grad
        with pytest.raises(RuntimeError, match=DETACH):
            PATHS[path](x)
        return ag.sum(x * x)

    ag.grad(f)(ag.tensor([1.0, 2.0], backend=backend))


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("backend", EXPORT_BACKENDS)
def test_export_of_a_tensor_that_requires_grad_raises(backend: str, path: str) -> None:
    for kind, make in _needing_grad(backend).items():
        t = make()
        assert t.requires_grad, kind
        with pytest.raises(RuntimeError, match=DETACH):
            PATHS[path](t)
        with ag.no_grad(), pytest.raises(RuntimeError, match=DETACH):  # as PyTorch: still
            PATHS[path](t)


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("backend", EXPORT_BACKENDS)
def test_export_of_a_detached_tensor_works(backend: str, path: str) -> None:
    if backend in NO_DLPACK and ("dlpack" in path or path.startswith("torch.")):
        pytest.skip(f"{backend} arrays have no DLPack export (PyTorch imports through it)")
    w = ag.tensor([1.0, -2.0, 3.0], backend=backend, requires_grad=True)
    for t in (w.detach(), (w * 2.0).detach(), ag.tensor([1.0, -2.0, 3.0], backend=backend)):
        out = PATHS[path](t)
        if path == "__dlpack__":
            continue  # a capsule
        want = np.asarray(t.numpy())
        if isinstance(out, ag.Tensor):
            out = out.numpy()
        elif type(out).__module__.startswith("torch"):
            out = out.numpy()
        elif type(out).__module__.startswith("array_api_strict"):
            out = np.from_dlpack(out)
        if path == "np.stack":
            out = out[0]
        np.testing.assert_allclose(np.asarray(out), want, rtol=1e-6)


def test_numpy_conversion_keeps_numpy_copy_semantics() -> None:
    t = ag.tensor([1.0, 2.0])
    assert np.asarray(t) is t.data  # a view of NumPy data, as ndarray's asarray is
    c = np.array(t)  # np.array copies
    c[0] = 5.0
    assert t.numpy()[0] == 1.0
    assert np.asarray(t, dtype=np.float32).dtype == np.float32
    s = ag.tensor([1.0, 2.0], backend="array_api_strict")
    with pytest.raises(ValueError, match="copy=False"):
        s.__array__(copy=False)  # not NumPy memory: a NumPy array of it is a copy


@pytest.mark.parametrize("backend", EXPORT_BACKENDS)
def test_printing_a_tensor_that_requires_grad_works(backend: str) -> None:
    w = ag.tensor([1.0, -2.0], backend=backend, requires_grad=True)
    y = w * 2.0
    for t in (w, y):
        assert "Tensor(" in repr(t) and str(t) == repr(t)
        assert f"{t}" == repr(t) and f"{t!s}" == repr(t)
    assert "requires_grad=True" in repr(w) and "node=<multiply>" in repr(y)
    if backend != "dask":
        assert "-4." in repr(y)
    print(w, y)  # no error
    assert float(ag.sum(y)) == -2.0  # a scalar read is not an export of the graph


def test_issue_22_export_example_message() -> None:
    # The issue's example: an Array API library imports with np.asarray and hands back a
    # constant; now the import itself refuses and says what to do.
    x = ag.tensor(np.linspace(0.0, 1.0, 8), requires_grad=True)
    with pytest.raises(RuntimeError) as info:
        np.asarray(x)
    msg = str(info.value)
    assert "__array__" in msg and "requires grad" in msg and ".detach()" in msg
    assert "(8,)" in msg and "float64" in msg


# ---------------------------------------------------------------------------------------------
# SciPy (SCIPY_ARRAY_API=1) and array-api-extra on Tensors that require grad

SCRIPT = r"""
import json
import sys

import numpy as np

import agnograd as ag
from agnograd.testing import check_grad

import scipy.cluster.vq as vq
import scipy.fft as sfft
import scipy.integrate as integrate
import scipy.linalg as slinalg
import scipy.ndimage as ndimage
import scipy.signal as signal
import scipy.spatial.distance as dist
import scipy.special as special
import scipy.stats as stats

try:
    import array_api_extra as xpx
except ImportError:  # SciPy vendors it
    from scipy._lib import array_api_extra as xpx


def c(x, v):
    return ag.tensor(np.asarray(v, dtype=np.float64), backend=x.backend)


def m(x, shape):
    return ag.reshape(x[: int(np.prod(shape))], shape)


def spd(x):
    a = m(x, (2, 2))
    return a @ ag.matrix_transpose(a) + 3.0 * c(x, np.eye(2))


CASES = {
    # scipy.signal (the issue's example: detrend/convolve/correlate returned constants)
    "signal.detrend": lambda x: signal.detrend(x),
    "signal.convolve": lambda x: signal.convolve(x, c(x, [1.0, 2.0, 1.0])),
    "signal.correlate": lambda x: signal.correlate(x, c(x, [1.0, 2.0, 1.0])),
    "signal.fftconvolve": lambda x: signal.fftconvolve(x, c(x, [1.0, 2.0, 1.0])),
    "signal.oaconvolve": lambda x: signal.oaconvolve(x, c(x, [1.0, 2.0, 1.0])),
    "signal.lfilter": lambda x: signal.lfilter(c(x, [1.0, 0.5]), c(x, [1.0, -0.2]), x),
    "signal.filtfilt": lambda x: signal.filtfilt(c(x, [1.0, 0.5]), c(x, [1.0, -0.2]), x, padlen=2),
    "signal.sosfilt": lambda x: signal.sosfilt(c(x, [[1.0, 0.5, 0.0, 1.0, -0.2, 0.0]]), x),
    "signal.savgol_filter": lambda x: signal.savgol_filter(x, 5, 2),
    "signal.medfilt": lambda x: signal.medfilt(x, 3),
    "signal.wiener": lambda x: signal.wiener(x),
    "signal.hilbert": lambda x: ag.real(signal.hilbert(x)),
    "signal.welch": lambda x: signal.welch(x, nperseg=4)[1],
    "signal.periodogram": lambda x: signal.periodogram(x)[1],
    "signal.resample": lambda x: signal.resample(x, 6),
    "signal.decimate": lambda x: signal.decimate(x, 2, n=2, ftype="fir"),
    "signal.upfirdn": lambda x: signal.upfirdn(c(x, [1.0, 1.0]), x, 2),
    # scipy.special
    "special.logsumexp": lambda x: special.logsumexp(x),
    "special.softmax": lambda x: special.softmax(x),
    "special.log_softmax": lambda x: special.log_softmax(x),
    "special.expit": lambda x: special.expit(x),
    "special.logit": lambda x: special.logit(1.0 / (1.0 + ag.exp(-x))),
    "special.erf": lambda x: special.erf(x),
    "special.xlogy": lambda x: special.xlogy(x, ag.exp(x)),
    "special.rel_entr": lambda x: special.rel_entr(ag.exp(x), ag.exp(2.0 * x)),
    "special.entr": lambda x: special.entr(ag.exp(x)),
    "special.gammaln": lambda x: special.gammaln(ag.exp(x)),
    "special.ndtr": lambda x: special.ndtr(x),
    "special.i0": lambda x: special.i0(x),
    # scipy.stats
    "stats.zscore": lambda x: stats.zscore(x),
    "stats.moment": lambda x: stats.moment(x, order=3),
    "stats.skew": lambda x: stats.skew(x),
    "stats.kurtosis": lambda x: stats.kurtosis(x),
    "stats.variation": lambda x: stats.variation(x),
    "stats.gmean": lambda x: stats.gmean(ag.exp(x)),
    "stats.hmean": lambda x: stats.hmean(ag.exp(x)),
    "stats.pmean": lambda x: stats.pmean(ag.exp(x), 2.5),
    "stats.sem": lambda x: stats.sem(x),
    "stats.tmean": lambda x: stats.tmean(x),
    "stats.tvar": lambda x: stats.tvar(x),
    "stats.tstd": lambda x: stats.tstd(x),
    "stats.tmin": lambda x: stats.tmin(x),
    "stats.tmax": lambda x: stats.tmax(x),
    "stats.describe": lambda x: stats.describe(x).variance,
    "stats.trim_mean": lambda x: stats.trim_mean(x, 0.1),
    "stats.iqr": lambda x: stats.iqr(x),
    "stats.quantile": lambda x: stats.quantile(x, 0.3),
    "stats.rankdata": lambda x: stats.rankdata(x) * x,
    "stats.differential_entropy": lambda x: stats.differential_entropy(x),
    "stats.circmean": lambda x: stats.circmean(x),
    "stats.circvar": lambda x: stats.circvar(x),
    "stats.circstd": lambda x: stats.circstd(x),
    "stats.entropy": lambda x: stats.entropy(ag.exp(x)),
    "stats.pearsonr": lambda x: stats.pearsonr(x, ag.exp(x)).statistic,
    "stats.ttest_1samp": lambda x: stats.ttest_1samp(x, 0.0).statistic,
    "stats.ttest_ind": lambda x: stats.ttest_ind(x, 2.0 * x + 1.0).statistic,
    "stats.chatterjeexi": lambda x: stats.chatterjeexi(x, ag.exp(x)).statistic,
    "stats.mode": lambda x: stats.mode(x).mode,
    "stats.wasserstein_distance": lambda x: stats.wasserstein_distance(x, 2.0 * x),
    "stats.norm.logpdf": lambda x: stats.norm.logpdf(x),
    # scipy.fft, scipy.integrate, scipy.ndimage
    "fft.fft": lambda x: ag.real(sfft.fft(x)),
    "fft.rfft": lambda x: ag.imag(sfft.rfft(x)),
    "fft.hfft": lambda x: sfft.hfft(x),
    "fft.fftshift": lambda x: sfft.fftshift(x),
    "fft.dct": lambda x: sfft.dct(x),
    "integrate.trapezoid": lambda x: integrate.trapezoid(x),
    "integrate.simpson": lambda x: integrate.simpson(x),
    "integrate.cumulative_trapezoid": lambda x: integrate.cumulative_trapezoid(x),
    "integrate.cumulative_simpson": lambda x: integrate.cumulative_simpson(x),
    "ndimage.gaussian_filter": lambda x: ndimage.gaussian_filter(x, 1.0),
    "ndimage.convolve": lambda x: ndimage.convolve(x, c(x, [1.0, 2.0, 1.0])),
    # scipy.linalg, scipy.cluster, scipy.spatial
    "linalg.expm": lambda x: slinalg.expm(m(x, (2, 2))),
    "linalg.solve": lambda x: slinalg.solve(spd(x), x[4:6]),
    "linalg.det": lambda x: slinalg.det(m(x, (2, 2))),
    "linalg.cholesky": lambda x: slinalg.cholesky(spd(x)),
    "linalg.norm": lambda x: slinalg.norm(x),
    "linalg.toeplitz": lambda x: slinalg.toeplitz(x),
    "linalg.block_diag": lambda x: slinalg.block_diag(x, x),
    "cluster.vq.whiten": lambda x: vq.whiten(m(x, (4, 2))),
    "spatial.distance.cdist": lambda x: dist.cdist(m(x, (4, 2)), m(x, (4, 2))),
    # array-api-extra
    "xpx.atleast_nd": lambda x: xpx.atleast_nd(x, ndim=3),
    "xpx.cov": lambda x: xpx.cov(m(x, (2, 4))),
    "xpx.create_diagonal": lambda x: xpx.create_diagonal(x),
    "xpx.expand_dims": lambda x: xpx.expand_dims(x, axis=(0, 2)),
    "xpx.kron": lambda x: xpx.kron(x, c(x, [1.0, 2.0])),
    "xpx.pad": lambda x: xpx.pad(x, 2),
    "xpx.sinc": lambda x: xpx.sinc(x),
    "xpx.nan_to_num": lambda x: xpx.nan_to_num(x),
    "xpx.apply_where": lambda x: xpx.apply_where(x > 0, x, lambda a: a**2, fill_value=0.0),
    "xpx.isclose": lambda x: ag.astype(xpx.isclose(x, x), x.dtype) * x,
    "xpx.nunique": lambda x: xpx.nunique(x) * x,
    "xpx.angle": lambda x: xpx.angle(x + 1j * ag.exp(x)),
    "xpx.deg2rad": lambda x: xpx.deg2rad(x),
    "xpx.nanmean": lambda x: xpx.nanmean(x),
    "xpx.nansum": lambda x: xpx.nansum(x),
    "xpx.nanmax": lambda x: xpx.nanmax(x),
    "xpx.partition": lambda x: xpx.partition(x, 3),
    "xpx.argpartition": lambda x: ag.take(x, xpx.argpartition(x, 3)),
    "xpx.isin": lambda x: ag.astype(xpx.isin(x, x[:2]), x.dtype) * x,
    "xpx.searchsorted": lambda x: ag.astype(xpx.searchsorted(ag.sort(x), x), x.dtype) * x,
    "xpx.lazy_apply": lambda x: xpx.lazy_apply(lambda a: a * 2, x),
    "xpx.at.set": lambda x: xpx.at(x)[1].set(3.0),
    "xpx.at.add": lambda x: xpx.at(x)[1:3].add(x[:2]),
    "xpx.setdiff1d": lambda x: xpx.setdiff1d(x, x[:2]),
    "xpx.union1d": lambda x: xpx.union1d(x, x[:2]),
}


def classify(f, backend, rng):
    x = ag.tensor(rng.normal(size=8), backend=backend, requires_grad=True)
    try:
        y = f(x)
    except Exception as exc:
        return "raises", f"{type(exc).__name__}: {str(exc)[:400]}"
    if type(y) is ag.Tensor and y.requires_grad:
        g = (lambda x: ag.real(f(x))) if y.dtype.kind == "c" else f
        try:
            check_grad(g, x, rtol=1e-4, atol=1e-6)
        except NotImplementedError as exc:  # refused when differentiated (unique_*, as torch)
            return "raises", f"{type(exc).__name__}: {str(exc)[:300]}"
        except Exception as exc:
            return "wrong-gradient", f"{type(exc).__name__}: {str(exc)[:300]}"
        return "grad", ""
    # Cut from the graph: fine only if the result is a true constant of x (derivative 0).
    x0 = x.detach().numpy().copy()
    base = np.asarray(ag.real(y).numpy() if type(y) is ag.Tensor else y, dtype=float)
    worst = 0.0
    for i in range(x0.size):
        for s in (1e-5, -1e-5):
            xi = x0.copy()
            xi[i] += s
            yi = f(ag.tensor(xi, backend=backend))
            yi = np.asarray(ag.real(yi).numpy() if type(yi) is ag.Tensor else yi, dtype=float)
            worst = max(worst, float(np.max(np.abs(yi - base), initial=0.0)) / 1e-5)
    if worst < 1e-6:
        return "constant", ""
    return "detached", f"returned {type(y).__name__} without a graph; |dy/dx| ~ {worst:.3g}"


rng = np.random.default_rng(0)
out = {}
for backend in sys.argv[1:]:
    for name, f in CASES.items():
        out[f"{name}[{backend}]"] = classify(f, backend, rng)
print(json.dumps(out))
"""

_NAMES_START = SCRIPT.index("CASES = {")
CASE_NAMES = [line.strip().split('"')[1] for line in SCRIPT[_NAMES_START:].splitlines()
              if line.strip().startswith('"') and '": lambda' in line]
SCIPY_BACKENDS = ("numpy", "array_api_strict")
# These call ag.unique_values/unique_counts, whose values refuse backward (as torch.unique's).
VIA_UNIQUE = {"stats.mode", "xpx.setdiff1d", "xpx.union1d"}


@pytest.fixture(scope="module")
def scipy_outcomes() -> dict[str, list[str]]:
    if importlib.util.find_spec("scipy") is None:
        pytest.skip("SciPy is not installed")
    env = dict(os.environ, SCIPY_ARRAY_API="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, *SCIPY_BACKENDS], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_the_case_list_was_read() -> None:
    assert len(CASE_NAMES) > 80 and "signal.detrend" in CASE_NAMES and "xpx.cov" in CASE_NAMES


@pytest.mark.parametrize("backend", SCIPY_BACKENDS)
@pytest.mark.parametrize("name", CASE_NAMES)
def test_scipy_and_xpx_differentiable_or_raise(scipy_outcomes: dict[str, list[str]], name: str,
                                               backend: str, request: pytest.FixtureRequest
                                               ) -> None:
    outcome, detail = scipy_outcomes[f"{name}[{backend}]"]
    if name in VIA_UNIQUE:
        assert outcome == "raises" and "unique" in detail, (name, backend, outcome, detail)
    assert outcome in ("grad", "raises", "constant"), f"{name} on {backend}: {outcome}: {detail}"


@pytest.mark.parametrize("name", ["signal.detrend", "signal.convolve", "signal.correlate"])
def test_issue_22_scipy_signal_no_longer_detaches(scipy_outcomes: dict[str, list[str]],
                                                  name: str) -> None:
    # The issue's example: these returned a Tensor with requires_grad=False (the gradient was
    # off by 200); they import with np.asarray, which now refuses, naming .detach().
    outcome, detail = scipy_outcomes[f"{name}[numpy]"]
    assert outcome == "raises" and "requires grad" in detail and ".detach()" in detail, detail


@pytest.mark.parametrize("name", ["special.logsumexp", "stats.zscore", "fft.fft",
                                  "integrate.trapezoid", "xpx.cov", "xpx.pad", "xpx.sinc"])
def test_array_api_paths_stay_differentiable(scipy_outcomes: dict[str, list[str]],
                                             name: str) -> None:
    for backend in SCIPY_BACKENDS:
        assert scipy_outcomes[f"{name}[{backend}]"][0] == "grad", (name, backend)
