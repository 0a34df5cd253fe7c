"""Table records: matmul, tensordot, vecdot, matrix_transpose and the linalg extension.

Inputs are drawn well conditioned (``make=``): invertible matrices, SPD matrices, symmetric
matrices with well-separated eigenvalues, matrices with well-separated singular values. Outputs
that are only defined up to sign (eigenvectors, singular vectors, the columns of Q and rows of R)
are tested through gauge-invariant functions (squared components, reconstructions), and
symmetric-input ops symmetrise inside ``fn`` so finite differences stay symmetric.
"""

from __future__ import annotations

import math

import numpy as np

import agnograd as ag

from .core import Op, category, like

# ---------------------------------------------------------------------------------------------
# Input generators (float64 NumPy arrays; shapes are (..., M, N))


def _orthonormal(rng, batch, m, k):
    q, _ = np.linalg.qr(rng.standard_normal(batch + (m, k)))
    return q


def _invertible(rng, shape):
    """I·2 + noise, rows multiplied by random signs (so determinants of both signs)."""
    n = shape[-1]
    a = rng.uniform(-0.5, 0.5, size=shape) + 2.0 * np.eye(n)
    return a * rng.choice([-1.0, 1.0], size=shape[:-1] + (1,))


def _spd(rng, shape):
    n = shape[-1]
    q = rng.uniform(-1.0, 1.0, size=shape)
    return q @ np.swapaxes(q, -1, -2) + n * np.eye(n)


def _separated_sym(rng, shape):
    """Symmetric, eigenvalues about 1.3 apart (some negative)."""
    n = shape[-1]
    batch = shape[:-2]
    lam = np.arange(n) * 1.3 - 1.0 + rng.uniform(0.0, 0.2, size=batch + (n,))
    v = _orthonormal(rng, batch, n, n)
    return (v * lam[..., None, :]) @ np.swapaxes(v, -1, -2)


def _separated_sv(rng, shape):
    """Singular values about 0.7 apart, between 0.8 and 3.5."""
    m, n = shape[-2:]
    batch = shape[:-2]
    k = min(m, n)
    s = 0.8 + np.arange(k)[::-1] * 0.7 + rng.uniform(0.0, 0.1, size=batch + (k,))
    u = _orthonormal(rng, batch, m, k)
    v = _orthonormal(rng, batch, n, k)
    return (u * s[..., None, :]) @ np.swapaxes(v, -1, -2)


def _first(gen):
    """``make=`` drawing the first input with ``gen`` and the others uniformly in [-1, 1]."""

    def make(rng, shapes):
        return [gen(rng, shapes[0])] + [rng.uniform(-1.0, 1.0, size=s) for s in shapes[1:]]

    return make


def _each(gen):
    return lambda rng, shapes: [gen(rng, s) for s in shapes]


def _away_from_zero(rng, shape):
    """|x| in [0.5, 1.5] with random signs."""
    return rng.uniform(0.5, 1.5, size=shape) * rng.choice([-1.0, 1.0], size=shape)


def _distinct_magnitudes(rng, shape):
    """Distinct non-zero magnitudes (no ties for the inf/-inf norms)."""
    size = int(np.prod(shape))
    mags = 0.4 + rng.permutation(size) * 0.3
    return (mags * rng.choice([-1.0, 1.0], size=size)).reshape(shape)


def _zero_rows(rng, shapes):
    """The first row (vector) is exactly zero: the subgradient convention of vector_norm."""
    x = _away_from_zero(rng, shapes[0])
    x.reshape((-1, shapes[0][-1]))[0] = 0.0
    return [x]


def _sym(a):
    return (a + a.mT) / 2


def _sq(t):
    return t * t


def _selector(a, rows, cols):
    """A constant ``eye(rows, cols)`` like ``a``: selects leading columns/rows without indexing."""
    return like(a, np.eye(rows, cols), dtype=a.dtype)


# ---------------------------------------------------------------------------------------------
# Functions of decompositions that do not depend on the sign (gauge) of the vectors


def _eigh_vectors_squared(a):
    return _sq(ag.linalg.eigh(_sym(a)).eigenvectors)


def _eigh_all(a):
    # (V∘V) diag(w) (V∘V)ᵀ: uses both outputs, invariant under sign flips of eigenvectors.
    w, v = ag.linalg.eigh(_sym(a))
    return ag.matmul(_sq(v) * ag.expand_dims(w, axis=-2), ag.matrix_transpose(_sq(v)))


def _svd_all(a, full_matrices=False):
    # (U∘U) diag(S) (Vh∘Vh): uses every output, invariant under sign flips of singular pairs.
    u, s, vh = ag.linalg.svd(a, full_matrices=full_matrices)
    if full_matrices:  # only the first min(M, N) columns of U / rows of Vh are unique
        m, n = a.shape[-2:]
        k = min(m, n)
        u = ag.matmul(u, _selector(a, m, k))
        vh = ag.matmul(_selector(a, k, n), vh)
    return ag.matmul(_sq(u) * ag.expand_dims(s, axis=-2), _sq(vh))


def _qr_all(a, mode="reduced"):
    q, r = ag.linalg.qr(a, mode=mode)
    return ag.matmul(_sq(q), _sq(r))


# ---------------------------------------------------------------------------------------------
# Shapes

MAT = [((2, 3),), ((2, 3, 4),)]
SQ = [((3, 3),), ((2, 3, 3),)]
SQ1 = [((1, 1),), ((3, 3),), ((2, 3, 3),)]
RECT = [((3, 3),), ((4, 3),), ((3, 4),), ((2, 3, 2),)]
TALL = [((3, 3),), ((4, 3),), ((2, 4, 2),)]
WIDE = [((2, 3),), ((2, 2, 4),)]

OPS = [
    # matmul: matrices, batches, broadcast batches, vector operands, the @ operator
    Op("linalg.matmul", lambda a, b: ag.matmul(a, b),
       [((2, 3), (3, 4)), ((2, 2, 3), (2, 3, 2)), ((2, 1, 2, 3), (3, 3, 2)),
        ((1, 2, 3), (2, 3, 2))]),
    Op("linalg.matmul-vector", lambda a, b: ag.matmul(a, b),
       [((3,), (3,)), ((3,), (3, 2)), ((2, 3), (3,)), ((2, 2, 3), (3,)), ((3,), (2, 3, 2))]),
    Op("linalg.matmul-operator", lambda a, b: a @ b, [((2, 3), (3, 2))]),
    Op("linalg.matmul-extension", lambda a, b: ag.linalg.matmul(a, b), [((2, 3), (2, 3, 2))]),
    # tensordot
    Op("linalg.tensordot", lambda a, b: ag.tensordot(a, b), [((2, 3, 4), (3, 4, 2))]),
    Op("linalg.tensordot-int", lambda a, b: ag.tensordot(a, b, axes=1),
       [((2, 3), (3, 4)), ((3,), (3,))]),
    Op("linalg.tensordot-outer", lambda a, b: ag.tensordot(a, b, axes=0), [((2,), (3, 2))]),
    Op("linalg.tensordot-pairs", lambda a, b: ag.linalg.tensordot(a, b, axes=((0, 2), (2, 0))),
       [((3, 2, 4), (4, 2, 3))]),
    Op("linalg.tensordot-negative-axes", lambda a, b: ag.tensordot(a, b, axes=((-1,), (-2,))),
       [((2, 3), (4, 3, 2))]),
    # vecdot
    Op("linalg.vecdot", lambda a, b: ag.vecdot(a, b),
       [((3,), (3,)), ((2, 3), (2, 3)), ((2, 3), (3,)), ((4, 1, 3), (2, 3))]),
    Op("linalg.vecdot-axis", lambda a, b: ag.linalg.vecdot(a, b, axis=-2),
       [((3, 2), (3, 2)), ((2, 3, 2), (3, 1))]),
    # matrix_transpose
    Op("linalg.matrix_transpose", lambda a: ag.matrix_transpose(a) * like(a, [1.0, 2.0, 3.0]),
       [((3, 2),), ((2, 3, 3),)]),
    Op("linalg.matrix_transpose-mT", lambda a: a.mT @ a, [((2, 3),)]),
    # outer, cross
    Op("linalg.outer", lambda a, b: ag.linalg.outer(a, b), [((3,), (2,)), ((1,), (3,))]),
    Op("linalg.cross", lambda a, b: ag.linalg.cross(a, b),
       [((3,), (3,)), ((2, 3), (3,)), ((2, 1, 3), (4, 3))]),
    Op("linalg.cross-axis", lambda a, b: ag.linalg.cross(a, b, axis=-2),
       [((3, 2), (3, 2)), ((2, 3, 4), (3, 4))]),
    # inverse, determinants, solve
    Op("linalg.inv", lambda a: ag.linalg.inv(a), SQ1, make=_each(_invertible)),
    Op("linalg.det", lambda a: ag.linalg.det(a), SQ1 + [((2, 2, 2),)], make=_each(_invertible)),
    Op("linalg.slogdet", lambda a: ag.linalg.slogdet(a).logabsdet, SQ1, make=_each(_invertible)),
    # sign is a constant: it never requires grad, so only logabsdet carries the gradient
    Op("linalg.slogdet-sign", lambda a: (lambda s, la: s * la)(*ag.linalg.slogdet(a)), SQ,
       make=_each(_invertible)),
    Op("linalg.solve", lambda a, b: ag.linalg.solve(a, b),
       [((3, 3), (3, 2)), ((2, 3, 3), (2, 3, 2)), ((2, 3, 3), (3, 2)), ((3, 3), (2, 3, 1))],
       make=_first(_invertible)),
    Op("linalg.solve-vector", lambda a, b: ag.linalg.solve(a, b),
       [((3, 3), (3,)), ((2, 3, 3), (3,))], make=_first(_invertible)),
    # cholesky (symmetric positive definite)
    Op("linalg.cholesky", lambda a: ag.linalg.cholesky(_sym(a)), SQ1, make=_each(_spd)),
    Op("linalg.cholesky-upper", lambda a: ag.linalg.cholesky(_sym(a), upper=True), SQ,
       make=_each(_spd)),
    # eigh / eigvalsh (symmetric, separated eigenvalues)
    Op("linalg.eigh-eigenvalues", lambda a: ag.linalg.eigh(_sym(a)).eigenvalues, SQ1,
       make=_each(_separated_sym)),
    Op("linalg.eigh-vectors-squared", _eigh_vectors_squared, SQ, make=_each(_separated_sym),
       f32_rtol=2e-3),
    Op("linalg.eigh-all", _eigh_all, [((4, 4),), ((2, 3, 3),)], make=_each(_separated_sym),
       f32_rtol=2e-3),
    Op("linalg.eigvalsh", lambda a: ag.linalg.eigvalsh(_sym(a)), SQ1, make=_each(_separated_sym)),
    # A repeated eigenvalue (the identity plus a rank-one term): single eigenvalues are not
    # differentiable there, symmetric functions of them are (Σλ³ = tr A³). First order only:
    # the second derivative goes through the eigenvectors, which are not unique here.
    Op("linalg.eigvalsh-repeated", lambda a: ag.sum(ag.linalg.eigvalsh(_sym(a)) ** 3),
       [((3, 3),)],
       make=lambda rng, s: [np.eye(3) + np.outer([1.0, 2.0, 2.0], [1.0, 2.0, 2.0]) / 9.0],
       order=1),
    # svd / svdvals (separated singular values)
    Op("linalg.svd-S", lambda a: ag.linalg.svd(a, full_matrices=False).S, RECT,
       make=_each(_separated_sv)),
    Op("linalg.svd-U-squared", lambda a: _sq(ag.linalg.svd(a, full_matrices=False).U), RECT,
       make=_each(_separated_sv), f32_rtol=2e-3),
    Op("linalg.svd-Vh-squared", lambda a: _sq(ag.linalg.svd(a, full_matrices=False).Vh), RECT,
       make=_each(_separated_sv), f32_rtol=2e-3),
    Op("linalg.svd-all", _svd_all, RECT, make=_each(_separated_sv), f32_rtol=2e-3),
    Op("linalg.svd-full_matrices", lambda a: _svd_all(a, full_matrices=True), RECT,
       make=_each(_separated_sv), f32_rtol=2e-3),
    Op("linalg.svdvals", lambda a: ag.linalg.svdvals(a), RECT, make=_each(_separated_sv)),
    # qr (full rank)
    Op("linalg.qr", _qr_all, TALL + WIDE, make=_each(_separated_sv), f32_rtol=2e-3),
    Op("linalg.qr-Q-squared", lambda a: _sq(ag.linalg.qr(a).Q), TALL + WIDE,
       make=_each(_separated_sv), f32_rtol=2e-3),
    Op("linalg.qr-R-squared", lambda a: _sq(ag.linalg.qr(a).R), TALL + WIDE,
       make=_each(_separated_sv), f32_rtol=2e-3),
    Op("linalg.qr-complete", lambda a: _qr_all(a, mode="complete"), [((3, 3),), ((2, 3),)],
       make=_each(_separated_sv), f32_rtol=2e-3),
    # pinv (full rank: the rank is locally constant)
    Op("linalg.pinv", lambda a: ag.linalg.pinv(a), [((3, 3),), ((4, 2),), ((2, 4),), ((2, 3, 2),)],
       make=_each(_separated_sv)),
    # matrix_power: repeated squaring, and the inverse for negative powers
    Op("linalg.matrix_power", lambda a: ag.linalg.matrix_power(a, 3), SQ1,
       make=_each(lambda rng, s: _invertible(rng, s) / 2)),
    Op("linalg.matrix_power-5", lambda a: ag.linalg.matrix_power(a, 5), [((2, 2, 2),)],
       make=_each(lambda rng, s: _invertible(rng, s) / 2)),
    Op("linalg.matrix_power-1", lambda a: ag.linalg.matrix_power(a, 1), [((2, 2),)]),
    Op("linalg.matrix_power-negative", lambda a: ag.linalg.matrix_power(a, -2), SQ,
       make=_each(_invertible)),
    # first order only: the gradient of a^0 is identically zero, so there is no graph to
    # differentiate a second time
    Op("linalg.matrix_power-0", lambda a: ag.linalg.matrix_power(a, 0) + a, [((2, 2),)],
       order=1),
    # trace, diagonal
    Op("linalg.trace", lambda a: ag.linalg.trace(a), [((3, 3),), ((2, 3, 4),)]),
    Op("linalg.trace-offset", lambda a: ag.linalg.trace(a, offset=1), [((3, 4),), ((2, 3, 3),)]),
    Op("linalg.trace-negative-offset", lambda a: ag.linalg.trace(a, offset=-1), [((4, 3),)]),
    Op("linalg.trace-dtype", lambda a: ag.linalg.trace(a, dtype=ag.float64), [((3, 3),)]),
    Op("linalg.diagonal", lambda a: ag.linalg.diagonal(a), [((3, 4),), ((2, 3, 3),)]),
    Op("linalg.diagonal-offset", lambda a: ag.linalg.diagonal(a, offset=1), [((3, 4),), ((4, 3),)]),
    Op("linalg.diagonal-negative-offset", lambda a: ag.linalg.diagonal(a, offset=-2),
       [((4, 3),), ((2, 3, 4),)]),
    # vector_norm: every ord, axes, keepdims
    Op("linalg.vector_norm", lambda a: ag.linalg.vector_norm(a), [((3,),), ((2, 3),)],
       make=_each(_away_from_zero)),
    Op("linalg.vector_norm-axis-keepdims",
       lambda a: ag.linalg.vector_norm(a, axis=1, keepdims=True), [((2, 3, 4),)],
       make=_each(_away_from_zero)),
    Op("linalg.vector_norm-axes", lambda a: ag.linalg.vector_norm(a, axis=(0, 2)), [((2, 3, 4),)],
       make=_each(_away_from_zero)),
    # first order only: the norm is not differentiable at the zero vector; the finite
    # difference there is 0, agnograd's subgradient
    Op("linalg.vector_norm-zero", lambda a: ag.linalg.vector_norm(a, axis=-1), [((2, 3),)],
       make=_zero_rows, order=1),
    Op("linalg.vector_norm-ord1", lambda a: ag.linalg.vector_norm(a, ord=1, axis=-1),
       [((3,),), ((2, 3),)], make=_each(_away_from_zero)),
    Op("linalg.vector_norm-ord3", lambda a: ag.linalg.vector_norm(a, ord=3), [((2, 3),)],
       make=_each(_away_from_zero)),
    Op("linalg.vector_norm-ord0.5", lambda a: ag.linalg.vector_norm(a, ord=0.5, axis=0),
       [((3, 2),)], make=_each(_away_from_zero)),
    Op("linalg.vector_norm-ord-1.5", lambda a: ag.linalg.vector_norm(a, ord=-1.5), [((4,),)],
       make=_each(_away_from_zero)),
    Op("linalg.vector_norm-inf", lambda a: ag.linalg.vector_norm(a, ord=math.inf, axis=-1),
       [((5,),), ((2, 4),)], make=_each(_distinct_magnitudes)),
    Op("linalg.vector_norm-neginf", lambda a: ag.linalg.vector_norm(a, ord=-math.inf),
       [((2, 3),)], make=_each(_distinct_magnitudes)),
    # first order only: a count of non-zeros, piecewise constant (zero gradient)
    Op("linalg.vector_norm-ord0", lambda a: ag.linalg.vector_norm(a, ord=0) * a, [((3,),)],
       make=_each(_away_from_zero), order=1),
    # matrix_norm: every ord
    Op("linalg.matrix_norm", lambda a: ag.linalg.matrix_norm(a), MAT),
    Op("linalg.matrix_norm-fro-keepdims", lambda a: ag.linalg.matrix_norm(a, keepdims=True),
       [((2, 3, 3),)]),
    Op("linalg.matrix_norm-nuc", lambda a: ag.linalg.matrix_norm(a, ord="nuc"), RECT,
       make=_each(_separated_sv)),
    Op("linalg.matrix_norm-2", lambda a: ag.linalg.matrix_norm(a, ord=2, keepdims=True), RECT,
       make=_each(_separated_sv)),
    Op("linalg.matrix_norm-neg2", lambda a: ag.linalg.matrix_norm(a, ord=-2), RECT,
       make=_each(_separated_sv)),
    Op("linalg.matrix_norm-1", lambda a: ag.linalg.matrix_norm(a, ord=1), MAT,
       make=_each(_away_from_zero)),
    Op("linalg.matrix_norm-neg1", lambda a: ag.linalg.matrix_norm(a, ord=-1, keepdims=True), MAT,
       make=_each(_away_from_zero)),
    Op("linalg.matrix_norm-inf", lambda a: ag.linalg.matrix_norm(a, ord=math.inf), MAT,
       make=_each(_away_from_zero)),
    Op("linalg.matrix_norm-neginf", lambda a: ag.linalg.matrix_norm(a, ord=-math.inf), MAT,
       make=_each(_away_from_zero)),
]

# ---------------------------------------------------------------------------------------------
# Complex inputs (complex128; finite differences along both parts of every element). Wrappers
# use only ops whose rules are complex-ready here (add, subtract, real, abs, indexing, scalar
# products): the Hermitian part is (A + 2·Re(Aᵀ) - Aᵀ)/2, since conj(z) = 2·Re(z) - z.
# First order only: second derivatives run the rules on Tensors, through complex multiply,
# matmul and conj (issue 16's other steps).


def _cx(rng, shape):
    return rng.uniform(-1.0, 1.0, size=shape) + 1j * rng.uniform(-1.0, 1.0, size=shape)


def _c_unitary(rng, batch, m, k):
    q, _ = np.linalg.qr(_cx(rng, batch + (m, k)))
    return q


def _c_invertible(rng, shape):
    n = shape[-1]
    return _cx(rng, shape) * 0.4 + 2.0 * np.exp(1j * rng.uniform(-3.0, 3.0)) * np.eye(n)


def _c_hpd(rng, shape):
    n = shape[-1]
    q = _cx(rng, shape)
    return q @ np.conj(np.swapaxes(q, -1, -2)) + n * np.eye(n)


def _c_separated_herm(rng, shape):
    n, batch = shape[-1], shape[:-2]
    lam = np.arange(n) * 1.3 - 1.0 + rng.uniform(0.0, 0.2, size=batch + (n,))
    v = _c_unitary(rng, batch, n, n)
    return (v * lam[..., None, :]) @ np.conj(np.swapaxes(v, -1, -2))


def _c_separated_sv(rng, shape):
    m, n = shape[-2:]
    batch = shape[:-2]
    k = min(m, n)
    s = 0.8 + np.arange(k)[::-1] * 0.7 + rng.uniform(0.0, 0.1, size=batch + (k,))
    u = _c_unitary(rng, batch, m, k)
    v = _c_unitary(rng, batch, n, k)
    return (u * s[..., None, :]) @ np.conj(np.swapaxes(v, -1, -2))


def _separated_eig(complex_):
    """Non-normal matrices V diag(λ) V⁻¹ with well-separated eigenvalues (complex ones, or real
    and complex-conjugate pairs for a real matrix)."""

    def gen(rng, shape):
        n, batch = shape[-1], shape[:-2]
        if complex_:
            lam = (np.arange(n) * 1.1 + 0.5) * np.exp(1j * rng.uniform(-3.0, 3.0, size=batch + (n,)))
            v = _cx(rng, shape) * 0.3 + np.eye(n)
            return (v * lam[..., None, :]) @ np.linalg.inv(v)
        a = rng.uniform(-1.0, 1.0, size=shape) + np.diag(np.arange(n) * 1.2 - 1.5)
        return a

    return gen


def _herm(a):
    at = ag.matrix_transpose(a)
    return (a + (ag.real(at) * 2.0 - at)) * 0.5


_ORDER = "the eigenvalues' order is the backend's: compared order-invariantly in other records"


def _eig_sorted(w):
    """|λ| and Re λ, each sorted: real, and independent of the backend's order."""
    return ag.concat([ag.sort(ag.abs(w), axis=-1), ag.sort(ag.real(w), axis=-1)], axis=-1)


def _eig_abs_vectors(a):
    """Σ_j |V_ij|·(1 + |λ_j|): |V| weighted by its eigenvalue, summed over the eigenpairs."""
    w, v = ag.linalg.eig(a)
    return ag.sum(ag.abs(v) * ag.expand_dims(ag.abs(w) + 1.0, axis=-2), axis=-1)


_PHASE = "the backward's phase check reads its outcome back to the host (where that is cheap)"


def _cop(name, fn, cases, gen, **kw):
    return Op(name, fn, cases, make=_each(gen), order=kw.pop("order", 2), **kw)


def _c_mat(rng, shape):
    return _cx(rng, shape)


OPS += [
    _cop("linalg.inv-complex", lambda a: ag.linalg.inv(a), SQ1, _c_invertible),
    _cop("linalg.det-complex", lambda a: ag.linalg.det(a), SQ1, _c_invertible),
    _cop("linalg.slogdet-complex", lambda a: ag.linalg.slogdet(a).logabsdet, SQ1, _c_invertible),
    _cop("linalg.slogdet-complex-sign", lambda a: ag.linalg.slogdet(a).sign, SQ, _c_invertible),
    Op("linalg.solve-complex", lambda a, b: ag.linalg.solve(a, b),
       [((3, 3), (3, 2)), ((2, 3, 3), (3, 2)), ((3, 3), (3,))], order=1,
       make=lambda rng, s: [_c_invertible(rng, s[0]), _cx(rng, s[1])]),
    Op("linalg.solve-complex-real-rhs", lambda a, b: ag.linalg.solve(a, b), [((3, 3), (3, 2))],
       order=1, make=lambda rng, s: [_c_invertible(rng, s[0]), rng.uniform(-1, 1, size=s[1])]),
    _cop("linalg.cholesky-complex", lambda a: ag.linalg.cholesky(_herm(a)), SQ1, _c_hpd),
    _cop("linalg.cholesky-complex-upper", lambda a: ag.linalg.cholesky(_herm(a), upper=True),
         SQ, _c_hpd),
    _cop("linalg.eigh-complex-eigenvalues", lambda a: ag.linalg.eigh(_herm(a)).eigenvalues, SQ1,
         _c_separated_herm, reads_host=_PHASE),
    _cop("linalg.eigh-complex-abs-vectors", lambda a: ag.abs(ag.linalg.eigh(_herm(a)).eigenvectors),
         SQ, _c_separated_herm, reads_host=_PHASE),
    _cop("linalg.eigvalsh-complex", lambda a: ag.linalg.eigvalsh(_herm(a)), SQ1,
         _c_separated_herm),
    _cop("linalg.svd-complex-S", lambda a: ag.linalg.svd(a, full_matrices=False).S, RECT,
         _c_separated_sv, reads_host=_PHASE),
    _cop("linalg.svd-complex-abs-U", lambda a: ag.abs(ag.linalg.svd(a, full_matrices=False).U),
         RECT, _c_separated_sv, reads_host=_PHASE),
    _cop("linalg.svd-complex-abs-Vh", lambda a: ag.abs(ag.linalg.svd(a, full_matrices=False).Vh),
         RECT, _c_separated_sv, reads_host=_PHASE),
    _cop("linalg.svd-complex-full_matrices",
         lambda a: ag.abs(ag.linalg.svd(a)[0][..., :, :2]) + ag.sum(ag.linalg.svd(a)[1]),
         [((4, 2),), ((3, 3),)], _c_separated_sv, reads_host=_PHASE),
    _cop("linalg.svdvals-complex", lambda a: ag.linalg.svdvals(a), RECT, _c_separated_sv),
    _cop("linalg.qr-complex-Q", lambda a: ag.linalg.qr(a).Q, TALL + WIDE, _c_separated_sv),
    _cop("linalg.qr-complex-R", lambda a: ag.linalg.qr(a).R, TALL + WIDE, _c_separated_sv),
    _cop("linalg.qr-complex-complete", lambda a: ag.linalg.qr(a, mode="complete").R,
         [((2, 3),)], _c_separated_sv),
    _cop("linalg.pinv-complex", lambda a: ag.linalg.pinv(a), [((3, 3),), ((4, 2),), ((2, 3, 4),)],
         _c_separated_sv),
    _cop("linalg.matrix_power-complex", lambda a: ag.linalg.matrix_power(a, -1), SQ,
         _c_invertible),
    _cop("linalg.trace-complex", lambda a: ag.linalg.trace(a, offset=1), [((3, 4),)], _c_mat),
    _cop("linalg.diagonal-complex", lambda a: ag.linalg.diagonal(a, offset=-1),
         [((2, 3, 3),)], _c_mat),
    Op("linalg.cross-complex", lambda a, b: ag.linalg.cross(a, b), [((3,), (2, 3))], order=1,
       make=lambda rng, s: [_cx(rng, s[0]), _cx(rng, s[1])]),
    _cop("linalg.vector_norm-complex", lambda a: ag.linalg.vector_norm(a, axis=-1),
         [((2, 3),)], _c_mat),
    _cop("linalg.vector_norm-complex-ord1", lambda a: ag.linalg.vector_norm(a, ord=1), [((4,),)],
         _c_mat),
    _cop("linalg.vector_norm-complex-ord3", lambda a: ag.linalg.vector_norm(a, ord=3), [((4,),)],
         _c_mat),
    _cop("linalg.vector_norm-complex-inf", lambda a: ag.linalg.vector_norm(a, ord=math.inf),
         [((4,),)], _c_mat),
    _cop("linalg.matrix_norm-complex", lambda a: ag.linalg.matrix_norm(a), MAT, _c_mat),
    _cop("linalg.matrix_norm-complex-nuc", lambda a: ag.linalg.matrix_norm(a, ord="nuc"), RECT,
         _c_separated_sv),
    _cop("linalg.matrix_norm-complex-2", lambda a: ag.linalg.matrix_norm(a, ord=2), RECT,
         _c_separated_sv),
    _cop("linalg.matrix_norm-complex-inf", lambda a: ag.linalg.matrix_norm(a, ord=math.inf), MAT,
         _c_mat),
    # eig / eigvals (2025.12): complex outputs for real and complex non-symmetric input,
    # distinct eigenvalues; eigenvectors through |V| (invariant under their phases). The order
    # of the eigenpairs is the backend's (PyTorch's float32 order differs from NumPy's), so the
    # records compare order-invariant functions of them, except the plain ones NumPy-only.
    _cop("linalg.eig-eigenvalues", lambda a: _eig_sorted(ag.linalg.eig(a).eigenvalues), SQ,
         _separated_eig(False), reads_host=_PHASE),
    _cop("linalg.eig-complex-eigenvalues", lambda a: _eig_sorted(ag.linalg.eig(a).eigenvalues),
         SQ1, _separated_eig(True), reads_host=_PHASE),
    _cop("linalg.eig-complex-eigenvalues-plain", lambda a: ag.linalg.eig(a).eigenvalues, SQ,
         _separated_eig(True), reads_host=_PHASE, skip={"torch": _ORDER}),
    _cop("linalg.eig-abs-vectors", _eig_abs_vectors, SQ, _separated_eig(False),
         reads_host=_PHASE),
    _cop("linalg.eig-complex-abs-vectors", _eig_abs_vectors, [((3, 3),), ((2, 4, 4),)],
         _separated_eig(True), reads_host=_PHASE),
    _cop("linalg.eig-abs-vectors-plain", lambda a: ag.abs(ag.linalg.eig(a).eigenvectors), SQ,
         _separated_eig(True), reads_host=_PHASE, skip={"torch": _ORDER}),
    _cop("linalg.eigvals", lambda a: _eig_sorted(ag.linalg.eigvals(a)), SQ, _separated_eig(False)),
    # first order only: the second derivative of eigvals re-enters eig's backward, whose phase
    # check refuses the recomputed complex cotangent (it raises; it never gives a wrong number)
    _cop("linalg.eigvals-complex", lambda a: _eig_sorted(ag.linalg.eigvals(a)), SQ1,
         _separated_eig(True), order=1),
    _cop("linalg.eigvals-complex-plain", lambda a: ag.linalg.eigvals(a), SQ, _separated_eig(True),
         skip={"torch": _ORDER}),
]


# einsum (beyond the standard): composed of standard ops; records cover each path of it.
OPS += [
    Op("einsum-matmul", lambda a, b: ag.einsum("ij,jk->ik", a, b), [((2, 3), (3, 4))]),
    Op("einsum-implicit", lambda a, b: ag.einsum("ij,kj", a, b), [((2, 3), (4, 3))]),
    Op("einsum-diagonal", lambda a: ag.einsum("ii->i", a), [((3, 3),)]),
    Op("einsum-trace", lambda a: ag.einsum("ii", a), [((3, 3),)]),
    Op("einsum-iij", lambda a: ag.einsum("iij->j", a), [((2, 2, 3),)]),
    Op("einsum-ellipsis", lambda a, b: ag.einsum("...ij,...jk->...ik", a, b),
       [((2, 2, 3), (3, 2)), ((1, 2, 3), (4, 3, 2))]),
    Op("einsum-three", lambda a, b, c: ag.einsum("ij,jk,kl->il", a, b, c),
       [((2, 3), (3, 4), (4, 2))]),
    Op("einsum-batch-outer", lambda a, b: ag.einsum("bi,bj->bij", a, b), [((2, 3), (2, 2))]),
]

category("linalg", OPS)
