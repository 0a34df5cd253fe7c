"""agnograd: reverse-mode automatic differentiation on any Array API backend.

``import agnograd as ag`` is itself an Array API namespace over :class:`Tensor`: ``ag.exp``,
``ag.sum``, ``ag.matmul``, ``ag.linalg.inv``, the dtypes and constants. Every op runs on the
backend that holds its inputs (NumPy, CuPy, array_api_strict, PyTorch, ...) and records what
its VJP rule needs; ``loss.backward()`` then walks the graph once, in reverse, computing

    dL/dx_i = Σ_{j ∈ children(i)} (∂x_j/∂x_i)ᵀ dL/dx_j

for every node exactly once.
"""

from __future__ import annotations

import math as _math

from . import linalg  # the extension namespace, ag.linalg
from ._dtypes import (
    DType,
    bool,
    complex64,
    complex128,
    float32,
    float64,
    int8,
    int16,
    int32,
    int64,
    uint8,
    uint16,
    uint32,
    uint64,
)
from ._info import __array_namespace_info__
from ._ops import MODULES as _MODULES
from ._ops.creation import *  # noqa: F403 - each op module lists its ops in __all__
from ._ops.data_types import *  # noqa: F403
from ._ops.elementwise import *  # noqa: F403
from ._ops.indexing import *  # noqa: F403
from ._ops.linalg import *  # noqa: F403
from ._ops.linalg import matmul, matrix_transpose  # noqa: F401
from ._ops.manipulation import *  # noqa: F403
from ._ops.searching import *  # noqa: F403
from ._ops.set_functions import *  # noqa: F403
from ._ops.sorting import *  # noqa: F403
from ._ops.statistics import *  # noqa: F403
from ._ops.utility import *  # noqa: F403
from ._tensor import Tensor, as_tensor, tensor
from .autograd import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .backends import (
    Backend,
    BackendError,
    available_backends,
    default_backend,
    get_backend,
    get_default_backend,
    set_default_backend,
)
from .backends import register as register_backend
from .capture import CapturedStep, CaptureError, capture
from .custom import Function, FunctionCtx, custom_vjp, detect_anomaly
from .func import grad, hessian, hvp, jacobian, jvp, value_and_grad, vjp
from .graph import saved_nbytes, to_dot, to_mermaid
from .jit import jit
from .recompute import checkpoint

__version__ = "0.1.0"
__array_api_version__ = "2024.12"

e = _math.e
pi = _math.pi
inf = _math.inf
nan = _math.nan
newaxis = None

__all__ = sorted(
    {name for m in _MODULES for name in m.__all__}
    | {
        "Backend", "BackendError", "DType", "Tensor", "as_tensor", "available_backends",
        "default_backend", "enable_grad", "get_backend", "get_default_backend",
        "is_grad_enabled", "linalg", "no_grad", "set_default_backend", "set_grad_enabled",
        "tensor", "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
        "uint64", "float32", "float64", "complex64", "complex128", "e", "pi", "inf", "nan",
        "newaxis", "__array_namespace_info__", "func", "grad", "value_and_grad", "vjp", "jvp",
        "jacobian", "hessian", "hvp", "custom_vjp", "Function", "FunctionCtx", "checkpoint",
        "detect_anomaly", "to_dot", "to_mermaid", "saved_nbytes", "capture", "CapturedStep",
        "CaptureError", "jit", "register_backend",
    }
)

# Built on the namespace above: imported last, so `import agnograd as ag` inside them sees it whole.
# ag.dask (the Dask scale-out helpers) does not import Dask; it stays out of __all__ on purpose,
# so `from agnograd import *` never shadows a user's `import dask`.
from . import dask, nn, optim  # noqa: E402
