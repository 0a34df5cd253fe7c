"""What the replay guards of ``ag.jit`` / ``ag.capture`` cost per call.

Before every replay a recording checks that the world it assumed still holds
(``agnograd/capture/guards.py``): each leaf's ``.grad`` being ``None`` or not, the global
modes, the world epoch, and the optimizer's groups. This times that check alone -- the
``find`` of the recording to replay, on a call where nothing changed -- for the small MLP step
of ``mlp_step.py`` (3 layers, 6 parameters, SGD with momentum) and for deeper MLPs, to show the
cost grows with the number of leaves; and for a call right after something outside the step
moved the world epoch (``requires_grad_``, a hook, a Module attribute assigned: the structural
half of the check walks the modules and the optimizer). ``zero_grad`` between calls does not
move it: whether each ``.grad`` is None is part of the quick check.

    python benchmarks/guards.py
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

import agnograd as ag  # noqa: E402
from agnograd import nn, optim  # noqa: E402
from agnograd.capture._state import touch  # noqa: E402
from agnograd.nn import functional as F  # noqa: E402


def _setup(layers: int, mode: str):
    sizes = [64] * layers + [10]
    model = nn.MLP(sizes, activation="tanh", seed=0)
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9, capturable=True)
    rng = np.random.default_rng(0)
    x = ag.tensor(rng.normal(size=(32, 64)).astype(np.float32))
    y = ag.tensor(rng.integers(0, 10, size=32))

    def step(x, y):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    if mode == "capture":
        f = ag.capture(step, x, y, warmup=1)
        recs = f._recs
    else:
        f = ag.jit(step)
        for _ in range(3):
            f(x, y)
        recs = next(iter(f._cache.values())).recordings
    for _ in range(3):
        f(x, y)
    assert recs.find()[0] is not None
    return recs, opt, len(model.parameters())


def _time(fn, n: int = 20000, rounds: int = 7) -> float:
    best = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(best)


def main() -> int:
    print("| compiled | layers | leaves | find(), nothing changed (us) | after the epoch moved (us) |")
    print("| --- | --- | --- | --- | --- |")
    for mode in ("capture", "jit"):
        for layers in (3, 12, 48):
            recs, opt, n = _setup(layers, mode)
            quiet = _time(recs.find)

            def moved(recs=recs) -> None:
                touch()  # what requires_grad_, a hook or a Module attribute does to the epoch
                recs.find()

            structural = _time(moved, n=2000)
            print(f"| {mode} | {layers} | {n} | {quiet:.2f} | {structural:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
