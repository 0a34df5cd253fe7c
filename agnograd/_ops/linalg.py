"""Linear algebra: ``matmul``, ``tensordot``, ``vecdot``, ``matrix_transpose`` and the Array API
``linalg`` extension, each with its VJP rule beside it.

Rules read ``(xp, g, *saved, *params)``; a multi-output op's rule (``eigh``, ``svd``, ``qr``) gets
the tuple of its outputs' cotangents, zeros where an output received none. ``Aᵀ`` is
``matrix_transpose``, ``∘`` the elementwise product; every rule works on stacks ``(..., M, N)``.
Rules use standard functions only, so the same rule runs on backend arrays and, for
``create_graph=True``, on Tensors (``xp.linalg.solve`` is then this module's ``solve``). Masks
and selectors (``eye``-based) are built once in the forward pass and saved as constants.

Conventions where the derivative does not exist, or is not unique:

* ``vector_norm``/``matrix_norm('fro')`` at the zero vector/matrix: gradient 0 (a subgradient).
  ``ord=1`` at ``x_i = 0``: 0 (as ``abs``). ``ord=inf``/``-inf``: the gradient goes to the
  elements of largest (smallest) magnitude, split equally between ties. ``ord=0`` (a count): 0.
  General ``p``: ``sign(x)·(|x|/‖x‖)^(p-1)``, with 0 where ``x_i = 0`` (for ``p < 1`` a
  subgradient convention) and where ``‖x‖ = 0``.
* ``matrix_norm`` ``ord=2``/``-2`` with a repeated largest (smallest) singular value: the
  average of the tied ``u_i v_iᵀ`` (a subgradient). ``ord=1``/``inf``: ties split like ``max``.
* ``eigh``: the input is taken as symmetric (the backend reads one triangle) and gradients are
  symmetric. Eigenvector gradients need distinct eigenvalues: terms ``1/(λ_j - λ_i)`` with
  exactly equal eigenvalues are dropped (set to 0), which is only right when the loss does not
  depend on the eigenvectors of the repeated eigenvalue; nearly equal eigenvalues blow up.
  ``eigvalsh`` (eigenvalues only) gives ``V diag(ḡ) Vᵀ`` for whichever eigenbasis the backend
  returns: at repeated eigenvalues this is right for losses symmetric in the tied eigenvalues
  (single eigenvalues are not differentiable there).
* ``svd``: the same for ``U``/``Vh`` gradients, which need distinct (and, for non-square
  inputs, non-zero) singular values. With ``full_matrices=True`` and a non-square input only the
  first ``min(M, N)`` columns of ``U`` (rows of ``Vh``) are differentiated: the others are not
  unique, and a loss that depends on them gets a gradient as if it did not. ``svdvals`` and
  the nuclear norm behave like ``eigvalsh`` at repeated singular values (first order).
* ``cholesky``: the input is taken as symmetric positive definite; the gradient is symmetric.
* ``qr``: differentiable for ``mode='reduced'`` (any shape of full rank) and ``mode='complete'``
  with ``M <= N``; ``mode='complete'`` with ``M > N`` raises ``NotImplementedError`` on backward
  (the last ``M - N`` columns of ``Q`` are not unique).
* ``eig``/``eigvals``: distinct eigenvalues. Complex eigenvectors (``eig``, and ``eigh``/``svd``
  on complex input) are defined up to a phase each: a loss that depends on it raises
  (``_phase_check``), or gets NaN where values cannot be read back cheaply.
* Complex input: every ``ᵀ`` below is ``ᴴ`` (see docs/complex.md); real inputs keep the rules.
* ``det``, ``slogdet``, ``inv``, ``solve``: the matrix must be invertible (the gradients use
  ``A⁻ᵀ``). ``pinv``: valid where the rank does not change under small perturbations (e.g. full
  rank). ``slogdet``'s ``sign`` and ``matrix_rank`` are not differentiable (never require grad).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from ..autograd import record_binary
from ..autograd.forward import defjvp
from ..capture import _state as _capture
from . import elementwise as _ew
from . import manipulation as _manip
from . import statistics as _stats
from ._common import (
    OUT,
    Tensor,
    TensorLike,
    grad_on,
    is_complex,
    normalize_axes,
    normalize_axis,
    operands,
    out,
    raw_dtype,
    record,
    record_multi,
    to_tensor,
    view_of,
    wrap,
)

__all__ = ["matmul", "matrix_transpose", "tensordot", "vecdot"]
EXTENSION_ALL: list[str] = [
    "cholesky",
    "cross",
    "det",
    "diagonal",
    "eig",
    "eigh",
    "eigvals",
    "eigvalsh",
    "inv",
    "matmul",
    "matrix_norm",
    "matrix_power",
    "matrix_rank",
    "matrix_transpose",
    "outer",
    "pinv",
    "qr",
    "slogdet",
    "solve",
    "svd",
    "svdvals",
    "tensordot",
    "trace",
    "vecdot",
    "vector_norm",
]


class EigResult(NamedTuple):
    eigenvalues: Tensor
    eigenvectors: Tensor


class EighResult(NamedTuple):
    eigenvalues: Tensor
    eigenvectors: Tensor


class QRResult(NamedTuple):
    Q: Tensor
    R: Tensor


class SlogdetResult(NamedTuple):
    sign: Tensor
    logabsdet: Tensor


class SVDResult(NamedTuple):
    U: Tensor
    S: Tensor
    Vh: Tensor


# ---------------------------------------------------------------------------------------------
# Helpers shared by the forwards and the rules


def _needs(*ts: Any) -> bool:
    return grad_on() and any(type(t) is Tensor and t._requires_grad for t in ts)


def _meta(*ts: Tensor) -> tuple[Any, ...]:
    """Every input's (shape, dtype): the engine sums broadcast batch axes back and casts."""
    return tuple((t.data.shape, t.data.dtype) for t in ts)


def _mT(xp: Any, a: Any) -> Any:
    return xp.matrix_transpose(a)


def _mH(xp: Any, a: Any) -> Any:
    """The conjugate transpose ``Aᴴ`` (the adjoint): complex inputs' rules use it where real
    ones use ``Aᵀ``."""
    return xp.conj(xp.matrix_transpose(a))


def _tr(h: bool) -> Any:
    """``Aᴴ`` for a complex op (``h``), ``Aᵀ`` for a real one."""
    return _mH if h else _mT


def _is_c(t: Tensor) -> bool:
    return bool(t.dtype.kind == "c")


def _col(xp: Any, v: Any) -> Any:
    """(..., n) -> (..., n, 1)."""
    return xp.expand_dims(v, axis=-1)


def _row(xp: Any, v: Any) -> Any:
    """(..., n) -> (..., 1, n)."""
    return xp.expand_dims(v, axis=-2)


def _mat(xp: Any, s: Any) -> Any:
    """(...) -> (..., 1, 1): a per-matrix scalar that broadcasts over each matrix."""
    return xp.expand_dims(xp.expand_dims(s, axis=-1), axis=-1)


def _safe_recip(xp: Any, d: Any) -> Any:
    """1/d, and 0 where d == 0 (safe under differentiation: no inf in the unused branch)."""
    zero = d == 0
    return xp.where(zero, 0.0, 1.0 / xp.where(zero, 1.0, d))


def _host_check(b: Any, x: Tensor) -> bool:
    """Whether a rule may read a check's outcome back to the host (cheap: host memory, not
    lazy); where not, the check poisons the gradient with NaN instead of raising."""
    return bool(b.reads_cheaply(x.data))


_PHASE_WHAT = {"eig": "eigenvectors", "eigh": "eigenvectors", "svd": "singular vectors"}


def _phase_check(xp: Any, ga: Any, k: Any, op: str, check: bool) -> Any:
    """Complex eigen/singular vectors are defined only up to a phase ``e^{iφ}`` each; a loss is
    well defined only if it does not change under ``V -> V·diag(e^{iφ})``, i.e. when
    ``Im(diag(k)) = 0`` for ``k = VᴴV̄`` (``UᴴŪ + VᴴV̄`` for svd), as PyTorch checks. Where it
    fails: raise (``check``: a cheap host read), else NaN in that matrix's gradient."""
    im = xp.abs(xp.imag(xp.linalg.diagonal(k)))
    scale = xp.max(xp.abs(k), axis=(-2, -1), keepdims=True)[..., 0]
    tol = float(xp.finfo(k.dtype).eps) ** 0.5 * 100.0
    bad = xp.any(im > tol * scale, axis=-1)
    if check and not _capture.capturing():
        if bool(xp.any(bad)):
            what = _PHASE_WHAT[op]
            raise RuntimeError(
                f"{op}: the loss depends on the phase of the complex {what}, which are defined "
                f"only up to a factor e^(iφ) each (V -> V·e^(iφ) is an equally valid result), so "
                f"its gradient is not defined (Im(diag(Vᴴ·V̄)) is not 0 for the cotangent V̄ of "
                f"{what} of shape {tuple(k.shape)}). Use a phase-invariant loss: |V|, "
                "V·Vᴴ-type products, or normalise each vector's phase first, e.g. "
                "V * conj(V[..., :1, :]) / abs(V[..., :1, :])")
        return ga
    return xp.where(_mat(xp, bad), float("nan"), ga)


def _eye(b: Any, like: Any, n: int, m: int | None = None, k: int = 0) -> Any:
    """A constant ``eye(n, m, k)`` of ``like``'s dtype and device (masks and selectors)."""
    return b.xp.eye(n, m, k=k, dtype=like.dtype, device=b.device_of(like))


def _matrix_arg(x: TensorLike, op: str, square: bool = False) -> Tensor:
    x = to_tensor(x, op)
    if x.ndim < 2 or (square and x.shape[-1] != x.shape[-2]):
        what = "a square matrix or a stack of them, shape (..., M, M)" if square else (
            "a matrix or a stack of them, shape (..., M, N)")
        raise ValueError(f"{op}: expected {what}; got an array of shape {x.shape}")
    return x


def _identity(xp: Any, g: Any) -> Any:
    return g


defjvp(_identity, lambda xp, v, y: v)


def _zeros_back(xp: Any, g: Any) -> Any:
    return xp.zeros_like(g)


# ---------------------------------------------------------------------------------------------
# Main namespace: matmul, tensordot, vecdot, matrix_transpose


def _matmul_1(xp: Any, g: Any, a: Any, c: Any) -> Any:
    if a.ndim == 2 and c.ndim == 2:  # the common case, without the namespace's wrappers
        try:
            return g @ c.T
        except (NotImplementedError, RuntimeError):  # CuPy refuses cuBLAS while a CUDA graph is
            # captured; PyTorch's @ refuses mixed dtypes (a complex ḡ, a real operand)
            return xp.matmul(g, xp.matrix_transpose(c))  # ag.capture's graph-safe namespace
    if c.ndim == 1:
        if a.ndim == 1:
            return g * c  # (k,)·(k,) -> (): x̄1 = ḡ x2
        return _col(xp, g) * c  # (..., n, k) @ (k,) -> (..., n): x̄1 = ḡ ⊗ x2
    if a.ndim == 1:  # (k,) @ (..., k, m) -> (..., m): x̄1 = x2 ḡ, summed over the batch
        return xp.squeeze(xp.matmul(c, _col(xp, g)), axis=-1)
    return xp.matmul(g, _mT(xp, c))


def _matmul_2(xp: Any, g: Any, a: Any, c: Any) -> Any:
    if a.ndim == 2 and c.ndim == 2:
        try:
            return a.T @ g
        except (NotImplementedError, RuntimeError):  # CuPy refuses cuBLAS while a CUDA graph is
            # captured; PyTorch's @ refuses mixed dtypes (a complex ḡ, a real operand)
            return xp.matmul(xp.matrix_transpose(a), g)  # ag.capture's graph-safe namespace
    if a.ndim == 1:
        if c.ndim == 1:
            return g * a
        return _col(xp, a) * _row(xp, g)  # (k, 1) * (..., 1, m) -> (..., k, m)
    if c.ndim == 1:  # (..., n, k) @ (k,): x̄2 = x1ᵀ ḡ, summed over the batch
        return xp.squeeze(xp.matmul(_mT(xp, a), _col(xp, g)), axis=-1)
    return xp.matmul(_mT(xp, a), g)


# Complex operands: every product below is bilinear (no conjugation in the forward; vecdot's
# conjugates x1), so each cotangent is the real rule with the other operand conjugated.

def _matmul_1_complex(xp: Any, g: Any, a: Any, c: Any) -> Any:
    return _matmul_1(xp, g, a, xp.conj(c))


def _matmul_2_complex(xp: Any, g: Any, a: Any, c: Any) -> Any:
    return _matmul_2(xp, g, xp.conj(a), c)


_MATMUL_RULES = (_matmul_1, _matmul_2)
_MATMUL_RULES_COMPLEX = (_matmul_1_complex, _matmul_2_complex)


# JVP (bilinear, holomorphic): d(x1 @ x2) = v1 @ x2 + x1 @ v2, for real and complex values.
defjvp(_matmul_1, lambda xp, v, y, a, c: xp.matmul(v, c))
defjvp(_matmul_2, lambda xp, v, y, a, c: xp.matmul(a, v))
defjvp(_matmul_1_complex, lambda xp, v, y, a, c: xp.matmul(v, c))
defjvp(_matmul_2_complex, lambda xp, v, y, a, c: xp.matmul(a, v))


def matmul(x1: Any, x2: Any, /) -> Tensor:
    """Matrix product with the standard's rules: 1-d operands are vectors (promoted to a matrix
    and the added axis removed from the result), batch axes ``...`` broadcast.

    Shapes ``(..., N, K) @ (..., K, M) -> (..., N, M)``; float dtypes promote.
    VJP: ``x̄1 = ḡ x2ᵀ``, ``x̄2 = x1ᵀ ḡ`` (outer products for vector operands), summed over
    broadcast batch axes; for complex operands ``x̄1 = ḡ x2ᴴ``, ``x̄2 = x1ᴴ ḡ``.
    """
    if type(x1) is Tensor and type(x2) is Tensor and x1._backend is x2._backend and not (
            x1._backend.multi_device):
        b = x1._backend  # the common case, without building operand lists
    else:
        b, (x1, x2) = operands((x1, x2), "matmul")
    s1, s2 = x1.data.shape, x2.data.shape
    if x1.ndim == 0 or x2.ndim == 0:
        raise ValueError(
            f"matmul: operands must have at least one dimension, got shapes {s1} and {s2}; "
            "use multiply (*) to scale by a 0-d array"
        )
    k2 = s2[0] if x2.ndim == 1 else s2[-2]
    if s1[-1] != k2:
        raise ValueError(
            f"matmul: shapes {s1} and {s2} are not aligned: the last axis of x1 ({s1[-1]}) must "
            f"equal the {'only' if x2.ndim == 1 else 'second-to-last'} axis of x2 ({k2})"
        )
    try:
        y = x1.data @ x2.data  # the operator: the same product, without a wrapper call
    except NotImplementedError:  # CuPy refuses cuBLAS while a CUDA graph is captured: the
        y = b.xp.matmul(x1.data, x2.data)  # graph-safe product of ag.capture's namespace
    except RuntimeError:  # PyTorch's @ refuses mixed dtypes (float32 @ float64, real @ complex);
        y = b.xp.matmul(x1.data, x2.data)  # the namespace's matmul promotes, as the standard
    if _needs(x1, x2):
        d1, d2, dy = x1.data.dtype, x2.data.dtype, y.dtype
        # Matrices and vectors of the result's dtype get cotangents of their own shape and
        # dtype: only batched or mixed-dtype products need the engine to reduce or cast.
        plain = x1.ndim <= 2 and x2.ndim <= 2 and (d1 is dy or d1 == dy) and (d2 is dy or d2 == dy)
        try:
            cplx = b.complex_kinds[dy]
        except KeyError:
            cplx = is_complex(b, dy)
        return record_binary("matmul", y, b, x1, x2, _MATMUL_RULES_COMPLEX if cplx else _MATMUL_RULES,
                             (0, 1), None if plain else _meta(x1, x2), True)
    return wrap(y, b)


def _transpose_back(xp: Any, g: Any) -> Any:
    return xp.matrix_transpose(g)


defjvp(_transpose_back, lambda xp, v, y: xp.matrix_transpose(v))


def matrix_transpose(x: Any, /) -> Tensor:
    """Transpose of the last two axes: ``(..., M, N) -> (..., N, M)``. VJP: ``x̄ = ḡᵀ``."""
    x = _matrix_arg(x, "matrix_transpose")
    b = x._backend
    y = b.xp.matrix_transpose(x.data)
    if _needs(x):  # a view on most backends: shares x's version counter
        return view_of(x, record("matrix_transpose", y, b, (x,), (_transpose_back,)),
                       matrix_transpose, ())
    return view_of(x, wrap(y, b), matrix_transpose, ())


def _tensordot_1(xp: Any, g: Any, a: Any, c: Any, spec: tuple[Any, ...]) -> Any:
    g_free2, f2, perm1 = spec[0], spec[1], spec[2]
    r = xp.tensordot(g, c, axes=(g_free2, f2))
    return r if perm1 is None else xp.permute_dims(r, perm1)


def _tensordot_2(xp: Any, g: Any, a: Any, c: Any, spec: tuple[Any, ...]) -> Any:
    f1, g_free1, perm2 = spec[3], spec[4], spec[5]
    r = xp.tensordot(a, g, axes=(f1, g_free1))
    return r if perm2 is None else xp.permute_dims(r, perm2)


def _tensordot_1_complex(xp: Any, g: Any, a: Any, c: Any, spec: tuple[Any, ...]) -> Any:
    return _tensordot_1(xp, g, a, xp.conj(c), spec)


def _tensordot_2_complex(xp: Any, g: Any, a: Any, c: Any, spec: tuple[Any, ...]) -> Any:
    return _tensordot_2(xp, g, xp.conj(a), c, spec)


def _inverse_perm(labels: list[int]) -> tuple[int, ...] | None:
    """The permutation that sorts axes labelled ``labels`` (None when already sorted)."""
    perm = tuple(labels.index(i) for i in range(len(labels)))
    return None if perm == tuple(range(len(labels))) else perm


def tensordot(x1: Any, x2: Any, /, *, axes: int | tuple[Any, Any] = 2) -> Tensor:
    """Tensor contraction: ``axes=N`` contracts the last N axes of ``x1`` with the first N of
    ``x2``; ``axes=(a1, a2)`` contracts ``x1``'s axes ``a1`` with ``x2``'s ``a2`` pairwise.

    The result has ``x1``'s free axes, then ``x2``'s. Contracted axes must have equal sizes
    (no broadcasting). VJP: ``x̄1 = tensordot(ḡ, x2)`` over ``x2``'s free axes and ``x̄2 =
    tensordot(x1, ḡ)`` over ``x1``'s, each permuted back to its input's axis order (complex:
    with the other operand conjugated).
    """
    b, (x1, x2) = operands((x1, x2), "tensordot")
    n1, n2 = x1.ndim, x2.ndim
    if isinstance(axes, int) and not isinstance(axes, bool):
        if not 0 <= axes <= min(n1, n2):
            raise ValueError(
                f"tensordot: axes={axes} must be between 0 and the smaller rank of the operands "
                f"(shapes {x1.shape} and {x2.shape})"
            )
        c1 = tuple(range(n1 - axes, n1))
        c2 = tuple(range(axes))
        fwd_axes: Any = axes
    else:
        try:
            a1, a2 = axes  # type: ignore[misc]
            a1 = (a1,) if isinstance(a1, int) else a1  # NumPy also takes a pair of single axes
            a2 = (a2,) if isinstance(a2, int) else a2
            c1 = tuple(normalize_axis(int(i), n1, "tensordot") for i in a1)
            c2 = tuple(normalize_axis(int(i), n2, "tensordot") for i in a2)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"tensordot: axes must be an int or a pair of axis sequences, got {axes!r}"
            ) from exc
        if len(c1) != len(c2) or len(set(c1)) != len(c1) or len(set(c2)) != len(c2):
            raise ValueError(
                f"tensordot: axes {axes!r} must name the same number of distinct axes of each "
                "operand"
            )
        fwd_axes = (c1, c2)
    for i, j in zip(c1, c2):
        if x1.shape[i] != x2.shape[j]:
            raise ValueError(
                f"tensordot: axis {i} of x1 (shape {x1.shape}) and axis {j} of x2 (shape "
                f"{x2.shape}) are contracted but have different sizes"
            )
    y = b.xp.tensordot(x1.data, x2.data, axes=fwd_axes)
    if not _needs(x1, x2):
        return wrap(y, b)
    f1 = tuple(i for i in range(n1) if i not in c1)
    f2 = tuple(j for j in range(n2) if j not in c2)
    nf1 = len(f1)
    g_free1 = tuple(range(nf1))
    g_free2 = tuple(range(nf1, nf1 + len(f2)))
    # tensordot(ḡ, x2) has x1's free axes, then x2's contracted axes in increasing order; label
    # each with the x1 axis it pairs with, and permute back to x1's order (likewise for x2).
    perm1 = _inverse_perm(list(f1) + [c1[c2.index(j)] for j in sorted(c2)])
    perm2 = _inverse_perm([c2[c1.index(i)] for i in sorted(c1)] + list(f2))
    spec = (g_free2, f2, perm1, f1, g_free1, perm2)
    rules = ((_tensordot_1_complex, _tensordot_2_complex) if is_complex(b, y.dtype)
             else (_tensordot_1, _tensordot_2))
    return record("tensordot", y, b, (x1, x2), rules, (x1, x2), _meta(x1, x2), params=(spec,))


def _vecdot_1(xp: Any, g: Any, a: Any, c: Any, axis: int) -> Any:
    return xp.expand_dims(g, axis=axis) * c


def _vecdot_2(xp: Any, g: Any, a: Any, c: Any, axis: int) -> Any:
    return xp.expand_dims(g, axis=axis) * a


def _vecdot_1_complex(xp: Any, g: Any, a: Any, c: Any, axis: int) -> Any:
    # out = Σ conj(x1)·x2 is antiholomorphic in x1: x̄1 = conj(ḡ)·x2 (x̄2 = ḡ·x1 as for reals)
    return xp.conj(xp.expand_dims(g, axis=axis)) * c



def _conj_if_complex(xp: Any, a: Any) -> Any:
    return xp.conj(a) if xp.isdtype(a.dtype, "complex floating") else a


# JVP (forward mode) of out = Σ conj(x1)·x2: Σ conj(v1)·x2 and Σ conj(x1)·v2.
defjvp(_vecdot_1, lambda xp, v, y, a, c, axis: xp.sum(v * c, axis=axis))
defjvp(_vecdot_1_complex, lambda xp, v, y, a, c, axis: xp.sum(
    _conj_if_complex(xp, v) * c, axis=axis))
defjvp(_vecdot_2, lambda xp, v, y, a, c, axis: xp.sum(_conj_if_complex(xp, a) * v, axis=axis))


def _vector_axis(x1: Tensor, x2: Tensor, axis: int, op: str) -> int:
    """The contracted axis as a negative index (the standard counts from the end)."""
    n = min(x1.ndim, x2.ndim)
    if n == 0:
        raise ValueError(f"{op}: operands must have at least one dimension, got shapes "
                         f"{x1.shape} and {x2.shape}")
    ax = axis
    if ax >= 0 and x1.ndim == x2.ndim:
        ax -= x1.ndim
    if not -n <= ax <= -1:
        raise ValueError(
            f"{op}: axis {axis} must be in [-{n}, -1] for operands of shapes {x1.shape} and "
            f"{x2.shape} (the standard counts the axis from the end)"
        )
    return ax


def vecdot(x1: Any, x2: Any, /, *, axis: int = -1) -> Tensor:
    """Dot product of vectors along ``axis`` (counted from the end), broadcasting the others:
    ``sum(x1 * x2, axis=axis)`` for real dtypes, ``sum(conj(x1) * x2, axis=axis)`` for complex.

    VJP: ``x̄1 = ḡ x2``, ``x̄2 = ḡ x1`` (``ḡ`` expanded along ``axis``), summed over broadcast axes;
    complex: ``x̄1 = conj(ḡ) x2``, ``x̄2 = ḡ x1``.
    """
    b, (x1, x2) = operands((x1, x2), "vecdot")
    ax = _vector_axis(x1, x2, axis, "vecdot")
    if x1.shape[ax] != x2.shape[ax]:
        raise ValueError(f"vecdot: axis {axis} has size {x1.shape[ax]} in x1 (shape {x1.shape}) "
                         f"but {x2.shape[ax]} in x2 (shape {x2.shape}); they must be equal")
    y = b.xp.vecdot(x1.data, x2.data, axis=ax)
    if _needs(x1, x2):
        rule1 = _vecdot_1_complex if is_complex(b, y.dtype) else _vecdot_1
        return record("vecdot", y, b, (x1, x2), (rule1, _vecdot_2), (x1, x2), _meta(x1, x2),
                      params=(ax,))
    return wrap(y, b)


# ---------------------------------------------------------------------------------------------
# Products: outer, cross


def _outer_1(xp: Any, g: Any, a: Any, c: Any) -> Any:
    return xp.matmul(g, c)


def _outer_2(xp: Any, g: Any, a: Any, c: Any) -> Any:
    return xp.matmul(a, g)


def _outer_1_complex(xp: Any, g: Any, a: Any, c: Any) -> Any:
    return xp.matmul(g, xp.conj(c))


def _outer_2_complex(xp: Any, g: Any, a: Any, c: Any) -> Any:
    return xp.matmul(xp.conj(a), g)



# JVP (bilinear, holomorphic): d(x1 ⊗ x2) = v1 ⊗ x2 + x1 ⊗ v2.
for _rule in (_outer_1, _outer_1_complex):
    defjvp(_rule, lambda xp, v, y, a, c: xp.reshape(v, (-1, 1)) * xp.reshape(c, (1, -1)))
for _rule in (_outer_2, _outer_2_complex):
    defjvp(_rule, lambda xp, v, y, a, c: xp.reshape(a, (-1, 1)) * xp.reshape(v, (1, -1)))


def outer(x1: Any, x2: Any, /) -> Tensor:
    """Outer product of two vectors: ``(N,), (M,) -> (N, M)``.

    VJP: ``x̄1 = ḡ x2``, ``x̄2 = ḡᵀ x1`` (complex: with the other operand conjugated).
    """
    b, (x1, x2) = operands((x1, x2), "outer")
    if x1.ndim != 1 or x2.ndim != 1:
        raise ValueError(f"outer: expected two 1-d arrays, got shapes {x1.shape} and {x2.shape}; "
                         "for batches use x1[..., :, None] * x2[..., None, :]")
    y = b.xp.linalg.outer(x1.data, x2.data)
    if _needs(x1, x2):
        rules = ((_outer_1_complex, _outer_2_complex) if is_complex(b, y.dtype)
                 else (_outer_1, _outer_2))
        return record("outer", y, b, (x1, x2), rules, (x1, x2), _meta(x1, x2))
    return wrap(y, b)


def _cross_1(xp: Any, g: Any, a: Any, c: Any, axis: int) -> Any:
    return xp.linalg.cross(c, g, axis=axis)


def _cross_2(xp: Any, g: Any, a: Any, c: Any, axis: int) -> Any:
    return xp.linalg.cross(g, a, axis=axis)


def _cross_1_complex(xp: Any, g: Any, a: Any, c: Any, axis: int) -> Any:
    return _cross_1(xp, g, a, xp.conj(c), axis)


def _cross_2_complex(xp: Any, g: Any, a: Any, c: Any, axis: int) -> Any:
    return _cross_2(xp, g, xp.conj(a), c, axis)


def cross(x1: Any, x2: Any, /, *, axis: int = -1) -> Tensor:
    """Cross product of 3-vectors along ``axis`` (counted from the end), broadcasting the others.

    VJP: ``x̄1 = x2 × ḡ``, ``x̄2 = ḡ × x1``, summed over broadcast axes (``conj(x2)``,
    ``conj(x1)`` for complex operands: the product is bilinear, not sesquilinear).
    """
    b, (x1, x2) = operands((x1, x2), "cross")
    ax = _vector_axis(x1, x2, axis, "cross")
    if x1.shape[ax] != 3 or x2.shape[ax] != 3:
        raise ValueError(f"cross: axis {axis} must have size 3 in both operands, got shapes "
                         f"{x1.shape} and {x2.shape}")
    y = b.xp.linalg.cross(x1.data, x2.data, axis=ax)
    if _needs(x1, x2):
        rules = ((_cross_1_complex, _cross_2_complex) if is_complex(b, y.dtype)
                 else (_cross_1, _cross_2))
        return record("cross", y, b, (x1, x2), rules, (x1, x2), _meta(x1, x2), params=(ax,))
    return wrap(y, b)


# ---------------------------------------------------------------------------------------------
# Inverse, determinants, solve


def _inverse(xp: Any, a: Any, op: str) -> Any:
    """``xp.linalg.inv(a)``, with a backend's singular-matrix error (NumPy's ``LinAlgError``,
    PyTorch's, ...) restated -- same exception type -- naming the op, the shape and what to do."""
    try:
        return xp.linalg.inv(a)
    except Exception as exc:
        if "singular" not in str(exc).lower():
            raise
        what = ("the matrix" if op == "inv" else
                f"the gradient of {op} needs the inverse of the matrix, but it")
        try:
            new = type(exc)(
                f"{op}: {what} (shape {tuple(a.shape)}) is singular; use ag.linalg.pinv, or "
                "regularise it (A + eps*I)"
                + (", or differentiate slogdet's logabsdet where only that is needed"
                   if op == "det" else ""))
        except Exception:  # an exception type that takes other arguments: keep the original
            raise exc from None
        raise new from exc


def _inv_back(xp: Any, g: Any, y: Any, h: bool = False) -> Any:
    yt = _tr(h)(xp, y)
    return -xp.matmul(yt, xp.matmul(g, yt))


# JVP: d(A⁻¹) = -A⁻¹ V A⁻¹ (real and complex: inv is holomorphic).
defjvp(_inv_back, lambda xp, v, out, y, h=False: -xp.matmul(y, xp.matmul(v, y)))


def inv(x: Any, /) -> Tensor:
    """Inverse of a square matrix (or a stack): ``(..., M, M)``.

    VJP: ``Ā = -A⁻ᵀ Ḡ A⁻ᵀ`` (from the saved inverse; ``A⁻ᴴ`` for complex A).
    """
    x = _matrix_arg(x, "inv", square=True)
    b = x._backend
    y = _inverse(b.xp, x.data, "inv")
    if _needs(x):
        return record("inv", y, b, (x,), (_inv_back,), (OUT,), params=(True,) if _is_c(x) else ())
    return wrap(y, b)


def _det_back(xp: Any, g: Any, a: Any, d: Any) -> Any:
    return _mat(xp, g * d) * _mT(xp, _inverse(xp, a, "det"))


def _det_back_c(xp: Any, g: Any, a: Any, d: Any) -> Any:
    # holomorphic: Ā = ḡ·conj(det(A)·A⁻ᵀ) = ḡ·conj(det)·A⁻ᴴ
    return _mat(xp, g * xp.conj(d)) * _mH(xp, _inverse(xp, a, "det"))



def _det_jvp(xp: Any, v: Any, out: Any, a: Any, d: Any) -> Any:
    # Jacobi's formula: d det(A) = det(A)·tr(A⁻¹ V) (holomorphic: the same for complex A)
    return d * xp.sum(_mT(xp, _inverse(xp, a, "det")) * v, axis=(-2, -1))


defjvp(_det_back, _det_jvp)
defjvp(_det_back_c, _det_jvp)


def det(x: Any, /) -> Tensor:
    """Determinant of a square matrix (or a stack): ``(..., M, M) -> (...)``.

    VJP: ``Ā = ḡ·det(A)·A⁻ᵀ`` (A must be invertible); complex A: ``ḡ·conj(det(A))·A⁻ᴴ``.
    """
    x = _matrix_arg(x, "det", square=True)
    b = x._backend
    y = b.xp.linalg.det(x.data)
    if _needs(x):
        return record("det", y, b, (x,), (_det_back_c if _is_c(x) else _det_back,), (x, OUT))
    return wrap(y, b)


def _slogdet_back(xp: Any, g: Any, a: Any) -> Any:
    return _mat(xp, g) * _mT(xp, _inverse(xp, a, "slogdet"))


def _slogdet_back_c(xp: Any, gs: tuple[Any, Any], a: Any, sign: Any) -> Any:
    # d logabsdet = Re tr(A⁻¹dA), d sign = i·sign·Im tr(A⁻¹dA) (PyTorch's slogdet_backward):
    # Ā = (ḡ_logabsdet - i·Im(conj(ḡ_sign)·sign))·A⁻ᴴ
    gsign, gla = gs
    im = xp.imag(xp.conj(gsign) * sign)
    coef = xp.astype(gla, sign.dtype) - 1j * xp.astype(im, sign.dtype)
    return _mat(xp, coef) * _mH(xp, _inverse(xp, a, "slogdet"))


def slogdet(x: Any, /) -> SlogdetResult:
    """Sign and natural log of the absolute determinant: ``(sign, logabsdet)``, each ``(...)``.

    For a real input ``sign`` (±1, piecewise constant) is not differentiable (it never requires
    grad); VJP of ``logabsdet``: ``Ā = ḡ·A⁻ᵀ``. For a complex input ``sign = det/|det|`` varies
    continuously and both outputs are differentiable: ``Ā = (ḡ_logabsdet -
    i·Im(conj(ḡ_sign)·sign))·A⁻ᴴ``.
    """
    x = _matrix_arg(x, "slogdet", square=True)
    b = x._backend
    sign, logabs = b.xp.linalg.slogdet(x.data)
    if _needs(x) and _is_c(x):
        st, lt = record_multi("slogdet", (sign, logabs), b, (x,), (_slogdet_back_c,), (x, OUT))
        return SlogdetResult(st, lt)
    if _needs(x):
        return SlogdetResult(wrap(sign, b),
                             record("slogdet", logabs, b, (x,), (_slogdet_back,), (x,)))
    return SlogdetResult(wrap(sign, b), wrap(logabs, b))


def _batch_shape(s1: tuple[int, ...], s2: tuple[int, ...], op: str) -> tuple[int, ...]:
    """The broadcast of two batch shapes."""
    n = max(len(s1), len(s2))
    p1, p2 = (1,) * (n - len(s1)) + tuple(s1), (1,) * (n - len(s2)) + tuple(s2)
    out_ = []
    for i, j in zip(p1, p2):
        if i != j and i != 1 and j != 1:
            raise ValueError(f"{op}: batch shapes {s1} and {s2} do not broadcast")
        out_.append(j if i == 1 else i)
    return tuple(out_)


def _matrix_solve(xp: Any, a: Any, rhs: Any) -> Any:
    """``solve`` for a matrix right-hand side, broadcasting the batch axes explicitly (not every
    backend's ``solve`` broadcasts them, e.g. CuPy's)."""
    ba, bb = tuple(a.shape[:-2]), tuple(rhs.shape[:-2])
    if ba != bb:
        batch = _batch_shape(ba, bb, "solve")
        a = xp.broadcast_to(a, batch + tuple(a.shape[-2:]))
        rhs = xp.broadcast_to(rhs, batch + tuple(rhs.shape[-2:]))
    return xp.linalg.solve(a, rhs)


def _solve_2(xp: Any, g: Any, a: Any, sol: Any, vector: bool, h: bool = False) -> Any:
    at = _tr(h)(xp, a)
    if vector:
        return xp.squeeze(xp.linalg.solve(at, _col(xp, g)), axis=-1)
    return _matrix_solve(xp, at, g)


def _solve_1(xp: Any, g: Any, a: Any, sol: Any, vector: bool, h: bool = False) -> Any:
    gb = _solve_2(xp, g, a, sol, vector, h)
    if vector:
        return -(_col(xp, gb) * _row(xp, xp.conj(sol) if h else sol))
    return -xp.matmul(gb, _tr(h)(xp, sol))



# JVP (forward mode) of X = A⁻¹B: dX = A⁻¹(dB - dA·X) (holomorphic: the same for complex).
def _solve_jvp_2(xp: Any, v: Any, y: Any, a: Any, sol: Any, vector: bool, h: bool = False) -> Any:
    if vector:
        return xp.squeeze(xp.linalg.solve(a, _col(xp, v)), axis=-1)
    return _matrix_solve(xp, a, v)


def _solve_jvp_1(xp: Any, v: Any, y: Any, a: Any, sol: Any, vector: bool, h: bool = False) -> Any:
    rhs = xp.squeeze(xp.matmul(v, _col(xp, sol)), axis=-1) if vector else xp.matmul(v, sol)
    return -_solve_jvp_2(xp, rhs, y, a, sol, vector, h)


defjvp(_solve_1, _solve_jvp_1)
defjvp(_solve_2, _solve_jvp_2)


def solve(x1: Any, x2: Any, /) -> Tensor:
    """Solve ``x1 @ X = x2`` for ``X``; ``x1`` is ``(..., M, M)`` and invertible.

    As in the 2024.12 standard, ``x2`` is a vector only when it is 1-d ``(M,)`` (result
    ``(..., M)``); otherwise it is a stack of matrices ``(..., M, K)`` whose batch axes
    broadcast with ``x1``'s. VJP: ``B̄ = solve(Aᵀ, Ḡ)``, ``Ā = -B̄ Xᵀ`` (``ᴴ`` for complex).
    """
    b, (a, rhs) = operands((x1, x2), "solve")
    if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"solve: x1 must be a square matrix or a stack of them (..., M, M), got "
                         f"shape {a.shape}")
    vector = rhs.ndim == 1
    m = rhs.shape[0] if vector else (rhs.shape[-2] if rhs.ndim >= 2 else None)
    if m != a.shape[-1]:
        raise ValueError(
            f"solve: x2 of shape {rhs.shape} does not fit x1 of shape {a.shape}: x2 must be "
            f"({a.shape[-1]},) or (..., {a.shape[-1]}, K) (a 1-d x2 is the only vector case)"
        )
    y = b.xp.linalg.solve(a.data, rhs.data) if vector else _matrix_solve(b.xp, a.data, rhs.data)
    if _needs(a, rhs):
        h = y.dtype == b.xp.complex64 or y.dtype == b.xp.complex128
        return record("solve", y, b, (a, rhs), (_solve_1, _solve_2), (a, OUT), _meta(a, rhs),
                      params=(vector, True) if h else (vector,))
    return wrap(y, b)


# ---------------------------------------------------------------------------------------------
# Decompositions


def _cholesky_back(xp: Any, g: Any, lo: Any, half: Any, upper: bool, h: bool = False) -> Any:
    # Ā = L⁻ᵀ Φ L⁻¹ with Φ = sym(tril(Lᵀ Ḡ) with its diagonal halved): symmetric (Murray 2016;
    # PyTorch's cholesky_backward). Triangular solves are general solves here. Complex (A = LLᴴ):
    # ᴴ for ᵀ, and Φ = herm(...) is Hermitian, so Ā is (the Hermitian gradient).
    t = _tr(h)
    if upper:
        lo, g = t(xp, lo), t(xp, g)
    lt = t(xp, lo)
    q = xp.matmul(lt, g) * half
    phi = (q + t(xp, q)) * 0.5
    z = xp.linalg.solve(lt, phi)  # L⁻ᵀ Φ
    return t(xp, xp.linalg.solve(lt, t(xp, z)))  # (L⁻ᵀ Φ) L⁻¹


def cholesky(x: Any, /, *, upper: bool = False) -> Tensor:
    """Cholesky factor of a symmetric positive-definite matrix (or a stack): ``A = L Lᵀ`` with
    ``L`` lower triangular, or ``A = Uᵀ U`` with ``upper=True``. Shape ``(..., M, M)``.

    The input is taken as symmetric (Hermitian, ``A = L Lᴴ``, for complex input) and the
    gradient is symmetric (Hermitian). VJP: ``Ā = L⁻ᵀ Φ L⁻¹``, ``Φ = ½(P + Pᵀ)``,
    ``P = tril(Lᵀ L̄)`` with its diagonal halved (``ᴴ`` for ``ᵀ`` for complex input).
    """
    x = _matrix_arg(x, "cholesky", square=True)
    b = x._backend
    y = b.xp.linalg.cholesky(x.data, upper=upper)
    if _needs(x):
        n = x.shape[-1]
        eye = _eye(b, y, n)
        half = b.xp.tril(b.xp.ones_like(eye), k=-1) + 0.5 * eye
        return record("cholesky", y, b, (x,), (_cholesky_back,), (OUT, half),
                      params=(upper, True) if _is_c(x) else (upper,))
    return wrap(y, b)


def _eigh_back(xp: Any, gs: tuple[Any, Any], w: Any, v: Any, eye: Any, check: Any = None) -> Any:
    # Ā = V (diag(w̄) + F ∘ skew(Vᵀ V̄)/2) Vᵀ with F_ij = 1/(λ_j - λ_i) (0 where equal).
    # Complex (``check`` given): ᴴ for ᵀ; skew(VᴴV̄)'s imaginary diagonal meets F_ii = 0, and a
    # loss that depends on the eigenvectors' phases (Im diag(VᴴV̄) ≠ 0) raises.
    gw, gv = gs
    t = _mT if check is None else _mH
    vt = t(xp, v)
    k = xp.matmul(vt, gv)
    f = _safe_recip(xp, _row(xp, w) - _col(xp, w))
    inner = (k - t(xp, k)) * (f * 0.5) + _row(xp, gw) * eye
    ga = xp.matmul(v, xp.matmul(inner, vt))
    return ga if check is None else _phase_check(xp, ga, k, "eigh", check)


def eigh(x: Any, /) -> EighResult:
    """Eigenvalues (ascending) and orthonormal eigenvectors of a symmetric matrix (or a stack):
    ``(..., M, M) -> (eigenvalues (..., M), eigenvectors (..., M, M))``.

    The input is taken as symmetric (Hermitian); gradients are symmetric (Hermitian), and
    eigenvector gradients need distinct eigenvalues. VJP: ``Ā = V (diag(λ̄) + F ∘ ½(VᵀV̄ -
    V̄ᵀV)) Vᵀ``, ``F_ij = 1/(λ_j - λ_i)`` (``ᴴ`` for ``ᵀ`` for complex input, where a loss that
    depends on the eigenvectors' phases raises: they are defined up to ``e^{iφ}``).
    """
    x = _matrix_arg(x, "eigh", square=True)
    b = x._backend
    w, v = b.xp.linalg.eigh(x.data)
    if _needs(x):
        eye = _eye(b, v, x.shape[-1])
        wt, vt = record_multi("eigh", (w, v), b, (x,), (_eigh_back,), (OUT, out(1), eye),
                              params=(_host_check(b, x),) if _is_c(x) else ())
        return EighResult(wt, vt)
    return EighResult(wrap(w, b), wrap(v, b))


def _eigvalsh_back(xp: Any, g: Any, a: Any) -> Any:
    # Recomputes the eigenvectors (differentiably under create_graph): Ā = V diag(ḡ) Vᵀ (Vᴴ).
    _, v = xp.linalg.eigh(a)
    return xp.matmul(v * _row(xp, g), _mH(xp, v) if xp.isdtype(v.dtype, "complex floating")
                     else _mT(xp, v))


def eigvalsh(x: Any, /) -> Tensor:
    """Eigenvalues (ascending) of a symmetric matrix (or a stack): ``(..., M, M) -> (..., M)``.

    VJP: ``Ā = V diag(ḡ) Vᵀ`` (eigenvectors recomputed on backward; fine at repeated
    eigenvalues to first order).
    """
    x = _matrix_arg(x, "eigvalsh", square=True)
    b = x._backend
    w = b.xp.linalg.eigvalsh(x.data)
    if _needs(x):
        return record("eigvalsh", w, b, (x,), (_eigvalsh_back,), (x,))
    return wrap(w, b)


def _eig_namespace_fn(b: Any, op: str) -> Any:
    fn = getattr(getattr(b.xp, "linalg", None), op, None)
    if fn is None:
        raise NotImplementedError(
            f"linalg.{op}: the {b.name!r} backend has no general (non-Hermitian) eigensolver "
            f"(linalg.{op}, added by the 2025.12 standard); move the tensor to a backend that "
            "has one, e.g. ag.to_backend(t, 'numpy') or 'torch', or use eigh for a symmetric "
            "(Hermitian) matrix")
    return fn


def _complex_of(b: Any, dtype: Any) -> Any:
    xp = b.xp
    return dtype if xp.isdtype(dtype, "complex floating") else xp.result_type(dtype, xp.complex64)


def _eig_back(xp: Any, gs: tuple[Any, Any], w: Any, v: Any, eye: Any, check: bool) -> Any:
    # PyTorch's linalg_eig_backward (A = V Λ V⁻¹, unit-norm columns):
    # Ā = V⁻ᴴ (diag(λ̄) + (VᴴV̄ - VᴴV diag(Re diag(VᴴV̄))) / conj(E)) Vᴴ, E_ij = λ_j - λ_i,
    # off the diagonal only; then the phase check.
    gw, gv = gs
    vh = _mH(xp, v)
    k = xp.matmul(vh, gv)
    k2 = k - xp.matmul(vh, v) * _row(xp, xp.real(xp.linalg.diagonal(k)))
    f = _safe_recip(xp, xp.conj(_row(xp, w) - _col(xp, w)))
    inner = k2 * f + _row(xp, gw) * eye
    ga = xp.linalg.solve(vh, xp.matmul(inner, vh))
    return _phase_check(xp, ga, k, "eig", check)


def eig(x: Any, /) -> EigResult:
    """Eigenvalues and eigenvectors of a general square matrix (or a stack), the 2025.12
    standard's ``linalg.eig``: ``(..., M, M) -> (eigenvalues (..., M), eigenvectors (..., M, M))``
    with ``A V = V diag(λ)``, both complex (complex64 for float32 input, complex128 for
    float64), eigenvectors of unit norm, in the backend's order.

    Gradients need distinct eigenvalues. Eigenvectors are defined only up to a phase each: a
    loss that depends on it has no gradient and raises (NaN where the check cannot read values
    back cheaply: Dask, a GPU). Real input gets the real part of the gradient. VJP (PyTorch's):
    ``Ā = V⁻ᴴ (diag(λ̄) + (VᴴV̄ - VᴴV diag(Re diag(VᴴV̄))) / conj(E)) Vᴴ``, ``E_ij = λ_j - λ_i``
    off the diagonal.
    """
    x = _matrix_arg(x, "eig", square=True)
    b = x._backend
    w, v = _eig_namespace_fn(b, "eig")(x.data)
    cdt = _complex_of(b, x.data.dtype)
    if w.dtype != cdt:  # a backend that returns real results for real eigenvalues
        w, v = b.xp.astype(w, cdt), b.xp.astype(v, cdt)
    if _needs(x):
        eye = _eye(b, v, x.shape[-1])
        wt, vt = record_multi("eig", (w, v), b, (x,), (_eig_back,), (OUT, out(1), eye),
                              params=(_host_check(b, x),))
        return EigResult(wt, vt)
    return EigResult(wrap(w, b), wrap(v, b))


def _eigvals_back(xp: Any, g: Any, a: Any) -> Any:
    # Recomputes the eigenvectors (differentiably under create_graph), with eig as the forward
    # did (same order): Ā = V⁻ᴴ diag(ḡ) Vᴴ.
    _, v = xp.linalg.eig(a)
    vh = _mH(xp, v)
    return xp.linalg.solve(vh, _col(xp, g) * vh)


def eigvals(x: Any, /) -> Tensor:
    """Eigenvalues of a general square matrix (or a stack), the 2025.12 standard's
    ``linalg.eigvals``: ``(..., M, M) -> (..., M)``, complex (complex64 for float32 input).

    Gradients need distinct eigenvalues. VJP: ``Ā = V⁻ᴴ diag(ḡ) Vᴴ`` (eigenvectors recomputed
    on backward; when a gradient is needed the forward also runs ``eig``, so both see the
    eigenvalues in the same order).
    """
    x = _matrix_arg(x, "eigvals", square=True)
    b = x._backend
    if _needs(x):
        w = _eig_namespace_fn(b, "eig")(x.data)[0]
    else:
        w = _eig_namespace_fn(b, "eigvals")(x.data)
    cdt = _complex_of(b, x.data.dtype)
    if w.dtype != cdt:
        w = b.xp.astype(w, cdt)
    if _needs(x):
        return record("eigvals", w, b, (x,), (_eigvals_back,), (x,))
    return wrap(w, b)


def _svd_back(xp: Any, gs: tuple[Any, Any, Any], u: Any, s: Any, vh: Any, pu: Any, pv: Any,
              m: int, n: int) -> Any:
    return _svd_core(xp, gs, u, s, vh, pu, pv, None, m, n, None)


def _svd_back_c(xp: Any, gs: tuple[Any, Any, Any], u: Any, s: Any, vh: Any, pu: Any, pv: Any,
                eye: Any, m: int, n: int, check: bool) -> Any:
    return _svd_core(xp, gs, u, s, vh, pu, pv, eye, m, n, check)


def _svd_core(xp: Any, gs: tuple[Any, Any, Any], u: Any, s: Any, vh: Any, pu: Any, pv: Any,
              eye: Any, m: int, n: int, check: Any) -> Any:
    # PyTorch's svd_backward for real inputs, on the reduced factors (k = min(m, n)):
    # Ā = U [(skew(UᵀŪ) S + S skew(VᵀV̄)) ∘ F + diag(S̄)] Vᵀ, F_jk = 1/(s_k² - s_j²),
    # plus (I - UUᵀ) Ū S⁻¹ Vᵀ when m > n, or U S⁻¹ V̄ᵀ (I - VVᵀ) when m < n.
    # Complex (``check`` given; PyTorch's complex case): ᴴ for ᵀ, plus the diagonal
    # i·Im(diag(UᴴŪ) - diag(VᴴV̄))/(2S) from the phases; a loss that depends on the singular
    # vectors' phases (Im diag(UᴴŪ) + Im diag(VᴴV̄) ≠ 0) raises.
    gu, gsv, gvh = gs
    if pu is not None:  # full_matrices: only the first k columns of U are differentiated
        u, gu = xp.matmul(u, pu), xp.matmul(gu, pu)
    if pv is not None:
        vh, gvh = xp.matmul(pv, vh), xp.matmul(pv, gvh)
    t = _mT if check is None else _mH
    ut = t(xp, u)
    s2 = s * s
    f = _safe_recip(xp, _row(xp, s2) - _col(xp, s2))
    uhgu = xp.matmul(ut, gu)
    vhgv = xp.matmul(vh, t(xp, gvh))
    inner = ((uhgu - t(xp, uhgu)) * _row(xp, s) + _col(xp, s) * (vhgv - t(xp, vhgv))) * f
    if check is not None:
        d = xp.imag(uhgu - vhgv) * eye * _row(xp, _safe_recip(xp, 2.0 * s))
        inner = inner + 1j * xp.astype(d, uhgu.dtype)
    if m > n:
        gus = gu * _row(xp, _safe_recip(xp, s))
        left = xp.matmul(u, inner) + gus - xp.matmul(u, xp.matmul(ut, gus)) + u * _row(xp, gsv)
        ga = xp.matmul(left, vh)
    else:
        right = xp.matmul(inner, vh) + _col(xp, gsv) * vh
        if m < n:
            sgvh = _col(xp, _safe_recip(xp, s)) * gvh
            right = right + sgvh - xp.matmul(xp.matmul(sgvh, t(xp, vh)), vh)
        ga = xp.matmul(u, right)
    return ga if check is None else _phase_check(xp, ga, uhgu + vhgv, "svd", check)


def svd(x: Any, /, *, full_matrices: bool = True) -> SVDResult:
    """Singular value decomposition ``A = U diag(S) Vh`` of a matrix (or a stack)
    ``(..., M, N)``; ``S`` (descending) is ``(..., K)``, ``K = min(M, N)``; ``U`` is
    ``(..., M, M)`` and ``Vh`` ``(..., N, N)`` with ``full_matrices``, else ``(..., M, K)`` and
    ``(..., K, N)``.

    ``U``/``Vh`` gradients need distinct non-zero singular values; with ``full_matrices`` and a
    non-square input only the first K columns of U (rows of Vh) are differentiated.
    VJP: ``Ā = U[(skew(UᵀŪ)S + S skew(VᵀV̄)) ∘ F + diag(S̄)]Vᵀ`` + the terms for M ≠ N,
    ``F_jk = 1/(s_k² - s_j²)``. Complex input: ``ᴴ`` for ``ᵀ`` plus the diagonal
    ``i·Im(diag(UᴴŪ - VᴴV̄))/(2S)``; a loss that depends on the singular vectors' phases raises.
    """
    x = _matrix_arg(x, "svd")
    b = x._backend
    u, s, vh = b.xp.linalg.svd(x.data, full_matrices=full_matrices)
    if _needs(x):
        m, n = x.shape[-2:]
        k = min(m, n)
        pu = _eye(b, u, m, k) if full_matrices and m > k else None
        pv = _eye(b, u, k, n) if full_matrices and n > k else None
        if _is_c(x):
            ut, st, vht = record_multi("svd", (u, s, vh), b, (x,), (_svd_back_c,),
                                       (OUT, out(1), out(2), pu, pv, _eye(b, s, k)),
                                       params=(m, n, _host_check(b, x)))
        else:
            ut, st, vht = record_multi("svd", (u, s, vh), b, (x,), (_svd_back,),
                                       (OUT, out(1), out(2), pu, pv), params=(m, n))
        return SVDResult(ut, st, vht)
    return SVDResult(wrap(u, b), wrap(s, b), wrap(vh, b))


def _svdvals_back(xp: Any, g: Any, a: Any) -> Any:
    # Recomputes U and Vh (differentiably under create_graph): Ā = U diag(ḡ) Vh.
    u, _, vh = xp.linalg.svd(a, full_matrices=False)
    return xp.matmul(u, _col(xp, g) * vh)


def svdvals(x: Any, /) -> Tensor:
    """Singular values (descending) of a matrix (or a stack): ``(..., M, N) -> (..., K)``.

    VJP: ``Ā = U diag(ḡ) Vh`` (the factors recomputed on backward).
    """
    x = _matrix_arg(x, "svdvals")
    b = x._backend
    s = b.xp.linalg.svdvals(x.data)
    if _needs(x):
        return record("svdvals", s, b, (x,), (_svdvals_back,), (x,))
    return wrap(s, b)


def _qr_square_back(xp: Any, gq: Any, gr: Any, q: Any, r: Any, triu: Any, striu: Any,
                    h: bool = False) -> Any:
    # M = R̄ Rᵀ - Qᵀ Q̄; N = the symmetric matrix with M's upper triangle; Ā = (Q̄ + Q N) R⁻ᵀ.
    # Complex (R's diagonal real, as LAPACK makes it): ᴴ for ᵀ, N = the Hermitian matrix with
    # M's strict upper triangle and Re(diag M).
    t = _tr(h)
    mm = xp.matmul(gr, t(xp, r)) - xp.matmul(t(xp, q), gq)
    if h:
        up = mm * striu
        nn = up + t(xp, up) + xp.real(mm) * (triu - striu)
    else:
        nn = mm * triu + _mT(xp, mm * striu)
    bb = gq + xp.matmul(q, nn)
    return t(xp, xp.linalg.solve(r, t(xp, bb)))


def _qr_back(xp: Any, gs: tuple[Any, Any], q: Any, r: Any, triu: Any, striu: Any, p1: Any,
             p2: Any, shape: tuple[int, ...], mode: str, h: bool = False) -> Any:
    gq, gr = gs
    m, n = shape[-2:]
    if m > n and mode == "complete":
        raise NotImplementedError(
            f"qr: the gradient of mode='complete' for an input of shape {shape} with more rows "
            f"than columns is not defined (Q's last {m - n} column(s) are not unique); use "
            "mode='reduced'"
        )
    if p1 is None:  # m >= n
        return _qr_square_back(xp, gq, gr, q, r, triu, striu, h)
    # m < n: A = [X | Y] with X = Q R1 square, R2 = Qᵀ Y (PyTorch's linalg_qr_backward).
    r1 = xp.matmul(r, p1)
    gr1, gr2 = xp.matmul(gr, p1), xp.matmul(gr, p2)
    y = xp.matmul(q, xp.matmul(r, p2))
    gq = gq + xp.matmul(y, _tr(h)(xp, gr2))
    gx = _qr_square_back(xp, gq, gr1, q, r1, triu, striu, h)
    return xp.concat([gx, xp.matmul(q, gr2)], axis=-1)


def qr(x: Any, /, *, mode: str = "reduced") -> QRResult:
    """QR decomposition ``A = Q R`` of a matrix (or a stack) ``(..., M, N)``, ``K = min(M, N)``:
    ``mode='reduced'`` gives ``Q (..., M, K)``, ``R (..., K, N)``; ``'complete'`` gives
    ``Q (..., M, M)``, ``R (..., M, N)``.

    Differentiable for full-rank inputs with ``mode='reduced'``, and ``'complete'`` when
    ``M <= N``; ``'complete'`` with ``M > N`` raises ``NotImplementedError`` on backward.
    VJP (M ≥ N): ``Ā = (Q̄ + Q copyutl(R̄Rᵀ - QᵀQ̄)) R⁻ᵀ``; M < N splits A = [X | Y].
    """
    if mode not in ("reduced", "complete"):
        raise ValueError(f"qr: mode must be 'reduced' or 'complete', got {mode!r}")
    x = _matrix_arg(x, "qr")
    b = x._backend
    q, r = b.xp.linalg.qr(x.data, mode=mode)
    if _needs(x):
        m, n = x.shape[-2:]
        k = min(m, n)
        triu = b.xp.triu(b.xp.ones((k, k), dtype=x.data.dtype, device=b.device_of(r)))
        striu = b.xp.triu(triu, k=1)
        p1 = _eye(b, r, n, m) if m < n else None
        p2 = _eye(b, r, n, n - m, k=-m) if m < n else None
        qt, rt = record_multi("qr", (q, r), b, (x,), (_qr_back,),
                              (OUT, out(1), triu, striu, p1, p2),
                              params=(x.shape, mode, True) if _is_c(x) else (x.shape, mode))
        return QRResult(qt, rt)
    return QRResult(wrap(q, b), wrap(r, b))


def _pinv_back(xp: Any, g: Any, a: Any, p: Any, h: bool = False) -> Any:
    # Golub & Pereyra, for A of locally constant rank (A⁺ = p, Ḡ = g):
    # Ā = -A⁺ᵀ Ḡ A⁺ᵀ + (I - A A⁺) Ḡᵀ A⁺ A⁺ᵀ + A⁺ᵀ A⁺ Ḡᵀ (I - A⁺ A)   (ᴴ for ᵀ if complex)
    t = _tr(h)
    pt, gt = t(xp, p), t(xp, g)
    t1 = -xp.matmul(pt, xp.matmul(g, pt))
    u = xp.matmul(gt, xp.matmul(p, pt))
    t2 = u - xp.matmul(a, xp.matmul(p, u))
    v = xp.matmul(xp.matmul(pt, p), gt)
    t3 = v - xp.matmul(xp.matmul(v, p), a)
    return t1 + t2 + t3


def pinv(x: Any, /, *, rtol: float | Any = None) -> Tensor:
    """Moore-Penrose pseudo-inverse: ``(..., M, N) -> (..., N, M)``; singular values at most
    ``rtol·max(s)`` are treated as zero.

    Differentiable where the rank is locally constant. VJP: ``Ā = -A⁺ᵀḠA⁺ᵀ +
    (I - AA⁺)ḠᵀA⁺A⁺ᵀ + A⁺ᵀA⁺Ḡᵀ(I - A⁺A)``.
    """
    x = _matrix_arg(x, "pinv")
    b = x._backend
    if type(rtol) is Tensor:
        rtol = rtol.data
    y = b.xp.linalg.pinv(x.data, rtol=rtol)
    if _needs(x):
        return record("pinv", y, b, (x,), (_pinv_back,), (x, OUT),
                      params=(True,) if _is_c(x) else ())
    return wrap(y, b)


def matrix_power(x: Any, n: int, /) -> Tensor:
    """``x`` raised to the integer power ``n`` (``n < 0``: of its inverse), for a square matrix
    or a stack ``(..., M, M)``; ``n = 0`` gives the identity.

    Differentiated as the composition of ``matmul`` (and ``inv``) by repeated squaring, as the
    forward computes it; ``n = 0`` has zero gradient.
    """
    x = _matrix_arg(x, "matrix_power", square=True)
    if isinstance(n, bool) or not isinstance(n, int):
        try:
            n = int(n.__index__())
        except (AttributeError, TypeError):
            raise TypeError(f"matrix_power: the exponent must be an integer, got {n!r}") from None
    b = x._backend
    if not _needs(x):
        return wrap(b.xp.linalg.matrix_power(x.data, n), b)
    if n == 0:
        return record("matrix_power", b.xp.linalg.matrix_power(x.data, 0), b, (x,),
                      (_zeros_back,))
    base = x if n > 0 else inv(x)
    p = abs(n)
    if p == 1:
        return base if base is not x else record("matrix_power", x.data, b, (x,), (_identity,))
    if p == 2:
        return matmul(base, base)
    if p == 3:
        return matmul(matmul(base, base), base)
    # Binary decomposition, in the order NumPy uses (so values match the no-grad path).
    z = result = None
    while p > 0:
        z = base if z is None else matmul(z, z)
        p, bit = divmod(p, 2)
        if bit:
            result = z if result is None else matmul(result, z)
    return result  # type: ignore[return-value]


def matrix_rank(x: Any, /, *, rtol: float | Any = None) -> Tensor:
    """Rank of a matrix (or a stack) ``(..., M, N) -> (...)``: the number of singular values
    above ``rtol·max(s)``. An integer: not differentiable, never requires grad."""
    x = _matrix_arg(x, "matrix_rank")
    b = x._backend
    if type(rtol) is Tensor:
        rtol = rtol.data
    return wrap(b.xp.linalg.matrix_rank(x.data, rtol=rtol), b)


# ---------------------------------------------------------------------------------------------
# Norms, trace, diagonal


def _vector_norm_back(xp: Any, g: Any, x: Any, nrm: Any, axes: tuple[int, ...],
                      kshape: tuple[int, ...], p: float) -> Any:
    g = xp.reshape(g, kshape)
    nrm = xp.reshape(nrm, kshape)
    if p == 2:
        zero = nrm == 0
        return xp.where(zero, 0.0, g / xp.where(zero, 1.0, nrm)) * x
    if p == 1:
        return g * xp.sign(x)
    if p == 0:
        return xp.zeros_like(x)
    if p == math.inf or p == -math.inf:
        hit = xp.astype(xp.abs(x) == nrm, x.dtype)
        return g * xp.sign(x) * (hit / xp.sum(hit, axis=axes, keepdims=True))
    ax = xp.abs(x)
    ok = xp.logical_and(ax != 0, nrm != 0)
    ratio = xp.where(ok, ax, 1.0) / xp.where(nrm == 0, 1.0, nrm)
    return xp.where(ok, (g * xp.sign(x)) * ratio ** (p - 1), 0.0)



def _vector_norm_jvp(xp: Any, v: Any, y: Any, x: Any, nrm: Any, axes: tuple[int, ...],
                     kshape: tuple[int, ...], p: float) -> Any:
    # A real function of x with x̄ = ḡ·w(x): its JVP is Re Σ conj(w)·v over the reduced axes
    # (the engine takes the real part), w being the VJP rule at ḡ = 1.
    w = _vector_norm_back(xp, xp.ones_like(nrm), x, nrm, axes, kshape, p)
    if xp.isdtype(w.dtype, "complex floating"):
        w = xp.conj(w)
    return xp.reshape(xp.sum(w * v, axis=axes, keepdims=True), y.shape)


defjvp(_vector_norm_back, _vector_norm_jvp)


def vector_norm(x: Any, /, *, axis: int | tuple[int, ...] | None = None, keepdims: bool = False,
                ord: int | float = 2) -> Tensor:  # noqa: A002 - the standard's name
    """Vector p-norm over ``axis`` (all axes by default): ``(Σ|x|^p)^(1/p)``; ``ord`` may be
    any real number, ``inf`` (max |x|), ``-inf`` (min |x|) or 0 (number of non-zeros).

    VJP: ``x̄ = ḡ·sign(x)·(|x|/‖x‖)^(p-1)`` (``ḡ·x/‖x‖`` for p = 2, 0 at ‖x‖ = 0; ``ḡ·sign(x)``
    for p = 1; for ±inf ``ḡ·sign(x)`` split over the extreme elements; 0 for p = 0).
    """
    x = to_tensor(x, "vector_norm")
    if isinstance(ord, bool) or not isinstance(ord, (int, float)):
        raise ValueError(f"vector_norm: ord must be a real number, inf or -inf, got {ord!r}")
    b = x._backend
    axes = normalize_axes(axis, x.ndim, "vector_norm")
    y = b.xp.linalg.vector_norm(x.data, axis=axis, keepdims=keepdims, ord=ord)
    if _needs(x):
        kshape = tuple(1 if i in axes else s for i, s in enumerate(x.data.shape))
        return record("vector_norm", y, b, (x,), (_vector_norm_back,), (x, OUT),
                      params=(axes, kshape, float(ord)))
    return wrap(y, b)


def _fro_back(xp: Any, g: Any, a: Any, nrm: Any, kshape: tuple[int, ...]) -> Any:
    g = xp.reshape(g, kshape)
    nrm = xp.reshape(nrm, kshape)
    zero = nrm == 0
    return xp.where(zero, 0.0, g / xp.where(zero, 1.0, nrm)) * a


def _nuc_back(xp: Any, g: Any, a: Any, kshape: tuple[int, ...]) -> Any:
    u, _, vh = xp.linalg.svd(a, full_matrices=False)
    return xp.reshape(g, kshape) * xp.matmul(u, vh)


def _spectral_back(xp: Any, g: Any, a: Any, kshape: tuple[int, ...], largest: bool) -> Any:
    u, s, vh = xp.linalg.svd(a, full_matrices=False)
    ext = xp.max(s, axis=-1, keepdims=True) if largest else xp.min(s, axis=-1, keepdims=True)
    hit = xp.astype(s == ext, s.dtype)
    w = hit / xp.sum(hit, axis=-1, keepdims=True)
    return xp.reshape(g, kshape) * xp.matmul(u * _row(xp, w), vh)


_MATRIX_ORDS = ("fro", "nuc", 1, -1, 2, -2, math.inf, -math.inf)


def matrix_norm(x: Any, /, *, keepdims: bool = False,
                ord: int | float | str = "fro") -> Tensor:  # noqa: A002 - the standard's name
    """Matrix norm of each matrix of ``(..., M, N)``, reduced to ``(...)`` (``(..., 1, 1)``
    with ``keepdims``): ``'fro'``, ``'nuc'`` (sum of singular values), ``1``/``-1`` (max/min
    column sum of |A|), ``2``/``-2`` (largest/smallest singular value), ``inf``/``-inf``
    (max/min row sum of |A|).

    VJP: ``'fro'`` ``ḡ·A/‖A‖`` (0 at A = 0); ``'nuc'`` ``ḡ·U Vh``; ``±2`` ``ḡ·u vᵀ`` of the
    extreme singular value; ``±1``/``±inf`` through ``abs``, ``sum`` and ``max``/``min``.
    """
    x = _matrix_arg(x, "matrix_norm")
    if isinstance(ord, bool) or ord not in _MATRIX_ORDS:
        raise ValueError(f"matrix_norm: ord must be one of 'fro', 'nuc', 1, -1, 2, -2, inf, -inf; "
                         f"got {ord!r}")
    b = x._backend
    if not _needs(x):
        return wrap(b.xp.linalg.matrix_norm(x.data, keepdims=keepdims, ord=ord), b)
    kshape = x.shape[:-2] + (1, 1)
    if ord in (1, -1, math.inf, -math.inf):
        sums = _stats.sum(_ew.abs(x), axis=-2 if ord in (1, -1) else -1)
        r = _stats.max(sums, axis=-1) if ord > 0 else _stats.min(sums, axis=-1)
        return _manip.reshape(r, kshape) if keepdims else r
    y = b.xp.linalg.matrix_norm(x.data, keepdims=keepdims, ord=ord)
    if ord == "fro":
        return record("matrix_norm", y, b, (x,), (_fro_back,), (x, OUT), params=(kshape,))
    if ord == "nuc":
        return record("matrix_norm", y, b, (x,), (_nuc_back,), (x,), params=(kshape,))
    return record("matrix_norm", y, b, (x,), (_spectral_back,), (x,), params=(kshape, ord == 2))


def _trace_back(xp: Any, g: Any, mask: Any) -> Any:
    return _mat(xp, g) * mask


defjvp(_trace_back, lambda xp, v, y, mask: xp.sum(v * mask, axis=(-2, -1)))  # JVP: trace of v


def trace(x: Any, /, *, offset: int = 0, dtype: Any = None) -> Tensor:
    """Sum of the ``offset`` diagonal of each matrix: ``(..., M, N) -> (...)``, in ``dtype``
    if given. VJP: ``x̄ = ḡ`` on that diagonal, 0 elsewhere."""
    x = _matrix_arg(x, "trace")
    b = x._backend
    y = b.xp.linalg.trace(x.data, offset=offset, dtype=raw_dtype(b, dtype))
    if _needs(x):
        m, n = x.shape[-2:]
        mask = _eye(b, x.data, m, n, k=offset)
        meta = None if y.dtype == x.data.dtype else ((x.data.shape, x.data.dtype),)
        return record("trace", y, b, (x,), (_trace_back,), (mask,), meta)
    return wrap(y, b)


def _diagonal_back(xp: Any, g: Any, shift: Any, mask: Any) -> Any:
    # Place ḡ_j at column j + max(offset, 0) of a row vector (a selector matmul), then keep it
    # on the offset diagonal only: no scatter, no integer-array setitem.
    return xp.matmul(_row(xp, g), shift) * mask


def _diagonal(x: Tensor, offset: int) -> Tensor:
    return diagonal(x, offset=offset)


def diagonal(x: Any, /, *, offset: int = 0) -> Tensor:
    """The ``offset`` diagonal of each matrix (``offset > 0`` above the main one):
    ``(..., M, N) -> (..., K)``. VJP: ``ḡ`` written back onto that diagonal of a zero matrix."""
    x = _matrix_arg(x, "diagonal")
    b = x._backend
    y = b.xp.linalg.diagonal(x.data, offset=offset)
    if _needs(x):
        m, n = x.shape[-2:]
        shift = _eye(b, x.data, y.shape[-1], n, k=max(offset, 0))
        mask = _eye(b, x.data, m, n, k=offset)
        return view_of(x, record("diagonal", y, b, (x,), (_diagonal_back,), (shift, mask)),
                       _diagonal, (offset,))
    return view_of(x, wrap(y, b), _diagonal, (offset,))  # a (read-only) view on NumPy
