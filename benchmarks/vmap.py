"""``ag.vmap``: per-example gradients and Jacobians, batched against a Python loop and against
``torch.func`` on the CPU (issue 24).

1. **Per-example gradients of the digits MLP.** The network of ``agnograd train`` (64 -> 64 -> 64
   -> 10, tanh, ``nn.MLP``), a loss of *one* example written torch.func-style
   (``nn.functional_call`` of the model with a dict of parameters, softmax cross-entropy against
   the integer label), and its gradient for each of ``--examples`` (256) digits:

   - ``ag.vmap(ag.grad(loss), in_axes=(None, 0, 0))`` -- one batched call (target: >= 10x
     faster than the loop);
   - a Python loop of ``ag.grad(loss)`` over the examples;
   - ``torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0))`` on the same network
     (``torch.func.functional_call`` of a ``torch.nn`` MLP with the same weights), and a loop of
     ``torch.func.grad``, where PyTorch is installed.

   float32 and float64. Every implementation's gradients are checked against the agnograd loop
   before timing.
2. **Jacobians through vmap.** ``ag.jacfwd`` / ``ag.jacrev`` are one batched call, as JAX
   builds them: ``ag.vmap`` of one ``jvp`` over the identity's columns (forward mode), one
   backward walk with the rows as a batched cotangent (reverse mode); they are timed beside the
   same thing written by hand (``ag.vmap`` of ``ag.jvp``, of the pullback of ``ag.vjp``) and
   ``torch.func``. For ``x -> tanh(A x) * 2`` at R^10 -> R^5000 and
   R^50 -> R^500 (forward) and ``x -> tanh(B x) * 2`` at R^5000 -> R^10 and R^500 -> R^50
   (reverse), float64, against ``torch.func.jacfwd`` / ``jacrev`` (which are vmaps).

Both libraries run on the same number of threads: ``--threads N`` (default 1) is set for NumPy's
BLAS (``OPENBLAS_NUM_THREADS``/``OMP_NUM_THREADS``/``MKL_NUM_THREADS``, before NumPy is imported;
a value already in the environment wins) and passed to ``torch.set_num_threads``. Runs are
interleaved (A, B, A, B, ...) after a warm-up; the tables report medians.

    python benchmarks/vmap.py [--examples 256] [--repeats 7] [--threads 1]
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
from agnograd import nn  # noqa: E402
from agnograd.datasets import load_digits  # noqa: E402
from agnograd.nn import functional as F  # noqa: E402

SIZES = [64, 64, 64, 10]  # the network of `agnograd train` (hidden 64)


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        return None
    return torch


def _median_times(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds per function, runs interleaved after one warm-up call each."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


# ---------------------------------------------------------------------------------------------
# 1. Per-example gradients


def per_example_workload(examples: int, dtype: str, torch: Any = None
                         ) -> dict[str, Callable[[], list[np.ndarray]]]:
    """The implementations of part 1, each returning the per-example gradients as host arrays
    (one ``(examples, *shape)`` array per parameter, in ``nn.MLP``'s parameter order); checked
    against each other (the agnograd loop is the reference) before it returns."""
    adt = ag.float32 if dtype == "float32" else ag.float64
    X, y = load_digits(dtype=adt)
    X, y = X[:examples, ...], y[:examples]
    model = nn.MLP(SIZES, activation="tanh", seed=0)
    model.astype(adt)
    params = {k: p.detach() for k, p in model.named_parameters()}
    names = list(params)

    def loss(p: dict[str, ag.Tensor], x: ag.Tensor, t: ag.Tensor) -> ag.Tensor:
        return F.cross_entropy(nn.functional_call(model, p, x), t)

    grad = ag.grad(loss)
    batched = ag.vmap(grad, in_axes=(None, 0, 0))

    def ag_vmap() -> list[np.ndarray]:
        g = batched(params, X, y)
        return [g[k].numpy() for k in names]

    def ag_loop() -> list[np.ndarray]:
        gs = [grad(params, X[i, ...], y[i]) for i in range(examples)]
        return [np.stack([g[k].numpy() for g in gs]) for k in names]

    fns: dict[str, Callable[[], list[np.ndarray]]] = {"ag_vmap": ag_vmap, "ag_loop": ag_loop}
    if torch is not None:
        tdt = torch.float32 if dtype == "float32" else torch.float64
        layers: list[Any] = []
        for i in range(len(SIZES) - 1):
            layers.append(torch.nn.Linear(SIZES[i], SIZES[i + 1], dtype=tdt))
            if i < len(SIZES) - 2:
                layers.append(torch.nn.Tanh())
        tmodel = torch.nn.Sequential(*layers)
        tnames = [k for k, _ in tmodel.named_parameters()]  # the same layouts, (out, in)
        tparams = {tk: torch.tensor(params[k].numpy()) for tk, k in zip(tnames, names)}
        tX, ty = torch.tensor(X.numpy()), torch.tensor(y.numpy())

        def tloss(p: dict[str, Any], x: Any, t: Any) -> Any:
            return torch.nn.functional.cross_entropy(
                torch.func.functional_call(tmodel, p, (x,)), t)

        tgrad = torch.func.grad(tloss)
        tbatched = torch.func.vmap(tgrad, in_dims=(None, 0, 0))

        def _host(g: dict[str, Any]) -> list[np.ndarray]:
            return [g[tk].detach().numpy() for tk in tnames]

        def torch_vmap() -> list[np.ndarray]:
            return _host(tbatched(tparams, tX, ty))

        def torch_loop() -> list[np.ndarray]:
            gs = [_host(tgrad(tparams, tX[i], ty[i])) for i in range(examples)]
            return [np.stack(parts) for parts in zip(*gs)]

        fns["torch_vmap"] = torch_vmap
        fns["torch_loop"] = torch_loop
    rtol, atol = (2e-4, 1e-6) if dtype == "float32" else (1e-10, 1e-13)
    ref = ag_loop()
    for k, fn in fns.items():
        got = fn()
        for name, a, b in zip(names, got, ref):
            np.testing.assert_allclose(a, b, rtol=rtol, atol=atol,
                                       err_msg=f"{k} vs the agnograd loop, {name} ({dtype})")
    return fns


def part1(examples: int, repeats: int, torch: Any) -> None:
    print(f"\n1. Per-example gradients, digits MLP {'-'.join(map(str, SIZES))} (tanh), "
          f"{examples} examples, medians of {repeats}:")
    print("| dtype | ag.vmap(ag.grad) ms | loop of ag.grad ms | vmap speed-up | "
          "torch.func.vmap(grad) ms | ag / torch | loop of torch.func.grad ms |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for dtype in ("float32", "float64"):
        fns = per_example_workload(examples, dtype, torch)
        # the loops are long: fewer repeats for them
        t = _median_times({k: f for k, f in fns.items() if "loop" not in k}, repeats)
        t.update(_median_times({k: f for k, f in fns.items() if "loop" in k},
                               max(1, repeats // 3)))
        up = t["ag_loop"] / t["ag_vmap"]
        line = (f"| {dtype} | {t['ag_vmap'] * 1e3:.2f} | {t['ag_loop'] * 1e3:.1f} | {up:.1f}x "
                f"({'ok' if up >= 10 else 'under'} >= 10x) |")
        if "torch_vmap" in t:
            line += (f" {t['torch_vmap'] * 1e3:.2f} | {t['ag_vmap'] / t['torch_vmap']:.2f}x | "
                     f"{t['torch_loop'] * 1e3:.1f} |")
        else:
            line += " - | - | - |"
        print(line, flush=True)


# ---------------------------------------------------------------------------------------------
# 2. Jacobians through vmap


def jacobian_workload(n: int, m: int, mode: str, torch: Any = None
                      ) -> dict[str, Callable[[], np.ndarray]]:
    """The Jacobian of ``x -> tanh(A x) * 2`` (R^n -> R^m) by ``ag.jacfwd`` or ``ag.jacrev``
    (``mode``), by ``ag.vmap`` of ``ag.jvp`` or of the pullback of ``ag.vjp``, and by
    ``torch.func``; checked equal before it returns."""
    rng = np.random.default_rng(0)
    A = rng.standard_normal((m, n)) / np.sqrt(n)
    x = rng.standard_normal(n)

    def f(x: ag.Tensor) -> ag.Tensor:
        return ag.tanh(A @ x) * 2.0

    if mode == "fwd":
        eye = np.eye(n)

        def loop() -> np.ndarray:
            return np.asarray(ag.jacfwd(f)(x))

        def via_vmap() -> np.ndarray:
            return np.asarray(ag.vmap(lambda v: ag.jvp(f, (x,), (v,))[1], out_axes=1)(eye))
    else:
        eye = np.eye(m)

        def loop() -> np.ndarray:
            return np.asarray(ag.jacrev(f)(x))

        def via_vmap() -> np.ndarray:
            return np.asarray(ag.vmap(lambda u: ag.vjp(f, x)[1](u)[0])(eye))

    fns: dict[str, Callable[[], np.ndarray]] = {"loop": loop, "vmap": via_vmap}
    if torch is not None:
        At, xt = torch.tensor(A), torch.tensor(x)
        tj = torch.func.jacfwd if mode == "fwd" else torch.func.jacrev

        def with_torch() -> np.ndarray:
            return np.asarray(tj(lambda x: torch.tanh(At @ x) * 2.0)(xt).numpy())

        fns["torch"] = with_torch
    ref = loop()
    for k, fn in fns.items():
        np.testing.assert_allclose(fn(), ref, rtol=1e-10, atol=1e-12,
                                   err_msg=f"Jacobian {k}, R^{n} -> R^{m} ({mode})")
    return fns


JACOBIANS = [(10, 5000, "fwd"), (50, 500, "fwd"), (5000, 10, "rev"), (500, 50, "rev")]


def part2(repeats: int, torch: Any) -> None:
    print(f"\n2. Jacobians of x -> tanh(A x) * 2, float64, medians of {repeats}:")
    print("| R^n -> R^m | ag.jacfwd / ag.jacrev ms | by hand: ag.vmap of jvp / vjp ms | "
          "torch.func ms | ag / torch |")
    print("| --- | --- | --- | --- | --- |")
    for n, m, mode in JACOBIANS:
        t = _median_times(dict(jacobian_workload(n, m, mode, torch)), repeats)
        what = "ag.jacfwd" if mode == "fwd" else "ag.jacrev"
        line = (f"| R^{n} -> R^{m} ({mode}) | {t['loop'] * 1e3:.2f} ({what}) | "
                f"{t['vmap'] * 1e3:.2f} |")
        if "torch" in t:
            line += f" {t['torch'] * 1e3:.2f} | {t['loop'] / t['torch']:.2f}x |"
        else:
            line += " - | - |"
        print(line, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1,
                        help="threads for NumPy's BLAS and for torch (default 1)")
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-torch", action="store_true", help="agnograd rows only")
    args = parser.parse_args(argv)
    torch = None if args.no_torch else _torch()
    if torch is not None:
        torch.set_num_threads(args.threads)
    print(f"{args.threads} thread(s) (OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}"
          + (f", torch {torch.get_num_threads()}, torch {torch.__version__})" if torch is not None
             else ", PyTorch not installed)"))
    part1(args.examples, args.repeats, torch)
    part2(args.repeats, torch)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
