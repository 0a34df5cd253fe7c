"""Third-party Array API code is differentiable: SciPy functions called on agnograd Tensors.

SciPy's array-API paths (``SCIPY_ARRAY_API=1``) find the namespace of their arguments with
``array_namespace``, which asks ``x.__array_namespace__()`` -- for a Tensor, the ``agnograd``
module -- and then compute with it. So ``scipy.special.logsumexp(x)`` builds an agnograd graph
and its gradient can be checked against finite differences. ``SCIPY_ARRAY_API`` is read once,
when SciPy is first imported, so the cases run in a fresh interpreter (one for all of them).
Element-wise special functions that SciPy implements as NumPy ufuncs (``expit``, ``erf``, the
p-values of ``scipy.stats``) have no path for namespaces SciPy does not know; see
docs/conformance.md.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(importlib.util.find_spec("scipy") is None,
                                reason="SciPy is not installed")

# Each case: name -> (function of one Tensor x of shape (2, 3), written with SciPy; constants
# are made on x's backend with `const`).
SCRIPT = r"""
import json
import sys

import numpy as np
import scipy.special as special
import scipy.stats as stats

import agnograd as ag
from agnograd.testing import check_grad


def const(x, values):
    return ag.tensor(np.asarray(values, dtype=np.float64), backend=x.backend)


CASES = {
    "special.logsumexp": lambda x: special.logsumexp(x),
    "special.logsumexp-axis-b": lambda x: special.logsumexp(x, axis=1, b=const(x, [1.0, 2.0, 0.5])),
    "special.softmax": lambda x: special.softmax(x, axis=0),
    "special.log_softmax": lambda x: special.log_softmax(x, axis=1),
    "stats.zscore": lambda x: stats.zscore(x, axis=None),
    "stats.moment": lambda x: stats.moment(x, order=3, axis=1),
    "stats.skew": lambda x: stats.skew(x, axis=1),
    "stats.kurtosis": lambda x: stats.kurtosis(x, axis=1),
    "stats.variation": lambda x: stats.variation(x, axis=1),
    "stats.gmean": lambda x: stats.gmean(ag.exp(x), axis=1),
    "stats.pmean": lambda x: stats.pmean(ag.exp(x), 2.5, axis=1),
    "stats.entropy": lambda x: stats.entropy(ag.exp(x[0, ...]), ag.exp(x[1, ...])),
    "stats.sem": lambda x: stats.sem(x, axis=1),
}

results = {}
rng = np.random.default_rng(0)
for backend in sys.argv[1:]:
    for name, f in CASES.items():
        x = ag.tensor(rng.normal(size=(2, 3)), backend=backend, requires_grad=True)
        try:
            y = f(x)
            if type(y) is not ag.Tensor or y.backend != backend or not y.requires_grad:
                raise AssertionError(f"{name} returned {y!r}, not a Tensor on {backend} that "
                                     "requires grad")
            check_grad(f, x)
            results[f"{name}[{backend}]"] = "ok"
        except Exception as exc:
            results[f"{name}[{backend}]"] = f"{type(exc).__name__}: {exc}"
print(json.dumps(results))
"""

CASE_NAMES = [
    "special.logsumexp", "special.logsumexp-axis-b", "special.softmax", "special.log_softmax",
    "stats.zscore", "stats.moment", "stats.skew", "stats.kurtosis", "stats.variation",
    "stats.gmean", "stats.pmean", "stats.entropy", "stats.sem",
]
BACKENDS = ("numpy", "array_api_strict")


@pytest.fixture(scope="module")
def scipy_results() -> dict[str, str]:
    env = dict(os.environ, SCIPY_ARRAY_API="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, *BACKENDS], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", CASE_NAMES)
def test_scipy_function_is_differentiable(scipy_results, name, backend):
    assert scipy_results[f"{name}[{backend}]"] == "ok"
