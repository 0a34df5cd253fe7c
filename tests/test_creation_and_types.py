"""Creation, data type, searching, sorting, set and utility functions, and the namespace's
``__array_namespace_info__``: values, dtypes, devices, gradients where there are any, and
errors -- on every backend available here."""

from __future__ import annotations

import itertools

import array_api_strict as strict
import numpy as np
import pytest

import agnograd as ag
from agnograd._dtypes import from_backend_dtype
from agnograd.testing import check_grad

from .conftest import CPU_BACKENDS

ALL_DTYPES = [ag.bool, ag.int8, ag.int16, ag.int32, ag.int64, ag.uint8, ag.uint16, ag.uint32,
              ag.uint64, ag.float32, ag.float64, ag.complex64, ag.complex128]
KINDS = ["bool", "signed integer", "unsigned integer", "integral", "real floating",
         "complex floating", "numeric"]


def host(t):
    assert isinstance(t, ag.Tensor)
    return t.numpy()


def leaf(values, backend, dtype=ag.float64):
    return ag.tensor(np.asarray(values), backend=backend, dtype=dtype, requires_grad=True)


def const(values, backend, dtype=None):
    return ag.tensor(np.asarray(values), backend=backend, dtype=dtype)


def default_device(backend):
    return ag.get_backend(backend).xp.__array_namespace_info__().default_device()


def defaults(backend):
    """The backend's default dtypes as agnograd DTypes (float64/int64 on NumPy and strict,
    float32 for floats on PyTorch)."""
    raw = ag.get_backend(backend).xp.__array_namespace_info__().default_dtypes()
    return {k: from_backend_dtype(v) for k, v in raw.items()}


def plain(t, backend, dtype=None, shape=None):
    """A Tensor on ``backend`` that needs no grad, with the given dtype and shape."""
    assert isinstance(t, ag.Tensor)
    assert t.backend == backend
    assert not t.requires_grad and t.is_leaf
    if dtype is not None:
        assert t.dtype == dtype
    if shape is not None:
        assert t.shape == shape
    return t


# ---------------------------------------------------------------------------------------------
# Creation from shapes and scalars: the default backend


@pytest.mark.parametrize("fn", [ag.zeros, ag.ones, ag.empty])
def test_zeros_ones_empty(backend, fn):
    with ag.default_backend(backend):
        t = plain(fn((2, 3)), backend, defaults(backend)["real floating"], (2, 3))
        assert t.device == default_device(backend)
        plain(fn(4, dtype=ag.float32), backend, ag.float32, (4,))
        plain(fn((), dtype=ag.int32), backend, ag.int32, ())
        raw_dtype = ag.get_backend(backend).xp.int16  # a backend's own dtype is accepted too
        plain(fn((1, 2), dtype=raw_dtype), backend, ag.int16, (1, 2))
        t = fn(2, device=default_device(backend))
        assert t.device == default_device(backend)
    if fn is not ag.empty:
        value = 0 if fn is ag.zeros else 1
        np.testing.assert_array_equal(host(t), np.full(2, value))


def test_full(backend):
    with ag.default_backend(backend):
        d = defaults(backend)
        t = plain(ag.full((2, 2), 1.5), backend, d["real floating"], (2, 2))
        np.testing.assert_array_equal(host(t), np.full((2, 2), 1.5))
        plain(ag.full(3, True), backend, ag.bool, (3,))
        plain(ag.full(3, 7), backend, d["integral"], (3,))
        plain(ag.full(3, 7, dtype=ag.float32), backend, ag.float32, (3,))
        plain(ag.full(3, 1j), backend, d["complex floating"], (3,))
        t = ag.full((), ag.tensor(2.5, backend=backend))  # a 0-d tensor is read as its value
        assert t.item() == 2.5


def test_arange(backend):
    with ag.default_backend(backend):
        d = defaults(backend)
        t = plain(ag.arange(5), backend, d["integral"], (5,))
        np.testing.assert_array_equal(host(t), np.arange(5))
        t = plain(ag.arange(1, 2.0, 0.25), backend, d["real floating"], (4,))
        np.testing.assert_allclose(host(t), [1.0, 1.25, 1.5, 1.75])
        t = plain(ag.arange(5, 0, -2, dtype=ag.int32), backend, ag.int32, (3,))
        np.testing.assert_array_equal(host(t), [5, 3, 1])
        plain(ag.arange(0, dtype=ag.float32), backend, ag.float32, (0,))
        with pytest.raises(ValueError, match="arange: step must not be 0"):
            ag.arange(0, 5, 0)


def test_linspace(backend):
    with ag.default_backend(backend):
        t = plain(ag.linspace(0.0, 1.0, 5), backend, defaults(backend)["real floating"], (5,))
        np.testing.assert_allclose(host(t), [0.0, 0.25, 0.5, 0.75, 1.0])
        t = ag.linspace(0, 1, 4, endpoint=False, dtype=ag.float32)
        plain(t, backend, ag.float32, (4,))
        np.testing.assert_allclose(host(t), [0.0, 0.25, 0.5, 0.75])
        with pytest.raises(ValueError, match="linspace: num"):
            ag.linspace(0, 1, -1)


def test_eye(backend):
    with ag.default_backend(backend):
        t = plain(ag.eye(3), backend, defaults(backend)["real floating"], (3, 3))
        np.testing.assert_array_equal(host(t), np.eye(3))
        t = plain(ag.eye(2, 4, k=1, dtype=ag.int8), backend, ag.int8, (2, 4))
        np.testing.assert_array_equal(host(t), np.eye(2, 4, k=1))
        np.testing.assert_array_equal(host(ag.eye(3, k=-1)), np.eye(3, k=-1))


def test_creation_dtype_errors(backend):
    with ag.default_backend(backend):
        with pytest.raises(TypeError, match="zeros: not a data type"):
            ag.zeros(2, dtype="float")
        with pytest.raises(TypeError, match="ones_like: not a data type"):
            ag.ones_like(ag.zeros(2), dtype=object)


def test_device_picks_the_backend():
    # A device object of another backend puts the array on that backend (rules written as
    # xp.zeros(..., device=g.device) then work under create_graph whatever the default).
    dev = strict.Device("device1")
    with ag.default_backend("numpy"):
        t = plain(ag.zeros(2, device=dev), "array_api_strict", ag.float64, (2,))
        assert t.device == dev


def test_from_dlpack(backend):
    src = const([1.0, 2.0, 3.0], backend)
    with ag.default_backend(backend):
        t = plain(ag.from_dlpack(src), backend, ag.float64, (3,))
        np.testing.assert_array_equal(host(t), [1.0, 2.0, 3.0])
        raw = ag.get_backend(backend).xp.arange(4, dtype=ag.get_backend(backend).xp.int32)
        t = plain(ag.from_dlpack(raw), backend, ag.int32, (4,))
        np.testing.assert_array_equal(host(t), np.arange(4))
        x = leaf([1.0, 2.0], backend)
        with pytest.raises(RuntimeError, match=r"requires grad.*\.detach\(\)"):
            ag.from_dlpack(x)  # the result would be cut from x's graph
        x = x.detach()
        t = plain(ag.from_dlpack(x, copy=True), backend, ag.float64, (2,))
        t[0] = 9.0  # a copy: x is untouched
        np.testing.assert_array_equal(host(x), [1.0, 2.0])
    with pytest.raises(TypeError, match="from_dlpack: list does not support DLPack"):
        ag.from_dlpack([1, 2])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_from_dlpack_across_cpu_backends(backend):
    other = "numpy" if backend != "numpy" else "array_api_strict"
    with ag.default_backend(backend):
        t = plain(ag.from_dlpack(const([1.0, 2.0], other)), backend, ag.float64, (2,))
        np.testing.assert_array_equal(host(t), [1.0, 2.0])
        t = plain(ag.from_dlpack(np.arange(3, dtype=np.int16)), backend, ag.int16, (3,))


# ---------------------------------------------------------------------------------------------
# *_like: the backend of x


@pytest.mark.parametrize(("fn", "value"), [(ag.zeros_like, 0), (ag.ones_like, 1),
                                           (ag.empty_like, None)])
def test_like(backend, fn, value):
    x = leaf([[1.0, 2.0, 3.0]], backend, ag.float32)
    with ag.default_backend("numpy" if backend != "numpy" else "array_api_strict"):
        t = plain(fn(x), backend, ag.float32, (1, 3))
        assert t.device == x.device
        plain(fn(x, dtype=ag.int64), backend, ag.int64, (1, 3))
        plain(fn(x.data), backend, ag.float32, (1, 3))  # a raw array works too
    if value is not None:
        np.testing.assert_array_equal(host(t), np.full((1, 3), value))


def test_full_like(backend):
    x = const([[1, 2], [3, 4]], backend, ag.int32)
    t = plain(ag.full_like(x, 7), backend, ag.int32, (2, 2))
    np.testing.assert_array_equal(host(t), np.full((2, 2), 7))
    t = plain(ag.full_like(x, 0.5, dtype=ag.float64), backend, ag.float64, (2, 2))
    np.testing.assert_array_equal(host(t), np.full((2, 2), 0.5))


# ---------------------------------------------------------------------------------------------
# asarray


def test_asarray_python_objects(backend):
    with ag.default_backend(backend):
        d = defaults(backend)
        plain(ag.asarray(True), backend, ag.bool, ())
        plain(ag.asarray(3), backend, d["integral"], ())
        plain(ag.asarray(2.5), backend, d["real floating"], ())
        plain(ag.asarray(1 + 2j), backend, d["complex floating"], ())
        t = plain(ag.asarray([[1, 2], [3, 4]], dtype=ag.float32), backend, ag.float32, (2, 2))
        np.testing.assert_array_equal(host(t), [[1, 2], [3, 4]])
        t = ag.asarray((1.0, 2.0), device=default_device(backend))
        assert t.device == default_device(backend)
        with pytest.raises(ValueError, match="asarray: copy=False"):
            ag.asarray([1.0, 2.0], copy=False)
        with pytest.raises(ValueError, match="asarray: copy=False"):
            ag.asarray(1.0, copy=False)


def test_asarray_nested_tensors(backend):
    a = const(1.5, backend, ag.float32)
    b = const([2.0, 3.0], backend, ag.float32)
    with ag.default_backend("numpy" if backend != "numpy" else "array_api_strict"):
        t = plain(ag.asarray([[a, 2.0], b]), backend, ag.float32, (2, 2))
        np.testing.assert_array_equal(host(t), [[1.5, 2.0], [2.0, 3.0]])
        t = plain(ag.asarray([a, a], dtype=ag.float64), backend, ag.float64, (2,))


def test_asarray_raw_arrays_keep_their_backend(backend):
    xp = ag.get_backend(backend).xp
    raw = xp.asarray([1.0, 2.0], dtype=xp.float64)
    other = "numpy" if backend != "numpy" else "array_api_strict"
    with ag.default_backend(other):
        t = plain(ag.asarray(raw), backend, ag.float64, (2,))
        assert t.data is raw  # no copy when none is needed
        t = ag.asarray(raw, copy=True)
        assert t.data is not raw
        np.testing.assert_array_equal(host(t), [1.0, 2.0])
        t = plain(ag.asarray(raw, dtype=ag.float32), backend, ag.float32, (2,))
        with pytest.raises(ValueError, match="asarray: copy=False, but converting"):
            ag.asarray(raw, dtype=ag.float32, copy=False)
    t = plain(ag.asarray(np.float64(2.0)), "numpy", ag.float64, ())  # a NumPy scalar


def test_asarray_tensor_identity_and_gradients(backend):
    x = leaf([1.0, 2.0], backend)
    assert ag.asarray(x) is x
    assert ag.asarray(x, dtype=ag.float64, copy=False) is x
    c = ag.const = ag.asarray(const([1, 2], backend, ag.int64))
    assert not c.requires_grad
    y = ag.asarray(x, copy=True)
    assert y is not x and y.data is not x.data and y.requires_grad
    z = ag.asarray(x, dtype=ag.float32)
    assert z.dtype == ag.float32 and z.requires_grad
    ag.sum(y * 2.0 + ag.astype(z, ag.float64) * 3.0).backward()
    np.testing.assert_allclose(host(x.grad), [5.0, 5.0])
    assert x.grad.dtype == ag.float64
    with pytest.raises(ValueError, match="copy=False, but converting the float64 array"):
        ag.asarray(x, dtype=ag.float32, copy=False)


def test_asarray_copy_is_independent(backend):
    x = const([1.0, 2.0], backend)
    y = ag.asarray(x, copy=True)
    y[0] = 5.0
    assert host(x)[0] == 1.0 and host(y)[0] == 5.0


# ---------------------------------------------------------------------------------------------
# meshgrid, tril, triu


def test_meshgrid_values(backend):
    x = const([1, 2, 3], backend, ag.int32)
    y = const([10, 20], backend, ag.int32)
    xy = ag.meshgrid(x, y)
    assert isinstance(xy, tuple) and len(xy) == 2
    for t, ref in zip(xy, np.meshgrid([1, 2, 3], [10, 20])):
        plain(t, backend, ag.int32, (2, 3))
        np.testing.assert_array_equal(host(t), ref)
    ij = ag.meshgrid(x, y, indexing="ij")
    for t, ref in zip(ij, np.meshgrid([1, 2, 3], [10, 20], indexing="ij")):
        plain(t, backend, ag.int32, (3, 2))
        np.testing.assert_array_equal(host(t), ref)
    assert ag.meshgrid() == ()
    (single,) = ag.meshgrid(x)
    np.testing.assert_array_equal(host(single), [1, 2, 3])


def test_meshgrid_gradient(backend):
    x = leaf([1.0, 2.0, 3.0], backend)
    y = leaf([4.0, 5.0], backend)
    gx, gy = ag.meshgrid(x, y)
    ag.sum(gx * gy).backward()
    np.testing.assert_allclose(host(x.grad), np.full(3, 9.0))  # Σ_j y_j
    np.testing.assert_allclose(host(y.grad), np.full(2, 6.0))  # Σ_i x_i


def test_meshgrid_errors(backend):
    x = const([1.0, 2.0], backend)
    with pytest.raises(ValueError, match="meshgrid: indexing must be"):
        ag.meshgrid(x, x, indexing="xyz")
    with pytest.raises(ValueError, match=r"meshgrid: every input must be 1-d.*\(2, 1\)"):
        ag.meshgrid(x, ag.reshape(x, (2, 1)))


@pytest.mark.parametrize(("name", "k"), [("tril", 0), ("tril", 1), ("tril", -1), ("triu", 0),
                                         ("triu", 2), ("triu", -1)])
def test_tril_triu(backend, name, k):
    values = np.arange(24.0).reshape(2, 3, 4)
    ref = getattr(np, name)(values, k=k)
    x = leaf(values, backend)
    y = getattr(ag, name)(x, k=k)
    assert y.requires_grad and y.shape == (2, 3, 4)
    np.testing.assert_array_equal(host(y), ref)
    ag.sum(y).backward()
    np.testing.assert_array_equal(host(x.grad), getattr(np, name)(np.ones((2, 3, 4)), k=k))
    plain(getattr(ag, name)(const(values, backend), k=k), backend, ag.float64, (2, 3, 4))


def test_tril_triu_errors(backend):
    v = const([1.0, 2.0], backend)
    with pytest.raises(ValueError, match=r"tril: needs an array of at least 2 dimensions.*\(2,\)"):
        ag.tril(v)
    with pytest.raises(ValueError, match="triu: needs an array of at least 2"):
        ag.triu(v)


# ---------------------------------------------------------------------------------------------
# Data type functions


def _strict(d):
    return getattr(strict, d.name)


def _strict_result(*dts):
    try:
        return from_backend_dtype(strict.result_type(*dts)).name
    except TypeError:
        return TypeError


@pytest.mark.parametrize(("a", "b"), list(itertools.combinations_with_replacement(ALL_DTYPES, 2)),
                         ids=lambda d: d.name)
def test_result_type_matches_the_standard_table(a, b):
    expected = _strict_result(_strict(a), _strict(b))
    if expected is TypeError:
        with pytest.raises(TypeError, match="result_type: .* do not promote"):
            ag.result_type(a, b)
        assert not ag.can_cast(a, b) and not ag.can_cast(b, a)
    else:
        got = ag.result_type(a, b)
        assert isinstance(got, ag.DType) and got.name == expected
        assert ag.result_type(b, a) is got
    assert ag.can_cast(a, b) == strict.can_cast(_strict(a), _strict(b))
    assert ag.can_cast(b, a) == strict.can_cast(_strict(b), _strict(a))


@pytest.mark.parametrize("d", ALL_DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("scalar", [True, 1, 1.0, 1j], ids=["bool", "int", "float", "complex"])
def test_result_type_with_python_scalars(d, scalar):
    expected = _strict_result(_strict(d), scalar)
    if expected is TypeError:
        with pytest.raises(TypeError, match=f"result_type: a Python {type(scalar).__name__}"):
            ag.result_type(d, scalar)
    else:
        assert ag.result_type(d, scalar).name == expected
        assert ag.result_type(scalar, d).name == expected


def test_result_type_arguments(backend):
    x32 = const([1.0], backend, ag.float32)
    assert ag.result_type(x32, ag.float64) is ag.float64
    assert ag.result_type(x32.data, 2.0) is ag.float32  # raw arrays
    assert ag.result_type(np.dtype("int8"), strict.uint8) is ag.int16  # backend dtypes
    assert ag.result_type(ag.int8, ag.int16, ag.uint16, 3) is ag.int32
    assert ag.result_type(ag.float32, 1j, 2.0) is ag.complex64
    assert ag.result_type(x32) is ag.float32
    with pytest.raises(ValueError, match="result_type: at least one argument"):
        ag.result_type(1, 2.0)
    with pytest.raises(ValueError, match="result_type: at least one argument"):
        ag.result_type()
    with pytest.raises(TypeError, match="result_type: argument 'float32x' is not a data type"):
        ag.result_type("float32x")
    with pytest.raises(TypeError, match=r"do not promote.*ag\.astype"):
        ag.result_type(x32, ag.int64)


def test_can_cast_arguments(backend):
    assert ag.can_cast(const([1], backend, ag.int8), ag.int64)
    assert not ag.can_cast(ag.float64, ag.float32)
    assert not ag.can_cast(ag.int32, ag.float64)  # no cross-kind casting
    assert ag.can_cast(np.dtype("float32"), ag.complex64)
    with pytest.raises(TypeError, match="can_cast: to must be a data type, not an array"):
        ag.can_cast(ag.int8, const([1], backend))


@pytest.mark.parametrize("d", ALL_DTYPES, ids=lambda d: d.name)
def test_isdtype_matches_the_standard(d):
    for kind in KINDS:
        assert ag.isdtype(d, kind) == strict.isdtype(_strict(d), kind), kind
    for other in ALL_DTYPES:
        assert ag.isdtype(d, other) == (d is other)
    assert ag.isdtype(d, ("bool", "numeric"))
    assert ag.isdtype(np.dtype(d.name), "numeric") == (d is not ag.bool)  # backend dtypes
    assert ag.isdtype(d, (ag.float32, "integral")) == (d is ag.float32 or d.kind in "iu")


def test_isdtype_errors(backend):
    with pytest.raises(ValueError, match="isdtype: unknown kind 'floating'"):
        ag.isdtype(ag.float32, "floating")
    with pytest.raises(ValueError, match="'float32' is a dtype name, not a kind"):
        ag.isdtype(ag.float32, "float32")
    with pytest.raises(TypeError, match="isdtype: dtype must be a data type, not an array"):
        ag.isdtype(const([1.0], backend), "numeric")
    with pytest.raises(TypeError, match="not nested"):
        ag.isdtype(ag.float32, (("bool",),))


@pytest.mark.parametrize("d", [ag.float32, ag.float64, ag.complex64, ag.complex128],
                         ids=lambda d: d.name)
def test_finfo(d):
    fi = ag.finfo(d)
    ref = np.finfo(np.dtype(d.name))
    assert fi.bits == ref.bits
    assert fi.eps == float(ref.eps)
    assert fi.max == float(ref.max) and fi.min == float(ref.min)
    assert fi.smallest_normal == float(ref.smallest_normal)
    assert fi.dtype is (ag.float32 if d.name in ("float32", "complex64") else ag.float64)
    assert isinstance(fi.eps, float) and isinstance(fi.max, float)


@pytest.mark.parametrize("d", [ag.int8, ag.int16, ag.int32, ag.int64, ag.uint8, ag.uint16,
                               ag.uint32, ag.uint64], ids=lambda d: d.name)
def test_iinfo(d):
    ii = ag.iinfo(d)
    ref = np.iinfo(np.dtype(d.name))
    assert (ii.bits, ii.max, ii.min) == (ref.bits, int(ref.max), int(ref.min))
    assert ii.dtype is d
    assert isinstance(ii.max, int)


def test_finfo_iinfo_of_tensors_and_errors(backend):
    assert ag.finfo(const([1.0], backend, ag.float32)).bits == 32
    assert ag.iinfo(const([1], backend, ag.uint16)).max == 65535
    assert ag.finfo(np.float64).dtype is ag.float64
    with pytest.raises(TypeError, match="finfo: int32 is not a floating-point dtype"):
        ag.finfo(ag.int32)
    with pytest.raises(TypeError, match="iinfo: float32 is not an integer dtype"):
        ag.iinfo(ag.float32)
    with pytest.raises(TypeError, match="iinfo: type 'x' is not a data type"):
        ag.iinfo("x")


def test_astype_values_and_copies(backend):
    x = const([1.7, -2.2], backend)
    y = plain(ag.astype(x, ag.int32), backend, ag.int32, (2,))
    np.testing.assert_array_equal(host(y), [1, -2])
    assert ag.astype(x, ag.float64, copy=False) is x
    z = ag.astype(x, ag.float64)
    assert z is not x and z.data is not x.data
    plain(ag.astype(x, ag.get_backend(backend).xp.float32), backend, ag.float32, (2,))
    plain(ag.astype(x.data, ag.bool), backend, ag.bool, (2,))  # raw arrays work
    plain(ag.astype(x, ag.complex128), backend, ag.complex128, (2,))
    d = default_device(backend)
    assert ag.astype(x, ag.float32, device=d).device == d


def test_astype_gradients(backend):
    x = leaf([1.5, 2.5], backend)
    y = ag.astype(x, ag.float32)
    assert y.requires_grad and y.dtype == ag.float32
    ag.sum(ag.astype(y, ag.float64) * const([2.0, 3.0], backend)).backward()
    assert x.grad.dtype == ag.float64
    np.testing.assert_allclose(host(x.grad), [2.0, 3.0])
    # an integer or bool result never requires grad
    plain(ag.astype(x, ag.int64), backend, ag.int64)
    plain(ag.astype(x, ag.bool), backend, ag.bool)
    check_grad(lambda t: ag.astype(t, ag.float64, copy=True) * t, leaf([0.5, -1.0], backend))


def test_astype_errors(backend):
    c = const([1 + 1j], backend, ag.complex128)
    with pytest.raises(TypeError, match=r"astype: casting complex128 to float64.*ag\.real"):
        ag.astype(c, ag.float64)
    with pytest.raises(TypeError, match="astype: not a data type"):
        ag.astype(const([1.0], backend), "double")


# ---------------------------------------------------------------------------------------------
# Searching


def test_argmax_argmin(backend):
    values = np.array([[3.0, 7.0, 7.0], [9.0, -1.0, 2.0]])
    x = leaf(values, backend)
    for name in ("argmax", "argmin"):
        fn, ref = getattr(ag, name), getattr(np, name)
        t = plain(fn(x), backend, ag.int64, ())
        assert t.item() == ref(values)
        t = plain(fn(x, axis=1), backend, ag.int64, (2,))
        np.testing.assert_array_equal(host(t), ref(values, axis=1))
        t = plain(fn(x, axis=0, keepdims=True), backend, ag.int64, (1, 3))
        np.testing.assert_array_equal(host(t), ref(values, axis=0, keepdims=True))
        with pytest.raises(ValueError, match=f"{name}: the input of shape \\(0,\\) is empty"):
            fn(const(np.zeros(0), backend))
        with pytest.raises(IndexError, match=f"{name}: axis 2 is out of bounds"):
            fn(x, axis=2)


def test_nonzero(backend):
    values = np.array([[0.0, 1.5, 0.0], [2.0, 0.0, -1.0]])
    idx = ag.nonzero(leaf(values, backend))
    assert isinstance(idx, tuple) and len(idx) == 2
    for t, ref in zip(idx, np.nonzero(values)):
        plain(t, backend, ag.int64)
        np.testing.assert_array_equal(host(t), ref)
    (only,) = ag.nonzero(const([True, False, True], backend))
    np.testing.assert_array_equal(host(only), [0, 2])
    with pytest.raises(ValueError, match="nonzero: the input is 0-d"):
        ag.nonzero(const(1.0, backend))


def test_count_nonzero(backend):
    values = np.array([[0, 1, 2], [0, 0, 3]])
    x = const(values, backend, ag.int32)
    t = plain(ag.count_nonzero(x), backend, ag.int64, ())
    assert t.item() == 3
    t = plain(ag.count_nonzero(x, axis=1), backend, ag.int64, (2,))
    np.testing.assert_array_equal(host(t), [2, 1])
    t = plain(ag.count_nonzero(x, axis=(0, 1), keepdims=True), backend, ag.int64, (1, 1))
    assert t.item() == 3
    plain(ag.count_nonzero(leaf(values, backend), axis=0), backend, ag.int64, (3,))


def test_searchsorted(backend):
    edges = np.array([1.0, 2.0, 2.0, 5.0])
    x1 = leaf(edges, backend)
    v = const([0.0, 2.0, 3.0, 9.0], backend)
    t = plain(ag.searchsorted(x1, v), backend, ag.int64, (4,))
    np.testing.assert_array_equal(host(t), np.searchsorted(edges, [0.0, 2.0, 3.0, 9.0]))
    t = ag.searchsorted(x1, v, side="right")
    np.testing.assert_array_equal(host(t), np.searchsorted(edges, [0.0, 2.0, 3.0, 9.0], "right"))
    t = plain(ag.searchsorted(x1, 2.0), backend, ag.int64, ())  # a Python scalar
    assert t.item() == 1
    shuffled = const([5.0, 1.0, 2.0], backend)
    sorter = ag.argsort(shuffled)
    t = ag.searchsorted(shuffled, const([1.5, 4.0], backend), sorter=sorter)
    np.testing.assert_array_equal(host(t), [1, 2])
    with pytest.raises(ValueError, match="searchsorted: side must be 'left' or 'right'"):
        ag.searchsorted(x1, v, side="middle")
    with pytest.raises(ValueError, match=r"searchsorted: x1 must be 1-d, not shape \(2, 2\)"):
        ag.searchsorted(ag.reshape(x1, (2, 2)), v)
    with pytest.raises(ValueError, match="searchsorted: sorter has shape"):
        ag.searchsorted(x1, v, sorter=sorter)


# ---------------------------------------------------------------------------------------------
# Sorting


def test_argsort_and_sort_values(backend):
    values = np.array([[3.0, 1.0, 2.0, 1.0], [0.5, 4.0, -1.0, 4.0]])
    x = const(values, backend)
    t = plain(ag.argsort(x), backend, ag.int64, (2, 4))
    np.testing.assert_array_equal(host(t), np.argsort(values, axis=-1, kind="stable"))
    t = ag.argsort(x, descending=True)  # stable: ties keep their order
    np.testing.assert_array_equal(host(t), [[0, 2, 1, 3], [1, 3, 0, 2]])
    t = ag.argsort(x, axis=0)
    np.testing.assert_array_equal(host(t), np.argsort(values, axis=0, kind="stable"))
    t = plain(ag.sort(x), backend, ag.float64, (2, 4))
    np.testing.assert_array_equal(host(t), np.sort(values, axis=-1))
    t = ag.sort(x, axis=0, descending=True)
    np.testing.assert_array_equal(host(t), -np.sort(-values, axis=0))
    ints = const([3, 1, 2], backend, ag.int16)
    plain(ag.sort(ints), backend, ag.int16, (3,))
    with pytest.raises(ValueError, match="sort: the input is 0-d"):
        ag.sort(const(1.0, backend))
    with pytest.raises(IndexError, match="argsort: axis 2 is out of bounds"):
        ag.argsort(x, axis=2)


@pytest.mark.parametrize("descending", [False, True])
def test_sort_gradient(backend, descending):
    values = np.array([[0.3, -1.2, 2.5], [1.0, 0.1, -0.4]])
    x = leaf(values, backend)
    y = ag.sort(x, axis=1, descending=descending)
    assert y.requires_grad
    w = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    ag.sum(y * const(w, backend)).backward()
    order = np.argsort(-values if descending else values, axis=1)
    expected = np.zeros_like(w)
    np.put_along_axis(expected, order, w, axis=1)  # each x gets the weight of its sorted slot
    np.testing.assert_allclose(host(x.grad), expected)
    plain(ag.argsort(x), backend, ag.int64)  # indices never require grad


# ---------------------------------------------------------------------------------------------
# Set functions


def _unique_or_skip(fn, x):
    try:
        return fn(x)
    except NotImplementedError as exc:  # array-api-compat's torch has no unique_all
        pytest.skip(f"the backend does not implement it: {exc}")


def test_unique_all(backend):
    x = const([[3, 1, 3], [2, 1, 3]], backend, ag.int32)
    r = _unique_or_skip(ag.unique_all, x)
    assert type(r).__name__ == "UniqueAllResult"
    assert r._fields == ("values", "indices", "inverse_indices", "counts")
    plain(r.values, backend, ag.int32, (3,))
    np.testing.assert_array_equal(host(r.values), [1, 2, 3])
    np.testing.assert_array_equal(host(r.indices), [1, 3, 0])
    np.testing.assert_array_equal(host(r.inverse_indices), [[2, 0, 2], [1, 0, 2]])
    np.testing.assert_array_equal(host(r.counts), [2, 1, 3])
    for t in r:
        plain(t, backend)
    # From an input that requires grad: the values require grad and refuse backward (as
    # torch.unique's); indices and counts never require grad.
    values, *rest = ag.unique_all(leaf([2.0, 1.0, 2.0], backend))
    assert values.requires_grad
    with pytest.raises(NotImplementedError, match="unique_all: the derivative"):
        ag.sum(values).backward()
    for t in rest:
        plain(t, backend)


def test_unique_counts_inverse_values(backend):
    x = const([[3, 1, 3], [2, 1, 3]], backend, ag.int32)
    c = ag.unique_counts(x)
    assert type(c).__name__ == "UniqueCountsResult" and c._fields == ("values", "counts")
    np.testing.assert_array_equal(host(c.values), [1, 2, 3])
    np.testing.assert_array_equal(host(c.counts), [2, 1, 3])
    i = ag.unique_inverse(x)
    assert type(i).__name__ == "UniqueInverseResult"
    assert i._fields == ("values", "inverse_indices")
    np.testing.assert_array_equal(host(i.inverse_indices), [[2, 0, 2], [1, 0, 2]])
    for t in (*c, *i):
        plain(t, backend)
    u = plain(ag.unique_values(leaf([2.0, 1.0, 2.0], backend).detach()), backend, ag.float64, (2,))
    np.testing.assert_array_equal(host(u), [1.0, 2.0])


# ---------------------------------------------------------------------------------------------
# Utility


def test_all_any(backend):
    values = np.array([[0.0, 1.0], [2.0, 3.0]])
    x = leaf(values, backend)
    for name in ("all", "any"):
        fn, ref = getattr(ag, name), getattr(np, name)
        t = plain(fn(x), backend, ag.bool, ())
        assert t.item() == ref(values)
        t = plain(fn(x, axis=0), backend, ag.bool, (2,))
        np.testing.assert_array_equal(host(t), ref(values, axis=0))
        t = plain(fn(x, axis=(0, 1), keepdims=True), backend, ag.bool, (1, 1))
        t = plain(fn(x, axis=-1), backend, ag.bool, (2,))
        np.testing.assert_array_equal(host(t), ref(values, axis=-1))
        with pytest.raises(IndexError, match=f"{name}: axis 3 is out of bounds"):
            fn(x, axis=3)


def test_diff_values(backend):
    values = np.array([[1.0, 4.0, 9.0, 16.0], [2.0, 3.0, 5.0, 7.0]])
    x = const(values, backend)
    for kw in ({}, {"n": 2}, {"axis": 0}, {"n": 0}, {"n": 5}):
        t = plain(ag.diff(x, **kw), backend, ag.float64)
        np.testing.assert_array_equal(host(t), np.diff(values, **kw))
    p = np.array([[0.0], [1.0]])
    a = np.array([[20.0, 30.0], [8.0, 9.0]])
    t = ag.diff(x, prepend=const(p, backend), append=const(a, backend))
    np.testing.assert_array_equal(host(t), np.diff(values, prepend=p, append=a))
    t = ag.diff(x, axis=0, prepend=0.5)
    np.testing.assert_array_equal(host(t), np.diff(values, axis=0, prepend=0.5))
    b = const([True, True, False, False, True], backend)
    t = plain(ag.diff(b), backend, ag.bool, (4,))
    np.testing.assert_array_equal(host(t), [False, True, False, True])
    t = plain(ag.diff(const([1, 4, 9], backend, ag.int32)), backend, ag.int32, (2,))
    np.testing.assert_array_equal(host(t), [3, 5])


def test_diff_gradient(backend):
    x = leaf([1.0, 4.0, 9.0, 16.0], backend)
    y = ag.diff(x)
    assert y.requires_grad
    ag.sum(y * const([1.0, 2.0, 3.0], backend)).backward()
    np.testing.assert_allclose(host(x.grad), [-1.0, -1.0, -1.0, 3.0])  # ḡ_{j-1} - ḡ_j
    p = leaf([[0.5], [1.0]], backend)
    check_grad(lambda t, q: ag.diff(t * t, n=2, prepend=q), leaf(np.ones((2, 3)), backend), p)


def test_diff_errors(backend):
    x = const(np.zeros((2, 3)), backend)
    with pytest.raises(ValueError, match="diff: the input is 0-d"):
        ag.diff(const(1.0, backend))
    with pytest.raises(ValueError, match="diff: n must be a non-negative integer"):
        ag.diff(x, n=-1)
    with pytest.raises(ValueError, match=r"diff: prepend has shape \(3, 1\) but x has shape"):
        ag.diff(x, prepend=const(np.zeros((3, 1)), backend))
    with pytest.raises(ValueError, match=r"diff: append has shape \(2,\)"):
        ag.diff(x, append=const(np.zeros(2), backend))
    with pytest.raises(IndexError, match="diff: axis 2 is out of bounds"):
        ag.diff(x, axis=2)


# ---------------------------------------------------------------------------------------------
# __array_namespace_info__


def test_namespace_info(backend):
    native = ag.get_backend(backend).xp.__array_namespace_info__()
    with ag.default_backend(backend):
        info = ag.__array_namespace_info__()
    caps = info.capabilities()
    assert caps["boolean indexing"] is True and caps["data-dependent shapes"] is True
    assert caps["max dimensions"] == native.capabilities().get("max dimensions")
    assert info.default_device() == native.default_device()
    assert list(info.devices()) == list(native.devices())
    defaults = info.default_dtypes()
    assert set(defaults) == {"real floating", "complex floating", "integral", "indexing"}
    assert all(isinstance(d, ag.DType) for d in defaults.values())
    assert defaults == {k: from_backend_dtype(v) for k, v in native.default_dtypes().items()}
    assert info.default_dtypes(device=info.default_device()) == defaults
    dtypes = info.dtypes()
    assert dtypes == {k: from_backend_dtype(v) for k, v in native.dtypes().items()}
    assert all(isinstance(d, ag.DType) and d.name == k for k, d in dtypes.items())
    assert info.dtypes(kind="real floating") == {"float32": ag.float32, "float64": ag.float64}
    kinds = ("bool", "unsigned integer")
    assert info.dtypes(kind=kinds) == {k: from_backend_dtype(v)
                                       for k, v in native.dtypes(kind=kinds).items()}
    assert "bool" in info.dtypes(kind=kinds) and "uint8" in info.dtypes(kind=kinds)
    assert "__array_namespace_info__" in ag.__all__


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_namespace_info_follows_the_default_backend(backend):
    with ag.default_backend(backend):
        dev = ag.__array_namespace_info__().default_device()
        assert ag.zeros(1).device == dev
