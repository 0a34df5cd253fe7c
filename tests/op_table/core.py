"""The :class:`Op` record and helpers shared by the table's category modules."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import agnograd as ag

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Op:
    """One differentiable op (or a small composition exercising one rule).

    Attributes:
        name: test id, e.g. ``"exp"`` or ``"sum-axis1-keepdims"``.
        fn: ``fn(*tensors) -> Tensor``, written with agnograd ops only. Non-differentiable
            arguments (indices, axes) are made inside ``fn`` with :func:`like`.
        cases: one tuple of input shapes per test case.
        domain: inputs are drawn uniformly from this interval...
        make: ...unless ``make(rng, shapes)`` draws them (SPD matrices, distinct values, ...);
            it returns float64 NumPy arrays, or complex128 ones for complex inputs.
        rtol, atol: finite-difference tolerances in float64.
        order: highest derivative order checked (2: also finite differences of the gradient).
        f32_rtol: tolerance of the float32 cross-backend comparison.
        f64_rtol, f64_atol: tolerances of the float64 cross-backend comparison (looser only
            where backends compute with different algorithms: ``ag.special``'s approximations).
        skip: backend name -> reason, for backends where the op cannot run.
        covers: public ops this record exercises on purpose besides the one its name starts
            with (``"linalg.inv-..."`` covers ``ag.linalg.inv``); read by the test that every
            public differentiable op has a record.
        reads_host: why the backward reads a value back to the host where that is cheap (a
            check that raises, e.g. the phase check of complex eigenvectors); the test that
            backward makes no host copies skips such a record.
        vmap: why ``ag.vmap`` refuses the record (a shape that depends on the values, as JAX
            and ``torch.func`` refuse it); ``tests/test_vmap.py`` then checks that it raises
            :class:`~agnograd.VmapError`.
    """

    name: str
    fn: Callable[..., Any]
    cases: Sequence[tuple[Shape, ...]]
    domain: tuple[float, float] = (-2.0, 2.0)
    make: Callable[[np.random.Generator, tuple[Shape, ...]], list[np.ndarray]] | None = None
    rtol: float = 1e-6
    atol: float = 1e-8
    order: int = 2
    f32_rtol: float = 2e-4
    f64_rtol: float = 1e-10
    f64_atol: float = 1e-12
    skip: dict[str, str] = field(default_factory=dict)
    covers: tuple[str, ...] = ()
    reads_host: str = ""
    vmap: str = ""


OPS_BY_CATEGORY: dict[str, list[Op]] = {}


def category(name: str, ops: list[Op]) -> None:
    OPS_BY_CATEGORY[name] = ops


def cases_of(ops: Sequence[Op]) -> list[tuple[Op, tuple[Shape, ...]]]:
    return [(op, shapes) for op in ops for shapes in op.cases]


def draw(op: Op, shapes: tuple[Shape, ...], seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    if op.make is not None:
        return [np.asarray(a, dtype=np.complex128 if np.iscomplexobj(a) else np.float64)
                for a in op.make(rng, shapes)]
    lo, hi = op.domain
    return [rng.uniform(lo, hi, size=s) for s in shapes]


def like(x: ag.Tensor, values: Any, dtype: Any = None) -> ag.Tensor:
    """A constant tensor on ``x``'s backend (indices, masks, ...)."""
    return ag.tensor(np.asarray(values), backend=x.backend, dtype=dtype)


def distinct(rng: np.random.Generator, shapes: tuple[Shape, ...]) -> list[np.ndarray]:
    """Inputs with well-separated values, so finite differences never cross a tie or swap two
    elements (max, min, sort)."""
    out = []
    for s in shapes:
        n = int(np.prod(s))
        out.append((rng.permutation(n) * 0.37 - n * 0.15).reshape(s))
    return out


# Shapes reused across categories: 0-d, size-1 and broadcasting cases.
UNARY = [((),), ((1,),), ((2, 3),)]
BINARY = [((2, 3), (2, 3)), ((2, 3), (3,)), ((1, 3), (2, 1)), ((), (2, 3)), ((1,), ())]
