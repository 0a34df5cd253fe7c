"""``ag.random``: the Philox-4x32-10 device generator, and dropout's masks drawn from it.

- the generator: Random123's known answers and a pure-Python reference, in each of the three
  ways a backend computes the 32x32 -> 64-bit products;
- the same seed gives the same bits on every backend (NumPy, array_api_strict, PyTorch, Dask);
- the state lives on the device and advances in place: draws continue the stream, get_state /
  set_state / manual_seed restart it, distinct counters give distinct words;
- statistics of uniform, normal and bernoulli over 1e5 draws (means, variances, a chi-square
  bucket test);
- ``ag.capture`` and ``ag.jit`` steps with dropout, replayed over several calls, end with the
  parameters of the same steps run eagerly after the same ``ag.manual_seed``, bit for bit;
- ``ag.checkpoint`` of dropout: the recomputation draws the forward's mask, the generator
  advances once;
- the host path (``seed=``) is unchanged and still refused under capture, naming the fix.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import agnograd as ag
import agnograd.nn.functional as F
import agnograd.random as R
from agnograd import nn, optim

from .conftest import AVAILABLE

M32 = 0xFFFFFFFF
CPU = [b for b in ("numpy", "array_api_strict", "torch", "dask") if b in AVAILABLE]
STAGED = [b for b in ("numpy", "array_api_strict", "torch") if b in AVAILABLE]


def host(t):
    return np.asarray(ag.to_backend(t, "numpy").data)


def philox_reference(c, k):
    """Philox-4x32-10 in Python integers (Salmon et al. 2011)."""
    c, k = list(c), list(k)
    for _ in range(10):
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [(p1 >> 32) ^ c[1] ^ k[0], p1 & M32, (p0 >> 32) ^ c[3] ^ k[1], p0 & M32]
        k = [(k[0] + 0x9E3779B9) & M32, (k[1] + 0xBB67AE85) & M32]
    return c


# Random123's kat_vectors for philox4x32_10
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((M32, M32, M32, M32), (M32, M32), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]
MODES = [("numpy", "wide"), ("numpy", "wrap"), ("numpy", "split"), ("array_api_strict", "wide"),
         ("array_api_strict", "split"), ("torch", "wrap"), ("torch", "split")]
MODES = [m for m in MODES if m[0] in AVAILABLE]


def _philox_on(backend, mode, counters, keys):
    xp = ag.get_backend(backend).xp
    dt = xp.uint64 if mode == "wide" else xp.int64
    cs = [xp.asarray(np.array([c[j] for c in counters], dtype=np.int64), dtype=dt) for j in range(4)]
    ks = [xp.asarray(np.array([k[j] for k in keys], dtype=np.int64), dtype=dt) for j in range(2)]
    out = R.philox4x32(*cs, *ks, mode=mode)
    return np.stack([np.asarray(ag.to_backend(ag.asarray(o), "numpy").data) for o in out],
                    axis=-1).astype(np.int64).tolist()


@pytest.mark.parametrize(("backend", "mode"), MODES)
def test_philox_known_answers(backend, mode):
    got = _philox_on(backend, mode, [c for c, _, _ in KAT], [k for _, k, _ in KAT])
    assert got == [list(w) for _, _, w in KAT]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.lists(st.integers(0, M32), min_size=4, max_size=4),
                          st.lists(st.integers(0, M32), min_size=2, max_size=2)),
                min_size=1, max_size=9))
def test_philox_matches_the_python_reference_in_every_mode(cases):
    counters = [c for c, _ in cases]
    keys = [k for _, k in cases]
    want = [philox_reference(c, k) for c, k in cases]
    for backend, mode in MODES:
        assert _philox_on(backend, mode, counters, keys) == want, (backend, mode)


def test_each_backend_picks_its_product_mode():
    for b in CPU:
        ag.random.uniform(1, backend=b)
    assert R._MODES["numpy"] == "wide"
    if "torch" in AVAILABLE:
        assert R._MODES["torch"] == "wrap"  # uint64 has no shift in PyTorch; int64 wraps


# ---------------------------------------------------------------------------------------------
# The same bits on every backend


def _draws(backend):
    g = ag.random.Generator(1234, backend=backend)
    return {
        "u32": host(ag.random.uniform((7, 9), dtype=ag.float32, generator=g)),
        "u64": host(ag.random.uniform((5, 3), dtype=ag.float64, generator=g, low=-2, high=3)),
        "bern": host(ag.random.bernoulli(0.3, (33,), generator=g)),
        "n64": host(ag.random.normal((11,), dtype=ag.float64, generator=g)),
        "n32": host(ag.random.normal((4, 5), dtype=ag.float32, generator=g, mean=1, std=2)),
        "drop": host(F.dropout(ag.tensor(np.ones((6, 7), np.float32), backend=backend), 0.4,
                               generator=g)),
        "state": host(g.get_state()),
    }


@pytest.mark.parametrize("backend", [b for b in CPU if b != "numpy"])
def test_the_same_seed_gives_the_same_numbers_on_every_backend(backend):
    ref, got = _draws("numpy"), _draws(backend)
    for name in ref:
        if name.startswith("n") and backend == "torch":  # log/cos/sin of another library
            np.testing.assert_allclose(got[name], ref[name], rtol=1e-6, atol=1e-6, err_msg=name)
        else:
            np.testing.assert_array_equal(got[name], ref[name], err_msg=name)
            assert got[name].dtype == ref[name].dtype, name


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(-(2**63), 2**64 - 1),
       shape=st.lists(st.integers(0, 5), min_size=0, max_size=3).map(tuple),
       p=st.floats(0.0, 1.0), dtype=st.sampled_from(["float32", "float64"]))
def test_any_seed_and_shape_gives_the_same_bits_everywhere(seed, shape, p, dtype):
    out = {}
    for b in [b for b in ("numpy", "array_api_strict", "torch") if b in AVAILABLE]:
        g = ag.random.Generator(seed, backend=b)
        out[b] = (host(ag.random.uniform(shape, dtype=getattr(ag, dtype), generator=g)),
                  host(ag.random.bernoulli(p, shape, generator=g)), host(g.get_state()))
    ref = out.pop("numpy")
    assert ref[0].shape == shape and ref[1].shape == shape
    for got in out.values():
        for a, r in zip(got, ref):
            np.testing.assert_array_equal(a, r)


def test_uniform_uses_the_top_bits_of_the_words():
    g = ag.random.Generator(0, backend="numpy")
    u32 = host(ag.random.uniform((4,), dtype=ag.float32, generator=g))
    u64 = host(ag.random.uniform((2,), dtype=ag.float64, generator=g))
    w = philox_reference((0, 0, 0, 0), (0, 0))
    np.testing.assert_array_equal(u32, np.array([x >> 8 for x in w], np.float32) / 2**24)
    w = philox_reference((1, 0, 0, 0), (0, 0))
    np.testing.assert_array_equal(
        u64, np.array([((w[0] >> 5) * 2**26 + (w[1] >> 6)) / 2**53,
                       ((w[2] >> 5) * 2**26 + (w[3] >> 6)) / 2**53]))


# ---------------------------------------------------------------------------------------------
# State on the device


@pytest.mark.parametrize("backend", CPU)
def test_draws_continue_the_stream_and_the_state_restarts_it(backend):
    g = ag.random.Generator(7, backend=backend)
    state_obj = g._state
    whole = host(ag.random.uniform((16,), dtype=ag.float32, generator=g))
    g.manual_seed(7)
    parts = [host(ag.random.uniform((8,), dtype=ag.float32, generator=g)) for _ in range(2)]
    np.testing.assert_array_equal(np.concatenate(parts), whole)  # 8 words = 2 counters each
    assert host(g.get_state()).tolist() == [7, 4]  # key, counter
    saved = g.get_state()
    a = host(ag.random.normal((5,), generator=g))
    g.set_state(saved)
    np.testing.assert_array_equal(host(ag.random.normal((5,), generator=g)), a)
    assert g._state is state_obj  # every change is in place (a replay keeps reading it)
    assert state_obj.dtype == ag.int64 and state_obj.shape == (2,)


def test_seeds_are_64_bit_keys():
    big = ag.random.Generator(2**64 - 1, backend="numpy")
    neg = ag.random.Generator(-1, backend="numpy")
    assert host(big.get_state()).tolist() == host(neg.get_state()).tolist() == [-1, 0]
    np.testing.assert_array_equal(host(ag.random.uniform(4, generator=big)),
                                  host(ag.random.uniform(4, generator=neg)))
    a = host(ag.random.uniform(64, generator=ag.random.Generator(1, backend="numpy")))
    b = host(ag.random.uniform(64, generator=ag.random.Generator(2, backend="numpy")))
    assert not np.any(a == b)
    g = ag.random.Generator(2**63 + 12345, backend="numpy")  # key words (12345, 2**31)
    block = np.asarray(R.Generator._draw(g, 3, ag.get_backend("numpy"))).T.tolist()
    assert block == [philox_reference((c, 0, 0, 0), (12345, 2**31)) for c in range(3)]
    with pytest.raises(ValueError, match="seed"):
        ag.random.Generator(2**64)
    with pytest.raises(TypeError, match="seed"):
        ag.manual_seed(1.5)  # type: ignore[arg-type]


def test_distinct_counters_give_distinct_words():
    g = ag.random.Generator(3, backend="numpy")
    block = R.Generator._draw(g, 100_000, ag.get_backend("numpy"))  # (4, n): words by counter
    rows = np.asarray(block).T
    assert len(np.unique(rows, axis=0)) == 100_000  # Philox is a bijection of the counter
    flat = rows.ravel()
    assert len(np.unique(flat)) > 0.99990 * flat.size  # 32-bit words: ~46 birthday collisions


def test_manual_seed_seeds_every_default_generator_in_place():
    ag.manual_seed(5)
    g = ag.random.default_generator("numpy")
    obj = g._state
    a = host(ag.random.uniform(6, backend="numpy"))
    ag.random.uniform(6, backend="numpy")
    ag.manual_seed(5)
    assert ag.random.default_generator("numpy") is g and g._state is obj
    np.testing.assert_array_equal(host(ag.random.uniform(6, backend="numpy")), a)
    np.testing.assert_array_equal(
        host(ag.random.uniform(6, generator=ag.random.Generator(5, backend="numpy"))), a)


# ---------------------------------------------------------------------------------------------
# Statistics


def test_uniform_and_normal_statistics():
    n = 100_000
    for dt in (ag.float32, ag.float64):
        u = host(ag.random.uniform((n,), dtype=dt, generator=ag.random.Generator(11)))
        assert u.min() >= 0.0 and u.max() < 1.0
        assert abs(u.mean() - 0.5) < 5 * math.sqrt(1 / 12 / n)
        assert abs(u.var() - 1 / 12) < 0.002
        counts = np.bincount((u * 100).astype(np.int64), minlength=100)
        chi2 = ((counts - n / 100) ** 2 / (n / 100)).sum()
        assert chi2 < 99 + 5 * math.sqrt(2 * 99), chi2  # 99 degrees of freedom
        z = host(ag.random.normal((n,), dtype=dt, generator=ag.random.Generator(12)))
        assert abs(z.mean()) < 5 / math.sqrt(n)
        assert abs(z.var() - 1) < 0.02
        assert abs(((z - z.mean()) ** 4).mean() / z.var() ** 2 - 3) < 0.1  # kurtosis
        assert np.isfinite(z).all()
        # lag-1 correlation of consecutive draws
        assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 5 / math.sqrt(n)
    k = host(ag.random.bernoulli(0.3, (n,), generator=ag.random.Generator(13)))
    assert k.dtype == np.bool_ and abs(k.mean() - 0.3) < 5 * math.sqrt(0.21 / n)
    p = ag.tensor(np.linspace(0, 1, 11))
    kp = host(ag.random.bernoulli(p, (n // 10, 11), generator=ag.random.Generator(14)))
    np.testing.assert_allclose(kp.mean(axis=0), np.linspace(0, 1, 11), atol=0.02)
    assert kp[:, 0].sum() == 0 and kp[:, -1].all()


def test_dropout_keeps_one_minus_p_and_scales():
    x = ag.ones((400, 250), dtype=ag.float32)
    y = host(F.dropout(x, 0.25, generator=ag.random.Generator(0)))
    assert set(np.unique(y)) <= {0.0, np.float32(1 / 0.75)}
    assert abs((y != 0).mean() - 0.75) < 5 * math.sqrt(0.75 * 0.25 / y.size)


# ---------------------------------------------------------------------------------------------
# Replays (ag.capture, ag.jit) draw what eager draws


def _model(backend):
    m = nn.Sequential(nn.Linear(4, 8, seed=1, dtype=ag.float64, backend=backend), nn.Tanh(),
                      nn.Dropout(0.4), nn.Linear(8, 6, seed=2, dtype=ag.float64, backend=backend))
    opt = optim.SGD(m.parameters(), lr=0.1, momentum=0.9, capturable=True)

    def step(x, y):
        opt.zero_grad()
        h = m(x)
        loss = ag.mean((F.dropout(h, 0.2) - y) ** 2)  # the default generator, directly too
        loss.backward()
        opt.step()
        return loss

    return m, step


def _data(backend, i):
    r = np.random.default_rng(i)
    return (ag.tensor(r.normal(size=(5, 4)), backend=backend),
            ag.tensor(r.normal(size=(5, 6)), backend=backend))


@pytest.mark.parametrize("kind", ["capture", "jit"])
@pytest.mark.parametrize("backend", STAGED)
def test_replayed_dropout_steps_equal_eager_bit_for_bit(backend, kind):
    order = [0, 0, 1, 2, 3, 4, 5]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ag.manual_seed(11)
        m1, s1 = _model(backend)
        eager = [host(s1(*_data(backend, i))).item() for i in order]
        ag.manual_seed(11)
        m2, s2 = _model(backend)
        if kind == "capture":
            step = ag.capture(s2, *_data(backend, 0), warmup=1)  # two eager-equivalent steps
            assert step.replay == "staged"
            got = eager[:2] + [host(step(*_data(backend, i))).item() for i in order[2:]]
        else:
            step = ag.jit(s2)
            got = [host(step(*_data(backend, i))).item() for i in order]
            assert step.cache_info()["traces"] == 1
    assert got == eager
    assert len(set(eager[2:])) == len(eager[2:])
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        np.testing.assert_array_equal(host(p2), host(p1))


@pytest.mark.parametrize("backend", STAGED)
def test_replays_draw_fresh_masks_and_follow_manual_seed(backend):
    x = ag.tensor(np.ones((8, 8)), backend=backend)

    def f(x):
        return F.dropout(x, 0.5)

    ag.manual_seed(21)
    eager = [host(f(x)) for _ in range(3)]
    j = ag.jit(f, warmup=0)
    ag.manual_seed(21)
    got = [host(j(x)).copy() for _ in range(3)]
    for a, b in zip(eager, got):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(got[0], got[1])
    ag.manual_seed(21)  # in place: the replay reads the restarted state
    np.testing.assert_array_equal(host(j(x)), eager[0])


@pytest.mark.parametrize("made", ["inside", "outside", "lazily"])
def test_generators_made_inside_or_outside_a_traced_step(made, monkeypatch):
    """A generator made inside the step is made again by every replay (as eager makes it on
    every call); one made before is state the replay advances; a default generator made on
    first use *during* the trace is made outside it (it outlives the step)."""
    x = ag.tensor(np.ones((3, 5)))
    outer = ag.random.Generator(5, backend="numpy")
    if made == "lazily":
        monkeypatch.setattr(R, "_defaults", {})

    def f(x):
        if made == "inside":
            g = ag.random.Generator(7)
            return F.dropout(x, 0.5, generator=g) + ag.random.uniform(x.shape, generator=g)
        if made == "outside":
            return F.dropout(x, 0.5, generator=outer) + ag.random.normal(x.shape, generator=outer)
        return F.dropout(x, 0.5)

    def run(fn):
        outer.manual_seed(5)
        ag.manual_seed(0)
        return [host(fn(x)).copy() for _ in range(3)]

    eager = run(f)
    if made == "lazily":
        monkeypatch.setattr(R, "_defaults", {})
    replayed = run(ag.jit(f, warmup=0))
    for a, b in zip(eager, replayed):
        np.testing.assert_array_equal(a, b)
    same = np.array_equal(eager[0], eager[1])
    assert same == (made == "inside")


def test_dropout_with_a_seed_is_still_refused_under_capture_naming_the_fix():
    x = ag.tensor(np.ones((4, 3)))
    with pytest.raises(ag.CaptureError, match=r"seed=.*ag\.manual_seed|Generator"):
        ag.capture(lambda x: F.dropout(x, 0.5, seed=0), x)
    with pytest.raises(ag.CaptureError, match="ag.random.Generator"):
        ag.jit(lambda x: F.dropout(x, 0.5, seed=0), warmup=0)(x)
    step = ag.capture(lambda x: F.dropout(x, 0.5) * 2.0, x)  # the device generator: allowed
    assert step.replay == "staged"


# ---------------------------------------------------------------------------------------------
# Checkpoint


@pytest.mark.parametrize("backend", STAGED)
def test_checkpointed_dropout_gives_the_plain_gradient_and_stream(backend):
    w0 = np.random.default_rng(0).normal(size=(6, 5))

    def run(checkpointed):
        ag.manual_seed(8)
        w = ag.tensor(w0, backend=backend, requires_grad=True)

        def block(h):
            return F.dropout(ag.tanh(h), 0.5) * F.dropout(h, 0.3)

        y = ag.checkpoint(block, w * 2.0) if checkpointed else block(w * 2.0)
        ag.sum(y * y).backward()
        after = host(ag.random.uniform(4, backend=backend))  # the stream after the checkpoint
        return host(w.grad), host(y), after

    g1, y1, a1 = run(True)
    g0, y0, a0 = run(False)
    np.testing.assert_array_equal(y1, y0)
    np.testing.assert_allclose(g1, g0, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(a1, a0)
    assert (g0 == 0).any()  # some elements were dropped


def test_nested_checkpoints_and_an_explicit_generator_replay_their_masks():
    gen = ag.random.Generator(4)
    w0 = np.random.default_rng(1).normal(size=(5, 4))

    def run(checkpointed):
        ag.manual_seed(2)
        gen.manual_seed(4)
        w = ag.tensor(w0, requires_grad=True)

        def inner(h):
            return F.dropout(h * h, 0.5, generator=gen)

        def outer(h):
            a = F.dropout(h, 0.3)
            b = ag.checkpoint(inner, a) if checkpointed else inner(a)
            return ag.tanh(b) + F.dropout(a, 0.2, generator=gen)

        y = ag.checkpoint(outer, w) if checkpointed else outer(w)
        ag.sum(y).backward()
        return host(w.grad), host(gen.get_state()), host(ag.random.default_generator().get_state())

    (g1, *states1), (g0, *states0) = run(True), run(False)
    np.testing.assert_allclose(g1, g0, rtol=1e-12, atol=0)  # (the same masks; sums reordered)
    for a, b in zip(states1, states0):
        np.testing.assert_array_equal(a, b)


def test_checkpointed_dropout_inside_a_captured_step():
    w = ag.tensor(np.random.default_rng(2).normal(size=(4, 4)), requires_grad=True)
    opt = optim.SGD([w], lr=0.1, capturable=True)

    def step(x, ckpt=True):
        opt.zero_grad()
        block = (lambda h: F.dropout(ag.tanh(h), 0.5))
        y = ag.checkpoint(block, x @ w) if ckpt else block(x @ w)
        loss = ag.sum(y * y)
        loss.backward()
        opt.step()
        return loss

    x = ag.tensor(np.ones((3, 4)))
    ag.manual_seed(1)
    w_start = host(w).copy()
    eager = [host(step(x, False)).item() for _ in range(5)]
    w_eager = host(w).copy()
    w.data[...] = ag.tensor(w_start).data
    ag.manual_seed(1)
    cap = ag.capture(step, x, warmup=1)
    got = eager[:2] + [host(cap(x)).item() for _ in range(3)]
    assert got == eager
    np.testing.assert_array_equal(host(w), w_eager)


# ---------------------------------------------------------------------------------------------
# nn.Dropout and misuse


def test_dropout_layer_draws_from_the_device_unless_seeded():
    x = ag.ones((4, 6), dtype=ag.float32)
    ag.manual_seed(9)
    d = nn.Dropout(0.5)
    a = host(d(x))
    ag.manual_seed(9)
    np.testing.assert_array_equal(host(F.dropout(x, 0.5)), a)
    g = ag.random.Generator(9)
    np.testing.assert_array_equal(host(nn.Dropout(0.5, generator=g)(x)), a)
    s1, s2 = nn.Dropout(0.5, seed=3), nn.Dropout(0.5, seed=3)  # the host path, as before
    np.testing.assert_array_equal(host(s1(x)), host(s2(x)))
    np.testing.assert_array_equal(host(s1(x)), host(F.dropout(x, 0.5, seed=_second_host(3))))
    with pytest.raises(TypeError, match="not both"):
        nn.Dropout(0.5, seed=1, generator=g)
    with pytest.raises(TypeError, match="not both"):
        F.dropout(x, 0.5, seed=1, generator=g)
    d.eval()
    assert d(x) is x


def _second_host(seed):
    rng = nn.host_rng(seed)
    rng.random((4, 6))
    return rng


def test_misuse_raises_naming_the_fix():
    g = ag.random.Generator(0, backend="numpy")
    if "array_api_strict" in AVAILABLE:
        x = ag.tensor(np.ones(3), backend="array_api_strict")
        with pytest.raises(ValueError, match="Generator\\(seed, backend='array_api_strict'\\)"):
            F.dropout(x, 0.5, generator=g)
    with pytest.raises(ValueError, match="shape \\(2,\\)"):
        g.set_state(ag.zeros(3, dtype=ag.int64))
    with pytest.raises(TypeError, match="float32 or float64"):
        ag.random.uniform(3, dtype=ag.int32)
    with pytest.raises(ValueError, match="p must be"):
        ag.random.bernoulli(1.5, 3)
    with pytest.raises(TypeError, match="shape"):
        ag.random.uniform((2, -1))
    with pytest.raises(TypeError, match="Generator"):
        ag.random.uniform(3, generator=nn.host_rng(0))  # type: ignore[arg-type]


def test_random_is_an_attribute_but_not_star_exported():
    assert ag.random is R and "random" not in ag.__all__ and "manual_seed" in ag.__all__
    assert ag.manual_seed is R.manual_seed
    assert sorted(R.__all__) == sorted(
        ["Generator", "manual_seed", "default_generator", "uniform", "normal", "bernoulli"])


def test_a_snapshot_of_every_generator_undoes_an_eager_run():
    """What ``CapturedStep.check`` needs to compare an eager run with a replay from the same
    state: the generators' states, snapshot before the eager run and restored after it."""
    w = ag.tensor(np.ones((4, 4)), requires_grad=True)
    opt = optim.SGD([w], lr=0.1, capturable=True)
    gen = ag.random.Generator(3)

    def step(x):
        opt.zero_grad()
        loss = ag.sum(F.dropout(x @ w, 0.5) * ag.random.uniform((3, 4), generator=gen))
        loss.backward()
        opt.step()
        return loss

    x = ag.tensor(np.ones((3, 4)))
    cap = ag.capture(step, x)
    snap = R.snapshot_generators()
    w_before = host(w).copy()
    eager = host(step(x)).item()
    w_eager = host(w).copy()
    R.restore_generators(snap)
    w.data[...] = ag.tensor(w_before).data
    assert host(cap(x)).item() == eager
    np.testing.assert_array_equal(host(w), w_eager)


@pytest.mark.skipif("dask" not in AVAILABLE, reason="Dask is not installed")
def test_dask_draws_are_lazy_equal_numpy_and_persist_keeps_the_state_small():
    ag.manual_seed(4)
    g = ag.random.default_generator("dask")
    x = ag.tensor(np.ones((6, 5)), backend="dask")
    ys = [F.dropout(x, 0.5) for _ in range(5)]
    grown = len(g._state.data.__dask_graph__())  # each draw added layers to the state's graph
    ag.dask.persist(g)
    assert len(g._state.data.__dask_graph__()) == 1 < grown
    state = host(g.get_state())
    ag.manual_seed(4)
    xn = ag.tensor(np.ones((6, 5)))
    for y in ys:
        np.testing.assert_array_equal(host(y), host(F.dropout(xn, 0.5)))
    np.testing.assert_array_equal(state, host(ag.random.default_generator("numpy").get_state()))


# ---------------------------------------------------------------------------------------------
# CuPy: the CUDA graph (run by ci/gpu.sh on a GPU machine)


@pytest.mark.gpu
def test_cuda_graph_replays_draw_fresh_masks_equal_to_eager_and_to_numpy():
    if "cupy" not in AVAILABLE:
        pytest.skip("CuPy with a CUDA device is not available here")
    assert R._mode(ag.get_backend("cupy")) == "wide"
    order = [0, 0, 1, 2, 3, 4]
    ag.manual_seed(17)
    m1, s1 = _model("cupy")
    eager = [host(s1(*_data("cupy", i))).item() for i in order]
    ag.manual_seed(17)
    m2, s2 = _model("cupy")
    step = ag.capture(s2, *_data("cupy", 0), warmup=1)
    assert step.replay == "cuda-graph"
    got = eager[:2] + [host(step(*_data("cupy", i))).item() for i in order[2:]]
    np.testing.assert_allclose(got, eager, rtol=1e-12)  # (cuBLAS in a graph: same kernels)
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        np.testing.assert_allclose(host(p2), host(p1), rtol=1e-12, atol=1e-14)
    ag.manual_seed(5)
    x = ag.tensor(np.ones((64, 33), np.float32), backend="cupy")
    mask = host(F.dropout(x, 0.3))
    ag.manual_seed(5)
    np.testing.assert_array_equal(mask, host(F.dropout(ag.tensor(np.ones((64, 33), np.float32)),
                                                       0.3)))


@pytest.mark.skipif("array_api_strict" not in AVAILABLE, reason="array_api_strict missing")
def test_a_generator_on_another_device_keeps_its_draws_there(monkeypatch):
    """array_api_strict's extra devices refuse to mix arrays of two devices: a stand-in for a
    second GPU (the backend made multi-device for the test)."""
    import array_api_strict as strict

    b = ag.get_backend("array_api_strict")
    monkeypatch.setattr(b, "multi_device", True)
    monkeypatch.setattr(R, "_defaults", dict(R._defaults))  # (device1's is dropped after)
    dev = strict.Device("device1")
    g = ag.random.Generator(3, backend=b, device=dev)
    u = ag.random.uniform((5,), generator=g, dtype=ag.float64)
    assert u.device == dev == g.device
    np.testing.assert_array_equal(
        host(u), host(ag.random.uniform((5,), generator=ag.random.Generator(3, backend="numpy"),
                                        dtype=ag.float64)))
    x = ag.tensor(strict.ones((4, 3), device=dev, dtype=strict.float64))
    ag.manual_seed(2)
    y = F.dropout(x, 0.5)
    assert y.device == dev and ag.random.default_generator(b, dev).device == dev
    ag.manual_seed(2)
    np.testing.assert_array_equal(host(y), host(F.dropout(ag.tensor(np.ones((4, 3))), 0.5)))
