"""The backend door: names, defaults, errors, scalar fixing, scatter-add paths."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import agnograd as ag
from agnograd import backends as _backend


def test_backends_by_name_and_from_arrays():
    assert ag.get_backend("numpy").name == "numpy"
    assert ag.get_backend("array_api_strict").name == "array_api_strict"
    assert ag.tensor(np.ones(2)).backend == "numpy"
    import array_api_strict as xps

    assert ag.tensor(xps.asarray([1.0])).backend == "array_api_strict"
    assert {"numpy", "array_api_strict"} <= set(ag.available_backends())


def test_unknown_backend_names_the_known_ones():
    with pytest.raises(ag.BackendError, match="unknown backend 'nump'.*numpy"):
        ag.get_backend("nump")


def test_missing_library_names_the_extra(monkeypatch):
    def fail(name):
        raise ImportError(f"No module named {name!r}")

    monkeypatch.setattr(_backend.importlib, "import_module", fail)
    monkeypatch.setattr(_backend, "_backends", {})
    with pytest.raises(ag.BackendError, match=r"not installed.*agnograd\[cuda13\]"):
        ag.get_backend("cupy")


@pytest.mark.skipif("cupy" in ag.available_backends(), reason="a CUDA device is present")
def test_cupy_without_a_device_says_so():
    try:
        import cupy  # noqa: F401
    except ImportError:
        pytest.skip("CuPy is not installed")
    with pytest.raises(ag.BackendError, match="CUDA"):
        ag.get_backend("cupy")


def test_default_backend_context_and_setter():
    assert ag.get_default_backend().name == "numpy"
    with ag.default_backend("array_api_strict"):
        assert ag.tensor([1.0]).backend == "array_api_strict"
        with ag.default_backend("numpy"):
            assert ag.tensor([1.0]).backend == "numpy"
        assert ag.tensor([1.0]).backend == "array_api_strict"
    assert ag.tensor([1.0]).backend == "numpy"
    try:
        ag.set_default_backend("array_api_strict")
        assert ag.tensor(1.0).backend == "array_api_strict"
    finally:
        ag.set_default_backend("numpy")
    with pytest.raises(ag.BackendError):
        ag.set_default_backend("no-such-backend")


def test_default_backend_context_is_per_thread():
    seen = {}

    def worker():
        seen["name"] = ag.tensor(1.0).backend

    with ag.default_backend("array_api_strict"):
        t = threading.Thread(target=worker)
        t.start()
        t.join()
    assert seen["name"] == "numpy"


def test_environment_variable_picks_the_default():
    code = "import agnograd as ag; print(ag.tensor(1.0).backend)"
    env = dict(os.environ, AGNOGRAD_BACKEND="array_api_strict")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "array_api_strict"


def test_numpy_scalars_become_0d_arrays():
    x = ag.tensor(np.float64(2.0))
    assert type(x.data) is np.ndarray and x.shape == ()
    y = ag.exp(ag.tensor(1.0))       # NumPy returns a scalar for exp of a 0-d array
    assert type(y.data) is np.ndarray


@pytest.mark.parametrize("n", [1, 7, 50])
def test_scatter_add_fast_path_agrees_with_the_standard_fallback(n):
    rng = np.random.default_rng(n)
    idx = rng.integers(0, n, size=3 * n)
    for dtype in (np.float32, np.float64):
        vals = rng.normal(size=3 * n).astype(dtype)
        fast = ag.get_backend("numpy").scatter_add(n, idx, vals)
        import array_api_compat.numpy as xp

        standard = _backend.scatter_add_standard(xp, n, idx, vals)
        expected = np.zeros(n, dtype=dtype)
        np.add.at(expected, idx, vals)
        assert fast.dtype == dtype and standard.dtype == dtype
        np.testing.assert_allclose(fast, expected, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(standard, expected, rtol=1e-6, atol=1e-6)


def test_scatter_add_standard_fallback_runs_on_strict():
    import array_api_strict as xps

    b = ag.get_backend("array_api_strict")
    out = b.scatter_add(4, xps.asarray([3, 0, 3, 3]), xps.asarray([1.0, 2.0, 3.0, 4.0]))
    np.testing.assert_array_equal(np.asarray(out), [2.0, 0.0, 0.0, 8.0])


def test_mixing_backends_is_a_type_error_naming_both():
    a = ag.tensor([1.0, 2.0], backend="numpy")
    b = ag.tensor([1.0, 2.0], backend="array_api_strict")
    with pytest.raises(TypeError, match=r"'numpy'.*'array_api_strict'.*to_backend"):
        a + b
    with pytest.raises(TypeError, match="numpy"):
        ag.multiply(b, np.ones(2))
    with pytest.raises(TypeError, match="array_api_strict"):
        ag.concat([a, b])


def test_tensor_transfers_between_backends():
    a = ag.tensor(np.arange(3.0))
    b = ag.tensor(a, backend="array_api_strict")
    assert b.backend == "array_api_strict"
    np.testing.assert_array_equal(b.numpy(), [0.0, 1.0, 2.0])


def test_to_backend_is_differentiable_across_the_transfer():
    x = ag.tensor([1.0, 2.0], requires_grad=True)                  # starts on NumPy
    y = ag.to_backend(ag.exp(x), "array_api_strict")               # continues on strict
    assert y.backend == "array_api_strict"
    loss = ag.sum(y * y)
    loss.backward(create_graph=True)
    assert x.grad.backend == "numpy"
    np.testing.assert_allclose(x.grad.numpy(), 2 * np.exp([2.0, 4.0]))
    g = x.grad
    x.grad = None
    ag.sum(g).backward()                                           # and back again, second order
    np.testing.assert_allclose(x.grad.numpy(), 4 * np.exp([2.0, 4.0]))
    assert ag.to_backend(x, "numpy") is x


@pytest.mark.parametrize("name", ["cupy", "torch"])
def test_optional_backends(name):
    """Reports (as a skip) an optional backend that the parametrized tests leave out here."""
    if name not in ag.available_backends():
        pytest.skip(f"backend {name!r} is not available here: its cases are not run")
    assert ag.tensor([1.0], backend=name).backend == name


def test_operands_on_different_devices_are_refused():
    torch = pytest.importorskip("torch")
    a = ag.tensor(torch.ones(2))
    b = ag.tensor(torch.ones(2, device="meta"))
    with pytest.raises(RuntimeError, match=r"different devices.*to_device"):
        a + b
    with pytest.raises(RuntimeError, match="different devices"):
        ag.stack([a, b])


def test_host_array_brings_gpu_torch_tensors_back_through_cpu():
    """DLPack and __array__ refuse PyTorch tensors on a GPU: host_array moves them with .cpu().
    (A stand-in with PyTorch's module name and methods: no GPU is needed to check the path.)"""
    from agnograd.backends import host_array

    class Device:
        type = "cuda"

    class FakeCudaTensor:
        device = Device()

        def __init__(self, values):
            self.values = values

        def detach(self):
            return self

        def cpu(self):
            return self

        def numpy(self):
            return np.asarray(self.values)

        def __dlpack__(self, *a, **k):
            raise RuntimeError("can't export a CUDA tensor to NumPy")

    FakeCudaTensor.__module__ = "torch.fake"
    np.testing.assert_array_equal(host_array(FakeCudaTensor([1.0, 2.0])), [1.0, 2.0])
