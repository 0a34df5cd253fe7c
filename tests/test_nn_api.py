"""PyTorch's module API (``nn.Parameter``, ``register_buffer``, ``apply``, ``requires_grad_``,
``zero_grad``), the functional extras (``F.linear``, ``pad``, ``interpolate``, ``normalize``,
``cosine_similarity``, ``kl_div``) and the loss modules, compared with ``torch`` (values and
gradients, float64) and across the NumPy and array_api_strict backends."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import agnograd as ag
import agnograd.nn.functional as F
from agnograd import nn

from .conftest import AVAILABLE

torch = pytest.importorskip("torch")
TF = torch.nn.functional

# torch's notices about its own deprecated arguments and kl_div's "mean"
pytestmark = [pytest.mark.filterwarnings("ignore:size_average and reduce:UserWarning"),
              pytest.mark.filterwarnings("ignore:reduction. 'mean' divides the total loss:UserWarning")]


def _inputs(shapes, seed=0, positive=False):
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal(s) for s in shapes]
    return [np.abs(x) + 0.1 for x in xs] if positive else xs


def _run_ag(fn, xs, g, backend="numpy"):
    ts = [ag.tensor(x, backend=backend, requires_grad=True) for x in xs]
    y = fn(*ts)
    ag.sum(y * ag.tensor(g, backend=backend)).backward()
    host = lambda t: np.asarray(ag.to_backend(t.detach(), "numpy").data)  # noqa: E731
    return host(y), [host(t.grad) for t in ts]


def _run_torch(fn, xs, g):
    ts = [torch.tensor(x, requires_grad=True) for x in xs]
    y = fn(*ts)
    (y * torch.tensor(g)).sum().backward()
    return y.detach().numpy(), [t.grad.numpy() for t in ts]


# (id, agnograd function, torch function, input shapes)
FUNCTIONS = [
    ("linear", lambda x, w, b: F.linear(x, w, b), lambda x, w, b: TF.linear(x, w, b),
     [(2, 4, 3), (5, 3), (5,)]),
    ("linear-1d-input", lambda x, w: F.linear(x, w), lambda x, w: TF.linear(x, w), [(3,), (2, 3)]),
    ("linear-1d-weight", lambda x, w: F.linear(x, w), lambda x, w: TF.linear(x, w), [(4, 3), (3,)]),
]
for _mode in ("constant", "reflect", "replicate", "circular"):
    for _p in ((1, 2), (2, 1, 0, 2), (1, 1, 2, 0, 1, 2)):
        _shape = (2, 3) + (4, 5, 6)[: len(_p) // 2]  # torch's non-constant modes: (N, C, *padded)
        FUNCTIONS.append((f"pad-{_mode}-{len(_p)}",
                          lambda x, p=_p, m=_mode: F.pad(x, p, mode=m),
                          lambda x, p=_p, m=_mode: TF.pad(x, p, mode=m), [_shape]))
FUNCTIONS += [
    ("pad-constant-value-crop", lambda x: F.pad(x, (-1, 2, 1, -2), value=2.5),
     lambda x: TF.pad(x, (-1, 2, 1, -2), value=2.5), [(2, 4, 5)]),
    ("pad-unbatched-reflect", lambda x: F.pad(x, (3, 2), mode="reflect"),
     lambda x: TF.pad(x, (3, 2), mode="reflect"), [(2, 4)]),
]
for _kw in (dict(size=(5, 7)), dict(size=3), dict(scale_factor=2.0), dict(scale_factor=(0.5, 1.7)),
            dict(scale_factor=1.3, recompute_scale_factor=True)):
    for _m, _ac in (("nearest", None), ("bilinear", False), ("bilinear", True)):
        FUNCTIONS.append((f"interpolate-{_m}-{_ac}-{sorted(_kw.items())}",
                          lambda x, kw=_kw, m=_m, ac=_ac: F.interpolate(x, mode=m, align_corners=ac, **kw),
                          lambda x, kw=_kw, m=_m, ac=_ac: TF.interpolate(x, mode=m, align_corners=ac, **kw),
                          [(2, 3, 6, 4)]))
FUNCTIONS += [
    ("interpolate-linear", lambda x: F.interpolate(x, size=9, mode="linear"),
     lambda x: TF.interpolate(x, size=9, mode="linear"), [(2, 3, 4)]),
    ("interpolate-linear-corners",
     lambda x: F.interpolate(x, scale_factor=0.6, mode="linear", align_corners=True),
     lambda x: TF.interpolate(x, scale_factor=0.6, mode="linear", align_corners=True), [(2, 1, 7)]),
    ("interpolate-nearest-3d", lambda x: F.interpolate(x, size=(3, 5, 2)),
     lambda x: TF.interpolate(x, size=(3, 5, 2)), [(1, 2, 4, 3, 5)]),
    ("normalize", lambda x: F.normalize(x), lambda x: TF.normalize(x), [(4, 3)]),
    ("normalize-p1-dim0", lambda x: F.normalize(x, p=1.0, dim=0), lambda x: TF.normalize(x, p=1.0, dim=0),
     [(4, 3)]),
    ("normalize-p3-last", lambda x: F.normalize(x, p=3.0, dim=-1), lambda x: TF.normalize(x, p=3.0, dim=-1),
     [(2, 3, 4)]),
    ("cosine_similarity", lambda a, b: F.cosine_similarity(a, b), lambda a, b: TF.cosine_similarity(a, b),
     [(5, 3), (5, 3)]),
    ("cosine_similarity-broadcast", lambda a, b: F.cosine_similarity(a, b, dim=-1),
     lambda a, b: TF.cosine_similarity(a, b, dim=-1), [(2, 3, 4), (3, 4)]),
]
for _red in ("mean", "batchmean", "sum", "none"):
    for _lt in (False, True):
        FUNCTIONS.append((f"kl_div-{_red}-{_lt}",
                          lambda x, t, r=_red, lt=_lt: F.kl_div(
                              F.log_softmax(x), F.log_softmax(t) if lt else F.softmax(t),
                              reduction=r, log_target=lt),
                          lambda x, t, r=_red, lt=_lt: TF.kl_div(
                              TF.log_softmax(x, -1), TF.log_softmax(t, -1) if lt else TF.softmax(t, -1),
                              reduction=r, log_target=lt),
                          [(4, 3), (4, 3)]))


@pytest.mark.parametrize(("fn", "tfn", "shapes"), [c[1:] for c in FUNCTIONS], ids=[c[0] for c in FUNCTIONS])
def test_functions_match_torch(fn, tfn, shapes):
    xs = _inputs(shapes)
    y_t = tfn(*[torch.tensor(x) for x in xs]).numpy()
    g = np.random.default_rng(1).standard_normal(y_t.shape)
    y, grads = _run_ag(fn, xs, g)
    ty, tgrads = _run_torch(tfn, xs, g)
    assert y.shape == ty.shape
    np.testing.assert_allclose(y, ty, rtol=1e-12, atol=1e-13)
    for a, b in zip(grads, tgrads):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-12)


@pytest.mark.skipif("array_api_strict" not in AVAILABLE, reason="array_api_strict not installed")
@pytest.mark.parametrize(("fn", "shapes"), [(c[1], c[3]) for c in FUNCTIONS], ids=[c[0] for c in FUNCTIONS])
def test_functions_agree_on_array_api_strict(fn, shapes):
    xs = _inputs(shapes)
    y0, _ = _run_ag(fn, xs, 0.0)
    g = np.random.default_rng(1).standard_normal(y0.shape)
    y, grads = _run_ag(fn, xs, g)
    ys, gs = _run_ag(fn, xs, g, backend="array_api_strict")
    np.testing.assert_allclose(ys, y, rtol=1e-13, atol=1e-14)
    for a, b in zip(gs, grads):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-14)


@settings(max_examples=30, deadline=None)
@given(mode=st.sampled_from(["constant", "reflect", "replicate", "circular"]),
       pads=st.lists(st.integers(0, 3), min_size=2, max_size=6).filter(lambda p: len(p) % 2 == 0),
       value=st.floats(-2, 2))
def test_pad_property_matches_torch(mode, pads, value):
    """Any amounts below the axis lengths, in every mode, pad as torch does (values and
    gradient)."""
    shape = (1, 2) + (4,) * (len(pads) // 2)
    kw = {"value": value} if mode == "constant" else {}
    xs = _inputs([shape], seed=len(pads))
    ty = TF.pad(torch.tensor(xs[0]), pads, mode=mode, **kw).numpy()
    g = np.random.default_rng(2).standard_normal(ty.shape)
    y, (gx,) = _run_ag(lambda x: F.pad(x, pads, mode=mode, **kw), xs, g)
    _, (tgx,) = _run_torch(lambda x: TF.pad(x, pads, mode=mode, **kw), xs, g)
    np.testing.assert_array_equal(y, ty)
    np.testing.assert_allclose(gx, tgx, rtol=1e-14, atol=1e-14)


@settings(max_examples=30, deadline=None)
@given(h=st.integers(1, 7), w=st.integers(1, 7), oh=st.integers(1, 9), ow=st.integers(1, 9),
       mode=st.sampled_from(["nearest", "bilinear-False", "bilinear-True"]))
def test_interpolate_property_matches_torch(h, w, oh, ow, mode):
    """Every input and output size (up- and downsampling, size 1 included) as torch."""
    m, _, ac = mode.partition("-")
    kw = {"mode": m, "align_corners": None if m == "nearest" else ac == "True"}
    xs = _inputs([(1, 2, h, w)])
    ty = TF.interpolate(torch.tensor(xs[0]), size=(oh, ow), **kw).numpy()
    g = np.random.default_rng(2).standard_normal(ty.shape)
    y, (gx,) = _run_ag(lambda x: F.interpolate(x, size=(oh, ow), **kw), xs, g)
    _, (tgx,) = _run_torch(lambda x: TF.interpolate(x, size=(oh, ow), **kw), xs, g)
    np.testing.assert_allclose(y, ty, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(gx, tgx, rtol=1e-11, atol=1e-12)


def test_nearest_scale_factor_uses_torchs_float32_index():
    """Nearest indices are computed as torch does (``floor(i · (1/scale))`` in float32), so a
    factor whose double and float32 products round differently picks torch's element."""
    x = np.arange(2 * 1 * 10, dtype=np.float64).reshape(2, 1, 10)
    for s in (0.3, 0.7, 1.1, 2.9, 3.3):
        want = TF.interpolate(torch.tensor(x), scale_factor=s).numpy()
        got = F.interpolate(ag.tensor(x), scale_factor=s).data
        np.testing.assert_array_equal(got, want)


def test_zero_vectors_normalize_to_zero_with_finite_gradients():
    x = ag.tensor(np.zeros((2, 3)), requires_grad=True)
    y = F.normalize(x) + F.cosine_similarity(x, x)[:, None]
    ag.sum(y).backward()
    tx = torch.zeros((2, 3), dtype=torch.float64, requires_grad=True)
    (TF.normalize(tx) + TF.cosine_similarity(tx, tx)[:, None]).sum().backward()
    np.testing.assert_allclose(y.data, 0.0)
    assert np.all(np.isfinite(x.grad.data))


def test_kl_div_zero_target_and_legacy_arguments():
    x = np.log(np.array([[0.2, 0.8], [0.5, 0.5]]))
    t = np.array([[0.0, 1.0], [0.5, 0.5]])  # 0 · log 0 = 0, as torch
    for kw in ({}, {"reduction": "sum"}, {"size_average": False}, {"reduce": False}):
        want = TF.kl_div(torch.tensor(x), torch.tensor(t), **kw).numpy()
        np.testing.assert_allclose(F.kl_div(ag.tensor(x), ag.tensor(t), **kw).data, want, rtol=1e-14)


@pytest.mark.parametrize(("call", "match"), [
    (lambda x: F.pad(x, (4, 0), mode="reflect"), "below the size"),
    (lambda x: F.pad(x, (5, 0), mode="circular"), "at most the size"),
    (lambda x: F.pad(x, (1,)), "even-length"),
    (lambda x: F.pad(x, (1, 1), mode="wrap"), "mode must be"),
    (lambda x: F.pad(x, (1, 1), mode="reflect", value=1.0), "only used by"),
    (lambda x: F.interpolate(x, size=3, scale_factor=2.0), "exactly one"),
    (lambda x: F.interpolate(x, size=3), None),  # fine: (N, C, L)
    (lambda x: F.interpolate(x, size=3, mode="bilinear"), "needs a 4-D"),
    (lambda x: F.interpolate(x, size=3, align_corners=True), "align_corners"),
    (lambda x: F.interpolate(x, size=3, mode="lanczos"), "not implemented"),
    (lambda x: F.kl_div(x, x, reduction="avg"), "reduction"),
])
def test_bad_arguments_raise_with_the_fix(call, match):
    x = ag.tensor(np.ones((1, 2, 4)))
    if match is None:
        call(x)
        return
    with pytest.raises((ValueError, NotImplementedError), match=match):
        call(x)


# -- loss modules ------------------------------------------------------------------------------

W3 = np.array([0.5, 1.0, 2.0])
LABELS = np.array([0, 2, -100, 1])


def _xent_case(kw):
    def make(rng):
        return [rng.standard_normal((4, 3))], [LABELS if "ignore_index" not in kw else np.array([0, 2, 1, 1])]
    return make


def _pair_case(shape=(4, 3), prob=False):
    def make(rng):
        t = rng.uniform(0, 1, shape) if prob else rng.standard_normal(shape)
        return [rng.standard_normal(shape) * 2], [t]
    return make


# (id, agnograd class, torch class, kwargs (arrays become tensors), make inputs: (diff, const))
LOSSES = [
    ("CrossEntropyLoss", nn.CrossEntropyLoss, torch.nn.CrossEntropyLoss, {}, _xent_case({})),
    ("CrossEntropyLoss-opts", nn.CrossEntropyLoss, torch.nn.CrossEntropyLoss,
     {"weight": W3, "label_smoothing": 0.1, "reduction": "sum"}, _xent_case({})),
    ("CrossEntropyLoss-ignore-none", nn.CrossEntropyLoss, torch.nn.CrossEntropyLoss,
     {"ignore_index": 1, "reduction": "none"}, _xent_case({"ignore_index": 1})),
    ("CrossEntropyLoss-probs", nn.CrossEntropyLoss, torch.nn.CrossEntropyLoss, {"weight": W3},
     _pair_case(prob=True)),
    ("NLLLoss", nn.NLLLoss, torch.nn.NLLLoss, {}, _xent_case({})),
    ("NLLLoss-weight-sum", nn.NLLLoss, torch.nn.NLLLoss, {"weight": W3, "reduction": "sum"}, _xent_case({})),
    ("NLLLoss-legacy-reduce", nn.NLLLoss, torch.nn.NLLLoss, {"reduce": False}, _xent_case({})),
    ("MSELoss", nn.MSELoss, torch.nn.MSELoss, {}, _pair_case()),
    ("MSELoss-sum", nn.MSELoss, torch.nn.MSELoss, {"reduction": "sum"}, _pair_case((2, 3, 4))),
    ("MSELoss-legacy-size_average", nn.MSELoss, torch.nn.MSELoss, {"size_average": False}, _pair_case()),
    ("L1Loss", nn.L1Loss, torch.nn.L1Loss, {}, _pair_case()),
    ("L1Loss-none", nn.L1Loss, torch.nn.L1Loss, {"reduction": "none"}, _pair_case()),
    ("HuberLoss", nn.HuberLoss, torch.nn.HuberLoss, {}, _pair_case()),
    ("HuberLoss-delta-sum", nn.HuberLoss, torch.nn.HuberLoss, {"delta": 0.4, "reduction": "sum"},
     _pair_case()),
    ("SmoothL1Loss", nn.SmoothL1Loss, torch.nn.SmoothL1Loss, {}, _pair_case()),
    ("SmoothL1Loss-beta", nn.SmoothL1Loss, torch.nn.SmoothL1Loss, {"beta": 0.3, "reduction": "none"},
     _pair_case()),
    ("SmoothL1Loss-beta0", nn.SmoothL1Loss, torch.nn.SmoothL1Loss, {"beta": 0.0}, _pair_case()),
    ("BCEWithLogitsLoss", nn.BCEWithLogitsLoss, torch.nn.BCEWithLogitsLoss, {}, _pair_case(prob=True)),
    ("BCEWithLogitsLoss-weights", nn.BCEWithLogitsLoss, torch.nn.BCEWithLogitsLoss,
     {"weight": np.array([[1.0, 0.5, 2.0]]), "pos_weight": np.array([3.0, 0.2, 1.0]), "reduction": "sum"},
     _pair_case(prob=True)),
    ("KLDivLoss", nn.KLDivLoss, torch.nn.KLDivLoss, {"reduction": "batchmean"}, _pair_case(prob=True)),
    ("KLDivLoss-log-target", nn.KLDivLoss, torch.nn.KLDivLoss, {"log_target": True}, _pair_case()),
]


def _kw(kw, conv):
    return {k: conv(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}


@pytest.mark.parametrize(("cls", "tcls", "kw", "make"), [c[1:] for c in LOSSES], ids=[c[0] for c in LOSSES])
def test_loss_modules_match_torch(cls, tcls, kw, make):
    diff, const = make(np.random.default_rng(0))
    ours = cls(**_kw(kw, ag.tensor))
    theirs = tcls(**_kw(kw, torch.tensor))
    assert list(ours.state_dict()) == list(theirs.state_dict())  # buffers under torch's keys
    for k, v in theirs.state_dict().items():
        np.testing.assert_array_equal(ours.state_dict()[k].data, v.numpy())
    assert ours.parameters() == []
    assert ours.reduction == theirs.reduction
    ty = theirs(*[torch.tensor(x) for x in diff], *[torch.tensor(c) for c in const])
    g = np.random.default_rng(1).standard_normal(tuple(ty.shape))
    y, grads = _run_ag(lambda *xs: ours(*xs, *[ag.tensor(c) for c in const]), diff, g)
    ty, tgrads = _run_torch(lambda *xs: theirs(*xs, *[torch.tensor(c) for c in const]), diff, g)
    np.testing.assert_allclose(y, ty, rtol=1e-12, atol=1e-13)
    for a, b in zip(grads, tgrads):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-12)


@pytest.mark.skipif("array_api_strict" not in AVAILABLE, reason="array_api_strict not installed")
@pytest.mark.parametrize(("cls", "kw", "make"), [(c[1], c[3], c[4]) for c in LOSSES],
                         ids=[c[0] for c in LOSSES])
def test_loss_modules_agree_on_array_api_strict(cls, kw, make):
    diff, const = make(np.random.default_rng(0))
    out = {}
    for b in ("numpy", "array_api_strict"):
        loss = cls(**_kw(kw, ag.tensor)).to_backend(b)
        for t in loss.buffers():
            assert t.backend == b  # class weights follow the module
        consts = [ag.tensor(c, backend=b) for c in const]
        out[b] = _run_ag(lambda *xs, loss=loss, consts=consts: ag.sum(loss(*xs, *consts)), diff, 1.0,
                         backend=b)
    np.testing.assert_allclose(out["array_api_strict"][0], out["numpy"][0], rtol=1e-13)
    for a, c in zip(out["array_api_strict"][1], out["numpy"][1]):
        np.testing.assert_allclose(a, c, rtol=1e-13, atol=1e-14)


def test_loss_module_buffers_follow_astype_and_load_torch_state():
    loss = nn.BCEWithLogitsLoss(pos_weight=ag.tensor([1.0, 2.0]))
    loss.astype(ag.float32)
    assert loss.pos_weight.dtype == ag.float32
    loss.load_state_dict(torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor([3.0, 4.0])).state_dict())
    np.testing.assert_array_equal(loss.pos_weight.data, [3.0, 4.0])
    assert repr(nn.MSELoss(reduction="sum")) == "MSELoss(reduction='sum')"


# -- module API --------------------------------------------------------------------------------

class _Net(nn.Module):
    def __init__(self):
        self.fc = nn.Linear(3, 2, seed=0)
        self.blocks = [nn.Linear(2, 2, seed=1), nn.LayerNorm(2)]
        self.scale = nn.Parameter(ag.ones((2,)))
        self.register_buffer("running", ag.zeros((2,)))
        self.register_buffer("scratch", ag.zeros((4,)), persistent=False)


class _TNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 2)
        self.blocks = torch.nn.ModuleList([torch.nn.Linear(2, 2), torch.nn.LayerNorm(2)])
        self.scale = torch.nn.Parameter(torch.ones(2))
        self.register_buffer("running", torch.zeros(2))
        self.register_buffer("scratch", torch.zeros(4), persistent=False)


def test_parameters_buffers_and_state_dict_keys_match_torch():
    ours, theirs = _Net(), _TNet()
    # the same names in the same order (a module's own tensors before its sub-modules')
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()]
    assert list(ours.state_dict()) == list(theirs.state_dict())  # the non-persistent one left out
    assert "scratch" not in ours.state_dict()
    ours.load_state_dict(theirs.state_dict())  # loads as it is, strict
    np.testing.assert_array_equal(ours.fc.weight.data, theirs.fc.weight.detach().numpy())


def test_apply_visits_children_before_parents_as_torch():
    seen, tseen = [], []
    _Net().apply(lambda m: seen.append(type(m).__name__))
    _TNet().apply(lambda m: tseen.append(type(m).__name__))
    assert seen == [n.replace("_TNet", "_Net") for n in tseen if n != "ModuleList"]
    net = _Net()
    assert net.apply(lambda m: None) is net


def test_parameter_is_a_parameter_even_frozen():
    data = ag.tensor([1.0, 2.0])
    p = nn.Parameter(data)
    assert p.requires_grad and p.is_leaf and isinstance(p, nn.Parameter) and isinstance(p, ag.Tensor)
    assert type(p) is ag.Tensor
    assert p.data is data.data  # shares memory, as torch's
    frozen = nn.Parameter(ag.zeros((2,)), requires_grad=False)
    assert not frozen.requires_grad and isinstance(frozen, nn.Parameter)
    assert not isinstance(ag.zeros((2,)), nn.Parameter)
    m = nn.Module()
    m.w = frozen
    assert m.parameters() == [frozen] and m.buffers() == []
    assert nn.Parameter().shape == (0,)
    tm = torch.nn.Module()
    tm.w = torch.nn.Parameter(torch.zeros(2), requires_grad=False)
    assert [n for n, _ in tm.named_parameters()] == ["w"]  # torch: the same


def test_buffer_that_requires_grad_is_still_a_buffer():
    m = nn.Module()
    b = ag.zeros((2,)).requires_grad_()
    m.register_buffer("b", b)
    assert m.parameters() == [] and m.buffers() == [b]
    for twin in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        assert twin.parameters() == [] and len(twin.buffers()) == 1 and twin.b.requires_grad
    m.astype(ag.float32)
    assert m.parameters() == [] and m.b.dtype == ag.float32


def test_buffers_follow_astype_and_to_backend():
    net = _Net().astype(ag.float32)
    assert net.running.dtype == ag.float32 and net.scratch.dtype == ag.float32
    assert [n for n, _ in net.named_buffers()] == ["running", "scratch"]
    if "array_api_strict" in AVAILABLE:
        net.to_backend("array_api_strict")
        assert net.running.backend == "array_api_strict" == net.scratch.backend


def test_non_persistent_buffer_is_not_saved(tmp_path):
    net = _Net()
    net.save(tmp_path / "n.npz")
    other = _Net()
    other.scratch = ag.ones((4,))  # reassigned: still non-persistent
    other.load(tmp_path / "n.npz")
    assert "scratch" not in other.state_dict()
    np.testing.assert_array_equal(other.scratch.data, 1.0)


def test_register_buffer_errors_and_none():
    m = nn.Module()
    m.w = nn.Parameter(ag.zeros((1,)))
    with pytest.raises(KeyError, match="already exists"):
        m.register_buffer("w", ag.zeros((1,)))
    with pytest.raises(KeyError, match="without '.'"):
        m.register_buffer("a.b", ag.zeros((1,)))
    with pytest.raises(TypeError, match="Tensor or None"):
        m.register_buffer("x", [1.0])
    with pytest.raises(ValueError, match="public name"):
        m.register_buffer("_x", ag.zeros((1,)))
    with pytest.raises(KeyError, match="already exists"):
        m.register_buffer("forward", ag.zeros((1,)))
    m.register_buffer("none", None)
    assert m.none is None and "none" not in m.state_dict()
    m.register_buffer("none", ag.zeros((1,)))  # a registered name may be registered again
    assert "none" in m.state_dict()
    del m.none  # no longer a buffer: a tensor requiring grad assigned there is a parameter
    m.none = ag.zeros((1,)).requires_grad_()
    assert [n for n, _ in m.named_parameters()] == ["w", "none"]


def test_requires_grad_and_zero_grad_as_torch():
    net, tnet = _Net(), _TNet()
    assert net.requires_grad_(False) is net
    tnet.requires_grad_(False)
    assert [t.requires_grad for t in net.parameters()] == [t.requires_grad for t in tnet.parameters()]  # noqa: C416
    assert len(net.parameters()) == len(list(tnet.parameters()))  # frozen, still parameters
    assert not net.running.requires_grad
    net.requires_grad_()
    assert all(t.requires_grad for t in net.parameters())
    y = net.fc(ag.ones((1, 3), dtype=net.fc.weight.dtype))
    ag.sum(y).backward()
    net.zero_grad(set_to_none=False)
    assert np.all(net.fc.weight.grad.data == 0) and net.fc.weight.grad.shape == (2, 3)
    assert net.scale.grad is None  # never had one: stays None (torch leaves it None too)
    net.zero_grad()
    assert net.fc.weight.grad is None


def test_register_buffer_changes_the_world_a_compiled_step_checks():
    from agnograd.capture import _state
    m = nn.Module()
    before = _state.WORLD[0]
    m.register_buffer("b", ag.zeros((1,)))
    assert _state.WORLD[0] != before


def test_a_buffer_rebound_in_forward_stays_a_buffer():
    """``self.running = f(self.running, x)`` with ``x`` requiring grad: still a buffer (torch's
    rule for a registered name), not a parameter an optimizer would pick up."""
    class Running(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(ag.ones((2,)))
            self.register_buffer("running", ag.zeros((2,)))

        def forward(self, x):
            self.running = 0.9 * self.running + 0.1 * (x * self.w)
            return ag.sum(x * self.w)

    m = Running()
    m(ag.ones((2,)))
    assert m.running.requires_grad
    assert [n for n, _ in m.named_parameters()] == ["w"]
    assert [n for n, _ in m.named_buffers()] == ["running"]


def test_new_functions_replay_under_jit_as_eager():
    """The index and weight constants of pad/interpolate are fixed by the shapes, so an
    ``ag.jit`` replay gives the eager loss and gradient."""
    x = ag.tensor(np.random.default_rng(0).standard_normal((1, 2, 3, 4)), requires_grad=True)
    loss_fn = nn.SmoothL1Loss(beta=0.5)

    def step(x):
        x.grad = None
        y = F.interpolate(F.pad(x, (1, 1, 2, 0), mode="reflect"), scale_factor=1.5, mode="bilinear")
        loss = loss_fn(F.normalize(y), ag.zeros(y.shape, dtype=y.dtype))
        loss.backward()
        return loss

    compiled = ag.jit(step)
    for _ in range(3):
        got = compiled(x).item()
        g = np.array(x.grad.data)
        assert got == step(x).item()
        np.testing.assert_array_equal(g, x.grad.data)
