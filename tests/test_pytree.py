"""agnograd.pytree: flatten/unflatten round trips, treedef equality, and the transforms and
capture over NamedTuples, dicts and None (the one pytree implementation they share)."""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from typing import Any, NamedTuple

import numpy as np
import pytest

import agnograd as ag
from agnograd import optim
from agnograd.pytree import TreeDef, tree_flatten, tree_leaves, tree_map, tree_structure, tree_unflatten


class P(NamedTuple):
    w: Any
    b: Any


class Pair(NamedTuple):
    left: Any
    right: Any


TREES = [
    1.0,
    None,
    (),
    [],
    {},
    (1, 2),
    [1, (2, 3), [4]],
    {"b": 1, "a": [2, 3]},
    P(1, 2),
    P(w=[1, 2], b={"x": 3}),
    Pair(P(1, None), (None, 2)),
    [None, (None,), {"k": None}],
    {"params": P(np.ones(3), np.zeros(2)), "extra": (None, 5.0)},
    OrderedDict([("z", 1), ("a", 2)]),
    {1: "one", "a": 2},  # keys that cannot be sorted together keep insertion order
]


@pytest.mark.parametrize("tree", TREES, ids=range(len(TREES)))
def test_round_trip(tree):
    leaves, treedef = tree_flatten(tree)
    assert treedef.num_leaves == len(leaves)
    back = tree_unflatten(treedef, leaves)
    assert type(back) is type(tree)
    assert repr(back) == repr(tree) or isinstance(tree, dict)
    assert tree_structure(back) == treedef
    assert tree_leaves(back) == leaves or any(isinstance(x, np.ndarray) for x in leaves)


def test_namedtuples_are_rebuilt_with_their_fields():
    t = Pair(P(1, 2), 3)
    leaves, treedef = tree_flatten(t)
    assert leaves == [1, 2, 3]
    back = tree_unflatten(treedef, [10, 20, 30])
    assert back == Pair(P(10, 20), 30) and type(back.left) is P


def test_none_is_an_empty_subtree():
    leaves, treedef = tree_flatten((1, None, [None, 2]))
    assert leaves == [1, 2]
    assert tree_unflatten(treedef, ["a", "b"]) == ("a", None, [None, "b"])
    assert tree_flatten(None)[0] == []
    assert tree_unflatten(tree_structure(None), []) is None


def test_dicts_flatten_in_sorted_key_order():
    leaves, treedef = tree_flatten({"b": 2, "a": 1, "c": 3})
    assert leaves == [1, 2, 3]
    # insertion order does not change the structure; the rebuilt dict is in sorted order
    assert tree_structure({"c": 0, "a": 0, "b": 0}) == treedef
    assert list(tree_unflatten(treedef, leaves)) == ["a", "b", "c"]
    # an OrderedDict keeps its order, and its order is part of its structure
    od = OrderedDict([("z", 1), ("a", 2)])
    assert tree_leaves(od) == [1, 2]
    assert tree_structure(od) != tree_structure(OrderedDict([("a", 2), ("z", 1)]))
    dd = defaultdict(list, {"y": 1, "x": 2})
    back = tree_unflatten(*reversed(tree_flatten(dd)))
    assert type(back) is defaultdict and back.default_factory is list and back == dd


def test_other_types_are_leaves():
    class MyList(list):
        pass

    for leaf in [np.ones(2), "text", MyList([1, 2]), ag.tensor([1.0]), 3 + 1j]:
        leaves, treedef = tree_flatten([leaf])
        assert len(leaves) == 1 and leaves[0] is leaf


def test_is_leaf_stops_the_descent():
    leaves, treedef = tree_flatten({"a": (1, 2), "b": [3]}, is_leaf=lambda x: isinstance(x, tuple))
    assert leaves == [(1, 2), 3]
    assert tree_unflatten(treedef, ["x", "y"]) == {"a": "x", "b": ["y"]}


def test_treedef_equality_and_hash():
    a = tree_structure({"x": (1, [2, 3]), "y": P(4, None)})
    b = tree_structure({"y": P("p", None), "x": ("q", ["r", "s"])})
    assert a == b and hash(a) == hash(b) and isinstance(a, TreeDef)
    assert a != tree_structure({"x": (1, [2, 3]), "y": P(4, 5)})       # None is not a leaf
    assert a != tree_structure({"x": (1, (2, 3)), "y": P(4, None)})    # list is not tuple
    assert a != tree_structure({"x": (1, [2, 3]), "z": P(4, None)})    # other keys
    assert tree_structure((1, 2)) != tree_structure(P(1, 2))           # NamedTuple is not tuple
    assert tree_structure([1]) != tree_structure([1, 2])
    assert tree_structure(1) == tree_structure("anything")
    assert "P(" in repr(a)


def test_unflatten_wants_the_right_number_of_leaves():
    with pytest.raises(ValueError, match="2 leaves, got 3"):
        tree_unflatten(tree_structure((1, 2)), [1, 2, 3])


def test_tree_map():
    t = {"a": [1, 2], "b": P(3, None)}
    assert tree_map(lambda x: x * 10, t) == {"a": [10, 20], "b": P(30, None)}
    assert tree_map(lambda x, y: x + y, t, {"b": P(1, None), "a": [1, 1]}) == {"a": [2, 3],
                                                                                  "b": P(4, None)}
    with pytest.raises(ValueError, match="structure"):
        tree_map(lambda x, y: x, t, {"a": [1, 2], "b": (3, None)})


# ---------------------------------------------------------------------------------------------
# The transforms over NamedTuples and dicts


def _loss(p):
    return ag.sum(ag.tanh(p.w) * p.b) if isinstance(p, P) else ag.sum(ag.tanh(p["w"]) * p["b"])


def _expected(w, b):
    return (1 - np.tanh(w) ** 2) * b, np.sum(np.tanh(w))


W = np.array([0.1, -0.5, 2.0])


@pytest.mark.parametrize("make", [lambda w, b: P(w, b), lambda w, b: {"w": w, "b": b, "n": None}],
                         ids=["namedtuple", "dict"])
def test_grad_and_value_and_grad_over_a_pytree_of_parameters(make):
    params = make(W, 1.5)
    g = ag.grad(_loss)(params)
    gw, gb = _expected(W, 1.5)
    assert type(g) is type(params)
    get = (lambda t, k: getattr(t, k)) if isinstance(params, P) else (lambda t, k: t[k])
    np.testing.assert_allclose(get(g, "w"), gw)
    assert isinstance(get(g, "b"), float) and get(g, "b") == pytest.approx(gb)
    if isinstance(params, dict):
        assert g["n"] is None
    value, g2 = ag.value_and_grad(_loss)(params)
    assert float(value) == pytest.approx(np.sum(np.tanh(W)) * 1.5)
    np.testing.assert_allclose(get(g2, "w"), gw)


def test_grad_over_tensors_in_a_namedtuple_gives_tensors():
    params = P(ag.tensor(W), ag.tensor(1.5))
    g = ag.grad(_loss)(params)
    assert type(g) is P and type(g.w) is ag.Tensor
    np.testing.assert_allclose(g.w.numpy(), _expected(W, 1.5)[0])


def test_vjp_over_a_namedtuple_and_a_dict():
    def f(p, d):
        return ag.tanh(p.w) * p.b + d["c"]

    p, d = P(W, 2.0), {"c": np.ones(3)}
    y, vjp_fn = ag.vjp(f, p, d)
    np.testing.assert_allclose(y, np.tanh(W) * 2.0 + 1)
    ct = np.array([1.0, 2.0, 3.0])
    gp, gd = vjp_fn(ct)
    assert type(gp) is P and type(gd) is dict
    np.testing.assert_allclose(gp.w, (1 - np.tanh(W) ** 2) * 2.0 * ct)
    assert gp.b == pytest.approx(float(np.sum(np.tanh(W) * ct)))
    np.testing.assert_allclose(gd["c"], ct)


def test_jacobian_over_a_namedtuple_and_a_dict():
    def f(p):
        return ag.tanh(p.w) * p.b

    jac = ag.jacobian(f)(P(W, np.array(2.0)))
    assert type(jac) is P
    np.testing.assert_allclose(jac.w, np.diag((1 - np.tanh(W) ** 2) * 2.0))
    np.testing.assert_allclose(jac.b, np.tanh(W))
    jd = ag.jacobian(lambda d: d["x"] * 3.0)({"x": W})
    np.testing.assert_allclose(jd["x"], 3.0 * np.eye(3))


def test_jvp_with_dicts_filled_in_different_orders():
    def f(d):
        return d["a"] * 2.0 + d["b"] * 3.0

    primals = ({"a": W, "b": W},)
    tangents = ({"b": np.ones(3), "a": np.zeros(3)},)  # matched by key, not by insertion order
    _, jv = ag.jvp(f, primals, tangents)
    np.testing.assert_allclose(jv, 3.0 * np.ones(3))


# ---------------------------------------------------------------------------------------------
# Capture with pytree arguments and outputs


class Batch(NamedTuple):
    x: Any
    scale: Any


def test_capture_with_a_namedtuple_argument_and_output():
    w = ag.tensor(np.array([1.0, 2.0]), requires_grad=True)
    opt = optim.SGD([w], lr=0.1, capturable=True)

    def step(batch):
        opt.zero_grad()
        loss = ag.sum(w * batch.x) * batch.scale
        loss.backward()
        opt.step()
        return Pair(loss, {"x": batch.x})

    s = ag.capture(step, Batch(ag.tensor(np.array([1.0, 1.0])), 2.0), warmup=1)
    assert type(s.inputs[0]) is Batch and type(s.inputs[0].x) is ag.Tensor
    assert s.inputs[0].scale is None  # a constant leaf
    out = s(Batch(ag.tensor(np.array([3.0, 4.0])), 2.0))
    assert type(out) is Pair and type(out.left) is ag.Tensor
    np.testing.assert_allclose(out.right["x"].numpy(), [3.0, 4.0])
    # two warm-up/recording steps moved w by -0.1 * 2 * [1, 1] each
    np.testing.assert_allclose(float(out.left), 2.0 * (0.6 * 3.0 + 1.6 * 4.0))
    again = s(Batch(ag.tensor(np.array([0.0, 1.0])), 2.0))
    assert again is out  # the same output buffers
    s.check(Batch(ag.tensor(np.array([1.0, 0.5])), 2.0))
    with pytest.raises(ag.CaptureError, match="constant 2.0"):
        s(Batch(ag.tensor(np.array([1.0, 1.0])), 3.0))
    with pytest.raises(ag.CaptureError, match="structure"):
        s((ag.tensor(np.array([1.0, 1.0])), 2.0))  # a tuple, not a Batch
    with pytest.raises(ag.CaptureError, match=r"argument 0 \(leaf 0\) has shape"):
        s(Batch(ag.tensor(np.array([1.0, 1.0, 1.0])), 2.0))


def test_capture_outputs_in_a_dict_are_matched_by_key():
    w = ag.tensor(np.array([1.0, 2.0]))
    calls = []

    def step(x):
        calls.append(0)
        a, b = x * 2.0, x + w
        # the recording returned the keys in one order, later calls in the other
        return {"a": a, "b": b} if len(calls) <= 2 else {"b": b, "a": a}

    s = ag.capture(step, ag.tensor(np.array([0.0, 0.0])), warmup=1)
    out = s(ag.tensor(np.array([1.0, 1.0])))
    np.testing.assert_allclose(out["a"].numpy(), [2.0, 2.0])
    np.testing.assert_allclose(out["b"].numpy(), [2.0, 3.0])
