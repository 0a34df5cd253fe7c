"""agnograd.optim against torch.optim on real and complex parameters (issue 22, class 5).

PyTorch treats a complex parameter as a pair of real ones (``view_as_real``): the second moments
of Adam, AdamW, RMSprop and Adagrad are kept per real component. Every optimizer with every
option, in float32, float64, complex64 and complex128, eager and ``capturable=True``, takes 20
steps on the same loss as its ``torch.optim`` twin; the parameters and every state entry agree
to rounding, and a PyTorch state dict loads into ours and continues the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import agnograd as ag
from agnograd import optim

from .conftest import CPU_BACKENDS


def _torch() -> Any:
    """PyTorch, the reference (the ``oracle`` extra); the test skips without it."""
    return pytest.importorskip("torch")

P0 = np.array([[0.5 - 1.0j, 2.0 + 0.25j, -0.7 + 0.1j],
               [1.5 + 0.8j, -0.3 - 0.6j, 0.9 - 1.7j]])
TARGET = np.array([[1.0 + 0.5j, 0.0 - 1.0j, -1.0 + 2.0j],
                   [0.4 - 0.2j, 3.0 + 0.0j, -0.5 - 0.5j]])
WEIGHT = np.array([[1.0, 2.0, 0.5], [3.0, 0.25, 1.5]])
STEPS = 20

OPTIONS: list[tuple[str, dict[str, Any]]] = [
    ("SGD", {"lr": 0.05}),
    ("SGD", {"lr": 0.05, "momentum": 0.9}),
    ("SGD", {"lr": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 0.1}),
    ("SGD", {"lr": 0.02, "momentum": 0.5, "dampening": 0.3, "weight_decay": 0.05}),
    ("Adam", {"lr": 0.1}),
    ("Adam", {"lr": 0.1, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.3}),
    ("Adam", {"lr": 0.01, "betas": (0.0, 0.0)}),
    ("AdamW", {"lr": 0.05}),
    ("AdamW", {"lr": 0.1, "betas": (0.85, 0.95), "weight_decay": 0.3}),
    ("RMSprop", {"lr": 0.01}),
    ("RMSprop", {"lr": 0.01, "alpha": 0.9, "momentum": 0.5}),
    ("RMSprop", {"lr": 0.01, "centered": True}),
    ("RMSprop", {"lr": 0.01, "alpha": 0.95, "eps": 1e-6, "weight_decay": 0.1, "momentum": 0.9,
                 "centered": True}),
    ("Adagrad", {"lr": 0.1}),
    ("Adagrad", {"lr": 0.1, "lr_decay": 0.05, "weight_decay": 0.1}),
    ("Adagrad", {"lr": 0.1, "initial_accumulator_value": 0.5, "eps": 1e-6}),
    # issue 25: amsgrad (state "max_exp_avg_sq") and maximize
    ("SGD", {"lr": 0.002, "momentum": 0.5, "maximize": True, "weight_decay": 0.1}),
    ("SGD", {"lr": 0.002, "maximize": True}),
    ("Adam", {"lr": 0.1, "amsgrad": True}),
    ("Adam", {"lr": 0.05, "betas": (0.5, 0.9), "amsgrad": True, "maximize": True,
              "weight_decay": 0.1}),
    ("AdamW", {"lr": 0.1, "amsgrad": True, "weight_decay": 0.3}),
    ("AdamW", {"lr": 0.05, "maximize": True}),
    ("RMSprop", {"lr": 0.01, "momentum": 0.5, "maximize": True}),
    ("Adagrad", {"lr": 0.1, "maximize": True}),
]
OIDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for n, kw in OPTIONS]
DTYPES = ["float32", "float64", "complex64", "complex128"]
# (rtol, atol): the parameters are of order 1, so atol is relative to their scale
TOL = {"float32": (1e-6, 1e-6), "complex64": (1e-6, 1e-6),
       "float64": (1e-12, 1e-14), "complex128": (1e-12, 1e-14)}


def _start(dtype: str) -> np.ndarray:
    p = P0 if dtype.startswith("complex") else P0.real
    return p.astype(dtype)


def _constants(p: ag.Tensor) -> tuple[ag.Tensor, ag.Tensor]:
    """The loss's target and weights, of ``p``'s kind and precision."""
    t = ag.tensor(TARGET if p.dtype.kind == "c" else TARGET.real, dtype=p.dtype)
    w = ag.tensor(WEIGHT, dtype=ag.float32 if p.dtype in (ag.float32, ag.complex64)
                  else ag.float64)
    return t, w


def _our_loss(p: ag.Tensor, constants: tuple[ag.Tensor, ag.Tensor] | None = None) -> ag.Tensor:
    """Σ w·|p - T|² + 0.05 Σ |p|⁴: real, non-quadratic (every step's gradient differs)."""
    t, w = _constants(p) if constants is None else constants
    return ag.sum(w * ag.abs(p - t) ** 2) + 0.05 * ag.sum(ag.abs(p) ** 4)


def _torch_loss(p: Any) -> Any:
    torch = _torch()
    t = torch.tensor(TARGET if p.is_complex() else TARGET.real, dtype=p.dtype)
    w = torch.tensor(WEIGHT, dtype=p.real.dtype)
    return (w * (p - t).abs() ** 2).sum() + 0.05 * (p.abs() ** 4).sum()


def _ours(name: str, kw: dict[str, Any], dtype: str, capturable: bool,
          steps: int = STEPS) -> tuple[ag.Tensor, optim.Optimizer, list[float]]:
    p = ag.tensor(_start(dtype), requires_grad=True)
    opt = getattr(optim, name)([p], capturable=capturable, **kw)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = _our_loss(p)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return p, opt, losses


def _theirs(name: str, kw: dict[str, Any], dtype: str,
            steps: int = STEPS) -> tuple[Any, Any, list[float]]:
    torch = _torch()
    p = torch.tensor(_start(dtype), requires_grad=True)
    opt = getattr(torch.optim, name)([p], **kw)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = _torch_loss(p)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return p, opt, losses


def _np(x: Any) -> np.ndarray:
    return x.detach().numpy() if hasattr(x, "detach") and not isinstance(x, ag.Tensor) \
        else np.asarray(x.numpy())


@pytest.mark.parametrize("capturable", [False, True], ids=["eager", "capturable"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, kw", OPTIONS, ids=OIDS)
def test_every_optimizer_matches_pytorch_on_real_and_complex_parameters(name, kw, dtype,
                                                                        capturable):
    ours, opt, our_losses = _ours(name, kw, dtype, capturable)
    theirs, topt, their_losses = _theirs(name, kw, dtype)
    rtol, atol = TOL[dtype]
    assert ours.dtype.name == dtype
    np.testing.assert_allclose(_np(ours), _np(theirs), rtol=rtol, atol=atol)
    np.testing.assert_allclose(our_losses, their_losses, rtol=10 * rtol)
    # The state has PyTorch's entries, shapes, dtypes and values (complex moments hold the
    # real and imaginary components' moments in their real and imaginary parts).
    state, tstate = opt.state[id(ours)], topt.state[theirs]
    assert set(state) == set(tstate)
    for k, tv in tstate.items():
        v = state[k]
        if k == "step":
            assert float(v.item() if isinstance(v, ag.Tensor) else v) == float(tv) == STEPS
            if isinstance(v, ag.Tensor):  # a capturable count: real, of the parameter's precision
                assert v.ndim == 0 and v.dtype.name == ("float32" if dtype in ("float32", "complex64")
                                                        else "float64")
            continue
        assert v.shape == tuple(tv.shape) and v.dtype.name == dtype, k
        np.testing.assert_allclose(_np(v), _np(tv), rtol=100 * rtol, atol=atol, err_msg=k)


@pytest.mark.parametrize("capturable", [False, True], ids=["eager", "capturable"])
@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
@pytest.mark.parametrize("name, kw", OPTIONS, ids=OIDS)
def test_a_pytorch_state_dict_loads_and_continues(name, kw, dtype, capturable):
    """Ten steps in PyTorch, its state dict (as NumPy arrays) loaded into ours, ten more steps
    on each side: the same parameters as twenty steps in PyTorch."""
    theirs, topt, _ = _theirs(name, kw, dtype, steps=10)
    sd = topt.state_dict()
    converted = {"param_groups": [{k: v for k, v in g.items()
                                   if k in ("params",) or k in kw} for g in sd["param_groups"]],
                 "state": {i: {k: (v.detach().numpy() if k != "step" else v.numpy())
                               for k, v in s.items()} for i, s in sd["state"].items()}}
    p = ag.tensor(theirs.detach().numpy(), requires_grad=True)
    opt = getattr(optim, name)([p], capturable=capturable, **kw)
    opt.load_state_dict(converted)
    for _ in range(10):
        opt.zero_grad()
        _our_loss(p).backward()
        opt.step()
        topt.zero_grad()
        _torch_loss(theirs).backward()
        topt.step()
    rtol, atol = TOL[dtype]
    np.testing.assert_allclose(p.numpy(), theirs.detach().numpy(), rtol=rtol, atol=atol)


def test_adam_on_a_complex_parameter_reaches_pytorchs_loss():
    """The reported example: Adam on a complex parameter, 20 steps. Squaring the complex
    gradient (g·g) into the second moment left the loss far from PyTorch's; per real component
    it is PyTorch's."""
    p, _, _ = _ours("Adam", {"lr": 0.1}, "complex128", capturable=False)
    tp, _, _ = _theirs("Adam", {"lr": 0.1}, "complex128")
    ours, theirs = _our_loss(p).item(), _torch_loss(tp).item()   # after the 20 steps
    assert ours == pytest.approx(theirs, rel=1e-12)
    # What the complex square gives (the old rule, by hand): another trajectory altogether.
    m = v = np.zeros_like(P0)
    x = P0.copy()
    for t in range(1, STEPS + 1):
        p = ag.tensor(x, requires_grad=True)
        _our_loss(p).backward()
        g = p.grad.numpy()
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        x = x - 0.1 / (1 - 0.9**t) * m / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    assert _our_loss(ag.tensor(x)).item() > 2 * theirs   # 13.85 against PyTorch's 2.42


CAPTURED = [("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
            ("SGD", {"lr": 0.002, "momentum": 0.5, "maximize": True}),
            ("Adam", {"lr": 0.1, "amsgrad": True, "maximize": True}),
            ("AdamW", {"lr": 0.1, "amsgrad": True}),
            ("Adam", {"lr": 0.1, "weight_decay": 0.1}),
            ("AdamW", {"lr": 0.1}),
            ("RMSprop", {"lr": 0.01, "momentum": 0.5, "centered": True}),
            ("Adagrad", {"lr": 0.1, "lr_decay": 0.05})]


@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
@pytest.mark.parametrize("name, kw", CAPTURED, ids=[c[0] for c in CAPTURED])
def test_a_captured_step_on_complex_parameters_trains_as_pytorch(name, kw, dtype):
    """capturable=True under ag.capture: the per-component update is recorded (standard ops
    only, no host reads) and its replays take PyTorch's steps."""
    p = ag.tensor(_start(dtype), requires_grad=True)
    constants = _constants(p)
    opt = getattr(optim, name)([p], capturable=True, **kw)

    def step() -> ag.Tensor:
        opt.zero_grad()
        loss = _our_loss(p, constants)
        loss.backward()
        opt.step()
        return loss

    captured = ag.capture(step, warmup=1)  # runs the step twice: a warm-up and the recording
    for _ in range(STEPS - 2):
        captured()
    theirs, _, _ = _theirs(name, kw, dtype)
    rtol, atol = TOL[dtype]
    np.testing.assert_allclose(p.numpy(), theirs.detach().numpy(), rtol=rtol, atol=atol)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("name, kw", OPTIONS, ids=OIDS)
def test_complex_updates_are_the_same_on_every_backend(name, kw, backend):
    """The per-component update uses standard functions only (array_api_strict runs it), and
    gives NumPy's parameters on every backend, eager and capturable."""
    ref, _, _ = _ours(name, kw, "complex128", capturable=False, steps=5)
    for capturable in (False, True):
        p = ag.tensor(_start("complex128"), requires_grad=True, backend=backend)
        t = ag.tensor(TARGET, backend=backend)
        w = ag.tensor(WEIGHT, backend=backend)
        opt = getattr(optim, name)([p], capturable=capturable, **kw)
        for _ in range(5):
            opt.zero_grad()
            _our_loss(p, (t, w)).backward()
            opt.step()
        assert all(v.backend == backend for v in opt.state[id(p)].values()
                   if isinstance(v, ag.Tensor))
        np.testing.assert_allclose(ag.to_backend(p.detach(), "numpy").numpy(), ref.numpy(),
                                   rtol=1e-13, atol=1e-15)


def test_a_real_moment_for_a_complex_parameter_is_refused():
    p = ag.tensor(P0.copy(), requires_grad=True)
    opt = optim.Adam([p], lr=0.1)
    sd = {"param_groups": opt.state_dict()["param_groups"],
          "state": {0: {"step": 3, "exp_avg": np.zeros(P0.shape, complex),
                        "exp_avg_sq": np.zeros(P0.shape)}}}
    with pytest.raises(ValueError, match="'exp_avg_sq' of parameter 0 is float64 and the "
                                         "parameter complex128"):
        opt.load_state_dict(sd)
    assert opt.state == {}
