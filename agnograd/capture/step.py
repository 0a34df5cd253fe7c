"""Capture mode: record a whole training step once, replay it (as one CUDA graph on CuPy).

``step = ag.capture(step_fn, *example_args, warmup=3)`` runs ``step_fn`` -- forward, backward
and optimizer update -- ``warmup`` times, then records it once. ``step(*new_args)`` copies the
new inputs into the recorded input buffers, replays the recording and returns its outputs.

- On **CuPy** the recording is a CUDA graph made with CuPy's stream capture: one
  ``Graph.launch`` replays every kernel of the step with no Python in between. Everything the
  graph allocates comes from a memory pool private to the captured step; matrix products go
  through a private cuBLAS handle (CuPy refuses its own during capture). The recorder
  (:class:`agnograd.backends.cuda_graph.CudaGraphRecorder`) changes only state of the recording
  thread -- its recorder, stream and allocator -- never the Backend, so other threads are
  unaffected.
- On **every other backend** (NumPy, array_api_strict, PyTorch, ...; CuPy with
  ``graph=False``) the recording call is traced into the backend calls it makes and each call
  replays them as generated code (:mod:`agnograd.capture.program`): bit-identical to eager on NumPy,
  with no Tensor or engine work. ``replay="eager"`` (and lazy backends such as Dask) keep the
  eager fallback: the inputs are copied into the same buffers, ``step_fn`` runs eagerly, and
  its outputs are copied into the same output buffers.

While the step is recorded (and during the warm-up calls) a capture-safety checker is active in
this thread, on every backend: host synchronisations (``.item()``, ``float(t)``, boolean-mask
indexing, ``nonzero``, ``unique_*``), arrays made from host data, transfers, host-drawn random
numbers and optimizers that are not ``capturable`` raise :class:`CaptureError` naming the op and
why -- so a step that would break (or silently freeze) a CUDA graph fails on the CPU too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from .. import random as _random
from .._tensor import Tensor
from ..autograd.forward import fwd_state
from ..autograd.mode import anomaly_mode
from ..backends import Backend, backend_of_array
from ..backends import batching as _batching
from ..pytree import TreeDef, tree_flatten, tree_leaves, tree_unflatten
from . import _state as _capture_state
from ._state import CaptureError
from .guards import Guards, world_now
from .program import StagedProgram, can_stage, check_outputs, make_guards, observe, trace_step
from .recordings import Recording, Recordings

if TYPE_CHECKING:
    from ..backends.cuda_graph import CudaGraphRecorder

__all__ = ["capture", "CapturedStep", "CaptureError", "CheckResult"]

WHO = "ag.capture"


class CheckResult(NamedTuple):
    """What :meth:`CapturedStep.check` compared: ``compared`` arrays (outputs, parameters,
    gradients, optimizer state), the largest absolute difference ``max_abs_diff`` and where it
    was (``worst``)."""

    compared: int
    max_abs_diff: float
    worst: str


_REPLAYS = (None, "cuda-graph", "staged", "eager")


def capture(step_fn: Callable[..., Any], *example_args: Any, warmup: int = 3,
            graph: bool | None = None, replay: str | None = None,
            fallback: str | None = None) -> CapturedStep:
    """Record ``step_fn(*example_args)`` once and return a :class:`CapturedStep` that replays it.

    ``step_fn`` is a whole step: typically ``opt.zero_grad()``, the forward pass, ``backward()``
    and ``opt.step()`` of an optimizer created with ``capturable=True``; it returns a Tensor, a
    pytree (tuple/list/dict/NamedTuple) of Tensors, or ``None``. ``capture`` calls it ``warmup``
    times and then once more while recording -- ``warmup + 1`` real steps on the example inputs,
    on every backend (on CuPy the recorded graph is launched once to perform the last one).

    Args:
        step_fn: the step. It must clear the gradients first (``opt.zero_grad()``), must not
            synchronise with the host (see :class:`CaptureError`), and must have static shapes.
        *example_args: the inputs, each a Tensor, an array or a pytree of them (tuples, lists,
            dicts, NamedTuples: see :mod:`agnograd.pytree`). Tensors (or arrays) become input
            buffers of that shape, dtype and backend, copied from these; any other leaf is a
            constant of the recording; a replay must pass the same structure.
        warmup: eager calls before recording (at least 1: optimizers create their state on
            their first step, which must not be recorded; on CuPy they also compile kernels and
            grow the memory pool).
        graph: ``False`` refuses the CUDA graph on CuPy (the step is then staged, as on the
            other backends); ``None`` (the default) uses it where the backend has one.
        replay: ask for one kind of replay: ``"cuda-graph"``, ``"staged"`` (trace the backend
            calls once, replay them as generated code: :mod:`agnograd.capture.program`) or ``"eager"``
            (run ``step_fn`` on every call, with the same semantics); ``None`` picks the
            fastest the backend allows -- a CUDA graph on CuPy, staged elsewhere (eager on
            lazy backends such as Dask).
        fallback: ``"eager"`` to replay eagerly when the step cannot be traced for a staged
            replay (a call the tracer cannot record); by default that raises
            :class:`CaptureError` naming the op.

    Raises:
        CaptureError: the step is not capture-safe (the message names the op and why), its
            tensor inputs are on several backends, or recording failed.
        ValueError: ``warmup`` is not an integer of at least 1.
    """
    if not callable(step_fn):
        raise TypeError(f"ag.capture: step_fn must be callable, not {type(step_fn).__name__}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 1:
        raise ValueError(f"ag.capture: warmup must be an integer of at least 1, not {warmup!r} "
                         "(optimizers create their state on their first step, which must not be "
                         "recorded)")
    if replay not in _REPLAYS:
        raise ValueError(f"ag.capture: replay must be one of {_REPLAYS[1:]} or None, not {replay!r}")
    if fallback not in (None, "eager"):
        raise ValueError(f"ag.capture: fallback must be None or 'eager', not {fallback!r}")
    if graph is False and replay == "cuda-graph":
        raise ValueError("ag.capture: graph=False contradicts replay='cuda-graph'")
    if graph is True:
        replay = "cuda-graph"
    elif graph is False and replay is None:
        replay = "staged"
    return CapturedStep(step_fn, example_args, warmup, replay, fallback)


class _Slot:
    """One leaf of the step's arguments (see :mod:`agnograd.pytree`): a tensor input buffer, or
    a constant. ``name`` says where it is in error messages."""

    __slots__ = ("buffer", "constant", "name")

    def __init__(self, buffer: Tensor | None, constant: Any, name: str) -> None:
        self.buffer = buffer
        self.constant = constant
        self.name = name


def _leaf_names(args: tuple[Any, ...]) -> list[str]:
    """``argument i`` for an argument that is a leaf, ``argument i (leaf j)`` inside a pytree."""
    names = []
    for i, a in enumerate(args):
        leaves, treedef = tree_flatten(a)
        if treedef.num_leaves == 1 and not treedef.children:
            names.append(f"argument {i}")
        else:
            names.extend(f"argument {i} (leaf {j})" for j in range(len(leaves)))
    return names


def _as_tensor(x: Any) -> Tensor | None:
    if type(x) is Tensor:
        return x
    b = backend_of_array(x)
    return None if b is None else Tensor._wrap(x, b)


def _copy(t: Tensor) -> Tensor:
    """A detached copy of ``t``'s data on its backend and device."""
    b = t._backend
    return Tensor._wrap(b.asarray(t.data, copy=True), b)


def _short(treedef: TreeDef) -> str:
    text = repr(treedef)
    return text if len(text) <= 200 else text[:200] + "...)"


def _describe(t: Tensor) -> str:
    return f"shape {t.shape}, dtype {t.dtype.name}, backend '{t.backend}'"


class CapturedStep:
    """A step recorded by :func:`capture`; call it with new inputs to replay it.

    ``step(*args)`` checks that every tensor argument has the recorded shape, dtype, backend
    (and device) and every other argument equals the recorded constant -- raising
    :class:`CaptureError` before anything is copied otherwise -- copies the tensors into the
    input buffers, replays the recording and returns the outputs.

    **The outputs are buffers that the next call overwrites** (as the inputs are): the same
    Tensor objects are returned by every call. Copy them (``ag.asarray(out, copy=True)``) to
    keep a value; read them (``.item()``, ``float``) outside the step, e.g. once per epoch.

    Attributes:
        backend: the name of the backend the step runs on.
        graph: whether the replay is a CUDA graph (CuPy).
        replay: what a call replays: ``"cuda-graph"``, ``"staged"`` (the recorded backend calls,
            as generated code) or ``"eager"`` (``step_fn`` itself).
        program: the staged program (``None`` unless ``replay == "staged"``): its ``source``
            is the generated code, ``calls`` the backend calls per replay.
        inputs: the input buffer Tensors (``None`` for constant arguments), in argument order
            (a staged replay binds an input its program only reads to the caller's array rather
            than copying it: that buffer then holds the caller's array itself);
            an argument that is a pytree (tuple, list, dict, NamedTuple) comes back with that
            structure, buffers and ``None`` at its leaves.
        outputs: what the last call returned (the output buffers).
    """

    def __init__(self, step_fn: Callable[..., Any], example_args: tuple[Any, ...],
                 warmup: int, replay: str | None = None, fallback: str | None = None) -> None:
        self._fn = step_fn
        self._slots: list[_Slot] = []
        # The arguments are a pytree: Tensors (and arrays) at its leaves become input buffers,
        # other leaves constants; a replay must pass the same structure.
        leaves, self._argdef = tree_flatten(tuple(example_args))
        self._nargs = len(example_args)
        backend: Backend | None = None
        for a, name in zip(leaves, _leaf_names(example_args)):
            t = _as_tensor(a)
            if t is None:
                self._slots.append(_Slot(None, a, name))
                continue
            if backend is None:
                backend = t._backend
            elif t._backend is not backend:
                raise CaptureError(f"ag.capture: {name} is on backend '{t.backend}' but an "
                                   f"earlier one is on '{backend.name}'; a step runs on one backend")
            buf = _copy(t)
            if t.requires_grad and t.is_leaf:
                buf.requires_grad_(True)
            self._slots.append(_Slot(buf, None, name))
        self._args = tree_unflatten(
            self._argdef, [s.buffer if s.buffer is not None else s.constant for s in self._slots])
        self._participants: list[Any] = []
        self._guards: Guards | None = None  # of the CUDA graph (staged: per recording)
        self._recs = Recordings(8, WHO, getattr(step_fn, "__name__", "step"))
        self._recorder: CudaGraphRecorder | None = None
        self._spec: TreeDef | None = None
        self._out_leaves: list[Any] = []
        self._pinned: list[tuple[Tensor, Any]] = []
        self.outputs: Any = None
        self.backend = backend.name if backend is not None else None
        self.graph = False
        self.replay = "eager"
        self.program: StagedProgram | None = None
        self._want = replay
        self._fallback = fallback
        self._record(backend, warmup)

    @property
    def inputs(self) -> list[Any]:
        return list(tree_unflatten(self._argdef, [s.buffer for s in self._slots]))

    # -- recording -----------------------------------------------------------------------------
    def _call_checked(self) -> Any:
        """One eager call with the checker on; registers capturable optimizers."""
        backwards = _capture_state.BACKWARDS[0]
        with _capture_state.recording(WHO) as parts:
            out = self._fn(*self._args)
        check_outputs(out, _capture_state.BACKWARDS[0] != backwards, WHO)
        for p in parts:
            if all(p is not q for q in self._participants):
                self._participants.append(p)
        return out

    def _before_graph(self) -> None:
        """Before a CUDA-graph replay: its guards hold, and the parameters are still the
        arrays the graph reads; otherwise :class:`CaptureError` naming what changed (a CUDA
        graph holds device pointers: the step must be captured again)."""
        if self._guards is not None:
            why = self._guards.check()
            if why is not None:
                raise CaptureError(
                    f"captured step (CUDA graph): {why} since the step was recorded; a CUDA "
                    "graph replays fixed memory and cannot follow. Capture the step again (or "
                    "capture with graph=False: the staged replay records itself again)")
        for t, data in self._pinned:
            if t.data is not data:
                raise CaptureError(
                    f"a captured step's parameter (shape {t.shape}) now holds another array than "
                    "when it was recorded (replaced by load_state_dict, to_backend or an "
                    "assignment?); the CUDA graph still reads the old memory. Capture the step again")

    def _record(self, backend: Backend | None, warmup: int) -> None:
        calls = warmup
        if backend is None:
            # No tensor inputs: the outputs of a first call say where the step runs. The checker
            # is on for every call, so a step that is not capture-safe fails on its first one.
            out = self._call_checked()
            calls -= 1
            for leaf in tree_leaves(out):
                if type(leaf) is Tensor:
                    backend = leaf._backend
                    self.backend = backend.name
                    break
        want = self._want
        if want == "cuda-graph" and (backend is None or backend.graph_recorder is None):
            raise CaptureError(f"ag.capture: replay='cuda-graph' needs a backend with CUDA graphs "
                               f"(CuPy), not '{self.backend}'")
        if (backend is None or backend.graph_recorder is None
                or want in ("staged", "eager")):  # no device graph: staged, or eager
            for _ in range(calls):
                self._sync_participants()
                self._call_checked()
            self._sync_participants()
            if backend is not None and want != "eager" and can_stage(backend):
                try:
                    self._trace(backend)
                    return
                except CaptureError:
                    if self._fallback != "eager":
                        raise
            elif want == "staged":
                raise CaptureError(f"ag.capture: backend '{self.backend}' cannot be staged "
                                   "(lazy arrays, or no tensor inputs); use replay='eager'")
            out = self._call_checked()  # the recording call of the fallback
            self._set_outputs(out, copy=True)
            return
        rec: CudaGraphRecorder = backend.graph_recorder(backend)
        try:
            # Warm up as it will be recorded (this thread's stream, pool and cuBLAS handle).
            with rec.session():
                for _ in range(calls):
                    self._sync_participants()
                    self._call_checked()
            self._sync_participants()
            live, before, _hyper = observe(backend)
            flags = {id(t): (t._requires_grad, t._hooks and tuple(t._hooks)) for t in live}
            start = world_now(live)
            del live
            try:
                with rec.capture():
                    out = self._call_checked()
            except CaptureError:
                raise
            except Exception:
                # The warm-up ran matrix products through CuPy's own cuBLAS handle; the first
                # capture is the private handle's first use, and one-time initialisation inside
                # a capture can fail. Nothing recorded was executed: try once more.
                with rec.capture():
                    out = self._call_checked()
        except CaptureError:
            raise
        except Exception as exc:
            raise CaptureError(f"ag.capture: recording the step as a CUDA graph failed: "
                               f"{type(exc).__name__}: {exc}") from exc
        self._recorder = rec
        self.graph = True
        self.replay = "cuda-graph"
        self._set_outputs(out, copy=False)
        # The graph reads the optimizers' parameters and the input buffers: guard them, and
        # the modules and optimizers that hold them, as the staged replay does.
        touched = [p for opt in self._participants for p in opt._params()]
        touched += [s.buffer for s in self._slots if s.buffer is not None]
        self._guards = make_guards(touched, before, [], flags, list(self._participants), start)
        # Keep every parameter array the graph reads and writes alive, and notice if one is
        # replaced (the graph would go on using the old memory).
        for opt in self._participants:
            for p in opt._params():
                self._pinned.append((p, p.data))
        rec.replay([])  # perform the recorded step once, as the fallback's recording call does

    def _trace(self, backend: Backend) -> None:
        """Trace the recording call into a staged program (it is a real step, as the
        fallback's recording call is) and keep it beside the recordings of other worlds."""
        self._inputs_list = [s.buffer for s in self._slots if s.buffer is not None]
        self._backend = backend
        t0 = time.perf_counter()
        traced = trace_step(self._fn, lambda _: self._args, self._inputs_list, backend, WHO)
        program = traced.program
        for p in program.participants:
            if all(p is not q for q in self._participants):
                self._participants.append(p)
        self.program = program
        self.record_seconds = time.perf_counter() - t0  # the traced call, passes and compile
        self.replay = "staged"
        rec = Recording(traced)
        out_refs = [(i, type(leaf) is Tensor) for i, (leaf, (kind, _)) in
                    enumerate(zip(traced.outs, program.out_spec)) if kind == "ref"]
        # Inputs the replay only reads are bound to the caller's arrays rather than copied.
        alias = {id(buf) for buf, ro in zip(self._inputs_list, program.read_only_inputs) if ro}
        rec.extra = (out_refs, all(t for _, t in out_refs), alias)
        if traced.one_shot is None:
            self._recs.add(rec)
        else:  # a Python side effect no replay repeats: the next call records again
            self._recs.note_retrace(traced.one_shot)
        if self._spec is None:  # the first recording: its outputs become the output buffers
            self._spec = traced.treedef
            self._out_leaves = traced.outs
        else:  # later ones write into the same output Tensors
            for i, new in enumerate(traced.outs):
                kept = self._out_leaves[i]
                if type(kept) is Tensor and type(new) is Tensor:
                    kept.data = new.data
                else:
                    self._out_leaves[i] = new
        self.outputs = tree_unflatten(self._spec, self._out_leaves)

    def _sync_participants(self) -> None:
        for opt in self._participants:
            opt.sync_device_hyperparameters()

    def _set_outputs(self, out: Any, copy: bool) -> None:
        leaves, self._spec = tree_flatten(out)
        kept = []
        for leaf in leaves:
            t = _as_tensor(leaf)
            if t is None:
                kept.append(leaf)
            else:  # detached: the recorded graph of the step is not kept alive
                kept.append(_copy(t) if copy else Tensor._wrap(t.data, t._backend))
        self._out_leaves = kept
        self.outputs = tree_unflatten(self._spec, kept)

    # -- replay --------------------------------------------------------------------------------
    def _inputs_for(self, args: tuple[Any, ...], what: str) -> list[tuple[Tensor, Tensor]]:
        """Check ``args`` against the recorded inputs; the (buffer, new value) pairs to copy."""
        if len(args) != self._nargs:
            raise CaptureError(f"{what}: the step was recorded with {self._nargs} "
                               f"argument(s), got {len(args)}")
        leaves, argdef = tree_flatten(args)
        if argdef != self._argdef:
            for i, (got, want) in enumerate(zip(argdef.children, self._argdef.children)):
                if got == want:
                    continue
                if want.num_leaves == 1 and not want.children:  # a leaf: this argument's slot
                    buf = self._slots[sum(c.num_leaves for c in self._argdef.children[:i])].buffer
                    if buf is not None:
                        raise CaptureError(f"{what}: argument {i} must be a Tensor "
                                           f"({_describe(buf)}) as recorded, not "
                                           f"{type(args[i]).__name__}")
                raise CaptureError(f"{what}: argument {i} has the structure {_short(got)} but the "
                                   f"step was recorded with {_short(want)}; a captured step takes "
                                   "the same structure of arguments every time")
        pairs = []
        for slot, a in zip(self._slots, leaves):
            buf = slot.buffer
            name = slot.name
            if buf is None:
                c = slot.constant
                # the kind too: 2 and 2.0 compare equal but promote differently
                if a is not c and (type(a) is not type(c) or not bool(a == c)):
                    raise CaptureError(
                        f"{what}: {name} was the constant {c!r} ({type(c).__name__}) when the "
                        f"step was recorded, not {a!r} ({type(a).__name__}); constants are "
                        "frozen in the recording -- pass a Tensor to make it an input, or "
                        "capture the step again")
                continue
            t = _as_tensor(a)
            if t is None:
                raise CaptureError(f"{what}: {name} must be a Tensor ({_describe(buf)}) "
                                   f"as recorded, not {type(a).__name__}")
            if t is buf:
                continue
            if (t._backend is not buf._backend or t.data.shape != buf.data.shape
                    or t.data.dtype != buf.data.dtype):
                raise CaptureError(
                    f"{what}: {name} has {_describe(t)} but the step was recorded with "
                    f"{_describe(buf)}; a captured step has static shapes and dtypes -- convert "
                    "it, pad the batch, or capture another step for this shape")
            if buf._backend.multi_device and t.data.device != buf.data.device:
                raise CaptureError(f"{what}: {name} is on device {t.device} but the step was "
                                   f"recorded on {buf.device}; move it with .to_device()")
            pairs.append((buf, t))
        return pairs

    def _fast_inputs(self, args: tuple[Any, ...]) -> list[tuple[Tensor, Tensor]] | None:
        """The (buffer, new value) pairs when every argument is a Tensor leaf matching its
        buffer exactly (the common call); ``None`` sends the call through :meth:`_inputs_for`."""
        slots = self._slots
        if len(args) != len(slots) or len(args) != self._nargs:
            return None
        pairs = []
        for a, slot in zip(args, slots):
            buf = slot.buffer
            if buf is None or type(a) is not Tensor:
                return None
            if a is buf:
                continue
            b = buf._backend
            d, bd = a.data, buf.data
            if (a._backend is not b or b.multi_device or d.shape != bd.shape
                    or d.dtype != bd.dtype):
                return None
            pairs.append((buf, a))
        return pairs

    def __call__(self, *args: Any) -> Any:
        """Replay the step on ``args``; returns the output buffers (overwritten by the next
        call). Raises :class:`CaptureError` (and changes nothing) for inputs that do not match
        the recorded ones."""
        if _batching.ACTIVE:  # inside ag.vmap: per-example values are not the buffers' (eager)
            return self._fn(*args)
        pairs = self._fast_inputs(args)
        if pairs is None:
            pairs = self._inputs_for(args, "captured step")
        if fwd_state.on:  # inside ag.jvp: tangents ride on the caller's Tensors, not the buffers
            return self._fn(*args)
        if self._recorder is not None:
            self._before_graph()
        # Every replay overwrites the input buffers and the outputs: graphs that saved them (or
        # a view of them) before this call refuse to use them at backward.
        for buf, _ in pairs:
            _overwritten(buf)
        for t in self._out_leaves:
            if type(t) is Tensor:
                _overwritten(t)
        if self._recorder is not None:
            self._recorder.replay([(buf.data, t.data) for buf, t in pairs])
            return self.outputs
        if self.program is not None and not anomaly_mode.enabled:
            # (under ag.detect_anomaly every call runs eagerly: the checks read values on the
            # host, which no recording contains)
            rec, why = self._recs.find()
            if rec is None:  # the world changed since every recording: record this call
                self._recs.note_retrace(why)
                for buf, t in pairs:  # the buffers own their arrays again while traced
                    buf.data = self._backend.xp.asarray(t.data, copy=True)
                self._trace(self._backend)
                return self.outputs
            out_refs, all_tensors, alias = rec.extra
            for buf, t in pairs:
                if id(buf) in alias:  # read only by the replay: bind, don't copy
                    buf.data = t.data
                else:
                    buf.data[...] = t.data
            vals = rec.program.run(self._inputs_list)
            leaves = self._out_leaves
            for i, is_tensor in out_refs:
                if is_tensor:
                    leaves[i].data = vals[i]
                else:
                    leaves[i] = vals[i]
            if not all_tensors:
                assert self._spec is not None  # set by the recording
                self.outputs = tree_unflatten(self._spec, leaves)
            return self.outputs
        for buf, t in pairs:
            if self.program is None:
                buf.data[...] = t.data
            else:  # a staged replay may have bound the buffer to a caller's array
                buf.data = self._backend.xp.asarray(t.data, copy=True)
        out = self._fn(*self._args)
        leaves, spec = tree_flatten(out)
        if spec != self._spec:
            raise CaptureError("captured step: step_fn returned a different structure of outputs "
                               "than when it was recorded; a captured step must return the same "
                               "structure every time")
        for i, (new, kept) in enumerate(zip(leaves, self._out_leaves)):
            res = _as_tensor(new)
            if type(kept) is Tensor:
                if (res is None or res.data.shape != kept.data.shape
                        or res.data.dtype != kept.data.dtype):
                    raise CaptureError(f"captured step: output {i} changed shape or dtype since the "
                                       "step was recorded")
                kept.data[...] = res.data
            else:
                self._out_leaves[i] = new
        if any(type(k) is not Tensor for k in self._out_leaves):
            self.outputs = tree_unflatten(self._spec, self._out_leaves)
        return self.outputs

    # -- check ---------------------------------------------------------------------------------
    def check(self, *args: Any, rtol: float = 1e-4, atol: float = 1e-6) -> CheckResult:
        """Compare one replay on ``args`` with an eager run of ``step_fn`` on the same state.

        The state of every capturable optimizer the step used (its parameters, their
        gradients, its moments and step counts) is snapshot; ``step_fn(*args)`` runs eagerly;
        the state is restored; the step is replayed on ``args``. The outputs, parameters,
        gradients and optimizer state of the two runs must agree within
        ``|replay - eager| <= atol + rtol |eager|`` (float tolerances, never bit equality; NaN
        matches NaN). Afterwards the model holds the replay's result: ``check(*args)`` is one
        step, as ``step(*args)`` would be. State the step changes outside those optimizers
        (other global tensors, Python counters) is neither restored nor compared.

        Returns:
            a :class:`CheckResult`.

        Raises:
            CaptureError: something differs beyond the tolerance (the message says what and by
                how much), or ``args`` do not match the recorded inputs.
        """
        self._inputs_for(args, "captured step check()")
        arg_leaves = tree_leaves(args)
        eager_args = tree_unflatten(self._argdef, [a if s.buffer is None else _as_tensor(a)
                                                   for s, a in zip(self._slots, arg_leaves)])
        snap = self._snapshot()
        rng = _random.snapshot_generators()  # the eager run draws; the replay draws the same
        eager_out = self._fn(*eager_args)
        eager_leaves, spec = tree_flatten(eager_out)
        eager = [(f"output {i}", _copy(t)) for i, t in enumerate(map(_as_tensor, eager_leaves))
                 if t is not None]
        eager += [(name, _copy(t)) for name, t in self._state_tensors()]
        self._restore(snap)
        _random.restore_generators(rng)
        if spec != self._spec:
            raise CaptureError("captured step check(): the eager run returned a different structure "
                               "of outputs than the recording")
        out = self(*args)
        leaves = tree_leaves(out)
        replay = [(f"output {i}", t) for i, t in enumerate(map(_as_tensor, leaves)) if t is not None]
        replay += list(self._state_tensors())
        if [n for n, _ in eager] != [n for n, _ in replay]:
            raise CaptureError("captured step check(): the eager run and the replay produced "
                               "different sets of outputs or gradients")
        worst, worst_name, failures = 0.0, "", []
        for (name, e), (_, r) in zip(eager, replay):
            diff, ok = _compare(r, e, rtol, atol, name)
            if diff > worst:
                worst, worst_name = diff, name
            if not ok:
                failures.append(f"{name} (max |replay - eager| = {diff:.3g})")
        if failures:
            shown = ", ".join(failures[:5]) + (f" and {len(failures) - 5} more" if len(failures) > 5
                                              else "")
            raise CaptureError(f"captured step check(): the replay differs from an eager run beyond "
                               f"rtol={rtol:g}, atol={atol:g} in {shown}; the step depends on "
                               "something the recording froze (a Python value, host data) or on "
                               "state outside its inputs")
        return CheckResult(len(eager), worst, worst_name)

    def _state_tensors(self) -> list[tuple[str, Tensor]]:
        found = []
        for k, opt in enumerate(self._participants):
            who = f"{type(opt).__name__} #{k}"
            for j, p in enumerate(opt._params()):
                found.append((f"{who} parameter {j}", p))
                if p.grad is not None:
                    found.append((f"{who} gradient of parameter {j}", p.grad))
                for name, v in sorted(opt.state.get(id(p), {}).items()):
                    if isinstance(v, Tensor):
                        found.append((f"{who} state {name!r} of parameter {j}", v))
        return found

    def _snapshot(self) -> list[tuple[Any, ...]]:
        snap: list[tuple[Any, ...]] = []
        for opt in self._participants:
            for p in opt._params():
                snap.append(("tensor", p, p.data, _copy(p).data))
                g = p.grad
                snap.append(("grad", p, g, None if g is None else g.data,
                             None if g is None else _copy(g).data))
                state = opt.state.get(id(p))
                if state is not None:
                    entries = {n: (v, v.data, _copy(v).data) if isinstance(v, Tensor) else (v,)
                               for n, v in state.items()}
                    snap.append(("state", opt, id(p), entries))
        return snap

    def _restore(self, snap: list[tuple[Any, ...]]) -> None:
        """Put every snapshot tensor back into its original array, in place (a recording keeps
        reading and writing the same memory)."""
        for entry in snap:
            if entry[0] == "tensor":
                _, t, data, saved = entry
                t.data = data
                data[...] = saved
            elif entry[0] == "grad":
                _, p, g, data, saved = entry
                if g is not None:
                    g.data = data
                    data[...] = saved
                p._grad = g
            else:
                _, opt, key, entries = entry
                state = opt.state.setdefault(key, {})
                state.clear()
                for n, e in entries.items():
                    if len(e) == 3:
                        v, data, saved = e
                        v.data = data
                        data[...] = saved
                        state[n] = v
                    else:
                        state[n] = e[0]

    def __repr__(self) -> str:
        kind = {"cuda-graph": "CUDA graph", "staged": f"staged replay of "
                f"{self.program.calls if self.program else 0} calls"}.get(self.replay, "eager fallback")
        return (f"CapturedStep({getattr(self._fn, '__name__', 'step')}, backend={self.backend!r}, "
                f"{kind}, {sum(s.buffer is not None for s in self._slots)} tensor input(s))")


def _overwritten(t: Tensor) -> None:
    """Count a change in place of ``t``'s storage (see :func:`agnograd.autograd.version_cell`)."""
    if t._version is not None:
        t._version[0] += 1


def _compare(r: Tensor, e: Tensor, rtol: float, atol: float, name: str) -> tuple[float, bool]:
    """(max |r - e|, whether |r - e| <= atol + rtol |e| everywhere, NaN matching NaN)."""
    if r.data.shape != e.data.shape:
        raise CaptureError(f"captured step check(): {name} has shape {r.shape} in the replay and "
                           f"{e.shape} in the eager run")
    if r.size == 0:
        return 0.0, True
    xp = r._backend.xp
    a, b = r.data, e.data
    if r.dtype.kind not in "fc":  # integers and booleans: compare as floats
        a, b = xp.astype(a, xp.float64), xp.astype(b, xp.float64)
    both_nan = xp.logical_and(xp.isnan(a), xp.isnan(b))
    d = xp.abs(a - b)
    diff = xp.where(both_nan, xp.zeros_like(d), d)
    ok = xp.logical_or(diff <= atol + rtol * xp.abs(b), both_nan)
    worst = float(xp.max(xp.where(xp.isnan(diff), xp.full_like(diff, float("inf")), diff)))
    return worst, bool(xp.all(ok))
