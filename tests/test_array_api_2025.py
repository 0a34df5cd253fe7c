"""What the 2025.12 Array API standard added or changed, and the special values where agnograd's
forward follows the standard rather than the backend (docs/conformance.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import agnograd as ag

BACKENDS = ["numpy", "array_api_strict"]


@pytest.fixture(params=BACKENDS)
def backend(request):
    with ag.default_backend(request.param):
        yield request.param


def host(t):
    return np.asarray(ag.backends.host_array(t.data))


def test_version_and_namespace():
    assert ag.__array_api_version__ == "2025.12"
    x = ag.tensor([1.0])
    assert x.__array_namespace__(api_version="2025.12") is ag
    assert x.__array_namespace__(api_version="2024.12") is ag
    with pytest.raises(ValueError, match="2099.12"):
        x.__array_namespace__(api_version="2099.12")


def test_tuples_not_lists(backend):
    x, y = ag.tensor([1.0, 2.0]), ag.tensor([3.0, 4.0, 5.0])
    assert type(ag.meshgrid(x, y)) is tuple and ag.meshgrid() == ()
    assert type(ag.broadcast_arrays(x, ag.tensor(1.0))) is tuple
    devices = ag.__array_namespace_info__().devices()
    assert type(devices) is tuple and ag.__array_namespace_info__().default_device() in devices


# ---------------------------------------------------------------------------------------------
# isin

@pytest.mark.parametrize("dtype", ["int8", "int64", "uint8", "float32", "float64"])
def test_isin_matches_numpy(backend, dtype):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 12, size=(3, 4)).astype(dtype)
    v = rng.integers(0, 12, size=(5,)).astype(dtype)
    for invert in (False, True):
        got = ag.isin(ag.tensor(a), ag.tensor(v), invert=invert)
        assert got.dtype == ag.bool and got.shape == a.shape
        np.testing.assert_array_equal(host(got), np.isin(a, v, invert=invert))


def test_isin_mixed_dtypes_scalars_and_empty(backend):
    a = ag.tensor(np.array([[1, 5, 3], [7, 2, 2]], dtype=np.int16))
    v = ag.tensor(np.array([2, 7, 300], dtype=np.int32))  # promoted to int32 first
    np.testing.assert_array_equal(host(ag.isin(a, v)), [[False, False, False], [True, True, True]])
    np.testing.assert_array_equal(host(ag.isin(a, 5)), [[False, True, False], [False, False, False]])
    out = ag.isin(7, a)
    assert out.shape == () and bool(out) is True
    assert bool(ag.isin(4, a, invert=True)) is True
    empty = ag.tensor(np.array([], dtype=np.int16))
    np.testing.assert_array_equal(host(ag.isin(a, empty)), np.zeros((2, 3), bool))
    assert ag.isin(empty, a).shape == (0,)
    with pytest.raises(TypeError, match="isin"):
        ag.isin(1, 2)


def test_isin_floats_nan_signed_zero_complex():
    a = ag.tensor([1.0, math.nan, -0.0, math.inf])
    v = ag.tensor([0.0, math.nan, math.inf])
    # value equality: nan is in nothing, -0 == +0
    np.testing.assert_array_equal(host(ag.isin(a, v)), [False, False, True, True])
    z = ag.tensor(np.array([1 + 1j, 2 - 1j, 0j]))
    np.testing.assert_array_equal(host(ag.isin(z, ag.tensor(np.array([0j, 1 + 1j])))), [True, False, True])


def test_isin_does_not_require_grad():
    x = ag.tensor([1.0, 2.0], requires_grad=True)
    assert not ag.isin(x, x).requires_grad


# ---------------------------------------------------------------------------------------------
# broadcast_shapes, expand_dims with a tuple, permute_dims with negative axes

@pytest.mark.parametrize("shapes", [((2, 1), (3,)), ((), (4, 1, 5), (1, 3, 1)), ((0,), (1,)), ((3,),)])
def test_broadcast_shapes_matches_numpy(shapes):
    assert ag.broadcast_shapes(*shapes) == np.broadcast_shapes(*shapes)


def test_broadcast_shapes_empty_error_and_unknown():
    assert ag.broadcast_shapes() == ()
    with pytest.raises(ValueError, match=r"broadcast_shapes.*\(2, 3\), \(4,\)"):
        ag.broadcast_shapes((2, 3), (4,))
    assert ag.broadcast_shapes((None, 3), (2, 1)) == (2, 3)
    assert ag.broadcast_shapes((None, 3), (1, 1)) == (None, 3)


@pytest.mark.parametrize("axis", [(0,), (-1, 0), (1, 3), (0, 1, 2), (-4, 3), ()])
def test_expand_dims_tuple_is_repeated_expand_dims(backend, axis):
    x = ag.reshape(ag.arange(6.0), (2, 3))
    y = ag.expand_dims(x, axis=axis)
    m = x.ndim + len(axis)
    ref = x
    for a in sorted(a % m for a in axis):
        ref = ag.expand_dims(ref, axis=a)
    assert y.shape == ref.shape
    np.testing.assert_array_equal(host(y), host(ref))


def test_expand_dims_tuple_errors():
    x = ag.ones((2, 3))
    with pytest.raises(IndexError, match="expand_dims"):
        ag.expand_dims(x, axis=(0, 4))
    with pytest.raises(ValueError, match="expand_dims: repeated"):
        ag.expand_dims(x, axis=(1, -3))


def test_expand_dims_tuple_gradient():
    x = ag.tensor([[1.0, 2.0, 3.0]], requires_grad=True)
    ag.sum(ag.expand_dims(x, axis=(0, -1)) * ag.reshape(ag.arange(3.0), (1, 1, 3, 1))).backward()
    np.testing.assert_array_equal(host(x.grad), [[0.0, 1.0, 2.0]])


def test_permute_dims_negative_axes():
    x = ag.reshape(ag.arange(24.0), (2, 3, 4))
    assert ag.permute_dims(x, (-1, 0, -2)).shape == (4, 2, 3)


# ---------------------------------------------------------------------------------------------
# Standard special values the backend (NumPy) gets otherwise

INF, NAN = math.inf, math.nan
FLOORDIV_CASES = [  # x1, x2, the standard's result
    (INF, 2.0, INF), (INF, -2.0, -INF), (-INF, 2.0, -INF), (-INF, -2.0, INF),
    (1.0, -INF, -0.0), (-1.0, INF, -0.0), (1.0, INF, 0.0), (-1.0, -INF, 0.0),
    (INF, INF, NAN), (NAN, INF, NAN), (7.0, 2.0, 3.0), (-7.0, 2.0, -4.0), (1.0, 0.1, 9.0),
]


def _same(got, want):
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.signbit(got[~np.isnan(got)]), np.signbit(want[~np.isnan(want)]))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_floor_divide_infinities(backend, dtype):
    dt = getattr(ag, dtype)
    x1 = ag.tensor([c[0] for c in FLOORDIV_CASES], dtype=dt)
    x2 = ag.tensor([c[1] for c in FLOORDIV_CASES], dtype=dt)
    want = [c[2] for c in FLOORDIV_CASES]
    _same(host(ag.floor_divide(x1, x2)), want)
    _same(host(x1 // x2), want)
    _same(host(ag.floor_divide(x1, 2.0)),
          [INF, INF, -INF, -INF, 0.0, -1.0, 0.0, -1.0, INF, NAN, 3.0, -4.0, 0.0])
    _same(host(INF // x2), [INF, -INF, INF, -INF, NAN, NAN, NAN, NAN, NAN, NAN, INF, INF, INF])
    y = ag.tensor([c[0] for c in FLOORDIV_CASES], dtype=dt)
    y //= x2
    _same(host(y), want)


def test_floor_divide_in_place_reaches_views():
    x = ag.tensor([INF, 1.0, 7.0])
    v = x[:]  # a view on NumPy
    x //= ag.tensor([2.0, -INF, 2.0])
    _same(host(v), [INF, -0.0, 3.0])


def test_floor_divide_integers_unchanged(backend):
    x = ag.tensor([7, -7, 0])
    np.testing.assert_array_equal(host(x // 2), [3, -4, 0])
    x //= 2
    np.testing.assert_array_equal(host(x), [3, -4, 0])


def _c(re, im):
    return complex(re, im)


EXPM1_CASES = [  # z, the standard's expm1(z) (None: sign or value unspecified, checked loosely)
    (_c(0.0, 0.0), _c(0.0, 0.0)), (_c(-0.0, 0.0), _c(0.0, 0.0)), (_c(-0.0, -0.0), _c(0.0, -0.0)),
    (_c(INF, 0.0), _c(INF, 0.0)), (_c(INF, -0.0), _c(INF, -0.0)), (_c(NAN, 0.0), _c(NAN, 0.0)),
    (_c(-INF, INF), _c(-1.0, 0.0)), (_c(-INF, NAN), _c(-1.0, 0.0)),
    (_c(INF, INF), _c(INF, NAN)), (_c(INF, NAN), _c(INF, NAN)), (_c(1.0, 0.0), _c(math.expm1(1.0), 0.0)),
    (_c(-INF, 1.0), _c(-1.0, 0.0)),
]


def _same_complex(got, want, signs=True):
    got = np.asarray(got)
    for g, w in zip(got.ravel(), np.asarray(want).ravel()):
        for a, b in ((g.real, w.real), (g.imag, w.imag)):
            if math.isnan(b):
                assert math.isnan(a), (g, w)
            else:
                assert a == pytest.approx(b, rel=1e-6), (g, w)
                if signs and b == 0:
                    assert math.copysign(1, a) == math.copysign(1, b), (g, w)


@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
def test_expm1_complex_special_values(backend, dtype):
    z = ag.tensor(np.array([c[0] for c in EXPM1_CASES]), dtype=getattr(ag, dtype))
    got = ag.expm1(z)
    assert got.dtype == getattr(ag, dtype)
    _same_complex(host(got)[:-5], [c[1] for c in EXPM1_CASES][:-5])
    _same_complex(host(got)[-5:], [c[1] for c in EXPM1_CASES][-5:], signs=False)


@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
def test_tanh_complex_special_values(backend, dtype):
    zs = [_c(INF, 2.0), _c(INF, -2.0), _c(-INF, 2.0), _c(-INF, -2.0), _c(INF, 0.0), _c(INF, -0.0),
          _c(0.5, 0.25)]
    want = [_c(1.0, 0.0), _c(1.0, -0.0), _c(-1.0, 0.0), _c(-1.0, -0.0), _c(1.0, 0.0), _c(1.0, -0.0),
            complex(np.tanh(_c(0.5, 0.25)))]
    got = ag.tanh(ag.tensor(np.array(zs), dtype=getattr(ag, dtype)))
    _same_complex(host(got), want)


def test_real_expm1_tanh_keep_their_gradients():
    x = ag.tensor([-1.0, 0.5, 2.0], requires_grad=True)
    ag.sum(ag.expm1(x) + ag.tanh(x)).backward()
    xs = np.array([-1.0, 0.5, 2.0])
    np.testing.assert_allclose(host(x.grad), np.exp(xs) + 1 - np.tanh(xs) ** 2)


def test_irfftn_explicit_length_of_one_bin():
    x = ag.zeros((1, 2, 5), dtype=ag.complex64)
    assert ag.fft.irfftn(x, s=(1,), axes=[0]).shape == (1, 2, 5)
    assert ag.fft.irfft(ag.ones((1,), dtype=ag.complex128), n=1).shape == (1,)
