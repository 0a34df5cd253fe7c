"""Checkpointing: ``checkpoint(fn, *args)`` keeps no intermediates of ``fn`` and recomputes
them at backward, with gradients identical to ``fn(*args)``'s -- for the arguments and for every
Tensor ``fn`` reads by closure -- and the same random draws (recorded, then replayed).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ._tensor import Tensor
from .autograd import (
    Node,
    backward,
    creation_mark,
    edge_of,
    enable_grad,
    is_grad_enabled,
    outside_reads,
    read_key,
    unpack_saved,
)
from .backends import batching as _batching
from .pytree import tree_flatten, tree_unflatten

__all__ = ["checkpoint", "host_random", "note_generator"]

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
#
# Device generators (agnograd.random) are not recorded -- their draws stay on the device --
# but their state is: the first draw from a generator inside a checkpoint's forward pass calls
# note_generator, which keeps a copy of the generator's state (on the device) in the tape. The
# recomputation sets each noted generator back to that state, runs the function (so it draws
# the forward's numbers again), and then puts the state it found back (PyTorch's
# preserve_rng_state): the program after the checkpoint sees the same stream as without it.


class _Draws:
    """One checkpoint's tape of host random draws: being recorded, or being replayed."""

    __slots__ = ("values", "replay", "pos", "name", "generators")

    def __init__(self, name: str, values: list[Any] | None = None) -> None:
        self.name = name
        self.replay = values is not None
        self.values: list[Any] = [] if values is None else values
        self.pos = 0
        # (device generator, its state before its first draw in the forward pass)
        self.generators: list[tuple[Any, Any]] = []

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


def note_generator(gen: Any) -> None:
    """Called by a device generator (:class:`agnograd.random.Generator`) before each draw:
    every checkpoint forward pass being recorded (inside the innermost recomputation, if any)
    that has not seen ``gen`` yet keeps a copy of its state (``gen.get_state()``)."""
    stack = _tapes.stack
    if not stack:
        return
    j = len(stack) - 1
    while j >= 0 and not stack[j].replay:
        j -= 1
    for tape in stack[j + 1:]:
        if all(g is not gen for g, _ in tape.generators):
            tape.generators.append((gen, gen.get_state()))


@contextlib.contextmanager
def _restored(gens: list[tuple[Any, Any]]) -> Iterator[None]:
    """Each generator set to its saved state for the block, then back to the state it had."""
    if not gens:
        yield
        return
    now = [g.get_state() for g, _ in gens]
    for g, state in gens:
        g.set_state(state)
    try:
        yield
    finally:
        for (g, _), state in zip(gens, now):
            g.set_state(state)


@contextlib.contextmanager
def _using(tape: _Draws) -> Iterator[None]:
    stack = _tapes.stack
    stack.append(tape)
    try:
        yield
    finally:
        stack.pop()


def checkpoint(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` without keeping its intermediates: backward runs ``fn`` again and
    backpropagates through that recomputation. Trades compute for memory; the gradients are
    identical to those of ``fn(*args)``, for the arguments *and* for every Tensor ``fn`` reads
    otherwise (by closure, as a module's parameters, as a global).

    ``fn`` may return a Tensor or a pytree (tuples, lists, dicts) of them. It must be a function
    of its inputs: recomputing it must read the same Tensors and make the same random draws. Its
    host random draws (``dropout`` with a ``seed``) are recorded in the forward pass and replayed
    by the recomputation; the device generators it draws from (:mod:`agnograd.random`, dropout's
    default) are set back to their state at the forward pass for the recomputation and then put
    back. Either way the masks are the same and the generators advance only once. What would
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
    if not is_grad_enabled():
        return fn(*args)

    name = getattr(fn, "__name__", None) or type(fn).__name__
    # 0: an argument that requires grad (fn gets a fresh leaf for it), 1: another Tensor, 2: other
    kinds = tuple(0 if type(a) is Tensor and a._requires_grad else 1 if type(a) is Tensor else 2
                  for a in args)
    aliases = [_alias(a) if k == 0 else a for a, k in zip(args, kinds)]
    tape = _Draws(name)
    start = creation_mark()
    with enable_grad(), _using(tape):
        out = fn(*aliases)
    leaves, spec = tree_flatten(out)
    picks = [j for j, t in enumerate(leaves) if type(t) is Tensor and t._requires_grad]
    if not picks:
        return out
    roots = [leaves[j] for j in picks]
    backend = roots[0]._backend
    if any(r._backend is not backend for r in roots):
        raise TypeError(f"checkpoint({name}): the function's differentiable outputs are on "
                        "several backends; checkpoint functions whose outputs share one backend")
    cells: list[Any] = []  # the version cells of what its ops saved: checked at recomputation
    found = outside_reads(roots, start, cells)
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
    cache: list[Any] = [None, None, 0]  # the cotangent, the gradients it gave, how many handed out

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
                    # (a batched backward -- vmap of a pullback, jacrev's rows -- hands the saved
                    # arrays as its level's shared values: the recomputation runs unbatched, as
                    # the forward did, and its own walk takes the batched cotangent node by node,
                    # so closure reads get per-example gradients, not their sum)
                    t = Tensor._wrap(_batching.unshared(a, backend), backend)
                    t._requires_grad = True
                inputs.append(t)
                arg_keys.append(read_key(t))
            elif k == 1:
                inputs.append(a if type(a) is Tensor else Tensor._wrap(
                    _batching.unshared(a, backend), backend))
                arg_keys.append(None)
            else:
                inputs.append(a.data if create and type(a) is Tensor else a)
                arg_keys.append(None)
        replay = _Draws(name, tape.values)
        begin = creation_mark()
        # Tensors read by closure were leaves that required grad when the forward ran; a
        # transform that has returned since (vjp's pullback called later) may have released
        # them: they require grad again while the recomputation records its graph.
        released = [e for key, e in outside if type(key) is int and not e._requires_grad]
        for e in released:
            e._requires_grad = True
        try:
            with enable_grad():
                with _using(replay), _restored(tape.generators):
                    y = fn(*inputs)
                replay.finish()
                ys, spec2 = tree_flatten(y)
                if spec2 != spec or any(
                        type(ys[j]) is not Tensor or not ys[j]._requires_grad
                        or ys[j].shape != out_shapes[m] for m, j in enumerate(picks)):
                    raise RuntimeError(f"checkpoint({name}): recomputing the function gave outputs of "
                                       "another structure, shape or differentiability than its "
                                       "forward pass; it must be a function of its inputs")
                ys = [ys[j] for j in picks]
                reached = outside_reads(ys, begin)
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
                    key = read_key(t)
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
                    res = backward(ys, root_grads, retain_graph=create, create_graph=create,
                                   targets=targets) or []
        finally:
            for e in released:
                e._requires_grad = False
        out_g: list[Any] = []
        for s in slot:
            r = None if s is None else res[s]
            out_g.append(None if r is None else (r if create else r.data))
        return out_g

    def rule_for(i: int) -> Callable[..., Any]:
        def rule(xp: Any, g: Any, *saved: Any) -> Any:
            if cache[0] is not g:
                cache[0], cache[1], cache[2] = g, recompute(g, saved), 0
            r = cache[1][i]
            cache[1][i] = None  # hand each gradient out once
            cache[2] += 1
            if cache[2] == n_rules:  # all handed out: hold neither the cotangent nor the rest
                cache[0] = cache[1] = None
            return r

        return rule

    edges = tuple(edge_of(a) if k == 0 else None for a, k in zip(args, kinds)) + tuple(
        e for _, e in outside)
    vjps = tuple(rule_for(i) if edges[i] is not None else None for i in range(n_edges))
    n_rules = sum(v is not None for v in vjps)
    raw, src, versions = unpack_saved(tuple(args), tuple(args), ())
    outs = None if len(out_datas) == 1 else tuple((d.shape, d.dtype) for d in out_datas)
    node = Node(f"checkpoint({name})", backend, vjps, edges, raw, src, (), None, outs,
                        versions)
    flat = list(others)
    for m, j in enumerate(picks):
        flat[j] = Tensor._wrap(out_datas[m], backend, node, m)
    return tree_unflatten(spec, flat)


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
