"""Aliasing of user memory and of gradient buffers (issue 22, class 4).

* ``ag.tensor(array)`` copies, as ``torch.tensor`` does: refilling the caller's buffer, or an
  optimizer updating the tensor in place, leaves the other alone. ``ag.asarray`` keeps the
  standard's ``copy=None`` rule (it aliases an array that needs no conversion).
* Every ``.grad`` is its own writable array: a rule may hand one array to two inputs (``add``
  sends ``ḡ`` to both operands), or a read-only broadcast view (``sum``'s rule), or the caller's
  seed; the engine copies exactly those before they become a ``.grad`` -- also under
  ``create_graph``, ``retain_grad``, accumulation and hooks. A property test builds random small
  graphs in which leaves share gradient arrays and checks every pair of ``.grad`` arrays is
  independent (mutating one leaves the others unchanged) and writable.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import agnograd as ag

from .conftest import CPU_BACKENDS


def _raw_np(a: Any) -> np.ndarray:
    """The NumPy array holding a numpy or array_api_strict array's memory (no copy)."""
    return a if isinstance(a, np.ndarray) else a._array


def _host(t: ag.Tensor) -> np.ndarray:
    return np.array(t.detach().numpy(), copy=True)


def _assert_private(grads: list[ag.Tensor]) -> None:
    """Each gradient is writable memory of its own: writing into one (in place, in its raw
    array) changes no other; and ``g /= k`` works on each."""
    raws = [g.data for g in grads]
    for a in raws:
        assert _raw_np(a).flags.writeable, "a .grad is read-only"
    for i, a in enumerate(raws):
        before = [_host(g) for g in grads]
        a *= 3.0  # in place, on the raw array
        for j, g in enumerate(grads):
            if j != i:
                np.testing.assert_array_equal(_host(g), before[j], err_msg=f".grad {j} changed "
                                              f"when .grad {i} was written: they share memory")
        np.testing.assert_allclose(_host(grads[i]), 3.0 * before[i])
    for g in grads:
        if g.is_leaf:
            with ag.no_grad():
                g /= 3.0  # the user's in-place update


# ---------------------------------------------------------------------------------------------
# ag.tensor copies; ag.asarray aliases when the standard says it may


@pytest.mark.parametrize("backend", ["numpy", "array_api_strict", "torch"])
def test_issue_22_tensor_copies_the_callers_buffer(backend: str) -> None:
    if backend not in ag.available_backends():
        pytest.skip(f"{backend} is not installed")
    b = ag.get_backend(backend)
    buf = b.xp.asarray([1.0, 2.0, 3.0])
    w = ag.tensor(buf, requires_grad=True)
    buf2 = ag.tensor(buf)  # a second tensor of the same buffer
    with ag.no_grad():
        w -= 0.5  # an optimizer's in-place update
    assert list(np.asarray(ag.tensor(buf).numpy())) == [1.0, 2.0, 3.0]  # the buffer is untouched
    assert list(buf2.numpy()) == [1.0, 2.0, 3.0]  # and so is the other tensor
    if backend == "numpy":
        buf[:] = 9.0  # refilling the caller's buffer
        assert list(w.detach().numpy()) == [0.5, 1.5, 2.5]
    t = ag.tensor(w)  # a Tensor's values, copied
    with ag.no_grad():
        t += 1.0
    assert list(w.detach().numpy()) == [0.5, 1.5, 2.5]


def test_asarray_aliases_only_when_no_conversion_is_needed() -> None:
    a = np.arange(3.0)
    assert ag.asarray(a).data is a  # copy=None, no conversion: the same memory
    assert not np.shares_memory(ag.asarray(a, copy=True).data, a)
    assert not np.shares_memory(ag.asarray(a, dtype=ag.float32).data, a)
    with pytest.raises(ValueError, match="copy=False"):
        ag.asarray(a, dtype=ag.float32, copy=False)
    x = ag.tensor([1.0, 2.0], requires_grad=True)
    assert ag.asarray(x) is x  # a Tensor needing nothing: itself, graph included


# ---------------------------------------------------------------------------------------------
# Every .grad its own writable array: the members of the class, by name


@pytest.mark.parametrize("backend", [p.values[0] for p in CPU_BACKENDS])
def test_add_operands_get_their_own_grads(backend: str) -> None:
    a = ag.tensor([1.0, 2.0], backend=backend, requires_grad=True)
    b = ag.tensor([3.0, 4.0], backend=backend, requires_grad=True)
    ag.sum((a + b) * ag.tensor([1.0, 2.0], backend=backend)).backward()  # add sends ḡ to both
    assert a.grad.data is not b.grad.data
    _assert_private([a.grad, b.grad])


@pytest.mark.parametrize("backend", [p.values[0] for p in CPU_BACKENDS])
def test_issue_22_grad_of_a_broadcast_is_writable(backend: str) -> None:
    # sum's rule broadcasts ḡ: a read-only view, so `p.grad /= k` failed with a message about
    # dtype or shape
    p = ag.tensor([[1.0, 2.0], [3.0, 4.0]], backend=backend, requires_grad=True)
    ag.sum(p).backward()
    with ag.no_grad():
        p.grad /= 4.0
    np.testing.assert_array_equal(p.grad.numpy(), np.full((2, 2), 0.25))


def test_issue_22_clip_grad_norm_scales_each_grad_once() -> None:
    torch = pytest.importorskip("torch")
    p = ag.tensor([3.0, 4.0], requires_grad=True)
    q = ag.tensor([1.0, 1.0], requires_grad=True)
    ag.sum(p + q).backward()  # one array reached both .grad
    total = ag.nn.utils.clip_grad_norm_([p, q], max_norm=1.0)
    tp = torch.tensor([3.0, 4.0], dtype=torch.float64, requires_grad=True)
    tq = torch.tensor([1.0, 1.0], dtype=torch.float64, requires_grad=True)
    (tp + tq).sum().backward()
    ttotal = torch.nn.utils.clip_grad_norm_([tp, tq], max_norm=1.0)
    assert math.isclose(float(total), float(ttotal), rel_tol=1e-12)
    np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=1e-6)
    np.testing.assert_allclose(q.grad.numpy(), tq.grad.numpy(), rtol=1e-6)


def test_the_callers_seed_is_not_a_grad() -> None:
    x = ag.tensor([1.0, 2.0], requires_grad=True)
    seed = np.array([1.0, 1.0])
    x.backward(seed)  # the root is the leaf itself
    assert not np.shares_memory(x.grad.data, seed)
    y = ag.tensor([1.0, 2.0], requires_grad=True)
    seed_t = ag.tensor([1.0, 1.0])
    (y + 0.0).backward(seed_t)  # add passes the seed on unchanged
    assert not np.shares_memory(y.grad.data, seed_t.data)


@pytest.mark.parametrize("backend", [p.values[0] for p in CPU_BACKENDS])
def test_create_graph_grads_are_their_own(backend: str) -> None:
    a = ag.tensor([1.0, 2.0], backend=backend, requires_grad=True)
    b = ag.tensor([3.0, 4.0], backend=backend, requires_grad=True)
    c = ag.tensor(2.0, backend=backend, requires_grad=True)
    ag.sum(ag.exp(a + b) + c).backward(create_graph=True)  # one ḡ (a Tensor) for a and b
    assert a.grad is not b.grad and a.grad.requires_grad
    _assert_private([a.grad, b.grad, c.grad])
    # the copies are recorded: the gradients still differentiate (d sum(2 exp(a+b)) / da)
    ga, gb = a.grad, b.grad
    a.grad = b.grad = c.grad = None
    ag.sum(ga + gb).backward()
    want = 2.0 * np.exp(np.array([4.0, 6.0]))
    np.testing.assert_allclose(np.asarray(a.grad.numpy()), want)
    np.testing.assert_allclose(np.asarray(b.grad.numpy()), want)


@pytest.mark.parametrize("backend", [p.values[0] for p in CPU_BACKENDS])
def test_retained_and_hooked_grads_are_their_own(backend: str) -> None:
    a = ag.tensor([1.0, 2.0], backend=backend, requires_grad=True)
    b = ag.tensor([3.0, 4.0], backend=backend, requires_grad=True)
    y = a + b
    y.retain_grad()
    z = y + 0.0
    z.retain_grad()
    ag.sum(z).backward()
    _assert_private([a.grad, b.grad, y.grad, z.grad])
    # hooks: one tensor returned for two leaves
    shared = ag.tensor([5.0, 5.0], backend=backend)
    c = ag.tensor([1.0, 2.0], backend=backend, requires_grad=True)
    d = ag.tensor([3.0, 4.0], backend=backend, requires_grad=True)
    c.register_hook(lambda g: shared)
    d.register_hook(lambda g: shared)
    ag.sum(c * d).backward()
    _assert_private([c.grad, d.grad])


@pytest.mark.parametrize("backend", [p.values[0] for p in CPU_BACKENDS])
def test_accumulated_grads_are_their_own(backend: str) -> None:
    a = ag.tensor([1.0, 2.0], backend=backend, requires_grad=True)
    b = ag.tensor([3.0, 4.0], backend=backend, requires_grad=True)
    for _ in range(2):
        ag.sum(a + b).backward()
    np.testing.assert_array_equal(a.grad.numpy(), [2.0, 2.0])
    _assert_private([a.grad, b.grad])


# ---------------------------------------------------------------------------------------------
# The class: random small graphs whose leaves share gradient arrays

SHAPES = [(2, 3), (1, 3), (3,), ()]
OPS = ["add", "sub", "pos", "reshape", "broadcast", "sum", "scale", "astype", "permute"]


def _apply(op: str, a: ag.Tensor, b: ag.Tensor) -> ag.Tensor:
    try:
        np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        b = ag.sum(b)  # keep the graph connected, shapes compatible
    if op == "add":
        return a + b
    if op == "sub":
        return a - b
    if op == "pos":
        return +a
    if op == "reshape":
        return ag.reshape(a, (1, *a.shape))
    if op == "broadcast":
        return ag.broadcast_to(a, np.broadcast_shapes(a.shape, (2, 3)))
    if op == "sum":
        return ag.sum(a)
    if op == "scale":
        return a * 2.0
    if op == "astype":
        return ag.astype(a, a.dtype)
    if a.ndim < 2:
        return a
    return ag.matrix_transpose(ag.matrix_transpose(a))  # two views


@pytest.mark.parametrize("backend", [p.values[0] for p in CPU_BACKENDS])
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_grad_is_its_own_writable_array(backend: str, data: st.DataObject) -> None:
    n = data.draw(st.integers(2, 4), label="leaves")
    shapes = data.draw(st.lists(st.sampled_from(SHAPES), min_size=n, max_size=n), label="shapes")
    rng = np.random.default_rng(0)
    leaves = [ag.tensor(rng.normal(size=s), backend=backend, requires_grad=True) for s in shapes]
    pool = list(leaves)
    pool.append(leaves[0] + leaves[1])  # always one add of two leaves: ḡ shared by both
    steps = data.draw(st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 99),
                                         st.integers(0, 99)), max_size=6), label="ops")
    for op, i, j in steps:
        pool.append(_apply(op, pool[i % len(pool)], pool[j % len(pool)]))
    retain = data.draw(st.booleans(), label="retain_grad")
    if retain and pool[-1].node is not None:
        pool[-1].retain_grad()
    create_graph = data.draw(st.booleans(), label="create_graph")
    twice = data.draw(st.booleans(), label="backward twice")
    for _ in range(2 if twice else 1):
        # (× 1.5 before a sum: the cotangent reaching the graph is then a private array that
        # add hands on to both operands as it is; without it, sum's broadcast view)
        loss = ag.sum(pool[n] * 1.5)  # the add
        for k, t in enumerate(pool[n + 1:]):
            loss = loss + (ag.sum(t * 1.5) if k % 2 else ag.sum(t))
        ag.sum(loss).backward(retain_graph=True, create_graph=create_graph)
    grads = [leaf.grad for leaf in leaves if leaf.grad is not None]
    if retain and pool[-1].node is not None and pool[-1].grad is not None:
        grads.append(pool[-1].grad)
    _assert_private(grads)


@pytest.mark.parametrize("backend", [p.values[0] for p in CPU_BACKENDS])
def test_no_op_hands_a_grad_shared_memory(backend: str) -> None:
    """Over the whole op table: after backward, no leaf's ``.grad`` shares memory with an input,
    an output, or another leaf's ``.grad``, and each is writable (a rule may return one of its
    saved arrays, a view of ḡ, or ḡ itself to two inputs)."""
    from .op_table import OPS, cases_of
    from .op_table.core import draw

    checked = 0
    for op, shapes in cases_of(OPS):
        if backend in op.skip:
            continue
        try:
            xs = [ag.tensor(a, backend=backend, requires_grad=True) for a in draw(op, shapes, 0)]
            y = op.fn(*xs)
        except Exception:  # a record that needs its own inputs (checked by test_op_table)
            continue
        ys = [t for t in (y if isinstance(y, tuple) else (y,))
              if isinstance(t, ag.Tensor) and t.requires_grad]
        if not ys:
            continue
        loss = ag.sum(ag.stack([ag.sum(ag.real(t) if t.dtype.kind == "c" else t) for t in ys]))
        loss.backward()
        checked += 1
        others = [_raw_np(x.data) for x in xs] + [_raw_np(t.data) for t in ys]
        grads = [(i, _raw_np(x.grad.data)) for i, x in enumerate(xs) if x.grad is not None]
        for i, g in grads:
            assert g.flags.writeable, f"{op.name}: .grad of input {i} is read-only"
            for a in others:
                assert not np.shares_memory(g, a), f"{op.name}: .grad of input {i} aliases data"
            for j, h in grads:
                assert j == i or not np.shares_memory(g, h), (
                    f"{op.name}: the .grad of inputs {i} and {j} share memory")
    assert checked > 700
