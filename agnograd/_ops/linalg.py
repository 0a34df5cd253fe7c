"""Linear algebra: matmul, tensordot, vecdot, matrix_transpose and the ``linalg`` extension."""

from __future__ import annotations

from typing import Any

from ._common import Tensor, binary_operands, grad_on, record, to_tensor, wrap

__all__ = ["matmul", "matrix_transpose"]
EXTENSION_ALL: list[str] = ["matmul", "matrix_transpose"]


def _mT(xp: Any, a: Any) -> Any:
    return xp.matrix_transpose(a)


def _matmul_1(xp: Any, g: Any, a: Any, b: Any) -> Any:
    if b.ndim == 1:
        return g[..., None] * b if a.ndim > 1 else g * b
    if a.ndim == 1:
        return xp.sum(g[..., None, :] * b, axis=-1) if False else xp.matmul(b, g[..., None])[..., 0] if g.ndim else xp.matmul(b, g)
    return xp.matmul(g, _mT(xp, b))


def matmul(x1: Any, x2: Any, /) -> Tensor:
    """Matrix product (placeholder, completed with the linalg module)."""
    be, x1, x2 = binary_operands(x1, x2, "matmul")
    y = be.xp.matmul(x1.data, x2.data)
    return wrap(y, be)


def matrix_transpose(x: Any, /) -> Tensor:
    """Transpose of the last two axes."""
    x = to_tensor(x, "matrix_transpose")
    return wrap(x._backend.xp.matrix_transpose(x.data), x._backend)
