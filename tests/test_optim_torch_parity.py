"""agnograd.optim against torch.optim as a user porting training code meets it: PyTorch's
constructor signatures (positional order, defaults), several parameter groups with their own
options, parameters without a gradient, ``zero_grad`` both ways, ``step(closure)``, PyTorch
state dicts loaded as they are, resuming after ``add_param_group``; ``ConstantLR``,
``MultiplicativeLR`` and ``CyclicLR``; and every scheduler driving an ``ag.capture`` and an ``ag.jit`` step
whose rate (and momentum, weight decay) change between replays.

Trajectories are float64, 25 steps, to 1e-12; rates are compared with ``==``.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import agnograd as ag
from agnograd import optim
from agnograd.optim import lr_scheduler

torch = pytest.importorskip("torch")

A0 = np.array([[0.5, -1.0, 2.0], [1.5, 0.3, -0.7]])
B0 = np.array([0.2, -0.4])
C0 = np.array([0.7])
STEPS = 25


def _loss(lib: str, a: Any, b: Any, k: int) -> Any:
    """Non-quadratic; ``b`` takes part on two steps of three only (no gradient on the third)."""
    if lib == "torch":
        loss = (a.sin() * a).sum()
        return loss + ((b - 1) ** 4).sum() + a.sum() * b.sum() if k % 3 else loss
    loss = ag.sum(ag.sin(a) * a)
    return loss + ag.sum((b - 1) ** 4) + ag.sum(a) * ag.sum(b) if k % 3 else loss


def _tensors(lib: str) -> list[Any]:
    if lib == "torch":
        return [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in (A0, B0, C0)]
    return [ag.tensor(x, requires_grad=True) for x in (A0, B0, C0)]


def _train(lib: str, make: Callable[[Any, list[Any]], Any], steps: int = STEPS,
           set_to_none: bool = True, closure: bool = False) -> tuple[list[np.ndarray], Any, Any]:
    """``steps`` steps of ``make(module, [a, b, c])``; ``c`` never has a gradient."""
    a, b, c = _tensors(lib)
    opt = make(torch.optim if lib == "torch" else optim, [a, b, c])
    for k in range(steps):
        def fn(k: int = k) -> Any:
            opt.zero_grad(set_to_none=set_to_none)
            loss = _loss(lib, a, b, k)
            loss.backward()
            return loss
        if closure:
            got = opt.step(fn)
            assert got is not None
        else:
            fn()
            opt.step()
    return [np.array(x.detach().numpy()) for x in (a, b, c)], opt, c


def _assert_same(ours: list[np.ndarray], theirs: list[np.ndarray]) -> None:
    for x, y in zip(ours, theirs):
        np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-13)


# name -> make(module, [a, b, c]): several groups with their own options, torch's names
GROUPED: dict[str, Callable[[Any, list[Any]], Any]] = {
    "sgd-positional": lambda m, p: m.SGD([{"params": [p[0], p[2]]},
                                          {"params": [p[1]], "momentum": 0.5, "lr": 0.01}],
                                         0.05, 0.9, 0.2, 0.01),
    "sgd-positional-nesterov": lambda m, p: m.SGD([{"params": [p[0]]}, {"params": [p[1], p[2]],
                                                   "maximize": True, "lr": 1e-3}],
                                                  0.05, 0.9, 0, 0.01, True),
    "sgd-keywords": lambda m, p: m.SGD([{"params": [p[0]], "dampening": 0.5},
                                        {"params": [p[1], p[2]], "weight_decay": 0.1}],
                                       lr=0.02, momentum=0.8, weight_decay=0.02),
    "adam-groups": lambda m, p: m.Adam([{"params": [p[0]], "amsgrad": True},
                                        {"params": [p[1], p[2]], "betas": (0.5, 0.6),
                                         "eps": 1e-3, "weight_decay": 0.2}], lr=0.05),
    "adam-decoupled": lambda m, p: m.Adam(p, 0.05, (0.8, 0.99), 1e-8, 0.3,
                                          decoupled_weight_decay=True),
    "adam-maximize": lambda m, p: m.Adam([{"params": [p[0]], "maximize": True},
                                          {"params": [p[1], p[2]], "amsgrad": True}],
                                         lr=0.05, weight_decay=0.1),
    "adamw-default-decay": lambda m, p: m.AdamW(p, lr=0.1),
    "adamw-groups": lambda m, p: m.AdamW([{"params": [p[0]]},
                                          {"params": [p[1], p[2]], "weight_decay": 0.5,
                                           "amsgrad": True}], 0.05),
    "rmsprop-groups": lambda m, p: m.RMSprop([{"params": [p[0]], "centered": True,
                                               "momentum": 0.5},
                                              {"params": [p[1], p[2]], "alpha": 0.5,
                                               "weight_decay": 0.1, "maximize": True}], 0.01),
    "adagrad-groups": lambda m, p: m.Adagrad([{"params": [p[0]]},
                                              {"params": [p[1], p[2]], "lr": 0.2, "eps": 1e-3,
                                               "lr_decay": 0.01, "weight_decay": 0.1}],
                                             0.1, 0.1, 0.0, 0.3),
}


@pytest.mark.parametrize("set_to_none", [True, False], ids=["set_to_none", "zeros"])
@pytest.mark.parametrize("case", list(GROUPED))
def test_grouped_trajectories_equal_torchs(case, set_to_none):
    """Positional arguments in PyTorch's order, per-group options, a parameter without a
    gradient on one step of three and one that never has one: 25 steps as torch.optim."""
    ours, opt, c = _train("ag", GROUPED[case], set_to_none=set_to_none)
    theirs, topt, tc = _train("torch", GROUPED[case], set_to_none=set_to_none)
    _assert_same(ours, theirs)
    assert id(c) not in opt.state  # no gradient: no state (PyTorch's Adagrad makes its state
    assert tc not in topt.state or case.startswith("adagrad")  # in the constructor: step 0)
    if set_to_none:
        assert c.grad is None


def test_sgd_takes_torchs_positional_order_and_default_rate():
    """SGD(params, lr, momentum, dampening, weight_decay, nesterov), lr=1e-3 by default: the
    old order (momentum, nesterov, weight_decay, dampening) read a dampening as Nesterov."""
    p = ag.tensor([1.0], requires_grad=True)
    opt = optim.SGD([p], 0.1, 0.9, 0.3, 0.01, False)
    g = opt.param_groups[0]
    assert (g["lr"], g["momentum"], g["dampening"], g["weight_decay"], g["nesterov"]) == (
        0.1, 0.9, 0.3, 0.01, False)
    assert optim.SGD([p]).param_groups[0]["lr"] == torch.optim.SGD(
        [torch.ones(1, requires_grad=True)]).defaults["lr"]
    ours, _, _ = _train("ag", lambda m, ps: m.SGD(ps))
    theirs, _, _ = _train("torch", lambda m, ps: m.SGD(ps))
    _assert_same(ours, theirs)
    keys = [k for k in torch.optim.SGD([torch.ones(1, requires_grad=True)]).param_groups[0]
            if k in g and k != "params"]
    assert keys == [k for k in g if k != "params"]  # PyTorch's order of the options


@pytest.mark.parametrize("kw", [dict(nesterov=True), dict(momentum=0.0, nesterov=True),
                                dict(momentum=0.9, dampening=0.1, nesterov=True)])
def test_nesterov_without_momentum_or_with_dampening_raises_as_torch(kw):
    with pytest.raises(ValueError):
        torch.optim.SGD([torch.ones(1, requires_grad=True)], lr=0.1, **kw)
    with pytest.raises(ValueError, match=r"SGD: Nesterov.*momentum=.*dampening=") as err:
        optim.SGD([ag.tensor([1.0], requires_grad=True)], lr=0.1, **kw)
    assert "nesterov=False" in str(err.value)
    p = ag.tensor([1.0], requires_grad=True)
    opt = optim.SGD([p], lr=0.1)
    with pytest.raises(ValueError, match="SGD: Nesterov"):  # a group added later: checked too
        opt.add_param_group({"params": [ag.tensor([2.0], requires_grad=True)], **kw})


@pytest.mark.parametrize("make, match", [
    (lambda p: optim.SGD([p], 0.1, 0.9, True), "SGD: dampening must be a non-negative number"),
    (lambda p: optim.SGD([p], 0.1, 0.9, 0.0, 0.0, 0.5), "SGD: nesterov must be True or False"),
    (lambda p: optim.SGD([p], lr=-0.1), "SGD: lr must be a non-negative number, not -0.1"),
    (lambda p: optim.Adam([p], betas=(0.9, 1.0)), r"Adam: betas must be in \[0, 1\)"),
    (lambda p: optim.AdamW([p], betas=(0.9,)), r"AdamW: betas must be a pair"),
    (lambda p: optim.RMSprop([p], alpha=-0.5), "RMSprop: alpha must be"),
    (lambda p: optim.Adagrad([p], lr_decay=-1.0), "Adagrad: lr_decay must be"),
])
def test_bad_values_are_refused_naming_the_optimizer(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make(ag.tensor([1.0], requires_grad=True))


def test_adamw_is_adam_with_decoupled_weight_decay_as_torch():
    p = ag.tensor([1.0], requires_grad=True)
    assert optim.AdamW([p]).param_groups[0]["weight_decay"] == 1e-2
    assert optim.Adam([p]).param_groups[0]["decoupled_weight_decay"] is False
    # AdamW's groups take the keyword of torch.optim.AdamW's constructor only
    assert "decoupled_weight_decay" not in optim.AdamW([p]).param_groups[0]
    with pytest.raises(ValueError, match="AdamW.load_state_dict: decoupled_weight_decay=False"):
        sd = optim.AdamW([p]).state_dict()
        sd["param_groups"][0]["decoupled_weight_decay"] = False
        optim.AdamW([p]).load_state_dict(sd)
    a, _, _ = _train("ag", lambda m, ps: m.Adam(ps, lr=0.05, weight_decay=0.3,
                                                 decoupled_weight_decay=True))
    w, _, _ = _train("ag", lambda m, ps: m.AdamW(ps, lr=0.05, weight_decay=0.3))
    _assert_same(a, w)


@pytest.mark.parametrize("case", ["sgd-keywords", "adam-groups", "rmsprop-groups"])
def test_step_with_a_closure_as_torch(case):
    ours, _, _ = _train("ag", GROUPED[case], closure=True)
    theirs, _, _ = _train("torch", GROUPED[case], closure=True)
    _assert_same(ours, theirs)
    p = ag.tensor([2.0], requires_grad=True)
    opt = optim.SGD([p], lr=0.1)
    assert opt.step() is None

    def closure() -> ag.Tensor:
        opt.zero_grad()
        loss = ag.sum(p * p)
        loss.backward()
        return loss

    with ag.no_grad():  # the closure runs with gradients enabled, as PyTorch's
        assert float(opt.step(closure)) == 4.0
    assert p.item() == pytest.approx(1.6)


@pytest.mark.parametrize("case", ["sgd-keywords", "adam-groups", "adamw-groups", "rmsprop-groups",
                                  "adagrad-groups", "adam-decoupled"])
def test_a_torch_state_dict_loads_as_it_is_and_continues(case):
    """A PyTorch optimizer's state_dict(), with its foreach / fused / capturable /
    differentiable entries and tensor states, loads into ours mid-training: the next steps are
    PyTorch's."""
    make = GROUPED[case]
    theirs_then, topt, _ = _train("torch", make, steps=10)
    sd = topt.state_dict()
    assert any(k in sd["param_groups"][0] for k in ("foreach", "fused", "differentiable"))
    ps = [ag.tensor(x, requires_grad=True) for x in theirs_then]
    opt = make(optim, ps)
    opt.load_state_dict(sd)
    tps = [q for g in topt.param_groups for q in g["params"]]
    tps = sorted(tps, key=lambda q: q.numel(), reverse=True)  # a, b, c as created
    mine = sorted(ps, key=lambda q: q.size, reverse=True)
    for k in range(10, 20):
        for lib, o, (a, b, _) in (("ag", opt, mine), ("torch", topt, tps)):
            o.zero_grad()
            _loss(lib, a, b, k).backward()
            o.step()
    _assert_same([q.numpy() for q in mine], [q.detach().numpy() for q in tps])
    bad = copy.deepcopy(sd)
    bad["param_groups"][0]["differentiable"] = True
    with pytest.raises(ValueError, match="differentiable=True"):
        make(optim, ps).load_state_dict(bad)


@pytest.mark.parametrize("kind", ["sgd", "adam", "rmsprop"])
def test_resuming_after_add_param_group_continues_as_uninterrupted(kind):
    """Five steps on one group, add_param_group (defaults filled in), five more; the state dict
    then (after a JSON-like deep copy) loaded into a fresh optimizer built with both groups
    continues exactly; torch agrees on the whole trajectory; a state dict of the other group
    count is refused as torch refuses it."""
    def build(m: Any, ps: list[Any], both: bool) -> Any:
        groups = [{"params": [ps[0]]}] + ([{"params": [ps[1]], "lr": 0.02}] if both else [])
        return {"sgd": lambda: m.SGD(groups, lr=0.05, momentum=0.9, nesterov=True),
                "adam": lambda: m.Adam(groups, lr=0.05, amsgrad=True),
                "rmsprop": lambda: m.RMSprop(groups, lr=0.01, centered=True)}[kind]()

    def run(lib: str, split: bool) -> list[np.ndarray]:
        m = torch.optim if lib == "torch" else optim
        a, b, _ = _tensors(lib)
        opt = build(m, [a, b], both=False)
        for k in range(20):
            if k == 5:
                opt.add_param_group({"params": [b], "lr": 0.02})
                assert set(opt.param_groups[1]) == set(opt.param_groups[0])
            if k == 10 and split:
                sd = copy.deepcopy(opt.state_dict())
                a = (torch.tensor if lib == "torch" else ag.tensor)(
                    a.detach().numpy().copy(), requires_grad=True)
                b = (torch.tensor if lib == "torch" else ag.tensor)(
                    b.detach().numpy().copy(), requires_grad=True)
                opt = build(m, [a, b], both=True)
                opt.load_state_dict(sd)
            opt.zero_grad()
            _loss(lib, a, b, 1).backward()
            opt.step()
        if split:
            with pytest.raises(ValueError):
                build(m, [a, b], both=False).load_state_dict(opt.state_dict())
        return [np.array(x.detach().numpy()) for x in (a, b)]

    straight = run("ag", False)
    _assert_same(run("ag", True), straight)
    _assert_same(straight, run("torch", False))
    _assert_same(run("torch", True), straight)


def test_add_param_group_refuses_a_parameter_of_another_group_as_torch():
    ta, tb = torch.ones(1, requires_grad=True), torch.ones(1, requires_grad=True)
    topt = torch.optim.Adam([ta])
    with pytest.raises(ValueError):
        topt.add_param_group({"params": [ta, tb]})
    a, b = ag.tensor([1.0], requires_grad=True), ag.tensor([1.0], requires_grad=True)
    opt = optim.Adam([a])
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [b, a]})
    assert len(opt.param_groups) == 1
    opt.add_param_group({"params": b, "foreach": False})  # a Tensor; PyTorch's switch dropped
    assert "foreach" not in opt.param_groups[1] and opt.param_groups[1]["betas"] == (0.9, 0.999)


# -- schedulers new here: ConstantLR, MultiplicativeLR ------------------------------------------

class Decay:
    """A callable object: its attributes travel in MultiplicativeLR's state dict."""

    def __init__(self, r: float) -> None:
        self.r = r

    def __call__(self, e: int) -> float:
        return self.r if e % 2 else 1.0


SCHEDULES: dict[str, Callable[[Any, Any], list[Any]]] = {
    "constant": lambda m, o: [m.ConstantLR(o, factor=0.5, total_iters=4)],
    "constant-default": lambda m, o: [m.ConstantLR(o)],
    "constant-zero-iters": lambda m, o: [m.ConstantLR(o, factor=0.2, total_iters=0)],
    "multiplicative": lambda m, o: [m.MultiplicativeLR(o, lambda e: 0.95)],
    "multiplicative-list": lambda m, o: [m.MultiplicativeLR(o, [lambda e: 1 - 0.01 * e,
                                                                Decay(0.9)])],
    "sequential-constant": lambda m, o: [m.SequentialLR(
        o, [m.ConstantLR(o, factor=0.1, total_iters=3), m.ExponentialLR(o, gamma=0.9)],
        milestones=[3])],
    "sequential-into-multiplicative": lambda m, o: [m.SequentialLR(
        o, [m.LinearLR(o, 0.2, total_iters=4), m.MultiplicativeLR(o, lambda e: 0.97)],
        milestones=[4])],
    "chained-constant": lambda m, o: [m.ChainedScheduler(
        [m.ConstantLR(o, factor=0.25, total_iters=5), m.CosineAnnealingLR(o, T_max=9)])],
    "constant+step": lambda m, o: [m.ConstantLR(o, factor=0.5, total_iters=3),
                                   m.StepLR(o, 4, gamma=0.5)],
    "cyclic": lambda m, o: [m.CyclicLR(o, 0.01, 0.1, step_size_up=4)],
    "cyclic-groups": lambda m, o: [m.CyclicLR(o, [0.01, 0.02], [0.1, 0.5], step_size_up=3,
                                              step_size_down=7, base_momentum=[0.5, 0.6],
                                              max_momentum=0.95)],
    "cyclic-triangular2": lambda m, o: [m.CyclicLR(o, 0.001, 0.01, step_size_up=5,
                                                   mode="triangular2")],
    "cyclic-exp-range": lambda m, o: [m.CyclicLR(o, 0.001, 0.01, step_size_up=5,
                                                 mode="exp_range", gamma=0.97)],
    "cyclic-scale-fn": lambda m, o: [m.CyclicLR(o, 0.001, 0.01, step_size_up=2,
                                                scale_fn=Decay(0.5), scale_mode="iterations",
                                                cycle_momentum=False)],
}


def _sched_opt(lib: str, kind: str = "sgd") -> Any:
    m = torch.optim if lib == "torch" else optim
    mk = (lambda: torch.ones(2, requires_grad=True)) if lib == "torch" else (
        lambda: ag.tensor([1.0, 1.0], requires_grad=True))
    groups = [{"params": [mk()]}, {"params": [mk()], "lr": 0.3}]
    return m.Adam(groups, lr=0.1) if kind == "adam" else m.SGD(groups, lr=0.1, momentum=0.9)


def _hyper(opt: Any) -> list[Any]:
    return [(g["lr"], g.get("momentum"), g.get("betas")) for g in opt.param_groups]


def _rates(lib: str, case: str, steps: int = 40,
           kind: str = "sgd") -> tuple[list[Any], Any, list[Any]]:
    opt = _sched_opt(lib, kind)
    scheds = SCHEDULES[case](torch.optim.lr_scheduler if lib == "torch" else lr_scheduler, opt)
    seen = [_hyper(opt)]
    for _ in range(steps):
        opt.step()
        for s in scheds:
            s.step()
        seen.append(_hyper(opt) + scheds[-1].get_last_lr())
    return seen, opt, scheds


@pytest.mark.parametrize("kind", ["sgd", "adam"])
@pytest.mark.parametrize("case", list(SCHEDULES))
def test_constant_multiplicative_and_cyclic_rates_equal_torchs_bit_for_bit(case, kind):
    """Rates and (CyclicLR) momenta or betas, with ==."""
    ours, _, scheds = _rates("ag", case, kind=kind)
    theirs, _, tscheds = _rates("torch", case, kind=kind)
    assert ours == theirs
    transient = {"_get_lr_called_within_step", "_is_initial"}
    for s, t in zip(scheds, tscheds):
        assert set(s.state_dict()) == set(t.state_dict()) - transient
        assert getattr(s, "last_epoch", None) == getattr(t, "last_epoch", None)


@pytest.mark.filterwarnings("ignore:Detected call of")  # torch: no optimizer.step() here
@pytest.mark.parametrize("name", ["ConstantLR", "MultiplicativeLR", "CyclicLR"])
def test_constant_multiplicative_and_cyclic_resume_and_jump_as_torch(name):
    """state_dict / load_state_dict mid-way, last_epoch=k, and step(epoch) (the closed form
    where PyTorch has one)."""
    def make(m: Any, o: Any, last_epoch: int = -1) -> Any:
        if name == "ConstantLR":
            return m.ConstantLR(o, factor=0.3, total_iters=6, last_epoch=last_epoch)
        if name == "CyclicLR":
            return m.CyclicLR(o, 0.01, 0.1, step_size_up=3, mode="exp_range", gamma=0.9,
                              last_epoch=last_epoch)
        return m.MultiplicativeLR(o, Decay(0.8), last_epoch=last_epoch)

    runs = []
    for lib, m in (("ag", lr_scheduler), ("torch", torch.optim.lr_scheduler)):
        o = _sched_opt(lib)
        s = make(m, o)
        for _ in range(4):
            s.step()
        saved, osaved = copy.deepcopy(s.state_dict()), copy.deepcopy(o.state_dict())
        o2 = _sched_opt(lib)
        o2.load_state_dict(osaved)
        s2 = make(m, o2)
        s2.load_state_dict(saved)
        o3 = _sched_opt(lib)
        o3.load_state_dict(osaved)
        s3 = make(m, o3, last_epoch=3)
        seen = []
        for _ in range(8):
            for sch in (s, s2, s3):
                sch.step()
            seen.append((s.get_last_lr(), s2.get_last_lr(), s3.get_last_lr(), _hyper(o2)))
        o4 = _sched_opt(lib)
        s4 = make(m, o4)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for e in (3, 8, 1, 6, 0):
                s4.step(e)
                seen.append(s4.get_last_lr())
        runs.append(seen)
    assert runs[0] == runs[1]


def test_constant_multiplicative_and_cyclic_refuse_what_torch_refuses():
    o = _sched_opt("ag")
    with pytest.raises(ValueError, match="CyclicLR: mode must be"):
        lr_scheduler.CyclicLR(o, 0.01, 0.1, mode="cosine")
    with pytest.raises(ValueError, match="base_lr must have one value per parameter group"):
        lr_scheduler.CyclicLR(o, [0.01], 0.1)
    p = ag.tensor([1.0], requires_grad=True)
    with pytest.raises(ValueError, match="CyclicLR.*Adagrad has neither 'momentum' nor 'betas'"):
        lr_scheduler.CyclicLR(optim.Adagrad([p]), 0.01, 0.1)
    with pytest.raises(ValueError):  # as torch
        torch.optim.lr_scheduler.CyclicLR(
            torch.optim.Adagrad([torch.ones(1, requires_grad=True)]), 0.01, 0.1)
    with pytest.raises(ValueError, match="ConstantLR: factor must be a number in \\[0, 1\\]"):
        lr_scheduler.ConstantLR(o, factor=1.5)
    with pytest.raises(TypeError, match="MultiplicativeLR: lr_lambda must be a function"):
        lr_scheduler.MultiplicativeLR(o, 0.9)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="MultiplicativeLR: expected 2 lr_lambdas"):
        lr_scheduler.MultiplicativeLR(o, [lambda e: 0.9])


# -- schedulers driving compiled steps ----------------------------------------------------------

COMPILED: dict[str, Callable[[Any], list[Any]]] = {
    "step": lambda o: [lr_scheduler.StepLR(o, 2, 0.7)],
    "multistep": lambda o: [lr_scheduler.MultiStepLR(o, [2, 2, 5], 0.5)],
    "exp": lambda o: [lr_scheduler.ExponentialLR(o, 0.8)],
    "cosine": lambda o: [lr_scheduler.CosineAnnealingLR(o, 5, eta_min=1e-3)],
    "warm-restarts": lambda o: [lr_scheduler.CosineAnnealingWarmRestarts(o, 3, 2, eta_min=1e-3)],
    "warm-restarts-fractional": lambda o: [lr_scheduler.CosineAnnealingWarmRestarts(
        o, 1, 2, eta_min=1e-3)],
    "onecycle-cos": lambda o: [lr_scheduler.OneCycleLR(o, max_lr=0.1, total_steps=40)],
    "onecycle-flat": lambda o: [lr_scheduler.OneCycleLR(o, max_lr=0.1, total_steps=40,
                                                        cycle_momentum=False)],
    "onecycle-linear-3": lambda o: [lr_scheduler.OneCycleLR(
        o, max_lr=[0.1, 0.05], total_steps=40, anneal_strategy="linear", three_phase=True,
        cycle_momentum=False)],
    "cyclic": lambda o: [lr_scheduler.CyclicLR(o, 0.01, [0.1, 0.05], step_size_up=3,
                                               step_size_down=5, mode="triangular2",
                                               cycle_momentum=False)],
    "cyclic-momentum": lambda o: [lr_scheduler.CyclicLR(o, 0.01, 0.1, step_size_up=3)],
    "lambda": lambda o: [lr_scheduler.LambdaLR(o, lambda e: 1 / (1 + e))],
    "multiplicative": lambda o: [lr_scheduler.MultiplicativeLR(o, lambda e: 0.9)],
    "constant": lambda o: [lr_scheduler.ConstantLR(o, 0.25, total_iters=4)],
    "linear": lambda o: [lr_scheduler.LinearLR(o, 0.1, total_iters=8)],
    "poly": lambda o: [lr_scheduler.PolynomialLR(o, 12, 2.0)],
    "sequential": lambda o: [lr_scheduler.SequentialLR(
        o, [lr_scheduler.ConstantLR(o, 0.1, total_iters=3), lr_scheduler.ExponentialLR(o, 0.9)],
        [3])],
    "chained": lambda o: [lr_scheduler.ChainedScheduler(
        [lr_scheduler.LinearLR(o, 0.1, total_iters=3), lr_scheduler.ExponentialLR(o, 0.9)])],
    "plateau": lambda o: [lr_scheduler.ReduceLROnPlateau(o, patience=0, factor=0.5,
                                                         threshold=0.5)],
}
OPTIMIZERS: dict[str, Callable[[list[Any], bool], Any]] = {
    "sgd": lambda g, c: optim.SGD(g, lr=0.05, momentum=0.9, nesterov=True, capturable=c),
    "adam": lambda g, c: optim.Adam(g, lr=0.05, amsgrad=True, capturable=c),
    "adamw": lambda g, c: optim.AdamW(g, lr=0.05, capturable=c),
    "rmsprop": lambda g, c: optim.RMSprop(g, lr=0.01, momentum=0.5, centered=True, capturable=c),
    "adagrad": lambda g, c: optim.Adagrad(g, lr=0.1, lr_decay=0.01, capturable=c),
}
X = np.full(6, 0.5)


def _compiled_run(mode: str, okind: str, case: str, changes: bool = False,
                  steps: int = 12) -> tuple[np.ndarray, Any, set[float]]:
    p = ag.tensor(np.linspace(-1.0, 1.0, 6), requires_grad=True)
    q = ag.tensor(np.linspace(0.5, 2.0, 3), requires_grad=True)
    opt = OPTIMIZERS[okind]([{"params": [p]}, {"params": [q], "lr": 0.02}], mode != "eager")
    scheds = COMPILED[case](opt)
    x = ag.tensor(X)
    seen = {opt.param_groups[0]["lr"]}

    def step(x: ag.Tensor) -> ag.Tensor:
        opt.zero_grad()
        loss = ag.sum((p - x) ** 2 * ag.cos(p)) + ag.sum(ag.sin(q) * q * x[0])
        loss.backward()
        opt.step()
        return loss

    run: Any = {"eager": step, "jit": ag.jit(step)}.get(mode)
    if mode == "capture":
        run = ag.capture(step, x, warmup=1)  # two steps: warm-up and recording
    else:
        run(x)
        run(x)
    for k in range(steps):
        if changes:  # hyperparameters a recording holds as constants: recorded again
            g = opt.param_groups[k % 2]
            if k == 3:
                g["weight_decay"] = 0.05
            if k == 6 and "momentum" in g:
                g["momentum"] = 0.3
            if k == 6 and "betas" in g:
                g["betas"] = (0.6, 0.95)
            if k == 8:
                g["maximize"] = not g["maximize"]
        loss = run(x)
        for s in scheds:
            if case == "plateau":
                s.step(float(loss))
            elif case == "warm-restarts-fractional":
                s.step(k / 3)  # three batches per epoch
            else:
                s.step()
        seen.add(opt.param_groups[0]["lr"])
    return np.concatenate([p.numpy(), q.numpy()]), opt, seen


@pytest.mark.parametrize("mode", ["capture", "jit"])
@pytest.mark.parametrize("case", [c for c in COMPILED if c not in ("onecycle-cos",
                                                                     "cyclic-momentum")])
def test_every_scheduler_drives_a_compiled_step_as_eager(case, mode):
    """The rate changes every step: a replay that kept the recorded rate would drift."""
    okind = "adam" if case == "multistep" else "sgd"
    eager, eopt, eseen = _compiled_run("eager", okind, case)
    got, opt, seen = _compiled_run(mode, okind, case)
    np.testing.assert_allclose(got, eager, rtol=1e-12, atol=1e-14)
    assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in eopt.param_groups]
    assert seen == eseen and len(seen) >= 2


@pytest.mark.parametrize("mode", ["capture", "jit"])
@pytest.mark.parametrize("okind", [k if k in ("sgd", "adam") else
                                   pytest.param(k, marks=pytest.mark.slow) for k in OPTIMIZERS])
def test_compiled_steps_follow_rates_momenta_and_weight_decay_changed_between_replays(okind, mode):
    """weight_decay, momentum / betas and maximize set between replays (constants of a
    recording: the step is recorded again) while a cosine schedule moves the rate."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "recorded again"
        eager, _, _ = _compiled_run("eager", okind, "cosine", changes=True)
        got, _, _ = _compiled_run(mode, okind, "cosine", changes=True)
    np.testing.assert_allclose(got, eager, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("mode", ["capture", "jit"])
@pytest.mark.parametrize("okind, case", [
    ("sgd", "onecycle-cos"), pytest.param("rmsprop", "onecycle-cos", marks=pytest.mark.slow),
    pytest.param("adamw", "onecycle-cos", marks=pytest.mark.slow), ("adam", "cyclic-momentum")])
def test_compiled_steps_follow_a_cycled_momentum(okind, case, mode):
    """OneCycleLR's and CyclicLR's momentum (SGD's and RMSprop's momentum, Adam's betas[0])
    changes every step: a constant of the recording, so the step is recorded again."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "recorded again"
        eager, _, _ = _compiled_run("eager", okind, case, steps=5)
        got, opt, _ = _compiled_run(mode, okind, case, steps=5)
    np.testing.assert_allclose(got, eager, rtol=1e-12, atol=1e-14)
    assert "max_momentum" in opt.param_groups[0]


@pytest.mark.parametrize("mode", ["capture", "jit"])
def test_a_compiled_step_trains_a_group_added_after_recording(mode):
    def setup(compiled: bool) -> tuple[ag.Tensor, ag.Tensor, Any, Any]:
        a = ag.tensor(np.linspace(-1.0, 1.0, 4), requires_grad=True)
        b = ag.tensor(np.linspace(0.5, 2.0, 3), requires_grad=True)
        opt = optim.Adam([a], lr=0.05, capturable=compiled)
        sched = lr_scheduler.ExponentialLR(opt, 0.9)

        def step(x: ag.Tensor) -> ag.Tensor:
            opt.zero_grad()
            loss = ag.sum(ag.sin(a) * a * x[0]) + ag.sum((b - 1.0) ** 2 * ag.cos(b))
            loss.backward()
            opt.step()
            return loss

        return a, b, opt, (sched, step)

    x = ag.tensor(X)
    a, b, opt, (sched, step) = setup(True)
    ea, eb, eopt, (esched, estep) = setup(False)
    run = ag.capture(step, x, warmup=1) if mode == "capture" else ag.jit(step)
    if mode == "jit":
        run(x)
        run(x)
    estep(x)
    estep(x)
    for k in range(8):
        if k == 3:
            opt.add_param_group({"params": [b], "lr": 0.03})
            eopt.add_param_group({"params": [eb], "lr": 0.03})
        run(x)
        estep(x)
        sched.step()
        esched.step()
    np.testing.assert_allclose(a.numpy(), ea.numpy(), rtol=1e-12)
    np.testing.assert_allclose(b.numpy(), eb.numpy(), rtol=1e-12)
    assert not np.allclose(b.numpy(), np.linspace(0.5, 2.0, 3))


def test_cli_weight_decay_and_scheduler_take_effect_and_captured_runs_agree():
    from agnograd import cli

    cfg = dict(epochs=2, hidden=8, seed=3, progress=False, optimizer="adamw", dtype="float64")
    quiet = {"log": lambda s: None}
    base = cli.train(cli.TrainConfig(**cfg), **quiet)
    wd = cli.train(cli.TrainConfig(weight_decay=0.5, **cfg), **quiet)
    cos = cli.train(cli.TrainConfig(scheduler="cosine", weight_decay=0.5, **cfg), **quiet)
    cos_c = cli.train(cli.TrainConfig(scheduler="cosine", weight_decay=0.5, capture=True, **cfg),
                      **quiet)
    assert base.train_loss != wd.train_loss != cos.train_loss
    assert cos_c.captured == "staged replay"
    np.testing.assert_allclose(cos_c.train_loss, cos.train_loss, rtol=1e-10)


@pytest.mark.filterwarnings("ignore:Detected call of")  # torch: no optimizer.step() here
@pytest.mark.parametrize("name, args", [
    ("LambdaLR", (lambda e: 0.9**e,)), ("MultiplicativeLR", (lambda e: 0.9,)),
    ("CosineAnnealingWarmRestarts", (3,)), ("StepLR", (2,)), ("ConstantLR", ()),
])
def test_a_group_added_after_the_scheduler_is_refused_where_torch_refuses(name, args):
    """PyTorch's base-rate schedules zip their per-group lists with the groups strictly: a
    group added later raises there; ours left the new group's rate unscheduled, silently."""
    runs = []
    for lib in ("torch", "ag"):
        opt = _sched_opt(lib)
        sched = getattr(torch.optim.lr_scheduler if lib == "torch" else lr_scheduler,
                        name)(opt, *args)
        opt.add_param_group({"params": [_tensors(lib)[2]], "lr": 0.5})
        seen: list[Any] = []
        for _ in range(4):
            try:
                sched.step()
            except ValueError as err:
                seen.append("raised")
                if lib == "ag":
                    assert f"{name}.step: the optimizer has 3 parameter group(s)" in str(err)
                break
            seen.append([g["lr"] for g in opt.param_groups])
        runs.append(seen)
    assert runs[0] == runs[1]


@pytest.mark.parametrize("case, names", [("sgd-keywords", ["momentum_buffer"]),
                                         ("adam-groups", ["exp_avg", "exp_avg_sq",
                                                          "max_exp_avg_sq"]),
                                         ("rmsprop-groups", ["square_avg", "grad_avg"])])
def test_optimizer_state_is_indexed_by_the_parameter_as_torch(case, names):
    """optimizer.state[p] (PyTorch's idiom: the parameter is the key) reads the same moments
    as torch's; ``p in state`` says whether it has state; a parameter without state reads as an
    empty dict, as PyTorch's defaultdict. The integer keys (id) keep working."""
    _, opt, c = _train("ag", GROUPED[case], steps=6)
    _, topt, tc = _train("torch", GROUPED[case], steps=6)
    a = opt.param_groups[0]["params"][0]
    ta = topt.param_groups[0]["params"][0]
    assert a in opt.state and c not in opt.state
    for n in names:
        if n in topt.state[ta]:
            np.testing.assert_allclose(opt.state[a][n].numpy(), topt.state[ta][n].numpy(),
                                       rtol=1e-12, atol=1e-14)
            assert opt.state[a][n] is opt.state[id(a)][n]
    assert opt.state.get(c) is None and opt.state[c] == {} and c in opt.state  # defaultdict
    assert topt.state[tc] == {} or case.startswith("adagrad")
    assert all(isinstance(k, int) for k in opt.state) and len(opt.state_dict()["state"]) == 3


def test_adagrad_starts_every_sum_at_the_constructors_accumulator_value_as_torch():
    """PyTorch's Adagrad reads ``self.defaults["initial_accumulator_value"]``: a group's own
    value (in the constructor's groups or an added one) does not change the numbers."""
    def make(m: Any, ps: list[Any]) -> Any:
        opt = m.Adagrad([{"params": [ps[0]], "initial_accumulator_value": 2.0}], lr=0.1,
                        initial_accumulator_value=0.3)
        opt.add_param_group({"params": [ps[1], ps[2]], "initial_accumulator_value": 5.0})
        return opt

    ours, opt, _ = _train("ag", make)
    theirs, _, _ = _train("torch", make)
    _assert_same(ours, theirs)
    assert opt.param_groups[0]["initial_accumulator_value"] == 2.0  # kept, as PyTorch's


def test_named_parameters_are_accepted_as_torch():
    """optim.X(model.named_parameters()) (PyTorch >= 2.6): the groups hold ``param_names``, the
    state dict too; the steps are the same as with the bare tensors; groups with and without
    names are not mixed."""
    def make(m: Any, ps: list[Any]) -> Any:
        opt = m.Adam([("a", ps[0]), ("c", ps[2])], lr=0.05, amsgrad=True)
        opt.add_param_group({"params": [("b", ps[1])], "lr": 0.01})
        return opt

    ours, opt, _ = _train("ag", make)
    theirs, topt, _ = _train("torch", make)
    _assert_same(ours, theirs)
    assert [g["param_names"] for g in opt.param_groups] == [["a", "c"], ["b"]]
    sd = opt.state_dict()
    assert [g["param_names"] for g in sd["param_groups"]] == [
        g["param_names"] for g in topt.state_dict()["param_groups"]]
    make(optim, _tensors("ag")).load_state_dict(sd)
    with pytest.raises(ValueError, match="all parameter groups must be given with names"):
        opt.add_param_group({"params": [ag.tensor([1.0], requires_grad=True)]})
    with pytest.raises(TypeError, match="not a mix"):
        optim.SGD([("a", _tensors("ag")[0]), _tensors("ag")[1]])
    from agnograd import nn
    model = nn.Linear(3, 2)
    sgd = optim.SGD(model.named_parameters(), lr=0.1)
    assert sgd.param_groups[0]["param_names"] == [n for n, _ in model.named_parameters()]


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad"])
def test_pytorchs_kernel_switches_are_accepted_and_change_nothing(name):
    """``foreach=``/``fused=`` (e.g. ``AdamW(groups, lr, betas, fused=True)`` in training
    scripts) choose PyTorch's kernel: accepted, same steps; ``differentiable=True`` refused."""
    def make(switches: dict[str, Any]) -> Callable[[Any, list[Any]], Any]:
        return lambda m, ps: getattr(m, name)(ps, lr=0.01, **switches)

    plain, _, _ = _train("ag", make({}), steps=5)
    switched, opt, _ = _train("ag", make({"foreach": False, "fused": True}), steps=5)
    _assert_same(switched, plain)
    assert not {"foreach", "fused", "differentiable"} & set(opt.param_groups[0])
    with pytest.raises(ValueError, match=f"{name}: differentiable=True"):
        make({"differentiable": True})(optim, _tensors("ag"))


@pytest.mark.parametrize("mode", ["capture", "jit"])
def test_a_compiled_step_with_a_closure_equals_eager(mode):
    def setup(compiled: bool) -> tuple[ag.Tensor, Any, Callable[[ag.Tensor], Any]]:
        p = ag.tensor(np.linspace(-1.0, 1.0, 4), requires_grad=True)
        opt = optim.Adam([p], lr=0.1, capturable=compiled)
        sched = lr_scheduler.CosineAnnealingLR(opt, 10)

        def step(x: ag.Tensor) -> Any:
            def closure() -> ag.Tensor:
                opt.zero_grad()
                loss = ag.sum((p - x) ** 2 * ag.cos(p))
                loss.backward()
                return loss
            return opt.step(closure)

        return p, sched, step

    x = ag.tensor(np.full(4, 0.3))
    p, sched, step = setup(True)
    ep, esched, estep = setup(False)
    run: Any = ag.capture(step, x, warmup=1) if mode == "capture" else ag.jit(step)
    if mode == "jit":
        run(x)
        run(x)
    estep(x)
    estep(x)
    for _ in range(8):
        loss, eloss = run(x), estep(x)
        sched.step()
        esched.step()
    np.testing.assert_allclose(p.numpy(), ep.numpy(), rtol=1e-12, atol=1e-14)
    assert float(loss) == pytest.approx(float(eloss), rel=1e-12)


def test_a_bare_tensor_as_params_is_refused_as_torch():
    """Iterating a Tensor gives its rows: a frozen one became row-parameters that never train."""
    with pytest.raises(TypeError):
        torch.optim.SGD(torch.ones(2, 2), lr=0.1)
    for t in (ag.tensor(np.ones((2, 2))), ag.tensor(np.ones((2, 2)), requires_grad=True)):
        with pytest.raises(TypeError, match=r"SGD: params must be an iterable .* pass \[tensor\]"):
            optim.SGD(t, lr=0.1)


METRICS = ([1.0, 0.9, 0.95, 0.95, 0.95, 0.89, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.5, 0.6, 0.6, 0.6]
           + [0.6] * 4) * 3


@pytest.mark.parametrize("kw", [
    {"mode": "max", "threshold_mode": "abs", "threshold": 0.01, "patience": 1},
    {"mode": "max", "threshold": 0.1, "patience": 0, "cooldown": 1, "factor": 0.5},
    {"patience": 1, "min_lr": 0.02, "factor": 0.5, "eps": 0.05},
    {"patience": 0, "cooldown": 2, "factor": 0.5, "min_lr": [0.05, 0.01]},
], ids=["max-abs", "max-rel-cooldown", "eps-skips", "per-group-min"])
def test_reduce_on_plateau_modes_equal_torchs(kw):
    runs = []
    for lib in ("ag", "torch"):
        opt = _sched_opt(lib)
        sched = (torch.optim.lr_scheduler if lib == "torch" else lr_scheduler).ReduceLROnPlateau(
            opt, **kw)
        seen = []
        for v in METRICS:
            sched.step(-v if kw.get("mode") == "max" else v)
            seen.append((_hyper(opt), sched.get_last_lr(), sched.num_bad_epochs,
                         sched.cooldown_counter, sched.best, sched.last_epoch))
        runs.append(seen)
    assert runs[0] == runs[1]
    assert runs[0][-1][1] != [0.1, 0.3]


@pytest.mark.parametrize("base", ["LRScheduler", "_LRScheduler"])
def test_a_custom_scheduler_subclass_runs_as_in_torch(base):
    """A warm-up written the PyTorch way (subclass, ``get_lr`` from ``base_lrs`` and
    ``last_epoch``, ``super().__init__``), under both of PyTorch's base-class names."""
    def warm(cls: Any) -> Any:
        class Warm(cls):  # type: ignore[misc,valid-type]
            def __init__(self, optimizer: Any, n: int, last_epoch: int = -1) -> None:
                self.n = n
                super().__init__(optimizer, last_epoch)

            def get_lr(self) -> list[float]:
                return [b * min(1.0, (self.last_epoch + 1) / self.n) for b in self.base_lrs]
        return Warm

    runs = []
    for lib in ("ag", "torch"):
        opt = _sched_opt(lib)
        sched = warm(getattr(torch.optim.lr_scheduler if lib == "torch" else lr_scheduler,
                             base))(opt, 5)
        seen = [sched.get_last_lr()]
        for _ in range(8):
            opt.step()
            sched.step()
            seen.append(sched.get_last_lr() + [sched.last_epoch, sched.state_dict()["n"]])
        runs.append(seen)
    assert runs[0] == runs[1]


@pytest.mark.parametrize("name", ["SGD", "Adam", "RMSprop", "Adagrad"])
def test_numpy_scalar_hyperparameters_are_taken_as_torch_takes_them(name):
    """A rate or decay read from a NumPy config (np.float32, np.int64) is a number: PyTorch
    takes it; it was refused as not a non-negative number."""
    kw = {"lr": np.float32(0.05), "weight_decay": np.int64(0)}
    if name == "SGD":
        kw["momentum"] = np.float32(0.9)
    ours, _, _ = _train("ag", lambda m, ps: getattr(m, name)(ps, **kw))
    # torch given the same values as Python numbers (its Adam divides lr by the bias correction
    # in NumPy's float32 when lr is an np.float32: a promotion accident, not its rule)
    same = {k: v.item() for k, v in kw.items()}
    theirs, _, _ = _train("torch", lambda m, ps: getattr(m, name)(ps, **same))
    _assert_same(ours, theirs)


@pytest.mark.parametrize("capturable", [False, True])
@pytest.mark.parametrize("name", ["SGD", "Adam", "RMSprop", "Adagrad"])
def test_numpy_scalar_hyperparameters_work_on_every_cpu_backend(name, capturable):
    """They become Python numbers of the same value: array_api_strict (which takes only Python
    scalars) and a capturable optimizer's device rate take them too."""
    kw: dict[str, Any] = {"lr": np.float32(0.05), "weight_decay": np.float32(0.1)}
    if name == "Adam":
        kw["betas"] = [np.float32(0.8), np.float64(0.9)]
    got = []
    for backend in ("numpy", "array_api_strict"):
        p = ag.tensor(np.array([1.0, 2.0]), backend=backend, requires_grad=True)
        opt = getattr(optim, name)([p], capturable=capturable, **kw)
        for _ in range(3):
            opt.zero_grad()
            ag.sum(p * p * p).backward()
            opt.step()
        got.append(p.numpy())
        assert type(opt.param_groups[0]["lr"]) is float
        assert opt.param_groups[0]["lr"] == float(np.float32(0.05))
    np.testing.assert_allclose(got[1], got[0], rtol=1e-14)


@pytest.mark.parametrize("case", ["onecycle-flat", "cyclic", "cosine", "sequential"])
def test_a_run_resumed_into_a_jit_step_continues_the_uninterrupted_one(case):
    """Seven eager steps, the optimizer's and the scheduler's state dicts saved (deep copies);
    a capturable optimizer and a new scheduler built, both state dicts loaded (PyTorch's order:
    build, then load), and the rest run through ``ag.jit``: the parameters of 20 eager steps."""
    x = ag.tensor(X)

    def build(capturable: bool, start: np.ndarray,
              qstart: np.ndarray) -> tuple[ag.Tensor, Any, Any, Any]:
        p = ag.tensor(start, requires_grad=True)
        q = ag.tensor(qstart, requires_grad=True)
        opt = optim.Adam([{"params": [p]}, {"params": [q], "lr": 0.02}], lr=0.05, amsgrad=True,
                         capturable=capturable)
        sched = COMPILED[case](opt)[0]

        def step(x: ag.Tensor) -> ag.Tensor:
            opt.zero_grad()
            loss = ag.sum((p - x) ** 2 * ag.cos(p)) + ag.sum(ag.sin(q) * q * x[0])
            loss.backward()
            opt.step()
            return loss

        return p, opt, sched, step

    p, opt, sched, step = build(False, np.linspace(-1.0, 1.0, 6), np.linspace(0.5, 2.0, 3))
    for k in range(20):
        step(x)
        sched.step()
        if k == 6:
            saved = (copy.deepcopy(opt.state_dict()), copy.deepcopy(sched.state_dict()),
                     p.numpy().copy(), opt.param_groups[1]["params"][0].numpy().copy())
    p2, opt2, sched2, step2 = build(True, saved[2], saved[3])
    opt2.load_state_dict(saved[0])
    sched2.load_state_dict(saved[1])
    run = ag.jit(step2)
    for _ in range(13):
        run(x)
        sched2.step()
    np.testing.assert_allclose(p2.numpy(), p.numpy(), rtol=1e-12, atol=1e-14)
    assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]
