"""The Dask backend and ``agnograd.dask``: the op table on Dask against NumPy, no early compute,
task counts, the native and per-matrix linear algebra paths, the chunked scatter-add, the lazy
training loop, the data-parallel helper, and a 2-worker ``distributed.LocalCluster``.
"""

from __future__ import annotations

import math
import subprocess
import sys
import zlib

import numpy as np
import pytest

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")

import agnograd as ag  # noqa: E402
from agnograd.backends import get_backend, scatter_add_standard  # noqa: E402

from .op_table import OPS, cases_of  # noqa: E402
from .op_table.core import draw  # noqa: E402

# ---------------------------------------------------------------------------------------------
# The one list of op-table records that do not run on Dask, and why (see the capability table in
# docs/backends.md). "error": agnograd raises an actionable error (checked below); "xfail": a
# known gap without a workaround yet.
DASK_GAPS: dict[str, tuple[str, str]] = {
    "getitem-mask": ("error", "a boolean mask gives a data-dependent (NaN) shape on Dask: "
                              "ValueError naming getitem, 'dask' and ag.where(mask, x, 0.0)"),
    "getitem-int-arrays-2d": ("xfail", "Dask has no n-d fancy indexing (x[i, j] with two index "
                                       "arrays); index a flattened view with one array instead"),
    "repeat-array": ("error", "an array of repeats gives a data-dependent output shape: "
                              "NotImplementedError naming repeat, 'dask' and what to do"),
}

RTOL, ATOL = 1e-12, 1e-13


class ComputeCalled(AssertionError):
    """Raised by the scheduler installed while graphs are built: something computed early."""


def _refuse(*args, **kwargs):
    raise ComputeCalled("a Dask graph was computed while agnograd was only building it")


def no_compute():
    """Within the block every Dask compute raises (forward and backward must only build graphs)."""
    return dask.config.set(scheduler=_refuse)


def _halves(a: np.ndarray):
    """Two chunks along every axis (where it has two elements): the multi-chunk case."""
    return da.from_array(a, chunks=tuple(max(1, math.ceil(n / 2)) for n in a.shape))


def _value_and_grads(fn, host, backend, seed):
    """fn's value and the gradients of sum(fn(x) * w) for a fixed random w, on ``backend``."""
    if backend == "dask":
        xs = [ag.tensor(_halves(a), requires_grad=True) for a in host]
    else:
        xs = [ag.tensor(a, requires_grad=True) for a in host]
    y = fn(*xs)
    if not y.requires_grad:
        return y.data, []
    w = np.random.default_rng(seed).uniform(0.5, 1.5, size=y.shape)
    loss = ag.sum(y * ag.tensor(w, backend=y.backend))
    (ag.real(loss) if loss.dtype.kind == "c" else loss).backward()  # fft records: complex y
    return y.data, [None if x.grad is None else x.grad.data for x in xs]


CASES = cases_of(OPS)
IDS = [f"{op.name}-{'x'.join(str(s) for s in shapes) or 'scalar'}" for op, shapes in CASES]


def _marks(op):
    kind, reason = DASK_GAPS.get(op.name, (None, ""))
    return [pytest.mark.xfail(reason=reason, strict=True)] if kind == "xfail" else []


@pytest.mark.parametrize(("op", "shapes"), [pytest.param(op, s, marks=_marks(op)) for op, s in CASES],
                         ids=IDS)
def test_op_table_on_dask_matches_numpy(op, shapes):
    """Float64 values and gradients on Dask (inputs in two chunks per axis) equal NumPy's to
    rtol 1e-12, and building forward + backward computes nothing."""
    if DASK_GAPS.get(op.name, ("",))[0] == "error":
        pytest.skip("checked by test_gap_errors_are_actionable")
    seed = zlib.crc32(f"{op.name}{shapes}".encode())
    host = draw(op, shapes, seed)
    ref_y, ref_g = _value_and_grads(op.fn, host, "numpy", seed)
    with no_compute():
        y, grads = _value_and_grads(op.fn, host, "dask", seed)
    out = dask.compute(y, *grads, scheduler="sync")
    # ag.special computes with SciPy on NumPy, with its approximations on Dask: their tolerance
    rtol, atol = (RTOL, ATOL) if op.f64_rtol <= 1e-10 else (op.f64_rtol, op.f64_atol)
    np.testing.assert_allclose(out[0], ref_y, rtol=rtol, atol=atol)
    assert len(out) - 1 == len(ref_g)
    for got, ref in zip(out[1:], ref_g):
        assert (got is None) == (ref is None)
        if ref is not None:
            np.testing.assert_allclose(got, ref, rtol=rtol, atol=atol)


def test_detect_anomaly_computes_once():
    """detect_anomaly()'s finite checks stay lazy during the walk and are read back in one
    compute at its end (not one per node)."""
    calls = []

    def counting(dsk, keys, **kwargs):
        calls.append(1)
        return dask.get(dsk, keys, **kwargs)

    a = np.array([[0.0, 1.0], [4.0, 9.0]])
    x = ag.tensor(da.from_array(a, chunks=1), requires_grad=True)
    with ag.detect_anomaly(), dask.config.set(scheduler=counting), np.errstate(divide="ignore"):
        loss = ag.sum(ag.tanh(ag.sqrt(x)) * 3.0)
        with pytest.raises(FloatingPointError, match="'sqrt'"):
            loss.backward()
        assert len(calls) == 1 and x.grad is None
        ag.sum(ag.tanh(ag.sqrt(x + 1.0)) * 3.0).backward()
        assert len(calls) == 2  # the good backward: one compute for its checks, nothing else
    assert x.grad is not None


def test_gap_errors_are_actionable():
    errors = [op for op in OPS if DASK_GAPS.get(op.name, ("",))[0] == "error"]
    assert sorted(op.name for op in errors) == ["getitem-mask", "repeat-array"]
    x = ag.tensor(da.ones((3, 2), chunks=2), requires_grad=True)
    with pytest.raises(NotImplementedError, match=r"repeat on the 'dask' backend.*Python int"):
        ag.repeat(x, ag.tensor(da.from_array(np.array([2, 0, 1]))), axis=0)
    with pytest.raises(ValueError, match=r"getitem on the 'dask' backend.*ag\.where\(mask, x, 0\.0\)"):
        x[x > 0]
    assert x.detach()[x > 0].shape[0] != x.detach()[x > 0].shape[0]  # no grad: a lazy NaN size


def test_documented_workarounds_stay_lazy_and_exact():
    """The capability table's advice: ag.where for masks, one flat index array for x[i, j], and
    ones_like before a plain sum keeps the row chunks of the cotangent."""
    rng = np.random.default_rng(5)
    a = rng.standard_normal((6, 4))
    i, j = np.array([0, 5, 5, 2]), np.array([3, 0, 0, 1])
    x = ag.tensor(da.from_array(a, chunks=(3, 2)), requires_grad=True)
    ref = ag.tensor(a, requires_grad=True)
    for t in (x, ref):
        with no_compute():
            flat = ag.reshape(t, (-1,))[ag.tensor(i * 4 + j, backend=t.backend)]
            loss = ag.sum(ag.where(t > 0, t, 0.0) ** 2) + ag.sum(flat * flat)
            loss.backward()
    np.testing.assert_allclose(x.grad.data.compute(), ref.grad.numpy(), rtol=RTOL)
    X = ag.tensor(da.ones((40, 3), chunks=(10, 3)))
    v = ag.tensor(da.ones((2, 2)))

    def row_chunks(loss_of):  # the row chunks of the cotangent reaching h = X @ w
        return ag.grad(lambda h: loss_of(h @ v))(X @ ag.tensor(da.ones((3, 2)))).data.chunks[0]

    # sum and mean re-expand their cotangent as zeros_like(x) + g on Dask: x's chunks are kept
    # (broadcast_to would make one batch-long chunk)
    assert row_chunks(lambda out: ag.sum(out)) == (10,) * 4
    assert row_chunks(lambda out: ag.mean(out)) == (10,) * 4
    assert row_chunks(lambda out: ag.sum(out * ag.ones_like(out))) == (10,) * 4


def test_gap_list_names_table_records():
    names = {op.name for op in OPS}
    assert set(DASK_GAPS) <= names, set(DASK_GAPS) - names


# ---------------------------------------------------------------------------------------------
# Linear algebra: Dask's own blocked/TSQR paths and the per-matrix path


def _spd(n, seed=0):
    q = np.random.default_rng(seed).uniform(-1, 1, size=(n, n))
    return q @ q.T + n * np.eye(n)


@pytest.mark.parametrize("chunks", [2, 3, 4], ids=["square-blocks", "uneven", "one-block"])
@pytest.mark.parametrize("upper", [False, True])
def test_cholesky_factor_and_gradient(chunks, upper):
    """array-api-compat's Dask cholesky returns the upper factor by default; ours the lower (or
    upper=True's upper), on Dask's blocked path (equal square blocks) and per matrix."""
    a = _spd(4)
    x = ag.tensor(da.from_array(a, chunks=chunks), requires_grad=True)
    with no_compute():
        f = ag.linalg.cholesky(x, upper=upper)
        ag.sum(f * f * ag.tensor(da.from_array(np.arange(16.0).reshape(4, 4)))).backward()
    ref = ag.tensor(a, requires_grad=True)
    fr = ag.linalg.cholesky(ref, upper=upper)
    ag.sum(fr * fr * ag.tensor(np.arange(16.0).reshape(4, 4))).backward()
    got, g = dask.compute(f.data, x.grad.data)
    np.testing.assert_allclose(got, fr.numpy(), rtol=RTOL, atol=ATOL)
    assert np.allclose(got, np.triu(got) if upper else np.tril(got))
    np.testing.assert_allclose(g, ref.grad.numpy(), rtol=1e-10, atol=ATOL)


@pytest.mark.parametrize("chunks", [2, 3], ids=["square-blocks", "uneven"])
def test_inv_and_solve_paths(chunks):
    a = _spd(4, 1) - 2 * np.eye(4)
    b = np.random.default_rng(2).uniform(-1, 1, size=(4, 3))
    xa = ag.tensor(da.from_array(a, chunks=chunks), requires_grad=True)
    xb = ag.tensor(da.from_array(b, chunks=(chunks, 3)), requires_grad=True)
    with no_compute():
        loss = ag.sum(ag.linalg.inv(xa) ** 2) + ag.sum(ag.linalg.solve(xa, xb) ** 2)
        loss.backward()
    ra, rb = ag.tensor(a, requires_grad=True), ag.tensor(b, requires_grad=True)
    ref = ag.sum(ag.linalg.inv(ra) ** 2) + ag.sum(ag.linalg.solve(ra, rb) ** 2)
    ref.backward()
    out = dask.compute(loss.data, xa.grad.data, xb.grad.data)
    for got, want in zip(out, (ref.numpy(), ra.grad.numpy(), rb.grad.numpy())):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=ATOL)


def test_tall_skinny_svd_and_qr_use_dask_tsqr():
    """A tall-and-skinny matrix in row blocks goes through Dask's TSQR (it scales with the rows);
    values and gradients of gauge-invariant functions match NumPy."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal((40, 3))
    x = ag.tensor(da.from_array(a, chunks=(10, 3)), requires_grad=True)

    def f(t):
        u, s, vh = ag.linalg.svd(t, full_matrices=False)
        q, r = ag.linalg.qr(t)
        return ag.sum((u * u) @ ((vh * vh) * s[:, None])) + ag.sum((q * q) @ (r * r)) + ag.sum(
            ag.linalg.svdvals(t) ** 3)

    with no_compute():
        loss = f(x)
        loss.backward()
        # TSQR keeps the row blocks (the per-matrix path would make U and Q one 40-row block)
        assert ag.linalg.svd(x, full_matrices=False).U.data.chunks[0] == (10,) * 4
        assert ag.linalg.qr(x).Q.data.chunks[0] == (10,) * 4
    assert x.grad.data.chunks[0] == (10,) * 4
    ref = ag.tensor(a, requires_grad=True)
    rl = f(ref)
    rl.backward()
    value, g = dask.compute(loss.data, x.grad.data)
    np.testing.assert_allclose(value, rl.numpy(), rtol=1e-10)
    np.testing.assert_allclose(g, ref.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_stacked_linalg_keeps_batch_chunks():
    """Stacks run one block of matrices per task: batch chunks survive."""
    a = np.stack([_spd(3, s) for s in range(6)])
    x = ag.tensor(da.from_array(a, chunks=(2, 3, 3)), requires_grad=True)
    with no_compute():
        w, v = ag.linalg.eigh(x)
        y = ag.linalg.det(x) + ag.sum(w, axis=-1)
        ag.sum(y).backward()
    assert y.data.chunks == ((2, 2, 2),)
    ref = ag.tensor(a, requires_grad=True)
    rw, _ = ag.linalg.eigh(ref)
    ag.sum(ag.linalg.det(ref) + ag.sum(rw, axis=-1)).backward()
    np.testing.assert_allclose(x.grad.data.compute(), ref.grad.numpy(), rtol=1e-10)


def test_eye_with_more_columns_than_rows():
    """Dask 2026.8's eye(n, m) with m != n loses blocks; the namespace builds it elementwise."""
    xp = get_backend("dask").xp
    for n, m, k in [(3, 4, 0), (4, 3, 1), (2, 5, -1), (3, 3, 0)]:
        np.testing.assert_array_equal(xp.eye(n, m, k=k, dtype=xp.float64).compute(),
                                      np.eye(n, m, k=k))


# ---------------------------------------------------------------------------------------------
# Scatter-add: the chunked Dask path agrees with the standard-only fallback


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_dask_scatter_add_agrees_with_standard_fallback(dtype):
    rng = np.random.default_rng(4)
    n = 7
    index = rng.integers(0, n - 2, size=50)  # repeats, and two positions never hit
    values = rng.uniform(-1, 1, size=50).astype(dtype)
    b = get_backend("dask")
    di, dv = da.from_array(index, chunks=8), da.from_array(values, chunks=8)
    with no_compute():
        fast = b.scatter_add(n, di, dv)
        standard = scatter_add_standard(b.xp, n, di, dv)
    fast, standard = dask.compute(fast, standard)
    want = np.bincount(index, weights=values, minlength=n).astype(dtype)
    assert fast.dtype == standard.dtype == np.dtype(dtype)
    np.testing.assert_allclose(fast, standard, rtol=1e-6 if dtype == "float32" else 1e-14)
    np.testing.assert_allclose(fast, want, rtol=1e-6 if dtype == "float32" else 1e-14)
    # Linear in the chunks: the per-chunk partials plus a tree sum.
    assert ag.dask.task_count(b.scatter_add(n, di, dv)) < 4 * di.numblocks[0]


# ---------------------------------------------------------------------------------------------
# The lazy path: an MLP on row chunks


D, H, C = 6, 8, 3


def _params(seed=0):
    rng = np.random.default_rng(seed)
    shapes = [(D, H), (H,), (H, H), (H,), (H, C), (C,)]
    return [rng.standard_normal(s) * 0.5 for s in shapes]


def _data(n, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, D)), rng.standard_normal((n, C))


def mlp_loss(ps, X, y):
    """Mean squared error of a 3-layer tanh network (a mean over the samples of X)."""
    w1, b1, w2, b2, w3, b3 = ps
    h = ag.tanh(X @ w1 + b1)
    h = ag.tanh(h @ w2 + b2)
    return ag.mean((h @ w3 + b3 - y) ** 2)


def mlp_sum_loss(ps, X, y):
    return mlp_loss(ps, X, y) * X.shape[0]


def _numpy_reference(ps_host, Xh, yh, fn=mlp_loss):
    ps = [ag.tensor(p, requires_grad=True) for p in ps_host]
    loss = fn(ps, ag.tensor(Xh), ag.tensor(yh))
    loss.backward()
    return loss.item(), [p.grad.numpy() for p in ps]


def _lazy(ps_host, Xh, yh, rows):
    ps = [ag.tensor(da.from_array(p), requires_grad=True) for p in ps_host]
    X = ag.tensor(da.from_array(Xh, chunks=(rows, D)))
    y = ag.tensor(da.from_array(yh, chunks=(rows, C)))
    return ps, X, y


def test_building_forward_and_backward_computes_nothing():
    ps, X, y = _lazy(_params(), *_data(200), rows=50)
    with no_compute():
        loss = mlp_loss(ps, X, y)
        loss.backward()
        assert all(p.grad is not None and p.grad.backend == "dask" for p in ps)
        repr(loss)  # printing a lazy tensor does not compute either
        with pytest.raises(ComputeCalled):  # the guard works
            loss.data.compute()


def test_task_count_per_chunk_is_bounded():
    """Forward + backward of the MLP costs a bounded number of tasks per row chunk (about 30)."""
    ps_host = _params()
    counts = {}
    for chunks in (4, 8):
        ps, X, y = _lazy(ps_host, *_data(80 * chunks), rows=80)
        loss = mlp_loss(ps, X, y)
        loss.backward()
        counts[chunks] = ag.dask.task_count(loss, *(p.grad for p in ps))
    per_chunk = (counts[8] - counts[4]) / 4
    assert 0 < per_chunk <= 40, counts


def test_loss_and_grads_match_numpy():
    ps_host, (Xh, yh) = _params(), _data(300)
    ref_value, ref_grads = _numpy_reference(ps_host, Xh, yh)
    ps, X, y = _lazy(ps_host, Xh, yh, rows=64)
    value, grads = ag.dask.loss_and_grads(mlp_loss(ps, X, y), ps, scheduler="threads")
    assert value.backend == "numpy" and value.ndim == 0
    np.testing.assert_allclose(value.item(), ref_value, rtol=RTOL)
    for g, p, want in zip(grads, ps, ref_grads):
        np.testing.assert_allclose(g.numpy(), want, rtol=RTOL, atol=ATOL)
        assert p.grad.backend == "dask" and ag.dask.task_count(p.grad) == p.data.numblocks[0]


def test_persist_keeps_the_graph_from_growing():
    """SGD with momentum on Dask parameters: after persist, parameters and optimizer state are one
    task per chunk, step after step, and the trajectory equals NumPy's."""
    ps_host, (Xh, yh) = _params(), _data(120)
    ps, X, y = _lazy(ps_host, Xh, yh, rows=40)
    ref = [ag.tensor(p, requires_grad=True) for p in ps_host]
    opt = ag.optim.SGD(ps, lr=0.05, momentum=0.9)
    ref_opt = ag.optim.SGD(ref, lr=0.05, momentum=0.9)
    for _ in range(3):
        opt.zero_grad()
        ag.dask.loss_and_grads(mlp_loss(ps, X, y), ps)
        opt.step()
        ag.dask.persist(ps, opt)
        assert ag.dask.task_count(*ps) == len(ps)
        ref_opt.zero_grad()
        mlp_loss(ref, ag.tensor(Xh), ag.tensor(yh)).backward()
        ref_opt.step()
    state = [t for s in opt.state.values() for t in s.values() if isinstance(t, ag.Tensor)]
    assert state and ag.dask.task_count(*state) == len(state)
    for p, r in zip(ps, ref):
        np.testing.assert_allclose(p.data.compute(), r.numpy(), rtol=1e-11, atol=ATOL)


def test_compute_helper_and_errors():
    x = ag.tensor(da.from_array(np.arange(6.0), chunks=2), requires_grad=True)
    y = ag.sum(ag.exp(x))
    y.backward()
    value, none, grad = ag.dask.compute(y, None, x.grad)
    assert none is None and value.backend == "numpy"
    np.testing.assert_allclose(grad.numpy(), np.exp(np.arange(6.0)))
    # several outputs go through one flat concatenation per dtype: shapes and dtypes come back
    m = ag.tensor(da.from_array(np.arange(12.0).reshape(3, 4), chunks=2))
    outs = ag.dask.compute(y, m, ag.astype(m, ag.float32), ag.astype(m, ag.int64), x.grad)
    for got, want in zip(outs, (np.sum(np.exp(np.arange(6.0))), np.arange(12.0).reshape(3, 4),
                                np.arange(12.0, dtype=np.float32).reshape(3, 4),
                                np.arange(12).reshape(3, 4), np.exp(np.arange(6.0)))):
        assert got.numpy().dtype == want.dtype and got.shape == want.shape
        np.testing.assert_allclose(got.numpy(), want)
    with pytest.raises(TypeError, match="ag.dask.compute: expected a Dask array"):
        ag.dask.compute(ag.tensor([1.0]))
    with pytest.raises(ValueError, match="must be a scalar"):
        ag.dask.loss_and_grads(ag.exp(x), [x])


# ---------------------------------------------------------------------------------------------
# The data-parallel helper


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_data_parallel_matches_lazy_and_numpy(reduction):
    fn = mlp_loss if reduction == "mean" else mlp_sum_loss
    ps_host, (Xh, yh) = _params(), _data(250)
    ref_value, ref_grads = _numpy_reference(ps_host, Xh, yh, fn)
    ps, X, y = _lazy(ps_host, Xh, yh, rows=64)  # uneven chunks: 64, 64, 64, 58
    lazy_value, lazy_grads = ag.dask.loss_and_grads(fn(ps, X, y), ps)
    with no_compute():
        pending = ag.dask.value_and_grad(fn, ps_host, X, y, reduction=reduction, compute=False)
    value, grads = ag.dask.value_and_grad(fn, ps_host, X, y, reduction=reduction)
    assert value.backend == "numpy" and [g.shape for g in grads] == [p.shape for p in ps_host]
    for v in (value.item(), lazy_value.item()):
        np.testing.assert_allclose(v, ref_value, rtol=RTOL)
    for g, lg, want in zip(grads, lazy_grads, ref_grads):
        np.testing.assert_allclose(g.numpy(), want, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(lg.numpy(), want, rtol=RTOL, atol=ATOL)
    # far fewer tasks than the lazy graph: one per chunk plus the input blocks and the tree sum
    lazy_tasks = ag.dask.task_count(fn(ps, X, y))
    assert ag.dask.task_count(pending) <= 4 * X.data.numblocks[0] + 4 < lazy_tasks


def test_data_parallel_without_labels_and_with_tensors():
    Xh, _ = _data(90)
    w = ag.tensor(np.linspace(-1, 1, D), requires_grad=True)
    X = ag.tensor(da.from_array(Xh, chunks=(30, 3)))  # column chunks are merged per row block
    value, (g,) = ag.dask.value_and_grad(lambda ps, x: ag.mean(ag.tanh(x @ ps[0]) ** 2), [w], X)
    ref = ag.mean(ag.tanh(ag.tensor(Xh) @ w) ** 2)
    ref.backward()
    np.testing.assert_allclose(value.item(), ref.item(), rtol=RTOL)
    np.testing.assert_allclose(g.numpy(), w.grad.numpy(), rtol=RTOL)
    with pytest.raises(ValueError, match="reduction must be 'mean' or 'sum'"):
        ag.dask.value_and_grad(lambda ps, x: ag.sum(x), [w], X, reduction="max")
    with pytest.raises(TypeError, match="expected a Dask array"):
        ag.dask.value_and_grad(lambda ps, x: ag.sum(x), [w], Xh)


@pytest.mark.gpu
def test_data_parallel_and_scatter_add_on_cupy_chunks():
    """CuPy chunks: each task runs the engine on CuPy; parameters on NumPy or on CuPy."""
    if "cupy" not in ag.available_backends():
        pytest.skip("CuPy with a CUDA device is not available here")
    import cupy

    ps_host, (Xh, yh) = _params(), _data(200)
    ref_value, ref_grads = _numpy_reference(ps_host, Xh, yh)
    X = da.from_array(cupy.asarray(Xh), chunks=(50, D), asarray=False)
    y = da.from_array(cupy.asarray(yh), chunks=(50, C), asarray=False)
    for params, home in ((ps_host, "numpy"), ([cupy.asarray(p) for p in ps_host], "cupy")):
        value, grads = ag.dask.value_and_grad(mlp_loss, params, X, y)
        assert value.backend == home and all(g.backend == home for g in grads)
        np.testing.assert_allclose(value.item(), ref_value, rtol=1e-10)
        for g, want in zip(grads, ref_grads):
            np.testing.assert_allclose(g.numpy(), want, rtol=1e-9, atol=1e-12)
    index = np.array([3, 0, 3, 1, 4, 4, 4])
    values = np.linspace(-1.0, 1.0, 7)
    out = get_backend("dask").scatter_add(
        6, da.from_array(cupy.asarray(index), chunks=3, asarray=False),
        da.from_array(cupy.asarray(values), chunks=3, asarray=False)).compute()
    assert type(out) is cupy.ndarray
    np.testing.assert_allclose(cupy.asnumpy(out), np.bincount(index, values, minlength=6))


def test_import_agnograd_does_not_import_dask():
    code = "import sys, agnograd as ag; assert ag.dask and 'dask' not in sys.modules, 'imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------------------------
# distributed


def test_local_cluster_two_workers():
    """Both helpers on a 2-worker LocalCluster (thread workers: seconds, not a process pool)."""
    distributed = pytest.importorskip("distributed")
    ps_host, (Xh, yh) = _params(), _data(160)
    ref_value, ref_grads = _numpy_reference(ps_host, Xh, yh)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster):
        assert len(cluster.workers) == 2
        ps, X, y = _lazy(ps_host, Xh, yh, rows=40)
        value, grads = ag.dask.value_and_grad(mlp_loss, ps_host, X, y)
        lazy_value, lazy_grads = ag.dask.loss_and_grads(mlp_loss(ps, X, y), ps)
    for v in (value.item(), lazy_value.item()):
        np.testing.assert_allclose(v, ref_value, rtol=RTOL)
    for g, lg, want in zip(grads, lazy_grads, ref_grads):
        np.testing.assert_allclose(g.numpy(), want, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(lg.numpy(), want, rtol=RTOL, atol=ATOL)
