"""The ``agnograd`` command: a short training run, its outputs, one-line errors with exit status
2, ``info``, and the full default run (>= 95% test accuracy)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import agnograd as ag
from agnograd import cli, nn
from agnograd.backends import host
from agnograd.datasets import load_digits, train_test_split

ROOT = Path(__file__).resolve().parents[1]
SUMMARY = re.compile(r"test accuracy (\d+\.\d+)% \((\d+)/(\d+)\) \| .* \| wall time (\d+\.\d+) s \| "
                     r"backend (\S+) \| device (.+)$")
FAST = ["train", "--epochs", "2", "--hidden", "16", "--no-progress"]


def _run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_short_training_run_prints_the_summary(capsys):
    code, out, err = _run(capsys, *FAST)
    assert code == 0, err
    m = SUMMARY.search(out.strip().splitlines()[-1])
    assert m, out
    assert float(m.group(1)) > 50 and m.group(3) == "359"
    assert m.group(5) == "numpy" and m.group(6) == "cpu"


def test_progress_bar_shows_loss_and_accuracy(capsys):
    code, out, err = _run(capsys, "train", "--epochs", "1", "--hidden", "8")
    assert code == 0
    assert "loss=" in err and "test_acc=" in err and "1/1" in err


def test_data_set_is_shipped_and_split_deterministically():
    X, y = load_digits()
    assert X.shape == (1797, 64) and y.shape == (1797,) and X.dtype == ag.float32
    assert float(ag.max(X)) == 1.0 and sorted(set(y.numpy().tolist())) == list(range(10))
    a = train_test_split(X, y, seed=5)
    b = train_test_split(X, y, seed=5)
    assert [t.shape[0] for t in a] == [1438, 359, 1438, 359]
    assert np.array_equal(a[3].numpy(), b[3].numpy())
    assert (ROOT / "agnograd" / "data" / "README.md").read_text().count("CC BY 4.0")


def test_save_writes_the_trained_network(tmp_path, capsys):
    path = tmp_path / "params.npz"
    code, out, _ = _run(capsys, *FAST, "--save", str(path))
    assert code == 0 and path.exists()
    reported = float(SUMMARY.search(out.strip().splitlines()[-1]).group(1))
    model = nn.MLP([64, 16, 16, 10]).load(path)            # allow_pickle=False inside
    X, y = load_digits()
    _, X_test, _, y_test = train_test_split(X, y, seed=0)
    hits = int(ag.sum(ag.astype(ag.argmax(model(X_test), axis=1) == y_test, ag.int64)))
    assert hits / 359 * 100 == pytest.approx(reported, abs=0.01)


def test_plot_writes_an_image(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    path = tmp_path / "loss.png"
    code, _, err = _run(capsys, *FAST, "--plot", str(path))
    assert code == 0, err
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_is_one_clear_line(tmp_path, capsys, monkeypatch):
    real = cli.importlib.util.find_spec
    monkeypatch.setattr(cli.importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else real(name, *a))
    code, out, err = _run(capsys, *FAST, "--plot", str(tmp_path / "loss.png"))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "needs matplotlib" in err and "agnograd[plot]" in err


def test_check_grad_prints_the_largest_relative_error(capsys):
    code, out, err = _run(capsys, "train", "--epochs", "1", "--hidden", "6", "--no-progress",
                          "--check-grad")
    assert code == 0, err
    m = re.search(r"largest relative error (\S+) \(in (\S+)\)", out)
    assert m and float(m.group(1)) < 1e-6


def test_same_seed_same_curve_on_another_backend():
    """The host RNG drives initialisation, split and shuffling: array_api_strict (standing in for
    CuPy here; see the gpu test below) follows NumPy's curve to float32 rounding."""
    cfg = dict(epochs=2, hidden=16, seed=3, progress=False)
    a = cli.train(cli.TrainConfig(backend="numpy", **cfg), log=lambda s: None)
    b = cli.train(cli.TrainConfig(backend="array_api_strict", **cfg), log=lambda s: None)
    np.testing.assert_allclose(a.train_loss, b.train_loss, rtol=1e-4)
    assert abs(a.test_accuracy - b.test_accuracy) <= 1 / 359


@pytest.mark.gpu
def test_same_seed_same_curve_on_cupy():
    if "cupy" not in ag.available_backends():
        pytest.skip("CuPy with a CUDA device is not available here")
    cfg = dict(epochs=3, hidden=32, seed=1, progress=False)
    a = cli.train(cli.TrainConfig(backend="numpy", **cfg), log=lambda s: None)
    b = cli.train(cli.TrainConfig(backend="cupy", **cfg), log=lambda s: None)
    np.testing.assert_allclose(a.train_loss, b.train_loss, rtol=1e-4)
    assert abs(a.test_accuracy - b.test_accuracy) <= 2 / 359
    assert b.device.startswith("cuda:")


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_capture_trains_the_same_curve(capsys, optimizer):
    """--capture replays one recorded step (a staged replay off CuPy); the warm-up steps of
    the capture are undone, so the curve is the plain run's, to float32 rounding."""
    cfg = dict(epochs=2, hidden=16, seed=2, progress=False, optimizer=optimizer)
    a = cli.train(cli.TrainConfig(**cfg), log=lambda s: None)
    b = cli.train(cli.TrainConfig(capture=True, **cfg), log=lambda s: None)
    np.testing.assert_allclose(a.train_loss, b.train_loss, rtol=1e-4)
    assert abs(a.test_accuracy - b.test_accuracy) <= 1 / 359
    assert a.captured is None and b.captured == "staged replay"
    code, out, err = _run(capsys, *FAST, "--capture", "--optimizer", optimizer)
    assert code == 0, err
    assert out.strip().endswith("| captured step (staged replay)")


@pytest.mark.gpu
def test_capture_on_cupy_replays_a_cuda_graph():
    if "cupy" not in ag.available_backends():
        pytest.skip("CuPy with a CUDA device is not available here")
    cfg = dict(epochs=3, hidden=32, seed=1, progress=False)
    a = cli.train(cli.TrainConfig(backend="numpy", **cfg), log=lambda s: None)
    b = cli.train(cli.TrainConfig(backend="cupy", capture=True, **cfg), log=lambda s: None)
    assert b.captured == "CUDA graph"
    np.testing.assert_allclose(a.train_loss, b.train_loss, rtol=1e-4)
    assert abs(a.test_accuracy - b.test_accuracy) <= 2 / 359


@pytest.mark.parametrize("argv, message", [
    (["train", "--backend", "nope"], "unknown backend 'nope'"),
    (["train", "--epochs", "-3"], "argument --epochs: must be at least 0, not -3"),
    (["train", "--epochs", "many"], "must be an integer"),
    (["train", "--hidden", "0"], "argument --hidden: must be at least 1"),
    (["train", "--lr", "-0.1"], "must be a positive number"),
    (["train", "--lr", "nan"], "must be a positive number"),
    (["train", "--test-fraction", "1.5"], "between 0 and 1"),
    (["train", "--optimizer", "rmsprop"], "invalid choice: 'rmsprop'"),
    (["train", "--dtype", "float16"], "invalid choice: 'float16'"),
    (["train", "--save", "/no/such/folder/params.npz"], "the folder /no/such/folder does not exist"),
    (["train", "--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["train", "--plot", "curve.unknownext"], "unknown image format"),
    ([], "choose a command"),
    (["fly"], "invalid choice: 'fly'"),
])
def test_bad_options_give_one_line_and_exit_2(capsys, argv, message):
    if "--plot" in argv:
        pytest.importorskip("matplotlib")
    code, out, err = _run(capsys, *argv)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("agnograd"), err
    assert message in err
    assert "Traceback" not in err


def test_output_path_that_is_a_directory_or_read_only(tmp_path, capsys):
    code, _, err = _run(capsys, *FAST, "--save", str(tmp_path))
    assert code == 2 and "is a directory" in err
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK) and os.geteuid() != 0:  # pragma: no cover
            pytest.skip("cannot make a read-only folder here")
        probe = locked / "x"
        try:
            probe.write_text("")
            probe.unlink()
            writable = True
        except OSError:
            writable = False
        if writable:
            pytest.skip("this user can write into read-only folders (root)")
        code, _, err = _run(capsys, *FAST, "--save", str(locked / "params.npz"))
        assert code == 2 and "cannot write" in err
    finally:
        locked.chmod(0o700)


def test_help_and_version(capsys):
    code, out, _ = _run(capsys, "train", "--help")
    assert code == 0 and "--check-grad" in out and "--optimizer" in out
    code, out, _ = _run(capsys, "--version")
    assert code == 0 and out.strip() == f"agnograd {ag.__version__}"


def test_info_lists_backends_and_devices(capsys):
    code, out, _ = _run(capsys, "info")
    assert code == 0
    assert f"agnograd {ag.__version__}" in out and "array-api-compat" in out
    assert re.search(r"^\s+numpy\s+\S+\s+devices: cpu$", out, re.M)
    assert "cupy" in out                                  # available, or why not


def test_python_m_agnograd_and_console_script():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "agnograd", "--version"], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == f"agnograd {ag.__version__}"
    r = subprocess.run([sys.executable, "-m", "agnograd", "train", "--backend", "nope"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1
    exe = shutil.which("agnograd")
    if exe is None:
        pytest.skip("the console script is not installed (pip install -e .)")
    r = subprocess.run([exe, "train", "--epochs", "-1"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "must be at least 0" in r.stderr


def test_full_default_run_reaches_95_percent(capsys):
    # The wall time is printed by the command itself (and reported in the docs), not asserted:
    # timings belong to benchmarks, not to tests.
    code, out, err = _run(capsys, "train", "--no-progress")
    assert code == 0, err
    m = SUMMARY.search(out.strip().splitlines()[-1])
    assert float(m.group(1)) >= 95.0, out


# ---------------------------------------------------------------------------------------------
# Issue 22, class 9: the CNN's gradient check, and --save paths refused before training


def _small_cnn(backend=None, dtype=None, seed=None):
    """build_cnn's kinds of layers (ReLU after a padded convolution, max pooling), small enough
    for a finite-difference check in a second."""
    return nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)),
        nn.Conv2d(1, 2, 3, padding=1, backend=backend, dtype=dtype, seed=(seed or 0, 0), init="he"),
        nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(32, 10, backend=backend, dtype=dtype, seed=(seed or 0, 1)))


def test_cnn_gradient_check_is_taken_off_the_relu_kinks():
    """Regression (issue 22): on the digits (many pixels exactly 0, biases 0) ReLU inputs sit
    on the kink, where central differences average two slopes: correct gradients failed the
    check. The check point is now jittered off the kinks."""
    X, y = load_digits()
    model = _small_cnn()
    err, _ = cli.check_network_gradients(model, X[:3, ...], y[:3])
    assert err < 1e-6
    on_kinks, where = cli.check_network_gradients(model, X[:3, ...], y[:3], jitter=0.0)
    assert on_kinks > 1e-3 and where == "1.bias"  # what the old check reported


def test_check_grad_with_the_cnn_passes_on_the_command_line(capsys, monkeypatch):
    monkeypatch.setattr(cli, "build_cnn", _small_cnn)  # the same path, a smaller network
    code, out, err = _run(capsys, "train", "--model", "cnn", "--epochs", "0", "--no-progress",
                          "--check-grad")
    assert code == 0, err
    m = re.search(r"largest relative error (\S+) \(in (\S+)\)", out)
    assert m and float(m.group(1)) < 1e-6


def test_save_paths_that_cannot_be_written_are_refused_before_training(tmp_path, capsys,
                                                                       monkeypatch):
    """Regression (issue 22): a --save path whose name cannot be created (here: too long) was
    refused only when the trained network was written."""
    trained = []
    real_train = cli.train

    def spy(config, log=print):
        trained.append(config)
        return real_train(config, log)

    monkeypatch.setattr(cli, "train", spy)
    long_name = str(tmp_path / ("a" * 300 + ".npz"))
    for path, message in [(long_name, "cannot write this file"),
                          (str(tmp_path / "no" / "such" / "x.npz"), "does not exist")]:
        code, out, err = _run(capsys, *FAST, "--save", path)
        assert code == 2 and out == "" and message in err and not trained
        assert err.count("\n") == 1
    # The API refuses it too, before loading data or training.
    with pytest.raises(cli.UsageError, match="cannot write this file"):
        real_train(cli.TrainConfig(epochs=50, save=long_name), log=lambda s: None)
    assert not list(tmp_path.iterdir())  # the probes left nothing behind


# -- issue 25: --scheduler and --weight-decay ----------------------------------------------------

def _spy(monkeypatch, name):
    """Record what cli.<name> returns (the optimizer or the scheduler a run made)."""
    made = []
    real = getattr(cli, name)

    def spy(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(cli, name, spy)
    return made


@pytest.mark.parametrize("scheduler, optimizer", [("step", "sgd"), ("cosine", "adam"),
                                                  ("onecycle", "sgd"), ("onecycle", "adamw"),
                                                  ("plateau", "adam")])
def test_scheduler_sets_the_rates_torchs_scheduler_sets(capsys, monkeypatch, scheduler, optimizer):
    """The run's schedule is torch's (same class and settings), stepped once per epoch (per
    batch for onecycle; with the epoch's training loss for plateau)."""
    torch = pytest.importorskip("torch")
    made = _spy(monkeypatch, "_make_scheduler")
    epochs, batch = 7, 64
    result = cli.train(cli.TrainConfig(epochs=epochs, hidden=8, batch_size=batch, progress=False,
                                       optimizer=optimizer, scheduler=scheduler, lr=0.02),
                       log=lambda s: None)
    (sched,) = made
    p = torch.zeros(1, requires_grad=True)
    topt = {"sgd": lambda: torch.optim.SGD([p], lr=0.02, momentum=0.9),
            "adam": lambda: torch.optim.Adam([p], lr=0.02),
            "adamw": lambda: torch.optim.AdamW([p], lr=0.02)}[optimizer]()
    S = torch.optim.lr_scheduler
    steps_per_epoch = -(-1438 // batch)
    tsched = {"step": lambda: S.StepLR(topt, step_size=epochs // 3, gamma=0.1),
              "cosine": lambda: S.CosineAnnealingLR(topt, T_max=epochs),
              "onecycle": lambda: S.OneCycleLR(topt, max_lr=0.02, epochs=epochs,
                                               steps_per_epoch=steps_per_epoch,
                                               cycle_momentum=False),
              "plateau": lambda: S.ReduceLROnPlateau(topt, factor=0.1, patience=2)}[scheduler]()
    for e in range(epochs):
        if scheduler == "onecycle":
            for _ in range(steps_per_epoch):
                topt.step()
                tsched.step()
        elif scheduler == "plateau":
            tsched.step(result.train_loss[e])
        else:
            topt.step()
            tsched.step()
    assert sched.get_last_lr() == tsched.get_last_lr()
    assert sched.optimizer.param_groups[0]["lr"] == topt.param_groups[0]["lr"]
    code, out, err = _run(capsys, *FAST, "--scheduler", scheduler, "--optimizer", optimizer)
    assert code == 0, err
    assert f"{scheduler} schedule" in out


def test_weight_decay_reaches_the_optimizer(capsys, monkeypatch):
    made = _spy(monkeypatch, "_make_optimizer")
    for opt, wd, expect in [("sgd", None, 0.0), ("adamw", None, 1e-2), ("adam", "0.05", 0.05),
                            ("adamw", "0", 0.0)]:
        argv = [*FAST, "--epochs", "1", "--optimizer", opt]
        if wd is not None:
            argv += ["--weight-decay", wd]
        code, out, err = _run(capsys, *argv)
        assert code == 0, err
        assert made[-1].param_groups[0]["weight_decay"] == expect
        assert ("weight decay" in out) == (wd is not None)
    # It changes the training: a strong decay gives another curve.
    a = cli.train(cli.TrainConfig(epochs=1, hidden=8, progress=False), log=lambda s: None)
    b = cli.train(cli.TrainConfig(epochs=1, hidden=8, progress=False, weight_decay=0.5),
                  log=lambda s: None)
    assert a.train_loss != b.train_loss


@pytest.mark.parametrize("argv, message", [
    (["train", "--weight-decay", "-0.1"], "must be a non-negative number"),
    (["train", "--weight-decay", "x"], "must be a number"),
    (["train", "--scheduler", "cyclic"], "invalid choice: 'cyclic'"),
])
def test_bad_schedule_options_give_one_line_and_exit_2(capsys, argv, message):
    code, out, err = _run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message in err


def test_help_documents_the_schedulers(capsys):
    code, out, _ = _run(capsys, "train", "--help")
    assert code == 0
    text = " ".join(out.split())
    for name in cli.SCHEDULERS:
        assert f"{name}:" in text
    assert "--weight-decay" in text and "adamw 0.01" in text


@pytest.mark.parametrize("scheduler", ["onecycle", "plateau"])
def test_capture_with_a_scheduler_trains_the_same_curve(scheduler):
    cfg = dict(epochs=3, hidden=16, seed=1, progress=False, optimizer="sgd", scheduler=scheduler)
    a = cli.train(cli.TrainConfig(**cfg), log=lambda s: None)
    b = cli.train(cli.TrainConfig(capture=True, **cfg), log=lambda s: None)
    assert b.captured == "staged replay"
    np.testing.assert_allclose(a.train_loss, b.train_loss, rtol=1e-4)


@pytest.mark.parametrize("scheduler", ["onecycle", "plateau", "step"])
def test_a_scheduled_run_stopped_mid_epoch_resumes_to_identical_parameters(tmp_path, monkeypatch,
                                                                          scheduler):
    """The scheduler's state travels in the checkpoint: the resumed run ends with the
    uninterrupted run's parameters, bit for bit."""
    fast = ["train", "--epochs", "3", "--hidden", "16", "--batch-size", "32", "--no-progress",
            "--scheduler", scheduler, "--optimizer", "sgd"]
    full, ck, out = tmp_path / "full.npz", tmp_path / "ck.npz", tmp_path / "out.npz"
    assert cli.main([*fast, "--save", str(full)]) == 0
    real, calls = cli.save_training_state, []

    def dies_after_15(*args, **kwargs):
        real(*args, **kwargs)
        calls.append(kwargs["batch"])
        if len(calls) == 15:
            raise KeyboardInterrupt

    monkeypatch.setattr(cli, "save_training_state", dies_after_15)
    assert cli.main([*fast, "--checkpoint", str(ck), "--checkpoint-every", "4"]) == 130
    assert calls[-1] not in (0, None)
    monkeypatch.setattr(cli, "save_training_state", real)
    assert cli.main([*fast, "--resume", str(ck), "--save", str(out)]) == 0
    a, b = host.load_npz(full), host.load_npz(out)
    assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)
    if scheduler in ("onecycle",):  # a schedule over the epochs: --epochs may not change
        assert cli.main([*fast[:2], "4", *fast[3:], "--resume", str(ck)]) == 2
