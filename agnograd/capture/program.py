"""Staged replay: trace a step once into the backend calls it makes, replay them as generated code.

:func:`trace_step` runs a step once with every Tensor of the step's backend holding a
:class:`~agnograd.backends.tracing.TracedArray` proxy and the tracing Backend, so each op calls a
namespace that records ``(fn, arguments, results)`` while it computes on the real arrays. The
trace run is a real step. What it yields, :class:`StagedProgram`, replays the recorded calls --
in the same order, with the same arguments, so on NumPy the replay is bit-identical to eager --
directly on the backend's arrays, with no Tensor, Node or engine work:

- **inputs** are the step's tensor (or array) arguments, read from the arguments of each replay;
- **live buffers** are the Tensors that existed before the trace and that the step reads or
  writes (parameters, optimizer state, device hyperparameters): the replay reads their current
  ``.data`` and, where the step rebinds ``t.data`` or ``t.grad``, rebinds them as eager would;
  in-place updates are replayed in place on the current arrays;
- **constants**: arrays reached that belong to no Tensor (by identity: the replay reads them as
  they are then), and arrays created inside the step from no input (``ones``, ``arange``,
  ``full`` of a Python scalar), folded into constants when nothing writes them.

Passes over the recording: constant folding, dead-code removal, and ``del`` after each value's
last use (the replay holds no intermediate longer than it must). The program is compiled once
into a Python function, one line per call.

Tensors are found with the garbage collector (every Tensor of the backend alive when the trace
starts is swapped to a proxy and back), so a step may read any Tensor, not only its arguments.
Other threads must not use Tensors of the same backend while a step is traced.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable
from typing import Any

from .._tensor import Tensor
from ..backends import Backend, default_backend, get_default_backend
from ..backends import tracing as _tr
from ..backends.tracing import BINARY_SYMBOLS, INPLACE_SYMBOLS, UNARY_SYMBOLS, VIEW_NAMES, Instr, Ref
from . import _state as _capture_state
from ._state import CaptureError

__all__ = ["StagedProgram", "trace_step", "can_stage"]


def can_stage(b: Backend) -> bool:
    """Whether steps on ``b`` can be staged (not for lazy backends: Dask builds graphs anyway)."""
    return not b.lazy and not isinstance(b, _tr.TracingBackend)


class StagedProgram:
    """A traced step compiled to a Python function of its input arrays.

    ``run(inputs)`` replays it: ``inputs`` are the tensor arguments (Tensors or raw arrays) in
    the traced order; returns the output arrays (``None`` where an output is not traced).
    Attributes: ``calls`` (backend calls replayed), ``recorded`` (calls traced), ``source``
    (the generated code), ``participants`` (capturable optimizers the step used).
    """

    def __init__(self, fn: Callable[..., Any], source: str, calls: int, recorded: int,
                 out_spec: list[Any], participants: list[Any], backend: Backend) -> None:
        self._fn = fn
        self.source = source
        self.calls = calls
        self.recorded = recorded
        self.out_spec = out_spec  # per output leaf: ("ref", k) | ("const", value) | ("py", value)
        self.participants = participants
        self.backend = backend
        self.out_is_tensor: list[bool] = []
        # Per input: whether the replay only reads it (never writes it, in place or through a
        # view, and neither returns nor keeps it), so a caller may pass its array as it is.
        self.read_only_inputs: list[bool] = []

    def run(self, inputs: list[Any]) -> Any:
        return self._fn(*inputs)


def _live_tensors(b: Backend) -> list[Tensor]:
    return [o for o in gc.get_objects() if type(o) is Tensor and o._backend is b]


def trace_step(fn: Callable[..., Any], call_args: Callable[[list[Any]], tuple[Any, ...]],
               inputs: list[Any], backend: Backend) -> tuple[StagedProgram, Any]:
    """Trace ``fn`` once on ``backend`` and compile its replay.

    ``inputs`` are the tensor arguments (Tensors or raw arrays of ``backend``);
    ``call_args(proxied_inputs)`` builds the arguments of ``fn`` from them (raw arrays replaced
    by their proxies, Tensors as they are: their data is swapped). Returns the program and the
    outputs of the traced call (real Tensors, as an eager call would have returned).

    Raises:
        CaptureError: the step is not capture-safe, or a call could not be traced (the message
            names the op).
    """
    tb = _tr.tracing_backend(backend)
    tr = _tr.Trace(backend, tb)
    input_ids: dict[int, int] = {}  # id(Tensor input) -> input position
    proxied: list[Any] = []
    in_vals: list[int] = []
    swapped: dict[int, tuple[Tensor, Any, Any, Any]] = {}  # id -> (t, real, proxy, grad before)
    for k, x in enumerate(inputs):
        if type(x) is Tensor:
            if id(x) in input_ids or id(x) in swapped:
                raise CaptureError("ag.capture: the same Tensor is passed as two arguments; the "
                                   "staged replay needs distinct inputs")
            p = tr.source(x.data, ("in", k))
            input_ids[id(x)] = k
            swapped[id(x)] = (x, x.data, p, x._grad)
            x.data, x._backend = p, tb
            proxied.append(x)
        else:
            p = tr.source(x, ("in", k))
            proxied.append(p)
        in_vals.append(p._i)
    live = _live_tensors(backend)
    live_keys: list[Tensor] = []
    for t in live:
        if id(t) in swapped:
            continue
        p = tr.source(t.data, ("live", len(live_keys)))
        live_keys.append(t)
        swapped[id(t)] = (t, t.data, p, t._grad)
        t.data, t._backend = p, tb
    del live
    out: Any = None
    parts: list[Any] = []
    failure: BaseException | None = None
    try:
        default = get_default_backend() is backend
        _tr.start(tr)
        try:
            with _capture_state.recording() as parts:
                if default:
                    with default_backend(tb.name):
                        out = fn(*call_args(proxied))
                else:
                    out = fn(*call_args(proxied))
        finally:
            _tr.stop()
    except CaptureError as exc:
        failure = exc
    except Exception as exc:
        last = tr.instrs[-1].name if tr.instrs else "(none)"
        failure = CaptureError(
            f"ag.capture: tracing the step for a staged replay failed: {type(exc).__name__}: "
            f"{exc} (the last recorded backend call was '{last}'); pass fallback='eager' to "
            "replay this step eagerly instead")
        failure.__cause__ = exc
    # The outputs: what each leaf is, before the Tensors go back to their real arrays.
    from ..pytree import tree_flatten

    out_spec: list[Any] = []
    out_tensors: list[Any] = []
    out_reals: list[Any] = []
    if failure is None:
        leaves, treedef = tree_flatten(out)
        for leaf in leaves:
            d = leaf.data if type(leaf) is Tensor else leaf
            if isinstance(d, _tr.TracedArray):
                out_spec.append(("ref", d._i))
                out_tensors.append(type(leaf) is Tensor)
                out_reals.append(d._v)
            elif type(leaf) is Tensor:
                out_spec.append(("const", d))
                out_tensors.append(True)
            else:
                out_spec.append(("py", leaf))
                out_tensors.append(False)
        del leaves, leaf, d
    else:
        treedef = None
    # Every Tensor on the tracing backend now: the swapped ones and those the step made that are
    # still alive (gradients, outputs, new state). Back to real arrays; note what to rebind.
    writes: list[tuple[Tensor, int]] = []  # rebind t.data to a value at the end of each replay
    grads: list[tuple[Tensor, Any]] = []  # rebind t._grad (a Tensor made by the step, or None)
    escaped: list[tuple[Tensor, int]] = []
    in_writes: list[tuple[int, int]] = []
    del out
    # Tensors the step made that are garbage but not yet collected (reference cycles, e.g. the
    # frames of an exception caught inside the step) would otherwise look alive: the replay
    # would rebind them -- and keep their arrays -- forever. They are young: the step made them
    # (what became garbage before a collection during the step is gone already), so collecting
    # the two young generations finds them without a full collection's cost (which grows with
    # every object of the process: ~10x a small step's whole recording with PyTorch imported).
    gc.collect(1)
    for t in _live_tensors(tb):
        d = t.data
        real = d._v if isinstance(d, _tr.TracedArray) else d
        entry = swapped.get(id(t))
        t.data, t._backend = real, backend
        if entry is None:  # made by the step and still alive
            if isinstance(d, _tr.TracedArray):
                escaped.append((t, d._i))
            continue
        if d is not entry[2]:
            if not isinstance(d, _tr.TracedArray):
                failure = failure or CaptureError(
                    "ag.capture: the step assigns an array made outside it to a Tensor's .data; "
                    "the staged replay cannot repeat that")
            elif id(t) in input_ids:
                in_writes.append((input_ids[id(t)], d._i))
            else:
                writes.append((t, d._i))
    for t, _real, _p, grad_before in swapped.values():
        if t._backend is tb:  # not found by the scan (cannot happen; be safe)
            t.data, t._backend = _real, backend
        if t._grad is not grad_before:
            grads.append((t, t._grad))
    if failure is not None:
        raise failure
    escaped_ids = {id(t) for t, _ in escaped}
    for _t, g in grads:
        if g is not None and id(g) not in escaped_ids:
            raise CaptureError("ag.capture: the step sets a gradient to a Tensor that it did not "
                               "make; the staged replay cannot repeat that")
    program = _compile(tr, in_vals, live_keys, writes, escaped, grads, in_writes, out_spec,
                       input_ids, inputs)
    program.participants = list(parts)
    program.out_is_tensor = out_tensors
    reals = iter(out_reals)
    outs_now = [(Tensor._wrap(next(reals), backend) if ist else next(reals)) if kind == "ref"
                else Tensor._wrap(v, backend) if kind == "const" else v
                for (kind, v), ist in zip(out_spec, out_tensors)]
    return program, (treedef, outs_now)


# ---------------------------------------------------------------------------------------------
# Passes and code generation

_LITERALS = (int, bool, str, type(None))


class _Names:
    """Closure names for the objects the generated code uses (``f0``, ``f1``, ... for functions,
    ``t0``, ... for Tensors), one per object, in first-use order."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.objects: list[Any] = []
        self._names: dict[int, str] = {}

    def __call__(self, obj: Any) -> str:
        n = self._names.get(id(obj))
        if n is None:
            n = self._names[id(obj)] = f"{self.prefix}{len(self.objects)}"
            self.objects.append(obj)
        return n


class _Gen:
    def __init__(self) -> None:
        self.consts: list[Any] = []
        self.const_ids: dict[int, str] = {}
        self.names: dict[int, str] = {}  # folded value -> constant name

    def const(self, obj: Any) -> str:
        name = self.const_ids.get(id(obj))
        if name is None:
            name = f"c{len(self.consts)}"
            self.consts.append(obj)
            self.const_ids[id(obj)] = name
        return name

    def render(self, x: Any) -> str:
        t = type(x)
        if t is Ref:
            return self.names.get(x.i) or f"v{x.i}"
        if t in _LITERALS:
            return repr(x)
        if t is float:
            return repr(x) if math.isfinite(x) else self.const(x)
        if x is Ellipsis:
            return "..."
        if not _has_ref(x):
            return self.const(x)
        if t is tuple:
            inner = ", ".join(self.render(e) for e in x)
            return f"({inner},)" if len(x) == 1 else f"({inner})"
        if t is list:
            return "[" + ", ".join(self.render(e) for e in x) + "]"
        if t is slice:
            return f"slice({self.render(x.start)}, {self.render(x.stop)}, {self.render(x.step)})"
        if t is dict:
            return "{" + ", ".join(f"{k!r}: {self.render(v)}" for k, v in x.items()) + "}"
        return self.const(x)


def _has_ref(x: Any) -> bool:
    t = type(x)
    if t is Ref:
        return True
    if t is tuple or t is list:
        return any(_has_ref(e) for e in x)
    if t is slice:
        return _has_ref(x.start) or _has_ref(x.stop) or _has_ref(x.step)
    if t is dict:
        return any(_has_ref(v) for v in x.values())
    return False


def _compile(tr: _tr.Trace, in_vals: list[int], live_keys: list[Tensor],
             writes: list[tuple[Tensor, int]], escaped: list[tuple[Tensor, int]],
             grads: list[tuple[Tensor, Any]], in_writes: list[tuple[int, int]],
             out_spec: list[Any], input_ids: dict[int, int], inputs: list[Any]) -> StagedProgram:
    instrs = tr.instrs
    recorded = len(instrs)
    # Values needed at the end of a replay.
    final: set[int] = {v for _, v in writes} | {v for _, v in escaped} | {v for _, v in in_writes}
    final |= {v for kind, v in out_spec if kind == "ref"}
    # -- alias roots: a value written in place (directly or through a view) cannot be folded.
    roots: dict[int, set[int]] = {}
    mutated: set[int] = set()
    for ins in instrs:
        if ins.kind in ("inplace", "setitem"):
            target = ins.refs[0] if ins.refs else None
            if target is not None:
                mutated |= roots.get(target, {target})
        if ins.name in VIEW_NAMES or ins.kind == "attr":
            r: set[int] = set()
            for i in ins.refs:
                r |= roots.get(i, {i})
            for o in ins.outs:
                roots[o] = r | {o}
    escaping: set[int] = set()
    for v in final:
        escaping |= roots.get(v, {v})
    # -- constant folding: calls of no traced input (and calls of only folded values) whose
    # results nothing writes and that do not escape as a buffer.
    folded: dict[int, Any] = {}
    values = tr.created
    for ins in instrs:
        if not ins.pure or ins.multi or not ins.outs:
            continue
        o = ins.outs[0]
        if o in mutated or o in escaping:
            continue
        if o in values and all(i in folded for i in ins.refs):
            folded[o] = values[o]
    # -- dead-code removal (backward): keep writes and what the end of the replay needs.
    needed = set(final)
    kept: list[Instr] = []
    for ins in reversed(instrs):
        if ins.pure:
            if not any(o in needed and o not in folded for o in ins.outs):
                continue
        kept.append(ins)
        needed.update(ins.refs)
    kept.reverse()
    # -- code
    g = _Gen()
    for v, obj in folded.items():
        g.names[v] = g.const(obj)
    fname = _Names("f")  # the backend functions the code calls
    fns = fname.objects

    last: dict[int, int] = {}
    for k, ins in enumerate(kept):
        for i in ins.refs:
            last[i] = k
        for o in ins.outs:
            last.setdefault(o, k)
            last[o] = max(last[o], k)
    body: list[str] = []
    params = [f"a{k}" for k in range(len(in_vals))]
    for k, (v, x) in enumerate(zip(in_vals, inputs)):
        if v in needed or v in final:
            body.append(f"v{v} = a{k}.data" if type(x) is Tensor else f"v{v} = a{k}")
    tname = _Names("t")  # the live Tensors the code reads and rebinds
    tobjs = tname.objects

    for v, key in tr.sources.items():
        if key[0] == "live" and (v in needed or v in final):
            body.append(f"v{v} = {tname(live_keys[key[1]])}.data")
    calls = 0
    for k, ins in enumerate(kept):
        calls += 1
        args = ins.args
        kw = ins.kwargs
        if ins.kind == "setitem":
            body.append(f"{g.render(args[0])}[{g.render(args[1])}] = {g.render(args[2])}")
        elif ins.kind == "inplace":
            sym = INPLACE_SYMBOLS.get(ins.fn)
            out = f"v{ins.outs[0]}"
            if sym is not None and type(args[0]) is Ref and ins.outs[0] == args[0].i:
                body.append(f"{out} {sym} {g.render(args[1])}")
            else:
                body.append(f"{out} = {fname(ins.fn)}({g.render(args[0])}, {g.render(args[1])})")
        else:
            lhs = ", ".join(f"v{o}" for o in ins.outs) + ("," if ins.multi and len(ins.outs) == 1
                                                          else "")
            if ins.kind == "op" and ins.fn in BINARY_SYMBOLS:
                rhs = f"{g.render(args[0])} {BINARY_SYMBOLS[ins.fn]} {g.render(args[1])}"
            elif ins.kind == "op" and ins.fn in UNARY_SYMBOLS:
                rhs = f"{UNARY_SYMBOLS[ins.fn]}{g.render(args[0])}"
            elif ins.kind == "op" and ins.sym == "abs":
                rhs = f"abs({g.render(args[0])})"
            elif ins.kind == "op" and ins.sym == "[]":
                rhs = f"{g.render(args[0])}[{g.render(args[1])}]"
            elif ins.kind == "attr":
                rhs = f"{g.render(args[0])}.{ins.sym}"
            else:
                parts = [g.render(a) for a in args]
                if kw:
                    parts += [f"{n}={g.render(a)}" for n, a in kw.items()]
                rhs = f"{fname(ins.fn)}({', '.join(parts)})"
            body.append(f"{lhs} = {rhs}")
        dead = sorted({i for i in (*ins.refs, *ins.outs) if last.get(i) == k and i not in final
                       and i not in folded})
        if dead:
            body.append("del " + ", ".join(f"v{i}" for i in dead))
    for t, v in writes:
        body.append(f"{tname(t)}.data = {g.names.get(v) or f'v{v}'}")
    for t, v in escaped:
        if v not in folded:
            body.append(f"{tname(t)}.data = v{v}")
    for t, gt in grads:
        who = f"a{input_ids[id(t)]}" if id(t) in input_ids else tname(t)
        body.append(f"{who}._grad = {'None' if gt is None else tname(gt)}")
    for k, v in in_writes:
        body.append(f"a{k}.data = {g.names.get(v) or f'v{v}'}")
    rets = [(g.names.get(v) or f"v{v}") if kind == "ref" else "None" for kind, v in out_spec]
    body.append("return (" + "".join(f"{r}, " for r in rets) + ")")
    closure = ([f"f{k}" for k in range(len(fns))] + [f"c{k}" for k in range(len(g.consts))]
               + [f"t{k}" for k in range(len(tobjs))])
    src = (f"def _make({', '.join(closure)}):\n"
           f"    def _replay({', '.join(params)}):\n"
           + "".join(f"        {line}\n" for line in body)
           + "    return _replay\n")
    namespace: dict[str, Any] = {}
    exec(compile(src, "<agnograd staged replay>", "exec"), namespace)  # noqa: S102 - our own code
    replay = namespace["_make"](*fns, *g.consts, *tobjs)
    program = StagedProgram(replay, src, calls, recorded, out_spec, [], tr.backend)
    written = mutated | escaping
    rebound = {k for k, _ in in_writes}  # input positions whose .data the step rebinds
    program.read_only_inputs = [v not in written and k not in rebound for k, v in enumerate(in_vals)]
    return program
