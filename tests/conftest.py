"""Shared fixtures: the ``backend`` fixture runs a test on every backend available here.

NumPy and array_api_strict always; CuPy when a CUDA device is present (marker ``gpu``); PyTorch
(CPU) when installed.
"""

from __future__ import annotations

import pytest

import agnograd as ag

_AVAILABLE = set(ag.available_backends())


def _param(name: str):  # type: ignore[no-untyped-def]
    marks = []
    if name == "cupy":
        marks.append(pytest.mark.gpu)
    if name not in _AVAILABLE:
        marks.append(pytest.mark.skip(reason=f"backend {name!r} is not available here"))
    return pytest.param(name, marks=marks, id=name)


BACKENDS = [_param(n) for n in ("numpy", "array_api_strict", "cupy", "torch")]
CPU_BACKENDS = [_param(n) for n in ("numpy", "array_api_strict")]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]
