"""Recurrent layers and attention against PyTorch: ``nn.RNN``/``LSTM``/``GRU``, the cells,
``F.scaled_dot_product_attention`` and ``nn.MultiheadAttention``. A PyTorch state dict loads by
name and gives PyTorch's outputs and gradients (inputs, initial states, every parameter), in
float64, over a grid of options; the numpy and array_api_strict backends agree; a jitted and a
captured LSTM training step (with dropout between layers) equal eager steps."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import agnograd as ag
import agnograd.nn.functional as F
from agnograd import nn, optim

torch = pytest.importorskip("torch")
TF = torch.nn.functional
RNG = np.random.default_rng(0)


def _load(m, t):
    m.load_state_dict({k: v.detach().numpy() for k, v in t.state_dict().items()})


def _close(a, b, what, tol=1e-10):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol, err_msg=what)


def _flat(out):
    """The tensors of ``(output, h_n)`` or ``(output, (h_n, c_n))``."""
    y, h = out
    return [y, *h] if isinstance(h, tuple) else [y, h]


def _check_grads(ag_outs, t_outs, ag_leaves, t_leaves):
    loss_a, loss_t = 0.0, 0.0
    for i, (a, t) in enumerate(zip(ag_outs, t_outs)):
        w = np.cos(np.arange(int(np.prod(t.shape))) + i).reshape(tuple(t.shape))
        loss_a = loss_a + ag.sum(a * ag.tensor(w))
        loss_t = loss_t + (t * torch.tensor(w)).sum()
    loss_a.backward()
    loss_t.backward()
    for name, a, t in zip([n for n, _ in ag_leaves], [x for _, x in ag_leaves], t_leaves):
        assert a.grad is not None, name
        _close(a.grad.numpy(), t.grad.numpy(), f"gradient of {name}", 1e-9)


RNN_GRID = [
    (kind, layers, bias, bf, bidir, hx, unbatched)
    for kind in ("RNN_TANH", "RNN_RELU", "LSTM", "GRU")
    for layers, bias, bf, bidir, hx, unbatched in [
        (1, True, False, False, False, False), (2, True, True, True, True, False),
        (2, False, False, True, False, False), (3, True, False, False, True, False),
        (1, True, False, True, True, True), (2, False, True, False, False, False),
    ]
]


def _pair(kind, n_in, hidden, **kw):
    if kind.startswith("RNN"):
        nl = "tanh" if kind == "RNN_TANH" else "relu"
        return (nn.RNN(n_in, hidden, nonlinearity=nl, dtype=ag.float64, seed=0, **kw),
                torch.nn.RNN(n_in, hidden, nonlinearity=nl, **kw).double())
    return (getattr(nn, kind)(n_in, hidden, dtype=ag.float64, seed=0, **kw),
            getattr(torch.nn, kind)(n_in, hidden, **kw).double())


@pytest.mark.parametrize(("kind", "layers", "bias", "batch_first", "bidir", "hx", "unbatched"),
                         RNN_GRID)
def test_recurrent_layers_match_torch(kind, layers, bias, batch_first, bidir, hx, unbatched):
    torch.manual_seed(0)
    n_in, hidden, steps, n = 3, 4, 5, 2
    m, t = _pair(kind, n_in, hidden, num_layers=layers, bias=bias, batch_first=batch_first,
                 bidirectional=bidir)
    assert [k for k, _ in m.named_parameters()] == list(t.state_dict())
    _load(m, t)
    shape = (steps, n_in) if unbatched else ((n, steps, n_in) if batch_first else (steps, n, n_in))
    x = RNG.normal(size=shape)
    xa, xt = ag.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    leaves_a, leaves_t = [("input", xa)], [xt]
    args_a, args_t = [xa], [xt]
    if hx:
        d = (2 if bidir else 1) * layers
        hshape = (d, hidden) if unbatched else (d, n, hidden)
        states = [RNG.normal(size=hshape) for _ in range(2 if kind == "LSTM" else 1)]
        sa = [ag.tensor(s, requires_grad=True) for s in states]
        st = [torch.tensor(s, requires_grad=True) for s in states]
        leaves_a += [(f"state {i}", s) for i, s in enumerate(sa)]
        leaves_t += st
        args_a.append(tuple(sa) if kind == "LSTM" else sa[0])
        args_t.append(tuple(st) if kind == "LSTM" else st[0])
    out_a, out_t = _flat(m(*args_a)), _flat(t(*args_t))
    for i, (a, b) in enumerate(zip(out_a, out_t)):
        assert a.shape == tuple(b.shape)
        _close(a.numpy(), b.detach().numpy(), f"output {i}")
    leaves_a += m.named_parameters()
    leaves_t += [p for _, p in t.named_parameters()]
    _check_grads(out_a, out_t, leaves_a, leaves_t)


@pytest.mark.parametrize(("bidir", "hx"), [(False, False), (True, True)])
def test_lstm_projection_matches_torch(bidir, hx):
    torch.manual_seed(1)
    m = nn.LSTM(3, 5, num_layers=2, proj_size=2, bidirectional=bidir, dtype=ag.float64, seed=0)
    t = torch.nn.LSTM(3, 5, num_layers=2, proj_size=2, bidirectional=bidir).double()
    assert [k for k, _ in m.named_parameters()] == list(t.state_dict())
    _load(m, t)
    x = RNG.normal(size=(4, 2, 3))
    xa, xt = ag.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    d = 4 if bidir else 2
    if hx:
        h0, c0 = RNG.normal(size=(d, 2, 2)), RNG.normal(size=(d, 2, 5))
        out_a = _flat(m(xa, (ag.tensor(h0), ag.tensor(c0))))
        out_t = _flat(t(xt, (torch.tensor(h0), torch.tensor(c0))))
    else:
        out_a, out_t = _flat(m(xa)), _flat(t(xt))
    for a, b in zip(out_a, out_t):
        _close(a.numpy(), b.detach().numpy(), "output")
    _check_grads(out_a, out_t, [("input", xa), *m.named_parameters()],
                 [xt, *[p for _, p in t.named_parameters()]])


@pytest.mark.parametrize("kind", ["RNNCell", "LSTMCell", "GRUCell"])
@pytest.mark.parametrize(("bias", "hx", "unbatched"),
                         [(True, False, False), (False, True, False), (True, True, True)])
def test_cells_match_torch(kind, bias, hx, unbatched):
    torch.manual_seed(2)
    m = getattr(nn, kind)(3, 4, bias=bias, dtype=ag.float64, seed=0)
    t = getattr(torch.nn, kind)(3, 4, bias=bias).double()
    assert [k for k, _ in m.named_parameters()] == list(t.state_dict())
    _load(m, t)
    x = RNG.normal(size=(3,) if unbatched else (2, 3))
    xa, xt = ag.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    args_a, args_t = [xa], [xt]
    leaves_a, leaves_t = [("input", xa)], [xt]
    if hx:
        hs = (4,) if unbatched else (2, 4)
        states = [RNG.normal(size=hs) for _ in range(2 if kind == "LSTMCell" else 1)]
        sa = [ag.tensor(s, requires_grad=True) for s in states]
        st = [torch.tensor(s, requires_grad=True) for s in states]
        leaves_a += [("state", s) for s in sa]
        leaves_t += st
        args_a.append(tuple(sa) if kind == "LSTMCell" else sa[0])
        args_t.append(tuple(st) if kind == "LSTMCell" else st[0])
    ya, yt = m(*args_a), t(*args_t)
    ya, yt = (list(ya), list(yt)) if kind == "LSTMCell" else ([ya], [yt])
    for a, b in zip(ya, yt):
        _close(a.numpy(), b.detach().numpy(), "output")
    _check_grads(ya, yt, leaves_a + m.named_parameters(),
                 leaves_t + [p for _, p in t.named_parameters()])


def test_recurrent_defaults_and_errors():
    m = nn.LSTM(3, 4, dtype=ag.float32)
    t = torch.nn.LSTM(3, 4)
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in t.state_dict().items()}
    assert m.weight_ih_l0.dtype == ag.float32
    bound = 1 / np.sqrt(4)
    assert all(float(ag.max(ag.abs(p))) <= bound for p in m.parameters())
    with pytest.raises(ValueError, match="input_size=3"):
        m(ag.zeros((5, 2, 4), dtype=ag.float32))
    with pytest.raises(ValueError, match="h_0 has shape"):
        m(ag.zeros((5, 2, 3), dtype=ag.float32), (ag.zeros((1, 3, 4)), ag.zeros((1, 2, 4))))
    with pytest.raises(TypeError, match=r"\(h_0, c_0\)"):
        m(ag.zeros((5, 2, 3), dtype=ag.float32), ag.zeros((1, 2, 4)))
    with pytest.raises(ValueError, match="nonlinearity"):
        nn.RNN(3, 4, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="proj_size"):
        nn.LSTM(3, 4, proj_size=4)
    assert "bidirectional=True" in repr(nn.GRU(2, 3, bidirectional=True))
    g = nn.GRU(2, 3, num_layers=2, bidirectional=True)
    g.flatten_parameters()
    tg = torch.nn.GRU(2, 3, num_layers=2, bidirectional=True)
    assert [[tuple(p.shape) for p in ps] for ps in g.all_weights] == \
        [[tuple(p.shape) for p in ps] for ps in tg.all_weights]
    assert len(g.parameters()) == 16


def test_dropout_between_layers_trains_only():
    ag.manual_seed(0)
    m = nn.GRU(3, 4, num_layers=2, dropout=0.5, dtype=ag.float64, seed=0)
    x = ag.tensor(RNG.normal(size=(5, 2, 3)))
    a, b = m(x)[0].numpy(), m(x)[0].numpy()
    assert not np.allclose(a, b)  # fresh masks in training
    m.eval()
    _close(m(x)[0].numpy(), m(x)[0].numpy(), "eval is deterministic")
    nodrop = nn.GRU(3, 4, num_layers=2, dtype=ag.float64, seed=0)
    _close(m(x)[0].numpy(), nodrop(x)[0].numpy(), "eval equals no dropout")


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_numpy_and_array_api_strict_agree(kind):
    pytest.importorskip("array_api_strict")
    outs, grads = [], []
    for backend in ("numpy", "array_api_strict"):
        m = getattr(nn, kind)(3, 4, num_layers=2, bidirectional=True, batch_first=True,
                              dtype=ag.float64, seed=5, backend=backend)
        x = ag.tensor(np.linspace(-1, 1, 2 * 5 * 3).reshape(2, 5, 3), backend=backend,
                      requires_grad=True)
        y = _flat(m(x))
        ag.sum(y[0] * y[0]).backward()
        outs.append(ag.to_numpy(y[0]) if hasattr(ag, "to_numpy") else np.asarray(y[0].numpy()))
        grads.append([np.asarray(p.grad.numpy()) for p in [x, *m.parameters()]])
    _close(outs[0], outs[1], "outputs", 1e-12)
    for g0, g1 in zip(*grads):
        _close(g0, g1, "gradients", 1e-12)


def test_attention_numpy_and_array_api_strict_agree():
    pytest.importorskip("array_api_strict")
    res = []
    for backend in ("numpy", "array_api_strict"):
        m = nn.MultiheadAttention(6, 2, dtype=ag.float64, seed=3, backend=backend)
        x = ag.tensor(np.sin(np.arange(4 * 2 * 6)).reshape(4, 2, 6), backend=backend,
                      requires_grad=True)
        kpm = ag.tensor(np.array([[False, False, True, False], [False] * 4]), backend=backend)
        mask = ag.tensor(np.triu(np.ones((4, 4), bool), 1), backend=backend)
        y, w = m(x, x, x, key_padding_mask=kpm, attn_mask=mask)
        z = F.scaled_dot_product_attention(x, x, x, is_causal=True)
        ag.sum(y * y + z).backward()
        res.append([np.asarray(t.numpy()) for t in (y, w, z, x.grad)])
    for a, b in zip(*res):
        _close(a, b, "numpy vs array_api_strict", 1e-12)


# ---------------------------------------------------------------------------------------------
# Attention

SDPA_GRID = list(itertools.product(
    ["none", "causal", "bool", "bool_dead_row", "float", "float_broadcast"],
    [None, 0.37],
    [((2, 3, 4, 5), (2, 3, 6, 5), (2, 3, 6, 7)), ((4, 5), (6, 5), (6, 3)),
     ((2, 5, 5), (2, 5, 5), (2, 5, 5))],
))


@pytest.mark.parametrize(("mask", "scale", "shapes"), SDPA_GRID)
def test_sdpa_matches_torch(mask, scale, shapes):
    qs, ks, vs = shapes
    q, k, v = (RNG.normal(size=s) for s in shapes)
    L, S = qs[-2], ks[-2]
    kw_a: dict = {"scale": scale}
    kw_t: dict = {"scale": scale}
    if mask == "causal":
        kw_a["is_causal"] = kw_t["is_causal"] = True
    elif mask.startswith("bool"):
        m = RNG.random((L, S)) > 0.4
        m[:, 0] = True
        if mask == "bool_dead_row":
            m[1] = False  # a row with no key: zeros, as torch's kernel
        kw_a["attn_mask"], kw_t["attn_mask"] = ag.tensor(m), torch.tensor(m)
    elif mask.startswith("float"):
        m = RNG.normal(size=(L, S) if mask == "float" else (*qs[:-2], 1, S))
        kw_a["attn_mask"], kw_t["attn_mask"] = ag.tensor(m), torch.tensor(m)
    A = [ag.tensor(a, requires_grad=True) for a in (q, k, v)]
    T = [torch.tensor(a, requires_grad=True) for a in (q, k, v)]
    ya = F.scaled_dot_product_attention(*A, **kw_a)
    yt = TF.scaled_dot_product_attention(*T, **kw_t)
    _close(ya.numpy(), yt.detach().numpy(), "output")
    _check_grads([ya], [yt], [("query", A[0]), ("key", A[1]), ("value", A[2])], T)


def test_sdpa_gqa_and_dropout():
    q, k, v = RNG.normal(size=(2, 4, 3, 5)), RNG.normal(size=(2, 2, 6, 5)), RNG.normal(size=(2, 2, 6, 5))
    ya = F.scaled_dot_product_attention(ag.tensor(q), ag.tensor(k), ag.tensor(v), enable_gqa=True)
    yt = TF.scaled_dot_product_attention(torch.tensor(q), torch.tensor(k), torch.tensor(v),
                                         enable_gqa=True)
    _close(ya.numpy(), yt.numpy(), "gqa")
    x = ag.tensor(RNG.normal(size=(3, 4, 5)))
    ag.manual_seed(0)
    a = F.scaled_dot_product_attention(x, x, x, dropout_p=0.5).numpy()
    b = F.scaled_dot_product_attention(x, x, x, dropout_p=0.5).numpy()
    assert not np.allclose(a, b)
    with pytest.raises(ValueError, match="not both"):
        F.scaled_dot_product_attention(x, x, x, attn_mask=ag.ones((4, 4)), is_causal=True)


MHA_GRID = [
    (bias, bf, kv, kpm, am, avg, unbatched, extra)
    for bias, bf, kv, kpm, am, avg, unbatched, extra in [
        (True, False, None, None, None, True, False, {}),
        (True, True, None, "bool", "bool", False, False, {}),
        (False, False, (3, 5), "float", "float", True, False, {}),
        (True, True, (3, 5), "bool", "float3d", False, False, {}),
        (True, False, None, "bool", "bool", True, True, {}),
        (True, False, None, "bool", "bool", True, False, {"add_bias_kv": True}),
        (True, True, None, "float", "bool", False, False, {"add_zero_attn": True}),
        (True, False, (3, 5), None, "float", True, False, {"add_bias_kv": True,
                                                         "add_zero_attn": True}),
    ]
]


@pytest.mark.parametrize(("bias", "batch_first", "kv", "kpm", "am", "avg", "unbatched", "extra"),
                         MHA_GRID)
def test_multihead_attention_matches_torch(bias, batch_first, kv, kpm, am, avg, unbatched, extra):
    torch.manual_seed(3)
    e, h, L, S, n = 8, 2, 4, 5, 3
    kdim, vdim = kv or (e, e)
    t = torch.nn.MultiheadAttention(e, h, bias=bias, batch_first=batch_first, kdim=kv and kdim,
                                    vdim=kv and vdim, **extra).double()
    m = nn.MultiheadAttention(e, h, bias=bias, batch_first=batch_first, kdim=kv and kdim,
                              vdim=kv and vdim, dtype=ag.float64, seed=0, **extra)
    assert sorted(k for k, _ in m.named_parameters()) == sorted(t.state_dict())
    _load(m, t)

    def shaped(length, dim):
        if unbatched:
            return (length, dim)
        return (n, length, dim) if batch_first else (length, n, dim)

    q, k, v = RNG.normal(size=shaped(L, e)), RNG.normal(size=shaped(S, kdim)), \
        RNG.normal(size=shaped(S, vdim))
    A = [ag.tensor(a, requires_grad=True) for a in (q, k, v)]
    T = [torch.tensor(a, requires_grad=True) for a in (q, k, v)]
    kw_a: dict = {"average_attn_weights": avg}
    kw_t: dict = {"average_attn_weights": avg}
    nb = 1 if unbatched else n
    if kpm is not None:
        pm = np.zeros((nb, S), bool)
        pm[0, 2] = True
        pm = pm.astype(float) * -1e9 if kpm == "float" else pm
        pm = pm[0] if unbatched else pm
        kw_a["key_padding_mask"], kw_t["key_padding_mask"] = ag.tensor(pm), torch.tensor(pm)
    if am is not None:
        if am == "bool":
            mk = RNG.random((L, S)) > 0.6
            mk[:, 0] = False
        elif am == "float":
            mk = RNG.normal(size=(L, S))
        else:
            mk = RNG.normal(size=(nb * h, L, S))
        kw_a["attn_mask"], kw_t["attn_mask"] = ag.tensor(mk), torch.tensor(mk)
    ya, wa = m(*A, **kw_a)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's note on mixed mask types
        yt, wt = t(*T, **kw_t)
    assert ya.shape == tuple(yt.shape) and wa.shape == tuple(wt.shape)
    _close(ya.numpy(), yt.detach().numpy(), "attn_output")
    _close(wa.numpy(), wt.detach().numpy(), "attn_weights")
    _check_grads([ya, wa], [yt, wt], [("query", A[0]), ("key", A[1]), ("value", A[2]),
                                      *m.named_parameters()],
                 [*T, *[dict(t.named_parameters())[k] for k, _ in m.named_parameters()]])
    y2, w2 = m(*A, need_weights=False)
    assert w2 is None and y2.shape == ya.shape


# ---------------------------------------------------------------------------------------------
# Compiled training steps


def _lstm_setup():
    model = nn.LSTM(3, 6, num_layers=2, dropout=0.3, batch_first=True, dtype=ag.float64, seed=0)
    head = nn.Linear(6, 4, dtype=ag.float64, seed=1)
    params = model.parameters() + head.parameters()
    opt = optim.Adam(params, lr=0.01, capturable=True)

    def step(x, y):
        opt.zero_grad()
        out, (h, c) = model(x)
        loss = F.cross_entropy(ag.reshape(head(out), (-1, 4)), ag.reshape(y, (-1,)))
        loss.backward()
        opt.step()
        return loss

    return params, step


def _batch(i):
    r = np.random.default_rng(i)
    return ag.tensor(r.normal(size=(2, 5, 3))), ag.tensor(r.integers(0, 4, size=(2, 5)))


@pytest.mark.parametrize("kind", ["jit", "capture"])
def test_compiled_lstm_training_step_equals_eager(kind):
    order = [0, 0, 1, 2, 3, 4]
    ag.manual_seed(7)
    p_e, step_e = _lstm_setup()
    eager = [float(step_e(*_batch(i)).numpy()) for i in order]
    ag.manual_seed(7)
    p_c, step_c = _lstm_setup()
    if kind == "jit":
        compiled = ag.jit(step_c)
        got = [float(compiled(*_batch(i)).numpy()) for i in order]
        assert compiled.cache_info()["traces"] == 1
    else:
        compiled = ag.capture(step_c, *_batch(0), warmup=1)  # two eager steps on batch 0
        got = eager[:2] + [float(compiled(*_batch(i)).numpy()) for i in order[2:]]
    assert len(set(got)) == len(got)
    np.testing.assert_allclose(got, eager, rtol=1e-12)
    for a, b in zip(p_c, p_e):
        _close(a.numpy(), b.numpy(), "parameters after the steps", 1e-12)


# ---------------------------------------------------------------------------------------------
# Properties

@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    batch=st.lists(st.integers(1, 3), min_size=0, max_size=2),
    lse=st.tuples(st.integers(1, 5), st.integers(1, 5), st.integers(1, 4), st.integers(1, 4)),
    mask=st.sampled_from(["none", "causal", "bool", "float"]),
    dead=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_sdpa_property_matches_torch(batch, lse, mask, dead, seed):
    """Any leading axes, sizes and mask kind (rows with no key included) give torch's values and
    gradients."""
    r = np.random.default_rng(seed)
    L, S, E, Ev = lse
    q, k, v = r.normal(size=(*batch, L, E)), r.normal(size=(*batch, S, E)), \
        r.normal(size=(*batch, S, Ev))
    kw_a: dict = {}
    kw_t: dict = {}
    if mask == "causal":
        kw_a["is_causal"] = kw_t["is_causal"] = True
    elif mask != "none":
        keep = r.random((L, S)) > 0.5
        if dead:
            keep[0] = False
        m = keep if mask == "bool" else np.where(keep, r.normal(size=(L, S)), -np.inf)
        kw_a["attn_mask"], kw_t["attn_mask"] = ag.tensor(m), torch.tensor(m)
    A = [ag.tensor(a, requires_grad=True) for a in (q, k, v)]
    T = [torch.tensor(a, requires_grad=True) for a in (q, k, v)]
    ya = F.scaled_dot_product_attention(*A, **kw_a)
    yt = TF.scaled_dot_product_attention(*T, **kw_t)
    _close(ya.numpy(), yt.detach().numpy(), "output")
    _check_grads([ya], [yt], [("query", A[0]), ("key", A[1]), ("value", A[2])], T)


@settings(max_examples=15, deadline=None, derandomize=True)
@given(
    kind=st.sampled_from(["RNN_TANH", "RNN_RELU", "LSTM", "GRU"]),
    sizes=st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 4), st.integers(1, 3)),
    layers=st.integers(1, 2), bidir=st.booleans(), bias=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_recurrent_property_matches_torch(kind, sizes, layers, bidir, bias, seed):
    """Any sizes (a single step or batch element included) give torch's values and input
    gradients with torch's weights."""
    n_in, hidden, steps, n = sizes
    torch.manual_seed(seed)
    m, t = _pair(kind, n_in, hidden, num_layers=layers, bidirectional=bidir, bias=bias)
    _load(m, t)
    x = np.random.default_rng(seed).normal(size=(steps, n, n_in))
    xa, xt = ag.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    out_a, out_t = _flat(m(xa)), _flat(t(xt))
    for a, b in zip(out_a, out_t):
        _close(a.numpy(), b.detach().numpy(), "output")
    _check_grads(out_a, out_t, [("input", xa), *m.named_parameters()],
                 [xt, *[p for _, p in t.named_parameters()]])


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_second_derivatives_match_torch(kind):
    """The fused cell rules recompute the gates from their saved inputs, so a gradient of a
    gradient (``ag.grad`` of ``ag.grad``, ``create_graph``) is torch's."""
    torch.manual_seed(4)
    m, t = _pair(kind, 3, 4, num_layers=2, bidirectional=True)
    _load(m, t)
    x = RNG.normal(size=(4, 2, 3))
    w = np.cos(np.arange(4 * 2 * 8)).reshape(4, 2, 8)
    u = np.sin(np.arange(x.size)).reshape(x.shape)

    def f(xa):
        return ag.sum(m(xa)[0] * ag.tensor(w))

    got = ag.grad(lambda xa: ag.sum(ag.grad(f)(xa) * ag.tensor(u)))(ag.tensor(x))
    xt = torch.tensor(x, requires_grad=True)
    (gt,) = torch.autograd.grad((t(xt)[0] * torch.tensor(w)).sum(), xt, create_graph=True)
    (ht,) = torch.autograd.grad((gt * torch.tensor(u)).sum(), xt)
    _close(got.numpy(), ht.numpy(), "second derivative", 1e-9)


@pytest.mark.parametrize(("backend", "kind"), [("torch", "LSTM"), ("torch", "GRU"),
                                               ("torch", "RNN"), ("dask", "LSTM")])
def test_other_backends_agree_with_numpy(backend, kind):
    """The torch backend (several devices: the cells take the general ops, not the fused node)
    and dask (lazy: kept small) give numpy's values and gradients."""
    pytest.importorskip(backend)
    big = backend != "dask"
    steps = 5 if big else 3
    res = []
    for b in ("numpy", backend):
        m = getattr(nn, kind)(3, 4, num_layers=2 if big else 1, bidirectional=big,
                              dtype=ag.float64, seed=5, backend=b)
        x = ag.tensor(np.linspace(-1, 1, steps * 2 * 3).reshape(steps, 2, 3), backend=b,
                      requires_grad=True)
        y = m(x)[0]
        ag.sum(y * y).backward()
        res.append([np.asarray(t.numpy()) for t in (y, x.grad, *[p.grad for p in m.parameters()])])
    for a, b in zip(*res):
        _close(a, b, f"numpy vs {backend}", 1e-12)


def test_save_load_astype_and_dropout_warning(tmp_path):
    m = nn.LSTM(3, 4, num_layers=2, bidirectional=True, seed=0, dtype=ag.float32)
    m.save(tmp_path / "lstm.npz")
    m2 = nn.LSTM(3, 4, num_layers=2, bidirectional=True, seed=1, dtype=ag.float32)
    m2.load(tmp_path / "lstm.npz")
    x = ag.tensor(RNG.normal(size=(5, 2, 3)), dtype=ag.float32)
    _close(m(x)[0].numpy(), m2(x)[0].numpy(), "saved and loaded", 0)
    m2.astype(ag.float64)
    y = m2(ag.astype(x, ag.float64))[0]
    assert y.dtype == ag.float64
    _close(y.numpy(), m(x)[0].numpy(), "float64 copy", 1e-6)
    with pytest.warns(UserWarning, match="between recurrent layers"):
        nn.GRU(3, 4, dropout=0.5)


def test_jitted_attention_step_with_dropout_equals_eager():
    """MultiheadAttention (dropout on the weights, key padding) and sdpa (a row with no key)
    in a jitted training step: the eager step's losses and parameters."""
    def setup():
        m = nn.MultiheadAttention(6, 2, dropout=0.2, batch_first=True, dtype=ag.float64, seed=0)
        opt = optim.SGD(m.parameters(), lr=0.1, capturable=True)
        keep = ag.tensor(np.array([[True, False, True, True]] * 3 + [[False] * 4]))

        def step(x, pad):
            opt.zero_grad()
            y, _ = m(x, x, x, key_padding_mask=pad, need_weights=False)
            z = F.scaled_dot_product_attention(y, x, x, attn_mask=keep, dropout_p=0.1)
            loss = ag.mean(z * z)
            loss.backward()
            opt.step()
            return loss

        return m, step

    def data(i):
        r = np.random.default_rng(i)
        pad = np.zeros((2, 4), bool)
        pad[1, 3] = True
        return ag.tensor(r.normal(size=(2, 4, 6))), ag.tensor(pad)

    ag.manual_seed(3)
    m_e, step_e = setup()
    eager = [float(step_e(*data(i)).numpy()) for i in range(4)]
    ag.manual_seed(3)
    m_j, step_j = setup()
    jitted = ag.jit(step_j)
    got = [float(jitted(*data(i)).numpy()) for i in range(4)]
    assert jitted.cache_info()["traces"] == 1
    np.testing.assert_allclose(got, eager, rtol=1e-12)
    assert np.isfinite(got).all() and len(set(got)) == 4
    for a, b in zip(m_j.parameters(), m_e.parameters()):
        _close(a.numpy(), b.numpy(), "parameters", 1e-12)


def test_attention_initialisation_follows_torch():
    e = 16
    m = nn.MultiheadAttention(e, 4, add_bias_kv=True, seed=0, dtype=ag.float64)
    t = torch.nn.MultiheadAttention(e, 4, add_bias_kv=True).double()
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in t.state_dict().items()}
    w = m.in_proj_weight.numpy()
    bound = np.sqrt(6 / (4 * e))  # xavier_uniform_ of (3E, E)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.8 * bound
    o = m.out_proj.weight.numpy()
    assert np.abs(o).max() <= 1 / np.sqrt(e) and np.abs(o).max() > 0.8 / np.sqrt(e)
    assert not m.in_proj_bias.numpy().any() and not m.out_proj.bias.numpy().any()
    with pytest.raises(ValueError, match="multiple of num_heads"):
        nn.MultiheadAttention(10, 4)
    with pytest.raises(RuntimeError, match="is_causal"):
        x = ag.ones((3, 2, e), dtype=ag.float64)
        m(x, x, x, is_causal=True)
