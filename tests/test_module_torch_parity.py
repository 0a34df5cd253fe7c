"""The Module API against PyTorch's, as a user porting PyTorch code would write it: the same
names, signatures, defaults and results for parameters, buffers, containers, state dicts,
traversal, initialisation and gradient utilities, and module operations through the engine's
layers (jit, capture, vmap, functional_call, deepcopy, pickle)."""

from __future__ import annotations

import copy
import math
import pickle
from collections import OrderedDict

import numpy as np
import pytest

import agnograd as ag
from agnograd import nn, optim
from agnograd.nn import functional as F

torch = pytest.importorskip("torch")
tnn = torch.nn


def _np(t):
    return np.asarray(ag.to_backend(t.detach(), "numpy").data)


def _twin_linear(ours, theirs):
    """Copy a torch Linear/Conv's weights into ours (PyTorch's layouts)."""
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})


# -- nn.Parameter and attribute assignment ------------------------------------------------------

def test_assigning_a_plain_tensor_over_a_parameter_raises_as_torch():
    """Regression: ``m.weight = tensor`` (not a Parameter) silently turned the weight into a
    buffer: it left parameters() (an optimizer made later skipped it) while the model still
    used it. PyTorch refuses with TypeError; so does agnograd, naming the fixes."""
    lin = nn.Linear(3, 2, seed=0)
    tlin = tnn.Linear(3, 2)
    with pytest.raises(TypeError):
        tlin.weight = torch.zeros(2, 3)
    with pytest.raises(TypeError, match=r"parameter 'weight'.*nn\.Parameter"):
        lin.weight = ag.zeros((2, 3), dtype=ag.float32)
    with pytest.raises(TypeError, match="parameter 'bias'"):
        lin.bias = nn.ReLU()  # a module over a parameter: torch refuses too
    assert [n for n, _ in lin.named_parameters()] == ["weight", "bias"]
    # what torch allows: a Parameter (also a frozen one), or None
    lin.weight = nn.Parameter(ag.zeros((2, 3), dtype=ag.float32), requires_grad=False)
    tlin.weight = tnn.Parameter(torch.zeros(2, 3), requires_grad=False)
    lin.bias = None
    tlin.bias = None
    assert [n for n, _ in lin.named_parameters()] == [n for n, _ in tlin.named_parameters()]
    assert lin.state_dict().keys() == tlin.state_dict().keys()
    # a leaf that requires grad is a parameter (agnograd's rule), so it may replace one
    lin.weight = ag.ones((2, 3), dtype=ag.float32).requires_grad_()
    assert [n for n, _ in lin.named_parameters()] == ["weight"]
    # del, then anything goes (torch: the same)
    del lin.weight
    lin.weight = ag.zeros((2, 3))
    assert lin.parameters() == [] and [n for n, _ in lin.named_buffers()] == ["weight"]


def test_a_non_leaf_over_a_parameter_raises():
    m = nn.Linear(2, 2, seed=0)
    with pytest.raises(TypeError, match="parameter 'weight'"):
        m.weight = m.weight * 2  # torch: TypeError (a non-leaf is not a Parameter)
    assert m.weight.is_leaf and [n for n, _ in m.named_parameters()] == ["weight", "bias"]


def test_parameter_flags_and_registration():
    for rg in (True, False):
        p = nn.Parameter(ag.ones((2,)), requires_grad=rg)
        tp = tnn.Parameter(torch.ones(2), requires_grad=rg)
        assert p.requires_grad == tp.requires_grad and p.is_leaf
        m, tm = nn.Module(), tnn.Module()
        m.p, tm.p = p, tp
        assert [n for n, _ in m.named_parameters()] == [n for n, _ in tm.named_parameters()]
        assert m.buffers() == [] and list(tm.buffers()) == []


def test_register_parameter_and_add_module_as_torch():
    m, tm = nn.Module(), tnn.Module()
    m.register_parameter("w", nn.Parameter(ag.ones((2,))))
    tm.register_parameter("w", tnn.Parameter(torch.ones(2)))
    m.register_parameter("none", None)
    tm.register_parameter("none", None)
    m.add_module("fc", nn.Linear(2, 3, seed=0))
    tm.add_module("fc", tnn.Linear(2, 3))
    m.register_module("act", nn.ReLU())
    tm.register_module("act", tnn.ReLU())
    assert sorted(m.state_dict()) == sorted(tm.state_dict())
    assert m.none is None and tm.none is None
    assert isinstance(m.fc, nn.Linear) and [n for n, _ in m.named_children()] == ["fc", "act"]
    with pytest.raises(TypeError, match=r"nn\.Parameter"):
        m.register_parameter("x", ag.ones((2,)))  # a plain tensor: torch's TypeError
    with pytest.raises(TypeError):
        tm.register_parameter("x", torch.ones(2))
    with pytest.raises(KeyError, match="'.'"):
        m.register_parameter("a.b", nn.Parameter(ag.ones((1,))))
    with pytest.raises(KeyError, match="'.'"):
        m.add_module("a.b", nn.ReLU())
    with pytest.raises(TypeError, match="not a Module"):
        m.add_module("y", ag.ones((1,)))
    with pytest.raises(KeyError, match="already exists"):
        m.add_module("w", nn.ReLU())  # w is a parameter
    with pytest.raises(KeyError, match="already exists"):
        m.register_parameter("fc", nn.Parameter(ag.ones((1,))))  # fc is a module
    with pytest.raises(KeyError, match="method"):
        m.add_module("forward", nn.ReLU())


def test_buffers_persistent_and_not_as_torch():
    class Ours(nn.Module):
        def __init__(self):
            self.register_buffer("kept", ag.zeros((2,), dtype=ag.float32))
            self.register_buffer("scratch", ag.ones((3,), dtype=ag.float32), persistent=False)
            self.inner = nn.BatchNorm1d(2)

    class Theirs(tnn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("kept", torch.zeros(2))
            self.register_buffer("scratch", torch.ones(3), persistent=False)
            self.inner = tnn.BatchNorm1d(2)

    m, tm = Ours(), Theirs()
    assert [n for n, _ in m.named_buffers()] == [n for n, _ in tm.named_buffers()]
    assert len(m.buffers()) == len(list(tm.buffers())) == 5
    assert list(m.state_dict()) == [k for k in tm.state_dict() if k.startswith(("kept",))] + [
        k for k in tm.state_dict() if k.startswith("inner")]
    assert "scratch" not in m.state_dict() and "scratch" not in tm.state_dict()
    m.astype(ag.float64)
    assert m.scratch.dtype == ag.float64 and m.kept.dtype == ag.float64  # moved too
    m.load_state_dict(tm.state_dict())  # torch's state (no scratch) loads strictly


# -- traversal ---------------------------------------------------------------------------------

class _Ours(nn.Module):
    def __init__(self):
        self.encoder = nn.Sequential(nn.Linear(3, 4, seed=0), nn.ReLU(), nn.Linear(4, 4, seed=1))
        self.heads = nn.ModuleList([nn.Linear(4, 2, seed=2), nn.Linear(4, 2, seed=3)])
        self.named = nn.ModuleDict({"cls": nn.Linear(4, 5, seed=4), "norm": nn.LayerNorm(4)})
        self.tied = nn.Linear(4, 4, seed=5)
        self.tied.weight = self.encoder[2].weight  # one parameter in two modules
        self.shared = self.heads[0]  # one module in two places


class _Theirs(tnn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = tnn.Sequential(tnn.Linear(3, 4), tnn.ReLU(), tnn.Linear(4, 4))
        self.heads = tnn.ModuleList([tnn.Linear(4, 2), tnn.Linear(4, 2)])
        self.named = tnn.ModuleDict({"cls": tnn.Linear(4, 5), "norm": tnn.LayerNorm(4)})
        self.tied = tnn.Linear(4, 4)
        self.tied.weight = self.encoder[2].weight
        self.shared = self.heads[0]


def test_state_dict_keys_equal_torchs_for_nested_containers_ties_and_shared_modules():
    """Regression: an nn.Sequential's keys were 'layers.0.weight' (torch: '0.weight'), and a
    tied tensor or a shared module's tensors appeared under one name only (torch: every
    name), so a torch state dict needed renaming and strict=False loads silently skipped."""
    m, tm = _Ours(), _Theirs()
    assert list(m.state_dict()) == list(tm.state_dict())
    seq, tseq = m.encoder, tm.encoder
    assert list(seq.state_dict()) == list(tseq.state_dict()) == ["0.weight", "0.bias",
                                                                 "2.weight", "2.bias"]
    assert m.state_dict()["tied.weight"] is not None
    np.testing.assert_array_equal(_np(m.state_dict()["tied.weight"]), _np(m.encoder[2].weight))
    # torch's state dict loads as it is, strict, and the models then compute the same
    assert m.load_state_dict(tm.state_dict()) == ([], [])
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    got = m.named["cls"](m.tied(m.encoder(ag.tensor(x))))
    want = tm.named["cls"](tm.tied(tm.encoder(torch.tensor(x))))
    np.testing.assert_allclose(_np(got), want.detach().numpy(), rtol=1e-5, atol=1e-6)
    # and ours into torch's
    tm2 = _Theirs()
    tm2.load_state_dict({k: torch.tensor(_np(v)) for k, v in m.state_dict().items()})


def test_named_parameters_and_modules_arguments_as_torch():
    m, tm = _Ours(), _Theirs()
    for kw in ({}, {"prefix": "model"}, {"remove_duplicate": False}, {"recurse": False}):
        assert [n for n, _ in m.named_parameters(**kw)] == [n for n, _ in tm.named_parameters(**kw)], kw
    for kw in ({}, {"prefix": "model"}, {"remove_duplicate": False}):
        assert [n for n, _ in m.named_modules(**kw)] == [n for n, _ in tm.named_modules(**kw)], kw
    assert len(m.parameters()) == len(list(tm.parameters()))  # the tied one once
    assert len(m.modules()) == len(list(tm.modules()))
    assert [n for n, _ in m.named_children()] == [n for n, _ in tm.named_children()]
    assert [type(c).__name__ for c in m.children()] == [type(c).__name__ for c in tm.children()]
    assert m.encoder.parameters(recurse=False) == [] == list(tm.encoder.parameters(recurse=False))
    memo = {m.heads}
    names = [n for n, _ in m.named_modules(memo=memo)]
    tnames = [n for n, _ in tm.named_modules(memo={tm.heads})]
    assert names == tnames and m.encoder in memo
    assert m.get_submodule("encoder.2") is m.encoder[2]
    assert m.get_parameter("named.cls.bias") is m.named["cls"].bias
    with pytest.raises(AttributeError):
        m.get_submodule("encoder.7")


def test_own_tensors_and_buffers_with_recurse_false():
    class Ours(nn.Module):
        def __init__(self):
            self.scale = nn.Parameter(ag.ones((2,)))
            self.register_buffer("count", ag.zeros((), dtype=ag.int64))
            self.norm = nn.BatchNorm1d(2)

    class Theirs(tnn.Module):
        def __init__(self):
            super().__init__()
            self.scale = tnn.Parameter(torch.ones(2))
            self.register_buffer("count", torch.zeros((), dtype=torch.int64))
            self.norm = tnn.BatchNorm1d(2)

    m, tm = Ours(), Theirs()
    assert [n for n, _ in m.named_parameters(recurse=False)] == ["scale"]
    assert [n for n, _ in m.named_buffers(recurse=False)] == [
        n for n, _ in tm.named_buffers(recurse=False)] == ["count"]
    assert [n for n, _ in m.named_buffers(prefix="p")] == [n for n, _ in tm.named_buffers(prefix="p")]
    assert m.get_buffer("norm.running_mean") is m.norm.running_mean


def test_apply_train_eval_and_training_flag_propagate_as_torch():
    m, tm = _Ours(), _Theirs()
    seen, tseen = [], []
    m.apply(lambda mod: seen.append(type(mod).__name__))
    tm.apply(lambda mod: tseen.append(type(mod).__name__))
    assert seen == [n.replace("_Theirs", "_Ours") for n in tseen]  # children first
    assert m.eval() is m and all(not x.training for x in m.modules())
    m.encoder.train()
    assert m.encoder[0].training and not m.heads[0].training and not m.training
    m.train(False)
    assert not any(x.training for x in m.modules())
    with pytest.raises(ValueError):
        tm.train("False")
    with pytest.raises(ValueError, match="bool"):
        m.train("False")  # bool("False") is True: it would have trained
    assert not m.training


def test_requires_grad_false_then_training_leaves_frozen_parameters_alone():
    m = nn.Sequential(nn.Linear(3, 4, seed=0), nn.Tanh(), nn.Linear(4, 2, seed=1))
    tm = tnn.Sequential(tnn.Linear(3, 4), tnn.Tanh(), tnn.Linear(4, 2))
    _twin_linear(m, tm)
    m[0].requires_grad_(False)
    tm[0].requires_grad_(False)
    opt = optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    topt = torch.optim.SGD(tm.parameters(), lr=0.1, momentum=0.9)
    x = np.random.default_rng(1).standard_normal((6, 3)).astype(np.float32)
    y = np.random.default_rng(2).standard_normal((6, 2)).astype(np.float32)
    frozen = _np(m[0].weight).copy()
    for _ in range(3):
        opt.zero_grad()
        topt.zero_grad()
        F.mse_loss(m(ag.tensor(x)), ag.tensor(y)).backward()
        tnn.functional.mse_loss(tm(torch.tensor(x)), torch.tensor(y)).backward()
        assert m[0].weight.grad is None and tm[0].weight.grad is None
        opt.step()
        topt.step()
    np.testing.assert_array_equal(_np(m[0].weight), frozen)
    for (n, p), (tn, tp) in zip(m.named_parameters(), tm.named_parameters(), strict=True):
        assert n == tn
        np.testing.assert_allclose(_np(p), tp.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_zero_grad_both_ways_as_torch():
    m, tm = nn.Linear(3, 2, seed=0), tnn.Linear(3, 2)
    ag.sum(m(ag.ones((1, 3), dtype=ag.float32))).backward()
    tm(torch.ones(1, 3)).sum().backward()
    m.zero_grad(set_to_none=False)
    tm.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(_np(m.weight.grad), tm.weight.grad.numpy())
    m.zero_grad()
    tm.zero_grad()
    assert m.weight.grad is None and tm.weight.grad is None


def test_repr_names_layers_as_torch():
    m = nn.Sequential(nn.Linear(2, 3), nn.Sequential(nn.ReLU()))
    text = repr(m)
    assert "(0): Linear(in_features=2, out_features=3" in text
    assert "(1): Sequential(\n    (0): ReLU()\n  )" in text
    assert repr(nn.ModuleDict({"a": nn.ReLU()})) == "ModuleDict(\n  (a): ReLU()\n)"

    class Custom(nn.Module):
        def extra_repr(self):
            return "k=3"

    assert repr(Custom()) == "Custom(k=3)"


# -- load_state_dict ---------------------------------------------------------------------------

def test_load_state_dict_returns_incompatible_keys_as_torch():
    """Regression: load_state_dict returned the module, so torch code
    ``missing, unexpected = model.load_state_dict(sd, strict=False)`` unpacked a Sequential's
    layers (or raised) instead of the names that were not loaded."""
    m, tm = nn.Sequential(nn.Linear(2, 2, seed=0)), tnn.Sequential(tnn.Linear(2, 2))
    sd = {"0.weight": np.ones((2, 2), np.float32), "extra": np.zeros(1, np.float32)}
    missing, unexpected = m.load_state_dict(sd, strict=False)
    t_missing, t_unexpected = tm.load_state_dict({k: torch.tensor(v) for k, v in sd.items()},
                                                 strict=False)
    assert (missing, unexpected) == (t_missing, t_unexpected) == (["0.bias"], ["extra"])
    np.testing.assert_array_equal(_np(m[0].weight), 1.0)
    result = m.load_state_dict(m.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert repr(result) == "<All keys matched successfully>" == repr(tm.load_state_dict(tm.state_dict()))
    assert isinstance(result, nn.IncompatibleKeys)
    with pytest.raises(AttributeError, match="not the module"):  # chaining, agnograd's old habit
        m.load_state_dict(m.state_dict()).parameters()


def test_strict_errors_name_the_keys_and_shapes_and_change_nothing():
    m = nn.Sequential(nn.Linear(2, 3, seed=0), nn.LayerNorm(3))
    before = {k: _np(v).copy() for k, v in m.state_dict().items()}
    good = {k: np.full(v.shape, 7.0, np.float32) for k, v in before.items()}
    bad = dict(good)
    del bad["1.bias"]
    bad["2.weight"] = np.zeros(3, np.float32)
    with pytest.raises(nn.StateDictError) as err:
        m.load_state_dict(bad)
    assert "'1.bias'" in str(err.value) and "'2.weight'" in str(err.value)
    bad = dict(good)
    bad["0.weight"] = np.zeros((2, 3), np.float32)  # transposed
    with pytest.raises(nn.StateDictError, match=r"'0\.weight' has shape \(2, 3\).*\(3, 2\)"):
        m.load_state_dict(bad)
    with pytest.raises(nn.StateDictError, match="shape"):  # strict=False: still an error (torch)
        m.load_state_dict(bad, strict=False)
    bad = dict(good)
    bad["1.weight"] = np.array(["a", "b", "c"])  # unreadable: nothing is loaded
    with pytest.raises(nn.StateDictError):
        m.load_state_dict(bad)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(_np(v), before[k])
    with pytest.raises(NotImplementedError, match="assign"):
        m.load_state_dict(good, assign=True)


def test_load_from_numpy_torch_and_old_sequential_names(tmp_path):
    """Names saved before Sequential named its layers as torch (``layers.0.weight``) still
    load, also nested and through save/load files."""
    m = nn.Sequential(nn.Linear(2, 3, seed=0), nn.Sequential(nn.ReLU(), nn.Linear(3, 1, seed=1)))
    tm = tnn.Sequential(tnn.Linear(2, 3), tnn.Sequential(tnn.ReLU(), tnn.Linear(3, 1)))
    m.load_state_dict(tm.state_dict())  # torch tensors
    np.testing.assert_array_equal(_np(m[1][1].weight), tm[1][1].weight.detach().numpy())
    old = {"layers.0.weight": np.ones((3, 2), np.float32), "layers.0.bias": np.ones(3, np.float32),
           "layers.1.layers.1.weight": np.full((1, 3), 2.0, np.float32),
           "layers.1.layers.1.bias": np.zeros(1, np.float32)}
    assert m.load_state_dict(old) == ([], [])
    np.testing.assert_array_equal(_np(m[1][1].weight), 2.0)
    np.savez(tmp_path / "old.npz", **old, __agnograd_format__=np.array(2))
    other = nn.Sequential(nn.Linear(2, 3, seed=5), nn.Sequential(nn.ReLU(), nn.Linear(3, 1, seed=6)))
    assert other.load(tmp_path / "old.npz") is other
    np.testing.assert_array_equal(_np(other[0].weight), 1.0)


def test_layers_view_of_a_sequential_writes_through():
    s = nn.Sequential(nn.Linear(2, 2, seed=0), nn.Tanh())
    spare = nn.Linear(2, 2, seed=1)
    s.layers[0] = spare
    assert s[0] is spare and len(s.layers) == 2 and list(s.layers) == list(s)
    del s.layers[1]
    assert len(s) == 1 and s.layers == [spare]


# -- containers --------------------------------------------------------------------------------

def _kinds(seq):
    return [type(x).__name__ for x in seq]


def test_sequential_methods_as_torch():
    def pair():
        return (nn.Sequential(nn.Linear(2, 3, seed=0), nn.ReLU(), nn.Linear(3, 1, seed=1)),
                tnn.Sequential(tnn.Linear(2, 3), tnn.ReLU(), tnn.Linear(3, 1)))

    s, ts = pair()
    assert len(s) == len(ts) and _kinds(s) == _kinds(ts)
    assert isinstance(s[1:], nn.Sequential) and _kinds(s[1:]) == _kinds(ts[1:])
    assert list(s[1:].state_dict()) == list(ts[1:].state_dict())  # the names are kept
    assert s[-1] is s[2]
    s.append(nn.Tanh())
    ts.append(tnn.Tanh())
    s.insert(1, nn.Sigmoid())
    ts.insert(1, tnn.Sigmoid())
    s.extend([nn.ReLU()])
    ts.extend([tnn.ReLU()])
    assert _kinds(s) == _kinds(ts) and list(s.state_dict()) == list(ts.state_dict())
    del s[0]
    del ts[0]
    assert list(s.state_dict()) == list(ts.state_dict())
    assert type(s.pop(0)).__name__ == type(ts.pop(0)).__name__
    s[0] = nn.Linear(3, 1, seed=2)
    ts[0] = tnn.Linear(3, 1)
    assert _kinds(s) == _kinds(ts) and list(s.state_dict()) == list(ts.state_dict())
    a, b = pair()
    assert _kinds(a + a) == _kinds(b + b) and list((a + a).state_dict()) == list((b + b).state_dict())
    assert _kinds(a * 2) == _kinds(b * 2)
    with pytest.raises(IndexError):
        a[3]
    with pytest.raises(IndexError):
        b[3]
    named = nn.Sequential(OrderedDict([("fc", nn.Linear(2, 2, seed=0)), ("act", nn.ReLU())]))
    tnamed = tnn.Sequential(OrderedDict([("fc", tnn.Linear(2, 2)), ("act", tnn.ReLU())]))
    assert list(named.state_dict()) == list(tnamed.state_dict()) == ["fc.weight", "fc.bias"]
    assert named.fc is named[0]


def test_sequential_computes_as_torch_and_its_entries_train():
    s, ts = (nn.Sequential(nn.Linear(3, 4, seed=0), nn.Tanh(), nn.Linear(4, 2, seed=1)),
             tnn.Sequential(tnn.Linear(3, 4), tnn.Tanh(), tnn.Linear(4, 2)))
    s.load_state_dict(ts.state_dict())
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    out, tout = s(ag.tensor(x)), ts(torch.tensor(x))
    np.testing.assert_allclose(_np(out), tout.detach().numpy(), rtol=1e-5, atol=1e-6)
    ag.sum(out * out).backward()
    (tout * tout).sum().backward()
    for (n, p), (tn, tp) in zip(s.named_parameters(), ts.named_parameters(), strict=True):
        assert n == tn
        np.testing.assert_allclose(_np(p.grad), tp.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_module_list_methods_as_torch():
    ml = nn.ModuleList([nn.Linear(2, 2, seed=0), nn.ReLU()])
    tml = tnn.ModuleList([tnn.Linear(2, 2), tnn.ReLU()])
    ml.append(nn.Tanh())
    tml.append(tnn.Tanh())
    ml.insert(0, nn.Linear(2, 2, seed=1))
    tml.insert(0, tnn.Linear(2, 2))
    ml.extend([nn.Sigmoid()])
    tml.extend([tnn.Sigmoid()])
    assert _kinds(ml) == _kinds(tml) and list(ml.state_dict()) == list(tml.state_dict())
    del ml[1]
    del tml[1]
    assert list(ml.state_dict()) == list(tml.state_dict())
    assert type(ml.pop(1)).__name__ == type(tml.pop(1)).__name__
    assert isinstance(ml[0:2], nn.ModuleList) and _kinds(ml[0:2]) == _kinds(tml[0:2])
    both = ml + nn.ModuleList([nn.ReLU()])
    tboth = tml + tnn.ModuleList([tnn.ReLU()])
    assert _kinds(both) == _kinds(tboth)
    ml += [nn.ReLU()]
    tml += [tnn.ReLU()]
    assert _kinds(ml) == _kinds(tml)


def test_module_dict_methods_as_torch():
    md = nn.ModuleDict({"a": nn.Linear(2, 2, seed=0), "b": nn.ReLU()})
    tmd = tnn.ModuleDict({"a": tnn.Linear(2, 2), "b": tnn.ReLU()})
    md.update({"c": nn.Linear(2, 1, seed=1)})
    tmd.update({"c": tnn.Linear(2, 1)})
    assert list(md.keys()) == list(tmd.keys()) and list(md.state_dict()) == list(tmd.state_dict())
    assert type(md.pop("a")).__name__ == type(tmd.pop("a")).__name__
    assert list(md.keys()) == list(tmd.keys()) == ["b", "c"] and "a" not in md
    assert [k for k, _ in md.items()] == [k for k, _ in tmd.items()]
    md.clear()
    tmd.clear()
    assert len(md) == len(tmd) == 0 and md.state_dict() == {}


def test_parameter_list_and_dict_as_torch():
    pl = nn.ParameterList([ag.ones((2,)), nn.Parameter(ag.zeros((3,)), requires_grad=False)])
    tpl = tnn.ParameterList([torch.ones(2), tnn.Parameter(torch.zeros(3), requires_grad=False)])
    assert [n for n, _ in pl.named_parameters()] == [n for n, _ in tpl.named_parameters()]
    assert [p.requires_grad for p in pl] == [p.requires_grad for p in tpl] == [True, False]
    pl.append(ag.ones((1,)))
    tpl.append(torch.ones(1))
    assert list(pl.state_dict()) == list(tpl.state_dict()) and len(pl) == len(tpl) == 3
    pd = nn.ParameterDict({"a": ag.ones((2,)), "b": ag.zeros((1,))})
    tpd = tnn.ParameterDict({"a": torch.ones(2), "b": torch.zeros(1)})
    assert list(pd.state_dict()) == list(tpd.state_dict())
    assert pd["a"].requires_grad and isinstance(pd["a"], nn.Parameter)

    class Holder(nn.Module):
        def __init__(self):
            self.scales = nn.ParameterDict({"x": ag.ones((2,))})
            self.biases = nn.ParameterList([ag.zeros((2,))])

        def forward(self, v):
            return v * self.scales["x"] + self.biases[0]

    h = Holder()
    assert [n for n, _ in h.named_parameters()] == ["scales.x", "biases.0"]
    opt = optim.SGD(h.parameters(), lr=0.5)
    ag.sum(h(ag.ones((2,)))).backward()
    opt.step()
    np.testing.assert_allclose(_np(h.scales["x"]), 0.5)
    assert pd.pop("a") is not None and list(pd.keys()) == ["b"]


# -- module operations through the engine's layers ---------------------------------------------

def _step_model(dropout=0.0):
    layers = [nn.Linear(3, 6, seed=0), nn.Tanh()]
    if dropout:  # its own generator: the eager and the compiled twin draw the same masks
        layers.append(nn.Dropout(dropout, generator=ag.random.Generator(0)))
    layers += [nn.Linear(6, 2, seed=1)]
    return nn.Sequential(*layers)


X = np.random.default_rng(3).standard_normal((8, 3)).astype(np.float32)
Y = np.random.default_rng(4).standard_normal((8, 2)).astype(np.float32)


@pytest.mark.parametrize("mode", ["jit", "capture"])
def test_compiled_step_sees_load_state_dict_freezing_and_eval(mode):
    """A replay after load_state_dict, requires_grad_(False) on a layer, eval() of a dropout
    model, a replaced layer: each gives the eager run's numbers."""
    def make():
        m = _step_model(dropout=0.5)
        opt = optim.SGD(m.parameters(), lr=0.1, capturable=True)

        def step(x, y):
            opt.zero_grad()
            loss = F.mse_loss(m(x), y)
            loss.backward()
            opt.step()
            return loss
        return m, step

    x, y = ag.tensor(X), ag.tensor(Y)
    (e, estep), (c, cstep) = make(), make()
    f = ag.jit(cstep) if mode == "jit" else ag.capture(cstep, x, y, warmup=1)
    if mode == "capture":  # recording ran two steps (warmup and the recorded one)
        estep(x, y)
        estep(x, y)

    def check():
        a, b = estep(x, y), f(x, y)
        np.testing.assert_array_equal(_np(a), _np(b))
        for p, q in zip(e.parameters(), c.parameters(), strict=True):
            np.testing.assert_array_equal(_np(p), _np(q))

    for _ in range(2):
        check()
    new = {k: np.full(v.shape, 0.1, np.float32) for k, v in e.state_dict().items()}
    e.load_state_dict(new)
    c.load_state_dict(new)
    check()
    for m in (e, c):
        m[0].requires_grad_(False)
    frozen = _np(c[0].weight).copy()
    check()
    check()
    np.testing.assert_array_equal(_np(c[0].weight), frozen)  # untouched by the replays
    assert c[0].weight.grad is None
    for m in (e, c):  # unfrozen again, re-initialised in place, set from a vector
        m[0].requires_grad_(True)
        nn.init.xavier_uniform_(m[3].weight, generator=ag.random.Generator(4))
        vec = nn.utils.parameters_to_vector(m.parameters()).detach()
        nn.utils.vector_to_parameters(vec * 0.5, m.parameters())
    check()
    assert not np.array_equal(_np(c[0].weight), frozen)
    for m in (e, c):
        m.eval()
    check()
    for m in (e, c):
        m[3] = nn.Linear(6, 2, seed=9)
    check()


def test_compiled_forward_sees_astype_and_batchnorm_eval():
    m = nn.Sequential(nn.Linear(3, 4, seed=0), nn.BatchNorm1d(4))

    def fwd(x):
        with ag.no_grad():
            return m(x) * 1.0

    f = ag.jit(fwd)
    for _ in range(3):
        f(ag.tensor(X))
    m.eval()
    np.testing.assert_array_equal(_np(f(ag.tensor(X))), _np(fwd(ag.tensor(X))))
    m.astype(ag.float64)
    x64 = ag.tensor(X.astype(np.float64))
    got = f(x64)
    assert got.dtype == ag.float64
    np.testing.assert_array_equal(_np(got), _np(fwd(x64)))


def test_functional_call_matches_torch_func():
    m, tm = nn.Sequential(nn.Linear(3, 4, seed=0), nn.Tanh(), nn.Linear(4, 2, seed=1)), \
        tnn.Sequential(tnn.Linear(3, 4), tnn.Tanh(), tnn.Linear(4, 2))
    m.load_state_dict(tm.state_dict())
    rng = np.random.default_rng(7)
    new = {"0.weight": rng.standard_normal((4, 3)).astype(np.float32),
           "2.bias": rng.standard_normal(2).astype(np.float32)}
    got = nn.functional_call(m, {k: ag.tensor(v) for k, v in new.items()}, ag.tensor(X))
    want = torch.func.functional_call(tm, {k: torch.tensor(v) for k, v in new.items()},
                                      (torch.tensor(X),))
    np.testing.assert_allclose(_np(got), want.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(_np(m[0].weight), tm[0].weight.detach().numpy())  # restored
    # per-example gradients: vmap over grad of a functional call, as torch.func
    params = {k: v.detach() for k, v in m.named_parameters()}
    tparams = {k: v.detach() for k, v in tm.named_parameters()}

    def loss(p, x, y):
        return ag.sum((nn.functional_call(m, p, x) - y) ** 2)

    def tloss(p, x, y):
        return ((torch.func.functional_call(tm, p, (x,)) - y) ** 2).sum()

    g = ag.vmap(ag.grad(loss), in_axes=(None, 0, 0))(params, ag.tensor(X), ag.tensor(Y))
    tg = torch.func.vmap(torch.func.grad(tloss), in_dims=(None, 0, 0))(
        tparams, torch.tensor(X), torch.tensor(Y))
    for k in tparams:
        np.testing.assert_allclose(_np(g[k]), tg[k].numpy(), rtol=1e-4, atol=1e-5)


def test_deepcopy_and_pickle_are_independent():
    m = _Ours()
    for twin in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        assert list(twin.state_dict()) == list(m.state_dict())
        assert twin.tied.weight is twin.encoder[2].weight and twin.shared is twin.heads[0]
        with ag.no_grad():
            twin.encoder[0].weight[...] = 5.0
        assert not np.any(_np(m.encoder[0].weight) == 5.0)
        assert len(twin.parameters()) == len(m.parameters())


# -- nn.init -----------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(7, 5), (8, 4, 3), (6, 3, 3, 2)])
def test_fans_match_torch(shape):
    w = ag.zeros(shape, dtype=ag.float32)
    assert nn.init._calculate_fan_in_and_fan_out(w) == \
        tnn.init._calculate_fan_in_and_fan_out(torch.zeros(shape))
    with pytest.raises(ValueError, match="fewer than 2"):
        nn.init._calculate_fan_in_and_fan_out(ag.zeros((3,)))


@pytest.mark.parametrize("name,kw", [
    ("kaiming_uniform_", {}), ("kaiming_uniform_", {"a": math.sqrt(5)}),
    ("kaiming_uniform_", {"mode": "fan_out", "nonlinearity": "relu"}),
    ("kaiming_normal_", {"mode": "fan_out", "nonlinearity": "relu"}),
    ("xavier_uniform_", {"gain": 2.0}), ("xavier_normal_", {}), ("uniform_", {"a": -2, "b": 3}),
    ("normal_", {"mean": 1.0, "std": 0.5}), ("trunc_normal_", {"std": 2.0, "a": -1, "b": 3}),
    ("orthogonal_", {}),
])
def test_init_distributions_match_torch(name, kw):
    """The in-place initialisers: PyTorch's names, arguments, fans (conv weights (out, in, k,
    k)) and distributions (bounds exact, moments within sampling error)."""
    shape = (64, 32, 3, 3)
    w = ag.zeros(shape, dtype=ag.float32).requires_grad_()
    assert getattr(nn.init, name)(w, **kw) is w and w.requires_grad and w.is_leaf
    t = getattr(tnn.init, name)(torch.zeros(shape), **kw)
    ours, theirs = _np(w).ravel(), t.numpy().ravel()
    if name in ("kaiming_uniform_", "xavier_uniform_", "uniform_", "trunc_normal_"):
        assert abs(ours.min() - theirs.min()) < 0.02 * (theirs.max() - theirs.min())
        assert abs(ours.max() - theirs.max()) < 0.02 * (theirs.max() - theirs.min())
    assert abs(ours.mean() - theirs.mean()) < 6 * theirs.std() / math.sqrt(ours.size)
    assert abs(ours.std() / theirs.std() - 1) < 0.02
    if name == "orthogonal_":
        q = _np(w).reshape(64, -1)
        np.testing.assert_allclose(q @ q.T, np.eye(64), atol=1e-4)


def test_init_gain_constants_reproducibility_and_apply():
    for nl, p in [("linear", None), ("conv2d", None), ("sigmoid", None), ("tanh", None),
                  ("relu", None), ("leaky_relu", None), ("leaky_relu", 0.2), ("selu", None)]:
        assert nn.init.calculate_gain(nl, p) == pytest.approx(tnn.init.calculate_gain(nl, p))
    with pytest.raises(ValueError, match="unsupported nonlinearity"):
        nn.init.calculate_gain("swish")
    w = ag.zeros((3, 4), dtype=ag.float64)
    np.testing.assert_array_equal(_np(nn.init.constant_(w, 0.3)), 0.3)
    np.testing.assert_array_equal(_np(nn.init.ones_(w)), 1.0)
    np.testing.assert_array_equal(_np(nn.init.zeros_(w)), 0.0)
    np.testing.assert_array_equal(_np(nn.init.eye_(w)), tnn.init.eye_(torch.zeros(3, 4)).numpy())
    ag.manual_seed(3)
    a = _np(nn.init.kaiming_uniform_(ag.zeros((5, 5), dtype=ag.float32))).copy()
    ag.manual_seed(3)
    b = _np(nn.init.kaiming_uniform_(ag.zeros((5, 5), dtype=ag.float32)))
    np.testing.assert_array_equal(a, b)
    g = ag.random.Generator(1)
    c = _np(nn.init.normal_(ag.zeros((5,), dtype=ag.float32), generator=g)).copy()
    np.testing.assert_array_equal(c, _np(nn.init.normal_(ag.zeros((5,), dtype=ag.float32),
                                                         generator=ag.random.Generator(1))))

    def reinit(mod):  # the PyTorch idiom
        if isinstance(mod, nn.Linear):
            nn.init.xavier_uniform_(mod.weight)
            nn.init.zeros_(mod.bias)

    m = nn.Sequential(nn.Linear(4, 300, seed=0), nn.ReLU(), nn.Linear(300, 2, seed=1)).apply(reinit)
    bound = math.sqrt(6 / (4 + 300))
    w0 = _np(m[0].weight)
    assert w0.max() <= bound and w0.min() >= -bound and w0.max() > 0.9 * bound
    assert np.all(_np(m[2].bias) == 0) and m[0].weight.requires_grad
    with pytest.raises(TypeError, match="floating"):
        nn.init.uniform_(ag.zeros((2,), dtype=ag.int64))


# -- nn.utils ----------------------------------------------------------------------------------

def _grads_pair(scale=1.0):
    rng = np.random.default_rng(11)
    arrays = [rng.standard_normal(s) * scale for s in [(3, 4), (4,), (2, 2, 2)]]
    ours = [ag.tensor(a, requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    for p, a in zip(ours, arrays, strict=True):
        p.grad = ag.tensor(a * 0.7)
    for p, a in zip(theirs, arrays, strict=True):
        p.grad = torch.tensor(a * 0.7)
    return ours, theirs


@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf, 3.0])
@pytest.mark.parametrize("max_norm", [0.1, 100.0])
def test_clip_grad_norm_matches_torch(norm_type, max_norm):
    ours, theirs = _grads_pair()
    total = nn.utils.clip_grad_norm_(ours, max_norm, norm_type=norm_type)
    ttotal = tnn.utils.clip_grad_norm_(theirs, max_norm, norm_type=norm_type)
    np.testing.assert_allclose(float(total), float(ttotal), rtol=1e-12)
    for p, tp in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(_np(p.grad), tp.grad.numpy(), rtol=1e-12)


def test_clip_grad_norm_nonfinite_and_clip_value_as_torch():
    ours, theirs = _grads_pair()
    ours[1].grad = ag.tensor([np.inf, 0.0, 0.0, 0.0])
    theirs[1].grad = torch.tensor([np.inf, 0.0, 0.0, 0.0], dtype=torch.float64)
    with pytest.raises(RuntimeError, match="non-finite|nonfinite|inf"):
        tnn.utils.clip_grad_norm_(theirs, 1.0, error_if_nonfinite=True)
    before = _np(ours[0].grad).copy()
    with pytest.raises(RuntimeError, match="error_if_nonfinite"):
        nn.utils.clip_grad_norm_(ours, 1.0, error_if_nonfinite=True)
    np.testing.assert_array_equal(_np(ours[0].grad), before)  # unchanged
    ours, theirs = _grads_pair(scale=3.0)
    nn.utils.clip_grad_value_(ours, 0.5)
    tnn.utils.clip_grad_value_(theirs, 0.5)
    for p, tp in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(_np(p.grad), tp.grad.numpy())


def test_parameters_to_vector_and_back_as_torch():
    m, tm = nn.Linear(3, 2, seed=0), tnn.Linear(3, 2)
    _twin_linear(m, tm)
    v = nn.utils.parameters_to_vector(m.parameters())
    tv = tnn.utils.parameters_to_vector(tm.parameters())
    np.testing.assert_array_equal(_np(v), tv.detach().numpy())
    assert v.requires_grad  # differentiable, as torch's
    ag.sum(v * v).backward()
    np.testing.assert_allclose(_np(m.weight.grad), 2 * _np(m.weight))
    new = np.arange(8, dtype=np.float32)
    nn.utils.vector_to_parameters(ag.tensor(new), m.parameters())
    tnn.utils.vector_to_parameters(torch.tensor(new), tm.parameters())
    for p, tp in zip(m.parameters(), tm.parameters(), strict=True):
        np.testing.assert_array_equal(_np(p), tp.detach().numpy())
    assert m.weight.is_leaf and m.weight.requires_grad
    with pytest.raises(ValueError, match="hold 8 values"):
        nn.utils.vector_to_parameters(ag.tensor(np.zeros(9, np.float32)), m.parameters())
    with pytest.raises(TypeError):
        nn.utils.vector_to_parameters(np.zeros(8), m.parameters())


def test_functional_call_reads_torchs_calling_form():
    """Regression: ``functional_call(m, params, (x,))`` -- PyTorch's form, a tuple of
    positional arguments -- called ``m((x,))``, which ran Linear on an array of shape
    (1, N, in): an output of the wrong shape, silently."""
    m, tm = nn.Linear(3, 2, seed=0), tnn.Linear(3, 2)
    _twin_linear(m, tm)
    w = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    want = torch.func.functional_call(tm, {"weight": torch.tensor(w)}, (torch.tensor(X),))
    for call in (lambda p: nn.functional_call(m, p, (ag.tensor(X),)),
                 lambda p: nn.functional_call(m, p, ag.tensor(X)),
                 lambda p: nn.functional_call(m, (p, {}), (ag.tensor(X),), {}),
                 lambda p: nn.functional_call(m, p, (ag.tensor(X),), kwargs={})):
        got = call({"weight": ag.tensor(w)})
        assert got.shape == tuple(want.shape) == (8, 2)
        np.testing.assert_allclose(_np(got), want.detach().numpy(), rtol=1e-5, atol=1e-6)

    class Scaled(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(ag.ones((3,)))

        def forward(self, x, scale=1.0):
            return x * self.w * scale

    s = Scaled()
    out = nn.functional_call(s, {"w": ag.full((3,), 2.0)}, (ag.ones((3,)),), {"scale": 3.0})
    np.testing.assert_array_equal(_np(out), 6.0)
    with pytest.raises(ValueError, match="more than one"):
        nn.functional_call(s, ({"w": ag.ones((3,))}, {"w": ag.ones((3,))}), ag.ones((3,)))


def test_a_modules_own_tensors_come_before_its_sub_modules_as_torch():
    """Regression: parameters and state dicts listed attributes in assignment order, so a
    parameter assigned after a sub-module (``self.cls_token`` after ``self.encoder``) came
    after the sub-module's: ``zip(model.parameters(), torch_model.parameters())`` paired the
    wrong tensors, and parameters_to_vector laid them out in another order than torch's."""
    class Ours(nn.Module):
        def __init__(self):
            self.encoder = nn.Linear(4, 4, seed=0)
            self.token = nn.Parameter(ag.zeros((4,)))
            self.blocks = nn.ModuleList([nn.LayerNorm(4)])
            self.register_buffer("pos", ag.zeros((4,)))
            self.gate = nn.Parameter(ag.ones((4,)))

    class Theirs(tnn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = tnn.Linear(4, 4)
            self.token = tnn.Parameter(torch.zeros(4))
            self.blocks = tnn.ModuleList([tnn.LayerNorm(4)])
            self.register_buffer("pos", torch.zeros(4))
            self.gate = tnn.Parameter(torch.ones(4))

    m, tm = Ours(), Theirs()
    assert [n for n, _ in m.named_parameters()] == [n for n, _ in tm.named_parameters()] == [
        "token", "gate", "encoder.weight", "encoder.bias", "blocks.0.weight", "blocks.0.bias"]
    assert list(m.state_dict()) == list(tm.state_dict())
    assert [n for n, _ in m.named_buffers()] == [n for n, _ in tm.named_buffers()]
    assert [n for n, _ in m.named_modules()] == [n for n, _ in tm.named_modules()]
    m.load_state_dict(tm.state_dict())
    np.testing.assert_array_equal(_np(nn.utils.parameters_to_vector(m.parameters())),
                                  tnn.utils.parameters_to_vector(tm.parameters()).detach().numpy())


def test_training_states_with_sequentials_old_names_still_load(tmp_path):
    """A training state written while Sequential named its layers ``layers.<i>`` (tensors and
    the Dropout layer's generator, ``module:layers.2``) loads into today's Sequential."""
    from agnograd.backends import host

    def make(seed):
        return nn.Sequential(nn.Linear(3, 4, seed=seed), nn.Tanh(), nn.Dropout(0.3, seed=seed),
                             nn.Linear(4, 2, seed=seed + 1))

    m = make(0)
    opt = optim.Adam(m.parameters(), lr=0.1)
    F.mse_loss(m(ag.tensor(X)), ag.tensor(Y)).backward()
    opt.step()
    nn.save_training_state(tmp_path / "new.npz", model=m, optimizer=opt, epoch=1)
    arrays, meta = host.load_checked_npz(str(tmp_path / "new.npz"))
    arrays = {(f"model/layers.{k[6:]}" if k.startswith("model/") else k): v
              for k, v in arrays.items()}
    meta["model"] = [f"layers.{k}" for k in meta["model"]]
    meta["rng"] = {(f"module:layers.{k[7:]}" if k.startswith("module:") else k): v
                   for k, v in meta["rng"].items()}
    assert "module:layers.2" in meta["rng"]
    host.save_checked_npz(str(tmp_path / "old.npz"), arrays, meta)
    other = make(5)
    opt2 = optim.Adam(other.parameters(), lr=0.1)
    assert nn.load_training_state(tmp_path / "old.npz", model=other, optimizer=opt2) == {"epoch": 1}
    for (n, a), (k, b) in zip(m.state_dict().items(), other.state_dict().items(), strict=True):
        assert n == k
        np.testing.assert_array_equal(_np(a), _np(b))
    np.testing.assert_array_equal(_np(m(ag.tensor(X))), _np(other(ag.tensor(X))))  # same masks


def test_double_float_and_foreach_as_torch():
    m = nn.Sequential(nn.Linear(2, 2, seed=0), nn.BatchNorm1d(2))
    assert m.double() is m and m[0].weight.dtype == ag.float64 and m[1].running_mean.dtype == ag.float64
    assert m[1].num_batches_tracked.dtype == ag.int64  # integers untouched, as torch
    assert m.float()[0].bias.dtype == ag.float32
    ours, theirs = _grads_pair()
    total = nn.utils.clip_grad_norm_(ours, 0.5, foreach=True)
    ttotal = tnn.utils.clip_grad_norm_(theirs, 0.5, foreach=True)
    np.testing.assert_allclose(float(total), float(ttotal), rtol=1e-12)
    nn.utils.clip_grad_value_(ours, 0.01, foreach=False)
    tnn.utils.clip_grad_value_(theirs, 0.01, foreach=False)
    for p, tp in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(_np(p.grad), tp.grad.numpy(), rtol=1e-12)


def test_torch_tensors_that_require_grad_load_as_torch_loads_them():
    """Regression: ``load_state_dict(dict(torch_model.named_parameters()))`` (or a
    ``state_dict(keep_vars=True)``) failed: a torch tensor that requires grad "cannot be read
    as an array"; torch loads it."""
    m, tm = nn.Sequential(nn.Linear(3, 2, seed=0)), tnn.Sequential(tnn.Linear(3, 2))
    assert m.load_state_dict(dict(tm.named_parameters())) == ([], [])
    np.testing.assert_array_equal(_np(m[0].weight), tm[0].weight.detach().numpy())
    m.load_state_dict(tm.state_dict(keep_vars=True))
    sd = m.state_dict(keep_vars=True)
    assert sd["0.weight"] is m[0].weight and sd["0.weight"].requires_grad
    assert list(m.state_dict(prefix="net.")) == list(tm.state_dict(prefix="net."))


def test_forward_hooks_as_torch():
    m, tm = nn.Sequential(nn.Linear(3, 4, seed=0), nn.ReLU(), nn.Linear(4, 2, seed=1)), \
        tnn.Sequential(tnn.Linear(3, 4), tnn.ReLU(), tnn.Linear(4, 2))
    m.load_state_dict(tm.state_dict())
    seen, tseen = [], []
    h = m[1].register_forward_hook(lambda mod, args, out: seen.append(_np(out)))
    th = tm[1].register_forward_hook(lambda mod, args, out: tseen.append(out.detach().numpy()))
    m[0].register_forward_pre_hook(lambda mod, args: (args[0] * 2,))
    tm[0].register_forward_pre_hook(lambda mod, args: (args[0] * 2,))
    m[2].register_forward_hook(lambda mod, args, kwargs, out: out + 1, with_kwargs=True)
    tm[2].register_forward_hook(lambda mod, args, kwargs, out: out + 1, with_kwargs=True)
    out, tout = m(ag.tensor(X)), tm(torch.tensor(X))
    np.testing.assert_allclose(_np(out), tout.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(seen[0], tseen[0], rtol=1e-5, atol=1e-6)
    h.remove()
    th.remove()
    m(ag.tensor(X))
    assert len(seen) == 1
    order = []
    m[2].register_forward_pre_hook(lambda mod, args: order.append("late"))
    m[2].register_forward_pre_hook(lambda mod, args: order.append("first"), prepend=True)
    m(ag.tensor(X))
    assert order == ["first", "late"]


def test_a_hook_added_after_compiling_is_not_skipped_by_replays():
    """A replay recorded without a hook that changes the output must record again."""
    m = nn.Sequential(nn.Linear(3, 2, seed=0))

    def fwd(x):
        with ag.no_grad():
            return m(x) * 1.0

    f = ag.jit(fwd)
    for _ in range(3):
        f(ag.tensor(X))
    with m[0].register_forward_hook(lambda mod, args, out: out * 0.0):
        np.testing.assert_array_equal(_np(f(ag.tensor(X))), 0.0)
        np.testing.assert_array_equal(_np(f(ag.tensor(X))), 0.0)
    np.testing.assert_array_equal(_np(f(ag.tensor(X))), _np(fwd(ag.tensor(X))))
    assert not np.all(_np(fwd(ag.tensor(X))) == 0.0)


def test_torchs_default_layer_initialisation_by_apply():
    """agnograd's layers draw Glorot by default (documented); PyTorch's defaults -- weights
    and biases U(±1/√fan_in), fan_in from its (out, in/groups, *kernel) layout -- follow from
    ``apply`` with nn.init, within the same bounds as torch's layers."""
    def torch_default(mod):
        if isinstance(mod, (nn.Linear, nn.Conv2d)):
            nn.init.kaiming_uniform_(mod.weight, a=math.sqrt(5))
            fan_in, _ = nn.init._calculate_fan_in_and_fan_out(mod.weight)
            nn.init.uniform_(mod.bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))

    m = nn.Sequential(nn.Conv2d(4, 64, 3, groups=2), nn.Flatten(), nn.Linear(64, 300))
    tm = tnn.Sequential(tnn.Conv2d(4, 64, 3, groups=2), tnn.Flatten(), tnn.Linear(64, 300))
    ag.manual_seed(0)
    m.apply(torch_default)
    for layer, tlayer in ((m[0], tm[0]), (m[2], tm[2])):
        fan_in, _ = tnn.init._calculate_fan_in_and_fan_out(tlayer.weight)
        bound = 1 / math.sqrt(fan_in)  # torch's bound for both (a=√5: √3·√(2/6)/√fan_in)
        for ours, theirs in ((layer.weight, tlayer.weight), (layer.bias, tlayer.bias)):
            a, b = np.abs(_np(ours)), np.abs(theirs.detach().numpy())
            assert a.shape == b.shape and b.max() <= bound * (1 + 1e-6)
            assert 0.8 * bound < a.max() <= bound * (1 + 1e-6)


def test_a_parameter_assigned_to_a_buffers_name_becomes_a_parameter_as_torch():
    """Regression: ``m.b = nn.Parameter(...)`` over a registered buffer kept it a buffer, so
    an optimizer never trained it; torch makes it a parameter. A tensor given to
    register_buffer stays a buffer even if it was a parameter (torch: the same)."""
    m, tm = nn.Module(), tnn.Module()
    m.register_buffer("b", ag.zeros((2,)))
    tm.register_buffer("b", torch.zeros(2))
    m.b = nn.Parameter(ag.ones((2,)))
    tm.b = tnn.Parameter(torch.ones(2))
    m.register_buffer("c", nn.Parameter(ag.ones((2,))))
    tm.register_buffer("c", tnn.Parameter(torch.ones(2)))
    assert [n for n, _ in m.named_parameters()] == [n for n, _ in tm.named_parameters()] == ["b"]
    assert [n for n, _ in m.named_buffers()] == [n for n, _ in tm.named_buffers()] == ["c"]
    m.b = ag.zeros((2,)).requires_grad_()  # a leaf requiring grad replaces the parameter
    assert [n for n, _ in m.named_parameters()] == ["b"]


def test_next_of_the_listings_works_as_on_torch_generators():
    """``next(model.parameters())`` -- the PyTorch idiom for a model's dtype or device -- and the
    same on ``named_parameters``, ``buffers``, ``modules``, ``children``; the results are still
    lists (``len``, indexing, reused by a ``for`` loop from the start)."""
    torch = pytest.importorskip("torch")
    m = nn.Sequential(nn.Linear(3, 4, seed=0), nn.Linear(4, 2, seed=1))
    tm = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    ps = m.parameters()
    assert next(ps) is ps[0] and next(ps) is ps[1] and len(ps) == 4
    assert [p.shape for p in ps] == [tuple(p.shape) for p in tm.parameters()]
    assert next(m.named_parameters())[0] == next(tm.named_parameters())[0] == "0.weight"
    assert next(m.modules()) is m and next(m.children()) is m[0]
    it = m.children()
    assert [next(it), next(it)] == [m[0], m[1]]
    with pytest.raises(StopIteration):
        next(it)


def test_zero_grad_without_set_to_none_zeroes_in_place():
    m = nn.Linear(3, 2, seed=0)
    ag.sum(m(ag.tensor(np.ones((4, 3), np.float32)))).backward()
    g = m.weight.grad
    m.zero_grad(set_to_none=False)
    assert m.weight.grad is g and not np.any(g.numpy())
    assert m.bias.grad is not None and not np.any(m.bias.grad.numpy())
    m.zero_grad()
    assert m.weight.grad is None
