"""``einsum``: Einstein summation, **beyond the Array API standard** (the standard has no
``einsum``; the name and the subscript language are NumPy's).

It is composed of standard, differentiable ops only -- ``permute_dims``, ``reshape``, strided
slicing (the diagonal of a repeated label), ``sum`` and ``matmul`` -- so it runs on every backend
and its gradients (of any order) come from theirs: there is no einsum rule to get wrong.

How a call is evaluated:

1. The subscripts are parsed: ``"ij,jk->ik"``, implicit output (``"ij,jk"``: the labels that
   occur once, sorted, after the ellipsis dimensions), ellipsis (``"...ij,...jk->...ik"``, the
   ellipsis dimensions broadcasting as NumPy's do).
2. Each operand alone: a label repeated in it is replaced by the diagonal (``"ii->i"``,
   ``"iij->j"``); a label no other operand and not the output has is summed out.
3. Operands are contracted pairwise, greedily, as ``opt_einsum``'s ``greedy`` strategy does: at
   each step the pair whose result is smallest (then the cheapest) is contracted, as one batched
   ``matmul`` (shared labels kept are the batch, shared labels not kept the contraction).
4. The last operand is summed over what the output does not keep and permuted to its order.
"""

from __future__ import annotations

import math
from typing import Any

from ._common import Tensor, to_tensor
from ._common import operands as _one_backend
from .linalg import matmul
from .manipulation import permute_dims, reshape
from .statistics import sum as _sum

__all__ = ["einsum"]

_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def einsum(subscripts: str, /, *operands: Any) -> Tensor:
    """Einstein summation over ``operands`` as ``subscripts`` say, with NumPy's spelling:
    ``ag.einsum("ij,jk->ik", a, b)`` is ``a @ b``; ``"ii->i"`` the diagonal, ``"ii"`` the trace,
    ``"...ij,...jk->...ik"`` a batched product, ``"i,j"`` (implicit output) the outer product.

    **Beyond the Array API standard** (which has no einsum): a namespace extension, composed of
    standard ops (``permute_dims``, ``reshape``, strided slicing, ``sum``, ``matmul``), so it is
    differentiable to any order on every backend. With three or more operands the contraction
    order is chosen greedily (smallest intermediate first, as ``opt_einsum``'s greedy path).
    Labels are ASCII letters; the ``optimize``/``out`` arguments of NumPy are not taken.
    """
    if not isinstance(subscripts, str):
        raise TypeError(f"einsum: the subscripts must be a str such as 'ij,jk->ik', not "
                        f"{type(subscripts).__name__}")
    if not operands:
        raise ValueError(f"einsum('{subscripts}'): no operands given")
    ts = [to_tensor(o, "einsum") for o in operands]
    for t in ts[1:]:
        if t._backend is not ts[0]._backend:
            try:  # a vmap level over the other's: the lower ones are lifted
                ts = _one_backend(ts, f"einsum('{subscripts}')")[1]
            except TypeError:
                raise TypeError(f"einsum('{subscripts}'): operands on backends '{ts[0].backend}' "
                                f"and '{t.backend}'; move them to one with ag.to_backend") from None
            break
    shapes = [tuple(t.shape) for t in ts]
    inputs, output = _parse(subscripts, shapes)
    sizes: dict[str, int] = {}
    ops: list[tuple[Tensor, str]] = []
    for k, (t, labels) in enumerate(zip(ts, inputs)):
        for lab, n in zip(labels, t.shape):
            have = sizes.get(lab)
            if have is not None and have != n and n != 1 and have != 1:
                raise ValueError(
                    f"einsum('{subscripts}'): label '{lab}' has size {have} in one operand and {n} "
                    f"in operand {k}; shapes {_show(shapes)}")
            if have is None or have == 1:
                sizes[lab] = n
        ops.append((t, labels))
    # Size-1 dimensions broadcast (NumPy allows it for every label): drop them from the operand
    # where another has the label longer, so the label is simply absent there.
    ops = [_drop_broadcast(t, labels, sizes) for t, labels in ops]
    ops = [_diagonals(t, labels, subscripts, shapes) for t, labels in ops]
    # Sum out what one operand alone has (and the output does not).
    for k, (t, labels) in enumerate(ops):
        others = set(output).union(*(set(lb) for j, (_, lb) in enumerate(ops) if j != k))
        ops[k] = _sum_out(t, labels, others)
    while len(ops) > 1:
        i, j = _greedy_pair(ops, output, sizes)
        (a, la), (b, lb) = ops[i], ops[j]
        rest = [ops[k] for k in range(len(ops)) if k not in (i, j)]
        keep = set(output).union(*(set(lb_) for _, lb_ in rest))
        rest.append(_contract(a, la, b, lb, keep, sizes))
        ops = rest
    t, labels = ops[0]
    t, labels = _sum_out(t, labels, set(output))
    if labels != output:
        t = permute_dims(t, tuple(labels.index(c) for c in output))
    return t


def _show(shapes: list[tuple[int, ...]]) -> str:
    return ", ".join(str(s) for s in shapes)


def _parse(subscripts: str, shapes: list[tuple[int, ...]]) -> tuple[list[str], str]:
    """Per-operand label strings and the output's, ellipses replaced by letters that the
    subscripts do not use (right-aligned across operands, as broadcasting is)."""
    spec = subscripts.replace(" ", "")
    where = f"einsum('{subscripts}') with operand shapes {_show(shapes)}"
    if "->" in spec:
        lhs, out = spec.split("->", 1)
        if "->" in out:
            raise ValueError(f"{where}: more than one '->'")
    else:
        lhs, out = spec, None
    parts = lhs.split(",")
    if len(parts) != len(shapes):
        raise ValueError(f"{where}: the subscripts name {len(parts)} operand(s) but "
                         f"{len(shapes)} were given")
    used = set(spec) - set(".,->")
    bad = sorted(c for c in used if c not in _LETTERS)
    if bad:
        raise ValueError(f"{where}: labels must be ASCII letters, not {bad}")
    free = [c for c in _LETTERS if c not in used]
    ell_ndim = 0
    found = []
    for k, (p, shape) in enumerate(zip(parts, shapes)):
        if p.count("...") > 1 or (p.replace("...", "").count(".")):
            raise ValueError(f"{where}: operand {k} ('{p}') has a malformed ellipsis")
        named = len(p.replace("...", ""))
        if "..." in p:
            if named > len(shape):
                raise ValueError(f"{where}: operand {k} ('{p}') names {named} dimensions but has "
                                 f"only {len(shape)}")
            ell_ndim = max(ell_ndim, len(shape) - named)
        elif named != len(shape):
            raise ValueError(f"{where}: operand {k} ('{p}') names {named} dimension(s) but its "
                             f"shape {shape} has {len(shape)}")
        found.append(p)
    if ell_ndim > len(free):
        raise ValueError(f"{where}: too many dimensions under the ellipsis")
    ell = "".join(free[:ell_ndim])
    inputs = []
    for p, shape in zip(found, shapes):
        if "..." in p:
            n = len(shape) - len(p.replace("...", ""))
            p = p.replace("...", ell[ell_ndim - n:] if n else "")
        inputs.append(p)
    if out is None:
        counts: dict[str, int] = {}
        for p in found:
            for c in p.replace("...", ""):
                counts[c] = counts.get(c, 0) + 1
        output = ell + "".join(sorted(c for c, n in counts.items() if n == 1))
    else:
        if out.count("...") > 1 or out.replace("...", "").count("."):
            raise ValueError(f"{where}: the output '{out}' has a malformed ellipsis")
        output = out.replace("...", ell)
        seen = set()
        for c in output:
            if c in seen:
                raise ValueError(f"{where}: the output repeats label '{c}'")
            seen.add(c)
        have = set("".join(inputs))
        missing = [c for c in out.replace("...", "") if c not in have]
        if missing:
            raise ValueError(f"{where}: the output label(s) {missing} appear in no operand")
    return inputs, output


def _drop_broadcast(t: Tensor, labels: str, sizes: dict[str, int]) -> tuple[Tensor, str]:
    drop = [k for k, c in enumerate(labels) if t.shape[k] == 1 and sizes[c] != 1]
    if not drop:
        return t, labels
    keep = [k for k in range(len(labels)) if k not in drop]
    t = reshape(t, tuple(t.shape[k] for k in keep))
    return t, "".join(labels[k] for k in keep)


def _diagonals(t: Tensor, labels: str, subscripts: str, shapes: list[tuple[int, ...]]
               ) -> tuple[Tensor, str]:
    """Each label repeated within one operand replaced by the diagonal: the repeated axes moved
    last, flattened, and every ``(1 + n + n² + ...)``-th element taken (a strided slice)."""
    while True:
        rep = next((c for c in labels if labels.count(c) > 1), None)
        if rep is None:
            return t, labels
        axes = [k for k, c in enumerate(labels) if c == rep]
        n = t.shape[axes[0]]
        if any(t.shape[k] != n for k in axes):
            raise ValueError(f"einsum('{subscripts}'): the repeated label '{rep}' has sizes "
                             f"{[t.shape[k] for k in axes]} in one operand (shapes {_show(shapes)}); "
                             "a diagonal needs equal sizes")
        others = [k for k in range(len(labels)) if k not in axes]
        t = permute_dims(t, tuple(others + axes))
        lead = tuple(t.shape[: len(others)])
        r = len(axes)
        t = reshape(t, lead + (n ** r,))
        step = sum(n ** i for i in range(r))
        t = t[(slice(None),) * len(lead) + (slice(None, None, step),)]
        labels = "".join(labels[k] for k in others) + rep


def _sum_out(t: Tensor, labels: str, keep: set[str]) -> tuple[Tensor, str]:
    axes = tuple(k for k, c in enumerate(labels) if c not in keep)
    if not axes:
        return t, labels
    return _sum(t, axis=axes), "".join(c for c in labels if c in keep)


def _greedy_pair(ops: list[tuple[Tensor, str]], output: str, sizes: dict[str, int]
                 ) -> tuple[int, int]:
    """The pair whose contraction gives the smallest intermediate (ties: fewest multiplies,
    then the earliest pair), as opt_einsum's greedy strategy."""
    best: tuple[int, int, int, int] | None = None
    pair = (0, 1)
    for i in range(len(ops)):
        for j in range(i + 1, len(ops)):
            la, lb = ops[i][1], ops[j][1]
            keep = set(output).union(*(set(ops[k][1]) for k in range(len(ops)) if k not in (i, j)))
            union = set(la) | set(lb)
            result = [c for c in union if c in keep]
            size = math.prod(sizes[c] for c in result)
            cost = math.prod(sizes[c] for c in union)
            key = (size, cost, i, j)
            if best is None or key < best:
                best, pair = key, (i, j)
    return pair


def _contract(a: Tensor, la: str, b: Tensor, lb: str, keep: set[str], sizes: dict[str, int]
              ) -> tuple[Tensor, str]:
    """Two operands as one batched matmul: (batch, a-only, summed) @ (batch, summed, b-only)."""
    a, la = _sum_out(a, la, keep | set(lb))
    b, lb = _sum_out(b, lb, keep | set(la))
    batch = [c for c in la if c in lb and c in keep]
    summed = [c for c in la if c in lb and c not in keep]
    a_only = [c for c in la if c not in lb]
    b_only = [c for c in lb if c not in la]
    a = _arrange(a, la, batch + a_only + summed)
    b = _arrange(b, lb, batch + summed + b_only)
    nb = tuple(sizes[c] for c in batch)
    m = math.prod(sizes[c] for c in a_only)
    k = math.prod(sizes[c] for c in summed)
    n = math.prod(sizes[c] for c in b_only)
    y = matmul(reshape(a, nb + (m, k)), reshape(b, nb + (k, n)))
    out_shape = nb + tuple(sizes[c] for c in a_only) + tuple(sizes[c] for c in b_only)
    return reshape(y, out_shape), "".join(batch + a_only + b_only)


def _arrange(t: Tensor, labels: str, order: list[str]) -> Tensor:
    perm = tuple(labels.index(c) for c in order)
    return t if perm == tuple(range(len(perm))) else permute_dims(t, perm)
