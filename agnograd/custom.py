"""User-defined derivative rules and graph control: ``custom_vjp``, ``Function``, ``checkpoint``,
``detect_anomaly``.

``custom_vjp`` follows ``jax.custom_vjp``: ``f.defvjp(fwd, bwd)`` where ``fwd(*args)`` returns
``(out, residuals)`` and ``bwd(residuals, g)`` returns one cotangent per positional input. The
forward runs with grad mode as it is, so residuals computed from the inputs stay connected to
the graph; ``bwd`` written with agnograd ops is therefore differentiable again (higher order).
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator
from typing import Any

from . import _engine
from ._engine import _anomaly, enable_grad, no_grad, record
from ._tensor import Tensor, as_tensor

__all__ = ["custom_vjp", "Function", "FunctionCtx", "checkpoint", "detect_anomaly"]


class _Residuals:
    """Holds residual Tensors in a node's saved tuple (freed with it after backward)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def _call_bwd(bwd: Callable[..., Any], n: int, name: str) -> tuple[Callable[..., Any], ...]:
    """One rule per input over a single call of ``bwd`` per backward visit (cached by ``g``)."""
    cache: list[Any] = [None, None]

    def run(xp: Any, g: Any, residuals: _Residuals, backend: Any) -> tuple[Any, ...]:
        if cache[0] is g:
            return cache[1]  # type: ignore[no-any-return]
        raw = type(g) is not Tensor
        gt = Tensor._wrap(g, backend) if raw else g
        ctx = no_grad() if raw else enable_grad()
        with ctx:
            out = bwd(residuals.value, gt)
        if not isinstance(out, tuple) or len(out) != n:
            raise TypeError(f"{name}: bwd must return a tuple with one cotangent per positional "
                            f"input ({n}), got {type(out).__name__}"
                            + (f" of length {len(out)}" if isinstance(out, tuple) else ""))
        res = tuple(None if c is None else (as_tensor(c, backend).data if raw else as_tensor(c, backend))
                    for c in out)
        cache[0], cache[1] = g, res
        return res

    def rule_for(i: int) -> Callable[..., Any]:
        def rule(xp: Any, g: Any, residuals: _Residuals, backend: Any) -> Any:
            return run(xp, g, residuals, backend)[i]

        return rule

    return tuple(rule_for(i) for i in range(n))


class custom_vjp:  # noqa: N801 - named after jax.custom_vjp
    """Decorate ``f`` to give it a hand-written VJP (see the module docstring).

    Example (a softplus whose naive gradient overflows)::

        @ag.custom_vjp
        def softplus(x):
            return ag.logaddexp(x, 0.0)

        def fwd(x):
            return softplus(x), (x,)

        def bwd(res, g):
            (x,) = res
            return (g / (1 + ag.exp(-x)),)

        softplus.defvjp(fwd, bwd)
    """

    def __init__(self, f: Callable[..., Any]) -> None:
        self.f = f
        self.fwd: Callable[..., Any] | None = None
        self.bwd: Callable[..., Any] | None = None
        self._in_fwd = threading.local()  # fwd may call f itself (as in JAX): that call is primal
        functools.update_wrapper(self, f)

    def defvjp(self, fwd: Callable[..., Any], bwd: Callable[..., Any]) -> None:
        self.fwd, self.bwd = fwd, bwd

    def __call__(self, *args: Any) -> Any:
        if self.fwd is None or self.bwd is None:
            raise TypeError(f"{getattr(self.f, '__name__', 'custom_vjp')}: call .defvjp(fwd, bwd) "
                            "before using it")
        needs = _engine.is_grad_enabled() and any(
            type(a) is Tensor and a._requires_grad for a in args)
        if not needs or getattr(self._in_fwd, "on", False):
            return self.f(*args)
        self._in_fwd.on = True
        try:
            out, residuals = self.fwd(*args)
        finally:
            self._in_fwd.on = False
        out = as_tensor(out)
        name = getattr(self.f, "__name__", "custom_vjp")
        rules = _call_bwd(self.bwd, len(args), name)
        inputs = tuple(a if type(a) is Tensor else None for a in args)
        meta = tuple((a.data.shape, a.data.dtype) if type(a) is Tensor else None for a in args)
        return record(name, out.data, out._backend, inputs,
                      tuple(r if type(a) is Tensor else None for r, a in zip(rules, args)),
                      saved=(_Residuals(residuals),), meta=meta, params=(out._backend,))


class FunctionCtx:
    """The ``ctx`` of :class:`Function`: ``save_for_backward(*tensors)``, ``saved_tensors``, and
    any attributes ``forward`` sets."""

    def __init__(self) -> None:
        self.saved_tensors: tuple[Any, ...] = ()

    def save_for_backward(self, *tensors: Any) -> None:
        self.saved_tensors = tensors


class Function:
    """PyTorch-style custom op: subclass with ``forward(ctx, *args)`` and
    ``backward(ctx, g) -> one cotangent per input`` (static methods), call ``MyOp.apply(*args)``.
    Built on :class:`custom_vjp`, so ``backward`` written with agnograd ops is differentiable."""

    @staticmethod
    def forward(ctx: FunctionCtx, *args: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    @staticmethod
    def backward(ctx: FunctionCtx, g: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def apply(cls, *args: Any) -> Any:
        def f(*a: Any) -> Any:
            with no_grad():
                return cls.forward(FunctionCtx(), *a)

        def fwd(*a: Any) -> tuple[Any, Any]:
            ctx = FunctionCtx()
            out = cls.forward(ctx, *a)
            return out, ctx

        def bwd(ctx: FunctionCtx, g: Any) -> tuple[Any, ...]:
            res = cls.backward(ctx, g)
            return res if isinstance(res, tuple) else (res,)

        f.__name__ = cls.__name__
        op = custom_vjp(f)
        op.defvjp(fwd, bwd)
        return op(*args)


# ---------------------------------------------------------------------------------------------
# Checkpointing
#
# Random draws. A checkpointed function runs twice: once forward, once when backward recomputes
# it. Every host random draw agnograd's ops make (dropout's masks) goes through
# :func:`host_random`: while a checkpoint's forward runs, the draws are recorded; while its
# recomputation runs, the recorded draws are handed back in the same order instead of drawing
# again. That is exact for any generator (a seed, agnograd's own, or one the caller passes), and
# the generators are never advanced by the recomputation, so the program after the checkpoint sees
# the same random stream as without it.


class _Draws:
    """One checkpoint's tape of host random draws: being recorded, or being replayed."""

    __slots__ = ("values", "replay", "pos", "name")

    def __init__(self, name: str, values: list[Any] | None = None) -> None:
        self.name = name
        self.replay = values is not None
        self.values: list[Any] = [] if values is None else values
        self.pos = 0

    def take(self, shape: tuple[int, ...]) -> Any:
        if self.pos >= len(self.values):
            raise RuntimeError(
                f"checkpoint({self.name}): recomputing the function drew more random arrays than "
                f"its forward pass ({len(self.values)}); a checkpointed function must make the same "
                "random draws every time it runs (same ops, same order)")
        value = self.values[self.pos]
        if tuple(value.shape) != tuple(shape):
            raise RuntimeError(
                f"checkpoint({self.name}): random draw {self.pos} had shape {tuple(value.shape)} in "
                f"the forward pass but {tuple(shape)} when recomputed; a checkpointed function must "
                "make the same random draws every time it runs")
        self.pos += 1
        return value

    def finish(self) -> None:
        if self.replay and self.pos != len(self.values):
            raise RuntimeError(
                f"checkpoint({self.name}): recomputing the function drew {self.pos} random arrays "
                f"but its forward pass drew {len(self.values)}; a checkpointed function must make "
                "the same random draws every time it runs")


class _Tapes(threading.local):
    def __init__(self) -> None:
        self.stack: list[_Draws] = []


_tapes = _Tapes()


def host_random(draw: Callable[[], Any], shape: tuple[int, ...]) -> Any:
    """``draw()`` (a host array of ``shape``), recorded or replayed for :func:`checkpoint`.

    Outside any checkpoint this is ``draw()``. Inside one, the innermost tape being replayed
    supplies the value (nothing is drawn); otherwise it is drawn. Every tape being recorded above
    that point keeps the value, so nested checkpoints replay it too.
    """
    stack = _tapes.stack
    if not stack:
        return draw()
    j = len(stack) - 1
    while j >= 0 and not stack[j].replay:
        j -= 1
    value = stack[j].take(shape) if j >= 0 else draw()
    for tape in stack[j + 1:]:
        tape.values.append(value)
    return value


@contextlib.contextmanager
def _using(tape: _Draws) -> Iterator[None]:
    stack = _tapes.stack
    stack.append(tape)
    try:
        yield
    finally:
        stack.pop()


def _reached(roots: list[Tensor], start: int) -> tuple[dict[Any, Any], list[Any]]:
    """Walk the graph a call made (nodes numbered after ``start``) back from ``roots``.

    Returns what it reads from outside -- key -> edge, a key being ``id(leaf)`` for a leaf or
    ``(node, k)`` for output ``k`` of an earlier node -- and the version cells (cell, count) of
    every Tensor its ops saved, so a change in place before the recomputation is caught.
    """
    found: dict[Any, Any] = {}
    cells: list[Any] = []
    seen: set[Any] = set()
    stack: list[Any] = []

    def visit(edge: Any) -> None:
        p, k = _engine.edge_target(edge)
        if type(p) is _engine.Node:
            if p.seq > start:
                if p not in seen:
                    seen.add(p)
                    stack.append(p)
            else:
                found.setdefault((p, k), edge)
        else:
            found.setdefault(id(p), p)

    for r in roots:
        visit(_engine._edge(r))
    while stack:
        n = stack.pop()
        v = n.versions
        if v is not None:
            cells.extend((v[j + 1], v[j + 2]) for j in range(0, len(v), 3))
        for e in n.edges:
            if e is not None:
                visit(e)
    return found, cells


def _key(t: Tensor) -> Any:
    return id(t) if t._node is None else (t._node, t._index)


def checkpoint(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` without keeping its intermediates: backward runs ``fn`` again and
    backpropagates through that recomputation. Trades compute for memory; the gradients are
    identical to those of ``fn(*args)``, for the arguments *and* for every Tensor ``fn`` reads
    otherwise (by closure, as a module's parameters, as a global).

    ``fn`` may return a Tensor or a pytree (tuples, lists, dicts) of them. It must be a function
    of its inputs: recomputing it must read the same Tensors and make the same random draws. Its
    random draws (``dropout``) are recorded in the forward pass and replayed by the
    recomputation, so the masks are the same and the generators advance only once. What would
    make the recomputation differ raises ``RuntimeError`` at backward: a Tensor it reads changed
    in place since the forward pass, or the recomputation read other Tensors or drew other
    random arrays.

    How: the forward pass runs ``fn`` once with grad recording on, walks the graph it made to
    find the Tensors it read from outside (leaves and results of earlier ops), and frees that
    graph; the checkpoint is then one node with an edge to each argument and each of those
    Tensors. Its rule recomputes ``fn`` with grad on and backpropagates the cotangent through the
    recomputed graph up to exactly those Tensors (they are the backward's targets: nothing is
    accumulated into any ``.grad`` there), returning one gradient per edge -- so ``.backward()``,
    ``ag.grad`` over a Tensor read by closure, nested checkpoints and ``create_graph`` (higher
    order) are all exact.
    """
    if not _engine.is_grad_enabled():
        return fn(*args)
    from .func import _flatten, _unflatten

    name = getattr(fn, "__name__", None) or type(fn).__name__
    # 0: an argument that requires grad (fn gets a fresh leaf for it), 1: another Tensor, 2: other
    kinds = tuple(0 if type(a) is Tensor and a._requires_grad else 1 if type(a) is Tensor else 2
                  for a in args)
    aliases = [_alias(a) if k == 0 else a for a, k in zip(args, kinds)]
    tape = _Draws(name)
    start = next(_engine._sequence)
    with enable_grad(), _using(tape):
        out = fn(*aliases)
    leaves, spec = _flatten(out)
    picks = [j for j, t in enumerate(leaves) if type(t) is Tensor and t._requires_grad]
    if not picks:
        return out
    roots = [leaves[j] for j in picks]
    backend = roots[0]._backend
    if any(r._backend is not backend for r in roots):
        raise TypeError(f"checkpoint({name}): the function's differentiable outputs are on "
                        "several backends; checkpoint functions whose outputs share one backend")
    found, cells = _reached(roots, start)
    alias_ids = {id(a) for a, k in zip(aliases, kinds) if k == 0}
    outside = [(key, e) for key, e in found.items() if key not in alias_ids]
    # Leaves read from outside: their versions too (an op that saves nothing, like `h + b`,
    # still makes the recomputation depend on b's value).
    for key, e in outside:
        if type(key) is int:
            if e._version is None:
                e._version = [0]
            cells.append((e._version, e._version[0]))
    cells = list({id(c): (c, n) for c, n in cells}.values())
    outside_keys = [key for key, _ in outside]
    out_datas = tuple(r.data for r in roots)
    out_shapes = tuple(tuple(d.shape) for d in out_datas)  # the rule keeps shapes, not arrays
    others = [None if j in picks else t for j, t in enumerate(leaves)]
    del out, leaves, roots, found  # the forward graph is freed here
    outside_set = set(outside_keys)

    n_args = len(args)
    n_edges = n_args + len(outside)
    cache: list[Any] = [None, None]

    def recompute(g: Any, saved: tuple[Any, ...]) -> list[Any]:
        create = type(g[0] if type(g) is tuple else g) is Tensor
        for cell, count in cells:
            if cell[0] != count:
                raise RuntimeError(
                    f"checkpoint({name}): a Tensor the function read in its forward pass was "
                    f"modified in place afterwards (version {count} -> {cell[0]}), so recomputing "
                    "it would give a wrong gradient. Do the in-place update after backward, or "
                    "use the out-of-place form (x = x + y instead of x += y).")
        inputs: list[Any] = []
        arg_keys: list[Any] = []
        for a, k in zip(saved, kinds):
            if k == 0:
                if create:  # the argument itself, attached to the graph: differentiable again
                    t = a
                else:
                    t = Tensor._wrap(a, backend)
                    t._requires_grad = True
                inputs.append(t)
                arg_keys.append(_key(t))
            elif k == 1:
                inputs.append(a if type(a) is Tensor else Tensor._wrap(a, backend))
                arg_keys.append(None)
            else:
                inputs.append(a.data if create and type(a) is Tensor else a)
                arg_keys.append(None)
        replay = _Draws(name, tape.values)
        begin = next(_engine._sequence)
        with enable_grad():
            with _using(replay):
                y = fn(*inputs)
            replay.finish()
            ys, spec2 = _flatten(y)
            if spec2 != spec or any(
                    type(ys[j]) is not Tensor or not ys[j]._requires_grad
                    or ys[j].shape != out_shapes[m] for m, j in enumerate(picks)):
                raise RuntimeError(f"checkpoint({name}): recomputing the function gave outputs of "
                                   "another structure, shape or differentiability than its "
                                   "forward pass; it must be a function of its inputs")
            ys = [ys[j] for j in picks]
            reached, _ = _reached(ys, begin)
            own = {key for key in arg_keys if key is not None}
            extra = [key for key in reached if key not in own and key not in outside_set]
            missing = [key for key in outside_keys if key not in reached]
            if extra or missing:
                raise RuntimeError(
                    f"checkpoint({name}): recomputing the function read {len(extra)} Tensor(s) "
                    f"that need grad which its forward pass did not, and not {len(missing)} that "
                    "it did; a checkpointed function must read the same Tensors every time it "
                    "runs (no state that changes between the forward pass and backward)")
            # Targets: each argument's leaf, then each Tensor read from outside (by key; a key
            # met twice -- under create_graph an argument also read by closure -- gets its
            # whole gradient on its first edge).
            targets: list[Tensor] = []
            index: dict[Any, int] = {}
            slot: list[int | None] = []
            for t, k in zip(inputs, kinds):
                if k != 0:
                    slot.append(None)
                    continue
                key = _key(t)
                if key in index:
                    slot.append(None)
                else:
                    index[key] = len(targets)
                    slot.append(index[key])
                    targets.append(t)
            for key, e in outside:
                if key in index:
                    slot.append(None)
                    continue
                index[key] = len(targets)
                slot.append(index[key])
                if type(key) is int:
                    targets.append(e)
                else:  # a handle on output k of an earlier node: only its position is read
                    targets.append(Tensor._wrap(ys[0].data, backend, key[0], key[1]))
            gs = list(g) if type(g) is tuple else [g]
            root_grads = [gs[m] for m in range(len(picks))]
            with _hooks_off(targets):
                res = _engine.backward(ys, root_grads, create, create, targets=targets) or []
        out_g: list[Any] = []
        for s in slot:
            r = None if s is None else res[s]
            out_g.append(None if r is None else (r if create else r.data))
        return out_g

    def rule_for(i: int) -> Callable[..., Any]:
        def rule(xp: Any, g: Any, *saved: Any) -> Any:
            if cache[0] is not g:
                cache[0], cache[1] = g, recompute(g, saved)
            r = cache[1][i]
            cache[1][i] = None  # hand each gradient out once: the cache holds no memory after
            return r

        return rule

    edges = tuple(_engine._edge(a) if k == 0 else None for a, k in zip(args, kinds)) + tuple(
        e for _, e in outside)
    vjps = tuple(rule_for(i) if edges[i] is not None else None for i in range(n_edges))
    raw, src, versions = _engine._unpack_saved(tuple(args), tuple(args), ())
    outs = None if len(out_datas) == 1 else tuple((d.shape, d.dtype) for d in out_datas)
    node = _engine.Node(f"checkpoint({name})", backend, vjps, edges, raw, src, (), None, outs,
                        versions)
    flat = list(others)
    for m, j in enumerate(picks):
        flat[j] = Tensor._wrap(out_datas[m], backend, node, m)
    return _unflatten(spec, flat)


def _alias(a: Tensor) -> Tensor:
    """A fresh leaf over ``a``'s data (sharing its version counter), requiring grad."""
    t = a.detach()
    t._requires_grad = True
    return t


@contextlib.contextmanager
def _hooks_off(targets: list[Tensor]) -> Iterator[None]:
    """A checkpoint's inner backward stops at its targets; their hooks run once, in the outer
    backward, on the whole gradient -- not here on a part of it."""
    undo: list[Any] = []
    for t in targets:
        if t._node is None:
            if t._hooks:
                undo.append((t, t._hooks))
                t._hooks = None
        elif t._node.hooks:
            undo.append((t._node, t._node.hooks))
            t._node.hooks = None
    try:
        yield
    finally:
        for obj, hooks in undo:
            if type(obj) is Tensor:
                obj._hooks = hooks
            else:
                obj.hooks = hooks


@contextlib.contextmanager
def detect_anomaly() -> Iterator[None]:
    """Within the block, ops record where they were created (file:line), and backward checks
    every gradient it computes: the first op whose gradient contains NaN or inf raises
    ``FloatingPointError`` naming the op and that place. Costs a host sync per op: debug only."""
    previous = _anomaly.enabled
    _anomaly.enabled = True
    try:
        yield
    finally:
        _anomaly.enabled = previous
