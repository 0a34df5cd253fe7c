"""ag.capture: the API on every backend (a CUDA graph on CuPy, the eager fallback elsewhere),
replayed training against eager training, capturable optimizers against the references of
test_optim, the capture-safety checker, input checks, output buffers and check()."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import agnograd as ag
from agnograd import nn, optim
from agnograd.capture import _state as _capture_state
from agnograd.nn import functional as F

from .conftest import AVAILABLE, BACKENDS, CPU_BACKENDS
from .test_optim import CASES, P0, TARGET

SIZES = [16, 32, 32, 4]
BATCH = 24


def _data(n_batches: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(BATCH, SIZES[0])).astype(np.float32),
             rng.integers(0, SIZES[-1], size=BATCH)) for _ in range(n_batches)]


def _setup(backend: str, kind: str, capturable: bool):
    model = nn.MLP(SIZES, activation="tanh", backend=backend, seed=0)
    params = model.parameters()
    if kind == "sgd":
        opt = optim.SGD(params, lr=0.05, momentum=0.9, capturable=capturable)
    elif kind == "adam":
        opt = optim.Adam(params, lr=1e-2, capturable=capturable)
    else:
        opt = optim.AdamW(params, lr=1e-2, weight_decay=0.1, capturable=capturable)

    def step(x, y):
        opt.zero_grad()
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        opt.step()
        return loss, logits

    return model, opt, step


def _host(t) -> np.ndarray:
    return np.asarray(t.numpy())


def _tensors(backend, x, y):
    return ag.tensor(x, backend=backend), ag.tensor(y, backend=backend)


# ---------------------------------------------------------------------------------------------
# Replay against eager training


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_replayed_training_matches_eager_over_100_steps(backend, kind):
    batches = _data(104)
    model_c, opt_c, step_c = _setup(backend, kind, capturable=True)
    model_e, opt_e, step_e = _setup(backend, kind, capturable=False)
    warmup = 3
    captured = ag.capture(step_c, *_tensors(backend, *batches[0]), warmup=warmup)
    assert captured.graph == (backend == "cupy")
    for _ in range(warmup + 1):  # capture() took warmup + 1 real steps on the example batch
        step_e(*_tensors(backend, *batches[0]))
    for i, (x, y) in enumerate(batches[1:101]):
        xt, yt = _tensors(backend, x, y)
        loss_c, logits_c = captured(xt, yt)
        loss_e, logits_e = step_e(xt, yt)
        if i % 25 == 0 or i == 99:
            np.testing.assert_allclose(_host(loss_c), _host(loss_e), rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(_host(logits_c), _host(logits_e), rtol=1e-4, atol=1e-4)
    for pc, pe in zip(model_c.parameters(), model_e.parameters()):
        np.testing.assert_allclose(_host(pc), _host(pe), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(_host(pc.grad), _host(pe.grad), rtol=1e-3, atol=1e-5)
    assert not _capture_state.capturing()


def test_a_captured_step_trains_the_digits_network():
    from agnograd.datasets import load_digits

    X, y = load_digits(dtype=ag.float32)
    model = nn.MLP([64, 32, 32, 10], activation="tanh", seed=0)
    opt = optim.Adam(model.parameters(), lr=1e-2, capturable=True)

    def step(x, labels):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), labels)
        loss.backward()
        opt.step()
        return loss

    step_c = ag.capture(step, X[:256], y[:256])
    first = float(step_c(X[:256], y[:256]))
    for _ in range(30):
        last = float(step_c(X[:256], y[:256]))
    assert last < 0.5 * first


# ---------------------------------------------------------------------------------------------
# Capturable optimizers against the references of test_optim


def _case_loss(p, target):
    return ag.sum((p - target) ** 2) * (1.0 + 0.1 * p[0, 0]) + ag.sum(ag.sin(p))


@pytest.mark.parametrize("name, make, ref", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_capturable_updates_match_hand_computed_ones(name, make, ref, backend):
    # Eagerly, and through ag.capture (1 warm-up + the recording + 3 replays = 5 steps).
    for captured in (False, True):
        p = ag.tensor(P0.copy(), backend=backend, requires_grad=True)
        target = ag.tensor(TARGET, backend=backend)
        opt = make([p])
        opt.capturable = True

        def step(p=p, opt=opt):
            opt.zero_grad()
            _case_loss(p, target).backward()
            opt.step()

        if captured:
            s = ag.capture(step, warmup=1)
            for _ in range(3):
                s()
        else:
            for _ in range(5):
                step()
        np.testing.assert_allclose(_host(p), ref(), rtol=1e-10, atol=1e-12)
        for state in opt.state.values():
            for v in state.values():
                if isinstance(v, ag.Tensor):
                    assert v.backend == backend and v.dtype == p.dtype


@pytest.mark.parametrize("name, make, ref", [c for c in CASES if c[0].startswith("adam")],
                         ids=[c[0] for c in CASES if c[0].startswith("adam")])
def test_capturable_adam_matches_pytorch(name, make, ref):
    torch = pytest.importorskip("torch")
    p = ag.tensor(P0.copy(), requires_grad=True)
    target = ag.tensor(TARGET)
    opt = make([p])
    opt.capturable = True
    for _ in range(5):
        opt.zero_grad()
        _case_loss(p, target).backward()
        opt.step()
    group = {k: v for k, v in opt.param_groups[0].items() if k != "params"}
    t = torch.tensor(P0, requires_grad=True)
    kind = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
    topt = kind([t], **group)
    T = torch.tensor(TARGET)
    for _ in range(5):
        topt.zero_grad()
        (((t - T) ** 2).sum() * (1 + 0.1 * t[0, 0]) + torch.sin(t).sum()).backward()
        topt.step()
    np.testing.assert_allclose(_host(p), t.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_learning_rate_changes_reach_the_replays_and_frozen_ones_record_again():
    x, y = _data(1)[0]
    model_c, opt_c, step_c = _setup("numpy", "adam", capturable=True)
    model_e, opt_e, step_e = _setup("numpy", "adam", capturable=False)
    xt, yt = _tensors("numpy", x, y)
    captured = ag.capture(step_c, xt, yt, warmup=1)
    for _ in range(2):
        step_e(xt, yt)
    for lr in (1e-2, 5e-3, 1e-3):  # a schedule: group["lr"] set between replays
        opt_c.param_groups[0]["lr"] = opt_e.param_groups[0]["lr"] = lr
        captured(xt, yt)
        step_e(xt, yt)
    for pc, pe in zip(model_c.parameters(), model_e.parameters()):
        np.testing.assert_allclose(_host(pc), _host(pe), rtol=1e-5, atol=1e-6)
    # betas are constants of a recording: changing them is a new world, recorded again.
    opt_c.param_groups[0]["betas"] = opt_e.param_groups[0]["betas"] = (0.5, 0.9)
    for _ in range(2):
        captured(xt, yt)
        step_e(xt, yt)
    assert captured._recs.retraced == 1
    for pc, pe in zip(model_c.parameters(), model_e.parameters()):
        np.testing.assert_allclose(_host(pc), _host(pe), rtol=1e-5, atol=1e-6)


def test_capturable_state_dict_round_trips_with_the_default_path():
    p = ag.tensor(P0.copy(), requires_grad=True)
    target = ag.tensor(TARGET)
    a = optim.Adam([p], lr=0.1)
    for _ in range(2):
        a.zero_grad()
        _case_loss(p, target).backward()
        a.step()
    b = optim.Adam([p], lr=0.1, capturable=True)
    b.load_state_dict(a.state_dict())  # an int step count becomes a device scalar on first use
    for _ in range(2):
        b.zero_grad()
        _case_loss(p, target).backward()
        b.step()
    assert isinstance(b.state_dict()["state"][0]["step"], ag.Tensor)
    c = optim.Adam([p], lr=0.1)
    c.load_state_dict(b.state_dict())  # and back to a Python int
    c.zero_grad()
    _case_loss(p, target).backward()
    c.step()
    assert c.state[id(p)]["step"] == 5
    np.testing.assert_allclose(_host(p), CASES[4][2](), rtol=1e-10)  # 5 Adam steps in all


# ---------------------------------------------------------------------------------------------
# The capture-safety checker (active while recording, on every backend)


def _host_sync_steps():
    def item(x, i):
        return ag.sum(x).item()

    def to_float(x, i):
        return float(ag.sum(x))

    def to_int(x, i):
        return int(ag.sum(ag.astype(x, ag.int32)))

    def to_bool(x, i):
        return x if ag.sum(x) > 0 else -x

    def index(x, i):
        return x[[0, 1, 2][i]]

    def to_numpy(x, i):
        return x.numpy()

    def mask_get(x, i):
        return x[x > 0]

    def mask_set(x, i):
        y = x * 1.0
        y[y > 0] = 0.0
        return y

    def nonzero(x, i):
        return ag.nonzero(x > 0)

    def unique(x, i):
        return ag.unique_values(x)

    def unique_counts(x, i):
        return ag.unique_counts(x)

    def host_list(x, i):
        return x * ag.asarray([1.0, 2.0, 3.0], device=x.device)

    def host_scalar(x, i):
        return x * ag.tensor(2.0, backend=x.backend)

    def dropout(x, i):
        return F.dropout(x, 0.5, seed=0)

    return [
        (item, "Tensor.item()"), (to_float, "float()"), (to_int, "int()"), (to_bool, "bool()"),
        (index, "__index__"), (to_numpy, "Tensor.numpy()"), (mask_get, "x[mask]"),
        (mask_set, "x[mask] = value"), (nonzero, "nonzero"), (unique, "unique_values"),
        (unique_counts, "unique_counts"), (host_list, "ag.asarray of host data"),
        (host_scalar, "ag.tensor of host data"), (dropout, "dropout"),
    ]


@pytest.mark.parametrize("fn, op", _host_sync_steps(), ids=[f.__name__ for f, _ in _host_sync_steps()])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_host_synchronisation_in_a_step_is_refused(fn, op, backend):
    x = ag.tensor([1.0, -2.0, 3.0], backend=backend)
    i = ag.tensor(1, backend=backend)
    with pytest.raises(ag.CaptureError) as err:
        ag.capture(fn, x, i, warmup=1)
    assert op in str(err.value) and "ag.capture" in str(err.value)
    assert not _capture_state.capturing()
    fn(x, i)  # outside a recording the same code runs


def test_transfers_and_non_capturable_optimizers_are_refused():
    x = ag.tensor([1.0, 2.0])
    with pytest.raises(ag.CaptureError, match="to_backend"):
        ag.capture(lambda t: ag.to_backend(t, "array_api_strict") * 2.0, x)
    model, opt, step = _setup("numpy", "adam", capturable=False)
    before = [_host(p).copy() for p in model.parameters()]
    with pytest.raises(ag.CaptureError, match=r"Adam.step\(\).*capturable=True"):
        ag.capture(step, *_tensors("numpy", *_data(1)[0]))
    # refused before the update: the parameters did not move
    assert all(np.array_equal(b, _host(p)) for b, p in zip(before, model.parameters()))


def test_kernel_arguments_and_device_constants_are_fine():
    def step(x):
        return ag.sum(x * 2.0 + ag.full_like(x, 3.0) - ag.zeros_like(x)) + ag.max(ag.abs(x))

    x = ag.tensor([1.0, -2.0])
    s = ag.capture(step, x)
    assert float(s(ag.tensor([3.0, 4.0]))) == pytest.approx(24.0)


def test_an_ordinary_training_step_never_calls_the_checker(monkeypatch):
    def called(*args, **kwargs):
        raise AssertionError("the capture checker was called outside a recording")

    monkeypatch.setattr(_capture_state, "refuse", called)
    model, opt, step = _setup("numpy", "adam", capturable=False)
    x, y = _tensors("numpy", *_data(1)[0])
    loss, logits = step(x, y)
    x[0, ...] = x[1, ...]
    assert float(loss) > 0 and logits[0, 0].item() == logits.numpy()[0, 0]


def test_the_checker_is_off_outside_a_recording():
    assert not _capture_state.capturing()
    assert ag.tensor([2.0]).item() == 2.0
    with pytest.raises(ag.CaptureError, match="nested"):
        with _capture_state.recording(), _capture_state.recording():
            pass
    assert not _capture_state.capturing() and _capture_state.ACTIVE == 0


# ---------------------------------------------------------------------------------------------
# Inputs, outputs, check()


def test_inputs_of_the_wrong_shape_dtype_or_backend_are_refused_and_change_nothing(backend):
    model, opt, step = _setup(backend, "sgd", capturable=True)
    x, y = _tensors(backend, *_data(1)[0])
    s = ag.capture(step, x, y, warmup=1)
    before = [_host(p).copy() for p in model.parameters()]
    other = "array_api_strict" if backend != "array_api_strict" else "numpy"
    bad = [
        ((x[:8, ...], y[:8]), "shape"),
        ((ag.astype(x, ag.float64), y), "float64"),
        ((ag.tensor(_host(x), backend=other), y), other),
        ((x,), "2 argument"),
        ((_host(x).tolist(), y), "must be a Tensor"),
    ]
    for args, words in bad:
        with pytest.raises(ag.CaptureError, match=words):
            s(*args)
    assert all(np.array_equal(b, _host(p)) for b, p in zip(before, model.parameters()))


def test_constant_arguments_are_frozen():
    s = ag.capture(lambda x, scale: x * scale, ag.tensor([1.0, 2.0]), 3.0, warmup=1)
    np.testing.assert_allclose(_host(s(ag.tensor([2.0, 2.0]), 3.0)), [6.0, 6.0])
    with pytest.raises(ag.CaptureError, match="constant 3.0"):
        s(ag.tensor([2.0, 2.0]), 4.0)


def test_outputs_are_buffers_the_next_call_overwrites(backend):
    def step(x):
        return {"double": x * 2.0, "pair": (ag.sum(x), x + 1.0)}

    s = ag.capture(step, ag.tensor([1.0, 2.0], backend=backend), warmup=1)
    first = s(ag.tensor([3.0, 4.0], backend=backend))
    kept = ag.asarray(first["double"], copy=True)
    second = s(ag.tensor([5.0, 6.0], backend=backend))
    assert second["double"] is first["double"] and second["pair"][0] is first["pair"][0]
    np.testing.assert_allclose(_host(first["double"]), [10.0, 12.0])  # overwritten
    np.testing.assert_allclose(_host(kept), [6.0, 8.0])               # a copy survives
    np.testing.assert_allclose(_host(first["pair"][0]), 11.0)
    assert s.outputs is second


def test_inputs_are_copied_into_the_recorded_buffers():
    seen = []
    s = ag.capture(lambda x: seen.append(x) or x * 1.0, ag.tensor([1.0]), warmup=1)
    x = ag.tensor([7.0])
    s(x)
    assert seen[-1] is s.inputs[0] and seen[-1] is not x
    np.testing.assert_allclose(_host(s.inputs[0]), [7.0])


def test_check_passes_for_a_good_step_and_leaves_one_step_done(backend):
    batches = _data(3)
    model_c, opt_c, step_c = _setup(backend, "adam", capturable=True)
    model_e, opt_e, step_e = _setup(backend, "adam", capturable=False)
    s = ag.capture(step_c, *_tensors(backend, *batches[0]), warmup=2)
    for _ in range(3):
        step_e(*_tensors(backend, *batches[0]))
    result = s.check(*_tensors(backend, *batches[1]))
    assert result.compared >= 2 + 3 * 6 and result.max_abs_diff <= 1e-4
    step_e(*_tensors(backend, *batches[1]))  # check() is one step
    for pc, pe in zip(model_c.parameters(), model_e.parameters()):
        np.testing.assert_allclose(_host(pc), _host(pe), rtol=1e-4, atol=1e-5)
    s(*_tensors(backend, *batches[2]))
    step_e(*_tensors(backend, *batches[2]))
    for pc, pe in zip(model_c.parameters(), model_e.parameters()):
        np.testing.assert_allclose(_host(pc), _host(pe), rtol=1e-4, atol=1e-5)


def test_check_fails_when_the_step_differs_from_the_recording():
    calls = []

    def drifting(x):  # depends on a Python counter: each call differs
        calls.append(1)
        return x * float(len(calls))

    s = ag.capture(drifting, ag.tensor([1.0, 2.0]), warmup=1)
    with pytest.raises(ag.CaptureError, match=r"output 0 \(max \|replay - eager\|"):
        s.check(ag.tensor([1.0, 2.0]))


def test_capture_arguments_are_checked():
    with pytest.raises(ValueError, match="warmup"):
        ag.capture(lambda x: x, ag.tensor([1.0]), warmup=0)
    with pytest.raises(TypeError, match="callable"):
        ag.capture(3, ag.tensor([1.0]))
    with pytest.raises(ag.CaptureError, match="one backend"):
        ag.capture(lambda a, b: a, ag.tensor([1.0]), ag.tensor([1.0], backend="array_api_strict"))
    s = ag.capture(lambda x: x * 2.0, ag.tensor([1.0]))
    assert "staged replay" in repr(s) and s.backend == "numpy" and not s.graph
    assert s.replay == "staged"
    e = ag.capture(lambda x: x * 2.0, ag.tensor([1.0]), replay="eager")
    assert "eager fallback" in repr(e) and e.replay == "eager"


# ---------------------------------------------------------------------------------------------
# CuPy: the CUDA graph itself (run by ci/gpu.sh on a GPU machine)


def _cupy():
    if "cupy" not in AVAILABLE:
        pytest.skip("CuPy with a CUDA device is not available here")
    return ag.get_backend("cupy")


@pytest.mark.gpu
@pytest.mark.parametrize("shapes", [((3, 4), (4, 5)), ((4,), (4, 5)), ((3, 4), (4,)),
                                    ((2, 3, 4), (4, 5)), ((64, 32), (32, 10))])
def test_graph_safe_matmul_matches_cupy(shapes):
    b = _cupy()
    from agnograd import backends
    from agnograd.backends import cuda_graph  # imports CuPy

    xp = b.xp
    rng = np.random.default_rng(0)
    a = b.asarray(rng.normal(size=shapes[0]).astype(np.float32))
    c = b.asarray(rng.normal(size=shapes[1]).astype(np.float32))
    rec = cuda_graph.CudaGraphRecorder(b)
    with rec.session():
        got = cuda_graph.graph_safe_matmul(a, c)
        got_t = cuda_graph.graph_safe_matmul(xp.matrix_transpose(c), xp.matrix_transpose(a)) \
            if a.ndim == 2 and c.ndim == 2 else None
    np.testing.assert_allclose(backends.host_array(got), backends.host_array(xp.matmul(a, c)),
                               rtol=1e-5, atol=1e-5)
    if got_t is not None:
        np.testing.assert_allclose(backends.host_array(got_t),
                                   backends.host_array(xp.matmul(a, c)).T, rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
def test_cupy_step_is_a_cuda_graph_that_checks():
    _cupy()
    batches = _data(3)
    model, opt, step = _setup("cupy", "adam", capturable=True)
    s = ag.capture(step, *_tensors("cupy", *batches[0]))
    assert s.graph and "CUDA graph" in repr(s)
    result = s.check(*_tensors("cupy", *batches[1]))
    assert result.max_abs_diff < 1e-4
    loss, _ = s(*_tensors("cupy", *batches[2]))
    assert np.isfinite(float(loss))


@pytest.mark.gpu
def test_cupy_capture_refuses_host_synchronisation():
    _cupy()
    x = ag.tensor(np.ones(3, np.float32), backend="cupy")
    xp = x._backend.xp
    with pytest.raises(ag.CaptureError, match="Tensor.item"):
        ag.capture(lambda t: ag.sum(t).item(), x)
    assert x._backend.xp is xp  # a capture never changes the Backend
    assert xp.__name__.endswith("cupy")  # named as array-api-compat's, for name checks


# ---------------------------------------------------------------------------------------------
# CuPy's graph-safe namespace, on the CPU: agnograd/backends/cuda_graph.py loaded against a
# stand-in ``cupy`` backed by NumPy, which logs which of its functions each thread calls.


class _FakeCupy:
    """What cuda_graph.py reaches of CuPy: a few functions (NumPy's, logged per thread), the
    dtypes, ``ndarray``, and ``cupy.cuda``'s stream, pool and allocator (doing nothing)."""

    FUNCTIONS = ("matmul", "result_type", "empty", "broadcast_to", "maximum", "minimum", "abs",
                 "where", "zeros", "isnan", "sign", "full", "ascontiguousarray")

    def __init__(self):
        import contextlib
        import threading
        import types

        self.calls = []  # (thread ident, function name)
        mod = types.ModuleType("cupy")
        for name in self.FUNCTIONS:
            setattr(mod, name, self._logged(name, getattr(np, name), threading))
        for name in ("bool_", "int64", "float64", "complex128", "uint8", "ndarray"):
            setattr(mod, name, getattr(np, name))

        class Stream:
            ptr = 0

            def __init__(self, non_blocking=False):
                pass

            def record(self):
                return None

            def wait_event(self, event):
                pass

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

        class MemoryPool:
            def malloc(self, size):  # pragma: no cover - never called: NumPy allocates
                raise AssertionError

        mod.cuda = types.SimpleNamespace(
            Stream=Stream, MemoryPool=MemoryPool, get_current_stream=Stream,
            using_allocator=lambda malloc: contextlib.nullcontext())
        self.module = mod

    def _logged(self, name, fn, threading):
        def call(*args, **kwargs):
            self.calls.append((threading.get_ident(), name))
            return fn(*args, **kwargs)

        return call


class _FakeRecorder:
    """A recorder whose ``gemm`` is NumPy's product (logged per thread)."""

    def __init__(self):
        self.gemms = []

    def gemm(self, a, b, out):
        import threading

        assert a.ndim == b.ndim == out.ndim == 2 and a.dtype == b.dtype == out.dtype
        self.gemms.append(threading.get_ident())
        out[...] = a @ b


@pytest.fixture
def fake_cuda_graph(monkeypatch):
    """(agnograd/backends/cuda_graph.py run against a fake cupy, the fake) -- loaded under its
    own name but not registered in sys.modules, so nothing else sees it."""
    import importlib.util
    import sys

    from agnograd import backends

    fake = _FakeCupy()
    path = Path(backends.__file__).parent / "cuda_graph.py"
    spec = importlib.util.spec_from_file_location("agnograd.backends.cuda_graph", path)
    mod = importlib.util.module_from_spec(spec)
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "cupy", fake.module)  # only while it imports
        spec.loader.exec_module(mod)
    return mod, fake


def _namespace_cases(xp):
    rng = np.random.default_rng(0)
    x = xp.asarray(np.array([-2.0, -0.5, 0.0, 0.5, 2.0, np.nan]))
    z = xp.asarray(np.array([0j, 3 - 4j, -1 + 0j]))
    i = xp.asarray(np.array([-3, 0, 5]))
    cases = {
        "clip": lambda ns: ns.clip(x, -1.0, 1.0),
        "clip_min": lambda ns: ns.clip(x, min=0.0),
        "clip_none": lambda ns: ns.clip(i),
        "sign": lambda ns: ns.sign(x),
        "sign_complex": lambda ns: ns.sign(z),
        "sign_int": lambda ns: ns.sign(i),
        "asarray_float": lambda ns: ns.asarray(2.5),
        "asarray_int": lambda ns: ns.asarray(3),
        "asarray_bool": lambda ns: ns.asarray(True),
        "asarray_dtype": lambda ns: ns.asarray(2, dtype=xp.float32),
    }
    for sa, sb in [((3, 4), (4, 5)), ((4,), (4, 5)), ((3, 4), (4,)), ((4,), (4,)),
                   ((2, 3, 4), (4, 5)), ((2, 1, 3, 4), (5, 4, 2)), ((3, 0), (0, 2))]:
        a = xp.asarray(rng.normal(size=sa))
        b = xp.asarray(rng.normal(size=sb).astype(np.float32))
        cases[f"matmul{sa}{sb}"] = lambda ns, a=a, b=b: ns.matmul(a, b)
    return cases


def _same(got, want, name):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype, name
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, equal_nan=True, err_msg=name)


# array-api-compat's sign of a complex 0 divides by zero (and fixes the result after).
@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_graph_safe_namespace_is_the_base_outside_a_recording(fake_cuda_graph):
    import array_api_compat.numpy as base

    cg, fake = fake_cuda_graph
    ns = cg.graph_safe_namespace(base)
    assert ns is not base and ns.__name__ == base.__name__
    assert ns.exp is base.exp and ns.linalg is base.linalg  # all but four are the base's own
    for name, case in _namespace_cases(base).items():
        _same(case(ns), case(base), name)
    assert fake.calls == []  # outside a recording no graph-safe function ran


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_graph_safe_namespace_takes_the_safe_path_only_in_the_recording_thread(fake_cuda_graph):
    import threading

    import array_api_compat.numpy as base

    cg, fake = fake_cuda_graph
    ns = cg.graph_safe_namespace(base)
    cases = _namespace_cases(base)
    rec = _FakeRecorder()
    inside, outside = {}, {}
    entered, checked = threading.Event(), threading.Event()

    def recording_thread():
        with cg.recording(rec):
            for name, case in cases.items():
                inside[name] = case(ns)
            entered.set()
            checked.wait(10)  # stay recording while the main thread runs the same calls
        inside["after"] = cg._active()

    t = threading.Thread(target=recording_thread)
    t.start()
    assert entered.wait(10)
    for name, case in cases.items():
        outside[name] = case(ns)
    checked.set()
    t.join(10)
    me = threading.get_ident()
    # This thread, while the other was recording: the namespace's own functions, no gemm.
    assert me not in rec.gemms and not [f for tid, f in fake.calls if tid == me]
    # The recording thread: matrix products through the recorder, the masks-free clip/sign,
    # Python numbers as fills -- with the standard's results all the same.
    assert set(rec.gemms) == {t.ident}
    used = {f for tid, f in fake.calls if tid == t.ident}
    assert {"maximum", "minimum", "where", "isnan", "full", "empty", "result_type"} <= used
    for name in cases:
        _same(inside[name], outside[name], name)
        _same(outside[name], cases[name](base), name)
    assert inside["after"] is None and cg._active() is None


def test_cuda_graph_session_changes_nothing_shared(fake_cuda_graph, monkeypatch):
    import threading
    import types

    import array_api_compat.numpy as base

    cg, fake = fake_cuda_graph
    cublas = types.SimpleNamespace(
        create=lambda: 1, setStream=lambda handle, ptr: None, destroy=lambda handle: None,
        sgemm=None, dgemm=None, cgemm=None, zgemm=None, CUBLAS_OP_N=0, CUBLAS_OP_T=1)
    monkeypatch.setattr(cg, "_bindings", lambda: cublas)
    monkeypatch.setattr(cg, "_loaded_cublas", lambda: None)
    b = ag.Backend("cupy", cg.graph_safe_namespace(base), np.ndarray)
    xp = b.xp
    slots = {name: getattr(b, name) for name in type(b).__slots__ if hasattr(b, name)}
    r1, r2 = cg.CudaGraphRecorder(b), cg.CudaGraphRecorder(b)
    seen = []

    def other():
        seen.append(cg._active())

    with r1.session():
        assert cg._active() is r1 and b.xp is xp
        with r2.session():  # nested: the inner recorder, then the outer one again
            assert cg._active() is r2
        assert cg._active() is r1
        t = threading.Thread(target=other)
        t.start()
        t.join(10)
    assert seen == [None] and cg._active() is None
    assert {name: getattr(b, name) for name in slots} == slots  # the Backend never changed
    with pytest.raises(ag.BackendError, match="cupy"):
        cg.CudaGraphRecorder(ag.get_backend("array_api_strict"))


def test_backends_param_includes_numpy():
    assert any(p.values[0] == "numpy" for p in BACKENDS)


def test_jit_of_a_function_returning_none_records_and_replays():
    seen = []
    f = ag.jit(lambda x: seen.append(1))  # (a side effect: a one-shot recording, traced each call)
    for _ in range(3):
        assert f(ag.tensor(1.0)) is None
    g = ag.jit(lambda x: None)
    for _ in range(3):
        assert g(ag.tensor(1.0)) is None
