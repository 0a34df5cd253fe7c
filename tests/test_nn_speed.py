"""Issue 25's speed work and transposed convolutions: ``conv_transpose1d/2d`` and
``nn.ConvTranspose1d/2d`` against PyTorch (values and gradients over a grid of options),
second-order derivatives of the rewritten convolution, pooling and transposed convolution
against PyTorch, NumPy against array_api_strict, and each backend fast path
(``Backend.windows``, ``fold``, ``subtract_at_labels``) equal to the standard-op path."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import agnograd as ag
import agnograd.nn.functional as F
from agnograd import nn
from agnograd.backends import _fallbacks

RNG = np.random.default_rng(25)


def _torch():
    return pytest.importorskip("torch")


# ---------------------------------------------------------------------------------------------
# Transposed convolution against PyTorch

# (stride, padding, output_padding, groups, dilation)
CT_OPTIONS = [(1, 0, 0, 1, 1), (2, 1, 1, 1, 1), (3, 2, 2, 2, 1), (2, 0, 1, 1, 2), (1, 1, 0, 2, 2),
              (2, 1, 0, 4, 1), ((2, 1), (1, 0), (1, 0), 1, (1, 2))]


@pytest.mark.parametrize("nd", [1, 2])
@pytest.mark.parametrize("opts", CT_OPTIONS)
@pytest.mark.parametrize("bias", [True, False])
def test_conv_transpose_matches_torch(nd, opts, bias):
    torch = _torch()
    s, p, op, g, d = opts
    if nd == 1:
        if isinstance(s, tuple):
            pytest.skip("pairs are 2-d options")
        kernel, spatial = (3,), (5,)
    else:
        kernel, spatial = (3, 2), (4, 5)
    x = RNG.normal(size=(2, 4, *spatial))
    w = RNG.normal(size=(4, 3, *kernel))
    b = RNG.normal(size=(3 * g,)) if bias else None
    fa = F.conv_transpose1d if nd == 1 else F.conv_transpose2d
    ft = torch.nn.functional.conv_transpose1d if nd == 1 else torch.nn.functional.conv_transpose2d
    arrays = [x, w] + ([b] if bias else [])
    a_in = [ag.tensor(v, requires_grad=True) for v in arrays]
    t_in = [torch.tensor(v, requires_grad=True) for v in arrays]
    ya = fa(a_in[0], a_in[1], a_in[2] if bias else None, s, p, op, g, d)
    yt = ft(t_in[0], t_in[1], t_in[2] if bias else None, s, p, op, g, d)
    np.testing.assert_allclose(ya.numpy(), yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    r = RNG.normal(size=tuple(yt.shape))
    ag.sum(ya * ag.tensor(r)).backward()
    (yt * torch.tensor(r)).sum().backward()
    for a, t in zip(a_in, t_in):
        np.testing.assert_allclose(a.grad.numpy(), t.grad.numpy(), rtol=1e-9, atol=1e-11)


def test_conv_transpose_unbatched_and_errors():
    torch = _torch()
    x, w = RNG.normal(size=(4, 6)), RNG.normal(size=(4, 2, 3))
    y = F.conv_transpose1d(ag.tensor(x), ag.tensor(w), stride=2)
    want = torch.nn.functional.conv_transpose1d(torch.tensor(x), torch.tensor(w), stride=2)
    np.testing.assert_allclose(y.numpy(), want.numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match="output_padding"):
        F.conv_transpose1d(ag.tensor(x), ag.tensor(w), stride=2, output_padding=2)
    with pytest.raises(ValueError, match="input channels"):
        F.conv_transpose1d(ag.tensor(x), ag.ones((3, 2, 3), dtype=ag.float64))


def test_conv_transpose_layers_match_torch_state_dict():
    torch = _torch()
    for nd, (ours, theirs) in enumerate([(nn.ConvTranspose1d, torch.nn.ConvTranspose1d),
                                         (nn.ConvTranspose2d, torch.nn.ConvTranspose2d)], 1):
        m = ours(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2, dtype=ag.float64,
                 seed=0)
        t = theirs(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2,
                   dtype=torch.float64)
        sd = m.state_dict()
        assert set(sd) == set(t.state_dict()) == {"weight", "bias"}
        assert tuple(sd["weight"].shape) == tuple(t.weight.shape)
        t.load_state_dict({k: torch.tensor(np.asarray(v.numpy())) for k, v in sd.items()})
        x = RNG.normal(size=(2, 4) + (5,) * nd)
        np.testing.assert_allclose(m(ag.tensor(x)).numpy(),
                                   t(torch.tensor(x)).detach().numpy(), rtol=1e-10)
        # PyTorch's fans: the bound of the He/Glorot draw uses C_out/groups·k and C_in·k
        assert float(np.abs(sd["weight"].numpy()).max()) <= np.sqrt(6 / (3 * 3 ** nd + 4 * 3 ** nd))


# ---------------------------------------------------------------------------------------------
# Second order against PyTorch: the windows/fold nodes are each other's gradient


SECOND = {
    "conv2d": (lambda f, x, w: f.conv2d(x, w, stride=2, padding=1, dilation=(1, 2)),
               (2, 3, 7, 8), (4, 3, 3, 2)),
    "conv1d_groups": (lambda f, x, w: f.conv1d(x, w, padding=2, groups=2), (2, 4, 9), (6, 2, 3)),
    "conv_transpose2d": (lambda f, x, w: f.conv_transpose2d(x, w, stride=2, padding=1,
                                                            output_padding=1), (2, 3, 4, 5),
                         (3, 2, 3, 3)),
}


@pytest.mark.parametrize("name", sorted(SECOND))
def test_second_order_matches_torch(name):
    """A Hessian-vector product of ``sum(tanh(conv(x, w)))`` in x and w, against PyTorch."""
    torch = _torch()
    fn, xs, ws = SECOND[name]
    x0, w0 = RNG.normal(size=xs), RNG.normal(size=ws) * 0.3
    vx, vw = RNG.normal(size=xs), RNG.normal(size=ws)
    x, w = ag.tensor(x0, requires_grad=True), ag.tensor(w0, requires_grad=True)
    ag.sum(ag.tanh(fn(F, x, w))).backward(create_graph=True)
    gx, gw = x.grad, w.grad
    x.grad = w.grad = None
    (ag.sum(gx * ag.tensor(vx)) + ag.sum(gw * ag.tensor(vw))).backward()
    hx, hw = x.grad, w.grad
    tx, tw = torch.tensor(x0, requires_grad=True), torch.tensor(w0, requires_grad=True)
    tgx, tgw = torch.autograd.grad(torch.tanh(fn(torch.nn.functional, tx, tw)).sum(), [tx, tw],
                                   create_graph=True)
    thx, thw = torch.autograd.grad((tgx * torch.tensor(vx)).sum() + (tgw * torch.tensor(vw)).sum(),
                                   [tx, tw])
    np.testing.assert_allclose(hx.numpy(), thx.numpy(), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(hw.numpy(), thw.numpy(), rtol=1e-9, atol=1e-11)


def test_max_pool_second_order_matches_torch():
    torch = _torch()
    x0 = RNG.permutation(2 * 3 * 6 * 6).reshape(2, 3, 6, 6) * 0.1  # distinct: no ties
    v = RNG.normal(size=x0.shape)
    x = ag.tensor(x0, requires_grad=True)
    ag.sum(F.max_pool2d(x, 3, 2, 1) ** 2).backward(create_graph=True)
    gx = x.grad
    x.grad = None
    ag.sum(gx * ag.tensor(v)).backward()
    hx = x.grad
    tx = torch.tensor(x0, requires_grad=True)
    (tgx,) = torch.autograd.grad((torch.nn.functional.max_pool2d(tx, 3, 2, 1) ** 2).sum(), [tx],
                                 create_graph=True)
    (thx,) = torch.autograd.grad((tgx * torch.tensor(v)).sum(), [tx])
    np.testing.assert_allclose(hx.numpy(), thx.numpy(), rtol=1e-10, atol=1e-12)


def test_max_pool_splits_ties_equally():
    x = ag.tensor(np.ones((1, 1, 2, 2)), requires_grad=True)
    ag.sum(F.max_pool2d(x, 2)).backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.full((1, 1, 2, 2), 0.25))


# ---------------------------------------------------------------------------------------------
# NumPy against array_api_strict (the standard-op paths)


def _run(backend, fn, arrays, ints=()):
    ins = [ag.tensor(a, backend=backend) if i in ints else
           ag.tensor(a, backend=backend, requires_grad=True) for i, a in enumerate(arrays)]
    y = fn(*ins)
    ag.sum(y * y).backward()
    return [np.asarray(y.numpy())] + [np.asarray(t.grad.numpy()) for i, t in enumerate(ins)
                                      if i not in ints]


STRICT = {
    "conv2d": (lambda x, w: F.conv2d(x, w, stride=(2, 1), padding=1, dilation=(1, 2)),
               [(2, 3, 7, 8), (4, 3, 3, 2)], ()),
    "conv1d": (lambda x, w: F.conv1d(x, w, stride=2, padding="valid", groups=3),
               [(2, 3, 11), (6, 1, 4)], ()),
    "conv_transpose2d": (lambda x, w: F.conv_transpose2d(x, w, stride=2, padding=1,
                                                         output_padding=(1, 0), groups=2),
                         [(2, 4, 3, 4), (4, 1, 3, 2)], ()),
    "conv_transpose1d": (lambda x, w: F.conv_transpose1d(x, w, stride=3, dilation=2),
                         [(2, 2, 5), (2, 3, 2)], ()),
    "max_pool2d": (lambda x: F.max_pool2d(x, (3, 2), (2, 1), (1, 0)), [(2, 3, 7, 6)], ()),
    "avg_pool1d": (lambda x: F.avg_pool1d(x, 3, 2, 1, count_include_pad=False), [(2, 3, 9)], ()),
    "cross_entropy": (lambda x, t: F.cross_entropy(x, t, ignore_index=1),
                      [(6, 5), (6,)], (1,)),
    "cross_entropy_none": (lambda x, t: F.cross_entropy(x, t, reduction="none"),
                           [(6, 5), (6,)], (1,)),
}


@pytest.mark.parametrize("backend", ["array_api_strict", "dask", "torch"])
@pytest.mark.parametrize("name", sorted(STRICT))
def test_numpy_matches_array_api_strict(name, backend):
    """NumPy (its fast paths) against the standard-op paths: array_api_strict, and Dask (lazy:
    the fold pads and sums instead of assigning into slices)."""
    pytest.importorskip(backend if backend != "dask" else "dask.array")
    fn, shapes, ints = STRICT[name]
    arrays = [RNG.integers(0, 5, size=s) if i in ints else RNG.normal(size=s)
              for i, s in enumerate(shapes)]
    got = _run("numpy", fn, arrays, ints)
    want = _run(backend, fn, arrays, ints)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


# ---------------------------------------------------------------------------------------------
# The backend fast paths equal the standard-op paths


@pytest.mark.parametrize(("kernel", "stride", "dilation"),
                         [((3,), (1,), (1,)), ((2,), (3,), (2,)), ((3, 2), (2, 1), (1, 2)),
                          ((2, 2), (2, 2), (1, 1)), ((1, 3), (1, 2), (3, 1))])
def test_numpy_windows_and_fold_equal_the_standard_paths(kernel, stride, dilation):
    b = ag.get_backend("numpy")
    nd = len(kernel)
    shape = (2, 3) + ((11,) if nd == 1 else (9, 10))
    x = RNG.normal(size=shape)
    out = tuple((n - d * (k - 1) - 1) // s + 1
                for n, k, s, d in zip(shape[2:], kernel, stride, dilation))
    fast = b.windows(b.xp, x, kernel, stride, dilation, out)
    assert not fast.flags.writeable and np.shares_memory(fast, x)  # a view: no copy
    std = _fallbacks.windows_standard(b.xp, x, kernel, stride, dilation, out)
    np.testing.assert_array_equal(fast, std)
    g = RNG.normal(size=fast.shape)
    folded = b.fold(b.xp, g, shape, kernel, stride, dilation)
    np.testing.assert_allclose(folded, _fallbacks.fold_standard(b.xp, g, shape, kernel, stride,
                                                                dilation), rtol=1e-14)
    pieces = [g[(slice(None), slice(None)) + o]
              for o in itertools.product(*(range(k) for k in kernel))]
    np.testing.assert_allclose(b.fold(b.xp, pieces, shape, kernel, stride, dilation), folded,
                               rtol=1e-14)
    for inplace in (True, False):  # the standard path of eager backends, and of lazy ones
        np.testing.assert_allclose(_fallbacks.fold_standard(b.xp, pieces, shape, kernel, stride,
                                                            dilation, inplace), folded,
                                   rtol=1e-14)
    # fold is the adjoint of windows: <windows(x), g> = <x, fold(g)>
    np.testing.assert_allclose(np.sum(fast * g), np.sum(x * folded), rtol=1e-12)


@pytest.mark.parametrize("scalar", [False, True])
def test_numpy_subtract_at_labels_equals_the_standard_path(scalar):
    b = ag.get_backend("numpy")
    a = RNG.normal(size=(7, 5)).astype(np.float32)
    idx = RNG.integers(0, 5, size=(7, 1))
    v = np.float32(0.5) if scalar else RNG.normal(size=(7, 1)).astype(np.float32)
    classes = np.arange(5)
    want = a - np.where(idx == classes, v, 0.0).astype(np.float32)
    got = b.subtract_at_labels(b.xp, a.copy(), idx, v, classes)
    np.testing.assert_array_equal(got, want)
    std = ag.get_backend("array_api_strict")
    xs = std.xp
    got_std = std.subtract_at_labels(xs, xs.asarray(a), xs.asarray(idx), xs.asarray(v),
                                     xs.asarray(classes))
    np.testing.assert_array_equal(np.asarray(got_std), want)


def test_cross_entropy_builds_no_class_sized_float_arrays_but_the_softmax():
    """The integer-label loss allocates no (N, C) one-hot: a forward+backward makes at most
    the arrays the softmax needs (z, exp(z), the softmax, the gradient) at (N, C)."""
    n, c = 32, 2048
    x = ag.tensor(RNG.normal(size=(n, c)).astype(np.float32), requires_grad=True)
    t = ag.tensor(RNG.integers(0, c, size=n))
    import tracemalloc

    F.cross_entropy(x, t).backward()  # warm the constant caches
    x.grad = None
    tracemalloc.start()
    F.cross_entropy(x, t).backward()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak <= 4.5 * n * c * 4, peak / (n * c * 4)


@pytest.mark.parametrize("dups", [False, True, "many"])
def test_numpy_scatter_add_rows_equals_the_standard_path(dups):
    b = ag.get_backend("numpy")
    n = 40
    # "many": each index ~20 times (past the rounds of one add per repeat, add.at takes over)
    idx = (RNG.integers(0, 10 if dups is True else 3, size=30 if dups is True else 60) if dups
           else RNG.permutation(n)[:30])
    v = RNG.normal(size=(idx.shape[0], 3))
    want = np.zeros((n, 3))
    np.add.at(want, idx, v)  # in the indices' order: NumPy's kernel sums in the same order
    np.testing.assert_array_equal(b.scatter_add_rows(b.xp, n, idx, v), want)
    std = ag.get_backend("array_api_strict")
    got = std.scatter_add_rows(std.xp, n, std.xp.asarray(idx), std.xp.asarray(v))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-13, atol=1e-14)


def test_embedding_gradients_match_torch_to_second_order():
    """The embedding node's gradient (scatter_add_rows) and, under create_graph, its
    differentiable form, against PyTorch: repeated indices summed, padding_idx left out."""
    torch = _torch()
    w0 = RNG.normal(size=(7, 3))
    idx = np.array([[1, 3, 1], [0, 6, 3]])
    v = RNG.normal(size=w0.shape)
    w = ag.tensor(w0, requires_grad=True)
    ag.sum(F.embedding(ag.tensor(idx), w, padding_idx=0) ** 3).backward(create_graph=True)
    g = w.grad
    w.grad = None
    ag.sum(g * ag.tensor(v)).backward()
    tw = torch.tensor(w0, requires_grad=True)
    (tg,) = torch.autograd.grad((torch.nn.functional.embedding(torch.tensor(idx), tw,
                                                               padding_idx=0) ** 3).sum(), [tw],
                                create_graph=True)
    (th,) = torch.autograd.grad((tg * torch.tensor(v)).sum(), [tw])
    np.testing.assert_allclose(g.detach().numpy(), tg.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(w.grad.numpy(), th.numpy(), rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# The gather/scatter cross-entropy (C >= F._GATHER_MIN_CLASSES) under tests/test_xent_labels.py:
# the same edge cases against PyTorch, on every backend, second order and the replay budget


@pytest.fixture
def gather_path(monkeypatch):
    monkeypatch.setattr(F, "_GATHER_MIN_CLASSES", 0)


def _xent_module():
    from tests import test_xent_labels

    return test_xent_labels


@pytest.mark.parametrize("case", ["none-ignored", "some-ignored", "all-ignored", "ignore-a-class",
                                  "ignore-a-class-mixed"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("path", ["host-read", "no-read", "replay"])
def test_gather_path_edges_match_torch(case, reduction, path, gather_path, monkeypatch):
    _torch()
    mod = _xent_module()
    if case not in mod.CASES:
        pytest.skip(f"no case {case!r} in tests/test_xent_labels.py")
    mod.test_cross_entropy_edges_match_torch(case, 0.0, reduction, "float32", path, monkeypatch)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_gather_path_replay_call_budget(reduction, gather_path):
    _xent_module().test_label_checks_cost_at_most_four_calls_in_a_replay(reduction)


def test_gather_path_bad_label_in_a_replay(gather_path):
    _xent_module().test_a_bad_label_in_a_replay_is_nan_in_its_row_only()


@pytest.mark.parametrize("labels", [[0, 1, 2], [0, -100, 2], [-100, -100, -100]])
def test_gather_path_second_order(labels, gather_path):
    _torch()
    _xent_module().test_second_order_through_the_label_node(labels)


@pytest.mark.parametrize("backend", ["numpy", "array_api_strict", "torch", "dask"])
@pytest.mark.parametrize("dtype", ["int64", "int32", "uint8"])
def test_gather_path_no_read_on_every_backend(backend, dtype, gather_path, monkeypatch):
    _xent_module().test_no_read_path_on_every_backend(backend, dtype, {"ignore_index": 1},
                                                      monkeypatch)


# ---------------------------------------------------------------------------------------------
# Forward mode: the new nodes' JVP rules against torch.func.jvp


JVP_CASES = {
    "conv2d": (lambda f, x, w: f.conv2d(x, w, stride=2, padding=1, dilation=(1, 2)),
               [(2, 3, 7, 8), (4, 3, 3, 2)], ()),
    "conv_transpose1d": (lambda f, x, w: f.conv_transpose1d(x, w, stride=2, padding=1,
                                                            output_padding=1),
                         [(2, 3, 5), (3, 2, 3)], ()),
    "max_pool2d": (lambda f, x: f.max_pool2d(x, 3, 2, 1), [(2, 3, 6, 6)], ()),
    "embedding": (lambda f, w, i: f.embedding(i, w), [(7, 3), (2, 4)], (1,)),
}


@pytest.mark.parametrize("name", sorted(JVP_CASES))
def test_forward_mode_matches_torch(name):
    torch = _torch()
    fn, shapes, ints = JVP_CASES[name]
    arrays = [RNG.integers(0, 7, size=s) if i in ints else
              RNG.permutation(int(np.prod(s))).reshape(s) * 0.1 for i, s in enumerate(shapes)]
    tangents = [RNG.normal(size=s) for s in shapes]
    fl = [i for i in range(len(shapes)) if i not in ints]

    def ours(*xs):
        full = [ag.tensor(arrays[i]) if i in ints else None for i in range(len(shapes))]
        for i, x in zip(fl, xs):
            full[i] = x
        return fn(F, *full)

    def theirs(*xs):
        full = [torch.tensor(arrays[i]) if i in ints else None for i in range(len(shapes))]
        for i, x in zip(fl, xs):
            full[i] = x
        return fn(torch.nn.functional, *full)

    _, got = ag.func.jvp(ours, [ag.tensor(arrays[i]) for i in fl],
                         [ag.tensor(tangents[i]) for i in fl])
    _, want = torch.func.jvp(theirs, tuple(torch.tensor(arrays[i]) for i in fl),
                             tuple(torch.tensor(tangents[i]) for i in fl))
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-10, atol=1e-12)
