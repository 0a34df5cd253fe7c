"""Weight initialisation: Glorot (Xavier) and He (Kaiming), drawn from a seeded host generator
and then moved to the chosen backend, so one seed gives the same weights on every backend.

A shape is read as ``(fan_in, fan_out, *kernel)``: the first axis counts inputs. (PyTorch's
weight layouts put the outputs first: :class:`~agnograd.nn.Linear` and the ``Conv`` layers draw
in this layout and store the transpose, ``(out_features, in_features)``.)

PyTorch's in-place initialisers are here too, with its names, arguments and fans (computed from
a weight in PyTorch's layout, ``(out, in, *kernel)``, by :func:`_calculate_fan_in_and_fan_out`):
``uniform_``, ``normal_``, ``trunc_normal_``, ``constant_``, ``ones_``, ``zeros_``, ``eye_``,
``xavier_uniform_``, ``xavier_normal_``, ``kaiming_uniform_``, ``kaiming_normal_``,
``orthogonal_`` and ``calculate_gain``. They overwrite the tensor's values in place (under
:func:`agnograd.no_grad`, keeping its dtype, backend and device) and return it, drawing on the
device from ``generator`` (an :class:`agnograd.random.Generator`), or the default generator of
the tensor's backend (seeded by ``ag.manual_seed``). ``model.apply(fn)`` with such a function
re-initialises a model as in PyTorch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import agnograd as ag

from ..backends.host import HostRNG, host_rng

__all__ = ["glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "initializer",
           "default_dtype", "calculate_gain", "uniform_", "normal_", "trunc_normal_", "constant_",
           "ones_", "zeros_", "eye_", "xavier_uniform_", "xavier_normal_", "kaiming_uniform_",
           "kaiming_normal_", "orthogonal_"]

Seed = int | Sequence[int] | HostRNG | None


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) < 1:
        raise ValueError("initialisers need a shape with at least one dimension")
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[2:])
    return shape[0] * receptive, shape[1] * receptive


def default_dtype(dtype: Any = None) -> Any:
    """The dtype of new parameters: ``dtype`` if given, else the one set by
    :func:`agnograd.set_default_dtype`, else float32 (on every backend)."""
    if dtype is not None:
        return dtype
    return ag.get_default_dtype() or ag.float32


def _make(host: Any, backend: str | None, dtype: Any, requires_grad: bool) -> ag.Tensor:
    return ag.tensor(host, backend=backend, dtype=default_dtype(dtype), requires_grad=requires_grad)


def glorot_uniform(shape: tuple[int, ...], seed: Seed = None, backend: str | None = None,
                   dtype: Any = None, requires_grad: bool = True) -> ag.Tensor:
    """Uniform on ``±√(6 / (fan_in + fan_out))`` (Glorot & Bengio, 2010): for tanh, sigmoid
    and linear layers. ``dtype`` defaults to :func:`default_dtype`."""
    fan_in, fan_out = _fans(shape)
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return _make(host_rng(seed).uniform(-limit, limit, size=shape), backend, dtype, requires_grad)


def glorot_normal(shape: tuple[int, ...], seed: Seed = None, backend: str | None = None,
                  dtype: Any = None, requires_grad: bool = True) -> ag.Tensor:
    """Normal with standard deviation ``√(2 / (fan_in + fan_out))``."""
    fan_in, fan_out = _fans(shape)
    std = math.sqrt(2.0 / (fan_in + fan_out))
    return _make(host_rng(seed).normal(0.0, std, size=shape), backend, dtype, requires_grad)


def he_uniform(shape: tuple[int, ...], seed: Seed = None, backend: str | None = None,
               dtype: Any = None, requires_grad: bool = True) -> ag.Tensor:
    """Uniform on ``±√(6 / fan_in)`` (He et al., 2015): for ReLU-like layers."""
    fan_in, _ = _fans(shape)
    limit = math.sqrt(6.0 / fan_in)
    return _make(host_rng(seed).uniform(-limit, limit, size=shape), backend, dtype, requires_grad)


def he_normal(shape: tuple[int, ...], seed: Seed = None, backend: str | None = None,
              dtype: Any = None, requires_grad: bool = True) -> ag.Tensor:
    """Normal with standard deviation ``√(2 / fan_in)`` (He et al., 2015)."""
    fan_in, _ = _fans(shape)
    std = math.sqrt(2.0 / fan_in)
    return _make(host_rng(seed).normal(0.0, std, size=shape), backend, dtype, requires_grad)


_BY_NAME = {
    "glorot": glorot_uniform, "glorot_uniform": glorot_uniform, "glorot_normal": glorot_normal,
    "xavier": glorot_uniform, "he": he_normal, "he_normal": he_normal, "he_uniform": he_uniform,
    "kaiming": he_normal,
}


def initializer(name: str) -> Any:
    """The initialiser called ``name``: ``"glorot"`` (= ``"glorot_uniform"``),
    ``"glorot_normal"``, ``"he"`` (= ``"he_normal"``) or ``"he_uniform"``."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown initialiser {name!r}; choose one of {', '.join(sorted(_BY_NAME))}"
                         ) from None


# ---------------------------------------------------------------------------------------------
# PyTorch's in-place initialisers (``torch.nn.init``), with its fans: weights are (out, in, ...)


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The recommended gain for ``nonlinearity``, as ``torch.nn.init.calculate_gain``: 1 for
    linear, conv and sigmoid; 5/3 for tanh; √2 for relu; √(2 / (1 + slope²)) for leaky_relu
    (``param``, default 0.01); 3/4 for selu."""
    linear = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
              "conv_transpose3d")
    if nonlinearity in linear or nonlinearity == "sigmoid":
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, (int, float)) and not isinstance(param, bool):
            slope = float(param)
        else:
            raise ValueError(f"calculate_gain: negative_slope {param!r} is not a number")
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}; choose one of "
                     f"{', '.join((*linear, 'sigmoid', 'tanh', 'relu', 'leaky_relu', 'selu'))}")


def _calculate_fan_in_and_fan_out(tensor: Any) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight in PyTorch's layout ``(out, in, *kernel)``:
    ``in · prod(kernel)`` and ``out · prod(kernel)``, as PyTorch's function of this name.

    Raises:
        ValueError: the tensor has fewer than 2 dimensions.
    """
    shape = tuple(tensor.shape)
    if len(shape) < 2:
        raise ValueError(f"fan in and fan out cannot be computed for a tensor with fewer than 2 "
                         f"dimensions (shape {shape}); PyTorch's layouts are (out, in, *kernel)")
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _fan(tensor: Any, mode: str) -> int:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode {mode!r} not supported; choose 'fan_in' or 'fan_out'")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def _draw_dtype(tensor: ag.Tensor, fn: str) -> Any:
    if not isinstance(tensor, ag.Tensor):
        raise TypeError(f"nn.init.{fn}: expected an agnograd Tensor, not {type(tensor).__name__}")
    if not tensor.dtype.is_floating:
        raise TypeError(f"nn.init.{fn}: the tensor must be floating-point, not "
                        f"{tensor.dtype.name}")
    return ag.float64 if tensor.dtype == ag.float64 else ag.float32


def _where(tensor: ag.Tensor, generator: Any) -> dict[str, Any]:
    if generator is not None:
        return {"generator": generator}
    return {"backend": tensor.backend, "device": tensor.device}


def _fill(tensor: ag.Tensor, values: ag.Tensor) -> ag.Tensor:
    with ag.no_grad():
        tensor[...] = ag.astype(values, tensor.dtype)
    return tensor


def uniform_(tensor: ag.Tensor, a: float = 0.0, b: float = 1.0,
             generator: Any = None) -> ag.Tensor:
    """Fill ``tensor`` with values drawn from ``U(a, b)``, in place; returns it."""
    dt = _draw_dtype(tensor, "uniform_")
    u = ag.random.uniform(tuple(tensor.shape), dtype=dt, low=float(a), high=float(b),
                          **_where(tensor, generator))
    return _fill(tensor, u)


def normal_(tensor: ag.Tensor, mean: float = 0.0, std: float = 1.0,
            generator: Any = None) -> ag.Tensor:
    """Fill ``tensor`` with values drawn from ``N(mean, std²)``, in place; returns it."""
    dt = _draw_dtype(tensor, "normal_")
    z = ag.random.normal(tuple(tensor.shape), dtype=dt, mean=float(mean), std=float(std),
                         **_where(tensor, generator))
    return _fill(tensor, z)


def trunc_normal_(tensor: ag.Tensor, mean: float = 0.0, std: float = 1.0, a: float = -2.0,
                  b: float = 2.0, generator: Any = None) -> ag.Tensor:
    """Fill ``tensor`` with values from ``N(mean, std²)`` truncated to ``[a, b]`` (absolute
    bounds, as PyTorch's), by the inverse CDF of uniform draws; returns it."""
    dt = _draw_dtype(tensor, "trunc_normal_")
    if not a < b:
        raise ValueError(f"trunc_normal_: a ({a}) must be less than b ({b})")

    def cdf(x: float) -> float:
        return (1.0 + math.erf((x - mean) / (std * math.sqrt(2.0)))) / 2.0

    lo, hi = 2 * cdf(a) - 1, 2 * cdf(b) - 1
    u = ag.random.uniform(tuple(tensor.shape), dtype=dt, low=lo, high=hi,
                          **_where(tensor, generator))
    z = ag.special.erfinv(u) * (std * math.sqrt(2.0)) + mean
    return _fill(tensor, ag.clip(z, a, b))


def constant_(tensor: ag.Tensor, val: float) -> ag.Tensor:
    """Fill ``tensor`` with ``val``, in place; returns it."""
    if not isinstance(tensor, ag.Tensor):
        raise TypeError(f"nn.init.constant_: expected an agnograd Tensor, not "
                        f"{type(tensor).__name__}")
    with ag.no_grad():
        tensor[...] = val
    return tensor


def ones_(tensor: ag.Tensor) -> ag.Tensor:
    """Fill ``tensor`` with ones, in place; returns it."""
    return constant_(tensor, 1)


def zeros_(tensor: ag.Tensor) -> ag.Tensor:
    """Fill ``tensor`` with zeros, in place; returns it."""
    return constant_(tensor, 0)


def eye_(tensor: ag.Tensor) -> ag.Tensor:
    """Fill the 2-D ``tensor`` with the identity (ones on the diagonal), in place."""
    if not isinstance(tensor, ag.Tensor) or tensor.ndim != 2:
        raise ValueError("nn.init.eye_: only 2-D tensors are supported")
    rows, cols = tensor.shape
    eye = ag.eye(rows, cols, dtype=tensor.dtype)
    return _fill(tensor, ag.asarray(ag.to_backend(eye, tensor.backend), device=tensor.device))


def xavier_uniform_(tensor: ag.Tensor, gain: float = 1.0, generator: Any = None) -> ag.Tensor:
    """Glorot uniform with PyTorch's fans: ``U(-r, r)``, ``r = gain·√(6 / (fan_in +
    fan_out))``; returns the tensor."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(tensor, -bound, bound, generator)


def xavier_normal_(tensor: ag.Tensor, gain: float = 1.0, generator: Any = None) -> ag.Tensor:
    """Glorot normal with PyTorch's fans: ``N(0, std²)``, ``std = gain·√(2 / (fan_in +
    fan_out))``; returns the tensor."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), generator)


def kaiming_uniform_(tensor: ag.Tensor, a: float = 0.0, mode: str = "fan_in",
                     nonlinearity: str = "leaky_relu", generator: Any = None) -> ag.Tensor:
    """He uniform with PyTorch's fans and arguments: ``U(-r, r)``, ``r = √3 · gain / √fan``
    (``gain = calculate_gain(nonlinearity, a)``, ``fan`` by ``mode``); returns the tensor.
    (``a=√5`` gives PyTorch's default ``Linear``/``Conv`` weights.)"""
    if 0 in tuple(tensor.shape):
        return tensor
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(tensor, mode))
    bound = math.sqrt(3.0) * std
    return uniform_(tensor, -bound, bound, generator)


def kaiming_normal_(tensor: ag.Tensor, a: float = 0.0, mode: str = "fan_in",
                    nonlinearity: str = "leaky_relu", generator: Any = None) -> ag.Tensor:
    """He normal with PyTorch's fans and arguments: ``N(0, std²)``, ``std = gain / √fan``;
    returns the tensor."""
    if 0 in tuple(tensor.shape):
        return tensor
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(tensor, mode))
    return normal_(tensor, 0.0, std, generator)


def orthogonal_(tensor: ag.Tensor, gain: float = 1.0, generator: Any = None) -> ag.Tensor:
    """A (semi-)orthogonal matrix, as PyTorch's: the Q of the QR decomposition of a normal
    draw of shape ``(rows, prod(rest))`` (transposed when wider than tall), signs fixed by
    R's diagonal, times ``gain``; returns the tensor."""
    dt = _draw_dtype(tensor, "orthogonal_")
    if tensor.ndim < 2:
        raise ValueError("nn.init.orthogonal_: only tensors with 2 or more dimensions are "
                         "supported")
    if tensor.size == 0:
        return tensor
    rows = tensor.shape[0]
    cols = (tensor.size or 0) // rows
    flat = ag.random.normal((rows, cols), dtype=dt, **_where(tensor, generator))
    if rows < cols:
        flat = ag.matrix_transpose(flat)
    q, r = ag.linalg.qr(flat)
    d = ag.linalg.diagonal(r)
    q = q * ag.sign(d)
    if rows < cols:
        q = ag.matrix_transpose(q)
    return _fill(tensor, ag.reshape(q, tuple(tensor.shape)) * gain)
