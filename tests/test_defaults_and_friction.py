"""One default float dtype (ag.set_default_dtype), the once-only warning for a model called on
another float dtype, the gradient check's time kept out of the wall time, the Dask warning on
small data, and the options table of docs/getting-started.md against the parser."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest

import agnograd as ag
from agnograd import cli, nn
from agnograd.nn import module as nn_module

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def default_dtype():
    yield
    ag.set_default_dtype(None)


def test_unset_default_keeps_each_backends_own(default_dtype):
    assert ag.get_default_dtype() is None
    assert ag.tensor(1.0).dtype == ag.float64 and ag.zeros(2).dtype == ag.float64  # NumPy
    assert nn.Linear(2, 2, seed=0).weight.dtype == ag.float32


@pytest.mark.parametrize("want", [ag.float32, ag.float64])
@pytest.mark.parametrize("backend", ["numpy", "array_api_strict"])
def test_set_default_dtype_reaches_data_creation_and_layers(default_dtype, want, backend):
    ag.set_default_dtype(want)
    assert ag.get_default_dtype() == want
    with ag.default_backend(backend):
        made = [ag.tensor(1.0), ag.tensor([1.0, 2.0]), ag.asarray([0.5]), ag.zeros(2), ag.ones(2),
                ag.empty(2), ag.eye(2), ag.full(2, 1.5), ag.linspace(0, 1, 3),
                ag.arange(0.0, 1.0, 0.5)]
        assert [t.dtype for t in made] == [want] * len(made)
        complex_ = ag.complex64 if want == ag.float32 else ag.complex128
        assert ag.tensor(1j).dtype == complex_
        # Integers stay integers; arrays passed in keep their dtype.
        assert ag.full(2, 1).dtype == ag.int64 and ag.arange(3).dtype == ag.int64
        assert ag.tensor([1, 2]).dtype == ag.int64
        assert ag.tensor(np.ones(2, dtype=np.float32)).dtype == ag.float32
        assert ag.tensor(1.0, dtype=ag.float64).dtype == ag.float64  # an explicit dtype wins
        layer = nn.Linear(3, 2, seed=0, backend=backend)
        assert layer.weight.dtype == want and layer.bias.dtype == want
        assert nn.MLP([3, 4, 2], seed=0, backend=backend).layers[1].weight.dtype == want
        assert nn.init.glorot_uniform((2, 2), seed=0).dtype == want
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # data and model agree: no warning
            layer(ag.tensor([[1.0, 2.0, 3.0]]))


def test_set_default_dtype_refuses_other_dtypes(default_dtype):
    with pytest.raises(TypeError, match="float32 or float64"):
        ag.set_default_dtype(ag.int32)


def test_a_model_called_on_another_float_dtype_warns_once(monkeypatch):
    monkeypatch.setattr(nn_module, "_warned_dtypes", set())
    model = nn.MLP([3, 4, 2], seed=0)                       # float32
    x64 = ag.tensor(np.ones((2, 3)))                         # float64 (NumPy's default)
    with pytest.warns(UserWarning, match=r"Linear with float32 parameters got a float64 input .*"
                      r"computes it in float64.*ag.astype\(x, ag.float32\).*set_default_dtype"):
        model(x64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model(x64)                                           # once
        model(ag.astype(x64, ag.float32))                    # matching dtypes: silent
        model(ag.tensor(np.ones((2, 3), dtype=np.int64)))    # integers: not a float mix-up
    with pytest.warns(UserWarning, match="float64 parameters got a float32 input"):
        nn.Linear(3, 2, seed=0, dtype=ag.float64)(ag.astype(x64, ag.float32))


def test_the_gradient_check_is_timed_apart_from_training(capsys):
    result = cli.train(cli.TrainConfig(epochs=0, hidden=4, progress=False, check_grad=True))
    out = capsys.readouterr().out
    assert result.grad_check_time is not None and result.grad_check_time > 0
    assert re.search(r"float64 \(\d+\.\d+ s, not counted in the wall time\)", out)
    assert result.wall_time < result.grad_check_time + 60  # the check is not inside


def test_dask_on_small_data_warns_what_it_is_for():
    pytest.importorskip("dask")
    X = ag.tensor(np.ones((100, 64), dtype=np.float32), backend="dask")
    with pytest.warns(UserWarning, match="fit in memory many times over.*Dask is for arrays larger"):
        cli._warn_if_lazy_for_nothing(cli.TrainConfig(backend="dask"), X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cli._warn_if_lazy_for_nothing(cli.TrainConfig(), ag.tensor(np.ones(2)))
    sub = cli.build_parser()._subparsers._group_actions[0].choices["train"]  # type: ignore[union-attr]
    assert "dask is for data larger than memory" in " ".join(sub.format_help().split())


def test_every_train_option_is_in_the_getting_started_table():
    text = (ROOT / "docs" / "getting-started.md").read_text()
    table = set(re.findall(r"^\| `(--[a-z-]+)", text, flags=re.M))
    sub = cli.build_parser()._subparsers._group_actions[0].choices["train"]  # type: ignore[union-attr]
    options = {o for a in sub._actions for o in a.option_strings if o.startswith("--")} - {"--help"}
    assert options <= table, f"missing from docs/getting-started.md: {sorted(options - table)}"
