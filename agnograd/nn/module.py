"""``Module``: a container of Tensors whose parameters are found from its attributes.

A module's *state* is every Tensor held in a public attribute (a name not starting with ``_``),
directly or inside nested Modules, lists, tuples and dicts; the *parameters* are the state
tensors that require grad. Names are dotted paths: ``layers.0.weight``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import agnograd as ag

from ..backends.host import load_npz, save_npz
from ..capture import _state as _capture

__all__ = ["Module", "StateDictError", "functional_call", "check_input_dtype"]


class StateDictError(ValueError):
    """A state dict (or a saved file) does not fit the model: missing or unexpected names, or a
    shape or dtype that differs. Nothing was changed."""


_warned_dtypes: set[tuple[str, str, str]] = set()
_WORLD = _capture.WORLD


def check_input_dtype(layer: Module, x: Any, param: ag.Tensor) -> None:
    """Warn once per (layer type, input dtype, parameter dtype) when a floating input's dtype
    differs from the layer's floating parameters: type promotion then runs the layer (and
    everything after it) in the wider dtype -- a float32 model silently computing in float64,
    or float64 parameters rounded through float32 inputs."""
    if type(x) is not ag.Tensor or x.data.dtype == param.data.dtype:  # the fast, common case
        return
    dt = x.dtype
    if not (dt.is_floating and param.dtype.is_floating):
        return
    key = (type(layer).__name__, dt.name, param.dtype.name)
    if key in _warned_dtypes:
        return
    _warned_dtypes.add(key)
    wide = dt.name if dt.bits > param.dtype.bits else param.dtype.name
    warnings.warn(
        f"{type(layer).__name__} with {param.dtype.name} parameters got a {dt.name} input (shape "
        f"{x.shape}): type promotion computes it in {wide}. Convert the input "
        f"(ag.astype(x, ag.{param.dtype.name})) or the model (model.astype(ag.{dt.name})), or "
        f"choose one default for data and layers with ag.set_default_dtype(ag.{param.dtype.name}) "
        "(warned once per layer type and dtypes)", UserWarning, stacklevel=3)


def _walk(obj: Any, prefix: str, seen: set[int]) -> Iterator[tuple[str, Any]]:
    """(dotted name, Tensor or Module) for everything reachable from container ``obj``."""
    if isinstance(obj, ag.Tensor):
        yield prefix, obj
    elif isinstance(obj, Module):
        if id(obj) in seen:  # a module shared between two places: count it once
            return
        seen.add(id(obj))
        yield prefix, obj
        for name, value in vars(obj).items():
            if not name.startswith("_"):
                yield from _walk(value, f"{prefix}.{name}" if prefix else name, seen)
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _walk(value, f"{prefix}.{i}" if prefix else str(i), seen)
    elif isinstance(obj, dict):
        for key, value in obj.items():
            if isinstance(key, str):
                yield from _walk(value, f"{prefix}.{key}" if prefix else key, seen)


def _replace(obj: Any, fn: Callable[[str, ag.Tensor], ag.Tensor], prefix: str, seen: set[int]) -> Any:
    """``obj`` with every reachable Tensor ``t`` at name ``n`` replaced by ``fn(n, t)``: modules,
    lists and dicts are updated in place, tuples rebuilt."""
    if isinstance(obj, ag.Tensor):
        return fn(prefix, obj)
    if isinstance(obj, Module):
        if id(obj) not in seen:
            seen.add(id(obj))
            for name, value in list(vars(obj).items()):
                if not name.startswith("_"):
                    new = _replace(value, fn, f"{prefix}.{name}" if prefix else name, seen)
                    if new is not value:
                        object.__setattr__(obj, name, new)
        return obj
    if isinstance(obj, list):
        for i, value in enumerate(obj):
            new = _replace(value, fn, f"{prefix}.{i}" if prefix else str(i), seen)
            if new is not value:
                obj[i] = new
        return obj
    if isinstance(obj, tuple):
        items = [_replace(v, fn, f"{prefix}.{i}" if prefix else str(i), seen) for i, v in enumerate(obj)]
        if all(a is b for a, b in zip(items, obj)):
            return obj
        return type(obj)(*items) if hasattr(obj, "_fields") else type(obj)(items)
    if isinstance(obj, dict):
        for key, value in list(obj.items()):
            if isinstance(key, str):
                new = _replace(value, fn, f"{prefix}.{key}" if prefix else key, seen)
                if new is not value:
                    obj[key] = new
        return obj
    return obj


class Module(_capture.Holder):
    """Base class of layers and models.

    Subclasses set Tensors and sub-modules as attributes in ``__init__`` and define
    ``forward``; calling the module calls ``forward``. Tensors in attributes whose names start
    with ``_`` are private: not state, not parameters, not saved.

    Attributes:
        training: ``True`` after :meth:`train` (the default), ``False`` after :meth:`eval`;
            layers such as :class:`~agnograd.nn.Dropout` read it.
    """

    training: bool = True

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The computation; subclasses define it."""
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    # A compiled step (ag.jit, ag.capture) guards what a module's attributes point to: assigning
    # or deleting one counts as a change of the world it checks before replaying.
    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        _WORLD[0] += 1

    def __delattr__(self, name: str) -> None:
        object.__delattr__(self, name)
        _WORLD[0] += 1

    def _guard_items(self) -> list[tuple[str, Any]]:
        """What a compiled step guards: the public attributes and the training flag."""
        items = [(k, v) for k, v in vars(self).items() if not k.startswith("_")]
        items.append(("training", self.training))
        return items

    # -- discovery -----------------------------------------------------------------------------
    def named_tensors(self) -> list[tuple[str, ag.Tensor]]:
        """Every state Tensor with its dotted name (a tensor reachable twice is listed once)."""
        out, ids = [], set()
        for name, obj in _walk(self, "", set()):
            if isinstance(obj, ag.Tensor) and id(obj) not in ids:
                ids.add(id(obj))
                out.append((name, obj))
        return out

    def named_parameters(self) -> list[tuple[str, ag.Tensor]]:
        """``(name, tensor)`` for every state Tensor that requires grad, in attribute order."""
        return [(n, t) for n, t in self.named_tensors() if t.requires_grad]

    def parameters(self) -> list[ag.Tensor]:
        """The parameters (state Tensors that require grad), e.g. for an optimizer."""
        return [t for _, t in self.named_parameters()]

    def named_modules(self) -> list[tuple[str, Module]]:
        """This module (name ``""``) and every sub-module, with their dotted names."""
        return [(n, m) for n, m in _walk(self, "", set()) if isinstance(m, Module)]

    def modules(self) -> list[Module]:
        """This module and every sub-module."""
        return [m for _, m in self.named_modules()]

    def num_parameters(self) -> int:
        """The number of scalar parameters."""
        return sum(t.size or 0 for t in self.parameters())

    # -- modes and gradients -------------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        """Set training mode (``mode=False``: evaluation mode) here and in every sub-module."""
        for m in self.modules():
            m.training = bool(mode)
        return self

    def eval(self) -> Module:
        """Evaluation mode (``train(False)``): dropout becomes the identity."""
        return self.train(False)

    def zero_grad(self) -> None:
        """Clear the ``.grad`` of every parameter."""
        for t in self.parameters():
            t.grad = None

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, ag.Tensor]:
        """Name -> detached Tensor for every state tensor. The tensors share memory with the
        model's (no copy), so later in-place updates show through; ``save`` or copy them to
        keep a snapshot."""
        return {name: t.detach() for name, t in self.named_tensors()}

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True) -> Module:
        """Copy values into the model's tensors, keeping each tensor's backend and device.

        ``state`` maps names to Tensors or arrays of any backend (a state dict, or the arrays
        of a saved file). Every name, shape and dtype is checked -- and every value converted --
        before anything is assigned, so on error the model is unchanged. A value of another
        dtype of the same kind is converted to the tensor's dtype (float64 into a float32
        model, int32 into int64); across kinds (integers into floating tensors, complex into
        real ones) it is refused, as is a float64 value too large for float32 (it would become
        infinite).

        Args:
            state: name -> value.
            strict: when true (the default) missing and unexpected names are errors; when
                false, only the names present in both are loaded.

        Raises:
            StateDictError: names missing or unexpected (strict), a shape differs, or a dtype
                cannot be converted.
        """
        own = dict(self.named_tensors())
        problems = []
        missing = [n for n in own if n not in state]
        unexpected = [n for n in state if n not in own]
        if strict and missing:
            problems.append("missing " + ", ".join(repr(n) for n in missing))
        if strict and unexpected:
            problems.append("unexpected " + ", ".join(repr(n) for n in unexpected))
        pairs = []
        for name, t in own.items():
            if name not in state:
                continue
            value = state[name]
            try:
                v = value if isinstance(value, ag.Tensor) else ag.tensor(value, backend=t.backend)
            except Exception as exc:
                problems.append(f"{name!r} cannot be read as an array ({exc})")
                continue
            if v.shape != t.shape:
                problems.append(f"{name!r} has shape {v.shape}, the model's has shape {t.shape}")
            elif v.dtype != t.dtype and v.dtype.kind != t.dtype.kind:
                problems.append(f"{name!r} has dtype {v.dtype.name}, the model's has dtype "
                                f"{t.dtype.name} (only dtypes of the same kind are converted: "
                                f"cast the value with ag.astype first if that is meant)")
            else:
                pairs.append((name, t, v))
        new = []
        for name, t, v in pairs:  # convert everything first: a failure here also changes nothing
            moved = ag.asarray(ag.to_backend(v.detach(), t.backend), device=t.device, copy=True)
            if moved.dtype != t.dtype:
                with warnings.catch_warnings():  # an overflow is reported below, as an error
                    warnings.simplefilter("ignore", RuntimeWarning)
                    converted = ag.astype(moved, t.dtype)
                if (t.dtype.bits < moved.dtype.bits and moved.dtype.kind in "fc"
                        and bool(ag.any(ag.isfinite(moved) != ag.isfinite(converted)))):
                    problems.append(f"{name!r} holds float values beyond the range of the "
                                    f"model's {t.dtype.name} (they would become infinite)")
                moved = converted
            new.append(moved.data)
        if problems:
            raise StateDictError(f"state does not fit {type(self).__name__}: " + "; ".join(problems))
        for (_, t, _), data in zip(pairs, new):
            t.data = data
        return self

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the state to an ``.npz`` file (one array per name; no pickle). The file is
        replaced only once it has been written completely."""
        save_npz(path, {name: t.data for name, t in self.named_tensors()})

    def load(self, path: str | os.PathLike[str]) -> Module:
        """Read a file written by :meth:`save` into this model (``allow_pickle=False``).

        Raises:
            FileNotFoundError: no such file.
            StateDictError: names, shapes or dtypes in the file do not match the model (which
                is then unchanged).
            ValueError: the file is not an ``.npz`` archive.
        """
        arrays = load_npz(path)
        try:
            return self.load_state_dict(arrays)
        except StateDictError as exc:
            raise StateDictError(f"{os.fspath(path)}: {exc}") from None

    # -- backends ------------------------------------------------------------------------------
    def to_backend(self, backend: str, device: Any = None) -> Module:
        """Move every state tensor to ``backend`` (and ``device``), in place; returns ``self``.

        The moved parameters are new Tensors (their gradients are dropped): create the
        optimizer after moving the model.
        """
        ag.get_backend(backend)  # an unknown or unusable backend fails here, before any change

        def move(name: str, t: ag.Tensor) -> ag.Tensor:
            new = ag.to_backend(t.detach(), backend)
            if device is not None:
                new = ag.asarray(new, device=device)
            if new.data is t.data:  # already there
                return t
            return new.requires_grad_(True) if t.requires_grad else new

        _replace(self, move, "", set())
        return self

    def astype(self, dtype: Any) -> Module:
        """Convert every floating-point state tensor to ``dtype`` (e.g. ``ag.float64``), in
        place; returns ``self``. Like :meth:`to_backend`, the parameters become new Tensors."""

        def cast(name: str, t: ag.Tensor) -> ag.Tensor:
            if not t.dtype.is_floating or t.dtype == dtype:
                return t
            new = ag.astype(t.detach(), dtype)
            return new.requires_grad_(True) if t.requires_grad else new

        _replace(self, cast, "", set())
        return self

    # -- printing ------------------------------------------------------------------------------
    def extra_repr(self) -> str:
        """The text between the parentheses of this module's repr (sub-modules aside)."""
        return ""

    def __repr__(self) -> str:
        direct: list[tuple[str, Module]] = []
        for name, value in vars(self).items():
            if name.startswith("_"):
                continue
            if isinstance(value, Module):
                direct.append((name, value))
            elif isinstance(value, (list, tuple)):
                direct += [(f"{name}.{i}", m) for i, m in enumerate(value) if isinstance(m, Module)]
        if not direct:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for n, m in direct:
            text = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({n}): {text}")
        lines.append(")")
        return "\n".join(lines)


def _locate(module: Module, name: str) -> tuple[Any, Any]:
    """The container holding the state tensor called ``name`` and its key there."""
    parts = name.split(".")
    obj: Any = module
    try:
        for p in parts[:-1]:
            obj = obj[int(p)] if isinstance(obj, (list, tuple)) else (
                obj[p] if isinstance(obj, dict) else getattr(obj, p))
        last = parts[-1]
        key: Any = int(last) if isinstance(obj, (list, tuple)) else last  # an int for a sequence
        found = obj[key] if isinstance(obj, (list, tuple, dict)) else getattr(obj, last)
    except (AttributeError, IndexError, KeyError, ValueError, TypeError):
        found = None
    if not isinstance(found, ag.Tensor) or any(p.startswith("_") for p in parts):
        raise KeyError(f"{type(module).__name__} has no state tensor named {name!r}")
    if isinstance(obj, tuple):
        raise TypeError(f"{name!r} sits in a tuple, which cannot be modified; use a list")
    return obj, key


def _put(obj: Any, key: Any, value: ag.Tensor) -> None:
    if isinstance(obj, (list, dict)):
        obj[key] = value
    else:
        object.__setattr__(obj, str(key), value)


def functional_call(module: Module, tensors: Mapping[str, ag.Tensor], *args: Any,
                    **kwargs: Any) -> Any:
    """Call ``module(*args, **kwargs)`` with some of its state tensors replaced by ``tensors``
    (name -> Tensor) for the duration of the call, e.g. to differentiate with respect to a
    copy of the parameters with :func:`agnograd.grad`:

        grads = ag.grad(lambda p: loss(functional_call(model, p, x)))(params)
    """
    slots = [(name, *_locate(module, name)) for name in tensors]
    originals = [(obj, key, obj[key] if isinstance(obj, (list, dict)) else getattr(obj, str(key)))
                 for _, obj, key in slots]
    try:
        for name, obj, key in slots:
            _put(obj, key, tensors[name])
        return module(*args, **kwargs)
    finally:
        for obj, key, old in originals:
            _put(obj, key, old)
