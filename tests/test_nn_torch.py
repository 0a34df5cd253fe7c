"""``agnograd.nn`` against PyTorch where PyTorch defines the same function: values and gradients
of the convolutions, pooling, normalisation, embedding, losses and activations, in float64,
over many parameter combinations. Skipped without PyTorch."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import agnograd as ag
import agnograd.nn.functional as F
from agnograd import nn

torch = pytest.importorskip("torch")
# PyTorch notes that padding="same" with even kernels copies the input: not our concern
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")
TF = torch.nn.functional


def _both(fn_ag, fn_torch, *arrays, grad=True, ints=(), rtol=1e-10, atol=1e-12):
    """Run both on the same float64 host arrays (integer ones passed through ``ints`` positions)
    and compare the values and the gradients of ``sum(y * w)`` for a fixed ``w``."""
    a_in = [ag.tensor(a, dtype=ag.int64) if i in ints else
            ag.tensor(a, dtype=ag.float64, requires_grad=grad) for i, a in enumerate(arrays)]
    t_in = [torch.tensor(a, dtype=torch.int64) if i in ints else
            torch.tensor(a, dtype=torch.float64, requires_grad=grad) for i, a in enumerate(arrays)]
    ya, yt = fn_ag(*a_in), fn_torch(*t_in)
    np.testing.assert_allclose(ya.numpy(), yt.detach().numpy(), rtol=rtol, atol=atol)
    if not grad:
        return
    w = np.linspace(0.5, 1.5, max(int(np.prod(yt.shape)), 1)).reshape(tuple(yt.shape))
    ag.sum(ya * ag.tensor(w)).backward()
    (yt * torch.tensor(w)).sum().backward()
    for i, (a, t) in enumerate(zip(a_in, t_in)):
        if i in ints:
            continue
        tg = np.zeros(t.shape) if t.grad is None else t.grad.numpy()
        ag_g = np.zeros(a.shape) if a.grad is None else a.grad.numpy()
        np.testing.assert_allclose(ag_g, tg, rtol=rtol * 100, atol=atol * 100, err_msg=f"input {i}")


RNG = np.random.default_rng(0)

# (input shape, weight shape, stride, padding, dilation, groups, bias)
CONV2D = [
    (x, w, s, p, d, g, b)
    for (x, w, g) in [((2, 3, 7, 6), (4, 3, 3, 3), 1), ((1, 4, 6, 8), (6, 2, 3, 2), 2),
                      ((2, 4, 5, 5), (4, 1, 2, 3), 4), ((3, 6, 5), (2, 3, 1, 2), 1)]
    for s, p, d in [(1, 0, 1), (2, 1, 1), ((1, 2), (1, 0), (2, 1)), (1, "same", 1), (1, "valid", 2),
                    (1, "same", (2, 1)), (3, 2, 1)]
    for b in (True, False)
]
# (3, 6, 5) is an unbatched input (C, H, W)


@pytest.mark.parametrize(("xs", "ws", "stride", "padding", "dilation", "groups", "bias"), CONV2D)
def test_conv2d_matches_torch(xs, ws, stride, padding, dilation, groups, bias):
    x, w, b = RNG.normal(size=xs), RNG.normal(size=ws), RNG.normal(size=ws[0])
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    if bias:
        _both(lambda x, w, b: F.conv2d(x, w, b, **kw), lambda x, w, b: TF.conv2d(x, w, b, **kw),
              x, w, b)
    else:
        _both(lambda x, w: F.conv2d(x, w, **kw), lambda x, w: TF.conv2d(x, w, **kw), x, w)


CONV1D = list(itertools.product(
    [((2, 3, 9), (4, 3, 3), 1), ((1, 4, 8), (2, 2, 2), 2), ((3, 7), (3, 3, 4), 1),
     ((2, 6, 6), (6, 1, 3), 6)],
    [(1, 0, 1), (2, 1, 1), (1, "same", 2), (1, "valid", 1), (3, 2, 2), (1, "same", 1)]))


@pytest.mark.parametrize(("shapes", "params"), CONV1D)
def test_conv1d_matches_torch(shapes, params):
    (xs, ws, groups), (stride, padding, dilation) = shapes, params
    x, w, b = RNG.normal(size=xs), RNG.normal(size=ws), RNG.normal(size=ws[0])
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    _both(lambda x, w, b: F.conv1d(x, w, b, **kw), lambda x, w, b: TF.conv1d(x, w, b, **kw), x, w, b)


POOL = [(2, None, 0, 1), (3, 2, 1, 1), ((2, 3), (1, 2), (1, 0), 1), (2, 1, 0, 2), (3, None, 1, 1)]


@pytest.mark.parametrize(("k", "s", "p", "d"), POOL)
def test_pooling_matches_torch(k, s, p, d):
    x = RNG.permutation(2 * 3 * 7 * 6).reshape(2, 3, 7, 6) * 0.1  # distinct: no ties
    _both(lambda x: F.max_pool2d(x, k, s, p, d), lambda x: TF.max_pool2d(x, k, s, p, d), x)
    for cip in (True, False):
        _both(lambda x: F.avg_pool2d(x, k, s, p, count_include_pad=cip),
              lambda x: TF.avg_pool2d(x, k, s, p, count_include_pad=cip), x)
    k1, s1, p1 = (v if not isinstance(v, tuple) else v[0] for v in (k, s, p))
    x1 = x[:, :, :, 0]
    _both(lambda x: F.max_pool1d(x, k1, s1, p1, d), lambda x: TF.max_pool1d(x, k1, s1, p1, d), x1)
    _both(lambda x: F.avg_pool1d(x, k1, s1, p1, count_include_pad=False),
          lambda x: TF.avg_pool1d(x, k1, s1, p1, count_include_pad=False), x1)


@pytest.mark.parametrize(("shape", "ns"), [((4, 5), 5), ((2, 3, 4), (3, 4)), ((3, 2, 6), (6,))])
def test_layer_norm_matches_torch(shape, ns):
    x = RNG.normal(size=shape)
    nst = (ns,) if isinstance(ns, int) else ns
    w, b = RNG.normal(size=nst), RNG.normal(size=nst)
    _both(lambda x, w, b: F.layer_norm(x, ns, w, b), lambda x, w, b: TF.layer_norm(x, nst, w, b),
          x, w, b)
    _both(lambda x: F.layer_norm(x, ns, eps=0.1), lambda x: TF.layer_norm(x, nst, eps=0.1), x)


@pytest.mark.parametrize("padding_idx", [None, 2, -1])
def test_embedding_matches_torch(padding_idx):
    idx = np.array([[0, 2, 4], [2, 2, 1]])
    w = RNG.normal(size=(5, 3))
    _both(lambda w, i: F.embedding(i, w, padding_idx), lambda w, i: TF.embedding(i, w, padding_idx),
          w, idx, ints=(1,))


ACTS = [
    (lambda x: F.leaky_relu(x), lambda x: TF.leaky_relu(x)),
    (lambda x: F.leaky_relu(x, 0.2), lambda x: TF.leaky_relu(x, 0.2)),
    (lambda x: F.elu(x), lambda x: TF.elu(x)),
    (lambda x: F.elu(x, 0.5), lambda x: TF.elu(x, 0.5)),
    (F.silu, TF.silu),
    (lambda x: F.softplus(x), lambda x: TF.softplus(x)),
    (lambda x: F.softplus(x, 2.0, 5.0), lambda x: TF.softplus(x, 2.0, 5.0)),
    (lambda x: F.gelu(x, approximate="tanh"), lambda x: TF.gelu(x, approximate="tanh")),
]


@pytest.mark.parametrize("pair", ACTS)
def test_activations_match_torch(pair):
    x = np.concatenate([np.linspace(-30, 30, 41), [0.0, -1e-3, 1e-3, 700.0, -700.0]])
    _both(pair[0], pair[1], x)


def test_exact_gelu_is_within_the_erf_approximation_of_torch():
    x = np.linspace(-8, 8, 161)
    _both(F.gelu, TF.gelu, x, rtol=0, atol=2e-6)


MODULES = [
    (lambda: nn.LeakyReLU(0.3), lambda: torch.nn.LeakyReLU(0.3)),
    (lambda: nn.ELU(2.0), lambda: torch.nn.ELU(2.0)),
    (lambda: nn.SiLU(), lambda: torch.nn.SiLU()),
    (lambda: nn.Softplus(beta=0.5, threshold=4.0), lambda: torch.nn.Softplus(0.5, 4.0)),
    (lambda: nn.Flatten(), lambda: torch.nn.Flatten()),
    (lambda: nn.Flatten(0, 1), lambda: torch.nn.Flatten(0, 1)),
    (lambda: nn.Identity(), lambda: torch.nn.Identity()),
    (lambda: nn.MaxPool2d(2), lambda: torch.nn.MaxPool2d(2)),
    (lambda: nn.AvgPool2d(3, 1, 1), lambda: torch.nn.AvgPool2d(3, 1, 1)),
]


@pytest.mark.parametrize("pair", MODULES)
def test_modules_match_torch(pair):
    x = RNG.permutation(2 * 3 * 4 * 4).reshape(2, 3, 4, 4) * 0.1 - 4.0
    _both(pair[0](), pair[1](), x)


def test_conv_layers_match_torch_with_the_same_weights():
    for ours, theirs, shape in [
        (nn.Conv2d(3, 4, (3, 2), stride=2, padding=1, groups=1, dtype=ag.float64, seed=0),
         torch.nn.Conv2d(3, 4, (3, 2), stride=2, padding=1, dtype=torch.float64), (2, 3, 6, 5)),
        (nn.Conv1d(4, 2, 3, padding="same", groups=2, dtype=ag.float64, seed=0),
         torch.nn.Conv1d(4, 2, 3, padding="same", groups=2, dtype=torch.float64), (2, 4, 7)),
    ]:
        assert tuple(theirs.weight.shape) == ours.weight.shape
        with torch.no_grad():
            theirs.weight.copy_(torch.tensor(ours.weight.numpy()))
            theirs.bias.copy_(torch.tensor(RNG.normal(size=ours.bias.shape)))
        with ag.no_grad():
            ours.bias[...] = ag.tensor(theirs.bias.detach().numpy())
        x = RNG.normal(size=shape)
        np.testing.assert_allclose(ours(ag.tensor(x)).numpy(), theirs(torch.tensor(x)).detach().numpy(),
                                   rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# Losses


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("case", ["plain", "weight", "ignore", "weight-ignore", "spatial",
                                  "spatial-weight-ignore", "unbatched"])
def test_nll_loss_matches_torch(case, reduction):
    spatial = case.startswith("spatial")
    unbatched = case == "unbatched"
    x = RNG.normal(size=(3,) if unbatched else (4, 3, 2, 2) if spatial else (5, 3))
    t = np.array(1) if unbatched else RNG.integers(0, 3, size=(4, 2, 2) if spatial else (5,))
    if "ignore" in case:
        t.reshape(-1)[[0, 2]] = 7
    kw: dict = {"reduction": reduction}
    if "ignore" in case:
        kw["ignore_index"] = 7
    if "weight" in case:
        w = RNG.uniform(0.5, 2.0, size=3)  # PyTorch does not differentiate the class weights
        _both(lambda x, t: F.nll_loss(x, t, weight=ag.tensor(w), **kw),
              lambda x, t: TF.nll_loss(x, t, weight=torch.tensor(w), **kw), x, t, ints=(1,))
    else:
        _both(lambda x, t: F.nll_loss(x, t, **kw), lambda x, t: TF.nll_loss(x, t, **kw), x, t,
              ints=(1,))


# logits shapes: 2-d, 3-d, 4-d, unbatched (C,)
XENT_SHAPES = {"2d": (5, 3), "3d": (4, 3, 2), "4d": (2, 3, 2, 3), "unbatched": (3,)}
XENT_LABELS = [(s, w, i, e, r) for s in XENT_SHAPES for w in (False, True)
               for i in (None, "hit", "in-range") for e in (0.0, 0.2) for r in ("mean", "sum", "none")]
XENT_PROBS = [(s, w, e, r) for s in XENT_SHAPES for w in (False, True) for e in (0.0, 0.2)
              for r in ("mean", "sum", "none")]


@pytest.mark.parametrize(("shape", "weight", "ignore", "eps", "reduction"), XENT_LABELS)
def test_cross_entropy_labels_match_torch(shape, weight, ignore, eps, reduction):
    """Integer labels with every option: weight, ignore_index (absent, hit by labels outside
    0..C-1, or a class in range), label_smoothing, the reductions, 2-d/3-d/4-d/unbatched."""
    xs = XENT_SHAPES[shape]
    x = RNG.normal(size=xs)
    t = np.array(2) if shape == "unbatched" else RNG.integers(0, 3, size=(xs[0], *xs[2:]))
    kw: dict = {"reduction": reduction, "label_smoothing": eps}
    if ignore == "hit":
        kw["ignore_index"] = 7
        if t.ndim:
            t.reshape(-1)[[0, 2]] = 7
    elif ignore == "in-range":
        kw["ignore_index"] = 1  # class 1 is ignored where it is the label
    if weight:
        w = RNG.uniform(0.5, 2.0, size=3)  # PyTorch does not differentiate the class weights
        _both(lambda x, t: F.cross_entropy(x, t, weight=ag.tensor(w), **kw),
              lambda x, t: TF.cross_entropy(x, t, weight=torch.tensor(w), **kw), x, t, ints=(1,))
    else:
        _both(lambda x, t: F.cross_entropy(x, t, **kw), lambda x, t: TF.cross_entropy(x, t, **kw),
              x, t, ints=(1,))


@pytest.mark.parametrize(("shape", "weight", "eps", "reduction"), XENT_PROBS)
def test_cross_entropy_probabilities_match_torch(shape, weight, eps, reduction):
    """Probability targets (differentiated too) with weight and label_smoothing, every shape."""
    xs = XENT_SHAPES[shape]
    x = RNG.normal(size=xs)
    if len(xs) == 1:
        p = RNG.dirichlet(np.ones(3))
    else:  # a distribution over axis 1
        p = np.moveaxis(RNG.dirichlet(np.ones(3), size=(xs[0], *xs[2:])), -1, 1)
    kw: dict = {"reduction": reduction, "label_smoothing": eps}
    w = RNG.uniform(0.5, 2.0, size=3) if weight else None
    _both(lambda x, p: F.cross_entropy(x, p, weight=None if w is None else ag.tensor(w), **kw),
          lambda x, p: TF.cross_entropy(x, p, weight=None if w is None else torch.tensor(w), **kw),
          x, p)


def test_cross_entropy_all_ignored_mean_is_nan_as_in_torch():
    x = RNG.normal(size=(4, 3))
    for eps in (0.0, 0.1):
        with np.errstate(invalid="ignore"):  # 0/0: every label ignored
            y = F.cross_entropy(ag.tensor(x), ag.tensor([-100] * 4), label_smoothing=eps)
        yt = TF.cross_entropy(torch.tensor(x), torch.tensor([-100] * 4), label_smoothing=eps)
        assert np.isnan(y.item()) and np.isnan(yt.item())
        z = ag.tensor(x, requires_grad=True)
        F.cross_entropy(z, ag.tensor([-100] * 4), reduction="sum", label_smoothing=eps).backward()
        np.testing.assert_array_equal(z.grad.numpy(), np.zeros((4, 3)))


def test_nll_loss_after_log_softmax_is_cross_entropy_and_all_ignored_is_nan():
    x = RNG.normal(size=(4, 3))
    t = np.array([0, 2, 1, 1])
    _both(lambda x, t: F.nll_loss(F.log_softmax(x), t), lambda x, t: TF.cross_entropy(x, t), x, t,
          ints=(1,))
    with np.errstate(invalid="ignore"):  # 0/0: every label ignored
        y = F.nll_loss(ag.tensor(x), ag.tensor([-100] * 4))
    assert np.isnan(y.item()) and np.isnan(TF.nll_loss(torch.tensor(x), torch.tensor([-100] * 4)).item())


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("with_weight", [False, True])
@pytest.mark.parametrize("with_pos_weight", [False, True])
def test_bce_with_logits_matches_torch(reduction, with_weight, with_pos_weight):
    x = np.concatenate([RNG.normal(size=(4, 3)) * 3, [[-800.0, 800.0, 0.0]]])
    t = RNG.uniform(size=(5, 3))
    w = RNG.uniform(0.5, 2.0, size=(5, 3)) if with_weight else None
    pw = RNG.uniform(0.5, 3.0, size=(3,)) if with_pos_weight else None

    def ours(x, t):
        return F.binary_cross_entropy_with_logits(
            x, t, weight=None if w is None else ag.tensor(w), reduction=reduction,
            pos_weight=None if pw is None else ag.tensor(pw))

    def theirs(x, t):
        return TF.binary_cross_entropy_with_logits(
            x, t, weight=None if w is None else torch.tensor(w), reduction=reduction,
            pos_weight=None if pw is None else torch.tensor(pw))

    _both(ours, theirs, x, t)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize(("ours", "theirs"), [
    (F.l1_loss, TF.l1_loss), (F.mse_loss, TF.mse_loss),
    (lambda a, b, reduction: F.huber_loss(a, b, reduction, delta=0.5),
     lambda a, b, reduction: TF.huber_loss(a, b, reduction=reduction, delta=0.5)),
    (lambda a, b, reduction: F.huber_loss(a, b, reduction),
     lambda a, b, reduction: TF.huber_loss(a, b, reduction=reduction)),
    (lambda a, b, reduction: F.smooth_l1_loss(a, b, reduction=reduction, beta=0.5),
     lambda a, b, reduction: TF.smooth_l1_loss(a, b, reduction=reduction, beta=0.5)),
    (lambda a, b, reduction: F.smooth_l1_loss(a, b, reduction=reduction, beta=0.0),
     lambda a, b, reduction: TF.smooth_l1_loss(a, b, reduction=reduction, beta=0.0)),
])
def test_regression_losses_match_torch(ours, theirs, reduction):
    a, b = RNG.normal(size=(6, 4)) * 2, RNG.normal(size=(6, 4))
    _both(lambda a, b: ours(a, b, reduction=reduction), lambda a, b: theirs(a, b, reduction=reduction),
          a, b)


@pytest.mark.parametrize(("labels", "num_classes"), [([3, 0, 1], -1), ([[1, 0], [2, 2]], 4),
                                                    ([], 3), (2, 5)])
def test_one_hot_matches_torch(labels, num_classes):
    ours = F.one_hot(ag.tensor(labels, dtype=ag.int64), num_classes)
    theirs = TF.one_hot(torch.tensor(labels, dtype=torch.int64), num_classes)
    assert ours.dtype == ag.int64
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
