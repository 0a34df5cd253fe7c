"""In-place changes through views (issue 15, class 1).

Every op whose result may alias its input's storage gives the result the input's version
counter, so an in-place change through any alias (the base, a view, a view of a view, a
``detach()``) that records no graph makes backward refuse every graph that saved any alias.
An in-place op that records a graph writes through every view (issue 23,
``tests/test_view_writes.py``).

The regression tests name each path that once gave a wrong gradient; the property test draws
random chains of view ops and a random in-place change through a random alias, and checks that
backward either raises or gives the gradient of the same computation without the change.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import agnograd as ag
from agnograd.autograd import shares_storage

from .conftest import CPU_BACKENDS

W0 = np.array([[1.0, 2.0], [3.0, 4.0]])
STALE = "modified in place"
ALIASED = "shares its storage"

# How a test may reach a view of W (each once gave W.grad = [[0,2],[4,6]] for the first
# regression below, where [[2,4],[6,8]] is right).
VIEWS = {
    "T": lambda w: w.T,
    "mT": lambda w: w.mT,
    "matrix_transpose": lambda w: ag.matrix_transpose(w),
    "reshape": lambda w: ag.reshape(w, (4,)),
    "method_reshape": lambda w: w.reshape(4, 1),
    "permute_dims": lambda w: ag.permute_dims(w, (1, 0)),
    "slice_all": lambda w: w[:, :],
    "slice_row": lambda w: w[0, :],
    "ellipsis": lambda w: w[...],
    "newaxis": lambda w: w[None, ...],
    "expand_dims": lambda w: ag.expand_dims(w, axis=0),
    "squeeze": lambda w: ag.squeeze(ag.expand_dims(w, axis=0), axis=0),
    "flip": lambda w: ag.flip(w, axis=0),
    "moveaxis": lambda w: ag.moveaxis(w, 0, 1),
    "broadcast_to": lambda w: ag.broadcast_to(w, (3, 2, 2)),
    "broadcast_arrays": lambda w: ag.broadcast_arrays(
        w, ag.tensor(np.zeros((3, 1, 1)), backend=w.backend))[0],
    "unstack": lambda w: ag.unstack(w, axis=1)[0],
    "diagonal": lambda w: ag.linalg.diagonal(w),
    "real": lambda w: ag.real(w),
    "view_of_view": lambda w: w.T[0:1, ...],
}


def _w(backend: str, requires_grad: bool = True) -> ag.Tensor:
    return ag.tensor(W0.copy(), backend=backend, requires_grad=requires_grad)


# ---------------------------------------------------------------------------------------------
# The issue's example, and each way to reach it


def test_the_issue_example_raises_instead_of_a_wrong_gradient(backend: str) -> None:
    W = _w(backend)
    L = ag.sum(W.T ** 2)
    with ag.no_grad():
        W -= 1.0
    with pytest.raises(RuntimeError, match=STALE):
        L.backward()


@pytest.mark.parametrize("view", sorted(VIEWS))
def test_mutating_the_base_invalidates_a_saved_view(view: str, backend: str) -> None:
    W = _w(backend)
    L = ag.sum(VIEWS[view](W) ** 2)
    with ag.no_grad():
        W -= 1.0
    with pytest.raises(RuntimeError, match=STALE):
        L.backward()


@pytest.mark.parametrize("view", sorted(VIEWS))
def test_mutating_a_view_invalidates_the_saved_base(view: str) -> None:
    W = _w("numpy")
    L = ag.sum(W ** 2)  # saves W itself
    v = VIEWS[view](W)  # a view taken after the save
    with ag.no_grad():
        try:
            v *= 2.0
        except RuntimeError as exc:  # a broadcast view: nothing changed
            assert "broadcast view" in str(exc)
            L.backward()
            np.testing.assert_array_equal(W.grad.numpy(), 2 * W0)
            return
    with pytest.raises(RuntimeError, match=STALE):
        L.backward()


def test_mutating_one_view_invalidates_another_saved_view() -> None:
    W = _w("numpy")
    L = ag.sum(ag.sin(W.T))  # saves the transpose
    r = ag.reshape(W, (4,))
    with ag.no_grad():
        r[0] = 10.0
    with pytest.raises(RuntimeError, match=STALE):
        L.backward()


def test_setitem_through_a_view_under_no_grad_is_refused_at_backward() -> None:
    W = _w("numpy")
    L = ag.sum(W * W)
    with ag.no_grad():
        W.T[0, 1] = 7.0  # writes W[1, 0]
    assert W.numpy()[1, 0] == 7.0
    with pytest.raises(RuntimeError, match=STALE):
        L.backward()


def test_a_view_of_a_non_leaf_intermediate_is_covered() -> None:
    x = _w("numpy")
    h = x * 1.0
    L = ag.sum(ag.sin(ag.permute_dims(h, (1, 0))))
    with ag.no_grad():
        h += 1.0
    with pytest.raises(RuntimeError, match=STALE):
        L.backward()


def test_views_of_a_tensor_without_grad_share_its_counter_too() -> None:
    # A constant operand saved by a graph: changing it through a view must be noticed.
    W = _w("numpy")
    c = ag.tensor(W0.copy())
    L = ag.sum(W * c.T)
    with ag.no_grad():
        c[0, 0] = 5.0
    with pytest.raises(RuntimeError, match=STALE):
        L.backward()


def test_a_mutation_before_the_save_is_fine() -> None:
    W = _w("numpy")
    v = W.T
    with ag.no_grad():
        v += 1.0
    L = ag.sum(W.T ** 2)
    L.backward()
    np.testing.assert_array_equal(W.grad.numpy(), 2 * (W0 + 1.0))


def test_no_mutation_no_refusal() -> None:
    W = _w("numpy")
    L = ag.sum(W.T ** 2) + ag.sum(ag.reshape(W, (4,)) ** 3)
    L.backward()
    np.testing.assert_allclose(W.grad.numpy(), 2 * W0 + 3 * W0 ** 2)


# ---------------------------------------------------------------------------------------------
# Other ways to alias a tensor's storage


@pytest.mark.parametrize("alias", ["detach", "from_dlpack"])
def test_other_aliases_share_the_counter(alias: str) -> None:
    W = _w("numpy")
    L = ag.sum(W ** 2)
    # (from_dlpack refuses a Tensor that requires grad: its detached alias is imported)
    a = {"detach": lambda: W.detach(), "from_dlpack": lambda: ag.from_dlpack(W.detach())}[alias]()
    assert np.shares_memory(a.numpy(), W.numpy())
    with ag.no_grad():
        a -= 1.0
    with pytest.raises(RuntimeError, match=STALE):
        L.backward()


@pytest.mark.parametrize("copy", ["asarray", "tensor", "Tensor"])
def test_a_copy_does_not_share_the_counter(copy: str) -> None:
    W = _w("numpy")
    L = ag.sum(W ** 2)
    a = {"asarray": lambda: ag.asarray(W, copy=True), "tensor": lambda: ag.tensor(W),
         "Tensor": lambda: ag.Tensor(W)}[copy]()
    assert not np.shares_memory(a.numpy(), W.detach().numpy())
    b = W[ag.tensor(np.array([0, 1]))]  # an integer-array key copies
    with ag.no_grad():
        a -= 1.0
        b -= 1.0
    L.backward()
    np.testing.assert_array_equal(W.grad.numpy(), 2 * W0)


def test_an_optimizer_step_through_views_is_refused() -> None:
    W = _w("numpy")
    opt = ag.optim.SGD([W], lr=0.1)
    ag.sum(W * 3.0).backward()  # a gradient for the step
    L = ag.sum(W.T ** 2)
    opt.step()  # updates W in place: the saved transpose is stale
    with pytest.raises(RuntimeError, match=STALE):
        L.backward()


def test_a_captured_step_overwriting_a_saved_buffer_is_refused() -> None:
    # The step's input and output buffers are overwritten in place by the next call.
    x = ag.tensor(np.array([1.0, 2.0]))
    step = ag.capture(lambda t: t * 2.0, x)
    out = step(x)
    W = ag.tensor(np.array([3.0, 4.0]), requires_grad=True)
    L = ag.sum(W * out[...])  # saves a view of the output buffer
    step(ag.tensor(np.array([5.0, 6.0])))
    with pytest.raises(RuntimeError, match=STALE):
        L.backward()


# ---------------------------------------------------------------------------------------------
# Saved outputs


@pytest.mark.parametrize("op", ["exp", "sqrt", "tanh"])
def test_mutating_a_saved_output_is_refused(op: str, backend: str) -> None:
    x = ag.tensor(np.array([0.5, 1.0]), backend=backend, requires_grad=True)
    y = getattr(ag, op)(x)  # the rule reads the output
    L = ag.sum(y)
    with ag.no_grad():
        y *= 2.0
    with pytest.raises(RuntimeError, match="its output 0"):
        L.backward()


def test_mutating_a_view_of_a_saved_output_is_refused() -> None:
    x = _w("numpy")
    y = ag.exp(x)
    L = ag.sum(y)
    with ag.no_grad():
        y.T[0, 0] = 0.0
    with pytest.raises(RuntimeError, match="its output 0"):
        L.backward()


def test_mutating_a_saved_output_of_a_multi_output_op_is_refused() -> None:
    a = ag.tensor(np.array([[2.0, 1.0], [1.0, 3.0]]), requires_grad=True)
    w, v = ag.linalg.eigh(a)
    L = ag.sum(w) + ag.sum(v[:, 0] ** 2)
    with ag.no_grad():
        w += 1.0
    with pytest.raises(RuntimeError, match=STALE):
        L.backward()


# ---------------------------------------------------------------------------------------------
# One slicing rule: a view is a view, graph or not


def test_a_slice_aliases_its_base_graph_or_not(backend: str) -> None:
    for grad in (False, True):
        x = ag.tensor(np.arange(4.0), backend=backend, requires_grad=True)
        with ag.set_grad_enabled(grad):
            y = x * 1.0
            v = y[0:2]
        assert shares_storage(v) and shares_storage(y)
        assert v._version is y._version
        with ag.no_grad():
            v += 1.0
        np.testing.assert_array_equal(ag.to_backend(y, "numpy").numpy(), [1.0, 2.0, 2.0, 3.0])


@pytest.mark.parametrize("where", ["view", "base"])
@pytest.mark.parametrize("how", ["iadd", "setitem"])
def test_an_in_place_op_recording_a_graph_writes_through_every_alias(where: str, how: str) -> None:
    # Once refused (issue 15); now PyTorch's semantics (issue 23): every alias sees the write,
    # and the gradient flows through it.
    torch = pytest.importorskip("torch")
    out = []
    for lib in ("ag", "torch"):
        if lib == "ag":
            x = ag.tensor(np.arange(4.0), requires_grad=True)
        else:
            x = torch.arange(4.0, dtype=torch.float64, requires_grad=True)
        y = x * 1.0
        v = y[0:2]
        t = v if where == "view" else y
        if how == "iadd":
            t += x[0:2] if where == "view" else x
        else:
            t[0] = x[3]
        loss = (y * y).sum() + (v ** 3).sum()
        loss.backward()
        vals = [np.asarray(a.detach().numpy()) for a in (y, v, x.grad)]
        out.append(vals)
    for a, b in zip(*out):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_an_in_place_op_recording_a_graph_still_works_without_aliases() -> None:
    x = ag.tensor(np.arange(4.0), requires_grad=True)
    y = x * 1.0
    y += x
    y[0] = 10.0
    ag.sum(y * y).backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 8.0, 16.0, 24.0])


# ---------------------------------------------------------------------------------------------
# Property test: random view chains, a random in-place change through a random alias


def _view_ops(shape: tuple[int, ...]) -> list[tuple[str, object]]:
    """(name, argument) pairs of view ops that apply to ``shape``."""
    nd = len(shape)
    ops: list[tuple[str, object]] = [("ellipsis", None), ("real", None)]
    if nd == 2:
        ops.append(("T", None))
    if nd >= 2:
        ops += [("mT", None), ("moveaxis", None), ("diagonal", None)]
        ops += [("permute_dims", tuple(reversed(range(nd))))]
    if nd >= 1:
        ops += [("flip", a) for a in range(nd)]
        ops += [("reshape", (-1,)), ("slice_first", None), ("slice_tail", None)]
        ops += [("unstack", a) for a in range(nd) if nd >= 2]
        if shape[0] > 1:
            ops.append(("int_first", None))
    if nd <= 3:
        ops += [("expand_dims", a) for a in range(nd + 1)]
        ops.append(("broadcast_to", None))
    ops += [("squeeze", a) for a in range(nd) if shape[a] == 1]
    if nd == 1 and shape[0] % 2 == 0:
        ops.append(("reshape", (2, shape[0] // 2)))
    return ops


def _apply(name: str, arg: object, v: ag.Tensor) -> ag.Tensor:
    nd = v.ndim
    if name == "ellipsis":
        return v[...]
    if name == "real":
        return ag.real(v)
    if name == "T":
        return v.T
    if name == "mT":
        return v.mT
    if name == "moveaxis":
        return ag.moveaxis(v, 0, -1)
    if name == "diagonal":
        return ag.linalg.diagonal(v)
    if name == "permute_dims":
        return ag.permute_dims(v, arg)  # type: ignore[arg-type]
    if name == "flip":
        return ag.flip(v, axis=arg)  # type: ignore[arg-type]
    if name == "reshape":
        return ag.reshape(v, arg)  # type: ignore[arg-type]
    if name == "slice_first":
        return v[(slice(0, 1),) + (slice(None),) * (nd - 1)]
    if name == "slice_tail":
        return v[(slice(1, None),) + (slice(None),) * (nd - 1)]
    if name == "int_first":
        return v[(1,) + (slice(None),) * (nd - 1)]
    if name == "unstack":
        return ag.unstack(v, axis=arg)[0]  # type: ignore[arg-type]
    if name == "expand_dims":
        return ag.expand_dims(v, axis=arg)  # type: ignore[arg-type]
    if name == "broadcast_to":
        return ag.broadcast_to(v, (2,) + v.shape)
    if name == "squeeze":
        return ag.squeeze(v, axis=arg)  # type: ignore[arg-type]
    raise AssertionError(name)


@st.composite
def _scenarios(draw: st.DrawFn) -> dict[str, object]:
    shape = draw(st.sampled_from([(2, 3), (3, 2), (1, 3), (2, 2), (2, 1, 3), (2, 2, 2)]))
    chain = []
    s = shape
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(_view_ops(s)))
        chain.append(op)
        s = _apply(op[0], op[1], ag.zeros(s)).shape
    return {
        "shape": shape,
        "chain": chain,
        "intermediate": draw(st.booleans()),  # the base is x * 1.0, not the leaf itself
        "loss": draw(st.sampled_from(["square", "sin_times", "exp_plus", "sqrt_plus"])),
        # which alias to change: -1 none, 0 the base, k the k-th view, len + 1 the loss's saved
        # output (exp or sqrt; else as len + 2), len + 2 a view of the base made after the loss
        "target": draw(st.integers(-1, len(chain) + 2)),
        "detach": draw(st.booleans()),  # change it through target.detach()
        "how": draw(st.sampled_from(["+=", "-=", "*=", "/=", "setitem_all", "setitem_first"])),
        "no_grad": draw(st.booleans()),
        "seed": draw(st.integers(0, 2 ** 16)),
    }


def _run(sc: dict[str, object], backend: str, mutate: bool) -> tuple[ag.Tensor, ag.Tensor]:
    rng = np.random.default_rng(sc["seed"])  # type: ignore[arg-type]
    x0 = rng.uniform(0.5, 1.5, size=sc["shape"])  # type: ignore[arg-type]
    leaf = ag.tensor(x0, backend=backend, requires_grad=True)
    base = leaf * 1.0 if sc["intermediate"] else leaf
    aliases = [base]
    v = base
    for name, arg in sc["chain"]:  # type: ignore[attr-defined]
        v = _apply(name, arg, v)
        aliases.append(v)
    kind = sc["loss"]
    if kind == "square":
        L = ag.sum(v ** 2)
    elif kind == "sin_times":
        L = ag.sum(ag.sin(v) * v)
    elif kind == "exp_plus":
        e = ag.exp(v)  # saves its output
        L = ag.sum(e) + ag.sum(aliases[len(aliases) // 2] ** 3)
    else:
        e = ag.sqrt(v)  # saves its output
        L = ag.sum(ag.log(base) * 2.0) + ag.sum(e)
    if mutate and sc["target"] >= 0:  # type: ignore[operator]
        t: int = sc["target"]  # type: ignore[assignment]
        if t < len(aliases):
            a = aliases[t]
        elif t == len(aliases) and kind in ("exp_plus", "sqrt_plus"):
            a = e  # a saved output
        else:  # a view made after the loss
            a = base.T if base.ndim == 2 else base[...]
        if sc["detach"]:
            a = a.detach()
        with ag.set_grad_enabled(not sc["no_grad"]):
            try:
                _mutate(a, sc["how"])  # type: ignore[arg-type]
            except RuntimeError as exc:  # refused: a leaf, or an alias under a recorded graph
                assert "in-place" in str(exc) or "= ..." in str(exc) or ALIASED in str(exc)
            except ValueError as exc:  # a read-only NumPy view (broadcast_to, diagonal)
                assert "read-only" in str(exc) or "cannot be stored" in str(exc), exc
    return L, leaf


def _mutate(a: ag.Tensor, how: str) -> None:
    if how == "+=":
        a += 0.25
    elif how == "-=":
        a -= 0.25
    elif how == "*=":
        a *= 1.5
    elif how == "/=":
        a /= 2.0
    elif how == "setitem_all":
        a[...] = 0.75
    else:
        a[(0,) + (slice(None),) * (a.ndim - 1) if a.ndim else ...] = 1.25


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(sc=_scenarios())
def test_in_place_change_through_any_alias_raises_or_leaves_the_gradient_right(
        backend: str, sc: dict[str, object]) -> None:
    L, leaf = _run(sc, backend, mutate=True)
    try:
        L.backward()
    except RuntimeError as exc:
        assert STALE in str(exc), exc
        return
    ref_L, ref_leaf = _run(sc, backend, mutate=False)
    ref_L.backward()
    np.testing.assert_allclose(ag.to_backend(leaf.grad, "numpy").numpy(),
                               ag.to_backend(ref_leaf.grad, "numpy").numpy(), rtol=1e-12,
                               err_msg=str(sc))

