"""``ag.jit``: staged recordings per input signature and per world, for functions called with
changing shapes.

``f = ag.jit(fn)`` (or ``@ag.jit``): each call looks up the signature of its arguments -- the
pytree structure, each tensor leaf's backend, shape, dtype, device and ``requires_grad``, and
every other leaf's kind and value (a constant) -- in a bounded LRU cache. A new signature is
first called eagerly ``warmup`` times under the capture-safety checker (optimizers make their
state on their first step), then traced: the tracing call is itself a real call, and its
outputs are returned.

Each signature keeps the recordings (:mod:`.recordings`) of the worlds it was called in: a
recording is replayed only while its guards (:mod:`.guards`) hold -- the same leaves have a
``.grad``, the same tensors require grad, the modules and optimizers point to the same tensors
and hold the same Python values, the same hyperparameters, modes, default dtype and backend.
Otherwise the call is traced again and the new recording kept beside the others. A replay is
therefore always what an eager call would compute.

A function that is not capture-safe raises :class:`~agnograd.CaptureError` naming the op,
unless ``fallback="eager"``: that signature then runs eagerly from then on.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from .._tensor import Tensor
from ..autograd.forward import fwd_state
from ..autograd.mode import anomaly_mode, grad_mode
from ..backends import Backend, backend_of_array
from ..backends import batching as _batching
from ..pytree import tree_flatten, tree_unflatten
from . import _state
from ._state import CaptureError
from .program import can_stage, check_outputs, graph_output, trace_step
from .recordings import Recording, Recordings

__all__ = ["jit", "JitEagerWarning", "JitFunction"]


class JitEagerWarning(UserWarning):
    """``ag.jit``: a function differentiated from outside runs eagerly (see :func:`jit`)."""

WHO = "ag.jit"
_WORLDS_PER_SIGNATURE = 8


def jit(fn: Callable[..., Any] | None = None, *, cache_size: int = 16, warmup: int = 1,
        fallback: str | None = None) -> Any:
    """Stage ``fn`` per input signature (usable as ``@ag.jit`` or ``@ag.jit(cache_size=4)``).

    Args:
        fn: the function; Tensors (or arrays) at the leaves of its arguments are inputs, other
            leaves constants of a recording. It is fastest as a whole step -- forward, backward
            and update -- or run without a graph. A function differentiated from outside
            (``ag.grad(ag.jit(f))``, ``loss = ag.jit(model)(x); loss.backward()``, as
            ``jax.grad(jax.jit(f))`` and ``torch.compile`` allow) returns a Tensor requiring
            grad from a call that ran no backward: a replay has no graph to return, so from
            that call on, calls with grad enabled run ``fn`` eagerly (a one-time
            :class:`JitEagerWarning` says so; under ``ag.no_grad()`` it still replays). With
            ``warmup=0`` a traced first call cannot fall back and raises
            :class:`~agnograd.CaptureError`. For speed, compile the gradient itself:
            ``ag.jit(ag.grad(f))``.
        cache_size: input signatures kept (least recently used dropped first); each keeps up
            to 8 recordings, one per world its guards describe.
        warmup: eager calls of a new signature before it is traced (0 traces the first call).
        fallback: ``"eager"`` to run a signature eagerly when it cannot be traced.
    """
    if fn is None:
        return lambda f: JitFunction(f, cache_size, warmup, fallback)
    return JitFunction(fn, cache_size, warmup, fallback)


class _Entry:
    """One input signature: its warm-up count and its recordings."""

    __slots__ = ("recordings", "eager", "seen")

    def __init__(self, name: str) -> None:
        self.recordings = Recordings(_WORLDS_PER_SIGNATURE, WHO, name)
        self.eager = False
        self.seen = 0


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
        # a call with grad enabled returned a graph without running a backward: the caller
        # differentiates through fn, and calls with grad enabled run it eagerly (a replay's
        # outputs carry no graph); _grad_seen: a call with grad enabled has been checked
        self._through = False
        self._grad_seen = False
        self.__wrapped__ = fn
        self.__name__ = getattr(fn, "__name__", "jit")
        self.__doc__ = getattr(fn, "__doc__", None)

    def cache_info(self) -> dict[str, int]:
        """``size`` (signatures kept), ``maxsize``, ``traces`` (calls traced so far) and
        ``recordings`` (kept over every signature)."""
        return {"size": len(self._cache), "maxsize": self.cache_size, "traces": self.traces,
                "recordings": sum(len(e.recordings.items) for e in self._cache.values())}

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
            if backend is not None and k[1] != backend.name:
                raise CaptureError(
                    f"{WHO}({self.__name__}): argument leaf {i} is on backend '{k[1]}' but an "
                    f"earlier one is on '{backend.name}'; a compiled function's tensor inputs "
                    "live on one backend (move them with ag.to_backend)")
            key.append(k)
            positions.append(i)
            if backend is None:
                backend = x._backend if type(x) is Tensor else backend_of_array(x)
        return tuple(key), positions, backend

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        grad_on = grad_mode.enabled
        if anomaly_mode.enabled or fwd_state.on or _batching.ACTIVE or (grad_on and self._through):
            # anomaly checks read values on the host, tangents of a forward trace (ag.jvp) ride
            # on the Tensors, inside ag.vmap values carry a batch, and a function differentiated
            # from outside needs its graph: no recording has any of them, so such calls run
            # eagerly (jit(vmap(f)) records the batched program)
            return self.fn(*args, **kwargs)
        # Keyword arguments are part of the pytree of arguments, as jax.jit's.
        leaves, treedef = tree_flatten((args, kwargs))
        key, positions, backend = self._signature(leaves, treedef)
        entry = self._cache.get(key)
        if entry is None:
            entry = _Entry(self.__name__)
            self._cache[key] = entry
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
            if entry.recordings.items:
                rec, why = entry.recordings.find()
                if rec is not None:
                    return self._replay(rec, [leaves[i] for i in positions])
                entry.recordings.note_retrace(why)
        if entry.eager:
            return self.fn(*args, **kwargs)
        if (entry.seen < self.warmup or backend is None or not can_stage(backend)
                or (grad_on and self.warmup and not self._grad_seen)):
            # (the first call with grad enabled is eager even after the warm-up, so that a
            # function differentiated from outside is seen before a trace would cut its graph)
            entry.seen += 1
            backwards = _state.BACKWARDS[0]
            try:
                with _state.recording(WHO):
                    out = self.fn(*args, **kwargs)
                if grad_on:
                    self._grad_seen = True
                    if _state.BACKWARDS[0] == backwards and graph_output(out) is not None:
                        self._through = True
                        warnings.warn(
                            f"{WHO}({self.__name__}) returned a Tensor that requires grad from a "
                            "call that ran no backward: it is differentiated from outside "
                            "(ag.grad(ag.jit(f)), loss = ag.jit(model)(x); loss.backward()). A "
                            "replay has no graph, so calls with grad enabled run it eagerly. For "
                            "speed, compile the whole step (backward and update inside) or the "
                            "gradient: ag.jit(ag.grad(f))", JitEagerWarning, stacklevel=2)
                        return out
                check_outputs(out, _state.BACKWARDS[0] != backwards, WHO)
            except CaptureError:
                if self.fallback != "eager":
                    raise
                entry.eager = True
                return self.fn(*args, **kwargs)
            if backend is None or not can_stage(backend):
                entry.eager = True
            return out
        inputs = [leaves[i] for i in positions]

        def call_args(proxied: list[Any]) -> tuple[Any, ...]:
            new = list(leaves)
            for i, p in zip(positions, proxied):
                new[i] = p
            return tuple(tree_unflatten(treedef, new))  # (args, kwargs)

        def call(a: tuple[Any, ...], k: dict[str, Any]) -> Any:
            return self.fn(*a, **k)

        try:
            traced = trace_step(call, call_args, inputs, backend, WHO)
        except CaptureError:
            if self.fallback != "eager":
                if not entry.recordings.items:
                    del self._cache[key]
                raise
            entry.eager = True
            return self.fn(*args, **kwargs)
        self.traces += 1
        if traced.one_shot is None:
            entry.recordings.add(Recording(traced))
        else:  # never replayed: every call in this world is traced (a real call)
            entry.recordings.note_retrace(traced.one_shot)
        return tree_unflatten(traced.treedef, traced.outs)

    @staticmethod
    def _replay(rec: Recording, inputs: list[Any]) -> Any:
        program = rec.program
        b = program.backend
        vals = program.run(inputs)
        outs = [(Tensor._wrap(vals[k], b) if ist else vals[k])
                if kind == "ref" else (Tensor._wrap(v, b) if kind == "const" else v)
                for k, ((kind, v), ist) in enumerate(zip(program.out_spec, program.out_is_tensor))]
        return tree_unflatten(rec.treedef, outs)
