"""Module structure operations on a model with tied, frozen and buffer tensors (issue 22,
class 6): every operation keeps tied tensors one tensor, shared sub-modules shared, frozen
weights parameters and buffers buffers; PyTorch state dicts load as they are (Linear stores
its weight as (out, in)); files of agnograd 0.1 (Linear weights (in, out)) are converted."""

from __future__ import annotations

import copy
import json
import pickle
import warnings

import numpy as np
import pytest

import agnograd as ag
from agnograd import nn, optim
from agnograd.nn import functional as F


class Tied(nn.Module):
    """An embedding whose table is also the output layer's weight (tied), a frozen layer, a
    sub-module reached from two places, a float buffer and an integer buffer."""

    def __init__(self, dtype=ag.float64, backend=None):
        self.emb = nn.Embedding(5, 3, dtype=dtype, seed=0, backend=backend)
        self.frozen = nn.Linear(3, 3, dtype=dtype, seed=1, backend=backend)
        self.frozen.weight.requires_grad_(False)
        self.frozen.bias.requires_grad_(False)
        self.shared = nn.Linear(3, 3, dtype=dtype, seed=2, backend=backend)
        self.blocks = [self.shared, self.shared]  # the same sub-module twice
        self.head = nn.Linear(3, 5, dtype=dtype, seed=3, backend=backend)
        self.head.weight = self.emb.weight  # tied: (5, 3) is (out, in) for head, as in PyTorch
        self.scale = ag.tensor([0.5, 1.0, 2.0], dtype=dtype, backend=backend)  # float buffer
        self.steps = ag.tensor(7, dtype=ag.int64, backend=backend)  # integer buffer

    def forward(self, idx):
        h = self.emb(idx) * self.scale
        h = ag.tanh(self.frozen(h))
        for b in self.blocks:
            h = ag.tanh(b(h))
        return self.head(h)


IDX = np.array([0, 3, 1, 4])


def _check_structure(m: Tied) -> None:
    assert m.head.weight is m.emb.weight
    assert m.blocks[0] is m.blocks[1] is m.shared
    names = [n for n, _ in m.named_parameters()]
    assert names == ["emb.weight", "frozen.weight", "frozen.bias", "shared.weight",
                     "shared.bias", "head.bias"]
    assert not m.frozen.weight.requires_grad and not m.frozen.bias.requires_grad
    assert m.emb.weight.requires_grad and m.shared.weight.requires_grad
    assert [n for n, _ in m.named_buffers()] == ["scale", "steps"]
    assert not m.scale.requires_grad
    # every name of a tied tensor and of a shared sub-module's tensors, as torch's state_dict
    aliases = ["head.weight"] + [f"blocks.{i}.{k}" for i in (0, 1) for k in ("weight", "bias")]
    assert sorted(m.state_dict()) == sorted(names + aliases + ["scale", "steps"])


def test_the_model_has_the_structure():
    _check_structure(Tied())


@pytest.mark.parametrize("op", ["astype", "to_backend", "astype_then_back", "deepcopy", "pickle"])
def test_conversions_keep_ties_frozen_parameters_and_buffers(op):
    """Regression (issue 22): astype and to_backend untied tied weights."""
    m = Tied()
    ref = m(IDX).numpy()
    if op == "astype":
        m.astype(ag.float32)
        assert m.emb.weight.dtype == ag.float32 and m.scale.dtype == ag.float32
        assert m.steps.dtype == ag.int64
    elif op == "to_backend":
        m.to_backend("array_api_strict")
        assert m.emb.weight.backend == "array_api_strict" == m.steps.backend
    elif op == "deepcopy":
        m = copy.deepcopy(m)
    elif op == "pickle":
        m = pickle.loads(pickle.dumps(m))
    else:
        m.astype(ag.float32).astype(ag.float64)
    _check_structure(m)
    out = m(ag.tensor(IDX, backend=m.emb.weight.backend))
    np.testing.assert_allclose(ag.to_backend(out, "numpy").numpy(), ref, rtol=1e-5, atol=1e-6)
    # Training updates the one tied tensor: its gradient is the sum of both uses.
    loss = ag.sum(out ** 2)
    loss.backward()
    assert m.emb.weight.grad is not None and m.head.weight.grad is m.emb.weight.grad
    assert m.frozen.weight.grad is None


def _torch_twin(m: Tied):
    torch = pytest.importorskip("torch")

    class T(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(5, 3, dtype=torch.float64)
            self.frozen = torch.nn.Linear(3, 3, dtype=torch.float64)
            self.shared = torch.nn.Linear(3, 3, dtype=torch.float64)
            self.head = torch.nn.Linear(3, 5, dtype=torch.float64)
            self.head.weight = self.emb.weight
            self.frozen.requires_grad_(False)
            self.register_buffer("scale", torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64))

        def forward(self, idx):
            h = self.emb(idx) * self.scale
            h = torch.tanh(self.frozen(h))
            for _ in range(2):
                h = torch.tanh(self.shared(h))
            return self.head(h)

    t = T()
    sd = {k: torch.tensor(v.numpy()) for k, v in m.state_dict().items()
          if k != "steps" and not k.startswith("blocks.")}  # (T has no blocks)
    t.load_state_dict(sd)
    return torch, t


def test_functional_call_replaces_a_tied_tensor_everywhere():
    """Regression (issue 22): functional_call replaced only the first name of a tied tensor."""
    m = Tied()
    torch, t = _torch_twin(m)
    w = ag.tensor(np.random.default_rng(42).normal(size=(5, 3)))
    for name in ("emb.weight", "head.weight"):  # either name replaces it everywhere
        g = ag.grad(lambda w, name=name: ag.sum(nn.functional_call(m, {name: w}, IDX) ** 2))(w)
        tw = torch.tensor(w.numpy(), requires_grad=True)
        out = torch.func.functional_call(t, {name: tw}, (torch.tensor(IDX),))
        (tg,) = torch.autograd.grad((out ** 2).sum(), tw)
        np.testing.assert_allclose(g.numpy(), tg.numpy(), rtol=1e-10, atol=1e-12)
    assert m.head.weight is m.emb.weight and not np.array_equal(m.emb.weight.numpy(), w.numpy())
    same = nn.functional_call(m, {"emb.weight": w, "head.weight": w}, IDX)  # one tensor twice: fine
    np.testing.assert_allclose(same.numpy(), nn.functional_call(m, {"emb.weight": w}, IDX).numpy())
    with pytest.raises(ValueError, match="name one tied tensor"):
        nn.functional_call(m, {"emb.weight": w, "head.weight": w * 2}, IDX)
    # A shared sub-module's tensor: replaced in both places.
    z = ag.zeros((3, 3), dtype=ag.float64)
    out = nn.functional_call(m, {"blocks.1.weight": z}, IDX)
    tout = torch.func.functional_call(t, {"shared.weight": torch.zeros(3, 3, dtype=torch.float64)},
                                      (torch.tensor(IDX),))
    np.testing.assert_allclose(out.numpy(), tout.detach().numpy(), rtol=1e-12)


def test_freeze_build_the_optimizer_unfreeze_trains_the_layer():
    """Regression (issue 22): parameters() left frozen tensors out, so a layer unfrozen after
    the optimizer was built was never trained. As PyTorch: listed, skipped while gradless."""
    torch = pytest.importorskip("torch")
    m = nn.Sequential(nn.Linear(3, 4, seed=0, dtype=ag.float64), nn.Tanh(),
                      nn.Linear(4, 2, seed=1, dtype=ag.float64))
    t = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()
    t.load_state_dict({k.replace("layers.", ""): torch.tensor(v.numpy())
                       for k, v in m.state_dict().items()})
    for layer in (m.layers[0], t[0]):
        layer.weight.requires_grad_(False)
        layer.bias.requires_grad_(False)
    assert len(m.parameters()) == 4 == len(list(t.parameters()))
    opt = optim.Adam(m.parameters(), lr=0.1)
    topt = torch.optim.Adam(t.parameters(), lr=0.1)
    x = np.random.default_rng(1).normal(size=(6, 3))
    for step in range(4):
        if step == 2:  # unfreeze the first layer
            m.layers[0].weight.requires_grad_(True)
            m.layers[0].bias.requires_grad_(True)
            t[0].requires_grad_(True)
        opt.zero_grad()
        topt.zero_grad()
        ag.sum(m(ag.tensor(x)) ** 2).backward()
        (t(torch.tensor(x)) ** 2).sum().backward()
        opt.step()
        topt.step()
    for (n, p), q in zip(m.named_parameters(), t.parameters()):
        np.testing.assert_allclose(p.numpy(), q.detach().numpy(), rtol=1e-10, err_msg=n)
    assert not np.allclose(m.layers[0].weight.numpy(), nn.Linear(3, 4, seed=0).weight.numpy(),
                           atol=1e-3)


def test_optimizer_takes_tensors_that_do_not_require_grad_but_refuses_non_leaves():
    p = ag.tensor([1.0, 2.0])
    opt = optim.SGD([p], lr=0.1)
    opt.step()  # no .grad: skipped
    assert p.numpy().tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match="not a leaf"):
        optim.SGD([ag.tensor([1.0], requires_grad=True) * 2], lr=0.1)


def test_zero_grad_train_eval_and_state_dict_round_trip():
    m = Tied()
    ag.sum(m(IDX)).backward()
    m.frozen.weight.grad = ag.ones((3, 3), dtype=ag.float64)  # a gradient left from before freezing
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())
    m.eval()
    assert all(not mod.training for mod in m.modules())
    m.train()
    assert all(mod.training for mod in m.modules())
    other = Tied()
    for p in other.parameters() + [other.scale]:
        with ag.no_grad():
            p[...] = 0.25
    other.load_state_dict(m.state_dict())
    _check_structure(other)
    np.testing.assert_allclose(other(IDX).numpy(), m(IDX).numpy(), rtol=1e-15)


def test_save_and_load_keep_ties(tmp_path):
    m, other = Tied(), Tied()
    with ag.no_grad():
        other.emb.weight[...] = 0.0
    m.save(tmp_path / "m.npz")
    other.load(tmp_path / "m.npz")
    _check_structure(other)
    np.testing.assert_array_equal(other(IDX).numpy(), m(IDX).numpy())


def test_state_dict_aliases_of_a_tied_tensor_are_accepted_and_checked():
    m = Tied()
    sd = {k: v.numpy().copy() for k, v in m.state_dict().items()}
    sd["head.weight"] = sd.pop("emb.weight")  # only the second name: accepted
    sd["blocks.0.bias"] = sd["shared.bias"]   # a shared sub-module's other name, same value
    Tied().load_state_dict(sd)
    sd["emb.weight"] = sd["head.weight"] + 1.0
    with pytest.raises(nn.StateDictError, match="name one tied tensor"):
        Tied().load_state_dict(sd)


# ---------------------------------------------------------------------------------------------
# PyTorch state dicts and the Linear layout


def test_a_torch_state_dict_loads_into_the_same_model_and_computes_the_same():
    """Regression (issue 22): nn.Linear stored (in, out), so a square PyTorch Linear loaded
    without a word and computed x W instead of x Wᵀ."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    t = torch.nn.Sequential(
        torch.nn.Conv2d(2, 3, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(48, 4), torch.nn.Tanh(), torch.nn.Linear(4, 4),  # a square layer
    ).double()
    m = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, dtype=ag.float64, seed=0), nn.ReLU(),
                      nn.Flatten(), nn.Linear(48, 4, dtype=ag.float64, seed=1), nn.Tanh(),
                      nn.Linear(4, 4, dtype=ag.float64, seed=2))
    sd = t.state_dict()
    m.load_state_dict({f"layers.{k}": v for k, v in sd.items()})  # torch tensors, as they are
    x = np.random.default_rng(0).normal(size=(2, 2, 4, 4))
    np.testing.assert_allclose(m(ag.tensor(x)).numpy(), t(torch.tensor(x)).detach().numpy(),
                               rtol=1e-12, atol=1e-12)
    for ours, theirs in [(m.layers[3], t[3]), (m.layers[5], t[5])]:
        assert ours.weight.shape == tuple(theirs.weight.shape)  # (out, in)


@pytest.mark.parametrize("batch", [(), (5,), (2, 3)])
def test_linear_matches_torch_values_and_gradients(batch):
    torch = pytest.importorskip("torch")
    lin = nn.Linear(4, 3, dtype=ag.float64, seed=0)
    tl = torch.nn.Linear(4, 3).double()
    tl.load_state_dict({k: torch.tensor(v.numpy()) for k, v in lin.state_dict().items()})
    x = np.random.default_rng(1).normal(size=(*batch, 4))
    xt = torch.tensor(x, requires_grad=True)
    xa = ag.tensor(x, requires_grad=True)
    ag.sum(ag.sin(lin(xa))).backward()
    torch.sin(tl(xt)).sum().backward()
    for a, b in [(xa, xt), (lin.weight, tl.weight), (lin.bias, tl.bias)]:
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-12, atol=1e-14)


def _old_file(tmp_path, m):
    """A file as agnograd 0.1's Module.save wrote it: Linear weights (in, out), no marker."""
    arrays = {k: v.numpy() for k, v in m.state_dict().items()}
    for name in arrays:
        if name.endswith(".weight"):
            arrays[name] = arrays[name].T.copy()
    path = tmp_path / "old.npz"
    np.savez(path, **arrays)
    return path


def test_files_of_agnograd_0_1_are_converted(tmp_path):
    m = nn.MLP([3, 3, 2], seed=0, dtype=ag.float64)  # a square layer: the layout is invisible
    path = _old_file(tmp_path, m)
    other = nn.MLP([3, 3, 2], seed=5, dtype=ag.float64)
    with pytest.warns(UserWarning, match=r"agnograd 0\.1 .*transposed 'layers\.0\.weight', "
                                         r"'layers\.1\.weight'"):
        other.load(path)
    x = ag.tensor(np.random.default_rng(0).normal(size=(4, 3)))
    np.testing.assert_array_equal(other(x).numpy(), m(x).numpy())
    other.save(tmp_path / "new.npz")  # now marked: loads without conversion
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nn.MLP([3, 3, 2], seed=6, dtype=ag.float64).load(tmp_path / "new.npz")


def test_unmarked_files_in_the_new_layout_and_newer_formats_are_refused(tmp_path):
    m = nn.MLP([3, 4, 2], seed=0, dtype=ag.float64)
    np.savez(tmp_path / "foreign.npz", **{k: v.numpy() for k, v in m.state_dict().items()})
    with pytest.raises(nn.StateDictError, match="no format marker.*load_state_dict"):
        m.load(tmp_path / "foreign.npz")
    np.savez(tmp_path / "future.npz", __agnograd_format__=np.int64(3),
             **{k: v.numpy() for k, v in m.state_dict().items()})
    with pytest.raises(nn.StateDictError, match="newer agnograd"):
        m.load(tmp_path / "future.npz")


def test_training_states_of_agnograd_0_1_are_converted(tmp_path):
    from agnograd.backends.host import load_checked_npz, save_checked_npz

    def setup():
        model = nn.MLP([3, 5, 2], seed=0, dtype=ag.float64)
        return model, optim.Adam(model.parameters(), lr=0.05)

    x = ag.tensor(np.random.default_rng(0).normal(size=(6, 3)))
    model, opt = setup()
    for _ in range(2):
        opt.zero_grad()
        ag.sum(model(x) ** 2).backward()
        opt.step()
    new = tmp_path / "new.npz"
    nn.save_training_state(new, model=model, optimizer=opt, epoch=2)
    arrays, meta = load_checked_npz(new)
    assert meta["version"] == 2
    for k in list(arrays):  # rewrite it as agnograd 0.1 did: Linear weights (in, out)
        if k.startswith("model/layers.") and k.endswith(".weight"):
            arrays[k] = arrays[k].T.copy()
        if k.startswith("optimizer/") and arrays[k].ndim == 2:
            arrays[k] = arrays[k].T.copy()
    meta["version"] = 1
    old = tmp_path / "old.npz"
    save_checked_npz(old, arrays, meta)

    for path in (new, old):
        m2, o2 = setup()
        ctx = pytest.warns(UserWarning, match="agnograd 0.1") if path is old else warnings.catch_warnings()
        with ctx:
            assert nn.load_training_state(path, model=m2, optimizer=o2)["epoch"] == 2
        for _ in range(2):  # both continue exactly as the uninterrupted run
            o2.zero_grad()
            ag.sum(m2(x) ** 2).backward()
            o2.step()
        if path is new:
            ref = [p.numpy().copy() for p in m2.parameters()]
        else:
            for p, r in zip(m2.parameters(), ref):
                np.testing.assert_array_equal(p.numpy(), r)
    with pytest.raises(ValueError, match="pass model= as well"):
        nn.load_training_state(old, optimizer=setup()[1])
    assert json.loads(json.dumps(meta))  # (the metadata stays plain JSON)


def test_cross_entropy_of_a_tied_model_trains_the_tied_weight_once():
    m = Tied()
    opt = optim.SGD(m.parameters(), lr=0.1)
    assert sum(p is m.emb.weight for p in opt.param_groups[0]["params"]) == 1
    before = m.emb.weight.numpy().copy()
    F.cross_entropy(m(IDX), ag.tensor([1, 2, 3, 4])).backward()
    opt.step()
    assert m.head.weight is m.emb.weight and not np.array_equal(before, m.emb.weight.numpy())


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch", [(), (5,), (2, 3)])
def test_linear_second_order_matches_torch(batch, bias):
    """Linear is one fused node; its rules stay differentiable (Hessian-vector products)."""
    torch = pytest.importorskip("torch")
    lin = nn.Linear(4, 3, bias=bias, dtype=ag.float64, seed=0)
    tl = torch.nn.Linear(4, 3, bias=bias).double()
    tl.load_state_dict({k: torch.tensor(v.numpy()) for k, v in lin.state_dict().items()})
    x = np.random.default_rng(2).normal(size=(*batch, 4))
    names = ["weight", "bias"] if bias else ["weight"]

    def loss(x, *ps):
        return ag.sum(ag.tanh(nn.functional_call(lin, dict(zip(names, ps)), x)) ** 2)

    args = [ag.tensor(x)] + [getattr(lin, n).detach() for n in names]
    ours = ag.grad(lambda *a: ag.sum(ag.grad(loss, argnums=tuple(range(len(a))))(*a)[1]),
                   argnums=tuple(range(len(args))))(*args)
    targs = [torch.tensor(a.numpy(), requires_grad=True) for a in args]
    tout = torch.func.functional_call(tl, dict(zip(names, targs[1:])), (targs[0],))
    first = torch.autograd.grad((torch.tanh(tout) ** 2).sum(), targs, create_graph=True)
    theirs = torch.autograd.grad(first[1].sum(), targs)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-12)


def test_linear_takes_the_general_path_for_mixed_dtypes_complex_and_arrays():
    lin = nn.Linear(3, 2, dtype=ag.float64, seed=0)
    w, b = lin.weight.numpy(), lin.bias.numpy()
    x = np.arange(6.0).reshape(2, 3)
    for xin in (x, ag.tensor(x.astype(np.float32)), ag.tensor(x + 1j)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            y = lin(xin)
        xv = xin.numpy() if isinstance(xin, ag.Tensor) else xin
        np.testing.assert_allclose(y.numpy(), xv @ w.T + b, rtol=1e-6)
    x64 = ag.tensor(x, requires_grad=True)
    ag.sum(lin(x64)).backward()
    np.testing.assert_allclose(x64.grad.numpy(), np.ones((2, 2)) @ w)


# ---------------------------------------------------------------------------------------------
# The class: any structure of ties, shared sub-modules, frozen parameters and buffers survives
# every structure operation.

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


class Bag(nn.Module):
    def __init__(self, layers, groups, extras):
        self.layers = layers
        self.groups = groups
        self.extras = extras

    def forward(self, x):
        for layer in self.layers:
            x = ag.tanh(layer(x))
        return x


def _build(spec):
    n_layers, ties, shares, frozen, buffers = spec
    layers = [nn.Linear(3, 3, dtype=ag.float64, seed=i) for i in range(n_layers)]
    for i, j in ties:  # tie layer j's weight (or bias) to layer i's
        if i != j:
            layers[j].weight = layers[i].weight
    groups = {"g": [layers[k % n_layers] for k in shares]}  # sub-modules reached twice
    for k in frozen:
        layers[k % n_layers].bias.requires_grad_(False)
        layers[k % n_layers].weight.requires_grad_(False)
    extras = [ag.tensor(np.full(2, float(v))) for v in range(buffers)]
    if buffers:
        extras.append(extras[0])  # a tied buffer
    return Bag(layers, groups, extras)


def _signature(m):
    """Which names share a tensor, which are parameters, frozen, buffers; values and dtypes."""
    from agnograd.nn.module import _every_name, is_parameter

    names = list(_every_name(m, "", set()))
    first = {}
    for n, t in names:
        first.setdefault(id(t), n)
    return {n: (first[id(t)], is_parameter(t), t.requires_grad, t.shape) for n, t in names}


SPECS = st.tuples(
    st.integers(1, 3),
    st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2)), max_size=2),
    st.lists(st.integers(0, 5), max_size=2),
    st.lists(st.integers(0, 5), max_size=2),
    st.integers(0, 2),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=SPECS, op=st.sampled_from(["astype", "to_backend", "deepcopy", "pickle", "save_load",
                                        "state_dict", "train_eval_zero_grad"]))
def test_every_structure_operation_keeps_any_structure(tmp_path_factory, spec, op):
    spec = (spec[0], [(i % spec[0], j % spec[0]) for i, j in spec[1]], *spec[2:])
    m = _build(spec)
    before = _signature(m)
    x = ag.tensor(np.linspace(-1, 1, 6).reshape(2, 3))
    ref = m(x).numpy()
    if op == "astype":
        m.astype(ag.float32).astype(ag.float64)
    elif op == "to_backend":
        m.to_backend("array_api_strict").to_backend("numpy")
    elif op == "deepcopy":
        m = copy.deepcopy(m)
    elif op == "pickle":
        m = pickle.loads(pickle.dumps(m))
    elif op == "save_load":
        path = tmp_path_factory.mktemp("bag") / "m.npz"
        m.save(path)
        m = _build(spec)
        with ag.no_grad():
            for t in m.parameters():
                t[...] = 0.0
        m.load(path)
    elif op == "state_dict":
        sd = m.state_dict()
        m = _build(spec)
        m.load_state_dict(sd)
    else:
        out = ag.sum(m(x))
        if out.requires_grad:  # (not when every layer is frozen)
            out.backward()
        m.eval()
        m.train()
        m.zero_grad()
        assert all(p.grad is None for p in m.parameters())
    assert _signature(m) == before
    np.testing.assert_allclose(m(x).numpy(), ref, rtol=1e-5, atol=1e-6)  # astype: float32 round trip
