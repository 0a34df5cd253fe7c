"""Convolution and pooling layers: ``Conv1d``, ``Conv2d``, ``ConvTranspose1d``,
``ConvTranspose2d``, ``MaxPool1d``, ``MaxPool2d``, ``AvgPool1d``, ``AvgPool2d`` (PyTorch's names,
arguments and weight layout), built on
:func:`agnograd.nn.functional.conv1d` and friends, so they run on every backend."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import agnograd as ag

from ..backends.host import HostRNG
from . import functional as F
from .init import default_dtype, initializer
from .module import Module, check_input_dtype

__all__ = ["Conv1d", "Conv2d", "ConvTranspose1d", "ConvTranspose2d", "MaxPool1d", "MaxPool2d",
           "AvgPool1d", "AvgPool2d"]

Seed = int | Sequence[int] | HostRNG | None
Size = int | Sequence[int]


def _tuple(v: Size, n: int) -> tuple[int, ...]:
    return (int(v),) * n if isinstance(v, int) else tuple(int(i) for i in v)


def _check_channels(name: str, in_channels: int, out_channels: int, groups: int) -> None:
    if in_channels < 1 or out_channels < 1:
        raise ValueError(f"{name}({in_channels}, {out_channels}): channels must be positive")
    if groups < 1 or in_channels % groups or out_channels % groups:
        raise ValueError(f"{name}: groups={groups} must divide in_channels={in_channels} and "
                         f"out_channels={out_channels}")


def _conv_parameters(rows: int, cols: int, kernel: tuple[int, ...], out_channels: int,
                     bias: bool, init: str, seed: Seed, backend: str | None, dtype: Any
                     ) -> tuple[ag.Tensor, ag.Tensor | None]:
    """A convolution's weight, drawn as ``(rows, cols, *kernel)`` -- the initialisers'
    ``(fan_in, fan_out)`` layout, which gives PyTorch's fans -- then moved to PyTorch's
    ``(cols, rows, *kernel)``; and a zero bias ``(out_channels,)`` if ``bias``."""
    w = initializer(init)((rows, cols, *kernel), seed=seed, backend=backend, dtype=dtype,
                          requires_grad=False)
    axes = (1, 0, *range(2, len(kernel) + 2))
    weight = ag.asarray(ag.permute_dims(w, axes), copy=True).requires_grad_()
    b = None
    if bias:
        with ag.default_backend(weight.backend):
            b = ag.zeros((out_channels,), dtype=dtype, device=weight.device).requires_grad_()
    return weight, b


class _ConvNd(Module):
    _nd = 0

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Size, stride: Size = 1,
                 padding: Size | str = 0, dilation: Size = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", backend: str | None = None, dtype: Any = None,
                 seed: Seed = None, init: str = "glorot") -> None:
        _check_channels(type(self).__name__, in_channels, out_channels, groups)
        if padding_mode not in ("zeros", "reflect", "replicate", "circular"):
            raise ValueError(f"{type(self).__name__}: padding_mode must be 'zeros', 'reflect', "
                             f"'replicate' or 'circular', not {padding_mode!r}")
        self.padding_mode = padding_mode
        nd = self._nd
        self.in_channels, self.out_channels, self.groups = int(in_channels), int(out_channels), groups
        self.kernel_size = _tuple(kernel_size, nd)
        self.stride = _tuple(stride, nd)
        self.padding: tuple[int, ...] | str = padding if isinstance(padding, str) \
            else _tuple(padding, nd)
        self.dilation = _tuple(dilation, nd)
        # PyTorch's (C_out, C_in/groups, *k), fans (C_in/groups·k, C_out·k)
        self.weight, self.bias = _conv_parameters(
            self.in_channels // groups, self.out_channels, self.kernel_size, self.out_channels,
            bias, init, seed, backend, default_dtype(dtype))

    def forward(self, x: ag.Tensor) -> ag.Tensor:
        check_input_dtype(self, x, self.weight)
        conv = F.conv1d if self._nd == 1 else F.conv2d
        padding: tuple[int, ...] | str = self.padding
        if self.padding_mode != "zeros" and padding != "valid":
            # as PyTorch: pad with the mode (pairs from the last axis), then convolve unpadded
            if isinstance(padding, str):  # "same"
                totals = [d * (k - 1) for d, k in zip(self.dilation, self.kernel_size)]
                pairs = [(t // 2, t - t // 2) for t in totals]
            else:
                pairs = [(p, p) for p in padding]
            x = F.pad(x, [v for pair in reversed(pairs) for v in pair], mode=self.padding_mode)
            padding = (0,) * self._nd
        return conv(x, self.weight, self.bias, self.stride, padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        mode = f", padding_mode={self.padding_mode!r}" if self.padding_mode != "zeros" else ""
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding!r}, dilation={self.dilation}, "
                f"groups={self.groups}, bias={self.bias is not None}{mode}")


class Conv1d(_ConvNd):
    """1-d convolution layer (:func:`agnograd.nn.functional.conv1d`): ``weight`` of shape
    ``(out_channels, in_channels/groups, kernel_size)``, ``bias`` ``(out_channels,)`` (zeros).

    The weight is drawn by ``init`` (Glorot uniform by default, ``"he"`` for ReLU networks)
    from a host generator seeded by ``seed``, with PyTorch's fans, and moved to ``backend``.
    """

    _nd = 1


class Conv2d(_ConvNd):
    """2-d convolution layer (:func:`agnograd.nn.functional.conv2d`): ``weight`` of shape
    ``(out_channels, in_channels/groups, kH, kW)``; see :class:`Conv1d`."""

    _nd = 2


class _ConvTransposeNd(Module):
    _nd = 0

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Size, stride: Size = 1,
                 padding: Size = 0, output_padding: Size = 0, groups: int = 1, bias: bool = True,
                 dilation: Size = 1, padding_mode: str = "zeros", backend: str | None = None,
                 dtype: Any = None, seed: Seed = None, init: str = "glorot") -> None:
        _check_channels(type(self).__name__, in_channels, out_channels, groups)
        if padding_mode != "zeros":
            raise ValueError(f"{type(self).__name__}: only padding_mode='zeros' is supported for "
                             f"a transposed convolution (as in PyTorch), not {padding_mode!r}")
        self.padding_mode = padding_mode
        nd = self._nd
        self.in_channels, self.out_channels, self.groups = int(in_channels), int(out_channels), groups
        self.kernel_size = _tuple(kernel_size, nd)
        self.stride = _tuple(stride, nd)
        self.padding = _tuple(padding, nd)
        self.output_padding = _tuple(output_padding, nd)
        self.dilation = _tuple(dilation, nd)
        # PyTorch's (C_in, C_out/groups, *k), fans (C_out/groups·k, C_in·k)
        self.weight, self.bias = _conv_parameters(
            self.out_channels // groups, self.in_channels, self.kernel_size, self.out_channels,
            bias, init, seed, backend, default_dtype(dtype))

    def forward(self, x: ag.Tensor, output_size: Sequence[int] | None = None) -> ag.Tensor:
        """The transposed convolution of ``x``; ``output_size`` (the spatial sizes, or the
        whole shape) picks the output padding among the sizes the stride allows, as PyTorch's
        ``forward(input, output_size)``."""
        check_input_dtype(self, x, self.weight)
        conv = F.conv_transpose1d if self._nd == 1 else F.conv_transpose2d
        return conv(x, self.weight, self.bias, self.stride, self.padding,
                    self._output_padding(x, output_size), self.groups, self.dilation)

    def _output_padding(self, x: ag.Tensor, output_size: Sequence[int] | None
                        ) -> tuple[int, ...]:
        """PyTorch's ``_output_padding``: the output padding that gives ``output_size``."""
        if output_size is None:
            return self.output_padding
        nd = self._nd
        name = type(self).__name__
        sizes = [int(v) for v in output_size]
        lead = 2 if x.ndim == nd + 2 else 1
        if len(sizes) == lead + nd:
            sizes = sizes[lead:]
        if len(sizes) != nd:
            raise ValueError(f"{name}: output_size must have {nd} or {lead + nd} elements (got "
                             f"{len(output_size)}: {list(output_size)}) for an input of shape "
                             f"{x.shape}")
        lo = [(x.shape[lead + d] - 1) * self.stride[d] - 2 * self.padding[d]
              + self.dilation[d] * (self.kernel_size[d] - 1) + 1 for d in range(nd)]
        hi = [v + s - 1 for v, s in zip(lo, self.stride)]
        if any(not a <= v <= b for v, a, b in zip(sizes, lo, hi)):
            raise ValueError(f"{name}: requested an output size of {sizes}, but valid sizes range "
                             f"from {lo} to {hi} (for an input of shape {x.shape}); pick one in "
                             "that range or change stride/padding")
        return tuple(v - a for v, a in zip(sizes, lo))

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, "
                f"output_padding={self.output_padding}, dilation={self.dilation}, "
                f"groups={self.groups}, bias={self.bias is not None}")


class ConvTranspose1d(_ConvTransposeNd):
    """1-d transposed convolution layer (:func:`agnograd.nn.functional.conv_transpose1d`):
    ``weight`` of shape ``(in_channels, out_channels/groups, kernel_size)`` (PyTorch's layout
    and ``state_dict`` keys), ``bias`` ``(out_channels,)`` (zeros); arguments in PyTorch's
    order (``output_padding``, ``groups``, ``bias``, ``dilation``). The weight is drawn by
    ``init`` with PyTorch's fans, as in :class:`Conv1d`."""

    _nd = 1


class ConvTranspose2d(_ConvTransposeNd):
    """2-d transposed convolution layer (:func:`agnograd.nn.functional.conv_transpose2d`):
    ``weight`` of shape ``(in_channels, out_channels/groups, kH, kW)``; see
    :class:`ConvTranspose1d`."""

    _nd = 2


class _PoolNd(Module):
    _nd = 0
    _kind = ""

    def __init__(self, kernel_size: Size, stride: Size | None = None, padding: Size = 0,
                 dilation: Size = 1, ceil_mode: bool = False, count_include_pad: bool = True
                 ) -> None:
        nd = self._nd
        self.kernel_size = _tuple(kernel_size, nd)
        self.stride = self.kernel_size if stride is None else _tuple(stride, nd)
        self.padding = _tuple(padding, nd)
        self.dilation = _tuple(dilation, nd)
        self.ceil_mode = bool(ceil_mode)
        self.count_include_pad = bool(count_include_pad)

    def forward(self, x: ag.Tensor) -> ag.Tensor:
        if self._kind == "max":
            pool = F.max_pool1d if self._nd == 1 else F.max_pool2d
            return pool(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode)
        avg = F.avg_pool1d if self._nd == 1 else F.avg_pool2d
        return avg(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                   self.count_include_pad)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxPool1d(_PoolNd):
    """:func:`agnograd.nn.functional.max_pool1d` as a layer."""

    _nd, _kind = 1, "max"

    def __init__(self, kernel_size: Size, stride: Size | None = None, padding: Size = 0,
                 dilation: Size = 1, ceil_mode: bool = False) -> None:
        super().__init__(kernel_size, stride, padding, dilation, ceil_mode)


class MaxPool2d(_PoolNd):
    """:func:`agnograd.nn.functional.max_pool2d` as a layer."""

    _nd, _kind = 2, "max"

    def __init__(self, kernel_size: Size, stride: Size | None = None, padding: Size = 0,
                 dilation: Size = 1, ceil_mode: bool = False) -> None:
        super().__init__(kernel_size, stride, padding, dilation, ceil_mode)


class AvgPool1d(_PoolNd):
    """:func:`agnograd.nn.functional.avg_pool1d` as a layer."""

    _nd, _kind = 1, "avg"

    def __init__(self, kernel_size: Size, stride: Size | None = None, padding: Size = 0,
                 ceil_mode: bool = False, count_include_pad: bool = True) -> None:
        super().__init__(kernel_size, stride, padding, 1, ceil_mode, count_include_pad)


class AvgPool2d(_PoolNd):
    """:func:`agnograd.nn.functional.avg_pool2d` as a layer."""

    _nd, _kind = 2, "avg"

    def __init__(self, kernel_size: Size, stride: Size | None = None, padding: Size = 0,
                 ceil_mode: bool = False, count_include_pad: bool = True) -> None:
        super().__init__(kernel_size, stride, padding, 1, ceil_mode, count_include_pad)
