"""The Array API ``linalg`` extension over agnograd Tensors (``ag.linalg.inv``, ...).

Every function here is differentiable; see each docstring for its VJP rule. The functions live
in ``agnograd/_ops/linalg.py`` next to their rules; this module is the public namespace. Names
are listed statically, so type checkers see them (a test checks ``__all__`` against the
extension's names, ``_ops.linalg.EXTENSION_ALL``).
"""

from __future__ import annotations

from ._ops.linalg import (
    cholesky,
    cross,
    det,
    diagonal,
    eig,
    eigh,
    eigvals,
    eigvalsh,
    inv,
    matmul,
    matrix_norm,
    matrix_power,
    matrix_rank,
    matrix_transpose,
    outer,
    pinv,
    qr,
    slogdet,
    solve,
    svd,
    svdvals,
    tensordot,
    trace,
    vecdot,
    vector_norm,
)

__all__ = [
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
