"""Random numbers drawn on the device (``ag.random``): a counter-based generator written in
standard integer ops, so every backend -- and every replay of a captured step -- draws the same
numbers for the same seed.

**The generator.** Philox-4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3",
SC 2011; the generator of cuRAND and of PyTorch's CUDA dropout): a keyed bijection of 128-bit
counters, ten rounds of ``hi, lo = mulhilo(M, c)`` and XORs with the round key. Bits for draw
``j`` come from counter ``counter + j // 4``; the 32x32 -> 64-bit products are computed exactly
in 64-bit integers (uint64 where the namespace computes in it; else int64, either wrapping past
``2**63`` where the backend is checked to wrap, or on 16-bit halves of the multiplier: see
:func:`_mode`), so the bits are identical on NumPy, array_api_strict, PyTorch, CuPy and Dask.

**State on the device.** A :class:`Generator` holds its key and counter in one int64 Tensor of
shape ``(2,)`` on its backend and device. A draw of ``n`` counters reads it there, computes, and
adds ``n`` to the counter **in place** -- no host read, no host data copied in -- so the staged
replay of :func:`agnograd.capture` / :func:`agnograd.jit` (which replays in-place updates of live
Tensors in place) and a CUDA graph draw fresh numbers on every replay, exactly those an eager run
from the same seed draws.

**Defaults.** :func:`manual_seed` seeds one default generator per (backend, device), made on
first use from the last seed given (0 before any); a draw without ``generator=`` uses the one of
its backend and device.

**One draw is one draw.** A call draws once, for its whole shape; drawing a shape ``(a, b)``
is not ``a`` draws of shape ``(b,)`` (their bits differ). This is JAX's rule. Under
``ag.vmap`` a function that draws makes one draw of its per-example shape, the same for every
example (one generator state, like one JAX key that is not split): draw a batch of shape
``(n, ...)`` outside and map over it for per-example noise.

Floats: ``uniform`` takes the top 24 bits of one word (float32) or 53 bits of two (float64),
so values lie in ``[0, 1)`` exactly; ``normal`` is Box-Muller on two uniforms; ``bernoulli``
with a Python ``p`` compares a whole 32-bit word with ``round(p * 2**32)``.
"""

from __future__ import annotations

import math
import threading
import weakref
from typing import Any

from ._dtypes import from_backend_dtype, get_default_dtype, to_backend_dtype
from ._tensor import Tensor
from .backends import Backend, backend_of_array, get_backend, get_default_backend, host_array
from .backends import tracing as _tracing
from .recompute import note_generator

__all__ = ["Generator", "manual_seed", "default_generator", "uniform", "normal", "bernoulli"]

_M32 = 0xFFFFFFFF
_PHILOX_M0 = 0xD2511F53
_PHILOX_M1 = 0xCD9E8D57
_PHILOX_W0 = 0x9E3779B9  # the golden ratio
_PHILOX_W1 = 0xBB67AE85  # sqrt(3) - 1
_ROUNDS = 10
_SEED_MIN = -(1 << 63)
_SEED_MAX = (1 << 64) - 1

# How each base backend (by name) computes the 32x32 -> 64-bit products (see _mode).
_MODES: dict[str, str] = {}

# Known answers of Philox-4x32-10 (Random123's kat_vectors): (counter, key) -> output.
_KAT = (
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
)


def _mode(b: Backend) -> str:
    """How ``b`` computes the products, decided once per backend (all three are bit-identical):

    - ``"wide"``: in uint64 (multiply, shift, and, xor all supported): one exact multiply;
    - ``"wrap"``: in int64, one multiply whose product may pass ``2**63`` and wrap around
      (two's complement) -- the standard leaves that unspecified, so this is chosen only after
      the backend reproduces the known answers of Philox-4x32-10 on both sides of
      ``2**63`` (PyTorch: it has uint64 multiplies but no uint64 shifts);
    - ``"split"``: in int64 on 16-bit halves of the multiplier, never past ``2**48``: exact
      everywhere, four times the work (where neither check can be made).
    """
    base = b.root
    mode = _MODES.get(base.name)
    if mode is not None:
        return mode
    xp = base.xp
    try:  # device fills only (no host data): safe even inside a CUDA-graph recording
        a = xp.full((1,), 3, dtype=xp.uint64)
        r = ((a * _PHILOX_M0) >> 32) ^ (a & _M32)
        wide = bool(r.dtype == xp.uint64)
    except Exception:  # e.g. PyTorch: "rshift_cpu" not implemented for 'UInt64'
        wide = False
    if wide:
        mode = "wide"
    else:
        if xp.full((1,), 3, dtype=xp.int64).dtype != xp.int64:
            raise TypeError(f"ag.random: backend '{base.name}' has no 64-bit integers (JAX needs "
                            "jax.config.update('jax_enable_x64', True)); the generator computes "
                            "in 64-bit integers")
        mode = "wrap" if _wraps(base) else "split"
    _MODES[base.name] = mode
    return mode


def _wraps(b: Backend) -> bool:
    """Whether ``b``'s int64 products wrap around exactly as uint64 ones: the known answers,
    67 of each (a vectorised loop's body and its tail), computed in the ``"wrap"`` mode and
    read back. ``False`` where they differ or cannot be read now (a lazy backend; a device
    graph being recorded)."""
    if b.lazy:
        return False
    xp = b.xp
    n = 67
    try:
        words = []
        for j in range(4):
            lo, hi = _KAT[0][0][j], _KAT[1][0][j]
            words.append(xp.where(xp.arange(n, dtype=xp.int64) % 2 == 0,
                                  xp.full((n,), lo, dtype=xp.int64),
                                  xp.full((n,), hi, dtype=xp.int64)))
        keys = []
        for j in range(2):
            lo, hi = _KAT[0][1][j], _KAT[1][1][j]
            keys.append(xp.where(xp.arange(n, dtype=xp.int64) % 2 == 0,
                                 xp.full((n,), lo, dtype=xp.int64),
                                 xp.full((n,), hi, dtype=xp.int64)))
        out = philox4x32(*words, *keys, mode="wrap")
        got = host_array(xp.stack(out, axis=-1)).tolist()
    except Exception:
        return False
    want = [list(_KAT[i % 2][2]) for i in range(n)]
    return bool(got == want)


# (The high word is shifted in place in the product: one array fewer per round. Dask's arrays
# have no in-place operators; Python then rebinds the name to `p >> 32`, the same value.)


def _mulhilo_wide(a: Any, m: Any) -> tuple[Any, Any]:
    p = a * m  # < 2**64 in uint64
    lo = p & _M32
    p >>= 32
    return p, lo


def _mulhilo_wrap(a: Any, m: Any) -> tuple[Any, Any]:
    p = a * m  # the product's low 64 bits, as int64 (checked by _wraps)
    lo = p & _M32
    p >>= 32
    p &= _M32  # (an arithmetic shift: the sign's copies cleared)
    return p, lo


def _mulhilo_split(a: Any, m: Any) -> tuple[Any, Any]:
    # a * m = a * m_lo + a * m_hi * 2**16, each partial < 2**48: exact in int64.
    t1 = a * (m & 0xFFFF)
    t2 = a * (m >> 16)
    lo = (t1 & _M32) + ((t2 & 0xFFFF) << 16)
    hi = (t1 >> 32) + (t2 >> 16) + (lo >> 32)
    return hi, lo & _M32


_MULHILO = {"wide": _mulhilo_wide, "wrap": _mulhilo_wrap, "split": _mulhilo_split}


def _rounds(xp: Any, e: Any, o: Any, keys: Any, mode: str,
            kw: dict[str, Any] | None = None) -> tuple[Any, Any]:
    """The ten Philox rounds on two lanes at once: ``e`` holds the rows ``(c0, c2)`` and ``o``
    the rows ``(c3, c1)`` (shape ``(2, ...)``), ``keys[r]`` the rows ``(k1, k0)`` of round
    ``r``'s key (broadcastable to them). One round,
    ``(c0, c1, c2, c3) -> (hi(M1 c2) ^ c1 ^ k0, lo(M1 c2), hi(M0 c0) ^ c3 ^ k1, lo(M0 c0))``,
    is ``hi, lo = mulhilo((M0, M1), e)``, ``e = flip(hi ^ o ^ k)``, ``o = lo``: six calls.
    ``kw``: ``{"device": ...}`` for the constants, where arrays may live on several devices."""
    kw = kw or {}
    mul = _MULHILO[mode]
    dtype = xp.uint64 if mode == "wide" else xp.int64
    rows = xp.reshape(xp.arange(2, dtype=dtype, **kw), (2, 1))
    m = xp.where(rows == 0, xp.full((2, 1), _PHILOX_M0, dtype=dtype, **kw),
                 xp.full((2, 1), _PHILOX_M1, dtype=dtype, **kw))
    for k in keys:
        hi, lo = mul(e, m)
        hi ^= o  # (hi is a fresh array: updated in place)
        hi ^= k
        e = xp.flip(hi, axis=0)
        o = lo
    return e, o


def philox4x32(c0: Any, c1: Any, c2: Any, c3: Any, k0: Any, k1: Any, *,
               mode: str = "split") -> tuple[Any, Any, Any, Any]:
    """Philox-4x32-10 of the counter words ``(c0, c1, c2, c3)`` under the key ``(k0, k1)``:
    1-d integer arrays of one length (uint64 in the ``"wide"`` mode, else int64: see
    :func:`_mode`) holding values in ``[0, 2**32)``. Returns the four output words. Round
    ``r`` uses the key ``(k0 + r W0, k1 + r W1) mod 2**32``."""
    b = backend_of_array(c0)
    if b is None:
        raise TypeError(f"philox4x32: not an array of a known backend: {type(c0).__name__}")
    xp = b.xp
    e = xp.stack((c0, c2))
    o = xp.stack((c3, c1))
    keys = []
    for r in range(_ROUNDS):
        keys.append(xp.stack(((k1 + r * _PHILOX_W1) & _M32, (k0 + r * _PHILOX_W0) & _M32)))
    e, o = _rounds(xp, e, o, keys, mode)
    return e[0, ...], o[1, ...], e[1, ...], o[0, ...]


def _round_keys(xp: Any, key: Any, dtype: Any, kw: dict[str, Any]) -> list[Any]:
    """The ten round keys of the 64-bit ``key`` (a 0-d int64 array), each the rows
    ``(k1, k0)`` of shape ``(2, 1)`` in ``dtype``, in a few calls: ``(k + r W) mod 2**32`` for
    ``r = 0..9`` as one ``(10, 2, 1)`` array, then unstacked."""
    r = xp.reshape(xp.arange(_ROUNDS, dtype=xp.int64, **kw), (_ROUNDS, 1, 1))
    lane = xp.reshape(xp.arange(2, dtype=xp.int64, **kw), (1, 2, 1))
    w = xp.where(lane == 0, xp.full((1, 2, 1), _PHILOX_W1, dtype=xp.int64, **kw),
                 xp.full((1, 2, 1), _PHILOX_W0, dtype=xp.int64, **kw))
    halves = xp.where(lane == 0, key >> 32, key) & _M32  # (1, 2, 1): (k1, k0)
    k = (halves + r * w) & _M32
    if dtype != xp.int64:
        k = xp.astype(k, dtype)
    return list(xp.unstack(k))


def _key_of(seed: int) -> int:
    """The 64-bit key of ``seed``, as the signed int64 that stores it."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"ag.random: a seed is an int, not {type(seed).__name__} ({seed!r})")
    if not _SEED_MIN <= seed <= _SEED_MAX:
        raise ValueError(f"ag.random: a seed must lie in [-2**63, 2**64), not {seed}")
    key = seed & ((1 << 64) - 1)
    return key - (1 << 64) if key >= 1 << 63 else key


def _fresh_state(b: Backend, device: Any, key: int) -> Any:
    """``[key, 0]`` as an int64 array of ``b`` made on the device (fills, no host data)."""
    xp = b.xp
    kw = {} if device is None else {"device": device}
    return (1 - xp.arange(2, dtype=xp.int64, **kw)) * key


def _resolve_device(b: Backend, device: Any) -> Any:
    """``device``, or ``b``'s default device where arrays may live on several devices."""
    if device is not None or not b.multi_device:
        return device
    return b.device_of(b.xp.empty((0,)))


def _device_key(b: Backend, device: Any) -> str:
    return "" if device is None or not b.multi_device else str(device)


class Generator:
    """A Philox-4x32-10 generator whose key and counter live on the device.

    Args:
        seed: an int in ``[-2**63, 2**64)`` (taken modulo ``2**64``: the key).
        backend: the backend (a name or a :class:`~agnograd.Backend`); the default backend
            when ``None``.
        device: the device of the state (the backend's default device when ``None``).

    Attributes:
        backend: the backend's name.
        device: the state's device.
        seed: the last seed given (to the constructor or :meth:`manual_seed`).

    A generator made inside a captured step is made again on every replay (as eager makes it
    again on every call); one made outside is live state the replay advances.
    """

    __slots__ = ("_state", "seed", "__weakref__")

    def __init__(self, seed: int = 0, *, backend: str | Backend | None = None,
                 device: Any = None) -> None:
        key = _key_of(seed)
        b = get_default_backend() if backend is None else get_backend(backend)
        tr = _tracing.active()
        if tr is not None and tr.backend is b:
            # Made inside a step being traced (ag.capture, ag.jit): made again by every replay,
            # as every eager call makes it again.
            b = tr.tb
        device = _resolve_device(b, device)
        self.seed = seed
        self._state = Tensor._wrap(_fresh_state(b, device, key), b)
        _every.add(self)

    @property
    def backend(self) -> str:
        return self._state._backend.root.name

    @property
    def device(self) -> Any:
        return self._state.device

    def manual_seed(self, seed: int) -> Generator:
        """Restart from ``seed`` (key ``seed mod 2**64``, counter 0), written into the state in
        place. Returns the generator."""
        key = _key_of(seed)
        st = self._state
        b = st._backend
        self._write(_fresh_state(b, b.device_of(st.data), key))  # (made where the state is)
        self.seed = seed
        return self

    def get_state(self) -> Tensor:
        """A copy of the state: an int64 Tensor of shape ``(2,)`` (key, counter) on the
        generator's backend and device. No host read."""
        st = self._state
        b = st._backend
        data = st.data if b.lazy else b.xp.asarray(st.data, copy=True)
        return Tensor._wrap(data, b)

    def set_state(self, state: Any) -> None:
        """Copy ``state`` (from :meth:`get_state`: an int64 Tensor or array of shape ``(2,)``
        of this generator's backend) into the state, in place."""
        st = self._state
        b = st._backend
        data = state.data if type(state) is Tensor else state
        if not b.base.is_array(getattr(data, "_v", data)):
            raise TypeError(f"Generator.set_state: the state must be a Tensor (or array) of the "
                            f"generator's backend '{self.backend}', from get_state(); got "
                            f"{type(state).__name__}")
        if tuple(data.shape) != (2,) or from_backend_dtype(data.dtype).name != "int64":
            raise ValueError(f"Generator.set_state: the state is an int64 array of shape (2,) "
                             f"(key, counter), not {data.dtype} of shape {tuple(data.shape)}")
        self._write(data)

    def _write(self, new: Any) -> None:
        st = self._state
        if st._backend.lazy:
            st.data = new
        else:
            st.data[...] = new

    def _draw(self, n: int, b: Backend) -> Any:
        """The Philox output words of the counters ``counter + arange(n)``: an array of ``b``
        (the backend the caller computes on) of shape ``(4, n)`` (row ``i``: word ``i`` of each
        counter; uint64 or int64 values in ``[0, 2**32)``), then ``counter += n`` in place."""
        note_generator(self)  # inside ag.checkpoint: remember the state before this draw
        st = self._state
        s = st.data
        if st._backend is not b:
            if b.root is not st._backend.root:
                raise ValueError(f"ag.random: a generator of backend '{self.backend}' cannot draw "
                                 f"for backend '{b.root.name}'; make one with "
                                 f"Generator(seed, backend='{b.root.name}')")
            # A generator made while a step is traced, from outside it (a default generator
            # made on first use): its state is read through the traced namespace, so the
            # replay reads and advances this very array.
            s = b.xp.asarray(s)
        xp = b.xp
        mode = _mode(b)
        dtype = xp.uint64 if mode == "wide" else xp.int64
        kw = {"device": b.device_of(s)}  # the constants are made beside the state
        key, ctr = s[0], s[1]
        cnt = ctr + xp.arange(n, dtype=xp.int64, **kw)
        # lanes: e = (c0, c2) = (counter low word, 0), o = (c3, c1) = (0, counter high word)
        lane = xp.reshape(xp.arange(2, dtype=xp.int64, **kw), (2, 1))
        zero = xp.zeros((1,), dtype=xp.int64, **kw)
        e = xp.where(lane == 0, cnt & _M32, zero)
        o = xp.where(lane == 0, zero, cnt >> 32)
        if mode == "wide":
            e, o = xp.astype(e, dtype), xp.astype(o, dtype)
        e, o = _rounds(xp, e, o, _round_keys(xp, key, dtype, kw), mode, kw)
        # the words of each counter, in order: (c0, c1, c2, c3) = (e0, o1, e1, o0), shape (4, n)
        block = xp.reshape(xp.stack((e, xp.flip(o, axis=0)), axis=1), (4, n))
        s2 = s
        s2 += xp.arange(2, dtype=xp.int64, **kw) * n  # (0, n): the counter advances
        if s2 is not s:  # lazy arrays (Dask) are immutable: rebind
            st.data = s2
        return block

    def __repr__(self) -> str:
        return f"Generator(seed={self.seed}, backend={self.backend!r}, device={self.device})"


# ---------------------------------------------------------------------------------------------
# Default generators, and every generator alive

_lock = threading.Lock()
_defaults: dict[tuple[str, str], Generator] = {}
_seed = 0
_every: weakref.WeakSet[Generator] = weakref.WeakSet()


def snapshot_generators() -> list[tuple[Generator, Tensor]]:
    """Every generator alive and a copy of its state (on its device): for a caller that runs
    a step and must then undo it (``CapturedStep.check`` compares an eager run with a replay
    from the same state). Undo with :func:`restore_generators`."""
    return [(g, g.get_state()) for g in list(_every)]


def restore_generators(snapshot: list[tuple[Generator, Tensor]]) -> None:
    """Put back the states :func:`snapshot_generators` copied (in place)."""
    for g, state in snapshot:
        g.set_state(state)


def manual_seed(seed: int) -> None:
    """Seed the default generators of every backend and device: those made already are
    restarted in place (counter 0), those made later start from ``seed``.

    Also ``ag.manual_seed``. Draws that pass no ``generator`` (``uniform``, ``normal``,
    ``bernoulli``, :func:`agnograd.nn.functional.dropout` without ``seed``) use these.
    """
    global _seed
    _key_of(seed)
    with _lock:
        _seed = seed
        gens = list(_defaults.values())
    for g in gens:
        g.manual_seed(seed)


def default_generator(backend: str | Backend | None = None, device: Any = None) -> Generator:
    """The default generator of ``backend`` (the default backend when ``None``) and
    ``device`` (its default device when ``None``), made on first use from the last
    :func:`manual_seed` (0 before any)."""
    b = get_default_backend() if backend is None else get_backend(backend)
    base = b.root
    device = _resolve_device(b, device)
    k = (base.name, _device_key(base, device))
    g = _defaults.get(k)
    if g is not None:
        return g
    with _lock:
        g = _defaults.get(k)
        if g is None:
            # On the real backend, even while a step is traced: the generator outlives it.
            g = Generator.__new__(Generator)
            g.seed = _seed
            g._state = Tensor._wrap(_fresh_state(base, device, _key_of(_seed)), base)
            _every.add(g)
            _defaults[k] = g
    return g


# ---------------------------------------------------------------------------------------------
# Draws


def _shape(shape: int | tuple[int, ...], fn: str) -> tuple[int, ...]:
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    if not isinstance(shape, tuple) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise TypeError(f"ag.random.{fn}: shape must be an int or a tuple of non-negative ints, "
                        f"not {shape!r}")
    return shape


def _where(generator: Generator | None, backend: str | Backend | None, device: Any,
           fn: str) -> tuple[Generator, Backend]:
    """The generator to draw from and the backend to compute on."""
    if generator is None:
        b = get_default_backend() if backend is None else get_backend(backend)
        return default_generator(b, device), b
    if not isinstance(generator, Generator):
        raise TypeError(f"ag.random.{fn}: generator must be an ag.random.Generator, not "
                        f"{type(generator).__name__}")
    b = generator._state._backend
    if backend is not None and get_backend(backend).root is not b.root:
        raise ValueError(f"ag.random.{fn}: the generator is on backend '{generator.backend}', "
                         f"not '{get_backend(backend).root.name}'")
    return generator, b


def _float_dtype(b: Backend, dtype: Any, fn: str) -> tuple[Any, int]:
    """The backend's floating dtype for ``dtype`` (the default when ``None``) and its bits."""
    xp = b.xp
    if dtype is None:
        dtype = get_default_dtype()
    if dtype is None:
        raw = xp.empty((0,)).dtype
    else:
        raw = to_backend_dtype(xp, dtype)
    d = from_backend_dtype(raw)
    if d.kind != "f":
        raise TypeError(f"ag.random.{fn}: dtype must be float32 or float64, not {d.name}")
    return raw, d.bits


def _stream(xp: Any, block: Any, count: int) -> Any:
    """The first ``count`` values of a ``(k, n)`` block in stream order (counter-major)."""
    return xp.reshape(xp.permute_dims(block, (1, 0)), (-1,))[:count]


def _unit(block: Any, count: int, xp: Any, raw: Any, bits: int) -> Any:
    """``count`` uniform floats in ``[0, 1)`` (1-d) from the words: the top 24 bits of one word
    each (float32), or 27 + 26 bits of two (float64: words 0, 1 and words 2, 3 of a counter)."""
    if bits == 32:  # (converted before interleaving: float32 moved rather than 64-bit words)
        return _stream(xp, xp.astype(block >> 8, raw), count) * (2.0 ** -24)
    v = (block[0::2, :] >> 5) * 67108864 + (block[1::2, :] >> 6)  # < 2**53: exact in float64
    return _stream(xp, xp.astype(v, raw), count) * (2.0 ** -53)


def _counters(values: int, words_each: int) -> int:
    return -(-values * words_each // 4)


def uniform(shape: int | tuple[int, ...], *, dtype: Any = None,
            generator: Generator | None = None, low: float = 0.0, high: float = 1.0,
            backend: str | Backend | None = None, device: Any = None) -> Tensor:
    """Uniform floats in ``[low, high)`` of ``shape`` (``dtype`` float32 or float64; the
    default floating dtype when ``None``) from ``generator`` (the default generator of
    ``backend``/``device`` when ``None``). ``low + (high - low) u`` with ``u`` the top 24
    (float32) or 53 (float64) bits of the Philox words over ``2**24`` / ``2**53``; ``u`` is in
    ``[0, 1)`` exactly (the scaled value may round up to ``high``, as in NumPy and PyTorch)."""
    shape = _shape(shape, "uniform")
    gen, b = _where(generator, backend, device, "uniform")
    raw, bits = _float_dtype(b, dtype, "uniform")
    count = math.prod(shape)
    xp = b.xp
    block = gen._draw(_counters(count, 1 if bits == 32 else 2), b)
    u = _unit(block, count, xp, raw, bits)
    if low != 0.0 or high != 1.0:
        u = u * (float(high) - float(low)) + float(low)
    return Tensor._wrap(xp.reshape(u, shape), b)


def normal(shape: int | tuple[int, ...], *, dtype: Any = None,
           generator: Generator | None = None, mean: float = 0.0, std: float = 1.0,
           backend: str | Backend | None = None, device: Any = None) -> Tensor:
    """Normal floats of ``shape`` with ``mean`` and ``std`` (Box-Muller: from uniforms
    ``u1 in (0, 1]``, ``u2 in [0, 1)``, ``r = sqrt(-2 log u1)`` gives the pair
    ``r cos(2 pi u2), r sin(2 pi u2)``). Arguments as :func:`uniform`. The bits are identical
    on every backend; the values are up to the last bit of each backend's ``log``/``cos``/``sin``.
    """
    shape = _shape(shape, "normal")
    gen, b = _where(generator, backend, device, "normal")
    raw, bits = _float_dtype(b, dtype, "normal")
    count = math.prod(shape)
    pairs = -(-count // 2)
    xp = b.xp
    block = gen._draw(_counters(2 * pairs, 1 if bits == 32 else 2), b)
    u = _unit(block, 2 * pairs, xp, raw, bits)
    r = xp.sqrt(-2.0 * xp.log(1.0 - u[0::2]))
    theta = (2.0 * math.pi) * u[1::2]
    z = xp.reshape(xp.stack((r * xp.cos(theta), r * xp.sin(theta)), axis=-1), (-1,))[:count]
    if mean != 0.0 or std != 1.0:
        z = z * float(std) + float(mean)
    return Tensor._wrap(xp.reshape(z, shape), b)


def bernoulli(p: float | Tensor, shape: int | tuple[int, ...] | None = None, *,
              dtype: Any = None, generator: Generator | None = None,
              backend: str | Backend | None = None, device: Any = None) -> Tensor:
    """``True`` with probability ``p``, of ``shape`` (a bool Tensor; ``dtype`` converts it).

    ``p`` a Python float in ``[0, 1]``: one 32-bit word ``w`` per element, ``w < round(p 2**32)``
    (the probability is exactly that over ``2**32``). ``p`` a Tensor of probabilities:
    ``uniform(shape, dtype=p.dtype) < p`` (``shape`` defaults to ``p.shape`` and must broadcast
    with it), on ``p``'s backend.
    """
    if type(p) is Tensor:
        pt: Tensor = p
        if shape is None:
            shape = pt.shape
        if backend is None:
            backend = pt._backend
        if generator is None and device is None and pt._backend.multi_device:
            device = pt.device
        u = uniform(shape, dtype=pt.dtype if pt.dtype.kind == "f" else None,
                    generator=generator, backend=backend, device=device)
        keep = u.data < pt.data
        b = u._backend
    else:
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
            raise ValueError(f"ag.random.bernoulli: p must be a float in [0, 1] or a Tensor, not "
                             f"{p!r}")
        if shape is None:
            raise TypeError("ag.random.bernoulli: give shape when p is a number")
        shp = _shape(shape, "bernoulli")
        gen, b = _where(generator, backend, device, "bernoulli")
        keep = threshold_words(gen, b, shp, float(p), below=True)
    if dtype is not None:
        keep = b.xp.astype(keep, to_backend_dtype(b.xp, dtype))
    return Tensor._wrap(keep, b)


def threshold_words(gen: Generator, b: Backend, shape: tuple[int, ...], p: float, *,
                    below: bool) -> Any:
    """A bool array of ``b`` of ``shape``: one Philox word ``w`` per element against
    ``t = round(p 2**32)``, ``w < t`` if ``below`` (probability ``t / 2**32``) else ``w >= t``.
    The mask of ``bernoulli`` and ``dropout``."""
    count = math.prod(shape)
    xp = b.xp
    block = gen._draw(_counters(count, 1), b)
    t = round(p * 4294967296.0)
    keep = (block < t) if below else (block >= t)  # (interleaved as bytes, not 64-bit words)
    return xp.reshape(_stream(xp, keep, count), shape)
