"""The ``agnograd`` command: ``agnograd train`` and ``agnograd info``.

``agnograd train`` trains the 3-layer tanh network ``x1 = tanh(x W1 + b1)``,
``x2 = tanh(x1 W2 + b2)``, ``x3 = x2 W3 + b3`` with a softmax cross-entropy loss on the UCI
handwritten digits shipped with the package, on any backend; ``agnograd info`` lists the
backends usable here. Bad options print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import importlib.metadata
import importlib.util
import os
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import agnograd as ag

from . import nn, optim
from .backends import describe_device, known_backends
from .backends.host import host_rng
from .datasets import load_digits, train_test_split
from .nn import functional as F
from .nn.training_state import load_training_state, save_training_state
from .optim import lr_scheduler

__all__ = ["main", "TrainConfig", "TrainResult", "train", "build_cnn", "check_network_gradients"]

DEFAULT_LR = {"sgd": 0.05, "adam": 1e-3, "adamw": 1e-3}
SCHEDULERS = ("none", "step", "cosine", "onecycle", "plateau")
# What --help says of each --scheduler (the rates are set as agnograd.optim.lr_scheduler's).
SCHEDULER_HELP = {
    "none": "a constant rate (default)",
    "step": "StepLR: the rate times 0.1 every max(1, epochs // 3) epochs",
    "cosine": "CosineAnnealingLR: from --lr down to 0 over the epochs",
    "onecycle": "OneCycleLR, stepped after every batch: from lr/25 up to --lr over the first 30%% "
                "of the steps, then down to lr/25e4 (momentum is not cycled, so a --capture step "
                "is replayed, never recorded again)",
    "plateau": "ReduceLROnPlateau on the epoch's training loss: the rate times 0.1 after 2 "
               "epochs without improvement",
}


class UsageError(ValueError):
    """A bad command line (or an output path that cannot be written): reported as one line,
    exit status 2."""


class ResumeError(ValueError):
    """``--resume`` names a checkpoint that cannot continue this run (other settings, damaged)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: error: {message} (see {self.prog} --help)")


# ---------------------------------------------------------------------------------------------
# Training


@dataclass
class TrainConfig:
    """What ``agnograd train`` does; the fields are its options."""

    backend: str = "numpy"
    model: str = "mlp"  # "mlp": the 3-layer tanh network; "cnn": see build_cnn
    epochs: int = 20
    hidden: int = 64
    lr: float | None = None  # None: the optimizer's default (DEFAULT_LR)
    optimizer: str = "adam"
    batch_size: int = 32
    seed: int = 0
    dtype: str = "float32"
    test_fraction: float = 0.2
    save: str | None = None
    plot: str | None = None
    check_grad: bool = False
    progress: bool = True
    capture: bool = False  # replay each full batch with ag.capture (a CUDA graph on CuPy)
    checkpoint: str | None = None  # write the whole training state here after every epoch
    checkpoint_every: int | None = None  # ... and every this many steps
    resume: str | None = None  # continue the run saved in this checkpoint
    scheduler: str = "none"  # one of SCHEDULERS (see SCHEDULER_HELP)
    weight_decay: float | None = None  # None: the optimizer's default (0; AdamW 0.01)


@dataclass
class TrainResult:
    """The outcome of :func:`train`: the model, the per-epoch curves and the final numbers."""

    model: nn.Module
    test_accuracy: float
    test_correct: int
    test_size: int
    wall_time: float
    backend: str
    device: str
    train_loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    test_accuracy_curve: list[float] = field(default_factory=list)
    grad_check_error: float | None = None
    grad_check_time: float | None = None  # seconds of the gradient check, not in wall_time
    captured: str | None = None  # "CUDA graph", "staged replay" or "eager fallback" (config.capture)
    resumed_from: tuple[int, int] | None = None  # (epoch, step in it) where --resume continued


    def summary(self, config: TrainConfig) -> str:
        return (f"test accuracy {self.test_accuracy:.2%} ({self.test_correct}/{self.test_size}) | "
                f"{_plural(len(self.train_loss), 'epoch')}, {config.optimizer} lr {_lr(config):g}, "
                + (f"{config.scheduler} schedule, " if config.scheduler != "none" else "")
                + (f"weight decay {config.weight_decay:g}, " if config.weight_decay is not None
                   else "")
                + (f"hidden {config.hidden}" if config.model == "mlp" else f"model {config.model}")
                + f", {config.dtype}, seed {config.seed} | wall time "
                f"{self.wall_time:.2f} s | backend {self.backend} | device {self.device}"
                + (f" | captured step ({self.captured})" if self.captured else ""))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _lr(config: TrainConfig) -> float:
    return DEFAULT_LR[config.optimizer] if config.lr is None else config.lr


def _make_optimizer(config: TrainConfig, params: list[ag.Tensor]) -> optim.Optimizer:
    lr = _lr(config)
    wd = config.weight_decay
    if config.optimizer == "sgd":
        return optim.SGD(params, lr=lr, momentum=0.9, capturable=config.capture,
                         weight_decay=0.0 if wd is None else wd)
    if config.optimizer == "adam":
        return optim.Adam(params, lr=lr, capturable=config.capture,
                          weight_decay=0.0 if wd is None else wd)
    return optim.AdamW(params, lr=lr, capturable=config.capture,
                       weight_decay=1e-2 if wd is None else wd)


def _make_scheduler(config: TrainConfig, opt: optim.Optimizer,
                    steps_per_epoch: int) -> lr_scheduler.LRScheduler | None:
    """The ``--scheduler`` on ``opt`` (see ``SCHEDULER_HELP``); ``None`` for ``none``."""
    epochs = max(1, config.epochs)
    if config.scheduler == "step":
        return lr_scheduler.StepLR(opt, step_size=max(1, epochs // 3), gamma=0.1)
    if config.scheduler == "cosine":
        return lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    if config.scheduler == "onecycle":
        return lr_scheduler.OneCycleLR(opt, max_lr=_lr(config), epochs=epochs,
                                       steps_per_epoch=max(1, steps_per_epoch),
                                       cycle_momentum=False)
    if config.scheduler == "plateau":
        return lr_scheduler.ReduceLROnPlateau(opt, factor=0.1, patience=2)
    return None


def _capture_step(step: Callable[[ag.Tensor, ag.Tensor], Any], model: nn.Module,
                  opt: optim.Optimizer, xb: ag.Tensor, yb: ag.Tensor) -> ag.CapturedStep:
    """``ag.capture(step, xb, yb)``, then the model and the optimizer put back where they were.

    Capturing runs real steps (the warm-up and the recording) on ``xb``; to train exactly as
    without ``--capture``, the parameters and the optimizer state are put back in place (the
    recording keeps using the same memory): state that existed before (a resumed run's) gets
    its values back, state the capture created is zeroed -- zeroed moments and step counts are
    the fresh state of Adam/AdamW, and of SGD without dampening, as the command uses them.
    """
    saved = [ag.asarray(p, copy=True) for p in model.parameters()]
    before = {k: {n: (ag.asarray(v, copy=True) if isinstance(v, ag.Tensor) else v)
                  for n, v in state.items()} for k, state in opt.state.items()}
    captured = ag.capture(step, xb, yb)
    with ag.no_grad():
        for p, s in zip(model.parameters(), saved):
            p[...] = s
        for k, state in opt.state.items():
            for n, v in state.items():
                if isinstance(v, ag.Tensor):
                    v[...] = before.get(k, {}).get(n, 0.0)
    return captured


def _count_correct(logits: ag.Tensor, labels: ag.Tensor) -> ag.Tensor:
    hits = ag.argmax(logits, axis=1) == labels
    return ag.sum(ag.astype(hits, ag.int64))


def build_cnn(backend: str | None = None, dtype: Any = None, seed: int | None = None) -> nn.Sequential:
    """The small CNN of ``agnograd train --model cnn`` for the 8x8 digits (rows of 64 pixels):
    conv 1->16 (3x3, padding 1), ReLU, conv 16->32 (3x3, padding 1), ReLU, 2x2 max pooling,
    flatten, linear 512->10 (the logits). He initialisation for the ReLU layers."""

    def part(i: int) -> tuple[int, int] | None:
        return None if seed is None else (seed, i)

    return nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)),
        nn.Conv2d(1, 16, 3, padding=1, backend=backend, dtype=dtype, seed=part(0), init="he"),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, backend=backend, dtype=dtype, seed=part(1), init="he"),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(512, 10, backend=backend, dtype=dtype, seed=part(2)),
    )


def check_network_gradients(model: nn.Module, x: ag.Tensor, y: ag.Tensor, *,
                            jitter: float = 1e-2) -> tuple[float, str]:
    """The largest relative error between the network's backprop gradients and central finite
    differences (``agnograd.testing.numerical_grad``), in float64, on a copy of ``model``.

    The check point is ``x`` plus a little seeded noise (standard deviation ``jitter`` times
    the largest ``|x|``): on the digits many pixels are exactly 0, so with the biases at zero
    many ReLU inputs sit exactly on the kink (and max-pooling windows hold ties), where the
    central difference averages two slopes and disagrees with any one-sided gradient, however
    correct. Off the kinks both are the one true derivative.

    The error of a parameter is ``max |analytic - numeric| / max |numeric|``; returns the largest
    over the parameters and that parameter's name.
    """
    from .testing import numerical_grad

    names = [n for n, _ in model.named_parameters()]
    state = {n: ag.astype(t, ag.float64) for n, t in model.state_dict().items()}
    x64 = ag.astype(x, ag.float64)
    if jitter:
        scale = float(ag.max(ag.abs(x64)).item()) or 1.0
        noise = host_rng(12345).normal(0.0, jitter * scale, size=x64.shape)
        x64 = x64 + ag.tensor(noise, backend=x64.backend, dtype=ag.float64, device=x64.device)

    def loss(*params: ag.Tensor) -> ag.Tensor:
        logits = nn.functional_call(model, dict(zip(names, params)), x64)
        return F.cross_entropy(logits, y)

    inputs = [state[n] for n in names]
    analytic = ag.grad(loss, argnums=tuple(range(len(inputs))))(*inputs)
    numeric = numerical_grad(loss, inputs)
    worst, where = 0.0, names[0]
    for name, a, n in zip(names, analytic, numeric):
        num = ag.tensor(n)
        diff = ag.max(ag.abs(ag.tensor(a.numpy()) - num)).item()
        scale = max(ag.max(ag.abs(num)).item(), 1e-300)
        err = float(diff) / scale
        if err > worst:
            worst, where = err, name
    return worst, where


# Settings a resumed run may change; every other TrainConfig field must match the checkpoint's.
_RESUMABLE_CHANGES = {"epochs", "save", "plot", "check_grad", "progress", "checkpoint",
                      "checkpoint_every", "resume", "capture", "backend"}


def _physical_memory() -> int | None:
    with contextlib.suppress(AttributeError, ValueError, OSError):
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    return None


def _warn_if_lazy_for_nothing(config: TrainConfig, X: ag.Tensor) -> None:
    """A lazy backend (Dask) on data that fit in memory many times over: say what it costs."""
    if not X._backend.lazy:
        return
    size = (X.size or 0) * X.dtype.bits // 8
    memory = _physical_memory() or 2**30
    if size * 100 < memory:
        warnings.warn(
            f"--backend {config.backend}: the data ({size / 2**20:.1f} MiB) fit in memory many "
            "times over; a lazy backend builds and schedules a task graph for every step, which "
            "costs far more than the arithmetic here (about a minute per epoch instead of a "
            "fraction of a second with --backend numpy). Dask is for arrays larger than memory "
            "or spread over a cluster", UserWarning, stacklevel=2)


def _resume_info(config: TrainConfig, info: dict[str, Any]) -> None:
    """Refuse to resume a checkpoint written with other settings (it would not continue the
    same run)."""
    if not all(k in info for k in ("settings", "epoch", "batch", "steps")):
        raise ResumeError(f"--resume {config.resume}: a training state, but not one written by "
                          "agnograd train --checkpoint")
    saved = info["settings"]
    differ = [f"--{k.replace('_', '-')} {saved[k]!r} there, {getattr(config, k)!r} here"
              for k in sorted(saved) if k not in _RESUMABLE_CHANGES and hasattr(config, k)
              and saved[k] != getattr(config, k)]
    if (config.scheduler in ("cosine", "onecycle") and "epochs" in saved
            and saved["epochs"] != config.epochs):
        differ.append(f"--epochs {saved['epochs']!r} there, {config.epochs!r} here (the "
                      f"{config.scheduler} schedule spans the run's epochs)")
    if differ:
        raise ResumeError(f"--resume {config.resume}: the checkpoint was written by a run with other "
                         f"settings ({'; '.join(differ)}); use the same ones to continue it")


def train(config: TrainConfig, log: Callable[[str], None] = print) -> TrainResult:
    """Train the 3-layer tanh network on the digits as ``config`` says; see :class:`TrainConfig`.

    Everything random (initialisation, the split, the shuffling) is drawn on the host from
    ``config.seed``, so the same seed gives the same curve on every backend (to float32
    rounding). With ``config.checkpoint`` the whole state (parameters, optimizer, the
    shuffling generator, counters, curves, settings) is written atomically after every epoch
    and every ``config.checkpoint_every`` steps; ``config.resume`` continues such a run, and
    ends with exactly the parameters the uninterrupted run would have."""
    _check_outputs(config)  # before anything costly: a path that cannot be written fails now
    start = time.perf_counter()
    dtype = getattr(ag, config.dtype)
    X, y = load_digits(backend=config.backend, dtype=dtype)
    _warn_if_lazy_for_nothing(config, X)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_fraction=config.test_fraction,
                                                        seed=config.seed)
    model: nn.Module
    if config.model == "cnn":
        model = build_cnn(config.backend, dtype, config.seed)
    else:
        model = nn.MLP([64, config.hidden, config.hidden, 10], activation="tanh",
                       backend=config.backend, dtype=dtype, seed=config.seed)
    result = TrainResult(model=model, test_accuracy=0.0, test_correct=0, test_size=y_test.shape[0],
                         wall_time=0.0, backend=config.backend, device=describe_device(X.device))
    if config.check_grad:
        batch = min(16, X_train.shape[0])
        check_start = time.perf_counter()
        err, where = check_network_gradients(model, X_train[:batch, ...], y_train[:batch])
        result.grad_check_time = time.perf_counter() - check_start
        result.grad_check_error = err
        log(f"gradient check: largest relative error {err:.2e} (in {where}), backprop against "
            f"central finite differences on {model.num_parameters()} parameters, float64 "
            f"({result.grad_check_time:.2f} s, not counted in the wall time)")
    opt = _make_optimizer(config, model.parameters())
    rng = host_rng((config.seed, 1))
    n = X_train.shape[0]
    sched = _make_scheduler(config, opt, -(-n // config.batch_size))
    per_batch = config.scheduler == "onecycle"
    first_epoch, first_batch, steps_done = 0, 0, 0
    partial: tuple[float, int] | None = None  # a resumed epoch's loss sum and hits so far
    if config.resume:
        _resume_info(config, load_training_state(config.resume))  # settings first
        info = load_training_state(config.resume, model=model, optimizer=opt, rng=rng,
                                   scheduler=sched)
        first_epoch, first_batch, steps_done = info["epoch"], info["batch"], info["steps"]
        result.train_loss, result.train_accuracy = info["train_loss"], info["train_accuracy"]
        result.test_accuracy_curve = info["test_accuracy"]
        result.test_correct = info["test_correct"]
        partial = (info["partial_loss"], info["partial_correct"]) if first_batch else None
        result.resumed_from = (first_epoch, first_batch)
        log(f"resumed {config.resume}: epoch {first_epoch + 1}, step {first_batch} of it "
            f"({steps_done} steps done)")

    def save_state(epoch: int, batch: int, epoch_rng: Any,
                   sums: tuple[ag.Tensor | None, ag.Tensor | None]) -> None:
        """The whole run at this point (``batch`` = 0: the start of ``epoch``); the shuffling
        generator as it was when ``epoch`` drew its order, which a resumed run draws again."""
        assert config.checkpoint is not None
        gen = host_rng(0)
        gen.bit_generator.state = epoch_rng
        total, hits = sums
        save_training_state(
            config.checkpoint, model=model, optimizer=opt, rng=gen, scheduler=sched,
            settings=dataclasses.asdict(config), epoch=epoch, batch=batch, steps=steps_done,
            train_loss=result.train_loss, train_accuracy=result.train_accuracy,
            test_accuracy=result.test_accuracy_curve, test_correct=result.test_correct,
            partial_loss=float(total.item()) if total is not None else 0.0,
            partial_correct=int(hits.item()) if hits is not None else 0)

    def step(xb: ag.Tensor, yb: ag.Tensor) -> tuple[ag.Tensor, ag.Tensor]:
        logits = model(xb)
        loss = F.cross_entropy(logits, yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss, logits

    run: Callable[[ag.Tensor, ag.Tensor], tuple[ag.Tensor, ag.Tensor]] = step
    if config.capture and n >= config.batch_size:  # full batches replay one recorded step
        run = _capture_step(step, model, opt, X_train[:config.batch_size, ...],
                            y_train[:config.batch_size])
        result.captured = {"cuda-graph": "CUDA graph", "staged": "staged replay"}.get(
            getattr(run, "replay", None) or "", "eager fallback")
    bar = _progress(config, first_epoch)
    for epoch in bar:
        epoch_rng = copy.deepcopy(rng.bit_generator.state)
        order = ag.tensor(rng.permutation(n), backend=config.backend, device=X.device)
        total_loss: ag.Tensor | None = None
        correct: ag.Tensor | None = None
        if partial is not None:  # a resumed epoch: its sums so far, on the device
            total_loss = ag.tensor(partial[0], backend=config.backend, dtype=dtype, device=X.device)
            correct = ag.tensor(partial[1], backend=config.backend, dtype=ag.int64, device=X.device)
            partial = None
        for i in range(first_batch, n, config.batch_size):
            stop = i + config.batch_size
            idx = order[i:stop] if stop < n else order[i:]
            xb, yb = ag.take(X_train, idx, axis=0), ag.take(y_train, idx, axis=0)
            # A captured step needs its recorded shapes: a last, smaller batch runs eagerly.
            loss, logits = (run if xb.shape[0] == config.batch_size else step)(xb, yb)
            if per_batch and sched is not None:
                sched.step()
            with ag.no_grad():  # running sums stay on the device: one sync per epoch
                batch_loss = loss.detach() * float(yb.shape[0])
                batch_hits = _count_correct(logits.detach(), yb)
                total_loss = batch_loss if total_loss is None else total_loss + batch_loss
                correct = batch_hits if correct is None else correct + batch_hits
            steps_done += 1
            if (config.checkpoint and config.checkpoint_every and stop < n
                    and steps_done % config.checkpoint_every == 0):
                save_state(epoch, stop, epoch_rng, (total_loss, correct))
        first_batch = 0
        with ag.no_grad():
            test_hits = int(_count_correct(model(X_test), y_test).item())
        result.train_loss.append(float(total_loss.item()) / n if total_loss is not None else 0.0)
        result.train_accuracy.append(int(correct.item()) / n if correct is not None else 0.0)
        result.test_accuracy_curve.append(test_hits / y_test.shape[0])
        result.test_correct = test_hits
        if isinstance(sched, lr_scheduler.ReduceLROnPlateau):
            sched.step(result.train_loss[-1])
        elif sched is not None and not per_batch:
            sched.step()
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{result.train_loss[-1]:.4f}",
                            train_acc=f"{result.train_accuracy[-1]:.3f}",
                            test_acc=f"{result.test_accuracy_curve[-1]:.3f}")
        if config.checkpoint:
            save_state(epoch + 1, 0, copy.deepcopy(rng.bit_generator.state), (None, None))
    if not result.test_accuracy_curve:  # zero epochs: evaluate the initial network
        with ag.no_grad():
            result.test_correct = int(_count_correct(model(X_test), y_test).item())
    result.test_accuracy = result.test_correct / result.test_size
    result.wall_time = time.perf_counter() - start - (result.grad_check_time or 0.0)
    if config.save:
        model.save(config.save)
        log(f"saved {model.num_parameters()} parameters to {config.save}")
    if config.plot:
        _plot(result, config.plot)
        log(f"saved the training curves to {config.plot}")
    return result


def _progress(config: TrainConfig, first: int = 0) -> Any:
    epochs = range(first, config.epochs)
    if not config.progress:
        return epochs
    from tqdm.auto import tqdm

    return tqdm(epochs, desc=f"train ({config.backend})", unit="epoch", file=sys.stderr,
                dynamic_ncols=True, leave=True, initial=first, total=config.epochs)


def _plot(result: TrainResult, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3.2), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    epochs = list(range(1, len(result.train_loss) + 1))
    ax_loss.plot(epochs, result.train_loss, marker=".")
    ax_loss.set(xlabel="epoch", ylabel="training loss (cross-entropy)", yscale="log")
    ax_acc.plot(epochs, result.train_accuracy, marker=".", label="train")
    ax_acc.plot(epochs, result.test_accuracy_curve, marker=".", label="test")
    ax_acc.set(xlabel="epoch", ylabel="accuracy")
    ax_acc.legend()
    fig.suptitle(f"3-layer tanh network on the digits ({result.backend})")
    fig.savefig(path)


# ---------------------------------------------------------------------------------------------
# Checking the command line


def _int_at_least(low: int, what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, not {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, not {value}")
        return value

    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, not {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, not {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a non-negative number, not {text}")
    return value


def _fraction(text: str) -> float:
    value = _positive_float(text)
    if not value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, not {text}")
    return value


def _check_writable(path: str, option: str) -> None:
    """Fail now (not after training) if ``path`` cannot be written."""
    if os.path.isdir(path):
        raise UsageError(f"{option} {path}: is a directory, not a file path")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"{option} {path}: the folder {folder} does not exist")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise UsageError(f"{option} {path}: the file is not writable")
    try:  # the temporary file the atomic write starts with
        fd, probe = tempfile.mkstemp(prefix=".agnograd-probe-", dir=folder)
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot write in {folder} ({exc.strerror})") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.remove(probe)
    if not os.path.exists(path):  # the name itself (too long, reserved, ...): create it, once
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # created meanwhile by someone else: the write replaces it
            return
        except OSError as exc:
            raise UsageError(f"{option} {path}: cannot write this file ({exc.strerror})") from None
        os.close(fd)
        with contextlib.suppress(OSError):
            os.remove(path)


def _check_outputs(config: TrainConfig) -> None:
    """Refuse, before any training, output paths that cannot be written."""
    for path, option in ((config.save, "--save"), (config.checkpoint, "--checkpoint")):
        if path:
            _check_writable(path, option)


def _check_plot(path: str) -> None:
    if importlib.util.find_spec("matplotlib") is None:
        raise UsageError("--plot needs matplotlib, which is not installed: "
                         "pip install 'agnograd[plot]' (or pip install matplotlib)")
    from matplotlib.figure import Figure

    formats = Figure().canvas.get_supported_filetypes()
    ext = os.path.splitext(path)[1].lstrip(".").lower()
    if ext not in formats:
        raise UsageError(f"--plot {path}: unknown image format {ext or '(none)'!r}; use one of "
                         f"{', '.join(sorted(formats))}")
    _check_writable(path, "--plot")


def _config_from(args: argparse.Namespace) -> TrainConfig:
    try:
        ag.get_backend(args.backend)
    except ag.BackendError as exc:
        raise UsageError(f"--backend: {' '.join(str(exc).split())}") from None
    if args.save:
        _check_writable(args.save, "--save")
    if args.plot:
        _check_plot(args.plot)
    if args.checkpoint:
        _check_writable(args.checkpoint, "--checkpoint")
    if args.checkpoint_every and not args.checkpoint:
        raise UsageError("--checkpoint-every needs --checkpoint PATH (where to write)")
    if args.resume and not os.path.isfile(args.resume):
        raise UsageError(f"--resume {args.resume}: no such file (drop --resume to start a new run)")
    return TrainConfig(backend=args.backend, model=args.model, epochs=args.epochs,
                       hidden=args.hidden, lr=args.lr,
                       optimizer=args.optimizer, batch_size=args.batch_size, seed=args.seed,
                       dtype=args.dtype, test_fraction=args.test_fraction, save=args.save,
                       plot=args.plot, check_grad=args.check_grad, progress=not args.no_progress,
                       capture=args.capture, checkpoint=args.checkpoint,
                       checkpoint_every=args.checkpoint_every, resume=args.resume,
                       scheduler=args.scheduler, weight_decay=args.weight_decay)


def build_parser() -> argparse.ArgumentParser:
    """The ``agnograd`` argument parser (subcommands ``train`` and ``info``)."""
    parser = _Parser(prog="agnograd", description="agnograd: reverse-mode autodiff on any Array "
                     "API backend. Train the 3-layer tanh network on the handwritten digits, or "
                     "list the backends usable here.")
    parser.add_argument("--version", action="version", version=f"agnograd {ag.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{train,info}")
    t = sub.add_parser("train", help="train the 3-layer tanh network on the UCI digits",
                       description="Train x1 = tanh(x W1 + b1), x2 = tanh(x1 W2 + b2), "
                       "x3 = x2 W3 + b3 with a softmax cross-entropy loss on the 1,797 UCI "
                       "handwritten digits (8x8 images) shipped with agnograd, and report the "
                       "test accuracy.")
    t.add_argument("--backend", default="numpy",
                   help="array backend: numpy (default), cupy, array_api_strict, torch, ... "
                   "(dask is for data larger than memory: on the digits an epoch takes about "
                   "a minute, against a fraction of a second with numpy)")
    t.add_argument("--model", choices=["mlp", "cnn"], default=TrainConfig.model,
                   help="mlp: the 3-layer tanh network (default); cnn: two 3x3 convolutions, "
                   "max pooling and a linear layer on the 8x8 images")
    t.add_argument("--epochs", type=_int_at_least(0, "--epochs"), default=TrainConfig.epochs,
                   help=f"passes over the training set (default {TrainConfig.epochs})")
    t.add_argument("--hidden", type=_int_at_least(1, "--hidden"), default=TrainConfig.hidden,
                   help=f"width of both hidden layers (default {TrainConfig.hidden})")
    t.add_argument("--lr", type=_positive_float, default=None,
                   help="learning rate (default: sgd 0.05, adam and adamw 0.001)")
    t.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], default=TrainConfig.optimizer,
                   help="sgd (momentum 0.9), adam (default) or adamw")
    t.add_argument("--weight-decay", type=_non_negative_float, default=None,
                   help="weight decay: L2 added to the gradient for sgd and adam, decoupled for "
                   "adamw (default: sgd and adam 0, adamw 0.01, as PyTorch's)")
    t.add_argument("--scheduler", choices=list(SCHEDULERS), default=TrainConfig.scheduler,
                   help="learning-rate schedule, stepped after every epoch unless said: "
                   + "; ".join(f"{k}: {v}" for k, v in SCHEDULER_HELP.items()))
    t.add_argument("--batch-size", type=_int_at_least(1, "--batch-size"),
                   default=TrainConfig.batch_size, help="minibatch size (default 32)")
    t.add_argument("--seed", type=_int_at_least(0, "--seed"), default=TrainConfig.seed,
                   help="seed of the host generator: weights, split, shuffling (default 0)")
    t.add_argument("--dtype", choices=["float32", "float64"], default=TrainConfig.dtype,
                   help="floating-point type of data and parameters (default float32)")
    t.add_argument("--test-fraction", type=_fraction, default=TrainConfig.test_fraction,
                   help="share of the digits held out for testing (default 0.2)")
    t.add_argument("--save", metavar="PATH", help="write the trained parameters to an .npz file")
    t.add_argument("--plot", metavar="PATH",
                   help="draw the loss and accuracy curves into an image (needs matplotlib: the "
                   "'plot' extra)")
    t.add_argument("--check-grad", action="store_true",
                   help="before training, compare the network's gradients with finite "
                   "differences and print the largest relative error")
    t.add_argument("--capture", action="store_true",
                   help="record one training step with ag.capture and replay it for every full "
                   "batch: one CUDA graph per step on --backend cupy, a staged replay of the "
                   "step's backend calls elsewhere (an eager fallback on dask)")
    t.add_argument("--checkpoint", metavar="PATH",
                   help="after every epoch, write the whole training state (parameters, optimizer "
                   "state, random state, counters, settings) to an .npz file, atomically: a crash "
                   "while writing leaves the previous one")
    t.add_argument("--checkpoint-every", metavar="N", type=_int_at_least(1, "--checkpoint-every"),
                   default=None, help="also write the checkpoint every N steps")
    t.add_argument("--resume", metavar="PATH",
                   help="continue the run saved by --checkpoint in PATH (same settings; --epochs "
                   "may grow): it ends with the parameters the uninterrupted run would have")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    sub.add_parser("info", help="print the version, the usable backends and their devices",
                   description="Print agnograd's version, the backends usable here with their "
                   "devices, and the versions of the libraries behind them.")
    return parser


# ---------------------------------------------------------------------------------------------
# info


def _dist_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def info_lines() -> list[str]:
    """What ``agnograd info`` prints."""
    lines = [
        f"agnograd {ag.__version__} (Python {platform.python_version()}, {platform.system()} "
        f"{platform.machine()})",
        f"array-api-compat {_dist_version('array-api-compat')}, array API standard "
        f"{ag.__array_api_version__}",
        f"default backend: {ag.get_default_backend().name}",
        "backends:",
    ]
    width = max(len(n) for n in known_backends())
    for name in known_backends():
        try:
            b = ag.get_backend(name)
        except Exception as exc:  # not installed, no device: say why, in one line
            reason = " ".join(str(exc).split())
            lines.append(f"  {name:<{width}}  not available: {reason}")
            continue
        version = getattr(sys.modules.get(name), "__version__", "?")
        try:
            with warnings.catch_warnings():  # e.g. PyTorch's notes on deprecated device types
                warnings.simplefilter("ignore")
                devices = [describe_device(d) for d in b.xp.__array_namespace_info__().devices()]
        except Exception:
            devices = ["(the backend does not list its devices)"]
        lines.append(f"  {name:<{width}}  {version:<10} devices: {', '.join(devices)}")
    return lines


# ---------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help and --version
            return int(exc.code or 0)
        if args.command is None:
            raise UsageError("agnograd: error: choose a command: train or info (see agnograd --help)")
        if args.command == "info":
            print("\n".join(info_lines()))
            return 0
        config = _config_from(args)
    except UsageError as exc:
        message = str(exc)
        if not message.startswith("agnograd"):
            message = f"agnograd {args.command}: error: {message}"
        print(message, file=sys.stderr)
        return 2
    try:
        result = train(config)
    except UsageError as exc:
        print(f"agnograd train: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("agnograd train: interrupted", file=sys.stderr)
        return 130
    except (OSError, ResumeError, nn.CorruptFileError) as exc:  # e.g. the disk filled up
        print(f"agnograd train: error: {exc}", file=sys.stderr)
        return 2
    print(result.summary(config))
    if config.check_grad and result.grad_check_error is not None and result.grad_check_error > 1e-5:
        print(f"agnograd train: the gradient check failed (largest relative error "
              f"{result.grad_check_error:.2e} > 1e-5)", file=sys.stderr)
        return 1
    return 0
