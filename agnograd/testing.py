"""Gradient checking: finite differences and cross-backend agreement.

``check_grad`` compares the gradients agnograd computes with central finite differences in
float64; ``assert_backends_agree`` runs one function on several backends from the same host
data and compares values and gradients. The project's own op-table tests use both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ._ops.statistics import sum as _sum
from ._tensor import Tensor, tensor
from .autograd import backward, no_grad
from .backends import get_backend, host_array, transfer
from .backends.host import (  # host arrays: finite differences are taken on the host
    host_asarray,
    host_complex128,
    host_equal,
    host_first_not_close,
    host_float64,
    host_rng,
    host_unravel_index,
    host_worst_excess,
    host_zeros,
)

__all__ = ["GradientCheckError", "check_grad", "assert_backends_agree", "numerical_grad"]


class GradientCheckError(AssertionError):
    """Analytic and numerical gradients (or two backends) disagree."""


def _is_complex(t: Tensor) -> bool:
    return t.dtype.kind == "c"


def _scalarize(y: Tensor, cot: Any) -> Tensor:
    if cot is None:
        return y if y.ndim == 0 else _sum(y)
    return _sum(y * cot)


def _loss_value(y: Tensor, cot: Any) -> float:
    """The real loss of an output: ``sum(y·cot)``, or ``Re(sum(conj(cot)·y))`` for a complex
    output (whose gradient, in agnograd's convention, is ``cot`` itself)."""
    if _is_complex(y):
        b = y._backend
        v = b.xp.sum(y.data * b.xp.conj(cot.data))
        return float(complex(host_array(v)).real)
    return float(_scalarize(y, cot).item())


def _random_cotangent(y: Tensor, seed: int) -> Tensor | None:
    rng = host_rng(seed)
    if _is_complex(y):  # always one: a complex output has no implicit seed
        v = rng.uniform(0.5, 1.5, size=y.shape) + 1j * rng.uniform(-1.0, 1.0, size=y.shape)
        return tensor(v, backend=y._backend, dtype=y.data.dtype)
    if y.ndim == 0:
        return None
    return tensor(rng.uniform(0.5, 1.5, size=y.shape), backend=y._backend, dtype=y.data.dtype)


def _analytic(y: Tensor, cot: Any, targets: list[Tensor]) -> list[Any]:
    """Gradients of :func:`_loss_value` with respect to ``targets`` (a complex output is seeded
    with its cotangent directly)."""
    if _is_complex(y):
        return backward([y], [cot.data], retain_graph=False, create_graph=False, targets=targets)
    loss = _scalarize(y, cot)
    return backward([loss], [_ones_like(loss)], retain_graph=False, create_graph=False,
                    targets=targets)


def numerical_grad(
    f: Callable[..., Tensor], inputs: Sequence[Tensor], cotangent: Any = None, eps: float = 1e-6
) -> list[Any]:
    """Central differences of ``sum(f(*inputs) * cotangent)`` (``Re(sum(conj(cotangent) *
    f(*inputs)))`` for a complex output) for every element of every floating input, as host
    (NumPy) arrays. For a complex input the result is ``∂L/∂Re x + i·∂L/∂Im x`` (agnograd's
    convention), from differences along both real directions of every element."""
    grads = []
    with no_grad():
        for i, x in enumerate(inputs):
            # A C-ordered copy: reshape(-1) of a Fortran-ordered or strided array is a copy,
            # not a view, so perturbations and results written through it would be lost.
            cplx = _is_complex(x)
            base = host_complex128(x.data) if cplx else host_float64(x.data)
            g = host_zeros(base.shape, complex_=cplx)
            flat = base.reshape(-1)
            for k in range(flat.size):
                total: Any = 0.0
                for direction in ((1.0, 1j) if cplx else (1.0,)):
                    vals = []
                    for step in (eps, -eps):
                        pert = flat.copy()
                        pert[k] += step * direction
                        xs = list(inputs)
                        xs[i] = tensor(pert.reshape(base.shape), backend=x._backend,
                                       dtype=x.data.dtype)
                        vals.append(_loss_value(f(*xs), cotangent))
                    total = total + direction * (vals[0] - vals[1]) / (2 * eps)
                g.reshape(-1)[k] = total
            grads.append(g)
    return grads


def check_grad(
    f: Callable[..., Tensor],
    *args: Any,
    eps: float | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    seed: int = 0,
) -> None:
    """Check ``f``'s gradients against central finite differences in float64.

    ``args`` are Tensors or arrays of any backend (or nested lists); floating inputs are promoted
    to float64 (complex ones to complex128) so the differences are accurate. A non-scalar output
    is contracted with a fixed random cotangent; a complex output ``y`` with a random complex
    ``v`` into the real loss ``Re(sum(conj(v)·y))``. A complex input's gradient is checked in
    agnograd's convention, ``∂L/∂Re x + i·∂L/∂Im x``, against differences along both parts.
    Raises :class:`GradientCheckError` with the worst element, its input value and both
    gradients when they differ by more than ``atol + rtol·|fd|`` (defaults: ``eps=1e-6``,
    ``rtol=1e-5``, ``atol=1e-7``).
    """
    inputs = []
    for a in args:
        t = a if isinstance(a, Tensor) else tensor(a)
        data = t.data
        if t.dtype.is_floating and t.dtype.name != "float64":
            data = t._backend.xp.astype(data, t._backend.xp.float64)
        elif _is_complex(t) and t.dtype.name != "complex128":
            data = t._backend.xp.astype(data, t._backend.xp.complex128)
        inputs.append(Tensor._wrap(data, t._backend).requires_grad_(True))
    eps = 1e-6 if eps is None else eps
    rtol = 1e-5 if rtol is None else rtol
    atol = 1e-7 if atol is None else atol
    y = f(*inputs)
    cot = _random_cotangent(y, seed)
    grads = _analytic(y, cot, inputs)
    numeric = numerical_grad(f, inputs, cot, eps)
    for i, (x, ga, gn) in enumerate(zip(inputs, grads, numeric)):
        if ga is None:
            a = host_zeros(x.shape, complex_=_is_complex(x))
        else:
            a = host_complex128(ga.data) if _is_complex(x) else host_float64(ga.data)
        if a.shape != gn.shape:
            raise GradientCheckError(f"input {i}: gradient shape {a.shape} != input shape {gn.shape}")
        k = host_worst_excess(a, gn, rtol, atol)
        if k is not None:
            raise GradientCheckError(
                f"gradient of input {i} (shape {x.shape}, backend {x.backend}) is wrong at "
                f"index {host_unravel_index(k, a.shape)}: analytic {a.reshape(-1)[k]!r} vs finite "
                f"difference {gn.reshape(-1)[k]!r} (rtol={rtol}, atol={atol}, eps={eps})\n"
                f"input value there: {host_array(x.data).reshape(-1)[k]!r}\n"
                f"analytic:\n{a}\nfinite differences:\n{gn}"
            )


def _ones_like(t: Tensor) -> Any:
    b = t._backend
    return b.fix(b.xp.ones(t.data.shape, dtype=t.data.dtype, device=b.device_of(t.data)))


def value_and_grads(f: Callable[..., Tensor], host_args: Sequence[Any], backend: str,
                    dtype: Any = None, cotangent_seed: int = 0) -> tuple[Any, list[Any]]:
    """Run ``f`` on ``backend`` from host arrays; return the host value and host gradients."""
    b = get_backend(backend)
    inputs = []
    for a in host_args:
        dt = dtype
        if dt is not None and getattr(a, "dtype", None) is not None and a.dtype.kind == "c":
            dt = "complex64" if "32" in str(dt) else "complex128"  # a complex input stays complex
        t = tensor(transfer(a, b), backend=b, dtype=dt)
        if t.dtype.kind in "fc":
            t.requires_grad_(True)
        inputs.append(t)
    y = f(*inputs)
    diff = [t for t in inputs if t.requires_grad]
    grads: list[Any] = []
    if y.requires_grad and diff:
        gs = _analytic(y, _random_cotangent(y, cotangent_seed), diff)
        grads = [None if g is None else host_array(g.data) for g in gs]
    return host_array(y.data), grads


def assert_backends_agree(
    f: Callable[..., Tensor],
    *args: Any,
    backends: Sequence[str] = ("numpy", "cupy"),
    dtype: Any = None,
    rtol: float | None = None,
    atol: float | None = None,
) -> None:
    """Run ``f`` and its gradients on each backend from the same host data and compare.

    ``args`` are host arrays (NumPy) or anything ``numpy.asarray`` takes. Tolerances default by
    dtype (float64: 1e-10, float32: 1e-4 relative).
    """
    host = [host_asarray(a) for a in args]
    results = [value_and_grads(f, host, name, dtype) for name in backends]
    ref_name = backends[0]
    ref_val, ref_grads = results[0]
    is32 = ref_val.dtype in ("float32", "complex64") or (dtype is not None and "32" in str(dtype))
    rtol = rtol if rtol is not None else (1e-4 if is32 else 1e-10)
    atol = atol if atol is not None else (1e-5 if is32 else 1e-12)
    for name, (val, grads) in zip(backends[1:], results[1:]):
        _compare(f"value ({ref_name} vs {name})", ref_val, val, rtol, atol)
        if len(grads) != len(ref_grads):
            raise GradientCheckError(f"{ref_name} gave {len(ref_grads)} gradients, {name} {len(grads)}")
        for i, (ga, gb) in enumerate(zip(ref_grads, grads)):
            if (ga is None) != (gb is None):
                raise GradientCheckError(f"gradient {i}: present on one backend only")
            if ga is not None:
                _compare(f"gradient {i} ({ref_name} vs {name})", ga, gb, rtol, atol)


def _compare(what: str, a: Any, b: Any, rtol: float, atol: float) -> None:
    a = host_asarray(a)
    b = host_asarray(b)
    if a.shape != b.shape:
        raise GradientCheckError(f"{what}: shapes differ, {a.shape} vs {b.shape}")
    if a.dtype != b.dtype:
        raise GradientCheckError(f"{what}: dtypes differ, {a.dtype} vs {b.dtype}")
    if a.dtype.kind not in "fc":
        if not host_equal(a, b):
            raise GradientCheckError(f"{what}: values differ\n{a}\n{b}")
        return
    k = host_first_not_close(a, b, rtol, atol)
    if k is not None:
        raise GradientCheckError(
            f"{what}: differ at flat index {k}: {a.reshape(-1)[k]!r} vs {b.reshape(-1)[k]!r} "
            f"(rtol={rtol}, atol={atol})\n{a}\n{b}"
        )
