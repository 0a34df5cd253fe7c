"""Recurrent layers and attention against PyTorch on the CPU: forward + backward time of
``nn.LSTM``, ``nn.GRU``, ``nn.RNN`` and ``nn.MultiheadAttention`` (float32, one layer, the same
weights' shapes, one thread for both), best of 3 rounds of ``--reps`` calls.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/recurrent.py
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import agnograd as ag  # noqa: E402
from agnograd import nn  # noqa: E402


def best_ms(f: Callable[[], None], reps: int) -> float:
    f()
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(reps):
            f()
        best = min(best, (time.perf_counter() - t) / reps * 1e3)
    return best


def compare(label: str, m: Any, t: Any, x: np.ndarray, reps: int, attention: bool) -> None:
    xa, xt = ag.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    args_a, args_t = ((xa, xa, xa), (xt, xt, xt)) if attention else ((xa,), (xt,))
    ta = best_ms(lambda: ag.sum(m(*args_a)[0]).backward(), reps)
    tt = best_ms(lambda: t(*args_t)[0].sum().backward(), reps)
    print(f"{label}: agnograd {ta:6.2f} ms, torch {tt:6.2f} ms, ratio {ta / tt:.1f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--input", type=int, default=32)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--reps", type=int, default=20)
    a = p.parse_args()
    torch.set_num_threads(1)
    x = np.random.default_rng(0).normal(size=(a.steps, a.batch, a.input)).astype(np.float32)
    for kind in ("LSTM", "GRU", "RNN"):
        m, t = getattr(nn, kind)(a.input, a.hidden, seed=0), getattr(torch.nn, kind)(a.input, a.hidden)
        compare(f"{kind:5s} (L={a.steps}, N={a.batch}, {a.input}->{a.hidden})", m, t, x, a.reps,
                False)
    e = a.hidden
    q = np.random.default_rng(1).normal(size=(a.steps, a.batch, e)).astype(np.float32)
    compare(f"MultiheadAttention (L={a.steps}, N={a.batch}, E={e}, 4 heads)",
            nn.MultiheadAttention(e, 4, seed=0), torch.nn.MultiheadAttention(e, 4), q, a.reps, True)

if __name__ == "__main__":
    main()
