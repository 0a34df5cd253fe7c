"""nn workloads at library speed: agnograd on NumPy against PyTorch on the CPU (issue 25).

Each row times forward + backward, float32, of one workload in agnograd (NumPy backend) and in
PyTorch, in one process, interleaved (A, B, A, B, ...) after a warm-up, and prints the medians and
their ratio. Both libraries run on the same number of threads: ``--threads N`` (default 1) is
set for NumPy's BLAS (``OPENBLAS_NUM_THREADS``/``OMP_NUM_THREADS``/``MKL_NUM_THREADS``, before
NumPy is imported; a value already in the environment wins) and passed to
``torch.set_num_threads``. The gradients are checked against PyTorch's before timing.

    python benchmarks/nn_speed.py                  # every workload
    python benchmarks/nn_speed.py --only conv1d    # one of them

| workload | what is differentiated | target |
| --- | --- | --- |
| conv2d: input (64, 3, 32, 32), 16 filters 3x3, padding 1 | weight, bias | <= 2x torch |
| conv1d: input (16, 64, 2048), 64 filters k=5, padding 2 | input, weight, bias | <= 2x |
| cross_entropy: logits 4096 x 32000, int64 labels, mean | logits | <= 1.5x |
| embedding (32000 x 256) of (32, 128) tokens + layer_norm + gelu | table, LN weight, bias | <= 1.5x |
| max_pool2d: input (64, 16, 32, 32), kernel 2 | input | <= 1.5x |

The loss of the non-loss workloads is ``sum(y * r)`` for a fixed random ``r`` (a cotangent that is
not all ones).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _threads(argv: list[str] | None) -> int:
    args = sys.argv[1:] if argv is None else argv
    for i, a in enumerate(args):
        if a == "--threads" and i + 1 < len(args):
            return int(args[i + 1])
        if a.startswith("--threads="):
            return int(a.split("=", 1)[1])
    return 1


THREADS = _threads(None)
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, str(THREADS))

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402  (benchmarks are host-side scripts, outside the package)

import agnograd as ag  # noqa: E402
import agnograd.nn.functional as F  # noqa: E402

Workload = tuple[Callable[[], Any], Callable[[], Any], Callable[[], None]]


def _rng() -> np.random.Generator:
    return np.random.default_rng(0)


def conv2d(torch: Any) -> Workload:
    rng = _rng()
    x = rng.normal(size=(64, 3, 32, 32)).astype(np.float32)
    w = (rng.normal(size=(16, 3, 3, 3)) * 0.2).astype(np.float32)
    b = rng.normal(size=(16,)).astype(np.float32)
    r = rng.normal(size=(64, 16, 32, 32)).astype(np.float32)
    aw, ab = ag.tensor(w, requires_grad=True), ag.tensor(b, requires_grad=True)
    ax, ar = ag.tensor(x), ag.tensor(r)
    tw, tb = torch.tensor(w, requires_grad=True), torch.tensor(b, requires_grad=True)
    tx, tr = torch.tensor(x), torch.tensor(r)

    def a() -> Any:
        aw.grad = ab.grad = None
        ag.sum(F.conv2d(ax, aw, ab, padding=1) * ar).backward()
        return aw.grad, ab.grad

    def t() -> Any:
        tw.grad = tb.grad = None
        (torch.nn.functional.conv2d(tx, tw, tb, padding=1) * tr).sum().backward()
        return tw.grad, tb.grad

    return a, t, lambda: _close(a(), t())


def conv1d(torch: Any) -> Workload:
    rng = _rng()
    x = rng.normal(size=(16, 64, 2048)).astype(np.float32)
    w = (rng.normal(size=(64, 64, 5)) * 0.05).astype(np.float32)
    b = rng.normal(size=(64,)).astype(np.float32)
    r = rng.normal(size=(16, 64, 2048)).astype(np.float32)
    ax, aw, ab = (ag.tensor(v, requires_grad=True) for v in (x, w, b))
    ar = ag.tensor(r)
    tx, tw, tb = (torch.tensor(v, requires_grad=True) for v in (x, w, b))
    tr = torch.tensor(r)

    def a() -> Any:
        ax.grad = aw.grad = ab.grad = None
        ag.sum(F.conv1d(ax, aw, ab, padding=2) * ar).backward()
        return ax.grad, aw.grad, ab.grad

    def t() -> Any:
        tx.grad = tw.grad = tb.grad = None
        (torch.nn.functional.conv1d(tx, tw, tb, padding=2) * tr).sum().backward()
        return tx.grad, tw.grad, tb.grad

    return a, t, lambda: _close(a(), t())


def cross_entropy(torch: Any) -> Workload:
    rng = _rng()
    x = rng.normal(size=(4096, 32000)).astype(np.float32)
    y = rng.integers(0, 32000, size=4096).astype(np.int64)
    ax, ay = ag.tensor(x, requires_grad=True), ag.tensor(y)
    tx, ty = torch.tensor(x, requires_grad=True), torch.tensor(y)

    def a() -> Any:
        ax.grad = None
        F.cross_entropy(ax, ay).backward()
        return (ax.grad,)

    def t() -> Any:
        tx.grad = None
        torch.nn.functional.cross_entropy(tx, ty).backward()
        return (tx.grad,)

    return a, t, lambda: _close(a(), t())


def embedding_ln_gelu(torch: Any) -> Workload:
    rng = _rng()
    table = rng.normal(size=(32000, 256)).astype(np.float32)
    idx = rng.integers(0, 32000, size=(32, 128)).astype(np.int64)
    lw = rng.normal(size=(256,)).astype(np.float32)
    lb = rng.normal(size=(256,)).astype(np.float32)
    r = rng.normal(size=(32, 128, 256)).astype(np.float32)
    at, aw, ab = (ag.tensor(v, requires_grad=True) for v in (table, lw, lb))
    ai, ar = ag.tensor(idx), ag.tensor(r)
    tt, tw, tb = (torch.tensor(v, requires_grad=True) for v in (table, lw, lb))
    ti, tr = torch.tensor(idx), torch.tensor(r)

    def a() -> Any:
        at.grad = aw.grad = ab.grad = None
        h = F.layer_norm(F.embedding(ai, at), 256, aw, ab)
        ag.sum(F.gelu(h) * ar).backward()
        return at.grad, aw.grad, ab.grad

    def t() -> Any:
        tt.grad = tw.grad = tb.grad = None
        tf = torch.nn.functional
        h = tf.layer_norm(tf.embedding(ti, tt), (256,), tw, tb)
        (tf.gelu(h) * tr).sum().backward()
        return tt.grad, tw.grad, tb.grad

    return a, t, lambda: _close(a(), t())


def max_pool2d(torch: Any) -> Workload:
    rng = _rng()
    x = rng.normal(size=(64, 16, 32, 32)).astype(np.float32)
    r = rng.normal(size=(64, 16, 16, 16)).astype(np.float32)
    ax, ar = ag.tensor(x, requires_grad=True), ag.tensor(r)
    tx, tr = torch.tensor(x, requires_grad=True), torch.tensor(r)

    def a() -> Any:
        ax.grad = None
        ag.sum(F.max_pool2d(ax, 2) * ar).backward()
        return (ax.grad,)

    def t() -> Any:
        tx.grad = None
        (torch.nn.functional.max_pool2d(tx, 2) * tr).sum().backward()
        return (tx.grad,)

    return a, t, lambda: _close(a(), t())


def _close(got: Any, want: Any) -> None:
    for g, w in zip(got, want):
        w = w.detach().numpy()
        scale = float(np.max(np.abs(w))) or 1.0
        np.testing.assert_allclose(np.asarray(g.numpy()), w, rtol=1e-3, atol=1e-4 * scale)


WORKLOADS: dict[str, tuple[Callable[[Any], Workload], float, str]] = {
    "conv2d": (conv2d, 2.0, "input (64, 3, 32, 32), 16 filters 3x3"),
    "conv1d": (conv1d, 2.0, "input (16, 64, 2048), 64 filters k=5"),
    "cross_entropy": (cross_entropy, 1.5, "4096 x 32000, int64 labels"),
    "embedding_ln_gelu": (embedding_ln_gelu, 1.5, "embedding + layer_norm + gelu, (32, 128, 256)"),
    "max_pool2d": (max_pool2d, 1.5, "input (64, 16, 32, 32), kernel 2"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1,
                        help="threads for NumPy's BLAS and for torch (default 1)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--only", action="append", choices=sorted(WORKLOADS))
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    print(f"float32, forward+backward, {args.threads} thread(s) "
          f"(OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}, torch "
          f"{torch.get_num_threads()}); median of {args.rounds} interleaved rounds")
    print("| workload | agnograd ms | torch ms | ratio | target |")
    print("| --- | --- | --- | --- | --- |")
    for name in args.only or list(WORKLOADS):
        make, target, desc = WORKLOADS[name]
        a, t, check = make(torch)
        check()
        a()
        t()
        ta: list[float] = []
        tt: list[float] = []
        for _ in range(args.rounds):
            for f, out in ((a, ta), (t, tt)):
                t0 = time.perf_counter()
                f()
                out.append(time.perf_counter() - t0)
        ma, mt = statistics.median(ta) * 1e3, statistics.median(tt) * 1e3
        ok = "ok" if ma / mt <= target else "over"
        print(f"| {name}: {desc} | {ma:.2f} | {mt:.2f} | {ma / mt:.2f}x | <= {target}x ({ok}) |",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
