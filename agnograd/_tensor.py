"""Tensor: one backend array, plus what reverse mode needs to know about it.

A Tensor holds its array (``.data``), the backend it lives on, and -- when an op that needed a
gradient produced it -- the graph node and output slot it came from. This module sits below the
engine (``agnograd.autograd``) in the import order and imports none of it at module level.
Operators (``+``, ``@``, ``[]``, ...) are installed by the op modules when the package is
imported (see ``agnograd/_ops/__init__.py``): the ops need Tensor, and Tensor's operators need
the ops.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from ._dtypes import DType, default_float_for, from_backend_dtype, to_backend_dtype
from .backends import (
    Backend,
    backend_of_array,
    backend_of_device,
    get_backend,
    given,
    host_array,
    numpy_export,
    transfer,
)
from .backends import batching as _batching
from .capture import _state as _capture

__all__ = ["Tensor", "tensor", "as_tensor", "TensorLike", "SupportsArray", "RetainGrad"]


class SupportsArray(Protocol):
    """A backend array as the type checker sees one (NumPy, CuPy, PyTorch, JAX, ...): anything
    with a ``shape`` and a ``dtype``. For static typing only; ops decide at run time."""

    @property
    def shape(self) -> Any: ...

    @property
    def dtype(self) -> Any: ...


class Tensor:
    """A differentiable array on any Array API backend.

    Create one with :func:`agnograd.tensor`. ``.data`` is the backend array (a NumPy, CuPy,
    array_api_strict, ... array); ``.grad`` the accumulated gradient after :meth:`backward`.
    """

    __slots__ = ("data", "_backend", "_node", "_index", "_requires_grad", "_grad", "_hooks",
                 "_version", "_view", "_dual",  # _dual: forward mode's Dual, unset unless one
                 "__weakref__")
    data: Any
    _backend: Backend
    _node: Any
    _index: int
    _requires_grad: bool
    _grad: Tensor | None
    _hooks: list[Any] | None
    _version: list[Any] | None
    # Set only on tensors made by a view op (never read on the fast path; an unset slot):
    # (root Tensor, chain of (op, args) from the root's data to this one's, grad flag).
    _view: tuple[Tensor, tuple[tuple[Any, tuple[Any, ...]], ...], bool]
    _dual: Any  # forward mode (agnograd.autograd.forward.Dual); unset unless one

    # Python compares and hashes arrays elementwise; a Tensor is not hashable (like ndarray).
    __hash__ = None  # type: ignore[assignment]
    # Make NumPy defer to our reflected operators (ndarray + Tensor -> Tensor.__radd__).
    __array_priority__ = 1000
    __array_ufunc__ = None

    @property
    def _tangent(self) -> Any:
        """Forward mode's :class:`~agnograd.autograd.forward.Dual` of this Tensor, or ``None``.
        A Dual whose trace has ended (a value that leaked out of a finished ``jvp`` and is used
        in a later one, or in a sibling at the same depth) is a constant to every live trace:
        it reads as the levels below it see the value (``None`` at level 1), never as the live
        trace's own perturbation of that level (JAX raises for such a leak)."""
        d = getattr(self, "_dual", None)
        while d is not None and not d.trace.alive:
            p = d.p
            d = None if p is None else p._tangent
        return d

    @_tangent.setter
    def _tangent(self, d: Any) -> None:
        self._dual = d

    def __init__(self, data: Any, requires_grad: bool = False) -> None:
        t = tensor(data, requires_grad=requires_grad)
        self.data = t.data
        self._backend = t._backend
        self._node = t._node  # a stacked sequence of Tensors keeps its graph (see tensor())
        self._index = t._index
        self._requires_grad = t._requires_grad
        self._grad = None
        self._hooks = None
        self._version = t._version  # shared with obj when it is a Tensor whose data t kept

    @staticmethod
    def _wrap(data: Any, backend: Backend, node: Any = None, index: int = 0) -> Tensor:
        """Wrap a raw array without checks (the ops' fast path)."""
        if type(data) is not backend.array_type:
            data = backend.fix(data)
        t = _new(Tensor)
        t.data = data
        t._backend = backend
        t._node = node
        t._index = index
        t._requires_grad = node is not None
        t._grad = None
        t._hooks = None
        t._version = None  # [count] of in-place changes, made when a graph first saves the data
        return t

    # -- attributes ----------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def dtype(self) -> DType:
        return from_backend_dtype(self.data.dtype)

    @property
    def device(self) -> Any:
        return self._backend.device_of(self.data)

    @property
    def ndim(self) -> int:
        return self.data.ndim  # type: ignore[no-any-return]

    @property
    def size(self) -> int | None:
        n = 1
        for s in self.data.shape:
            if s is None:
                return None
            n *= s
        return n

    @property
    def backend(self) -> str:
        """Name of the backend that holds ``.data`` (``"numpy"``, ``"cupy"``, ...)."""
        return self._backend.name

    @property
    def requires_grad(self) -> bool:
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, flag: bool) -> None:
        self.requires_grad_(flag)

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        """Mark this leaf as needing a gradient (in place); returns ``self``."""
        if self._node is not None:
            if requires_grad:
                return self
            raise RuntimeError(
                "requires_grad can only be changed on leaf tensors; this tensor was produced by "
                f"the '{self._node.name}' op. Use .detach() to get a leaf that needs no gradient."
            )
        if requires_grad:
            _check_differentiable_dtype(self, "requires_grad")
        self._requires_grad = bool(requires_grad)
        _WORLD[0] += 1  # a compiled step recorded with the old flag must not replay (capture)
        return self

    @property
    def grad(self) -> Tensor | None:
        """The gradient accumulated by :meth:`backward` (``None`` until then; assign ``None``
        to clear it). Leaves that require grad get one; an op's output only after
        :meth:`retain_grad` (reading it otherwise warns, as in PyTorch)."""
        if self._node is not None and self._hooks is None:
            warnings.warn(
                "The .grad attribute of a Tensor that is not a leaf Tensor is being accessed. Its "
                ".grad attribute won't be populated during backward(). If you indeed want the "
                "gradient for a non-leaf Tensor, call .retain_grad() on it before backward(); "
                "if you meant a leaf, create it with ag.tensor(..., requires_grad=True) (or "
                f".detach()). This tensor was produced by the '{self._node.name}' op.",
                UserWarning, stacklevel=2)
        return self._grad

    @grad.setter
    def grad(self, value: Tensor | None) -> None:
        if value is not None:
            if type(value) is not Tensor:
                raise TypeError(
                    f"a gradient must be assigned as a Tensor (or None), not "
                    f"{type(value).__name__}; wrap it: x.grad = ag.tensor(g, dtype=x.dtype)"
                )
            if value._backend is not self._backend:
                raise TypeError(
                    f"a gradient on backend '{value.backend}' cannot be assigned to a tensor on "
                    f"backend '{self.backend}'; move it with ag.to_backend(g, '{self.backend}')"
                )
            if value.shape != self.shape:
                raise ValueError(
                    f"gradient shape {value.shape} does not match the tensor's shape {self.shape}"
                )
            if value.data.dtype != self.data.dtype:
                raise TypeError(
                    f"a gradient of dtype {value.dtype.name} cannot be assigned to a {self.dtype.name} "
                    f"tensor (shape {self.shape}); a gradient has its tensor's dtype: convert "
                    f"it with ag.astype(g, ag.{self.dtype.name})"
                )
        # (No world-epoch bump: a compiled step reads .grad through its leaf on every call and
        # checks whether it is None there -- this setter runs in every zero_grad.)
        self._grad = value

    def retain_grad(self) -> None:
        """Keep this tensor's gradient in ``.grad`` after :meth:`backward` even though an op
        produced it (PyTorch's ``retain_grad``): ``.grad`` then holds ``dL/dself``, accumulating
        over backward calls like a leaf's, with a graph under ``create_graph=True``. It runs
        after this tensor's other hooks (their replacements included), and only in
        ``backward`` (the function transforms, which return gradients, leave it alone). A
        no-op on a leaf that requires grad."""
        if self._node is None:
            if not self._requires_grad:
                raise RuntimeError(
                    "retain_grad() on a tensor that does not require grad: no gradient will "
                    f"ever reach it (shape {self.shape}); set requires_grad=True first")
            return
        if self._hooks is not None:  # already retained (a non-leaf's _hooks marks it)
            return
        hook = RetainGrad(self)
        self._hooks = [hook]
        hook.attach(self)

    @property
    def retains_grad(self) -> bool:
        """Whether :meth:`retain_grad` was called on this (non-leaf) tensor."""
        return self._node is not None and self._hooks is not None

    @property
    def is_leaf(self) -> bool:
        """True for tensors not produced by a recorded op (user-created tensors)."""
        return self._node is None

    @property
    def node(self) -> Any:
        """The graph node that produced this tensor (``None`` for leaves)."""
        return self._node

    # -- graph ---------------------------------------------------------------------------------
    def backward(
        self, grad: Any = None, retain_graph: bool | None = None, create_graph: bool = False
    ) -> None:
        """Backpropagate from this tensor, accumulating into the ``.grad`` of every leaf that
        requires grad.

        Args:
            grad: dL/dself, same shape as this tensor; may be omitted for a scalar (then 1).
            retain_graph: keep the saved arrays so the graph can be backpropagated again
                (defaults to ``create_graph``).
            create_graph: record the backward pass itself, so the gradients are differentiable
                (for higher-order derivatives).
        """
        if not self._requires_grad:
            raise RuntimeError(
                "backward() on a tensor that does not require grad: no input of the computation "
                "that produced it had requires_grad=True (or it was computed under no_grad())"
            )
        if isinstance(self._backend, _batching.BatchingBackend):
            raise _batching.VmapError(
                "Tensor.backward() inside ag.vmap: a leaf's .grad would have to hold one gradient "
                "per example; take per-example gradients with ag.grad or ag.vjp inside vmap "
                "(vmap(grad(loss))), or call backward() on the result outside vmap to sum them")
        g = _root_grad(self, grad, create_graph)
        keep = create_graph if retain_graph is None else retain_graph
        LATE.backward([self], [g], retain_graph=bool(keep), create_graph=bool(create_graph))

    def register_hook(self, fn: Any) -> RemovableHandle:
        """Call ``fn(grad)`` when the gradient with respect to this tensor has been computed in a
        backward pass; ``fn`` may return a Tensor to use instead. Returns a handle whose
        ``remove()`` unregisters it."""
        if not self._requires_grad:
            raise RuntimeError("register_hook on a tensor that does not require grad: no gradient "
                               "will ever reach it; set requires_grad=True on the leaves first")
        if self._node is None:
            if self._hooks is None:
                self._hooks = []
            hooks = self._hooks
        else:
            if self._node.hooks is None:
                self._node.hooks = {}
            hooks = self._node.hooks.setdefault(self._index, [])
            if hooks and type(hooks[-1]) is RetainGrad:  # retain_grad sees the final gradient
                hooks.insert(len(hooks) - 1, fn)
                return RemovableHandle(hooks, fn)
        hooks.append(fn)
        _WORLD[0] += 1  # a compiled step recorded without this hook must not replay (capture)
        return RemovableHandle(hooks, fn)

    def _become(self, res: Tensor) -> None:
        """Take ``res`` -- the out-of-place result of an in-place op that records a graph
        (``x += y``, ``x[k] = v``) -- as this tensor's data and graph position. Its new data is
        new storage: earlier saves keep the old, untouched array, so the graphs that saved it
        stay right (no version bump); the version counter stays shared with every alias of
        the storage (views are regenerated from this tensor, see ``_ops/_views.py``); a
        retained gradient follows."""
        if res._backend is not self._backend:  # an operand from a vmap level above
            _batching.settle(self._backend, res.data, "an in-place op", self.shape)
            from .batching import unlift

            res = unlift(res, self._backend)
        self.data, self._node, self._index = res.data, res._node, res._index
        self._requires_grad = res._requires_grad
        if getattr(res, "_tangent", None) is not None or getattr(self, "_tangent", None) is not None:
            self._tangent = getattr(res, "_tangent", None)  # forward mode: the tangent follows
        hooks = self._hooks
        if hooks is not None and self._node is not None and type(hooks[0]) is RetainGrad:
            hooks[0].moved(self)

    def detach(self) -> Tensor:
        """The same data as a new leaf that needs no gradient (no copy; in-place changes through
        either tensor count against both when a graph saved it)."""
        return view_of(self, Tensor._wrap(self.data, self._backend), _detached, (), False)

    def item(self) -> Any:
        """The value of a one-element tensor as a Python scalar (copies to the host): a bool,
        int, float or complex by the dtype (typed ``Any``, as NumPy's ``item``, so that
        ``float(t.item())`` and ``t.item() < 0.5`` type-check)."""
        if self.size != 1:
            raise ValueError(f"item() needs a tensor with one element, not shape {self.shape}")
        if _capture.ACTIVE:
            _capture.refuse("Tensor.item()")
        return host_array(self.data).reshape(()).item()

    def numpy(self) -> Any:
        """A NumPy copy of the data (a view for the NumPy backend)."""
        if _capture.ACTIVE:
            _capture.refuse("Tensor.numpy()")
        return host_array(self.data)

    def __repr__(self) -> str:
        if self._backend.lazy:
            body = f"<lazy shape={self.shape}>"
        elif not self._backend.reads_cheaply(self.data):
            body = repr(self.data)  # (a batched value of ag.vmap: one per example)
        else:
            body = " ".join(str(host_array(self.data)).split("\n"))
            body = body.replace("  ", " ")
        extra = ""
        if self._node is not None:
            extra = f", node=<{self._node.name}>"
        elif self._requires_grad:
            extra = ", requires_grad=True"
        return f"Tensor({body}, backend='{self.backend}', dtype={self.dtype.name}{extra})"

    __str__ = __repr__

    # -- conversion protocols ------------------------------------------------------------------
    def __array_namespace__(self, *, api_version: str | None = None) -> Any:
        if api_version is not None and api_version not in _API_VERSIONS:
            raise ValueError(f"agnograd does not implement Array API version {api_version!r}")
        return LATE.namespace

    def __dlpack__(self, *, stream: Any = None, max_version: tuple[int, int] | None = None,
                   dl_device: Any = None, copy: bool | None = None) -> Any:
        """DLPack export of the data (``np.from_dlpack(t)``, ``torch.from_dlpack(t)``, ...).

        Raises:
            RuntimeError: the tensor requires grad (as PyTorch's does): the importer would
                compute without the graph; export ``t.detach()`` when that is meant.
        """
        if self._requires_grad:
            raise export_error(self, "__dlpack__ (DLPack export, e.g. np.from_dlpack(t))")
        return self.data.__dlpack__(**given(stream=stream, max_version=max_version,
                                            dl_device=dl_device, copy=copy))

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> Any:
        """The data as a NumPy array (``np.asarray(t)``; a view on the NumPy backend unless
        ``dtype``/``copy`` ask for a copy), computed first on a lazy backend.

        Raises:
            RuntimeError: the tensor requires grad (as PyTorch's does): NumPy would compute
                without the graph; convert ``t.detach()`` when that is meant.
        """
        if self._requires_grad:
            raise export_error(self, "__array__ (NumPy conversion, e.g. np.asarray(t))")
        if _capture.ACTIVE:
            _capture.refuse("Tensor.__array__ (np.asarray of a Tensor)")
        return numpy_export(self.data, self._backend, dtype, copy)

    def __dlpack_device__(self) -> tuple[Any, int]:
        """The DLPack device of the data. Importers ask it first, so it refuses a Tensor that
        requires grad as :meth:`__dlpack__` does (the export's error, not a backend's)."""
        if self._requires_grad:
            raise export_error(self, "__dlpack_device__ (DLPack export, e.g. np.from_dlpack(t))")
        return self.data.__dlpack_device__()  # type: ignore[no-any-return]

    def _scalar(self, kind: type, what: str) -> Any:
        if self.ndim != 0:
            raise TypeError(f"{what}() of a tensor needs a 0-d tensor, not shape {self.shape}")
        if _capture.ACTIVE:
            _capture.refuse(f"{what}() of a Tensor")
        return kind(self.data)

    def __bool__(self) -> bool:
        return self._scalar(bool, "bool")  # type: ignore[no-any-return]

    def __float__(self) -> float:
        return self._scalar(float, "float")  # type: ignore[no-any-return]

    def __int__(self) -> int:
        return self._scalar(int, "int")  # type: ignore[no-any-return]

    def __complex__(self) -> complex:
        return self._scalar(complex, "complex")  # type: ignore[no-any-return]

    def __index__(self) -> int:
        if _capture.ACTIVE:
            _capture.refuse("Tensor.__index__ (a Tensor used as a Python int)")
        return self.data.__index__()  # type: ignore[no-any-return]

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return int(self.data.shape[0])

    def __iter__(self) -> Iterator[Tensor]:
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        for i in range(self.data.shape[0]):
            yield self[i]

    if TYPE_CHECKING:
        # Installed at import time by agnograd/_ops/_operators.py (install_operators), straight
        # from the op functions, so ``x * y`` calls the op with no Python layer in between; the
        # ops import Tensor, so they cannot be assigned in this class body. These declarations
        # are what type checkers see; tests/test_typing.py checks the two name sets are equal.
        def __add__(self, other: TensorLike, /) -> Tensor: ...
        def __radd__(self, other: TensorLike, /) -> Tensor: ...
        def __iadd__(self, other: TensorLike, /) -> Tensor: ...
        def __sub__(self, other: TensorLike, /) -> Tensor: ...
        def __rsub__(self, other: TensorLike, /) -> Tensor: ...
        def __isub__(self, other: TensorLike, /) -> Tensor: ...
        def __mul__(self, other: TensorLike, /) -> Tensor: ...
        def __rmul__(self, other: TensorLike, /) -> Tensor: ...
        def __imul__(self, other: TensorLike, /) -> Tensor: ...
        def __truediv__(self, other: TensorLike, /) -> Tensor: ...
        def __rtruediv__(self, other: TensorLike, /) -> Tensor: ...
        def __itruediv__(self, other: TensorLike, /) -> Tensor: ...
        def __floordiv__(self, other: TensorLike, /) -> Tensor: ...
        def __rfloordiv__(self, other: TensorLike, /) -> Tensor: ...
        def __ifloordiv__(self, other: TensorLike, /) -> Tensor: ...
        def __mod__(self, other: TensorLike, /) -> Tensor: ...
        def __rmod__(self, other: TensorLike, /) -> Tensor: ...
        def __imod__(self, other: TensorLike, /) -> Tensor: ...
        def __pow__(self, other: TensorLike, /) -> Tensor: ...
        def __rpow__(self, other: TensorLike, /) -> Tensor: ...
        def __ipow__(self, other: TensorLike, /) -> Tensor: ...
        def __matmul__(self, other: TensorLike, /) -> Tensor: ...
        def __rmatmul__(self, other: TensorLike, /) -> Tensor: ...
        def __imatmul__(self, other: TensorLike, /) -> Tensor: ...
        def __and__(self, other: TensorLike, /) -> Tensor: ...
        def __rand__(self, other: TensorLike, /) -> Tensor: ...
        def __iand__(self, other: TensorLike, /) -> Tensor: ...
        def __or__(self, other: TensorLike, /) -> Tensor: ...
        def __ror__(self, other: TensorLike, /) -> Tensor: ...
        def __ior__(self, other: TensorLike, /) -> Tensor: ...
        def __xor__(self, other: TensorLike, /) -> Tensor: ...
        def __rxor__(self, other: TensorLike, /) -> Tensor: ...
        def __ixor__(self, other: TensorLike, /) -> Tensor: ...
        def __lshift__(self, other: TensorLike, /) -> Tensor: ...
        def __rlshift__(self, other: TensorLike, /) -> Tensor: ...
        def __ilshift__(self, other: TensorLike, /) -> Tensor: ...
        def __rshift__(self, other: TensorLike, /) -> Tensor: ...
        def __rrshift__(self, other: TensorLike, /) -> Tensor: ...
        def __irshift__(self, other: TensorLike, /) -> Tensor: ...
        # Comparisons are elementwise and return Tensors, as the standard's array object does.
        def __eq__(self, other: object, /) -> Tensor: ...  # type: ignore[override]
        def __ne__(self, other: object, /) -> Tensor: ...  # type: ignore[override]
        def __lt__(self, other: TensorLike, /) -> Tensor: ...
        def __le__(self, other: TensorLike, /) -> Tensor: ...
        def __gt__(self, other: TensorLike, /) -> Tensor: ...
        def __ge__(self, other: TensorLike, /) -> Tensor: ...
        def __neg__(self) -> Tensor: ...
        def __pos__(self) -> Tensor: ...
        def __abs__(self) -> Tensor: ...
        def __invert__(self) -> Tensor: ...
        def __getitem__(self, key: Any, /) -> Tensor: ...
        def __setitem__(self, key: Any, value: TensorLike, /) -> None: ...
        @property
        def T(self) -> Tensor: ...
        @property
        def mT(self) -> Tensor: ...
        def to_device(self, device: Any, /, *, stream: Any = None) -> Tensor: ...
        # Conveniences NumPy and PyTorch users reach for (not part of the standard's array object).
        def sum(self, *, axis: int | tuple[int, ...] | None = None, dtype: Any = None,
                keepdims: bool = False) -> Tensor: ...
        def mean(self, *, axis: int | tuple[int, ...] | None = None, keepdims: bool = False
                 ) -> Tensor: ...
        def prod(self, *, axis: int | tuple[int, ...] | None = None, dtype: Any = None,
                 keepdims: bool = False) -> Tensor: ...
        def max(self, *, axis: int | tuple[int, ...] | None = None, keepdims: bool = False
                ) -> Tensor: ...
        def min(self, *, axis: int | tuple[int, ...] | None = None, keepdims: bool = False
                ) -> Tensor: ...
        def var(self, *, axis: int | tuple[int, ...] | None = None, correction: float = 0.0,
                keepdims: bool = False) -> Tensor: ...
        def std(self, *, axis: int | tuple[int, ...] | None = None, correction: float = 0.0,
                keepdims: bool = False) -> Tensor: ...
        def reshape(self, *shape: int | Sequence[int]) -> Tensor: ...


# What an op accepts as an array operand: a Tensor, a Python scalar, a backend array, or a
# (nested) list or tuple of numbers. One alias for every op's signature.
TensorLike: TypeAlias = Tensor | bool | int | float | complex | SupportsArray | list[Any] | tuple[Any, ...]


class RetainGrad:
    """The hook :meth:`Tensor.retain_grad` puts on the node output of a non-leaf tensor: it
    accumulates the gradient reaching that output into the tensor's ``.grad`` (held weakly, so
    the graph does not keep the tensor alive). The walk runs it last, and only in ``backward``."""

    __slots__ = ("_ref", "_at")

    def __init__(self, t: Tensor) -> None:
        self._ref = weakref.ref(t)
        self._at: tuple[Any, int] = (None, 0)

    def __call__(self, g: Tensor) -> None:
        t = self._ref()
        if t is None:
            return
        if t._grad is None:  # a copy: g flows on, and may reach a leaf's .grad unchanged
            t._grad = (Tensor._wrap(t._backend.copy(g.data), t._backend) if g._node is None
                       else g.__array_namespace__().asarray(g, copy=True))
        elif g._node is None and t._grad._node is None:
            t._grad = Tensor._wrap(t._backend.fix(t._grad.data + g.data), t._backend)
        else:
            t._grad = t._grad + g

    def attach(self, t: Tensor) -> None:
        """Put this hook last on the node output that produced ``t``."""
        node = t._node
        if node.hooks is None:
            node.hooks = {}
        node.hooks.setdefault(t._index, []).append(self)
        self._at = (node, t._index)

    def moved(self, t: Tensor) -> None:
        """After an in-place op gave ``t`` a new node: retain the new value's gradient (as
        PyTorch does), no longer the old one's."""
        node, k = self._at
        hooks = node.hooks.get(k) if node.hooks is not None else None
        if hooks is not None and self in hooks:
            hooks.remove(self)
        self.attach(t)


class RemovableHandle:
    """Returned by :meth:`Tensor.register_hook`; ``remove()`` unregisters the hook."""

    __slots__ = ("_hooks", "_fn")

    def __init__(self, hooks: list[Any], fn: Any) -> None:
        self._hooks = hooks
        self._fn = fn

    def remove(self) -> None:
        if self._fn in self._hooks:
            self._hooks.remove(self._fn)
            _WORLD[0] += 1


class _Late:
    """What Tensor's methods reach in the layers above this module -- the engine's
    ``backward``, grad mode, the ops' ``astype`` and ``asarray``, the namespace -- bound once
    at import, the way the operators are (``_ops/_operators.py: install_operators``; the
    namespace by the package face): this module imports none of them, so the import graph
    stays a tree."""

    __slots__ = ("backward", "is_grad_enabled", "astype", "asarray", "namespace")

    def __init__(self) -> None:
        self.backward: Any = None
        self.is_grad_enabled: Any = None
        self.astype: Any = None
        self.asarray: Any = None
        self.namespace: Any = None


LATE = _Late()
_new = object.__new__
_weak = weakref.ref
_WORLD = _capture.WORLD
_API_VERSIONS = ("2021.12", "2022.12", "2023.12", "2024.12", "2025.12")


def _check_differentiable_dtype(t: Tensor, what: str) -> None:
    if from_backend_dtype(t.data.dtype).kind not in "fc":
        raise TypeError(
            f"{what}: only floating-point tensors (real or complex) can require gradients, not "
            f"{t.dtype.name} (shape {t.shape}); convert first with ag.astype(x, ag.float64)"
        )


def export_error(t: Tensor, what: str) -> RuntimeError:
    """The error for exporting the data of a Tensor that requires grad out of agnograd (NumPy,
    DLPack): the importer computes without the graph, so every gradient through that result
    would silently be missing. PyTorch refuses the same exports."""
    made = f"produced by the '{t._node.name}' op" if t._node is not None else "a leaf"
    return RuntimeError(
        f"{what}: the Tensor (shape {t.shape}, {t.dtype.name}, {made}) requires grad; export "
        "t.detach() if a constant is meant (e.g. np.asarray(t.detach())). The export hands "
        "out values without their gradient: whatever is computed from them is cut from the "
        "graph, and no gradient would flow back through it. To stay differentiable, compute "
        "with agnograd (an Array API library that takes its namespace from "
        "t.__array_namespace__() does). PyTorch refuses the same export."
    )


def _root_grad(t: Tensor, grad: Any, create_graph: bool) -> Any:
    """The seed cotangent dL/dt: ones for a scalar, else the user's ``grad`` (checked)."""
    b = t._backend
    if grad is None:
        if t.ndim != 0 and t.size != 1:
            raise RuntimeError(
                f"backward() without a grad argument needs a scalar (0-d) tensor, not shape "
                f"{t.shape}; reduce it first (e.g. .sum()) or pass grad= of shape {t.shape}"
            )
        if t.dtype.kind == "c":
            raise RuntimeError(
                f"backward() without a grad argument needs a real scalar, not {t.dtype.name}: "
                "a complex output has no single gradient. Reduce it to a real loss first "
                "(ag.real, ag.abs), or pass an explicit complex cotangent grad=v, which means "
                "the loss L = Re(sum(conj(v)·y))"
            )
        g = b.fix(b.xp.ones(t.data.shape, dtype=t.data.dtype, device=b.device_of(t.data)))
        return Tensor._wrap(g, b) if create_graph else g
    if type(grad) is Tensor:
        if grad._backend is not b:
            raise TypeError(
                f"backward(): grad is on backend '{grad.backend}' but the tensor is on "
                f"'{t.backend}'; move it with ag.to_backend(grad, '{t.backend}')"
            )
        gt = grad
    else:
        ob = backend_of_array(grad)
        if ob is not None and ob is not b:
            raise TypeError(
                f"backward(): grad is a '{ob.name}' array but the tensor is on '{t.backend}'; "
                f"convert it with ag.to_backend(ag.tensor(grad), '{t.backend}')"
            )
        gt = as_tensor(grad, backend=b)
    if gt.shape != t.shape:
        raise ValueError(f"backward(): grad has shape {gt.shape} but the tensor has shape {t.shape}")
    return fit_seed(gt, t, "backward(): grad", create_graph)


def fit_seed(gt: Tensor, t: Tensor, what: str, create_graph: bool) -> Any:
    """A seed cotangent ``gt`` for output ``t`` (shape and backend already checked) in ``t``'s
    dtype: a floating seed of another precision is cast (as PyTorch does), and so is a real
    seed for a complex output; an integer or boolean seed, or a complex seed for a real
    output, is refused, not cast."""
    have = gt.data.dtype
    want = t.data.dtype
    if have != want:
        sk, ok = gt.dtype.kind, t.dtype.kind
        if not (sk == "f" and ok in "fc" or sk == "c" and ok == "c"):
            kind = "real or complex floating" if ok == "c" else "real floating"
            raise TypeError(
                f"{what} has dtype {gt.dtype.name} but the output (shape {t.shape}) is "
                f"{t.dtype.name}: a seed must be {kind} (it is then cast to the output's "
                f"dtype); pass e.g. ag.astype(g, ag.{t.dtype.name})"
            )
        if create_graph:
            return LATE.astype(gt, want)
        return gt._backend.fix(gt._backend.xp.astype(gt.data, want))
    return gt if create_graph else gt.data


def tensor(
    obj: Any,
    requires_grad: bool = False,
    backend: str | Backend | None = None,
    dtype: Any = None,
    device: Any = None,
) -> Tensor:
    """Create a leaf Tensor from nested lists, Python scalars, a Tensor, or any backend array.

    The data is always copied, as ``torch.tensor`` does: the new tensor never shares memory
    with ``obj`` (refilling the caller's buffer, or an in-place update of the tensor, leaves
    the other alone). ``ag.asarray`` is the call that may alias (the standard's ``copy=None``
    rule), and ``t.detach()`` aliases a Tensor. The backend is taken from ``obj`` when it is
    an array, else from ``backend`` or the default backend. An array of another library than
    ``backend`` is transferred (DLPack, else a host copy). A Tensor that requires grad gives a
    new leaf holding a copy of its values (no gradient flows back to it).

    Args:
        obj: the data.
        requires_grad: whether gradients should be accumulated into this tensor's ``.grad``.
        backend: backend name (``"numpy"``, ``"cupy"``, ...) or ``None``.
        dtype: an agnograd dtype (``ag.float32``) or the backend's own dtype.
        device: a device of the backend.
    """
    return _leaf(obj, requires_grad, backend, dtype, device, True)


def _leaf(obj: Any, requires_grad: bool, backend: str | Backend | None, dtype: Any, device: Any,
          copy: bool) -> Tensor:
    """:func:`tensor`, and with ``copy=False`` :func:`as_tensor`: an array that needs no
    conversion is then wrapped as it is (sharing its memory)."""
    if type(obj) is Tensor:
        b = obj._backend
        data = obj.data
        if backend is not None and get_backend(backend) is not b:
            b = get_backend(backend)
            _capture.refuse("ag.tensor(t, backend=...) (a transfer)", _capture.WHY_TRANSFER)
            data = transfer(data, b)
    else:
        ob = backend_of_array(obj)
        if ob is not None:
            b = ob
            data = obj
            if backend is not None and get_backend(backend) is not ob:
                b = get_backend(backend)
                _capture.refuse("ag.tensor(array, backend=...) (a transfer)", _capture.WHY_TRANSFER)
                data = transfer(obj, b)
            data = b.fix(data)
        else:
            b = get_backend(backend)
            if backend is None and device is not None:  # a device object names its backend
                owner = backend_of_device(device)
                if owner is not None and owner is not b.base:
                    b = owner
            data = None
    if data is None:
        if isinstance(obj, (list, tuple)) and _holds_tensor(obj):
            return _from_tensors(obj, requires_grad, b if backend is not None else None, dtype,
                                 device)
        if _capture.ACTIVE:
            _capture.refuse("ag.tensor of host data (Python scalars or lists)", _capture.WHY_HOST)
        data = b.asarray(obj, dtype=to_backend_dtype(b.xp, dtype), device=device)
        if dtype is None:
            data = with_default_dtype(b, data)
        check_array_dtype(data, obj, "tensor")
    else:
        fresh = False  # whether data is certainly new memory (an astype copies)
        if dtype is not None:
            want = to_backend_dtype(b.xp, dtype)
            if data.dtype != want:
                data = b.xp.astype(data, want)
                fresh = True
        if device is not None and b.device_of(data) != device:
            data = b.to_device(data, device)
        check_array_dtype(data, obj, "tensor")
        if copy and not fresh:  # the caller's array (or a DLPack view or move of it)
            data = b.asarray(data, copy=True)
    t = Tensor._wrap(data, b)
    if type(obj) is Tensor and data is obj.data:  # no copy: t aliases obj's storage
        share_version(obj, t)
    if requires_grad:
        t.requires_grad_(True)
    return t


def with_default_dtype(b: Backend, data: Any) -> Any:
    """``data`` (made from Python data without a dtype) cast to ``ag.set_default_dtype``'s
    dtype when one is set and ``data`` is floating or complex."""
    if default_float_for("f") is None:  # unset: nothing to do (the common case)
        return data
    try:
        dt = from_backend_dtype(data.dtype)
    except TypeError:  # not an Array API dtype: check_array_dtype reports it
        return data
    want = default_float_for(dt.kind)
    if want is None or want is dt:
        return data
    return b.xp.astype(data, to_backend_dtype(b.xp, want))


# The storage's in-place change counter. It lives here, beside Tensor's ``_version`` slot, so
# that Tensor itself (``detach``, ``tensor(t)``) uses it without reaching up into the engine.


def version_cell(t: Tensor) -> list[int]:
    """``t``'s in-place change counter, ``[count]``, made when a graph first saves ``t``'s data
    (shared with the tensors that may alias it, see :func:`share_version`)."""
    cell = t._version
    if cell is None:
        cell = t._version = [0]
    return cell


def share_version(src: Tensor, dst: Tensor) -> Tensor:
    """Mark ``dst`` as possibly aliasing ``src``'s storage (a view op's result, ``detach()``,
    ``ag.tensor(t)``): both use one counter from now on, so an in-place change through either
    -- or through any other alias of that storage -- invalidates every graph that saved any of
    them. Returns ``dst``.

    The rule is deliberately conservative: whether the backend really made a view does not
    matter (a copy that shares the counter can only cause a refusal, never a wrong number).
    A shared counter is ``[count, True]``: its second slot says "other Tensors may see this
    storage", which is what the in-place ops that rebind a tensor check (see
    :func:`shares_storage`). Backward reads only ``cell[0]``.
    """
    cell = src._version
    if cell is None:
        cell = src._version = [0, True]
    elif len(cell) == 1:
        cell.append(True)
    else:
        cell[1] = True
    dst._version = cell
    return dst


class Views:
    """The registered views of one root Tensor's storage, kept in the version counter they
    share (``cell[2]``): the root (weakly; every view holds it strongly in its ``_view``) and
    weak references to the views, so an in-place write through any of them can bring every
    other up to date (see ``agnograd/_ops/_views.py``)."""

    __slots__ = ("root", "refs", "prune_at")

    def __init__(self, root: Tensor) -> None:
        self.root = weakref.ref(root)
        self.refs: list[weakref.ref[Tensor]] = []
        self.prune_at = 16

    def live(self) -> list[Tensor]:
        """The views still alive (dead references are dropped)."""
        out = []
        refs = []
        for r in self.refs:
            v = r()
            if v is not None:
                out.append(v)
                refs.append(r)
        self.refs = refs
        self.prune_at = max(16, 2 * len(refs))
        return out


def view_of(src: Tensor, dst: Tensor, fn: Any, args: tuple[Any, ...], grad: bool = True) -> Tensor:
    """Register ``dst = fn(src, *args)`` as a view of ``src``'s storage (a view op's result):
    it shares ``src``'s version counter (:func:`share_version`), and remembers its root and
    the chain of view functions from the root, so that an in-place write through any alias
    reaches every other (PyTorch's view semantics, on every backend). ``grad=False`` marks an
    alias that never carries a graph (``detach()``). Returns ``dst``.

    Only view ops pay for this (a tuple and a weak reference); other ops never look."""
    cell = src._version
    if cell is None or len(cell) < 3:
        if cell is None:
            cell = src._version = [0, False, None]
        else:
            cell += [False, None][len(cell) - 1:]
    reg = cell[2]
    chain: tuple[tuple[Any, tuple[Any, ...]], ...] = ()
    root = src
    if reg is None:
        reg = cell[2] = Views(src)
    elif reg.root() is not src:
        try:
            root, chain, g = src._view
        except AttributeError:  # an alias made otherwise (from_dlpack, real): a plain alias
            return share_version(src, dst)
        grad = grad and g
    if dst._node is None and src._requires_grad and getattr(dst, "_tangent", None) is None:
        grad = False  # made under no_grad(): no graph to keep (forward mode keeps a tangent)
    dst._version = cell
    dst._view = (root, chain + ((fn, args),), grad)
    refs = reg.refs
    refs.append(_weak(dst))
    if len(refs) > reg.prune_at:
        reg.live()
    return dst


def _detached(x: Tensor) -> Tensor:
    """The view function of ``detach()``: the same data, no graph."""
    return Tensor._wrap(x.data, x._backend)


def shares_storage(t: Tensor) -> bool:
    """Whether ``t``'s storage may be visible through other Tensors (a view op or ``detach()``
    made one of it, or it was made by one): an in-place op that rebinds ``t`` to a new array
    would then leave the others stale."""
    cell = t._version
    return cell is not None and len(cell) > 1


def plain_alias(t: Tensor) -> bool:
    """Whether an alias of ``t``'s storage exists that is not a registered view (made by
    ``from_dlpack``, ``real``, ...): a write that rebinds ``t`` cannot bring it up to date."""
    cell = t._version
    return cell is not None and len(cell) > 1 and bool(cell[1])



def as_tensor(x: Any, backend: Backend | None = None) -> Tensor:
    """``x`` as a Tensor (a Tensor is returned as is; arrays are wrapped without copying)."""
    if type(x) is Tensor:
        return x
    return _leaf(x, False, backend, None, None, False)


def check_array_dtype(data: Any, obj: Any, what: str) -> None:
    """Refuse an array whose dtype is not an Array API dtype (NumPy makes object or string
    arrays from ``None``, ``"abc"`` or ragged lists), at once rather than in a later op."""
    try:
        from_backend_dtype(data.dtype)
    except TypeError:
        shown = repr(obj)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        if obj is data:  # an array of the caller's: convert it
            raise TypeError(
                f"{what}: the {type(obj).__name__} {shown} has dtype {data.dtype}, which is not "
                "an Array API dtype (an object or string array: no op can compute with it); "
                "convert it to a numeric dtype first, e.g. np.asarray(a, dtype=np.float64)"
            ) from None
        raise TypeError(
            f"{what}: cannot make an array from {type(obj).__name__} {shown}: its dtype would be "
            f"{data.dtype}, which is not an Array API dtype; pass numbers, (equal-length) nested "
            "lists of numbers, arrays or Tensors"
        ) from None


def _holds_tensor(seq: list[Any] | tuple[Any, ...]) -> bool:
    for o in seq:
        if type(o) is Tensor:
            return True
        if isinstance(o, (list, tuple)) and _holds_tensor(o):
            return True
    return False


def _from_tensors(obj: Any, requires_grad: bool, backend: Backend | None, dtype: Any,
                  device: Any) -> Tensor:
    """``ag.tensor`` of a nested sequence holding Tensors: stacked like ``ag.asarray`` does, so
    the result stays differentiable with respect to them; a new leaf (``requires_grad=True``)
    would cut their gradient, so that is refused while any of them requires grad."""
    if requires_grad and LATE.is_grad_enabled() and _any_requires_grad(obj):
        raise TypeError(
            "tensor(..., requires_grad=True) of a sequence holding Tensors that require grad "
            "would make a new leaf and silently cut their gradient; use ag.stack([...]) (or "
            "ag.asarray([...])) for a result differentiable with respect to them, or detach "
            "them (t.detach()) if a new leaf is meant"
        )
    out: Tensor = LATE.asarray(obj, dtype=dtype, device=device)
    if backend is not None and out._backend is not backend:
        raise TypeError(
            f"tensor(..., backend='{backend.name}'): the sequence holds '{out.backend}' Tensors; "
            f"move them first with ag.to_backend(t, '{backend.name}')"
        )
    if requires_grad:
        out = Tensor._wrap(out.data, out._backend).requires_grad_(True)
    return out


def _any_requires_grad(seq: Any) -> bool:
    for o in seq:
        if type(o) is Tensor and o._requires_grad:
            return True
        if isinstance(o, (list, tuple)) and _any_requires_grad(o):
            return True
    return False
