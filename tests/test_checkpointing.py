"""Resumable runs: save_training_state / load_training_state (round trips that continue bit for
bit, the checksum refusing truncated and altered files, atomic writes with the user's umask),
and ``agnograd train --checkpoint/--resume``, including a run killed with SIGKILL at a random
moment that, resumed, ends with exactly the uninterrupted run's parameters."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import agnograd as ag
from agnograd import cli, nn, optim
from agnograd.backends import host
from agnograd.nn import functional as F
from agnograd.optim import lr_scheduler

ROOT = Path(__file__).resolve().parents[1]


def _setup(seed=0):
    model = nn.Sequential(nn.Linear(4, 8, seed=seed), nn.Tanh(), nn.Dropout(0.2, seed=seed + 1),
                          nn.Linear(8, 3, seed=seed + 2))
    opt = optim.Adam(model.parameters(), lr=0.05)
    sched = lr_scheduler.ExponentialLR(opt, gamma=0.9)
    return model, opt, sched, nn.host_rng(seed + 3)


def _train(model, opt, sched, rng, steps):
    x = ag.tensor(np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32))
    y = ag.tensor(np.arange(32) % 3)
    for _ in range(steps):
        idx = ag.tensor(rng.permutation(32)[:8])
        opt.zero_grad()
        F.cross_entropy(model(ag.take(x, idx, axis=0)), ag.take(y, idx, axis=0)).backward()
        opt.step()
        sched.step()


def test_a_restored_run_continues_bit_for_bit(tmp_path):
    path = tmp_path / "state.npz"
    model, opt, sched, rng = _setup()
    _train(model, opt, sched, rng, 5)
    nn.save_training_state(path, model=model, optimizer=opt, scheduler=sched, rng=rng,
                           epoch=5, settings={"hidden": 8, "name": "run"})
    _train(model, opt, sched, rng, 5)
    # A fresh process-like start: other seeds, then everything restored from the file.
    m2, o2, s2, r2 = _setup(seed=10)
    info = nn.load_training_state(path, model=m2, optimizer=o2, scheduler=s2, rng=r2)
    assert info == {"epoch": 5, "settings": {"hidden": 8, "name": "run"}}
    assert o2.param_groups[0]["betas"] == (0.9, 0.999)  # tuples come back as tuples
    _train(m2, o2, s2, r2, 5)
    for (n, a), (_, b) in zip(model.named_tensors(), m2.named_tensors()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=n)
    assert s2.get_last_lr() == sched.get_last_lr()


def test_damaged_checkpoints_are_refused(tmp_path):
    path = tmp_path / "state.npz"
    model, opt, sched, rng = _setup()
    _train(model, opt, sched, rng, 2)
    nn.save_training_state(path, model=model, optimizer=opt, rng=rng, epoch=2)
    data = path.read_bytes()
    before = [t.numpy().copy() for t in model.parameters()]
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(nn.CorruptFileError, match="damaged"):
        nn.load_training_state(truncated, model=model)
    # One flipped byte inside an array's data: the zip CRC or the SHA-256 catches it.
    w = model.parameters()[0].numpy().tobytes()
    at = data.find(w[:16]) + 5
    assert at > 5
    flipped = tmp_path / "flipped.npz"
    flipped.write_bytes(data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:])
    with pytest.raises(nn.CorruptFileError, match="damaged|checksum"):
        nn.load_training_state(flipped, model=model, optimizer=opt)
    # An array rewritten consistently (valid zip, new CRC) fails the SHA-256 only.
    arrays = host.load_npz(path)
    arrays["model/0.weight"] = arrays["model/0.weight"] + 1
    host.save_npz(tmp_path / "edited.npz", arrays)
    with pytest.raises(nn.CorruptFileError, match="SHA-256 checksum"):
        nn.load_training_state(tmp_path / "edited.npz", model=model)
    model.save(tmp_path / "params.npz")  # parameters only: no checksum
    with pytest.raises(nn.CorruptFileError, match="Module.load"):
        nn.load_training_state(tmp_path / "params.npz", model=model)
    assert all(np.array_equal(b, t.numpy()) for b, t in zip(before, model.parameters()))
    with pytest.raises(ValueError, match="no scheduler state"):
        nn.load_training_state(path, scheduler=sched)
    with pytest.raises(ValueError, match="Adam optimizer, not of a SGD"):
        nn.load_training_state(path, optimizer=optim.SGD(model.parameters(), lr=0.1))


def test_a_failed_write_keeps_the_last_good_file(tmp_path, monkeypatch):
    path = tmp_path / "state.npz"
    model, opt, sched, rng = _setup()
    nn.save_training_state(path, model=model, epoch=1)
    good = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        nn.save_training_state(path, model=model, epoch=2)
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.npz"]  # no temporary left


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_saved_files_get_the_users_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        assert host.user_umask() == umask
        model = nn.Linear(2, 2, seed=0)
        model.save(tmp_path / "m.npz")
        nn.save_training_state(tmp_path / "s.npz", model=model)
    finally:
        os.umask(old)
    for name in ("m.npz", "s.npz"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


# ---------------------------------------------------------------------------------------------
# The command


def _params(path):
    return host.load_npz(path)


def _same(a, b):
    return sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)


FAST = ["train", "--epochs", "3", "--hidden", "16", "--batch-size", "16", "--no-progress"]


def test_resume_continues_an_interrupted_run(tmp_path, capsys):
    full, ck, out = tmp_path / "full.npz", tmp_path / "ck.npz", tmp_path / "out.npz"
    assert cli.main([*FAST, "--save", str(full)]) == 0
    # Stop after 2 of 3 epochs (an epoch-end checkpoint), then continue with --epochs 3.
    assert cli.main([*FAST[:2], "2", *FAST[3:], "--checkpoint", str(ck)]) == 0
    capsys.readouterr()
    assert cli.main([*FAST, "--resume", str(ck), "--save", str(out)]) == 0
    text = capsys.readouterr().out
    assert "resumed" in text and "epoch 3, step 0" in text
    assert _same(_params(out), _params(full))
    # Other settings cannot continue the run; a damaged file is one line too.
    assert cli.main([*FAST, "--hidden", "8", "--resume", str(ck)]) == 2
    assert "--hidden 16 there, 8 here" in capsys.readouterr().err
    ck.write_bytes(ck.read_bytes()[:-100])
    assert cli.main([*FAST, "--resume", str(ck)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "damaged (truncated or altered)" in err


def test_resume_refuses_other_settings_and_missing_files(tmp_path, capsys):
    ck = tmp_path / "ck.npz"
    assert cli.main([*FAST[:2], "1", *FAST[3:], "--checkpoint", str(ck)]) == 0
    capsys.readouterr()
    with pytest.raises(cli.ResumeError, match=r"--hidden 16 there, 8 here"):
        cli.train(cli.TrainConfig(epochs=2, hidden=8, batch_size=16, progress=False,
                                  resume=str(ck)), log=lambda s: None)
    assert cli.main([*FAST, "--resume", str(tmp_path / "nope.npz")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert cli.main([*FAST, "--checkpoint-every", "3"]) == 2
    assert "--checkpoint-every needs --checkpoint" in capsys.readouterr().err


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_run_killed_at_a_random_moment_resumes_to_identical_parameters(tmp_path):
    """SIGKILL at a random moment (mid-step, mid-checkpoint-write, ...), resume, and compare
    the final parameters with an uninterrupted run's, bit for bit."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-m", "agnograd", *FAST[:2], "5", *FAST[3:]]
    full, ck, out = tmp_path / "full.npz", tmp_path / "ck.npz", tmp_path / "out.npz"
    subprocess.run([*args, "--save", str(full)], env=env, check=True, capture_output=True,
                   timeout=300)
    rng = random.Random()
    killed_after = None
    for attempt in range(6):  # a few tries, sooner each time: the run may end before the kill
        ck.unlink(missing_ok=True)
        proc = subprocess.Popen([*args, "--checkpoint", str(ck), "--checkpoint-every", "5",
                                 "--save", str(out)], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while not ck.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        delay = rng.uniform(0.0, 1.0) / 2**attempt
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
            killed_after = delay
            break
        proc.wait(timeout=60)
    assert killed_after is not None, "the run always finished before it could be killed"
    assert ck.exists()
    out.unlink(missing_ok=True)  # killed after writing it, before exiting: resume all the same
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".agnograd-")]
    r = subprocess.run([*args, "--checkpoint", str(ck), "--checkpoint-every", "5", "--resume",
                        str(ck), "--save", str(out)], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert "resumed" in r.stdout
    assert _same(_params(out), _params(full)), f"killed {killed_after:.3f} s after the first checkpoint"
    # A temporary file of the killed write may remain; it is never taken for the checkpoint.
    assert all(name.endswith(".npz.tmp") for name in leftovers)


@pytest.mark.parametrize("capture", [False, True], ids=["eager", "captured"])
def test_a_run_stopped_mid_epoch_resumes_to_identical_parameters(tmp_path, monkeypatch, capture):
    """Deterministic twin of the SIGKILL test: the run dies right after its 13th checkpoint
    (mid-epoch, every 4 steps), and a captured step's optimizer state is restored in place."""
    extra = ["--capture"] if capture else []
    full, ck, out = tmp_path / "full.npz", tmp_path / "ck.npz", tmp_path / "out.npz"
    assert cli.main([*FAST, *extra, "--save", str(full)]) == 0
    real, calls = cli.save_training_state, []

    def dies_after_13(*args, **kwargs):
        real(*args, **kwargs)
        calls.append(kwargs["batch"])
        if len(calls) == 13:
            raise KeyboardInterrupt

    monkeypatch.setattr(cli, "save_training_state", dies_after_13)
    assert cli.main([*FAST, *extra, "--checkpoint", str(ck), "--checkpoint-every", "4"]) == 130
    assert calls[-1] not in (0, None)  # mid-epoch
    monkeypatch.setattr(cli, "save_training_state", real)
    assert cli.main([*FAST, *extra, "--resume", str(ck), "--save", str(out)]) == 0
    assert _same(_params(out), _params(full))


def test_resume_refuses_a_training_state_not_written_by_the_command(tmp_path, capsys):
    path = tmp_path / "other.npz"
    nn.save_training_state(path, model=nn.Linear(2, 2, seed=0), epoch=1)
    assert cli.main([*FAST, "--resume", str(path)]) == 2
    assert "not one written by agnograd train --checkpoint" in capsys.readouterr().err
