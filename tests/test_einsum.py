"""ag.einsum against np.einsum: values over many random subscripts, gradients by finite
differences, the greedy path, and errors that name the subscripts and shapes."""

from __future__ import annotations

import numpy as np
import pytest

import agnograd as ag
from agnograd.testing import check_grad

from .conftest import CPU_BACKENDS

FIXED = [
    ("ij,jk->ik", [(2, 3), (3, 4)]), ("ii->i", [(3, 3)]), ("ii", [(3, 3)]), ("iij->j", [(2, 2, 4)]),
    ("...ij,...jk->...ik", [(5, 2, 3), (3, 4)]), ("ij,jk", [(2, 3), (3, 4)]),
    ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 5)]), ("i,j", [(2,), (3,)]),
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]), ("ijk->kji", [(2, 3, 4)]), ("i,i", [(3,), (3,)]),
    ("ij->", [(2, 3)]), ("iji->j", [(3, 2, 3)]), ("...i,...i->...", [(2, 1, 3), (4, 3)]),
    ("ab,bc,cd,de->ae", [(2, 3), (3, 9), (9, 2), (2, 4)]), ("i,i,i->i", [(3,), (3,), (3,)]),
    (",ij->ij", [(), (2, 3)]), ("ij,kj->ik", [(1, 3), (4, 3)]), ("...", [(2, 3)]),
    ("ijj->i", [(2, 3, 3)]), ("i...->...", [(2, 3, 4)]), ("...ii->...i", [(2, 3, 3)]),
    ("ij,ij,ij->", [(2, 3), (2, 3), (2, 3)]), ("a b, b c -> a c", [(2, 3), (3, 2)]),
]


def _random_case(rng):
    """A random valid einsum: 1-3 operands over labels a-e with random sizes, some repeated
    within an operand, an explicit or implicit output."""
    labels = "abcde"
    size = {c: int(rng.integers(1, 4)) for c in labels}
    n_ops = int(rng.integers(1, 4))
    terms = []
    for _ in range(n_ops):
        k = int(rng.integers(0, 4))
        terms.append("".join(rng.choice(list(labels), size=k)))
    used = sorted(set("".join(terms)))
    if rng.random() < 0.5:
        out = "".join(c for c in used if rng.random() < 0.5)
        sub = ",".join(terms) + "->" + "".join(rng.permutation(list(out)))
    else:
        sub = ",".join(terms)
    return sub, [tuple(size[c] for c in t) for t in terms]


RANDOM = [_random_case(np.random.default_rng(s)) for s in range(120)]


@pytest.mark.parametrize(("sub", "shapes"), FIXED + RANDOM, ids=[c[0] or "scalar" for c in FIXED + RANDOM])
def test_einsum_matches_numpy(sub, shapes):
    rng = np.random.default_rng(len(sub))
    xs = [rng.standard_normal(s) for s in shapes]
    got = ag.einsum(sub, *[ag.tensor(x) for x in xs]).numpy()
    want = np.einsum(sub, *xs)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize(("sub", "shapes"), FIXED[:12] + RANDOM[:20])
def test_einsum_gradients(sub, shapes, backend):
    rng = np.random.default_rng(1)
    xs = [ag.tensor(rng.standard_normal(s), backend=backend) for s in shapes]
    check_grad(lambda *t: ag.einsum(sub, *t), *xs)


def test_einsum_contracts_the_smallest_pair_first(monkeypatch):
    """a(2x100) b(100x100) c(100x1): the greedy path contracts b with c first (a 100-vector),
    never the 2x100 @ 100x100 product."""
    from agnograd._ops import einsum as mod

    seen = []
    real = mod.matmul
    monkeypatch.setattr(mod, "matmul", lambda a, b: seen.append((a.shape, b.shape)) or real(a, b))
    a, b, c = np.ones((2, 100)), np.ones((100, 100)), np.ones((100, 1))
    np.testing.assert_allclose(ag.einsum("ij,jk,kl->il", a, b, c).numpy(), a @ b @ c)
    assert seen[0] == ((100, 100), (100, 1))


@pytest.mark.parametrize(("sub", "shapes", "match"), [
    ("ij,jk->ik", [(2, 3), (4, 5)], r"einsum\('ij,jk->ik'\).*label 'j'.*\(2, 3\), \(4, 5\)"),
    ("ij->ik", [(2, 3)], r"einsum\('ij->ik'\).*\['k'\].*no operand"),
    ("ij,jk", [(2, 3)], r"2 operand.*1 were given"),
    ("ijk", [(2, 3)], r"'ijk'.*3 dimension.*\(2, 3\)"),
    ("ii", [(2, 3)], r"einsum\('ii'\).*label 'i' has size 2.*and 3.*\(2, 3\)"),
    ("ij->ii", [(2, 2)], r"output repeats label 'i'"),
    ("i1", [(2, 3)], r"ASCII letters"),
])
def test_einsum_errors_name_the_subscripts_and_shapes(sub, shapes, match):
    with pytest.raises(ValueError, match=match):
        ag.einsum(sub, *[np.ones(s) for s in shapes])


def test_einsum_against_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((4, 3))
    ta = torch.tensor(a, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True)
    torch.einsum("bij,jk->bik", ta, tb).pow(2).sum().backward()
    ga, gb = ag.grad(lambda x, y: ag.sum(ag.einsum("bij,jk->bik", x, y) ** 2), argnums=(0, 1))(a, b)
    np.testing.assert_allclose(ga, ta.grad.numpy())
    np.testing.assert_allclose(gb, tb.grad.numpy())
