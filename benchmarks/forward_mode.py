"""Forward mode: what ``ag.jvp`` costs, and ``ag.jacobian`` in both modes against torch.func.

1. ``ag.jvp`` on the 2,000-op elementwise chain of ``op_overhead.py`` (multiply, add, sin on a
   shape-(4,) array) against the plain forward pass (no graph) -- the target is <= 3x -- and
   against the double-VJP construction it replaces (``agnograd.func._jvp_double_vjp``).
2. ``ag.jacobian`` of ``x -> tanh(A x) * 2`` for R^10 -> R^5000 (forward mode picked) and of
   ``x -> tanh(B x) * 2`` for R^5000 -> R^10 (reverse mode picked), float64 on NumPy, against
   ``torch.func.jacfwd`` / ``torch.func.jacrev`` on the CPU where PyTorch is installed (target:
   within 2x).

3. ``jvp`` of ``jvp`` (forward-over-forward) on the chain, against the inner ``jvp`` by two
   VJPs (what a nested ``jvp`` ran before forward traces nested) and ``torch.func``.

Runs are interleaved and the table reports medians.

    python benchmarks/forward_mode.py [--repeats 9]
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
from agnograd.func import _jvp_double_vjp  # noqa: E402

N = 2000


def chain(y: ag.Tensor) -> ag.Tensor:
    for i in range(N):
        k = i % 3
        y = y * 1.0001 if k == 0 else (y + 0.001 if k == 1 else ag.sin(y))
    return y


BEST: dict[str, float] = {}  # the fastest run of each, printed beside the medians (a shared
# machine's load inflates medians unevenly)


def _median_times(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():  # warm up
        fn()
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    BEST.update({k: min(v) for k, v in times.items()})
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=9)
    args = p.parse_args()

    x = np.ones(4)
    v = np.ones(4)
    xt = ag.tensor(x)
    t = _median_times({
        "forward": lambda: chain(xt),
        "jvp": lambda: ag.jvp(chain, (x,), (v,)),
        "double_vjp": lambda: _jvp_double_vjp(chain, (x,), (v,)),
    }, args.repeats)
    print(f"2,000-op elementwise chain (shape (4,), NumPy), medians of {args.repeats}:")
    print(f"  plain forward        {t['forward'] * 1e3:8.2f} ms")
    print(f"  ag.jvp (forward mode){t['jvp'] * 1e3:8.2f} ms   {t['jvp'] / t['forward']:.2f}x the "
          "forward (target <= 3x)")
    print(f"  double-VJP jvp       {t['double_vjp'] * 1e3:8.2f} ms   "
          f"{t['double_vjp'] / t['forward']:.2f}x the forward; ag.jvp is "
          f"{t['double_vjp'] / t['jvp']:.1f}x faster")
    print(f"  best runs: forward {BEST['forward'] * 1e3:.2f} ms, jvp {BEST['jvp'] * 1e3:.2f} ms "
          f"({BEST['jvp'] / BEST['forward']:.2f}x), double-VJP {BEST['double_vjp'] * 1e3:.2f} ms "
          f"({BEST['double_vjp'] / BEST['forward']:.2f}x)")

    rng = np.random.default_rng(0)
    A = rng.standard_normal((5000, 10)) / 3
    B = rng.standard_normal((10, 5000)) / 70
    x10 = rng.standard_normal(10)
    x5000 = rng.standard_normal(5000)
    tall = lambda x: ag.tanh(A @ x) * 2.0  # noqa: E731
    wide = lambda x: ag.tanh(B @ x) * 2.0  # noqa: E731
    fns: dict[str, Callable[[], object]] = {
        "ag_tall": lambda: ag.jacobian(tall)(x10),
        "ag_wide": lambda: ag.jacobian(wide)(x5000),
        "ag_tall_rev": lambda: ag.jacrev(tall)(x10),
        "ag_wide_fwd": lambda: ag.jacfwd(wide)(x5000),
    }
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        At, Bt = torch.tensor(A), torch.tensor(B)
        x10t, x5000t = torch.tensor(x10), torch.tensor(x5000)
        fns["torch_tall"] = lambda: torch.func.jacfwd(lambda x: torch.tanh(At @ x) * 2.0)(x10t)
        fns["torch_wide"] = lambda: torch.func.jacrev(lambda x: torch.tanh(Bt @ x) * 2.0)(x5000t)
        np.testing.assert_allclose(ag.jacobian(tall)(x10), fns["torch_tall"]().numpy(),  # type: ignore[attr-defined]
                                   rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(ag.jacobian(wide)(x5000), fns["torch_wide"]().numpy(),  # type: ignore[attr-defined]
                                   rtol=1e-10, atol=1e-12)
    reps = max(3, args.repeats // 2)
    fns_small = {k: f for k, f in fns.items() if k != "ag_wide_fwd"}
    t = _median_times(fns_small, reps)
    t.update(_median_times({"ag_wide_fwd": fns["ag_wide_fwd"]}, 1))
    print(f"\nag.jacobian (float64, NumPy), medians of {reps}:")
    line = f"  R^10 -> R^5000 (forward picked)  {t['ag_tall'] * 1e3:8.2f} ms"
    if "torch_tall" in t:
        line += (f"   torch.func.jacfwd {t['torch_tall'] * 1e3:8.2f} ms   "
                 f"ratio {t['ag_tall'] / t['torch_tall']:.2f}x (target <= 2x)")
    print(line + f"   (jacrev would take {t['ag_tall_rev'] * 1e3:.1f} ms)")
    line = f"  R^5000 -> R^10 (reverse picked)  {t['ag_wide'] * 1e3:8.2f} ms"
    if "torch_wide" in t:
        line += (f"   torch.func.jacrev {t['torch_wide'] * 1e3:8.2f} ms   "
                 f"ratio {t['ag_wide'] / t['torch_wide']:.2f}x (target <= 2x)")
    print(line + f"   (jacfwd would take {t['ag_wide_fwd'] * 1e3:.1f} ms)")

    # 3. forward-over-forward: jvp of jvp on the chain, against the inner jvp by two VJPs (what
    # a jvp inside a jvp used to run) and torch.func.jvp of jvp
    def nested() -> object:
        return ag.jvp(lambda x: ag.jvp(chain, (x,), (v,))[1], (x,), (v,))

    def nested_double() -> object:
        return ag.jvp(lambda x: _jvp_double_vjp(chain, (x,), (v,))[1], (x,), (v,))

    fns3: dict[str, Callable[[], object]] = {"nested": nested, "nested_double": nested_double}
    if torch is not None:
        def tchain(y: object) -> object:
            for i in range(N):
                k = i % 3
                y = y * 1.0001 if k == 0 else (y + 0.001 if k == 1 else torch.sin(y))  # type: ignore[operator]
            return y

        xt4, vt4 = torch.tensor(x), torch.tensor(v)
        fns3["torch"] = lambda: torch.func.jvp(
            lambda x: torch.func.jvp(tchain, (x,), (vt4,))[1], (xt4,), (vt4,))
    np.testing.assert_allclose(_np_of(nested()[1]), _np_of(nested_double()[1]), rtol=1e-10)
    t = _median_times(fns3, reps)
    line = (f"\njvp of jvp on the 2,000-op chain, medians of {reps}: forward-over-forward "
            f"{t['nested'] * 1e3:.2f} ms; inner jvp by two VJPs {t['nested_double'] * 1e3:.2f} ms "
            f"({t['nested_double'] / t['nested']:.1f}x slower)")
    if "torch" in t:
        line += (f"; torch.func.jvp of jvp {t['torch'] * 1e3:.2f} ms "
                 f"(ratio {t['nested'] / t['torch']:.2f}x)")
    print(line)


def _np_of(a: object) -> object:
    return a.numpy() if isinstance(a, ag.Tensor) else a


if __name__ == "__main__":
    main()
