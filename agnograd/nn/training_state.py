"""Resumable training: :func:`save_training_state` and :func:`load_training_state`.

One ``.npz`` file (no pickle) holds the model's tensors, the optimizer's state and
hyperparameters, a scheduler's state, the state of host random generators (shuffling, dropout
masks) and any JSON-serialisable counters and settings, with a SHA-256 checksum of all of it. It
is written atomically (a temporary file in the same folder, flushed and fsynced, then renamed
over the old one), so a crash while writing leaves the previous checkpoint intact; a truncated
or altered file is refused on load.

(Not to be confused with :func:`agnograd.checkpoint`, which recomputes activations to save
memory.)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import agnograd as ag

from ..backends.host import CorruptFileError, HostRNG, load_checked_npz, save_checked_npz
from .module import Module, convert_linear_layout

__all__ = ["save_training_state", "load_training_state", "CorruptFileError"]

_FORMAT = "agnograd-training-state"
# 1: agnograd 0.1, Linear weights (and their optimizer state) stored as (in, out); read by
# transposing them. 2: (out, in), as PyTorch.
_VERSION = 2


def _json_value(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_json_value(x) for x in v]
    if isinstance(v, list):
        return [_json_value(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _json_value(x) for k, x in v.items()}
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    raise TypeError(f"save_training_state: cannot store a {type(v).__name__} ({v!r}); only "
                    "numbers, strings, lists and dicts of them (and Tensors in state dicts)")


def _rngs(rng: HostRNG | Mapping[str, HostRNG] | None, model: Module | None) -> dict[str, HostRNG]:
    out: dict[str, HostRNG] = {}
    if isinstance(rng, HostRNG):
        out[""] = rng
    elif rng is not None:
        out.update({f"{k}": r for k, r in rng.items()})
    if model is not None:  # the generators layers draw from (Dropout's masks)
        for name, m in model.named_modules():
            r = vars(m).get("_rng")
            if isinstance(r, HostRNG):
                out[f"module:{name}"] = r
    return out


def save_training_state(path: str | os.PathLike[str], *, model: Module | None = None,
                        optimizer: Any = None, scheduler: Any = None,
                        rng: HostRNG | Mapping[str, HostRNG] | None = None,
                        **info: Any) -> None:
    """Write everything a run needs to continue exactly where it stopped to ``path`` (``.npz``).

    Args:
        path: the file; replaced atomically (the previous version survives a crash).
        model: its :meth:`~Module.state_dict`, and the state of the random generators its
            layers hold (e.g. :class:`Dropout`'s).
        optimizer: an :class:`agnograd.optim.Optimizer`: its ``state_dict()``.
        scheduler: an ``agnograd.optim.lr_scheduler`` scheduler: its ``state_dict()``.
        rng: a host generator (:func:`agnograd.nn.host_rng`) or a mapping name -> generator,
            e.g. the one that shuffles the data.
        **info: anything JSON-serialisable: epoch and step counters, the run's settings.
    """
    arrays: dict[str, Any] = {}
    meta: dict[str, Any] = {"format": _FORMAT, "version": _VERSION, "info": _json_value(info)}
    if model is not None:
        model_state = model.state_dict()
        for name, t in model_state.items():
            arrays[f"model/{name}"] = t.data
        meta["model"] = sorted(model_state)
    if optimizer is not None:
        sd = optimizer.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for i, entry in sd["state"].items():
            for k, v in entry.items():
                if isinstance(v, ag.Tensor):
                    arrays[f"optimizer/{i}/{k}"] = v.data
                else:
                    scalars.setdefault(str(i), {})[k] = _json_value(v)
        meta["optimizer"] = {"type": type(optimizer).__name__,
                             "param_groups": _json_value(sd["param_groups"]),
                             "tensors": {str(i): sorted(k for k, v in e.items() if isinstance(v, ag.Tensor))
                                         for i, e in sd["state"].items()},
                             "scalars": scalars}
    if scheduler is not None:
        meta["scheduler"] = {"type": type(scheduler).__name__,
                             "state": _json_value(scheduler.state_dict())}
    meta["rng"] = {k: _json_value(r.bit_generator.state) for k, r in _rngs(rng, model).items()}
    save_checked_npz(path, arrays, meta)


def load_training_state(path: str | os.PathLike[str], *, model: Module | None = None,
                        optimizer: Any = None, scheduler: Any = None,
                        rng: HostRNG | Mapping[str, HostRNG] | None = None) -> dict[str, Any]:
    """Restore what :func:`save_training_state` wrote into the given objects (each one given
    must have been saved) and return the ``**info`` it was given.

    The checksum is verified before anything is changed.

    Raises:
        FileNotFoundError: no such file.
        agnograd.nn.CorruptFileError: the file is truncated, altered, or not a training state.
        StateDictError: the model does not fit the saved tensors.
        ValueError: the optimizer, scheduler or generators do not fit what was saved.
    """
    target = os.fspath(path)
    arrays, meta = load_checked_npz(target)
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        raise CorruptFileError(f"{target!r} is not a training state written by "
                               "save_training_state")
    version = meta.get("version")
    if version not in (1, _VERSION):
        raise ValueError(f"{target!r}: training-state format version {version}, this "
                         f"agnograd reads versions 1 and {_VERSION}")
    if version == 1 and optimizer is not None and model is None:
        raise ValueError(f"{target!r} was written by agnograd 0.1, which stored Linear weights "
                         "transposed; pass model= as well, so that the optimizer's state of "
                         "those weights can be converted")

    def need(key: str, what: str) -> Any:
        if key not in meta:
            raise ValueError(f"{target!r} holds no {what} state (it was saved without one)")
        return meta[key]

    rngs = _rngs(rng, model)
    saved_rngs = meta.get("rng", {})
    if model is not None:  # layers' generators saved under Sequential's old names (layers.2)
        layers = {k[len("module:"):]: v for k, v in saved_rngs.items() if k.startswith("module:")}
        saved_rngs = {**{k: v for k, v in saved_rngs.items() if not k.startswith("module:")},
                      **{f"module:{k}": v for k, v in model._modern_names(layers).items()}}
    missing = [k for k in rngs if k not in saved_rngs]
    if missing:
        raise ValueError(f"{target!r} holds no state for the random generator(s) "
                         f"{', '.join(map(repr, missing))}")
    opt_sd = None
    if optimizer is not None:
        saved = need("optimizer", "optimizer")
        if saved["type"] != type(optimizer).__name__:
            raise ValueError(f"{target!r} holds the state of a {saved['type']} optimizer, not of a "
                             f"{type(optimizer).__name__}")
        state: dict[int, dict[str, Any]] = {}
        for i, names in saved["tensors"].items():
            state.setdefault(int(i), {}).update({k: arrays[f"optimizer/{i}/{k}"] for k in names})
        for i, entries in saved["scalars"].items():
            state.setdefault(int(i), {}).update(entries)
        if version == 1 and model is not None:
            _transpose_linear_state(model, optimizer, state)
        groups = []
        for mine, theirs in zip(optimizer.param_groups, saved["param_groups"]):
            groups.append({k: (tuple(v) if isinstance(mine.get(k), tuple) and isinstance(v, list)
                               else v) for k, v in theirs.items()})
        groups += saved["param_groups"][len(groups):]
        opt_sd = {"state": state, "param_groups": groups}
    if scheduler is not None:
        saved = need("scheduler", "scheduler")
        if saved["type"] != type(scheduler).__name__:
            raise ValueError(f"{target!r} holds the state of a {saved['type']}, not of a "
                             f"{type(scheduler).__name__}")
    if model is not None:
        need("model", "model")
        model_arrays = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
        model_arrays = dict(model._modern_names(model_arrays))  # Sequential's old names
        if version == 1:
            model_arrays = convert_linear_layout(model, model_arrays, repr(target))
        model.load_state_dict(model_arrays)
    if optimizer is not None:
        optimizer.load_state_dict(opt_sd)
    if scheduler is not None:
        scheduler.load_state_dict(meta["scheduler"]["state"])
    for k, r in rngs.items():
        r.bit_generator.state = saved_rngs[k]
    info: dict[str, Any] = meta.get("info", {})
    return info


def _transpose_linear_state(model: Module, optimizer: Any, state: dict[int, dict[str, Any]]
                            ) -> None:
    """In the optimizer state read from a version-1 file, transpose the 2-d state arrays
    (momenta, moments) of ``model``'s Linear weights to the weights' (out, in) layout."""
    weights = {id(t) for m in model.modules() for a in type(m)._legacy_transposed
               if isinstance(t := vars(m).get(a), ag.Tensor) and t.ndim == 2}
    for i, p in enumerate(optimizer._params()):
        if id(p) not in weights or i not in state:
            continue
        for k, v in state[i].items():
            if getattr(v, "ndim", 0) == 2 and tuple(v.shape) == (p.shape[1], p.shape[0]):
                host = ag.tensor(v, backend="numpy")
                state[i][k] = ag.asarray(ag.matrix_transpose(host), copy=True).data
