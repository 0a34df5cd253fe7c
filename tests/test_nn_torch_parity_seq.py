"""Adversarial PyTorch parity for the recurrent layers and attention, as a user porting PyTorch
code meets them: weights moved by ``state_dict`` both ways (PyTorch into agnograd and agnograd
into PyTorch), then outputs, final states and every gradient compared in float64 (float32
where cheap). Complements ``tests/test_nn_recurrent.py`` with the cases it leaves out: deep
bidirectional stacks with distinct initial states per slot, dropout in evaluation, sequence
length and batch 1, projections with every option, cells against the layers, causal masks with
``L > S``, broadcast masks over extra batch axes, masks of the wrong dtype or shape, rows with
no key under ``need_weights=False``, and the layers under ``jit``, ``capture``, ``vmap`` and
second-order differentiation."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

import agnograd as ag
import agnograd.nn.functional as F
from agnograd import nn, optim

torch = pytest.importorskip("torch")
TF = torch.nn.functional


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _to_ag(m, t):
    """PyTorch's weights into the agnograd module."""
    m.load_state_dict({k: v.detach().numpy() for k, v in t.state_dict().items()})


def _to_torch(m, t):
    """The agnograd module's weights into the PyTorch module (the other way)."""
    t.load_state_dict({k: torch.tensor(np.asarray(v.numpy())) for k, v in m.state_dict().items()})


def _close(a, b, what, tol=1e-10):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol, err_msg=what)


def _flat(out):
    """The tensors of ``(output, h_n)`` or ``(output, (h_n, c_n))``."""
    y, h = out
    return [y, *h] if isinstance(h, tuple) else [y, h]


def _weights(shape, i):
    return np.cos(np.arange(int(np.prod(shape))) * 0.7 + i).reshape(tuple(shape))


def _compare(outs_a, outs_t, leaves_a, leaves_t, tol=1e-10, gtol=1e-9):
    """Values and the gradients of ``Σ w_i · out_i`` (fixed, distinct ``w_i``) for each leaf."""
    assert len(outs_a) == len(outs_t)
    loss_a, loss_t = 0.0, 0.0
    for i, (a, t) in enumerate(zip(outs_a, outs_t)):
        assert a.shape == tuple(t.shape), (i, a.shape, tuple(t.shape))
        _close(a.numpy(), t.detach().numpy(), f"output {i}", tol)
        w = _weights(t.shape, i)
        loss_a = loss_a + ag.sum(a * ag.tensor(w, dtype=a.dtype))
        loss_t = loss_t + (t * torch.tensor(w, dtype=t.dtype)).sum()
    loss_a.backward()
    loss_t.backward()
    assert len(leaves_a) == len(leaves_t)
    for (name, a), t in zip(leaves_a, leaves_t):
        assert a.grad is not None, f"no gradient for {name}"
        assert t.grad is not None, f"torch has no gradient for {name}"
        _close(a.grad.numpy(), t.grad.numpy(), f"gradient of {name}", gtol)


def _params_t(m, t):
    """torch's parameters in the agnograd module's order (by name)."""
    tp = dict(t.named_parameters())
    return [tp[k] for k, _ in m.named_parameters()]


def _recurrent(kind, n_in, hidden, dtype=ag.float64, **kw):
    """An agnograd layer and torch's, torch's weights loaded into agnograd."""
    tdt = torch.float64 if dtype == ag.float64 else torch.float32
    if kind in ("RNN_TANH", "RNN_RELU"):
        kw["nonlinearity"] = "tanh" if kind == "RNN_TANH" else "relu"
        kind = "RNN"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # both warn of dropout with one layer
        t = getattr(torch.nn, kind)(n_in, hidden, **kw).to(tdt)
        m = getattr(nn, kind)(n_in, hidden, dtype=dtype, seed=0, **kw)
    assert [k for k, _ in m.named_parameters()] == list(t.state_dict())
    assert [tuple(v.shape) for v in m.state_dict().values()] == \
        [tuple(v.shape) for v in t.state_dict().values()]
    _to_ag(m, t)
    return m, t


def _run_recurrent(m, t, x, states=None, dtype=np.float64, tol=1e-10, gtol=1e-9):
    """Forward both with ``x`` (and initial states), compare outputs, final states and the
    gradients of the input, the states and every parameter."""
    tdt = torch.float64 if dtype == np.float64 else torch.float32
    adt = ag.float64 if dtype == np.float64 else ag.float32
    xa = ag.tensor(x, dtype=adt, requires_grad=True)
    xt = torch.tensor(x, dtype=tdt, requires_grad=True)
    leaves_a, leaves_t = [("input", xa)], [xt]
    args_a, args_t = [xa], [xt]
    if states is not None:
        sa = [ag.tensor(s, dtype=adt, requires_grad=True) for s in states]
        st = [torch.tensor(s, dtype=tdt, requires_grad=True) for s in states]
        leaves_a += [(f"initial state {i}", s) for i, s in enumerate(sa)]
        leaves_t += st
        args_a.append(tuple(sa) if len(sa) == 2 else sa[0])
        args_t.append(tuple(st) if len(st) == 2 else st[0])
    out_a, out_t = _flat(m(*args_a)), _flat(t(*args_t))
    _compare(out_a, out_t, leaves_a + m.named_parameters(), leaves_t + _params_t(m, t), tol, gtol)
    return out_a


KINDS = ["RNN_TANH", "RNN_RELU", "LSTM", "GRU"]


# ---------------------------------------------------------------------------------------------
# Recurrent layers


@pytest.mark.parametrize(("kind", "proj"), [(k, 0) for k in KINDS] + [("LSTM", 2)])
def test_state_dict_moves_both_ways(kind, proj):
    """agnograd's own initial weights, loaded into torch, give torch's numbers (the keys, their
    order and the shapes are torch's: ``weight_ih_l1_reverse``, ``weight_hr_l0``...)."""
    name = "RNN" if kind.startswith("RNN") else kind
    kw = {"num_layers": 3, "bidirectional": True}
    if proj:
        kw["proj_size"] = proj
    if kind == "RNN_RELU":
        kw["nonlinearity"] = "relu"
    m = getattr(nn, name)(3, 4, dtype=ag.float64, seed=11, **kw)
    t = getattr(torch.nn, name)(3, 4, **kw).double()
    assert list(m.state_dict()) == list(t.state_dict())
    assert "weight_ih_l2_reverse" in m.state_dict()
    _to_torch(m, t)
    x = _rng(1).normal(size=(4, 2, 3))
    _run_recurrent(m, t, x)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("layers", "bidir", "bias", "batch_first"), [
    (3, True, True, False), (3, True, False, True), (2, True, False, False),
])
def test_deep_bidirectional_with_distinct_initial_states(kind, layers, bidir, bias, batch_first):
    """Every (layer, direction) slot of ``h_0`` (and ``c_0``) holds different values, so a slot
    read in the wrong order (layer-major, forward before reverse, as torch) shows."""
    n_in, hidden, steps, n = 3, 4, 5, 2
    m, t = _recurrent(kind, n_in, hidden, num_layers=layers, bidirectional=bidir, bias=bias,
                      batch_first=batch_first)
    r = _rng(2)
    x = r.normal(size=(n, steps, n_in) if batch_first else (steps, n, n_in))
    d = (2 if bidir else 1) * layers
    states = [r.normal(size=(d, n, hidden)) + np.arange(d)[:, None, None]
              for _ in range(2 if kind == "LSTM" else 1)]
    _run_recurrent(m, t, x, states)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", ["L1", "N1", "L1N1", "unbatched_L1"])
def test_single_step_and_single_example(kind, shape):
    steps, n = {"L1": (1, 3), "N1": (4, 1), "L1N1": (1, 1), "unbatched_L1": (1, None)}[shape]
    m, t = _recurrent(kind, 2, 3, num_layers=2, bidirectional=True)
    r = _rng(3)
    x = r.normal(size=(steps, 2) if n is None else (steps, n, 2))
    hs = (4, 3) if n is None else (4, n, 3)
    states = [r.normal(size=hs) for _ in range(2 if kind == "LSTM" else 1)]
    _run_recurrent(m, t, x, states)
    _run_recurrent(*_recurrent(kind, 2, 3, num_layers=2, bidirectional=True), x)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("hx", [False, True])
def test_unbatched_input_ignores_batch_first(kind, hx):
    """An unbatched ``(L, H_in)`` input is read as ``(L, H_in)`` whatever ``batch_first`` says,
    with unbatched ``(D·layers, H)`` states and unbatched results, as torch."""
    m, t = _recurrent(kind, 3, 4, num_layers=2, bidirectional=True, batch_first=True)
    r = _rng(4)
    x = r.normal(size=(5, 3))
    states = [r.normal(size=(4, 4)) for _ in range(2 if kind == "LSTM" else 1)] if hx else None
    outs = _run_recurrent(m, t, x, states)
    assert outs[0].shape == (5, 8) and outs[1].shape == (4, 4)


@pytest.mark.parametrize("kind", KINDS)
def test_dropout_in_eval_is_exact_and_train_drops(kind):
    """``dropout`` between layers: in evaluation torch's numbers exactly (no mask, no scale);
    in training the result differs from evaluation, and ``ag.manual_seed`` repeats it."""
    m, t = _recurrent(kind, 3, 4, num_layers=3, bidirectional=True, dropout=0.4)
    m.eval()
    t.eval()
    x = _rng(5).normal(size=(5, 2, 3))
    _run_recurrent(m, t, x)
    m.train()
    xa = ag.tensor(x)
    ag.manual_seed(3)
    a = _flat(m(xa))
    ag.manual_seed(3)
    b = _flat(m(xa))
    for u, v in zip(a, b):
        _close(u.numpy(), v.numpy(), "same seed, same masks", 0)
    m.eval()
    assert not np.allclose(a[0].numpy(), m(xa)[0].numpy())


@pytest.mark.parametrize("kind", ["RNN_TANH", "GRU", "LSTM"])
def test_dropout_one_zeroes_the_next_layers_input(kind):
    """``dropout=1.0`` in training drops every unit between layers: the upper layer sees zeros
    (torch's result, which a ``1/(1-p)`` scale must not turn into NaN)."""
    m, t = _recurrent(kind, 3, 4, num_layers=2, dropout=1.0)
    x = _rng(6).normal(size=(4, 2, 3))
    _run_recurrent(m, t, x)


@pytest.mark.parametrize("options", [
    {"batch_first": True}, {"bias": False}, {"num_layers": 3}, {"proj_size": 1},
    {"num_layers": 2, "bidirectional": True, "batch_first": True, "bias": False},
])
@pytest.mark.parametrize("hx", [False, True])
def test_lstm_projection_with_every_option(options, hx):
    kw = {"proj_size": 2, **options}
    m, t = _recurrent("LSTM", 3, 5, **kw)
    p, d = kw["proj_size"], (2 if kw.get("bidirectional") else 1) * kw.get("num_layers", 1)
    r = _rng(7)
    x = r.normal(size=(2, 4, 3) if kw.get("batch_first") else (4, 2, 3))
    states = [r.normal(size=(d, 2, p)), r.normal(size=(d, 2, 5))] if hx else None
    outs = _run_recurrent(m, t, x, states)
    assert outs[1].shape == (d, 2, p) and outs[2].shape == (d, 2, 5)


def test_lstm_projection_unbatched():
    m, t = _recurrent("LSTM", 3, 5, proj_size=2, num_layers=2, bidirectional=True)
    r = _rng(8)
    _run_recurrent(m, t, r.normal(size=(4, 3)), [r.normal(size=(4, 2)), r.normal(size=(4, 5))])


@pytest.mark.parametrize("kind", KINDS)
def test_float32_matches_torch(kind):
    m, t = _recurrent(kind, 3, 4, dtype=ag.float32, num_layers=2, bidirectional=True)
    x = _rng(9).normal(size=(6, 3, 3))
    _run_recurrent(m, t, x, dtype=np.float32, tol=2e-6, gtol=2e-5)


def test_recurrent_errors_name_the_layer_and_the_fix():
    m = nn.GRU(3, 4, num_layers=2, dtype=ag.float64)
    x = ag.tensor(np.zeros((5, 2, 3)))
    with pytest.raises(ValueError, match=r"GRU: h_0 has shape \(2, 4\); expected \(2, 2, 4\)"):
        m(x, ag.tensor(np.zeros((2, 4))))  # batched input, unbatched state (torch refuses)
    with pytest.raises(ValueError, match=r"GRU: h_0 has shape \(2, 1, 4\); expected \(2, 4\)"):
        m(ag.tensor(np.zeros((5, 3))), ag.tensor(np.zeros((2, 1, 4))))
    with pytest.raises(ValueError, match="GRU: input must be a Tensor of 2"):
        m(ag.tensor(np.zeros((5, 2, 2, 3))))


def test_initial_state_of_another_dtype(monkeypatch):
    """torch refuses ``h_0`` of another dtype than the input. An integer state is refused (it
    ran the step in a promoted dtype); a float64 state into a float32 layer and input warns, as
    an input of another dtype does, naming the state and the fix."""
    from agnograd.nn import recurrent

    monkeypatch.setattr(recurrent, "_warned_states", set())
    m = nn.LSTM(3, 4, dtype=ag.float32)
    x = ag.zeros((5, 2, 3), dtype=ag.float32)
    c = ag.zeros((1, 2, 4), dtype=ag.float32)
    with pytest.raises(TypeError, match=r"LSTM: h_0 has dtype int64.*ag.astype\(h_0, ag.float32"):
        m(x, (ag.zeros((1, 2, 4), dtype=ag.int64), c))
    with pytest.raises(TypeError, match="GRUCell: hx has dtype int32"):
        nn.GRUCell(3, 4, dtype=ag.float32)(x[0], ag.zeros((2, 4), dtype=ag.int32))
    with pytest.warns(UserWarning, match="LSTM: h_0 has dtype float64, the input float32"):
        m(x, (ag.zeros((1, 2, 4), dtype=ag.float64), c))
    with pytest.warns(UserWarning, match="LSTMCell: c_0 has dtype float64"):
        nn.LSTMCell(3, 4, dtype=ag.float32)(x[0], (c[0], ag.zeros((2, 4), dtype=ag.float64)))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")  # the input's dtype (the layer's differs): not warned
        nn.RNN(3, 4, dtype=ag.float32)(ag.zeros((5, 3), dtype=ag.float64),
                                      ag.zeros((1, 4), dtype=ag.float64))
    assert not [w for w in seen if "h_0" in str(w.message)]


# ---------------------------------------------------------------------------------------------
# Cells


@pytest.mark.parametrize("kind", ["RNNCell", "RNNCell_relu", "LSTMCell", "GRUCell"])
@pytest.mark.parametrize(("unbatched", "hx", "bias"), [
    (True, False, True), (True, True, False), (False, False, False), (False, True, True),
])
def test_cells_match_torch(kind, unbatched, hx, bias):
    kw = {"bias": bias}
    if kind == "RNNCell_relu":
        kind, kw["nonlinearity"] = "RNNCell", "relu"
    t = getattr(torch.nn, kind)(3, 4, **kw).double()
    m = getattr(nn, kind)(3, 4, dtype=ag.float64, seed=0, **kw)
    assert list(m.state_dict()) == list(t.state_dict())
    _to_ag(m, t)
    r = _rng(10)
    x = r.normal(size=(3,) if unbatched else (2, 3))
    xa, xt = ag.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    leaves_a, leaves_t, args_a, args_t = [("input", xa)], [xt], [xa], [xt]
    if hx:
        hs = (4,) if unbatched else (2, 4)
        states = [r.normal(size=hs) for _ in range(2 if kind == "LSTMCell" else 1)]
        sa = [ag.tensor(s, requires_grad=True) for s in states]
        st = [torch.tensor(s, requires_grad=True) for s in states]
        leaves_a += [("state", s) for s in sa]
        leaves_t += st
        args_a.append(tuple(sa) if len(sa) == 2 else sa[0])
        args_t.append(tuple(st) if len(st) == 2 else st[0])
    ya, yt = m(*args_a), t(*args_t)
    ya, yt = (list(ya), list(yt)) if kind == "LSTMCell" else ([ya], [yt])
    _compare(ya, yt, leaves_a + m.named_parameters(), leaves_t + _params_t(m, t))


@pytest.mark.parametrize(("name", "args", "kw"), [
    ("RNN", (3, 4), {"num_layers": 2, "nonlinearity": "relu", "bidirectional": True}),
    ("LSTM", (3, 4), {"proj_size": 2, "batch_first": True, "dropout": 0.1, "num_layers": 2}),
    ("GRU", (3, 4), {"bias": False}),
    ("RNNCell", (3, 4), {"nonlinearity": "relu"}), ("LSTMCell", (3, 4), {"bias": False}),
    ("GRUCell", (3, 4), {}),
    ("MultiheadAttention", (6, 2), {"kdim": 3, "add_zero_attn": True, "batch_first": True}),
])
def test_configuration_attributes_are_torchs(name, args, kw):
    """The plain attributes PyTorch code reads (``hidden_size``, ``num_layers``, a cell's
    ``bias``, ``head_dim``, ``_qkv_same_embed_dim``...) exist with torch's values."""
    t = getattr(torch.nn, name)(*args, **kw)
    m = getattr(nn, name)(*args, **kw)
    plain = {k: v for k, v in vars(t).items() if not k.startswith("_is_") and k != "training"
             and isinstance(v, (bool, int, float, str))}
    assert plain
    assert {k: getattr(m, k, "missing") for k in plain} == plain


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_cells_stepped_by_hand_equal_the_layer(kind):
    """A cell looped over time with the layer's ``l0`` weights gives the layer's output (the
    porting pattern of an attention decoder)."""
    layer = getattr(nn, kind)(3, 4, dtype=ag.float64, seed=1)
    cell = getattr(nn, kind + "Cell")(3, 4, dtype=ag.float64, seed=2)
    cell.load_state_dict({k[:-3]: v for k, v in layer.state_dict().items()})
    x = ag.tensor(_rng(11).normal(size=(5, 2, 3)))
    y = layer(x)[0]
    state = None
    for i in range(5):
        state = cell(x[i], state)
        h = state[0] if kind == "LSTM" else state
        _close(h.numpy(), y[i].numpy(), f"step {i}", 1e-13)


# ---------------------------------------------------------------------------------------------
# scaled_dot_product_attention


def _sdpa_both(q, k, v, tol=1e-10, **kw):
    """Compare values and gradients of query, key, value (and a float mask) with torch's."""
    A = [ag.tensor(a, requires_grad=True) for a in (q, k, v)]
    T = [torch.tensor(a, requires_grad=True) for a in (q, k, v)]
    kw_a, kw_t = dict(kw), dict(kw)
    leaves_a, leaves_t = [("query", A[0]), ("key", A[1]), ("value", A[2])], list(T)
    m = kw.get("attn_mask")
    if m is not None:
        grad = m.dtype.kind == "f"
        kw_a["attn_mask"] = ag.tensor(m, requires_grad=grad)
        kw_t["attn_mask"] = torch.tensor(m, requires_grad=grad)
        if grad and np.isfinite(m).all():
            leaves_a.append(("attn_mask", kw_a["attn_mask"]))
            leaves_t.append(kw_t["attn_mask"])
    ya = F.scaled_dot_product_attention(*A, **kw_a)
    yt = TF.scaled_dot_product_attention(*T, **kw_t)
    _compare([ya], [yt], leaves_a, leaves_t, tol)
    return ya


@pytest.mark.parametrize(("L", "S"), [(6, 3), (3, 6), (1, 4), (4, 1), (5, 5)])
@pytest.mark.parametrize("scale", [None, 0.3])
def test_sdpa_causal_is_top_left_aligned(L, S, scale):
    """``is_causal`` with ``L != S``: torch's top-left ``tril(ones(L, S))`` (query ``i`` sees keys
    ``0..i``), not the bottom-right alignment of a KV cache."""
    r = _rng(20)
    q, k, v = r.normal(size=(2, 3, L, 4)), r.normal(size=(2, 3, S, 4)), r.normal(size=(2, 3, S, 5))
    _sdpa_both(q, k, v, is_causal=True, scale=scale)


@pytest.mark.parametrize("kind", ["bool", "float"])
@pytest.mark.parametrize("mshape", ["LS", "N1LS", "1HLS", "NHLS", "N11S", "1S"])
def test_sdpa_broadcast_masks_over_extra_axes(kind, mshape):
    n, h, L, S = 2, 3, 4, 5
    shape = {"LS": (L, S), "N1LS": (n, 1, L, S), "1HLS": (1, h, L, S), "NHLS": (n, h, L, S),
             "N11S": (n, 1, 1, S), "1S": (1, S)}[mshape]
    r = _rng(21)
    q, k, v = r.normal(size=(n, h, L, 6)), r.normal(size=(n, h, S, 6)), r.normal(size=(n, h, S, 2))
    if kind == "bool":
        m = r.random(shape) > 0.3
        m[..., 0] = True
    else:
        m = r.normal(size=shape)
    _sdpa_both(q, k, v, attn_mask=m)


def test_sdpa_mask_with_more_axes_than_the_query_is_refused():
    """A ``(N, 1, L, S)`` mask over 2-D ``(L, E)`` query/key/value: torch refuses it (the mask
    must broadcast to the scores' shape); so does agnograd, naming the shapes, rather than
    widening the output."""
    r = _rng(22)
    q, k, v = r.normal(size=(4, 3)), r.normal(size=(5, 3)), r.normal(size=(5, 2))
    for m in (r.normal(size=(2, 1, 4, 5)), r.random((2, 1, 4, 5)) > 0.5, r.normal(size=(4, 4))):
        with pytest.raises(RuntimeError):
            TF.scaled_dot_product_attention(*(torch.tensor(a) for a in (q, k, v)),
                                            attn_mask=torch.tensor(m))
        with pytest.raises(ValueError, match=re.escape(
                f"scaled_dot_product_attention: attn_mask has shape {m.shape}")):
            F.scaled_dot_product_attention(*(ag.tensor(a) for a in (q, k, v)),
                                           attn_mask=ag.tensor(m))


def test_sdpa_fully_masked_rows_give_zeros_as_torch():
    r = _rng(23)
    q, k, v = r.normal(size=(2, 4, 3)), r.normal(size=(2, 5, 3)), r.normal(size=(2, 5, 3))
    m = r.random((2, 1, 4, 5)) > 0.5
    m[0, 0, 1] = False
    m[1, 0, 3] = False
    m[..., 0, 2] = True
    y = _sdpa_both(q[:, None], k[:, None], v[:, None], attn_mask=m)
    assert not y.numpy()[0, 0, 1].any() and not y.numpy()[1, 0, 3].any()
    fm = np.where(m, 0.0, -np.inf)
    _sdpa_both(q[:, None], k[:, None], v[:, None], attn_mask=fm)


@pytest.mark.parametrize("dtype", ["int64", "int32", "uint8"])
def test_sdpa_refuses_integer_masks(dtype):
    """torch refuses an integer mask; adding it to the scores (a 0/1 "keep" mask becoming a
    +1 bias) would be a silent wrong result."""
    x = ag.tensor(_rng(24).normal(size=(3, 4)))
    m = ag.tensor(np.ones((3, 3), dtype=dtype))
    with pytest.raises(TypeError, match=r"scaled_dot_product_attention: attn_mask has dtype"):
        F.scaled_dot_product_attention(x, x, x, attn_mask=m)


def test_sdpa_head_mismatch_without_gqa_names_the_fix():
    q, k = ag.tensor(np.ones((2, 4, 3, 5))), ag.tensor(np.ones((2, 2, 6, 5)))
    with pytest.raises(ValueError, match=r"scaled_dot_product_attention.*enable_gqa=True"):
        F.scaled_dot_product_attention(q, k, k)
    with pytest.raises(ValueError, match="multiple of the key/value heads"):
        F.scaled_dot_product_attention(ag.tensor(np.ones((2, 3, 3, 5))), k, k, enable_gqa=True)


@pytest.mark.parametrize("shapes", [((2, 4, 3, 5), (2, 2, 6, 5)), ((3, 4, 5), (1, 4, 5)),
                                    ((6, 2, 5), (2, 3, 5))])
def test_sdpa_gqa_values_and_gradients(shapes):
    r = _rng(25)
    qs, ks = shapes
    q, k, v = r.normal(size=qs), r.normal(size=ks), r.normal(size=ks)
    _sdpa_both(q, k, v, enable_gqa=True)
    _sdpa_both(q, k, v, enable_gqa=True, is_causal=True)


def test_sdpa_dropout_zero_is_exact_and_dropout_is_unbiased():
    """``dropout_p=0`` is the plain result; with ``dropout_p=p`` (drawn on the device) a
    weight is zero with probability ``p``, the rest scaled by ``1/(1-p)``: with the identity
    as ``value`` the output is the dropped weights, whose mean over many draws is the
    weights."""
    r = _rng(26)
    q, k = r.normal(size=(2, 4, 3)), r.normal(size=(2, 5, 3))
    v = np.broadcast_to(np.eye(5), (2, 5, 5)).copy()
    _sdpa_both(q, k, v, dropout_p=0.0)
    p = TF.softmax(torch.tensor(q) @ torch.tensor(k).transpose(-1, -2) / np.sqrt(3), -1).numpy()
    ag.manual_seed(0)
    qa, ka, va = (ag.tensor(a) for a in (q, k, v))
    draws = np.stack([F.scaled_dot_product_attention(qa, ka, va, dropout_p=0.3).numpy()
                      for _ in range(400)])
    zero = draws == 0
    assert abs(zero.mean() - 0.3) < 0.02
    _close(draws[~zero] / np.broadcast_to(p / 0.7, draws.shape)[~zero], 1.0, "kept: p/(1-p)",
           1e-12)
    assert np.abs(draws.mean(0) - p).max() < 0.1


# ---------------------------------------------------------------------------------------------
# MultiheadAttention


def _mha(e=8, h=2, **kw):
    t = torch.nn.MultiheadAttention(e, h, **kw).double()
    m = nn.MultiheadAttention(e, h, dtype=ag.float64, seed=0, **kw)
    assert list(m.state_dict()) == list(t.state_dict())  # keys and their order
    assert [k for k, _ in m.named_parameters()] == [k for k, _ in t.named_parameters()]
    with torch.no_grad():  # non-zero biases, so a wrong row or column of them shows
        for name, p in t.named_parameters():
            if "bias" in name:
                p.copy_(torch.linspace(-0.5, 0.5, p.numel(), dtype=p.dtype).reshape(p.shape))
    _to_ag(m, t)
    return m, t


def _mha_both(m, t, q, k, v, tol=1e-10, grads=True, **kw):
    A = [ag.tensor(a, requires_grad=True) for a in (q, k, v)]
    T = [torch.tensor(a, requires_grad=True) for a in (q, k, v)]
    kw_a = {n: ag.tensor(x) if isinstance(x, np.ndarray) else x for n, x in kw.items()}
    kw_t = {n: torch.tensor(x) if isinstance(x, np.ndarray) else x for n, x in kw.items()}
    ya, wa = m(*A, **kw_a)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's notes on mixed mask types
        yt, wt = t(*T, **kw_t)
    assert (wa is None) == (wt is None)
    outs_a, outs_t = ([ya] if wa is None else [ya, wa]), ([yt] if wt is None else [yt, wt])
    if not grads:
        for a, b in zip(outs_a, outs_t):
            assert a.shape == tuple(b.shape)
            _close(a.numpy(), b.detach().numpy(), "output", tol)
        return outs_a
    leaves_a = [("query", A[0]), ("key", A[1]), ("value", A[2]), *m.named_parameters()]
    _compare(outs_a, outs_t, leaves_a, [*T, *_params_t(m, t)], tol)
    return outs_a


def _shaped(length, dim, n, batch_first, unbatched):
    if unbatched:
        return (length, dim)
    return (n, length, dim) if batch_first else (length, n, dim)


@pytest.mark.parametrize("need_weights", [True, False])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("kpm", ["bool", "float"])
def test_mha_key_padding_both_layouts(need_weights, batch_first, kpm):
    m, t = _mha(batch_first=batch_first)
    r = _rng(30)
    n, L, S = 3, 4, 5
    q = r.normal(size=_shaped(L, 8, n, batch_first, False))
    kv = r.normal(size=_shaped(S, 8, n, batch_first, False))
    pad = np.zeros((n, S), bool)
    pad[0, 1] = pad[1, 3:] = True
    mask = pad if kpm == "bool" else np.where(pad, -1e9, r.normal(size=(n, S)))
    _mha_both(m, t, q, kv, kv, key_padding_mask=mask, need_weights=need_weights)


@pytest.mark.parametrize("am", ["bool2", "float2", "bool3", "float3"])
@pytest.mark.parametrize("avg", [True, False])
@pytest.mark.parametrize(("unbatched", "batch_first"), [(False, False), (False, True),
                                                        (True, True)])
def test_mha_attention_masks_2d_and_3d(am, avg, unbatched, batch_first):
    """A 3-D ``attn_mask`` is ``(N·num_heads, L, S)``, batch-major, whatever ``batch_first``."""
    m, t = _mha(e=6, h=3, kdim=4, vdim=5, batch_first=batch_first)
    r = _rng(31)
    n, h, L, S = 2, 3, 4, 5
    nb = 1 if unbatched else n
    shape = (L, S) if am.endswith("2") else (nb * h, L, S)
    if am.startswith("bool"):
        mask = r.random(shape) > 0.6
        mask[..., 0] = False
    else:
        mask = r.normal(size=shape)
    q = r.normal(size=_shaped(L, 6, n, batch_first, unbatched))
    k = r.normal(size=_shaped(S, 4, n, batch_first, unbatched))
    v = r.normal(size=_shaped(S, 5, n, batch_first, unbatched))
    outs = _mha_both(m, t, q, k, v, attn_mask=mask, average_attn_weights=avg)
    want = (L, S) if avg else (h, L, S)
    assert outs[1].shape == (want if unbatched else (n, *want))


@pytest.mark.parametrize("extra", [
    {"add_bias_kv": True}, {"add_zero_attn": True}, {"add_bias_kv": True, "add_zero_attn": True},
    {"add_bias_kv": True, "bias": False}, {"add_zero_attn": True, "kdim": 3, "vdim": 5},
])
@pytest.mark.parametrize("unbatched", [False, True])
def test_mha_bias_kv_and_zero_attn_with_every_mask(extra, unbatched):
    m, t = _mha(e=6, h=2, **extra)
    r = _rng(32)
    n, L, S, h = 2, 3, 4, 2
    nb = 1 if unbatched else n
    kd, vd = extra.get("kdim", 6), extra.get("vdim", 6)
    q = r.normal(size=_shaped(L, 6, n, False, unbatched))
    k = r.normal(size=_shaped(S, kd, n, False, unbatched))
    v = r.normal(size=_shaped(S, vd, n, False, unbatched))
    pad = np.zeros((nb, S), bool)
    pad[0, 2] = True
    am = r.normal(size=(nb * h, L, S))
    _mha_both(m, t, q, k, v, key_padding_mask=pad[0] if unbatched else pad, attn_mask=am,
              average_attn_weights=False)


def test_mha_state_dict_moves_both_ways():
    for kw in ({}, {"kdim": 3, "vdim": 5, "add_bias_kv": True}, {"bias": False}):
        m = nn.MultiheadAttention(6, 2, dtype=ag.float64, seed=4, **kw)
        t = torch.nn.MultiheadAttention(6, 2, **kw).double()
        assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == \
            {k: tuple(v.shape) for k, v in t.state_dict().items()}
        _to_torch(m, t)
        r = _rng(33)
        q = r.normal(size=(4, 2, 6))
        k = r.normal(size=(5, 2, kw.get("kdim", 6)))
        v = r.normal(size=(5, 2, kw.get("vdim", 6)))
        _mha_both(m, t, q, k, v)


def test_mha_dropout_in_eval_is_exact():
    m, t = _mha(e=6, h=2, dropout=0.5, batch_first=True)
    m.eval()
    t.eval()
    r = _rng(34)
    x = r.normal(size=(2, 4, 6))
    _mha_both(m, t, x, x, x, need_weights=True)
    _mha_both(m, t, x, x, x, need_weights=False)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy on the NaN rows
def test_mha_fully_masked_rows_as_torch():
    """A query whose keys are all masked: torch's ``need_weights=True`` path gives NaN (weights
    and output), its ``need_weights=False`` path (``scaled_dot_product_attention``) gives a zero
    attention output (so ``out_proj``'s bias) and finite gradients elsewhere."""
    m, t = _mha(e=4, h=2)
    r = _rng(35)
    x = r.normal(size=(3, 2, 4))
    pad = np.array([[True, True, True], [False, True, False]])
    ya, wa = _mha_both(m, t, x, x, x, key_padding_mask=pad, grads=False)
    assert np.isnan(ya.numpy()[:, 0]).all() and np.isnan(wa.numpy()[0]).all()
    _close(ya.numpy()[:, 1], t(*(torch.tensor(x),) * 3, key_padding_mask=torch.tensor(pad))[0]
           .detach().numpy()[:, 1], "the unmasked example")
    _mha_both(m, t, x, x, x, key_padding_mask=pad, need_weights=False)
    am = np.zeros((3, 3), bool)
    am[1] = True  # query 1 may attend to nothing
    _mha_both(m, t, x, x, x, attn_mask=am, need_weights=False)
    _mha_both(m, t, x, x, x, attn_mask=np.where(am, -np.inf, 0.0), key_padding_mask=pad[::-1]
              & False, need_weights=False)


@pytest.mark.parametrize("need_weights", [True, False])
def test_mha_is_causal_hint_uses_the_mask(need_weights):
    """``is_causal=True`` with the causal ``attn_mask``: torch's numbers (the hint changes no
    value); with a key padding mask too."""
    m, t = _mha(e=6, h=3, batch_first=True)
    r = _rng(36)
    x = r.normal(size=(2, 4, 6))
    am = np.triu(np.ones((4, 4), bool), 1)
    _mha_both(m, t, x, x, x, attn_mask=am, is_causal=True, need_weights=need_weights)
    pad = np.zeros((2, 4), bool)
    pad[1, 2] = True
    _mha_both(m, t, x, x, x, attn_mask=am, is_causal=True, key_padding_mask=pad,
              need_weights=need_weights)


@pytest.mark.parametrize("extra", [{"add_bias_kv": True}, {"add_zero_attn": True},
                                   {"add_bias_kv": True, "add_zero_attn": True}])
@pytest.mark.parametrize("need_weights", [False, True])
@pytest.mark.parametrize(("L", "S"), [(4, 4), (3, 5)])
def test_mha_is_causal_hint_with_added_keys(extra, need_weights, L, S):
    """``is_causal=True`` with ``add_bias_kv``/``add_zero_attn``: torch (``need_weights=False``,
    no key padding) drops ``attn_mask`` for the top-left causal pattern over all ``S + 1``
    or ``S + 2`` keys, so the added columns are masked for the early queries; with the weights
    it uses ``attn_mask`` padded with an "attend" column. Both paths give torch's numbers."""
    m, t = _mha(e=6, h=2, **extra)
    r = _rng(39)
    q, kv = r.normal(size=(L, 2, 6)), r.normal(size=(S, 2, 6))
    am = np.triu(np.ones((L, S), bool), 1)
    _mha_both(m, t, q, kv, kv, attn_mask=am, is_causal=True, need_weights=need_weights)


def test_mha_float32_matches_torch():
    t = torch.nn.MultiheadAttention(8, 4, batch_first=True, kdim=5, vdim=3)
    m = nn.MultiheadAttention(8, 4, batch_first=True, kdim=5, vdim=3, dtype=ag.float32)
    _to_ag(m, t)
    r = _rng(37)
    q, k, v = (r.normal(size=s).astype(np.float32) for s in ((2, 3, 8), (2, 6, 5), (2, 6, 3)))
    pad = np.zeros((2, 6), bool)
    pad[0, 4:] = True
    A = [ag.tensor(a, requires_grad=True) for a in (q, k, v)]
    T = [torch.tensor(a, requires_grad=True) for a in (q, k, v)]
    ya, wa = m(*A, key_padding_mask=ag.tensor(pad))
    yt, wt = t(*T, key_padding_mask=torch.tensor(pad))
    assert ya.dtype == ag.float32
    _compare([ya, wa], [yt, wt], [("q", A[0]), ("k", A[1]), ("v", A[2]), *m.named_parameters()],
             [*T, *_params_t(m, t)], 2e-6, 2e-5)


@pytest.mark.parametrize(("what", "kw", "match"), [
    ("int key_padding_mask", {"key_padding_mask": np.zeros((2, 5), np.int64)},
     "key_padding_mask has dtype int64"),
    ("int attn_mask", {"attn_mask": np.zeros((4, 5), np.int64)}, "attn_mask has dtype int64"),
    ("2-D attn_mask of the wrong shape", {"attn_mask": np.zeros((1, 5), bool)},
     r"attn_mask has shape \(1, 5\); expected \(4, 5\)"),
    ("3-D attn_mask of the wrong shape", {"attn_mask": np.zeros((1, 4, 5))},
     r"attn_mask has shape \(1, 4, 5\); expected \(4, 5\) or \(4, 4, 5\)"),
    ("key_padding_mask transposed", {"key_padding_mask": np.zeros((5, 2), bool)},
     r"key_padding_mask has shape \(5, 2\); expected \(2, 5\)"),
])
def test_mha_refuses_masks_torch_refuses(what, kw, match):
    m = nn.MultiheadAttention(6, 2, dtype=ag.float64)
    r = _rng(38)
    q, kv = r.normal(size=(4, 2, 6)), r.normal(size=(5, 2, 6))
    t = torch.nn.MultiheadAttention(6, 2).double()
    with pytest.raises((AssertionError, RuntimeError)):  # torch refuses each too
        t(torch.tensor(q), torch.tensor(kv), torch.tensor(kv),
          **{n: torch.tensor(x) for n, x in kw.items()})
    qa, kva = ag.tensor(q), ag.tensor(kv)
    with pytest.raises((TypeError, ValueError), match="MultiheadAttention: " + match):
        m(qa, kva, kva, **{n: ag.tensor(x) for n, x in kw.items()})


# ---------------------------------------------------------------------------------------------
# The layers around the engine: jit, capture, vmap, second order


class _SeqModel(nn.Module):
    """LSTM (2 layers, bidirectional) -> self-attention with key padding -> a linear head."""

    def __init__(self, dropout=0.0):
        self.lstm = nn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True,
                            dropout=dropout, dtype=ag.float64, seed=0)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True, dropout=dropout,
                                          dtype=ag.float64, seed=1)
        self.head = nn.Linear(8, 5, dtype=ag.float64, seed=2)

    def forward(self, x, pad):
        y, _ = self.lstm(x)
        z, _ = self.attn(y, y, y, key_padding_mask=pad, need_weights=False)
        return self.head(z + y)


class _TorchSeqModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True)
        self.attn = torch.nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = torch.nn.Linear(8, 5)

    def forward(self, x, pad):
        y, _ = self.lstm(x)
        z, _ = self.attn(y, y, y, key_padding_mask=pad, need_weights=False)
        return self.head(z + y)


def _seq_batch(i):
    r = _rng(100 + i)
    pad = np.zeros((2, 6), bool)
    pad[1, 4:] = True
    return r.normal(size=(2, 6, 3)), pad, r.integers(0, 5, size=(2, 6))


def _seq_step(model, opt):
    def step(x, pad, y):
        opt.zero_grad()
        loss = F.cross_entropy(ag.reshape(model(x, pad), (-1, 5)), ag.reshape(y, (-1,)))
        loss.backward()
        opt.step()
        return loss

    return step


@pytest.mark.parametrize("how", ["eager", "jit", "capture"])
def test_lstm_attention_training_matches_torch_compiled(how):
    """Five SGD-with-momentum steps of LSTM -> MultiheadAttention -> Linear, eagerly, under
    ``ag.jit`` and replayed by ``ag.capture``: torch's losses and final parameters."""
    tm = _TorchSeqModel().double()
    m = _SeqModel()
    _to_ag(m, tm)
    opt = optim.SGD(m.parameters(), lr=0.2, momentum=0.9, capturable=True)
    topt = torch.optim.SGD(tm.parameters(), lr=0.2, momentum=0.9)
    batches = [_seq_batch(i) for i in (0, 0, 1, 2, 3)]
    want = []
    for x, pad, y in batches:
        topt.zero_grad()
        loss = TF.cross_entropy(tm(torch.tensor(x), torch.tensor(pad)).reshape(-1, 5),
                                torch.tensor(y).reshape(-1))
        loss.backward()
        topt.step()
        want.append(float(loss.detach()))
    step = _seq_step(m, opt)
    args = [tuple(ag.tensor(a) for a in b) for b in batches]
    if how == "eager":
        got = [float(step(*a).numpy()) for a in args]
    elif how == "jit":
        compiled = ag.jit(step)
        got = [float(compiled(*a).numpy()) for a in args]
        assert compiled.cache_info()["traces"] == 1
    else:
        compiled = ag.capture(step, *args[0], warmup=1)  # two eager steps on batch 0
        got = want[:2] + [float(compiled(*a).numpy()) for a in args[2:]]
    np.testing.assert_allclose(got, want, rtol=1e-11)
    tp = dict(tm.named_parameters())
    for name, p in m.named_parameters():
        _close(p.numpy(), tp[name].detach().numpy(), f"{name} after 5 steps", 1e-11)


@pytest.mark.parametrize("how", ["jit", "capture"])
def test_lstm_attention_dropout_replays_equal_eager(how):
    """With dropout between the LSTM's layers and on the attention weights (device draws), a
    compiled step replays the eager steps' numbers (fresh masks each step)."""
    def run(compiled):
        ag.manual_seed(5)
        m = _SeqModel(dropout=0.3)
        opt = optim.Adam(m.parameters(), lr=0.01, capturable=True)
        step = _seq_step(m, opt)
        args = [tuple(ag.tensor(a) for a in _seq_batch(i)) for i in (0, 0, 1, 2, 3)]
        if compiled == "jit":
            step = ag.jit(step)
            losses = [float(step(*a).numpy()) for a in args]
        elif compiled == "capture":
            cap = ag.capture(step, *args[0], warmup=1)
            losses = [float(cap(*a).numpy()) for a in args[2:]]
        else:
            losses = [float(step(*a).numpy()) for a in args]
        return losses, m.parameters()

    eager, pe = run("eager")
    got, pc = run(how)
    if how == "capture":
        eager = eager[2:]
    assert len(set(eager)) == len(eager)
    np.testing.assert_allclose(got, eager, rtol=1e-12)
    for a, b in zip(pc, pe):
        _close(a.numpy(), b.numpy(), "parameters", 1e-12)


@pytest.mark.parametrize("how", ["jit", "capture"])
def test_truncated_bptt_carries_detached_states_under_jit(how):
    """Truncated backpropagation through time, the porting pattern: a compiled step takes the
    previous chunk's detached ``(h, c)`` and returns the new ones; five chunks give torch's
    losses and states."""
    t = torch.nn.LSTM(3, 4, num_layers=2, batch_first=True).double()
    th = torch.nn.Linear(4, 3).double()
    m, mh = nn.LSTM(3, 4, num_layers=2, batch_first=True, dtype=ag.float64), \
        nn.Linear(4, 3, dtype=ag.float64)
    _to_ag(m, t)
    _to_ag(mh, th)
    opt = optim.SGD(m.parameters() + mh.parameters(), lr=0.5, capturable=True)
    topt = torch.optim.SGD([*t.parameters(), *th.parameters()], lr=0.5)

    def step(x, y, h, c):
        opt.zero_grad()
        out, (h2, c2) = m(x, (h, c))
        loss = F.cross_entropy(ag.reshape(mh(out), (-1, 3)), ag.reshape(y, (-1,)))
        loss.backward()
        opt.step()
        return loss, h2.detach(), c2.detach()

    chunks = [(_rng(60 + i).normal(size=(2, 6, 3)), _rng(60 + i).integers(0, 3, size=(2, 6)))
              for i in range(5)]
    h = c = ag.zeros((2, 2, 4), dtype=ag.float64)
    if how == "jit":
        run = ag.jit(step)
    else:
        run = ag.capture(step, ag.tensor(chunks[0][0]), ag.tensor(chunks[0][1]), h, c,
                         warmup=1)
        # the capture took two real steps; load torch's weights again (in place: the replay
        # reads them) -- plain SGD keeps no state the steps could have moved
        _to_ag(m, t)
        _to_ag(mh, th)
    th_, tc = torch.zeros(2, 2, 4, dtype=torch.float64), torch.zeros(2, 2, 4, dtype=torch.float64)
    for x, y in chunks:
        loss, h, c = run(ag.tensor(x), ag.tensor(y), h, c)
        topt.zero_grad()
        out, (th_, tc) = t(torch.tensor(x), (th_, tc))
        lt = TF.cross_entropy(th(out).reshape(-1, 3), torch.tensor(y).reshape(-1))
        lt.backward()
        topt.step()
        th_, tc = th_.detach(), tc.detach()
        np.testing.assert_allclose(float(loss.numpy()), float(lt.detach()), rtol=1e-12)
        _close(h.numpy(), th_.numpy(), "h after the chunk", 1e-12)
        _close(c.numpy(), tc.numpy(), "c after the chunk", 1e-12)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN_TANH"])
def test_vmap_over_unbatched_calls_is_the_batched_layer(kind):
    """``ag.vmap`` of an unbatched ``(L, H_in)`` call over a batch gives torch's batched layer
    (torch.func has no batching rule for its fused RNN ops), values and input gradients."""
    m, t = _recurrent(kind, 3, 4, num_layers=2, bidirectional=True, batch_first=True)
    x = _rng(40).normal(size=(3, 5, 3))
    xa, xt = ag.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    ya = ag.vmap(lambda xi: _flat(m(xi))[0])(xa)
    yt = t(xt)[0]
    _compare([ya], [yt], [("input", xa)], [xt])
    hs = ag.vmap(lambda xi: _flat(m(xi))[-1], out_axes=1)(ag.tensor(x))  # (D·layers, N, H)
    _close(hs.numpy(), _flat(t(torch.tensor(x)))[-1].detach().numpy(), "final states")


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN_RELU"])
@pytest.mark.parametrize("shared", [False, True])
def test_vmap_with_initial_states(kind, shared):
    """Initial states mapped with the input (each example its own unbatched ``(D·layers, H)``
    state) or shared by every example (``in_axes=None``): torch's batched layer with those
    states laid out ``(D·layers, N, H)``."""
    m, t = _recurrent(kind, 3, 4, num_layers=2, bidirectional=True, batch_first=True)
    r = _rng(45)
    x = r.normal(size=(3, 5, 3))
    states = [r.normal(size=(4, 4) if shared else (3, 4, 4))
              for _ in range(2 if kind == "LSTM" else 1)]
    ax = None if shared else 0

    def f(xi, *si):
        return m(xi, tuple(si) if len(si) == 2 else si[0])[0]

    got = ag.vmap(f, in_axes=(0, *[ax] * len(states)))(ag.tensor(x),
                                                       *[ag.tensor(s) for s in states])
    ts = [torch.tensor(np.broadcast_to(s[:, None], (4, 3, 4)).copy() if shared
                       else s.transpose(1, 0, 2).copy()) for s in states]
    want = t(torch.tensor(x), tuple(ts) if len(ts) == 2 else ts[0])[0]
    _close(got.numpy(), want.detach().numpy(), "vmapped with states")


def test_vmap_per_example_gradients_match_torch_func():
    """Per-example parameter gradients of MultiheadAttention (``vmap(grad)``, functional call)
    equal ``torch.func.vmap(torch.func.grad)``; an LSTM's equal a loop of torch backward
    passes."""
    from torch.func import functional_call as t_call
    from torch.func import grad as t_grad
    from torch.func import vmap as t_vmap

    m, t = _mha(e=6, h=2, batch_first=True)
    x = _rng(41).normal(size=(4, 3, 6))
    names = [k for k, _ in m.named_parameters()]

    def loss_a(params, xi):
        y, w = nn.functional_call(m, dict(zip(names, params)), xi, xi, xi)
        return ag.sum(y * y) + ag.sum(w * w)

    got = ag.vmap(ag.grad(loss_a), in_axes=(None, 0))([p for _, p in m.named_parameters()],
                                                      ag.tensor(x))

    def loss_t(params, xi):
        y, w = t_call(t, params, (xi, xi, xi))
        return (y * y).sum() + (w * w).sum()

    want = t_vmap(t_grad(loss_t), in_dims=(None, 0))(
        {k: v.detach() for k, v in t.named_parameters()}, torch.tensor(x))
    for name, g in zip(names, got):
        _close(g.numpy(), want[name].numpy(), f"per-example gradient of {name}", 1e-9)

    lm, lt = _recurrent("LSTM", 3, 4, proj_size=2, batch_first=True)
    lnames = [k for k, _ in lm.named_parameters()]
    xs = _rng(42).normal(size=(3, 5, 3))

    def lloss(params, xi):
        y, (h, c) = nn.functional_call(lm, dict(zip(lnames, params)), xi)
        return ag.sum(y * y) + ag.sum(c)

    got = ag.vmap(ag.grad(lloss), in_axes=(None, 0))([p for _, p in lm.named_parameters()],
                                                     ag.tensor(xs))
    for i in range(3):
        lt.zero_grad()
        y, (h, c) = lt(torch.tensor(xs[i]))
        ((y * y).sum() + c.sum()).backward()
        for name, g in zip(lnames, got):
            _close(g.numpy()[i], dict(lt.named_parameters())[name].grad.numpy(),
                   f"example {i}: gradient of {name}", 1e-9)


@pytest.mark.parametrize("kind", ["RNN_TANH", "RNN_RELU", "LSTM_proj", "GRU"])
def test_grad_of_grad_with_respect_to_weights_matches_torch(kind):
    """Second order through a small recurrent stack: the gradient of ``<∇_W L, U>`` with respect
    to the input and every weight (``create_graph`` both ways) equals torch's."""
    kw = {"num_layers": 2, "bidirectional": True}
    if kind == "LSTM_proj":
        kind, kw["proj_size"] = "LSTM", 2
    m, t = _recurrent(kind, 3, 4, **kw)
    names = [k for k, _ in m.named_parameters()]
    r = _rng(43)
    x = r.normal(size=(4, 2, 3))
    outs = _flat(t(torch.tensor(x)))
    ws = [_weights(o.shape, i) for i, o in enumerate(outs)]
    us = [np.sin(np.arange(p.size) + 1.0).reshape(p.shape) for p in
          (v.detach().numpy() for v in t.state_dict().values())]

    def loss_a(params, xa):
        ys = _flat(nn.functional_call(m, dict(zip(names, params)), xa))
        return sum(ag.sum(y * ag.tensor(w)) for y, w in zip(ys, ws))

    def inner_a(params, xa):
        gs = ag.grad(loss_a)(params, xa)
        return sum(ag.sum(g * ag.tensor(u)) for g, u in zip(gs, us))

    params = [p for _, p in m.named_parameters()]
    got = ag.grad(inner_a, argnums=(0, 1))(params, ag.tensor(x))

    tparams = [dict(t.named_parameters())[k] for k in names]
    xt = torch.tensor(x, requires_grad=True)
    ys = _flat(t(xt))
    lt = sum((y * torch.tensor(w)).sum() for y, w in zip(ys, ws))
    gs = torch.autograd.grad(lt, tparams, create_graph=True)
    inner = sum((g * torch.tensor(u)).sum() for g, u in zip(gs, us))
    want = torch.autograd.grad(inner, [*tparams, xt], allow_unused=True)
    for name, g, w in zip([*names, "input"], [*got[0], got[1]], want):
        w = np.zeros(g.shape) if w is None else w.numpy()
        _close(g.numpy(), w, f"second derivative through {name}", 1e-9)


# ---------------------------------------------------------------------------------------------
# Empty sizes


def test_empty_sizes_as_torch():
    """No key (``S = 0``): torch's attention gives a zero output (MultiheadAttention: the
    ``out_proj`` bias) and empty weights; an empty batch runs; no time step is refused."""
    r = _rng(50)
    q = r.normal(size=(2, 3, 4))
    e = np.zeros((2, 0, 4))
    ya = F.scaled_dot_product_attention(ag.tensor(q), ag.tensor(e), ag.tensor(e))
    yt = TF.scaled_dot_product_attention(torch.tensor(q), torch.tensor(e), torch.tensor(e))
    _close(ya.numpy(), yt.numpy(), "sdpa without keys")
    m, t = _mha(e=4, h=2)
    for nw in (True, False):
        _mha_both(m, t, q.transpose(1, 0, 2), e.transpose(1, 0, 2), e.transpose(1, 0, 2),
                  need_weights=nw, grads=False)
    g, tg = _recurrent("GRU", 3, 4, num_layers=2, bidirectional=True)
    outs = _flat(g(ag.zeros((5, 0, 3), dtype=ag.float64)))
    touts = _flat(tg(torch.zeros(5, 0, 3, dtype=torch.float64)))
    assert [o.shape for o in outs] == [tuple(o.shape) for o in touts]
    with pytest.raises(RuntimeError):
        tg(torch.zeros(0, 2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"GRU: the input \(0, 2, 3\) has no time steps"):
        g(ag.zeros((0, 2, 3), dtype=ag.float64))


@pytest.mark.parametrize("need_weights", [True, False])
def test_mha_grad_of_grad_matches_torch(need_weights):
    """Second order through MultiheadAttention (key padding, a query with no key under
    ``need_weights=False``): the input gradient of ``<∇_x L, u>`` equals torch's."""
    m, t = _mha(e=4, h=2, batch_first=True)
    r = _rng(44)
    x = r.normal(size=(2, 3, 4))
    pad = np.array([[False, True, False], [True, True, True]]) if not need_weights else \
        np.array([[False, True, False], [False, False, True]])
    w, u = _weights((2, 3, 4), 0), np.sin(np.arange(24.0)).reshape(2, 3, 4)
    pad_a = ag.tensor(pad)

    def f(xa):
        y = m(xa, xa, xa, key_padding_mask=pad_a, need_weights=need_weights)[0]
        return ag.sum(y * ag.tensor(w))

    got = ag.grad(lambda xa: ag.sum(ag.grad(f)(xa) * ag.tensor(u)))(ag.tensor(x))
    from torch.nn.attention import SDPBackend, sdpa_kernel

    xt = torch.tensor(x, requires_grad=True)
    with sdpa_kernel(SDPBackend.MATH):  # the flash kernel has no second derivative
        yt = t(xt, xt, xt, key_padding_mask=torch.tensor(pad), need_weights=need_weights)[0]
        (gt,) = torch.autograd.grad((yt * torch.tensor(w)).sum(), xt, create_graph=True)
        (ht,) = torch.autograd.grad((gt * torch.tensor(u)).sum(), xt)
    assert np.isfinite(ht.numpy()).all()
    _close(got.numpy(), ht.numpy(), "second derivative", 1e-9)


@pytest.mark.parametrize("backend", ["array_api_strict", "torch"])
def test_new_attention_paths_on_other_backends(backend):
    """The zero rows of ``need_weights=False``, the causal hint over added keys, the mask checks
    and attention over no key run on array_api_strict and the torch backend as on NumPy."""
    pytest.importorskip(backend)
    res = []
    for b in ("numpy", backend):
        m = nn.MultiheadAttention(4, 2, add_bias_kv=True, dtype=ag.float64, seed=3, backend=b)
        x = ag.tensor(np.sin(np.arange(24.0)).reshape(3, 2, 4), backend=b, requires_grad=True)
        pad = ag.tensor(np.array([[True] * 3, [False, True, False]]), backend=b)
        causal = ag.tensor(np.triu(np.ones((3, 3), bool), 1), backend=b)
        y1, _ = m(x, x, x, key_padding_mask=pad, need_weights=False)
        y2, _ = m(x, x, x, attn_mask=causal, is_causal=True, need_weights=False)
        e = ag.tensor(np.zeros((2, 0, 4)), backend=b)
        y3 = F.scaled_dot_product_attention(ag.permute_dims(x, (1, 0, 2)), e, e)
        (ag.sum(y1 * y1 + y2) + ag.sum(y3)).backward()
        with pytest.raises(TypeError, match="key_padding_mask has dtype"):
            m(x, x, x, key_padding_mask=ag.tensor(np.zeros((2, 3), np.int64), backend=b))
        res.append([np.asarray(t.numpy()) for t in (y1, y2, y3, x.grad)])
    for a, c in zip(*res):
        _close(a, c, f"numpy vs {backend}", 1e-12)


# ---------------------------------------------------------------------------------------------
# Random sweeps over every option at once (fixed seeds: deterministic)


def _sweep_recurrent_case(r):
    kind = str(r.choice(KINDS))
    kw = {"num_layers": int(r.integers(1, 4)), "bias": bool(r.integers(2)),
          "batch_first": bool(r.integers(2)), "bidirectional": bool(r.integers(2)),
          "dropout": float(r.choice([0.0, 0.5]))}
    n_in, hidden = int(r.integers(1, 4)), int(r.integers(1, 4))
    if kind == "LSTM" and hidden > 1 and r.integers(2):
        kw["proj_size"] = int(r.integers(1, hidden))
    steps, n, unbatched, hx = int(r.integers(1, 4)), int(r.integers(1, 3)), bool(r.integers(2)), \
        bool(r.integers(2))
    return kind, kw, n_in, hidden, steps, n, unbatched, hx


@pytest.mark.parametrize("seed", range(40))
def test_recurrent_random_options_match_torch(seed):
    """Every option drawn at once (kind, layers, bias, layout, directions, projection, dropout
    in evaluation, unbatched, initial states): torch's outputs, states and gradients."""
    r = _rng(1000 + seed)
    kind, kw, n_in, hidden, steps, n, unbatched, hx = _sweep_recurrent_case(r)
    m, t = _recurrent(kind, n_in, hidden, **kw)
    m.eval()
    t.eval()
    shape = (steps, n_in) if unbatched else \
        ((n, steps, n_in) if kw["batch_first"] else (steps, n, n_in))
    d = (2 if kw["bidirectional"] else 1) * kw["num_layers"]
    h_out = kw.get("proj_size", 0) or hidden
    lead = (d,) if unbatched else (d, n)
    states = None
    if hx:
        states = [r.normal(size=(*lead, h_out))]
        if kind == "LSTM":
            states.append(r.normal(size=(*lead, hidden)))
    _run_recurrent(m, t, r.normal(size=shape), states)


@pytest.mark.parametrize("seed", range(40))
def test_mha_random_options_match_torch(seed):
    """Every option drawn at once (heads, kdim/vdim, bias, bias_kv, zero_attn, layout,
    unbatched, key padding and attention masks of both kinds, the causal hint, need_weights,
    averaging, dropout in evaluation): torch's output, weights and gradients."""
    r = _rng(2000 + seed)
    h = int(r.integers(1, 4))
    e = h * int(r.integers(1, 3))
    kw = {"bias": bool(r.integers(2)), "add_bias_kv": bool(r.integers(2)),
          "add_zero_attn": bool(r.integers(2)), "batch_first": bool(r.integers(2)),
          "dropout": float(r.choice([0.0, 0.5]))}
    if r.integers(2):
        kw["kdim"], kw["vdim"] = int(r.integers(1, 5)), int(r.integers(1, 5))
    m, t = _mha(e, h, **kw)
    m.eval()
    t.eval()
    L, S, n, unbatched = int(r.integers(1, 4)), int(r.integers(1, 4)), int(r.integers(1, 3)), \
        bool(r.integers(2))
    nb = 1 if unbatched else n

    def shaped(length, dim):
        return _shaped(length, dim, n, kw["batch_first"], unbatched)

    q, k = r.normal(size=shaped(L, e)), r.normal(size=shaped(S, kw.get("kdim", e)))
    v = r.normal(size=shaped(S, kw.get("vdim", e)))
    fk: dict = {"need_weights": bool(r.integers(2)), "average_attn_weights": bool(r.integers(2))}
    kpm_shape = (S,) if unbatched else (n, S)
    c = r.integers(3)
    if c == 1:
        pad = r.random(kpm_shape) > 0.7
        pad[..., 0] = False  # keep every query's first key (NaN rows: other tests)
        fk["key_padding_mask"] = pad
    elif c == 2:
        fk["key_padding_mask"] = r.normal(size=kpm_shape)
    c = r.integers(5)
    if c == 1:
        am = r.random((L, S)) > 0.7
        am[:, 0] = False
        fk["attn_mask"] = am
    elif c == 2:
        fk["attn_mask"] = r.normal(size=(L, S))
    elif c == 3:
        fk["attn_mask"] = r.normal(size=(nb * h, L, S))
    elif c == 4:
        fk["attn_mask"] = np.triu(np.ones((L, S), bool), 1)
        fk["is_causal"] = bool(r.integers(2))
    _mha_both(m, t, q, k, v, **fk)
