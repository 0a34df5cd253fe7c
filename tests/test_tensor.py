"""Tensor: attributes, creation, operators (reflected and in-place), conversions, errors."""

from __future__ import annotations

import numpy as np
import pytest

import agnograd as ag

from .conftest import BACKENDS


@pytest.mark.parametrize("backend", BACKENDS)
def test_attributes(backend):
    t = ag.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], backend=backend, dtype=ag.float64)
    assert t.shape == (2, 3) and t.ndim == 2 and t.size == 6
    assert t.dtype == ag.float64
    assert t.backend == backend
    assert t.T.shape == (3, 2) and t.mT.shape == (3, 2)
    assert t.device == ag.get_backend(backend).device_of(t.data)
    assert not t.requires_grad and t.grad is None and t.is_leaf
    assert t.__array_namespace__() is ag


def test_tensor_copies_backend_arrays_and_asarray_does_not():
    a = np.arange(3.0)
    t = ag.tensor(a)  # a copy, as torch.tensor makes
    assert t.data is not a and not np.shares_memory(t.data, a)
    a[0] = 7.0
    assert t.numpy()[0] == 0.0
    assert ag.asarray(a).data is a  # the standard's copy=None: no conversion, no copy
    assert ag.tensor(a, dtype=ag.float32).dtype == ag.float32
    assert ag.tensor(3).dtype == ag.int64
    assert ag.tensor(True).dtype == ag.bool
    assert ag.tensor([1.0, 2.0], dtype=np.float32).dtype == ag.float32


def test_dtype_objects_compare_with_backend_dtypes():
    assert ag.float32 == np.dtype("float32")
    assert ag.float32 != ag.float64
    assert ag.tensor(np.ones(2, np.float32)).dtype is ag.float32
    assert repr(ag.float64) == "agnograd.float64"


def test_repr_shows_backend_and_node():
    x = ag.tensor([1.0, 2.0], requires_grad=True)
    assert "backend='numpy'" in repr(x) and "requires_grad=True" in repr(x)
    y = ag.exp(x)
    assert "node=<exp>" in repr(y)


def test_requires_grad_only_for_real_floating_tensors():
    with pytest.raises(TypeError, match=r"int64.*astype"):
        ag.tensor([1, 2], requires_grad=True)
    t = ag.tensor([1.0]).requires_grad_()
    assert t.requires_grad
    y = t * 2.0
    with pytest.raises(RuntimeError, match="leaf"):
        y.requires_grad_(False)


@pytest.mark.parametrize("backend", BACKENDS)
def test_python_scalars_follow_the_standards_promotion(backend):
    x = ag.tensor([1.0, 2.0], backend=backend, dtype=ag.float32)
    assert (x * 2.0).dtype == ag.float32
    assert (2 * x).dtype == ag.float32
    assert (x + 1).dtype == ag.float32
    assert (1.0 - x).dtype == ag.float32
    i = ag.tensor([1, 2], backend=backend)
    assert (i + 1).dtype == ag.int64


@pytest.mark.parametrize("backend", BACKENDS)
def test_operators_and_reflected_operators(backend):
    x = ag.tensor([1.0, 2.0, 4.0], backend=backend)
    np.testing.assert_allclose((x + 1).numpy(), [2, 3, 5])
    np.testing.assert_allclose((1 - x).numpy(), [0, -1, -3])
    np.testing.assert_allclose((2 / x).numpy(), [2, 1, 0.5])
    np.testing.assert_allclose((2**x).numpy(), [2, 4, 16])
    np.testing.assert_allclose((x // 3).numpy(), [0, 0, 1])
    np.testing.assert_allclose((x % 3).numpy(), [1, 2, 1])
    np.testing.assert_allclose((-x).numpy(), [-1, -2, -4])
    np.testing.assert_allclose(abs(-x).numpy(), [1, 2, 4])
    assert (x > 1.5).dtype == ag.bool
    np.testing.assert_array_equal((x == 2.0).numpy(), [False, True, False])
    i = ag.tensor([1, 6], backend=backend)
    np.testing.assert_array_equal((i & 3).numpy(), [1, 2])
    np.testing.assert_array_equal((~ag.tensor([True, False], backend=backend)).numpy(), [False, True])
    m = ag.tensor([[1.0, 2.0], [3.0, 4.0]], backend=backend)
    np.testing.assert_allclose((m @ m).numpy(), [[7, 10], [15, 22]])


def test_numpy_array_on_the_left_defers_to_tensor():
    x = ag.tensor([1.0, 2.0], requires_grad=True)
    y = np.array([3.0, 4.0]) * x
    assert isinstance(y, ag.Tensor) and y.requires_grad
    ag.sum(y).backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 4.0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_scalar_conversions(backend):
    t = ag.tensor(2.5, backend=backend)
    assert float(t) == 2.5 and t.item() == 2.5
    assert int(ag.tensor(3, backend=backend)) == 3
    assert bool(ag.tensor(True, backend=backend)) is True
    assert [0, 1, 2, 3][ag.tensor(2, backend=backend)] == 2
    with pytest.raises(TypeError, match="0-d"):
        float(ag.tensor([1.0, 2.0], backend=backend))
    with pytest.raises(ValueError, match="one element"):
        ag.tensor([1.0, 2.0], backend=backend).item()


def test_dlpack_round_trip():
    t = ag.tensor([1.0, 2.0])
    back = np.from_dlpack(t)
    np.testing.assert_array_equal(back, [1.0, 2.0])
    assert t.__dlpack_device__() == (1, 0)


def test_in_place_operator_without_graph_mutates_the_data():
    a = np.zeros(3)
    t = ag.asarray(a)
    t += 1.0
    assert t.data is a and np.all(a == 1.0)
    t *= ag.tensor([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(a, [1.0, 2.0, 3.0])


def test_in_place_on_leaf_requiring_grad_needs_no_grad():
    w = ag.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="no_grad"):
        w -= 0.1
    with ag.no_grad():
        w -= 0.5
    np.testing.assert_allclose(w.numpy(), [0.5, 1.5])
    assert w.requires_grad and w.is_leaf


def test_in_place_on_intermediate_keeps_saved_arrays_intact():
    x = ag.tensor([1.0, 2.0], requires_grad=True)
    h = ag.exp(x)
    y = h * h          # saves h's array
    h += 1.0           # rebinds h to a new node; y's saved array is untouched
    loss = ag.sum(y) + ag.sum(h)
    loss.backward()
    e = np.exp([1.0, 2.0])
    np.testing.assert_allclose(x.grad.numpy(), 2 * e * e + e)


def test_in_place_cannot_change_shape():
    x = ag.tensor([1.0, 2.0], requires_grad=True)
    h = x * 1.0
    with pytest.raises(ValueError, match="in-place"):
        h += ag.tensor([[1.0], [2.0]])


def test_setitem_without_graph_is_in_place():
    a = np.zeros((2, 3))
    t = ag.asarray(a)
    t[0, 1:] = 5.0
    t[ag.tensor(a > 4)] = 7.0
    np.testing.assert_array_equal(a, [[0, 7, 7], [0, 0, 0]])


def test_setitem_on_leaf_requiring_grad_raises():
    w = ag.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="no_grad"):
        w[0] = 3.0
    with ag.no_grad():
        w[0] = 3.0
    assert w.numpy()[0] == 3.0


def test_iteration_and_len():
    t = ag.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    assert len(t) == 2
    rows = list(t)
    assert [r.shape for r in rows] == [(2,), (2,)]
    ag.sum(rows[1]).backward()
    np.testing.assert_array_equal(t.grad.numpy(), [[0, 0], [1, 1]])


def test_grad_assignment_is_checked():
    x = ag.tensor([1.0, 2.0], requires_grad=True)
    x.grad = ag.tensor([0.5, 0.5])
    with pytest.raises(ValueError, match="shape"):
        x.grad = ag.tensor([1.0])
    with pytest.raises(TypeError, match="array_api_strict"):
        x.grad = ag.tensor([1.0, 1.0], backend="array_api_strict")


def test_methods_for_numpy_and_torch_users():
    x = ag.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    assert x.sum().item() == 15.0
    assert x.mean(axis=0).shape == (3,)
    assert x.reshape(3, 2).shape == (3, 2) and x.reshape((6,)).shape == (6,)
    x.max().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[0, 0, 0], [0, 0, 1]])


def test_integer_and_boolean_results_never_require_grad():
    x = ag.tensor([1.5, -2.0], requires_grad=True)
    assert not (x > 0).requires_grad
    assert not ag.isnan(x).requires_grad
    assert not ag.astype(x, ag.int64).requires_grad
    assert not ag.argmax(x).requires_grad
