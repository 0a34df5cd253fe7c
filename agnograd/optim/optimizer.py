"""``Optimizer``: parameter groups, ``zero_grad``, ``state_dict`` -- the part every method shares."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import agnograd as ag

from ..backends import tracing as _tracing
from ..capture import _state as _capture
from . import _moves

__all__ = ["Optimizer", "ParamGroup"]

ParamGroup = dict[str, Any]


def _real_dtype(dtype: ag.DType) -> ag.DType:
    """The real floating dtype of ``dtype``'s precision (complex64 -> float32, complex128 ->
    float64; a real dtype is itself)."""
    if dtype.kind == "c":
        return ag.float32 if dtype.bits == 64 else ag.float64
    return dtype


def _real_scalar_like(p: ag.Tensor, value: float) -> ag.Tensor:
    """A 0-d array holding ``value`` on ``p``'s backend and device, in its real dtype (float32
    for complex64: a learning rate or step count is real, and a real scalar of the matching
    precision keeps a complex update in ``p``'s dtype). Made by a fill kernel, not copied from
    the host, so it may be created while a step is recorded."""
    with ag.default_backend(p.backend):
        return ag.full((), value, dtype=_real_dtype(p.dtype), device=p.device)


_setdefault = dict.setdefault


class ParamState(dict[int, dict[str, Any]]):
    """An optimizer's per-parameter state: ``id(param) -> {name: value}``, and indexable by the
    parameter itself as PyTorch's ``optimizer.state[p]`` (a Tensor key stands for its ``id``;
    reading a parameter without state gives a new empty dict, kept, as PyTorch's
    ``defaultdict``). Iteration and ``state_dict`` see the integer keys."""

    @staticmethod
    def _key(k: Any) -> Any:
        return id(k) if isinstance(k, ag.Tensor) else k

    def __getitem__(self, k: Any) -> dict[str, Any]:
        if isinstance(k, ag.Tensor):
            return super().setdefault(id(k), {})
        return super().__getitem__(k)

    def __setitem__(self, k: Any, v: dict[str, Any]) -> None:
        super().__setitem__(self._key(k), v)

    def __delitem__(self, k: Any) -> None:
        super().__delitem__(self._key(k))

    def __contains__(self, k: object) -> bool:
        return super().__contains__(self._key(k))

    def get(self, k: Any, default: Any = None) -> Any:
        return super().get(self._key(k), default)

    def setdefault(self, k: Any, default: Any = None) -> Any:
        return super().setdefault(self._key(k), default)

    def pop(self, k: Any, *default: Any) -> Any:
        return super().pop(self._key(k), *default)


class Optimizer(_capture.Holder):
    """Base class: holds parameter groups and per-parameter state.

    ``params`` is an iterable of leaf Tensors (e.g. ``model.parameters()``; one that does not
    require grad now, a frozen weight, is skipped while it has no ``.grad``), of ``(name,
    Tensor)`` pairs (``model.named_parameters()``: the names go to ``group["param_names"]``)
    or of dicts ``{"params": [...], "lr": ...}`` giving a group its own hyperparameters (those
    not given take the constructor's values). ``param_groups`` may be edited between steps (a
    learning-rate schedule sets ``group["lr"]``). The state (momenta, moments, step counts)
    lives on the parameters' own backend and device.

    ``capturable=True`` makes :meth:`step` recordable by :func:`agnograd.capture` (as PyTorch's
    capturable optimizers): what changes from step to step lives on the device -- the learning
    rate as a 0-d array per group, dtype and device (copied from ``group["lr"]`` whenever that
    changes, outside the recording; a scheduler of ``agnograd.optim.lr_scheduler`` sets it), and
    the step counts (Adam, RMSprop, Adagrad) as 0-d arrays in the state, both of the
    parameters' real dtype (float32 for complex64) --
    so a replayed recording reads the current values instead of the ones it was recorded with.
    The updates equal the default path's to floating-point rounding. Without it, ``step()``
    inside a recorded step raises :class:`agnograd.CaptureError`.
    """

    _on_device = ("lr",)  # read from the device by a recording; the others are constants in it
    # Group entries that no step reads: a learning-rate scheduler's record of each group's first
    # rate (``agnograd.optim.lr_scheduler``, as PyTorch's). Accepted in groups and state dicts,
    # and not checked by a recorded step's replays.
    # ``OneCycleLR`` keeps its bounds there too (``max_lr``, ``min_lr``, ``max_momentum``,
    # ``base_momentum``), as PyTorch's.
    _schedule_keys = ("initial_lr", "max_lr", "min_lr", "max_momentum", "base_momentum")
    # PyTorch's implementation switches, found in its groups and state dicts: they choose a
    # kernel, not the numbers, so a group or state dict that holds them (a PyTorch checkpoint)
    # is accepted and they are dropped; ``differentiable=True`` is refused (no step here is
    # differentiated through).
    _torch_switches = ("foreach", "fused", "differentiable", "capturable")

    # What a half-built optimizer reads as (a subclass whose own checks raised before calling
    # this constructor): empty. A recording's scan of the live objects (gc) can find one before
    # it is collected, and its guards must read it without failing.
    capturable = False
    param_groups: list[ParamGroup] = []  # noqa: RUF012 (never mutated: each instance sets its own)
    _moves = 0

    def __init__(self, params: Iterable[ag.Tensor] | Iterable[ParamGroup],
                 defaults: dict[str, Any], capturable: bool = False) -> None:
        # First, before anything can raise: a constructor that fails leaves a half-built object
        # that a recording's scan of the live objects (gc) still finds until it is collected,
        # and its guards must read as an empty optimizer
        self._moves = _moves.EPOCH[0]  # the module conversions followed (see _follow_moves)
        self.param_groups: list[ParamGroup] = []
        self.state: dict[int, dict[str, Any]] = ParamState()  # id(param) (or param) -> its state
        self.defaults = dict(defaults)
        self.capturable = bool(capturable)
        self._device_hyper: dict[tuple[Any, ...], ag.Tensor] = {}  # (group, name, ...) -> 0-d
        self._device_value: dict[tuple[Any, ...], Any] = {}  # the value each one holds
        if isinstance(params, ag.Tensor):  # iterating it would give its rows
            raise TypeError(f"{type(self).__name__}: params must be an iterable of Tensors or "
                            "of dicts (as PyTorch's), not a Tensor; pass [tensor]")
        items = list(params)
        if not items:
            raise ValueError(f"{type(self).__name__} got an empty parameter list")
        groups = items if isinstance(items[0], dict) else [{"params": items}]
        for g in groups:
            if not isinstance(g, dict) or "params" not in g:
                raise TypeError("params must be Tensors or dicts with a 'params' entry, not a mix")
            self.add_param_group(g)

    def add_param_group(self, param_group: ParamGroup) -> None:
        """Add a parameter group, as ``torch.optim.Optimizer.add_param_group`` (e.g. to train
        layers unfrozen during fine-tuning): ``{"params": [...], option: value, ...}``; the
        options not given take the constructor's values.

        Raises:
            TypeError: ``param_group`` is not a dict, its ``params`` a set (unordered) or hold
                something not a Tensor.
            ValueError: a parameter is not a leaf, appears twice, or is already in another
                group; an option this optimizer does not have, or a value it rejects.
        """
        name = type(self).__name__
        if not isinstance(param_group, dict):
            raise TypeError(f"{name}.add_param_group: param_group must be a dict, not "
                            f"{type(param_group).__name__}")
        if "params" not in param_group:
            raise ValueError(f"{name}.add_param_group: the group has no 'params' entry")
        raw = param_group["params"]
        if isinstance(raw, ag.Tensor):
            ps: list[Any] = [raw]
        elif isinstance(raw, (set, frozenset)):
            raise TypeError(f"{name}: parameters must be given in an ordered collection (a list), "
                            "not a set, whose order changes between runs")
        else:
            ps = list(raw)
        names: list[str] | None = None
        if ps and all(isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], str)
                      for x in ps):  # model.named_parameters(), as PyTorch >= 2.6
            names, ps = [n for n, _ in ps], [t for _, t in ps]
        elif any(isinstance(x, tuple) for x in ps):
            raise TypeError(f"{name}: parameters must be all Tensors or all (name, Tensor) pairs "
                            "(model.named_parameters()), not a mix")
        if self.param_groups and (names is not None) != ("param_names" in self.param_groups[0]):
            raise ValueError(f"{name}.add_param_group: all parameter groups must be given with "
                             "names (named_parameters()) or all without, as PyTorch's")
        seen: set[int] = set()
        for p in ps:
            if not isinstance(p, ag.Tensor):
                raise TypeError(f"{name} can only optimise Tensors, not {type(p).__name__}")
            # A leaf that does not require grad now (a frozen weight) is accepted and
            # skipped while it has no .grad, as in PyTorch; unfreezing it trains it.
            if not p.is_leaf:
                raise ValueError(
                    f"{name}: a parameter of shape {p.shape} is not a leaf "
                    "tensor (it is computed from others); pass model.parameters() or "
                    "tensors created with requires_grad=True")
            if id(p) in seen:
                raise ValueError(f"{name}: a parameter appears twice")
            seen.add(id(p))
        others = {id(q) for g in self.param_groups for q in g["params"]}
        if others & seen:
            raise ValueError(f"{name}.add_param_group: some parameters appear in more than one "
                             "parameter group (as PyTorch, each parameter belongs to one group)")
        group = {**self.defaults, **self._without_switches(
            {k: v for k, v in param_group.items() if k not in ("params", "param_names")},
            "add_param_group")}
        for k in group:
            if k not in self.defaults and k not in self._schedule_keys:
                raise ValueError(f"{name}: unknown option {k!r} in a group")
        self._check(group)
        group["params"] = ps
        if names is not None:
            group["param_names"] = names
        self.param_groups.append(group)

    def _check(self, group: ParamGroup) -> None:
        """Validate a group's hyperparameters (subclasses)."""

    def _without_switches(self, group: dict[str, Any], where: str) -> dict[str, Any]:
        """``group`` without PyTorch's implementation switches (``foreach``, ``fused``,
        ``differentiable``, ``capturable``: a PyTorch group or state dict holds them).

        Raises:
            ValueError: ``differentiable=True`` (PyTorch's autograd through the step itself).
        """
        if group.get("differentiable"):
            raise ValueError(f"{type(self).__name__}.{where}: differentiable=True (PyTorch's "
                             "autograd through the optimizer step) is not supported; the update "
                             "runs under no_grad. Drop the entry or set it to False")
        return {k: v for k, v in group.items() if k not in self._torch_switches}

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        if not name.startswith("_"):  # state, param_groups, ...: a compiled step guards them
            _capture.touch()

    def _guard_items(self) -> list[tuple[str, Any]]:
        """What a compiled step (ag.jit, ag.capture) assumes of this optimizer: each group's
        parameters and the hyperparameters a recording holds as constants (all but those read
        from the device when ``capturable``), and every parameter's state (tensors by
        identity)."""
        live = self._on_device if self.capturable else ()
        items: list[tuple[str, Any]] = [("capturable", self.capturable)]
        for gi, g in enumerate(self.param_groups):
            items.append((f"param_groups[{gi}]",
                          {k: v for k, v in g.items() if k not in live}))
        for i, p in enumerate(self._params()):
            items.append((f"state of parameter {i}", self.state.get(id(p))))
        return items

    def _params(self) -> list[ag.Tensor]:
        if _moves.EPOCH[0] != self._moves:
            self._follow_moves()
        return [p for g in self.param_groups for p in g["params"]]

    def _follow_moves(self) -> None:
        """Train the Tensors that replaced parameters since the last look (``Module.astype``,
        ``Module.to_backend`` make new ones; PyTorch's conversions keep the objects, and an
        optimizer made before them goes on training the model): each group's entry, and the
        parameter's state converted as :meth:`load_state_dict` converts it."""
        self._moves = _moves.EPOCH[0]
        changed = False
        for group in self.param_groups:
            ps = group["params"]
            for k, p in enumerate(ps):
                q = _moves.current(p)
                if q is p:
                    continue
                ps[k] = q
                changed = True
                state = self.state.pop(id(p), None)
                if state is not None:
                    self.state[id(q)] = {
                        name: (ag.asarray(ag.to_backend(v, q.backend), device=q.device,
                                          dtype=self._state_dtype(name, k, v, q), copy=True)
                               if isinstance(v, ag.Tensor) else v)
                        for name, v in state.items()}
        if changed:  # device scalars of the old backend, and what a compiled step guards
            self._device_hyper.clear()
            self._device_value.clear()
            _capture.touch()

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradient of every parameter: ``p.grad = None`` (the default, as PyTorch's),
        or with ``set_to_none=False`` fill the existing gradients with zeros in place (detached
        from any graph first, as PyTorch's), so they keep their identity and memory."""
        if set_to_none:
            for p in self._params():
                p.grad = None
            return
        with ag.no_grad():
            for p in self._params():
                g = p.grad
                if g is None:
                    continue
                if g._node is not None or g.requires_grad:
                    g = p.grad = g.detach()
                g[...] = 0

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter that has a gradient, in place.

        ``closure`` (PyTorch's): a function that clears the gradients, computes the loss, calls
        ``backward()`` and returns the loss; it is called first, with gradients enabled, and
        ``step`` returns what it returned (``None`` without a closure).
        """
        loss = None
        if closure is not None:
            with ag.enable_grad():
                loss = closure()
        self._step()
        return loss

    def _step(self) -> None:
        if _capture.capturing():
            if not self.capturable:
                raise _capture.CaptureError(
                    f"{type(self).__name__}.step() inside a step recorded by {_capture.who()}: its "
                    "learning rate (and, for Adam and Adagrad, the step count) are "
                    "Python numbers that the recording would freeze; create the optimizer with "
                    "capturable=True, which keeps them on the device")
            _capture.register(self)
            # The rates as they are now, on every recorded or warm-up call too -- outside the
            # trace: the recording reads the device scalar, it must not re-write it each replay.
            with _tracing.paused():
                self.sync_device_hyperparameters()
        elif self.capturable:
            self.sync_device_hyperparameters()
        if _moves.EPOCH[0] != self._moves:
            self._follow_moves()
        with ag.no_grad():
            for gi, group in enumerate(self.param_groups):
                for p in group["params"]:
                    g = p.grad
                    if g is None:
                        continue
                    state = _setdefault(self.state, id(p), {})  # (dict's own, in C: the hot loop)
                    if self.capturable:
                        group = {**group, "lr": self._device_scalar(gi, "lr", p)}
                    self._update(p, g.detach(), state, group)

    # -- capture -------------------------------------------------------------------------------
    def _device_scalar(self, gi: int, name: str, p: ag.Tensor) -> ag.Tensor:
        """``param_groups[gi][name]`` as a 0-d array of ``p``'s backend, real dtype and device."""
        # The backend's own name even while a step is traced (agnograd.capture.program): the
        # tracing backend wraps the same arrays, and the scalar made before the trace must be
        # found.
        b = p._backend
        key = (gi, name, b.root.name, repr(p.device), p.dtype.name)
        t = self._device_hyper.get(key)
        if t is None:
            value = self.param_groups[gi][name]
            t = _real_scalar_like(p, value)
            self._device_hyper[key] = t
            self._device_value[key] = value
        return t

    def sync_device_hyperparameters(self) -> None:
        """Copy every ``group["lr"]`` that changed into its device scalar (``capturable``).

        :func:`agnograd.capture` calls it before every replay; ``step()`` calls it when it runs
        eagerly.
        """
        if not self._device_hyper:
            return
        stale = [(key, t, value) for key, t in self._device_hyper.items()
                 if self._device_value[key] != (value := self.param_groups[key[0]][key[1]])]
        if not stale:
            return
        with ag.no_grad():
            for key, t, value in stale:
                t[...] = value  # in place: a recording keeps reading the same memory
                self._device_value[key] = value

    def _hyperparameters(self) -> list[dict[str, Any]]:
        """Every group's hyperparameters and parameter list (what a recording saw)."""
        return [{k: (list(v) if k == "params" else v) for k, v in g.items()}
                for g in self.param_groups]

    def _replay_check(self, recorded: list[dict[str, Any]]) -> str | None:
        """Before a replay of a step recorded with ``recorded`` (:meth:`_hyperparameters`):
        what changed that the recording holds as a constant -- the groups, their parameters,
        every hyperparameter but those read from the device -- in words; ``None`` if nothing
        did, after copying the learning rates to the device."""
        name = type(self).__name__
        if len(recorded) != len(self.param_groups):
            return (f"{name} has {len(self.param_groups)} parameter group(s); the step was "
                    f"recorded with {len(recorded)}")
        live = self._on_device if self.capturable else ()
        for gi, (group, rec) in enumerate(zip(self.param_groups, recorded)):
            if group.keys() != rec.keys():
                return f"{name}.param_groups[{gi}] gained or lost an entry"
            for k, v in rec.items():
                now = group[k]
                if k == "params":
                    if len(now) != len(v) or any(a is not b for a, b in zip(now, v)):
                        return f"{name}.param_groups[{gi}]['params'] now holds other tensors"
                elif k not in live and not (now is v or now == v):
                    return f"{name}.param_groups[{gi}][{k!r}] changed from {v!r} to {now!r}"
        self.sync_device_hyperparameters()
        return None

    def _update(self, p: ag.Tensor, g: ag.Tensor, state: dict[str, Any], group: ParamGroup) -> None:
        raise NotImplementedError

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """``{"state": {index: {...}}, "param_groups": [{hyperparameters, "params": [index]}]}``:
        parameters are numbered in order across groups. The state tensors are detached but not
        copied."""
        index = {id(p): i for i, p in enumerate(self._params())}
        state = {index[k]: {n: (v.detach() if isinstance(v, ag.Tensor) else v) for n, v in s.items()}
                 for k, s in self.state.items() if k in index}
        groups = [{**{k: v for k, v in g.items() if k != "params"},
                   "params": [index[id(p)] for p in g["params"]]} for g in self.param_groups]
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`: hyperparameters and state, each state tensor moved to its
        parameter's backend and device. Everything is checked first; on error nothing changes.

        Raises:
            ValueError: the groups or parameter counts differ, or a state tensor's shape does not
                fit its parameter.
        """
        groups = state_dict.get("param_groups")
        saved = state_dict.get("state", {})
        if not isinstance(groups, list) or len(groups) != len(self.param_groups):
            theirs = len(groups) if isinstance(groups, list) else "no"
            raise ValueError(f"{type(self).__name__}.load_state_dict: {len(self.param_groups)} "
                             f"parameter group(s) here, {theirs} in the state dict")
        params = self._params()
        for mine, theirs in zip(self.param_groups, groups):
            if len(mine["params"]) != len(theirs.get("params", [])):
                raise ValueError(f"{type(self).__name__}.load_state_dict: a group has "
                                 f"{len(mine['params'])} parameters here and "
                                 f"{len(theirs.get('params', []))} in the state dict")
        new_state: dict[int, dict[str, Any]] = {}
        for i, entry in saved.items():
            i = int(i)
            if not 0 <= i < len(params):
                raise ValueError(f"{type(self).__name__}.load_state_dict: state for parameter {i}, "
                                 f"but there are {len(params)}")
            p = params[i]
            converted = {}
            for name, v in entry.items():
                if isinstance(v, ag.Tensor) or hasattr(v, "shape"):
                    t = v if isinstance(v, ag.Tensor) else ag.tensor(v)
                    if t.shape != p.shape and t.ndim != 0:
                        raise ValueError(f"{type(self).__name__}.load_state_dict: state {name!r} "
                                         f"of parameter {i} has shape {t.shape}, the parameter "
                                         f"{p.shape}")
                    t = ag.asarray(ag.to_backend(t.detach(), p.backend), device=p.device,
                                   dtype=self._state_dtype(name, i, t, p), copy=True)
                    converted[name] = t
                else:
                    converted[name] = copy.deepcopy(v)
            new_state[id(p)] = converted
        new_groups = []
        for mine, theirs in zip(self.param_groups, groups):
            group = {**{k: v for k, v in mine.items() if k != "params"},
                     **self._without_switches({k: copy.deepcopy(v) for k, v in theirs.items()
                                               if k != "params"}, "load_state_dict")}
            unknown = [k for k in group if k not in self.defaults and k not in self._schedule_keys
                       and k != "param_names"]
            if unknown:
                raise ValueError(f"{type(self).__name__}.load_state_dict: unknown option(s) "
                                 f"{', '.join(map(repr, unknown))}")
            self._check(group)
            new_groups.append(group)
        for mine, group in zip(self.param_groups, new_groups):
            mine.update(group)
        self.state = ParamState(new_state)

    def _state_dtype(self, name: str, i: int, t: ag.Tensor, p: ag.Tensor) -> ag.DType | None:
        """The dtype a loaded state tensor ``t`` takes for parameter ``p``: ``p``'s own for a
        moment of its kind, the real dtype of ``p``'s precision for a real 0-d entry (a step
        count, as PyTorch's float32 one; real also for a complex parameter).

        Raises:
            ValueError: a moment of ``p``'s shape that is real for a complex ``p`` or complex
                for a real one (the state dict was saved for another parameter).
        """
        kind, pkind = t.dtype.kind, p.dtype.kind
        if pkind not in ("f", "c"):
            return None
        if t.ndim == 0 and kind in ("f", "i", "u"):
            return _real_dtype(p.dtype)  # a count: real, in the parameter's precision
        if kind not in ("f", "c"):
            return None
        if kind != pkind:
            raise ValueError(f"{type(self).__name__}.load_state_dict: state {name!r} of parameter "
                             f"{i} is {t.dtype.name} and the parameter {p.dtype.name}; a complex "
                             "parameter keeps complex moments (real and imaginary parts per "
                             "component, as PyTorch), a real one real moments. The state dict "
                             "was saved for another parameter")
        return p.dtype

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}("]
        for i, g in enumerate(self.param_groups):
            opts = ", ".join(f"{k}={v}" for k, v in g.items() if k != "params")
            lines.append(f"  group {i}: {len(g['params'])} tensors, {opts}")
        lines.append(")")
        return "\n".join(lines)
