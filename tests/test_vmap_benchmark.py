"""``benchmarks/vmap.py`` runs: its code paths once at a tiny size, so the benchmark cannot rot.

Each workload checks its implementations against each other before it is timed (per-example
gradients: ``ag.vmap(ag.grad)`` and ``torch.func.vmap(grad)`` against a loop of ``ag.grad``;
Jacobians: ``ag.vmap`` of ``jvp`` / of the ``vjp`` pullback against ``ag.jacfwd`` / ``ag.jacrev``
and ``torch.func``), so these are correctness tests of ``ag.vmap`` too. Timings belong to the
benchmark, not to tests.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "vmap.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("_vmap_bench", PATH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    with mock.patch.dict(os.environ):  # the module sets the BLAS thread variables
        spec.loader.exec_module(mod)
    return mod


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_per_example_gradients_agree_with_the_loop_and_torch(bench, dtype):
    fns = bench.per_example_workload(3, dtype, _torch())  # checks them against the loop
    assert {"ag_vmap", "ag_loop"} <= set(fns)
    grads = fns["ag_vmap"]()
    assert [g.shape[0] for g in grads] == [3] * 6
    assert all(np.abs(g).max() > 0 for g in grads)


@pytest.mark.parametrize(("n", "m", "mode"), [(3, 7, "fwd"), (7, 3, "rev")])
def test_jacobians_through_vmap_agree(bench, n, m, mode):
    fns = bench.jacobian_workload(n, m, mode, _torch())
    assert fns["vmap"]().shape == (m, n)


def test_the_script_prints_both_tables(bench, capsys, monkeypatch):
    monkeypatch.setattr(bench, "JACOBIANS", [(4, 6, "fwd"), (6, 4, "rev")])
    assert bench.main(["--examples", "2", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "1. Per-example gradients" in out and "2. Jacobians" in out
    assert out.count("| float") == 2 and out.count("| R^4 ") + out.count("| R^6 ") == 2
