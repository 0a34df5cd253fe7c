"""``ag.jit``: one staged recording per input signature, for functions called with changing shapes.

``f = ag.jit(fn)`` (or ``@ag.jit``): each call looks up the signature of its arguments -- the
pytree structure, each tensor leaf's backend, shape, dtype, device and ``requires_grad``, and
every other leaf's value (a constant) -- in a bounded LRU cache of staged programs
(:mod:`agnograd.capture.program`). A hit replays the recorded backend calls on the new arrays and returns
fresh Tensors. A new signature is first called eagerly ``warmup`` times under the capture-safety
checker (optimizers make their state on their first step, which must not be recorded), then
traced: the tracing call is itself a real call, and its outputs are returned.

A function that is not capture-safe raises :class:`~agnograd.CaptureError` naming the op,
unless ``fallback="eager"``: that signature then runs eagerly from then on.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from .._tensor import Tensor
from ..backends import Backend, backend_of_array
from ..pytree import tree_flatten, tree_unflatten
from . import _state as _capture_state
from ._state import CaptureError
from .program import StagedProgram, can_stage, trace_step

__all__ = ["jit", "JitFunction"]


def jit(fn: Callable[..., Any] | None = None, *, cache_size: int = 16, warmup: int = 1,
        fallback: str | None = None) -> Any:
    """Stage ``fn`` per input signature (usable as ``@ag.jit`` or ``@ag.jit(cache_size=4)``).

    Args:
        fn: the function; Tensors (or arrays) at the leaves of its arguments are inputs, other
            leaves constants of a recording.
        cache_size: recordings kept (least recently used dropped first).
        warmup: eager calls of a new signature before it is traced (0 traces the first call).
        fallback: ``"eager"`` to run a signature eagerly when it cannot be traced.
    """
    if fn is None:
        return lambda f: JitFunction(f, cache_size, warmup, fallback)
    return JitFunction(fn, cache_size, warmup, fallback)


class _Entry:
    __slots__ = ("program", "treedef", "positions", "participants", "hyper", "eager", "seen")

    def __init__(self) -> None:
        self.program: StagedProgram | None = None
        self.eager = False
        self.seen = 0
        self.participants: list[Any] = []
        self.hyper: list[Any] = []
        self.treedef: Any = None
        self.positions: Any = None


def _leaf_key(x: Any) -> tuple[Any, ...] | None:
    if type(x) is Tensor:
        d = x.data
        return ("T", x._backend.name, tuple(d.shape), str(d.dtype), str(x.device), x._requires_grad)
    b = backend_of_array(x)
    if b is not None:
        return ("A", b.name, tuple(x.shape), str(x.dtype), str(b.device_of(x)))
    return None


class JitFunction:
    """The staged function :func:`jit` returns; ``cache_info()`` says what it holds."""

    def __init__(self, fn: Callable[..., Any], cache_size: int, warmup: int,
                 fallback: str | None) -> None:
        if not callable(fn):
            raise TypeError(f"ag.jit: fn must be callable, not {type(fn).__name__}")
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 1:
            raise ValueError(f"ag.jit: cache_size must be a positive integer, not {cache_size!r}")
        if fallback not in (None, "eager"):
            raise ValueError(f"ag.jit: fallback must be None or 'eager', not {fallback!r}")
        self.fn = fn
        self.cache_size = cache_size
        self.warmup = max(0, int(warmup))
        self.fallback = fallback
        self._cache: OrderedDict[Any, _Entry] = OrderedDict()
        self.traces = 0
        self.__wrapped__ = fn
        self.__name__ = getattr(fn, "__name__", "jit")
        self.__doc__ = getattr(fn, "__doc__", None)

    def cache_info(self) -> dict[str, int]:
        return {"size": len(self._cache), "maxsize": self.cache_size, "traces": self.traces}

    def _signature(self, leaves: list[Any], treedef: Any) -> tuple[Any, list[int], Backend | None]:
        key: list[Any] = [treedef]
        positions = []
        backend = None
        for i, x in enumerate(leaves):
            k = _leaf_key(x)
            if k is None:
                try:
                    hash(x)
                    key.append(("C", type(x), x))
                except TypeError:
                    key.append(("C", type(x), id(x)))
                continue
            key.append(k)
            positions.append(i)
            if backend is None:
                backend = x._backend if type(x) is Tensor else backend_of_array(x)
        return tuple(key), positions, backend

    def __call__(self, *args: Any) -> Any:
        leaves, treedef = tree_flatten(args)
        key, positions, backend = self._signature(leaves, treedef)
        entry = self._cache.get(key)
        if entry is not None:
            self._cache.move_to_end(key)
            program = entry.program
            if program is not None:
                for opt, seen in zip(entry.participants, entry.hyper):
                    opt._before_replay(seen)
                vals = program.run([leaves[i] for i in positions])
                outs = [(Tensor._wrap(vals[k], program.backend) if ist else vals[k])
                        if kind == "ref" else (Tensor._wrap(v, program.backend) if kind == "const"
                                               else v)
                        for k, ((kind, v), ist) in enumerate(zip(program.out_spec,
                                                                program.out_is_tensor))]
                return tree_unflatten(entry.treedef, outs)
        else:
            entry = _Entry()
            self._cache[key] = entry
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        if entry.eager:
            return self.fn(*args)
        for opt in entry.participants:
            opt.sync_device_hyperparameters()
        if entry.seen < self.warmup or backend is None or not can_stage(backend):
            entry.seen += 1
            try:
                with _capture_state.recording() as parts:
                    out = self.fn(*args)
            except CaptureError:
                if self.fallback != "eager":
                    raise
                entry.eager = True
                return self.fn(*args)
            for p in parts:
                if all(p is not q for q in entry.participants):
                    entry.participants.append(p)
            if backend is None or not can_stage(backend):
                entry.eager = True
            return out
        inputs = [leaves[i] for i in positions]

        def call_args(proxied: list[Any]) -> tuple[Any, ...]:
            new = list(leaves)
            for i, p in zip(positions, proxied):
                new[i] = p
            return tuple(tree_unflatten(treedef, new))

        try:
            program, (out_def, outs) = trace_step(self.fn, call_args, inputs, backend)
        except CaptureError:
            if self.fallback != "eager":
                del self._cache[key]
                raise
            entry.eager = True
            return self.fn(*args)
        self.traces += 1
        for p in program.participants:
            if all(p is not q for q in entry.participants):
                entry.participants.append(p)
        entry.hyper = [opt._hyperparameters() for opt in entry.participants]
        entry.program = program
        entry.treedef = out_def
        return tree_unflatten(out_def, outs)
