"""The one backend door: the only module that imports NumPy, CuPy, Dask or array-api-compat.

A :class:`Backend` bundles an Array API namespace (``xp``) with the few facts the engine needs
about it: its array type, how to turn stray scalars back into 0-d arrays, and the faster
backend-specific paths for primitives the standard lacks (scatter-add). Everything else in
agnograd receives a Backend from here and speaks only to ``backend.xp``.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import array_api_compat
import numpy as np

__all__ = [
    "Backend",
    "BackendError",
    "available_backends",
    "default_backend",
    "get_backend",
    "get_default_backend",
    "set_default_backend",
]

# Host helpers for nn, optim, datasets and the command (see the end of this module).
HostRNG = np.random.Generator


class BackendError(RuntimeError):
    """A backend was asked for that cannot be used here (not installed, no device, unknown)."""


# name -> (module that must import, pip extra or package that provides it)
_KNOWN = {
    "numpy": ("numpy", "numpy (a core dependency)"),
    "cupy": ("cupy", "the 'cuda12' or 'cuda13' extra: pip install 'agnograd[cuda13]'"),
    "array_api_strict": ("array_api_strict", "the 'test' extra: pip install 'agnograd[test]'"),
    "torch": ("torch", "PyTorch: pip install torch"),
    "dask": ("dask.array", "Dask: pip install 'dask[array]'"),
    "jax": ("jax.numpy", "JAX: pip install jax"),
}


def given(**kwargs: Any) -> dict[str, Any]:
    """The keyword arguments that were given (not ``None``): optional arguments are passed on
    only when set, since not every namespace accepts every keyword."""
    return {k: v for k, v in kwargs.items() if v is not None}


class Backend:
    """An Array API namespace and what agnograd needs to know about it.

    Attributes:
        name: the backend's name (``"numpy"``, ``"cupy"``, ``"array_api_strict"``, ...).
        xp: the Array API namespace (array-api-compat's wrapper where one exists).
        array_type: the type of the backend's arrays (used for cheap ``type(x) is`` checks).
        multi_device: arrays may live on different devices (ops check operands agree).
        lazy: arrays are task graphs (Dask), computed only on request.
    """

    __slots__ = ("name", "xp", "array_type", "multi_device", "lazy", "_scatter_add_fast",
                 "__weakref__")

    def __init__(self, name: str, xp: Any, array_type: type) -> None:
        self.name = name
        self.xp = xp
        self.array_type = array_type
        # Backends whose arrays may sit on different devices: ops check their operands agree.
        self.multi_device = name in ("cupy", "torch", "jax")
        # Backends that build task graphs (Dask): rules must keep the inputs' chunking, and
        # nothing may read values back.
        self.lazy = name == "dask"
        self._scatter_add_fast: Callable[..., Any] | None = _FAST_SCATTER.get(name)

    def __repr__(self) -> str:
        return f"Backend({self.name!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (get_backend, (self.name,))

    def fix(self, a: Any) -> Any:
        """Return ``a`` as a backend array: NumPy returns scalars (``numpy.float64``) for 0-d results."""
        if type(a) is self.array_type:
            return a
        if self.name == "numpy" and isinstance(a, np.generic):
            return np.asarray(a)
        return a

    def first_false(self, flags: Sequence[Any]) -> int | None:
        """Position of the first false among 0-d boolean arrays of this backend, read back in
        one transfer (one compute on Dask, one synchronisation on CuPy); ``None`` if all hold."""
        if not flags:
            return None
        host = host_array(self.xp.stack(list(flags)))
        bad = np.flatnonzero(~np.asarray(host, dtype=bool))
        return int(bad[0]) if bad.size else None

    def asarray(self, obj: Any, dtype: Any = None, device: Any = None, copy: bool | None = None) -> Any:
        """``xp.asarray`` that never returns a NumPy scalar."""
        return self.fix(self.xp.asarray(obj, **given(dtype=dtype, device=device, copy=copy)))

    def is_array(self, obj: Any) -> bool:
        return isinstance(obj, self.array_type)

    def device_of(self, a: Any) -> Any:
        return array_api_compat.device(a)

    def to_device(self, a: Any, device: Any) -> Any:
        return self.fix(array_api_compat.to_device(a, device))

    def scatter_add(self, n: int, index: Any, values: Any) -> Any:
        """``out[index[k]] += values[k]`` for a zero 1-d ``out`` of length ``n`` (repeats summed).

        The Array API has no scatter-add, so the standard path sorts the indices and takes
        differences of a cumulative sum at the segment bounds found by ``searchsorted``; NumPy and
        CuPy use their own faster kernels (``tests/test_backend.py`` checks that both agree).
        """
        if self._scatter_add_fast is not None:
            return self._scatter_add_fast(self.xp, n, index, values)
        return scatter_add_standard(self.xp, n, index, values)


def scatter_add_standard(xp: Any, n: int, index: Any, values: Any) -> Any:
    """Scatter-add written with Array API functions only (see :meth:`Backend.scatter_add`)."""
    dev = array_api_compat.device(values)
    order = xp.argsort(index, stable=True)
    sorted_index = xp.take(index, order)
    # Accumulate in float64 where the device has it: differences of a running sum lose the
    # low bits of small segments next to a large total.
    acc_dtype = values.dtype
    if values.dtype == xp.float32 and _has_float64(xp, dev):
        acc_dtype = xp.float64
    sorted_values = xp.astype(xp.take(values, order), acc_dtype)
    csum = xp.cumulative_sum(sorted_values, include_initial=True)
    targets = xp.arange(n, dtype=index.dtype, device=dev)
    lo = xp.searchsorted(sorted_index, targets, side="left")
    hi = xp.searchsorted(sorted_index, targets, side="right")
    return xp.astype(xp.take(csum, hi) - xp.take(csum, lo), values.dtype)


def _has_float64(xp: Any, dev: Any) -> bool:
    try:
        return "real floating" in xp.__array_namespace_info__().default_dtypes(device=dev) and (
            xp.__array_namespace_info__().dtypes(device=dev, kind="real floating").get("float64")
            is not None
        )
    except Exception:  # a namespace without the inspection API: assume the common case
        return True


def _scatter_add_numpy(xp: Any, n: int, index: Any, values: Any) -> Any:
    # bincount sums in float64 in one pass; add.at is an order of magnitude slower.
    return np.bincount(index, weights=values, minlength=n).astype(values.dtype, copy=False)


def _scatter_add_cupy(xp: Any, n: int, index: Any, values: Any) -> Any:
    import cupy  # only reachable when the CuPy backend was resolved

    out = xp.zeros(n, dtype=values.dtype)
    cupy.add.at(out, index, values)  # atomic adds on the device
    return out


def _scatter_add_dask(xp: Any, n: int, index: Any, values: Any) -> Any:
    # Each chunk scatter-adds into its own length-n partial with its chunk library's kernel
    # (NumPy or CuPy), then the partials are summed by a tree reduction: tasks grow linearly in
    # the number of chunks, and nothing is computed. The standard path's argsort/searchsorted
    # would gather the whole index into one chunk first.
    import dask.array as da

    values = values.rechunk(index.chunks)

    def part(i: Any, v: Any) -> Any:
        chunk = backend_of_array(v)
        assert chunk is not None, f"scatter_add: a Dask chunk of type {type(v).__name__}"
        return chunk.xp.reshape(chunk.scatter_add(n, i, v), (1, n))

    parts = da.blockwise(part, "kn", index, "k", values, "k", new_axes={"n": n},
                         adjust_chunks={"k": 1}, dtype=values.dtype,
                         meta=_dask_meta(values, 2, values.dtype))
    return xp.sum(parts, axis=0)


_FAST_SCATTER: dict[str, Callable[..., Any]] = {
    "numpy": _scatter_add_numpy,
    "cupy": _scatter_add_cupy,
    "dask": _scatter_add_dask,
}

_backends: dict[str, Backend] = {}
_by_type: dict[type, Backend] = {}
_lock = threading.Lock()


def _load(name: str) -> Backend:
    if name == "numpy":
        import array_api_compat.numpy as xp

        return Backend("numpy", xp, np.ndarray)
    if name not in _KNOWN:
        known = ", ".join(sorted(_KNOWN))
        raise BackendError(f"unknown backend {name!r}; known backends: {known}")
    module, extra = _KNOWN[name]
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise BackendError(
            f"backend {name!r} is not installed ({exc}); install {extra}"
        ) from exc
    if name == "array_api_strict":
        import array_api_strict as xp

        return Backend(name, xp, type(xp.asarray(0)))
    if name == "cupy":
        import cupy

        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:  # CUDA driver missing or broken
            raise BackendError(
                f"backend 'cupy' is installed but CUDA is not usable here ({exc}); "
                "use a machine with an NVIDIA GPU and driver, or pick backend='numpy'"
            ) from exc
        if count == 0:
            raise BackendError(
                "backend 'cupy' is installed but no CUDA device is visible; "
                "use a machine with an NVIDIA GPU, or pick backend='numpy'"
            )
        import array_api_compat.cupy as xp

        return Backend(name, xp, cupy.ndarray)
    if name == "jax":  # JAX implements the standard in jax.numpy itself
        import jax.numpy as xp
    elif name == "dask":  # array-api-compat's Dask namespace, with agnograd's fixes on top
        try:
            xp = _dask_namespace(importlib.import_module("array_api_compat.dask.array"))
        except ImportError as exc:
            raise BackendError(
                f"backend 'dask' is installed but this array-api-compat has no Dask wrapper ({exc}); "
                "upgrade array-api-compat"
            ) from exc
    else:
        try:
            xp = importlib.import_module(f"array_api_compat.{name}")
        except ImportError as exc:
            raise BackendError(
                f"backend {name!r} is installed but this array-api-compat has no wrapper for it "
                f"({exc}); upgrade array-api-compat"
            ) from exc
    try:
        sample = xp.asarray([0.0])
    except Exception as exc:  # e.g. JAX with a CUDA plugin but no usable device
        raise BackendError(f"backend {name!r} is installed but cannot create arrays: {exc}") from exc
    return Backend(name, xp, type(sample))


def get_backend(name: str | Backend | None = None) -> Backend:
    """Return the :class:`Backend` called ``name`` (the default backend when ``None``).

    Raises:
        BackendError: the name is unknown, its library is not installed (the message names the
            extra to install), or CuPy is installed but no CUDA device is present.
    """
    if isinstance(name, Backend):
        return name
    if name is None:
        return get_default_backend()
    b = _backends.get(name)
    if b is None:
        with _lock:
            b = _backends.get(name)
            if b is None:
                b = _load(name)
                _backends[name] = b
                _by_type.setdefault(b.array_type, b)
    return b


def backend_of_array(a: Any) -> Backend | None:
    """The Backend of a raw array, resolved once per array type; ``None`` if not an array."""
    b = _by_type.get(type(a))
    if b is not None:
        return b
    if isinstance(a, np.generic):
        return get_backend("numpy")
    if not array_api_compat.is_array_api_obj(a):
        return None
    if array_api_compat.is_numpy_array(a):
        name = "numpy"
    elif array_api_compat.is_cupy_array(a):
        name = "cupy"
    elif array_api_compat.is_torch_array(a):
        name = "torch"
    elif array_api_compat.is_dask_array(a):
        name = "dask"
    elif array_api_compat.is_jax_array(a):
        name = "jax"
    elif array_api_compat.is_array_api_strict_namespace(a.__array_namespace__()):
        name = "array_api_strict"
    else:
        name = None
    if name is not None:
        b = get_backend(name)
    else:  # any other library that implements the standard itself
        xp = array_api_compat.array_namespace(a)
        b = Backend(getattr(xp, "__name__", type(a).__module__), xp, type(a))
    _by_type[type(a)] = b
    return b


def known_backends() -> list[str]:
    """Names of every backend agnograd knows how to resolve (available here or not)."""
    return list(_KNOWN)


def available_backends() -> list[str]:
    """Names of the backends usable on this machine (CuPy only when a CUDA device is present)."""
    names = []
    for name in _KNOWN:
        try:
            get_backend(name)
        except Exception:  # not installed, no device, or broken: not available here
            continue
        names.append(name)
    return names


# The process-wide default, and a per-thread override set by the `default_backend` context.
_default_name = os.environ.get("AGNOGRAD_BACKEND", "numpy") or "numpy"
_local = threading.local()


def get_default_backend() -> Backend:
    """The backend used when none is named: the innermost ``default_backend`` context of this
    thread, else :func:`set_default_backend`'s, else ``$AGNOGRAD_BACKEND``, else NumPy."""
    name = getattr(_local, "name", None)
    return get_backend(name if name is not None else _default_name)


def set_default_backend(name: str) -> None:
    """Make ``name`` the process-wide default backend (checked now, so a typo fails here)."""
    global _default_name
    get_backend(name)
    _default_name = name


@contextlib.contextmanager
def default_backend(name: str) -> Iterator[Backend]:
    """Within the ``with`` block (in this thread only), create tensors on backend ``name``."""
    b = get_backend(name)
    previous = getattr(_local, "name", None)
    _local.name = b.name
    try:
        yield b
    finally:
        _local.name = previous


def host_array(a: Any) -> Any:
    """A NumPy copy (or view) of any backend array: for tests, printing and file output."""
    if isinstance(a, np.ndarray):
        return a
    if isinstance(a, np.generic):
        return np.asarray(a)
    get = getattr(a, "get", None)  # CuPy
    if callable(get) and type(a).__module__.startswith("cupy"):
        return get()
    if type(a).__module__.startswith("torch") and getattr(a, "device", None) is not None and (
            a.device.type != "cpu"):  # DLPack and __array__ refuse tensors on a GPU
        return a.detach().cpu().numpy()
    try:
        return np.from_dlpack(a)
    except Exception:
        return np.asarray(a)


def transfer(a: Any, target: Backend) -> Any:
    """Move a raw array to ``target``: DLPack where it can cross, else through a host copy."""
    try:
        return target.fix(target.xp.from_dlpack(a))
    except Exception:
        host = host_array(a)
    if target.name == "cupy":  # CuPy's Array API asarray refuses host arrays
        import cupy

        return cupy.asarray(host)
    return target.asarray(host)


# ---------------------------------------------------------------------------------------------
# Dask. array-api-compat's Dask namespace (1.16) has gaps that agnograd's ops would hit; the
# Backend's ``xp`` for Dask is that namespace with the fixes below on top, so every op and every
# rule still speaks only standard functions. Matrix functions the namespace lacks or gets wrong
# run per matrix: the two matrix axes are put in one chunk, the batch axes keep their chunks, and
# each block is handed to its own chunk library (NumPy or CuPy, through array-api-compat). The
# helpers after the namespace are what ``agnograd.dask`` uses; they exist so that this module
# stays the only one that imports Dask.


def _dask_meta(like: Any, ndim: int, dtype: Any) -> Any:
    """An empty chunk of ``like``'s chunk library (NumPy or CuPy) with ``ndim`` axes."""
    from dask.array.utils import meta_from_array

    return meta_from_array(like, ndim=ndim, dtype=dtype)


def _chunk_xp(block: Any) -> Any:
    """The Array API namespace of one Dask chunk (array-api-compat's NumPy or CuPy wrapper)."""
    return array_api_compat.array_namespace(block)


def _broadcast_batch(xs: Sequence[Any], cores: Sequence[int]) -> tuple[list[Any], tuple[int, ...]]:
    """Arrays broadcast to one batch shape (their last ``cores[i]`` axes untouched), with the
    core axes in one chunk and the batch axes chunked like the first array's."""
    import dask.array as da

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
    import dask.array as da

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
    return x.ndim == 2 and x.numblocks[0] > 1 and x.numblocks[1] == 1 and min(x.chunks[0]) >= x.shape[1]


def _dask_namespace(base: Any) -> Any:
    """array-api-compat's Dask namespace ``base`` with the functions agnograd needs fixed.

    Returns a module object: ``base``'s names plus ``eye``, ``repeat``, ``take_along_axis``,
    and a ``linalg`` with ``cholesky``, ``inv``, ``solve``, ``det``,
    ``slogdet``, ``eigh``, ``eigvalsh``, ``svd``, ``svdvals``, ``qr``, ``pinv``, ``matrix_power``,
    ``matrix_rank``, ``matrix_norm`` and ``cross`` that work on stacks and on any chunking.
    """
    import types

    import dask.array as da

    ns = types.ModuleType("agnograd.dask_namespace", base.__doc__)
    ns.__dict__.update({k: v for k, v in vars(base).items() if not k.startswith("__")})
    ns.__dict__["__array_api_version__"] = getattr(base, "__array_api_version__", "2024.12")
    ns.__dict__["__array_namespace_info__"] = base.__array_namespace_info__
    la = types.ModuleType("agnograd.dask_namespace.linalg", base.linalg.__doc__)
    la.__dict__.update({k: v for k, v in vars(base.linalg).items() if not k.startswith("__")})
    ns.linalg = la  # type: ignore[attr-defined]

    def eye(n_rows: int, n_cols: int | None = None, /, *, k: int = 0, dtype: Any = None,
            device: Any = None) -> Any:
        # Dask's eye loses blocks when n_cols != n_rows (2026.8); compare two aranges instead.
        m = n_rows if n_cols is None else n_cols
        rows = base.arange(n_rows)[:, None] + k
        return base.astype(rows == base.arange(m)[None, :], dtype or base.float64)

    def repeat(x: Any, repeats: Any, /, *, axis: int | None = None) -> Any:
        if not isinstance(repeats, int):
            raise NotImplementedError(
                "repeat on the 'dask' backend: repeats must be a Python int; an array of repeats "
                "gives an output shape that depends on the data, which Dask cannot know without "
                "computing. Pass an int, or move the tensor to NumPy with ag.to_backend(t, 'numpy')"
            )
        if axis is None:
            return da.repeat(base.reshape(x, (-1,)), repeats, axis=0)
        return da.repeat(x, repeats, axis=axis)

    def take_along_axis(x: Any, indices: Any, /, *, axis: int = -1) -> Any:
        if x.ndim != indices.ndim:
            raise ValueError(f"take_along_axis: x and indices must have the same rank, not "
                             f"{x.ndim} and {indices.ndim}")
        ax = axis % x.ndim
        # The gathered axis in one chunk; the others broadcast and aligned, one task per block.
        (xb,), _ = _broadcast_batch([base.moveaxis(x, ax, -1)], [1])
        (ib,), _ = _broadcast_batch([base.moveaxis(indices, ax, -1)], [1])
        batch = tuple(np.broadcast_shapes(xb.shape[:-1], ib.shape[:-1]))
        xb, ib = (da.broadcast_to(a, batch + a.shape[-1:]) for a in (xb, ib))
        ib = ib.rechunk(xb.chunks[:-1] + ib.chunks[-1:])
        bind = tuple(range(len(batch)))
        y = da.blockwise(_take_along_last, bind + (-1,), xb, bind + (-2,), ib, bind + (-1,),
                         concatenate=True, dtype=x.dtype, meta=_dask_meta(x, x.ndim, x.dtype))
        return base.moveaxis(y, -1, ax)

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
        dt = base.result_type(x1, x2)
        return _per_matrix(lambda c, a, b: c.linalg.solve(a, b), [x1, x2], [2, 2],
                           [((x1.shape[-1], x2.shape[-1]), dt)])

    def det(x: Any, /) -> Any:
        return _per_matrix(lambda c, a: c.linalg.det(a), [x], [2], [((), x.dtype)])

    def slogdet(x: Any, /) -> Any:
        sign, logabs = _per_matrix(lambda c, a: tuple(c.linalg.slogdet(a)), [x], [2],
                                   [((), x.dtype), ((), x.dtype)])
        return base.linalg.SlogdetResult(sign, logabs)

    def eigh(x: Any, /) -> Any:
        n = x.shape[-1]
        w, v = _per_matrix(lambda c, a: tuple(c.linalg.eigh(a)), [x], [2],
                           [((n,), x.dtype), ((n, n), x.dtype)])
        return base.linalg.EighResult(w, v)

    def eigvalsh(x: Any, /) -> Any:
        return _per_matrix(lambda c, a: c.linalg.eigvalsh(a), [x], [2], [((x.shape[-1],), x.dtype)])

    def svd(x: Any, /, *, full_matrices: bool = True) -> Any:
        m, n = x.shape[-2:]
        if not full_matrices and _tall_skinny(x):
            u, s, vh = da.linalg.svd(x)
            return base.linalg.SVDResult(u, s, vh)
        k = min(m, n)
        shapes = ((m, m), (n, n)) if full_matrices else ((m, k), (k, n))
        u, s, vh = _per_matrix(lambda c, a: tuple(c.linalg.svd(a, full_matrices=full_matrices)),
                               [x], [2], [(shapes[0], x.dtype), ((k,), x.dtype), (shapes[1], x.dtype)])
        return base.linalg.SVDResult(u, s, vh)

    def svdvals(x: Any, /) -> Any:
        if _tall_skinny(x):
            return da.linalg.svd(x)[1]
        return _per_matrix(lambda c, a: c.linalg.svdvals(a), [x], [2], [((min(x.shape[-2:]),), x.dtype)])

    def qr(x: Any, /, *, mode: str = "reduced") -> Any:
        m, n = x.shape[-2:]
        if mode == "reduced" and _tall_skinny(x):
            q, r = da.linalg.qr(x)
            return base.linalg.QRResult(q, r)
        k = m if mode == "complete" else min(m, n)
        q, r = _per_matrix(lambda c, a: tuple(c.linalg.qr(a, mode=mode)), [x], [2],
                           [((m, k), x.dtype), ((k, n), x.dtype)])
        return base.linalg.QRResult(q, r)

    def pinv(x: Any, /, *, rtol: Any = None) -> Any:
        m, n = x.shape[-2:]
        return _per_matrix(lambda c, a: c.linalg.pinv(a, rtol=rtol), [x], [2], [((n, m), x.dtype)])

    def matrix_power(x: Any, n: int, /) -> Any:
        k = x.shape[-1]
        return _per_matrix(lambda c, a: c.linalg.matrix_power(a, n), [x], [2], [((k, k), x.dtype)])

    def matrix_rank(x: Any, /, *, rtol: Any = None) -> Any:
        return _per_matrix(lambda c, a: c.linalg.matrix_rank(a, rtol=rtol), [x], [2],
                           [((), base.int64)])

    def matrix_norm(x: Any, /, *, keepdims: bool = False, ord: Any = "fro") -> Any:
        if ord not in (2, -2, "nuc"):
            return base.linalg.matrix_norm(x, keepdims=keepdims, ord=ord)
        s = svdvals(x)
        r = base.sum(s, axis=-1) if ord == "nuc" else (
            base.max(s, axis=-1) if ord == 2 else base.min(s, axis=-1))
        return r[..., None, None] if keepdims else r

    def cross(x1: Any, x2: Any, /, *, axis: int = -1) -> Any:
        a, b = base.broadcast_arrays(x1, x2)
        a, b = base.moveaxis(a, axis, -1), base.moveaxis(b, axis, -1)
        if a.shape[-1] != 3:
            raise ValueError(f"cross: axis {axis} must have size 3, not {a.shape[-1]}")
        a0, a1, a2 = (a[..., i] for i in range(3))
        b0, b1, b2 = (b[..., i] for i in range(3))
        c = base.stack([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0], axis=-1)
        return base.moveaxis(c, -1, axis)

    fixes: list[tuple[Any, Callable[..., Any]]] = [(ns, f) for f in (eye, repeat, take_along_axis)]
    fixes += [(la, f) for f in (cholesky, inv, solve, det, slogdet, eigh, eigvalsh, svd, svdvals, qr,
                                pinv, matrix_power, matrix_rank, matrix_norm, cross)]
    for module, fn in fixes:
        setattr(module, fn.__name__, fn)
    return ns


def _take_along_last(x: Any, i: Any) -> Any:
    return _chunk_xp(x).take_along_axis(x, i, axis=-1)


def is_dask_array(a: Any) -> bool:
    """Whether ``a`` is a Dask array (without importing Dask when it is not installed)."""
    return bool(array_api_compat.is_dask_array(a))


def dask_compute(*arrays: Any, **kwargs: Any) -> tuple[Any, ...]:
    """One ``dask.compute`` run for every argument (shared parts run once); Dask arrays come back
    as their chunk library's arrays (NumPy or CuPy), same shapes and dtypes.

    Several Dask arrays are computed as one flat concatenation per dtype, so the graph has one
    output: given a loss and its gradients as separate outputs, Dask's ordering finishes the loss
    first and holds every chunk's forward intermediates until the backward pass (a 400,000-row
    MLP step of ``benchmarks/dask_scale.py``: 788 MiB peak as separate outputs, 235 MiB as one).
    """
    import dask
    import dask.array as da

    shapes = [getattr(a, "shape", None) for a in arrays]
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
    import dask

    return tuple(dask.persist(*arrays, **kwargs))


def dask_task_count(*arrays: Any) -> int:
    """How many tasks the graph of ``arrays`` (Dask arrays or delayed values) has, shared tasks
    counted once."""
    import dask.base

    if hasattr(dask.base, "collections_to_expr"):  # dask >= 2025
        return len(dask.base.collections_to_expr(arrays).__dask_graph__())
    return len(dask.base.collections_to_dsk(arrays))  # type: ignore[attr-defined]


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
    import dask

    return dask.delayed(fn, pure=True)(*args)


def dask_delayed_value(obj: Any) -> Any:
    """``obj`` as one delayed value: tasks that take it share one copy in the graph."""
    import dask

    return dask.delayed(obj, pure=True)


def dask_from_array(a: Any, chunks: Any) -> Any:
    """A Dask array over an in-memory array (NumPy or CuPy), chunked as ``chunks``."""
    import dask.array as da

    return da.from_array(a, chunks=chunks, asarray=False)


# ---------------------------------------------------------------------------------------------
# Host helpers: random numbers and files. nn, optim, agnograd.datasets and the command get them
# from here, so the rest of the package still imports no array library.


def host_rng(seed: int | Sequence[int] | HostRNG | None = None) -> HostRNG:
    """A host random generator (NumPy's ``Generator``; a generator is returned as is).

    Initialisation, shuffling and dropout masks are drawn on the host and then moved to the
    backend, so one seed gives the same numbers on NumPy, CuPy and every other backend.
    ``seed`` may be an int, a sequence of ints (e.g. ``(seed, layer_index)``) or ``None`` (fresh
    entropy from the operating system).
    """
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def save_npz(path: str | os.PathLike[str], arrays: Mapping[str, Any]) -> None:
    """Write ``arrays`` (name -> array of any backend) to an uncompressed ``.npz`` file, without
    pickle. The file is written next to ``path`` first and then renamed over it, so a failure
    never leaves a half-written file behind."""
    host = {name: np.asarray(host_array(a)) for name, a in arrays.items()}
    for name, a in host.items():
        if a.dtype.hasobject:
            raise TypeError(f"save_npz: {name!r} is an object array; only numeric arrays are saved")
    target = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(target))
    fd, tmp = tempfile.mkstemp(prefix=".agnograd-", suffix=".npz.tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, allow_pickle=False, **host)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def load_npz(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read every array of an ``.npz`` file (as NumPy arrays) with ``allow_pickle=False``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not an ``.npz`` archive, or it holds object (pickled) arrays.
    """
    target = os.fspath(path)
    try:
        z = np.load(target, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError) as exc:
        raise ValueError(f"cannot read {target!r} as an .npz file: {exc}") from exc
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise ValueError(f"{target!r} holds a single array, not an .npz archive of named arrays")
    try:
        with z:
            return {name: z[name] for name in z.files}
    except Exception as exc:  # a corrupt member, or an object array (needs pickle)
        raise ValueError(f"cannot read {target!r}: {exc}") from exc


def load_csv(path: str | os.PathLike[str], delimiter: str = ",") -> Any:
    """A numeric text table (``.gz`` files are decompressed) as a float64 NumPy array."""
    return np.loadtxt(os.fspath(path), delimiter=delimiter, dtype=np.float64, ndmin=2)


def describe_device(device: Any) -> str:
    """A short name for a backend device: ``cpu``, ``cuda:0 (NVIDIA H100 ...)``, ..."""
    if type(device).__module__.startswith("cupy"):
        import cupy

        try:
            name = cupy.cuda.runtime.getDeviceProperties(device.id)["name"].decode()
        except Exception:  # no driver answer: the number alone
            name = ""
        return f"cuda:{device.id}" + (f" ({name})" if name else "")
    return str(device)


# ---------------------------------------------------------------------------------------------
# CUDA graphs (CuPy only): the part of `agnograd.capture` that touches CuPy. Nothing here runs
# unless a step is captured on the 'cupy' backend; the other backends never reach it.

_graph_local = threading.local()  # .recorder: the CudaGraphRecorder active in this thread
_SAFE_NAMESPACES: dict[str, Any] = {}
_PY_NUMBERS = (bool, int, float, complex)


def graph_safe_matmul(a: Any, b: Any) -> Any:
    """``a @ b`` for CuPy arrays that may be called while a CUDA graph is being captured.

    CuPy (measured with 14.2 and CUDA 13) refuses its own cuBLAS wrappers during stream capture
    ("calling cuBLAS API during stream capture is currently unsupported"). While a
    :class:`CudaGraphRecorder` is active in this thread, this calls cuBLAS's ``gemm`` directly
    with the recorder's private handle, bound to the capture stream with its own workspace.
    Row-major operands are handed to the column-major library as their transposes
    (``Cᵀ = Bᵀ Aᵀ``); 1-d operands and broadcast batch axes follow the standard's ``matmul``
    (one ``gemm`` per batch element). float32/float64/complex64/complex128 only. Without an
    active recorder it is ``cupy.matmul``.

    This is the one function to drop once CuPy records cuBLAS calls itself.
    """
    import cupy

    rec = getattr(_graph_local, "recorder", None)
    if rec is None:
        return cupy.matmul(a, b)
    dtype = cupy.result_type(a, b)
    if dtype.char not in "fdFD":
        raise NotImplementedError(
            f"matmul of {a.dtype} and {b.dtype} arrays inside a captured CuPy step: the "
            "graph-safe product supports float32, float64, complex64 and complex128")
    a = a.astype(dtype, copy=False)
    b = b.astype(dtype, copy=False)
    vec_a, vec_b = a.ndim == 1, b.ndim == 1
    if vec_a:
        a = a[None, :]
    if vec_b:
        b = b[:, None]
    m, k = a.shape[-2:]
    k2, n = b.shape[-2:]
    if k != k2:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} are not aligned")
    batch = tuple(np.broadcast_shapes(a.shape[:-2], b.shape[:-2]))
    out = cupy.empty(batch + (m, n), dtype=dtype)
    if out.size:
        if k == 0:
            out.fill(0)
        else:
            a = cupy.broadcast_to(a, batch + (m, k))
            b = cupy.broadcast_to(b, batch + (k, n))
            for idx in np.ndindex(*batch):
                rec.gemm(a[idx], b[idx], out[idx])
    if vec_a:
        out = out[..., 0, :]
    if vec_b:
        out = out[..., 0]
    return out


def _graph_safe_clip(x: Any, /, min: Any = None, max: Any = None) -> Any:
    # array-api-compat's clip uses boolean-mask assignment (a host synchronisation).
    import cupy

    out = x
    if min is not None:
        out = cupy.maximum(out, min)  # NaN in x stays NaN
    if max is not None:
        out = cupy.minimum(out, max)
    if out is x:
        out = x.copy()
    return out.astype(x.dtype, copy=False)


def _graph_safe_sign(x: Any, /) -> Any:
    # array-api-compat's sign patches NaN and complex results with boolean masks.
    import cupy

    if x.dtype.kind == "c":
        mag = cupy.abs(x)
        return cupy.where(mag == 0, cupy.zeros((), x.dtype), x / cupy.where(mag == 0, 1, mag))
    if x.dtype.kind == "f":  # CuPy's sign maps NaN to 0; the standard keeps NaN
        return cupy.where(cupy.isnan(x), x, cupy.sign(x))
    return cupy.sign(x)


def _graph_safe_asarray_factory(real: Callable[..., Any]) -> Callable[..., Any]:
    def asarray(obj: Any, /, *, dtype: Any = None, device: Any = None, copy: bool | None = None
                ) -> Any:
        # A Python number becomes a fill kernel (its value a kernel argument), not a host copy.
        if type(obj) in _PY_NUMBERS:
            import cupy

            if dtype is None:
                dtype = {bool: cupy.bool_, int: cupy.int64, float: cupy.float64,
                         complex: cupy.complex128}[type(obj)]
            return cupy.full((), obj, dtype=dtype)
        return real(obj, **given(dtype=dtype, device=device, copy=copy))

    return asarray


def graph_safe_namespace(backend: Backend) -> Any:
    """A copy of the CuPy backend's namespace whose ``matmul``, ``clip``, ``sign`` and
    ``asarray`` (of Python numbers) can be recorded into a CUDA graph; everything else is the
    namespace's own function. Built once per backend."""
    ns = _SAFE_NAMESPACES.get(backend.name)
    if ns is None:
        import types

        real = backend.xp
        ns = types.ModuleType(f"{getattr(real, '__name__', backend.name)}[graph-safe]")
        ns.__dict__.update({k: v for k, v in vars(real).items()
                            if k not in ("__name__", "__spec__", "__loader__", "__package__")})
        ns.matmul = graph_safe_matmul  # type: ignore[attr-defined]
        ns.clip = _graph_safe_clip  # type: ignore[attr-defined]
        ns.sign = _graph_safe_sign  # type: ignore[attr-defined]
        ns.asarray = _graph_safe_asarray_factory(real.asarray)  # type: ignore[attr-defined]
        _SAFE_NAMESPACES[backend.name] = ns
    return ns


class CudaGraphRecorder:
    """Records a step into a CUDA graph with CuPy's stream capture, and replays it.

    Owns what the graph touches for as long as it lives: a non-blocking stream, a private
    memory pool (every array allocated while recording comes from it, so the blocks the graph
    reads and writes are never handed to other arrays nor freed by the default pool's
    ``free_all_blocks()``), a private cuBLAS handle bound to that stream with its own workspace
    (see :func:`graph_safe_matmul`), and the graph.
    """

    WORKSPACE_BYTES = 32 * 1024 * 1024  # cuBLAS's recommendation for Hopper

    def __init__(self, backend: Backend) -> None:
        if backend.name != "cupy":
            raise BackendError(f"CUDA graphs need the 'cupy' backend, not {backend.name!r}")
        import cupy

        self.backend = backend
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self.pool = cupy.cuda.MemoryPool()
        self.graph: Any = None
        self._handle: int | None = None
        self._workspace: Any = None
        self._lib: Any = None
        self._gemm: dict[str, Any] = {}

    # -- cuBLAS --------------------------------------------------------------------------------
    def _cublas(self) -> int:
        """The private handle, bound to the stream with its own workspace (created once).

        cuBLAS itself is called through ctypes on the library CuPy loaded (found in
        ``/proc/self/maps``): CuPy's wrappers re-bind the handle to the current stream on every
        call, and ``cublasSetStream`` resets the workspace to cuBLAS's default pool. Where the
        library cannot be found, CuPy's wrappers are used and cuBLAS keeps that default pool.
        """
        if self._handle is None:
            import cupy
            from cupy_backends.cuda.libs import cublas

            handle = cublas.create()
            self._workspace = cupy.empty(self.WORKSPACE_BYTES, dtype=cupy.uint8)
            self._lib = _loaded_cublas()
            if self._lib is not None:
                try:
                    _cublas_check(self._lib.cublasSetStream_v2(handle, self.stream.ptr),
                                  "cublasSetStream")
                    _cublas_check(self._lib.cublasSetWorkspace_v2(
                        handle, self._workspace.data.ptr, self.WORKSPACE_BYTES),
                        "cublasSetWorkspace")
                except Exception:  # an older cuBLAS: CuPy's wrappers, the default workspace
                    self._lib = None
            if self._lib is None:
                cublas.setStream(handle, self.stream.ptr)
            self._gemm = {"f": cublas.sgemm, "d": cublas.dgemm, "F": cublas.cgemm,
                          "D": cublas.zgemm}
            self._handle = handle
        return self._handle

    def gemm(self, a: Any, b: Any, out: Any) -> None:
        """``out = a @ b`` for 2-d arrays of one dtype (``out`` C-contiguous), on the stream.

        Row-major ``C = A B`` is the column-major ``Cᵀ = Bᵀ Aᵀ``: cuBLAS gets ``B`` first."""
        from cupy_backends.cuda.libs import cublas

        handle = self._cublas()
        m, k = a.shape
        n = b.shape[1]
        op_a, ld_a, a = _column_major(a, cublas)
        op_b, ld_b, b = _column_major(b, cublas)
        head = (handle, op_b, op_a, n, m, k)
        # alpha and beta are read from host memory (the handle's default pointer mode).
        one, zero = np.ones((), out.dtype), np.zeros((), out.dtype)
        if self._lib is not None:
            name = {"f": "cublasSgemm_v2", "d": "cublasDgemm_v2", "F": "cublasCgemm_v2",
                    "D": "cublasZgemm_v2"}[out.dtype.char]
            _cublas_check(getattr(self._lib, name)(
                *head, one.ctypes.data, b.data.ptr, ld_b, a.data.ptr, ld_a, zero.ctypes.data,
                out.data.ptr, max(n, 1)), name)
            return
        fn = self._gemm[out.dtype.char]
        # CuPy 14.2's wrappers take alpha and beta as host pointers ("size_t alpha" in their
        # signature); some versions take them by value.
        if "size_t alpha" in (getattr(fn, "__doc__", None) or "size_t alpha"):
            fn(*head, one.ctypes.data, b.data.ptr, ld_b, a.data.ptr, ld_a, zero.ctypes.data,
               out.data.ptr, max(n, 1))
        else:
            fn(*head, 1.0, b.data.ptr, ld_b, a.data.ptr, ld_a, 0.0, out.data.ptr, max(n, 1))

    # -- recording -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Run code as it will be recorded: on the private stream, allocating from the private
        pool, with the graph-safe namespace (warm-up runs use this, so kernels are compiled,
        the pool has grown and the cuBLAS handle is initialised before capture)."""
        import cupy

        previous_xp = self.backend.xp
        previous_rec = getattr(_graph_local, "recorder", None)
        self.stream.wait_event(cupy.cuda.get_current_stream().record())
        self.backend.xp = graph_safe_namespace(self.backend)
        _graph_local.recorder = self
        try:
            with cupy.cuda.using_allocator(self.pool.malloc), self.stream:
                self._cublas()
                yield
        finally:
            _graph_local.recorder = previous_rec
            self.backend.xp = previous_xp
            cupy.cuda.get_current_stream().wait_event(self.stream.record())

    @contextlib.contextmanager
    def capture(self) -> Iterator[None]:
        """Record everything the block enqueues into ``self.graph`` (nothing is executed)."""
        with self.session():
            self.stream.synchronize()
            self.stream.begin_capture()
            try:
                yield
            except BaseException:
                with contextlib.suppress(Exception):
                    self.stream.end_capture()  # leave capture mode; the graph is discarded
                raise
            self.graph = self.stream.end_capture()
            with contextlib.suppress(Exception):  # instantiate it now rather than on first launch
                self.graph.upload(self.stream)

    def replay(self, copies: Sequence[tuple[Any, Any]]) -> None:
        """Copy each ``(dst, src)`` pair of arrays and launch the graph, ordered after the work
        already queued on the current stream; the current stream then waits for the graph (no
        host synchronisation)."""
        import cupy

        current = cupy.cuda.get_current_stream()
        self.stream.wait_event(current.record())
        with self.stream:
            for dst, src in copies:
                dst[...] = src
            self.graph.launch(self.stream)
        current.wait_event(self.stream.record())

    def close(self) -> None:
        """Release the cuBLAS handle (the graph, pool and workspace go with the object)."""
        handle, self._handle = self._handle, None
        if handle is not None:
            with contextlib.suppress(Exception):  # also at interpreter shutdown
                from cupy_backends.cuda.libs import cublas

                cublas.destroy(handle)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


def _column_major(x: Any, cublas: Any) -> tuple[int, int, Any]:
    """(operation, leading dimension, array) that present the row-major 2-d ``x`` to cuBLAS as
    its column-major transpose: a C-contiguous ``x`` as is, an F-contiguous one (a transposed
    view) with the transpose flag; anything else is copied first (a kernel, graph-safe)."""
    r, c = x.shape
    if x.flags.c_contiguous:
        return cublas.CUBLAS_OP_N, max(c, 1), x
    if x.flags.f_contiguous:
        return cublas.CUBLAS_OP_T, max(r, 1), x
    import cupy

    return cublas.CUBLAS_OP_N, max(c, 1), cupy.ascontiguousarray(x)


def _loaded_cublas() -> Any:
    """ctypes access to the cuBLAS library already loaded in this process (by CuPy), with the
    signatures the recorder calls; ``None`` where it cannot be found (e.g. not Linux)."""
    import ctypes

    path = None
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                parts = line.split()
                if len(parts) >= 6 and os.path.basename(parts[-1]).startswith("libcublas.so"):
                    path = parts[-1]
                    break
    except OSError:
        return None
    if path is None:
        return None
    try:
        lib = ctypes.CDLL(path)  # already loaded: the same library object CuPy uses
        p, i, s = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t
        lib.cublasSetStream_v2.argtypes = [p, p]
        lib.cublasSetWorkspace_v2.argtypes = [p, p, s]
        for name in ("cublasSgemm_v2", "cublasDgemm_v2", "cublasCgemm_v2", "cublasZgemm_v2"):
            fn = getattr(lib, name)
            # handle, transa, transb, m, n, k, alpha*, A*, lda, B*, ldb, beta*, C*, ldc
            fn.argtypes = [p, i, i, i, i, i, p, p, i, p, i, p, p, i]
            fn.restype = i
        lib.cublasSetStream_v2.restype = i
        lib.cublasSetWorkspace_v2.restype = i
    except (OSError, AttributeError):
        return None
    return lib


def _cublas_check(status: int, what: str) -> None:
    if status != 0:
        raise RuntimeError(f"{what} failed with cuBLAS status {status}")
