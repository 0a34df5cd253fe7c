"""``ag.vmap``: every op-table record batched, against a loop over the examples.

For every record of ``tests/op_table``, on NumPy and array_api_strict, with the batch drawn on
a different axis per input (``0``, the last, or ``None`` -- shared by every example):

* ``vmap(f)`` equals the stack of ``f`` on each example;
* ``vmap(grad(sum f))`` -- per-example gradients, the VJP rules batched -- equals the loop;

and in every call a :class:`~agnograd.VmapFallbackWarning` (a namespace function with no batching
rule) is an error, so a public op that lacks a rule fails here. Then the transform itself:
in_axes/out_axes prefixes, nesting, composition with every other transform, the errors.
"""

from __future__ import annotations

import os
import warnings
import zlib

import numpy as np
import pytest

import agnograd as ag

from .conftest import CPU_BACKENDS, _params
from .op_table import OPS, cases_of
from .op_table.core import draw

CASES = cases_of(OPS)
IDS = [f"{op.name}-{'x'.join(str(s) for s in shapes) or 'scalar'}" for op, shapes in CASES]
N = 3  # examples
# the op-table sweeps: NumPy and array_api_strict here, CuPy where a GPU is (marker gpu), PyTorch
# with AGNOGRAD_VMAP_TORCH=1 (a slower sweep, run before releases)
SWEEP = _params(("numpy", "array_api_strict", "cupy")
                + (("torch",) if os.environ.get("AGNOGRAD_VMAP_TORCH") else ()))
# vmap of grad: array_api_strict with `-m slow` (vmap alone proves the rules standard there)
GRAD_SWEEP = [p if p.values[0] != "array_api_strict" else
              pytest.param(p.values[0], marks=[*p.marks, pytest.mark.slow], id=p.id)
              for p in SWEEP]


def _t(a, backend):
    return ag.tensor(a, backend=backend, dtype=ag.complex128 if np.iscomplexobj(a) else ag.float64)


def _np(y):
    return np.asarray(y.numpy() if type(y) is ag.Tensor else y)


def _batch(op, shapes):
    """Per input: the examples (N of them, or one shared) and its in_axis."""
    seed = zlib.crc32(f"vmap{op.name}{shapes}".encode())
    rng = np.random.default_rng(seed)
    examples = [draw(op, shapes, seed + k) for k in range(N)]
    axes = []
    for i, s in enumerate(shapes):
        choice = (seed >> (2 * i)) % 4
        if i == 0 and choice == 3:
            choice = 0  # the first input is always mapped, so the batch is never empty
        axes.append(None if choice == 3 else (0 if choice in (0, 1) or not s else -1))
    del rng
    stacked = []
    for i, a in enumerate(axes):
        if a is None:
            stacked.append(examples[0][i])
        else:
            stacked.append(np.stack([ex[i] for ex in examples], axis=a))
    per = [[examples[k][i] if axes[i] is not None else examples[0][i] for i in range(len(shapes))]
           for k in range(N)]
    return stacked, axes, per


def _real(y):
    return ag.real(y) if y.dtype in (ag.complex64, ag.complex128) else y


@pytest.fixture(autouse=False)
def strict_rules():
    with warnings.catch_warnings():
        warnings.simplefilter("error", ag.VmapFallbackWarning)
        yield


@pytest.mark.parametrize("backend", SWEEP)
@pytest.mark.parametrize(("op", "shapes"), CASES, ids=IDS)
def test_vmap_of_every_op_equals_the_loop(op, shapes, backend, strict_rules):
    if backend in op.skip:
        pytest.skip(op.skip[backend])
    stacked, axes, per = _batch(op, shapes)
    xs = [_t(a, backend) for a in stacked]
    if op.vmap:
        with pytest.raises(ag.VmapError, match="ag.vmap"):
            ag.vmap(op.fn, in_axes=tuple(axes))(*xs)
        return
    y = ag.vmap(op.fn, in_axes=tuple(axes))(*xs)
    ref = np.stack([_np(op.fn(*[_t(a, backend) for a in ex])) for ex in per])
    np.testing.assert_allclose(_np(y), ref, rtol=1e-10, atol=1e-12,
                               err_msg=f"vmap of {op.name} vs the loop ({backend})")


@pytest.mark.parametrize("backend", GRAD_SWEEP)
@pytest.mark.parametrize(("op", "shapes"), CASES, ids=IDS)
def test_vmap_of_grad_of_every_op_equals_the_loop(op, shapes, backend, strict_rules):
    if backend in op.skip:
        pytest.skip(op.skip[backend])
    if op.vmap:
        pytest.skip(f"vmap refuses it: {op.vmap}")
    stacked, axes, per = _batch(op, shapes)
    nums = tuple(range(len(shapes)))

    def loss(*xs):
        return ag.sum(_real(op.fn(*xs)))

    g = ag.grad(loss, argnums=nums)
    got = ag.vmap(g, in_axes=tuple(axes))(*[_t(a, backend) for a in stacked])
    refs = [g(*[_t(a, backend) for a in ex]) for ex in per]
    for i in range(len(shapes)):
        ref = np.stack([_np(r[i]) for r in refs])
        np.testing.assert_allclose(_np(got[i]), ref, rtol=1e-9, atol=1e-11,
                                   err_msg=f"vmap(grad) of {op.name}, input {i} ({backend})")


# ---------------------------------------------------------------------------------------------
# Every function of the standard has a batching rule


def test_every_standard_function_has_a_batching_rule():
    """A function of the Array API (main namespace, linalg, fft) without a rule would run as a
    loop: the namespace array_api_strict exposes is the list of what agnograd may call."""
    import types

    import array_api_strict as xp

    from agnograd.backends.batching_rules import RULES

    def functions(ns):
        for name in dir(ns):
            v = getattr(ns, name)
            if name.startswith("_") or isinstance(v, (type, types.ModuleType)) or not callable(v):
                continue
            yield name

    names = set(functions(xp)) | set(functions(xp.linalg)) | set(functions(xp.fft))
    # array_api_strict's own helpers and typing names, not functions of the standard
    skip = {"set_array_api_strict_flags", "get_array_api_strict_flags", "Literal", "NamedTuple",
            "reset_array_api_strict_flags", "ArrayAPIStrictFlags", "device_supports_dtype",
            "normalize_axis_tuple", "requires_api_version", "requires_extension"}
    missing = sorted(names - set(RULES) - skip)
    assert not missing, f"no batching rule for {missing} (agnograd/backends/batching_rules.py)"


def test_a_function_without_a_rule_loops_with_one_warning(monkeypatch):
    from agnograd.backends import batching, batching_rules

    monkeypatch.setattr(batching_rules, "_warned", set())
    b = batching.batching_backend(ag.get_backend("numpy"))
    rule = batching.RULES.pop("sin")
    b.xp.__dict__.pop("sin", None)  # (the namespace makes its functions on first use)
    try:
        x = ag.tensor(np.linspace(0, 1, 6).reshape(3, 2))
        with pytest.warns(ag.VmapFallbackWarning, match="'sin'"):
            y = ag.vmap(ag.sin)(x)
        np.testing.assert_allclose(_np(y), np.sin(_np(x)))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # once only
            ag.vmap(ag.sin)(x)
    finally:
        batching.RULES["sin"] = rule
        b.xp.__dict__.pop("sin", None)


# ---------------------------------------------------------------------------------------------
# in_axes / out_axes


def _loop(f, xs, in_axes, out_axis=0):
    n = [np.asarray(x).shape[a] for x, a in zip(xs, in_axes) if a is not None][0]
    outs = []
    for i in range(n):
        args = [ag.tensor(np.take(x, i, axis=a)) if a is not None else ag.tensor(x)
                for x, a in zip(xs, in_axes)]
        outs.append(_np(f(*args)))
    return np.stack(outs, axis=out_axis)


@pytest.mark.parametrize("in_axes", [(0, None), (1, None), (-1, 0), (None, -2), (2, 1)])
@pytest.mark.parametrize("out_axes", [0, 1, -1])
def test_in_axes_and_out_axes(in_axes, out_axes):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((4, 4, 4))
    b = rng.standard_normal((4, 4))

    def f(x, y):
        return ag.tanh(x) @ y + ag.sum(y, axis=0)

    got = ag.vmap(f, in_axes=in_axes, out_axes=out_axes)(ag.tensor(a), ag.tensor(b))
    np.testing.assert_allclose(_np(got), _loop(f, [a, b], in_axes, out_axes), rtol=1e-12)


def test_pytree_prefixes_kwargs_and_axis_size():
    rng = np.random.default_rng(2)
    xs = ag.tensor(rng.standard_normal((5, 3)))
    w = ag.tensor(rng.standard_normal((3, 2)))
    params = {"w": w, "b": ag.tensor(rng.standard_normal(2))}

    def f(p, x, scale=1.0):
        return {"y": (x @ p["w"] + p["b"]) * scale, "n": ag.sum(x * x)}

    out = ag.vmap(f, in_axes=({"w": None, "b": None}, 0), out_axes={"y": 1, "n": 0})(params, xs)
    ref = [f(params, xs[i]) for i in range(5)]
    np.testing.assert_allclose(_np(out["y"]), np.stack([_np(r["y"]) for r in ref], axis=1))
    np.testing.assert_allclose(_np(out["n"]), np.stack([_np(r["n"]) for r in ref]))
    # a prefix: None for the whole dict; keyword arguments are mapped over axis 0 (as in JAX)
    s = ag.tensor(np.arange(5.0))
    out = ag.vmap(f, in_axes=(None, 0))(params, xs, scale=s)
    np.testing.assert_allclose(_np(out["y"])[3], _np(f(params, xs[3], scale=3.0)["y"]))
    # no mapped input: axis_size says how many
    z = ag.vmap(lambda: ag.ones(2), in_axes=(), axis_size=3)()
    assert z.shape == (3, 2)
    # an output that does not depend on the batch may have out_axes=None
    y, c = ag.vmap(lambda x: (x * 2, w), out_axes=(0, None))(xs)
    assert c.shape == w.shape and y.shape == (5, 3)


def test_raw_arrays_in_give_raw_arrays_out():
    x = np.linspace(0, 1, 6).reshape(3, 2)
    y = ag.vmap(lambda r: ag.sin(r) * 2)(x)
    assert type(y) is np.ndarray
    np.testing.assert_allclose(y, np.sin(x) * 2)


@pytest.mark.parametrize(("call", "match"), [
    (lambda x: ag.vmap(ag.sin, in_axes=(0, 0))(x), "in_axes has 2 entries"),
    (lambda x: ag.vmap(lambda a, b: a + b)(x, x[:2]), "different sizes: 3"),
    (lambda x: ag.vmap(ag.sin, in_axes=2)(x), "out of range"),
    (lambda x: ag.vmap(lambda a: a, in_axes=0)(ag.tensor(1.0)), "0-d value cannot be mapped"),
    (lambda x: ag.vmap(lambda a: a, out_axes=None)(x), "out_axes=None for an output"),
    (lambda x: ag.vmap(lambda: ag.ones(2), in_axes=())(), "axis_size"),
    (lambda x: ag.vmap(lambda d: d, in_axes=({"a": 0},))({"b": x}), "keys"),
])
def test_argument_errors(call, match):
    with pytest.raises((ValueError, TypeError, ag.VmapError), match=match):
        call(ag.tensor(np.ones((3, 2))))


# ---------------------------------------------------------------------------------------------
# What vmap refuses, naming itself (as JAX and torch.func do)


@pytest.mark.parametrize(("fn", "match"), [
    (lambda a: a if float(ag.sum(a)) > 0 else -a, "float"),
    (lambda a: a if ag.any(a > 0) else -a, "bool"),
    (lambda a: ag.sum(a).item(), "NumPy conversion"),
    (lambda a: ag.nonzero(a > 0)[0], "nonzero"),
    (lambda a: ag.unique_values(a), "unique_values"),
    (lambda a: a[a > 0], "boolean mask"),
    (lambda a: np.asarray(a.detach()), "NumPy conversion"),
])
def test_reading_a_batched_value_raises_naming_vmap(fn, match):
    with pytest.raises(ag.VmapError, match=f"ag.vmap.*({match}|batched value)"):
        ag.vmap(fn)(ag.tensor(np.linspace(-1, 1, 6).reshape(3, 2)))


def test_control_flow_on_shared_values_is_allowed():
    w = ag.tensor(np.array([1.0, -2.0]))
    y = ag.vmap(lambda a: a * 2 if float(ag.sum(w)) < 0 else a)(ag.tensor(np.ones((3, 2))))
    np.testing.assert_allclose(_np(y), 2 * np.ones((3, 2)))


def test_backward_inside_vmap_is_refused_with_the_fix():
    x = ag.tensor(np.ones((3, 2)), requires_grad=True)
    with pytest.raises(ag.VmapError, match="ag.grad"):
        ag.vmap(lambda a: ag.sum(a * a).backward())(x)


def test_batched_writes_into_shared_state_are_refused_before_any_write():
    bn = ag.nn.BatchNorm1d(3)
    bn.running_mean[...] = 1.0
    x = ag.tensor(np.random.default_rng(0).standard_normal((4, 5, 3)), dtype=ag.float32)
    with pytest.raises(ag.VmapError, match="running_mean"):
        ag.vmap(bn)(x)
    np.testing.assert_array_equal(_np(bn.running_mean), 1.0)  # untouched
    shared = ag.zeros(2)
    with pytest.raises(ag.VmapError, match="shares"):
        ag.vmap(lambda a: shared.__iadd__(a))(ag.tensor(np.ones((3, 2))))
    with pytest.raises(ag.VmapError, match="every example"):
        def write(a):
            shared[0] = a[0]
        ag.vmap(write)(ag.tensor(np.ones((3, 2))))
    np.testing.assert_array_equal(_np(shared), 0.0)
    bn.eval()  # eval mode reads the statistics: fine
    assert ag.vmap(bn)(x).shape == (4, 5, 3)


def test_writes_into_tensors_made_inside_become_batched():
    def f(a):
        z = a * 0.0  # batched, made from the input
        z[0] = a[1] * 3
        z[a > 0.5] = -1.0  # a boolean mask with a scalar: per example, a where
        return z

    x = np.random.default_rng(3).uniform(0, 1, (4, 3))
    got = ag.vmap(f)(ag.tensor(x))
    np.testing.assert_allclose(_np(got), _loop(f, [x], [0]))


def test_random_ops_draw_the_same_numbers_for_every_example():
    ag.manual_seed(0)
    y = ag.vmap(lambda a: a + ag.random.normal((2,)))(ag.tensor(np.zeros((4, 2))))
    assert np.all(_np(y) == _np(y)[0])
    noise = ag.random.normal((4, 2))  # per-example noise: drawn outside, mapped over
    y2 = ag.vmap(lambda a, e: a + e)(ag.tensor(np.zeros((4, 2))), noise)
    assert len({tuple(r) for r in _np(y2)}) == 4


# ---------------------------------------------------------------------------------------------
# Composition with every transform, in both orders


def _f(w, x):
    return ag.sum(ag.tanh(x @ w) ** 2) + ag.sum(ag.sin(w) * ag.sum(x))


@pytest.fixture
def wx():
    rng = np.random.default_rng(4)
    return ag.tensor(rng.standard_normal((3, 2))), ag.tensor(rng.standard_normal((5, 3)))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_vmap_of_each_transform_equals_the_loop(backend, strict_rules):
    rng = np.random.default_rng(5)
    w = _t(rng.standard_normal((3, 2)), backend)
    xs = _t(rng.standard_normal((4, 3)), backend)
    per = [xs[i, ...] for i in range(4)]

    def check(batched, one):
        got = batched(w, xs)
        for i, x in enumerate(per):
            ref = one(w, x)
            for g, r in zip(got if isinstance(got, tuple) else (got,),
                            ref if isinstance(ref, tuple) else (ref,)):
                np.testing.assert_allclose(_np(g)[i], _np(r), rtol=1e-10, atol=1e-12)

    v = lambda fn: ag.vmap(fn, in_axes=(None, 0))  # noqa: E731
    for t in (ag.grad(_f), ag.grad(_f, argnums=(0, 1)), ag.value_and_grad(_f), ag.hessian(_f),
              ag.jacrev(lambda w, x: ag.tanh(x @ w)), ag.jacfwd(lambda w, x: ag.tanh(x @ w)),
              ag.jacobian(lambda w, x: ag.sin(x) * ag.sum(w)),
              lambda w, x: ag.jvp(lambda a: ag.tanh(x @ a), (w,), (ag.ones_like(w),))[1],
              lambda w, x: ag.vjp(lambda a: ag.tanh(x @ a), w)[1](ag.ones_like(w[0, ...]))[0],
              lambda w, x: ag.hvp(lambda a: _f(a, x), (w,), (ag.ones_like(w),))[1],
              ag.grad(lambda w, x: ag.sum(ag.checkpoint(lambda a: ag.sin(x @ a) ** 2, w))),
              ag.jit(lambda w, x: ag.sin(x @ w) * 2)):
        check(v(t), t)


def test_transforms_of_vmap_sum_the_examples(wx):
    w, xs = wx
    batched = ag.vmap(_f, in_axes=(None, 0))
    total = lambda w: ag.sum(batched(w, xs))  # noqa: E731
    loop = lambda w: sum(_f(w, xs[i]) for i in range(5))  # noqa: E731
    np.testing.assert_allclose(_np(ag.grad(total)(w)), _np(ag.grad(loop)(w)), rtol=1e-12)
    np.testing.assert_allclose(_np(ag.hessian(total)(w)), _np(ag.hessian(loop)(w)), rtol=1e-10)
    v = ag.ones_like(w)
    np.testing.assert_allclose(_np(ag.jvp(total, (w,), (v,))[1]), _np(ag.jvp(loop, (w,), (v,))[1]))
    np.testing.assert_allclose(_np(ag.jacrev(lambda w: batched(w, xs))(w)),
                               _np(ag.jacfwd(lambda w: batched(w, xs))(w)), rtol=1e-10)
    # backward() after vmap: a parameter's .grad collects every example's contribution
    p = ag.tensor(w.data, requires_grad=True)
    ag.sum(ag.vmap(lambda x: _f(p, x))(xs)).backward()
    np.testing.assert_allclose(_np(p.grad), _np(ag.grad(loop)(w)), rtol=1e-12)
    # grad with respect to the mapped input: per example, by construction
    g = ag.grad(lambda x: ag.sum(ag.vmap(lambda r: _f(w, r))(x)))(xs)
    np.testing.assert_allclose(_np(g), np.stack([_np(ag.grad(_f, argnums=1)(w, xs[i]))
                                                 for i in range(5)]), rtol=1e-12)


def test_jit_and_capture_around_vmap_equal_eager(wx):
    w, xs = wx
    batched = ag.vmap(ag.grad(_f), in_axes=(None, 0))
    eager = _np(batched(w, xs))
    jitted = ag.jit(batched)
    for _ in range(3):  # trace, then replays
        np.testing.assert_allclose(_np(jitted(w, xs)), eager, rtol=1e-12)


def test_vmap_nests_at_every_level():
    rng = np.random.default_rng(6)
    a = rng.standard_normal((3, 4, 2))
    b = rng.standard_normal((4, 2))

    def f(x, y):
        return ag.sum(x * y) * x + ag.tanh(y)

    inner = ag.vmap(f, in_axes=(0, 0))
    outer = ag.vmap(inner, in_axes=(0, None))
    got = _np(outer(ag.tensor(a), ag.tensor(b)))
    ref = np.stack([np.stack([_np(f(ag.tensor(a[i, j]), ag.tensor(b[j]))) for j in range(4)])
                    for i in range(3)])
    np.testing.assert_allclose(got, ref, rtol=1e-12)
    # a closure of the outer level read inside the inner one; three levels; grad in the middle
    g = ag.vmap(lambda x: ag.vmap(lambda y: ag.grad(lambda z: ag.sum(ag.sin(z * x) * y))(y))(
        ag.tensor(b)))(ag.tensor(a[:, 0]))
    ref = np.stack([np.stack([_np(ag.grad(lambda z: ag.sum(ag.sin(z * ag.tensor(a[i, 0]))
                                                             * ag.tensor(b[j])))(ag.tensor(b[j])))
                              for j in range(4)]) for i in range(3)])
    np.testing.assert_allclose(_np(g), ref, rtol=1e-12)
    z = ag.vmap(ag.vmap(ag.vmap(lambda t: ag.sum(t) ** 2)))(ag.tensor(rng.standard_normal((2, 3, 4, 5))))
    assert z.shape == (2, 3, 4)


def test_per_example_gradients_of_a_model_match_torch_func():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    model = ag.nn.Sequential(ag.nn.Linear(6, 8), ag.nn.Tanh(), ag.nn.Linear(8, 3)).astype(ag.float64)
    params = {k: v.detach() for k, v in model.named_parameters()}
    x = rng.standard_normal((10, 6))
    y = rng.integers(0, 3, 10)

    def loss(p, xi, yi):
        out = ag.nn.functional_call(model, p, xi[None])
        return ag.nn.functional.cross_entropy(out, yi[None])

    grads = ag.vmap(ag.grad(loss), in_axes=(None, 0, 0))(params, ag.tensor(x), ag.tensor(y))

    tm = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()
    tp = {k.replace("layers.", ""): torch.tensor(_np(v)) for k, v in params.items()}

    def tloss(p, xi, yi):
        out = torch.func.functional_call(tm, p, (xi[None],))
        return torch.nn.functional.cross_entropy(out, yi[None])

    tg = torch.func.vmap(torch.func.grad(tloss), in_dims=(None, 0, 0))(
        tp, torch.tensor(x), torch.tensor(y))
    for k, g in grads.items():
        np.testing.assert_allclose(_np(g), tg[k.replace("layers.", "")].numpy(), rtol=1e-10,
                                   atol=1e-12)


def test_a_module_under_vmap_equals_the_batched_call():
    rng = np.random.default_rng(8)
    conv = ag.nn.Sequential(ag.nn.Conv2d(2, 3, 3, padding=1), ag.nn.ReLU(), ag.nn.MaxPool2d(2),
                            ag.nn.Flatten(), ag.nn.Linear(12, 4)).astype(ag.float64)
    x = ag.tensor(rng.standard_normal((5, 2, 4, 4)))
    got = ag.vmap(lambda xi: conv(xi[None])[0])(x)
    np.testing.assert_allclose(_np(got), _np(conv(x)), rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# Property: any program of the vocabulary, under any transform, at any axes, equals the loop

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_W = np.random.default_rng(9).standard_normal((3, 3))

_STEPS = {
    "sin": lambda x: ag.sin(x),
    "mul-shared": lambda x: x * ag.tensor(_W[0, : x.shape[-1]] if x.ndim else _W[0, 0]),
    "sum-last": lambda x: ag.sum(x, axis=-1, keepdims=True) * x if x.ndim else x,
    "matmul-shared": lambda x: x @ ag.tensor(_W[: x.shape[-1], :2]) if x.ndim else x,
    "getitem": lambda x: x[..., ::-1] if x.ndim else x,
    "take": lambda x: ag.take(x, ag.tensor(np.array([0, 0])), axis=x.ndim - 1) if x.ndim else x,
    "concat": lambda x: ag.concat([x, 2 * x], axis=-1) if x.ndim else x,
    "cumsum": lambda x: ag.cumulative_sum(x, axis=0) if x.ndim else x,
    "sort": lambda x: ag.sort(x, axis=-1) if x.ndim else x,
    "where": lambda x: ag.where(x > 0, x, -0.5 * x),
    "max0": lambda x: ag.max(x, axis=0) if x.ndim > 1 else x,
    "softmax": lambda x: ag.nn.functional.softmax(x, dim=-1) if x.ndim else x,
    "reshape": lambda x: ag.reshape(x, (-1,)),
    "expand": lambda x: ag.expand_dims(x, axis=0) * 1.5,
}


def _wrapped(kind, f):
    if kind == "grad":
        return ag.grad(lambda x: ag.sum(f(x) ** 2))
    if kind == "jvp":
        return lambda x: ag.jvp(f, (x,), (ag.ones_like(x),))[1]
    if kind == "vjp":
        return lambda x: ag.vjp(f, x)[1](ag.ones_like(f(x)))[0]
    if kind == "jit":
        return ag.jit(f)
    if kind == "vmap":  # an inner vmap over the example's first axis
        return lambda x: ag.vmap(f)(x) if x.ndim else f(x)
    if kind == "grad-of-vmap":  # a gradient through an inner vmap's crossings
        return ag.grad(lambda x: ag.sum(ag.vmap(f)(x) ** 2) if x.ndim else ag.sum(f(x) ** 2))
    if kind == "grad-of-grad":  # second order: rules recorded (create_graph)
        return ag.grad(lambda x: ag.sum(ag.grad(lambda z: ag.sum(f(z) ** 2))(x) ** 2))
    return f


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_property_vmap_of_any_program_equals_the_loop(data):
    n = data.draw(st.integers(1, 3), label="batch")
    shape = tuple(data.draw(st.lists(st.integers(1, 3), min_size=1, max_size=2), label="shape"))
    names = data.draw(st.lists(st.sampled_from(sorted(_STEPS)), min_size=1, max_size=3),
                      label="program")
    kind = data.draw(st.sampled_from(["none", "grad", "jvp", "vjp", "jit", "vmap", "grad-of-vmap",
                                      "grad-of-grad"]), label="transform")
    backend = data.draw(st.sampled_from(["numpy", "array_api_strict"]), label="backend")
    axis = data.draw(st.integers(-len(shape) - 1, len(shape)), label="in_axis")

    def f(x):
        for name in names:
            x = _STEPS[name](x)
        return x

    g = _wrapped(kind, f)
    rng = np.random.default_rng(len(names) * 7 + n)
    examples = rng.standard_normal((n,) + shape)
    x = np.moveaxis(examples, 0, axis)
    try:
        ref = [_np(g(_t(e, backend))) for e in examples]
    except (ValueError, TypeError, IndexError):
        return  # a program this shape cannot run (vmap must then fail too; not checked here)
    out_axis = data.draw(st.integers(-ref[0].ndim - 1, ref[0].ndim), label="out_axis")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ag.VmapFallbackWarning)
        got = ag.vmap(g, in_axes=axis, out_axes=out_axis)(_t(x, backend))
    np.testing.assert_allclose(_np(got), np.moveaxis(np.stack(ref), 0, out_axis), rtol=1e-10,
                               atol=1e-12)


def _dp_step(model, opt, n):
    """A DP-SGD step: per-example gradients (vmap of grad), clipped, averaged, applied."""
    def loss(p, x, y):
        return ag.nn.functional.cross_entropy(ag.nn.functional_call(model, p, x[None]), y[None])

    def step(x, y):
        params = dict(model.named_parameters())
        g = ag.vmap(ag.grad(loss), in_axes=(None, 0, 0))(
            {k: v.detach() for k, v in params.items()}, x, y)
        norms = ag.sqrt(sum(ag.sum(ag.reshape(v, (n, -1)) ** 2, axis=1) for v in g.values()))
        scale = ag.minimum(1.0 / (norms + 1e-6), 1.0)
        for k, p in params.items():
            p.grad = ag.mean(g[k] * ag.reshape(scale, (n,) + (1,) * (g[k].ndim - 1)), axis=0)
        opt.step()
        return norms

    return step


@pytest.mark.parametrize("compile_", ["jit", "capture"])
def test_a_compiled_dp_sgd_step_equals_eager(compile_):
    import copy

    rng = np.random.default_rng(10)
    model = ag.nn.Sequential(ag.nn.Linear(4, 8), ag.nn.Tanh(), ag.nn.Linear(8, 3))
    twin = copy.deepcopy(model)
    x = ag.tensor(rng.standard_normal((16, 4)), dtype=ag.float32)
    y = ag.tensor(rng.integers(0, 3, 16))
    eager = _dp_step(twin, ag.optim.SGD(twin.parameters(), lr=0.1, capturable=True), 16)
    step = _dp_step(model, ag.optim.SGD(model.parameters(), lr=0.1, capturable=True), 16)
    if compile_ == "jit":
        compiled, calls = ag.jit(step), 6
    else:
        compiled, calls = ag.capture(step, x, y), 2  # (capture ran warmup + 1 steps itself)
        for _ in range(4):
            eager(x, y)
    for _ in range(calls):
        a, b = compiled(x, y), eager(x, y)
        np.testing.assert_array_equal(_np(a), _np(b))
    for p, q in zip(model.parameters(), twin.parameters()):
        np.testing.assert_array_equal(_np(p), _np(q))


def test_embedding_with_batched_indices_and_a_shared_table():
    emb = ag.nn.Embedding(10, 4)
    idx = ag.tensor(np.array([[1, 2], [2, 2], [9, 0]]))
    np.testing.assert_array_equal(_np(ag.vmap(emb)(idx).detach()), _np(emb(idx).detach()))
    w = ag.tensor(np.random.default_rng(11).standard_normal((10, 3)))
    loss = lambda w, i: ag.sum(ag.nn.functional.embedding(i, w) ** 2)  # noqa: E731
    per = ag.vmap(ag.grad(loss), in_axes=(None, 0))(w, idx)
    for k in range(3):
        np.testing.assert_allclose(_np(per[k]), _np(ag.grad(loss)(w, idx[k])))
    total = ag.grad(lambda w: ag.sum(ag.vmap(lambda i: loss(w, i))(idx)))(w)
    np.testing.assert_allclose(_np(total), _np(ag.sum(per, axis=0)), rtol=1e-12)


def test_operands_of_two_levels_in_either_order():
    """An outer level's value meets an inner level's in both operand orders (operators of the
    outer one defer to the inner one, which sees it as shared by its examples)."""
    rng = np.random.default_rng(12)
    a = rng.standard_normal((2, 3))
    b = rng.standard_normal((4, 3))
    m = rng.standard_normal((3, 3))

    def pair(x, y):
        return ag.stack([x * y, y * x, x - y, y - x, (x @ ag.tensor(m)) * y, y @ ag.tensor(m) + x])

    got = ag.vmap(lambda x: ag.vmap(lambda y: pair(x, y))(ag.tensor(b)))(ag.tensor(a))
    ref = np.stack([np.stack([_np(pair(ag.tensor(a[i]), ag.tensor(b[j]))) for j in range(4)])
                    for i in range(2)])
    np.testing.assert_allclose(_np(got), ref, rtol=1e-12)
    # the same meeting inside jvp (tangents of the outer level) and jacfwd/jacrev of vmap
    w = ag.tensor(rng.standard_normal(3))
    batched = ag.vmap(lambda x, w: ag.sum(ag.sin(w) * ag.sum(x)), in_axes=(0, None))
    f = lambda w: batched(ag.tensor(b), w)  # noqa: E731
    np.testing.assert_allclose(_np(ag.jacfwd(f)(w)), _np(ag.jacrev(f)(w)), rtol=1e-12)


def test_an_ensemble_trained_through_vmap_equals_its_models_trained_apart():
    """torch.func's ensembling: the models' parameters stacked, one vmap over them, backward()
    outside and one Adam over the stacks = each model trained by its own Adam."""
    nn = ag.nn
    models = [nn.Sequential(nn.Linear(4, 8, seed=i), nn.Tanh(), nn.Linear(8, 3, seed=10 + i))
              .astype(ag.float64) for i in range(3)]
    base = models[0]
    names = [k for k, _ in base.named_parameters()]
    stacked = {k: ag.tensor(np.stack([_np(dict(m.named_parameters())[k].detach())
                                      for m in models]), requires_grad=True) for k in names}
    rng = np.random.default_rng(13)
    x = ag.tensor(rng.standard_normal((6, 4)))
    y = ag.tensor(np.array([0, 1, 2, 0, 1, 2]))

    def loss(p, x, y):
        return ag.nn.functional.cross_entropy(ag.nn.functional_call(base, p, x), y)

    opt = ag.optim.Adam(list(stacked.values()), lr=0.05)
    apart = [ag.optim.Adam(m.parameters(), lr=0.05) for m in models]
    for _ in range(3):
        opt.zero_grad()
        ag.sum(ag.vmap(loss, in_axes=(0, None, None))(stacked, x, y)).backward()
        opt.step()
        for m, o in zip(models, apart):
            o.zero_grad()
            ag.nn.functional.cross_entropy(m(x), y).backward()
            o.step()
    for k in names:
        for i, m in enumerate(models):
            np.testing.assert_allclose(_np(stacked[k].detach())[i],
                                       _np(dict(m.named_parameters())[k].detach()), rtol=1e-12)


def test_second_order_reverse_through_vmap_crossings():
    """grad of grad and the Hessian of a function that calls vmap: the crossings' VJP rules run
    on Tensors (create_graph) -- leave is enter's transpose, the lift's sum is recorded."""
    rng = np.random.default_rng(14)
    X = ag.tensor(rng.standard_normal((3, 4)))
    w = ag.tensor(rng.standard_normal(4))
    H = ag.hessian(lambda a: ag.sum(ag.vmap(lambda r: ag.sum(ag.sin(r) * r))(a)))(X)
    Hl = ag.hessian(lambda a: sum(ag.sum(ag.sin(a[i]) * a[i]) for i in range(3)))(X)
    np.testing.assert_allclose(_np(H), _np(Hl), rtol=1e-12, atol=1e-14)
    f = lambda w: ag.sum(ag.vmap(lambda r: ag.sum(ag.tanh(r * w)) ** 2)(X))  # noqa: E731
    fl = lambda w: sum(ag.sum(ag.tanh(X[i] * w)) ** 2 for i in range(3))  # noqa: E731
    gg = ag.grad(lambda w: ag.sum(ag.grad(f)(w) ** 2))(w)
    ggl = ag.grad(lambda w: ag.sum(ag.grad(fl)(w) ** 2))(w)
    np.testing.assert_allclose(_np(gg), _np(ggl), rtol=1e-12)
    p = ag.tensor(w.data, requires_grad=True)  # backward(create_graph=True) then again
    (g,) = ag.vjp(lambda v: f(v), p)[1](ag.tensor(1.0))
    ag.sum(g * g).backward()
    np.testing.assert_allclose(_np(p.grad), _np(ggl), rtol=1e-12)


def test_batched_pullbacks_through_a_checkpoint_that_reads_a_closure():
    """The recomputation of a checkpoint runs unbatched and its own walk takes the batched
    cotangent: a tensor it reads by closure gets per-example gradients (vmap of a pullback,
    jacrev's rows), not their sum -- and the pullback works after vjp has returned."""
    rng = np.random.default_rng(15)
    W = ag.tensor(rng.standard_normal((3, 3)))
    x = ag.tensor(rng.standard_normal(3))
    g = lambda w: ag.checkpoint(lambda h: ag.tanh(h @ w), x)  # noqa: E731
    plain = lambda w: ag.tanh(x @ w)  # noqa: E731
    want = _np(ag.jacrev(plain)(W))
    _, pull = ag.vjp(g, W)
    np.testing.assert_allclose(_np(ag.vmap(pull)(ag.eye(3, dtype=ag.float64))[0]), want,
                               rtol=1e-12)
    np.testing.assert_allclose(_np(ag.jacrev(g)(W)), want, rtol=1e-12)
    u = ag.tensor(rng.standard_normal(3))
    np.testing.assert_allclose(_np(pull(u)[0]), _np(ag.vjp(plain, W)[1](u)[0]), rtol=1e-12)
    f = lambda w: ag.sum(g(w) ** 2)  # noqa: E731
    np.testing.assert_allclose(_np(ag.hessian(f)(W)),
                               _np(ag.hessian(lambda w: ag.sum(plain(w) ** 2))(W)), rtol=1e-10)


def test_a_batched_value_leaked_out_of_a_finished_call_is_refused_when_mixed():
    """A per-example value kept in a list while vmap ran and mixed afterwards with a value from
    outside: its batch belongs to a call that has returned (JAX raises UnexpectedTracerError);
    it used to be lifted silently -- grad summed over the dead batch."""
    leak = []
    x = ag.tensor(np.arange(6.0).reshape(3, 2))
    ag.vmap(lambda r: (leak.append(r * 2.0), r)[1])(x)
    w = ag.tensor(np.ones(2))
    with pytest.raises(ag.VmapError, match="vmap call that has returned"):
        ag.grad(lambda w: ag.sum(w * leak[0]))(w)
    with pytest.raises(ag.VmapError, match="vmap call that has returned"):
        w + leak[0]
    # while the call runs, a closure over an outside value is lifted as before, and a backward
    # after the call returned still runs the graph it recorded
    p = ag.tensor(np.ones(2), requires_grad=True)
    out = ag.vmap(lambda r: ag.sum(r * p))(x)
    ag.sum(out).backward()
    np.testing.assert_array_equal(p.grad.numpy(), x.numpy().sum(axis=0))
