"""Crashes and wrong dtypes at the edges (issue 22, class 9), each a named regression test.

* The backward of integer indexing and ``take`` on complex tensors crashed inside NumPy's
  ``bincount`` (the scatter-add of the NumPy and Dask backends takes real weights only): now
  the real and imaginary parts are summed apart; gradients agree with PyTorch on every backend.
* Object-dtype (and string) NumPy arrays were accepted by ``asarray`` and failed later, in some
  op: now refused at once, by every door (``asarray``, ``tensor``, an op's operand).
* On Dask, ``device=x.device`` in a creation call picked the NumPy backend (Dask's device was the
  plain string ``"cpu"``): now Dask reports a device of its own type that equals ``"cpu"``.
* On Dask, complex ``eigh``/``eigvalsh``/``svd``/``svdvals``/``slogdet``/``matrix_norm`` results
  had complex dtypes where the standard says real.
"""

from __future__ import annotations

import numpy as np
import pytest

import agnograd as ag

BACKENDS = [b for b in ("numpy", "array_api_strict", "torch", "dask")
            if b in ag.available_backends()]

RNG = np.random.default_rng(22)
Z = RNG.normal(size=(4, 3)) + 1j * RNG.normal(size=(4, 3))
W = RNG.normal(size=(3, 3)) + 1j * RNG.normal(size=(3, 3))
IDX = np.array([0, 2, 0, 3])

# Complex indexing reads (the forward), each with its PyTorch twin.
READS = {
    "getitem-int-array": (lambda z, i: ag.reshape(z, (-1,))[i], lambda z, i: z.reshape(-1)[i]),
    "getitem-int-array-1d": (lambda z, i: z[:, 0][i], lambda z, i: z[:, 0][i]),
    "take-axis0": (lambda z, i: ag.take(z, i, axis=0), lambda z, i: z.index_select(0, i)),
    "take-axis1": (lambda z, i: ag.take(z, i[:3] % 3, axis=1),
                   lambda z, i: z.index_select(1, i[:3] % 3)),
    "take-1d": (lambda z, i: ag.take(ag.reshape(z, (-1,)), i),
                lambda z, i: z.reshape(-1).index_select(0, i)),
}


def _host(t: ag.Tensor) -> np.ndarray:
    a = t.data.compute() if t.backend == "dask" else t.numpy()
    return np.asarray(a)


@pytest.mark.parametrize("read", list(READS))
@pytest.mark.parametrize("backend", BACKENDS)
def test_issue_22_complex_index_backward_matches_torch(backend: str, read: str) -> None:
    torch = pytest.importorskip("torch")
    f, tf = READS[read]
    z = ag.tensor(Z, backend=backend, requires_grad=True)
    i = ag.tensor(IDX, backend=backend)
    y = f(z, i)
    v = ag.tensor(RNG.normal(size=y.shape) + 1j * RNG.normal(size=y.shape), backend=backend)
    loss = ag.real(ag.sum(y * ag.conj(v))) + ag.sum(ag.abs(y) ** 2)  # repeats: summed
    loss.backward()
    tz = torch.tensor(Z, requires_grad=True)
    ty = tf(tz, torch.tensor(IDX))
    tv = torch.tensor(_host(v))
    ((ty * tv.conj()).sum().real + (ty.abs() ** 2).sum()).backward()
    np.testing.assert_allclose(_host(z.grad), tz.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", ["complex64", "complex128", "float32"])
def test_scatter_add_of_complex_values_on_every_backend(dtype: str) -> None:
    values = (np.arange(5) + 1j * np.arange(5, 10)).astype(dtype) if "complex" in dtype \
        else np.arange(5, dtype=dtype)
    index = np.array([1, 3, 1, 0, 3])
    want = np.zeros(4, dtype=dtype)
    np.add.at(want, index, values)
    for name in BACKENDS:
        b = ag.get_backend(name)
        got = b.scatter_add(4, b.asarray(index), b.asarray(values))
        host = got.compute() if name == "dask" else ag.Tensor._wrap(got, b).numpy()
        assert np.asarray(host).dtype == np.dtype(dtype), name
        np.testing.assert_allclose(np.asarray(host), want, rtol=1e-6, err_msg=name)


# ---------------------------------------------------------------------------------------------
# Object-dtype arrays: refused at once

BAD = {
    "object": np.array([1.0, None], dtype=object),
    "object-of-floats": np.array([1.0, 2.0], dtype=object),
    "string": np.array(["a", "b"]),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_issue_22_object_arrays_are_refused_at_once(kind: str) -> None:
    a = BAD[kind]
    doors = {
        "asarray": lambda: ag.asarray(a),
        "asarray-dtype": lambda: ag.asarray(a, dtype=ag.float64),
        "asarray-nested": lambda: ag.asarray([a, a]),
        "tensor": lambda: ag.tensor(a),
        "operand": lambda: ag.tensor([1.0, 2.0]) + a,
        "function": lambda: ag.sum(a),
    }
    for door, call in doors.items():
        with pytest.raises(TypeError, match=r"not an Array API dtype.*convert it") as info:
            call()
        msg = str(info.value)
        assert str(a.dtype) in msg, (door, msg)
    with pytest.raises(TypeError, match="asarray"):
        ag.asarray(a)
    with pytest.raises(TypeError, match="add"):
        ag.add(ag.tensor([1.0, 2.0]), a)


# ---------------------------------------------------------------------------------------------
# Dask: device=x.device stays on Dask; complex decompositions give real dtypes

dask_only = pytest.mark.skipif("dask" not in ag.available_backends(),
                               reason="Dask is not installed")

CREATIONS = {
    "zeros": lambda d: ag.zeros((2, 3), device=d),
    "ones": lambda d: ag.ones(3, device=d),
    "empty": lambda d: ag.empty(3, device=d),
    "full": lambda d: ag.full(3, 2.5, device=d),
    "arange": lambda d: ag.arange(4, device=d),
    "linspace": lambda d: ag.linspace(0.0, 1.0, 5, device=d),
    "eye": lambda d: ag.eye(3, device=d),
    "asarray": lambda d: ag.asarray([1.0, 2.0], device=d),
    "tensor": lambda d: ag.tensor([1.0, 2.0], device=d),
    "zeros_like": lambda d: ag.zeros_like(ag.tensor([1.0, 2.0], backend="dask"), device=d),
}


@dask_only
@pytest.mark.parametrize("make", list(CREATIONS))
def test_issue_22_dask_device_keeps_creation_on_dask(make: str) -> None:
    x = ag.tensor(np.ones((2, 2)), backend="dask")
    assert x.device == "cpu"  # still the device array-api-compat names
    t = CREATIONS[make](x.device)
    assert t.backend == "dask", f"{make}(device=x.device) made a '{t.backend}' tensor"
    assert t.device == x.device
    y = ag.sum(t) + ag.sum(x)  # it combines with x: one backend
    assert y.backend == "dask"
    # a plain "cpu" still means the default backend
    assert ag.zeros(2, device="cpu").backend == ag.get_default_backend().name


def _hermitian(n: int) -> np.ndarray:
    a = RNG.normal(size=(n, n)) + 1j * RNG.normal(size=(n, n))
    return a + a.conj().T


DECOMPOSITIONS = {
    "eigh.eigenvalues": lambda x: ag.linalg.eigh(x).eigenvalues,
    "eigvalsh": lambda x: ag.linalg.eigvalsh(x),
    "svd.S": lambda x: ag.linalg.svd(x).S,
    "svd-reduced.S": lambda x: ag.linalg.svd(x, full_matrices=False).S,
    "svdvals": lambda x: ag.linalg.svdvals(x),
    "slogdet.logabsdet": lambda x: ag.linalg.slogdet(x).logabsdet,
    "matrix_norm-fro": lambda x: ag.linalg.matrix_norm(x),
    "matrix_norm-2": lambda x: ag.linalg.matrix_norm(x, ord=2),
    "matrix_norm--2": lambda x: ag.linalg.matrix_norm(x, ord=-2),
    "matrix_norm-nuc": lambda x: ag.linalg.matrix_norm(x, ord="nuc"),
    "matrix_norm-inf": lambda x: ag.linalg.matrix_norm(x, ord=float("inf")),
}


@dask_only
@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
@pytest.mark.parametrize("fn", list(DECOMPOSITIONS))
def test_issue_22_dask_complex_decompositions_are_real(fn: str, dtype: str) -> None:
    import dask.array as da

    real = {"complex64": ag.float32, "complex128": ag.float64}[dtype]
    f = DECOMPOSITIONS[fn]
    h = _hermitian(4).astype(dtype)
    stack = np.stack([h, 2.0 * h]).astype(dtype)
    tall = (RNG.normal(size=(8, 2)) + 1j * RNG.normal(size=(8, 2))).astype(dtype)
    for host, chunks in ((h, (4, 4)), (stack, (1, 4, 4)), (tall, (4, 2))):
        if fn.startswith(("eigh", "eigvalsh", "slogdet")) and host.shape[-1] != host.shape[-2]:
            continue
        x = ag.tensor(da.from_array(host, chunks=chunks))
        y = f(x)
        assert y.dtype is real, f"{fn} of a {dtype} Dask array: {y.dtype.name}"
        got = np.asarray(y.data.compute())
        assert got.dtype == np.dtype(real.name)
        want = np.asarray(f(ag.tensor(host)).numpy())
        np.testing.assert_allclose(got, want, rtol=1e-4 if dtype == "complex64" else 1e-10)
    # the sign of a complex determinant stays complex
    assert ag.linalg.slogdet(ag.tensor(da.from_array(h))).sign.dtype.kind == "c"
