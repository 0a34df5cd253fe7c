"""The schedulers of issue 25 against torch.optim.lr_scheduler: MultiStepLR, OneCycleLR,
ReduceLROnPlateau, LambdaLR, SequentialLR, ChainedScheduler, PolynomialLR and
CosineAnnealingWarmRestarts give PyTorch's rates (and OneCycleLR's momenta) bit for bit over
100 steps, for several parameter sets, alone and composed; their state dicts have PyTorch's keys
and resume the schedule; and each drives a captured step (``ag.capture`` with a capturable
optimizer) to the parameters of an eager run."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import agnograd as ag
from agnograd import optim
from agnograd.optim import lr_scheduler

STEPS = 100


def _torch() -> Any:
    return pytest.importorskip("torch")


class Scale:
    """A callable object (its attributes travel in LambdaLR's state dict, as PyTorch's)."""

    def __init__(self, r: float) -> None:
        self.r = r

    def __call__(self, e: int) -> float:
        return self.r**e


def _opt(lib: str, kind: str = "sgd") -> Any:
    """An optimizer with two groups of different rates, in agnograd or torch."""
    if lib == "torch":
        torch = _torch()
        a, b = torch.ones(2, requires_grad=True), torch.ones(1, requires_grad=True)
        mod: Any = torch.optim
    else:
        a, b = ag.tensor([1.0, 1.0], requires_grad=True), ag.tensor([1.0], requires_grad=True)
        mod = optim
    groups = [{"params": [a]}, {"params": [b], "lr": 0.3}]
    if kind == "adam":
        return mod.Adam(groups, lr=0.1)
    return mod.SGD(groups, lr=0.1, momentum=0.9)


def _mod(lib: str) -> Any:
    return _torch().optim.lr_scheduler if lib == "torch" else lr_scheduler


# name -> (optimizer kind, builder(scheduler module, optimizer) -> list of schedulers to step)
Builder = Callable[[Any, Any], list[Any]]
CASES: dict[str, tuple[str, Builder]] = {
    "multistep": ("sgd", lambda m, o: [m.MultiStepLR(o, milestones=[10, 30, 30, 61], gamma=0.5)]),
    "multistep-default": ("sgd", lambda m, o: [m.MultiStepLR(o, [3, 50])]),
    "poly": ("sgd", lambda m, o: [m.PolynomialLR(o, total_iters=30, power=2.0)]),
    "poly-long": ("sgd", lambda m, o: [m.PolynomialLR(o, total_iters=100, power=0.5)]),
    "poly-default": ("sgd", lambda m, o: [m.PolynomialLR(o)]),
    "lambda": ("sgd", lambda m, o: [m.LambdaLR(o, lambda e: 0.95**e)]),
    "lambda-list": ("sgd", lambda m, o: [m.LambdaLR(o, [lambda e: 1 / (1 + e), Scale(0.97)])]),
    "warm-restarts": ("sgd", lambda m, o: [m.CosineAnnealingWarmRestarts(o, T_0=10)]),
    "warm-restarts-mult": ("sgd", lambda m, o: [m.CosineAnnealingWarmRestarts(
        o, T_0=7, T_mult=2, eta_min=1e-3)]),
    "onecycle": ("sgd", lambda m, o: [m.OneCycleLR(o, max_lr=0.5, total_steps=STEPS + 1)]),
    "onecycle-linear-3": ("sgd", lambda m, o: [m.OneCycleLR(
        o, max_lr=[0.5, 1.0], epochs=11, steps_per_epoch=10, anneal_strategy="linear",
        three_phase=True, pct_start=0.25, div_factor=10.0, final_div_factor=100.0)]),
    "onecycle-adam": ("adam", lambda m, o: [m.OneCycleLR(
        o, max_lr=0.01, total_steps=STEPS + 1, base_momentum=0.8, max_momentum=(0.9, 0.95))]),
    "onecycle-nomomentum": ("sgd", lambda m, o: [m.OneCycleLR(
        o, max_lr=0.2, total_steps=STEPS + 5, cycle_momentum=False, three_phase=True)]),
    "sequential": ("sgd", lambda m, o: [m.SequentialLR(
        o, [m.LinearLR(o, start_factor=0.1, total_iters=5), m.CosineAnnealingLR(o, T_max=30)],
        milestones=[5])]),
    "sequential-3": ("sgd", lambda m, o: [m.SequentialLR(
        o, [m.StepLR(o, 7, gamma=0.5), m.MultiStepLR(o, [3, 9], gamma=0.3),
            m.PolynomialLR(o, total_iters=40, power=1.5)], milestones=[20, 50])]),
    "sequential-lambda": ("sgd", lambda m, o: [m.SequentialLR(
        o, [m.LambdaLR(o, lambda e: (e + 1) / 10), m.ExponentialLR(o, gamma=0.97)],
        milestones=[10])]),
    "chained": ("sgd", lambda m, o: [m.ChainedScheduler(
        [m.LinearLR(o, start_factor=0.2, total_iters=8), m.ExponentialLR(o, gamma=0.98)])]),
    "chained-3": ("sgd", lambda m, o: [m.ChainedScheduler(
        [m.MultiStepLR(o, [20, 40]), m.PolynomialLR(o, total_iters=90),
         m.CosineAnnealingLR(o, T_max=25, eta_min=0.01)], optimizer=o)]),
    # Composed the other way: several schedulers on one optimizer, each stepped.
    "multistep+poly": ("sgd", lambda m, o: [m.MultiStepLR(o, [15, 45], gamma=0.5),
                                            m.PolynomialLR(o, total_iters=80, power=1.2)]),
    "linear+multistep+exp": ("sgd", lambda m, o: [m.LinearLR(o, start_factor=0.5),
                                                  m.MultiStepLR(o, [30]),
                                                  m.ExponentialLR(o, gamma=0.99)]),
    "warm-restarts+linear": ("sgd", lambda m, o: [m.LinearLR(o, start_factor=0.25),
                                                  m.CosineAnnealingWarmRestarts(o, T_0=12)]),
}


def _plain(v: Any) -> Any:
    """JSON for a scheduler's state (a function is not saved): what a checkpoint file holds."""
    return None if callable(v) else str(v)


def _hyper(opt: Any) -> list[list[Any]]:
    """Every group's rate and momentum (or betas): what a schedule sets."""
    return [[g["lr"], g.get("momentum"), tuple(g["betas"]) if "betas" in g else None]
            for g in opt.param_groups]


def _run(lib: str, case: str, steps: int = STEPS) -> tuple[list[Any], Any, list[Any]]:
    kind, build = CASES[case]
    opt = _opt(lib, kind)
    scheds = build(_mod(lib), opt)
    seen = [_hyper(opt)]
    for _ in range(steps):
        opt.step()
        for s in scheds:
            s.step()
        seen.append(_hyper(opt))
    return seen, opt, scheds


@pytest.mark.parametrize("case", list(CASES))
def test_rates_equal_pytorchs_bit_for_bit(case):
    ours, opt, scheds = _run("ag", case)
    theirs, topt, tscheds = _run("torch", case)
    assert ours == theirs  # ==, not allclose
    assert [s.get_last_lr() for s in scheds] == [s.get_last_lr() for s in tscheds]
    assert ([getattr(s, "last_epoch", None) for s in scheds] ==
            [getattr(s, "last_epoch", None) for s in tscheds])
    keys = ("initial_lr", "max_lr", "min_lr", "max_momentum", "base_momentum")
    assert ([{k: g.get(k) for k in keys} for g in opt.param_groups] ==
            [{k: g.get(k) for k in keys} for g in topt.param_groups])


@pytest.mark.parametrize("case", list(CASES))
def test_state_dicts_have_pytorchs_keys_and_resume(case):
    _, opt, scheds = _run("ag", case, 37)
    _, _, tscheds = _run("torch", case, 37)
    transient = {"_is_initial", "_get_lr_called_within_step"}
    for s, t in zip(scheds, tscheds):
        assert set(s.state_dict()) == set(t.state_dict()) - transient
    # Resume: fresh schedules loaded with our state dicts (through JSON, as a checkpoint holds
    # them) or with torch's continue as the original.
    kind, build = CASES[case]
    runs = [(opt, scheds)]
    for source in ("ours", "torch"):
        opt2 = _opt("ag", kind)
        fresh = build(lr_scheduler, opt2)
        opt2.load_state_dict(opt.state_dict())
        for s2, s, t in zip(fresh, scheds, tscheds):
            s2.load_state_dict(json.loads(json.dumps(s.state_dict(), default=_plain))
                               if source == "ours" else t.state_dict())
        runs.append((opt2, fresh))
    for _ in range(20):
        for o, ss in runs:
            o.step()
            for s in ss:
                s.step()
        assert _hyper(runs[1][0]) == _hyper(runs[2][0]) == _hyper(opt)


_gammas = st.floats(0.05, 0.99)
_SCHEDULES = st.one_of(
    st.tuples(st.just("MultiStepLR"), st.fixed_dictionaries({
        "milestones": st.lists(st.integers(0, 60), max_size=5).map(sorted), "gamma": _gammas})),
    st.tuples(st.just("PolynomialLR"), st.fixed_dictionaries({
        "total_iters": st.integers(1, 70), "power": st.floats(0.1, 4.0)})),
    st.tuples(st.just("CosineAnnealingWarmRestarts"), st.fixed_dictionaries({
        "T_0": st.integers(1, 20), "T_mult": st.integers(1, 3), "eta_min": st.floats(0, 0.05)})),
    st.tuples(st.just("OneCycleLR"), st.fixed_dictionaries({
        "max_lr": st.floats(0.01, 2.0), "total_steps": st.integers(61, 90),
        "pct_start": st.floats(0.0, 1.0), "anneal_strategy": st.sampled_from(["cos", "linear"]),
        "three_phase": st.booleans(), "div_factor": st.floats(1.5, 100.0),
        "final_div_factor": st.floats(1.5, 1e5)})),
    st.tuples(st.just("ExponentialLR"), st.fixed_dictionaries({"gamma": _gammas})),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_SCHEDULES, min_size=1, max_size=3), st.sampled_from(["plain", "chained"]))
def test_random_schedules_and_compositions_equal_pytorchs(specs, how):
    """Any parameters, one to three schedulers stepped together (or chained): torch's rates,
    with ==, over 60 steps. (OneCycleLR is not chainable; it runs alone.)"""
    if any(n == "OneCycleLR" for n, _ in specs):
        specs = [next(sp for sp in specs if sp[0] == "OneCycleLR")]
    runs = []
    for lib in ("ag", "torch"):
        opt, mod = _opt(lib), _mod(lib)
        scheds = [getattr(mod, n)(opt, **kw) for n, kw in specs]
        if how == "chained":
            scheds = [mod.ChainedScheduler(scheds)]
        seen = [_hyper(opt)]
        for _ in range(60):
            opt.step()
            for sc in scheds:
                sc.step()
            seen.append(_hyper(opt))
        runs.append(seen)
    assert runs[0] == runs[1]


def test_onecycle_past_total_steps_raises_as_pytorch():
    opt = _opt("ag")
    s = lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=3)
    for _ in range(3):
        s.step()
    with pytest.raises(ValueError, match="total_steps=3"):
        s.step()
    with pytest.raises(ValueError, match="total_steps"):
        lr_scheduler.OneCycleLR(opt, max_lr=0.1)
    with pytest.raises(ValueError, match="cycle_momentum"):
        lr_scheduler.OneCycleLR(optim.Adagrad([ag.tensor([1.0], requires_grad=True)]), 0.1,
                                total_steps=5)


def _metrics(n: int) -> list[float]:
    """A loss that falls, plateaus, wobbles and falls again."""
    out = []
    for i in range(n):
        v = 2.0 / (1 + i) if i < 15 else 0.13 + 0.01 * math.sin(i) if i < 60 else 0.1 - i * 1e-4
        out.append(v)
    return out


PLATEAU = [
    {},
    {"mode": "max", "factor": 0.5, "patience": 3},
    {"patience": 2, "threshold": 0.05, "threshold_mode": "abs", "cooldown": 4},
    {"patience": 0, "factor": 0.7, "min_lr": [0.01, 0.05], "eps": 1e-3},
    {"patience": 5, "threshold": 1e-3, "cooldown": 2, "min_lr": 1e-4},
]


@pytest.mark.parametrize("kw", PLATEAU, ids=[str(i) for i in range(len(PLATEAU))])
def test_reduce_on_plateau_equals_pytorchs(kw):
    torch = _torch()
    opt, topt = _opt("ag"), _opt("torch")
    s = lr_scheduler.ReduceLROnPlateau(opt, **kw)
    t = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, **kw)
    ms = _metrics(STEPS)
    if kw.get("mode") == "max":
        ms = [-m for m in ms]
    ours, theirs = [], []
    for m in ms:
        s.step(ag.tensor(m))
        t.step(torch.tensor(m, dtype=torch.float64))
        ours.append([g["lr"] for g in opt.param_groups] + [s.num_bad_epochs, s.cooldown_counter])
        theirs.append([g["lr"] for g in topt.param_groups] + [t.num_bad_epochs, t.cooldown_counter])
    assert ours == theirs
    assert ours[-1][:2] != [0.1, 0.3]  # it did reduce
    assert set(s.state_dict()) == set(t.state_dict())
    s2 = lr_scheduler.ReduceLROnPlateau(_opt("ag"))
    s2.load_state_dict(s.state_dict())
    assert (s2.best, s2.mode, s2.num_bad_epochs, s2.min_lrs) == (s.best, s.mode, s.num_bad_epochs,
                                                                 s.min_lrs)
    with pytest.raises(ValueError, match="factor"):
        lr_scheduler.ReduceLROnPlateau(opt, factor=1.0)
    with pytest.raises(ValueError, match="mode"):
        lr_scheduler.ReduceLROnPlateau(opt, mode="up")


@pytest.mark.parametrize("T_0,T_mult", [(10, 1), (5, 2), (3, 3)])
def test_warm_restarts_with_fractional_epochs_equal_pytorchs(T_0, T_mult):
    torch = _torch()
    opt, topt = _opt("ag"), _opt("torch")
    s = lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=T_0, T_mult=T_mult, eta_min=0.001)
    t = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(topt, T_0=T_0, T_mult=T_mult,
                                                             eta_min=0.001)
    ours, theirs = [], []
    iters = 7
    for epoch in range(15):
        for i in range(iters):
            s.step(epoch + i / iters)
            t.step(epoch + i / iters)
            ours.append([g["lr"] for g in opt.param_groups] + [s.T_cur, s.T_i, s.last_epoch])
            theirs.append([g["lr"] for g in topt.param_groups] + [t.T_cur, t.T_i, t.last_epoch])
    assert ours == theirs
    s.step(0.5)  # backwards, as PyTorch allows
    t.step(0.5)
    assert s.get_last_lr() == t.get_last_lr()
    with pytest.raises(ValueError, match="non-negative"):
        s.step(-1)


def test_composite_schedulers_refuse_what_pytorch_refuses():
    opt, other = _opt("ag"), _opt("ag")
    a = lr_scheduler.ExponentialLR(opt, 0.9)
    with pytest.raises(ValueError, match="same optimizer"):
        lr_scheduler.ChainedScheduler([a, lr_scheduler.ExponentialLR(other, 0.9)])
    with pytest.raises(ValueError, match="ReduceLROnPlateau"):
        lr_scheduler.SequentialLR(opt, [a, lr_scheduler.ReduceLROnPlateau(opt)], milestones=[3])
    with pytest.raises(ValueError, match="milestone"):
        lr_scheduler.SequentialLR(opt, [a], milestones=[3])
    with pytest.raises(ValueError, match="lr_lambdas"):
        lr_scheduler.LambdaLR(opt, [lambda e: 1.0])


# -- captured steps ------------------------------------------------------------------------------

CAPTURED = ["multistep", "poly", "lambda-list", "warm-restarts-mult", "onecycle", "onecycle-adam",
            "onecycle-nomomentum", "sequential", "chained", "plateau"]


def _setup(capturable: bool, kind: str, case: str) -> tuple[ag.Tensor, Any, list[Any], Any]:
    p = ag.tensor(np.linspace(-1.0, 1.0, 6), requires_grad=True)
    q = ag.tensor(np.linspace(0.5, 2.0, 3), requires_grad=True)
    groups = [{"params": [p]}, {"params": [q], "lr": 0.02}]
    opt = (optim.Adam(groups, lr=0.05, amsgrad=True, capturable=capturable) if kind == "adam"
           else optim.SGD(groups, lr=0.05, momentum=0.9, capturable=capturable))
    if case == "plateau":
        scheds: list[Any] = [lr_scheduler.ReduceLROnPlateau(opt, patience=1, factor=0.5,
                                                            threshold=0.2)]
    else:
        scheds = CASES[case][1](lr_scheduler, opt)

    def step() -> ag.Tensor:
        opt.zero_grad()
        loss = ag.sum((p - 0.5) ** 2) + ag.sum(ag.sin(q) * q)
        loss.backward()
        opt.step()
        return loss

    return ag.concat([p, q]), opt, scheds, step


@pytest.mark.parametrize("case", [c if c != "onecycle-adam" else
                                  pytest.param(c, marks=pytest.mark.slow) for c in CAPTURED])
def test_every_scheduler_drives_a_captured_step(case):
    """The rate a scheduler sets reaches the replays (it lives on the device); a momentum that
    OneCycleLR cycles is a constant of the recording, so the step is recorded again -- either
    way the parameters equal an eager run's."""
    kind = CASES[case][0] if case in CASES else "sgd"
    _, opt_c, sc, step_c = _setup(True, kind, case)
    _, opt_e, se, step_e = _setup(False, kind, case)
    captured = ag.capture(step_c, warmup=1)  # runs two steps (warm-up and recording)
    step_e()
    step_e()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # OneCycleLR's momenta: recorded again
        for _ in range(25):
            lc, le = captured(), step_e()
            for s_c, s_e in zip(sc, se):
                if case == "plateau":
                    s_c.step(float(lc))
                    s_e.step(float(le))
                else:
                    s_c.step()
                    s_e.step()
    assert _hyper(opt_c) == _hyper(opt_e)
    assert opt_c.param_groups[0]["lr"] != 0.05
    # Only a cycled momentum (a constant of the recording) makes the step record again.
    cycles = case in ("onecycle", "onecycle-adam")
    assert (captured._recs.retraced >= 20) == cycles, captured._recs.retraced
    assert captured._recs.retraced <= (25 if cycles else 0)
    for gc, ge in zip(opt_c.param_groups, opt_e.param_groups):
        for a, b in zip(gc["params"], ge["params"]):
            assert np.isfinite(b.numpy()).all()
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-14)
