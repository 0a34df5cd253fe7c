"""Learning-rate schedulers composed on one optimizer, against torch.optim.lr_scheduler (issue 22,
class 7): every pair and a few triples of StepLR, ExponentialLR, CosineAnnealingLR and LinearLR
stepped together for 50 epochs give PyTorch's rates to the last bit; ``initial_lr`` in the
groups, ``last_epoch`` resumption, the closed forms, state dicts, and capture's check of the
hyperparameters with ``initial_lr`` in the groups."""

from __future__ import annotations

import itertools
import warnings
from typing import Any

import numpy as np
import pytest

import agnograd as ag
from agnograd import optim
from agnograd.optim import lr_scheduler


def _torch() -> Any:
    """PyTorch, the reference (the ``oracle`` extra); the test skips without it."""
    return pytest.importorskip("torch")


EPOCHS = 50
KINDS: dict[str, tuple[str, dict[str, Any]]] = {
    "step": ("StepLR", {"step_size": 7, "gamma": 0.5}),
    "exp": ("ExponentialLR", {"gamma": 0.93}),
    "cos": ("CosineAnnealingLR", {"T_max": 20, "eta_min": 1e-3}),
    "linear": ("LinearLR", {"start_factor": 0.1, "total_iters": 10}),
}
PAIRS = [list(p) for p in itertools.product(KINDS, repeat=2)]  # every ordered pair, twins too
TRIPLES = [["linear", "cos", "step"], ["linear", "exp", "cos"], ["step", "linear", "exp"],
           ["cos", "cos", "linear"]]


def _groups(lib: Any) -> tuple[Any, Any]:
    """An SGD with two groups of different rates, in agnograd or torch."""
    if lib == "torch":
        torch = _torch()
        a, b = torch.ones(2, requires_grad=True), torch.ones(1, requires_grad=True)
        return torch.optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.3}], lr=0.1,
                               momentum=0.9), torch.optim.lr_scheduler
    a, b = ag.tensor([1.0, 1.0], requires_grad=True), ag.tensor([1.0], requires_grad=True)
    return optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.3}], lr=0.1,
                     momentum=0.9), lr_scheduler


def _make(lib: Any, kinds: list[str], opt: Any = None, last_epoch: int = -1) -> tuple[Any, list]:
    if opt is None:
        opt, mod = _groups(lib)
    else:
        mod = _torch().optim.lr_scheduler if lib == "torch" else lr_scheduler
    scheds = [getattr(mod, KINDS[k][0])(opt, **KINDS[k][1], last_epoch=last_epoch) for k in kinds]
    return opt, scheds


def _run(opt: Any, scheds: list, epochs: int) -> list[list[float]]:
    """The rates of every epoch (before its optimizer step), stepping every scheduler after the
    optimizer, as PyTorch's documentation composes them."""
    seen = []
    for _ in range(epochs):
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        for s in scheds:
            s.step()
    seen.append([g["lr"] for g in opt.param_groups])
    return seen


@pytest.mark.parametrize("kinds", PAIRS + TRIPLES, ids=["+".join(k) for k in PAIRS + TRIPLES])
def test_composed_schedulers_give_pytorchs_rates(kinds):
    opt, scheds = _make(None, kinds)
    topt, tscheds = _make("torch", kinds)
    assert [s.base_lrs for s in scheds] == [s.base_lrs for s in tscheds]
    ours, theirs = _run(opt, scheds, EPOCHS), _run(topt, tscheds, EPOCHS)
    assert ours == theirs  # bit for bit
    assert [s.get_last_lr() for s in scheds] == [s.get_last_lr() for s in tscheds]
    assert [g["initial_lr"] for g in opt.param_groups] == [0.1, 0.3]


def test_a_linear_warm_up_then_a_cosine_decay_reaches_the_base_rate():
    """The reported example: LinearLR(start_factor=0.1) and CosineAnnealingLR chained on one
    optimizer. The cosine's base rate was the warmed-down rate, so after the warm-up the rate
    stayed 10x too small; it is the group's initial_lr, as in PyTorch."""
    p = ag.tensor([1.0], requires_grad=True)
    opt = optim.SGD([p], lr=0.1)
    warm = lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=5)
    cos = lr_scheduler.CosineAnnealingLR(opt, T_max=100)
    assert cos.base_lrs == [0.1] and opt.param_groups[0]["lr"] == pytest.approx(0.01)
    for _ in range(5):
        opt.step()
        warm.step()
        cos.step()
    expected = 0.1 * (1 + np.cos(np.pi * 5 / 100)) / 2  # the cosine at epoch 5, from 0.1
    assert opt.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("kinds", [["linear", "cos"], ["step", "exp"], ["linear", "exp", "cos"],
                                   ["cos"], ["step"]], ids="+".join)
@pytest.mark.parametrize("at", [0, 3, 12])
def test_last_epoch_resumes_as_pytorch(kinds, at):
    """Train ``at`` epochs, save the optimizer's state dict (it holds initial_lr), build a new
    optimizer from it and schedulers with last_epoch=at, continue: PyTorch's rates."""
    def resumed(lib: Any) -> list[list[float]]:
        opt, scheds = _make(lib, kinds)
        _run(opt, scheds, at)
        sd = opt.state_dict()
        opt2, _ = _groups(lib)
        opt2.load_state_dict(sd)
        opt2, scheds2 = _make(lib, kinds, opt2, last_epoch=at)
        assert [s.last_epoch for s in scheds2] == [at + 1] * len(kinds)
        assert [s.base_lrs for s in scheds2] == [[0.1, 0.3]] * len(kinds)
        return _run(opt2, scheds2, 20)

    assert resumed(None) == resumed("torch")


def test_scheduler_state_dicts_resume_the_composed_schedule():
    """Optimizer and scheduler state dicts (ours, or PyTorch's loaded into ours) continue the
    same sequence as an uninterrupted run."""
    kinds = ["linear", "cos"]
    opt, scheds = _make(None, kinds)
    whole = _run(opt, scheds, 30)
    opt, scheds = _make(None, kinds)
    first = _run(opt, scheds, 12)
    topt, tscheds = _make("torch", kinds)
    _run(topt, tscheds, 12)
    for source_opt, source_scheds in [(opt, scheds), (topt, tscheds)]:
        opt2, _ = _groups(None)
        sd = source_opt.state_dict()
        opt2.load_state_dict({"state": {}, "param_groups": [
            {k: v for k, v in g.items() if k in ("params", "lr", "initial_lr", "momentum")}
            for g in sd["param_groups"]]})
        scheds2 = _make(None, kinds, opt2)[1]   # construction resets the rates ...
        for s, src in zip(scheds2, source_scheds):
            s.load_state_dict(src.state_dict())  # ... the state dicts restore the schedule
        opt2.load_state_dict({"state": {}, "param_groups": [
            {"params": g["params"], "lr": g["lr"]} for g in sd["param_groups"]]})
        assert first[:-1] + _run(opt2, scheds2, 18) == whole


def test_a_resumed_scheduler_needs_initial_lr():
    opt, _ = _groups(None)
    topt, _ = _groups("torch")
    torch = _torch()
    with pytest.raises(KeyError, match="initial_lr"):
        torch.optim.lr_scheduler.StepLR(topt, step_size=2, last_epoch=3)
    with pytest.raises(KeyError, match=r"param_groups\[0\] has no 'initial_lr'.*load the "
                                       r"optimizer's state_dict"):
        lr_scheduler.StepLR(opt, step_size=2, last_epoch=3)
    with pytest.raises(TypeError, match="last_epoch must be an int"):
        lr_scheduler.StepLR(opt, step_size=2, last_epoch=1.5)  # type: ignore[arg-type]
    # A group given with an initial_lr (e.g. from a saved state dict) is accepted, and kept.
    p = ag.tensor([1.0], requires_grad=True)
    o = optim.Adam([{"params": [p], "lr": 0.05, "initial_lr": 0.5}])
    s = lr_scheduler.ExponentialLR(o, gamma=0.5, last_epoch=4)
    assert s.base_lrs == [0.5] and o.param_groups[0]["initial_lr"] == 0.5
    with pytest.raises(ValueError, match="unknown option 'initial_rate'"):
        optim.Adam([{"params": [p], "initial_rate": 0.5}])


@pytest.mark.parametrize("kind", list(KINDS))
def test_step_with_an_epoch_uses_the_closed_form_as_pytorch(kind):
    opt, (s,) = _make(None, [kind])
    topt, (ts,) = _make("torch", [kind])
    ours, theirs = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for e in [3, 7, 8, 15, 40, 2]:
            opt.step()
            topt.step()
            with pytest.warns(UserWarning, match="deprecated"):
                s.step(e)
            ts.step(e)
            ours.append(s.get_last_lr())
            theirs.append(ts.get_last_lr())
    assert ours == theirs


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_captured_steps_follow_composed_schedulers(kind):
    """Schedulers created after a step was recorded add initial_lr to the groups; the replays
    accept it (no step reads it), follow the composed rates as eager training does, and still
    record again when a hyperparameter that the recording holds as a constant changes."""
    def setup(capturable: bool) -> tuple[ag.Tensor, Any, Any]:
        p = ag.tensor(np.linspace(-1.0, 1.0, 6), requires_grad=True)
        opt = (optim.SGD([p], lr=0.05, momentum=0.9, capturable=capturable) if kind == "sgd"
               else optim.Adam([p], lr=0.05, capturable=capturable))

        def step() -> ag.Tensor:
            opt.zero_grad()
            loss = ag.sum((p - 0.5) ** 4)
            loss.backward()
            opt.step()
            return loss

        return p, opt, step

    pc, opt_c, step_c = setup(True)
    pe, opt_e, step_e = setup(False)
    captured = ag.capture(step_c, warmup=1)  # two steps
    step_e()
    step_e()
    scheds = [_make(None, ["linear", "cos"], o)[1] for o in (opt_c, opt_e)]
    for _ in range(12):
        captured()
        step_e()
        for s in scheds[0] + scheds[1]:
            s.step()
    assert opt_c.param_groups[0]["lr"] == opt_e.param_groups[0]["lr"] != 0.05
    np.testing.assert_allclose(pc.numpy(), pe.numpy(), rtol=1e-12, atol=1e-14)
    opt_c.load_state_dict({"state": opt_c.state_dict()["state"],
                           "param_groups": [{**opt_c.state_dict()["param_groups"][0],
                                             "initial_lr": 1.0}]})
    opt_e.load_state_dict({"state": opt_e.state_dict()["state"],
                           "param_groups": [{**opt_e.state_dict()["param_groups"][0],
                                             "initial_lr": 1.0}]})
    captured()  # initial_lr changed: a new world for the guards, the same arithmetic
    step_e()
    np.testing.assert_allclose(pc.numpy(), pe.numpy(), rtol=1e-12, atol=1e-14)
    # A constant of the recording changed: the step is recorded again, and follows it.
    key = "momentum" if kind == "sgd" else "eps"
    opt_c.param_groups[0][key] = opt_e.param_groups[0][key] = 0.5
    for _ in range(2):
        captured()
        step_e()
    np.testing.assert_allclose(pc.numpy(), pe.numpy(), rtol=1e-12, atol=1e-14)
