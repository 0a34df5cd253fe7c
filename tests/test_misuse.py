"""Misuse never gives a silent wrong number (issue 15): the gradient is right, or the call
raises at once with an error that names the op, the shapes/dtypes/backends and what to do.

One named regression test per reported example, plus tests over each class of misuse,
parametrized over the entry points and over the NumPy and array_api_strict backends.
"""

from __future__ import annotations

import numpy as np
import pytest

import agnograd as ag
from agnograd.testing import GradientCheckError, check_grad

from .conftest import CPU_BACKENDS

# ---------------------------------------------------------------------------------------------
# 5. Graphs cut by construction


def test_asarray_of_tensor_elements_is_differentiable_regression():
    g = ag.grad(lambda t: ag.sum(ag.asarray([t[0], t[1] * 2])))(np.array([1.0, 2.0]))
    np.testing.assert_allclose(g, [1.0, 2.0])


def test_tensor_of_tensors_is_not_an_object_array_regression():
    t1 = ag.tensor(1.0, requires_grad=True)
    t2 = ag.tensor(2.0, requires_grad=True)
    y = ag.tensor([t1, t2])
    assert y.dtype == ag.float64 and y.shape == (2,)
    ag.sum(y * ag.asarray([3.0, 4.0])).backward()
    assert t1.grad.item() == 3.0 and t2.grad.item() == 4.0


def _build(kind):
    if kind == "asarray":
        return ag.asarray
    if kind == "tensor":
        return ag.tensor
    if kind == "as_tensor":
        return ag.as_tensor
    return ag.Tensor


CONSTRUCTORS = ["asarray", "tensor", "as_tensor", "Tensor"]


@pytest.mark.parametrize("kind", CONSTRUCTORS)
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_nested_sequences_of_tensors_are_stacked_differentiably(kind, backend):
    make = _build(kind)
    a = ag.tensor(1.5, requires_grad=True, backend=backend)
    v = ag.tensor([2.0, -1.0], requires_grad=True, backend=backend)
    # 0-d Tensors mixed with Python numbers, and equal-shape Tensors, nested.
    y = make([[a, 5.0], [v[0] * 2, v[1]]])
    assert y.shape == (2, 2) and y.backend == backend and y.dtype == ag.float64
    w = ag.asarray([[1.0, 2.0], [3.0, 4.0]], device=y.device)
    ag.sum(y * w).backward()
    assert a.grad.item() == 1.0
    np.testing.assert_allclose(v.grad.numpy(), [6.0, 4.0])
    rows = make([v, v * 3])
    assert rows.shape == (2, 2)
    f = ag.grad(lambda t: ag.sum(make([t, t * t]) * make([[1.0, 1.0], [1.0, 1.0]])))
    np.testing.assert_allclose(f(np.array([1.0, 2.0])), [3.0, 5.0])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_sequences_of_tensors_check_grad(backend):
    with ag.default_backend(backend):
        check_grad(lambda x: ag.asarray([[x[0], 2.0], [x[1] * x[0], x[1]]]), np.array([1.5, -0.5]))
        check_grad(lambda x: ag.tensor([x, x * x]), np.array([0.5, 2.0]))


def test_sequence_of_tensors_refuses_ragged_and_mixed_backends():
    a = ag.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(ValueError, match=r"shapes \(\), \(2,\).*ag.stack"):
        ag.asarray([ag.tensor(1.0), a])
    s = ag.tensor(1.0, backend="array_api_strict")
    with pytest.raises(TypeError, match="mixes 'numpy' and 'array_api_strict'.*to_backend"):
        ag.asarray([a[0], s])
    with pytest.raises(TypeError, match="mixes"):
        ag.tensor([s, ag.tensor(2.0)])


def test_tensor_with_requires_grad_of_tensors_that_require_grad_is_refused():
    a = ag.tensor(1.0, requires_grad=True)
    with pytest.raises(TypeError, match="ag.stack"):
        ag.tensor([a, 2.0], requires_grad=True)
    leaf = ag.tensor([a.detach(), 2.0], requires_grad=True)
    assert leaf.is_leaf and leaf.requires_grad


@pytest.mark.parametrize("call", [
    lambda t: ag.full((2,), t),
    lambda t: ag.full_like(ag.zeros(2), t),
    lambda t: ag.linspace(t, 2.0, 3),
    lambda t: ag.arange(0.0, t),
], ids=["full", "full_like", "linspace", "arange"])
def test_scalar_arguments_that_require_grad_are_refused(call):
    t = ag.tensor(1.0, requires_grad=True)
    with pytest.raises(TypeError, match="no gradient would reach it"):
        call(t)
    with ag.no_grad():
        call(t)  # no gradient is wanted: read as a number
    call(t.detach())


# ---------------------------------------------------------------------------------------------
# 6. Custom rules


def test_custom_vjp_closing_over_a_tensor_raises_regression():
    c = ag.tensor([1.0, 2.0], requires_grad=True)

    @ag.custom_vjp
    def scale(x):
        return x * c

    scale.defvjp(lambda x: (x * c, None), lambda r, g: (g,))
    x = ag.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(TypeError, match="'scale'.*not one of its arguments.*as an argument"):
        scale(x)
    with pytest.raises(TypeError, match="not one of its arguments"):
        scale(ag.tensor([1.0, 2.0]))  # no argument requires grad: the primal still reads c
    with ag.no_grad():
        scale(x)  # nothing is recorded, nothing is lost


def test_custom_vjp_closing_over_an_intermediate_raises():
    w = ag.tensor(2.0, requires_grad=True)
    c = w * 3  # an intermediate of an outer graph

    @ag.custom_vjp
    def f(x):
        return x * c

    f.defvjp(lambda x: (f(x), None), lambda r, g: (g,))
    with pytest.raises(TypeError, match="'multiply' op"):
        ag.grad(lambda x: ag.sum(f(x)))(np.array([1.0]))


def test_custom_vjp_on_intermediate_arguments_is_fine():
    @ag.custom_vjp
    def sq(x):
        return x * x

    sq.defvjp(lambda x: (x * x, x), lambda x, g: (2 * x * g,))
    g = ag.grad(lambda x: ag.sum(sq(ag.exp(x) * 2)))(np.array([0.0, 1.0]))
    np.testing.assert_allclose(g, 8 * np.exp(2 * np.array([0.0, 1.0])))
    h = ag.grad(ag.grad(lambda x: sq(x)))(3.0)  # higher order through the rule
    assert h == 2.0


def test_function_closing_over_a_tensor_raises():
    c = ag.tensor(2.0, requires_grad=True)

    class Scale(ag.Function):
        @staticmethod
        def forward(ctx, x):
            return x * c

        @staticmethod
        def backward(ctx, g):
            return g * 2

    with pytest.raises(TypeError, match=r"Scale.forward reads.*Scale.apply"):
        Scale.apply(ag.tensor([1.0], requires_grad=True))
    with pytest.raises(TypeError, match=r"Scale.forward reads"):
        Scale.apply(ag.tensor([1.0]))


def _custom(bwd_result):
    @ag.custom_vjp
    def op(*xs):
        return xs[0] * 2

    op.defvjp(lambda *xs: (xs[0] * 2, None), lambda r, g: bwd_result(g))
    return op


def _function(bwd_result):
    class Op(ag.Function):
        @staticmethod
        def forward(ctx, *xs):
            return xs[0] * 2

        @staticmethod
        def backward(ctx, g):
            return bwd_result(g)

    return Op.apply


BAD_COTANGENTS = [
    # (bwd result from g, exception, words)
    (lambda g: (ag.ones((2, 2), device=g.device),), ValueError, r"shape \(2, 2\).*shape \(2,\)"),
    (lambda g: (ag.ones((3,), device=g.device),), ValueError, r"shape \(3,\)"),
    (lambda g: (ag.astype(g, ag.int64),), TypeError, "int64 cotangent"),
    (lambda g: (g > 0,), TypeError, "bool cotangent"),
    (lambda g: ("oops",), TypeError, "returned str"),
    (lambda g: (1.0,), TypeError, "returned float"),
    (lambda g: (g, g), TypeError, "one cotangent per positional input"),
]


@pytest.mark.parametrize("entry", ["custom_vjp", "Function"])
@pytest.mark.parametrize("bad,exc,words", BAD_COTANGENTS)
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_every_cotangent_a_user_rule_returns_is_checked(entry, bad, exc, words, backend):
    op = _custom(bad) if entry == "custom_vjp" else _function(bad)
    method = "bwd" if entry == "custom_vjp" else "Op.backward"
    x = ag.tensor([1.0, 2.0], requires_grad=True, backend=backend)
    y = op(x)
    with pytest.raises(exc, match=words) as info:
        ag.sum(y).backward()
    assert method in str(info.value)
    assert x.grad is None  # nothing half-written
    with pytest.raises(exc, match=words):
        ag.grad(lambda t: ag.sum(op(t)))(ag.tensor([1.0, 2.0], backend=backend))


def test_custom_vjp_wrong_shape_is_not_summed_down_regression():
    @ag.custom_vjp
    def h(x):
        return x * 2

    h.defvjp(lambda x: (x * 2, None), lambda r, g: (ag.ones((2, 2)),))
    x = ag.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(ValueError, match=r"'h': bwd returned a cotangent of shape \(2, 2\)"):
        ag.sum(h(x)).backward()


def test_cotangent_of_another_backend_is_refused():
    op = _custom(lambda g: (ag.ones((2,), device=None),))
    x = ag.tensor([1.0, 2.0], requires_grad=True, backend="array_api_strict")
    with pytest.raises(TypeError, match="backend 'numpy'.*backend 'array_api_strict'"):
        ag.sum(op(x)).backward()


def test_cotangent_of_another_precision_is_cast():
    op = _custom(lambda g: (ag.astype(g, ag.float32) * 2,))
    x = ag.tensor([1.0, 2.0], requires_grad=True)
    ag.sum(op(x)).backward()
    assert x.grad.dtype == ag.float64
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 2.0])


def test_function_errors_name_backward_not_bwd_regression():
    class F(ag.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return g, g

    x = ag.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(TypeError, match=r"^F\.backward must return") as info:
        ag.sum(F.apply(x)).backward()
    assert "bwd" not in str(info.value)


@pytest.mark.parametrize("ret,exc,words", [
    (lambda g: "oops", TypeError, "returned str; it must return None or a Tensor of shape"),
    (lambda g: ag.ones((3,)), ValueError, r"shape \(3,\)"),
    (lambda g: ag.astype(g, ag.float32), TypeError, "dtype float32"),
    (lambda g: ag.tensor([1.0, 1.0], backend="array_api_strict"), TypeError,
     "backend 'array_api_strict'"),
])
@pytest.mark.parametrize("where", ["leaf", "intermediate"])
def test_hook_results_are_checked(ret, exc, words, where):
    x = ag.tensor([1.0, 2.0], requires_grad=True)

    def my_hook(g):
        return ret(g)

    y = x * 3
    (x if where == "leaf" else y).register_hook(my_hook)
    with pytest.raises(exc, match=words) as info:
        ag.sum(y * 2).backward()
    assert "my_hook" in str(info.value) and "dtype float64 on backend 'numpy'" in str(info.value)


def test_hook_returning_a_string_regression():
    x = ag.tensor([1.0, 2.0], requires_grad=True)
    x.register_hook(lambda g: "oops")
    with pytest.raises(TypeError, match=r"a gradient hook \(.*\) returned str"):
        ag.sum(x * 2).backward()


# ---------------------------------------------------------------------------------------------
# 7. Utilities


def test_check_grad_fortran_ordered_input_regression():
    R = np.random.default_rng(0).random((3, 4))
    check_grad(lambda m: ag.sum(m ** 3), R.T)


@pytest.mark.parametrize("make", [
    lambda: np.random.default_rng(1).random((3, 4)).T,
    lambda: np.asfortranarray(np.random.default_rng(2).random((2, 3, 4))),
    lambda: np.random.default_rng(3).random((4, 6))[::2, 1::2],
    lambda: np.array(1.3),
    lambda: 1.3,
    lambda: ag.tensor(np.random.default_rng(4).random((3, 2)).T),
    lambda: ag.tensor([0.5, 1.5], backend="array_api_strict").data,
], ids=["transposed", "fortran-3d", "strided", "0-d", "python-float", "tensor-view",
        "strict-array"])
def test_check_grad_any_memory_layout(make):
    x = make()
    check_grad(lambda m: m ** 3, x)
    check_grad(lambda m: ag.sum(ag.sin(m) * m), x)

    @ag.custom_vjp
    def wrong(m):
        return m ** 3

    wrong.defvjp(lambda m: (m ** 3, m), lambda m, g: (g * 2 * m,))  # should be 3 m²
    with pytest.raises(GradientCheckError):
        check_grad(lambda m: wrong(m), x)


def _vec(s):
    return ag.stack([s, s ** 2])


def test_jacobian_and_jvp_of_a_scalar_input_regression():
    j = ag.jacobian(_vec)(3.0)
    np.testing.assert_allclose(j.numpy(), [1.0, 6.0])
    y, t = ag.jvp(_vec, (3.0,), (1.0,))
    np.testing.assert_allclose(y.numpy(), [3.0, 9.0])
    np.testing.assert_allclose(t.numpy(), [1.0, 6.0])


def _host(v):
    return v.numpy() if isinstance(v, ag.Tensor) else np.asarray(v)


@pytest.mark.parametrize("x", [3.0, np.float64(3.0), np.array(3.0)], ids=["float", "np-scalar",
                                                                          "0-d"])
def test_scalar_inputs_to_every_transform(x):
    y, fn = ag.vjp(_vec, x)
    np.testing.assert_allclose(_host(fn(ag.tensor([1.0, 1.0]))[0]), 7.0)
    np.testing.assert_allclose(_host(ag.jacobian(_vec)(x)), [1.0, 6.0])
    np.testing.assert_allclose(_host(ag.jvp(_vec, (x,), (1.0,))[1]), [1.0, 6.0])
    np.testing.assert_allclose(_host(ag.hessian(lambda s: s ** 3)(x)), 18.0)
    np.testing.assert_allclose(_host(ag.hvp(lambda s: s ** 3, (x,), (1.0,))[1][0]), 18.0)
    np.testing.assert_allclose(_host(ag.jacobian(lambda s: s ** 3)(x)), 27.0)


def test_namespace_info_for_a_device_of_another_backend_regression():
    t = ag.tensor([1.0], backend="array_api_strict")
    dts = ag.__array_namespace_info__().default_dtypes(device=t.device)
    assert dts["real floating"] == ag.float64


@pytest.mark.parametrize("default", CPU_BACKENDS)
@pytest.mark.parametrize("other", CPU_BACKENDS)
def test_namespace_info_answers_for_the_backend_owning_the_device(default, other):
    d = ag.tensor([1.0], backend=other).device
    with ag.default_backend(default):
        info = ag.__array_namespace_info__()
        assert info.default_dtypes(device=d)["real floating"] == ag.float64
        assert set(info.dtypes(device=d, kind="real floating")) == {"float32", "float64"}
        assert "int8" in info.dtypes(device=d)
        with pytest.raises(ValueError, match="belongs to none of the available backends"):
            info.default_dtypes(device="no-such-device")
        with pytest.raises(ValueError, match="belongs to none"):
            info.dtypes(device=object())


# ---------------------------------------------------------------------------------------------
# 8. Seeds, dtypes and bad data


def test_integer_seed_raises_regression():
    x = ag.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(TypeError, match="grad has dtype int64.*real floating"):
        (x * 2).backward(ag.tensor([1, 1]))
    assert x.grad is None


def test_float64_seed_for_float32_output_keeps_float32_regression():
    x = ag.tensor([1.0, 2.0], requires_grad=True, dtype=ag.float32)
    (x * 2).backward(ag.tensor([1.0, 1.0]))
    assert x.grad.dtype == ag.float32
    (x * 2).backward(ag.tensor([1.0, 1.0]))  # accumulation keeps it too
    assert x.grad.dtype == ag.float32
    np.testing.assert_allclose(x.grad.numpy(), [4.0, 4.0])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("entry", ["backward", "backward-create-graph", "vjp"])
def test_seeds_are_checked_on_every_entry_point(backend, entry):
    def seed_with(g, dtype=ag.float32):
        x = ag.tensor([1.0, 2.0], requires_grad=True, dtype=dtype, backend=backend)
        if entry == "vjp":
            _, fn = ag.vjp(lambda t: t * 2, x)
            return fn(g)[0]
        y = x * 2
        y.backward(g, create_graph=entry == "backward-create-graph")
        return x.grad

    g64 = ag.tensor([1.0, 1.0], backend=backend)
    assert seed_with(g64).dtype == ag.float32  # floating seeds are cast to the output's dtype
    for bad in (ag.tensor([1, 1], backend=backend), ag.tensor([True, True], backend=backend)):
        with pytest.raises(TypeError, match="real floating"):
            seed_with(bad)
    with pytest.raises(ValueError, match=r"shape \(1,\)"):
        seed_with(ag.tensor([1.0], backend=backend))  # no broadcasting
    other = "numpy" if backend == "array_api_strict" else "array_api_strict"
    with pytest.raises(TypeError, match="backend"):
        seed_with(ag.tensor([1.0, 1.0], backend=other))


def test_grad_assignment_checks_dtype_and_type_regression():
    x = ag.tensor([1.0, 2.0], requires_grad=True)
    x.grad = ag.tensor([0.5, 0.5])
    with pytest.raises(TypeError, match="dtype int64.*ag.astype"):
        x.grad = ag.tensor([1, 2])
    with pytest.raises(TypeError, match="as a Tensor"):
        x.grad = [1.0, 2.0]
    with pytest.raises(TypeError, match="as a Tensor"):
        x.grad = np.array([1.0, 2.0])
    with pytest.raises(TypeError, match="dtype float32"):
        x.grad = ag.tensor([1.0, 2.0], dtype=ag.float32)
    np.testing.assert_allclose(x.grad.numpy(), [0.5, 0.5])  # a rejected assignment changes nothing


@pytest.mark.parametrize("f", [
    lambda x: ag.sum(x > 0),
    lambda x: ag.argmax(x),
    lambda x: ag.astype(x, ag.int64),
    lambda x: ag.any(x > 1),
], ids=["comparison", "argmax", "astype-int", "bool"])
@pytest.mark.parametrize("transform", ["grad", "vjp", "jacobian", "jvp"])
def test_integer_or_boolean_outputs_are_refused(f, transform):
    x = np.array([1.0, 2.0])
    with pytest.raises(TypeError, match="gradients are defined for real floating outputs"):
        if transform == "grad":
            ag.grad(lambda t: ag.sum(f(t)) if f(t).ndim else f(t))(x)
        elif transform == "vjp":
            ag.vjp(f, x)
        elif transform == "jacobian":
            ag.jacobian(f)(x)
        else:
            ag.jvp(f, (x,), (x,))


def test_grad_of_integer_output_regression():
    with pytest.raises(TypeError, match="int64 dtype.*floating outputs"):
        ag.grad(lambda x: ag.sum(x > 0))(np.array([1.0, 2.0]))


@pytest.mark.parametrize("obj", [None, "abc", [1, "a"], {"a": 1}, object()])
@pytest.mark.parametrize("make", [ag.tensor, ag.asarray, ag.Tensor])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_non_array_api_data_is_refused_at_once(obj, make, backend):
    with ag.default_backend(backend), pytest.raises((TypeError, ValueError)):
        make(obj)


def test_tensor_of_none_and_of_a_string_regression():
    with pytest.raises(TypeError, match="not an Array API dtype"):
        ag.tensor(None)
    with pytest.raises(TypeError, match="not an Array API dtype"):
        ag.tensor("abc")


# ---------------------------------------------------------------------------------------------
# Error messages that say what to do


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_integer_to_negative_power_says_use_float_regression(backend):
    with pytest.raises(ValueError, match="pow.*floating tensor"):
        ag.tensor([1, 2, 3], backend=backend) ** -1


@pytest.mark.parametrize("scalar", [np.float64(2.0), np.float32(2.0), np.int64(2)],
                         ids=["float64", "float32", "int64"])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_numpy_scalars_act_as_python_scalars(scalar, backend):
    t = ag.tensor([1.0], backend=backend, dtype=ag.float32, requires_grad=True)
    for y in (t + scalar, scalar + t, t * scalar, scalar - t, ag.multiply(scalar, t)):
        assert y.backend == backend and y.data.__class__ is t.data.__class__
        if backend != "numpy":  # NumPy keeps its own rules for its own scalars
            assert y.dtype == ag.float32
    ag.sum(t * scalar).backward()
    assert t.grad.item() == 2.0


def test_numpy_float64_with_strict_regression():
    y = ag.tensor([1.0], backend="array_api_strict") + np.float64(2.0)
    assert y.backend == "array_api_strict" and y.item() == 3.0


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_failed_in_place_op_says_what_to_do_regression(backend):
    t = ag.tensor([1, 2], backend=backend)
    with pytest.raises(TypeError, match=r"in-place add \(\+=\).*int64.*x = x \+ y"):
        t += 0.5
    np.testing.assert_array_equal(np.asarray(ag.tensor(t).numpy()), [1, 2])  # unchanged


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("op", ["det", "inv", "slogdet"])
def test_singular_matrix_errors_name_the_op_regression(backend, op):
    fns = {"det": lambda m: ag.linalg.det(m), "inv": lambda m: ag.sum(ag.linalg.inv(m)),
           "slogdet": lambda m: ag.linalg.slogdet(m)[1]}
    with ag.default_backend(backend), pytest.raises(
            Exception, match=rf"{op}:.*shape \(2, 2\).*singular.*pinv"):
        ag.grad(fns[op])(ag.zeros((2, 2)))


def test_grad_of_a_tuple_hints_has_aux_regression():
    with pytest.raises(TypeError, match="has_aux=True"):
        ag.grad(lambda x: (ag.sum(x), 1))(np.array([1.0]))
    with pytest.raises(TypeError, match="has_aux=True"):
        ag.vjp(lambda x: (x, 1), np.array([1.0]))


@pytest.mark.parametrize("fn", [ag.to_dot, ag.to_mermaid, ag.saved_nbytes])
def test_graph_tools_need_a_tensor_regression(fn):
    with pytest.raises(TypeError, match="takes a Tensor produced by agnograd ops"):
        fn(np.ones(2))
