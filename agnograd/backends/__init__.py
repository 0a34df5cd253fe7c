"""The one backend door: the only package of agnograd that imports NumPy, CuPy, Dask, PyTorch,
JAX, array-api-compat or array-api-strict.

A :class:`Backend` bundles an Array API namespace (``xp``) with the few facts the engine needs
about it: its array type, how to turn stray scalars back into 0-d arrays, and the faster
backend-specific paths for primitives the standard lacks (scatter-add). Everything else in
agnograd receives a Backend from here and speaks only to ``backend.xp``.

This module holds what every backend shares: :class:`Backend`, the registry of backends by name
and the defaults, and the dispatch that finds the backend of a raw array or a device object.
Each backend is one module of this package (``numpy``, ``cupy``, ``dask``, ``torch``, ``jax``,
``array_api_strict``), imported by name on first use; it builds its Backend in ``load()`` and
sets its flags there, and may define

- ``owns(a)``: whether a raw array (or scalar) is one of its arrays;
- ``to_host(a)``: its own path to a NumPy array (default: DLPack, else ``__array__``);
- ``describe_device(device)``: a short name for one of its devices (default: ``str``).

A new backend is a new module and one line in ``_KNOWN``. Host I/O and random numbers are in
:mod:`agnograd.backends.host`, the standard fallbacks in :mod:`agnograd.backends._fallbacks`,
the CUDA graphs of ``ag.capture`` in :mod:`agnograd.backends.cuda_graph`.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType
from typing import Any, NamedTuple

import array_api_compat
import numpy as np

from ._fallbacks import (
    fold_standard,
    gelu_standard,
    host_copy,
    layer_norm_grad_standard,
    layer_norm_standard,
    scatter_add_standard,
    windows_standard,
)

__all__ = [
    "PY_SCALARS",
    "Backend",
    "BackendError",
    "available_backends",
    "backend_of_array",
    "backend_of_device",
    "default_backend",
    "describe_device",
    "get_backend",
    "get_default_backend",
    "given",
    "host_array",
    "known_backends",
    "numpy_export",
    "register",
    "scatter_add_standard",
    "set_default_backend",
    "transfer",
]


# The Python scalar types the Array API lets an op take in place of an array (``x * 2.0``),
# defined once here, in the lowest layer, for the backends and for ``agnograd._dtypes`` (which
# re-exports it to the ops). Checked with ``type(v) in PY_SCALARS`` (exact types, fastest) or
# ``isinstance`` (subclasses, e.g. NumPy's float64 scalar, too).
PY_SCALARS: tuple[type[Any], ...] = (bool, int, float, complex)


_UNSET: Any = object()


class BackendError(RuntimeError):
    """A backend was asked for that cannot be used here (not installed, no device, unknown)."""


class _Entry(NamedTuple):
    module: str  # the module of this package that builds the Backend
    library: str  # what must import for the backend to be usable
    install: str  # what provides it, for the error message
    packages: tuple[str, ...]  # top-level packages whose arrays and devices belong to it


_KNOWN = {
    "numpy": _Entry(f"{__name__}.numpy", "numpy", "numpy (a core dependency)", ("numpy",)),
    "cupy": _Entry(f"{__name__}.cupy", "cupy",
                   "the 'cuda12' or 'cuda13' extra: pip install 'agnograd[cuda13]'",
                   ("cupy", "cupyx", "cupy_backends")),
    "array_api_strict": _Entry(f"{__name__}.array_api_strict", "array_api_strict",
                               "the 'test' extra: pip install 'agnograd[test]'",
                               ("array_api_strict",)),
    "torch": _Entry(f"{__name__}.torch", "torch", "PyTorch: pip install torch", ("torch",)),
    "dask": _Entry(f"{__name__}.dask", "dask.array", "Dask: pip install 'dask[array]'", ("dask",)),
    "jax": _Entry(f"{__name__}.jax", "jax.numpy", "JAX: pip install jax", ("jax", "jaxlib")),
}
_BY_PACKAGE = {p: name for name, entry in _KNOWN.items() for p in entry.packages}


def given(**kwargs: Any) -> dict[str, Any]:
    """The keyword arguments that were given (not ``None``): optional arguments are passed on
    only when set, since not every namespace accepts every keyword."""
    return {k: v for k, v in kwargs.items() if v is not None}


class Backend:
    """An Array API namespace and what agnograd needs to know about it.

    Each backend's module (``agnograd/backends/<name>.py``) builds its Backend and sets the
    flags; the defaults fit a library that implements the standard plainly.

    Attributes:
        name: the backend's name (``"numpy"``, ``"cupy"``, ``"array_api_strict"``, ...).
        xp: the Array API namespace (array-api-compat's wrapper where one exists).
        array_type: the type of the backend's arrays (used for cheap ``type(x) is`` checks).
        multi_device: arrays may live on different devices (ops check operands agree).
        lazy: arrays are task graphs (Dask), computed only on request: rules must keep the
            inputs' chunking, and nothing may read values back.
        scalar_type: the type of the stray scalars the namespace returns for 0-d results
            (NumPy's ``numpy.generic``), turned back into 0-d arrays by ``scalar_to_array``;
            ``None`` where results are always arrays.
        on_host: ``on_host(device)`` says whether arrays on ``device`` live in host memory, so
            reading a value back costs no device synchronisation (``None``: every device does,
            unless the backend is lazy).
        graph_recorder: ``graph_recorder(backend)`` makes the recorder with which
            ``ag.capture`` records a step as a device graph (CuPy: a CUDA graph); ``None``
            where a captured step is a staged replay (or, on a lazy backend, eager).
        replay_fn: ``replay_fn(fn, args, kwargs)`` may name a faster function that gives the
            *bit-identical* result of the namespace call ``fn(*args, **kwargs)`` (same arguments,
            arrays as traced), used by the staged replay's generated code (:mod:`agnograd.capture.program`)
            instead of ``fn``; ``None`` (or a hook returning ``None``) keeps ``fn``. NumPy's
            reductions (``sum``, ``max``, ...) are its ufuncs' ``reduce`` behind a Python
            wrapper that costs more than the reduction of a small array.
        private: ``private(a)`` says whether the raw array ``a`` is surely its own writable
            memory (not a view, not read-only), for :meth:`is_private`; ``None`` where the
            backend gives no such test (gradients are then copied before becoming ``.grad``).
        complex_kinds: raw dtype -> whether it is complex, filled on first sight by
            ``agnograd._ops._common.is_complex``: ops pick their complex VJP rules with one
            dict lookup (per backend, so dtypes of two libraries are never compared).
    """

    __slots__ = ("name", "xp", "array_type", "multi_device", "lazy", "scalar_type",
                 "scalar_to_array", "graph_recorder", "_scatter_add_fast", "_from_host", "_on_host",
                 "_special", "_special_loader", "replay_fn", "complex_kinds", "_private",
                 "_labels_fast", "_windows_fast", "_fold_fast", "_rows_fast", "_gelu_fast",
                 "_ln_fast", "_ln_grad_fast", "__weakref__")

    def __init__(self, name: str, xp: Any, array_type: type, *, multi_device: bool = False,
                 lazy: bool = False, scalar_type: type[Any] | None = None,
                 scalar_to_array: Callable[[Any], Any] | None = None,
                 scatter_add: Callable[..., Any] | None = None,
                 from_host: Callable[[Any], Any] | None = None,
                 graph_recorder: Callable[[Backend], Any] | None = None,
                 on_host: Callable[[Any], bool] | None = None,
                 special: Callable[[], Any] | None = None,
                 replay_fn: Callable[[Any, tuple[Any, ...], dict[str, Any]], Any] | None = None,
                 private: Callable[[Any], bool] | None = None,
                 subtract_at_labels: Callable[..., Any] | None = None,
                 windows: Callable[..., Any] | None = None,
                 fold: Callable[..., Any] | None = None,
                 scatter_add_rows: Callable[..., Any] | None = None,
                 gelu: Callable[..., Any] | None = None,
                 layer_norm: Callable[..., Any] | None = None,
                 layer_norm_grad: Callable[..., Any] | None = None
                 ) -> None:
        self.name = name
        self.xp = xp
        self.array_type = array_type
        self.multi_device = multi_device
        self.lazy = lazy
        self.scalar_type = scalar_type
        self.scalar_to_array = scalar_to_array
        self.graph_recorder = graph_recorder
        # scatter_add(xp, n, index, values): a faster kernel than the standard fallback.
        self._scatter_add_fast = scatter_add
        # from_host(numpy_array): where xp.asarray refuses host arrays (CuPy's does).
        self._from_host = from_host
        self._on_host = on_host
        # special(): the library's own special functions (see the ``special`` property), built
        # on first use so that an optional library (SciPy for NumPy) is imported only then.
        self._special_loader = special
        self._special: Any = _UNSET
        self.replay_fn = replay_fn
        self.complex_kinds: dict[Any, bool] = {}
        # private(a): a is surely its own writable memory (see is_private); None: never sure.
        self._private = private
        # subtract_at_labels(a, index, values), windows(x, kernel, stride, dilation, out) and
        # fold(g, shape, kernel, stride, dilation): faster kernels than the standard-op paths of
        # the methods of those names (None: none).
        self._labels_fast = subtract_at_labels
        self._windows_fast = windows
        self._fold_fast = fold
        self._rows_fast = scatter_add_rows
        # gelu(x, approximate, grad), layer_norm(x, eps, w, b) and layer_norm_grad(g, x, mu, r, w, sums):
        # the fused GELU and layer norm, computing exactly what the standard paths of the
        # methods of those names compute (None: none)
        self._gelu_fast = gelu
        self._ln_fast = layer_norm
        self._ln_grad_fast = layer_norm_grad

    def __repr__(self) -> str:
        return f"Backend({self.name!r})"

    @property
    def special(self) -> Any:
        """The library's own special functions, or ``None`` (then :mod:`agnograd.special`
        computes its standard-op approximations). An object whose methods take and return raw
        arrays of this backend, in the input's dtype: ``erf``, ``erfc``, ``erfinv``, ``lgamma``,
        ``digamma``, ``polygamma(n, x)``, ``log_ndtr`` (SciPy's ``scipy.special`` for NumPy when
        SciPy is installed, ``cupyx.scipy.special`` for CuPy, ``torch.special`` for PyTorch)."""
        if self._special is _UNSET:
            self._special = None if self._special_loader is None else self._special_loader()
        return self._special

    def __reduce__(self) -> tuple[Any, ...]:
        return (get_backend, (self.name,))

    def fix(self, a: Any) -> Any:
        """Return ``a`` as a backend array: NumPy returns scalars (``numpy.float64``) for 0-d results."""
        if type(a) is self.array_type:
            return a
        if self.scalar_type is not None and isinstance(a, self.scalar_type):
            return self.scalar_to_array(a)  # type: ignore[misc]
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

    def is_private(self, a: Any) -> bool:
        """Whether the raw array ``a`` surely has memory of its own that may be written in
        place: not a view of another array (a broadcast, a reshape, a slice), not read-only.
        A cheap test (a flag or two), answered ``False`` when unsure (a backend that gives no
        test): the engine then copies a gradient before it becomes a ``.grad``."""
        p = self._private
        if p is not None:
            return p(a)
        base = self.base
        if base is not self:
            # a tracing backend (ag.capture's staged replay): its proxies hold the real array as
            # ``_v``, and the replay repeats the calls that made it
            real = getattr(a, "_v", None)
            return real is not None and base.is_private(real)
        return False

    def copy(self, a: Any) -> Any:
        """A copy of the raw array ``a`` in new, writable memory."""
        return self.fix(self.xp.asarray(a, copy=True))

    def from_host(self, host: Any) -> Any:
        """A backend array holding a copy of the NumPy array ``host``."""
        if self._from_host is not None:
            return self._from_host(host)
        return self.asarray(host)

    @property
    def base(self) -> Backend:
        """The backend whose arrays this one's are: itself, or for the staged replay's tracing
        backend (:mod:`agnograd.backends.tracing`) the backend it traces."""
        return self

    @property
    def root(self) -> Backend:
        """The backend at the bottom of :attr:`base` (NumPy under a tracing backend, and under
        ``ag.vmap``'s batching backends of either): the one whose arrays are real, for keys of
        caches of constants made with its namespace."""
        b = self
        while b.base is not b:
            b = b.base
        return b

    def reads_cheaply(self, a: Any) -> bool:
        """Whether reading values of the array ``a`` back to Python is cheap: it lives in host
        memory (no device synchronisation) and is not lazy (no compute)."""
        if self.lazy:
            return False
        return True if self._on_host is None else bool(self._on_host(self.device_of(a)))

    def is_array(self, obj: Any) -> bool:
        return isinstance(obj, self.array_type)

    def device_of(self, a: Any) -> Any:
        return array_api_compat.device(a)

    def to_device(self, a: Any, device: Any) -> Any:
        return self.fix(array_api_compat.to_device(a, device))

    def put(self, xp: Any, shape: tuple[int, ...], key: Any, value: Any, dtype: Any,
            device: Any) -> Any:
        """Zeros of ``shape`` with ``z[key] = value``: the scatter of a selection's cotangent
        back to its source (``x[key]``'s VJP). A method so that ``ag.vmap``'s backend can give
        the zeros the batch of ``value`` or ``key`` (an array it made could not get it later)."""
        z = xp.zeros(shape, dtype=dtype, device=device)
        z[key] = value
        return z

    def scatter_add(self, n: int, index: Any, values: Any) -> Any:
        """``out[index[k]] += values[k]`` for a zero 1-d ``out`` of length ``n`` (repeats summed).

        The Array API has no scatter-add, so the standard path sorts the indices and takes
        differences of a cumulative sum at the segment bounds found by ``searchsorted``; NumPy,
        CuPy and Dask use their own faster kernels (``tests/test_backend.py`` checks that both
        agree).
        """
        if self._scatter_add_fast is not None:
            return self._scatter_add_fast(self.xp, n, index, values)
        return scatter_add_standard(self.xp, n, index, values)

    def scatter_add_rows(self, xp: Any, n: int, index: Any, values: Any) -> Any:
        """``out[index[k], :] += values[k, :]`` for a zero ``out`` ``(n, d)`` (repeats summed):
        the gradient of a row gather (an embedding). ``index`` is 1-d, ``values`` ``(m, d)``.

        The standard path is :meth:`scatter_add` of the ``m·d`` flat positions; NumPy sums the
        rows of each index after one sort (``add.reduceat``), with no ``n·d`` intermediate
        (``tests/test_nn_speed.py`` checks both agree)."""
        fast = self._rows_fast
        if fast is not None and type(values) is self.array_type:
            return fast(n, index, values)
        d = values.shape[1]
        cols = xp.arange(d, dtype=index.dtype, device=array_api_compat.device(values))
        pos = xp.reshape(index[:, None] * d + cols, (-1,))
        flat = self._scatter_add_fast if self._scatter_add_fast is not None and xp is self.xp \
            else None
        v = xp.reshape(values, (-1,))
        out = flat(xp, n * d, pos, v) if flat is not None else scatter_add_standard(xp, n * d, pos, v)
        return xp.reshape(out, (n, d))

    def subtract_at_labels(self, xp: Any, a: Any, index: Any, values: Any, classes: Any) -> Any:
        """``a`` with ``values[i]`` subtracted at ``a[i, index[i, 0]]``: ``a`` ``(m, C)`` a fresh
        floating array (it may be updated in place), ``index`` ``(m, 1)`` integers in
        ``0..C-1``, ``values`` ``(m, 1)`` or a scalar, ``classes`` ``arange(C)`` in ``index``'s
        dtype. The gradient of a gathered label (cross-entropy's ``softmax - onehot``) without
        a one-hot target.

        The standard path is ``a - where(index == classes, values, 0)`` (a boolean comparison,
        no floating one-hot); NumPy and PyTorch subtract in place at the ``m`` positions
        (``tests/test_backend.py`` checks both agree). ``xp`` is the caller's namespace: the
        standard path runs on whatever arrays it is given (traced ones in a capture)."""
        fast = self._labels_fast
        if fast is not None and type(a) is self.array_type and type(index) is self.array_type:
            return fast(a, index, values)
        return a - xp.where(index == classes, values, 0.0)

    def gelu(self, xp: Any, x: Any, approximate: str, erf: Any, grad: bool
             ) -> tuple[Any, Any]:
        """``(gelu(x), gelu'(x))`` of a real floating ``x`` (the derivative ``None`` unless
        ``grad``), ``approximate`` ``"none"`` (``Φ(x) = erf(x/√2)·0.5 + 0.5``, ``erf`` the
        backend's raw erf) or ``"tanh"``. The standard path is a composition of standard
        functions (it also runs on agnograd Tensors, ``xp`` the agnograd namespace). NumPy
        computes the tanh form's operations in place, a block at a time, and in float32 the
        exact form as :func:`~agnograd.backends._fallbacks.gelu_float32_standard` (``Φ`` by
        Abramowitz & Stegun 26.2.17, sharing its ``exp`` with the derivative; in float64 SciPy's
        erf dominates the cost, and the composition stays)."""
        fast = self._gelu_fast
        if fast is not None and (approximate == "tanh" or x.dtype == xp.float32) and (
                type(x) is self.array_type):
            return fast(x, approximate, grad)  # type: ignore[no-any-return]
        return gelu_standard(xp, x, approximate, erf, grad)

    def layer_norm(self, xp: Any, x: Any, eps: float, w: Any, b: Any) -> tuple[Any, Any, Any]:
        """Layer norm of the rows of ``x`` ``(M, K)``: ``(y, mean, r)``, ``mean`` and ``r =
        1/sqrt(var + eps)`` ``(M, 1)``, ``y = x̂·w + b`` with ``x̂ = (x - mean)·r`` (``w``, ``b``
        ``(K,)`` or ``None``; ``x̂`` is not kept). The standard path is a composition of
        standard functions (Tensors too); NumPy computes the same in place, a block of rows at a
        time (its row sums BLAS products: equal within rounding)."""
        fast = self._ln_fast
        if fast is not None and type(x) is self.array_type:
            return fast(x, eps, w, b)  # type: ignore[no-any-return]
        return layer_norm_standard(xp, x, eps, w, b)

    def layer_norm_grad(self, xp: Any, g: Any, x: Any, mu: Any, r: Any, w: Any,
                        sums: tuple[bool, bool] = (False, False)) -> tuple[Any, Any, Any]:
        """The cotangent of :meth:`layer_norm`'s ``x``, ``r (ĝ - mean(ĝ) - x̂ mean(ĝ x̂))`` with
        ``ĝ = ḡ·w`` and ``x̂ = (x - mean)·r``, row by row; and, where ``sums`` asks, the column
        sums of ``ḡ x̂`` and of ``ḡ`` (the cotangents of ``w`` and ``b``; else ``None``). The
        standard path, or NumPy's in place: one read of ``ḡ`` and ``x``, a block of rows at a
        time."""
        fast = self._ln_grad_fast
        if fast is not None and type(g) is self.array_type and type(x) is self.array_type:
            return fast(g, x, mu, r, w, sums)  # type: ignore[no-any-return]
        return layer_norm_grad_standard(xp, g, x, mu, r, w, sums)

    def windows(self, xp: Any, x: Any, kernel: tuple[int, ...], stride: tuple[int, ...],
                dilation: tuple[int, ...], out: tuple[int, ...]) -> Any:
        """The sliding windows of ``x`` ``(N, C, *spatial)`` as ``(N, C, *kernel, *out)``: element
        ``[n, c, *o, *j] = x[n, c, *(j·stride + o·dilation)]``; ``out`` is the number of windows
        along each spatial axis.

        The standard path stacks ``prod(kernel)`` strided slices (a copy, ``prod(kernel)`` times
        the input); NumPy gives a strided view (``as_strided``: no copy). Both are read only.
        """
        fast = self._windows_fast
        if fast is not None and type(x) is self.array_type:
            return fast(x, kernel, stride, dilation, out)
        return windows_standard(xp, x, kernel, stride, dilation, out)

    def fold(self, xp: Any, g: Any, shape: tuple[int, ...], kernel: tuple[int, ...],
             stride: tuple[int, ...], dilation: tuple[int, ...]) -> Any:
        """The adjoint of :meth:`windows`: ``g`` ``(N, C, *kernel, *out)`` summed back into an
        array of ``shape`` ``(N, C, *spatial)`` (each window's elements added where they were
        read). ``g`` may also be the list of the ``prod(kernel)`` pieces ``(N, C, *out)``, one
        per kernel offset in C order (no need to stack them). The standard path pads the pieces
        with zeros and sums them, or, at a stride above 1 (not on a lazy backend), adds them into
        their strided slices of one array of zeros (``__setitem__``); NumPy adds them in
        place."""
        fast = self._fold_fast
        first = g[0] if isinstance(g, list) else g
        if fast is not None and type(first) is self.array_type:
            return fast(g, shape, kernel, stride, dilation)
        # at stride 1 padding each piece (its zeros are constants) is fewer calls than
        # assigning into a slice
        inplace = not self.lazy and any(s > 1 for s in stride)
        return fold_standard(xp, g, shape, kernel, stride, dilation, inplace=inplace)


# ---------------------------------------------------------------------------------------------
# Loading backends by name

_backends: dict[str, Backend] = {}
_by_type: dict[type, Backend] = {}
_lock = threading.Lock()


def _module(name: str) -> ModuleType:
    """The module of backend ``name`` (imported on first use)."""
    return importlib.import_module(_KNOWN[name].module)


def compat_namespace(name: str, module: str) -> Any:
    """array-api-compat's wrapper ``module`` for backend ``name`` (for the backend modules)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendError(
            f"backend {name!r} is installed but this array-api-compat has no wrapper for it "
            f"({exc}); upgrade array-api-compat"
        ) from exc


def sample_array_type(name: str, xp: Any) -> type:
    """The type of ``xp``'s arrays, found by making one (for the backend modules)."""
    try:
        sample = xp.asarray([0.0])
    except Exception as exc:  # e.g. JAX with a CUDA plugin but no usable device
        raise BackendError(f"backend {name!r} is installed but cannot create arrays: {exc}") from exc
    return type(sample)


_loaders: dict[str, Callable[[], Backend]] = {}
_listed: dict[str, None] = {}  # registered backends available_backends() names, in order


def register(name: str, backend: Backend | Callable[[], Backend], *, replace: bool = False,
             listed: bool = True) -> None:
    """Make a backend available by ``name``: a :class:`Backend` (namespace, array type, flags)
    or a zero-argument loader that builds one on first use (``get_backend(name)``).

    Its arrays are then recognised by :func:`backend_of_array` (by their exact type), unless
    another backend already owns that type (a backend over ``numpy.ndarray`` never takes NumPy's
    arrays away from the 'numpy' backend; use ``get_backend(name)`` or ``ag.tensor(...,
    backend=name)`` explicitly). :func:`available_backends` lists it when ``listed``. The tracer
    of the staged replay registers its tracing backends this way, unlisted
    (:mod:`agnograd.backends.tracing`).

    Raises:
        ValueError: ``name`` is a built-in backend or already registered (unless ``replace``).
    """
    if name in _KNOWN:
        raise ValueError(f"register: {name!r} is a built-in backend")
    with _lock:
        if not replace and (name in _backends or name in _loaders):
            raise ValueError(f"register: a backend {name!r} is already registered "
                             "(pass replace=True to replace it)")
        old = _backends.pop(name, None)
        if old is not None and _by_type.get(old.array_type) is old:
            del _by_type[old.array_type]
        _loaders.pop(name, None)
        _listed.pop(name, None)
        if listed:
            _listed[name] = None
        if isinstance(backend, Backend):
            _backends[name] = backend
            _by_type.setdefault(backend.array_type, backend)
            if backend.scalar_type is not None:
                _by_type.setdefault(backend.scalar_type, backend)
        elif callable(backend):
            _loaders[name] = backend
        else:
            raise TypeError(f"register: expected a Backend or a loader, not {type(backend).__name__}")


def _load(name: str) -> Backend:
    loader = _loaders.get(name)
    if loader is not None:
        b = loader()
        if not isinstance(b, Backend):
            raise BackendError(f"the loader of backend {name!r} returned {type(b).__name__}, "
                               "not a Backend")
        return b
    entry = _KNOWN.get(name)
    if entry is None:
        known = ", ".join(sorted({*_KNOWN, *_loaders}))
        raise BackendError(f"unknown backend {name!r}; known backends: {known}")
    try:
        importlib.import_module(entry.library)
    except ImportError as exc:
        raise BackendError(
            f"backend {name!r} is not installed ({exc}); install {entry.install}"
        ) from exc
    backend: Backend = _module(name).load()
    return backend


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
    if type(a) in _NOT_ARRAYS:
        return None
    b = _recognise(a)
    if b is None:
        if not array_api_compat.is_array_api_obj(a):
            return None
        # any other library that implements the standard itself
        xp = array_api_compat.array_namespace(a)
        b = Backend(getattr(xp, "__name__", type(a).__module__), xp, type(a))
    _by_type[type(a)] = b
    return b


# Types that are never arrays: answered without asking every imported backend.
_NOT_ARRAYS = frozenset({*PY_SCALARS, str, bytes, list, tuple, dict, type(None)})


def _recognise(a: Any) -> Backend | None:
    """The known backend whose module owns ``a``; only backends whose library is imported are
    asked (an array of a library that was never imported cannot exist)."""
    for name, entry in _KNOWN.items():
        if not any(p in sys.modules for p in entry.packages):
            continue
        try:
            owns = getattr(_module(name), "owns", None)
        except ImportError:
            continue
        if owns is not None and owns(a):
            return get_backend(name)
    return None


def _owner(obj: Any) -> ModuleType | None:
    """The module of the backend whose library defines ``type(obj)`` (an array, a device), if
    any: found by the type's top-level package, without importing anything else."""
    name = _BY_PACKAGE.get(type(obj).__module__.partition(".")[0])
    if name is None:
        return None
    try:
        return _module(name)
    except ImportError:
        return None


def backend_of_device(device: Any) -> Backend | None:
    """The backend whose device object ``device`` is (a CuPy, PyTorch, JAX or array-api-strict
    device, or one a backend module defines and names with a ``backend_name`` class attribute,
    as Dask's); ``None`` for plain names such as ``"cpu"``."""
    name = _BY_PACKAGE.get(type(device).__module__.partition(".")[0])
    if name is None and type(device) is not str:
        name = getattr(type(device), "backend_name", None)
    return None if name is None else get_backend(name)


def known_backends() -> list[str]:
    """Names of every built-in backend agnograd knows how to resolve (available here or not)."""
    return list(_KNOWN)


def available_backends() -> list[str]:
    """Names of the backends usable on this machine (CuPy only when a CUDA device is present)."""
    names = []
    for name in [*_KNOWN, *_listed]:
        try:
            get_backend(name)
        except Exception:  # not installed, no device, or broken: not available here
            continue
        names.append(name)
    return names


# ---------------------------------------------------------------------------------------------
# The default backend: process-wide, and a per-thread override set by `default_backend`.

_default_name = os.environ.get("AGNOGRAD_BACKEND", "numpy") or "numpy"
_local = threading.local()


def default_backend_name() -> str:
    """The name :func:`get_default_backend` resolves (no registry look-up: a compiled step's
    guards read it on every call)."""
    name = getattr(_local, "name", None)
    return name if name is not None else _default_name


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


# ---------------------------------------------------------------------------------------------
# Host and transfers


def host_array(a: Any) -> Any:
    """A NumPy copy (or view) of any backend array: for tests, printing and file output."""
    owner = _owner(a)
    to_host = getattr(owner, "to_host", None)
    if to_host is not None:
        return to_host(a)
    return host_copy(a)


def numpy_export(a: Any, backend: Backend, dtype: Any = None, copy: bool | None = None) -> Any:
    """The ``__array__`` protocol for the raw array ``a`` of ``backend``: a NumPy array of its
    values, in ``dtype`` if given. ``copy=True`` always copies; ``copy=False`` refuses when a
    copy is needed (another dtype, or data that is not already a NumPy array); ``None`` copies
    only when needed."""
    if copy is False and not isinstance(a, np.ndarray):
        raise ValueError(
            f"__array__(copy=False): the data of this '{backend.name}' Tensor is not a NumPy "
            "array, so a NumPy array of it is a copy; pass copy=None (np.asarray)"
        )
    host = host_array(a)
    if dtype is not None and host.dtype != np.dtype(dtype):
        if copy is False:
            raise ValueError(f"__array__(copy=False): converting {host.dtype} to "
                             f"{np.dtype(dtype)} needs a copy; pass copy=None")
        return host.astype(dtype)
    if copy:  # (host_array may share memory: NumPy's own array, a CPU tensor through DLPack)
        return host.copy()
    return host


def transfer(a: Any, target: Backend) -> Any:
    """Move a raw array to ``target``: DLPack where it can cross, else through a host copy."""
    try:
        return target.fix(target.xp.from_dlpack(a))
    except Exception:
        host = host_array(a)
    return target.from_host(host)


def describe_device(device: Any) -> str:
    """A short name for a backend device: ``cpu``, ``cuda:0 (NVIDIA H100 ...)``, ..."""
    describe = getattr(_owner(device), "describe_device", None)
    return describe(device) if describe is not None else str(device)
