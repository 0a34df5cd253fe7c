"""The host side: random numbers, files, and the NumPy arithmetic of ``agnograd.testing``.

nn, optim, ``agnograd.datasets``, the command and ``agnograd.testing`` get these from here, so
the rest of the package imports no array library. Host arrays are NumPy arrays.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from . import host_array

__all__ = ["HostRNG", "host_rng", "save_npz", "load_npz", "save_checked_npz", "load_checked_npz",
           "CorruptFileError", "user_umask", "load_csv", "host_asarray",
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


def user_umask() -> int:
    """The process's umask (what ``open()`` would leave out of a new file's permissions).

    Read from ``/proc/self/status`` on Linux; elsewhere set and restored at once (``os.umask``
    has no read-only form; another thread creating a file in that instant would get mode 0).
    """
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_atomically(target: str, write: Any) -> None:
    """Call ``write(file)`` on a temporary file in ``target``'s folder, flush and fsync it, give
    it the mode a new file gets (0o666 less the umask: ``mkstemp`` makes it 0600), then rename
    it over ``target``: a crash at any moment leaves either the old file or the new one."""
    folder = os.path.dirname(os.path.abspath(target))
    fd, tmp = tempfile.mkstemp(prefix=".agnograd-", suffix=".npz.tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~user_umask())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _host_arrays(arrays: Mapping[str, Any]) -> dict[str, Any]:
    host = {name: np.asarray(host_array(a)) for name, a in arrays.items()}
    for name, a in host.items():
        if a.dtype.hasobject:
            raise TypeError(f"save_npz: {name!r} is an object array; only numeric arrays are saved")
    return host


def save_npz(path: str | os.PathLike[str], arrays: Mapping[str, Any]) -> None:
    """Write ``arrays`` (name -> array of any backend) to an uncompressed ``.npz`` file, without
    pickle. The file is written next to ``path``, flushed to the disk and then renamed over it,
    so a failure or a crash never leaves a half-written file behind; it gets the permissions
    of any new file (``0o666`` less the umask)."""
    host = _host_arrays(arrays)
    _write_atomically(os.fspath(path), lambda f: np.savez(f, allow_pickle=False, **host))


class CorruptFileError(ValueError):
    """A checksummed file (a training state) is truncated, altered or not one at all."""


_META, _SUM = "__meta__", "__sha256__"


def _digest(host: Mapping[str, Any], meta: str) -> str:
    """SHA-256 of the arrays (sorted by name: the name, dtype, shape and C-ordered bytes of
    each) and of the metadata text."""
    h = hashlib.sha256()
    for name in sorted(host):
        a = np.ascontiguousarray(host[name])
        h.update(f"{name}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(a.tobytes())
    h.update(meta.encode())
    return h.hexdigest()


def save_checked_npz(path: str | os.PathLike[str], arrays: Mapping[str, Any],
                     meta: Mapping[str, Any]) -> None:
    """:func:`save_npz` of ``arrays`` plus ``meta`` (JSON-serialisable: stored as a JSON text
    array) and a SHA-256 checksum of both, which :func:`load_checked_npz` verifies."""
    host = _host_arrays(arrays)
    for name in (_META, _SUM):
        if name in host:
            raise ValueError(f"save_checked_npz: the name {name!r} is reserved")
    text = json.dumps(meta, sort_keys=True, allow_nan=True)
    digest = _digest(host, text)
    host[_META] = np.array(text)
    host[_SUM] = np.array(digest)
    _write_atomically(os.fspath(path), lambda f: np.savez(f, allow_pickle=False, **host))


def load_checked_npz(path: str | os.PathLike[str]) -> tuple[dict[str, Any], Any]:
    """The arrays and metadata of a file written by :func:`save_checked_npz`.

    Raises:
        FileNotFoundError: no such file.
        CorruptFileError: the file cannot be read (truncated), lacks the checksum, or its
            contents do not match the checksum (altered).
    """
    target = os.fspath(path)
    try:
        arrays = load_npz(target)
    except ValueError as exc:
        raise CorruptFileError(f"{target!r} is damaged (truncated or altered) or not a file "
                               f"written by agnograd: {exc}") from None
    text, stored = arrays.pop(_META, None), arrays.pop(_SUM, None)
    if text is None or stored is None or text.dtype.kind != "U" or stored.dtype.kind != "U":
        raise CorruptFileError(f"{target!r} has no checksum: it was not written by "
                               "agnograd's save_training_state (a Module.save file holds only "
                               "parameters: load it with Module.load)")
    if _digest(arrays, str(text)) != str(stored):
        raise CorruptFileError(f"{target!r} does not match its SHA-256 checksum: the file was "
                               "altered or damaged after it was written; use another checkpoint")
    try:
        meta = json.loads(str(text))
    except ValueError as exc:  # pragma: no cover - the checksum matched
        raise CorruptFileError(f"{target!r}: unreadable metadata ({exc})") from None
    return arrays, meta


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
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # truncated: no zip index
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
