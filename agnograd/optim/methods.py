"""SGD (with momentum and Nesterov), Adam, AdamW, RMSprop and Adagrad, with PyTorch's update
rules.

Complex parameters are treated as PyTorch treats them (``torch.view_as_real``): a complex
parameter is a pair of real parameters, so the non-linear parts of an update (the second
moments, their square roots and the divisions by them) act on the real and imaginary
components separately. The state keeps PyTorch's layout: ``exp_avg_sq``, ``square_avg`` and
``sum`` of a complex parameter are complex arrays whose real and imaginary parts hold the
moments of the real and imaginary components (so a PyTorch state dict maps one to one).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable
from typing import Any

import agnograd as ag

from .optimizer import Optimizer, ParamGroup, _real_scalar_like

__all__ = ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad"]


def _per_component(f: Callable[..., ag.Tensor], *xs: ag.Tensor) -> ag.Tensor:
    """``f(*xs)`` for real arrays; for complex ones, ``f`` applied to the real parts and to the
    imaginary parts separately, put back together as ``f(re...) + i·f(im...)`` (PyTorch's
    ``view_as_real`` rule for complex parameters). ``f`` uses only elementwise standard ops and
    real scalars (Python numbers or real 0-d arrays), so the result stays capture-safe."""
    if xs[0].dtype.kind != "c":
        return f(*xs)
    dtype = xs[0].dtype
    re = f(*(ag.real(x) for x in xs))
    im = f(*(ag.imag(x) for x in xs))
    # astype(re) + 1j·astype(im) is exact: each component is added to a zero.
    return ag.astype(re, dtype) + 1j * ag.astype(im, dtype)


def _square(a: ag.Tensor) -> ag.Tensor:
    """a² per real component: ``re(a)² + i·im(a)²`` for complex ``a`` (PyTorch's second moment
    of a complex gradient), ``a·a`` for real ``a``."""
    if a.dtype.kind != "c":
        return a * a
    return _per_component(lambda x: x * x, a)


def _one_minus_pow(b: float, t: ag.Tensor) -> ag.Tensor | float:
    """1 - bᵗ for a step count ``t`` on the device, as ``-expm1(t · log b)``: accurate in the
    count's own precision (``1 - 0.999ᵗ`` computed in float32 loses four digits to cancellation
    at small t; this keeps it to a few ulp, as the host's float64 bias corrections)."""
    if b == 0.0:
        return 1.0  # 1 - 0ᵗ for t >= 1
    return -ag.expm1(t * math.log(b))


def _nonneg(opt: Optimizer, group: ParamGroup, *names: str) -> None:
    for n in names:
        v = group[n]
        # numbers.Real: Python and NumPy scalars (np.float32 from a config), as PyTorch takes
        if isinstance(v, bool) or not (isinstance(v, numbers.Real) and float(v) >= 0):
            raise ValueError(f"{type(opt).__name__}: {n} must be a non-negative number, not "
                             f"{v!r}")
        # A Python number from here on (the same value): every backend takes it as a scalar
        group[n] = int(v) if isinstance(v, numbers.Integral) else float(v)


def _kernel_switches(name: str, differentiable: bool) -> None:
    """PyTorch's ``foreach`` and ``fused`` choose a kernel, not the numbers: accepted and
    ignored (one implementation here). ``differentiable=True`` is refused."""
    if differentiable:
        raise ValueError(f"{name}: differentiable=True (PyTorch's autograd through the optimizer "
                         "step) is not supported; the update runs under no_grad. Drop it")


class SGD(Optimizer):
    """Stochastic gradient descent, as ``torch.optim.SGD``:

        g ← ∇ (−∇ when ``maximize``),  g ← g + weight_decay · p
        b ← g (first step),  b ← momentum · b + (1 - dampening) · g (later steps)
        g ← g + momentum · b (Nesterov)  or  g ← b (momentum > 0)
        p ← p - lr · g

    ``maximize=True`` ascends the objective (PyTorch's option). ``capturable=True``: the
    learning rate lives on the device, so the step can be recorded by
    :func:`agnograd.capture` and a schedule that sets ``group["lr"]`` still applies to replays.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False, *,
                 maximize: bool = False, capturable: bool = False,
                 foreach: bool | None = None, fused: bool | None = None,
                 differentiable: bool = False) -> None:
        _kernel_switches("SGD", differentiable)
        # PyTorch's positional order (lr, momentum, dampening, weight_decay, nesterov) and
        # default rate: SGD(params, 0.1, 0.9, 0, 1e-4, True) means what it means in PyTorch.
        super().__init__(params, {"lr": lr, "momentum": momentum, "dampening": dampening,
                                  "weight_decay": weight_decay, "nesterov": nesterov,
                                  "maximize": bool(maximize)},
                         capturable=capturable)

    def _check(self, group: ParamGroup) -> None:
        _nonneg(self, group, "lr", "momentum", "weight_decay", "dampening")
        if isinstance(group["nesterov"], (int, float)) and not isinstance(group["nesterov"], bool):
            raise TypeError(f"SGD: nesterov must be True or False, not {group['nesterov']!r} (a "
                            "number there is a positional argument out of place: PyTorch's "
                            "order is lr, momentum, dampening, weight_decay, nesterov)")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(f"SGD: Nesterov momentum requires a momentum and zero dampening (as "
                             f"PyTorch's), got momentum={group['momentum']!r}, "
                             f"dampening={group['dampening']!r}; pass momentum > 0 and "
                             "dampening=0, or nesterov=False")

    def _update(self, p: ag.Tensor, g: ag.Tensor, state: dict[str, Any], group: ParamGroup) -> None:
        wd, mu = group["weight_decay"], group["momentum"]
        if group["maximize"]:
            g = -g
        if wd:
            g = g + wd * p
        if mu:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = ag.asarray(g, copy=True)
            else:
                buf *= mu
                buf += (1.0 - group["dampening"]) * g
            g = g + mu * buf if group["nesterov"] else buf
        p -= group["lr"] * g


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015), as ``torch.optim.Adam``; ``weight_decay`` adds
    ``weight_decay · p`` to the gradient (L2, coupled):

        m ← β1 m + (1 - β1) g,   v ← β2 v + (1 - β2) g²,   t ← t + 1
        p ← p - lr · (m / (1 - β1ᵗ)) / (√(v / (1 - β2ᵗ)) + eps)

    ``amsgrad=True`` (Reddi et al., 2018) divides by the running maximum of ``v`` instead,
    ``v̂ ← max(v̂, v)`` kept in ``state["max_exp_avg_sq"]`` (per real component for a complex
    parameter), as PyTorch's; ``maximize=True`` uses ``-∇`` (ascends the objective);
    ``decoupled_weight_decay=True`` (PyTorch's) decays as :class:`AdamW` does.

    ``capturable=True``: the learning rate and the step count ``t`` (``state["step"]``, a 0-d
    array of the parameter's real dtype) live on the device and the bias corrections are computed
    there, so the step can be recorded by :func:`agnograd.capture`; the updates equal the
    default path's to floating-point rounding.
    """

    _decoupled = False  # AdamW: True, and no "decoupled_weight_decay" entry in its groups

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, *, maximize: bool = False,
                 capturable: bool = False, decoupled_weight_decay: bool = False,
                 foreach: bool | None = None, fused: bool | None = None,
                 differentiable: bool = False) -> None:
        _kernel_switches(type(self).__name__, differentiable)
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay,
                    "amsgrad": bool(amsgrad), "maximize": bool(maximize)}
        if not self._decoupled:
            defaults["decoupled_weight_decay"] = bool(decoupled_weight_decay)
        super().__init__(params, defaults, capturable=capturable)

    def _check(self, group: ParamGroup) -> None:
        _nonneg(self, group, "lr", "eps", "weight_decay")
        name = type(self).__name__
        betas = group["betas"]
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise ValueError(f"{name}: betas must be a pair (beta1, beta2), not {betas!r}")
        if not all(isinstance(b, numbers.Real) and 0.0 <= float(b) < 1.0 for b in betas):
            raise ValueError(f"{name}: betas must be in [0, 1), not {tuple(betas)}")
        group["betas"] = (float(betas[0]), float(betas[1]))

    def _update(self, p: ag.Tensor, g: ag.Tensor, state: dict[str, Any], group: ParamGroup) -> None:
        lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
        b1, b2 = group["betas"]
        if not state:
            state["step"] = _real_scalar_like(p, 0.0) if self.capturable else 0
            state["exp_avg"] = ag.zeros_like(p)
            state["exp_avg_sq"] = ag.zeros_like(p)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = ag.zeros_like(p)
        if group["amsgrad"] and "max_exp_avg_sq" not in state:  # turned on later
            state["max_exp_avg_sq"] = ag.zeros_like(p)
        if self.capturable and not isinstance(state["step"], ag.Tensor):
            # A count loaded from a non-capturable optimizer's state: onto the device (a fill).
            state["step"] = _real_scalar_like(p, float(state["step"]))
        elif not self.capturable and isinstance(state["step"], ag.Tensor):
            state["step"] = round(float(state["step"]))
        if group["maximize"]:
            g = -g
        if wd:
            if group.get("decoupled_weight_decay", self._decoupled):
                p *= 1.0 - lr * wd
            else:
                g = g + wd * p
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m *= b1
        m += (1.0 - b1) * g
        v *= b2
        v += (1.0 - b2) * _square(g)
        bc1: Any
        sbc2: Any
        if self.capturable:  # t, lr and the bias corrections stay on the device
            t = state["step"]
            t += 1.0
            bc1 = _one_minus_pow(b1, t)
            bc2 = _one_minus_pow(b2, t)
            sbc2 = ag.sqrt(bc2) if isinstance(bc2, ag.Tensor) else 1.0
        else:
            state["step"] += 1
            t = state["step"]
            bc1 = 1.0 - b1**t
            sbc2 = math.sqrt(1.0 - b2**t)
        if group["amsgrad"]:  # v̂ ← max(v̂, v), in place (per real component), read instead of v
            vmax = state["max_exp_avg_sq"]
            vmax[...] = _per_component(ag.maximum, vmax, v)
            v = vmax
        # m / (√v / √(1 - β2ᵗ) + eps), per real component for a complex parameter
        p -= (lr / bc1) * _per_component(lambda m_, v_: m_ / (ag.sqrt(v_) / sbc2 + eps), m, v)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019), as ``torch.optim.AdamW``:
    ``p ← p (1 - lr · weight_decay)`` before the Adam step; the default decay is 0.01.
    ``amsgrad`` and ``maximize`` as :class:`Adam`'s."""

    _decoupled = True

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *, maximize: bool = False,
                 capturable: bool = False, foreach: bool | None = None, fused: bool | None = None,
                 differentiable: bool = False) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize, capturable=capturable,
                         differentiable=differentiable)

    def _without_switches(self, group: dict[str, Any], where: str) -> dict[str, Any]:
        """As the base class's, and PyTorch's AdamW entry ``decoupled_weight_decay=True``
        dropped (AdamW always decouples; its groups take no such option, as the constructor).

        Raises:
            ValueError: ``decoupled_weight_decay=False`` (that is Adam).
        """
        if group.get("decoupled_weight_decay", True) is not True:
            raise ValueError(f"AdamW.{where}: decoupled_weight_decay="
                             f"{group['decoupled_weight_decay']!r}; AdamW always decouples the "
                             "weight decay. Use Adam for the coupled (L2) decay")
        return super()._without_switches(
            {k: v for k, v in group.items() if k != "decoupled_weight_decay"}, where)


def _step_count(opt: Optimizer, p: ag.Tensor, state: dict[str, Any]) -> Any:
    """Add one to ``state["step"]`` and return it: a Python int, or a 0-d array on the device
    when ``opt`` is capturable (a count loaded from the other kind of optimizer is converted)."""
    if opt.capturable:
        if not isinstance(state["step"], ag.Tensor):
            state["step"] = _real_scalar_like(p, float(state["step"]))  # a fill, not a copy
        state["step"] += 1.0
    else:
        if isinstance(state["step"], ag.Tensor):
            state["step"] = round(float(state["step"]))
        state["step"] += 1
    return state["step"]


class RMSprop(Optimizer):
    """RMSprop (Hinton, 2012), as ``torch.optim.RMSprop``:

        g ← ∇ + weight_decay · p
        v ← α v + (1 - α) g²
        ḡ ← α ḡ + (1 - α) g,  d ← √(v - ḡ²) + eps   (centered)   or   d ← √v + eps
        b ← momentum · b + g / d,  p ← p - lr · b   (momentum > 0)   or   p ← p - lr · g / d

    The state holds ``step``, ``square_avg``, ``momentum_buffer`` (momentum > 0) and
    ``grad_avg`` (centered), as PyTorch's; ``maximize=True`` uses ``-∇``. ``capturable=True``:
    the learning rate (and the step count) live on the device, so the step can be recorded by
    :func:`agnograd.capture`.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, alpha: float = 0.99,
                 eps: float = 1e-8, weight_decay: float = 0.0, momentum: float = 0.0,
                 centered: bool = False, capturable: bool = False, *,
                 maximize: bool = False, foreach: bool | None = None, fused: bool | None = None,
                 differentiable: bool = False) -> None:
        _kernel_switches("RMSprop", differentiable)
        super().__init__(params, {"lr": lr, "alpha": alpha, "eps": eps,
                                  "weight_decay": weight_decay, "momentum": momentum,
                                  "centered": bool(centered), "maximize": bool(maximize)},
                         capturable=capturable)

    def _check(self, group: ParamGroup) -> None:
        _nonneg(self, group, "lr", "alpha", "eps", "weight_decay", "momentum")

    def _update(self, p: ag.Tensor, g: ag.Tensor, state: dict[str, Any], group: ParamGroup) -> None:
        lr, alpha, eps = group["lr"], group["alpha"], group["eps"]
        wd, mu = group["weight_decay"], group["momentum"]
        if not state:
            state["step"] = 0
            state["square_avg"] = ag.zeros_like(p)
        if mu > 0 and "momentum_buffer" not in state:
            state["momentum_buffer"] = ag.zeros_like(p)
        if group["centered"] and "grad_avg" not in state:
            state["grad_avg"] = ag.zeros_like(p)
        _step_count(self, p, state)
        if group["maximize"]:
            g = -g
        if wd:
            g = g + wd * p
        v = state["square_avg"]
        v *= alpha
        v += (1.0 - alpha) * _square(g)
        # g / d, per real component for a complex parameter
        if group["centered"]:
            ga = state["grad_avg"]
            ga += (1.0 - alpha) * (g - ga)  # PyTorch's lerp(g, 1 - alpha)
            step = _per_component(lambda g_, v_, a_: g_ / (ag.sqrt(v_ - a_ * a_) + eps), g, v, ga)
        else:
            step = _per_component(lambda g_, v_: g_ / (ag.sqrt(v_) + eps), g, v)
        if mu > 0:
            buf = state["momentum_buffer"]
            buf *= mu
            buf += step
            p -= lr * buf
        else:
            p -= lr * step


class Adagrad(Optimizer):
    """Adagrad (Duchi et al., 2011), as ``torch.optim.Adagrad``:

        t ← t + 1,  g ← ∇ + weight_decay · p
        s ← s + g²   (s starts at ``initial_accumulator_value``)
        p ← p - lr / (1 + (t - 1) · lr_decay) · g / (√s + eps)

    The state holds ``step`` and ``sum``, as PyTorch's; ``maximize=True`` uses ``-∇``. As
    PyTorch's, ``sum`` starts at the constructor's ``initial_accumulator_value`` for every
    parameter (a group's own value is kept in the group and not read).
    ``capturable=True``: the learning rate
    and the step count live on the device (the decayed rate is computed there), so the step can
    be recorded by :func:`agnograd.capture`.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, lr_decay: float = 0.0,
                 weight_decay: float = 0.0, initial_accumulator_value: float = 0.0,
                 eps: float = 1e-10, capturable: bool = False, *,
                 maximize: bool = False, foreach: bool | None = None, fused: bool | None = None,
                 differentiable: bool = False) -> None:
        _kernel_switches("Adagrad", differentiable)
        super().__init__(params, {"lr": lr, "lr_decay": lr_decay, "weight_decay": weight_decay,
                                  "initial_accumulator_value": initial_accumulator_value,
                                  "eps": eps, "maximize": bool(maximize)}, capturable=capturable)

    def _check(self, group: ParamGroup) -> None:
        _nonneg(self, group, "lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps")

    def _update(self, p: ag.Tensor, g: ag.Tensor, state: dict[str, Any], group: ParamGroup) -> None:
        lr, decay, wd, eps = group["lr"], group["lr_decay"], group["weight_decay"], group["eps"]
        if not state:
            state["step"] = 0
            # The constructor's value, in both components, as PyTorch's (which reads
            # self.defaults: a group's own initial_accumulator_value is not used)
            init = self.defaults["initial_accumulator_value"]
            state["sum"] = ag.full_like(p, complex(init, init) if p.dtype.kind == "c" else init)
        t = _step_count(self, p, state)
        if group["maximize"]:
            g = -g
        if wd:
            g = g + wd * p
        clr = lr / (1.0 + (t - 1.0) * decay)
        s = state["sum"]
        s += _square(g)
        p -= clr * _per_component(lambda g_, s_: g_ / (ag.sqrt(s_) + eps), g, s)
