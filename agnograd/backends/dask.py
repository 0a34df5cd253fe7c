"""The Dask backend, and the Dask helpers behind :mod:`agnograd.dask`.

array-api-compat's Dask namespace (1.16) has gaps that agnograd's ops would hit; the Backend's
``xp`` for Dask is that namespace with the fixes below on top (:func:`namespace`, built from the
tables ``NAMESPACE_FIXES`` and ``LINALG_FIXES``), so every op and every rule still speaks only
standard functions. Matrix functions the namespace lacks or gets wrong run per matrix: the two
matrix axes are put in one chunk, the batch axes keep their chunks, and each block is handed to
its own chunk library (NumPy or CuPy, through array-api-compat).

The Backend is ``lazy`` (arrays are task graphs: rules keep the inputs' chunking and nothing
reads values back), and its scatter-add runs per chunk with the chunk library's kernel.

The helpers after the namespace (:func:`dask_compute`, :func:`dask_persist`, ...) are what
``agnograd.dask`` uses, so that this package stays the only one that imports Dask.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import array_api_compat
import dask
import dask.array as da
import dask.base
import numpy as np
from dask.array.utils import meta_from_array

from . import Backend, BackendError, backend_of_array, sample_array_type
from ._fallbacks import clone_namespace

_missing: ImportError | None = None
_base: Any = None  # array_api_compat's Dask namespace (its names are made at import time)
try:
    _base = importlib.import_module("array_api_compat.dask.array")
except ImportError as exc:  # an array-api-compat without the Dask wrapper: load() says so
    _missing = exc

__all__ = ["dask_compute", "dask_delayed", "dask_delayed_value", "dask_from_array", "dask_persist",
           "dask_row_blocks", "dask_task_count", "is_dask_array", "load", "namespace", "owns",
           "scatter_add"]


def load() -> Backend:
    if _base is None:
        raise BackendError(
            f"backend 'dask' is installed but this array-api-compat has no Dask wrapper ({_missing}); "
            "upgrade array-api-compat"
        ) from _missing
    xp = namespace()
    # private: a Dask array is a task graph; two of them never share memory (the engine's
    # identity test still catches one array object handed to two gradients)
    return DaskBackend("dask", xp, sample_array_type("dask", xp), lazy=True,
                       scatter_add=scatter_add, private=lambda a: True)


class DaskDevice(str):
    """The device of a Dask array with NumPy chunks, as agnograd reports it: equal to
    ``"cpu"`` (what array-api-compat's Dask namespace takes and gives), but a type of its own,
    so ``ag.zeros(n, device=x.device)`` of a Dask ``x`` makes a Dask array, not a NumPy one
    (:func:`agnograd.backends.backend_of_device` reads ``backend_name``)."""

    __slots__ = ()
    backend_name = "dask"

    def __repr__(self) -> str:
        return "DaskDevice('cpu')"


CPU = DaskDevice("cpu")


class DaskBackend(Backend):
    """The Dask Backend: its arrays report :class:`DaskDevice` (NumPy chunks) as device."""

    __slots__ = ()

    def device_of(self, a: Any) -> Any:
        d = array_api_compat.device(a)
        return CPU if d == "cpu" else d


def owns(a: Any) -> bool:
    return bool(array_api_compat.is_dask_array(a))


def scatter_add(xp: Any, n: int, index: Any, values: Any) -> Any:
    # Each chunk scatter-adds into its own length-n partial with its chunk library's kernel
    # (NumPy or CuPy), then the partials are summed by a tree reduction: tasks grow linearly in
    # the number of chunks, and nothing is computed. The standard path's argsort/searchsorted
    # would gather the whole index into one chunk first.
    values = values.rechunk(index.chunks)

    def part(i: Any, v: Any) -> Any:
        chunk = backend_of_array(v)
        assert chunk is not None, f"scatter_add: a Dask chunk of type {type(v).__name__}"
        return chunk.xp.reshape(chunk.scatter_add(n, i, v), (1, n))

    parts = da.blockwise(part, "kn", index, "k", values, "k", new_axes={"n": n},
                         adjust_chunks={"k": 1}, dtype=values.dtype,
                         meta=_dask_meta(values, 2, values.dtype))
    return xp.sum(parts, axis=0)


# ---------------------------------------------------------------------------------------------
# Per-matrix application


def _dask_meta(like: Any, ndim: int, dtype: Any) -> Any:
    """An empty chunk of ``like``'s chunk library (NumPy or CuPy) with ``ndim`` axes."""
    if like.dtype.kind == "c" and np.dtype(dtype).kind != "c":  # a real result of complex x:
        like = like._meta.real  # from the real part (casting warns that it drops imaginaries)
    return meta_from_array(like, ndim=ndim, dtype=dtype)


def _chunk_xp(block: Any) -> Any:
    """The Array API namespace of one Dask chunk (array-api-compat's NumPy or CuPy wrapper)."""
    return array_api_compat.array_namespace(block)


def _broadcast_batch(xs: Sequence[Any], cores: Sequence[int]) -> tuple[list[Any], tuple[int, ...]]:
    """Arrays broadcast to one batch shape (their last ``cores[i]`` axes untouched), with the
    core axes in one chunk and the batch axes chunked like the first array's."""
    batch = tuple(np.broadcast_shapes(*(tuple(x.shape[: x.ndim - c]) for x, c in zip(xs, cores))))
    out = [da.broadcast_to(x, batch + tuple(x.shape[x.ndim - c:])) for x, c in zip(xs, cores)]
    batch_chunks = out[0].chunks[: len(batch)]
    out = [x.rechunk(batch_chunks + tuple((n,) for n in x.shape[len(batch):])) for x in out]
    return out, batch


def _per_matrix(fn: Callable[..., Any], xs: Sequence[Any], cores: Sequence[int],
                outs: Sequence[tuple[tuple[int, ...], Any]]) -> Any:
    """Apply ``fn(chunk_xp, *blocks)`` to every block of a stack of matrices (or vectors).

    ``xs`` are Dask arrays whose last ``cores[i]`` axes are the matrix (vector) axes; their batch
    axes broadcast. ``outs`` gives each output's core shape and dtype; ``fn`` returns one array
    (one output) or a tuple in that order. Returns one Dask array, or a tuple of them.
    """
    xs, batch = _broadcast_batch(xs, cores)
    bind = tuple(f"b{i}" for i in range(len(batch)))
    args: list[Any] = []
    for k, (x, c) in enumerate(zip(xs, cores)):
        args += [x, bind + tuple(f"x{k}c{j}" for j in range(c))]

    def run(*blocks: Any) -> Any:
        return fn(_chunk_xp(blocks[0]), *blocks)

    def new_axes(k: int, core: tuple[int, ...]) -> tuple[tuple[str, ...], dict[str, int]]:
        names = tuple(f"o{k}c{j}" for j in range(len(core)))
        return bind + names, dict(zip(names, core))

    if len(outs) == 1:
        core, dt = outs[0]
        ind, sizes = new_axes(0, core)
        return da.blockwise(run, ind, *args, new_axes=sizes, concatenate=True, dtype=dt,
                            meta=_dask_meta(xs[0], len(ind), dt))
    # Several outputs: one task per block computes the decomposition once (a tuple), and one
    # small task per output picks its part.
    packed = da.blockwise(run, bind, *args, concatenate=True, dtype=object,
                          meta=np.empty((0,) * len(bind), dtype=object))
    results = []
    for k, (core, dt) in enumerate(outs):
        ind, sizes = new_axes(k, core)
        results.append(da.blockwise(_pick, ind, packed, bind, k, None, new_axes=sizes, dtype=dt,
                                    meta=_dask_meta(xs[0], len(ind), dt)))
    return tuple(results)


def _pick(parts: Any, k: int) -> Any:
    return parts[k]


def _square_chunks(x: Any) -> bool:
    """A 2-d array in several equal square blocks: Dask's blocked LU/Cholesky can run on it."""
    return (x.ndim == 2 and x.numblocks != (1, 1) and x.chunks[0] == x.chunks[1]
            and len(set(x.chunks[0])) == 1)


def _tall_skinny(x: Any) -> bool:
    """A 2-d array in row blocks, each at least as tall as it is wide: Dask's TSQR/SVD apply."""
    return bool(x.ndim == 2 and x.numblocks[0] > 1 and x.numblocks[1] == 1
                and min(x.chunks[0]) >= x.shape[1])


def _take_along_last(x: Any, i: Any) -> Any:
    return _chunk_xp(x).take_along_axis(x, i, axis=-1)


# ---------------------------------------------------------------------------------------------
# The namespace fixes: standard signatures, on top of array-api-compat's Dask namespace (_base)


def eye(n_rows: int, n_cols: int | None = None, /, *, k: int = 0, dtype: Any = None,
        device: Any = None) -> Any:
    # Dask's eye loses blocks when n_cols != n_rows (2026.8); compare two aranges instead.
    m = n_rows if n_cols is None else n_cols
    rows = _base.arange(n_rows)[:, None] + k
    return _base.astype(rows == _base.arange(m)[None, :], dtype or _base.float64)


def repeat(x: Any, repeats: Any, /, *, axis: int | None = None) -> Any:
    if not isinstance(repeats, int):
        raise NotImplementedError(
            "repeat on the 'dask' backend: repeats must be a Python int; an array of repeats "
            "gives an output shape that depends on the data, which Dask cannot know without "
            "computing. Pass an int, or move the tensor to NumPy with ag.to_backend(t, 'numpy')"
        )
    if axis is None:
        return da.repeat(_base.reshape(x, (-1,)), repeats, axis=0)
    return da.repeat(x, repeats, axis=axis)


def take_along_axis(x: Any, indices: Any, /, *, axis: int = -1) -> Any:
    if x.ndim != indices.ndim:
        raise ValueError(f"take_along_axis: x and indices must have the same rank, not "
                         f"{x.ndim} and {indices.ndim}")
    ax = axis % x.ndim
    # The gathered axis in one chunk; the others broadcast and aligned, one task per block.
    (xb,), _ = _broadcast_batch([_base.moveaxis(x, ax, -1)], [1])
    (ib,), _ = _broadcast_batch([_base.moveaxis(indices, ax, -1)], [1])
    batch = tuple(np.broadcast_shapes(xb.shape[:-1], ib.shape[:-1]))
    xb, ib = (da.broadcast_to(a, batch + a.shape[-1:]) for a in (xb, ib))
    ib = ib.rechunk(xb.chunks[:-1] + ib.chunks[-1:])
    bind = tuple(range(len(batch)))
    y = da.blockwise(_take_along_last, bind + (-1,), xb, bind + (-2,), ib, bind + (-1,),
                     concatenate=True, dtype=x.dtype, meta=_dask_meta(x, x.ndim, x.dtype))
    return _base.moveaxis(y, -1, ax)


def cholesky(x: Any, /, *, upper: bool = False) -> Any:
    # array-api-compat calls Dask's cholesky, which returns the *upper* factor by default.
    if _square_chunks(x):
        return da.linalg.cholesky(x, lower=not upper)
    n = x.shape[-1]
    return _per_matrix(lambda c, a: c.linalg.cholesky(a, upper=upper), [x], [2], [((n, n), x.dtype)])


def inv(x: Any, /) -> Any:
    if _square_chunks(x):
        return da.linalg.inv(x)
    n = x.shape[-1]
    return _per_matrix(lambda c, a: c.linalg.inv(a), [x], [2], [((n, n), x.dtype)])


def solve(x1: Any, x2: Any, /) -> Any:
    if x2.ndim == 1:  # the 2024.12 rule: only a 1-d x2 is a vector
        return solve(x1, x2[:, None])[..., 0]
    if _square_chunks(x1) and x2.ndim == 2 and x2.chunks[0] == x1.chunks[0]:
        return da.linalg.solve(x1, x2)
    dt = _base.result_type(x1, x2)
    return _per_matrix(lambda c, a, b: c.linalg.solve(a, b), [x1, x2], [2, 2],
                       [((x1.shape[-1], x2.shape[-1]), dt)])


def det(x: Any, /) -> Any:
    return _per_matrix(lambda c, a: c.linalg.det(a), [x], [2], [((), x.dtype)])


def _real_dtype(dt: Any) -> Any:
    """The real dtype of a complex one (the standard's dtype for eigenvalues of a Hermitian
    matrix, singular values, norms, log|det|); a real dtype itself."""
    if dt == _base.complex64:
        return _base.float32
    if dt == _base.complex128:
        return _base.float64
    return dt


def slogdet(x: Any, /) -> Any:
    sign, logabs = _per_matrix(lambda c, a: tuple(c.linalg.slogdet(a)), [x], [2],
                               [((), x.dtype), ((), _real_dtype(x.dtype))])
    return _base.linalg.SlogdetResult(sign, logabs)


def eigh(x: Any, /) -> Any:
    n = x.shape[-1]
    w, v = _per_matrix(lambda c, a: tuple(c.linalg.eigh(a)), [x], [2],
                       [((n,), _real_dtype(x.dtype)), ((n, n), x.dtype)])
    return _base.linalg.EighResult(w, v)


class EigResult(NamedTuple):
    eigenvalues: Any
    eigenvectors: Any


def eig(x: Any, /) -> Any:
    # Not in array-api-compat's Dask namespace: per matrix, with the chunk library's eig.
    n = x.shape[-1]
    cdt = _base.result_type(x.dtype, _base.complex64)
    w, v = _per_matrix(lambda c, a: tuple(c.linalg.eig(a)), [x], [2],
                       [((n,), cdt), ((n, n), cdt)])
    return EigResult(w, v)


def eigvals(x: Any, /) -> Any:
    cdt = _base.result_type(x.dtype, _base.complex64)
    return _per_matrix(lambda c, a: c.linalg.eigvals(a), [x], [2], [((x.shape[-1],), cdt)])


def eigvalsh(x: Any, /) -> Any:
    return _per_matrix(lambda c, a: c.linalg.eigvalsh(a), [x], [2],
                       [((x.shape[-1],), _real_dtype(x.dtype))])


def svd(x: Any, /, *, full_matrices: bool = True) -> Any:
    m, n = x.shape[-2:]
    if not full_matrices and _tall_skinny(x):
        u, s, vh = da.linalg.svd(x)
        return _base.linalg.SVDResult(u, s, vh)
    k = min(m, n)
    shapes = ((m, m), (n, n)) if full_matrices else ((m, k), (k, n))
    u, s, vh = _per_matrix(lambda c, a: tuple(c.linalg.svd(a, full_matrices=full_matrices)),
                           [x], [2], [(shapes[0], x.dtype), ((k,), _real_dtype(x.dtype)),
                                      (shapes[1], x.dtype)])
    return _base.linalg.SVDResult(u, s, vh)


def svdvals(x: Any, /) -> Any:
    if _tall_skinny(x):
        return da.linalg.svd(x)[1]
    return _per_matrix(lambda c, a: c.linalg.svdvals(a), [x], [2],
                       [((min(x.shape[-2:]),), _real_dtype(x.dtype))])


def qr(x: Any, /, *, mode: str = "reduced") -> Any:
    m, n = x.shape[-2:]
    if mode == "reduced" and _tall_skinny(x):
        q, r = da.linalg.qr(x)
        return _base.linalg.QRResult(q, r)
    k = m if mode == "complete" else min(m, n)
    q, r = _per_matrix(lambda c, a: tuple(c.linalg.qr(a, mode=mode)), [x], [2],
                       [((m, k), x.dtype), ((k, n), x.dtype)])
    return _base.linalg.QRResult(q, r)


def pinv(x: Any, /, *, rtol: Any = None) -> Any:
    m, n = x.shape[-2:]
    return _per_matrix(lambda c, a: c.linalg.pinv(a, rtol=rtol), [x], [2], [((n, m), x.dtype)])


def matrix_power(x: Any, n: int, /) -> Any:
    k = x.shape[-1]
    return _per_matrix(lambda c, a: c.linalg.matrix_power(a, n), [x], [2], [((k, k), x.dtype)])


def matrix_rank(x: Any, /, *, rtol: Any = None) -> Any:
    return _per_matrix(lambda c, a: c.linalg.matrix_rank(a, rtol=rtol), [x], [2],
                       [((), _base.int64)])


def matrix_norm(x: Any, /, *, keepdims: bool = False, ord: Any = "fro") -> Any:
    if ord not in (2, -2, "nuc"):
        return _base.linalg.matrix_norm(x, keepdims=keepdims, ord=ord)
    s = svdvals(x)
    r = _base.sum(s, axis=-1) if ord == "nuc" else (
        _base.max(s, axis=-1) if ord == 2 else _base.min(s, axis=-1))
    return r[..., None, None] if keepdims else r


def cross(x1: Any, x2: Any, /, *, axis: int = -1) -> Any:
    a, b = _base.broadcast_arrays(x1, x2)
    a, b = _base.moveaxis(a, axis, -1), _base.moveaxis(b, axis, -1)
    if a.shape[-1] != 3:
        raise ValueError(f"cross: axis {axis} must have size 3, not {a.shape[-1]}")
    a0, a1, a2 = (a[..., i] for i in range(3))
    b0, b1, b2 = (b[..., i] for i in range(3))
    c = _base.stack([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0], axis=-1)
    return _base.moveaxis(c, -1, axis)


# The functions put over array-api-compat's: on the namespace, and on its linalg.
NAMESPACE_FIXES: tuple[Callable[..., Any], ...] = (eye, repeat, take_along_axis)
LINALG_FIXES: tuple[Callable[..., Any], ...] = (
    cholesky, inv, solve, det, slogdet, eig, eigvals, eigh, eigvalsh, svd, svdvals, qr, pinv, matrix_power,
    matrix_rank, matrix_norm, cross)


_FFT_1D = ("fft", "ifft", "rfft", "irfft", "hfft", "ihfft")
_FFT_ND = ("fftn", "ifftn", "rfftn", "irfftn")


def _fft_whole_axes(name: str) -> Callable[..., Any]:
    """Dask's transform ``name`` on any chunking: Dask transforms only an axis held in one
    chunk, so the transformed axes are rechunked to one chunk each (the others keep theirs)."""
    base = getattr(_base.fft, name)

    def fixed(x: Any, /, **kw: Any) -> Any:
        if name in _FFT_1D:
            axes: Any = (kw.get("axis", -1),)
        else:
            axes, s = kw.get("axes"), kw.get("s")
            if axes is None:
                axes = range(x.ndim) if s is None else range(x.ndim - len(s), x.ndim)
        return base(x.rechunk({a % x.ndim: -1 for a in axes}), **kw)

    fixed.__name__ = fixed.__qualname__ = name
    return fixed


def namespace() -> Any:
    """array-api-compat's Dask namespace with the functions agnograd needs fixed.

    Returns a module object: that namespace's names plus ``eye``, ``repeat``,
    ``take_along_axis``, and a ``linalg`` with ``cholesky``, ``inv``, ``solve``, ``det``,
    ``slogdet``, ``eigh``, ``eigvalsh``, ``svd``, ``svdvals``, ``qr``, ``pinv``,
    ``matrix_power``, ``matrix_rank``, ``matrix_norm`` and ``cross`` that work on stacks and on
    any chunking, and an ``fft`` whose transforms take any chunking.
    """
    la = clone_namespace(_base.linalg, "agnograd.dask_namespace.linalg",
                         {f.__name__: f for f in LINALG_FIXES})
    fft = clone_namespace(_base.fft, "agnograd.dask_namespace.fft",
                          {n: _fft_whole_axes(n) for n in _FFT_1D + _FFT_ND})
    return clone_namespace(_base, "agnograd.dask_namespace", {
        "__array_api_version__": getattr(_base, "__array_api_version__", "2024.12"),
        "linalg": la,
        "fft": fft,
        **{f.__name__: f for f in NAMESPACE_FIXES},
    })


# ---------------------------------------------------------------------------------------------
# The helpers behind agnograd.dask


def is_dask_array(a: Any) -> bool:
    """Whether ``a`` is a Dask array."""
    return bool(array_api_compat.is_dask_array(a))


def dask_compute(*arrays: Any, **kwargs: Any) -> tuple[Any, ...]:
    """One ``dask.compute`` run for every argument (shared parts run once); Dask arrays come back
    as their chunk library's arrays (NumPy or CuPy), same shapes and dtypes.

    Several Dask arrays are computed as one flat concatenation per dtype, so the graph has one
    output: given a loss and its gradients as separate outputs, Dask's ordering finishes the loss
    first and holds every chunk's forward intermediates until the backward pass (a 400,000-row
    MLP step of ``benchmarks/dask_scale.py``: 788 MiB peak as separate outputs, 235 MiB as one).
    """
    shapes: list[Any] = [getattr(a, "shape", None) for a in arrays]
    if (len(arrays) <= 1 or not all(is_dask_array(a) for a in arrays)
            or any(n != n for s in shapes for n in s)):  # NaN sizes cannot be split back
        return tuple(dask.compute(*arrays, **kwargs))
    groups: dict[Any, list[int]] = {}
    for i, a in enumerate(arrays):
        groups.setdefault(a.dtype, []).append(i)
    flats = [da.concatenate([da.reshape(arrays[i], (-1,)) for i in idx]) for idx in groups.values()]
    out: list[Any] = [None] * len(arrays)
    for idx, flat in zip(groups.values(), dask.compute(*flats, **kwargs)):
        start = 0
        for i in idx:
            size = math.prod(shapes[i])
            out[i] = flat[start:start + size].reshape(shapes[i])
            start += size
    return tuple(out)


def dask_persist(*arrays: Any, **kwargs: Any) -> tuple[Any, ...]:
    """``dask.persist(*arrays, **kwargs)``: the same Dask arrays, computed and held in memory (or
    on the cluster's workers), so their graphs are one task per chunk from now on."""
    return tuple(dask.persist(*arrays, **kwargs))


def dask_task_count(*arrays: Any) -> int:
    """How many tasks the graph of ``arrays`` (Dask arrays or delayed values) has, shared tasks
    counted once."""
    if hasattr(dask.base, "collections_to_expr"):  # dask >= 2025
        return len(dask.base.collections_to_expr(arrays).__dask_graph__())
    return len(dask.base.collections_to_dsk(arrays))


def dask_row_blocks(a: Any, what: str) -> list[Any]:
    """Delayed row blocks of a Dask array chunked along axis 0 only (other axes are merged into
    one chunk first), in order."""
    if a.ndim == 0:
        raise ValueError(f"{what}: expected an array with a sample axis 0, not a 0-d array")
    if any(len(c) != 1 for c in a.chunks[1:]):
        a = a.rechunk({i: -1 for i in range(1, a.ndim)})
    return list(a.to_delayed().ravel())


def dask_delayed(fn: Callable[..., Any], *args: Any) -> Any:
    """``dask.delayed(fn, pure=True)(*args)``: a lazy call (arguments may be delayed values)."""
    return dask.delayed(fn, pure=True)(*args)


def dask_delayed_value(obj: Any) -> Any:
    """``obj`` as one delayed value: tasks that take it share one copy in the graph."""
    return dask.delayed(obj, pure=True)


def dask_from_array(a: Any, chunks: Any) -> Any:
    """A Dask array over an in-memory array (NumPy or CuPy), chunked as ``chunks``."""
    return da.from_array(a, chunks=chunks, asarray=False)
