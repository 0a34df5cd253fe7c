"""Tensor's Python operators, installed from the op functions (see ``_ops/__init__.py``).

In-place operators (``x += y``) mutate ``x.data`` when no graph is being recorded for them, as
the Array API's in-place operators do, and count up ``x``'s version counter -- shared by every
Tensor that may alias the same storage -- so graphs that saved any alias refuse to use it.
When a graph is recorded (grad mode on and an operand requires grad), the result is computed
out of place and ``x`` is rebound to it, so arrays saved by earlier ops are never overwritten;
a leaf that requires grad refuses outside ``no_grad()``. When ``x`` is a view, or views of its
storage are alive, the write goes through ``_views.write`` instead: it reaches the root and
every view, with PyTorch's semantics (see ``_views.py``).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from .._tensor import LATE, plain_alias
from ..autograd import backward, is_grad_enabled
from ..backends import batching as _batching
from . import _views, creation, data_types, indexing, linalg, manipulation, statistics
from . import elementwise as ew
from ._common import Tensor, aliased_inplace_error, binary_operands, grad_on


def _reflect(fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def reflected(self: Any, other: Any) -> Any:
        return fn(other, self)

    return reflected


def _inplace(fn: Callable[[Any, Any], Tensor], raw: Callable[[Any, Any], Any], name: str
             ) -> Callable[[Tensor, Any], Tensor]:
    def checked(t: Tensor, other: Any) -> Tensor:
        res = fn(t, other)
        if res.shape != t.shape or res.data.dtype != t.data.dtype:
            raise ValueError(
                f"in-place {name}: the result has shape {res.shape} and dtype "
                f"{res.dtype.name}, but the tensor has shape {t.shape} and dtype "
                f"{t.dtype.name}; in-place ops cannot change either"
            )
        return res

    def method(self: Tensor, other: Any) -> Tensor:
        other_grad = type(other) is Tensor and other._requires_grad
        cell = self._version
        if cell is not None and len(cell) > 2 and cell[2] is not None:
            state = _views.aliases(self)
            if state is not None:  # views of this storage exist: write through all of them
                sym = _SYMBOL[name]
                _views.write(self, state, lambda t: checked(t, other), other_grad,
                             f"in-place {name} ({sym}=)", f"x = x {sym} y", other)
                return self
        if grad_on() and (self._requires_grad or other_grad):
            if self._node is None and self._requires_grad and getattr(
                    self, "_tangent", None) is None:  # (a forward-mode dual is no leaf)
                raise RuntimeError(
                    f"in-place {name} on a leaf tensor that requires grad (shape {self.shape}) "
                    "would lose its gradient history; do it inside `with ag.no_grad():` (e.g. a "
                    "parameter update) or use the out-of-place form x = x " + _SYMBOL[name] + " y"
                )
            if plain_alias(self):
                raise RuntimeError(aliased_inplace_error(f"in-place {name} ({_SYMBOL[name]}=)",
                                                         self, f"x = x {_SYMBOL[name]} y"))
            self._become(checked(self, other))
            return self
        # The same inline prefix as the elementwise ops (see _binary in elementwise.py); the
        # rest goes through the one conversion. Without it ``x += 1.0`` was ~15% slower.
        t = type(other)
        mixed = False
        if t is Tensor:
            if other._backend is self._backend and not self._backend.multi_device:
                a, o = self.data, other.data
            else:
                b, _, _, a, o = binary_operands(self, other, name)
                mixed = b is not self._backend  # an operand of a vmap level above self's
        elif t is float or t is int:
            a, o = self.data, other
        else:
            b, _, _, a, o = binary_operands(self, other, name)
            mixed = b is not self._backend
        try:
            new = raw(a, o)
        except (TypeError, ValueError) as exc:  # e.g. NumPy's UFuncTypeError for int += 0.5
            what = (f"{other.dtype.name} {other.shape}" if type(other) is Tensor
                    else f"{type(other).__name__} {other!r}")
            raise (ValueError if isinstance(exc, ValueError) else TypeError)(
                f"in-place {name} ({_SYMBOL[name]}=) on a tensor of dtype {self.dtype.name}, shape "
                f"{self.shape} with {what} failed on backend '{self.backend}': the result's dtype "
                f"or shape cannot be stored in the tensor ({exc}); use the out-of-place form "
                f"x = x {_SYMBOL[name]} y (a new tensor of the promoted dtype), or convert x "
                "first (x = ag.astype(x, ag.float64))"
            ) from exc
        if mixed:
            new = _batching.settle(self._backend, new, f"in-place {name} ({_SYMBOL[name]}=)",
                                   self.shape)
        self.data = new
        if self._version is not None:
            self._version[0] += 1  # graphs that saved this data will refuse to use it
        return self

    method.__name__ = f"__i{name}__"
    return method


def _reshape_method(self: Tensor, *shape: Any) -> Tensor:
    """``x.reshape(2, 3)`` or ``x.reshape((2, 3))``: :func:`agnograd.reshape` as a method."""
    s: Any = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    return manipulation.reshape(self, s)


_SYMBOL = {"add": "+", "sub": "-", "mul": "*", "truediv": "/", "floordiv": "//", "mod": "%",
           "pow": "**", "matmul": "@", "and": "&", "or": "|", "xor": "^", "lshift": "<<",
           "rshift": ">>"}


def install_operators() -> None:
    T = Tensor
    indexing.VIEW_WRITES[:] = [_views.setitem_through, _views.setitem_functional]
    # What Tensor's methods (backward, seeds, ag.tensor of Tensors) need from above _tensor.
    LATE.backward = backward
    LATE.is_grad_enabled = is_grad_enabled
    LATE.astype = data_types.astype
    LATE.asarray = creation.asarray
    binary = {
        "add": (ew.add, operator.iadd),
        "sub": (ew.subtract, operator.isub),
        "mul": (ew.multiply, operator.imul),
        "truediv": (ew.divide, operator.itruediv),
        "floordiv": (ew.floor_divide, ew._ifloordiv_standard),
        "mod": (ew.remainder, operator.imod),
        "pow": (ew.pow, operator.ipow),
        "matmul": (linalg.matmul, operator.imatmul),
        "and": (ew.bitwise_and, operator.iand),
        "or": (ew.bitwise_or, operator.ior),
        "xor": (ew.bitwise_xor, operator.ixor),
        "lshift": (ew.bitwise_left_shift, operator.ilshift),
        "rshift": (ew.bitwise_right_shift, operator.irshift),
    }
    for name, (fn, raw) in binary.items():
        setattr(T, f"__{name}__", fn)
        setattr(T, f"__r{name}__", _reflect(fn))
        setattr(T, f"__i{name}__", _inplace(fn, raw, name))
    for name, fn in {
        "eq": ew.equal, "ne": ew.not_equal, "lt": ew.less,
        "le": ew.less_equal, "gt": ew.greater, "ge": ew.greater_equal,
    }.items():
        setattr(T, f"__{name}__", fn)
    # setattr, not T.x = ...: Tensor declares these for type checkers (under TYPE_CHECKING in
    # _tensor.py), and a type checker refuses assigning to a declared method.
    attrs: dict[str, object] = {
        "__neg__": ew.negative, "__pos__": ew.positive, "__abs__": ew.abs,
        "__invert__": ew.bitwise_invert, "__getitem__": indexing.getitem,
        "__setitem__": indexing.setitem, "T": property(manipulation.transpose_2d),
        "mT": property(linalg.matrix_transpose), "to_device": manipulation.to_device,
        "reshape": _reshape_method,
    }
    for name, attr in attrs.items():
        setattr(T, name, attr)
    # Conveniences NumPy and PyTorch users reach for (not part of the standard's array object).
    for name in ("sum", "mean", "prod", "max", "min", "var", "std"):
        setattr(T, name, getattr(statistics, name))
