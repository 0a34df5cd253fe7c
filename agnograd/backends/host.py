"""The host side: random numbers, files, and the NumPy arithmetic of ``agnograd.testing``.

nn, optim, ``agnograd.datasets``, the command and ``agnograd.testing`` get these from here, so
the rest of the package imports no array library. Host arrays are NumPy arrays.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from . import host_array

__all__ = ["HostRNG", "host_rng", "save_npz", "load_npz", "load_csv", "host_asarray",
           "host_float64", "host_complex128", "host_zeros", "host_unravel_index",
           "host_worst_excess", "host_equal", "host_first_not_close"]

HostRNG = np.random.Generator


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


# ---------------------------------------------------------------------------------------------
# Files


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


# ---------------------------------------------------------------------------------------------
# Host arithmetic for agnograd.testing: finite differences and comparisons run on the host.


def host_asarray(a: Any) -> Any:
    """``a`` (a host array, or anything NumPy takes: nested lists, scalars) as a NumPy array."""
    return np.asarray(a)


def host_float64(a: Any) -> Any:
    """A C-ordered float64 NumPy copy of an array of any backend (``reshape(-1)`` of it is a
    view, whatever the source's memory layout)."""
    return np.array(host_array(a), dtype=np.float64, order="C")


def host_complex128(a: Any) -> Any:
    """A C-ordered complex128 NumPy copy of an array of any backend (see :func:`host_float64`)."""
    return np.array(host_array(a), dtype=np.complex128, order="C")


def host_zeros(shape: tuple[int, ...], complex_: bool = False) -> Any:
    """float64 (or complex128) zeros of ``shape`` on the host."""
    return np.zeros(shape, dtype=np.complex128 if complex_ else np.float64)


def host_unravel_index(k: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The index of flat position ``k`` in an array of ``shape`` (``()`` for 0-d)."""
    return tuple(int(j) for j in np.unravel_index(k, shape)) if len(shape) else ()


def host_worst_excess(a: Any, b: Any, rtol: float, atol: float) -> int | None:
    """Flat position where ``|a - b|`` exceeds ``atol + rtol |b|`` the most (NaN first), if it
    does anywhere or ``a`` and ``b`` are not finite at the same places; else ``None``."""
    err = np.abs(a - b) - (atol + rtol * np.abs(b))
    if err.size and (np.max(err) > 0 or not np.all(np.isfinite(a) == np.isfinite(b))):
        return int(np.nanargmax(np.where(np.isnan(err), np.inf, err)))
    return None


def host_equal(a: Any, b: Any) -> bool:
    """Whether two host arrays have the same shape and elements."""
    return bool(np.array_equal(a, b))


def host_first_not_close(a: Any, b: Any, rtol: float, atol: float) -> int | None:
    """First flat position where ``|a - b| > atol + rtol |b|`` (NaN matches NaN); else ``None``."""
    ok = np.isclose(a, b, rtol=rtol, atol=atol, equal_nan=True)
    if np.all(ok):
        return None
    return int(np.argmin(ok.reshape(-1)))
