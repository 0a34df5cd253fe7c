"""Memory: the extra peak of one training step, and whether a long training loop holds steady.

1. ``step``: one forward+backward of the 3-layer network (medium sizes 784-1024-1024-10, batch
   4096, float32), each implementation in a fresh process: the peak resident set size during
   the step minus the resident size just before it (CPU), or the CuPy pool's high-water mark.
2. ``captured``: the same network's training step *with an SGD update*, in steady state (after
   three warm-up steps), each in a fresh process: hand-written NumPy, agnograd eager, and
   agnograd replaying an ``ag.capture`` recording (staged on NumPy). Two figures per row: the
   extra peak of one step over the resident size just before it (the peak is reset first,
   ``/proc/self/clear_refs``), and what stays resident between steps beyond the model and the
   data (gradients, optimizer state, a recording's buffers and constants). The children run
   with ``MALLOC_MMAP_THRESHOLD_=131072`` so that every array is its own mapping, returned to
   the system when freed: resident size then follows the live arrays, not malloc's cache.
3. ``loop``: 1,000 SGD steps of the small network with agnograd; resident size sampled every 100
   steps, to show that nothing accumulates (graphs are freed as soon as a step ends).

    python benchmarks/memory.py            # all three
    python benchmarks/memory.py step       # only the one-step peaks
    python benchmarks/memory.py captured   # only the steady-state step with an update
"""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one_step(impl: str, backend: str) -> None:
    """Runs in a child process: prints the extra peak MiB of one step."""
    import numpy as np
    from mlp_step import agnograd_step, hand_written, make_problem, torch_step

    import agnograd as ag

    host = make_problem(4096, [784, 1024, 1024, 10])
    b = ag.get_backend(backend)
    dev = {k: b.asarray(v) for k, v in host.items()}
    if impl == "hand-written":
        f = hand_written(b.xp, dev)
    elif impl == "agnograd":
        f = agnograd_step(backend, dev, fused=True)
    else:
        f = torch_step(host, "cpu" if backend == "numpy" else "cuda")
        if f is None:
            print("nan")
            return
    if backend == "cupy":
        import cupy

        pool = cupy.get_default_memory_pool()
        f()  # warm up kernels and the pool
        pool.free_all_blocks()
        before = pool.used_bytes()
        # The pool's high-water mark is not exposed: total_bytes after a fresh step is the peak
        # of what the step held at once (freed blocks stay cached in the pool).
        g = f()
        cupy.cuda.Device().synchronize()
        print((pool.total_bytes() - before) / 2**20)
        del g
        return
    np.ones(1)
    base = _rss_mib()
    g = f()
    print(_peak_mib() - base)
    del g


def _hwm_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current resident size (Linux)


def steady_step(impl: str) -> None:
    """Runs in a child process: prints 'extra peak MiB, held MiB' of one steady-state step of
    the medium network with an SGD update (lr 0: the parameters stay put)."""
    import gc

    import numpy as np
    from mlp_step import PARAMS, hand_written, make_problem

    import agnograd as ag
    from agnograd import optim
    from agnograd.nn import functional as F

    host = make_problem(4096, [784, 1024, 1024, 10])
    gc.collect()
    np.ones(1)
    setup = _rss_mib()
    if impl == "hand-written":
        d = {k: v.copy() for k, v in host.items()}
        hand = hand_written(np, d)

        def run() -> Any:
            g = hand()
            for k in PARAMS:
                d[k] -= 0.0 * g[k]
            return g
    else:
        x, y = ag.tensor(host["x"]), ag.tensor(host["y"])
        P = {k: ag.tensor(host[k].copy(), requires_grad=True) for k in PARAMS}
        opt = optim.SGD(list(P.values()), lr=0.0, capturable=True)

        def step(x: ag.Tensor, y: ag.Tensor) -> ag.Tensor:
            opt.zero_grad()
            x1 = ag.tanh(x @ P["W1"] + P["b1"])
            x2 = ag.tanh(x1 @ P["W2"] + P["b2"])
            loss = F.cross_entropy(x2 @ P["W3"] + P["b3"], y)
            loss.backward()
            opt.step()
            return loss

        if impl == "captured":
            captured = ag.capture(step, x, y)  # three warm-up steps, then the recording
            run = lambda: captured(x, y)  # noqa: E731
        else:
            run = lambda: step(x, y)  # noqa: E731
    for _ in range(3):
        run()
    gc.collect()
    before = _rss_mib()
    _reset_peak()
    run()
    peak = _hwm_mib()
    gc.collect()
    print(f"{peak - before} {_rss_mib() - setup}")


def captured_table() -> list[str]:
    import os

    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    rows = ["| implementation (medium step + SGD update, batch 4096, steady state) | extra peak MiB "
            "of one step | MiB held between steps |", "| --- | --- | --- |"]
    labels = {"hand-written": "hand-written NumPy", "eager": "agnograd eager",
              "captured": "agnograd captured (staged replay)"}
    for impl, label in labels.items():
        out = subprocess.run([sys.executable, __file__, "_steady", impl], capture_output=True,
                             text=True, env=env)
        try:
            peak, held = (float(v) for v in out.stdout.strip().splitlines()[-1].split())
            rows.append(f"| {label} | {peak:.0f} | {held:.0f} |")
        except (ValueError, IndexError):
            err = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.stdout
            rows.append(f"| {label} | failed: {err} | |")
    return rows


def step_table(backend: str = "numpy") -> list[str]:
    rows = ["| implementation | extra peak MiB, one medium step at batch 4096 |", "| --- | --- |"]
    for impl in ("hand-written", "agnograd", "torch"):
        out = subprocess.run([sys.executable, __file__, "_child", impl, backend],
                             capture_output=True, text=True)
        value = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else "error"
        try:
            value = f"{float(value):.0f}"
        except ValueError:
            value = f"failed: {out.stderr.strip().splitlines()[-1] if out.stderr else value}"
        label = "PyTorch eager" if impl == "torch" else f"{impl} ({backend})"
        rows.append(f"| {label} | {value} |")
    return rows


def loop_table(steps: int = 1000) -> list[str]:
    from mlp_step import make_problem

    import agnograd as ag

    host = make_problem(32, [64, 64, 64, 10])
    rows = ["| step | resident MiB |", "| --- | --- |"]
    x = ag.tensor(host["x"])
    y = ag.tensor(host["y"])
    P = {k: ag.tensor(host[k], requires_grad=True) for k in ("W1", "b1", "W2", "b2", "W3", "b3")}
    start = _rss_mib()
    for i in range(steps + 1):
        h1 = ag.tanh(x @ P["W1"] + P["b1"])
        h2 = ag.tanh(h1 @ P["W2"] + P["b2"])
        logits = h2 @ P["W3"] + P["b3"]
        loss = -ag.mean(ag.sum(y * (logits - ag.logsumexp(logits, axis=1, keepdims=True)), axis=1))
        loss.backward()
        with ag.no_grad():
            for p in P.values():
                p -= 0.1 * p.grad
                p.grad = None
        if i % 100 == 0:
            rows.append(f"| {i} | {_rss_mib():.1f} |")
    rows.append(f"| growth over {steps} steps | {_rss_mib() - start:+.1f} MiB |")
    return rows


def main(argv: list[str]) -> int:
    if argv[:1] == ["_child"]:
        one_step(argv[1], argv[2])
        return 0
    if argv[:1] == ["_steady"]:
        steady_step(argv[1])
        return 0
    what = argv[0] if argv else "all"
    if what in ("all", "step"):
        print("\n".join(step_table(argv[1] if len(argv) > 1 else "numpy")))
    if what in ("all", "captured"):
        print()
        print("\n".join(captured_table()))
    if what in ("all", "loop"):
        print()
        print("\n".join(loop_table()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
