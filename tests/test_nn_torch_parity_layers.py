"""An adversarial audit of issue 25's layers against PyTorch, as a user porting code would
compare them: normalisation layers over several train/eval steps with state dicts swapped both
ways, transposed convolutions (``output_size``, ``padding_mode``, layouts), ``F.pad`` cropping,
``F.linear`` with a broadcast bias, ``F.interpolate`` (PyTorch's copy of an unchanged axis,
its 2-d nearest ``i // 2``, ``nearest-exact``, ``trilinear``, ``bicubic``), ``F.normalize``,
``F.cosine_similarity`` (PyTorch's undifferentiated clamp), ``F.kl_div``, the losses (K-d
inputs, ignored and zero-weight classes, extreme logits, ``BCELoss``), and every layer inside
``ag.jit`` / ``ag.capture`` training steps and ``ag.vmap`` (against ``torch.func.vmap``).

Float64 values and gradients to ~1e-11 unless said otherwise. Where PyTorch's own backward is
not the gradient of its forward (1-d/3-d ``nearest`` and same-size ``bicubic`` with a
non-integer ``scale_factor``), agnograd keeps the true gradient; the test says so.
"""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest

import agnograd as ag
from agnograd import nn, optim
from agnograd.nn import functional as F

from .conftest import AVAILABLE

torch = pytest.importorskip("torch")
TF = torch.nn.functional

pytestmark = [pytest.mark.filterwarnings("ignore:reduction. 'mean' divides the total loss:UserWarning"),
              pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")]


def _np(t):
    if isinstance(t, ag.Tensor):
        return np.asarray(ag.to_backend(t.detach(), "numpy").data)
    return t.detach().cpu().numpy()


def _close(a, b, rtol=1e-11, atol=1e-12, what=""):
    a, b = _np(a), _np(b)
    assert a.shape == b.shape, (what, a.shape, b.shape)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=what, equal_nan=True)


def _both(fa, ft, arrays, rtol=1e-11, atol=1e-12, grad=True, seed=1, dtype=np.float64):
    """``fa`` on agnograd tensors and ``ft`` on torch tensors of ``arrays``: the values and
    the gradients (of the floating inputs) of ``Σ y · r`` agree."""
    floats = [np.issubdtype(np.asarray(a).dtype, np.floating) for a in arrays]
    xa = [ag.tensor(np.asarray(a, dtype=dtype) if f else a, requires_grad=f and grad)
          for a, f in zip(arrays, floats)]
    xt = [torch.tensor(np.asarray(a, dtype=dtype) if f else a, requires_grad=f and grad)
          for a, f in zip(arrays, floats)]
    ya, yt = fa(*xa), ft(*xt)
    _close(ya, yt, rtol, atol, "value")
    if not grad:
        return ya
    r = np.random.default_rng(seed).standard_normal(tuple(yt.shape)).astype(dtype)
    ag.sum(ya * ag.tensor(r)).backward()
    (yt * torch.tensor(r)).sum().backward()
    for i, (a, t, f) in enumerate(zip(xa, xt, floats)):
        if f:
            _close(a.grad, t.grad, rtol * 10, atol * 10, f"gradient of input {i}")
    return ya


RNG = np.random.default_rng(0)


def _rand(*shape, scale=1.0, shift=0.0):
    return RNG.standard_normal(shape) * scale + shift


# -- batch, instance and group normalisation ---------------------------------------------------

def _copy_params(ours, theirs, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in theirs.parameters():
            p.uniform_(0.5, 1.5, generator=gen)
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})


def _states_equal(ours, theirs, what):
    sd, sdt = ours.state_dict(), theirs.state_dict()
    assert list(sd) == list(sdt), what
    for k, v in sdt.items():
        a = _np(sd[k])
        assert a.dtype == v.numpy().dtype and a.shape == tuple(v.shape), (what, k)
        np.testing.assert_allclose(a, v.numpy(), rtol=1e-12, atol=1e-13, err_msg=f"{what}: {k}")


NORMS = [  # (ours, torch's, input shape)
    (nn.BatchNorm1d, torch.nn.BatchNorm1d, (5, 3)),
    (nn.BatchNorm1d, torch.nn.BatchNorm1d, (4, 3, 6)),
    (nn.BatchNorm1d, torch.nn.BatchNorm1d, (1, 3, 6)),  # one sample, many positions: fine
    (nn.BatchNorm2d, torch.nn.BatchNorm2d, (2, 3, 4, 5)),
    (nn.InstanceNorm1d, torch.nn.InstanceNorm1d, (4, 3, 6)),
    (nn.InstanceNorm1d, torch.nn.InstanceNorm1d, (3, 6)),  # unbatched (C, L)
    (nn.InstanceNorm2d, torch.nn.InstanceNorm2d, (2, 3, 4, 5)),
    (nn.InstanceNorm2d, torch.nn.InstanceNorm2d, (3, 4, 5)),  # unbatched (C, H, W)
]
NORM_OPTS = [{}, {"momentum": None}, {"affine": False}, {"track_running_stats": False},
             {"affine": True, "track_running_stats": True},
             {"affine": True, "track_running_stats": True, "momentum": None, "eps": 0.3},
             {"momentum": 0.7, "eps": 1e-3}]


@pytest.mark.parametrize("opts", NORM_OPTS, ids=[str(sorted(o.items())) for o in NORM_OPTS])
@pytest.mark.parametrize(("cls", "tcls", "shape"), NORMS,
                         ids=[f"{c.__name__}-{s}" for c, _, s in NORMS])
def test_norm_layers_over_train_eval_steps_and_swapped_state_dicts(cls, tcls, shape, opts):
    """Six steps (train, train, eval, train, eval, train) with torch's state dict loaded into
    ours after the second and ours into torch's after the fourth: outputs, input and parameter
    gradients, running statistics, ``num_batches_tracked`` (int64, 0-d) and keys stay equal."""
    c = shape[-2] if cls in (nn.InstanceNorm1d,) and len(shape) == 2 else \
        shape[0] if cls is nn.InstanceNorm2d and len(shape) == 3 else shape[1]
    ours, theirs = cls(c, dtype=ag.float64, **opts), tcls(c, dtype=torch.float64, **opts)
    assert ours.affine == theirs.affine and ours.track_running_stats == theirs.track_running_stats
    _copy_params(ours, theirs, 0)
    _states_equal(ours, theirs, "fresh")
    for step, mode in enumerate(["train", "train", "eval", "train", "eval", "train"]):
        for m in (ours, theirs):
            m.train(mode == "train")
        x = _rand(*shape, scale=3.0, shift=1.0)
        _both(ours, theirs, [x])
        if theirs.weight is not None:
            _close(ours.weight.grad, theirs.weight.grad, 1e-10, 1e-11, "weight grad")
            _close(ours.bias.grad, theirs.bias.grad, 1e-10, 1e-11, "bias grad")
            ours.zero_grad()
            theirs.zero_grad()
        _states_equal(ours, theirs, f"after step {step} ({mode})")
        if step == 1:
            ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
        if step == 3:
            theirs.load_state_dict({k: torch.tensor(_np(v)) for k, v in ours.state_dict().items()})


@pytest.mark.parametrize("momentum", [0.1, None])
def test_batch_norm_float32_running_statistics_follow_torch(momentum):
    ours = nn.BatchNorm2d(3, momentum=momentum, dtype=ag.float32)
    theirs = torch.nn.BatchNorm2d(3, momentum=momentum)
    for _ in range(5):
        x = _rand(4, 3, 2, 3, scale=2.0, shift=0.5).astype(np.float32)
        _close(ours(ag.tensor(x)), theirs(torch.tensor(x)), 1e-5, 1e-5)
    for k, v in theirs.state_dict().items():
        np.testing.assert_allclose(_np(ours.state_dict()[k]), v.numpy(), rtol=1e-5, atol=1e-6)
    assert int(_np(ours.num_batches_tracked)) == 5


@pytest.mark.parametrize(("cls", "tcls", "shape", "match"), [
    (nn.BatchNorm1d, torch.nn.BatchNorm1d, (1, 3), "more than 1 value per channel"),
    (nn.BatchNorm2d, torch.nn.BatchNorm2d, (1, 3, 1, 1), "more than 1 value per channel"),
    (nn.InstanceNorm1d, torch.nn.InstanceNorm1d, (2, 3, 1), "more than 1 spatial element"),
])
def test_a_single_value_per_channel_raises_in_training_only_as_torch(cls, tcls, shape, match):
    ours, theirs = cls(3, dtype=ag.float64), tcls(3, dtype=torch.float64)
    x = np.ones(shape)
    with pytest.raises(ValueError, match=match):
        ours(ag.tensor(x))
    with pytest.raises(ValueError, match=match):
        theirs(torch.tensor(x))
    if cls is nn.InstanceNorm1d:
        return  # torch refuses a single spatial element in eval mode too (no running stats)
    ours.eval()
    theirs.eval()
    _close(ours(ag.tensor(x)), theirs(torch.tensor(x)))


@pytest.mark.parametrize(("groups", "shape"), [(3, (2, 6, 4)), (2, (3, 6)), (6, (2, 6, 2, 3)),
                                               (1, (2, 6, 2, 3)), (2, (2, 4, 3, 2, 2))])
@pytest.mark.parametrize("opts", [{}, {"affine": False}, {"eps": 0.5}])
def test_group_norm_values_and_parameter_gradients(groups, shape, opts):
    ours = nn.GroupNorm(groups, shape[1], dtype=ag.float64, **opts)
    theirs = torch.nn.GroupNorm(groups, shape[1], dtype=torch.float64, **opts)
    _copy_params(ours, theirs, 1)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    _both(ours, theirs, [_rand(*shape, scale=2.0)])
    if theirs.weight is not None:
        _close(ours.weight.grad, theirs.weight.grad, 1e-10, 1e-11)
        _close(ours.bias.grad, theirs.bias.grad, 1e-10, 1e-11)


def test_float32_layers_follow_torch():
    """The layers in float32 (torch's default dtype) against torch's float32, to float32's
    precision: a transposed convolution, GroupNorm, InstanceNorm with statistics, BatchNorm
    with momentum=None, over three training steps."""
    torch.manual_seed(1)
    theirs = torch.nn.Sequential(
        torch.nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1), torch.nn.GroupNorm(2, 4),
        torch.nn.InstanceNorm2d(4, affine=True, track_running_stats=True),
        torch.nn.BatchNorm2d(4, momentum=None))
    ours = nn.Sequential(nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1),
                         nn.GroupNorm(2, 4), nn.InstanceNorm2d(4, affine=True, track_running_stats=True),
                         nn.BatchNorm2d(4, momentum=None))
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    for _ in range(3):
        x = _rand(2, 3, 4, 5).astype(np.float32)
        _both(ours, theirs, [x], 1e-4, 1e-5, dtype=np.float32)
    for k, v in theirs.state_dict().items():
        np.testing.assert_allclose(_np(ours.state_dict()[k]), v.detach().numpy(),
                                   rtol=1e-5, atol=1e-6)


def test_instance_norm_defaults_are_torchs():
    for cls, tcls in ((nn.InstanceNorm1d, torch.nn.InstanceNorm1d),
                      (nn.InstanceNorm2d, torch.nn.InstanceNorm2d)):
        ours, theirs = cls(4), tcls(4)
        assert (ours.affine, ours.track_running_stats, ours.eps, ours.momentum) == \
            (theirs.affine, theirs.track_running_stats, theirs.eps, theirs.momentum)
        assert list(ours.state_dict()) == list(theirs.state_dict()) == []


@pytest.mark.parametrize(("cls", "tcls", "args", "shape"), [
    (nn.BatchNorm1d, torch.nn.BatchNorm1d, (3,), (4, 3, 5)),
    (nn.BatchNorm2d, torch.nn.BatchNorm2d, (3,), (2, 3, 2, 2)),
    (nn.GroupNorm, torch.nn.GroupNorm, (2, 4), (2, 4, 5)),
    (nn.InstanceNorm1d, torch.nn.InstanceNorm1d, (3,), (2, 3, 5))], ids=lambda v: getattr(v, "__name__", ""))
@pytest.mark.parametrize("affine", [True, False])
def test_norm_layers_take_torchs_bias_argument(cls, tcls, args, shape, affine):
    """``bias=False`` (PyTorch's newest argument: a weight without a bias) was a TypeError."""
    ours = cls(*args, affine=affine, bias=False, dtype=ag.float64)
    theirs = tcls(*args, affine=affine, bias=False, dtype=torch.float64)
    assert ours.bias is None and theirs.bias is None
    _copy_params(ours, theirs, 2)
    _states_equal(ours, theirs, "bias=False")
    _both(ours, theirs, [_rand(*shape, scale=2.0)])
    if theirs.weight is not None:
        _close(ours.weight.grad, theirs.weight.grad, 1e-10, 1e-11)


# -- transposed convolutions -------------------------------------------------------------------

CONVT = [  # (nd, in, out, kernel, options)
    (1, 4, 6, 3, dict(stride=2, padding=1, output_padding=1, groups=2)),
    (1, 3, 2, 4, dict(stride=3, padding=2, output_padding=2, dilation=2, bias=False)),
    (2, 4, 4, (3, 2), dict(stride=(2, 3), padding=(1, 0), output_padding=(1, 2), groups=4)),
    (2, 2, 6, 3, dict(stride=1, padding=(2, 1), dilation=(2, 3), output_padding=(1, 2))),
    (2, 6, 4, (2, 3), dict(stride=(3, 1), groups=2, bias=False)),
]


@pytest.mark.parametrize(("nd", "cin", "cout", "k", "opts"), CONVT)
def test_conv_transpose_modules_layout_values_and_gradients(nd, cin, cout, k, opts):
    cls = nn.ConvTranspose1d if nd == 1 else nn.ConvTranspose2d
    tcls = torch.nn.ConvTranspose1d if nd == 1 else torch.nn.ConvTranspose2d
    ours = cls(cin, cout, k, dtype=ag.float64, **opts)
    theirs = tcls(cin, cout, k, dtype=torch.float64, **opts)
    sd, sdt = ours.state_dict(), theirs.state_dict()
    assert list(sd) == list(sdt)
    assert all(tuple(sd[n].shape) == tuple(v.shape) for n, v in sdt.items())  # (in, out/groups, *k)
    ours.load_state_dict({n: v.numpy() for n, v in sdt.items()})
    for shape in ((2, cin) + (5, 4)[:nd], (cin,) + (3, 4)[:nd]):  # batched and unbatched
        _both(ours, theirs, [_rand(*shape)])
        for n, p in theirs.named_parameters():
            _close(getattr(ours, n).grad, p.grad, 1e-10, 1e-11, n)
        ours.zero_grad()
        theirs.zero_grad()


@pytest.mark.parametrize("nd", [1, 2])
def test_conv_transpose_forward_takes_torchs_output_size(nd):
    """``forward(x, output_size=...)`` picks the output padding (spatial sizes or the whole
    shape); a size outside the range the stride allows raises as torch does."""
    cls = nn.ConvTranspose1d if nd == 1 else nn.ConvTranspose2d
    tcls = torch.nn.ConvTranspose1d if nd == 1 else torch.nn.ConvTranspose2d
    ours = cls(4, 6, 3, stride=3, padding=1, groups=2, dtype=ag.float64)
    theirs = tcls(4, 6, 3, stride=3, padding=1, groups=2, dtype=torch.float64)
    ours.load_state_dict({n: v.numpy() for n, v in theirs.state_dict().items()})
    x = _rand(2, 4, *(5, 4)[:nd])
    lo = [(s - 1) * 3 - 2 + 2 + 1 for s in x.shape[2:]]
    for sizes in (lo, [v + 2 for v in lo], [v + 1 for v in lo][:1] + lo[1:]):
        for osz in (sizes, [2, 6, *sizes]):
            _both(lambda t, o=osz: ours(t, output_size=o), lambda t, o=osz: theirs(t, output_size=o), [x])
    for bad in ([v + 3 for v in lo], [v - 1 for v in lo], lo + [1, 1, 1]):
        with pytest.raises(ValueError, match="output size|output_size"):
            theirs(torch.tensor(x), output_size=bad)
        with pytest.raises(ValueError, match="output size|output_size"):
            ours(ag.tensor(x), output_size=bad)


def test_conv_transpose_padding_mode_as_torch():
    nn.ConvTranspose2d(2, 3, 3, padding_mode="zeros")
    with pytest.raises(ValueError, match="zeros"):
        torch.nn.ConvTranspose2d(2, 3, 3, padding_mode="reflect")
    with pytest.raises(ValueError, match="padding_mode='zeros'"):
        nn.ConvTranspose2d(2, 3, 3, padding_mode="reflect")


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize(("nd", "opts"), [
    (1, dict(padding=2, stride=2)), (1, dict(padding="same", dilation=2)), (2, dict(padding=(2, 1))),
    (2, dict(padding="same")), (2, dict(padding="valid"))], ids=str)
def test_conv_padding_mode_as_torch(nd, opts, mode):
    """``nn.Conv1d/2d(..., padding_mode=...)`` (a TypeError before): the input is padded with
    the mode, then convolved without padding, as PyTorch does ('same' split as PyTorch's)."""
    cls, tcls = (nn.Conv1d, torch.nn.Conv1d) if nd == 1 else (nn.Conv2d, torch.nn.Conv2d)
    k = 4 if nd == 1 else (3, 4)
    ours = cls(4, 6, k, groups=2, padding_mode=mode, dtype=ag.float64, **opts)
    theirs = tcls(4, 6, k, groups=2, padding_mode=mode, dtype=torch.float64, **opts)
    ours.load_state_dict({n: v.detach().numpy() for n, v in theirs.state_dict().items()})
    _both(ours, theirs, [_rand(2, 4, *(6, 7)[:nd])])
    _close(ours.weight.grad, theirs.weight.grad, 1e-10, 1e-11)
    with pytest.raises(ValueError, match="padding_mode"):
        cls(2, 2, 3, padding_mode="wrap")


# -- F.pad, F.linear ---------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("pads", [(-1, 3), (3, -1), (-1, -1), (-2, -3), (1, -1, -2, 2),
                                  (2, 0, -1, 1, 1, -2)])
def test_pad_negative_amounts_crop_as_torch(mode, pads):
    shape = (2, 3, 5, 4, 5)[: 2 + len(pads) // 2]
    x = _rand(*shape)
    kw = {"value": 1.5} if mode == "constant" else {}
    try:
        TF.pad(torch.tensor(x), pads, mode=mode, **kw)
    except RuntimeError:
        with pytest.raises(ValueError, match="pad"):
            F.pad(ag.tensor(x), pads, mode=mode, **kw)
        return
    _both(lambda t: F.pad(t, pads, mode=mode, **kw), lambda t: TF.pad(t, pads, mode=mode, **kw), [x])


@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("pads", [(-3, -3), (-6, 1), (-5, 0)])
def test_pad_cropping_past_the_axis_raises_instead_of_an_empty_result(mode, pads):
    """Torch refuses these; agnograd returned an empty tensor (or, for (-6, 1), one made-up
    padding element)."""
    x = _rand(1, 2, 5)
    try:
        got = TF.pad(torch.tensor(x), pads, mode=mode)
    except RuntimeError:
        with pytest.raises(ValueError, match="crop"):
            F.pad(ag.tensor(x), pads, mode=mode)
    else:  # torch's circular mode returns an empty axis for (-6, 1) and (-5, 0)
        assert got.numel() == 0
        try:
            assert F.pad(ag.tensor(x), pads, mode=mode).size == 0
        except ValueError as exc:
            assert "crop" in str(exc)


@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
def test_pad_three_trailing_axes_float32(mode):
    x = _rand(2, 2, 3, 4, 5).astype(np.float32)
    p = (1, 2, 2, 0, 1, 1)
    _both(lambda t: F.pad(t, p, mode=mode), lambda t: TF.pad(t, p, mode=mode), [x], 1e-6, 1e-6,
          dtype=np.float32)


@pytest.mark.parametrize("bias_shape", [(), (1,), (3,)])
@pytest.mark.parametrize("x_shape", [(4,), (2, 5, 4)])
def test_linear_bias_that_broadcasts_gets_a_gradient_of_its_own_shape(bias_shape, x_shape):
    """A 0-d or (1,) bias (torch broadcasts it) got the fused rule's (out,) gradient."""
    _both(F.linear, TF.linear, [_rand(*x_shape), _rand(3, 4), _rand(*bias_shape)])


def test_linear_without_bias_and_one_dimensional_input():
    _both(lambda x, w: F.linear(x, w), lambda x, w: TF.linear(x, w), [_rand(4), _rand(3, 4)])
    _both(lambda x, w: F.linear(x, w, None), lambda x, w: TF.linear(x, w, None), [_rand(2, 4), _rand(3, 4)])


# -- F.interpolate -----------------------------------------------------------------------------

def _interp(x, kw, dtype=np.float64, grad=True, tol=(1e-11, 1e-12)):
    return _both(lambda t: F.interpolate(t, **kw), lambda t: TF.interpolate(t, **kw), [x], *tol,
                 grad=grad, dtype=dtype)


@pytest.mark.parametrize("kw", [
    dict(scale_factor=1.1, mode="bilinear"), dict(scale_factor=(2.0, 1.1), mode="bilinear"),
    dict(scale_factor=1.05, mode="bilinear", align_corners=True),
    dict(scale_factor=1.1, mode="linear"), dict(scale_factor=(1.1, 1.5, 1.1), mode="trilinear"),
    dict(scale_factor=1.1), dict(scale_factor=(1.1, 2.0)), dict(scale_factor=(2.1, 1.05)),
    dict(scale_factor=2.1),
], ids=str)
def test_interpolate_copies_an_axis_of_unchanged_size_as_torch(kw):
    """Torch copies an axis whose output size equals its input size (linear modes, and 2-d
    nearest) and takes ``i // 2`` at twice the size (2-d nearest) whatever ``scale_factor``
    says; agnograd resampled with ``1 / scale_factor``."""
    nd = {"linear": 1, "trilinear": 3}.get(kw.get("mode"), 2)
    if "mode" not in kw and isinstance(kw["scale_factor"], tuple):
        nd = len(kw["scale_factor"])
    _interp(_rand(2, 2, *(4, 5, 3)[:nd]), kw)


@pytest.mark.parametrize("nd", [1, 3])
def test_nearest_1d_3d_same_size_forward_is_torchs_and_the_gradient_is_the_true_one(nd):
    """Torch's 1-d and 3-d nearest forward resample with ``1 / scale_factor`` but its backward
    copies (an inconsistency of torch's); agnograd's gradient is the forward's."""
    x = _rand(1, 2, *(3, 4, 5)[-nd:])
    kw = dict(scale_factor=(1.0,) * (nd - 1) + (1.1,))
    y = F.interpolate(ag.tensor(x, requires_grad=True), **kw)
    _close(y, TF.interpolate(torch.tensor(x), **kw))
    # the true gradient: each output element's cotangent lands on the element it copied
    xa = ag.tensor(x, requires_grad=True)
    ag.sum(F.interpolate(xa, **kw)).backward()
    counts = np.zeros(x.shape[-1])
    for i in range(y.shape[-1]):
        counts[min(int(np.floor(np.float32(i) * np.float32(1 / 1.1))), x.shape[-1] - 1)] += 1
    np.testing.assert_array_equal(_np(xa.grad)[(0, 0) + (0,) * (nd - 1)], counts)


@pytest.mark.parametrize("mode,nd", [("nearest-exact", 1), ("nearest-exact", 2), ("nearest-exact", 3),
                                     ("trilinear", 3), ("bicubic", 2)])
@pytest.mark.parametrize("which", ["size", "scale", "scale-recompute", "corners"])
def test_interpolate_nearest_exact_trilinear_bicubic_match_torch(mode, nd, which):
    if which == "corners" and mode == "nearest-exact":
        return
    ins = (5, 3, 4)[:nd]
    x = _rand(2, 2, *ins)
    kw: dict = {"mode": mode}
    if which == "size":
        kw["size"] = (8, 2, 7)[:nd]
    else:
        kw["scale_factor"] = (1.7, 0.6, 2.3)[:nd]
    if which == "scale-recompute":
        kw["recompute_scale_factor"] = True
    if which == "corners":
        kw["align_corners"] = True
    _interp(x, kw)
    _interp(x.astype(np.float32), kw, np.float32, tol=(1e-5, 1e-5))


@pytest.mark.parametrize(("h", "w", "oh", "ow"), [(1, 4, 3, 4), (2, 3, 1, 7), (5, 4, 8, 2), (4, 4, 4, 4)])
@pytest.mark.parametrize("align_corners", [False, True])
def test_bicubic_small_and_edge_sizes(h, w, oh, ow, align_corners):
    _interp(_rand(1, 2, h, w), dict(size=(oh, ow), mode="bicubic", align_corners=align_corners))


def test_bicubic_same_size_forward_is_torchs_and_the_gradient_is_the_true_one():
    """Torch's bicubic forward resamples an unchanged size with ``1 / scale_factor`` but its
    backward copies; agnograd's gradient is the forward's (checked by finite differences)."""
    x = _rand(1, 1, 4, 5)
    kw = dict(scale_factor=1.1, mode="bicubic")
    _close(F.interpolate(ag.tensor(x), **kw), TF.interpolate(torch.tensor(x), **kw))
    r = _rand(1, 1, 4, 5)
    xa = ag.tensor(x, requires_grad=True)
    ag.sum(F.interpolate(xa, **kw) * ag.tensor(r)).backward()
    f = lambda v: float(np.sum(_np(F.interpolate(ag.tensor(v), **kw)) * r))  # noqa: E731
    e = np.zeros_like(x)
    e[0, 0, 1, 2] = 1e-6
    fd = (f(x + e) - f(x - e)) / 2e-6
    np.testing.assert_allclose(_np(xa.grad)[0, 0, 1, 2], fd, rtol=1e-7)


@pytest.mark.parametrize(("shape", "kw"), [
    ((2, 3, 7), dict(size=3)), ((2, 3, 7), dict(size=10)), ((2, 3, 7), dict(scale_factor=0.34)),
    ((1, 2, 5, 7), dict(size=(2, 3))), ((1, 2, 5, 7), dict(size=(9, 4))),
    ((1, 2, 5, 7), dict(scale_factor=0.5)),
    ((1, 2, 3, 4, 5), dict(size=(2, 2, 2))), ((1, 2, 3, 4, 5), dict(scale_factor=(1.7, 0.5, 2.0))),
], ids=str)
def test_interpolate_area_is_torchs_adaptive_average(shape, kw):
    _interp(_rand(*shape), dict(kw, mode="area"))
    _interp(_rand(*shape).astype(np.float32), dict(kw, mode="area"), np.float32, tol=(1e-6, 1e-6))


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize(("shape", "kw"), [
    ((2, 2, 8, 9), dict(size=(3, 4))), ((2, 2, 4, 4), dict(size=(9, 6))),
    ((1, 2, 5, 7), dict(size=(5, 2))),
    ((1, 2, 8, 9), dict(scale_factor=0.4)),
    ((1, 2, 8, 9), dict(scale_factor=0.7, recompute_scale_factor=True)),
    ((1, 1, 1, 6), dict(size=(3, 2)))], ids=str)
def test_interpolate_antialias_is_torchs(shape, kw, mode, align_corners):
    """``antialias=True`` (torchvision's resize default; it raised): PyTorch's filter whose
    support widens with the downsampling factor, normalised weights."""
    kw = dict(kw, mode=mode, antialias=True, align_corners=align_corners)
    _interp(_rand(*shape), kw)
    _interp(_rand(*shape).astype(np.float32), kw, np.float32, tol=(1e-5, 1e-6))


def test_antialias_same_size_axis_is_copied_as_torchs_forward():
    """Torch's antialiased forward copies an axis of unchanged size whatever the factor (its
    backward does not: agnograd's gradient is the forward's)."""
    x = np.repeat(np.arange(8.0)[:, None], 9, axis=1)[None, None] ** 2
    for mode in ("bilinear", "bicubic"):
        kw = dict(scale_factor=(1.1, 0.6), mode=mode, antialias=True)
        y = F.interpolate(ag.tensor(x), **kw)
        _close(y, TF.interpolate(torch.tensor(x), **kw))
        np.testing.assert_allclose(_np(y)[0, 0, :, 0], np.arange(8.0) ** 2, rtol=1e-12)


@pytest.mark.parametrize("mode", ["lanczos", "nearest-exact-ish"])
def test_interpolate_unsupported_modes_say_so(mode):
    with pytest.raises(NotImplementedError, match=f"mode '{mode}' is not implemented"):
        F.interpolate(ag.tensor(_rand(1, 1, 4, 4)), size=2, mode=mode)
    with pytest.raises(ValueError, match="antialias"):
        F.interpolate(ag.tensor(_rand(1, 1, 4, 4)), size=2, mode="nearest", antialias=True)
    with pytest.raises(ValueError, match="needs a 5-D input"):
        F.interpolate(ag.tensor(_rand(1, 1, 4, 4)), size=2, mode="trilinear")
    with pytest.raises(ValueError, match="align_corners"):
        F.interpolate(ag.tensor(_rand(1, 1, 4, 4)), size=2, mode="nearest-exact", align_corners=True)
    with pytest.raises(ValueError, match="recompute_scale_factor"):
        TF.interpolate(torch.ones(1, 1, 4), size=3, recompute_scale_factor=True)
    with pytest.raises(ValueError, match="recompute_scale_factor"):
        F.interpolate(ag.tensor(_rand(1, 1, 4)), size=3, recompute_scale_factor=True)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_interpolate_of_integers_in_a_linear_mode_raises_instead_of_truncating(mode):
    """The interpolation weights were made in the input's dtype: an int64 image came back
    int64 with every weight truncated to 0 (torch refuses integer input here)."""
    xi = np.arange(24).reshape(2, 1, 3, 4)
    with pytest.raises(NotImplementedError):
        TF.interpolate(torch.tensor(xi), scale_factor=1.5, mode=mode)
    with pytest.raises(TypeError, match="floating-point input"):
        F.interpolate(ag.tensor(xi), scale_factor=1.5, mode=mode)
    with pytest.raises(TypeError, match="floating-point input"):
        F.interpolate(ag.tensor(xi[:, :, 0]), size=7, mode="linear")
    with pytest.raises(TypeError, match="floating-point input"):
        F.interpolate(ag.tensor(xi), size=2, mode="area")
    near = F.interpolate(ag.tensor(xi), scale_factor=2, mode="nearest")  # copies: fine on ints
    assert near.dtype == ag.int64
    np.testing.assert_array_equal(_np(near), xi.repeat(2, axis=2).repeat(2, axis=3))


def test_numpy_integer_sizes_pads_and_float32_factors_as_torch():
    """Sizes computed with NumPy (``np.int64``) and NumPy float factors, which torch takes,
    raised (or, for a ``np.float32`` factor, failed with "not iterable")."""
    x = _rand(1, 2, 4, 5)
    for kw in (dict(size=(np.int64(3), 7)), dict(size=np.int64(6)), dict(scale_factor=np.float32(1.5)),
               dict(scale_factor=(np.float64(0.5), np.float32(2.0)))):
        _interp(x, kw)
    p = (np.int64(1), 2, np.int32(0), 1)
    _both(lambda t: F.pad(t, p, mode="reflect"), lambda t: TF.pad(t, p, mode="reflect"), [x])
    with pytest.raises(ValueError, match="pad must be"):
        F.pad(ag.tensor(x), (True, 1))
    with pytest.raises(ValueError, match="size must be"):
        F.interpolate(ag.tensor(x), size=(2.5, 3))


# -- normalize, cosine_similarity, kl_div ------------------------------------------------------

def _rows_with_zeros(shape, tiny=1e-10):
    x = _rand(*shape)
    x[0] = 0.0
    x[1] = tiny * np.sign(_rand(*shape[1:]))
    return x


@pytest.mark.parametrize(("p", "dim", "eps"), [(2.0, 1, 1e-12), (1.0, -1, 1e-12), (3.0, 1, 1e-9),
                                               (float("inf"), 1, 1e-12), (2.0, 0, 0.5)])
def test_normalize_with_zero_and_tiny_vectors(p, dim, eps):
    x = _rows_with_zeros((4, 3))
    if dim == 0:
        x = x.T.copy()
    _both(lambda t: F.normalize(t, p=p, dim=dim, eps=eps), lambda t: TF.normalize(t, p=p, dim=dim, eps=eps),
          [x], 1e-10, 1e-10)


@pytest.mark.parametrize(("s1", "s2", "dim", "eps"), [
    ((4, 3), (4, 3), 1, 1e-8), ((4, 3), (4, 3), 1, 1e-3), ((4, 1, 3), (5, 3), -1, 1e-8),
    ((4, 3), (1, 3), 1, 1e-8), ((3,), (3,), 0, 1e-8)])
def test_cosine_similarity_small_norms_get_torchs_gradient(s1, s2, dim, eps):
    """Torch clamps the norms in place under no_grad, so a vector below ``eps`` (not zero)
    still gets a gradient through its norm; agnograd's ``maximum`` cut it."""
    a = _rows_with_zeros(s1) if s1[0] > 2 else _rand(*s1) * 1e-9
    b = _rand(*s2)
    _both(lambda x, y: F.cosine_similarity(x, y, dim=dim, eps=eps),
          lambda x, y: TF.cosine_similarity(x, y, dim=dim, eps=eps), [a, b], 1e-10, 1e-10)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_cosine_similarity_of_overflowing_norms_is_torchs():
    a, b = _rand(2, 3) * 1e200, _rand(2, 3) * 1e200
    _both(F.cosine_similarity, TF.cosine_similarity, [a, b], grad=False)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean", "batchmean"])
@pytest.mark.parametrize("log_target", [False, True])
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 4), (5,)])
def test_kl_div_values_and_both_gradients(reduction, log_target, shape):
    x = _rand(*shape)
    t = _rand(*shape) if log_target else np.abs(_rand(*shape)) + 0.05  # target > 0: finite grads
    _both(lambda a, b: F.kl_div(a, b, reduction=reduction, log_target=log_target),
          lambda a, b: TF.kl_div(a, b, reduction=reduction, log_target=log_target), [x, t])
    _both(lambda a, b: nn.KLDivLoss(reduction=reduction, log_target=log_target)(a, b),
          lambda a, b: torch.nn.KLDivLoss(reduction=reduction, log_target=log_target)(a, b), [x, t])


# -- losses ------------------------------------------------------------------------------------

W4 = np.array([0.3, 1.0, 2.5, 0.7])


def _module_pair(cls, tcls, kw):
    ours = cls(**{k: ag.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()})
    theirs = tcls(**{k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()})
    assert list(ours.state_dict()) == list(theirs.state_dict())
    return ours, theirs


XENT_OPTS = [{}, {"weight": W4}, {"ignore_index": 3},
             {"weight": W4, "ignore_index": 1, "label_smoothing": 0.2},
             {"label_smoothing": 0.3}, {"weight": W4, "label_smoothing": 0.1}]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("opts", XENT_OPTS, ids=[str(sorted(o)) for o in XENT_OPTS])
def test_cross_entropy_k_dim_labels_probabilities_and_unbatched(opts, reduction):
    kw = dict(opts, reduction=reduction)
    ours, theirs = _module_pair(nn.CrossEntropyLoss, torch.nn.CrossEntropyLoss, kw)
    x = _rand(2, 4, 3, 2, scale=2.0)
    labels = RNG.integers(0, 4, (2, 3, 2))
    labels[0, 0, 0] = opts.get("ignore_index", -100)
    _both(ours, theirs, [x, labels])
    p = np.abs(_rand(2, 4, 3, 2))
    p /= p.sum(1, keepdims=True)
    if "ignore_index" not in opts:
        _both(ours, theirs, [x, p])  # probabilities (no ignore_index in torch either)
        _both(ours, theirs, [x[:, :, 0, 0].copy(), p[:, :, 0, 0].copy()])
        _both(ours, theirs, [x[0, :, 0, 0].copy(), p[0, :, 0, 0].copy()])  # unbatched (C,)
    _both(ours, theirs, [x[0, :, 0, 0].copy(), np.array(2)])  # unbatched label
    if "label_smoothing" not in opts:
        ours_n, theirs_n = _module_pair(nn.NLLLoss, torch.nn.NLLLoss, kw)
        _both(ours_n, theirs_n, [x, labels])
        _both(ours_n, theirs_n, [x[0, :, 0, 0].copy(), np.array(1)])


@pytest.mark.parametrize("opts", [{}, {"weight": W4}, {"label_smoothing": 0.1},
                                  {"weight": W4, "label_smoothing": 0.1}], ids=str)
def test_all_ignored_mean_is_nan_and_zero_weights_as_torch(opts):
    ours, theirs = _module_pair(nn.CrossEntropyLoss, torch.nn.CrossEntropyLoss, opts)
    _both(ours, theirs, [_rand(3, 4), np.full(3, -100)])
    _both(ours, theirs, [_rand(4), np.array(-100)])
    _both(ours, theirs, [_rand(2, 4, 3), np.full((2, 3), -100)])
    zero = dict(opts, weight=np.array([0.0, 0.0, 1.0, 1.0]))
    ours, theirs = _module_pair(nn.CrossEntropyLoss, torch.nn.CrossEntropyLoss, zero)
    _both(ours, theirs, [_rand(3, 4), np.array([0, 1, 0])])  # every label weighs 0: NaN
    if "label_smoothing" not in opts:
        ours, theirs = _module_pair(nn.NLLLoss, torch.nn.NLLLoss, zero)
        _both(ours, theirs, [_rand(3, 4), np.array([0, 1, -100])])
        ours, theirs = _module_pair(nn.NLLLoss, torch.nn.NLLLoss, opts)
        _both(ours, theirs, [_rand(3, 4), np.full(3, -100)])


def test_weighted_mean_divides_by_the_weights_of_the_kept_labels():
    x, labels = _rand(6, 4), np.array([0, 1, 2, 3, 1, 2])
    ours, theirs = _module_pair(nn.CrossEntropyLoss, torch.nn.CrossEntropyLoss,
                                {"weight": W4, "ignore_index": 2})
    y = _both(ours, theirs, [x, labels])
    per = -_np(F.log_softmax(ag.tensor(x)))[np.arange(6), labels] * W4[labels]
    keep = labels != 2
    np.testing.assert_allclose(_np(y), per[keep].sum() / W4[labels[keep]].sum(), rtol=1e-13)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("opts", [{}, {"weight": np.array([1.0, 2.0, 0.5, 0.0])},
                                  {"pos_weight": np.array([3.0, 0.2, 1.0, 5.0])},
                                  {"weight": np.array([[0.5], [1.0], [2.0]]),
                                   "pos_weight": np.array([3.0, 0.2, 1.0, 5.0])},
                                  {"pos_weight": np.array(2.0)}, {"pos_weight": np.array([2.0])}], ids=str)
def test_bce_with_logits_extreme_logits_stay_finite(opts, reduction):
    z = _rand(3, 4, scale=3.0)
    z[0] = [100.0, -100.0, 1000.0, -1000.0]
    t = RNG.uniform(0, 1, (3, 4))
    t[0] = [1.0, 0.0, 0.0, 1.0]
    ours, theirs = _module_pair(nn.BCEWithLogitsLoss, torch.nn.BCEWithLogitsLoss,
                                dict(opts, reduction=reduction))
    y = _both(ours, theirs, [z, t])
    assert np.all(np.isfinite(_np(y)))
    # pos_weight (C, 1, 1) on images: broadcast against (N, C, H, W), as in torch
    ours, theirs = _module_pair(nn.BCEWithLogitsLoss, torch.nn.BCEWithLogitsLoss,
                                {"pos_weight": np.array([[[1.0]], [[3.0]]]), "reduction": reduction})
    _both(ours, theirs, [_rand(2, 2, 3, 3), RNG.uniform(0, 1, (2, 2, 3, 3))])


LEGACY = [(False, None), (None, False), (True, True), (False, True), (True, False)]


@pytest.mark.parametrize(("size_average", "reduce"), LEGACY)
def test_loss_functions_take_torchs_positional_arguments(size_average, reduce):
    """The functionals have PyTorch's signatures, deprecated ``size_average``/``reduce``
    included, so positional calls mean what they mean in PyTorch (``F.nll_loss(x, t, w, None,
    1)``: ``ignore_index=1``); a string or an int in those places raises instead."""
    x, t, p = _rand(4, 3), np.array([0, 2, 1, 1]), RNG.uniform(0, 1, (4, 3))
    sa, rd = size_average, reduce
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _both(lambda a, b: F.cross_entropy(a, b, None, sa, 1, rd),
              lambda a, b: TF.cross_entropy(a, b, None, sa, 1, rd), [x, t])
        _both(lambda a, b: F.nll_loss(a, b, None, sa, 1, rd),
              lambda a, b: TF.nll_loss(a, b, None, sa, 1, rd), [x, t])
        _both(lambda a, b: F.binary_cross_entropy_with_logits(a, b, None, sa, rd),
              lambda a, b: TF.binary_cross_entropy_with_logits(a, b, None, sa, rd), [x, p])
        for name in ("mse_loss", "l1_loss", "smooth_l1_loss", "binary_cross_entropy"):
            _both(lambda a, b, n=name: getattr(F, n)(a, b, sa, rd) if n != "binary_cross_entropy"
                  else F.binary_cross_entropy(a, b, None, sa, rd),
                  lambda a, b, n=name: getattr(TF, n)(a, b, sa, rd) if n != "binary_cross_entropy"
                  else TF.binary_cross_entropy(a, b, None, sa, rd), [p, p[::-1].copy()])
    for name in ("cross_entropy", "nll_loss", "binary_cross_entropy_with_logits", "binary_cross_entropy",
                 "mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss", "kl_div", "pad", "interpolate",
                 "batch_norm", "instance_norm", "group_norm", "normalize"):
        theirs = [n for n in inspect.signature(getattr(TF, name)).parameters if n != "out"]
        assert list(inspect.signature(getattr(F, name)).parameters) == theirs, name
    with pytest.raises(TypeError, match="reduction='sum' by keyword"):
        F.mse_loss(ag.tensor(x), ag.tensor(x), "sum")
    with pytest.raises(TypeError, match="ignore_index"):
        F.cross_entropy(ag.tensor(x), ag.tensor(t), None, 1)  # an ignore_index in size_average's place


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name", ["mse_loss", "l1_loss", "huber_loss"])
def test_regression_losses_take_torchs_elementwise_weight(name, reduction):
    """PyTorch's ``weight`` of ``mse_loss``/``l1_loss`` (mean: ``Σ w l / Σ w``) and
    ``huber_loss`` (mean: over the elements)."""
    a, b, w = _rand(3, 4), _rand(3, 4), RNG.uniform(0.0, 2.0, (3, 4))
    _both(lambda x, y, v: getattr(F, name)(x, y, reduction=reduction, weight=v),
          lambda x, y, v: getattr(TF, name)(x, y, reduction=reduction, weight=v), [a, b, w])
    with pytest.raises(ValueError, match="same size"):
        getattr(F, name)(ag.tensor(a), ag.tensor(b), weight=ag.tensor(w[0]))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_regression_losses_at_the_kinks(reduction):
    a = _rand(3, 4)
    b = a + _rand(3, 4) * 2
    b[1, :4] = a[1, :4] + np.array([1.0, -0.5, 0.0, 2.0])  # |d| == delta/beta, and ties
    cases = [(nn.MSELoss, torch.nn.MSELoss, {}), (nn.L1Loss, torch.nn.L1Loss, {})]
    cases += [(nn.HuberLoss, torch.nn.HuberLoss, {"delta": d}) for d in (1.0, 0.5, 2.0)]
    cases += [(nn.SmoothL1Loss, torch.nn.SmoothL1Loss, {"beta": v}) for v in (1.0, 0.5, 0.0)]
    for cls, tcls, kw in cases:
        ours, theirs = _module_pair(cls, tcls, dict(kw, reduction=reduction))
        _both(ours, theirs, [a, b])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weight", [None, np.array([1.0, 2.0, 0.5, 0.0]), np.array([[0.5], [2.0], [1.0]])],
                         ids=["none", "per-class", "per-row"])
def test_bce_loss_at_probabilities_zero_and_one_as_torch(weight, reduction):
    """``nn.BCELoss`` / ``F.binary_cross_entropy`` (missing before): the logs clamped at -100,
    PyTorch's input gradient ``(x - t) / max(x (1 - x), 1e-12 in float32)`` and target
    gradient ``-logit(x)`` (±inf at 0 and 1)."""
    x = RNG.uniform(0.0, 1.0, (3, 4))
    x[0] = [0.0, 1.0, 1e-50, 1e-13]
    t = RNG.uniform(0.0, 1.0, (3, 4))
    t[0] = [0.0, 1.0, 0.3, 1.0]
    kw = {"reduction": reduction}
    ours, theirs = _module_pair(nn.BCELoss, torch.nn.BCELoss,
                                {"weight": weight, **kw} if weight is not None else kw)
    y = _both(ours, theirs, [x, t])
    assert np.all(np.isfinite(_np(y)))
    _both(lambda a, b: F.binary_cross_entropy(a, b, None if weight is None else ag.tensor(weight), **kw),
          lambda a, b: TF.binary_cross_entropy(a, b, None if weight is None else torch.tensor(weight), **kw),
          [x, t])
    _both(lambda a, b: F.binary_cross_entropy(a, b, **kw), lambda a, b: TF.binary_cross_entropy(a, b, **kw),
          [x.astype(np.float32), t.astype(np.float32)], 1e-6, 1e-6, dtype=np.float32)


def test_bce_loss_errors_second_order_and_legacy_arguments():
    x, t = RNG.uniform(0.05, 0.95, (3, 4)), RNG.uniform(0.0, 1.0, (3, 4))
    for bad, match in ((x + 0.5, "between 0 and 1"), (x * np.nan, "between 0 and 1")):
        with pytest.raises(RuntimeError, match=match):
            TF.binary_cross_entropy(torch.tensor(bad), torch.tensor(t))
        with pytest.raises(ValueError, match=match):
            F.binary_cross_entropy(ag.tensor(bad), ag.tensor(t))
    with pytest.raises(ValueError, match="target shape"):
        F.binary_cross_entropy(ag.tensor(x), ag.tensor(t[0]))
    for kw in ({"size_average": False}, {"reduce": False}):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _both(lambda a, b, kw=kw: F.binary_cross_entropy(a, b, **kw),
                  lambda a, b, kw=kw: TF.binary_cross_entropy(a, b, **kw), [x, t])
    # the gradient of the gradient (inside (0, 1), where the clamps are not met)
    xa, xt = ag.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    (ga,) = ag.grad(lambda v: F.binary_cross_entropy(v, ag.tensor(t)), argnums=0)(xa),
    gg = ag.grad(lambda v: ag.sum(ag.grad(lambda u: F.binary_cross_entropy(u, ag.tensor(t)))(v) ** 2))(xa)
    (gt,) = torch.autograd.grad(TF.binary_cross_entropy(xt, torch.tensor(t)), xt, create_graph=True)
    (ggt,) = torch.autograd.grad((gt ** 2).sum(), xt)
    _close(ga, gt)
    _close(gg, ggt, 1e-10, 1e-12)


# -- layers inside ag.jit / ag.capture, and under ag.vmap --------------------------------------

def _net(seed):
    rng = np.random.default_rng(seed)
    layers = nn.ModuleDict({
        "up": nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1, groups=1, dtype=ag.float64),
        "gn": nn.GroupNorm(2, 4, dtype=ag.float64),
        "inorm": nn.InstanceNorm2d(4, affine=True, track_running_stats=True, dtype=ag.float64),
        "bn": nn.BatchNorm2d(4, momentum=None, dtype=ag.float64),
        "ct1": nn.ConvTranspose1d(4, 2, 2, stride=2, dtype=ag.float64),
        "bn1": nn.BatchNorm1d(2, dtype=ag.float64),
        "head": nn.Linear(2, 4, dtype=ag.float64),
        "xent": nn.CrossEntropyLoss(weight=ag.tensor(W4), ignore_index=0, label_smoothing=0.1),
        "bce": nn.BCEWithLogitsLoss(pos_weight=ag.tensor(np.array(2.0))),
        "bcel": nn.BCELoss(weight=ag.tensor(np.array([1.0, 0.5, 2.0]))),
    })
    for p in layers.parameters():  # the same weights for eager and compiled copies
        with ag.no_grad():
            p[...] = ag.tensor(rng.uniform(-0.5, 0.5, p.shape))
    return layers


def _forward(layers, x, labels, probs):
    h = F.pad(x, (1, 0, 0, 1), mode="reflect")
    h = layers["up"](h, output_size=(2 * h.shape[2], 2 * h.shape[3]))
    h = F.interpolate(h, scale_factor=(1.1, 0.5), mode="bilinear")
    h = layers["bn"](layers["inorm"](layers["gn"](h)))
    h = F.interpolate(h, size=(5, 4), mode="bicubic", align_corners=True)
    h = F.interpolate(h, size=(3, 4), mode="area")
    h = F.interpolate(h, size=(3, 3), mode="bilinear", antialias=True)
    s = ag.mean(F.pad(h, (0, 1), mode="replicate"), axis=2)  # (N, 4, 4)
    s = layers["bn1"](layers["ct1"](s))  # (N, 2, 8)
    logits = layers["head"](ag.moveaxis(s, 1, -1))  # (N, 8, 4)
    logits = ag.moveaxis(logits, -1, 1)  # (N, 4, 8): K-dim cross-entropy
    loss = layers["xent"](logits, labels)  # (class weights: buffers, state of the step)
    loss = loss + nn.KLDivLoss(reduction="batchmean")(F.log_softmax(logits, axis=1), probs)
    loss = loss + nn.HuberLoss(delta=0.5)(F.normalize(s, dim=1), ag.zeros_like(s))
    cos = F.cosine_similarity(s[:, 0], s[:, 1], dim=-1)
    loss = loss + layers["bcel"](F.sigmoid(cos), ag.ones_like(cos) * 0.3)
    return loss + layers["bce"](cos, ag.ones_like(cos) * 0.7)


@pytest.mark.parametrize("mode", ["jit", "capture"])
def test_a_training_step_through_every_layer_replays_as_eager(mode):
    rng = np.random.default_rng(3)
    data = [(ag.tensor(rng.standard_normal((3, 3, 4, 5))), ag.tensor(rng.integers(0, 4, (3, 8))),
             ag.tensor(rng.dirichlet(np.ones(4), (3, 8)).transpose(0, 2, 1).copy())) for _ in range(5)]

    def make():
        layers = _net(0)
        opt = optim.SGD(layers.parameters(), lr=0.05, momentum=0.9, capturable=True)

        def step(x, labels, probs):
            opt.zero_grad()
            loss = _forward(layers, x, labels, probs)
            loss.backward()
            opt.step()
            return loss
        return layers, step

    eager_net, eager = make()
    comp_net, step = make()
    if mode == "jit":
        compiled = ag.jit(step)
        calls = data
    else:
        compiled = ag.capture(step, *data[0], warmup=1)
        eager(*data[0])
        eager(*data[0])
        calls = data[1:]
    for args in calls:
        le, lc = eager(*args), compiled(*args)
        assert np.isfinite(_np(le))
        np.testing.assert_array_equal(_np(lc), _np(le))  # bit for bit
    se, sc = eager_net.state_dict(), comp_net.state_dict()
    assert list(se) == list(sc)
    for k in se:
        np.testing.assert_allclose(_np(sc[k]), _np(se[k]), rtol=1e-12, atol=1e-14, err_msg=k)
    assert int(_np(comp_net["bn"].num_batches_tracked)) == (5 if mode == "jit" else 6)


def _vmap_pair(fa, ft, arrays, in_axes=0, rtol=1e-11):
    ya = ag.vmap(fa, in_axes=in_axes)(*[ag.tensor(a) for a in arrays])
    yt = torch.func.vmap(ft, in_dims=in_axes)(*[torch.tensor(a) for a in arrays])
    _close(ya, yt, rtol, 1e-12)
    # and a per-example gradient: vmap of grad
    ga = ag.vmap(ag.grad(lambda *a: ag.sum(fa(*a) ** 2)), in_axes=in_axes)(*[ag.tensor(a) for a in arrays])
    gt = torch.func.vmap(torch.func.grad(lambda *a: (ft(*a) ** 2).sum()), in_dims=in_axes)(
        *[torch.tensor(a) for a in arrays])
    _close(ga, gt, rtol * 10, 1e-11)


VMAPS = [
    ("binary_cross_entropy", lambda a, b: F.binary_cross_entropy(a, b),
     lambda a, b: TF.binary_cross_entropy(a, b), ["unit", "unit"], 0),
    ("conv_transpose1d",
     lambda x, w: F.conv_transpose1d(x, w, stride=2, padding=1, output_padding=1, groups=2),
     lambda x, w: TF.conv_transpose1d(x, w, stride=2, padding=1, output_padding=1, groups=2),
     [(5, 4, 6), (4, 3, 3)], (0, None)),
    ("conv_transpose2d", lambda x, w: F.conv_transpose2d(x, w, stride=(2, 1), dilation=(1, 2)),
     lambda x, w: TF.conv_transpose2d(x, w, stride=(2, 1), dilation=(1, 2)),
     [(3, 2, 3, 4), (2, 3, 2, 2)], (0, None)),
    ("group_norm", lambda x, w, b: F.group_norm(x, 2, w, b), lambda x, w, b: TF.group_norm(x, 2, w, b),
     [(4, 2, 6, 3), (6,), (6,)], (0, None, None)),
    ("instance_norm", lambda x: F.instance_norm(x), lambda x: TF.instance_norm(x), [(4, 2, 3, 5)], 0),
    ("batch_norm-eval", lambda x, m, v: F.batch_norm(x, m, v), lambda x, m, v: TF.batch_norm(x, m, v),
     [(4, 2, 3, 5), (3,), "variance"], (0, None, None)),
    ("pad-reflect", lambda x: F.pad(x, (2, 1, 1, 2), mode="reflect"),
     lambda x: TF.pad(x, (2, 1, 1, 2), mode="reflect"), [(4, 2, 4, 5)], 0),
    ("pad-circular-crop", lambda x: F.pad(x, (-1, 2), mode="circular"),
     lambda x: TF.pad(x, (-1, 2), mode="circular"), [(4, 2, 5)], 0),
    ("interpolate-bilinear", lambda x: F.interpolate(x, scale_factor=1.7, mode="bilinear"),
     lambda x: TF.interpolate(x, scale_factor=1.7, mode="bilinear"), [(3, 1, 2, 4, 5)], 0),
    ("interpolate-bicubic", lambda x: F.interpolate(x, size=(3, 7), mode="bicubic"),
     lambda x: TF.interpolate(x, size=(3, 7), mode="bicubic"), [(3, 1, 2, 4, 5)], 0),
    ("interpolate-area", lambda x: F.interpolate(x, size=(3, 2), mode="area"),
     lambda x: TF.interpolate(x, size=(3, 2), mode="area"), [(3, 1, 2, 4, 5)], 0),
    ("normalize", lambda x: F.normalize(x, dim=-1), lambda x: TF.normalize(x, dim=-1), [(4, 3, 5)], 0),
    ("cosine_similarity", lambda a, b: F.cosine_similarity(a, b, dim=-1),
     lambda a, b: TF.cosine_similarity(a, b, dim=-1), [(4, 3, 5), (5,)], (0, None)),
    ("linear", F.linear, TF.linear, [(4, 3), (2, 3), (2,)], (0, None, None)),
    ("cross_entropy-probabilities",
     lambda x, t: F.cross_entropy(x, t, weight=ag.tensor(W4), label_smoothing=0.1),
     lambda x, t: TF.cross_entropy(x, t, weight=torch.tensor(W4), label_smoothing=0.1),
     [(3, 5, 4), "probs"], 0),
    ("cross_entropy-labels", lambda x, t: F.cross_entropy(x, t), lambda x, t: TF.cross_entropy(x, t),
     [(3, 5, 4), "labels"], 0),
    ("kl_div", lambda a, b: F.kl_div(a, b, reduction="batchmean"),
     lambda a, b: TF.kl_div(a, b, reduction="batchmean"),
     [(3, 4, 5), "positive"], 0),
    ("bce_with_logits",
     lambda a, b: F.binary_cross_entropy_with_logits(a, b, pos_weight=ag.tensor(np.array([2.0, 1.0, 0.5]))),
     lambda a, b: TF.binary_cross_entropy_with_logits(
         a, b, pos_weight=torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64)),
     [(4, 2, 3), "unit"], 0),
]


@pytest.mark.parametrize(("fa", "ft", "shapes", "in_axes"), [v[1:] for v in VMAPS], ids=[v[0] for v in VMAPS])
def test_vmap_and_per_example_gradients_match_torch_func(fa, ft, shapes, in_axes):
    arrays = []
    for s in shapes:
        if s == "labels":
            arrays.append(RNG.integers(0, 4, (3, 5)))
        elif s == "probs":
            arrays.append(RNG.dirichlet(np.ones(4), (3, 5)))
        elif s == "positive":
            arrays.append(RNG.uniform(0.1, 1.0, (3, 4, 5)))
        elif s == "unit":
            arrays.append(RNG.uniform(0.0, 1.0, (4, 2, 3)))
        elif s == "variance":
            arrays.append(RNG.uniform(0.5, 2.0, (3,)))
        else:
            arrays.append(_rand(*s))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _vmap_pair(fa, ft, arrays, in_axes)


def test_norm_layers_under_vmap_with_torch_func_functional_call():
    """A module's per-example outputs under vmap (eval BatchNorm, GroupNorm, InstanceNorm and
    a transposed convolution), as torch.func.functional_call under torch.func.vmap."""
    f64 = ag.float64
    ours = nn.Sequential(nn.ConvTranspose1d(2, 4, 3, stride=2, dtype=f64), nn.GroupNorm(2, 4, dtype=f64),
                         nn.BatchNorm1d(4, dtype=f64), nn.InstanceNorm1d(4, affine=True, dtype=f64))
    theirs = torch.nn.Sequential(torch.nn.ConvTranspose1d(2, 4, 3, stride=2), torch.nn.GroupNorm(2, 4),
                                 torch.nn.BatchNorm1d(4), torch.nn.InstanceNorm1d(4, affine=True)).double()
    with torch.no_grad():
        for p in theirs.parameters():
            p.uniform_(0.5, 1.5)
        theirs[2].running_mean.uniform_(-1, 1)
        theirs[2].running_var.uniform_(0.5, 2)
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    ours.eval()
    theirs.eval()
    x = _rand(5, 3, 2, 4)
    ya = ag.vmap(ours)(ag.tensor(x))
    yt = torch.func.vmap(theirs)(torch.tensor(x))
    _close(ya, yt, 1e-10, 1e-11)


def test_loss_and_layer_constants_made_inside_a_jitted_step_are_constants_of_the_trace():
    """``nn.CrossEntropyLoss(weight=ag.tensor(w))`` (or any functional's weight, bias or
    statistics made with ``ag.tensor``) inside an ``ag.jit`` step: the functionals' own
    backend check refused it ("weight on backend 'numpy' but the input on 'numpy:traced'"),
    though the ops take such a Tensor as a constant of the trace."""
    wc = np.random.default_rng(1).standard_normal((4, 2, 2, 2))
    rng = np.random.default_rng(0)
    x = ag.tensor(rng.standard_normal((3, 4)), requires_grad=True)
    labels = ag.tensor(np.array([0, 2, 1]))
    img = ag.tensor(rng.standard_normal((2, 4, 3, 3)), requires_grad=True)

    def step(x, labels, img):
        x.grad = img.grad = None
        w = ag.tensor(W4)
        loss = nn.CrossEntropyLoss(weight=w, label_smoothing=0.1)(x, labels)
        loss = loss + F.nll_loss(F.log_softmax(x), labels, weight=ag.tensor(W4))
        bce = nn.BCEWithLogitsLoss(weight=ag.tensor(np.ones(4)), pos_weight=w)
        loss = loss + bce(x, ag.ones_like(x) * 0.3)
        loss = loss + ag.sum(F.group_norm(img, 2, w, ag.tensor(W4)))
        loss = loss + ag.sum(F.batch_norm(img, w, ag.tensor(W4 + 1), w, None, False))
        loss = loss + ag.sum(F.conv_transpose2d(img, ag.tensor(wc), ag.tensor(np.ones(2))))
        loss = loss + ag.sum(F.linear(x, ag.tensor(np.ones((2, 4))), ag.tensor(np.ones(2))))
        loss = loss + F.kl_div(F.log_softmax(x), ag.tensor(np.full((3, 4), 0.25)), reduction="batchmean")
        loss = loss + F.huber_loss(x, ag.tensor(np.zeros((3, 4))))
        loss.backward()
        return loss

    compiled = ag.jit(step)
    for _ in range(3):
        got = compiled(x, labels, img).item()
        gx, gi = _np(x.grad).copy(), _np(img.grad).copy()
        assert got == step(x, labels, img).item()
        np.testing.assert_array_equal(gx, _np(x.grad))
        np.testing.assert_array_equal(gi, _np(img.grad))


STRICT = [
    ("bicubic", lambda x: F.interpolate(x, scale_factor=(1.7, 0.6), mode="bicubic"), (2, 2, 4, 5)),
    ("bicubic-corners", lambda x: F.interpolate(x, size=(3, 7), mode="bicubic", align_corners=True),
     (2, 2, 4, 5)),
    ("trilinear", lambda x: F.interpolate(x, scale_factor=(1.1, 2.0, 0.7), mode="trilinear"),
     (1, 2, 3, 4, 5)),
    ("nearest-exact", lambda x: F.interpolate(x, size=(7, 3), mode="nearest-exact"), (2, 2, 4, 5)),
    ("nearest-double", lambda x: F.interpolate(x, scale_factor=2.1), (2, 2, 4, 5)),
    ("area", lambda x: F.interpolate(x, size=(3, 7), mode="area"), (2, 2, 4, 5)),
    ("antialias", lambda x: F.interpolate(x, size=(2, 3), mode="bicubic", antialias=True), (2, 2, 4, 5)),
    ("bce", lambda x: F.binary_cross_entropy(F.sigmoid(x), ag.ones_like(x) * 0.3), (3, 4)),
    ("cosine-tiny", lambda x: F.cosine_similarity(x * 1e-9, x[:1, :], dim=1), (3, 4)),
    ("linear-0d-bias", lambda x: F.linear(x, x[:2, :], ag.sum(x[0, :])), (3, 4)),
]


@pytest.mark.skipif("array_api_strict" not in AVAILABLE, reason="array_api_strict not installed")
@pytest.mark.parametrize(("fn", "shape"), [c[1:] for c in STRICT], ids=[c[0] for c in STRICT])
def test_new_paths_agree_on_array_api_strict(fn, shape):
    x = _rand(*shape)
    out = {}
    for b in ("numpy", "array_api_strict"):
        t = ag.tensor(x, backend=b, requires_grad=True)
        y = fn(t)
        ag.sum(y * y).backward()
        out[b] = (_np(y), _np(t.grad))
    for a, c in zip(out["numpy"], out["array_api_strict"]):
        np.testing.assert_allclose(c, a, rtol=1e-13, atol=1e-14)


def test_per_example_parameter_gradients_through_the_layers_match_torch_func():
    """``vmap(grad(loss))`` over a batch with the parameters shared (``functional_call``), the
    Opacus-style per-sample gradients, through a transposed convolution, GroupNorm,
    InstanceNorm and a label-smoothed cross-entropy, as ``torch.func``."""
    torch.manual_seed(0)
    theirs = torch.nn.Sequential(torch.nn.ConvTranspose1d(2, 4, 3, stride=2), torch.nn.GroupNorm(2, 4),
                                 torch.nn.InstanceNorm1d(4, affine=True), torch.nn.Flatten(),
                                 torch.nn.Linear(44, 3)).double()
    f64 = ag.float64
    ours = nn.Sequential(nn.ConvTranspose1d(2, 4, 3, stride=2, dtype=f64), nn.GroupNorm(2, 4, dtype=f64),
                         nn.InstanceNorm1d(4, affine=True, dtype=f64), nn.Flatten(),
                         nn.Linear(44, 3, dtype=f64))
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    x, y = _rand(5, 2, 5), np.array([0, 2, 1, 1, 0])
    tp = {k: v.detach() for k, v in theirs.named_parameters()}

    def tloss(p, xb, yb):
        out = torch.func.functional_call(theirs, p, (xb[None],))
        return TF.cross_entropy(out, yb[None], label_smoothing=0.1)

    def aloss(p, xb, yb):
        out = nn.functional_call(ours, p, ag.expand_dims(xb, axis=0))
        return F.cross_entropy(out, ag.expand_dims(yb, axis=0), label_smoothing=0.1)

    tg = torch.func.vmap(torch.func.grad(tloss), in_dims=(None, 0, 0))(
        tp, torch.tensor(x), torch.tensor(y))
    grads = ag.vmap(ag.grad(aloss), in_axes=(None, 0, 0))(
        {k: ag.tensor(v.numpy()) for k, v in tp.items()}, ag.tensor(x), ag.tensor(y))
    for k, v in tg.items():
        _close(grads[k], v, 1e-10, 1e-12, k)
