"""Scaling out with Dask: differentiate Dask-array programs, on one machine or a cluster.

Two ways to use agnograd on data that outgrows memory:

* **Lazy** (any program): ``ag.tensor(dask_array, requires_grad=True)`` works like any backend.
  The forward pass and ``backward()`` only build Dask graphs; nothing runs until you compute.
  :func:`loss_and_grads` computes the loss and every gradient in one ``dask.compute`` call (they
  share the forward graph), and :func:`persist` materialises parameters (and optimizer state)
  after each optimizer step, so the graph does not grow from one step to the next.
* **Data-parallel** (losses that are sums or means over samples): :func:`value_and_grad` runs
  the engine on every row chunk of ``X`` (and ``y``) with the chunk's own library (NumPy or CuPy)
  and sums the per-chunk results: a few tasks per chunk instead of the lazy graph.

Both run on whatever Dask scheduler is active: the threaded scheduler by default, or a
``distributed.Client`` (``LocalCluster`` or a real cluster). This module imports no array
library itself; Dask is reached through :mod:`agnograd.backends.dask`, imported when a helper
first runs (``import agnograd`` does not import Dask).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ._tensor import Tensor, as_tensor, tensor
from .func import value_and_grad as _value_and_grad
from .random import Generator

__all__ = ["compute", "loss_and_grads", "persist", "task_count", "value_and_grad"]


def _lib() -> Any:
    """:mod:`agnograd.backends.dask` (it imports Dask, so it is imported on first use)."""
    return importlib.import_module("agnograd.backends.dask")


def _is_dask_array(a: Any) -> bool:
    # Without importing Dask: a Dask array exists only once Dask is imported.
    return "dask.array" in sys.modules and _lib().is_dask_array(a)


def _dask_data(t: Any, what: str) -> Any:
    """The Dask array of a Tensor or of a raw Dask array (with an error naming ``what``)."""
    data = t.data if type(t) is Tensor else t
    if not _is_dask_array(data):
        kind = f"a '{t.backend}' tensor" if type(t) is Tensor else type(t).__name__
        raise TypeError(f"{what}: expected a Dask array or a Tensor on the 'dask' backend, not {kind}; "
                        "create it with ag.tensor(dask.array.from_array(x, chunks=...))")
    return data


def compute(*tensors: Tensor | None, **kwargs: Any) -> tuple[Tensor | None, ...]:
    """Compute Dask-backed tensors in one ``dask.compute`` call (parts they share run once).

    Args:
        tensors: Tensors on the ``'dask'`` backend (``None`` is passed through).
        kwargs: passed to ``dask.compute`` (e.g. ``scheduler="threads"``).

    Returns:
        One Tensor per argument, same shape and dtype, on the chunks' backend (``'numpy'``, or
        ``'cupy'`` for CuPy chunks).
    """
    arrays = [_dask_data(t, "ag.dask.compute") for t in tensors if t is not None]
    values = iter(_lib().dask_compute(*arrays, **kwargs))
    return tuple(None if t is None else tensor(next(values)) for t in tensors)


def loss_and_grads(loss: Tensor, params: Sequence[Tensor], **kwargs: Any
                   ) -> tuple[Tensor, list[Tensor | None]]:
    """Backpropagate a Dask-backed scalar ``loss`` into ``params`` and compute the loss and every
    gradient in one ``dask.compute`` call.

    Each parameter's ``.grad`` (accumulated as by ``loss.backward()``) is replaced by the computed
    gradient, still on the ``'dask'`` backend (one task per chunk), ready for an optimizer step.

    Args:
        loss: a 0-d float Tensor on the ``'dask'`` backend that requires grad.
        params: the leaf Tensors (``'dask'`` backend) whose gradients are wanted.
        kwargs: passed to ``dask.compute``.

    Returns:
        ``(value, grads)``: the loss as a 0-d Tensor on the chunks' backend (NumPy or CuPy) and
        the gradients as computed Tensors on that backend (``None`` where none reached a
        parameter).
    """
    _dask_data(loss, "ag.dask.loss_and_grads")
    if loss.ndim != 0:
        raise ValueError(f"ag.dask.loss_and_grads: the loss must be a scalar (0-d), not shape "
                         f"{loss.shape}; reduce it with ag.sum or ag.mean")
    for p in params:
        _dask_data(p, "ag.dask.loss_and_grads (a parameter)")
    loss.backward()
    have = [p for p in params if p.grad is not None]
    value, *grads = compute(loss, *(p.grad for p in have), **kwargs)
    by_id = {}
    for p, g in zip(have, grads):
        assert g is not None
        chunks = _dask_data(p, "ag.dask.loss_and_grads").chunks
        p.grad = tensor(_lib().dask_from_array(g.data, chunks), backend="dask")
        by_id[id(p)] = g
    assert value is not None
    return value, [by_id.get(id(p)) for p in params]


def _tensors_in(obj: Any, out: list[Tensor], grads: bool) -> None:
    """Collect the Dask-backed Tensors of ``obj``: a Tensor, a container of them, an optimizer
    (its parameters and state) or a module (its parameters). Iterative, no recursion."""
    stack = [obj]
    seen: set[int] = set()
    while stack:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        if type(o) is Tensor:
            if _is_dask_array(o.data):
                out.append(o)
            if grads and o._grad is not None:  # (._grad: a non-leaf's .grad warns)
                stack.append(o._grad)
        elif isinstance(o, Generator):  # an ag.random generator: its (key, counter) state
            stack.append(o._state)
        elif isinstance(o, Mapping):
            stack.extend(o.values())
        elif isinstance(o, (list, tuple, set)):
            stack.extend(o)
        elif hasattr(o, "param_groups") and isinstance(getattr(o, "state", None), Mapping):
            stack.extend(g["params"] for g in o.param_groups)  # an optimizer
            stack.append(o.state)
        elif callable(getattr(o, "parameters", None)):
            stack.append(list(o.parameters()))  # a module


def persist(*objs: Any, grads: bool = False, **kwargs: Any) -> None:
    """Materialise Dask-backed tensors in place with one ``dask.persist`` call.

    Call it after each optimizer step: every parameter's graph (and the optimizer's momenta) is
    replaced by its computed chunks, so the next step's graph starts from one task per chunk
    instead of growing with every step. With a ``distributed.Client`` the chunks stay on the
    workers.

    Args:
        objs: Tensors, lists/tuples/dicts of them, optimizers (parameters and state), modules
            (parameters) or :class:`agnograd.random.Generator` s (each draw adds to the graph of
            their state: ``ag.random.default_generator("dask")`` for dropout's masks). Tensors
            on other backends are left alone.
        grads: also materialise the tensors' ``.grad``.
        kwargs: passed to ``dask.persist``.
    """
    found: list[Tensor] = []
    for o in objs:
        _tensors_in(o, found, grads)
    unique = list({id(t): t for t in found}.values())
    if not unique:
        return
    for t, data in zip(unique, _lib().dask_persist(*(t.data for t in unique), **kwargs)):
        t.data = data  # same values, now one task per chunk: not an in-place change


def task_count(*objs: Any) -> int:
    """How many tasks computing ``objs`` takes, shared tasks counted once: Tensors on the
    ``'dask'`` backend, Dask arrays, or the ``Delayed`` of ``value_and_grad(..., compute=False)``."""
    n = _lib().dask_task_count(*(_dask_data(o, "ag.dask.task_count") if type(o) is Tensor else o
                                 for o in objs))
    return int(n)


# ---------------------------------------------------------------------------------------------
# Data-parallel value and gradient


def _chunk_value_and_grad(loss_fn: Callable[..., Any], params: list[Any], xb: Any, yb: Any,
                          weight: float) -> tuple[Any, list[Any]]:
    """On one row chunk (a NumPy or CuPy array): ``weight * loss_fn(params, X, y)`` and its
    gradients with respect to ``params``, as raw arrays of the chunk's library."""
    x = as_tensor(xb)  # the chunk as it is (ag.tensor would copy it)
    b = x._backend
    ps = [as_tensor(p, backend=b) for p in params]  # no copy when already there (NumPy chunks)
    args = (x,) if yb is None else (x, as_tensor(yb, backend=b))

    def f(ps: list[Tensor]) -> Tensor:
        loss = loss_fn(ps, *args)
        if type(loss) is not Tensor or loss.ndim != 0:
            raise TypeError(f"ag.dask.value_and_grad: loss_fn must return a 0-d Tensor, not "
                            f"{getattr(loss, 'shape', type(loss).__name__)}")
        return loss * weight

    value, grads = _value_and_grad(f)([p.data for p in ps])
    return value, list(grads)


def _add_parts(a: tuple[Any, list[Any]], b: tuple[Any, list[Any]]) -> tuple[Any, list[Any]]:
    return a[0] + b[0], [ga + gb for ga, gb in zip(a[1], b[1])]


def value_and_grad(loss_fn: Callable[..., Tensor], params: Sequence[Any], X: Any, y: Any = None,
                   *, reduction: str = "mean", compute: bool = True, **kwargs: Any) -> Any:
    """Data-parallel value and gradient of a loss that is a mean or a sum over samples.

    ``X`` (and ``y``) are split into their row chunks; for every chunk one task runs
    ``loss_fn(params, X_chunk, y_chunk)`` and its backward with agnograd on the chunk's own
    library (NumPy, or CuPy for CuPy chunks), and the per-chunk values and gradients are summed
    (``reduction="sum"``) or averaged with weights ``rows / N`` (``reduction="mean"``: then
    ``loss_fn`` must return the mean over its chunk). Everything runs in one ``dask.compute``
    call, on the active scheduler (threads, or a ``distributed.Client``): a few tasks per chunk.

    Args:
        loss_fn: ``loss_fn(params, X, y) -> 0-d Tensor`` (``loss_fn(params, X)`` when ``y`` is
            ``None``); ``params`` arrives as a list of Tensors on the chunk's backend.
        params: Tensors or arrays (NumPy, CuPy, ...), typically small: each task gets them.
        X: Dask array or ``'dask'`` Tensor, shape ``(N, ...)``; chunked along axis 0 (other axes
            are merged into one chunk).
        y: optional Dask array or ``'dask'`` Tensor with ``N`` rows (rechunked like ``X``).
        reduction: ``"mean"`` or ``"sum"``: what ``loss_fn`` does over the samples of a chunk.
        compute: ``False`` returns the Dask ``Delayed`` of ``(value, [grads])`` (raw arrays of the
            chunks' library) instead of computing it, to be computed with other work.
        kwargs: passed to ``dask.compute``.

    Returns:
        ``(value, grads)``: the loss over all ``N`` samples as a 0-d Tensor and one gradient per
        parameter (same shape and dtype), on the parameters' backend (the first parameter's;
        NumPy for raw NumPy arrays).
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"ag.dask.value_and_grad: reduction must be 'mean' or 'sum', not {reduction!r}")
    xd = _dask_data(X, "ag.dask.value_and_grad (X)")
    rows = xd.chunks[0] if xd.ndim else ()
    if any(r != r for r in rows):
        raise ValueError("ag.dask.value_and_grad: X has unknown (NaN) chunk sizes, e.g. after boolean "
                         "indexing; call X.compute_chunk_sizes() on the Dask array first")
    n = sum(rows)
    blocks = _lib().dask_row_blocks(xd, "ag.dask.value_and_grad (X)")
    yblocks: list[Any] = [None] * len(blocks)
    if y is not None:
        yd = _dask_data(y, "ag.dask.value_and_grad (y)")
        if yd.ndim == 0 or yd.shape[0] != n:
            raise ValueError(f"ag.dask.value_and_grad: y has shape {yd.shape}, X has {n} rows; "
                             "they need the same number of rows")
        yblocks = _lib().dask_row_blocks(yd.rechunk({0: rows}), "ag.dask.value_and_grad (y)")
    ts = [p if type(p) is Tensor else tensor(p) for p in params]
    if not ts:
        raise ValueError("ag.dask.value_and_grad: params is empty")
    home = ts[0]._backend
    shared = _lib().dask_delayed_value([t.data for t in ts])
    parts = []
    for xb, yb, r in zip(blocks, yblocks, rows):
        if r == 0:
            continue
        weight = r / n if reduction == "mean" else 1.0
        parts.append(_lib().dask_delayed(_chunk_value_and_grad, loss_fn, shared, xb, yb, weight))
    if not parts:
        raise ValueError("ag.dask.value_and_grad: X has no rows")
    while len(parts) > 1:  # pairwise tree: log-depth sums, no chunk waits on all others
        nxt = [_lib().dask_delayed(_add_parts, parts[i], parts[i + 1])
               for i in range(0, len(parts) - 1, 2)]
        if len(parts) % 2:
            nxt.append(parts[-1])
        parts = nxt
    if not compute:
        return parts[0]
    (value, grads), = _lib().dask_compute(parts[0], **kwargs)
    out = [tensor(tensor(g), backend=home) for g in grads]
    return tensor(tensor(value), backend=home), out
