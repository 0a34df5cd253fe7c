"""Wrong gradients are never silent, bad input never corrupts state, graphs free themselves."""

from __future__ import annotations

import gc
import threading
import weakref

import numpy as np
import pytest

import agnograd as ag

# ---------------------------------------------------------------------------------------------
# Version counters


def test_in_place_change_of_a_saved_input_makes_backward_raise():
    w = ag.tensor([1.0, 2.0], requires_grad=True)
    c = ag.tensor([3.0, 4.0])            # saved by the multiply below
    y = ag.sum(w * c)
    c += 1.0                             # no graph for this one: mutates the saved array
    with pytest.raises(RuntimeError, match=r"shape \(2,\).*'multiply'.*modified in place"):
        y.backward()


def test_optimizer_style_update_before_backward_is_caught():
    w = ag.tensor([1.0, 2.0], requires_grad=True)
    loss = ag.sum(w * w)
    with ag.no_grad():
        w -= 0.1                          # the update came too early
    with pytest.raises(RuntimeError, match="modified in place"):
        loss.backward()


def test_setitem_on_saved_data_is_caught_and_detached_views_count():
    x = ag.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = ag.exp(x)                       # saves its output, not x
    z = ag.sum(x * x)                   # saves x (each operand's rule reads the other)
    s = ag.sum(x * 2.0)                 # reads nothing of x at backward: as in PyTorch, no check
    d = x.detach()
    with ag.no_grad():
        d[0] = 10.0                     # through a detached alias of the same data
    with pytest.raises(RuntimeError, match="modified in place"):
        z.backward()
    ag.sum(y).backward()                # exp's saved output was not touched
    s.backward()


def test_updates_after_backward_are_fine():
    w = ag.tensor([1.0, 2.0], requires_grad=True)
    for _ in range(3):
        loss = ag.sum(w * w)
        loss.backward()
        with ag.no_grad():
            w -= 0.1 * w.grad
        w.grad = None
    np.testing.assert_allclose(w.numpy(), np.array([1.0, 2.0]) * 0.8**3)


# ---------------------------------------------------------------------------------------------
# Threads


def test_two_threads_build_and_differentiate_their_own_graphs():
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            x = ag.tensor(np.linspace(0.1, 1.0, 50) * k, requires_grad=True)
            for _ in range(200):
                x.grad = None
                with ag.no_grad() if k == 2 else ag.enable_grad():
                    pass
                loss = ag.sum(ag.sin(x) * x)
                loss.backward()
            results[k] = x.grad.numpy()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for k in (1, 2):
        v = np.linspace(0.1, 1.0, 50) * k
        np.testing.assert_allclose(results[k], np.cos(v) * v + np.sin(v), rtol=1e-12)


def test_no_grad_in_one_thread_does_not_leak_into_another():
    started, release = threading.Event(), threading.Event()

    def hold() -> None:
        with ag.no_grad():
            started.set()
            release.wait(5)

    t = threading.Thread(target=hold)
    t.start()
    started.wait(5)
    x = ag.tensor(1.0, requires_grad=True)
    assert (x * 2.0).requires_grad
    release.set()
    t.join()


# ---------------------------------------------------------------------------------------------
# Memory


def test_graphs_are_freed_without_the_cycle_collector():
    gc.collect()
    gc.disable()
    try:
        w = ag.tensor(np.ones((8, 8)), requires_grad=True)
        h = ag.tanh(w @ w)
        probe = weakref.ref(h.node)
        data_probe = weakref.ref(h)
        loss = ag.sum(h * h)
        del h
        assert probe() is not None      # still needed by loss's graph
        del loss
        assert probe() is None and data_probe() is None
        # and after a backward too
        loss = ag.sum(ag.exp(w) * w)
        node = weakref.ref(loss.node)
        loss.backward()
        del loss
        assert node() is None
    finally:
        gc.enable()


def test_a_wide_fan_in_graph_backpropagates():
    xs = ag.tensor(np.arange(1000.0), requires_grad=True)
    parts = [xs[i] * float(i) for i in range(1000)]
    total = ag.sum(ag.stack(parts))
    total.backward()
    np.testing.assert_array_equal(xs.grad.numpy(), np.arange(1000.0))


# ---------------------------------------------------------------------------------------------
# Errors name the op, shapes, dtypes and backends


def test_shape_mismatch_in_an_op():
    a = ag.tensor(np.ones((2, 3)))
    b = ag.tensor(np.ones((4,)))
    with pytest.raises(ValueError, match=r"add.*\(2, 3\).*\(4,\)"):
        a + b


def test_bad_input_never_corrupts_state():
    x = ag.tensor([1.0, 2.0], requires_grad=True)
    y = x * 1.0
    with pytest.raises(ValueError):
        y += ag.tensor(np.ones((3, 2)))   # would change the shape: refused
    assert y.shape == (2,) and y.node.name == "multiply"
    with pytest.raises(ValueError):
        x.grad = ag.tensor([1.0])
    assert x.grad is None
    ag.sum(y).backward()
    np.testing.assert_array_equal(x.grad.numpy(), [1.0, 1.0])
