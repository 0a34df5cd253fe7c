"""Issue 15, "no silent wrong gradients": each class of silent error, closed for all its members.

A. cross_entropy with labels outside 0..C-1 (loss 0 with a nonzero gradient before).
B. checkpoint dropping the gradients of tensors its function reads by closure or as parameters.
C. checkpoint recomputing with other random numbers than its forward pass drew.
"""

from __future__ import annotations

import numpy as np
import pytest

import agnograd as ag
import agnograd.nn as nn
import agnograd.nn.functional as F
from agnograd.capture import _state as _capture_state

HOST_BACKENDS = [b for b in ("numpy", "array_api_strict") if b in ag.available_backends()]


# ---------------------------------------------------------------------------------------------
# A. labels out of range


@pytest.mark.parametrize("backend", HOST_BACKENDS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("bad", ["n", "n+5", "-1", "-n"])
def test_out_of_range_label_raises_naming_label_position_and_class_count(backend, reduction, bad):
    c = 3
    value = {"n": c, "n+5": c + 5, "-1": -1, "-n": -c}[bad]
    with ag.default_backend(backend):
        z = ag.tensor(np.zeros((4, c)), requires_grad=True)
        labels = ag.tensor(np.array([0, 2, value, 1]))
    with pytest.raises(IndexError, match=rf"cross_entropy: label {value} at position 2 is out of "
                                         rf"range for {c} classes \(valid: 0\.\.{c - 1}\)"):
        F.cross_entropy(z, labels, reduction=reduction)


@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_any_batch_with_a_bad_label_raises_and_names_the_first(backend):
    """The class, not one example: random batches, random bad positions and values, any
    integer dtype; every one raises naming the first bad position, and every valid batch gives
    the loss of its one-hot probabilities."""
    rng = np.random.default_rng(15)
    for trial in range(40):
        n, c = int(rng.integers(1, 9)), int(rng.integers(1, 6))
        dtype = [np.int8, np.int16, np.int32, np.int64, np.uint8][trial % 5]
        labels = rng.integers(0, c, size=n)
        logits = rng.normal(size=(n, c))
        with ag.default_backend(backend):
            z = ag.tensor(logits, requires_grad=True)
            if trial % 2:  # valid: same loss and gradient as the probability target
                y = F.cross_entropy(z, ag.tensor(labels.astype(dtype)), reduction="sum")
                y.backward()
                z2 = ag.tensor(logits, requires_grad=True)
                y2 = F.cross_entropy(z2, ag.tensor(np.eye(c)[labels]), reduction="sum")
                y2.backward()
                np.testing.assert_allclose(y.numpy(), y2.numpy(), rtol=1e-12)
                np.testing.assert_allclose(z.grad.numpy(), z2.grad.numpy(), rtol=1e-12)
                continue
            k = int(rng.integers(1, n + 1))
            where = np.sort(rng.choice(n, size=k, replace=False))
            lo = -5 if dtype is not np.uint8 else c
            values = rng.choice([v for v in range(lo, c + 6) if not 0 <= v < c], size=k)
            labels[where] = values
            with pytest.raises(IndexError, match=rf"label {labels[where[0]]} at position "
                                                 rf"{where[0]} is out of range for {c} classes"):
                F.cross_entropy(z, ag.tensor(labels.astype(dtype)))


@pytest.mark.parametrize("backend", HOST_BACKENDS)
@pytest.mark.parametrize("nocheck", [False, True])
def test_ignore_index_is_not_out_of_range_but_other_bad_labels_still_are(monkeypatch, backend,
                                                                        nocheck):
    """ignore_index (-100 by default, or a class) contributes 0 loss and 0 gradient, never the
    out-of-range error; another bad label in the same batch still raises (host read) or gives
    NaN in its row only (no cheap read), also with weight and label_smoothing."""
    if nocheck:
        monkeypatch.setattr(F, "_can_check_on_host", lambda labels: False)
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(4, 3))
    with ag.default_backend(backend):
        assert ag.tensor([1.0]).backend == backend
        for kw in ({}, {"weight": ag.tensor([0.5, 1.0, 2.0])}, {"label_smoothing": 0.1}):
            z = ag.tensor(logits.tolist(), requires_grad=True)
            y = F.cross_entropy(z, ag.tensor([0, -100, 2, 1]), reduction="none", **kw)
            ag.sum(y).backward()
            out, g = y.numpy(), z.grad.numpy()
            assert out[1] == 0 and (g[1] == 0).all() and np.isfinite(out).all()
            z2 = ag.tensor(logits[[0, 2, 3]].tolist(), requires_grad=True)  # the same without the ignored row
            y2 = F.cross_entropy(z2, ag.tensor([0, 2, 1]), reduction="none", **kw)
            ag.sum(y2).backward()
            np.testing.assert_allclose(out[[0, 2, 3]], y2.numpy(), rtol=1e-12)
            np.testing.assert_allclose(g[[0, 2, 3]], z2.grad.numpy(), rtol=1e-12)
            bad = ag.tensor([0, -100, 5, 1])
            if nocheck:
                z.grad = None
                y = F.cross_entropy(z, bad, reduction="none", **kw)
                ag.sum(y).backward()
                assert np.isnan(y.numpy()[2]) and np.isfinite(y.numpy()[[0, 1, 3]]).all()
                assert np.isnan(z.grad.numpy()[2]).all() and (z.grad.numpy()[1] == 0).all()
            else:
                with pytest.raises(IndexError, match=r"cross_entropy: label 5 at position 2 is out "
                                                     r"of range for 3 classes"):
                    F.cross_entropy(z, bad, **kw)
            with pytest.raises(IndexError) if not nocheck else _nothing():
                # -100 is an ordinary bad label once ignore_index is another value
                y = F.cross_entropy(z, ag.tensor([0, -100, 2, 1]), ignore_index=7, **kw)
            if nocheck:
                assert np.isnan(y.numpy())


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def test_boolean_and_float_labels_are_refused_with_what_to_do():
    z = ag.tensor(np.zeros((2, 3)), requires_grad=True)
    with pytest.raises(TypeError, match=r"cross_entropy: target of dtype agnograd\.bool.*astype"):
        F.cross_entropy(z, ag.tensor([True, False]))
    with pytest.raises(ValueError, match=r"class probabilities.*\(2, 3\), not \(2,\).*integer"):
        F.cross_entropy(z, ag.tensor([1.0, 0.0]))


def test_labels_whose_dtype_cannot_hold_the_class_count_are_not_wrapped():
    """uint8 labels with 300 classes: arange(300) in uint8 would wrap (class 44 = class 300)."""
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3, 300))
    labels = np.array([44, 255, 0], dtype=np.uint8)
    z = ag.tensor(logits, requires_grad=True)
    F.cross_entropy(z, ag.tensor(labels), reduction="sum").backward()
    z2 = ag.tensor(logits, requires_grad=True)
    F.cross_entropy(z2, ag.tensor(np.eye(300)[labels]), reduction="sum").backward()
    np.testing.assert_allclose(z.grad.numpy(), z2.grad.numpy(), rtol=1e-12)


def _check_nan_rows(z, labels, bad_rows, reduction):
    y = F.cross_entropy(z, labels, reduction=reduction)
    out = y.numpy()
    if reduction == "none":
        assert np.isnan(out[bad_rows]).all()
        assert np.isfinite(np.delete(out, bad_rows)).all()
    else:
        assert np.isnan(out)
    ag.sum(y).backward()
    g = z.grad.numpy()
    assert np.isnan(g[bad_rows]).all()
    assert np.isfinite(np.delete(g, bad_rows, axis=0)).all()
    z.grad = None
    with ag.detect_anomaly():
        y = ag.sum(F.cross_entropy(z, labels, reduction=reduction))
        with pytest.raises(FloatingPointError, match="'cross_entropy'"):
            y.backward()


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_without_a_cheap_host_read_bad_rows_are_nan(monkeypatch, reduction):
    """The no-sync branch (GPU backends, Dask, capture), forced on NumPy: NaN in the bad rows
    only, for the loss and the gradient, and detect_anomaly names cross_entropy."""
    monkeypatch.setattr(F, "_can_check_on_host", lambda labels: False)
    rng = np.random.default_rng(2)
    z = ag.tensor(rng.normal(size=(5, 3)), requires_grad=True)
    _check_nan_rows(z, ag.tensor([0, 3, 2, -1, 1]), [1, 3], reduction)
    # the good rows are exactly those of a valid batch (a bad row stays NaN even where its
    # loss is not used: its sample is poisoned, never silently zero)
    z1 = ag.tensor(z.numpy(), requires_grad=True)
    ag.sum(F.cross_entropy(z1, ag.tensor([0, 3, 2, -1, 1]), reduction="none")[[0, 2, 4]]).backward()
    z2 = ag.tensor(z.numpy(), requires_grad=True)
    ag.sum(F.cross_entropy(z2, ag.tensor([0, 0, 2, 0, 1]), reduction="none")[[0, 2, 4]]).backward()
    np.testing.assert_array_equal(z1.grad.numpy()[[0, 2, 4]], z2.grad.numpy()[[0, 2, 4]])
    assert np.isnan(z1.grad.numpy()[[1, 3]]).all()


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_dask_labels_out_of_range_give_nan_rows_without_a_compute(reduction):
    pytest.importorskip("dask")
    rng = np.random.default_rng(3)
    z = ag.to_backend(ag.tensor(rng.normal(size=(4, 3))), "dask")
    z.requires_grad = True
    labels = ag.to_backend(ag.tensor([0, 3, 1, -1]), "dask")
    _check_nan_rows(z, labels, [1, 3], reduction)


def test_inside_capture_labels_are_not_read_back():
    z = ag.tensor(np.zeros((2, 3)), requires_grad=True)
    labels = ag.tensor([0, 5])
    with _capture_state.recording():
        assert not F._can_check_on_host(labels)
        y = F.cross_entropy(z, labels, reduction="none")
    out = y.numpy()
    assert np.isfinite(out[0]) and np.isnan(out[1])


# ---------------------------------------------------------------------------------------------
# B. checkpoint: every tensor the function reads gets exactly its gradient


def _grads(f, tensors):
    for t in tensors:
        t.grad = None
    ag.sum(f() ** 2).backward()
    out = [None if t.grad is None else t.grad.numpy().copy() for t in tensors]
    for t in tensors:
        t.grad = None
    return out


def _same_grads(plain, ckpt, tensors):
    g1, g2 = _grads(plain, tensors), _grads(ckpt, tensors)
    for a, b in zip(g1, g2):
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-15)


RNG = np.random.default_rng(4)
X0 = RNG.normal(size=(5, 4))
W0 = RNG.normal(size=(4, 4)) * 0.5


@pytest.mark.parametrize("x_requires_grad", [True, False])
def test_checkpoint_every_way_of_reading_a_tensor(x_requires_grad):
    """Arguments, closure leaves, closure intermediates, module parameters, tensors read twice
    (argument and closure): the checkpointed gradients equal the plain ones, for each."""
    x = ag.tensor(X0, requires_grad=x_requires_grad)
    W = ag.tensor(W0, requires_grad=True)
    b = ag.tensor(RNG.normal(size=4), requires_grad=True)
    lin = nn.Linear(4, 3, seed=0, dtype=ag.float64)
    ts = [x, W, b, lin.weight, lin.bias]
    cases = [
        lambda h: ag.tanh(h @ W),                      # closure leaf
        lambda h: ag.tanh(h @ W + b),                  # closure leaf read by an op saving nothing
        lin,                                           # module parameters
        lambda h: lin(ag.tanh(h @ (W * 2.0))),         # closure intermediate made inside
    ]
    for fn in cases:
        _same_grads(lambda fn=fn: fn(x), lambda fn=fn: ag.checkpoint(fn, x), ts)
    # an intermediate made outside, read by closure
    _same_grads(lambda: ag.tanh(x @ (W * 3.0)) @ (W * 3.0),
                lambda: (lambda W3: ag.checkpoint(lambda h: ag.tanh(h @ W3) @ W3, x))(W * 3.0), ts)
    # the same tensor as argument and by closure
    _same_grads(lambda: ag.tanh(W @ W), lambda: ag.checkpoint(lambda V: ag.tanh(V @ W), W), ts)


def test_checkpoint_of_a_two_layer_model_and_nested_checkpoints():
    model = nn.Sequential(nn.Linear(4, 8, seed=1, dtype=ag.float64), nn.Tanh(),
                          nn.Linear(8, 2, seed=2, dtype=ag.float64))
    x = ag.tensor(X0, requires_grad=True)
    ts = [x, *model.parameters()]
    _same_grads(lambda: model(x), lambda: ag.checkpoint(model, x), ts)
    W = ag.tensor(W0, requires_grad=True)
    inner = lambda h: ag.tanh(h @ W)
    ts = [x, W]
    _same_grads(lambda: inner(inner(x)) * 2.0,
                lambda: ag.checkpoint(lambda h: ag.checkpoint(inner, inner(h)) * 2.0, x), ts)
    _same_grads(lambda: inner(inner(x)),
                lambda: ag.checkpoint(lambda h: ag.checkpoint(inner, ag.checkpoint(inner, h)), x), ts)


def test_checkpoint_under_grad_and_second_order():
    x = ag.tensor(X0)

    def plain(W):
        return ag.sum(ag.tanh(x @ W) ** 2)

    def ckpt(W):
        return ag.sum(ag.checkpoint(lambda h: ag.tanh(h @ W), x) ** 2)

    def nested(W):
        return ag.sum(ag.checkpoint(lambda h: ag.checkpoint(lambda u: ag.tanh(u @ W), h), x) ** 2)

    g = ag.grad(plain)(W0)
    np.testing.assert_allclose(ag.grad(ckpt)(W0), g, rtol=1e-12)
    np.testing.assert_allclose(ag.grad(nested)(W0), g, rtol=1e-12)
    h = ag.hessian(plain)(W0)
    np.testing.assert_allclose(ag.hessian(ckpt)(W0), h, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ag.hessian(nested)(W0), h, rtol=1e-10, atol=1e-12)
    # grad of grad through a closure read, with respect to the closure tensor
    s = 0.7
    d2 = ag.grad(ag.grad(lambda a: ag.sum(ag.checkpoint(lambda h: ag.sin(h * a), x))))(s)
    np.testing.assert_allclose(d2, np.sum(-np.sin(X0 * s) * X0 * X0), rtol=1e-12)


def test_checkpoint_non_tensor_arguments_and_pytree_outputs():
    x = ag.tensor(X0, requires_grad=True)
    W = ag.tensor(W0, requires_grad=True)

    def fn(h, scale, nothing, raw):
        assert nothing is None and isinstance(raw, np.ndarray)
        a = ag.tanh(h @ W) * scale
        return (a, {"b": a * ag.tensor(raw), "k": 3, "i": ag.argmax(a, axis=1)})

    raw = np.full((5, 4), 2.0)
    out = ag.checkpoint(fn, x, 1.5, None, raw)
    assert isinstance(out, tuple) and out[1]["k"] == 3 and not out[1]["i"].requires_grad
    plain = fn(x, 1.5, None, raw)
    _same_grads(lambda: plain[0] + plain[1]["b"],
                lambda: (lambda o: o[0] + o[1]["b"])(ag.checkpoint(fn, x, 1.5, None, raw)), [x, W])
    # only one of the outputs used: the other gets zeros
    _same_grads(lambda: fn(x, 1.5, None, raw)[1]["b"],
                lambda: ag.checkpoint(fn, x, 1.5, None, raw)[1]["b"], [x, W])


def test_checkpoint_hooks_run_once_on_the_whole_gradient():
    x = ag.tensor(X0, requires_grad=True)
    W = ag.tensor(W0, requires_grad=True)
    seen = []
    W.register_hook(lambda g: seen.append(g.numpy().copy()))
    ag.sum(ag.checkpoint(lambda h: ag.tanh(h @ W), x) + ag.sum(W)).backward()
    assert len(seen) == 1
    np.testing.assert_allclose(seen[0], W.grad.numpy())


def test_checkpoint_refuses_what_would_make_the_recomputation_differ():
    x = ag.tensor(X0, requires_grad=True)
    W = ag.tensor(W0, requires_grad=True)
    y = ag.sum(ag.checkpoint(lambda h: ag.tanh(h @ W), x))
    with ag.no_grad():
        W -= 0.1                                # an optimizer step before backward
    with pytest.raises(RuntimeError, match=r"checkpoint\(<lambda>\).*modified in place"):
        y.backward()
    state = {"w": W}
    V = ag.tensor(W0, requires_grad=True)
    y = ag.sum(ag.checkpoint(lambda h: ag.tanh(h @ state["w"]), x))
    state["w"] = V                              # the function reads another tensor now
    with pytest.raises(RuntimeError, match="must read the same Tensors"):
        y.backward()


# ---------------------------------------------------------------------------------------------
# C. checkpoint and random numbers


def _dropout_run(checkpointed, seed_for):
    x = ag.tensor(X0, requires_grad=True)
    rng = nn.host_rng(7)
    fn = lambda h: F.dropout(ag.tanh(h * 1.0), 0.5, seed=seed_for(rng))
    y = ag.checkpoint(fn, x) if checkpointed else fn(x)
    ag.sum(y * y).backward()
    return x.grad.numpy(), y.numpy(), rng.random(3)


@pytest.mark.parametrize("seed_for", [lambda rng: rng, lambda rng: 11],
                         ids=["generator", "int-seed"])
def test_dropout_in_checkpoint_matches_the_plain_run_and_the_stream_after(seed_for):
    g1, y1, after1 = _dropout_run(True, seed_for)
    g0, y0, after0 = _dropout_run(False, seed_for)
    np.testing.assert_array_equal(y1, y0)
    np.testing.assert_allclose(g1, g0, rtol=1e-12)
    np.testing.assert_array_equal(after1, after0)      # the generator advanced once
    assert np.all(g1[y1 == 0] == 0)


def test_dropout_with_the_device_generator_in_checkpoint_uses_the_forward_mask():
    for _ in range(5):
        x = ag.tensor(X0, requires_grad=True)
        y = ag.checkpoint(lambda h: F.dropout(h * 1.0, 0.5), x)   # seed=None: the device generator
        ag.sum(y * y).backward(retain_graph=True)
        g = x.grad.numpy().copy()
        np.testing.assert_array_equal(g, 4.0 * y.numpy())      # zero exactly where dropped
        x.grad = None
        ag.sum(y * y).backward()                               # a second recomputation too
        np.testing.assert_array_equal(x.grad.numpy(), g)


def test_dropout_layers_and_nested_checkpoints_replay_their_masks():
    def make():
        return nn.Sequential(nn.Linear(4, 6, seed=1, dtype=ag.float64), nn.Dropout(0.5, seed=3), nn.Tanh(),
                             nn.Dropout(0.3, seed=4))

    x = ag.tensor(X0, requires_grad=True)
    m0, m1 = make(), make()
    ts0, ts1 = [x, *m0.parameters()], [x, *m1.parameters()]
    g0 = _grads(lambda: m0(x) * 2.0, ts0)
    g1 = _grads(lambda: ag.checkpoint(lambda h: ag.checkpoint(m1, h) * 2.0, x), ts1)
    for a, b in zip(g0, g1):
        np.testing.assert_allclose(b, a, rtol=1e-12)
    # the layers' generators are where the plain run left them
    np.testing.assert_array_equal(m0[1]._rng.random(4), m1[1]._rng.random(4))
    np.testing.assert_array_equal(m0[3]._rng.random(4), m1[3]._rng.random(4))
