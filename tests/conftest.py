"""Shared fixtures: the ``backend`` fixture runs a test on every backend available here.

NumPy and array_api_strict always; CuPy when a CUDA device is present (those cases carry the
marker ``gpu``); PyTorch (CPU) when installed. Backends that are not available are left out of
the parametrization (``tests/test_backend.py::test_optional_backends`` reports them as skips).
"""

from __future__ import annotations

import pytest

import agnograd as ag

AVAILABLE = set(ag.available_backends())


def _params(names):  # type: ignore[no-untyped-def]
    return [pytest.param(n, marks=[pytest.mark.gpu] if n == "cupy" else [], id=n)
            for n in names if n in AVAILABLE]


BACKENDS = _params(("numpy", "array_api_strict", "cupy", "torch"))
CPU_BACKENDS = _params(("numpy", "array_api_strict"))
# Backends compared against NumPy, the reference, in the cross-backend tests.
OTHER_BACKENDS = _params(("array_api_strict", "cupy", "torch"))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]
