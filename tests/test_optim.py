"""agnograd.optim: SGD, Adam and AdamW against hand-computed updates (and PyTorch where it is
installed), in-place updates, state on the parameters' backend, state_dict round trips."""

from __future__ import annotations

import numpy as np
import pytest

import agnograd as ag
from agnograd import nn, optim
from agnograd.nn import functional as F

from .conftest import CPU_BACKENDS

P0 = np.array([[0.5, -1.0], [2.0, 0.25]])
TARGET = np.array([[1.0, 0.0], [-1.0, 3.0]])


def _loss(p):
    """f(p) = Σ (p - T)² p₀₀ + Σ sin p: non-quadratic, so every step's gradient differs."""
    t = ag.tensor(TARGET, backend=p.backend, dtype=p.dtype)
    return ag.sum((p - t) ** 2) * (1.0 + 0.1 * p[0, 0]) + ag.sum(ag.sin(p))


def _grad_np(p):
    d = p - TARGET
    g = 2 * d * (1 + 0.1 * p[0, 0]) + np.cos(p)
    g[0, 0] += 0.1 * np.sum(d**2)
    return g


def _run(make, steps=5, backend="numpy", dtype=None):
    p = ag.tensor(P0.copy(), backend=backend, dtype=dtype, requires_grad=True)
    opt = make([p])
    for _ in range(steps):
        opt.zero_grad()
        _loss(p).backward()
        opt.step()
    return p, opt


def _sgd_ref(lr, momentum=0.0, nesterov=False, weight_decay=0.0, dampening=0.0, steps=5):
    p, buf = P0.copy(), None
    for _ in range(steps):
        g = _grad_np(p) + weight_decay * p
        if momentum:
            buf = g.copy() if buf is None else momentum * buf + (1 - dampening) * g
            g = g + momentum * buf if nesterov else buf
        p = p - lr * g
    return p


def _adam_ref(lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False, steps=5):
    p = P0.copy()
    m, v = np.zeros_like(p), np.zeros_like(p)
    b1, b2 = betas
    for t in range(1, steps + 1):
        g = _grad_np(p)
        if decoupled:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        mhat, vhat = m / (1 - b1**t), v / (1 - b2**t)
        p = p - lr * mhat / (np.sqrt(vhat) + eps)
    return p


CASES = [
    ("sgd", lambda ps: optim.SGD(ps, lr=0.05), lambda: _sgd_ref(0.05)),
    ("sgd-momentum", lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9),
     lambda: _sgd_ref(0.05, momentum=0.9)),
    ("sgd-nesterov-wd", lambda ps: optim.SGD(ps, lr=0.05, momentum=0.8, nesterov=True,
                                             weight_decay=0.1),
     lambda: _sgd_ref(0.05, momentum=0.8, nesterov=True, weight_decay=0.1)),
    ("sgd-dampening", lambda ps: optim.SGD(ps, lr=0.02, momentum=0.5, dampening=0.3),
     lambda: _sgd_ref(0.02, momentum=0.5, dampening=0.3)),
    ("adam", lambda ps: optim.Adam(ps, lr=0.1), lambda: _adam_ref(0.1)),
    ("adam-l2", lambda ps: optim.Adam(ps, lr=0.1, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.3),
     lambda: _adam_ref(0.1, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.3)),
    ("adamw", lambda ps: optim.AdamW(ps, lr=0.1, weight_decay=0.3),
     lambda: _adam_ref(0.1, weight_decay=0.3, decoupled=True)),
]


@pytest.mark.parametrize("name, make, ref", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_updates_match_hand_computed_ones(name, make, ref, backend):
    p, opt = _run(make, backend=backend)
    np.testing.assert_allclose(p.numpy(), ref(), rtol=1e-12, atol=1e-14)
    for state in opt.state.values():          # the state lives on the parameter's backend
        for v in state.values():
            if isinstance(v, ag.Tensor):
                assert v.backend == backend and v.dtype == p.dtype and not v.requires_grad


@pytest.mark.parametrize("name, make, ref", CASES, ids=[c[0] for c in CASES])
def test_updates_match_pytorch(name, make, ref):
    torch = pytest.importorskip("torch")
    kinds = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
    kind = name.split("-")[0]
    ours, opt = _run(make)
    group = {k: v for k, v in opt.param_groups[0].items() if k != "params"}
    t = torch.tensor(P0, requires_grad=True)
    topt = kinds[kind]([t], **group)
    T = torch.tensor(TARGET)
    for _ in range(5):
        topt.zero_grad()
        loss = ((t - T) ** 2).sum() * (1 + 0.1 * t[0, 0]) + torch.sin(t).sum()
        loss.backward()
        topt.step()
    np.testing.assert_allclose(ours.numpy(), t.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_adamw_differs_from_adam_with_l2():
    a, _ = _run(lambda ps: optim.Adam(ps, lr=0.1, weight_decay=0.3))
    w, _ = _run(lambda ps: optim.AdamW(ps, lr=0.1, weight_decay=0.3))
    assert not np.allclose(a.numpy(), w.numpy())
    assert optim.AdamW([ag.tensor([1.0], requires_grad=True)]).param_groups[0]["weight_decay"] == 0.01


def test_step_updates_in_place_without_recording():
    model = nn.Linear(3, 2, seed=0)
    params = model.parameters()
    ids = [id(p) for p in params]
    arrays = [p.data for p in params]
    opt = optim.SGD(params, lr=0.1, momentum=0.9)
    loss = ag.sum(model(ag.ones((4, 3), dtype=ag.float32)) ** 2)
    loss.backward()
    opt.step()
    assert [id(p) for p in model.parameters()] == ids                # same Tensors
    assert all(p.data is a for p, a in zip(model.parameters(), arrays))  # same arrays (NumPy)
    assert all(p.is_leaf and p.requires_grad for p in model.parameters())
    opt.zero_grad()
    assert all(p.grad is None for p in params)


def test_parameters_without_gradient_are_skipped():
    a = ag.tensor([1.0, 2.0], requires_grad=True)
    b = ag.tensor([3.0], requires_grad=True)
    opt = optim.Adam([a, b], lr=0.1)
    ag.sum(a * a).backward()
    opt.step()
    assert b.numpy().tolist() == [3.0] and id(b) not in opt.state
    assert opt.state[id(a)]["step"] == 1


def test_param_groups_have_their_own_hyperparameters():
    a = ag.tensor([1.0], requires_grad=True)
    b = ag.tensor([1.0], requires_grad=True)
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1)
    ag.sum(a + b).backward()
    opt.step()
    assert a.item() == pytest.approx(0.9) and b.item() == pytest.approx(0.5)
    opt.param_groups[0]["lr"] = 1.0                      # a schedule edits the groups
    opt.step()
    assert a.item() == pytest.approx(-0.1)


@pytest.mark.parametrize("make, message", [
    (lambda: optim.SGD([], lr=0.1), "empty"),
    (lambda: optim.SGD([ag.tensor([1.0], requires_grad=True) * 2], lr=0.1), "leaf"),
    (lambda: optim.SGD([np.ones(2)], lr=0.1), "only optimise Tensors"),
    (lambda: optim.SGD([ag.tensor([1.0], requires_grad=True)], lr=-1.0), "lr must be"),
    (lambda: optim.SGD([ag.tensor([1.0], requires_grad=True)], lr=0.1, nesterov=True), "Nesterov"),
    (lambda: optim.Adam([ag.tensor([1.0], requires_grad=True)], betas=(1.0, 0.9)), "betas"),
    (lambda: optim.Adam([{"params": [ag.tensor([1.0], requires_grad=True)], "momentum": 0.9}]),
     "unknown option 'momentum'"),
])
def test_bad_arguments(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()
    p = ag.tensor([1.0], requires_grad=True)
    with pytest.raises(ValueError, match="twice"):
        optim.SGD([p, p], lr=0.1)


@pytest.mark.parametrize("kind", ["sgd", "adam", "adamw"])
def test_state_dict_round_trip_continues_identically(kind):
    make = {"sgd": lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9),
            "adam": lambda ps: optim.Adam(ps, lr=0.05),
            "adamw": lambda ps: optim.AdamW(ps, lr=0.05)}[kind]
    model = nn.MLP([3, 4, 2], seed=0, dtype=ag.float64)
    x = ag.tensor(np.random.default_rng(0).normal(size=(5, 3)))
    y = ag.tensor([0, 1, 1, 0, 1])

    def step(m, opt):
        opt.zero_grad()
        F.cross_entropy(m(x), y).backward()
        opt.step()

    opt = make(model.parameters())
    for _ in range(3):
        step(model, opt)
    sd_model = {k: ag.asarray(v, copy=True) for k, v in model.state_dict().items()}
    sd_opt = opt.state_dict()
    assert set(sd_opt) == {"state", "param_groups"} and sorted(sd_opt["state"]) == list(range(4))
    # A second model and optimizer restored from the state dicts (moved through another
    # backend, as a checkpoint might be) take exactly the same next steps.
    clone = nn.MLP([3, 4, 2], seed=99, dtype=ag.float64)
    clone.load_state_dict(sd_model)
    opt2 = make(clone.parameters())
    strict_sd = {"param_groups": sd_opt["param_groups"],
                 "state": {i: {k: ag.to_backend(v, "array_api_strict") if isinstance(v, ag.Tensor)
                               else v for k, v in s.items()} for i, s in sd_opt["state"].items()}}
    opt2.load_state_dict(strict_sd)
    assert all(v.backend == "numpy" for s in opt2.state.values() for v in s.values()
               if isinstance(v, ag.Tensor))
    for _ in range(2):
        step(model, opt)
        step(clone, opt2)
    for (n, a), (_, b) in zip(model.named_parameters(), clone.named_parameters()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=n)


def test_load_state_dict_mismatch_changes_nothing():
    p = ag.tensor(P0.copy(), requires_grad=True)
    opt = optim.Adam([p], lr=0.1)
    _loss(p).backward()
    opt.step()
    before = {k: (v.numpy().copy() if isinstance(v, ag.Tensor) else v)
              for k, v in opt.state[id(p)].items()}
    bad_shape = {"param_groups": opt.state_dict()["param_groups"],
                 "state": {0: {"step": 9, "exp_avg": np.zeros(3), "exp_avg_sq": np.zeros((2, 2))}}}
    with pytest.raises(ValueError, match="shape"):
        opt.load_state_dict(bad_shape)
    with pytest.raises(ValueError, match="group"):
        opt.load_state_dict({"param_groups": [], "state": {}})
    with pytest.raises(ValueError, match="parameters"):
        optim.Adam([ag.tensor([1.0], requires_grad=True), ag.tensor([1.0], requires_grad=True)]
                   ).load_state_dict(opt.state_dict())
    after = opt.state[id(p)]
    assert after["step"] == before["step"] == 1
    np.testing.assert_array_equal(after["exp_avg"].numpy(), before["exp_avg"])


@pytest.mark.parametrize("kind", ["sgd", "adam", "adamw"])
def test_a_small_network_learns_xor(kind):
    x = ag.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    y = ag.tensor([0, 1, 1, 0])
    model = nn.MLP([2, 8, 2], activation="tanh", seed=1, dtype=ag.float64)
    opt = {"sgd": optim.SGD(model.parameters(), lr=0.5, momentum=0.9),
           "adam": optim.Adam(model.parameters(), lr=0.05),
           "adamw": optim.AdamW(model.parameters(), lr=0.05)}[kind]
    for _ in range(200):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    assert loss.item() < 0.05
    assert ag.argmax(model(x), axis=1).numpy().tolist() == [0, 1, 1, 0]


# -- issue 25: add_param_group and zero_grad(set_to_none) ----------------------------------------

def test_add_param_group_fills_defaults_and_refuses_shared_parameters_as_pytorch():
    torch = pytest.importorskip("torch")
    a, b, c = (ag.tensor(P0.copy(), requires_grad=True) for _ in range(3))
    ta, tb = (torch.tensor(P0.copy(), requires_grad=True) for _ in range(2))
    opt = optim.Adam([a], lr=0.1, amsgrad=True)
    topt = torch.optim.Adam([ta], lr=0.1, amsgrad=True)
    opt.add_param_group({"params": b, "lr": 0.01, "betas": (0.5, 0.9)})  # a lone Tensor
    topt.add_param_group({"params": tb, "lr": 0.01, "betas": (0.5, 0.9)})
    mine, theirs = opt.param_groups[1], topt.param_groups[1]
    assert {k: mine[k] for k in mine if k != "params"} == {k: theirs[k] for k in mine
                                                           if k != "params"}
    assert mine["params"] == [b] and mine["amsgrad"] is True and mine["eps"] == 1e-8
    for _ in range(4):  # both groups train, each with its options, as PyTorch's
        for o, ps, lib in ((opt, (a, b), ag), (topt, (ta, tb), torch)):
            o.zero_grad()
            sum(lib.sum(p**4 - p) for p in ps).backward()
            o.step()
    np.testing.assert_allclose(b.numpy(), tb.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(a.numpy(), ta.detach().numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [c, a]})
    with pytest.raises(TypeError, match="dict"):
        opt.add_param_group([c])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown option 'momentum'"):
        opt.add_param_group({"params": [c], "momentum": 0.9})
    assert len(opt.param_groups) == 2  # nothing added by the refused calls
    with pytest.raises(ValueError, match="more than one"):
        optim.SGD([{"params": [a]}, {"params": [a]}], lr=0.1)


def test_zero_grad_set_to_none_false_zeroes_in_place():
    p = ag.tensor(P0.copy(), requires_grad=True)
    q = ag.tensor(P0.copy(), requires_grad=True)  # never gets a gradient
    opt = optim.SGD([p, q], lr=0.1)
    _loss(p).backward()
    g = p.grad
    opt.zero_grad(set_to_none=False)
    assert p.grad is g and q.grad is None
    np.testing.assert_array_equal(g.numpy(), np.zeros_like(P0))
    _loss(p).backward()  # accumulates onto zeros: the plain gradient
    np.testing.assert_allclose(p.grad.numpy(), _grad_np(P0), rtol=1e-12)
    opt.zero_grad()  # the default, as PyTorch's
    assert p.grad is None


def test_zero_grad_in_place_detaches_a_gradient_with_a_graph():
    p = ag.tensor(P0.copy(), requires_grad=True)
    opt = optim.SGD([p], lr=0.1)
    _loss(p).backward(create_graph=True)
    assert p.grad.requires_grad
    opt.zero_grad(set_to_none=False)
    assert not p.grad.requires_grad
    np.testing.assert_array_equal(p.grad.numpy(), np.zeros_like(P0))


def test_a_captured_step_records_again_after_add_param_group():
    """A group added between replays is a new world for the guards: the step is recorded again
    and trains the new group as eager steps do."""
    def setup(capturable: bool):
        a = ag.tensor(P0.copy(), requires_grad=True)
        b = ag.tensor(P0.copy() * 0.5, requires_grad=True)
        opt = optim.SGD([a], lr=0.02, momentum=0.9, maximize=False, capturable=capturable)

        def step():
            opt.zero_grad(set_to_none=False)
            loss = ag.sum(ag.sin(a) * a) + ag.sum((b - 1.0) ** 2 * ag.cos(b))
            loss.backward()
            opt.step()
            return loss

        return a, b, opt, step

    a, b, opt, step = setup(True)
    ea, eb, eopt, estep = setup(False)
    captured = ag.capture(step, warmup=1)  # two steps
    estep()
    estep()
    captured()
    estep()
    opt.add_param_group({"params": [b], "lr": 0.01})
    eopt.add_param_group({"params": [eb], "lr": 0.01})
    for _ in range(3):
        captured()
        estep()
    np.testing.assert_allclose(a.numpy(), ea.numpy(), rtol=1e-12)
    np.testing.assert_allclose(b.numpy(), eb.numpy(), rtol=1e-12)
    assert not np.allclose(b.numpy(), P0 * 0.5)
