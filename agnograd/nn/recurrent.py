"""Recurrent layers with PyTorch's names, signatures, defaults, weight layouts and state-dict keys:
``RNN`` (tanh or ReLU), ``LSTM`` (with ``proj_size``), ``GRU``, and the single-step ``RNNCell``,
``LSTMCell`` and ``GRUCell``. A PyTorch state dict loads unchanged and gives PyTorch's outputs.

The layers are written with the standard ops only (matrix products, slices, ``tanh``,
``sigmoid``, ``stack``), so they run and differentiate on every backend, and a step that uses
them can be captured (``ag.capture``/``ag.jit``): the loop over time is unrolled when recorded.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import agnograd as ag

from ..autograd import record as _record
from ..autograd.recording import record_multi as _record_multi
from ..backends.host import HostRNG, host_rng
from . import functional as F
from .init import default_dtype
from .layers import _linear
from .module import Module, check_input_dtype

__all__ = ["RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell"]

Seed = int | Sequence[int] | HostRNG | None
_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


def _uniform(shape: tuple[int, ...], k: float, rng: HostRNG, backend: str | None,
             dtype: Any) -> ag.Tensor:
    """PyTorch's recurrent initialisation: every weight and bias ``U(-k, k)``, ``k = 1/√hidden``,
    drawn on the host (so every backend starts from the same values for a seed)."""
    return ag.tensor(rng.uniform(-k, k, size=shape), backend=backend, dtype=dtype,
                     requires_grad=True)


def _gate(g: ag.Tensor, i: int, h: int) -> ag.Tensor:
    """Chunk ``i`` (of size ``h``) of the last axis of ``g``."""
    return g[..., i * h:(i + 1) * h]


def _rnn_step(gi: ag.Tensor, h: ag.Tensor, w_hh: ag.Tensor, b_hh: ag.Tensor | None,
              relu: bool) -> ag.Tensor:
    """``h' = act(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh)`` (``gi`` holds the input's part)."""
    a = gi + _linear(h, w_hh, b_hh)
    return F.relu(a) if relu else ag.tanh(a)


def _fusable(*ts: Any) -> bool:
    """Whether one recorded node can take these operands: Tensors of one single-device backend
    and one real floating dtype, of one shape but the last axis (else the general ops run)."""
    t0 = ts[0]
    if type(t0) is not ag.Tensor or t0._backend.multi_device or t0.dtype.kind != "f":
        return False
    b, dt, lead = t0._backend, t0.data.dtype, t0.shape[:-1]
    return all(type(t) is ag.Tensor and t._backend is b and t.data.dtype == dt
               and t.shape[:-1] == lead for t in ts[1:])


def _sig(xp: Any, a: Any) -> Any:
    """``σ(a)`` as ``(1 + tanh(a/2)) / 2``: no overflow at any ``a``."""
    return 0.5 * xp.tanh(0.5 * a) + 0.5


def _lstm_parts(xp: Any, a: Any, c: Any) -> tuple[Any, ...]:
    """``(i, f, g, o, c')`` of an LSTM step from the pre-activations ``a``."""
    n = c.shape[-1]
    s = _sig(xp, a)  # one call over all four gates (g's part unused) beats three slices
    i, f, o = s[..., :n], s[..., n:2 * n], s[..., 3 * n:]
    g = xp.tanh(a[..., 2 * n:3 * n])
    return i, f, g, o, f * c + i * g


def _lstm_dc(xp: Any, gs: tuple[Any, Any], o: Any, c2: Any) -> Any:
    """``∂L/∂c'`` through both outputs: ``ḡ_c + ḡ_h σ(o) (1 - tanh²(c'))``."""
    tc = xp.tanh(c2)
    return gs[1] + gs[0] * o * (1.0 - tc * tc)


def _lstm_back_a(xp: Any, gs: tuple[Any, Any], a: Any, c: Any) -> Any:
    i, f, g, o, c2 = _lstm_parts(xp, a, c)
    dc = _lstm_dc(xp, gs, o, c2)
    return xp.concat([dc * g * i * (1.0 - i), dc * c * f * (1.0 - f), dc * i * (1.0 - g * g),
                      gs[0] * xp.tanh(c2) * o * (1.0 - o)], axis=-1)


def _lstm_back_c(xp: Any, gs: tuple[Any, Any], a: Any, c: Any) -> Any:
    i, f, g, o, c2 = _lstm_parts(xp, a, c)
    return _lstm_dc(xp, gs, o, c2) * f


_LSTM_RULES = (_lstm_back_a, _lstm_back_c)


def _lstm_cell(a: ag.Tensor, c: ag.Tensor) -> tuple[ag.Tensor, ag.Tensor]:
    """PyTorch's LSTM step from the pre-activations ``a`` (``x W_ihᵀ + b_ih + h W_hhᵀ + b_hh``),
    gates in the order i, f, g, o: ``c' = σ(f) c + σ(i) tanh(g)``, ``h' = σ(o) tanh(c')``;
    one recorded node with two outputs. VJP (``ḡ_h``, ``ḡ_c``): ``δ = ḡ_c + ḡ_h σ(o)(1 -
    tanh² c')``, ``c̄ = δ σ(f)``, ``ā = [δ tanh(g) σ'(i), δ c σ'(f), δ σ(i)(1 - tanh² g),
    ḡ_h tanh(c') σ'(o)]``. The rules recompute the gates from the
    saved inputs, so ``create_graph`` differentiates them again."""
    if not _fusable(a, c):
        n = a.shape[-1] // 4
        i, f, g, o = (_gate(a, k, n) for k in range(4))
        c2 = F.sigmoid(f) * c + F.sigmoid(i) * ag.tanh(g)
        return F.sigmoid(o) * ag.tanh(c2), c2
    b = c._backend
    xp = b.xp
    i, f, g, o, c2 = _lstm_parts(xp, a.data, c.data)
    h2 = o * xp.tanh(c2)
    outs = _record_multi("lstm_cell", (h2, c2), b, (a, c), _LSTM_RULES, (a, c))
    return outs[0], outs[1]


def _lstm_step(gi: ag.Tensor, h: ag.Tensor, c: ag.Tensor, w_hh: ag.Tensor, b_hh: ag.Tensor | None,
               w_hr: ag.Tensor | None) -> tuple[ag.Tensor, ag.Tensor]:
    """One LSTM step (then ``h' W_hrᵀ`` with a projection)."""
    h, c = _lstm_cell(gi + _linear(h, w_hh, b_hh), c)
    if w_hr is not None:
        h = _linear(h, w_hr, None)
    return h, c


def _gru_parts(xp: Any, gi: Any, gh: Any, h: Any) -> tuple[Any, ...]:
    """``(r, z, n)`` of a GRU step."""
    m = h.shape[-1]
    rz = _sig(xp, gi[..., :2 * m] + gh[..., :2 * m])
    r, z = rz[..., :m], rz[..., m:]
    n = xp.tanh(gi[..., 2 * m:] + r * gh[..., 2 * m:])
    return r, z, n


def _gru_grads(xp: Any, g: Any, gi: Any, gh: Any, h: Any) -> tuple[Any, Any, Any, Any]:
    """``(∂/∂a_r, ∂/∂a_z, ∂/∂a_n, r)`` of ``h' = n + z (h - n)``."""
    r, z, n = _gru_parts(xp, gi, gh, h)
    m = h.shape[-1]
    dan = g * (1.0 - z) * (1.0 - n * n)
    dar = dan * gh[..., 2 * m:] * r * (1.0 - r)
    daz = g * (h - n) * z * (1.0 - z)
    return dar, daz, dan, r


def _gru_back_gi(xp: Any, g: Any, gi: Any, gh: Any, h: Any) -> Any:
    dar, daz, dan, _ = _gru_grads(xp, g, gi, gh, h)
    return xp.concat([dar, daz, dan], axis=-1)


def _gru_back_gh(xp: Any, g: Any, gi: Any, gh: Any, h: Any) -> Any:
    dar, daz, dan, r = _gru_grads(xp, g, gi, gh, h)
    return xp.concat([dar, daz, dan * r], axis=-1)


def _gru_back_h(xp: Any, g: Any, gi: Any, gh: Any, h: Any) -> Any:
    return g * _gru_parts(xp, gi, gh, h)[1]


_GRU_RULES = (_gru_back_gi, _gru_back_gh, _gru_back_h)


def _gru_step(gi: ag.Tensor, h: ag.Tensor, w_hh: ag.Tensor, b_hh: ag.Tensor | None) -> ag.Tensor:
    """PyTorch's GRU step, gates in the order r, z, n: ``r = σ(x_r + h_r)``, ``z = σ(x_z + h_z)``,
    ``n = tanh(x_n + r (h W_hnᵀ + b_hn))``, ``h' = (1 - z) n + z h``; the gating is one recorded
    node. VJP: ``h̄ = ḡ z``, ``ā_n = ḡ (1 - z)(1 - n²)``, ``ā_z = ḡ (h - n) σ'(z)``, ``ā_r = ā_n
    (h W_hnᵀ + b_hn) σ'(r)``; ``x̄ = [ā_r, ā_z, ā_n]``, ``h̄-part = [ā_r, ā_z, ā_n r]``."""
    gh = _linear(h, w_hh, b_hh)
    if not _fusable(gi, gh, h):
        n_ = gh.shape[-1] // 3
        r = F.sigmoid(_gate(gi, 0, n_) + _gate(gh, 0, n_))
        z = F.sigmoid(_gate(gi, 1, n_) + _gate(gh, 1, n_))
        n = ag.tanh(_gate(gi, 2, n_) + r * _gate(gh, 2, n_))
        return (1.0 - z) * n + z * h
    b = h._backend
    r, z, n = _gru_parts(b.xp, gi.data, gh.data, h.data)
    return _record("gru_cell", n + z * (h.data - n), b, (gi, gh, h), _GRU_RULES, (gi, gh, h))


def _zeros(shape: tuple[int, ...], like: ag.Tensor) -> ag.Tensor:
    with ag.default_backend(like.backend):
        return ag.zeros(shape, dtype=like.dtype, device=like.device)


_warned_states: set[tuple[str, str, str, str]] = set()


def _tensor_like(v: Any, like: ag.Tensor, w: ag.Tensor, name: str, what: str) -> ag.Tensor:
    """An initial state as a Tensor (an array takes the input's dtype). PyTorch refuses a state
    whose dtype is not the input's. Here an integer or boolean state is refused (it would run
    the step in a dtype no one asked for), and a floating state of neither the input's nor the
    layer's dtype warns once per layer type and dtypes, as an input of another dtype does
    (promotion silently changes the result's dtype)."""
    if not isinstance(v, ag.Tensor):
        return ag.tensor(v, backend=like.backend, dtype=like.dtype, device=like.device)
    if not v.dtype.is_floating and like.dtype.is_floating:
        raise TypeError(f"{name}: {what} has dtype {v.dtype.name}; a state is floating, of the "
                        f"input's dtype (as PyTorch requires): pass ag.astype({what}, "
                        f"ag.{like.dtype.name})")
    key = (name, what, v.dtype.name, like.dtype.name)
    if v.dtype != like.dtype and v.dtype != w.dtype and key not in _warned_states:
        _warned_states.add(key)
        warnings.warn(f"{name}: {what} has dtype {v.dtype.name}, the input {like.dtype.name} and "
                      f"the layer {w.dtype.name}: type promotion computes in the wider dtype "
                      f"(PyTorch refuses it); pass ag.astype({what}, ag.{like.dtype.name}) "
                      "(warned once per layer type and dtypes)", UserWarning, stacklevel=4)
    return v


class RNNBase(Module):
    """The multi-layer recurrent layer behind :class:`RNN`, :class:`LSTM` and :class:`GRU`.

    Parameters, per layer ``k`` and direction (suffix ``_reverse`` for the backward one), as in
    PyTorch: ``weight_ih_l{k}`` ``(G·hidden_size, input)`` (``input`` is ``input_size`` for
    layer 0, else ``D·H_out``), ``weight_hh_l{k}`` ``(G·hidden_size, H_out)``, ``bias_ih_l{k}``
    and ``bias_hh_l{k}`` ``(G·hidden_size,)``, and ``weight_hr_l{k}`` ``(proj_size,
    hidden_size)`` for an LSTM with ``proj_size > 0``; ``G`` is 1 (RNN), 4 (LSTM) or 3 (GRU),
    ``D`` 2 when bidirectional, ``H_out`` is ``proj_size`` or ``hidden_size``.
    """

    def __init__(self, mode: str, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, proj_size: int = 0, *, backend: str | None = None,
                 dtype: Any = None, seed: Seed = None) -> None:
        name = type(self).__name__
        if input_size < 1 or hidden_size < 1 or num_layers < 1:
            raise ValueError(f"{name}(input_size={input_size}, hidden_size={hidden_size}, "
                             f"num_layers={num_layers}): sizes must be positive")
        if not 0.0 <= dropout <= 1.0 or isinstance(dropout, bool):
            raise ValueError(f"{name}: dropout must be a number in [0, 1], not {dropout!r}")
        if proj_size < 0 or (proj_size and mode != "LSTM"):
            raise ValueError(f"{name}: proj_size must be 0 (or, for an LSTM, a positive size), "
                             f"not {proj_size}")
        if proj_size >= hidden_size:
            raise ValueError(f"{name}: proj_size ({proj_size}) must be smaller than hidden_size "
                             f"({hidden_size})")
        if dropout > 0 and num_layers == 1:
            warnings.warn(f"{name}: dropout={dropout} acts between recurrent layers only, and "
                          f"num_layers=1 has none (as in PyTorch, which warns too); stack layers "
                          "or apply nn.Dropout to the output", UserWarning, stacklevel=3)
        self.mode = mode
        self.input_size = int(input_size)
        self.hidden_size = int(hidden_size)
        self.num_layers = int(num_layers)
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.dropout = float(dropout)
        self.bidirectional = bool(bidirectional)
        self.proj_size = int(proj_size)
        dtype = default_dtype(dtype)
        rng = host_rng(seed)
        k = 1.0 / math.sqrt(self.hidden_size)
        g = _GATES[mode] * self.hidden_size
        h_out = self.proj_size or self.hidden_size
        d = 2 if self.bidirectional else 1
        self._names: list[list[str]] = []  # per (layer, direction): the parameter names
        for layer in range(self.num_layers):
            n_in = self.input_size if layer == 0 else d * h_out
            for suffix in ("", "_reverse")[:d]:
                names = [f"weight_ih_l{layer}{suffix}", f"weight_hh_l{layer}{suffix}"]
                shapes: list[tuple[int, ...]] = [(g, n_in), (g, h_out)]
                if self.bias:
                    names += [f"bias_ih_l{layer}{suffix}", f"bias_hh_l{layer}{suffix}"]
                    shapes += [(g,), (g,)]
                if self.proj_size:
                    names.append(f"weight_hr_l{layer}{suffix}")
                    shapes.append((self.proj_size, self.hidden_size))
                for nm, shape in zip(names, shapes):
                    setattr(self, nm, _uniform(shape, k, rng, backend, dtype))
                self._names.append(names)

    @property
    def all_weights(self) -> list[list[ag.Tensor]]:
        """The parameters per layer and direction, in PyTorch's order (``weight_ih``,
        ``weight_hh``, ``bias_ih``, ``bias_hh``[, ``weight_hr``])."""
        return [[getattr(self, n) for n in names] for names in self._names]

    def flatten_parameters(self) -> None:
        """Nothing to do: PyTorch compacts its cuDNN weights here; agnograd keeps no such copy.
        (Kept so PyTorch code that calls it runs unchanged.)"""

    def _params(self, idx: int) -> tuple[ag.Tensor, ag.Tensor, Any, Any, Any]:
        """(w_ih, w_hh, b_ih, b_hh, w_hr) of layer-direction ``idx``."""
        p = {n.split("_l")[0]: getattr(self, n) for n in self._names[idx]}
        return (p["weight_ih"], p["weight_hh"], p.get("bias_ih"), p.get("bias_hh"),
                p.get("weight_hr"))

    def _states(self, hx: Any, x: ag.Tensor, batched: bool, n: int) -> tuple[list[ag.Tensor], ...]:
        """The initial states as lists of ``(N, size)`` tensors, one per layer-direction."""
        name = type(self).__name__
        d = 2 if self.bidirectional else 1
        h_out = self.proj_size or self.hidden_size
        sizes = [h_out, self.hidden_size] if self.mode == "LSTM" else [h_out]
        if hx is None:
            z = [_zeros((n, s), x) for s in sizes]
            return tuple([zi] * (d * self.num_layers) for zi in z)
        parts = list(hx) if self.mode == "LSTM" else [hx]
        if self.mode == "LSTM" and (not isinstance(hx, (tuple, list)) or len(parts) != 2):
            raise TypeError(f"{name}: hx must be a tuple (h_0, c_0), not {type(hx).__name__}")
        out = []
        w = self._params(0)[0]
        for what, p, s in zip(("h_0", "c_0"), parts, sizes):
            p = _tensor_like(p, x, w, name, what)
            want = (d * self.num_layers, n, s) if batched else (d * self.num_layers, s)
            if tuple(p.shape) != want:
                raise ValueError(f"{name}: {what} has shape {tuple(p.shape)}; expected {want} "
                                 f"(num_layers * num_directions, {'batch, ' if batched else ''}"
                                 "hidden size)")
            if not batched:
                p = ag.expand_dims(p, axis=1)
            out.append([p[i, ...] for i in range(d * self.num_layers)])
        return tuple(out)

    def forward(self, input: ag.Tensor, hx: Any = None) -> tuple[Any, Any]:
        """Run over a sequence: ``input`` ``(L, N, input_size)`` (``(N, L, input_size)`` with
        ``batch_first``, or unbatched ``(L, input_size)``); ``hx`` the initial hidden state
        ``(D·num_layers, N, H_out)`` (an LSTM: the tuple ``(h_0, c_0)``; ``c_0`` has
        ``hidden_size``), zeros when ``None``. Returns ``(output, h_n)`` (an LSTM:
        ``(output, (h_n, c_n))``), ``output`` ``(L, N, D·H_out)`` holding the last layer's
        hidden states (both directions concatenated)."""
        name = type(self).__name__
        x = input
        if not isinstance(x, ag.Tensor) or x.ndim not in (2, 3):
            raise ValueError(f"{name}: input must be a Tensor of 2 (unbatched) or 3 axes, not "
                             f"{getattr(x, 'shape', type(x).__name__)}")
        if x.shape[-1] != self.input_size:
            raise ValueError(f"{name}: input has {x.shape[-1]} features in its last axis; "
                             f"expected input_size={self.input_size}")
        w0 = self._params(0)[0]
        check_input_dtype(self, x, w0)
        batched = x.ndim == 3
        if not batched:
            x = ag.expand_dims(x, axis=1)
        elif self.batch_first:
            x = ag.permute_dims(x, (1, 0, 2))
        steps, n = x.shape[0], x.shape[1]
        if steps == 0:
            raise ValueError(f"{name}: the input {tuple(input.shape)} has no time steps; a "
                             "sequence needs at least one (PyTorch refuses it too)")
        states = self._states(hx, x, batched, n)
        lstm = self.mode == "LSTM"
        d = 2 if self.bidirectional else 1
        h_n: list[ag.Tensor] = []
        c_n: list[ag.Tensor] = []
        for layer in range(self.num_layers):
            outs = []
            for direction in range(d):
                idx = layer * d + direction
                w_ih, w_hh, b_ih, b_hh, w_hr = self._params(idx)
                # every step's input part at once, (L, N, G·H), split into steps by one node;
                # an RNN's and an LSTM's b_hh is added there too (a GRU's b_hn is gated by r)
                pre = _linear(x, w_ih, b_ih)
                if b_hh is not None and self.mode != "GRU":
                    pre, b_hh = pre + b_hh, None
                gi = ag.unstack(pre, axis=0)
                h = states[0][idx]
                c = states[1][idx] if lstm else h
                ys: list[Any] = [None] * steps
                for t in (range(steps - 1, -1, -1) if direction else range(steps)):
                    if lstm:
                        h, c = _lstm_step(gi[t], h, c, w_hh, b_hh, w_hr)
                    elif self.mode == "GRU":
                        h = _gru_step(gi[t], h, w_hh, b_hh)
                    else:
                        h = _rnn_step(gi[t], h, w_hh, b_hh, self.mode == "RNN_RELU")
                    ys[t] = h
                outs.append(ag.stack(ys, axis=0))
                h_n.append(h)
                c_n.append(c)
            x = outs[0] if d == 1 else ag.concat(outs, axis=-1)
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, True)  # the device generator: capture-safe
        hn = ag.stack(h_n, axis=0)
        cn = ag.stack(c_n, axis=0) if lstm else hn
        if not batched:
            x, hn, cn = x[:, 0, ...], hn[:, 0, ...], cn[:, 0, ...]
        elif self.batch_first:
            x = ag.permute_dims(x, (1, 0, 2))
        return (x, (hn, cn)) if lstm else (x, hn)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.mode == "RNN_RELU":
            s += ", nonlinearity='relu'"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        if self.proj_size:
            s += f", proj_size={self.proj_size}"
        return s


class RNN(RNNBase):
    """Elman RNN, as PyTorch's ``nn.RNN``: ``h_t = act(x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh)``
    with ``act`` ``tanh`` or ``relu`` (``nonlinearity``), stacked ``num_layers`` deep (dropout
    ``p`` on every layer's output but the last, in training), optionally bidirectional.

    ``RNN(input_size, hidden_size, num_layers=1, nonlinearity='tanh', bias=True,
    batch_first=False, dropout=0.0, bidirectional=False)``, plus the keywords ``backend``,
    ``dtype`` and ``seed`` (the host generator drawing the ``U(-1/√H, 1/√H)`` weights).
    ``forward(input, hx=None) -> (output, h_n)``: see :meth:`RNNBase.forward`.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, *, backend: str | None = None,
                 dtype: Any = None, seed: Seed = None) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN: nonlinearity must be 'tanh' or 'relu', not {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size,
                         hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         backend=backend, dtype=dtype, seed=seed)


class LSTM(RNNBase):
    """Long short-term memory, as PyTorch's ``nn.LSTM`` (gates i, f, g, o in that order in the
    weights' rows): ``c_t = σ(f) c_{t-1} + σ(i) tanh(g)``, ``h_t = σ(o) tanh(c_t)`` (times
    ``W_hrᵀ`` with ``proj_size > 0``).

    ``LSTM(input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
    bidirectional=False, proj_size=0)``, plus ``backend``, ``dtype``, ``seed`` keywords.
    ``forward(input, (h_0, c_0)=None) -> (output, (h_n, c_n))``.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, *, backend: str | None = None, dtype: Any = None,
                 seed: Seed = None) -> None:
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, backend=backend, dtype=dtype, seed=seed)


class GRU(RNNBase):
    """Gated recurrent unit, as PyTorch's ``nn.GRU`` (gates r, z, n):
    ``n = tanh(x W_inᵀ + b_in + r (h W_hnᵀ + b_hn))``, ``h_t = (1 - z) n + z h_{t-1}``.

    ``GRU(input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
    bidirectional=False)``, plus ``backend``, ``dtype``, ``seed`` keywords.
    ``forward(input, hx=None) -> (output, h_n)``.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 *, backend: str | None = None, dtype: Any = None, seed: Seed = None) -> None:
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, backend=backend, dtype=dtype, seed=seed)


class _CellBase(Module):
    """One step of a recurrent layer; parameters ``weight_ih`` ``(G·H, input_size)``,
    ``weight_hh`` ``(G·H, H)``, ``bias_ih``, ``bias_hh`` ``(G·H,)``, as in PyTorch."""

    _gates = 1

    def __init__(self, input_size: int, hidden_size: int, bias: bool, backend: str | None,
                 dtype: Any, seed: Seed) -> None:
        if input_size < 1 or hidden_size < 1:
            raise ValueError(f"{type(self).__name__}({input_size}, {hidden_size}): sizes must be "
                             "positive")
        self.input_size = int(input_size)
        self.hidden_size = int(hidden_size)
        self.bias = bool(bias)  # PyTorch's cells keep the flag too
        dtype = default_dtype(dtype)
        rng = host_rng(seed)
        k = 1.0 / math.sqrt(self.hidden_size)
        g = self._gates * self.hidden_size
        self.weight_ih = _uniform((g, self.input_size), k, rng, backend, dtype)
        self.weight_hh = _uniform((g, self.hidden_size), k, rng, backend, dtype)
        self.bias_ih: ag.Tensor | None = None
        self.bias_hh: ag.Tensor | None = None
        if bias:
            self.bias_ih = _uniform((g,), k, rng, backend, dtype)
            self.bias_hh = _uniform((g,), k, rng, backend, dtype)

    def _prepare(self, input: ag.Tensor, states: Sequence[Any]) -> tuple[ag.Tensor, list[ag.Tensor], bool]:
        name = type(self).__name__
        if not isinstance(input, ag.Tensor) or input.ndim not in (1, 2) \
                or input.shape[-1] != self.input_size:
            raise ValueError(f"{name}: input must be a Tensor (N, {self.input_size}) or "
                             f"({self.input_size},), not {getattr(input, 'shape', type(input))}")
        check_input_dtype(self, input, self.weight_ih)
        batched = input.ndim == 2
        x = input if batched else ag.expand_dims(input, axis=0)
        n = x.shape[0]
        out = []
        whats = ("h_0", "c_0") if len(states) == 2 else ("hx",)
        for what, s in zip(whats, states):
            if s is None:
                out.append(_zeros((n, self.hidden_size), x))
                continue
            s = _tensor_like(s, x, self.weight_ih, name, what)
            want = (n, self.hidden_size) if batched else (self.hidden_size,)
            if tuple(s.shape) != want:
                raise ValueError(f"{name}: {what} has shape {tuple(s.shape)}; expected {want}")
            out.append(s if batched else ag.expand_dims(s, axis=0))
        return x, out, batched

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}"
                + ("" if self.bias_ih is not None else ", bias=False"))


class RNNCell(_CellBase):
    """One Elman step, as PyTorch's ``nn.RNNCell(input_size, hidden_size, bias=True,
    nonlinearity='tanh')``: ``h' = act(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh)``.
    ``forward(input (N, input_size), hx=None (N, hidden_size)) -> h'``."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 nonlinearity: str = "tanh", *, backend: str | None = None, dtype: Any = None,
                 seed: Seed = None) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNNCell: nonlinearity must be 'tanh' or 'relu', not "
                             f"{nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, bias, backend, dtype, seed)

    def forward(self, input: ag.Tensor, hx: Any = None) -> ag.Tensor:
        x, (h,), batched = self._prepare(input, [hx])
        h = _rnn_step(_linear(x, self.weight_ih, self.bias_ih), h, self.weight_hh, self.bias_hh,
                      self.nonlinearity == "relu")
        return h if batched else h[0, ...]


class LSTMCell(_CellBase):
    """One LSTM step, as PyTorch's ``nn.LSTMCell(input_size, hidden_size, bias=True)`` (gates i,
    f, g, o). ``forward(input (N, input_size), hx=None or (h, c)) -> (h', c')``."""

    _gates = 4

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *,
                 backend: str | None = None, dtype: Any = None, seed: Seed = None) -> None:
        super().__init__(input_size, hidden_size, bias, backend, dtype, seed)

    def forward(self, input: ag.Tensor, hx: Any = None) -> tuple[ag.Tensor, ag.Tensor]:
        if hx is not None and (not isinstance(hx, (tuple, list)) or len(hx) != 2):
            raise TypeError("LSTMCell: hx must be a tuple (h, c)")
        x, (h, c), batched = self._prepare(input, [None, None] if hx is None else list(hx))
        h, c = _lstm_step(_linear(x, self.weight_ih, self.bias_ih), h, c, self.weight_hh,
                          self.bias_hh, None)
        return (h, c) if batched else (h[0, ...], c[0, ...])


class GRUCell(_CellBase):
    """One GRU step, as PyTorch's ``nn.GRUCell(input_size, hidden_size, bias=True)`` (gates r,
    z, n). ``forward(input (N, input_size), hx=None (N, hidden_size)) -> h'``."""

    _gates = 3

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *,
                 backend: str | None = None, dtype: Any = None, seed: Seed = None) -> None:
        super().__init__(input_size, hidden_size, bias, backend, dtype, seed)

    def forward(self, input: ag.Tensor, hx: Any = None) -> ag.Tensor:
        x, (h,), batched = self._prepare(input, [hx])
        h = _gru_step(_linear(x, self.weight_ih, self.bias_ih), h, self.weight_hh, self.bias_hh)
        return h if batched else h[0, ...]
