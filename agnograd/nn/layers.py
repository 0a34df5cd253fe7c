"""Layers: ``Linear``, ``Sequential``, ``MLP``, ``Dropout`` and the activation modules."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import agnograd as ag

from ..backends.host import HostRNG, host_rng
from . import functional as F
from .init import default_dtype, initializer
from .module import Module, check_input_dtype

__all__ = ["Linear", "Sequential", "MLP", "Dropout", "ReLU", "Tanh", "Sigmoid", "GELU", "Softplus",
           "ACTIVATIONS"]

Seed = int | Sequence[int] | HostRNG | None


class Linear(Module):
    """``y = x W + b`` with ``W`` of shape ``(in_features, out_features)``.

    The layout matches the math (``x1 = f1(x, θ1) = x W1 + b1``) and the hand-written backprop
    in the docs: ``dL/dW = xᵀ dL/dy``. ``W`` is drawn by ``init`` (Glorot uniform by default;
    ``"he"`` for ReLU layers) from a host generator seeded by ``seed`` and moved to
    ``backend``; ``b`` starts at zero.

    Args:
        in_features: size of each input sample.
        out_features: size of each output sample.
        bias: whether to add the bias ``b``.
        backend: where the parameters live (``None``: the default backend).
        dtype: the parameters' dtype (``None``: :func:`agnograd.set_default_dtype`'s, else
            float32).
        seed: an int, a sequence of ints or a host generator; ``None`` draws fresh entropy.
        init: ``"glorot"``, ``"glorot_normal"``, ``"he"`` or ``"he_uniform"``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 backend: str | None = None, dtype: Any = None, seed: Seed = None,
                 init: str = "glorot") -> None:
        if in_features < 1 or out_features < 1:
            raise ValueError(f"Linear({in_features}, {out_features}): sizes must be positive")
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        dtype = default_dtype(dtype)
        self.weight = initializer(init)((self.in_features, self.out_features), seed=seed,
                                        backend=backend, dtype=dtype)
        self.bias: ag.Tensor | None = None
        if bias:
            self.bias = ag.tensor([0.0] * self.out_features, backend=self.weight.backend,
                                  dtype=dtype, device=self.weight.device, requires_grad=True)

    def forward(self, x: ag.Tensor) -> ag.Tensor:
        check_input_dtype(self, x, self.weight)
        y: ag.Tensor = x @ self.weight
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, backend={self.weight.backend!r}, "
                f"dtype={self.weight.dtype.name}")


class Sequential(Module):
    """Applies its layers (Modules or plain functions of one Tensor) in order."""

    def __init__(self, *layers: Module | Callable[[ag.Tensor], ag.Tensor]) -> None:
        self.layers = list(layers)

    def forward(self, x: ag.Tensor) -> ag.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    def __getitem__(self, i: int) -> Any:
        return self.layers[i]

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.layers)


class _Activation(Module):
    fn: Callable[[ag.Tensor], ag.Tensor]

    def forward(self, x: ag.Tensor) -> ag.Tensor:
        return type(self).fn(x)


class ReLU(_Activation):
    """:func:`agnograd.nn.functional.relu` as a layer."""

    fn = staticmethod(F.relu)


class Tanh(_Activation):
    """:func:`agnograd.nn.functional.tanh` as a layer."""

    fn = staticmethod(F.tanh)


class Sigmoid(_Activation):
    """:func:`agnograd.nn.functional.sigmoid` as a layer."""

    fn = staticmethod(F.sigmoid)


class Softplus(_Activation):
    """:func:`agnograd.nn.functional.softplus` as a layer."""

    fn = staticmethod(F.softplus)


class GELU(Module):
    """:func:`agnograd.nn.functional.gelu` as a layer."""

    def __init__(self, approximate: str = "none") -> None:
        self.approximate = approximate

    def forward(self, x: ag.Tensor) -> ag.Tensor:
        return F.gelu(x, approximate=self.approximate)  # type: ignore[arg-type]

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class Dropout(Module):
    """:func:`agnograd.nn.functional.dropout` as a layer: active in training mode only. Its
    masks come from a host generator seeded once by ``seed``, so a run is reproducible."""

    def __init__(self, p: float = 0.5, seed: Seed = None) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1], not {p}")
        self.p = float(p)
        self._rng = host_rng(seed)

    def forward(self, x: ag.Tensor) -> ag.Tensor:
        return F.dropout(x, self.p, self.training, self._rng)

    def extra_repr(self) -> str:
        return f"p={self.p}"


# activation name -> (function, initialiser suited to it)
ACTIVATIONS: dict[str, tuple[Callable[[ag.Tensor], ag.Tensor], str]] = {
    "tanh": (F.tanh, "glorot"),
    "sigmoid": (F.sigmoid, "glorot"),
    "relu": (F.relu, "he"),
    "gelu": (F.gelu, "he"),
    "softplus": (F.softplus, "he"),
    "identity": ((lambda x: x), "glorot"),
}


class MLP(Module):
    """A multilayer perceptron: ``Linear`` layers of the given sizes with ``activation``
    between them (none after the last).

    ``MLP([64, 64, 64, 10])`` is the 3-layer tanh network of the docs:
    ``x1 = tanh(x W1 + b1)``, ``x2 = tanh(x1 W2 + b2)``, ``x3 = x2 W3 + b3`` (the logits).

    Args:
        sizes: ``[in, hidden..., out]``, at least two entries.
        activation: ``"tanh"`` (default), ``"relu"``, ``"sigmoid"``, ``"gelu"``,
            ``"softplus"``, ``"identity"``, or any function of one Tensor.
        bias: whether the layers add a bias.
        backend: where the parameters live (``None``: the default backend).
        dtype: the parameters' dtype (``None``: float32).
        seed: layer ``i`` is seeded with ``(seed, i)``; ``None`` draws fresh entropy.
        init: the initialiser; by default Glorot for tanh/sigmoid/identity and He for
            ReLU-like activations (Glorot for a custom function).
        dropout: dropout probability after each hidden activation (0: none).
    """

    def __init__(self, sizes: Sequence[int], activation: str | Callable[[ag.Tensor], ag.Tensor] = "tanh",
                 bias: bool = True, backend: str | None = None, dtype: Any = None,
                 seed: int | None = None, init: str | None = None, dropout: float = 0.0) -> None:
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2:
            raise ValueError(f"MLP needs at least an input and an output size, got {sizes}")
        if isinstance(activation, str):
            if activation not in ACTIVATIONS:
                raise ValueError(f"unknown activation {activation!r}; choose one of "
                                 f"{', '.join(ACTIVATIONS)} or pass a function")
            fn, default_init = ACTIVATIONS[activation]
            self.activation_name = activation
        else:
            fn, default_init = activation, "glorot"
            self.activation_name = getattr(activation, "__name__", type(activation).__name__)
        self.activation = fn
        self.sizes = sizes
        self.layers = [
            Linear(sizes[i], sizes[i + 1], bias=bias, backend=backend, dtype=dtype,
                   seed=None if seed is None else (seed, i),
                   init=init or (default_init if i < len(sizes) - 2 else "glorot"))
            for i in range(len(sizes) - 1)
        ]
        self.dropout = Dropout(dropout, seed=None if seed is None else (seed, len(sizes))) \
            if dropout else None

    def forward(self, x: ag.Tensor) -> ag.Tensor:
        *hidden, last = self.layers
        for layer in hidden:
            x = self.activation(layer(x))
            if self.dropout is not None:
                x = self.dropout(x)
        return last(x)  # type: ignore[no-any-return]

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}, activation={self.activation_name!r}"
