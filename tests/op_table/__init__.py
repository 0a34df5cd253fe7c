"""The one table of differentiable ops that drives the gradient and cross-backend tests.

Each :class:`Op` record names a function of Tensors (written with ``agnograd`` ops), the shapes
of its differentiable inputs (one case per entry of ``cases``), how to draw inputs, and the
tolerances. ``tests/test_op_table.py`` expands every record into:

* central finite differences in float64 on the NumPy backend and on array_api_strict (the proof
  that every rule uses only standard functions);
* value-for-value agreement of the output and the gradients between the two backends, in
  float64 and float32;
* for records with ``order >= 2``, finite differences of the gradient (``create_graph=True``).

The records live in one module per Array API category (``op_table/elementwise.py``, ...);
this module concatenates them into ``OPS``.
"""

from __future__ import annotations

from . import (  # noqa: E402,F401
    complex,
    elementwise,
    fft,
    indexing,
    linalg,
    manipulation,
    misc,
    nn,
    special,
    statistics,
)
from .core import OPS_BY_CATEGORY, Op, cases_of

OPS: list[Op] = [op for ops in OPS_BY_CATEGORY.values() for op in ops]

__all__ = ["Op", "OPS", "cases_of"]
