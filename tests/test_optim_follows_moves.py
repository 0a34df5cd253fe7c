"""An optimizer made before ``Module.astype`` / ``Module.to_backend`` follows the parameters to
the new Tensors those conversions make (PyTorch's conversions keep the Parameter objects, so
its optimizers keep training the model). It used to go on updating the old Tensors: the model
silently stopped learning."""

from __future__ import annotations

import numpy as np
import pytest

import agnograd as ag
import agnograd.nn as nn

OPTIMIZERS = {
    "sgd": lambda ps: ag.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01),
    "adam": lambda ps: ag.optim.Adam(ps, lr=0.05, amsgrad=True),
    "adamw": lambda ps: ag.optim.AdamW(ps, lr=0.05),
    "rmsprop": lambda ps: ag.optim.RMSprop(ps, lr=0.01, momentum=0.5),
    "adagrad": lambda ps: ag.optim.Adagrad(ps, lr=0.1),
}


def _model():
    return nn.Sequential(nn.Linear(3, 4, seed=0), nn.Tanh(), nn.Linear(4, 2, seed=1))


def _step(model, opt, x):
    opt.zero_grad()
    loss = ag.sum(model(x) ** 2)
    loss.backward()
    opt.step()


def _host(t):
    return np.asarray(t.numpy())


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("move", ["astype", "to_backend"])
def test_an_optimizer_made_before_a_conversion_trains_the_converted_model(name, move):
    x32 = np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)
    model, ref = _model(), _model()
    opt = OPTIMIZERS[name](list(model.parameters()))
    ref_opt = OPTIMIZERS[name](list(ref.parameters()))
    for m, o in ((model, opt), (ref, ref_opt)):
        _step(m, o, ag.tensor(x32))
    if move == "astype":
        model.astype(ag.float64)
        ref.astype(ag.float64)
        x = ag.tensor(x32.astype(np.float64))
    else:
        model.to_backend("array_api_strict")
        ref.to_backend("array_api_strict")
        x = ag.tensor(x32, backend="array_api_strict")
    # the reference: a new optimizer given the old one's state, as load_state_dict converts it
    state = ref_opt.state_dict()
    ref_opt = OPTIMIZERS[name](list(ref.parameters()))
    ref_opt.load_state_dict(state)
    before = [_host(p).copy() for p in model.parameters()]
    for _ in range(3):
        _step(model, opt, x)
        _step(ref, ref_opt, x)
    for p, q, b in zip(model.parameters(), ref.parameters(), before):
        assert p.dtype == q.dtype and p.backend == q.backend
        assert not np.array_equal(_host(p), b)  # it learns
        np.testing.assert_array_equal(_host(p), _host(q))
    assert all(p is q for p, q in zip(opt.param_groups[0]["params"], model.parameters()))


def test_a_compiled_step_follows_the_conversion_too():
    x32 = np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)
    model, ref = _model(), _model()
    opt = ag.optim.SGD(list(model.parameters()), lr=0.1, momentum=0.9, capturable=True)
    ref_opt = ag.optim.SGD(list(ref.parameters()), lr=0.1, momentum=0.9)
    step = ag.jit(lambda x: _step(model, opt, x))
    for _ in range(3):
        step(ag.tensor(x32))
        _step(ref, ref_opt, ag.tensor(x32))
    model.astype(ag.float64)
    ref.astype(ag.float64)
    state = ref_opt.state_dict()
    ref_opt = ag.optim.SGD(list(ref.parameters()), lr=0.1, momentum=0.9)
    ref_opt.load_state_dict(state)
    x = ag.tensor(x32.astype(np.float64))
    before = [_host(p).copy() for p in model.parameters()]
    for _ in range(3):
        step(x)
        _step(ref, ref_opt, x)
    for p, q, b in zip(model.parameters(), ref.parameters(), before):
        assert p.dtype == ag.float64 and not np.array_equal(_host(p), b)
        np.testing.assert_allclose(_host(p), _host(q), rtol=1e-14, atol=1e-15)


def test_a_failed_optimizer_constructor_does_not_break_a_later_recording():
    """A constructor that raised leaves a half-built optimizer that a recording's scan of the
    live objects finds until it is collected (an exception kept alive holds it): its guards
    read it as empty. It used to raise AttributeError inside ag.capture, depending on when the
    garbage collector ran."""
    p = ag.tensor(np.ones(3), requires_grad=True)
    kept = []
    for bad in (lambda: ag.optim.SGD([p], lr=0.1, differentiable=True),
                lambda: ag.optim.SGD([p], lr=-1.0),
                lambda: ag.optim.Adam([p], betas=(2.0, 0.9))):
        try:
            bad()
        except (TypeError, ValueError) as e:
            kept.append(e)
    assert len(kept) == 3
    opt = ag.optim.SGD([p], lr=0.1, capturable=True)

    eager_calls = []

    def step(x):
        eager_calls.append(1)  # (Python: runs in the warm-up and recording calls, not replays)
        opt.zero_grad()
        ag.sum(p * x).backward()
        opt.step()

    x = ag.tensor([1.0, 2.0, 3.0])
    captured = ag.capture(step, x)
    for _ in range(3):
        captured(x)
    n = len(eager_calls) + 3
    np.testing.assert_allclose(_host(p), 1.0 - 0.1 * n * np.array([1.0, 2.0, 3.0]))
