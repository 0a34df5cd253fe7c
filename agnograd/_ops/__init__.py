"""The differentiable Array API namespace, one module per category of the standard.

Importing this package installs Tensor's Python operators (``+``, ``@``, ``[]``, ...) from the
op functions: this is the one place where Tensor and the ops meet.
"""

from __future__ import annotations

from . import (
    creation,
    data_types,
    elementwise,
    indexing,
    linalg,
    manipulation,
    searching,
    set_functions,
    sorting,
    statistics,
    utility,
)
from ._operators import install_operators

MODULES = (
    elementwise,
    creation,
    data_types,
    indexing,
    linalg,
    manipulation,
    searching,
    set_functions,
    sorting,
    statistics,
    utility,
)

install_operators()
