"""agnograd.nn: parameter discovery, layers, initialisation, state dicts, save/load, backends,
and the functional activations and losses (values, gradients, stability at extreme logits)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import agnograd as ag
from agnograd import nn
from agnograd.nn import functional as F
from agnograd.testing import check_grad

from .conftest import CPU_BACKENDS


def _host(t):
    return np.array(t.numpy(), copy=True)


def _snapshot(model):
    return {n: _host(t) for n, t in model.state_dict().items()}


# ---------------------------------------------------------------------------------------------
# Module


class Block(nn.Module):
    def __init__(self):
        self.fc = nn.Linear(3, 4, seed=0)
        self.heads = [nn.Linear(4, 2, seed=1), nn.Linear(4, 2, bias=False, seed=2)]
        self.extra = {"scale": ag.tensor([1.0, 2.0], requires_grad=True)}
        self.stats = ag.tensor([0.5])          # state, not a parameter (no grad)
        self._cache = ag.tensor([9.0], requires_grad=True)   # private: ignored
        self.shared = self.fc                  # the same module twice: counted once
        self.act = F.tanh                      # a function: not state

    def forward(self, x):
        h = self.act(self.fc(x))
        return self.heads[0](h) * self.extra["scale"] + self.heads[1](h)


def test_parameters_found_in_attributes_lists_dicts_and_nested_modules():
    m = Block()
    names = [n for n, _ in m.named_parameters()]
    # PyTorch's order: the module's own tensors first, then its sub-modules'
    assert names == ["extra.scale", "fc.weight", "fc.bias", "heads.0.weight", "heads.0.bias",
                     "heads.1.weight"]
    assert len(m.parameters()) == 6
    assert all(p.requires_grad and p.is_leaf for p in m.parameters())
    # the shared module's tensors under each of its names, as torch's state_dict
    assert list(m.state_dict()) == ["extra.scale", "stats"] + names[1:] + ["shared.weight",
                                                                          "shared.bias"]
    assert m.num_parameters() == 3 * 4 + 4 + 4 * 2 + 2 + 4 * 2 + 2
    assert [n for n, _ in m.named_modules()] == ["", "fc", "heads.0", "heads.1"]
    assert "(fc): Linear(in_features=3, out_features=4" in repr(m)


def test_module_call_runs_forward_and_backward_reaches_every_parameter():
    m = Block()
    out = m(ag.tensor(np.ones((5, 3)), dtype=ag.float32))
    assert out.shape == (5, 2)
    ag.sum(out * out).backward()
    assert all(p.grad is not None and p.grad.shape == p.shape for p in m.parameters())
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())


def test_module_without_forward_says_so():
    with pytest.raises(NotImplementedError, match="forward"):
        nn.Module()(1)


def test_train_and_eval_set_every_submodule():
    m = nn.Sequential(nn.Linear(2, 2, seed=0), nn.Dropout(0.5, seed=0))
    assert m.training and m[1].training
    assert m.eval() is m and not m.training and not m[1].training
    m.train()
    assert all(sub.training for sub in m.modules())


# ---------------------------------------------------------------------------------------------
# Layers and initialisation


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_linear_computes_x_w_plus_b(backend):
    lin = nn.Linear(3, 2, backend=backend, seed=0)
    assert lin.weight.shape == (2, 3) and lin.bias.shape == (2,)  # (out, in), as PyTorch
    assert lin.weight.dtype == ag.float32 and lin.weight.backend == backend
    assert np.all(_host(lin.bias) == 0)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    y = lin(ag.tensor(x, backend=backend))
    np.testing.assert_allclose(_host(y), x @ _host(lin.weight).T, rtol=1e-6)
    assert nn.Linear(3, 2, bias=False, seed=0).bias is None


def test_initialisation_is_seeded_and_scaled():
    a, b, c = (nn.Linear(200, 100, seed=s) for s in (7, 7, 8))
    assert np.array_equal(_host(a.weight), _host(b.weight))
    assert not np.array_equal(_host(a.weight), _host(c.weight))
    limit = math.sqrt(6 / 300)                           # Glorot uniform
    w = _host(a.weight)
    assert np.abs(w).max() <= limit and np.abs(w).max() > 0.95 * limit
    he = _host(nn.Linear(200, 100, seed=0, init="he").weight)
    assert he.std() == pytest.approx(math.sqrt(2 / 200), rel=0.05)
    assert nn.init.he_uniform((50, 10), seed=0).numpy().max() <= math.sqrt(6 / 50)
    assert nn.init.glorot_normal((50, 10), seed=0).numpy().std() == pytest.approx(
        math.sqrt(2 / 60), rel=0.1)
    with pytest.raises(ValueError, match="unknown initialiser"):
        nn.Linear(2, 2, init="zeros")


def test_same_seed_gives_the_same_weights_on_every_backend():
    ref = nn.MLP([5, 4, 3], seed=3)
    other = nn.MLP([5, 4, 3], seed=3, backend="array_api_strict")
    for (n, a), (_, b) in zip(ref.named_parameters(), other.named_parameters()):
        assert b.backend == "array_api_strict"
        np.testing.assert_array_equal(_host(a), _host(b), err_msg=n)


def test_mlp_is_the_three_layer_tanh_network():
    m = nn.MLP([4, 6, 5, 3], seed=0, dtype=ag.float64)
    x = np.random.default_rng(0).normal(size=(7, 4))
    W = [_host(layer.weight).T for layer in m.layers]
    b = [_host(layer.bias) for layer in m.layers]
    x1 = np.tanh(x @ W[0] + b[0])
    x2 = np.tanh(x1 @ W[1] + b[1])
    x3 = x2 @ W[2] + b[2]
    np.testing.assert_allclose(_host(m(ag.tensor(x))), x3, rtol=1e-12)
    assert [n for n, _ in m.named_parameters()][-2:] == ["layers.2.weight", "layers.2.bias"]


def test_mlp_activations():
    x = ag.tensor(np.linspace(-2, 2, 8).reshape(2, 4))
    relu = nn.MLP([4, 3, 2], activation="relu", seed=0, dtype=ag.float64)
    assert relu(x).shape == (2, 2)
    custom = nn.MLP([4, 3, 2], activation=lambda t: t * 2.0, seed=0, dtype=ag.float64)
    assert custom(x).shape == (2, 2)
    with pytest.raises(ValueError, match="unknown activation"):
        nn.MLP([4, 2], activation="swishy")
    with pytest.raises(ValueError, match="at least"):
        nn.MLP([4])


def test_sequential_takes_modules_and_functions():
    s = nn.Sequential(nn.Linear(3, 4, seed=0), nn.Tanh(), F.relu, nn.Linear(4, 1, seed=1),
                      nn.Sigmoid())
    assert len(s) == 5 and [n for n, _ in s.named_parameters()][0] == "0.weight"
    y = s(ag.tensor(np.ones((2, 3), dtype=np.float32)))
    assert y.shape == (2, 1) and np.all((_host(y) > 0) & (_host(y) < 1))
    for layer in (nn.ReLU(), nn.GELU(), nn.GELU("tanh"), nn.Softplus()):
        assert layer(ag.tensor([0.5])).shape == (1,)


def test_dropout_layer_is_seeded_and_off_in_eval_mode():
    x = ag.ones((1000,))
    d1, d2 = nn.Dropout(0.25, seed=4), nn.Dropout(0.25, seed=4)
    a, b = _host(d1(x)), _host(d2(x))
    np.testing.assert_array_equal(a, b)                  # same seed, same mask
    np.testing.assert_allclose(np.unique(a), [0.0, 1 / 0.75], rtol=1e-6)
    assert 0.2 < np.mean(a == 0) < 0.3
    assert not np.array_equal(_host(d1(x)), a)           # the generator advances
    d1.eval()
    np.testing.assert_array_equal(_host(d1(x)), np.ones(1000))


# ---------------------------------------------------------------------------------------------
# State dicts, save and load


def test_state_dict_round_trip_copies_values():
    a, b = nn.MLP([4, 5, 3], seed=0), nn.MLP([4, 5, 3], seed=1)
    x = ag.tensor(np.ones((2, 4), dtype=np.float32))
    params_before = b.parameters()
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(_host(b(x)), _host(a(x)))
    assert all(p is q for p, q in zip(b.parameters(), params_before))  # same Tensors, new values
    with ag.no_grad():
        a.layers[0].weight += 1.0                        # b holds a copy, not a view
    assert not np.array_equal(_host(b.layers[0].weight), _host(a.layers[0].weight))


def test_state_dict_shares_memory_with_the_model():
    m = nn.Linear(2, 2, seed=0)
    sd = m.state_dict()
    with ag.no_grad():
        m.weight -= 1.0
    np.testing.assert_array_equal(_host(sd["weight"]), _host(m.weight))


@pytest.mark.parametrize("change, message", [
    (lambda sd: sd.pop("layers.1.bias"), "missing 'layers.1.bias'"),
    (lambda sd: sd.update(extra=np.zeros(2, np.float32)), "unexpected 'extra'"),
    (lambda sd: sd.update({"layers.0.weight": np.zeros((4, 5), np.float32)}),
     r"'layers.0.weight' has shape \(4, 5\), the model's has shape \(5, 4\)"),
    (lambda sd: sd.update({"layers.0.bias": np.zeros(5, np.int64)}),
     "'layers.0.bias' has dtype int64, the model's has dtype float32 .only dtypes of the same kind"),
    (lambda sd: sd.update({"layers.0.bias": np.full(5, 1e300)}),
     "'layers.0.bias' holds float values beyond the range of the model's float32"),
])
def test_load_state_dict_mismatch_is_an_error_and_changes_nothing(change, message):
    model = nn.MLP([4, 5, 3], seed=0)
    # A state dict that is right for every other entry (so a partial load would be visible).
    sd = {n: np.full(t.shape, 7.0, np.float32) for n, t in nn.MLP([4, 5, 3]).state_dict().items()}
    change(sd)
    before = _snapshot(model)
    with pytest.raises(nn.StateDictError, match=message):
        model.load_state_dict(sd)
    for n, v in _snapshot(model).items():
        np.testing.assert_array_equal(v, before[n], err_msg=n)


def test_load_state_dict_converts_floating_values_to_the_models_dtype():
    """docs/nn-optim.md: values are converted -- float64 into float32 and back (same kind)."""
    m32 = nn.MLP([4, 5, 3], seed=0)
    m64 = nn.MLP([4, 5, 3], seed=1, dtype=ag.float64)
    m32.load_state_dict(m64.state_dict())
    for (n, a), (_, b) in zip(m32.named_tensors(), m64.named_tensors()):
        assert a.dtype == ag.float32, n
        np.testing.assert_array_equal(_host(a), _host(b).astype(np.float32), err_msg=n)
    m64.load_state_dict(m32.state_dict())
    assert all(t.dtype == ag.float64 for t in m64.parameters())
    m_inf = nn.MLP([4, 5, 3], seed=0)
    sd = {n: np.full(t.shape, np.inf) for n, t in m_inf.state_dict().items()}
    m_inf.load_state_dict(sd)  # infinite values stay infinite: nothing lost
    assert np.isinf(_host(m_inf.layers[0].weight)).all()


def test_load_state_dict_non_strict_loads_the_common_names():
    model = nn.MLP([4, 5, 3], seed=0)
    model.load_state_dict({"layers.1.bias": np.ones(3, np.float32), "other": 1.0}, strict=False)
    np.testing.assert_array_equal(_host(model.layers[1].bias), np.ones(3))


def test_save_and_load_round_trip(tmp_path):
    path = tmp_path / "params.npz"
    a, b = nn.MLP([4, 5, 3], seed=0), nn.MLP([4, 5, 3], seed=1)
    a.save(path)
    with np.load(path, allow_pickle=False) as z:       # a plain .npz, no pickle
        assert sorted(z.files) == sorted([n for n, _ in a.named_parameters()]
                                         + ["__agnograd_format__"])  # the format marker
        assert z["layers.0.weight"].dtype == np.float32
    assert b.load(path) is b
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(_host(p), _host(q), err_msg=n)
    assert not list(tmp_path.glob(".agnograd-*"))       # no temporary file left behind


@pytest.mark.parametrize("other, message", [
    (lambda: nn.MLP([4, 6, 3], seed=0), "has shape"),                       # shapes
    (lambda: nn.MLP([4, 5, 3], seed=0, dtype=ag.complex64), "has dtype complex64"),  # kinds
    (lambda: nn.MLP([4, 5, 5, 3], seed=0), "unexpected 'layers.2.weight'"),  # names
    (lambda: nn.MLP([4, 5, 3], bias=False, seed=0), "missing 'layers.0.bias', 'layers.1.bias'"),
])
def test_loading_a_file_that_does_not_fit_changes_nothing(tmp_path, other, message):
    path = tmp_path / "other.npz"
    other().save(path)
    model = nn.MLP([4, 5, 3], seed=0)
    before = _snapshot(model)
    with pytest.raises(nn.StateDictError, match=message) as info:
        model.load(path)
    assert str(path) in str(info.value)
    for n, v in _snapshot(model).items():
        np.testing.assert_array_equal(v, before[n], err_msg=n)


def test_loading_bad_files(tmp_path):
    model = nn.MLP([2, 2], seed=0)
    with pytest.raises(FileNotFoundError):
        model.load(tmp_path / "missing.npz")
    text = tmp_path / "text.npz"
    text.write_text("not an archive")
    with pytest.raises(ValueError, match="cannot read"):
        model.load(text)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, **{"layers.0.weight": np.array([object()] * 4).reshape(2, 2)})
    with pytest.raises(ValueError, match="cannot read"):
        model.load(pickled)                            # object arrays need pickle: refused
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(ValueError, match="single array"):
        model.load(single)


def test_to_backend_and_astype():
    m = nn.MLP([3, 4, 2], seed=0)
    x = np.ones((2, 3), dtype=np.float32)
    expected = _host(m(ag.tensor(x)))
    assert m.to_backend("array_api_strict") is m
    assert {p.backend for p in m.parameters()} == {"array_api_strict"}
    assert all(p.requires_grad and p.is_leaf for p in m.parameters())
    out = m(ag.tensor(x, backend="array_api_strict"))
    np.testing.assert_allclose(_host(out), expected, rtol=1e-6)
    m.to_backend("numpy").astype(ag.float64)
    assert {(p.backend, p.dtype) for p in m.parameters()} == {("numpy", ag.float64)}
    with pytest.raises(ag.BackendError):
        m.to_backend("no_such_backend")


def test_functional_call_differentiates_with_respect_to_given_tensors():
    m = nn.Linear(3, 2, seed=0, dtype=ag.float64)
    x = ag.tensor(np.ones((4, 3)))
    w = ag.tensor(np.full((2, 3), 0.5))                   # (out, in)
    g = ag.grad(lambda w: ag.sum(nn.functional_call(m, {"weight": w}, x) ** 2))(w)
    y = np.ones((4, 3)) @ np.full((2, 3), 0.5).T
    np.testing.assert_allclose(_host(g), (2 * y).T @ np.ones((4, 3)), rtol=1e-12)
    assert m.weight is not w and not np.all(_host(m.weight) == 0.5)   # restored
    with pytest.raises(KeyError, match="no state tensor named 'wieght'"):
        nn.functional_call(m, {"wieght": w}, x)


# ---------------------------------------------------------------------------------------------
# Functional: activations


def test_relu_gradient_is_zero_at_the_kink():
    x = ag.tensor([-1.0, 0.0, 2.0], requires_grad=True)
    ag.sum(F.relu(x)).backward()
    np.testing.assert_array_equal(_host(x.grad), [0.0, 0.0, 1.0])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_activations_are_stable_at_extreme_inputs(backend):
    v = np.array([-1000.0, -30.0, -1.0, 0.0, 1.0, 30.0, 1000.0])
    for fn, ref, dref in [
        (F.sigmoid, lambda x: 0.5 * (1 + np.tanh(x / 2)), lambda s: s * (1 - s)),
        (F.softplus, lambda x: np.logaddexp(x, 0), None),
        (F.tanh, np.tanh, None),
    ]:
        x = ag.tensor(v, backend=backend, requires_grad=True)
        y = fn(x)
        ag.sum(y).backward()
        np.testing.assert_allclose(_host(y), ref(v), rtol=1e-12, atol=1e-300)
        assert np.all(np.isfinite(_host(x.grad)))
        if dref is not None:
            np.testing.assert_allclose(_host(x.grad), dref(_host(y)), rtol=1e-9, atol=1e-300)


def test_sigmoid_and_softplus_gradients_at_extremes():
    x = ag.tensor([-1000.0, 0.0, 1000.0], requires_grad=True)
    ag.sum(F.softplus(x)).backward()
    np.testing.assert_allclose(_host(x.grad), [0.0, 0.5, 1.0])


def test_gelu_matches_the_exact_formula():
    v = np.linspace(-6, 6, 41)
    erf = np.vectorize(math.erf)
    exact = 0.5 * v * (1 + erf(v / math.sqrt(2)))
    np.testing.assert_allclose(_host(F.gelu(ag.tensor(v))), exact, atol=5e-7)
    tanh_form = 0.5 * v * (1 + np.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3)))
    np.testing.assert_allclose(_host(F.gelu(ag.tensor(v), approximate="tanh")), tanh_form, rtol=1e-12)
    # The gradient of the polynomial form is close to Φ(x) + x φ(x).
    x = ag.tensor(v, requires_grad=True)
    ag.sum(F.gelu(x)).backward()
    dexact = 0.5 * (1 + erf(v / math.sqrt(2))) + v * np.exp(-v * v / 2) / math.sqrt(2 * math.pi)
    np.testing.assert_allclose(_host(x.grad), dexact, atol=5e-6)
    with pytest.raises(ValueError, match="approximate"):
        F.gelu(x, approximate="erf")


def test_softmax_and_log_softmax_at_extreme_logits():
    z = ag.tensor([[-1000.0, 0.0, 1000.0], [1.0, 2.0, 3.0]], requires_grad=True)
    lp = F.log_softmax(z, axis=1)
    np.testing.assert_allclose(_host(lp)[0], [-2000.0, -1000.0, 0.0])
    ref = np.array([1.0, 2.0, 3.0]) - np.log(np.exp([1.0, 2.0, 3.0]).sum())
    np.testing.assert_allclose(_host(lp)[1], ref, rtol=1e-12)
    s = F.softmax(z, axis=1)
    np.testing.assert_allclose(_host(s).sum(axis=1), [1.0, 1.0])
    ag.sum(lp[:, 0]).backward()
    assert np.all(np.isfinite(_host(z.grad)))


@pytest.mark.parametrize("fn", [F.relu, F.tanh, F.sigmoid, F.softplus, F.gelu,
                                lambda x: F.softmax(x, axis=-1), lambda x: F.log_softmax(x, axis=0)])
def test_activation_gradients_match_finite_differences(fn):
    v = np.random.default_rng(0).normal(size=(3, 4))
    v[np.abs(v) < 1e-3] = 0.5                            # keep relu away from its kink
    check_grad(fn, v, rtol=1e-5, atol=1e-6 if fn is not F.gelu else 1e-5)


# ---------------------------------------------------------------------------------------------
# Functional: losses


def _ce_reference(logits, labels):
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -logp[np.arange(len(labels)), labels], np.exp(logp)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_cross_entropy_matches_hand_computation(backend):
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(6, 4))
    labels = rng.integers(0, 4, size=6)
    per, p = _ce_reference(logits, labels)
    for reduction, expected in [("none", per), ("sum", per.sum()), ("mean", per.mean())]:
        z = ag.tensor(logits, backend=backend, requires_grad=True)
        loss = F.cross_entropy(z, ag.tensor(labels, backend=backend), reduction=reduction)
        np.testing.assert_allclose(_host(loss), expected, rtol=1e-12)
    ag.sum(loss).backward()                             # mean: (softmax - onehot) / N
    np.testing.assert_allclose(_host(z.grad), (p - np.eye(4)[labels]) / 6, rtol=1e-10, atol=1e-15)
    probs = np.eye(4)[labels]                           # probability targets give the same
    same = F.cross_entropy(ag.tensor(logits, backend=backend), ag.tensor(probs, backend=backend))
    np.testing.assert_allclose(_host(same), per.mean(), rtol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cross_entropy_is_stable_at_extreme_logits(dtype):
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0], [0.0, 0.0, 0.0]], dtype=dtype)
    labels = np.array([0, 2, 1])
    z = ag.tensor(logits, requires_grad=True)
    loss = F.cross_entropy(z, ag.tensor(labels), reduction="none")
    np.testing.assert_allclose(_host(loss), [0.0, 1e4, math.log(3)], rtol=1e-6)
    ag.sum(loss).backward()
    g = _host(z.grad)
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g[1], [0.0, 1.0, -1.0], atol=1e-6)


def test_loss_targets_take_the_logits_dtype():
    z = ag.tensor(np.zeros((2, 3), np.float32), requires_grad=True)
    assert F.cross_entropy(z, np.full((2, 3), 1 / 3)).dtype == ag.float32      # float64 probs
    assert F.binary_cross_entropy_with_logits(z, np.ones((2, 3))).dtype == ag.float32


def test_cross_entropy_errors():
    z = ag.tensor(np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"labels must have shape \(3,\)"):
        F.cross_entropy(z, ag.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"shape \(N, C\)"):
        F.cross_entropy(ag.tensor(0.0), ag.tensor(0))
    with pytest.raises(ValueError, match=r"labels must have shape \(\), not \(1,\)"):  # unbatched
        F.cross_entropy(ag.tensor(np.zeros(4)), ag.tensor([0]))
    with pytest.raises(ValueError, match="reduction"):
        F.cross_entropy(z, ag.tensor([0, 1, 2]), reduction="avg")
    with pytest.raises(TypeError, match="reduction='sum' by keyword"):  # PyTorch's positions
        F.cross_entropy(z, ag.tensor([0, 1, 2]), "sum")
    with pytest.raises(ValueError, match="label_smoothing"):
        F.cross_entropy(z, ag.tensor([0, 1, 2]), label_smoothing=1.5)
    with pytest.raises(ValueError, match=r"weight must have shape \(4,\)"):
        F.cross_entropy(z, ag.tensor([0, 1, 2]), weight=np.ones(3))


def test_cross_entropy_gradient_matches_finite_differences():
    labels = ag.tensor([2, 0, 1])
    check_grad(lambda z: F.cross_entropy(z, labels), np.random.default_rng(2).normal(size=(3, 3)))


def test_binary_cross_entropy_with_logits_is_stable():
    x = np.array([-1000.0, -2.0, 0.0, 3.0, 1000.0, 1000.0, -1000.0])
    t = np.array([0.0, 1.0, 0.5, 0.0, 1.0, 0.0, 1.0])
    z = ag.tensor(x, requires_grad=True)
    loss = F.binary_cross_entropy_with_logits(z, t, reduction="none")
    expected = np.logaddexp(0, x) - x * t
    np.testing.assert_allclose(_host(loss), expected, rtol=1e-12)
    np.testing.assert_allclose(_host(loss)[-2:], [1000.0, 1000.0])
    ag.sum(loss).backward()
    sig = 0.5 * (1 + np.tanh(x / 2))
    np.testing.assert_allclose(_host(z.grad), sig - t, atol=1e-12)
    mean = F.binary_cross_entropy_with_logits(ag.tensor(x), ag.tensor(t))
    assert mean.item() == pytest.approx(expected.mean())
    check_grad(lambda z: F.binary_cross_entropy_with_logits(z, t[:3]), np.array([-1.0, 0.2, 2.0]))


def test_mse_loss():
    a, b = np.array([1.0, 2.0, 4.0]), np.array([0.0, 2.0, 2.0])
    x = ag.tensor(a, requires_grad=True)
    loss = F.mse_loss(x, b)
    assert loss.item() == pytest.approx(5 / 3)
    loss.backward()
    np.testing.assert_allclose(_host(x.grad), 2 * (a - b) / 3)
    assert F.mse_loss(ag.tensor(a), b, reduction="sum").item() == 5.0
    with pytest.raises(ValueError, match="shape"):
        F.mse_loss(ag.tensor(a), np.zeros(2))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_dropout_function(backend):
    x = ag.tensor(np.ones((50, 40)), backend=backend, requires_grad=True)
    y = F.dropout(x, 0.5, training=True, seed=1)
    h = _host(y)
    assert set(np.unique(h)) <= {0.0, 2.0} and 0.4 < np.mean(h == 0) < 0.6
    np.testing.assert_array_equal(h, _host(F.dropout(ag.tensor(np.ones((50, 40))), 0.5, seed=1)))
    ag.sum(y).backward()
    np.testing.assert_array_equal(_host(x.grad), h)      # the gradient goes through the mask
    assert F.dropout(x, 0.5, training=False) is x
    np.testing.assert_array_equal(_host(F.dropout(x, 1.0, seed=0)), 0.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        F.dropout(x, 1.5)
    # without a seed: the device generator (ag.random), the same mask on every backend
    ag.manual_seed(1)
    yd = F.dropout(x, 0.5)
    hd = _host(yd)
    assert set(np.unique(hd)) <= {0.0, 2.0} and 0.4 < np.mean(hd == 0) < 0.6
    ag.manual_seed(1)
    np.testing.assert_array_equal(_host(F.dropout(ag.tensor(np.ones((50, 40))), 0.5)), hd)
    x.grad = None
    ag.sum(yd).backward()
    np.testing.assert_array_equal(_host(x.grad), hd)
