"""Dask scale-out: training steps whose working set is larger than a memory cap.

A 3-layer tanh network (64-64-64-1, float64, mean squared error, SGD) takes full-batch steps on
1,000,000 x 64 samples. Each variant runs in its own process under an address-space cap
(``resource.setrlimit(RLIMIT_AS)``, 3 GiB by default) and reports its peak resident set size and
its time per step:

* ``numpy``            -- plain agnograd on NumPy, the whole batch at once (expected to fail);
* ``numpy-uncapped``   -- the same without the cap, to show how much it needs;
* ``dask-lazy``        -- ``ag.tensor(dask_array)``: one lazy graph, ``ag.dask.loss_and_grads``
                          (one compute), ``ag.dask.persist`` after the step, threaded scheduler;
* ``dask-parallel``    -- ``ag.dask.value_and_grad``: the engine per row chunk on NumPy, threaded;
* ``dask-cluster``     -- ``ag.dask.value_and_grad`` on a 2-worker ``distributed.LocalCluster``
                          (thread workers, in this process, so its memory is counted).

The data are generated chunk by chunk from a seeded Dask generator (the NumPy variants compute
them into memory first, outside the timed steps); the Dask variants regenerate their chunks on
every step, which is counted in their step time.

    python benchmarks/dask_scale.py                       # all variants, 1M rows, 3 GiB cap
    python benchmarks/dask_scale.py --rows 4000000 --variants dask-parallel
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = ("numpy", "numpy-uncapped", "dask-lazy", "dask-parallel", "dask-cluster")
D, H = 64, 64


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _data(rows: int, chunk: int):  # type: ignore[no-untyped-def]
    """X (rows, 64) and y = sin(X v) (rows, 1) as lazy Dask arrays, one generator per chunk."""
    import dask.array as da
    import numpy as np

    X = da.random.default_rng(0).standard_normal((rows, D), chunks=(chunk, D))
    v = np.random.default_rng(1).standard_normal((D, 1)) / 8
    return X, da.sin(X @ v)


def _init() -> list:  # type: ignore[type-arg]
    import numpy as np

    rng = np.random.default_rng(2)
    shapes = [(D, H), (H,), (H, H), (H,), (H, 1), (1,)]
    return [rng.uniform(-1, 1, size=s) * (np.sqrt(6 / (s[0] + s[-1])) if len(s) == 2 else 0.0)
            for s in shapes]


def loss_fn(ps, X, y):  # type: ignore[no-untyped-def]
    """Mean squared error of the 3-layer tanh network (a mean over the samples)."""
    import agnograd as ag

    w1, b1, w2, b2, w3, b3 = ps
    h = ag.tanh(X @ w1 + b1)
    h = ag.tanh(h @ w2 + b2)
    return ag.mean((h @ w3 + b3 - y) ** 2)


def child(variant: str, rows: int, chunk: int, steps: int, cap_gib: float) -> dict:  # type: ignore[type-arg]
    if variant != "numpy-uncapped":
        cap = int(cap_gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    import agnograd as ag

    X, y = _data(rows, chunk)
    host = _init()
    times: list[float] = []
    losses: list[float] = []
    client = None
    if variant.startswith("numpy"):
        Xh, yh = ag.tensor(X.compute()), ag.tensor(y.compute())  # into memory, not timed
        ps = [ag.tensor(p, requires_grad=True) for p in host]
        opt = ag.optim.SGD(ps, lr=0.1)
        base = _peak_mib()
        for _ in range(steps):
            t0 = time.perf_counter()
            opt.zero_grad()
            loss = loss_fn(ps, Xh, yh)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            del loss
            times.append(time.perf_counter() - t0)
        return {"peak_mib": _peak_mib(), "data_peak_mib": base, "step_s": times, "loss": losses}
    if variant == "dask-lazy":
        import dask.array as da

        ps = [ag.tensor(da.from_array(p), requires_grad=True) for p in host]
        opt = ag.optim.SGD(ps, lr=0.1)
        Xt, yt = ag.tensor(X), ag.tensor(y)
        tasks = 0
        for _ in range(steps):
            t0 = time.perf_counter()
            opt.zero_grad()
            loss = loss_fn(ps, Xt, yt)
            tasks = ag.dask.task_count(loss)
            value, _ = ag.dask.loss_and_grads(loss, ps, scheduler="threads")
            opt.step()
            ag.dask.persist(ps, opt, scheduler="threads")
            losses.append(value.item())
            times.append(time.perf_counter() - t0)
        return {"peak_mib": _peak_mib(), "step_s": times, "loss": losses, "forward_tasks": tasks}
    if variant == "dask-cluster":
        import distributed

        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                           dashboard_address=None, memory_limit=0)
        client = distributed.Client(cluster)
    ps = [ag.tensor(p, requires_grad=True) for p in host]
    opt = ag.optim.SGD(ps, lr=0.1)
    kwargs = {} if client is not None else {"scheduler": "threads"}
    tasks = ag.dask.task_count(ag.dask.value_and_grad(loss_fn, host, X, y, compute=False))
    for _ in range(steps):
        t0 = time.perf_counter()
        value, grads = ag.dask.value_and_grad(loss_fn, [p.data for p in ps], X, y, **kwargs)
        for p, g in zip(ps, grads):
            p.grad = g
        opt.step()
        losses.append(value.item())
        times.append(time.perf_counter() - t0)
    if client is not None:
        client.close()
        cluster.close()
    return {"peak_mib": _peak_mib(), "step_s": times, "loss": losses, "tasks": tasks}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--chunk", type=int, default=50_000, help="rows per Dask chunk")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--cap-gib", type=float, default=3.0)
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        try:
            out = child(a.child, a.rows, a.chunk, a.steps, a.cap_gib)
        except MemoryError as exc:
            out = {"error": f"MemoryError {exc}".strip(), "peak_mib": _peak_mib()}
        print("RESULT " + json.dumps(out))
        return
    print(f"{a.rows:,} x {D} float64 ({a.rows * D * 8 / 2**30:.2f} GiB of X), 3-layer tanh MLP "
          f"{D}-{H}-{H}-1, full-batch SGD, {a.steps} steps, Dask chunks of {a.chunk:,} rows, "
          f"cap {a.cap_gib:g} GiB (RLIMIT_AS)")
    print(f"{'variant':16} {'result':>10} {'peak RSS':>10} {'s/step (each step)':>28}  loss")
    for v in a.variants:
        cmd = [sys.executable, __file__, "--child", v, "--rows", str(a.rows), "--chunk",
               str(a.chunk), "--steps", str(a.steps), "--cap-gib", str(a.cap_gib)]
        p = subprocess.run(cmd, capture_output=True, text=True)
        lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
        if not lines:
            tail = (p.stderr.strip().splitlines() or ["(no output)"])[-1]
            print(f"{v:16} {'FAILED':>10} {'':>10} {'':>28}  rc={p.returncode}: {tail[:90]}")
            continue
        r = json.loads(lines[-1][7:])
        peak = f"{r['peak_mib'] / 1024:.2f} GiB"
        if "error" in r:
            print(f"{v:16} {'FAILED':>10} {peak:>10} {'':>28}  {r['error'][:90]}")
            continue
        steps = " ".join(f"{t:.2f}" for t in r["step_s"])
        extra = ""
        if "tasks" in r:
            extra = f"  ({r['tasks']} tasks)"
        if "forward_tasks" in r:
            extra = f"  ({r['forward_tasks']} tasks in the forward graph)"
        print(f"{v:16} {'ok':>10} {peak:>10} {steps:>28}  {r['loss'][-1]:.6f}{extra}")


if __name__ == "__main__":
    main()
