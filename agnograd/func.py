"""Function transforms: ``grad``, ``value_and_grad``, ``vjp``, ``jvp``, ``linearize``, ``jacobian``,
``jacfwd``, ``jacrev``, ``hessian``, ``hvp`` -- in the style of JAX, on any backend.

Inputs may be Tensors, raw backend arrays (NumPy, CuPy, ...), Python scalars, or pytrees of
those (nested tuples, lists, dicts and NamedTuples, ``None`` an empty subtree: see
:mod:`agnograd.pytree`); gradients come back in the same structure. Each differentiated input is
replaced by a fresh alias Tensor that requires grad (recorded as an identity op when the input is
itself part of an outer graph, so transforms nest: ``grad(grad(f))``); the function runs on
those; the engine walks back from the output to the aliases only. Results mirror the inputs'
types: a NumPy array in gives a NumPy array out, a CuPy array a CuPy array, a Tensor a Tensor, a
Python float a Python float.

Nesting: with grad mode on, a transform whose results depend on a Tensor that requires grad --
an input, a tangent or cotangent, or one the function reads by closure (the variable of an
outer transform, a model's parameters) -- runs its backward with ``create_graph`` and returns
every result as a Tensor that carries that graph, whatever the kind of its inputs, as JAX's
nested tracing and ``torch.func`` do. Finding the closure reads costs one walk over the graph
the function recorded (stopping at the first outside read).

``jvp``, ``linearize`` and ``jacfwd`` run in forward mode (:mod:`agnograd.autograd.forward`):
the tangents ride beside one forward pass, no graph is kept and no backward runs. Where a
``jvp``'s result must carry a reverse-mode graph (``grad`` of ``jvp``) it uses the double-VJP
construction instead (``jvp`` inside ``jvp`` stays in forward mode, one perturbation level per
trace: :class:`~agnograd.autograd.forward.Dual`): with ``u`` a dummy cotangent, ``g(u) = Jᵀu`` is
linear in ``u``, so the VJP of ``g`` applied to the tangent ``v`` is ``(Jᵀ)ᵀ v = J v``. It costs
about two backward passes and needs the rules to be differentiable, which all of agnograd's
are. ``jacobian`` picks forward mode when the inputs have fewer elements than the outputs.
``jacobian`` builds the graph of ``f`` once and walks it backwards once, with the ``m`` unit
cotangents as one batched cotangent (a ``vmap`` level over the graph, :mod:`agnograd.batching`:
JAX's ``vmap`` of the pullback); ``jacfwd`` runs one ``jvp`` ``vmap``-ed over the unit tangents.
Where a rule cannot be batched they loop, one walk or one ``jvp`` per row or column.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from ._dtypes import from_backend_dtype
from ._ops.data_types import astype
from ._ops.elementwise import conj, real
from ._ops.manipulation import reshape, stack
from ._ops.statistics import sum as _sum
from ._tensor import Tensor, fit_seed, tensor
from .autograd import (
    backward,
    creation_mark,
    enable_grad,
    is_grad_enabled,
    no_grad,
    read_key,
    reads_other,
    record,
)
from .autograd.forward import Dual, forward_trace, fwd_state
from .backends import backend_of_array
from .backends import batching as _batching
from .batching import lift
from .capture.jit import JitFunction
from .pytree import tree_flatten, tree_leaves, tree_structure, tree_unflatten

__all__ = ["grad", "value_and_grad", "vjp", "jvp", "jacobian", "jacfwd", "jacrev", "linearize",
           "hessian", "hvp"]

_SCALARS = (bool, int, float)
_LEAF_SPEC = tree_structure(0)  # the structure of a single output

# ---------------------------------------------------------------------------------------------
# Inputs and outputs


def _identity_back(xp: Any, g: Any) -> Any:
    return g


def _alias(x: Any, what: str, link: bool) -> tuple[Tensor, Any]:
    """A fresh Tensor that requires grad standing for input ``x``, and how to give results back
    in ``x``'s type (``"tensor"``, ``"scalar"``, or the raw array's Backend). With ``link`` (grad
    mode on at the call) an input that requires grad is aliased by an identity op, so the
    results stay connected to it."""
    if type(x) is Tensor:
        kind: Any = "tensor"
        t = x
    elif isinstance(x, _SCALARS):
        kind = "scalar"
        t = tensor(float(x))
    else:
        b = backend_of_array(x)
        if b is None:
            raise TypeError(f"{what}: expected a Tensor, an array or a Python scalar, not "
                            f"{type(x).__name__}")
        kind = b
        t = tensor(x)
    if from_backend_dtype(t.data.dtype).kind not in "fc":
        raise TypeError(
            f"{what}: cannot differentiate with respect to an input of dtype {t.dtype.name} "
            f"(shape {t.shape}); pass floating-point values (e.g. ag.astype(x, ag.float64))"
        )
    if _batching.ACTIVE:
        # inside vmap the transform's variables belong to the innermost level: an unmapped
        # input is differentiated per example (vmap(grad(f), in_axes=(None, 0))), not summed
        inner = _batching.innermost()
        if inner is not None and _batching.below(t._backend, inner):
            t = lift(t, inner)
    d = getattr(t, "_tangent", None)
    if d is not None and d.level > 1 and link:
        raise _ReverseInNestedJvp(  # the enclosing jvp retries by two VJPs (see jvp)
            f"{what}: reverse mode of a value that carries the tangent of a jvp nested in "
            "another jvp (it is caught by that jvp, which reruns as two VJPs); outside the jvp "
            "that made it, detach the value first")
    if d is not None and not d.rev and link:
        # A forward-mode dual of an enclosing jvp (jvp of grad): a reverse leaf that keeps its
        # tangent, so the backward's ops (create_graph) carry tangents too.
        alias = Tensor._wrap(t.data, t._backend)
        alias._requires_grad = True
        alias._tangent = Dual(d.t, True, 1, None, d.trace)
    elif t._requires_grad and link:
        # Part of an outer graph (a nested transform): an identity node keeps the connection.
        alias = record("alias", t.data, t._backend, (t,), (_identity_back,))
    else:
        alias = Tensor._wrap(t.data, t._backend)
        alias._requires_grad = True
    return alias, kind


class _ReverseInNestedJvp(Exception):
    """A reverse-mode transform (``grad``, ``vjp``, ``jacrev``, ...) differentiates a value that
    carries the tangent of a nested forward trace (``jvp`` of ``jvp`` of ``grad``). Nested
    forward traces carry no reverse-mode graph; the ``jvp`` at that level catches this and runs
    as two VJPs instead (:func:`_jvp_double_vjp`), forward-over-reverse below it."""


def _give_back(g: Tensor | None, like: Tensor, kind: Any, keep_graph: bool) -> Any:
    """A gradient in the type its input came in (zeros where no gradient reached it); a Tensor
    carrying its graph when ``keep_graph`` (a raw array or a float would drop it)."""
    if g is None:
        b = like._backend
        g = Tensor._wrap(b.xp.zeros(like.data.shape, dtype=like.data.dtype,
                                    device=b.device_of(like.data)), b)
    if keep_graph:
        return g
    return _output_back(g.detach(), kind)


def _output_back(y: Tensor, kind: Any) -> Any:
    if kind == "scalar" and (y.ndim != 0 or _batching.is_batched(y.data)):
        # e.g. the Jacobian of a vector function of a scalar; or a value per example (vmap)
        return y
    return y if kind == "tensor" else (float(y.item()) if kind == "scalar" else y.data)


def _prepare(args: tuple[Any, ...], argnums: int | Sequence[int], what: str, link: bool
             ) -> tuple[list[Any], list[tuple[list[Tensor], list[Any], Any]], bool]:
    """Replace ``args[argnums]`` by alias pytrees; returns the new args and, per argnum, the
    aliases, their kinds and the pytree spec."""
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    n = len(args)
    for a in nums:
        if not -n <= a < n:
            raise IndexError(f"{what}: argnums={argnums!r} is out of range for a function called "
                             f"with {n} positional argument(s)")
    new_args = list(args)
    parts = []
    for a in nums:
        leaves, spec = tree_flatten(args[a])
        aliases, kinds = [], []
        for leaf in leaves:
            t, k = _alias(leaf, what, link)
            aliases.append(t)
            kinds.append(k)
        new_args[a] = tree_unflatten(spec, aliases)
        parts.append((aliases, kinds, spec))
    return new_args, parts, isinstance(argnums, int)


def _requires(*trees: Any) -> bool:
    """Whether a leaf of ``trees`` is a Tensor that requires grad, with grad mode on: the
    transform's results then depend on an outer graph and must keep theirs."""
    return is_grad_enabled() and any(type(a) is Tensor and a._requires_grad
                                     for a in tree_leaves(trees))


def _closes_over(ys: Sequence[Tensor], mark: int, aliases: list[Tensor]) -> bool:
    """Whether the graph the function recorded (after ``mark``) reads a Tensor that requires
    grad other than the transform's aliases: a closure over an outer transform's variable, a
    model's parameters, a tensor of an enclosing graph. The results then depend on it, so the
    backward must record its own graph (``create_graph``) and hand back Tensors. Inside a
    forward trace (``jvp`` of this transform) the backward's ops must carry tangents: always."""
    if fwd_state.on:
        return True
    return reads_other(ys, mark, {read_key(a) for a in aliases})


def _release(aliases: list[Tensor]) -> None:
    """After the transform: the aliases of inputs that did not require grad are private leaves;
    a graph kept for an outer derivative reaches them, but no gradient needs to accumulate there
    (an outer ``backward()`` would fill their ``.grad`` for nothing)."""
    for a in aliases:
        if a._node is None and getattr(a, "_tangent", None) is None:
            # (an alias carrying an enclosing jvp's tangent keeps requiring grad: the ops of a
            # later backward through it must still propagate that tangent)
            a._requires_grad = False


def _seed(y: Tensor, create_graph: bool) -> Any:
    b = y._backend
    ones = b.fix(b.xp.ones(y.data.shape, dtype=y.data.dtype, device=b.device_of(y.data)))
    return Tensor._wrap(ones, b) if create_graph else ones


def _split_aux(out: Any, has_aux: bool, what: str) -> tuple[Any, Any]:
    if not has_aux:
        return out, None
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise TypeError(f"{what}(has_aux=True): the function must return a pair (output, aux)")
    return out[0], out[1]


# ---------------------------------------------------------------------------------------------
# Transforms


def value_and_grad(f: Callable[..., Any], argnums: int | Sequence[int] = 0, has_aux: bool = False
                   ) -> Callable[..., Any]:
    """``f`` -> a function returning ``(f(*args), ∇f(*args))`` (``((value, aux), grad)`` with
    ``has_aux``). ``f`` must return a scalar; the gradient has the structure of
    ``args[argnums]`` (a tuple of them when ``argnums`` is a sequence)."""
    return _value_and_grad(f, argnums, has_aux, "grad")


def _value_and_grad(f: Callable[..., Any], argnums: int | Sequence[int], has_aux: bool, what: str
                    ) -> Callable[..., Any]:
    @functools.wraps(f)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        value, aux, g, _ = _grad_call(f, argnums, has_aux, what, args, kwargs)
        return ((value, aux) if has_aux else value), g

    return wrapped


def _grad_call(f: Callable[..., Any], argnums: int | Sequence[int], has_aux: bool, what: str,
               args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any, Any, bool]:
    """One ``value_and_grad`` call: ``(value, aux, gradient, whether the results keep their
    graph)``; ``what`` names the transform the user called in errors."""
    keep = _requires(args)
    grad_on = is_grad_enabled()
    with enable_grad():
        new_args, parts, single = _prepare(args, argnums, what, keep)
        aliases = [t for p in parts for t in p[0]]
        mark = creation_mark()
        out, aux = _split_aux(f(*new_args, **kwargs), has_aux, what)
        y = _as_output(out, what)
        if y.ndim != 0 and y.size != 1:
            raise TypeError(
                f"{what}: the function must return a scalar, not an array of shape {y.shape}; "
                "reduce it (e.g. ag.sum) or use ag.vjp / ag.jacobian for vector outputs"
            )
        keep = keep or (grad_on and _closes_over([y], mark, aliases))
        gs = (backward([y], [_seed(y, keep)], retain_graph=keep, create_graph=keep,
                       targets=aliases)
              if y._requires_grad else [None] * len(aliases))
    _release(aliases)
    grads = _regroup(parts, gs, keep)
    value = _value_back(y, args, keep)
    return value, aux, (grads[0] if single else tuple(grads)), keep


def grad(f: Callable[..., Any], argnums: int | Sequence[int] = 0, has_aux: bool = False
         ) -> Callable[..., Any]:
    """``f`` -> ``∇f``: the gradient of scalar-valued ``f`` with respect to ``args[argnums]``.

    Composes: ``grad(grad(f))`` is the second derivative. With ``has_aux=True``, ``f`` returns
    ``(scalar, aux)`` and the result is ``(gradient, aux)``.
    """
    return _grad(f, argnums, has_aux, "grad")


def _grad(f: Callable[..., Any], argnums: int | Sequence[int], has_aux: bool, what: str
          ) -> Callable[..., Any]:
    @functools.wraps(f)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        _, aux, g, _ = _grad_call(f, argnums, has_aux, what, args, kwargs)
        return (g, aux) if has_aux else g

    return wrapped


def vjp(f: Callable[..., Any], *primals: Any, has_aux: bool = False) -> tuple[Any, ...]:
    """``(f(*primals), vjp_fn)``: ``vjp_fn(cotangent)`` returns ``(∂f/∂primals)ᵀ cotangent`` as a
    tuple with one entry per primal. ``vjp_fn`` may be called several times.

    As in JAX, ``f`` may return a pytree of Tensors (a tuple, dict, NamedTuple, nested ones);
    ``vjp_fn`` then takes a cotangent of the same structure (one array per output leaf)."""
    keep = _requires(primals)
    grad_on = is_grad_enabled()
    with enable_grad():
        new_args, parts, _ = _prepare(primals, tuple(range(len(primals))), "vjp", keep)
        aliases = [t for p in parts for t in p[0]]
        mark = creation_mark()
        out, aux = _split_aux(f(*new_args), has_aux, "vjp")
        ys, out_spec = _outputs(out, "vjp")
        keep = keep or (grad_on and _closes_over(ys, mark, aliases))
    _release(aliases)

    def vjp_fn(cotangent: Any) -> tuple[Any, ...]:
        cts, ct_spec = tree_flatten(cotangent)
        if ct_spec != out_spec:
            raise ValueError(f"vjp_fn: the cotangent has structure {ct_spec!r}, the output "
                             f"{out_spec!r}; pass one array per output leaf, in the output's "
                             "structure")
        # A cotangent that requires grad (an outer transform differentiates it): the result,
        # linear in it, keeps its graph.
        keep_fn = keep or _requires(cts)
        roots, seeds = [], []
        for ct, y in zip(cts, ys):
            seed = _cotangent(ct, y, keep_fn)
            if y._requires_grad:
                roots.append(y)
                seeds.append(seed)
        with enable_grad():
            gs = (backward(roots, seeds, retain_graph=True, create_graph=keep_fn,
                           targets=aliases)
                  if roots else [None] * len(aliases))
        return tuple(_regroup(parts, gs, keep_fn))

    value = tree_unflatten(out_spec, [_value_back(y, primals, keep) for y in ys])
    result = (value, vjp_fn)
    return result + (aux,) if has_aux else result


def jvp(f: Callable[..., Any], primals: Sequence[Any], tangents: Sequence[Any]
        ) -> tuple[Any, Any]:
    """``(f(*primals), J·tangents)``: the Jacobian-vector product, in forward mode (the tangents
    ride beside the forward pass: one pass, no graph kept, no backward); ``tangents`` mirror
    ``primals``. ``f`` may return a pytree of Tensors: the tangent out has the same structure
    (as in JAX).

    Complex values follow PyTorch's ``torch.func.jvp``: a complex number is a pair of reals, and
    the tangent out is ``J·v`` for the real Jacobian of ``(Re, Im)`` -- ``f'(z)·v`` for a
    holomorphic ``f``, ``conj(v)`` for ``conj``. A complex output is allowed; a real primal
    needs a real tangent.

    Nesting: ``jvp`` of ``grad`` (forward-over-reverse, e.g. a Hessian-vector product) runs in
    forward mode through the inner backward pass. ``jvp`` inside ``jvp`` (``jacfwd(jacfwd(f))``)
    runs in forward mode with a perturbation level of its own: its primals and tangents, and so
    its results, carry the enclosing traces' tangents (as JAX's nested JVPTracers). When the
    result must itself be differentiable in reverse mode -- a primal or tangent requires grad,
    or ``f`` reads a Tensor an outer transform differentiates -- ``jvp`` takes the double-VJP
    construction instead (see the module docstring), whose results carry their graph."""
    primals, tangents = tuple(primals), tuple(tangents)
    if len(primals) != len(tangents):
        raise ValueError(f"jvp: {len(primals)} primals but {len(tangents)} tangents")
    if _requires_rev(primals, tangents) or (fwd_state.depth and not fwd_state.on):
        return _jvp_double_vjp(f, primals, tangents)
    while isinstance(f, JitFunction):  # its replay carries no tangents: run the function itself
        f = f.fn
    kind = _kind_of(primals)
    with enable_grad(), forward_trace() as level:
        trace = fwd_state.traces[-1]
        new_args = []
        aliases = []
        for p, v in zip(primals, tangents):
            leaves, spec = tree_flatten(p)
            vleaves, vspec = tree_flatten(v)
            if len(vleaves) != len(leaves):
                raise ValueError(f"jvp: a tangent has structure {vspec!r} but its primal has "
                                 f"{spec!r}; pass one tangent per primal leaf")
            new_leaves = []
            for leaf, vl in zip(leaves, vleaves):
                a, _ = _alias(leaf, "jvp", False)
                if level == 1:
                    a._tangent = Dual(_tangent_raw(vl, a), False)
                else:  # inside another jvp: primal and tangent carry the outer tangents
                    low = leaf if type(leaf) is Tensor else Tensor._wrap(a.data, a._backend)
                    a._tangent = Dual(_tangent_nested(vl, a), False, level, low)
                    a._requires_grad = True
                new_leaves.append(a)
                aliases.append(a)
            new_args.append(tree_unflatten(spec, new_leaves))
        mark = creation_mark()
        try:
            ys, out_spec = _outputs(f(*new_args), "jvp")
        except _ReverseInNestedJvp:
            if level == 1:  # (not raised for level 1: _alias keeps a level-1 tangent)
                raise
            retry = True
        else:
            retry = False
    if retry:
        return _jvp_double_vjp(f, primals, tangents)
    graphs = [y for y in ys if y._node is not None]
    if graphs and is_grad_enabled() and _closes_over(graphs, mark, []):
        # f reads a Tensor an outer transform differentiates: the tangent must carry a graph.
        return _jvp_double_vjp(f, primals, tangents)
    # (the trace has ended: its Duals read as dead through Tensor._tangent, so the outputs'
    # are read raw, and only those this very trace made count -- not a leaked sibling's)
    if level > 1:
        return _jvp_nested_results(ys, out_spec, level, primals, kind, trace)
    outs = []
    for y in ys:
        d = getattr(y, "_dual", None)
        b = y._backend
        t = (d.t if d is not None and d.trace is trace else
             b.xp.zeros(y.data.shape, dtype=y.data.dtype, device=b.device_of(y.data)))
        outs.append(_output_back(Tensor._wrap(t, b), kind))
    value = tree_unflatten(out_spec, [_value_back(y, primals, False) for y in ys])
    return value, tree_unflatten(out_spec, outs)


def _requires_rev(*trees: Any) -> bool:
    """:func:`_requires` for reverse mode only: a Tensor that requires grad because it carries
    an enclosing forward trace's tangent (and nothing else) does not count."""
    if not is_grad_enabled():
        return False
    for a in tree_leaves(trees):
        if type(a) is Tensor and a._requires_grad:
            d = getattr(a, "_tangent", None)
            if d is None or d.rev:
                return True
    return False


def _carries(t: Any) -> bool:
    return type(t) is Tensor and getattr(t, "_tangent", None) is not None


def _jvp_nested_results(ys: list[Tensor], out_spec: Any, level: int, primals: tuple[Any, ...],
                        kind: Any, trace: Any) -> tuple[Any, Any]:
    """A nested ``jvp``'s results: each output's primal and tangent as the enclosing traces see
    them (Tensors carrying their tangents; plain values where they carry none)."""
    values, outs = [], []
    for y in ys:
        d = getattr(y, "_dual", None)
        if d is not None and d.trace is trace:
            val, tan = d.p, d.t
        else:  # no dependence on this level's perturbation
            val = y
            b = y._backend
            tan = Tensor._wrap(b.xp.zeros(y.data.shape, dtype=y.data.dtype,
                                          device=b.device_of(y.data)), b)
        values.append(val if _carries(val) else _value_back(val, primals, False))
        outs.append(tan if _carries(tan) else _value_back(tan, primals, False))
    return tree_unflatten(out_spec, values), tree_unflatten(out_spec, outs)


def _tangent_nested(v: Any, like: Tensor) -> Tensor:
    """Tangent ``v`` for the alias ``like`` inside an enclosing jvp: a Tensor that keeps the
    tangents ``v`` carries (the mixed derivatives)."""
    t = _tangent_like(v, like, "jvp")
    b = like._backend
    if type(t) is not Tensor:
        return Tensor._wrap(b.xp.full(like.data.shape, t, dtype=like.data.dtype,
                                      device=b.device_of(like.data)), b)
    if t.data.dtype != like.data.dtype:
        t = astype(t, like.dtype)
    return t


def _tangent_raw(v: Any, like: Tensor) -> Any:
    """Tangent ``v`` for the alias ``like`` as a raw array of its backend, shape and dtype."""
    t = _tangent_like(v, like, "jvp")
    b = like._backend
    xp = b.xp
    if type(t) is not Tensor:
        return xp.full(like.data.shape, t, dtype=like.data.dtype, device=b.device_of(like.data))
    a = t.data
    if a.dtype != like.data.dtype:
        a = xp.astype(a, like.data.dtype)
    return a


def _jvp_double_vjp(f: Callable[..., Any], primals: tuple[Any, ...], tangents: tuple[Any, ...]
                    ) -> tuple[Any, Any]:
    """``jvp`` by two VJPs (module docstring): its results keep their graph when an outer
    transform differentiates them (``grad`` of ``jvp``, ``jvp`` inside ``jvp``)."""
    keep = _requires(primals, tangents)
    grad_on = is_grad_enabled()
    with enable_grad():
        new_args, parts, _ = _prepare(primals, tuple(range(len(primals))), "jvp", keep)
        aliases = [t for p in parts for t in p[0]]
        mark = creation_mark()
        ys, out_spec = _outputs(f(*new_args), "jvp")
        keep = keep or (grad_on and _closes_over(ys, mark, aliases))
        us = []
        for y in ys:
            u = Tensor._wrap(y._backend.xp.zeros(y.data.shape, dtype=y.data.dtype,
                                                 device=y._backend.device_of(y.data)), y._backend)
            u._requires_grad = True
            us.append(u)
        live = [(y, u) for y, u in zip(ys, us) if y._requires_grad]
        if live:
            gs = backward([y for y, _ in live], [u for _, u in live], retain_graph=True,
                          create_graph=True, targets=aliases)
        else:
            gs = [None] * len(aliases)
        # <Jᵀu, v> (the real inner product) is linear in u; its gradient with respect to u is
        # J v.
        tan_leaves = [_tangent_like(v, a, "jvp") for v, a in zip(tree_leaves(tangents), aliases)]
        total = None
        for g, v in zip(gs, tan_leaves):
            if g is not None:
                term = _sum(_real_product(g, v))
                total = term if total is None else total + term
        if total is None or not total._requires_grad:
            jvs: list[Any] = [None] * len(us)
        else:
            jvs = backward([total], [_seed(total, keep)], retain_graph=keep,
                           create_graph=keep, targets=us)
    _release(aliases + us)
    kind = _kind_of(primals)
    outs = []
    for jv, y in zip(jvs, ys):
        if jv is None:
            b = y._backend
            jv = Tensor._wrap(b.xp.zeros(y.data.shape, dtype=y.data.dtype,
                                         device=b.device_of(y.data)), b)
        outs.append(jv if keep else _output_back(jv.detach(), kind))
    value = tree_unflatten(out_spec, [_value_back(y, primals, keep) for y in ys])
    return value, tree_unflatten(out_spec, outs)


def jacobian(f: Callable[..., Any], argnums: int | Sequence[int] = 0) -> Callable[..., Any]:
    """``f`` -> its Jacobian, of shape ``f(x).shape + x.shape`` (a tuple over ``argnums`` when it
    is a sequence). One forward pass; one batched backward walk over the retained graph (the
    unit cotangents of every output element at once, as ``vmap`` of the pullback).

    Pytrees as in ``jax.jacrev``: when ``f`` returns a pytree, the result has the output's
    structure, each of its leaves holding the Jacobians of that output leaf in the structure of
    the inputs (``args[argnums]``, a tuple of them when ``argnums`` is a sequence).

    Complex values: for a real output, row ``k`` is the gradient of ``y[k]`` in PyTorch's
    convention (``∂/∂Re + i·∂/∂Im`` for a complex input, as ``torch.autograd.functional.
    jacobian``); a complex output of real inputs has the complex Jacobian ``∂y/∂x`` (as
    ``jax.jacfwd``; a second batched walk for the imaginary parts); a complex output of a complex input is
    refused, as by ``torch.func.jacrev`` and ``jax.jacrev``: the Jacobian is a complex matrix
    only for a holomorphic function.

    The mode is picked by shape: **forward** (:func:`jacfwd`, one ``jvp`` batched over the
    input elements) when the differentiated inputs have fewer elements than the outputs,
    **reverse** (:func:`jacrev`, one backward walk batched over the output elements)
    otherwise, and always reverse when the result must carry a graph (nested transforms). The
    output's size is read from one plain forward pass the first time ``f`` is called with given
    input shapes and dtypes (remembered per input signature)."""
    return _jacobian_auto(f, argnums)


def _jacobian_auto(f: Callable[..., Any], argnums: int | Sequence[int]) -> Callable[..., Any]:
    rev = _jacobian(f, argnums, "jacobian")
    fwd = _jacfwd(f, argnums, "jacobian")
    sizes: dict[Any, int] = {}

    @functools.wraps(f)
    def wrapped(*args: Any) -> Any:
        if _requires(args) or fwd_state.depth:
            return rev(*args)
        nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
        if any(not -len(args) <= a < len(args) for a in nums):
            return rev(*args)  # (raises, naming argnums)
        n = 0
        sig = []
        for leaf in tree_leaves(args):
            shape = tuple(getattr(leaf, "shape", ()))
            sig.append((shape, str(getattr(leaf, "dtype", type(leaf).__name__))))
        for a in nums:
            for leaf in tree_leaves(args[a]):
                size = 1
                for d in tuple(getattr(leaf, "shape", ())):
                    size *= d
                n += size * (2 if isinstance(leaf, complex) or "complex" in str(
                    getattr(leaf, "dtype", "")) else 1)
        key = (tree_structure(args), tuple(sig))
        m = sizes.get(key)
        if m is None:
            rng = _rng_snapshot()
            with no_grad():
                out = f(*args)
            m = sum(int(getattr(o, "size", 1) or 0) for o in tree_leaves(out))
            if _rng_moved(rng, restore=True):  # f draws random numbers: one pass, as before
                m = 0
            sizes[key] = m
        return fwd(*args) if n < m else rev(*args)

    return wrapped


def _jacobian(f: Callable[..., Any], argnums: int | Sequence[int], what: str
              ) -> Callable[..., Any]:
    @functools.wraps(f)
    def wrapped(*args: Any) -> Any:
        keep = _requires(args)
        grad_on = is_grad_enabled()
        with enable_grad():
            new_args, parts, single = _prepare(args, argnums, what, keep)
            aliases = [t for p in parts for t in p[0]]
            mark = creation_mark()
            calls = _batching.CALLS
            ys, out_spec = _outputs(f(*new_args), what)
            keep = keep or (grad_on and _closes_over(ys, mark, aliases))
            # the rows in one batched walk -- unless f ran vmap: its level would be confused
            # with the rows' (a level made after the graph cannot sit outside the graph's own)
            batch_rows = _batching.CALLS == calls
            per_out = []
            for y in ys:
                jacs = _jacobian_of(y, aliases, keep, what, batch_rows)
                out = _regroup(parts, jacs, keep)
                per_out.append(out[0] if single else tuple(out))
        _release(aliases)
        return tree_unflatten(out_spec, per_out)

    return wrapped


def _jacobian_of(y: Tensor, aliases: list[Tensor], keep: bool, what: str,
                 batch_rows: bool = False) -> list[Tensor]:
    """The Jacobian of one output with respect to each alias: ``m`` backward walks (``2m`` for
    a complex output of real inputs: the rows of ``Re y`` and ``Im y``)."""
    b = y._backend
    xp = b.xp
    m = y.size or 0
    cplx = y.dtype.kind == "c"
    if cplx:
        for i, a in enumerate(aliases):
            if a.dtype.kind == "c":
                raise TypeError(
                    f"{what}: the output is {y.dtype.name} (shape {y.shape}) and differentiated "
                    f"input {i} is complex ({a.dtype.name}, shape {a.shape}): a complex function "
                    "of complex inputs has a complex Jacobian only when it is holomorphic, so, "
                    "as torch.func.jacrev and jax.jacrev, agnograd does not form one. Use "
                    "ag.jvp (J·v, a complex number being a pair of reals), ag.vjp with an "
                    "explicit complex cotangent, or the Jacobians of ag.real(y) and ag.imag(y) "
                    "(real outputs: rows ∂/∂Re + i·∂/∂Im, PyTorch's convention)"
                )
    if batch_rows and m > 1 and not keep and y._requires_grad:
        batched = _jacobian_batched(y, aliases, m, cplx)
        if batched is not None:
            return batched
    rows: list[list[Any]] = [[] for _ in aliases]
    for k in range(m):
        e = xp.reshape(xp.astype(xp.arange(m, device=b.device_of(y.data)) == k,
                                 y.data.dtype), y.data.shape)
        gs = _row(y, b.fix(e), aliases, keep)
        if cplx:  # seed i·e_k: the loss Re(conj(i e_k)·y) = Im y[k]
            gs_im = _row(y, b.fix(e * 1j), aliases, keep)
        for i, a in enumerate(aliases):
            r = _zeros_if_none(gs[i], a)
            if cplx:
                r = (astype(r, y.data.dtype)
                     + astype(_zeros_if_none(gs_im[i], a), y.data.dtype) * 1j)
            rows[i].append(r)
    jacs = []
    for a, row in zip(aliases, rows):
        if m:
            j = reshape(stack(row, axis=0), tuple(y.shape) + tuple(a.shape))
        else:
            ab = a._backend
            dt = y.data.dtype if cplx else a.data.dtype
            j = Tensor._wrap(ab.xp.zeros(tuple(y.shape) + tuple(a.shape), dtype=dt,
                                         device=ab.device_of(a.data)), ab)
        jacs.append(j)
    return jacs


def _jacobian_batched(y: Tensor, aliases: list[Tensor], m: int, cplx: bool) -> list[Tensor] | None:
    """The ``m`` rows of the Jacobian of ``y`` in one backward walk: the unit cotangents as one
    batched cotangent of a ``vmap`` level over ``y``'s backend (JAX's ``vmap`` of the pullback),
    so every node runs its rules once on all rows. ``None`` where a rule cannot be batched (the
    caller then walks once per row)."""
    b = y._backend
    bb = _batching.batching_backend(b)
    bx = b.xp
    eye = bx.reshape(bx.astype(bx.eye(m, device=b.device_of(y.data)), y.data.dtype),
                     (m,) + tuple(y.data.shape))
    seeds = [eye] + ([eye * 1j] if cplx else [])
    parts = []
    _batching.push(bb, m)
    try:
        for seed in seeds:
            parts.append(backward([y], [bb.atype(seed)], retain_graph=True, create_graph=False,
                                  targets=aliases))
    except _batching.VmapError:
        return None
    finally:
        _batching.pop()
    jacs = []
    for i, a in enumerate(aliases):
        ab = a._backend
        rows = []
        for gs in parts:
            g = gs[i]
            if g is None:
                r = ab.xp.zeros((m,) + tuple(a.data.shape), dtype=a.data.dtype,
                                device=ab.device_of(a.data))
            else:
                r = _batching.physical(bb, g.data, m)
            rows.append(r)
        j = rows[0] if not cplx else (ab.xp.astype(rows[0], y.data.dtype)
                                      + ab.xp.astype(rows[1], y.data.dtype) * 1j)
        jacs.append(Tensor._wrap(ab.xp.reshape(j, tuple(y.shape) + tuple(a.shape)), ab))
    return jacs


def _row(y: Tensor, e: Any, aliases: list[Tensor], keep: bool) -> list[Any]:
    """One VJP of ``y`` with the unit cotangent ``e`` (a raw array) over the retained graph."""
    if not y._requires_grad:
        return [None] * len(aliases)
    seed = Tensor._wrap(e, y._backend) if keep else e
    return backward([y], [seed], retain_graph=True, create_graph=keep, targets=aliases)


def hessian(f: Callable[..., Any], argnums: int | Sequence[int] = 0) -> Callable[..., Any]:
    """``f`` -> its Hessian, ``jacobian(grad(f))``: shape ``x.shape + x.shape``. With pytree
    inputs (or several ``argnums``) the result is nested like JAX's: ``H[i][j]`` (in the inputs'
    structure, twice) is ``∂²f/∂xᵢ∂xⱼ`` of shape ``xᵢ.shape + xⱼ.shape``.

    Complex inputs are refused (as by ``torch.func.hessian`` and ``jax.hessian``): the Hessian
    of a real function of ``z`` is a real matrix over ``(Re z, Im z)``, which has no complex
    form of shape ``z.shape + z.shape``; ``hvp`` gives its products, or differentiate with
    respect to the real and imaginary parts as separate real inputs."""
    inner = _jacobian(_grad(f, argnums, False, "hessian"), argnums, "hessian")

    @functools.wraps(f)
    def wrapped(*args: Any) -> Any:
        nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
        for a in nums:
            if -len(args) <= a < len(args):
                for leaf in tree_leaves(args[a]):
                    _refuse_complex_hessian(leaf)
        return inner(*args)

    return wrapped


def _refuse_complex_hessian(x: Any) -> None:
    dt = x.dtype if type(x) is Tensor else None
    if dt is None and not isinstance(x, _SCALARS):
        b = backend_of_array(x)
        dt = from_backend_dtype(x.dtype) if b is not None else None
    if isinstance(x, complex) or (dt is not None and dt.kind == "c"):
        name = "complex" if dt is None else dt.name
        shape = () if dt is None else tuple(x.shape)
        raise TypeError(
            f"hessian: an input is {name} (shape {shape}); the Hessian of a real function of "
            "complex inputs is a real matrix over their real and imaginary parts, with no "
            "complex form of shape z.shape + z.shape (torch.func.hessian and jax.hessian refuse "
            "it too). Use ag.hvp(f, (z,), (v,)) for its products (v's real and imaginary parts "
            "as directions, as torch.autograd.functional.hvp), or take the real Hessian over "
            "the parts: ag.hessian(lambda x, y: f(x + 1j * y), argnums=(0, 1))(ag.real(z), "
            "ag.imag(z))"
        )


def hvp(f: Callable[..., Any], primals: Sequence[Any], tangents: Sequence[Any]
        ) -> tuple[Any, Any]:
    """``(f(*primals), H·tangents)`` for scalar ``f``: the Hessian-vector product, as the VJP of
    the gradient (``∇<∇f, v>``), without forming the Hessian.

    For complex inputs (a real ``f``), ``H`` is the real Hessian over the real and imaginary
    parts, ``<·,·>`` the real inner product ``Re(sum(conj(v)·g))``, and the product comes back
    packed as ``∂/∂Re + i·∂/∂Im``, as ``torch.autograd.functional.hvp`` gives it."""
    primals, tangents = tuple(primals), tuple(tangents)
    if len(primals) != len(tangents):
        raise ValueError(f"hvp: {len(primals)} primals but {len(tangents)} tangents")
    nums = tuple(range(len(primals)))

    def grad_dot_v(*xs: Any) -> Tensor:
        value, _, gs, _ = _grad_call(f, nums, False, "hvp", xs, {})
        total = None
        for g, v in zip(tree_leaves(gs), tree_leaves(tangents)):
            term = _sum(_real_product(g, _tangent_like(v, g, "hvp")))
            total = term if total is None else total + term
        holder.append(value)
        return total  # type: ignore[return-value]

    holder: list[Any] = []
    _, _, hv, keep = _grad_call(grad_dot_v, nums, False, "hvp", primals, {})
    value = holder[0]
    if type(value) is Tensor and not keep:
        value = _output_back(value.detach(), _kind_of(primals))
    return value, hv


# ---------------------------------------------------------------------------------------------
# Helpers


def _outputs(out: Any, what: str) -> tuple[list[Tensor], Any]:
    """The leaves of the output pytree as Tensors, and its structure."""
    if type(out) is Tensor:
        return [_as_output(out, what)], _LEAF_SPEC
    leaves, spec = tree_flatten(out)
    return [_as_output(o, what, leaf=spec is not _LEAF_SPEC) for o in leaves], spec


def _as_output(out: Any, what: str, leaf: bool = False) -> Tensor:
    if type(out) is Tensor:
        y = out
    elif backend_of_array(out) is not None or isinstance(out, _SCALARS):
        y = tensor(out)
    else:
        hint = ""
        if isinstance(out, (tuple, list)) and what == "grad":
            hint = ("; to return extra values next to the output, pass has_aux=True and return "
                    "(output, aux)")
        elif what in ("vjp", "jvp", "jacobian", "jacrev", "jacfwd"):
            hint = ("; it may return a pytree (tuples, lists, dicts, NamedTuples) of those; pass "
                    "has_aux=True to return other values next to it" if what == "vjp" else
                    "; it may return a pytree (tuples, lists, dicts, NamedTuples) of those")
        where = "each leaf of the function's output must be" if leaf else "the function must return"
        raise TypeError(f"{what}: {where} a Tensor or an array, not "
                        f"{type(out).__name__}{hint}")
    if y.dtype.kind == "c" and what not in ("vjp", "jvp", "jacobian", "jacrev", "jacfwd"):
        raise TypeError(
            f"{what}: the output is {y.dtype.name} (shape {y.shape}); a complex output has no "
            "single gradient. Differentiate a real loss (ag.real(y), ag.abs(y)), or use "
            "ag.vjp with an explicit complex cotangent v (the loss Re(sum(conj(v)·y)))"
        )
    if y.dtype.kind not in "fc":
        raise TypeError(
            f"{what}: the output has {y.dtype.name} dtype (shape {y.shape}); gradients are "
            "defined for real floating outputs only (an integer or boolean result, such as a "
            "comparison or an argmax, is piecewise constant). Differentiate a floating "
            "expression instead"
            + ("; this is a leaf of the output pytree: to return other values next to the "
               "output, pass has_aux=True and return (output, aux)" if leaf and what == "vjp"
               else "")
        )
    return y


def _regroup(parts: list[tuple[list[Tensor], list[Any], Any]], gs: Sequence[Any], keep: bool
             ) -> list[Any]:
    out = []
    i = 0
    for aliases, kinds, spec in parts:
        leaves = []
        for a, k in zip(aliases, kinds):
            leaves.append(_give_back(gs[i], a, k, keep))
            i += 1
        out.append(tree_unflatten(spec, leaves))
    return out


def _kind_of(args: Sequence[Any]) -> Any:
    for a in tree_leaves(args):
        if type(a) is Tensor:
            return "tensor"
        b = backend_of_array(a)
        if b is not None:
            return b
    return "tensor" if not args else "scalar"


def _value_back(y: Tensor, args: Sequence[Any], keep: bool) -> Any:
    if keep:
        return y
    kind = _kind_of(args)
    if kind == "scalar" and y.ndim != 0 and y.size != 1:
        kind = "tensor"
    return _output_back(y.detach(), kind)


def _zeros_if_none(g: Any, like: Tensor) -> Tensor:
    if g is not None:
        return g if type(g) is Tensor else Tensor._wrap(g, _batching.level_of(g, like._backend))
    b = like._backend
    return Tensor._wrap(b.xp.zeros(like.data.shape, dtype=like.data.dtype,
                                   device=b.device_of(like.data)), b)


def _cotangent(ct: Any, y: Tensor, keep: bool) -> Any:
    if type(ct) is Tensor:
        t = ct
    elif isinstance(ct, _SCALARS):  # a Python number: the output's dtype
        t = tensor(ct, backend=y._backend, dtype=y.data.dtype)
    else:
        ob = backend_of_array(ct)
        t = tensor(ct, backend=y._backend if ob is None else None)
    if t._backend is not y._backend and _batching.below(t._backend, y._backend):
        t = lift(t, y._backend)  # a value shared by the examples of the output's vmap
    if t._backend is not y._backend and not _batching.below(y._backend, t._backend):
        # (a batched cotangent for an output made outside vmap -- vmap(vjp_fn): the engine
        # runs the rules on the cotangent's level)
        raise TypeError(f"vjp_fn: the cotangent is on backend '{t.backend}' but the output is on "
                        f"'{y.backend}'; move it with ag.to_backend(ct, '{y.backend}')")
    if t.shape != y.shape:
        raise ValueError(f"vjp_fn: the cotangent has shape {t.shape}, the output {y.shape}; "
                         "pass one of exactly the output's shape (no broadcasting)")
    return fit_seed(t, y, "vjp_fn: the cotangent", keep)


def _tangent_like(v: Any, like: Tensor, what: str) -> Any:
    """Tangent ``v`` for the primal ``like`` (a Tensor, or a Python number): same backend and
    shape; a real primal takes a real tangent (it has no imaginary direction)."""
    if type(v) is Tensor:
        t = v
    elif isinstance(v, _SCALARS):
        return float(v)
    elif isinstance(v, complex):
        t = tensor(v, backend=like._backend, dtype=like.data.dtype if like.dtype.kind == "c"
                   else None)
    else:
        t = tensor(v, backend=like._backend if backend_of_array(v) is None else None)
    if t._backend is not like._backend and _batching.below(t._backend, like._backend):
        t = lift(t, like._backend)  # a tangent shared by the examples of the primal's vmap
    if t._backend is not like._backend:
        raise TypeError(f"{what}: a tangent is on backend '{t.backend}' but its primal is on "
                        f"'{like.backend}'; move it with ag.to_backend(v, '{like.backend}')")
    if t.shape != like.shape:
        raise ValueError(f"{what}: a tangent has shape {t.shape} but its primal has shape "
                         f"{like.shape}")
    if t.dtype.kind == "c" and like.dtype.kind != "c":
        raise TypeError(f"{what}: a tangent is {t.dtype.name} (shape {t.shape}) but its primal "
                        f"is {like.dtype.name}: a real input has no imaginary direction; pass a "
                        "real tangent (ag.real(v)), or make the primal complex")
    return t


def _real_product(g: Tensor, v: Any) -> Tensor:
    """``Re(conj(v)·g)`` elementwise: the real inner product's terms, a complex number being a
    pair of reals (``g·v`` for real values)."""
    out: Tensor
    if g.dtype.kind != "c":
        out = g * v
    elif type(v) is Tensor and v.dtype.kind == "c":
        out = real(g * conj(v))
    else:
        out = real(g) * v
    return out


# ---------------------------------------------------------------------------------------------
# Forward-mode transforms


def linearize(f: Callable[..., Any], *primals: Any) -> tuple[Any, Callable[..., Any]]:
    """``(f(*primals), f_jvp)`` with ``f_jvp(*tangents) = J·tangents`` at ``primals`` (as
    ``jax.linearize``; one tangent per primal, pytrees mirrored).

    agnograd does not stage a linear program: each ``f_jvp`` call is one forward-mode pass of
    ``f`` (:func:`jvp`), the same numbers at the cost of a ``jvp``."""
    value, _ = jvp(f, primals, tuple(_zeros_tree(p) for p in primals))

    def f_jvp(*tangents: Any) -> Any:
        if len(tangents) != len(primals):
            raise ValueError(f"linearize: f_jvp takes {len(primals)} tangent(s) (one per "
                             f"primal), got {len(tangents)}")
        return jvp(f, primals, tangents)[1]

    return value, f_jvp


def _zeros_tree(p: Any) -> Any:
    leaves, spec = tree_flatten(p)
    out: list[Any] = []
    for leaf in leaves:
        if isinstance(leaf, _SCALARS):
            out.append(0.0)
            continue
        t = leaf if type(leaf) is Tensor else tensor(leaf)
        b = t._backend
        z = b.xp.zeros(t.data.shape, dtype=t.data.dtype, device=b.device_of(t.data))
        out.append(Tensor._wrap(z, b) if type(leaf) is Tensor else z)
    return tree_unflatten(spec, out)


def jacrev(f: Callable[..., Any], argnums: int | Sequence[int] = 0) -> Callable[..., Any]:
    """``f`` -> its Jacobian by reverse mode: one forward pass, one backward walk per output
    element (``jax.jacrev``). Shapes, pytrees and complex values as :func:`jacobian`."""
    return _jacobian(f, argnums, "jacrev")


def jacfwd(f: Callable[..., Any], argnums: int | Sequence[int] = 0) -> Callable[..., Any]:
    """``f`` -> its Jacobian by forward mode (``jax.jacfwd``): one :func:`jvp` ``vmap``-ed over
    the unit tangents of every input element, so ``f`` runs once with a batch of tangents;
    where that cannot be batched (and for complex inputs: two per element), one ``jvp`` per
    input element. The result has the shape ``f(x).shape + x.shape``, pytrees and complex
    values as :func:`jacobian` (a complex output of real inputs gives the complex ``∂y/∂x``; a
    real output of complex inputs the rows ``∂/∂Re + i·∂/∂Im``; complex of complex is refused).
    A function that draws random numbers gets the Jacobian at its one draw (batched: ``f`` runs
    once); the one-``jvp``-per-element loop refuses it, as ``torch.func.jacfwd`` does.

    When the Jacobian must carry a graph (an input requires grad, or an outer transform
    differentiates ``f``'s result), it is taken in reverse mode, whose results keep theirs."""
    return _jacfwd(f, argnums, "jacfwd")


def _jacfwd(f: Callable[..., Any], argnums: int | Sequence[int], what: str) -> Callable[..., Any]:
    rev = _jacobian(f, argnums, what)

    @functools.wraps(f)
    def wrapped(*args: Any) -> Any:
        if _requires_rev(args) or (fwd_state.depth and not fwd_state.on):
            return rev(*args)
        nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
        n = len(args)
        for a in nums:
            if not -n <= a < n:
                raise IndexError(f"{what}: argnums={argnums!r} is out of range for a function "
                                 f"called with {n} positional argument(s)")
        flat = [tree_flatten(args[a]) for a in nums]
        ts: list[Tensor] = []
        kinds: list[Any] = []
        for leaves, _ in flat:
            for leaf in leaves:
                t, k = _alias(leaf, what, False)
                ts.append(t)
                kinds.append(k)

        fn = f
        while isinstance(fn, JitFunction):  # its replay carries no tangents
            fn = fn.fn

        def g(*diff: Any) -> Any:
            new_args = list(args)
            for a, d in zip(nums, diff):
                new_args[a] = d
            return fn(*new_args)

        primals = tuple(args[a] for a in nums)
        if not fwd_state.depth and all(t.dtype.kind != "c" for t in ts):
            batched = _jacfwd_batched(g, primals, flat, ts, kinds, argnums)
            if batched is not None:
                return batched
        rng = _rng_snapshot()
        cols: list[list[list[Any]]] = [[] for _ in ts]  # per input leaf, per column, out leaves
        out_spec = None
        nested = False
        ys: list[Tensor] = []
        for li, t in enumerate(ts):
            b = t._backend
            xp = b.xp
            m = t.size or 0
            cplx_in = t.dtype.kind == "c"
            for j in range(m):
                for unit in ((1.0, 1j) if cplx_in else (1.0,)):
                    e = xp.reshape(xp.astype(xp.arange(m, device=b.device_of(t.data)) == j,
                                             t.data.dtype), t.data.shape) * unit
                    tans = []
                    k = 0
                    for leaves, spec in flat:
                        vs = []
                        for _ in leaves:
                            vs.append(e if k == li else xp.zeros(
                                ts[k].data.shape, dtype=ts[k].data.dtype,
                                device=b.device_of(ts[k].data)))
                            k += 1
                        tans.append(tree_unflatten(spec, vs))
                    value, tan = jvp(g, primals, tuple(tans))
                    t_leaves, out_spec = tree_flatten(tan)
                    if not ys:
                        ys = [tensor(v) if type(v) is not Tensor else v
                              for v in tree_leaves(value)]
                        _refuse_complex_both(ys, ts, what)
                    if _requires_rev(t_leaves):
                        return rev(*args)  # f closes over a differentiated Tensor
                    if any(_carries(v) for v in t_leaves):  # inside a jvp: keep its tangents
                        nested = True
                        raw = [v if type(v) is Tensor else _raw_of(v, y)
                               for v, y in zip(t_leaves, ys)]
                    else:
                        raw = [_raw_of(v, y) for v, y in zip(t_leaves, ys)]
                    cols[li].append(raw)
        if out_spec is None:  # every input is empty
            return rev(*args)
        if _rng_moved(rng, restore=False):
            raise RuntimeError(
                f"{what}: the function draws random numbers (ag.random, dropout): forward mode "
                "runs it once per input element, so each column of the Jacobian would see "
                "other draws (torch.func.jacfwd refuses this too). Pass it a fixed "
                "ag.random.Generator re-seeded inside, or use ag.jacrev (one forward pass)")
        per_out = []
        for k, y in enumerate(ys):
            jac_leaves = []
            for li, t in enumerate(ts):
                jac_leaves.append(_assemble_nested(cols[li], k, y, t) if nested
                                  else _assemble(cols[li], k, y, t, kinds[li]))
            per_out.append(_group(flat, jac_leaves, argnums))
        return tree_unflatten(out_spec, per_out)

    return wrapped


def _jacfwd_batched(g: Callable[..., Any], primals: tuple[Any, ...], flat: list[Any],
                    ts: list[Tensor], kinds: list[Any], argnums: int | Sequence[int]) -> Any:
    """``jacfwd`` as JAX builds it: one ``jvp`` ``vmap``-ed over every unit tangent (of all the
    input leaves together), so ``f`` runs once -- one random draw, if it draws -- instead of
    once per input element. ``None`` where something cannot be batched (a rule, a read of a
    value, a tangent that carries a graph): the caller then takes the columns one at a time."""
    import warnings

    from .batching import vmap

    sizes = [t.size or 0 for t in ts]
    total = sum(sizes)
    if not total or any(not m for m in sizes):
        return None
    tangents = []  # per input leaf: (total, *shape), the identity's block of its columns
    start = 0
    for t, m in zip(ts, sizes):
        b = t._backend
        xp = b.xp
        dev = b.device_of(t.data)
        cols = xp.arange(total, device=dev)
        rows = xp.arange(m, device=dev) + start
        block = xp.astype(xp.reshape(cols, (total, 1)) == xp.reshape(rows, (1, m)), t.data.dtype)
        tangents.append(Tensor._wrap(xp.reshape(block, (total,) + tuple(t.shape)), b))
        start += m

    def column(*es: Any) -> Any:
        tans = []
        k = 0
        for leaves, spec in flat:
            tans.append(tree_unflatten(spec, list(es[k:k + len(leaves)])))
            k += len(leaves)
        return jvp(g, primals, tuple(tans))

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", _batching.VmapFallbackWarning)
            value, tan = vmap(column)(*tangents)
    except (_batching.VmapError, _batching.VmapFallbackWarning):
        return None
    t_leaves, out_spec = tree_flatten(tan)
    ys = [v if type(v) is Tensor else tensor(v) for v in tree_leaves(value)]
    ys = [Tensor._wrap(y.data[0, ...], y._backend) for y in ys]  # (one column's value)
    _refuse_complex_both(ys, ts, "jacfwd")
    if _requires_rev(t_leaves) or any(type(v) is not Tensor for v in t_leaves):
        return None
    per_out = []
    for v, y in zip(t_leaves, ys):  # (total, *y.shape) -> per input leaf: y.shape + t.shape
        vb = v._backend
        xp = vb.xp
        a = xp.moveaxis(v.data, 0, -1) if v.ndim > 1 else v.data  # (*y.shape, total)
        if a.dtype != y.data.dtype:
            if y.dtype.kind != "c" and from_backend_dtype(a.dtype).kind == "c":
                a = xp.real(a)
            a = xp.astype(a, y.data.dtype)
        jac = []
        start = 0
        for t, m, kind in zip(ts, sizes, kinds):
            part = a[..., start:start + m]
            start += m
            jac.append(_output_back(Tensor._wrap(xp.reshape(part, tuple(y.shape) + tuple(t.shape)),
                                                 vb), kind))
        per_out.append(_group(flat, jac, argnums))
    return tree_unflatten(out_spec, per_out)


def _group(flat: list[Any], jac_leaves: list[Any], argnums: int | Sequence[int]) -> Any:
    """One output's Jacobians, per input leaf, back in the inputs' structure (``args[argnums]``,
    a tuple of them when ``argnums`` is a sequence)."""
    grouped = []
    i = 0
    for leaves, spec in flat:
        grouped.append(tree_unflatten(spec, jac_leaves[i:i + len(leaves)]))
        i += len(leaves)
    return grouped[0] if isinstance(argnums, int) else tuple(grouped)


def _rng_snapshot() -> list[tuple[Any, Any]]:
    """Each random generator and a copy of its state (``agnograd.random``)."""
    from . import random as _random

    out = []
    for g in list(_random._every):
        st = g._state
        out.append((g, st._backend.xp.asarray(st.data, copy=True)))
    return out


def _rng_moved(snapshot: list[tuple[Any, Any]], restore: bool) -> bool:
    """Whether a generator drew since ``snapshot`` (restoring its state when ``restore``)."""
    from . import random as _random

    moved = len(list(_random._every)) != len(snapshot)
    for g, old in snapshot:
        st = g._state
        if not bool(st._backend.xp.all(st.data == old)):
            moved = True
            if restore:
                g._write(old)
    return moved


def _raw_of(v: Any, y: Tensor) -> Any:
    if type(v) is Tensor:
        return v.data
    b = y._backend
    if isinstance(v, (_SCALARS, complex)):
        return b.xp.asarray(v, dtype=y.data.dtype, device=b.device_of(y.data))
    return v


def _refuse_complex_both(ys: list[Tensor], ts: list[Tensor], what: str) -> None:
    for y in ys:
        if y.dtype.kind != "c":
            continue
        for i, a in enumerate(ts):
            if a.dtype.kind == "c":
                raise TypeError(
                    f"{what}: the output is {y.dtype.name} (shape {y.shape}) and differentiated "
                    f"input {i} is complex ({a.dtype.name}, shape {a.shape}): a complex function "
                    "of complex inputs has a complex Jacobian only when it is holomorphic, so, "
                    "as torch.func.jacfwd and jax.jacfwd without holomorphic=True, agnograd "
                    "does not form one. Use ag.jvp (J·v), or the Jacobians of ag.real(y) and "
                    "ag.imag(y)")


def _assemble(cols: list[list[Any]], k: int, y: Tensor, t: Tensor, kind: Any) -> Any:
    """Output leaf ``k``'s Jacobian with respect to input leaf ``t`` from its columns."""
    b = y._backend
    xp = b.xp
    shape = tuple(y.shape) + tuple(t.shape)
    if t.dtype.kind == "c":  # columns come in pairs (Re, Im directions): ∂/∂Re + i·∂/∂Im
        re = [c[k] for c in cols[0::2]]
        im = [c[k] for c in cols[1::2]]
        cdt = t.data.dtype
        parts = [xp.astype(a, cdt) + xp.astype(c, cdt) * 1j for a, c in zip(re, im)]
    else:
        parts = [c[k] for c in cols]
    if parts:
        j = xp.stack(parts, axis=-1)
        j = xp.reshape(j, shape)
    else:
        j = xp.zeros(shape, dtype=y.data.dtype, device=b.device_of(y.data))
    out = Tensor._wrap(j, b)
    return _output_back(out, kind)


def _assemble_nested(cols: list[list[Any]], k: int, y: Tensor, t: Tensor) -> Tensor:
    """:func:`_assemble` with agnograd ops, for ``jacfwd`` inside a ``jvp``: the columns carry
    the enclosing traces' tangents and so does the Jacobian."""
    b = y._backend
    shape = tuple(y.shape) + tuple(t.shape)
    col = [c[k] if type(c[k]) is Tensor else Tensor._wrap(c[k], b) for c in cols]
    if t.dtype.kind == "c":  # columns come in pairs (Re, Im directions): ∂/∂Re + i·∂/∂Im
        parts = [astype(a, t.dtype) + astype(c, t.dtype) * 1j for a, c in zip(col[0::2], col[1::2])]
    else:
        parts = col
    if not parts:
        return Tensor._wrap(b.xp.zeros(shape, dtype=y.data.dtype, device=b.device_of(y.data)), b)
    return reshape(stack(parts, axis=-1), shape)
