"""Per-op cost on tiny arrays: a chain of 2,000 elementwise ops on a shape-(4,) array, forward
and backward, in microseconds per op -- the Python overhead users feel on small arrays.

The chain alternates multiply-by-a-constant, add-a-constant and sin. Baselines: NumPy forward
only (the floor of any NumPy-backed engine), PyTorch eager and HIPS autograd where installed;
the captured row replays one ``ag.capture`` recording of the chain (a staged replay).
Runs are interleaved and the table reports medians.

    python benchmarks/op_overhead.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

import agnograd as ag  # noqa: E402

N = 2000


def numpy_forward() -> None:
    x = np.ones(4)
    for i in range(N):
        k = i % 3
        x = x * 1.0001 if k == 0 else (x + 0.001 if k == 1 else np.sin(x))


def agnograd_fwd_bwd() -> None:
    x = ag.tensor(np.ones(4), requires_grad=True)
    y = x
    for i in range(N):
        k = i % 3
        y = y * 1.0001 if k == 0 else (y + 0.001 if k == 1 else ag.sin(y))
    ag.sum(y).backward()


def agnograd_forward_only() -> None:
    x = ag.tensor(np.ones(4))
    y = x
    for i in range(N):
        k = i % 3
        y = y * 1.0001 if k == 0 else (y + 0.001 if k == 1 else ag.sin(y))


def agnograd_captured() -> Callable[[], None]:
    """The same chain, forward and backward, recorded once by ag.capture and replayed (a
    staged replay of the recorded NumPy calls; the recording time is printed)."""
    x = ag.tensor(np.ones(4), requires_grad=True)

    def step(x: ag.Tensor) -> ag.Tensor:
        x.grad = None
        y = x
        for i in range(N):
            k = i % 3
            y = y * 1.0001 if k == 0 else (y + 0.001 if k == 1 else ag.sin(y))
        ag.sum(y).backward()
        return x.grad

    t0 = time.perf_counter()
    captured = ag.capture(step, x, warmup=1)
    print(f"ag.capture of the chain ({captured.replay}, {getattr(captured.program, 'calls', '-')} "
          f"calls, warm-up call included): {(time.perf_counter() - t0) * 1e3:.0f} ms")
    np.testing.assert_array_equal(captured(x).numpy(), step(x).numpy())
    return lambda: captured(x)


def torch_fwd_bwd() -> Callable[[], None] | None:
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(1)

    def run() -> None:
        x = torch.ones(4, dtype=torch.float64, requires_grad=True)
        y = x
        for i in range(N):
            k = i % 3
            y = y * 1.0001 if k == 0 else (y + 0.001 if k == 1 else torch.sin(y))
        y.sum().backward()

    return run


def autograd_fwd_bwd() -> Callable[[], None] | None:
    try:
        import autograd
        import autograd.numpy as anp
    except ImportError:
        return None

    def f(x: np.ndarray) -> np.ndarray:
        y = x
        for i in range(N):
            k = i % 3
            y = y * 1.0001 if k == 0 else (y + 0.001 if k == 1 else anp.sin(y))
        return anp.sum(y)

    g = autograd.grad(f)
    return lambda: g(np.ones(4))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    impls: dict[str, Callable[[], None]] = {
        "NumPy forward only (floor)": numpy_forward,
        "agnograd forward only": agnograd_forward_only,
        "agnograd forward+backward": agnograd_fwd_bwd,
        "agnograd captured forward+backward": agnograd_captured(),
    }
    for name, make in (("PyTorch eager forward+backward", torch_fwd_bwd),
                       ("HIPS autograd forward+backward", autograd_fwd_bwd)):
        f = make()
        if f is not None:
            impls[name] = f
    for f in impls.values():
        f()
    samples: dict[str, list[float]] = {k: [] for k in impls}
    for _ in range(args.rounds):
        for name, f in impls.items():
            t0 = time.perf_counter()
            f()
            samples[name].append((time.perf_counter() - t0) / N * 1e6)
    floor = statistics.median(samples["NumPy forward only (floor)"])
    print(f"chain of {N} elementwise ops on shape (4,), float64; median of {args.rounds} rounds")
    print("| implementation | us per op | ratio to NumPy forward |")
    print("| --- | --- | --- |")
    for name, v in samples.items():
        m = statistics.median(v)
        print(f"| {name} | {m:.2f} | {m / floor:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
