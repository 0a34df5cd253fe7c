"""CUDA graphs (CuPy only): the part of ``agnograd.capture`` that touches CuPy.

The CuPy Backend's ``xp`` is, for the life of the process, the graph-safe namespace that
:func:`graph_safe_namespace` builds once when the backend is loaded: array-api-compat's CuPy
namespace with ``matmul``, ``clip``, ``sign`` and ``asarray`` (of Python numbers) replaced by
functions that ask one question first -- is a :class:`CudaGraphRecorder` recording in *this*
thread? (a ``threading.local``). In a thread that is not recording they call the namespace's
own function, so results are exactly array-api-compat's; in the recording thread they take the
path a CUDA graph can record (cuBLAS through the recorder's private handle, no boolean-mask
assignment, no host copy).

So recording mutates nothing shared: :meth:`CudaGraphRecorder.session` sets this thread's
recorder, makes the private stream current and allocates from the private pool -- all three
per thread in CuPy -- and no Backend attribute ever changes. Ops read ``backend.xp`` from the
Backend of their input Tensors (the model's parameters among them, created long before the
capture), and that namespace is the same object before, during and after a capture, in every
thread. The price is one thread-local read per call of those four functions on CuPy, which is
nothing next to the kernel launch each of them makes.

The other backends never reach this module; the cuBLAS bindings are imported when a recorder
first needs them, not when the CuPy backend loads.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import cupy
import numpy as np

from . import PY_SCALARS, Backend, BackendError, given
from ._fallbacks import clone_namespace

__all__ = ["CudaGraphRecorder", "graph_safe_matmul", "graph_safe_namespace", "recording"]

_graph_local = threading.local()  # .recorder: the CudaGraphRecorder recording in this thread


def _active() -> Any:
    """The recorder recording in this thread, or ``None``."""
    return getattr(_graph_local, "recorder", None)


@contextlib.contextmanager
def recording(recorder: Any) -> Iterator[None]:
    """Within the block, the graph-safe functions of this thread take ``recorder``'s path
    (other threads are unaffected; the previous recorder of this thread comes back after)."""
    previous = _active()
    _graph_local.recorder = recorder
    try:
        yield
    finally:
        _graph_local.recorder = previous


def graph_safe_matmul(a: Any, b: Any) -> Any:
    """``a @ b`` for CuPy arrays that may be called while a CUDA graph is being captured.

    CuPy (measured with 14.2 and CUDA 13) refuses its own cuBLAS wrappers during stream capture
    ("calling cuBLAS API during stream capture is currently unsupported"). While a
    :class:`CudaGraphRecorder` is recording in this thread, this calls cuBLAS's ``gemm``
    directly with the recorder's private handle, bound to the capture stream with its own
    workspace. Row-major operands are handed to the column-major library as their transposes
    (``Cᵀ = Bᵀ Aᵀ``); 1-d operands and broadcast batch axes follow the standard's ``matmul``
    (one ``gemm`` per batch element). float32/float64/complex64/complex128 only. Without a
    recorder in this thread it is ``cupy.matmul``.

    This is the one function to drop once CuPy records cuBLAS calls itself.
    """
    rec = _active()
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
    if x.dtype.kind == "c":
        mag = cupy.abs(x)
        return cupy.where(mag == 0, cupy.zeros((), x.dtype), x / cupy.where(mag == 0, 1, mag))
    if x.dtype.kind == "f":  # CuPy's sign maps NaN to 0; the standard keeps NaN
        return cupy.where(cupy.isnan(x), x, cupy.sign(x))
    return cupy.sign(x)


def _graph_safe_scalar(obj: Any, dtype: Any) -> Any:
    # A Python number becomes a fill kernel (its value a kernel argument), not a host copy.
    if dtype is None:
        dtype = {bool: cupy.bool_, int: cupy.int64, float: cupy.float64,
                 complex: cupy.complex128}[type(obj)]
    return cupy.full((), obj, dtype=dtype)


def _when_recording(safe: Callable[..., Any], real: Callable[..., Any]) -> Callable[..., Any]:
    """``safe`` in a thread that is recording, ``real`` (the namespace's own) in any other."""
    def fn(*args: Any, **kwargs: Any) -> Any:
        return (real if _active() is None else safe)(*args, **kwargs)

    fn.__name__ = fn.__qualname__ = getattr(real, "__name__", safe.__name__)
    fn.__doc__ = getattr(real, "__doc__", None)
    return fn


def _asarray_when_recording(real: Callable[..., Any]) -> Callable[..., Any]:
    """``real`` (the namespace's ``asarray``), except a Python number in a recording thread."""
    def asarray(obj: Any, /, *, dtype: Any = None, device: Any = None, copy: bool | None = None
                ) -> Any:
        if type(obj) in PY_SCALARS and _active() is not None:
            return _graph_safe_scalar(obj, dtype)
        return real(obj, **given(dtype=dtype, device=device, copy=copy))

    asarray.__doc__ = getattr(real, "__doc__", None)
    return asarray


def graph_safe_namespace(base: Any) -> Any:
    """A copy of the namespace ``base`` (array-api-compat's CuPy namespace) whose ``matmul``,
    ``clip``, ``sign`` and ``asarray`` (of Python numbers) can be recorded into a CUDA graph in
    a thread where a recorder is recording, and are ``base``'s own functions in every other
    thread. Everything else is ``base``'s. The CuPy backend
    builds it once, as its ``xp``; it keeps ``base``'s ``__name__``, so code that recognises
    array-api-compat's CuPy namespace by name still does."""
    return clone_namespace(base, getattr(base, "__name__", "cupy"), {
        "matmul": _when_recording(graph_safe_matmul, base.matmul),
        "clip": _when_recording(_graph_safe_clip, base.clip),
        "sign": _when_recording(_graph_safe_sign, base.sign),
        "asarray": _asarray_when_recording(base.asarray),
    })


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
        if backend.array_type is not cupy.ndarray:
            raise BackendError(f"CUDA graphs need the 'cupy' backend, not {backend.name!r}")
        self.backend = backend
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self.pool = cupy.cuda.MemoryPool()
        self.graph: Any = None
        self._handle: int | None = None
        self._workspace: Any = None
        self._lib: Any = None
        self._gemm: dict[str, Any] = {}
        self._ops: tuple[int, int] = (0, 1)  # cuBLAS's (no transpose, transpose)

    # -- cuBLAS --------------------------------------------------------------------------------
    def _cublas(self) -> int:
        """The private handle, bound to the stream with its own workspace (created once).

        cuBLAS itself is called through ctypes on the library CuPy loaded (found in
        ``/proc/self/maps``): CuPy's wrappers re-bind the handle to the current stream on every
        call, and ``cublasSetStream`` resets the workspace to cuBLAS's default pool. Where the
        library cannot be found, CuPy's wrappers are used and cuBLAS keeps that default pool.
        """
        if self._handle is None:
            cublas = _bindings()
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
            self._ops = (cublas.CUBLAS_OP_N, cublas.CUBLAS_OP_T)
            self._handle = handle
        return self._handle

    def gemm(self, a: Any, b: Any, out: Any) -> None:
        """``out = a @ b`` for 2-d arrays of one dtype (``out`` C-contiguous), on the stream.

        Row-major ``C = A B`` is the column-major ``Cᵀ = Bᵀ Aᵀ``: cuBLAS gets ``B`` first."""
        handle = self._cublas()
        m, k = a.shape
        n = b.shape[1]
        op_a, ld_a, a = _column_major(a, self._ops)
        op_b, ld_b, b = _column_major(b, self._ops)
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
        """Run code as it will be recorded: in this thread, the graph-safe functions take this
        recorder's path, the private stream is current and arrays come from the private pool
        (warm-up runs use this, so kernels are compiled, the pool has grown and the cuBLAS
        handle is initialised before capture). Nothing outside this thread changes: no Backend
        is touched, so sessions in several threads need no lock."""
        self.stream.wait_event(cupy.cuda.get_current_stream().record())
        try:
            with recording(self), cupy.cuda.using_allocator(self.pool.malloc), self.stream:
                self._cublas()
                yield
        finally:
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
                _bindings().destroy(handle)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


def _column_major(x: Any, ops: tuple[int, int]) -> tuple[int, int, Any]:
    """(operation, leading dimension, array) that present the row-major 2-d ``x`` to cuBLAS as
    its column-major transpose: a C-contiguous ``x`` as is, an F-contiguous one (a transposed
    view) with the transpose flag; anything else is copied first (a kernel, graph-safe).
    ``ops`` is cuBLAS's (no transpose, transpose)."""
    op_n, op_t = ops
    r, c = x.shape
    if x.flags.c_contiguous:
        return op_n, max(c, 1), x
    if x.flags.f_contiguous:
        return op_t, max(r, 1), x
    return op_n, max(c, 1), cupy.ascontiguousarray(x)


def _bindings() -> Any:
    """CuPy's cuBLAS bindings, imported when a recorder first needs them (not when the CuPy
    backend loads and builds its namespace from this module)."""
    from cupy_backends.cuda.libs import cublas

    return cublas


def _loaded_cublas() -> Any:
    """ctypes access to the cuBLAS library already loaded in this process (by CuPy), with the
    signatures the recorder calls; ``None`` where it cannot be found (e.g. not Linux)."""
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
