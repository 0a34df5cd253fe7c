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
import inspect
import math
from collections.abc import Callable
from typing import Any

from .._tensor import Tensor
from ..backends import Backend, default_backend, get_default_backend
from ..backends import tracing as _tr
from ..backends.tracing import BINARY_SYMBOLS, INPLACE_SYMBOLS, UNARY_SYMBOLS, VIEW_NAMES, Instr, Ref
from . import _state as _capture_state
from ._state import BACKWARDS, CaptureError, Holder
from .guards import Fresh, Guards, diff, snapshot, world_now
from .guards import walk_items as _walk_items

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
        self.live_read: list[Tensor] = []  # the live Tensors the replay reads as themselves

    def run(self, inputs: list[Any]) -> Any:
        return self._fn(*inputs)


def _scan(b: Backend) -> tuple[list[Tensor], list[Holder]]:
    """Every Tensor of backend ``b`` alive now, and every module and optimizer (one pass)."""
    tensors: list[Tensor] = []
    holders: list[Holder] = []
    for o in gc.get_objects():
        if type(o) is Tensor:
            if o._backend is b:
                tensors.append(o)
        elif issubclass(type(o), Holder):  # not isinstance: no __class__ of lazy proxies
            holders.append(o)
    return tensors, holders


def _live_tensors(b: Backend) -> list[Tensor]:
    return [o for o in gc.get_objects() if type(o) is Tensor and o._backend is b]


def observe(backend: Backend) -> tuple[list[Tensor], list[tuple[Holder, list[Any], dict[str, Any]]],
                                       list[tuple[Holder, Any]]]:
    """The world at the start of a recorded call: every Tensor of ``backend``; what each
    module and optimizer points to (:func:`~.guards.snapshot`, and its top-level items); each
    optimizer's hyperparameters (a step that changes them in Python cannot be replayed)."""
    live, holders = _scan(backend)
    before = [(h, snapshot(h), dict(h._guard_items())) for h in holders]
    hyper_before = [(h, h._hyperparameters()) for h in holders
                    if hasattr(h, "_hyperparameters")]
    return live, before, hyper_before


class Traced:
    """What :func:`trace_step` learnt besides the program: the outputs of the traced call,
    the guards a replay must pass, and why (if at all) the recording can never be replayed
    (``one_shot``: a Python side effect a replay would not repeat)."""

    __slots__ = ("program", "treedef", "outs", "guards", "one_shot")

    def __init__(self, program: StagedProgram, treedef: Any, outs: list[Any], guards: Guards,
                 one_shot: str | None) -> None:
        self.program = program
        self.treedef = treedef
        self.outs = outs
        self.guards = guards
        self.one_shot = one_shot


def graph_output(out: Any) -> tuple[int, Tensor] | None:
    """The first output leaf that carries a graph (its index and the Tensor), if any."""
    from ..pytree import tree_leaves

    for k, leaf in enumerate(tree_leaves(out)):
        if type(leaf) is Tensor and leaf._node is not None:
            return k, leaf
    return None


def check_outputs(out: Any, ran_backward: bool, who: str) -> None:
    """Refuse outputs that carry a graph when the call ran no backward: the caller means to
    call ``backward()`` on them outside (the ``torch.compile`` habit), and a replay's outputs
    have no graph -- the gradient would silently never reach the parameters. (``ag.jit``
    runs such a function eagerly instead, after its first eager call has shown it.)"""
    if ran_backward:
        return
    found = graph_output(out)
    if found is not None:
        k, leaf = found
        raise CaptureError(
            f"{who}: output {k} (shape {tuple(leaf.data.shape)}) requires grad -- it was made "
            f"by the '{leaf._node.name}' op from tensors that require grad -- but the call ran "
            "no backward. A replay returns arrays without a graph, so a backward() outside "
            "would never reach the parameters. Compile the whole step instead: call "
            "loss.backward() (and opt.step()) inside the function and return the loss; or "
            "run a forward-only function under ag.no_grad()"
            + ("; or let ag.jit run it eagerly when it is differentiated through: keep its "
               "default warmup=1" if who == "ag.jit" else ""))


def trace_step(fn: Callable[..., Any], call_args: Callable[[list[Any]], tuple[Any, ...]],
               inputs: list[Any], backend: Backend, who: str = "ag.capture") -> Traced:
    """Trace ``fn`` once on ``backend`` and compile its replay.

    ``inputs`` are the tensor arguments (Tensors or raw arrays of ``backend``);
    ``call_args(proxied_inputs)`` builds the arguments of ``fn`` from them (raw arrays replaced
    by their proxies, Tensors as they are: their data is swapped). Returns a :class:`Traced`:
    the program, the outputs of the traced call (real Tensors, as an eager call would have
    returned) and the guards of the world the program assumes.

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
                raise CaptureError(f"{who}: the same Tensor is passed as two arguments; the "
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
    live, before, hyper_before = observe(backend)
    # A gradient buffer is read through its owner (``p._grad``), not as itself: a replay must
    # use whatever buffer the leaf holds at that call.
    grad_of: dict[int, Tensor] = {}
    for t in (*live, *(x for x in inputs if type(x) is Tensor)):
        g = t._grad
        if g is not None and g._backend is backend:
            grad_of[id(g)] = t
    flags_before = {id(t): (t._requires_grad, t._hooks and tuple(t._hooks)) for t in live}
    start = world_now([*live, *(x for x in inputs if type(x) is Tensor)])
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
    backwards = BACKWARDS[0]
    try:
        default = get_default_backend() is backend
        _tr.start(tr)
        try:
            with _capture_state.recording(who) as parts:
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
            f"{who}: tracing the step for a staged replay failed: {type(exc).__name__}: "
            f"{exc} (the last recorded backend call was '{last}'); pass fallback='eager' to "
            "replay this step eagerly instead")
        failure.__cause__ = exc
    ran_backward = BACKWARDS[0] != backwards
    # The outputs: what each leaf is, before the Tensors go back to their real arrays.
    from ..pytree import tree_flatten

    out_spec: list[Any] = []
    out_tensors: list[Any] = []
    out_reals: list[Any] = []
    if failure is None:
        try:
            check_outputs(out, ran_backward, who)
        except CaptureError as exc:
            failure = exc
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
        del leaves
        leaf = d = None  # (no reference to the trace's values is kept)
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
                    f"{who}: the step assigns an array made outside it to a Tensor's .data; "
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
    escaped_at = {id(t): v for t, v in escaped}
    for _t, g in grads:
        if g is not None and id(g) not in escaped_at:
            raise CaptureError(f"{who}: the step sets a gradient to a Tensor that it did not "
                               "make; the staged replay cannot repeat that")
    one_shot, fresh = _side_effects(before, hyper_before, escaped, escaped_at, grads, swapped,
                                    backend)
    program = _compile(tr, in_vals, live_keys, writes, escaped, grads, in_writes, out_spec,
                       input_ids, inputs, grad_of, fresh, backend)
    program.participants = list(parts)
    program.out_is_tensor = out_tensors
    touched = [*program.live_read, *(x for x in inputs if type(x) is Tensor)]
    guards = make_guards(touched, before, fresh, flags_before, list(parts), start)
    reals = iter(out_reals)
    outs_now = [(Tensor._wrap(next(reals), backend) if ist else next(reals)) if kind == "ref"
                else Tensor._wrap(v, backend) if kind == "const" else v
                for (kind, v), ist in zip(out_spec, out_tensors)]
    return Traced(program, treedef, outs_now, guards, one_shot)


_MISSING = object()


def _side_effects(before: list[tuple[Holder, list[Any], dict[str, Any]]],
                  hyper_before: list[tuple[Holder, Any]], escaped: list[tuple[Tensor, int]],
                  escaped_at: dict[int, int], grads: list[tuple[Tensor, Any]],
                  swapped: dict[int, tuple[Tensor, Any, Any, Any]], backend: Backend,
                  ) -> tuple[str | None, list[tuple[Holder, str, Tensor | None, Tensor]]]:
    """What the step changed outside its arrays, sorted into what a replay can repeat and what
    it cannot.

    A module attribute the step rebinds to a Tensor it made (``self.m = 0.9 * self.m + x``)
    is a *fresh slot*: the replay reads the attribute and stores a new Tensor there, as eager
    does. Anything else -- a Python value changed (a counter, a hyperparameter set by a
    scheduler stepped inside the step), a container mutated, a Tensor the step made kept in a
    Python list or a global -- makes the recording *one-shot*: it is never replayed, and the
    reason says why. Returns ``(reason or None, fresh slots (holder, name, old, new))``.
    """
    fresh: list[tuple[Holder, str, Tensor | None, Tensor]] = []
    reasons: list[str] = []
    fresh_ids: set[int] = set()
    for h, snap0, items0 in before:
        snap1 = snapshot(h)
        if diff(h, snap0, snap1) is None:
            continue
        items1 = dict(h._guard_items())
        d = vars(h) if hasattr(h, "__dict__") else {}
        for name in sorted(items0.keys() | items1.keys()):
            was: Any = items0.get(name, _MISSING)
            now: Any = items1.get(name, _MISSING)
            if was is not _MISSING and now is not _MISSING:
                a: list[tuple[str, str, Any]] = []
                b: list[tuple[str, str, Any]] = []
                _walk_items(name, was, a)
                _walk_items(name, now, b)
                if diff(h, a, b) is None:
                    continue
            in_dict = d.get(name, _MISSING) is now
            if (isinstance(now, Tensor) and id(now) in escaped_at and in_dict
                    and (was is _MISSING or isinstance(was, Tensor))):
                if now._node is not None:
                    reasons.append(f"it stores a Tensor that requires grad (made by "
                                   f"'{now._node.name}') in {type(h).__name__}.{name}")
                    continue
                fresh.append((h, name, was if isinstance(was, Tensor) else None, now))
                fresh_ids.add(id(now))
                continue
            reasons.append(f"it changes {type(h).__name__}.{name} in Python")
    for h, hyper in hyper_before:
        now_h = h._hyperparameters()  # type: ignore[attr-defined]
        for gi, (g0, g1) in enumerate(zip(hyper, now_h)):
            for k, v in g0.items():
                if k != "params" and not (g1.get(k) is v or g1.get(k) == v):
                    reasons.append(f"it sets {type(h).__name__}.param_groups[{gi}][{k!r}] in "
                                   "Python (a scheduler stepped inside the step?)")
                    break
    # Tensors the step made and left somewhere a replay does not write: a Python list, a
    # global, an object that is not a module. Gradients, outputs and fresh slots are written.
    grad_ids = {id(g) for _, g in grads if g is not None}
    kept = [t for t, _ in escaped if id(t) not in grad_ids and id(t) not in fresh_ids]
    if kept:
        ours = {id(kept), id(escaped)} | {id(e) for e in escaped} | {id(e) for e in grads}
        for ref in gc.get_referrers(*kept):
            if id(ref) in ours or type(ref) is Tensor or inspect.isframe(ref):
                continue
            if type(ref).__name__ in ("Node", "RetainGrad", "cell"):
                continue
            reasons.append(f"it keeps a Tensor it made in a {type(ref).__name__} outside the "
                           "step (a list, a global, an object that is not an nn.Module)")
            break
        del kept
    return (reasons[0] if reasons else None), fresh


def make_guards(touched_list: list[Tensor], before: list[tuple[Holder, list[Any], Any]],
                fresh: list[tuple[Holder, str, Tensor | None, Tensor]],
                flags_before: dict[int, Any], participants: list[Any],
                start: tuple[tuple[Any, ...], dict[int, bool]]) -> Guards:
    """The guards of a recording that touches ``touched_list`` (the tensors it reads or whose
    gradients it makes): those leaves' ``.grad`` and ``requires_grad``, the modules and
    optimizers holding them (and the modules holding those), as ``before`` saw them at the
    start of the recorded call, and the optimizers it stepped."""
    touched = {id(t): t for t in touched_list}
    leaves = [t for t in touched.values()
              if t._node is None and flags_before.get(id(t), (t._requires_grad,))[0]]
    # Holders that hold a touched tensor, a touched holder, or took part (optimizers).
    fresh_slots = {(id(h), name): old for h, name, old, _ in fresh}
    guarded: dict[int, tuple[Holder, list[Any]]] = {}
    objs = set(touched) | {id(p) for p in participants}
    changed = True
    while changed:
        changed = False
        for h, snap0, _items in before:
            if id(h) in guarded:
                continue
            if id(h) in objs or any(how == "is" and id(v) in objs for _, how, v in snap0):
                snap = [(path, how, Fresh(v._backend) if (id(h), path) in fresh_slots else v)
                        for path, how, v in snap0]
                guarded[id(h)] = (h, snap)
                objs.add(id(h))
                changed = True
    optimizers = [(opt, opt._hyperparameters()) for opt in participants]
    flags = [(t, flags_before.get(id(t), (t._requires_grad, t._hooks and tuple(t._hooks))))
             for t in touched.values() if t._node is None]
    return Guards(leaves, list(guarded.values()), optimizers, flags, start)


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
             out_spec: list[Any], input_ids: dict[int, int], inputs: list[Any],
             grad_of: dict[int, Tensor], fresh: list[tuple[Holder, str, Tensor | None, Tensor]],
             backend: Backend) -> StagedProgram:
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
    tname = _Names("t")  # the live Tensors (and modules) the code reads and rebinds
    tobjs = tname.objects
    # How the replay reaches a live tensor: a gradient buffer through its leaf (``p._grad``: the
    # buffer the leaf holds at that call), a module attribute the step rebinds through the
    # module, anything else as itself. Bound once at the start of a replay.
    slot_of = {id(old): (h, name) for h, name, old, _ in fresh if old is not None}
    refs: dict[int, str] = {}
    live_read: list[Tensor] = []

    def ref(t: Tensor) -> str:
        r = refs.get(id(t))
        if r is not None:
            return r
        owner = grad_of.get(id(t))
        if owner is not None:
            where = f"a{input_ids[id(owner)]}" if id(owner) in input_ids else ref(owner)
            expr = f"{where}._grad"
        elif id(t) in slot_of:
            h, name = slot_of[id(t)]
            expr = f"{tname(h)}.__dict__[{name!r}]"
        else:
            live_read.append(t)
            refs[id(t)] = tname(t)
            return refs[id(t)]
        r = refs[id(t)] = f"r{len(refs)}"
        body.append(f"{r} = {expr}")
        return r

    for v, key in tr.sources.items():
        if key[0] == "live" and (v in needed or v in final):
            body.append(f"v{v} = {ref(live_keys[key[1]])}.data")
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
        body.append(f"{ref(t)}.data = {g.names.get(v) or f'v{v}'}")
    # What the step made and left in a gradient or a module attribute is a new Tensor at every
    # call, as in eager (a caller holding last call's .grad keeps its values).
    made = {id(t): v for t, v in escaped}
    new_objects = {id(gt) for _, gt in grads if gt is not None} | {id(e) for *_, e in fresh}
    for t, v in escaped:
        if v not in folded and id(t) not in new_objects:
            body.append(f"{tname(t)}.data = v{v}")
    for t, gt in grads:
        who = f"a{input_ids[id(t)]}" if id(t) in input_ids else ref(t)
        if gt is None:
            body.append(f"{who}._grad = None")
        else:
            v = made[id(gt)]
            body.append(f"{who}._grad = W({g.names.get(v) or f'v{v}'}, B)")
    for h, name, _old, e in fresh:
        v = made[id(e)]
        body.append(f"{tname(h)}.__dict__[{name!r}] = W({g.names.get(v) or f'v{v}'}, B)")
    for k, v in in_writes:
        body.append(f"a{k}.data = {g.names.get(v) or f'v{v}'}")
    rets = [(g.names.get(v) or f"v{v}") if kind == "ref" else "None" for kind, v in out_spec]
    body.append("return (" + "".join(f"{r}, " for r in rets) + ")")
    closure = ([f"f{k}" for k in range(len(fns))] + [f"c{k}" for k in range(len(g.consts))]
               + [f"t{k}" for k in range(len(tobjs))] + ["W", "B"])
    src = (f"def _make({', '.join(closure)}):\n"
           f"    def _replay({', '.join(params)}):\n"
           + "".join(f"        {line}\n" for line in body)
           + "    return _replay\n")
    namespace: dict[str, Any] = {}
    exec(compile(src, "<agnograd staged replay>", "exec"), namespace)  # noqa: S102 - our own code
    replay = namespace["_make"](*fns, *g.consts, *tobjs, Tensor._wrap, backend)
    program = StagedProgram(replay, src, calls, recorded, out_spec, [], tr.backend)
    program.live_read = live_read
    written = mutated | escaping
    rebound = {k for k, _ in in_writes}  # input positions whose .data the step rebinds
    program.read_only_inputs = [v not in written and k not in rebound for k, v in enumerate(in_vals)]
    return program
