"""RMSprop and Adagrad, learning-rate schedulers and gradient clipping: against PyTorch (where it
is installed) over 20 steps, through state_dict round trips, and inside steps recorded by
ag.capture (a scheduler's rate reaches the replays; clipping reads nothing on the host)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import agnograd as ag
from agnograd import nn, optim
from agnograd.nn import functional as F
from agnograd.optim import lr_scheduler

from .test_capture import _data, _host, _tensors

RNG = np.random.default_rng(0)
P0 = RNG.normal(size=(3, 4))
GRADS = [RNG.normal(size=(3, 4)) for _ in range(20)]

OPTIMIZERS = [
    ("rmsprop", {}),
    ("rmsprop", {"momentum": 0.9}),
    ("rmsprop", {"centered": True}),
    ("rmsprop", {"centered": True, "momentum": 0.5, "weight_decay": 0.1, "alpha": 0.9}),
    ("rmsprop", {"eps": 1e-3}),
    ("adagrad", {}),
    ("adagrad", {"lr_decay": 0.1}),
    ("adagrad", {"weight_decay": 0.1, "initial_accumulator_value": 0.5}),
    ("adagrad", {"eps": 1e-3}),
]
IDS = [f"{k}-{'-'.join(f'{a}={b}' for a, b in kw.items()) or 'default'}" for k, kw in OPTIMIZERS]


def _make(kind, params, capturable=False, **kw):
    cls = {"rmsprop": optim.RMSprop, "adagrad": optim.Adagrad}[kind]
    return cls(params, lr=0.05, capturable=capturable, **kw)


def _feed(opt, p, grads, dtype):
    for g in grads:
        p.grad = ag.tensor(g.astype(dtype), backend=p.backend)
        opt.step()


@pytest.mark.parametrize("capturable", [False, True], ids=["eager", "capturable"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind, kw", OPTIMIZERS, ids=IDS)
def test_rmsprop_and_adagrad_match_pytorch_over_20_steps(kind, kw, dtype, capturable):
    torch = pytest.importorskip("torch")
    p = ag.tensor(P0.astype(dtype), requires_grad=True)
    opt = _make(kind, [p], capturable=capturable, **kw)
    _feed(opt, p, GRADS, dtype)
    t = torch.tensor(P0.astype(dtype), requires_grad=True)
    tcls = {"rmsprop": torch.optim.RMSprop, "adagrad": torch.optim.Adagrad}[kind]
    topt = tcls([t], lr=0.05, **kw)
    for g in GRADS:
        t.grad = torch.tensor(g.astype(dtype))
        topt.step()
    # PyTorch fuses some products (addcmul, addcdiv): agreement to a rounding step or two.
    tol = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(p.numpy(), t.detach().numpy(), rtol=tol, atol=tol)
    # The same state entries as PyTorch's.
    assert set(opt.state[id(p)]) == set(topt.state[t])


@pytest.mark.parametrize("kind, kw", OPTIMIZERS, ids=IDS)
def test_state_dict_round_trip_continues_identically(kind, kw):
    p = ag.tensor(P0.copy(), requires_grad=True)
    opt = _make(kind, [p], **kw)
    _feed(opt, p, GRADS[:10], np.float64)
    q = ag.tensor(p.numpy().copy(), requires_grad=True)
    opt2 = _make(kind, [q], **kw)
    opt2.load_state_dict(opt.state_dict())
    _feed(opt, p, GRADS[10:], np.float64)
    _feed(opt2, q, GRADS[10:], np.float64)
    np.testing.assert_array_equal(p.numpy(), q.numpy())
    # ... and into a capturable optimizer (counts become device scalars), to rounding.
    r = ag.tensor(P0.copy(), requires_grad=True)
    ref = _make(kind, [r], **kw)
    _feed(ref, r, GRADS[:10], np.float64)
    c = _make(kind, [r], capturable=True, **kw)
    c.load_state_dict(ref.state_dict())
    _feed(c, r, GRADS[10:], np.float64)
    np.testing.assert_allclose(r.numpy(), p.numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("make, message", [
    (lambda p: optim.RMSprop([p], lr=-1.0), "lr must be"),
    (lambda p: optim.RMSprop([p], momentum=-0.1), "momentum must be"),
    (lambda p: optim.Adagrad([p], lr_decay=-1.0), "lr_decay must be"),
    (lambda p: optim.Adagrad([p], initial_accumulator_value=-1.0), "initial_accumulator_value"),
])
def test_bad_hyperparameters_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make(ag.tensor([1.0], requires_grad=True))


@pytest.mark.parametrize("kind", ["rmsprop", "adagrad"])
def test_capturable_rmsprop_and_adagrad_replay_like_eager_training(kind):
    batches = _data(12)

    def setup(capturable):
        model = nn.MLP([16, 32, 32, 4], activation="tanh", seed=0)
        opt = _make(kind, model.parameters(), capturable=capturable,
                    **({"momentum": 0.5, "centered": True} if kind == "rmsprop" else {"lr_decay": 0.01}))

        def step(x, y):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            return loss

        return model, opt, step

    model_c, _, step_c = setup(True)
    model_e, _, step_e = setup(False)
    captured = ag.capture(step_c, *_tensors("numpy", *batches[0]), warmup=1)
    for _ in range(2):
        step_e(*_tensors("numpy", *batches[0]))
    for x, y in batches[1:]:
        captured(*_tensors("numpy", x, y))
        step_e(*_tensors("numpy", x, y))
    for pc, pe in zip(model_c.parameters(), model_e.parameters()):
        np.testing.assert_allclose(_host(pc), _host(pe), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Schedulers


SCHEDULERS = [
    ("StepLR", {"step_size": 3, "gamma": 0.5}),
    ("StepLR", {"step_size": 1}),
    ("ExponentialLR", {"gamma": 0.9}),
    ("CosineAnnealingLR", {"T_max": 10}),
    ("CosineAnnealingLR", {"T_max": 7, "eta_min": 0.01}),
    ("LinearLR", {}),
    ("LinearLR", {"start_factor": 0.1, "total_iters": 8}),
    ("LinearLR", {"start_factor": 1.0, "end_factor": 0.2, "total_iters": 4}),
]
SIDS = [f"{k}-{'-'.join(f'{a}={b}' for a, b in kw.items()) or 'default'}" for k, kw in SCHEDULERS]


@pytest.mark.parametrize("name, kw", SCHEDULERS, ids=SIDS)
def test_schedulers_give_pytorchs_learning_rates(name, kw):
    torch = pytest.importorskip("torch")
    p = ag.tensor([1.0, 2.0], requires_grad=True)
    opt = optim.SGD([{"params": [p]}, {"params": [ag.tensor([1.0], requires_grad=True)], "lr": 0.3}],
                    lr=0.1, momentum=0.9)
    sched = getattr(lr_scheduler, name)(opt, **kw)
    t = torch.tensor([1.0, 2.0], requires_grad=True)
    topt = torch.optim.SGD([{"params": [t]}, {"params": [torch.ones(1, requires_grad=True)],
                                               "lr": 0.3}], lr=0.1, momentum=0.9)
    tsched = getattr(torch.optim.lr_scheduler, name)(topt, **kw)
    ours, theirs = [sched.get_last_lr()], [tsched.get_last_lr()]
    for _ in range(25):  # past T_max: the cosine rises again in both
        opt.step()
        topt.step()
        sched.step()
        tsched.step()
        ours.append(sched.get_last_lr())
        theirs.append(tsched.get_last_lr())
    assert ours == theirs  # bit for bit: the same recursive formulas
    assert [g["lr"] for g in opt.param_groups] == ours[-1]


def test_a_warm_up_then_a_decay_compose_as_in_pytorch():
    p = ag.tensor([1.0], requires_grad=True)
    opt = optim.Adam([p], lr=0.01)
    warm = lr_scheduler.LinearLR(opt, start_factor=0.25, total_iters=3)
    decay = lr_scheduler.ExponentialLR(opt, gamma=0.5)
    seen = []
    for _ in range(5):
        seen.append(opt.param_groups[0]["lr"])
        warm.step()
        decay.step()
    assert seen[0] == pytest.approx(0.0025) and seen[1] == pytest.approx(0.01 * 0.5 * 0.5)
    torch = pytest.importorskip("torch")
    t = torch.ones(1, requires_grad=True)
    topt = torch.optim.Adam([t], lr=0.01)
    tw = torch.optim.lr_scheduler.LinearLR(topt, start_factor=0.25, total_iters=3)
    td = torch.optim.lr_scheduler.ExponentialLR(topt, gamma=0.5)
    tseen = []
    for _ in range(5):
        tseen.append(topt.param_groups[0]["lr"])
        topt.step()
        tw.step()
        td.step()
    assert seen == tseen


def test_scheduler_state_dict_resumes_the_schedule():
    def fresh():
        return optim.SGD([ag.tensor([1.0], requires_grad=True)], lr=0.1)

    opt = fresh()
    sched = lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    for _ in range(4):
        sched.step()
    opt2 = fresh()
    sched2 = lr_scheduler.CosineAnnealingLR(opt2, T_max=10)
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(sched.state_dict())
    for _ in range(4):
        sched.step()
        sched2.step()
    assert sched2.get_last_lr() == sched.get_last_lr() and sched2.last_epoch == 8
    with pytest.raises(ValueError, match="unknown entries 'bogus'"):
        sched2.load_state_dict({"bogus": 1})
    with pytest.raises(TypeError, match="agnograd Optimizer"):
        lr_scheduler.StepLR(object(), step_size=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="step_size"):
        lr_scheduler.StepLR(opt, step_size=0)


@pytest.mark.parametrize("kind", ["sgd", "adam", "rmsprop", "adagrad"])
def test_a_scheduler_drives_a_captured_step(kind):
    """scheduler.step() between replays sets group["lr"]; the capturable optimizer copies it to
    its device scalar before the next replay, so the captured step trains as the eager one."""
    batches = _data(10)

    def setup(capturable):
        model = nn.MLP([16, 32, 32, 4], activation="tanh", seed=0)
        ps = model.parameters()
        opt = {"sgd": lambda: optim.SGD(ps, lr=0.05, momentum=0.9, capturable=capturable),
               "adam": lambda: optim.Adam(ps, lr=1e-2, capturable=capturable),
               "rmsprop": lambda: optim.RMSprop(ps, lr=1e-2, capturable=capturable),
               "adagrad": lambda: optim.Adagrad(ps, lr=5e-2, capturable=capturable)}[kind]()

        def step(x, y):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            return loss

        return model, opt, step

    model_c, opt_c, step_c = setup(True)
    model_e, opt_e, step_e = setup(False)
    captured = ag.capture(step_c, *_tensors("numpy", *batches[0]), warmup=1)
    for _ in range(2):
        step_e(*_tensors("numpy", *batches[0]))
    sched_c = lr_scheduler.StepLR(opt_c, step_size=2, gamma=0.1)
    sched_e = lr_scheduler.StepLR(opt_e, step_size=2, gamma=0.1)
    for x, y in batches[1:]:
        captured(*_tensors("numpy", x, y))
        step_e(*_tensors("numpy", x, y))
        sched_c.step()
        sched_e.step()
    assert opt_c.param_groups[0]["lr"] < 1e-4  # the rate fell 4 times
    for pc, pe in zip(model_c.parameters(), model_e.parameters()):
        np.testing.assert_allclose(_host(pc), _host(pe), rtol=1e-5, atol=1e-6)
    # Had the replays kept the recorded rate, they would differ from the eager run:
    model_f, opt_f, step_f = setup(False)
    for _ in range(2):
        step_f(*_tensors("numpy", *batches[0]))
    for x, y in batches[1:]:
        step_f(*_tensors("numpy", x, y))
    assert not all(np.allclose(_host(pf), _host(pe), rtol=1e-5, atol=1e-6)
                   for pf, pe in zip(model_f.parameters(), model_e.parameters()))


# ---------------------------------------------------------------------------------------------
# Gradient clipping


def _with_grads(lib, grads):
    if lib == "ag":
        ps = [ag.tensor(np.zeros_like(g), requires_grad=True) for g in grads]
        for p, g in zip(ps, grads):
            p.grad = ag.tensor(g.copy())
        return ps
    import torch

    ps = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for p, g in zip(ps, grads):
        p.grad = torch.tensor(g.copy())
    return ps


CLIP_GRADS = [RNG.normal(size=s) for s in [(3, 4), (4,), (2, 2)]]


@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf, 3.0])
@pytest.mark.parametrize("max_norm", [0.5, 100.0])
def test_clip_grad_norm_matches_pytorch(norm_type, max_norm):
    torch = pytest.importorskip("torch")
    ps = _with_grads("ag", CLIP_GRADS)
    ts = _with_grads("torch", CLIP_GRADS)
    total = nn.utils.clip_grad_norm_(ps, max_norm, norm_type=norm_type)
    ttotal = torch.nn.utils.clip_grad_norm_(ts, max_norm, norm_type=norm_type)
    assert isinstance(total, ag.Tensor) and total.ndim == 0
    assert float(total) == pytest.approx(float(ttotal), rel=1e-14)  # summation order aside
    for p, t in zip(ps, ts):
        np.testing.assert_allclose(p.grad.numpy(), t.grad.numpy(), rtol=1e-14, atol=0)


def test_clip_grad_value_matches_pytorch():
    torch = pytest.importorskip("torch")
    ps = _with_grads("ag", CLIP_GRADS)
    ts = _with_grads("torch", CLIP_GRADS)
    assert nn.utils.clip_grad_value_(ps, 0.3) is None
    torch.nn.utils.clip_grad_value_(ts, 0.3)
    for p, t in zip(ps, ts):
        np.testing.assert_array_equal(p.grad.numpy(), t.grad.numpy())
    with pytest.raises(ValueError, match="non-negative"):
        nn.utils.clip_grad_value_(ps, -1.0)


def test_clipping_edits_the_gradients_in_place_and_skips_missing_ones():
    a = ag.tensor([3.0, 4.0], requires_grad=True)
    b = ag.tensor([1.0], requires_grad=True)  # no gradient
    ag.sum(a * a).backward()  # grad [6, 8], norm 10
    g = a.grad
    w = ag.tensor([1.0, 1.0], requires_grad=True)
    saved = ag.sum(w * g)  # a graph that saved the gradient's array
    total = nn.utils.clip_grad_norm_([a, b], 5.0)
    assert float(total) == 10.0 and a.grad is g and b.grad is None
    np.testing.assert_allclose(a.grad.numpy(), [3.0, 4.0], rtol=1e-6)
    with pytest.raises(RuntimeError, match="modified in place"):  # the version counter moved
        saved.backward()
    assert float(nn.utils.clip_grad_norm_(a, 100.0)) == pytest.approx(5.0, rel=1e-6)  # one Tensor
    assert float(nn.utils.clip_grad_norm_([b], 1.0)) == 0.0  # nothing to clip


def test_error_if_nonfinite():
    a = ag.tensor([1.0, 2.0], requires_grad=True)
    a.grad = ag.tensor([1.0, math.inf])
    with pytest.raises(RuntimeError, match="total norm of order 2.0.*inf"):
        nn.utils.clip_grad_norm_([a], 1.0, error_if_nonfinite=True)
    assert a.grad.numpy().tolist() == [1.0, math.inf]  # unchanged
    with np.errstate(invalid="ignore"):  # inf * 0 in the scaling: NaN, as PyTorch gives
        assert math.isinf(float(nn.utils.clip_grad_norm_([a], 1.0)))


def test_clipping_inside_a_captured_step_reads_nothing_on_the_host():
    model = nn.MLP([16, 8, 4], seed=0)
    opt = optim.SGD(model.parameters(), lr=0.1, capturable=True)
    x, y = _tensors("numpy", *_data(1)[0])

    def step(x, y, check=False):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        total = nn.utils.clip_grad_norm_(model.parameters(), 0.01, error_if_nonfinite=check)
        nn.utils.clip_grad_value_(model.parameters(), 0.001)
        opt.step()
        return total

    captured = ag.capture(step, x, y)
    before = [_host(p).copy() for p in model.parameters()]
    total = captured(x, y)
    assert float(total) > 0.01
    for b, p in zip(before, model.parameters()):  # each element moved by at most lr * 0.001
        assert np.max(np.abs(_host(p) - b)) <= 0.1 * 0.001 + 1e-6  # float32 rounding of p
    with pytest.raises(ag.CaptureError, match="error_if_nonfinite"):
        ag.capture(lambda x, y: step(x, y, check=True), x, y)
