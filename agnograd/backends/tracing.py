"""The tracing backend: a Backend whose namespace records every call it makes on a real backend.

Used by the staged replay of ``ag.capture`` and ``ag.jit`` (:mod:`agnograd.capture.program`). While a
step is traced its Tensors hold :class:`TracedArray` proxies -- a real array of the traced
backend plus a value number -- and carry the tracing Backend, so every op calls the recording
namespace: each namespace function, Python operator (in-place ones and ``__setitem__``
included) and attribute that makes an array evaluates on the real arrays, as eager does, *and*
appends ``(fn, argument template, output value numbers)`` to the :class:`Trace`. The trace run
is a real step: values exist, shapes are concrete.

Reading a traced value on the host (``bool``, ``float``, ``int``, ``__index__``, ``__array__``,
DLPack) raises :class:`~agnograd.CaptureError`: the replay would freeze the value.

Nothing here imports an array library: the recording namespace is generated from the traced
Backend's own namespace, attribute by attribute.
"""

from __future__ import annotations

import contextlib
import operator
import threading
import types
from collections.abc import Callable, Iterator
from typing import Any

from ..capture._state import CaptureError, who
from . import Backend, register

__all__ = ["Ref", "Instr", "Trace", "TracedArray", "TracingBackend", "tracing_backend", "active",
           "paused", "VIEW_NAMES"]

_local = threading.local()


def active() -> Trace | None:
    """The trace being recorded in this thread, if any."""
    return getattr(_local, "trace", None)


class Ref:
    """A traced value inside a recorded call's argument template."""

    __slots__ = ("i",)

    def __init__(self, i: int) -> None:
        self.i = i

    def __repr__(self) -> str:
        return f"v{self.i}"


class Instr:
    """One recorded backend call.

    ``kind``: ``"call"`` (a namespace function or Backend method), ``"op"`` (a Python operator;
    ``sym`` is its symbol), ``"inplace"`` (``+=`` and friends), ``"setitem"``, ``"attr"``
    (``.T``, ``.mT``), ``"method"`` (``x.to_device(...)``). ``args``/``kwargs`` are templates:
    constants as they are, traced values as :class:`Ref`. ``outs``: the value numbers made
    (``multi``: the call returned a tuple or list of arrays); ``refs``: the ones read.
    """

    __slots__ = ("fn", "name", "kind", "sym", "args", "kwargs", "outs", "multi", "refs")

    def __init__(self, fn: Any, name: str, kind: str, sym: str, args: Any, kwargs: Any,
                 outs: tuple[int, ...], multi: bool, refs: list[int]) -> None:
        self.fn = fn
        self.name = name
        self.kind = kind
        self.sym = sym
        self.args = args
        self.kwargs = kwargs
        self.outs = outs
        self.multi = multi
        self.refs = refs

    @property
    def pure(self) -> bool:
        return self.kind not in ("inplace", "setitem")


# Calls whose result may share memory with an array argument (a write to the result writes the
# argument): constant folding must not fold an array that is written through one of them.
VIEW_NAMES = frozenset({
    "[]", "T", "mT", "reshape", "permute_dims", "matrix_transpose", "expand_dims", "squeeze",
    "broadcast_to", "broadcast_arrays", "asarray", "astype", "moveaxis", "real", "imag", "conj",
    "unstack", "flip", "to_device", "scalar_to_array", "from_dlpack", "diagonal", "ravel", "view",
    "meshgrid", "fix", "windows",
})


class Trace:
    """The program being recorded: instructions, and where each value number comes from."""

    def __init__(self, backend: Backend, tb: TracingBackend) -> None:
        self.backend = backend
        self.tb = tb
        self.instrs: list[Instr] = []
        self.n = 0
        self.sources: dict[int, Any] = {}  # value number -> ("live", key) for values read in
        self.created: dict[int, Any] = {}  # value number -> real result of a call with no traced input
        self._atype = backend.array_type
        self._stype = backend.scalar_type
        self._replay_fn = backend.replay_fn

    # -- values -----------------------------------------------------------------------------
    def source(self, real: Any, key: Any) -> TracedArray:
        """A proxy for ``real``, read from outside at replay (a live buffer or an input)."""
        i = self.n
        self.n += 1
        self.sources[i] = key
        return self.tb.array_type(real, i)

    def _wrap(self, res: Any) -> Any:
        """A proxy for a real result (``None`` if not an array)."""
        t = type(res)
        if t is self._atype or isinstance(res, self._atype):
            i = self.n
            self.n += 1
            return self.tb.array_type(res, i)
        st = self._stype
        if st is not None and isinstance(res, st):
            i = self.n
            self.n += 1
            return self.tb.scalar_type(res, i)  # type: ignore[misc]
        return None

    # -- recording --------------------------------------------------------------------------
    def _unwrap(self, x: Any, refs: list[int]) -> tuple[Any, Any]:
        """(the real value, the template) of an argument."""
        if isinstance(x, TracedArray):
            refs.append(x._i)
            return x._v, Ref(x._i)
        t = type(x)
        if t is tuple or t is list:
            reals, temps = [], []
            n = len(refs)
            for e in x:
                r, tp = self._unwrap(e, refs)
                reals.append(r)
                temps.append(tp)
            if len(refs) == n:
                return x, x
            return t(reals), t(temps)
        if t is slice:
            n = len(refs)
            (a, ta), (b, tb_), (c, tc) = (self._unwrap(e, refs) for e in (x.start, x.stop, x.step))
            if len(refs) == n:
                return x, x
            return slice(a, b, c), slice(ta, tb_, tc)
        if t is dict:
            n = len(refs)
            pairs = {k: self._unwrap(v, refs) for k, v in x.items()}
            if len(refs) == n:
                return x, x
            return {k: p[0] for k, p in pairs.items()}, {k: p[1] for k, p in pairs.items()}
        return x, x

    def record(self, fn: Any, name: str, kind: str, sym: str, args: tuple[Any, ...],
               kwargs: dict[str, Any]) -> Any:
        refs: list[int] = []
        rargs, targs = self._unwrap(args, refs)
        if kwargs:
            rkw, tkw = self._unwrap(kwargs, refs)
        else:
            rkw, tkw = kwargs, None
        res = fn(*rargs, **rkw)
        if kind == "call" and self._replay_fn is not None:
            # What the replay calls instead: bit-identical, cheaper (Backend.replay_fn).
            fn = self._replay_fn(fn, rargs, rkw) or fn
        if kind == "setitem":
            self.instrs.append(Instr(fn, name, kind, sym, targs, tkw, (), False, refs))
            return None
        if kind == "inplace" and res is rargs[0] and isinstance(args[0], TracedArray):
            target = args[0]
            self.instrs.append(Instr(fn, name, kind, sym, targs, tkw, (target._i,), False, refs))
            return target
        p = self._wrap(res)
        if p is not None:
            self.instrs.append(Instr(fn, name, kind, sym, targs, tkw, (p._i,), False, refs))
            created = self.created
            if kind != "inplace" and all(r in created for r in refs):
                created[p._i] = res  # made from constants only: a candidate for folding
            return p
        if type(res) in (tuple, list) and res and all(self._wrap_check(e) for e in res):
            ps = [self._wrap(e) for e in res]
            self.instrs.append(Instr(fn, name, kind, sym, targs, tkw, tuple(q._i for q in ps), True,
                                     refs))
            return type(res)(ps)
        if _holds_array(res, self._atype):
            raise CaptureError(f"{who()}: '{name}' returned {type(res).__name__} holding arrays, "
                               "which the staged replay cannot record")
        return res  # metadata (a dtype, finfo, a shape): nothing to replay

    def _wrap_check(self, e: Any) -> bool:
        return isinstance(e, self._atype) or (self._stype is not None and isinstance(e, self._stype))


def _holds_array(x: Any, atype: type) -> bool:
    if isinstance(x, atype):
        return True
    if type(x) in (tuple, list):
        return any(_holds_array(e, atype) for e in x)
    return False


def _real(x: Any) -> Any:
    """Outside a trace (a proxy that outlived it): the real value of an argument tree."""
    if isinstance(x, TracedArray):
        return x._v
    if type(x) in (tuple, list):
        return type(x)(_real(e) for e in x)
    if type(x) is dict:
        return {k: _real(v) for k, v in x.items()}
    return x


def _record(fn: Any, name: str, kind: str, sym: str, args: tuple[Any, ...],
            kwargs: dict[str, Any] | None = None) -> Any:
    tr = active()
    if tr is None:
        res = fn(*_real(args), **_real(kwargs or {}))
        return None if kind == "setitem" else res
    return tr.record(fn, name, kind, sym, args, kwargs or {})


# ---------------------------------------------------------------------------------------------
# The proxy array

_WHY_READ = ("the staged replay would freeze the value read during the trace; keep the value on "
             "the device (ag.where, arithmetic) or read it outside the step")


class _TraceAttributeError(CaptureError, AttributeError):
    """An array attribute the tracer does not record (also an AttributeError for ``hasattr``)."""


def _host_read(what: str) -> Callable[..., Any]:
    def method(self: TracedArray, *args: Any, **kwargs: Any) -> Any:
        raise CaptureError(f"{what} of a backend array is not allowed inside a step recorded by "
                           f"{who()} (staged replay): {_WHY_READ}")

    return method


def _binop(op: Callable[[Any, Any], Any], sym: str) -> Callable[[Any, Any], Any]:
    def method(self: TracedArray, other: Any) -> Any:
        return _record(op, op.__name__, "op", sym, (self, other))

    return method


def _rbinop(op: Callable[[Any, Any], Any], sym: str) -> Callable[[Any, Any], Any]:
    def method(self: TracedArray, other: Any) -> Any:
        return _record(op, op.__name__, "op", sym, (other, self))

    return method


def _ibinop(op: Callable[[Any, Any], Any], sym: str) -> Callable[[Any, Any], Any]:
    def method(self: TracedArray, other: Any) -> Any:
        return _record(op, op.__name__, "inplace", sym, (self, other))

    return method


def _unop(op: Callable[[Any], Any], sym: str) -> Callable[[Any], Any]:
    def method(self: TracedArray) -> Any:
        return _record(op, op.__name__, "op", sym, (self,))

    return method


def _transpose(a: Any) -> Any:
    return a.T


def _mtranspose(a: Any) -> Any:
    return a.mT


def _to_device(a: Any, device: Any, /, stream: Any = None) -> Any:
    return a.to_device(device) if stream is None else a.to_device(device, stream=stream)


class TracedArray:
    """A real array of the traced backend and its value number in the :class:`Trace`."""

    __slots__ = ("_v", "_i", "__weakref__")
    __array_ufunc__ = None  # NumPy defers to our reflected operators
    __array_priority__ = 2000
    __hash__ = None  # type: ignore[assignment]
    _xp: Any = None  # the recording namespace (set on each backend's subclass)

    def __init__(self, v: Any, i: int) -> None:
        self._v = v
        self._i = i

    @property
    def shape(self) -> Any:
        return self._v.shape

    @property
    def dtype(self) -> Any:
        return self._v.dtype

    @property
    def ndim(self) -> int:
        return int(self._v.ndim)

    @property
    def size(self) -> Any:
        return self._v.size

    @property
    def device(self) -> Any:
        return self._v.device

    @property
    def T(self) -> Any:
        return _record(_transpose, "T", "attr", "T", (self,))

    @property
    def mT(self) -> Any:
        return _record(_mtranspose, "mT", "attr", "mT", (self,))

    def __len__(self) -> int:
        return len(self._v)

    def __array_namespace__(self, *, api_version: str | None = None) -> Any:
        return self._xp

    def to_device(self, device: Any, /, stream: Any = None) -> Any:
        return _record(_to_device, "to_device", "call", "", (self, device),
                       {} if stream is None else {"stream": stream})

    def __getitem__(self, key: Any) -> Any:
        return _record(operator.getitem, "[]", "op", "[]", (self, key))

    def __setitem__(self, key: Any, value: Any) -> None:
        _record(operator.setitem, "[]=", "setitem", "[]=", (self, key, value))

    __bool__ = _host_read("bool()")
    __float__ = _host_read("float()")
    __int__ = _host_read("int()")
    __complex__ = _host_read("complex()")
    __index__ = _host_read("__index__ (use as a Python int)")
    __array__ = _host_read("a NumPy conversion (__array__)")
    __dlpack__ = _host_read("a DLPack export")
    __dlpack_device__ = _host_read("a DLPack export")
    item = _host_read("item()")
    tolist = _host_read("tolist()")
    __iter__ = _host_read("iteration")

    def __getattr__(self, name: str) -> Any:
        raise _TraceAttributeError(
            f"{who()} (staged replay): the step uses the array attribute '.{name}', which is "
            "not part of the Array API and is not recorded; use the namespace's functions")

    def __repr__(self) -> str:
        return f"TracedArray(v{self._i}, shape={tuple(self._v.shape)}, dtype={self._v.dtype})"


_BIN = {"add": "+", "sub": "-", "mul": "*", "truediv": "/", "floordiv": "//", "mod": "%",
        "pow": "**", "matmul": "@", "and_": "&", "or_": "|", "xor": "^", "lshift": "<<",
        "rshift": ">>"}
for _name, _sym in _BIN.items():
    _dunder = _name.rstrip("_")
    _op = getattr(operator, _name)
    setattr(TracedArray, f"__{_dunder}__", _binop(_op, _sym))
    setattr(TracedArray, f"__r{_dunder}__", _rbinop(_op, _sym))
    setattr(TracedArray, f"__i{_dunder}__", _ibinop(getattr(operator, "i" + _name.rstrip("_")), _sym + "="))
for _name, _sym in {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}.items():
    setattr(TracedArray, f"__{_name}__", _binop(getattr(operator, _name), _sym))
for _name, _sym in {"neg": "-", "pos": "+", "abs": "abs", "invert": "~"}.items():
    setattr(TracedArray, f"__{_name}__", _unop(getattr(operator, _name), _sym))

# Python symbols of the recorded operators, for the generated replay code.
BINARY_SYMBOLS = {getattr(operator, n): s for n, s in _BIN.items()}
BINARY_SYMBOLS.update({operator.eq: "==", operator.ne: "!=", operator.lt: "<", operator.le: "<=",
                       operator.gt: ">", operator.ge: ">="})
INPLACE_SYMBOLS = {getattr(operator, "i" + n.rstrip("_")): s + "=" for n, s in _BIN.items()}
UNARY_SYMBOLS = {operator.neg: "-", operator.pos: "+", operator.invert: "~"}


# ---------------------------------------------------------------------------------------------
# The recording namespace and the tracing Backend


def _recorder(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    def recorded(*args: Any, **kwargs: Any) -> Any:
        return _record(fn, name, "call", "", args, kwargs)

    recorded.__name__ = name
    recorded.__qualname__ = name
    recorded.__wrapped__ = fn  # type: ignore[attr-defined]
    return recorded


class RecordingNamespace:
    """The real namespace with every function replaced by a recorder (made on first access);
    dtypes, constants and other attributes pass through, sub-namespaces (``linalg``, ``fft``)
    are recording namespaces too."""

    def __init__(self, real: Any, prefix: str = "") -> None:
        self._real = real
        self._prefix = prefix
        self.__name__ = getattr(real, "__name__", "xp") + ".traced"

    def __getattr__(self, name: str) -> Any:
        v = getattr(self._real, name)
        if isinstance(v, types.ModuleType):
            w: Any = RecordingNamespace(v, f"{self._prefix}{name}.")
        elif callable(v) and not isinstance(v, type) and not name.startswith("__"):
            w = _recorder(v, self._prefix + name)
        else:
            w = v
        setattr(self, name, w)
        return w

    def __repr__(self) -> str:
        return f"RecordingNamespace({self._real!r})"


class TracingBackend(Backend):
    """A Backend whose arrays are :class:`TracedArray` proxies of ``traced``'s arrays and whose
    namespace records every call (registered as ``"<name>:traced"``)."""

    __slots__ = ("traced",)
    traced: Backend
    array_type: type[TracedArray]
    scalar_type: type[TracedArray] | None

    @property
    def base(self) -> Backend:
        return self.traced


_tracing: dict[int, TracingBackend] = {}
_tracing_lock = threading.Lock()


def tracing_backend(b: Backend) -> TracingBackend:
    """The tracing Backend of ``b`` (made and registered on first use)."""
    tb = _tracing.get(id(b))
    if tb is not None:
        return tb
    with _tracing_lock:
        tb = _tracing.get(id(b))
        if tb is not None:
            return tb
        xp = RecordingNamespace(b.xp)
        atype = type(f"TracedArray_{b.name}", (TracedArray,), {"__slots__": (), "_xp": xp})
        stype = type(f"TracedScalar_{b.name}", (atype,), {"__slots__": ()})
        s2a = b.scalar_to_array
        fast = b._scatter_add_fast
        tb = TracingBackend(
            f"{b.name}:traced", xp, atype, multi_device=b.multi_device, lazy=b.lazy,
            scalar_type=stype if b.scalar_type is not None else None,
            scalar_to_array=None if s2a is None else _recorder(s2a, "scalar_to_array"),
            scatter_add=None if fast is None else _scatter_recorder(b),
            # the backend's fast kernels, recorded like the namespace's, so a replay computes
            # exactly what eager does (summation orders included), not the standard-op path
            subtract_at_labels=_fast_recorder(b._labels_fast, "subtract_at_labels"),
            windows=_fast_recorder(b._windows_fast, "windows"),
            fold=_fast_recorder(b._fold_fast, "fold"),
            scatter_add_rows=_fast_recorder(b._rows_fast, "scatter_add_rows"),
            gelu=_fast_recorder(b._gelu_fast, "gelu"),
            layer_norm=_fast_recorder(b._ln_fast, "layer_norm"),
            layer_norm_grad=_fast_recorder(b._ln_grad_fast, "layer_norm_grad"),
            from_host=_recorder(b.from_host, "from_host"),
            on_host=b._on_host,
            # the library's own special functions, recorded like the namespace's (so the replay
            # computes exactly what eager does, not the standard-op approximation)
            special=lambda: None if b.special is None else RecordingNamespace(b.special, "special."),
            replay_fn=b.replay_fn)
        tb.traced = b
        register(tb.name, tb, replace=True, listed=False)
        _tracing[id(b)] = tb
        return tb


def _fast_recorder(fast: Callable[..., Any] | None, name: str) -> Callable[..., Any] | None:
    return None if fast is None else _recorder(fast, name)


def _scatter_recorder(b: Backend) -> Callable[..., Any]:
    rec = _recorder(b.scatter_add, "scatter_add")

    def scatter_add(xp: Any, n: int, index: Any, values: Any) -> Any:
        return rec(n, index, values)

    return scatter_add


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """Run ops on the real arrays without recording them (a trace in this thread resumes after):
    for work a replay must not repeat, such as copying a changed learning rate to the device."""
    trace = active()
    _local.trace = None
    try:
        yield
    finally:
        _local.trace = trace


def start(trace: Trace) -> None:
    if active() is not None:
        raise CaptureError(f"{who()}: a step is already being traced in this thread; traces "
                           "cannot be nested")
    _local.trace = trace


def stop() -> None:
    _local.trace = None
