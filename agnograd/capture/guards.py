"""Guards: what a recording assumed about the world outside its arrays, checked before a replay.

A staged recording (:mod:`.program`) replays backend calls on arrays. Everything else it
assumed is frozen in it: which leaves have a ``.grad`` (the backward either makes one or adds
to it), which tensors require grad, what a module's attributes and an optimizer's groups and
state point to, the hyperparameters it holds as constants, the gradient and anomaly modes, the
default dtype and backend. A replay is right only while all of that is still true, so each
recording keeps a :class:`Guards` and ``check()`` says -- before anything runs -- whether the
world is still the recorded one, or names what changed. ``ag.jit`` then records again for the
new world (another cache entry); ``ag.capture`` re-records a staged replay and refuses to
replay a CUDA graph.

Cost per call, linear in the leaves: one tuple of ``t._grad is None`` over the leaves that
require grad plus four global modes (a generated function), an integer compare of the world
epoch (``_state.WORLD``, bumped by every ``requires_grad`` switch, ``.grad`` assignment, hook,
Module attribute assignment and optimizer state replacement), and each optimizer's
``param_groups`` compared with what the last check saw (identity first, in C). Only when the
epoch moved are the guarded modules and optimizers walked (:func:`snapshot`).

What is *not* guarded -- as in ``jax.jit``: Python globals and closure variables the step reads
(a rebound global Tensor is not seen; a Tensor held by a Module or an optimizer is), and the
values inside arrays (those are the replay's inputs: in-place updates are always seen).
"""

from __future__ import annotations

from collections.abc import Callable
from operator import is_
from typing import Any

from .. import _dtypes
from .._tensor import Tensor
from ..autograd.mode import anomaly_mode, grad_mode
from ..backends import default_backend_name
from ._state import WORLD, Holder

__all__ = ["Guards", "snapshot", "Fresh", "describe_tensor", "world_now", "diff", "walk_items"]

_SCALARS = (int, float, bool, str, complex, bytes, type(None))


class Fresh:
    """A guarded slot that the step itself rebinds to a new Tensor on every call: the replay
    reads it and stores a new Tensor there, so only its kind is checked (a Tensor of this
    backend), not its identity."""

    __slots__ = ("backend",)

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    def matches(self, v: Any) -> bool:
        return type(v) is Tensor and v._backend is self.backend and v._node is None


def _walk(path: str, v: Any, out: list[tuple[str, str, Any]], depth: int) -> None:
    t = type(v)
    if t is Tensor or isinstance(v, Holder):
        out.append((path, "is", v))
    elif v is None or t in _SCALARS:
        out.append((path, "eq", v))
    elif (t is list or t is tuple) and depth < 6:
        out.append((path, "len", len(v)))
        for i, e in enumerate(v):
            _walk(f"{path}[{i}]", e, out, depth + 1)
    elif t is dict and depth < 6:
        out.append((path, "keys", tuple(v)))
        for k, e in v.items():
            _walk(f"{path}[{k!r}]", e, out, depth + 1)
    else:  # functions, dtypes, arrays held as constants, ...: by identity
        out.append((path, "is", v))


def walk_items(name: str, v: Any, out: list[tuple[str, str, Any]]) -> None:
    """Append the snapshot entries of one item ``name`` holding ``v`` to ``out``."""
    _walk(name, v, out, 0)


def snapshot(h: Holder) -> list[tuple[str, str, Any]]:
    """``(path, how, value)`` for everything a recording assumes of holder ``h``: Tensors,
    holders and other objects by identity (``"is"``), Python values by equality (``"eq"``),
    containers by length or keys and then element by element."""
    out: list[tuple[str, str, Any]] = []
    for name, v in h._guard_items():
        _walk(name, v, out, 0)
    return out


def holder_name(h: Holder) -> str:
    return type(h).__name__


def describe_tensor(t: Any) -> str:
    if type(t) is not Tensor:
        return type(t).__name__
    return f"a Tensor of shape {tuple(t.data.shape)}"


def diff(h: Holder, recorded: list[tuple[str, str, Any]],
         now: list[tuple[str, str, Any]]) -> str | None:
    """``None`` if ``now`` satisfies ``recorded``; else what changed, in words."""
    for k, (path, how, want) in enumerate(recorded):
        if k >= len(now):
            return f"{holder_name(h)}.{path} is gone"
        p2, how2, got = now[k]
        if p2 != path or how2 != how:
            return f"{holder_name(h)}.{path} changed its structure"
        if how == "is":
            if type(want) is Fresh:
                if not want.matches(got):
                    return f"{holder_name(h)}.{path} no longer holds a Tensor of its backend"
            elif got is not want:
                return (f"{holder_name(h)}.{path} now points to another object "
                        f"({describe_tensor(got)})")
        elif not (got is want or got == want):
            return f"{holder_name(h)}.{path} changed from {want!r} to {got!r}"
    if len(now) != len(recorded):
        return f"{holder_name(h)}.{now[len(recorded)][0]} is new"
    return None


def _elements(c: Any, recorded: list[tuple[str, str, Any]], name: str) -> list[Any]:
    """The elements of container ``c`` (a list, or a dict's values) as the recording saw them
    (its snapshot entries ``name[i]``), to compare by identity on every call."""
    want = {p: v for p, how, v in recorded if how in ("is", "eq")}
    keys = range(len(c)) if type(c) is list else c.keys()
    return [want.get(f"{name}[{k!r}]" if type(c) is dict else f"{name}[{k}]", _GONE)
            for k in keys]


_GONE = object()


def _quick_key_fn(leaves: list[Tensor], containers: list[tuple[Any, list[Any]]]
                  ) -> Callable[[], tuple[Any, ...]]:
    """A generated function of no arguments returning the per-call key: the global modes, for
    each leaf that requires grad whether its ``.grad`` is None (the engine writes ``_grad``
    without going through the setter, so this part is read on every call), and last whether
    every element of the guarded plain containers is still the recorded object (straight-line
    identity tests: a list or dict mutated in place moves no epoch)."""
    names = [f"t{k}" for k in range(len(leaves))]
    parts = ["gm.enabled", "am.enabled", "dt._default_float", "dn()"]
    parts += [f"{n}._grad is None" for n in names]
    tests = []
    objs: list[Any] = []
    for c, items in containers:
        cn = f"o{len(objs)}"
        objs.append(c)
        tests.append(f"len({cn}) == {len(items)}")
        keys = range(len(items)) if type(c) is list else list(c.keys())
        for k, e in zip(keys, items):
            en = f"o{len(objs)}"
            objs.append(e)
            get = f"{cn}[{k}]" if type(c) is list else f"{cn}.get({k!r}, G)"
            tests.append(f"{get} is {en}")
    parts.append(" and ".join(tests) if tests else "True")
    args = ", ".join(["gm", "am", "dt", "dn", "G", *names, *(f"o{i}" for i in range(len(objs)))])
    src = (f"def _make({args}):\n"
           f"    def key():\n"
           f"        return ({', '.join(parts)},)\n"
           f"    return key\n")
    ns: dict[str, Any] = {}
    exec(compile(src, "<agnograd guards>", "exec"), ns)  # noqa: S102 - our own code
    key: Callable[[], tuple[Any, ...]] = ns["_make"](grad_mode, anomaly_mode, _dtypes,
                                                     default_backend_name, _GONE, *leaves, *objs)
    return key


def world_now(tensors: Any) -> tuple[tuple[Any, ...], dict[int, bool]]:
    """The start of a recorded call, for :class:`Guards`: the global modes, and whether each of
    ``tensors`` has no ``.grad``."""
    return ((grad_mode.enabled, anomaly_mode.enabled, _dtypes._default_float,
             default_backend_name()), {id(t): t._grad is None for t in tensors})


_KEY_NAMES = ("gradient mode (ag.no_grad / ag.enable_grad)", "anomaly mode (ag.detect_anomaly)",
              "default dtype (ag.set_default_dtype)", "default backend (ag.default_backend)")


class Guards:
    """The guards of one recording.

    Args:
        leaves: the leaf Tensors that require grad and that the recording reads or whose
            gradient it makes (their ``.grad`` being ``None`` or not is checked every call).
        holders: the modules and optimizers whose structure the recording assumed, with their
            :func:`snapshot` as it must be at the start of a replay.
        optimizers: ``(optimizer, its hyperparameters as recorded)`` for every optimizer the
            step stepped.
        flags: ``(tensor, (requires_grad, hooks))`` as recorded for every leaf it touches.
    """

    __slots__ = ("leaves", "key", "_quick", "holders", "optimizers", "flags", "epoch", "_seen",
                 "containers")

    def __init__(self, leaves: list[Tensor], holders: list[tuple[Holder, list[Any]]],
                 optimizers: list[tuple[Any, Any]], flags: list[tuple[Tensor, Any]],
                 start: tuple[tuple[Any, ...], dict[int, bool]]) -> None:
        self.leaves = leaves
        self.flags = flags
        self.holders = holders
        self.optimizers = optimizers
        self.epoch = WORLD[0]
        self._seen: list[Any] = [None] * len(optimizers)
        # Plain lists and dicts held by the guarded modules (``Sequential.layers``, a list of
        # buffers): mutated in place they move no epoch, so their elements are compared by
        # identity on every call (the last entry of the quick key).
        self.containers: list[tuple[Any, list[Any]]] = []
        for h, recorded in holders:
            d = getattr(h, "__dict__", {})
            for name, v in h._guard_items():
                if (type(v) is list or type(v) is dict) and d.get(name) is v:
                    self.containers.append((v, _elements(v, recorded, name)))
        self._quick = _quick_key_fn(leaves, self.containers)
        modes, grad_none = start
        self.key = (*modes, *(grad_none.get(id(t), t._grad is None) for t in leaves), True)

    def quick(self) -> tuple[Any, ...]:
        return self._quick()

    def check(self, key: tuple[Any, ...] | None = None) -> str | None:
        """``None`` when a replay may run now; else what changed, in words. ``key`` is
        :meth:`quick`'s value if the caller has it."""
        if key is None:
            key = self._quick()
        moved = WORLD[0] != self.epoch
        if key != self.key:
            if key[:-1] != self.key[:-1]:
                return self._why_key(key)
            moved = True  # a guarded list or dict was changed in place: say how
        if moved:
            for t, (req, hooks) in self.flags:
                if t._requires_grad is not req:
                    now = "now requires" if t._requires_grad else "no longer requires"
                    return (f"{describe_tensor(t)} {now} grad (frozen or unfrozen since the "
                            "step was recorded)")
                if (t._hooks and tuple(t._hooks)) != hooks:
                    return f"the hooks of {describe_tensor(t)} changed"
            for h, recorded in self.holders:
                why = diff(h, recorded, snapshot(h))
                if why is not None:
                    return why
            self.epoch = WORLD[0]
        for k, (opt, recorded) in enumerate(self.optimizers):
            seen = self._seen[k]
            # The common call changes nothing: the groups equal what the last check saw (lists
            # of dicts compared in C, identity first; each group's parameter list by identity,
            # since it may be mutated in place), and the device scalars still hold them (an
            # eager step in between may have synced another rate).
            groups = opt.param_groups
            if (seen is not None and groups == seen[0] and opt._device_value == seen[1]
                    and all(len(g["params"]) == len(ps) and all(map(is_, g["params"], ps))
                            for g, ps in zip(groups, seen[2]))):
                continue
            changed: str | None = opt._replay_check(recorded)
            if changed is not None:
                return changed
            self._seen[k] = ([dict(g) for g in groups], dict(opt._device_value),
                             [list(g["params"]) for g in groups])
        return None

    def _why_key(self, key: tuple[Any, ...]) -> str:
        for k, name in enumerate(_KEY_NAMES):
            if key[k] != self.key[k]:
                return f"the {name} changed from {self.key[k]!r} to {key[k]!r}"
        for t, was, now in zip(self.leaves, self.key[4:-1], key[4:-1]):
            if was != now:
                state = "has no .grad" if now else "has a .grad"
                before = "had none" if was else "had one"
                return (f"a leaf ({describe_tensor(t)}) {state} now and {before} when the step "
                        "was recorded (zero_grad(set_to_none), gradient accumulation, or .grad "
                        "assigned)")
        return "the world changed"  # pragma: no cover - the keys differ somewhere above
