"""The batching backend of ``ag.vmap``: a Backend whose arrays carry a batch axis the program
does not see.

``vmap(f)`` runs ``f`` once, on Tensors whose data are :class:`BatchedArray` values: a real array
of the backend below (the *base*) whose leading axis is the batch, presented to the program
without it (``shape``, ``ndim`` and every axis argument are the per-example ones). Each function
of the namespace applies its **batching rule** -- one per function, by the standard's
categories (:mod:`agnograd.backends.batching_rules`) -- to the real arrays, and the Backend's own
kernels (scatter-add, windows, fold, label subtraction) fold the batch into the axis they
already loop over.

An operand without the batch (a closure, a parameter, a constant: an array of the base) is used
as it is; a result that depends on no batched operand stays unbatched (a base array). A function
with no rule falls back to a loop over the examples, with a one-time warning that names it
(:class:`VmapFallbackWarning`; the op-table test fails if a public op hits it). Reading a batched
value on the host (``bool``, ``float``, ``int``, ``item``, ``__array__``, DLPack) raises
:class:`VmapError`: it differs per example, so Python control flow cannot depend on it. Shapes that
depend on the values (``nonzero``, ``unique_*``, boolean masks) are refused the same way, as JAX
and ``torch.func`` refuse them.

Levels nest: the batching backend of a batching backend is the next ``vmap`` inwards, and a rule
calls the namespace of the level below, so each level sees only its own batch axis. Nothing here
imports an array library.
"""

from __future__ import annotations

import operator
import threading
import types
from collections.abc import Callable
from typing import Any

from . import Backend, register
from . import batching_rules as _rules
from .batching_rules import RULES, VmapError, VmapFallbackWarning

__all__ = ["BatchedArray", "BatchingBackend", "VmapError", "VmapFallbackWarning", "batching_backend",
           "RULES", "is_batched"]


_WHY_READ = ("its value differs per example, so Python control flow cannot depend on it: use "
             "ag.where or arithmetic instead of `if`, or move the branch outside vmap")


# ---------------------------------------------------------------------------------------------
# The batched array


def _host_read(what: str) -> Callable[..., Any]:
    def method(self: BatchedArray, *args: Any, **kwargs: Any) -> Any:
        raise VmapError(f"ag.vmap: {what} of a batched value (per-example shape {self.shape}, "
                        f"batch of {self._v.shape[0]}): {_WHY_READ}")

    return method


class LevelArray:
    """A value of one ``vmap`` level: :class:`BatchedArray` (one per example) or
    :class:`SharedArray` (the same for every example). The two share their layout, so a shared
    array written with a batched value becomes batched in place (``z[key] = g`` into fresh
    zeros, the commonest scatter of a VJP rule)."""

    __slots__ = ("_v", "__weakref__")
    __array_ufunc__ = None  # NumPy defers to our reflected operators
    __array_priority__ = 3000
    __hash__ = None  # type: ignore[assignment]
    _bb: BatchingBackend  # the level (set on each level's subclasses)

    def __init__(self, v: Any) -> None:
        self._v = v

    # what both kinds read the same way (shapes differ: a batched one hides its leading axis)

    @property
    def dtype(self) -> Any:
        return self._v.dtype

    @property
    def device(self) -> Any:
        return self._bb.base.device_of(self._v)

    def to_device(self, device: Any, /, stream: Any = None) -> Any:
        return type(self)(self._bb.base.to_device(self._v, device))

    def __iter__(self) -> Any:
        for i in range(len(self)):  # type: ignore[arg-type]
            yield self[i]  # type: ignore[index]

    def __array_namespace__(self, *, api_version: str | None = None) -> Any:
        return self._bb.xp

    def __matmul__(self, other: Any) -> Any:
        return _matmul_op(self, other)

    def __rmatmul__(self, other: Any) -> Any:
        return _rmatmul_op(self, other)

    def __imatmul__(self, other: Any) -> Any:
        return _imatmul_op(self, other)


class BatchedArray(LevelArray):
    """A real array ``_v`` of the base backend whose leading axis is the batch; the program sees
    ``_v``'s other axes (``shape``, ``ndim``, indices and axes are per example)."""

    __slots__ = ()

    @property
    def shape(self) -> tuple[Any, ...]:
        return tuple(self._v.shape[1:])

    @property
    def ndim(self) -> int:
        return int(self._v.ndim) - 1

    @property
    def size(self) -> int | None:
        n = 1
        for s in self._v.shape[1:]:
            if s is None:
                return None
            n *= s
        return n

    @property
    def T(self) -> Any:
        if self.ndim != 2:
            raise ValueError(f".T needs a 2-d array, not per-example shape {self.shape}; use "
                             "permute_dims or matrix_transpose")
        return type(self)(self._bb.bx.permute_dims(self._v, (0, 2, 1)))

    @property
    def mT(self) -> Any:
        return type(self)(self._bb.bx.matrix_transpose(self._v))

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-d array")
        return int(self._v.shape[1])

    def __getitem__(self, key: Any) -> Any:
        bb = self._bb
        return _out(bb, _rules._getitem(bb, self, _un(bb, key)))

    def __setitem__(self, key: Any, value: Any) -> None:
        bb = self._bb
        _rules._setitem(bb, self, _un(bb, key), _un(bb, value))

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

    def __repr__(self) -> str:
        return (f"<batched shape={self.shape} dtype={self.dtype} batch={self._v.shape[0]} "
                f"(ag.vmap)>")


def _delegate(name: str) -> Callable[..., Any]:
    def method(self: SharedArray, *args: Any, **kwargs: Any) -> Any:
        return getattr(self._v, name)(*args, **kwargs)

    return method


class SharedArray(LevelArray):
    """A value of a ``vmap`` level that is the same for every example: a real array ``_v`` of
    the base backend, held so that operators and functions reach the level's rules (a base
    array on the left of an operator may refuse a batched one on the right). Reading it on the
    host is allowed (Python control flow on it is the same for every example)."""

    __slots__ = ()

    @property
    def shape(self) -> tuple[Any, ...]:
        return tuple(self._v.shape)

    @property
    def ndim(self) -> int:
        return int(self._v.ndim)

    @property
    def size(self) -> Any:
        return self._v.size

    @property
    def T(self) -> Any:
        return type(self)(self._v.T)

    @property
    def mT(self) -> Any:
        return type(self)(self._v.mT)

    def __len__(self) -> int:
        return len(self._v)

    def _promote(self, n: int) -> None:
        """Become batched: ``n`` copies of the value (in place: every holder sees the batch)."""
        bb = self._bb
        bx = bb.bx
        v = self._v
        self._v = bx.asarray(bx.broadcast_to(bx.expand_dims(v, axis=0), (n,) + tuple(v.shape)),
                             copy=True)
        self.__class__ = bb.atype  # type: ignore[assignment]

    def __getitem__(self, key: Any) -> Any:
        bb = self._bb
        k = _un(bb, key)
        if _rules._size(bb, k) is None:
            return _out(bb, self._v[k])
        return _rules._getitem(bb, self._v, k)

    def __setitem__(self, key: Any, value: Any) -> None:
        bb = self._bb
        k, val = _un(bb, key), _un(bb, value)
        n = _rules._size(bb, [k, val])
        if n is None:
            self._v[k] = val
            return
        self._promote(n)
        _rules._setitem(bb, self, k, val)

    __bool__ = _delegate("__bool__")
    __float__ = _delegate("__float__")
    __int__ = _delegate("__int__")
    __complex__ = _delegate("__complex__")
    __index__ = _delegate("__index__")
    __array__ = _delegate("__array__")
    __dlpack__ = _delegate("__dlpack__")
    __dlpack_device__ = _delegate("__dlpack_device__")
    item = _delegate("item")
    tolist = _delegate("tolist")

    def __repr__(self) -> str:
        return f"<shared {self._v!r} (ag.vmap)>"


def is_batched(a: Any) -> bool:
    """Whether ``a`` is a batched array (of any vmap level)."""
    return isinstance(a, BatchedArray)


def _un(bb: BatchingBackend, a: Any) -> Any:
    """``a`` with this level's shared arrays replaced by their values (for the rules)."""
    t = type(a)
    if t is bb.ut:
        return a._v
    if t is tuple or t is list:
        if any(type(e) is bb.ut or type(e) in (tuple, list) for e in a):
            return t(_un(bb, e) for e in a)
        return a
    if t is dict:
        return {k: _un(bb, e) for k, e in a.items()}
    if t is slice and (type(a.start) is bb.ut or type(a.stop) is bb.ut or type(a.step) is bb.ut):
        return slice(_un(bb, a.start), _un(bb, a.stop), _un(bb, a.step))
    return a


def _out(bb: BatchingBackend, r: Any) -> Any:
    """A rule's result as values of the level: batched ones as they are, base arrays shared."""
    t = type(r)
    if t is bb.atype or t is bb.ut:
        return r
    if isinstance(r, (tuple, list)):
        return _rules._rebuild(r, [_out(bb, e) for e in r])
    return share(bb, r)


def _inner(self: LevelArray, other: Any) -> bool:
    """Whether ``other`` is a value of a level inside ``self``'s (a ``vmap`` nested in the one
    that made ``self``): its operator must act, seeing ``self`` as shared by its examples."""
    return isinstance(other, LevelArray) and other._bb.depth > self._bb.depth


def _binop(op: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def method(self: LevelArray, other: Any) -> Any:
        if _inner(self, other):
            return NotImplemented
        bb = self._bb
        o = _un(bb, other)
        if type(self) is bb.atype or type(o) is bb.atype:
            return _rules._elementwise(bb, op, _un(bb, self), o)
        return _out(bb, op(self._v, o))

    return method


def _rbinop(op: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def method(self: LevelArray, other: Any) -> Any:
        if _inner(self, other):
            return NotImplemented
        bb = self._bb
        o = _un(bb, other)
        if type(self) is bb.atype or type(o) is bb.atype:
            return _rules._elementwise(bb, op, o, _un(bb, self))
        return _out(bb, op(o, self._v))

    return method


def _ibinop(op: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def method(self: Any, other: Any) -> Any:
        if _inner(self, other):
            return NotImplemented
        bb = self._bb
        o = _un(bb, other)
        if type(o) is bb.atype:
            if o.ndim > self.ndim:
                raise VmapError(f"ag.vmap: an in-place operator on per-example shape {self.shape} "
                                f"with an operand of shape {o.shape} would change its shape")
            if type(self) is bb.ut:
                self._promote(int(o._v.shape[0]))
            o = _rules._pad(bb, o._v, self.ndim - o.ndim)
        # (an unbatched operand broadcasts from the right, past the batch axis)
        self._v = op(self._v, o)
        return self

    return method


def _unop(op: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def method(self: LevelArray) -> Any:
        return type(self)(op(self._v))

    return method


_BIN = ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "and_", "or_", "xor", "lshift",
        "rshift")
for _cls in (BatchedArray, SharedArray):
    for _name in _BIN:
        _d = _name.rstrip("_")
        setattr(_cls, f"__{_d}__", _binop(getattr(operator, _name)))
        setattr(_cls, f"__r{_d}__", _rbinop(getattr(operator, _name)))
        setattr(_cls, f"__i{_d}__", _ibinop(getattr(operator, "i" + _d)))
    for _name in ("eq", "ne", "lt", "le", "gt", "ge"):
        setattr(_cls, f"__{_name}__", _binop(getattr(operator, _name)))
    for _name in ("neg", "pos", "abs", "invert"):
        setattr(_cls, f"__{_name}__", _unop(getattr(operator, _name)))


def _matmul_op(self: LevelArray, other: Any) -> Any:
    if _inner(self, other):
        return NotImplemented
    bb = self._bb
    return _out(bb, _rules._matmul(bb, operator.matmul, _un(bb, self), _un(bb, other)))


def _rmatmul_op(self: LevelArray, other: Any) -> Any:
    if _inner(self, other):
        return NotImplemented
    bb = self._bb
    return _out(bb, _rules._matmul(bb, operator.matmul, _un(bb, other), _un(bb, self)))


def _imatmul_op(self: Any, other: Any) -> Any:
    if _inner(self, other):
        return NotImplemented
    r = _matmul_op(self, other)
    if r.shape != self.shape:
        raise VmapError(f"ag.vmap: @= would change per-example shape {self.shape}")
    if type(r) is not type(self):
        self.__class__ = type(r)
    self._v = r._v
    return self




# ---------------------------------------------------------------------------------------------
# The namespace and the Backend


def _batched_fn(bb: BatchingBackend, fn: Any, name: str,
                rule: Callable[..., Any] | None = None) -> Callable[..., Any]:
    """``fn`` of the base namespace as a function of the level: shared arrays unwrapped, the
    rule applied, base arrays among the results shared."""
    rule = rule or _rules.RULES.get(name)
    ut = bb.ut

    def unwrap(args: tuple[Any, ...]) -> tuple[Any, ...]:
        for a in args:
            ta = type(a)
            if ta is ut or ta is list or ta is tuple or ta is slice:
                return _un(bb, args)  # type: ignore[no-any-return]
        return args

    if rule is None:
        def batched(*args: Any, **kwargs: Any) -> Any:
            args = unwrap(args)
            if kwargs:
                kwargs = _un(bb, kwargs)
            if _rules._size(bb, args, kwargs) is None:
                return _out(bb, fn(*args, **kwargs))
            return _out(bb, _rules._loop(bb, fn, args, kwargs, name))
    else:
        def batched(*args: Any, **kwargs: Any) -> Any:
            args = unwrap(args)
            if kwargs:
                kwargs = _un(bb, kwargs)
            return _out(bb, rule(bb, fn, *args, **kwargs))

    batched.__name__ = name
    batched.__qualname__ = name
    batched.__wrapped__ = fn  # type: ignore[attr-defined]
    return batched


class BatchingNamespace:
    """The base namespace with every function replaced by its batched form (made on first
    access); dtypes and constants pass through; ``linalg`` and ``fft`` are batching namespaces
    too."""

    def __init__(self, bb: BatchingBackend, real: Any) -> None:
        self._bb = bb
        self._real = real
        self.__name__ = getattr(real, "__name__", "xp") + ".vmap"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        v = getattr(self._real, name)
        if isinstance(v, types.ModuleType) or (name in ("linalg", "fft") and not callable(v)):
            w: Any = BatchingNamespace(self._bb, v)
        elif callable(v) and not isinstance(v, type):
            w = _batched_fn(self._bb, v, name)
        else:
            w = v
        setattr(self, name, w)
        return w

    def __repr__(self) -> str:
        return f"BatchingNamespace({self._real!r})"


class _Special:
    """The base's special functions (erf, lgamma, ...), each elementwise."""

    def __init__(self, bb: BatchingBackend, real: Any) -> None:
        self._bb = bb
        self._real = real

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        special = _batched_fn(self._bb, getattr(self._real, name), name, _rules._elementwise)
        setattr(self, name, special)
        return special


class BatchingBackend(Backend):
    """A Backend whose arrays are :class:`BatchedArray` values over ``base``'s arrays (one
    ``vmap`` level), and :class:`SharedArray` values for those without the batch."""

    __slots__ = ("_base", "atype", "ut", "bx", "depth")
    _base: Backend
    atype: type[BatchedArray]
    ut: type[SharedArray]
    bx: Any
    depth: int

    @property
    def base(self) -> Backend:
        return self._base

    def fix(self, a: Any) -> Any:
        # (a rule's result as it is: the crossings' rules return the level below's values)
        t = type(a)
        if t is self.atype or t is self.ut:
            return a
        return self._base.fix(a)

    def is_array(self, obj: Any) -> bool:
        t = type(obj)
        return t is self.atype or t is self.ut or self._base.is_array(obj)

    def device_of(self, a: Any) -> Any:
        t = type(a)
        return self._base.device_of(a._v if t is self.atype or t is self.ut else a)

    def to_device(self, a: Any, device: Any) -> Any:
        t = type(a)
        if t is self.atype or t is self.ut:
            return t(self._base.to_device(a._v, device))
        return share(self, self._base.to_device(a, device))

    def reads_cheaply(self, a: Any) -> bool:
        # a batched value is never read: ops skip their host-side checks for it, as on a lazy
        # backend (its examples would each need their own answer)
        t = type(a)
        if t is self.atype:
            return False
        return self._base.reads_cheaply(a._v if t is self.ut else a)

    def is_private(self, a: Any) -> bool:
        return False

    def copy(self, a: Any) -> Any:
        t = type(a)
        if t is self.atype or t is self.ut:
            return t(self._base.copy(a._v))
        return share(self, self._base.copy(a))

    def asarray(self, obj: Any, dtype: Any = None, device: Any = None, copy: bool | None = None) -> Any:
        from . import given

        return self.xp.asarray(obj, **given(dtype=dtype, device=device, copy=copy))

    def from_host(self, host: Any) -> Any:
        return share(self, self._base.from_host(host))

    def first_false(self, flags: Any) -> int | None:
        # a check holds when it holds for every example
        at = self.atype
        bx = self.bx
        return self._base.first_false([bx.all(f._v) if type(f) is at else _un(self, f)
                                       for f in flags])

    # the Backend's kernels: the batch folded into the axis each already loops over

    def put(self, xp: Any, shape: tuple[int, ...], key: Any, value: Any, dtype: Any,
            device: Any) -> Any:
        key, value = _un(self, key), _un(self, value)
        size = _rules._size(self, [key, value])
        if size is None:
            return share(self, self._base.put(self.bx, shape, key, value, dtype, device))
        z = self.atype(self.bx.zeros((size,) + tuple(shape), dtype=dtype, device=device))
        _rules._setitem(self, z, key, value)
        return z

    def scatter_add(self, n: int, index: Any, values: Any) -> Any:
        index, values = _un(self, index), _un(self, values)
        size = _rules._size(self, [index, values])
        if size is None:
            return share(self, self._base.scatter_add(n, index, values))
        bx = self.bx
        i = _rules._full(self, index, size)
        v = _rules._full(self, values, size)
        off = bx.reshape(bx.arange(size, dtype=i.dtype, device=self._base.device_of(i)) * n,
                         (size, 1))
        flat = self._base.scatter_add(size * n, bx.reshape(i + off, (-1,)), bx.reshape(v, (-1,)))
        return self.atype(bx.reshape(flat, (size, n)))

    def scatter_add_rows(self, xp: Any, n: int, index: Any, values: Any) -> Any:
        index, values = _un(self, index), _un(self, values)
        size = _rules._size(self, [index, values])
        if size is None:
            return share(self, self._base.scatter_add_rows(self.bx, n, index, values))
        bx = self.bx
        i = _rules._full(self, index, size)  # (size, m)
        v = _rules._full(self, values, size)  # (size, m, d)
        d = v.shape[2]
        off = bx.reshape(bx.arange(size, dtype=i.dtype, device=self._base.device_of(i)) * n,
                         (size, 1))
        rows = self._base.scatter_add_rows(bx, size * n, bx.reshape(i + off, (-1,)),
                                           bx.reshape(v, (-1, d)))
        return self.atype(bx.reshape(rows, (size, n, d)))

    def subtract_at_labels(self, xp: Any, a: Any, index: Any, values: Any, classes: Any) -> Any:
        a, index, values, classes = (_un(self, e) for e in (a, index, values, classes))
        size = _rules._size(self, [a, index, values])
        if size is None:
            return share(self, self._base.subtract_at_labels(self.bx, a, index, values, classes))
        bx = self.bx
        av = a._v if type(a) is self.atype else bx.asarray(_rules._full(self, a, size), copy=True)
        m, c = av.shape[1], av.shape[2]
        iv = bx.reshape(_rules._full(self, index, size), (size * m, 1))
        vv = values
        if _rules._is_array(values):
            vv = bx.reshape(bx.broadcast_to(_rules._full(self, values, size), (size, m, 1)), (size * m, 1))
        r = self._base.subtract_at_labels(bx, bx.reshape(av, (size * m, c)), iv, vv, classes)
        return self.atype(bx.reshape(r, (size, m, c)))

    def windows(self, xp: Any, x: Any, kernel: tuple[int, ...], stride: tuple[int, ...],
                dilation: tuple[int, ...], out: tuple[int, ...]) -> Any:
        x = _un(self, x)
        if type(x) is not self.atype:
            return share(self, self._base.windows(self.bx, x, kernel, stride, dilation, out))
        bx = self.bx
        v = x._v
        s = tuple(v.shape)
        w = self._base.windows(bx, bx.reshape(v, (s[0] * s[1],) + s[2:]), kernel, stride,
                               dilation, out)
        return self.atype(bx.reshape(w, (s[0], s[1]) + tuple(w.shape[1:])))

    def fold(self, xp: Any, g: Any, shape: tuple[int, ...], kernel: tuple[int, ...],
             stride: tuple[int, ...], dilation: tuple[int, ...]) -> Any:
        g = _un(self, g)
        pieces = g if isinstance(g, list) else [g]
        size = _rules._size(self, pieces)
        if size is None:
            return share(self, self._base.fold(self.bx, g, shape, kernel, stride, dilation))
        bx = self.bx

        def merge(p: Any) -> Any:
            v = _rules._full(self, p, size)
            s = tuple(v.shape)
            return bx.reshape(v, (s[0] * s[1],) + s[2:])

        gg = [merge(p) for p in g] if isinstance(g, list) else merge(g)
        r = self._base.fold(bx, gg, (size * shape[0],) + tuple(shape[1:]), kernel, stride,
                            dilation)
        return self.atype(bx.reshape(r, (size,) + tuple(shape)))


def share(bb: BatchingBackend, a: Any) -> Any:
    """A value of a level under ``bb`` as a value of ``bb``, shared by every example (a shared
    array at each level crossed)."""
    t = type(a)
    if t is bb.atype or t is bb.ut:
        return a
    base = bb._base
    a = share(base, a) if isinstance(base, BatchingBackend) else base.fix(a)
    if not base.is_array(a):
        return a  # a Python scalar or metadata
    return bb.ut(a)


_levels: dict[int, BatchingBackend] = {}
_levels_lock = threading.Lock()


def batching_backend(base: Backend) -> BatchingBackend:
    """The batching Backend over ``base`` (one per base, made and registered on first use):
    ``vmap`` inside ``vmap`` is the batching backend of a batching backend."""
    bb = _levels.get(id(base))
    if bb is not None:
        return bb
    with _levels_lock:
        bb = _levels.get(id(base))
        if bb is not None:
            return bb
        depth = base.depth + 1 if isinstance(base, BatchingBackend) else 1
        tag = f"{depth}_{base.name.replace(':', '_')}"
        bb = BatchingBackend(f"{base.name}:vmap", None, BatchedArray, multi_device=base.multi_device,
                             lazy=base.lazy, on_host=None)
        level = bb
        bb._special_loader = lambda: None if base.special is None else _Special(level, base.special)
        bb.atype = type(f"BatchedArray{tag}", (BatchedArray,), {"__slots__": (), "_bb": bb})
        bb.ut = type(f"SharedArray{tag}", (SharedArray,), {"__slots__": (), "_bb": bb})
        bb._base = base
        bb.array_type = bb.atype
        bb.scalar_type = bb.ut  # (so that backend_of_array knows both types)
        bb.bx = base.xp
        bb.depth = depth
        bb.xp = BatchingNamespace(bb, base.xp)
        register(bb.name, bb, replace=True, listed=False)
        _levels[id(base)] = bb
        return bb


# ---------------------------------------------------------------------------------------------
# The levels active in this thread (innermost last), for the transforms above the backends


class _Active(threading.local):
    def __init__(self) -> None:
        self.stack: list[BatchingBackend] = []
        self.sizes: list[int] = []
        # backward walks running: they may run the rules of a graph recorded inside a vmap call
        # that has returned (grad of vmap, backward() after an ensemble's vmap) -- legitimately
        self.walks = 0


active = _Active()

ACTIVE = 0
"""How many ``vmap`` calls run now, in any thread: a one-load test for the transforms."""

CALLS = 0
"""How many ``vmap`` calls have started (ever): a graph recorded while it did not change holds
no node of a ``vmap`` level it did not start inside."""


def innermost() -> BatchingBackend | None:
    """The innermost active level of this thread, if any."""
    s = active.stack
    return s[-1] if s else None


def depth_of(b: Backend) -> int:
    return b.depth if isinstance(b, BatchingBackend) else 0


def below(lo: Backend, hi: Backend) -> bool:
    """Whether ``lo`` is a level under ``hi`` (``hi`` batches, directly or not, over ``lo``)."""
    while isinstance(hi, BatchingBackend):
        hi = hi._base
        if hi is lo:
            return True
    return False


def settle(b: Backend, new: Any, what: str, shape: Any) -> Any:
    """``new``, the data an in-place op computed for a tensor of backend ``b``, as a value of
    ``b``: an operand from a ``vmap`` level above ``b`` made it a value of that level, which is
    fine when it is the same for every example (shared) and refused when it is batched -- the
    tensor is one array shared by every example (PyTorch refuses it too)."""
    d = depth_of(b)
    while isinstance(new, LevelArray) and new._bb.depth > d:
        if isinstance(new, BatchedArray):
            raise VmapError(
                f"ag.vmap: {what} writes a batched value (one per example) into a tensor of shape "
                f"{shape} that every example shares (made outside the function, or not from a "
                "mapped input); compute a new tensor instead (y = x + v, ag.where), or keep the "
                "state outside vmap (BatchNorm in training mode: use eval mode, or GroupNorm)")
        new = new._v
    return new


def unshared(a: Any, b: Backend) -> Any:
    """``a`` as a value of backend ``b``: the shared arrays of levels above ``b`` unwrapped (a
    batched one is left as it is)."""
    d = depth_of(b)
    while isinstance(a, SharedArray) and a._bb.depth > d:
        a = a._v
    return a


def level_of(a: Any, b: Backend) -> Backend:
    """The backend of a raw value ``a`` meant for a tensor of backend ``b``: ``b``, or the
    ``vmap`` level above ``b`` that ``a`` belongs to (a batched cotangent reaching a rule of a
    graph made outside the ``vmap``)."""
    if isinstance(a, LevelArray) and below(b, a._bb):
        return a._bb
    return b


def physical(bb: BatchingBackend, data: Any, n: int) -> Any:
    """A value of level ``bb`` as the real array of the level below, batch first (a shared
    value broadcast to ``n`` examples)."""
    if type(data) is bb.atype:
        return data._v
    bx = bb.bx
    if type(data) is bb.ut:
        data = data._v
    return bx.broadcast_to(bx.expand_dims(data, axis=0), (n,) + tuple(data.shape))


def size_of(bb: BatchingBackend) -> int | None:
    """The batch size of the running ``vmap`` call of level ``bb`` in this thread, if any."""
    s = active.stack
    for i in range(len(s) - 1, -1, -1):
        if s[i] is bb:
            return active.sizes[i]
    return None


def push(bb: BatchingBackend, n: int) -> None:
    global ACTIVE, CALLS
    active.stack.append(bb)
    active.sizes.append(n)
    ACTIVE += 1
    CALLS += 1


def pop() -> None:
    global ACTIVE
    active.stack.pop()
    active.sizes.pop()
    ACTIVE -= 1

