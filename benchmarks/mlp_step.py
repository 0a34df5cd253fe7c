"""One training step of the 3-layer tanh network: agnograd against hand-written backprop.

    x1 = tanh(x W1 + b1),  x2 = tanh(x1 W2 + b2),  x3 = x2 W3 + b3,  L = mean CE(softmax(x3))

Forward + backward, float32, gradients for all six parameters. Implementations run side by side
in one process, interleaved (A, B, A, B, ...) after a warm-up, and the table reports medians and
the ratio to the hand-written floor on the same backend. Every implementation's gradients are
checked against the hand-written ones before timing.

    python benchmarks/mlp_step.py                    # NumPy, small and medium
    python benchmarks/mlp_step.py --backend cupy     # CuPy, small, medium and large

A second group of rows per configuration times the step *with an SGD update*: hand-written (its
floor), agnograd eager, and agnograd replaying one ``ag.capture`` recording (a CUDA graph on
CuPy, plus a row for the staged replay with ``graph=False``; the staged replay elsewhere), and
the captured/eager ratios (``--no-captured`` omits them). The captured rows' loss is
``F.cross_entropy`` on integer labels (with ignore_index and the range check, computed on the
device: a replay reads nothing back); the hand-written floor uses the one-hot rows precomputed.

    python benchmarks/mlp_step.py --counts           # calls per captured step, NumPy and PyTorch

``--counts`` prints the backend calls of the captured step (the staged program, as a device runs
it: no host reads) against the same step written by hand with the Array API -- integer labels,
the loss value computed, the SGD update -- counted the same way (namespace calls, operators,
``.T``), on NumPy and on PyTorch; and the eager cost of the label handling.
"""

from __future__ import annotations

import argparse
import importlib
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402  (benchmarks are host-side scripts, outside the package)

import agnograd as ag  # noqa: E402

CONFIGS = {
    "small": (32, [64, 64, 64, 10]),
    "medium": (256, [784, 1024, 1024, 10]),
    "large": (4096, [4096, 4096, 4096, 1000]),
}


def make_problem(batch: int, sizes: list[int], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    p: dict[str, np.ndarray] = {"x": rng.normal(size=(batch, sizes[0])).astype(np.float32)}
    labels = rng.integers(0, sizes[-1], size=batch)
    p["y"] = np.eye(sizes[-1], dtype=np.float32)[labels]
    p["labels"] = labels.astype(np.int64)
    for i in range(3):
        fan_in = sizes[i]
        p[f"W{i + 1}"] = (rng.normal(size=(sizes[i], sizes[i + 1])) / np.sqrt(fan_in)).astype(np.float32)
        p[f"b{i + 1}"] = np.zeros(sizes[i + 1], dtype=np.float32)
    return p


PARAMS = ("W1", "b1", "W2", "b2", "W3", "b3")


# ---------------------------------------------------------------------------------------------
# Implementations: each returns step() -> dict of gradients (arrays of the backend)


def hand_written(xp: Any, d: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    """Backprop by hand with the backend's own namespace: the floor."""
    x, y = d["x"], d["y"]
    W1, b1, W2, b2, W3, b3 = (d[k] for k in PARAMS)
    n = x.shape[0]

    def step() -> dict[str, Any]:
        x1 = xp.tanh(x @ W1 + b1)
        x2 = xp.tanh(x1 @ W2 + b2)
        x3 = x2 @ W3 + b3
        z = x3 - xp.max(x3, axis=1, keepdims=True)
        e = xp.exp(z)
        s = xp.sum(e, axis=1, keepdims=True)
        # loss = -mean(sum(y * (z - log s))); its gradient with respect to x3:
        d3 = (e / s - y) / n
        g = {"W3": x2.T @ d3, "b3": xp.sum(d3, axis=0)}
        d2 = (d3 @ W3.T) * (1 - x2 * x2)
        g["W2"], g["b2"] = x1.T @ d2, xp.sum(d2, axis=0)
        d1 = (d2 @ W2.T) * (1 - x1 * x1)
        g["W1"], g["b1"] = x.T @ d1, xp.sum(d1, axis=0)
        return g

    return step


def hand_written_labels(xp: Any, d: dict[str, Any], lr: float = 0.0) -> Callable[[], Any]:
    """The captured step by hand, as the library's step runs it: integer labels, the loss value
    computed and returned, backprop, an SGD update in place. Written with the Array API only,
    so the same code runs (and is counted, see :func:`count_calls`) on every backend."""
    x, labels = d["x"], d["labels"]
    W1, b1, W2, b2, W3, b3 = (d[k] for k in PARAMS)
    n, c = x.shape[0], W3.shape[1]
    classes = xp.arange(c, dtype=labels.dtype)

    def step() -> Any:
        x1 = xp.tanh(x @ W1 + b1)
        x2 = xp.tanh(x1 @ W2 + b2)
        x3 = x2 @ W3 + b3
        z = x3 - xp.max(x3, axis=1, keepdims=True)
        e = xp.exp(z)
        s = xp.sum(e, axis=1, keepdims=True)
        y = xp.astype(xp.reshape(labels, (n, 1)) == classes, x3.dtype)
        loss = xp.sum(y * (xp.log(s) - z)) / n
        d3 = (e / s - y) / n
        g = {"W3": x2.T @ d3, "b3": xp.sum(d3, axis=0)}
        d2 = (d3 @ W3.T) * (1 - x2 * x2)
        g["W2"], g["b2"] = x1.T @ d2, xp.sum(d2, axis=0)
        d1 = (d2 @ W2.T) * (1 - x1 * x1)
        g["W1"], g["b1"] = x.T @ d1, xp.sum(d1, axis=0)
        for k, p in zip(PARAMS, (W1, b1, W2, b2, W3, b3)):
            p -= lr * g[k]
        return loss

    return step


class _Counted:
    """An array that counts the backend calls made on it: operators, ``.T`` and namespace
    functions (through :class:`_CountingNamespace`) -- what a staged replay's ``calls`` counts."""

    __slots__ = ("v",)
    count = 0

    def __init__(self, v: Any) -> None:
        self.v = v

    @property
    def shape(self) -> Any:
        return self.v.shape

    @property
    def dtype(self) -> Any:
        return self.v.dtype

    @property
    def T(self) -> _Counted:
        _Counted.count += 1
        return _Counted(self.v.T)


def _unwrap(a: Any) -> Any:
    if isinstance(a, _Counted):
        return a.v
    if isinstance(a, (tuple, list)):
        return type(a)(_unwrap(e) for e in a)
    return a


def _counted_op(name: str) -> Callable[..., Any]:
    import operator

    fn = getattr(operator, name)

    def method(*args: Any) -> Any:
        _Counted.count += 1
        out = fn(*_unwrap(args))
        if name.startswith("i"):  # in place: the first operand itself
            return args[0]
        return _Counted(out)

    return method


for _name in ("add", "sub", "mul", "truediv", "matmul", "eq", "neg"):
    setattr(_Counted, f"__{_name}__", _counted_op(_name))
for _name in ("add", "sub", "mul", "truediv", "matmul"):
    setattr(_Counted, f"__r{_name}__", (lambda f: lambda self, o: f(o, self))(_counted_op(_name)))
for _name in ("isub", "iadd"):
    setattr(_Counted, f"__{_name}__", _counted_op(_name))


class _CountingNamespace:
    def __init__(self, xp: Any) -> None:
        self._xp = xp

    def __getattr__(self, name: str) -> Any:
        v = getattr(self._xp, name)
        if not callable(v) or isinstance(v, type):
            return v

        def call(*args: Any, **kwargs: Any) -> Any:
            _Counted.count += 1
            out = v(*_unwrap(args), **{k: _unwrap(a) for k, a in kwargs.items()})
            return _Counted(out) if hasattr(out, "shape") else out

        return call


def count_calls(xp: Any, d: dict[str, Any]) -> int:
    """The backend calls one :func:`hand_written_labels` step makes (its constants made once,
    outside the step, as a replay folds them)."""
    wrapped = {k: _Counted(v) for k, v in d.items()}
    step = hand_written_labels(_CountingNamespace(xp), wrapped)
    _Counted.count = 0
    step()
    return _Counted.count


def agnograd_step(backend: str, d: dict[str, Any], fused: bool) -> Callable[[], dict[str, Any]]:
    """agnograd's step. ``fused``: the loss is the library's ``nn.functional.cross_entropy``, one
    node with the fused gradient softmax(x3) - y (as the hand-written step computes it); else
    the loss is built from max, exp, log and sum, the max treated as a constant, as the peers'
    steps are written."""
    from agnograd.nn import functional as F

    x = ag.tensor(d["x"], backend=backend)
    y = ag.tensor(d["y"], backend=backend)
    P = {k: ag.tensor(d[k], backend=backend, requires_grad=True) for k in PARAMS}

    def step() -> dict[str, Any]:
        for t in P.values():
            t.grad = None
        x1 = ag.tanh(x @ P["W1"] + P["b1"])
        x2 = ag.tanh(x1 @ P["W2"] + P["b2"])
        x3 = x2 @ P["W3"] + P["b3"]
        if fused:
            loss = F.cross_entropy(x3, y)
        else:
            z = x3 - ag.max(x3, axis=1, keepdims=True).detach()
            loss = -ag.mean(ag.sum(y * (z - ag.log(ag.sum(ag.exp(z), axis=1, keepdims=True))),
                                   axis=1))
        loss.backward()
        return {k: t.grad.data for k, t in P.items()}

    return step


def torch_step(d: dict[str, np.ndarray], device: str) -> Callable[[], dict[str, Any]] | None:
    try:
        import torch
    except ImportError:
        return None
    if device == "cuda" and not torch.cuda.is_available():
        return None
    x = torch.tensor(d["x"], device=device)
    y = torch.tensor(d["y"], device=device)
    P = {k: torch.tensor(d[k], device=device, requires_grad=True) for k in PARAMS}

    def step() -> dict[str, Any]:
        for t in P.values():
            t.grad = None
        x1 = torch.tanh(x @ P["W1"] + P["b1"])
        x2 = torch.tanh(x1 @ P["W2"] + P["b2"])
        x3 = x2 @ P["W3"] + P["b3"]
        z = x3 - x3.max(dim=1, keepdim=True).values.detach()
        loss = -(y * (z - torch.log(torch.exp(z).sum(dim=1, keepdim=True)))).sum(dim=1).mean()
        loss.backward()
        return {k: t.grad for k, t in P.items()}

    return step


def autograd_step(d: dict[str, np.ndarray]) -> Callable[[], dict[str, Any]] | None:
    try:
        import autograd
        import autograd.numpy as anp
    except ImportError:
        return None
    x, y = d["x"], d["y"]

    def loss(p: dict[str, Any]) -> Any:
        x1 = anp.tanh(x @ p["W1"] + p["b1"])
        x2 = anp.tanh(x1 @ p["W2"] + p["b2"])
        x3 = x2 @ p["W3"] + p["b3"]
        z = x3 - anp.max(x3, axis=1, keepdims=True)
        return -anp.mean(anp.sum(y * (z - anp.log(anp.sum(anp.exp(z), axis=1, keepdims=True))), axis=1))

    g = autograd.grad(loss)
    P = {k: d[k] for k in PARAMS}
    return lambda: g(P)


def jax_steps(d: dict[str, np.ndarray]) -> dict[str, Callable[[], dict[str, Any]]]:
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return {}
    x, y = jnp.asarray(d["x"]), jnp.asarray(d["y"])

    def loss(p: dict[str, Any]) -> Any:
        x1 = jnp.tanh(x @ p["W1"] + p["b1"])
        x2 = jnp.tanh(x1 @ p["W2"] + p["b2"])
        x3 = x2 @ p["W3"] + p["b3"]
        z = x3 - jax.lax.stop_gradient(jnp.max(x3, axis=1, keepdims=True))
        return -jnp.mean(jnp.sum(y * (z - jnp.log(jnp.sum(jnp.exp(z), axis=1, keepdims=True))), axis=1))

    P = {k: jnp.asarray(d[k]) for k in PARAMS}
    g, gj = jax.grad(loss), jax.jit(jax.grad(loss))

    def block(f: Callable[[Any], Any]) -> Callable[[], Any]:
        return lambda: jax.block_until_ready(f(P))

    return {"JAX grad": block(g), "JAX jit(grad)": block(gj)}


# ---------------------------------------------------------------------------------------------


def to_host(a: Any) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    elif hasattr(a, "get"):
        a = a.get()
    return np.asarray(a)


def check(name: str, got: dict[str, Any], ref: dict[str, Any]) -> None:
    for k in PARAMS:
        a, b = to_host(got[k]), to_host(ref[k])
        scale = np.max(np.abs(b)) + 1e-12
        err = np.max(np.abs(a - b)) / scale
        if not err < 2e-4:
            raise SystemExit(f"{name}: gradient {k} differs from hand-written backprop by {err:.2e}")


def run(config: str, backend: str, rounds: int, min_time: float) -> list[tuple[str, float]]:
    batch, sizes = CONFIGS[config]
    host = make_problem(batch, sizes)
    b = ag.get_backend(backend)
    dev = {k: b.asarray(v) for k, v in host.items()}
    sync: Callable[[], None] = lambda: None
    if backend == "cupy":
        import cupy

        sync = cupy.cuda.Device().synchronize
    impls: dict[str, Callable[[], Any]] = {
        f"hand-written {backend}": hand_written(b.xp, dev),
        "agnograd (loss from primitives)": agnograd_step(backend, dev, fused=False),
        "agnograd (fused cross_entropy)": agnograd_step(backend, dev, fused=True),
    }
    t = torch_step(host, "cuda" if backend == "cupy" else "cpu")
    if t is not None:
        impls["PyTorch eager"] = t
    if backend == "numpy":
        a = autograd_step(host)
        if a is not None:
            impls["HIPS autograd"] = a
        impls.update(jax_steps(host))
    ref = impls[f"hand-written {backend}"]()
    for name, f in impls.items():
        check(name, f(), ref)
    return _timed(impls, sync, rounds, min_time)


# ---------------------------------------------------------------------------------------------
# Captured rows: the whole step with an SGD update, eager against ag.capture's replay


def _timed(impls: dict[str, Callable[[], Any]], sync: Callable[[], None], rounds: int,
           min_time: float) -> list[tuple[str, float]]:
    """Medians of interleaved samples: after a warm-up, a number of steps per sample chosen so
    one sample takes ~min_time, and each round times every implementation in turn."""
    per = {}
    for name, f in impls.items():
        for _ in range(3):
            f()
        sync()
        t0 = time.perf_counter()
        f()
        sync()
        per[name] = max(1, int(min_time / max(time.perf_counter() - t0, 1e-7)))
    samples: dict[str, list[float]] = {name: [] for name in impls}
    for _ in range(rounds):
        for name, f in impls.items():
            n = per[name]
            sync()
            t0 = time.perf_counter()
            for _ in range(n):
                f()
            sync()
            samples[name].append((time.perf_counter() - t0) / n)
    return [(name, statistics.median(v)) for name, v in samples.items()]


def captured_rows(config: str, backend: str, rounds: int, min_time: float) -> list[tuple[str, float]]:
    """The step with an SGD update (lr 0, so the parameters stay put and every implementation's
    gradients can be checked against hand-written backprop): hand-written + update (the floor
    of these rows), agnograd eager, and agnograd replaying one ``ag.capture`` recording -- a CUDA
    graph on CuPy, the eager fallback (same semantics, no graph) on the other backends."""
    from agnograd import optim
    from agnograd.nn import functional as F

    batch, sizes = CONFIGS[config]
    host = make_problem(batch, sizes)
    b = ag.get_backend(backend)
    sync: Callable[[], None] = lambda: None
    if backend == "cupy":
        import cupy

        sync = cupy.cuda.Device().synchronize
    floor_data = {k: b.asarray(v) for k, v in host.items()}
    hand = hand_written(b.xp, floor_data)

    def hand_sgd() -> dict[str, Any]:
        g = hand()
        for k in PARAMS:
            floor_data[k] -= 0.0 * g[k]  # in place, as the optimizers update
        return g

    def make(capturable: bool) -> tuple[Callable[..., Any], dict[str, ag.Tensor], ag.Tensor, ag.Tensor]:
        x = ag.tensor(b.asarray(host["x"]), backend=backend)
        y = ag.tensor(b.asarray(host["labels"]), backend=backend)
        P = {k: ag.tensor(b.asarray(host[k]), backend=backend, requires_grad=True) for k in PARAMS}
        opt = optim.SGD(list(P.values()), lr=0.0, capturable=capturable)

        def step(x: ag.Tensor, y: ag.Tensor) -> ag.Tensor:
            opt.zero_grad()
            x1 = ag.tanh(x @ P["W1"] + P["b1"])
            x2 = ag.tanh(x1 @ P["W2"] + P["b2"])
            loss = F.cross_entropy(x2 @ P["W3"] + P["b3"], y)  # the library's fused loss
            loss.backward()
            opt.step()
            return loss

        return step, P, x, y

    step_e, P_e, x_e, y_e = make(capturable=False)
    step_c, P_c, x_c, y_c = make(capturable=True)
    captured = ag.capture(step_c, x_c, y_c)
    captured.check(x_c, y_c)  # one replay against an eager run, float tolerances
    kinds = {"cuda-graph": "CUDA graph", "staged": "staged"}
    kind = kinds.get(captured.replay, "eager fallback")
    # Where the default replay is a CUDA graph (CuPy), also time the staged replay (graph=False).
    staged = None
    if captured.replay == "cuda-graph":
        step_s, P_s, x_s, y_s = make(capturable=True)
        staged = ag.capture(step_s, x_s, y_s, graph=False)
        staged.check(x_s, y_s)
    for c in (captured, staged):
        if c is not None and c.program is not None:
            print(f"{config}: staged recording of {c.program.calls} calls made in "
                  f"{c.record_seconds * 1e3:.1f} ms (the traced step, passes and compile)")

    def eager() -> dict[str, Any]:
        step_e(x_e, y_e)
        return {k: t.grad.data for k, t in P_e.items()}

    def replay() -> dict[str, Any]:
        captured(x_c, y_c)
        return {k: t.grad.data for k, t in P_c.items()}

    impls: dict[str, Callable[[], Any]] = {
        f"hand-written {backend} + SGD update": hand_sgd,
        "agnograd eager + SGD update": eager,
        f"agnograd captured ({kind}) + SGD update": replay,
    }
    if staged is not None:
        def replay_staged() -> dict[str, Any]:
            staged(x_s, y_s)
            return {k: t.grad.data for k, t in P_s.items()}

        impls["agnograd captured (staged, graph=False) + SGD update"] = replay_staged
    ref = hand_sgd()
    for name, f in impls.items():
        check(name, f(), ref)
    return _timed(impls, sync, rounds, min_time)


def step_calls(config: str, backend: str, target: str = "labels") -> int:
    """The backend calls of the captured step (the staged program: no host read is allowed, as
    on a device), its loss ``F.cross_entropy`` on integer labels (``target="labels"``) or on
    one-hot probabilities (``"probabilities"``)."""
    from agnograd import optim
    from agnograd.nn import functional as F

    batch, sizes = CONFIGS[config]
    host = make_problem(batch, sizes)
    b = ag.get_backend(backend)
    x = ag.tensor(b.asarray(host["x"]), backend=backend)
    y = ag.tensor(b.asarray(host["labels" if target == "labels" else "y"]), backend=backend)
    P = {k: ag.tensor(b.asarray(host[k]), backend=backend, requires_grad=True) for k in PARAMS}
    opt = optim.SGD(list(P.values()), lr=0.0, capturable=True)

    def step(x: ag.Tensor, y: ag.Tensor) -> ag.Tensor:
        opt.zero_grad()
        x1 = ag.tanh(x @ P["W1"] + P["b1"])
        x2 = ag.tanh(x1 @ P["W2"] + P["b2"])
        loss = F.cross_entropy(x2 @ P["W3"] + P["b3"], y)
        loss.backward()
        opt.step()
        return loss

    captured = ag.capture(step, x, y, replay="staged")
    assert captured.program is not None
    return int(captured.program.calls)


def call_count_rows(config: str, backends: list[str]) -> list[str]:
    """Markdown rows: the captured step's calls against the same step by hand
    (:func:`hand_written_labels`: integer labels, the loss computed, SGD), per backend."""
    rows = []
    for backend in backends:
        try:
            b = ag.get_backend(backend)
        except Exception:
            continue
        host = make_problem(*CONFIGS[config])
        hand = count_calls(b.xp, {k: b.asarray(v) for k, v in host.items()})
        ours = step_calls(config, backend)
        probs = step_calls(config, backend, "probabilities")
        rows.append(f"| {config} | {backend} | {ours} | {probs} | {hand} | {ours / hand:.2f} |")
    return rows


def label_handling_us(rounds: int = 7, n: int = 300) -> tuple[float, float]:
    """Eager NumPy, forward and backward of ``F.cross_entropy`` on the small config's last layer
    ``(32, 10)``: the median microseconds on integer labels (checked by one host read) minus on
    the same targets as one-hot probabilities (no labels to handle), and the microseconds of
    the label node against the fused node on probabilities. Interleaved, median of rounds."""
    from agnograd.nn import functional as F

    host = make_problem(*CONFIGS["small"])
    rng = np.random.default_rng(1)
    z = ag.tensor(rng.normal(size=(32, 10)).astype(np.float32), requires_grad=True)
    labels = ag.tensor(host["labels"])
    probs = ag.tensor(host["y"])

    def run(t: ag.Tensor) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            z.grad = None
            F.cross_entropy(z, t).backward()
        return (time.perf_counter() - t0) / n * 1e6

    a, b = [], []
    for _ in range(rounds):
        a.append(run(labels))
        b.append(run(probs))
    return statistics.median(a), statistics.median(b)


def blas_info() -> str:
    try:
        from threadpoolctl import threadpool_info

        libs = [f"{i['internal_api']} {i.get('version')} ({i['num_threads']} threads)"
                for i in threadpool_info() if i["user_api"] == "blas"]
        return ", ".join(libs) or "unknown"
    except ImportError:
        cfg = getattr(np, "show_config", None)
        return "threadpoolctl not installed" if cfg else "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="numpy", choices=["numpy", "cupy", "torch"])
    parser.add_argument("--configs", default=None, help="comma-separated: small,medium,large")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--min-time", type=float, default=0.02, help="seconds per timing sample")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table here")
    parser.add_argument("--no-captured", action="store_true",
                        help="leave out the rows of the step with an SGD update, eager and captured")
    parser.add_argument("--counts", action="store_true",
                        help="print only the backend calls of the captured step against the same "
                             "step by hand (NumPy and PyTorch) and the eager cost of the labels")
    args = parser.parse_args(argv)
    if args.counts:
        print("| config | backend | agnograd captured, integer labels | agnograd captured, "
              "one-hot probabilities | by hand (integer labels, loss, SGD) | ratio |")
        print("| --- | --- | --- | --- | --- | --- |")
        for config in (args.configs.split(",") if args.configs else ["small"]):
            for row in call_count_rows(config, ["numpy", "torch"]):
                print(row)
        lab, prob = label_handling_us()
        print(f"\neager NumPy, cross_entropy forward+backward (32, 10): integer labels "
              f"{lab:.1f} us, one-hot probabilities {prob:.1f} us, labels - probabilities "
              f"{lab - prob:+.1f} us")
        return 0
    configs = args.configs.split(",") if args.configs else (
        ["small", "medium", "large"] if args.backend == "cupy" else ["small", "medium"])
    lines = [
        f"agnograd {ag.__version__}, Python {platform.python_version()}, NumPy {np.__version__}, "
        f"BLAS: {blas_info()}",
    ]
    for mod in ("cupy", "torch", "jax", "autograd"):
        try:
            lines[0] += f", {mod} {importlib.import_module(mod).__version__}"
        except Exception:
            pass
    if args.backend == "cupy":
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(0)
        lines.append(f"GPU: {props['name'].decode()}")
    lines += ["", "| config | implementation | median ms | ratio to hand-written |",
              "| --- | --- | --- | --- |"]
    failed = False
    for config in configs:
        results = run(config, args.backend, args.rounds, args.min_time)
        floor = results[0][1]
        for name, t in results:
            lines.append(f"| {config} | {name} | {t * 1e3:.3f} | {t / floor:.2f} |")
        if not args.no_captured:  # ratios to this group's own floor: hand-written + update
            try:
                rows = captured_rows(config, args.backend, args.rounds, args.min_time)
            except Exception as exc:  # keep the other rows; report the failure, exit 1
                failed = True
                lines.append(f"| {config} | agnograd captured: FAILED ({type(exc).__name__}: "
                             f"{' '.join(str(exc).split())[:300]}) | | |")
                continue
            for name, t in rows:
                lines.append(f"| {config} | {name} | {t * 1e3:.3f} | {t / rows[0][1]:.2f} |")
            lines.append(f"| {config} | captured vs eager agnograd (step with update) | | "
                         f"{rows[2][1] / rows[1][1]:.2f} |")
            if len(rows) > 3:
                lines.append(f"| {config} | staged (graph=False) vs eager agnograd | | "
                             f"{rows[3][1] / rows[1][1]:.2f} |")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
