"""Replays equal eager, whatever changes between calls (``ag.jit`` and ``ag.capture``).

Every test runs an eager model and a compiled twin (same seed, same optimizer, capturable on
both sides so the arithmetic is the same) through the same calls and the same changes of the
world between calls, and requires the parameters and gradients to stay bit-identical -- or the
compiled call to raise an error naming what changed. Each kind of assumption a recording makes
has a named test here; ``test_property_*`` interleaves them at random (hypothesis).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import agnograd as ag
from agnograd import nn, optim
from agnograd.nn import functional as F

from .conftest import CPU_BACKENDS, _params

# CuPy (a CUDA device: ci/gpu.sh) runs the property test too: capture is a CUDA graph there.
GPU_BACKENDS = _params(("cupy",))

MODES = ("jit", "capture")


def _host(t):
    return np.asarray(ag.to_backend(t.detach(), "numpy").data)


class Net(nn.Module):
    """Two layers, a Python value read in forward, and a running mean rebound in forward."""

    def __init__(self, backend, seed=0):
        self.l1 = nn.Linear(4, 6, backend=backend, seed=seed)
        self.l2 = nn.Linear(6, 3, backend=backend, seed=seed + 1)
        self.scale = 1.0
        with ag.default_backend(backend):
            self.ema = ag.zeros(6, dtype=ag.float32)

    def forward(self, x):
        h = ag.tanh(self.l1(x))
        with ag.no_grad():
            self.ema = 0.9 * self.ema + 0.1 * ag.mean(h, axis=0)  # state rebound, not in place
        return self.l2(h - self.ema) * self.scale


def _make_opt(kind, params):
    if kind == "sgd":
        return optim.SGD(params, lr=0.1, momentum=0.9, capturable=True)
    return optim.Adam(params, lr=0.01, capturable=True)


class Twin:
    """One side: model, optimizer, scheduler and the step (compiled or not)."""

    def __init__(self, backend, opt_kind, step_kind, mode=None, seed=0):
        self.backend = backend
        self.model = Net(backend, seed)
        self.opt = _make_opt(opt_kind, self.model.parameters())
        self.sched = optim.lr_scheduler.StepLR(self.opt, step_size=2, gamma=0.5)
        self.step_kind = step_kind
        self.mode = mode
        self.fn = self._step
        self.compiled = None

    def _step(self, x, y):
        if self.step_kind == "full":
            self.opt.zero_grad()
        loss = F.cross_entropy(self.model(x), y)
        loss.backward()
        if self.step_kind == "full":
            self.opt.step()
        return loss

    def call(self, x, y):
        if self.mode is None:
            return self.fn(x, y)
        if self.compiled is None:
            if self.mode == "jit":
                self.compiled = ag.jit(self._step)
            else:  # capture's constructor makes warmup + 1 real steps
                self.compiled = ag.capture(self._step, x, y, warmup=1)
                return self.compiled.outputs
        return self.compiled(x, y)

    def state(self):
        out = []
        for name, t in self.model.named_tensors():
            out.append((name, _host(t)))
            g = t._grad
            out.append((name + ".grad", None if g is None else _host(g)))
        return out


def _data(backend, seed=0, n=5):
    rng = np.random.default_rng(seed)
    x = ag.tensor(rng.normal(size=(n, 4)).astype(np.float32), backend=backend)
    y = ag.tensor(rng.integers(0, 3, size=n), backend=backend)
    return x, y


class Pair:
    """The eager twin and the compiled twin, driven together."""

    def __init__(self, backend, mode, opt_kind="sgd", step_kind="full"):
        self.eager = Twin(backend, opt_kind, step_kind)
        self.comp = Twin(backend, opt_kind, step_kind, mode)
        self.mode = mode
        self.x, self.y = _data(backend)

    def call(self, x=None, y=None):
        x = self.x if x is None else x
        y = self.y if y is None else y
        first_capture = self.mode == "capture" and self.comp.compiled is None
        try:
            lc = self.comp.call(x, y)
        except ag.CaptureError as exc:
            # A CUDA graph cannot follow a changed world: it raises naming the guard, before
            # anything ran; capturing again is the user's way on.
            assert "CUDA graph" in str(exc) and "since the step was recorded" in str(exc)
            self.check()
            self.comp.compiled = None
            first_capture = True
            lc = self.comp.call(x, y)
        le = self.eager.call(x, y)
        if first_capture:  # the constructor ran warmup + 1 = 2 steps
            le = self.eager.call(x, y)
        self._same(_host(lc), _host(le), "loss")
        self.check()

    def _same(self, a, b, name):
        if self.eager.backend == "cupy":  # a CUDA graph's GEMMs use their own cuBLAS handle
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=name)
        else:
            assert np.array_equal(a, b), name

    def both(self, change):
        change(self.eager)
        change(self.comp)

    def check(self):
        for (n, a), (_, b) in zip(self.eager.state(), self.comp.state(), strict=True):
            assert (a is None) == (b is None), n
            if a is not None:
                self._same(a, b, n)


# -- each assumption, by name -------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_gradient_accumulation_with_zero_grad_outside(backend, mode):
    """The step adds to .grad; an optimizer step and zero_grad (set to None) run outside every
    three calls: the leaves alternate between having no .grad and having one."""
    p = Pair(backend, mode, step_kind="accum")
    for k in range(9):
        p.call()
        if k % 3 == 2:
            p.both(lambda t: (t.opt.step(), t.opt.zero_grad()))
            p.check()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_grad_assigned_or_deleted_between_calls(backend, mode):
    p = Pair(backend, mode, step_kind="accum")
    p.call()
    p.call()

    def assign(t):
        w = t.model.l1.weight
        w.grad = ag.ones_like(w)

    p.both(assign)
    p.call()
    p.both(lambda t: setattr(t.model.l2.bias, "grad", None))
    p.call()
    p.call()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_freezing_and_unfreezing_a_parameter(backend, mode):
    p = Pair(backend, mode)
    p.call()
    p.call()
    p.both(lambda t: (t.model.l1.weight.requires_grad_(False),
                      setattr(t.model.l1.weight, "grad", None)))
    before = _host(p.comp.model.l1.weight)
    p.call()
    p.call()
    assert np.array_equal(before, _host(p.comp.model.l1.weight))  # frozen: never moved
    p.both(lambda t: t.model.l1.weight.requires_grad_(True))
    p.call()
    p.call()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_module_state_rebound_inside_the_step(backend, mode):
    """``self.ema = 0.9 * self.ema + ...`` in forward: each replay reads the attribute as it is
    and stores a new Tensor there, as eager does (a reference kept from before keeps its
    values)."""
    p = Pair(backend, mode)
    for _ in range(3):
        p.call()
    kept = p.comp.model.ema
    kept_value = _host(kept)
    p.call()
    assert np.array_equal(_host(kept), kept_value)
    assert p.comp.model.ema is not kept
    p.both(lambda t: setattr(t.model, "ema", ag.ones_like(t.model.ema)))  # reset from outside
    p.call()
    p.call()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_submodule_swapped_and_python_values_changed(backend, mode):
    p = Pair(backend, mode)
    p.call()
    p.call()
    p.both(lambda t: setattr(t.model, "l1", nn.Linear(4, 6, backend=t.backend, seed=7)))
    p.call()
    p.call()
    p.both(lambda t: setattr(t.model, "scale", 2.0))
    p.call()
    p.both(lambda t: t.model.eval())
    p.call()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("opt_kind", ["sgd", "adam"])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_hyperparameters_schedulers_and_param_groups(backend, mode, opt_kind):
    p = Pair(backend, mode, opt_kind=opt_kind)
    for _ in range(4):
        p.call()
        p.both(lambda t: t.sched.step())
    key = "momentum" if opt_kind == "sgd" else "betas"
    value = 0.5 if opt_kind == "sgd" else (0.5, 0.9)
    p.both(lambda t: t.opt.param_groups[0].__setitem__(key, value))
    p.call()
    p.call()
    p.both(lambda t: t.opt.param_groups[0].__setitem__("weight_decay", 0.1))
    p.call()
    p.both(lambda t: t.opt.param_groups[0]["params"].pop())  # the last bias leaves the group
    p.call()
    p.call()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_first_call_of_a_signature_and_capture_warmup_see_the_current_rate(backend):
    """The device learning rate was synced at 0.1 by earlier eager steps; the rate is then set
    ten times larger: the warm-up call of a new jit signature and capture's warm-up and
    recording calls must use it."""
    for mode in MODES:
        p = Pair(backend, mode)
        for _ in range(2):
            p.comp.fn(p.x, p.y)
            p.eager.fn(p.x, p.y)
        p.both(lambda t: t.opt.param_groups[0].__setitem__("lr", 1.0))
        p.call()
        p.call()
        x2, y2 = _data(backend, seed=1, n=7)  # a new signature (jit)
        p.both(lambda t: t.opt.param_groups[0].__setitem__("lr", 0.05))
        p.call(x2, y2) if mode == "jit" else p.call()
        p.call()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_optimizer_and_model_state_loaded_between_calls(backend, mode):
    p = Pair(backend, mode, opt_kind="adam")
    p.call()
    saved_opt = p.eager.opt.state_dict()
    saved_opt = {"state": {k: {n: (ag.asarray(v, copy=True) if isinstance(v, ag.Tensor) else v)
                               for n, v in s.items()} for k, s in saved_opt["state"].items()},
                 "param_groups": saved_opt["param_groups"]}
    p.call()
    p.call()
    p.both(lambda t: t.opt.load_state_dict(saved_opt))
    p.call()
    p.call()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_hooks_added_and_removed(backend, mode):
    p = Pair(backend, mode)
    p.call()
    p.call()
    handles = []
    p.both(lambda t: handles.append(t.model.l2.weight.register_hook(lambda g: g * 2.0)))
    p.call()
    p.call()
    for h in handles:
        h.remove()
    p.call()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_global_modes(backend, mode):
    p = Pair(backend, mode)
    p.call()
    p.call()
    with ag.no_grad():  # eager cannot step (no graph): the compiled step must not either
        with pytest.raises(RuntimeError):
            p.eager.call(p.x, p.y)
        with pytest.raises(RuntimeError):
            p.comp.call(p.x, p.y)
    p.check()
    with ag.detect_anomaly():
        p.call()
    p.call()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_default_dtype_changed_between_calls(backend):
    def make():
        w = ag.tensor(np.ones(3, np.float64), requires_grad=True, backend=backend)

        def f(x):
            z = ag.zeros(3)  # the default dtype: float64 or float32
            return ag.sum((w + x + z) ** 2), z
        return w, f

    w, f = make()
    g = ag.jit(lambda x: f(x)[1], warmup=0)
    x = ag.tensor(np.ones(3), backend=backend)
    with ag.no_grad(), ag.default_backend(backend):
        assert g(x).dtype == ag.float32 or g(x).dtype == ag.float64
        ag.set_default_dtype(ag.float32)
        try:
            assert g(x).dtype == ag.float32
        finally:
            ag.set_default_dtype(None)
        assert g(x).dtype == ag.zeros(3, dtype=None).dtype


@pytest.mark.parametrize("backend", [
    b if b.values[0] == "numpy" else pytest.param(*b.values, marks=pytest.mark.slow, id=b.id)
    for b in CPU_BACKENDS])  # (array_api_strict: the same recordings, behind -m slow for time)
def test_python_side_effects_are_traced_again_not_replayed(backend):
    """A step that appends to a Python list cannot be replayed: every call is traced (a real
    call), so the list grows as in eager; after a few, a warning says why it is slow."""
    w = ag.tensor(np.ones(3), requires_grad=True, backend=backend)
    history = []

    def step(x):
        w.grad = None
        loss = ag.sum(w * x)
        loss.backward()
        history.append(loss.detach())
        return loss

    f = ag.jit(step, warmup=0)
    x = ag.tensor(np.arange(3.0), backend=backend)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(10):
            f(x)
    assert len(history) == 10
    assert any("recorded again" in str(c.message) and "keeps a Tensor" in str(c.message)
               for c in caught)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_numpy_array_operand_is_a_constant_of_its_backend(backend):
    with ag.default_backend(backend):
        w = ag.tensor([1.0, 1.0, 1.0], requires_grad=True)
        c = ag.asarray([1.0, 2.0, 3.0]).data  # a raw array of the backend, read by closure

    @ag.jit(warmup=0)
    def f(x):
        w.grad = None
        loss = ag.sum(w * x + c)
        loss.backward()
        return loss

    x = ag.tensor([1.0, 2.0, 3.0], backend=backend)
    for _ in range(3):
        assert float(f(x)) == 12.0
        assert np.array_equal(_host(w.grad), [1.0, 2.0, 3.0])


def test_jit_of_a_forward_with_backward_outside_runs_eagerly():
    """``loss = ag.jit(model)(x); loss.backward()`` (torch.compile's habit) and
    ``ag.grad(ag.jit(f))`` (JAX's): a replay has no graph, so calls with grad enabled run the
    function eagerly -- the gradients are eager's, on every call, before and after replays
    under no_grad; a one-time warning says so. ``ag.capture`` (a whole-step recorder) and a
    traced first call (``warmup=0``) still refuse."""
    model = nn.Linear(3, 2, seed=0)
    twin = nn.Linear(3, 2, seed=0)
    f = ag.jit(model)
    x = ag.tensor(np.arange(12.0, dtype=np.float32).reshape(4, 3))
    with ag.no_grad():  # inference first: recorded and replayed
        a, _, c = f(x), f(x), f(x)
    assert np.array_equal(_host(a), _host(c)) and f.cache_info()["traces"] == 1
    with pytest.warns(ag.JitEagerWarning, match=r"differentiated from outside"):
        y = f(x)
    for k in range(3):
        if k:
            y = f(x)
        model.zero_grad()
        twin.zero_grad()
        ag.sum(y * y).backward()
        ag.sum(twin(x) * twin(x)).backward()
        for p, q in zip(model.parameters(), twin.parameters()):
            assert np.array_equal(_host(p.grad), _host(q.grad))
    with ag.no_grad():  # and inference still replays (traced again: the parameters now hold
        # a .grad, part of a recording's guards)
        assert np.array_equal(_host(f(x)), _host(a)) and np.array_equal(_host(f(x)), _host(a))

    def loss(w):
        return ag.sum(ag.sin(w) * w)

    g = ag.grad(ag.jit(loss))
    w = ag.tensor([0.5, 1.0, 2.0])
    want = _host(ag.grad(loss)(w))
    with pytest.warns(ag.JitEagerWarning):
        got = [_host(g(w)) for _ in range(4)]
    assert all(np.array_equal(v, want) for v in got)
    with pytest.raises(ag.CaptureError, match=r"ag\.jit.*requires grad.*warmup=1"):
        ag.grad(ag.jit(loss, warmup=0))(w)
    with pytest.raises(ag.CaptureError, match=r"ag\.capture.*requires grad"):
        ag.capture(model, x)


def test_errors_raised_under_jit_name_jit():
    @ag.jit(warmup=0)
    def f(x):
        return x * ag.sum(x).item()

    with pytest.raises(ag.CaptureError, match=r"ag\.jit") as info:
        f(ag.tensor(np.ones(3)))
    assert "ag.capture" not in str(info.value)


# -- the property: random world changes between calls -----------------------------------------


_CHANGES = ("zero_grad", "freeze", "unfreeze", "lr", "hyper", "sched", "swap", "grad_none",
            "grad_ones", "scale", "hook", "unhook", "ema_reset", "eval_train", "outside_step")


class ReplayMachine(RuleBasedStateMachine):
    """An eager model and its compiled twin; calls and random changes of the world between
    them. After every call the parameters and gradients are bit-identical (or the compiled
    call raised naming what changed: then the eager one must raise too)."""

    backend = "numpy"
    mode = "jit"

    @initialize(opt_kind=st.sampled_from(["sgd", "adam"]),
                step_kind=st.sampled_from(["full", "accum"]))
    def setup(self, opt_kind, step_kind):
        self.pair = Pair(self.backend, self.mode, opt_kind, step_kind)
        self.handles = []
        self.frozen = False

    @rule()
    def call(self):
        self.pair.call()

    @rule(change=st.sampled_from(_CHANGES), which=st.integers(0, 3))
    def change(self, change, which):
        def apply(t):
            params = [t.model.l1.weight, t.model.l1.bias, t.model.l2.weight, t.model.l2.bias]
            p = params[which]
            if change == "zero_grad":
                t.opt.zero_grad()
            elif change == "freeze":
                p.requires_grad_(False)
                p.grad = None
            elif change == "unfreeze":
                for q in params:
                    q.requires_grad_(True)
            elif change == "lr":
                t.opt.param_groups[0]["lr"] = [0.5, 0.05, 0.01, 0.2][which]
            elif change == "hyper":
                g = t.opt.param_groups[0]
                if "momentum" in g:
                    g["momentum"] = [0.0, 0.5, 0.9, 0.99][which]
                else:
                    g["betas"] = [(0.9, 0.999), (0.5, 0.9), (0.8, 0.99), (0.0, 0.5)][which]
            elif change == "sched":
                t.sched.step()
            elif change == "swap":
                t.model.l1 = nn.Linear(4, 6, backend=t.backend, seed=10 + which)
            elif change == "grad_none":
                p.grad = None
            elif change == "grad_ones":
                if p.requires_grad:
                    p.grad = ag.ones_like(p)
            elif change == "scale":
                t.model.scale = [1.0, 2.0, 0.5, -1.0][which]
            elif change == "hook":
                if p.requires_grad:
                    self.handles.append(p.register_hook(lambda g: g * 0.5))
            elif change == "unhook":
                for h in self.handles:
                    h.remove()
            elif change == "ema_reset":
                t.model.ema = ag.zeros_like(t.model.ema)
            elif change == "eval_train":
                t.model.train(not t.model.training)
            elif change == "outside_step":
                t.opt.step()

        apply(self.pair.eager)
        apply(self.pair.comp)
        if change == "unhook":
            self.handles.clear()

    @invariant()
    def same(self):
        if hasattr(self, "pair"):
            self.pair.check()


def _settings(runs):
    return settings(max_examples=runs, stateful_step_count=20, deadline=None,
                    suppress_health_check=list(HealthCheck))


def _machine(backend, mode):
    return type(f"Replay_{backend}_{mode}", (ReplayMachine,), {"backend": backend, "mode": mode})


# 10 runs of 20 steps per backend and front end on every CI run; 50 with `-m slow`
@pytest.mark.parametrize("runs", [10, pytest.param(50, marks=pytest.mark.slow)])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("backend", CPU_BACKENDS + GPU_BACKENDS + [
    pytest.param(b, marks=pytest.mark.slow, id=b) for b in ("torch",) if _params((b,))])
def test_property_replays_equal_eager_under_random_world_changes(backend, mode, runs):
    from hypothesis.stateful import run_state_machine_as_test

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        run_state_machine_as_test(_machine(backend, mode), settings=_settings(runs))


@pytest.mark.parametrize("mode", MODES)
def test_containers_mutated_in_place_and_param_lists(mode):
    """Structure changed without an attribute assignment: an entry of a Sequential's plain
    list or of a ModuleList replaced, and a parameter dropped from a group's list in place."""
    def make():
        seq = nn.Sequential(nn.Linear(4, 5, seed=0), nn.Tanh(), nn.Linear(5, 3, seed=1))
        heads = nn.ModuleList([nn.Linear(3, 3, seed=2), nn.Linear(3, 3, seed=3)])
        params = seq.parameters() + heads.parameters()
        opt = optim.SGD(params, lr=0.1, momentum=0.9, capturable=True)

        def step(x, y):
            opt.zero_grad()
            loss = F.cross_entropy(heads[0](seq(x)), y)
            loss.backward()
            opt.step()
            return loss
        return seq, heads, opt, step

    x, y = _data("numpy")
    e, c = make(), make()
    f = ag.jit(c[3]) if mode == "jit" else ag.capture(c[3], x, y, warmup=1)
    if mode == "capture":
        e[3](x, y)
        e[3](x, y)

    def both(change):
        change(*e[:3])
        change(*c[:3])

    def call():
        a, b = e[3](x, y), f(x, y)
        assert np.array_equal(_host(a), _host(b))
        for p, q in zip(e[0].parameters() + e[1].parameters(),
                        c[0].parameters() + c[1].parameters(), strict=True):
            assert np.array_equal(_host(p), _host(q))

    # made before the first call: constructing a module moves the world epoch by itself
    spare = {id(s): (nn.Linear(5, 3, seed=9), nn.Linear(3, 3, seed=8)) for s in (e, c)}
    for _ in range(3):
        call()
    both(lambda seq, heads, opt: seq.layers.__setitem__(2, spare[id(e if seq is e[0] else c)][0]))
    call()
    call()
    both(lambda seq, heads, opt: heads.__setitem__(0, spare[id(e if seq is e[0] else c)][1]))
    call()
    call()
    both(lambda seq, heads, opt: opt.param_groups[0]["params"].pop(0))
    call()
    call()


@pytest.mark.parametrize("mode", MODES)
def test_parameter_dropped_from_a_group_in_place(mode):
    def make():
        seq = nn.Sequential(nn.Linear(4, 5, seed=0), nn.Tanh(), nn.Linear(5, 3, seed=1))
        opt = optim.SGD(seq.parameters(), lr=0.1, momentum=0.9, capturable=True)

        def step(x, y):
            opt.zero_grad()
            loss = F.cross_entropy(seq(x), y)
            loss.backward()
            opt.step()
            return loss
        return seq, opt, step

    x, y = _data("numpy")
    (se, oe, fe), (sc, oc, fc) = make(), make()
    f = ag.jit(fc) if mode == "jit" else ag.capture(fc, x, y, warmup=1)
    for _ in range(4):
        fe(x, y)
    for _ in range(4 if mode == "jit" else 2):  # capture's constructor made 2 steps
        f(x, y)
    oe.param_groups[0]["params"].pop(0)  # in place: no attribute assigned, no epoch moved
    oc.param_groups[0]["params"].pop(0)
    for _ in range(3):
        fe(x, y)
        f(x, y)
        for p, q in zip(se.parameters(), sc.parameters(), strict=True):
            assert np.array_equal(_host(p), _host(q))


def test_constants_are_compared_by_kind_as_well_as_value():
    w = ag.tensor(np.arange(3), dtype=ag.int64)

    def f(x, k):
        return x * k + w

    x = ag.tensor(np.arange(3), dtype=ag.int64)
    step = ag.capture(f, x, 2)
    assert step(x, 2).dtype == ag.int64
    with pytest.raises(ag.CaptureError, match=r"constant 2 \(int\).*2\.0 \(float\)"):
        step(x, 2.0)
    g = ag.jit(f, warmup=0)
    assert g(x, 2).dtype == ag.int64
    assert g(x, 2.0).dtype == f(x, 2.0).dtype  # another kind: another signature


def test_jit_takes_keyword_arguments_as_part_of_the_signature():
    w = ag.tensor(np.ones(3), requires_grad=True)

    @ag.jit(warmup=0)
    def step(x, *, scale=1.0, bias=None):
        w.grad = None
        loss = ag.sum(w * x * scale + (0.0 if bias is None else bias))
        loss.backward()
        return loss

    x = ag.tensor(np.arange(3.0))
    b = ag.tensor(np.full(3, 2.0))
    for _ in range(2):
        assert float(step(x)) == 3.0
        assert float(step(x, scale=2.0)) == 6.0
        assert float(step(x, scale=2.0, bias=b)) == 12.0
        assert np.array_equal(_host(w.grad), [0.0, 2.0, 4.0])
    assert step.cache_info()["size"] == 3


def test_optimizer_and_clipping_errors_under_jit_name_jit():
    w = ag.tensor(np.ones(3), requires_grad=True)
    opt = optim.SGD([w], lr=0.1)  # not capturable

    def step(x):
        w.grad = None
        ag.sum(w * x).backward()
        opt.step()
        return w

    with pytest.raises(ag.CaptureError, match=r"inside a step recorded by ag\.jit"):
        ag.jit(step, warmup=0)(ag.tensor(np.ones(3)))

    def clip(x):
        w.grad = None
        ag.sum(w * x).backward()
        nn.utils.clip_grad_norm_([w], 1.0, error_if_nonfinite=True)
        return w

    with pytest.raises(ag.CaptureError, match=r"inside a step recorded by ag\.jit"):
        ag.jit(clip, warmup=0)(ag.tensor(np.ones(3)))


def test_default_backend_changed_between_calls():
    """A recording made while NumPy was the default backend is not replayed under another
    default: eager would create its constants there (here: and refuse to mix them)."""
    @ag.jit(warmup=0)
    def f(x):
        return x + ag.ones(3)  # the default backend's ones

    x = ag.tensor(np.zeros(3))
    with ag.no_grad():
        for _ in range(2):
            assert np.array_equal(_host(f(x)), [1.0, 1.0, 1.0])
        with ag.default_backend("array_api_strict"):
            with pytest.raises(TypeError, match="mix"):
                x + ag.ones(3)  # eager
            with pytest.raises((TypeError, ag.CaptureError), match="mix"):
                f(x)
        assert np.array_equal(_host(f(x)), [1.0, 1.0, 1.0])
