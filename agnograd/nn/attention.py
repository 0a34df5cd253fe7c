"""Attention with PyTorch's names, signatures and layouts: :func:`scaled_dot_product_attention`
and :class:`MultiheadAttention` (``in_proj_weight``/``in_proj_bias``/``out_proj`` state-dict
keys, or ``q_proj_weight``/``k_proj_weight``/``v_proj_weight`` when ``kdim``/``vdim`` differ).
Standard ops only: every backend, differentiable, capture-safe (dropout draws on the device)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import agnograd as ag

from ..backends.host import HostRNG, host_rng
from . import functional as F
from .init import default_dtype
from .layers import Linear, _linear
from .module import Module, check_input_dtype

__all__ = ["scaled_dot_product_attention", "MultiheadAttention"]

Seed = int | Sequence[int] | HostRNG | None
_NEG_INF = float("-inf")


def _as_mask(mask: Any, like: ag.Tensor) -> ag.Tensor:
    if isinstance(mask, ag.Tensor):
        return mask
    return ag.tensor(mask, backend=like.backend, device=like.device)


def _check_mask(m: ag.Tensor, what: str, scores: tuple[int, ...], op: str) -> None:
    """A mask must be boolean or floating (PyTorch refuses integer masks: adding a 0/1 "keep"
    mask to the scores would silently bias them instead of masking) and broadcast to the
    scores' shape without widening it."""
    if m.dtype != ag.bool and not m.dtype.is_floating:
        raise TypeError(f"{op}: {what} has dtype {m.dtype.name}; a mask is boolean (a keep/ignore "
                        "pattern) or floating (added to the scores), as in PyTorch: convert it, "
                        f"e.g. ag.astype({what}, ag.bool)")
    try:
        ok = ag.broadcast_shapes(tuple(m.shape), scores) == scores
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{op}: {what} has shape {tuple(m.shape)}, which does not broadcast to "
                         f"the attention scores' shape {scores} (..., L, S) (PyTorch refuses it "
                         "too); give a mask of shape (L, S) or with the query's leading axes")


def _check_batch_axes(q: ag.Tensor, k: ag.Tensor, v: ag.Tensor, enable_gqa: bool) -> None:
    """The leading axes of query, key and value must broadcast (the head axis may differ under
    ``enable_gqa``): say which axes and how to fix it, not a matrix product's error."""
    lead = [tuple(t.shape[:-2]) for t in (q, k, v)]
    if enable_gqa and min(q.ndim, k.ndim, v.ndim) >= 3:
        lead = [s[:-1] for s in lead]
    try:
        ag.broadcast_shapes(*lead)
        return
    except ValueError:
        pass
    hint = ""
    if not enable_gqa and min(q.ndim, k.ndim) >= 3 and k.shape[-3] != q.shape[-3] \
            and q.shape[-3] % k.shape[-3] == 0:
        hint = (f"; for grouped-query attention ({q.shape[-3]} query heads sharing "
                f"{k.shape[-3]} key/value heads) pass enable_gqa=True")
    raise ValueError(f"scaled_dot_product_attention: the leading axes of query {q.shape}, key "
                     f"{k.shape} and value {v.shape} do not broadcast (PyTorch refuses them too)"
                     + hint)


def _masked_softmax(s: ag.Tensor) -> ag.Tensor:
    """Softmax over the last axis where a row whose every score is ``-inf`` (fully masked) gives
    zeros, as PyTorch's ``scaled_dot_product_attention`` does, with zero gradient (no NaN)."""
    dead = ag.all(s.detach() == _NEG_INF, axis=-1, keepdims=True)
    safe = ag.where(dead, 0.0, s)
    return ag.where(dead, 0.0, F.softmax(safe, axis=-1))


def scaled_dot_product_attention(query: ag.Tensor, key: ag.Tensor, value: ag.Tensor,
                                 attn_mask: Any = None, dropout_p: float = 0.0,
                                 is_causal: bool = False, scale: float | None = None,
                                 enable_gqa: bool = False) -> ag.Tensor:
    """PyTorch's ``F.scaled_dot_product_attention``:
    ``softmax(q kᵀ · scale + M) v``, ``scale = 1/√E`` by default.

    Shapes: ``query (..., L, E)``, ``key (..., S, E)``, ``value (..., S, Ev)`` -> ``(..., L, Ev)``
    (leading axes broadcast). ``attn_mask`` broadcastable to the scores' ``(..., L, S)`` (not
    widening them): boolean (``True`` takes part; ``False`` is masked out) or floating (added
    to the scores); an integer mask is refused, as PyTorch refuses it. ``is_causal`` masks
    with the lower-triangular ``(L, S)`` pattern (top-left aligned, as PyTorch; not with
    ``attn_mask``). A row with every key masked gives zeros, as PyTorch's kernel. ``dropout_p``
    drops attention weights (always, as the functional does in PyTorch; pass 0 in evaluation)
    with the device generator. ``enable_gqa``: ``key``/``value`` may have fewer heads (axis -3)
    than ``query``, each shared by ``Hq/Hk`` query heads.
    """
    q, k, v = query, key, value
    if not all(isinstance(t, ag.Tensor) for t in (q, k, v)) or min(q.ndim, k.ndim, v.ndim) < 2:
        raise ValueError("scaled_dot_product_attention: query, key and value must be Tensors of "
                         "at least 2 axes (..., L, E), (..., S, E), (..., S, Ev)")
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ValueError(f"scaled_dot_product_attention: shapes query {q.shape}, key {k.shape}, "
                         f"value {v.shape} do not fit (..., L, E), (..., S, E), (..., S, Ev)")
    if is_causal and attn_mask is not None:
        raise ValueError("scaled_dot_product_attention: give attn_mask or is_causal=True, not "
                         "both (as PyTorch); fold the causal pattern into attn_mask")
    _check_batch_axes(q, k, v, enable_gqa)
    if enable_gqa and k.ndim >= 3 and q.ndim >= 3 and k.shape[-3] != q.shape[-3]:
        hq, hk = q.shape[-3], k.shape[-3]
        if hq % hk or v.shape[-3] != hk:
            raise ValueError(f"scaled_dot_product_attention: enable_gqa needs the query heads "
                             f"({hq}) to be a multiple of the key/value heads ({hk})")
        k, v = (ag.reshape(ag.broadcast_to(ag.expand_dims(t, axis=-3),
                                           (*t.shape[:-2], hq // hk, *t.shape[-2:])),
                           (*t.shape[:-3], hq, *t.shape[-2:])) for t in (k, v))
    e = q.shape[-1]
    sc = 1.0 / math.sqrt(e) if scale is None else float(scale)
    s = (q @ ag.matrix_transpose(k)) * sc
    L, S = q.shape[-2], k.shape[-2]
    masked = False
    if is_causal:
        with ag.default_backend(q.backend):
            causal = ag.tril(ag.ones((L, S), dtype=ag.bool, device=q.device))
        s = ag.where(causal, s, _NEG_INF)
        masked = True
    elif attn_mask is not None:
        m = _as_mask(attn_mask, q)
        _check_mask(m, "attn_mask", tuple(s.shape), "scaled_dot_product_attention")
        if m.dtype == ag.bool:
            s = ag.where(m, s, _NEG_INF)
            masked = True
        else:
            s = s + m
            masked = True
    if S == 0:
        p = s  # no key: an empty weight row, a zero output (PyTorch's)
    else:
        p = _masked_softmax(s) if masked else F.softmax(s, axis=-1)
    if dropout_p > 0.0:
        p = F.dropout(p, dropout_p, True)
    return p @ v


class MultiheadAttention(Module):
    """PyTorch's ``nn.MultiheadAttention``: ``out_proj(concat_h attn(q W_qᵀ + b_q, k W_kᵀ + b_k,
    v W_vᵀ + b_v)_h)`` over ``num_heads`` heads of size ``embed_dim / num_heads``.

    ``MultiheadAttention(embed_dim, num_heads, dropout=0.0, bias=True, add_bias_kv=False,
    add_zero_attn=False, kdim=None, vdim=None, batch_first=False)``, plus ``backend``, ``dtype``,
    ``seed`` keywords. Parameters as in PyTorch: ``in_proj_weight (3E, E)`` (rows q, k, v) when
    ``kdim == vdim == embed_dim``, else ``q_proj_weight (E, E)``, ``k_proj_weight (E, kdim)``,
    ``v_proj_weight (E, vdim)``; ``in_proj_bias (3E,)``; ``bias_k``/``bias_v (1, 1, E)`` with
    ``add_bias_kv``; ``out_proj`` a :class:`Linear` ``(E, E)``.

    ``forward(query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
    average_attn_weights=True, is_causal=False) -> (attn_output, attn_weights)``: ``query (L, N,
    E)``, ``key (S, N, kdim)``, ``value (S, N, vdim)`` (``(N, L, E)``… with ``batch_first``;
    unbatched ``(L, E)``…). ``key_padding_mask (N, S)``: boolean (``True`` ignores that key) or
    floating (added). ``attn_mask (L, S)`` or ``(N·num_heads, L, S)``: boolean (``True`` is *not*
    allowed to attend -- PyTorch's convention here, the opposite of
    :func:`scaled_dot_product_attention`'s) or floating (added). ``attn_weights (N, L, S)``
    (averaged over heads) or ``(N, num_heads, L, S)``, ``None`` unless ``need_weights``.
    ``is_causal=True`` (with ``attn_mask``, which PyTorch requires) follows PyTorch: without
    ``key_padding_mask`` and with ``need_weights=False`` the top-left causal pattern over every
    key -- ``add_bias_kv``'s and ``add_zero_attn``'s columns included -- replaces
    ``attn_mask``; otherwise ``attn_mask`` is used.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 add_bias_kv: bool = False, add_zero_attn: bool = False, kdim: int | None = None,
                 vdim: int | None = None, batch_first: bool = False, *,
                 backend: str | None = None, dtype: Any = None, seed: Seed = None) -> None:
        if embed_dim < 1 or num_heads < 1 or embed_dim % num_heads:
            raise ValueError(f"MultiheadAttention: embed_dim ({embed_dim}) must be a positive "
                             f"multiple of num_heads ({num_heads})")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"MultiheadAttention: dropout must be in [0, 1], not {dropout}")
        self.embed_dim = int(embed_dim)
        self.kdim = int(kdim) if kdim is not None else self.embed_dim
        self.vdim = int(vdim) if vdim is not None else self.embed_dim
        self._qkv_same_embed_dim = self.kdim == self.embed_dim and self.vdim == self.embed_dim
        self.num_heads = int(num_heads)
        self.dropout = float(dropout)
        self.batch_first = bool(batch_first)
        self.head_dim = self.embed_dim // self.num_heads
        self.add_zero_attn = bool(add_zero_attn)
        dtype = default_dtype(dtype)
        rng = host_rng(seed)
        e = self.embed_dim

        def xavier(shape: tuple[int, int], fan_out: int) -> ag.Tensor:
            a = math.sqrt(6.0 / (shape[1] + fan_out))
            return ag.tensor(rng.uniform(-a, a, size=shape), backend=backend, dtype=dtype,
                             requires_grad=True)

        self.in_proj_weight: ag.Tensor | None = None
        self.q_proj_weight: ag.Tensor | None = None
        self.k_proj_weight: ag.Tensor | None = None
        self.v_proj_weight: ag.Tensor | None = None
        if self._qkv_same_embed_dim:
            self.in_proj_weight = xavier((3 * e, e), 3 * e)
        else:
            self.q_proj_weight = xavier((e, e), e)
            self.k_proj_weight = xavier((e, self.kdim), e)
            self.v_proj_weight = xavier((e, self.vdim), e)
        self.in_proj_bias: ag.Tensor | None = None
        if bias:
            self.in_proj_bias = ag.tensor([0.0] * (3 * e), backend=backend, dtype=dtype,
                                          requires_grad=True)
        self.bias_k: ag.Tensor | None = None
        self.bias_v: ag.Tensor | None = None
        if add_bias_kv:
            std = 1.0 / math.sqrt(e)  # xavier_normal_ of a (1, 1, E) tensor, as PyTorch
            self.bias_k, self.bias_v = (
                ag.tensor(rng.normal(0.0, std, size=(1, 1, e)), backend=backend, dtype=dtype,
                          requires_grad=True) for _ in range(2))
        # PyTorch's out_proj: a Linear's default weight, U(-1/√E, 1/√E), and a zero bias
        self.out_proj = Linear(e, e, bias=bias, backend=backend, dtype=dtype, seed=rng)
        self.out_proj.weight = ag.tensor(rng.uniform(-1 / math.sqrt(e), 1 / math.sqrt(e),
                                                     size=(e, e)),
                                         backend=backend, dtype=dtype, requires_grad=True)

    def _proj(self, x: ag.Tensor, i: int) -> ag.Tensor:
        e = self.embed_dim
        b = None if self.in_proj_bias is None else self.in_proj_bias[i * e:(i + 1) * e]
        if self.in_proj_weight is not None:
            w = self.in_proj_weight[i * e:(i + 1) * e, ...]
        else:
            w = (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight)[i]  # type: ignore[assignment]
        return _linear(x, w, b)

    def forward(self, query: ag.Tensor, key: ag.Tensor, value: ag.Tensor,
                key_padding_mask: Any = None, need_weights: bool = True, attn_mask: Any = None,
                average_attn_weights: bool = True, is_causal: bool = False
                ) -> tuple[ag.Tensor, ag.Tensor | None]:
        """See the class docstring."""
        if is_causal and attn_mask is None:
            raise RuntimeError("MultiheadAttention: is_causal=True is a hint that attn_mask is "
                               "the causal mask; give attn_mask too (as PyTorch requires)")
        batched = query.ndim == 3
        if query.ndim not in (2, 3) or key.ndim != query.ndim or value.ndim != query.ndim:
            raise ValueError(f"MultiheadAttention: query, key, value must all be 3-D (batched) or "
                             f"2-D (unbatched); got {query.shape}, {key.shape}, {value.shape}")
        w = self.in_proj_weight if self.in_proj_weight is not None else self.q_proj_weight
        assert w is not None
        check_input_dtype(self, query, w)
        if not batched:
            query, key, value = (ag.expand_dims(t, axis=1) for t in (query, key, value))
        elif self.batch_first:
            query, key, value = (ag.permute_dims(t, (1, 0, 2)) for t in (query, key, value))
        L, n, e = query.shape
        if e != self.embed_dim or key.shape[-1] != self.kdim or value.shape[-1] != self.vdim \
                or key.shape[:2] != value.shape[:2] or key.shape[1] != n:
            raise ValueError(f"MultiheadAttention: shapes query {query.shape}, key {key.shape}, "
                             f"value {value.shape} do not fit (L, N, {self.embed_dim}), "
                             f"(S, N, {self.kdim}), (S, N, {self.vdim})")
        h, hd = self.num_heads, self.head_dim
        q, k, v = self._proj(query, 0), self._proj(key, 1), self._proj(value, 2)
        kpm = None if key_padding_mask is None else _as_mask(key_padding_mask, q)
        am = None if attn_mask is None else _as_mask(attn_mask, q)
        self._check_masks(kpm, am, batched, n, L, key.shape[0])
        # PyTorch's hint: then attn_mask is dropped and scaled_dot_product_attention's causal
        # pattern covers the keys added below too (else the mask is used, is_causal ignored)
        causal = is_causal and kpm is None and not need_weights
        if causal:
            am = None
        if kpm is not None and not batched:
            kpm = ag.expand_dims(kpm, axis=0)
        if self.bias_k is not None and self.bias_v is not None:
            k = ag.concat([k, ag.broadcast_to(self.bias_k, (1, n, e))], axis=0)
            v = ag.concat([v, ag.broadcast_to(self.bias_v, (1, n, e))], axis=0)
            am = None if am is None else _pad_last(am)
            kpm = None if kpm is None else _pad_last(kpm)
        # (T, N, E) -> (N, h, T, hd)
        q, k, v = (ag.permute_dims(ag.reshape(t, (t.shape[0], n, h, hd)), (1, 2, 0, 3))
                   for t in (q, k, v))
        if self.add_zero_attn:
            with ag.default_backend(q.backend):
                z = ag.zeros((n, h, 1, hd), dtype=k.dtype, device=k.device)
            k, v = ag.concat([k, z], axis=2), ag.concat([v, z], axis=2)
            am = None if am is None else _pad_last(am)
            kpm = None if kpm is None else _pad_last(kpm)
        s_len = k.shape[2]
        scores = (q * (1.0 / math.sqrt(hd))) @ ag.matrix_transpose(k)  # (N, h, L, S)
        if am is not None:
            if am.ndim == 3:
                am = ag.reshape(am, (n, h, L, s_len))
            scores = ag.where(am, _NEG_INF, scores) if am.dtype == ag.bool else scores + am
        if kpm is not None:
            kpm = ag.reshape(kpm, (n, 1, 1, s_len))
            scores = ag.where(kpm, _NEG_INF, scores) if kpm.dtype == ag.bool else scores + kpm
        if causal:
            with ag.default_backend(q.backend):
                keep = ag.tril(ag.ones((L, s_len), dtype=ag.bool, device=q.device))
            scores = ag.where(keep, scores, _NEG_INF)
        # PyTorch's two paths differ on a query whose keys are all masked: with the weights
        # (softmax) NaN, without them (scaled_dot_product_attention's kernel) a zero row
        plain = need_weights or (am is None and kpm is None and not causal)
        if s_len == 0:
            p = scores  # no key: an empty weight row, a zero output (PyTorch's)
        else:
            p = F.softmax(scores, axis=-1) if plain else _masked_softmax(scores)
        if self.dropout > 0.0 and self.training:
            p = F.dropout(p, self.dropout, True)
        out = p @ v  # (N, h, L, hd)
        out = ag.reshape(ag.permute_dims(out, (2, 0, 1, 3)), (L, n, e))
        out = self.out_proj(out)
        weights = None
        if need_weights:
            weights = ag.mean(p, axis=1) if average_attn_weights else p
            if not batched:
                weights = weights[0, ...]
        if not batched:
            out = out[:, 0, ...]
        elif self.batch_first:
            out = ag.permute_dims(out, (1, 0, 2))
        return out, weights

    def _check_masks(self, kpm: ag.Tensor | None, am: ag.Tensor | None, batched: bool, n: int,
                     L: int, S: int) -> None:
        """PyTorch's checks of the masks' dtypes (boolean or floating) and shapes (a shape that
        merely broadcasts, or reshapes, would mask the wrong keys silently)."""
        op = "MultiheadAttention"
        h = self.num_heads
        for what, m in (("key_padding_mask", kpm), ("attn_mask", am)):
            if m is not None and m.dtype != ag.bool and not m.dtype.is_floating:
                raise TypeError(f"{op}: {what} has dtype {m.dtype.name}; PyTorch takes boolean "
                                "masks (True: not allowed to attend) or floating ones (added to "
                                f"the scores): convert it, e.g. ag.astype({what}, ag.bool)")
        if kpm is not None:
            want: tuple[int, ...] = (n, S) if batched else (S,)
            if tuple(kpm.shape) != want:
                raise ValueError(f"{op}: key_padding_mask has shape {tuple(kpm.shape)}; expected "
                                 f"{want} ({'batch, ' if batched else ''}source length), for key "
                                 "positions to ignore")
        if am is not None:
            three = (n * h, L, S) if batched else (h, L, S)
            if tuple(am.shape) not in ((L, S), three):
                raise ValueError(f"{op}: attn_mask has shape {tuple(am.shape)}; expected {(L, S)} "
                                 f"or {three} ({'batch * ' if batched else ''}num_heads, target "
                                 "length, source length), as PyTorch")

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, "
                f"dropout={self.dropout}, batch_first={self.batch_first}")


def _pad_last(m: ag.Tensor) -> ag.Tensor:
    """Append one "attend" column to a mask's last axis (``False`` / ``0``)."""
    with ag.default_backend(m.backend):
        z = ag.zeros((*m.shape[:-1], 1), dtype=m.dtype, device=m.device)
    return ag.concat([m, z], axis=-1)
