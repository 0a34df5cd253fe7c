"""The engine: the 3-layer network against the hand-derived chain rule, fan-out, long chains,
freeing and retain_graph, accumulation, higher order, and grad mode."""

from __future__ import annotations

import threading
import time
import warnings
import weakref

import numpy as np
import pytest

import agnograd as ag
from agnograd import autograd

from .conftest import BACKENDS


def _host(t):
    return t.numpy()


@pytest.mark.parametrize("backend", BACKENDS)
def test_three_layer_network_matches_hand_derived_backprop(backend):
    """x1 = tanh(x W1 + b1), x2 = tanh(x1 W2 + b2), x3 = x2 W3 + b3, L = mean CE(softmax(x3)).

    The reference walks the chain by hand: dL/dx3 first, then each layer's dL/dθ_i and the
    dL/dx_{i-1} it hands down -- each gradient computed once, as the engine does.
    """
    rng = np.random.default_rng(0)
    n, d0, d1, d2, k = 5, 4, 6, 3, 3
    x = rng.normal(size=(n, d0))
    labels = rng.integers(0, k, size=n)
    params = {
        "W1": rng.normal(size=(d0, d1)) * 0.5, "b1": rng.normal(size=d1) * 0.1,
        "W2": rng.normal(size=(d1, d2)) * 0.5, "b2": rng.normal(size=d2) * 0.1,
        "W3": rng.normal(size=(d2, k)) * 0.5, "b3": rng.normal(size=k) * 0.1,
    }

    # --- by hand -------------------------------------------------------------------------
    a1 = x @ params["W1"] + params["b1"]
    x1 = np.tanh(a1)
    a2 = x1 @ params["W2"] + params["b2"]
    x2 = np.tanh(a2)
    x3 = x2 @ params["W3"] + params["b3"]
    z = x3 - x3.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    onehot = np.eye(k)[labels]
    loss = -np.mean(np.sum(onehot * np.log(p), axis=1))
    d_x3 = (p - onehot) / n                     # dL/dx3
    d_W3 = x2.T @ d_x3                          # (∂x3/∂W3)ᵀ dL/dx3
    d_b3 = d_x3.sum(axis=0)
    d_x2 = d_x3 @ params["W3"].T                # (∂x3/∂x2)ᵀ dL/dx3
    d_a2 = d_x2 * (1 - x2**2)
    d_W2 = x1.T @ d_a2
    d_b2 = d_a2.sum(axis=0)
    d_x1 = d_a2 @ params["W2"].T
    d_a1 = d_x1 * (1 - x1**2)
    d_W1 = x.T @ d_a1
    d_b1 = d_a1.sum(axis=0)
    expected = {"W1": d_W1, "b1": d_b1, "W2": d_W2, "b2": d_b2, "W3": d_W3, "b3": d_b3}

    # --- by agnograd ---------------------------------------------------------------------
    P = {name: ag.tensor(v, backend=backend, requires_grad=True) for name, v in params.items()}
    X = ag.tensor(x, backend=backend)
    Y = ag.tensor(onehot, backend=backend)
    h1 = ag.tanh(X @ P["W1"] + P["b1"])
    h2 = ag.tanh(h1 @ P["W2"] + P["b2"])
    logits = h2 @ P["W3"] + P["b3"]
    logp = logits - ag.logsumexp(logits, axis=1, keepdims=True)
    L = -ag.mean(ag.sum(Y * logp, axis=1))
    L.backward()

    assert L.item() == pytest.approx(loss, rel=1e-12)
    for name, g in expected.items():
        np.testing.assert_allclose(_host(P[name].grad), g, rtol=1e-10, atol=1e-12, err_msg=name)


def test_fan_out_sums_every_child():
    x = ag.tensor([1.0, 2.0, 3.0], requires_grad=True)
    h = x * x          # used by three children
    y = ag.sum(h) + ag.sum(ag.sin(h)) + ag.sum(h * x)
    y.backward()
    xv = np.array([1.0, 2.0, 3.0])
    expected = 2 * xv + np.cos(xv**2) * 2 * xv + 3 * xv**2
    np.testing.assert_allclose(_host(x.grad), expected, rtol=1e-12)


def test_every_node_runs_once_after_all_its_children_in_any_build_order():
    """Backward runs nodes latest-created first. Build a graph whose branches are interleaved
    and whose late ops read early values, and check that each node's cotangent is complete
    (the gradient is exact) and that each node runs exactly once (hooks on every output)."""
    x = ag.tensor([0.5, -1.5], requires_grad=True)
    a = x * 2.0                      # early value, read again at the very end
    b = ag.sin(x)
    c = a * b                        # the two branches meet
    d = ag.exp(b)                    # b used again after c
    e = c + d * a                    # a used a third time, late
    f = ag.sum(e * e) + ag.sum(a)    # and a fourth
    runs = {}
    for name, t in dict(a=a, b=b, c=c, d=d, e=e).items():
        t.register_hook(lambda g, name=name: runs.__setitem__(name, runs.get(name, 0) + 1))
    f.backward()
    assert runs == dict(a=1, b=1, c=1, d=1, e=1)
    xv = np.array([0.5, -1.5])
    av, bv = 2 * xv, np.sin(xv)
    ev = av * bv + np.exp(bv) * av
    de = 2 * ev
    da = de * bv + de * np.exp(bv) + 1.0
    db = de * av + de * av * np.exp(bv)
    np.testing.assert_allclose(_host(x.grad), 2 * da + np.cos(xv) * db, rtol=1e-12)


def test_same_tensor_twice_in_one_op():
    x = ag.tensor(3.0, requires_grad=True)
    (x * x).backward()
    assert x.grad.item() == 6.0


def test_long_chain_has_no_recursion_and_is_linear():
    def run(n):
        x = ag.tensor(1.0, requires_grad=True)
        y = x
        for _ in range(n):
            y = y * 1.0000001 + 0.0
        t = time.perf_counter()
        y.backward()
        return x, time.perf_counter() - t

    x, t_small = run(10_000)
    x, t_big = run(100_000)  # 200,000 nodes
    assert x.grad.item() == pytest.approx(1.0000001**100_000, rel=1e-9)
    # Linear, not quadratic: 10x the nodes must not cost anything like 100x the time.
    assert t_big < 40 * t_small + 0.5


def test_wide_fan_in():
    xs = [ag.tensor(float(i), requires_grad=True) for i in range(1000)]
    total = xs[0]
    for x in xs[1:]:
        total = total + x * x
    total.backward()
    assert xs[0].grad.item() == 1.0
    assert xs[999].grad.item() == 2 * 999.0


def test_leaf_gradients_accumulate_across_backward_calls():
    x = ag.tensor([1.0, 2.0], requires_grad=True)
    ag.sum(x * 3.0).backward()
    ag.sum(x * 3.0).backward()
    np.testing.assert_array_equal(_host(x.grad), [6.0, 6.0])
    x.grad = None
    assert x.grad is None
    ag.sum(x).backward()
    np.testing.assert_array_equal(_host(x.grad), [1.0, 1.0])


def test_second_backward_through_freed_graph_raises_and_retain_graph_allows_it():
    x = ag.tensor([1.0, 2.0], requires_grad=True)
    y = ag.sum(ag.exp(x))
    y.backward()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        y.backward()

    x.grad = None
    y = ag.sum(ag.exp(x))
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(_host(x.grad), 2 * np.exp([1.0, 2.0]))


def test_saved_arrays_are_freed_after_backward():
    x = ag.tensor(np.ones(1000), requires_grad=True)
    h = ag.exp(x)          # saves its output
    node = h.node
    y = ag.sum(h * x)      # saves both operands
    saved_ref = weakref.ref(node)
    assert node.saved != ()
    y.backward()
    assert node.saved == autograd.FREED
    assert y.node.saved == autograd.FREED or y.node.saved == ()
    del h, y, node
    assert saved_ref() is None  # nothing else keeps the graph alive


def test_inputs_that_need_no_grad_get_no_gradient_work(monkeypatch):
    calls = []
    w = ag.tensor([1.0, 2.0], requires_grad=True)
    c = ag.tensor([3.0, 4.0])           # a constant
    y = ag.sum(w * c)
    node = y.node.edges[0]              # the multiply node (its only output)
    assert node.edges[1] is None        # no edge, so its rule never runs

    rules = list(node.vjps)
    rules[1] = lambda *a: calls.append(1)
    node.vjps = tuple(rules)
    y.backward()
    assert calls == []
    assert c.grad is None
    np.testing.assert_array_equal(_host(w.grad), [3.0, 4.0])
    assert (c * c).node is None         # no graph at all when nothing requires grad


def test_backward_of_non_scalar_needs_grad():
    x = ag.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2.0
    with pytest.raises(RuntimeError, match=r"scalar.*shape \(2,\)"):
        y.backward()
    y.backward(grad=ag.tensor([1.0, 10.0]))
    np.testing.assert_array_equal(_host(x.grad), [2.0, 20.0])
    with pytest.raises(ValueError, match="shape"):
        (x * 2.0).backward(grad=ag.tensor([1.0, 2.0, 3.0]))


def test_backward_on_tensor_without_graph_raises():
    with pytest.raises(RuntimeError, match="does not require grad"):
        ag.tensor(1.0).backward()


def test_broadcast_gradients_reduce_to_input_shapes():
    a = ag.tensor(np.ones((2, 1, 3)), requires_grad=True)
    b = ag.tensor(np.ones((4, 1)), requires_grad=True)
    c = ag.tensor(2.0, requires_grad=True)
    ag.sum(a * b * c).backward()
    assert a.grad.shape == (2, 1, 3)
    assert b.grad.shape == (4, 1)
    assert c.grad.shape == ()
    np.testing.assert_array_equal(_host(a.grad), np.full((2, 1, 3), 8.0))
    np.testing.assert_array_equal(_host(b.grad), np.full((4, 1), 12.0))
    assert c.grad.item() == 24.0


def test_mixed_precision_gradients_keep_each_input_dtype():
    a = ag.tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    b = ag.tensor(np.ones(3, dtype=np.float64), requires_grad=True)
    y = a * b
    assert y.dtype == ag.float64
    ag.sum(y).backward()
    assert a.grad.dtype == ag.float32
    assert b.grad.dtype == ag.float64


@pytest.mark.parametrize("backend", BACKENDS)
def test_third_order_derivative(backend):
    x = ag.tensor(0.7, backend=backend, dtype=ag.float64, requires_grad=True)
    y = ag.sin(x) * x**3
    (g1,) = autograd.backward([y], [ag.ones_like(y)], retain_graph=True,
                              create_graph=True, targets=[x])
    (g2,) = autograd.backward([g1], [ag.ones_like(g1)], retain_graph=True,
                              create_graph=True, targets=[x])
    (g3,) = autograd.backward([g2], [ag.ones_like(g2)], retain_graph=True,
                              create_graph=True, targets=[x])
    v = 0.7
    # d³/dx³ [x³ sin x] = -x³ cos x - 9x² sin x + 18x cos x + 6 sin x
    expected = -v**3 * np.cos(v) - 9 * v**2 * np.sin(v) + 18 * v * np.cos(v) + 6 * np.sin(v)
    assert g3.item() == pytest.approx(expected, rel=1e-12)


def test_backward_with_create_graph_gives_differentiable_grad():
    x = ag.tensor([0.5, 1.5], requires_grad=True)
    y = ag.sum(x**3)
    y.backward(create_graph=True)
    g = x.grad
    assert g.requires_grad
    x.grad = None
    ag.sum(g).backward()
    np.testing.assert_allclose(_host(x.grad), 6 * np.array([0.5, 1.5]))


def test_no_grad_and_enable_grad():
    x = ag.tensor(1.0, requires_grad=True)
    with ag.no_grad():
        y = x * 2.0
        assert not ag.is_grad_enabled()
        with ag.enable_grad():
            z = x * 2.0
    assert not y.requires_grad
    assert z.requires_grad
    assert ag.is_grad_enabled()

    @ag.no_grad()
    def f(t):
        return t * 3.0

    assert not f(x).requires_grad


def test_grad_mode_is_thread_local():
    seen = {}

    def worker():
        seen["enabled"] = ag.is_grad_enabled()

    with ag.no_grad():
        t = threading.Thread(target=worker)
        t.start()
        t.join()
    assert seen["enabled"] is True


def test_detach_cuts_the_graph():
    x = ag.tensor([1.0, 2.0], requires_grad=True)
    y = ag.exp(x).detach()
    assert not y.requires_grad and y.is_leaf
    z = ag.sum(y * x)
    z.backward()
    np.testing.assert_allclose(_host(x.grad), np.exp([1.0, 2.0]))


def test_zero_gradient_ops_give_zero_leaf_gradients():
    x = ag.tensor([1.3, -2.7], requires_grad=True)
    ag.sum(ag.floor(x)).backward()
    np.testing.assert_array_equal(_host(x.grad), [0.0, 0.0])


def test_reduction_with_wider_dtype_casts_the_gradient_back():
    x = ag.tensor(np.ones((2, 3), dtype=np.float32), requires_grad=True)
    y = ag.sum(x, axis=1, dtype=ag.float64)
    assert y.dtype == ag.float64
    ag.sum(y * ag.tensor([1.0, 2.0])).backward()
    assert x.grad.dtype == ag.float32
    np.testing.assert_array_equal(x.grad.numpy(), [[1, 1, 1], [2, 2, 2]])


def test_set_grad_enabled_as_a_context_manager_restores_the_mode() -> None:
    # It used to leave the mode it set: gradients stayed off after `with set_grad_enabled(False)`.
    for outer in (True, False):
        with ag.set_grad_enabled(outer):
            for inner in (True, False):
                with ag.set_grad_enabled(inner):
                    assert ag.is_grad_enabled() is inner
                assert ag.is_grad_enabled() is outer
    assert ag.is_grad_enabled()
    ag.set_grad_enabled(False)  # the plain call sets the mode for good
    assert not ag.is_grad_enabled()
    ag.set_grad_enabled(True)


# ---------------------------------------------------------------------------------------------
# retain_grad (PyTorch semantics)


def test_retain_grad_keeps_an_intermediate_gradient_and_accumulates():
    x = ag.tensor([1.0, 2.0, 3.0], requires_grad=True)
    h = x * x
    h.retain_grad()
    assert h.retains_grad and not x.retains_grad
    loss = ag.sum(ag.sin(h) * 2)
    loss.backward(retain_graph=True)
    np.testing.assert_allclose(h.grad.numpy(), 2 * np.cos([1.0, 4.0, 9.0]))
    loss.backward()
    np.testing.assert_allclose(h.grad.numpy(), 4 * np.cos([1.0, 4.0, 9.0]))
    np.testing.assert_allclose(x.grad.numpy(), 8 * np.cos([1.0, 4.0, 9.0]) * [1.0, 2.0, 3.0])


def test_retain_grad_under_create_graph_keeps_the_graph():
    x = ag.tensor([1.0, 2.0], requires_grad=True)
    h = x ** 2
    h.retain_grad()
    ag.sum(h ** 2).backward(create_graph=True)
    assert h.grad.requires_grad
    np.testing.assert_allclose(h.grad.numpy(), [2.0, 8.0])
    x.grad = None
    ag.sum(h.grad).backward()  # d/dx Σ 2x² = 4x
    np.testing.assert_allclose(x.grad.numpy(), [4.0, 8.0])


def test_non_leaf_grad_warns_unless_retained():
    x = ag.tensor([1.0], requires_grad=True)
    with pytest.warns(UserWarning, match="not a leaf Tensor is being accessed"):
        assert (x * 2).grad is None
    h = x * 2
    h.retain_grad()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert h.grad is None and x.grad is None
    with pytest.raises(RuntimeError, match="does not require grad"):
        ag.tensor([1.0]).retain_grad()


def test_retain_grad_against_torch_with_hooks_and_in_place():
    torch = pytest.importorskip("torch")
    for inplace in (False, True):
        x = ag.tensor([1.0, 2.0], requires_grad=True)
        xt = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
        h, ht = x * 1.5, xt * 1.5
        h.retain_grad()
        ht.retain_grad()
        h.register_hook(lambda g: g * 10)
        ht.register_hook(lambda g: g * 10)
        if inplace:
            h *= 3.0
            ht *= 3.0
        ag.sum(h * h).backward()
        (ht * ht).sum().backward()
        np.testing.assert_allclose(h.grad.numpy(), ht.grad.numpy())
        np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy())


def test_function_transforms_leave_retained_grads_alone():
    def f(x):
        h = x * 2
        h.retain_grad()
        seen.append(h)
        return ag.sum(h * h)

    seen = []
    ag.grad(f)(np.array([1.0, 2.0]))
    assert seen[0]._grad is None
