"""agnograd: reverse-mode automatic differentiation on any Array API backend.

``import agnograd as ag`` is itself an Array API namespace over :class:`Tensor`: ``ag.exp``,
``ag.sum``, ``ag.matmul``, ``ag.linalg.inv``, ``ag.fft.rfft``, the dtypes and constants. Every
op runs on the backend that holds its inputs (NumPy, CuPy, array_api_strict, PyTorch, ...) and
records what its VJP rule needs; ``loss.backward()`` then walks the graph once, in reverse, computing

    dL/dx_i = Σ_{j ∈ children(i)} (∂x_j/∂x_i)ᵀ dL/dx_j

for every node exactly once.
"""

from __future__ import annotations

import math as _math
import sys as _sys

from . import _tensor as _tensor_module
from . import fft, func, linalg, special  # ag.func (transforms); ag.fft, ag.linalg, ag.special (extensions)

# ag.random (the device generator) stays out of __all__, as ag.dask does: `from agnograd import *`
# must not shadow the standard library's `random`.
from . import random as random
from ._dtypes import (
    DType,
    bool,
    complex64,
    complex128,
    float32,
    float64,
    get_default_dtype,
    int8,
    int16,
    int32,
    int64,
    set_default_dtype,
    uint8,
    uint16,
    uint32,
    uint64,
)
from ._info import __array_namespace_info__
from ._ops.creation import (
    arange,
    asarray,
    empty,
    empty_like,
    eye,
    from_dlpack,
    full,
    full_like,
    linspace,
    meshgrid,
    ones,
    ones_like,
    tril,
    triu,
    zeros,
    zeros_like,
)
from ._ops.data_types import (
    astype,
    can_cast,
    finfo,
    iinfo,
    isdtype,
    result_type,
)
from ._ops.einsum import einsum
from ._ops.elementwise import (
    abs,
    acos,
    acosh,
    add,
    asin,
    asinh,
    atan,
    atan2,
    atanh,
    bitwise_and,
    bitwise_invert,
    bitwise_left_shift,
    bitwise_or,
    bitwise_right_shift,
    bitwise_xor,
    ceil,
    clip,
    conj,
    copysign,
    cos,
    cosh,
    divide,
    equal,
    exp,
    expm1,
    floor,
    floor_divide,
    greater,
    greater_equal,
    hypot,
    imag,
    isfinite,
    isinf,
    isnan,
    less,
    less_equal,
    log,
    log1p,
    log2,
    log10,
    logaddexp,
    logical_and,
    logical_not,
    logical_or,
    logical_xor,
    maximum,
    minimum,
    multiply,
    negative,
    nextafter,
    not_equal,
    positive,
    pow,
    real,
    reciprocal,
    remainder,
    round,
    sign,
    signbit,
    sin,
    sinh,
    sqrt,
    square,
    subtract,
    tan,
    tanh,
    trunc,
    where,
)
from ._ops.indexing import (
    take,
    take_along_axis,
)
from ._ops.linalg import (
    matmul,
    matrix_transpose,
    tensordot,
    vecdot,
)
from ._ops.manipulation import (
    broadcast_arrays,
    broadcast_shapes,
    broadcast_to,
    concat,
    expand_dims,
    flip,
    moveaxis,
    permute_dims,
    repeat,
    reshape,
    roll,
    squeeze,
    stack,
    tile,
    to_backend,
    unstack,
)
from ._ops.searching import (
    argmax,
    argmin,
    count_nonzero,
    nonzero,
    searchsorted,
)
from ._ops.set_functions import (
    isin,
    unique_all,
    unique_counts,
    unique_inverse,
    unique_values,
)
from ._ops.sorting import (
    argsort,
    sort,
)
from ._ops.statistics import (
    cumulative_prod,
    cumulative_sum,
    logsumexp,
    max,
    mean,
    min,
    prod,
    std,
    sum,
    var,
)
from ._ops.utility import (
    all,
    any,
    diff,
)
from ._tensor import Tensor, as_tensor, tensor
from .autograd import detect_anomaly, enable_grad, is_grad_enabled, no_grad, set_grad_enabled
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
from .batching import VmapError, VmapFallbackWarning, vmap
from .capture.jit import JitEagerWarning, jit
from .capture.step import CapturedStep, CaptureError, capture
from .custom import Function, FunctionCtx, custom_jvp, custom_vjp
from .func import (
    grad,
    hessian,
    hvp,
    jacfwd,
    jacobian,
    jacrev,
    jvp,
    linearize,
    value_and_grad,
    vjp,
)
from .graph import saved_nbytes, to_dot, to_mermaid
from .random import manual_seed
from .recompute import checkpoint

__version__ = "0.1.0"
__array_api_version__ = "2025.12"

e = _math.e
pi = _math.pi
inf = _math.inf
nan = _math.nan
newaxis = None

# A static list, so type checkers and IDEs see the namespace: every op module's __all__ plus the
# names above, sorted (tests/test_typing.py checks it against the op modules).
__all__ = [
    "Backend", "BackendError", "CaptureError", "CapturedStep", "DType", "Function", "FunctionCtx",
    "JitEagerWarning",
    "Tensor", "VmapError", "VmapFallbackWarning", "__array_namespace_info__", "abs", "acos",
    "acosh", "add", "all", "any", "arange",
    "argmax", "argmin", "argsort", "as_tensor", "asarray", "asin", "asinh", "astype", "atan",
    "atan2", "atanh", "available_backends", "bitwise_and", "bitwise_invert", "bitwise_left_shift",
    "bitwise_or", "bitwise_right_shift", "bitwise_xor", "bool", "broadcast_arrays",
    "broadcast_shapes", "broadcast_to", "can_cast", "capture", "ceil", "checkpoint", "clip",
    "complex128", "complex64", "concat", "conj", "copysign", "cos", "cosh", "count_nonzero",
    "cumulative_prod", "cumulative_sum", "custom_jvp", "custom_vjp", "default_backend",
    "detect_anomaly", "diff",
    "divide", "e", "einsum", "empty", "empty_like", "enable_grad", "equal", "exp", "expand_dims",
    "expm1", "eye", "fft", "finfo", "flip", "float32", "float64", "floor", "floor_divide",
    "from_dlpack", "full", "full_like", "func", "get_backend", "get_default_backend",
    "get_default_dtype", "grad", "greater", "greater_equal", "hessian", "hvp", "hypot", "iinfo",
    "imag", "inf", "int16", "int32", "int64", "int8", "is_grad_enabled", "isdtype", "isfinite",
    "isin", "isinf", "isnan", "jacfwd", "jacobian", "jacrev", "jit", "jvp", "less", "less_equal",
    "linalg", "linearize", "linspace",
    "log", "log10", "log1p", "log2", "logaddexp", "logical_and", "logical_not", "logical_or",
    "logical_xor", "logsumexp", "manual_seed", "matmul", "matrix_transpose", "max", "maximum",
    "mean", "meshgrid", "min", "minimum", "moveaxis", "multiply", "nan", "negative", "newaxis",
    "nextafter", "no_grad",
    "nonzero", "not_equal", "ones", "ones_like", "permute_dims", "pi", "positive", "pow", "prod",
    "real", "reciprocal", "register_backend", "remainder", "repeat", "reshape", "result_type",
    "roll", "round", "saved_nbytes", "searchsorted", "set_default_backend", "set_default_dtype",
    "set_grad_enabled", "sign", "signbit", "sin", "sinh", "sort", "special", "sqrt", "square",
    "squeeze", "stack", "std", "subtract", "sum", "take", "take_along_axis", "tan", "tanh",
    "tensor", "tensordot", "tile", "to_backend", "to_dot", "to_mermaid", "tril", "triu", "trunc",
    "uint16", "uint32", "uint64", "uint8", "unique_all", "unique_counts", "unique_inverse",
    "unique_values", "unstack", "value_and_grad", "var", "vecdot", "vjp", "vmap", "where", "zeros",
    "zeros_like",
]

_tensor_module.LATE.namespace = _sys.modules[__name__]  # Tensor.__array_namespace__ (late-bound)

# Built on the namespace above: imported last, so `import agnograd as ag` inside them sees it whole.
# ag.dask (the Dask scale-out helpers) does not import Dask; it stays out of __all__ on purpose,
# so `from agnograd import *` never shadows a user's `import dask`.
from . import dask as dask  # noqa: E402
from . import nn as nn  # noqa: E402
from . import optim as optim  # noqa: E402
