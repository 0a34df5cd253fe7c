"""The special functions a backend library has of its own (``Backend.special``): one small
adapter per library, each imported only when first asked for. Results come back in the input's
dtype (SciPy's ``polygamma`` returns float64 for a float32 input)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["SpecialFunctions", "scipy_special", "cupy_special", "torch_special", "jax_special"]


class SpecialFunctions:
    """Raw-array special functions of one library (see :attr:`Backend.special`)."""

    __slots__ = ("erf", "erfc", "erfinv", "lgamma", "digamma", "polygamma", "log_ndtr")

    def __init__(self, lib: Any, cast: Callable[[Any, Any], Any]) -> None:
        def one(f: Any) -> Callable[[Any], Any]:
            return lambda x: cast(f(x), x)

        self.erf = one(lib.erf)
        self.erfc = one(lib.erfc)
        self.erfinv = one(lib.erfinv)
        self.lgamma = one(lib.gammaln)
        self.digamma = one(lib.digamma)
        self.log_ndtr = one(lib.log_ndtr)
        self.polygamma = lambda n, x: cast(lib.polygamma(n, x), x)


def scipy_special() -> SpecialFunctions | None:
    """SciPy's ``scipy.special`` for NumPy arrays; ``None`` without SciPy (an optional extra:
    ``pip install 'agnograd[special]'``)."""
    try:
        import numpy as np
        import scipy.special as sc
    except ImportError:
        return None
    return SpecialFunctions(sc, lambda y, x: np.asarray(y).astype(x.dtype, copy=False))


def cupy_special() -> SpecialFunctions | None:
    try:
        import cupyx.scipy.special as sc
    except ImportError:  # pragma: no cover - CuPy ships it
        return None
    return SpecialFunctions(sc, lambda y, x: y.astype(x.dtype, copy=False))


def torch_special() -> SpecialFunctions | None:
    import torch

    return SpecialFunctions(torch.special, lambda y, x: y if y.dtype == x.dtype else y.to(x.dtype))


def jax_special() -> SpecialFunctions | None:
    try:
        import jax.scipy.special as sc
    except ImportError:  # pragma: no cover
        return None
    return SpecialFunctions(sc, lambda y, x: y.astype(x.dtype))
