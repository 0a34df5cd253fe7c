"""Every op of the table: finite differences (float64) on every available backend, agreement
of every available backend with NumPy (float32 and float64), and second derivatives.

Backends: NumPy and array_api_strict always; CuPy when a CUDA device is present (marker
``gpu``); PyTorch (CPU) when installed.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

import agnograd as ag
from agnograd import autograd
from agnograd.testing import assert_backends_agree, check_grad

from .conftest import BACKENDS, OTHER_BACKENDS
from .op_table import OPS, cases_of
from .op_table.core import draw

CASES = cases_of(OPS)
IDS = [f"{op.name}-{'x'.join(str(s) for s in shapes) or 'scalar'}" for op, shapes in CASES]


def _seed(op, shapes) -> int:
    return zlib.crc32(f"{op.name}{shapes}".encode())


def _inputs(op, shapes, backend):
    """float64 inputs, complex128 where the record draws complex ones."""
    return [ag.tensor(a, backend=backend, dtype=ag.complex128 if np.iscomplexobj(a) else ag.float64)
            for a in draw(op, shapes, _seed(op, shapes))]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("op", "shapes"), CASES, ids=IDS)
def test_finite_differences(op, shapes, backend):
    if backend in op.skip:
        pytest.skip(op.skip[backend])
    check_grad(op.fn, *_inputs(op, shapes, backend), rtol=op.rtol, atol=op.atol)


@pytest.mark.parametrize("other", OTHER_BACKENDS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(("op", "shapes"), CASES, ids=IDS)
def test_backends_agree(op, shapes, dtype, other):
    """Same host inputs on NumPy and on ``other``: values and gradients agree."""
    if other in op.skip:
        pytest.skip(op.skip[other])
    host = draw(op, shapes, _seed(op, shapes))
    rtol = op.f32_rtol if dtype == "float32" else op.f64_rtol
    atol = 1e-4 if dtype == "float32" else op.f64_atol
    assert_backends_agree(op.fn, *host, backends=("numpy", other),
                          dtype=getattr(ag, dtype), rtol=rtol, atol=atol)


def _grad_dot(fn, directions):
    """h(x) = Σ_i <∂L/∂x_i, v_i> with L = Σ fn(x)·w: its gradient is a Hessian-vector product."""

    def h(*xs):
        with ag.enable_grad():
            # Finite differences call h on plain tensors: make them leaves that require grad.
            xs = [x if x.requires_grad else x.detach().requires_grad_() for x in xs]
            y = fn(*xs)
            w = ag.tensor(np.linspace(0.5, 1.5, max(y.size, 1)).reshape(y.shape),
                          backend=y.backend, dtype=y.dtype)
            loss = ag.sum(y * w)
            if not loss.requires_grad:
                return loss
            ones = ag.ones_like(loss)
            gs = autograd.backward([loss], [ones], retain_graph=True, create_graph=True,
                                   targets=list(xs))
            total = None
            for g, v in zip(gs, directions):
                if g is None:
                    continue
                term = ag.sum(g * ag.tensor(v, backend=g.backend, dtype=g.dtype))
                total = term if total is None else total + term
            return total if total is not None else loss * 0.0

    return h


SECOND = [(op, shapes) for op, shapes in CASES if op.order >= 2]
SECOND_IDS = [f"{op.name}-{'x'.join(str(s) for s in shapes) or 'scalar'}" for op, shapes in SECOND]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("op", "shapes"), SECOND, ids=SECOND_IDS)
def test_second_order(op, shapes, backend):
    if backend in op.skip:
        pytest.skip(op.skip[backend])
    xs = _inputs(op, shapes, backend)
    rng = np.random.default_rng(_seed(op, shapes) + 1)
    directions = [rng.uniform(-1, 1, size=x.shape) for x in xs]
    check_grad(_grad_dot(op.fn, directions), *xs, eps=1e-5, rtol=max(op.rtol, 1e-5) * 10,
               atol=max(op.atol, 1e-7) * 10)


_HOST_SYNCS = ("__array__", "__bool__", "__float__", "__int__", "__index__", "__complex__",
               "__iter__", "__dlpack__", "__len__")


@pytest.mark.parametrize(("op", "shapes"), CASES, ids=IDS)
def test_backward_makes_no_host_copies(op, shapes, monkeypatch):
    """Gradients stay on the device: inside backward, no rule converts an array to the host
    (on array_api_strict every such conversion goes through one of these methods)."""
    if "array_api_strict" in op.skip:
        pytest.skip(op.skip["array_api_strict"])
    if op.reads_host:
        pytest.skip(op.reads_host)
    xs = _inputs(op, shapes, "array_api_strict")
    for x in xs:
        x.requires_grad_()
    y = op.fn(*xs)
    if not y.requires_grad:
        pytest.skip("no graph")
    loss = ag.sum(y * y)
    if loss.dtype.kind == "c":  # a complex output: a real loss from it (values do not matter)
        loss = ag.real(loss)
    array_type = type(xs[0].data)

    def refuse(name):
        def method(self, *args, **kwargs):
            raise AssertionError(f"host copy inside backward: Array.{name} was called")

        return method

    for name in _HOST_SYNCS:
        if hasattr(array_type, name):
            monkeypatch.setattr(array_type, name, refuse(name))
    loss.backward()
    monkeypatch.undo()
    assert all(x.grad is not None for x in xs)


# ---------------------------------------------------------------------------------------------
# Every public differentiable op has a record

# Public functions that are not differentiable ops, so they need no record. Everything else in
# ag.__all__, ag.linalg.__all__, ag.fft.__all__ and agnograd.nn.functional.__all__ that is a function must be
# named by a record (its name's first part, or its ``covers``): a new op without one fails.
NOT_DIFFERENTIABLE = {
    # creation from shapes, fills or host data (no array input to differentiate)
    "arange", "empty", "empty_like", "eye", "full", "full_like", "linspace", "ones", "ones_like",
    "zeros", "zeros_like", "from_dlpack", "as_tensor", "tensor",
    # dtype and namespace queries
    "can_cast", "finfo", "iinfo", "isdtype", "result_type", "__array_namespace_info__",
    # searching and sorting that return indices or counts
    "argmax", "argmin", "argsort", "nonzero", "searchsorted", "count_nonzero",
    # set functions (values and integer indices/counts; piecewise constant; isin is boolean)
    "unique_all", "unique_counts", "unique_inverse", "unique_values", "isin",
    # shape arithmetic on tuples (no arrays)
    "broadcast_shapes",
    # comparisons, logical and boolean-valued tests
    "equal", "not_equal", "greater", "greater_equal", "less", "less_equal", "logical_and",
    "logical_not", "logical_or", "logical_xor", "any", "all", "isfinite", "isinf", "isnan",
    "signbit",
    # integer bitwise ops
    "bitwise_and", "bitwise_invert", "bitwise_left_shift", "bitwise_or", "bitwise_right_shift",
    "bitwise_xor",
    # integer one-hot vectors (nn.functional.one_hot)
    "nn.one_hot",
    # elementwise functions without a gradient (piecewise constant: nextafter steps)
    "nextafter",
    # fft sample frequencies (creation functions)
    "fft.fftfreq", "fft.rfftfreq",
    # linalg functions with integer results
    "linalg.matrix_rank",
    # backends, grad mode and graph tools (not ops)
    "available_backends", "default_backend", "get_backend", "get_default_backend",
    "set_default_backend", "set_default_dtype", "get_default_dtype", "enable_grad", "no_grad",
    "is_grad_enabled", "set_grad_enabled",
    "detect_anomaly", "saved_nbytes", "to_dot", "to_mermaid",
    # transforms of functions, tested in test_func / test_capture / test_engine
    "grad", "value_and_grad", "vjp", "jvp", "jacobian", "hessian", "hvp", "checkpoint",
    "jacfwd", "jacrev", "linearize",  # (test_forward_mode)
    "vmap",  # (test_vmap: every record of this table batched, against the loop)
    "capture", "jit", "register_backend",
    # random numbers (ag.random, tested in test_random): draws, not functions of their inputs
    "manual_seed", "random.manual_seed", "random.default_generator", "random.uniform",
    "random.normal", "random.bernoulli",
    # differentiable, but its rule moves the cotangent between two backends, which a record
    # (run on one backend) cannot: tested in test_backend.test_to_backend_is_differentiable_...
    "to_backend",
}


def _public_functions():
    """(qualified name, function) for every public function of the namespaces."""
    import inspect

    import agnograd.nn.functional as F

    for prefix, ns in (("", ag), ("linalg.", ag.linalg), ("fft.", ag.fft), ("special.", ag.special),
                       ("random.", ag.random), ("nn.", F)):
        for name in ns.__all__:
            obj = getattr(ns, name)
            if callable(obj) and not inspect.isclass(obj) and not inspect.ismodule(obj):
                yield prefix + name, obj


def _covered(ops) -> set[int]:
    """ids of the public functions the records name (functions, not names: ``ag.matmul`` is
    ``ag.linalg.matmul``)."""
    import agnograd.nn.functional as F

    found = set()
    for op in ops:
        first = op.name.split("-")[0]
        for name in (first, *op.covers):
            if name.startswith("linalg."):
                ns, attr = ag.linalg, name[len("linalg."):]
            elif name.startswith("fft."):
                ns, attr = ag.fft, name[len("fft."):]
            elif name.startswith("special."):
                ns, attr = ag.special, name[len("special."):]
            elif name.startswith("nn."):
                ns, attr = F, name[len("nn."):]
            else:
                ns, attr = ag, name.removeprefix("misc.")
            obj = getattr(ns, attr, None)
            if obj is not None:
                found.add(id(obj))
    return found


def test_every_public_differentiable_op_has_a_record():
    covered = _covered(OPS)
    public = dict(_public_functions())
    missing = sorted(n for n, f in public.items() if n not in NOT_DIFFERENTIABLE
                     and id(f) not in covered)
    assert not missing, (f"public ops without a record in tests/op_table/: {missing}; add one (or, "
                         "if it is not differentiable, add it to NOT_DIFFERENTIABLE with a reason)")
    stale = sorted(NOT_DIFFERENTIABLE - set(public))
    assert not stale, f"NOT_DIFFERENTIABLE names functions that are not public: {stale}"
