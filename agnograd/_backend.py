"""The one backend door: the only module that imports NumPy, CuPy or array-api-compat.

A :class:`Backend` bundles an Array API namespace (``xp``) with the few facts the engine needs
about it: its array type, how to turn stray scalars back into 0-d arrays, and the faster
backend-specific paths for primitives the standard lacks (scatter-add). Everything else in
agnograd receives a Backend from here and speaks only to ``backend.xp``.
"""

from __future__ import annotations

import contextlib
import importlib
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


class Backend:
    """An Array API namespace and what agnograd needs to know about it.

    Attributes:
        name: the backend's name (``"numpy"``, ``"cupy"``, ``"array_api_strict"``, ...).
        xp: the Array API namespace (array-api-compat's wrapper where one exists).
        array_type: the type of the backend's arrays (used for cheap ``type(x) is`` checks).
    """

    __slots__ = ("name", "xp", "array_type", "multi_device", "_scatter_add_fast", "__weakref__")

    def __init__(self, name: str, xp: Any, array_type: type) -> None:
        self.name = name
        self.xp = xp
        self.array_type = array_type
        # Backends whose arrays may sit on different devices: ops check their operands agree.
        self.multi_device = name in ("cupy", "torch", "jax")
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

    def asarray(self, obj: Any, dtype: Any = None, device: Any = None, copy: bool | None = None) -> Any:
        """``xp.asarray`` that never returns a NumPy scalar."""
        kwargs: dict[str, Any] = {}
        if dtype is not None:
            kwargs["dtype"] = dtype
        if device is not None:
            kwargs["device"] = device
        if copy is not None:
            kwargs["copy"] = copy
        return self.fix(self.xp.asarray(obj, **kwargs))

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


_FAST_SCATTER: dict[str, Callable[..., Any]] = {
    "numpy": _scatter_add_numpy,
    "cupy": _scatter_add_cupy,
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
