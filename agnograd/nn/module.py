"""``Module``: a container of Tensors whose parameters are found from its attributes.

A module's *state* is every Tensor held in a public attribute (a name not starting with ``_``),
directly or inside nested Modules, lists, tuples and dicts, listed in PyTorch's order: a
module's own tensors (in attribute order), then its sub-modules'. Its *parameters* are the state
tensors that were parameters when the module got them -- leaves that required grad -- whether
or not they require grad now (a frozen weight stays a parameter, as an ``nn.Parameter`` with
``requires_grad=False`` does in PyTorch), plus any state tensor that requires grad now; the other
state tensors are buffers. Names are dotted paths: ``layers.0.weight``.
"""

from __future__ import annotations

import copy
import os
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

import agnograd as ag

from ..backends.host import load_npz, save_npz
from ..capture import _state as _capture

__all__ = ["Module", "Parameter", "StateDictError", "IncompatibleKeys", "RemovableHandle",
           "functional_call", "check_input_dtype", "is_parameter"]


class StateDictError(ValueError):
    """A state dict (or a saved file) does not fit the model: missing or unexpected names, or a
    shape or dtype that differs. Nothing was changed."""


class IncompatibleKeys(NamedTuple):
    """What :meth:`Module.load_state_dict` returns, as PyTorch's ``_IncompatibleKeys``: the
    model's names the state did not hold, and the state's names the model does not have (both
    empty after a strict load)."""

    missing_keys: list[str]
    unexpected_keys: list[str]

    def __repr__(self) -> str:
        if not self.missing_keys and not self.unexpected_keys:
            return "<All keys matched successfully>"
        return (f"IncompatibleKeys(missing_keys={self.missing_keys!r}, "
                f"unexpected_keys={self.unexpected_keys!r})")

    def __str__(self) -> str:
        return self.__repr__()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(
            f"'IncompatibleKeys' object has no attribute {name!r}: load_state_dict returns the "
            "missing and unexpected keys (as PyTorch), not the module; call it on its own "
            "line and keep using the module (Module.load(path) returns the module)")


_warned_dtypes: set[tuple[str, str, str]] = set()
_WORLD = _capture.WORLD

# The tensors that are parameters (see the module docstring), by id, held weakly: a freed
# tensor drops out, so a later tensor that reuses its id is not taken for it.
_PARAMETERS: weakref.WeakValueDictionary[int, ag.Tensor] = weakref.WeakValueDictionary()
# The tensors given to Module.register_buffer, by id, held weakly: buffers even if they require
# grad (as in PyTorch), so never parameters.
_BUFFERS: weakref.WeakValueDictionary[int, ag.Tensor] = weakref.WeakValueDictionary()

# Module.save's file format. 1 (no marker in the file): agnograd before the change of Linear's
# weight layout, ``(in_features, out_features)``; 2: ``(out_features, in_features)``, as PyTorch.
MODULE_FORMAT_KEY = "__agnograd_format__"
MODULE_FORMAT = 2


def is_parameter(t: ag.Tensor) -> bool:
    """Whether state tensor ``t`` is a parameter: it requires grad now, or it was a leaf that
    required grad when a module got it (or when a module last listed its parameters), and it
    was not registered as a buffer (:meth:`Module.register_buffer`)."""
    if _BUFFERS and _BUFFERS.get(id(t)) is t:
        return False
    return t.requires_grad or _PARAMETERS.get(id(t)) is t


def _mark_parameters(value: Any) -> None:
    """Remember every leaf Tensor that requires grad in ``value`` (a Tensor, or lists, tuples
    and dicts of them; sub-modules mark their own) as a parameter."""
    if isinstance(value, ag.Tensor):
        if value.requires_grad and value.is_leaf and _BUFFERS.get(id(value)) is not value:
            _PARAMETERS[id(value)] = value
    elif isinstance(value, (list, tuple)):
        for v in value:
            _mark_parameters(v)
    elif isinstance(value, dict):
        for v in value.values():
            _mark_parameters(v)


_T = TypeVar("_T")


class Listing(list[_T]):
    """What :meth:`Module.parameters`, ``buffers``, ``modules``, ``children`` and their
    ``named_`` forms return: a list (``len``, indexing, reuse) that is also an iterator over
    itself, as PyTorch's generators are -- ``next(model.parameters()).dtype``, the PyTorch
    idiom, gives the first parameter (each ``next`` the following item; a ``for`` loop or
    ``list(...)`` starts from the beginning as for any list)."""

    _at = 0

    def __next__(self) -> _T:
        at = self._at
        if at >= len(self):
            raise StopIteration
        self._at = at + 1
        return self[at]


def _named(module: Module, items: list[tuple[str, ag.Tensor]], target: str, what: str
           ) -> ag.Tensor:
    """The tensor called ``target`` among ``(name, tensor)`` ``items``, or AttributeError."""
    for name, t in items:
        if name == target:
            return t
    raise AttributeError(f"{type(module).__name__} has no {what} {target!r}")


def _follow(done: dict[int, tuple[ag.Tensor, ag.Tensor]]) -> None:
    """Record the replacements, so that an optimizer made before the conversion follows them
    (:mod:`agnograd.optim._moves`)."""
    from ..optim import _moves  # (call time: nn sits below optim)

    for old, new in done.values():
        if new is not old:
            _moves.note(old, new)


def _mark_like(new: ag.Tensor, old: ag.Tensor) -> ag.Tensor:
    """``new`` (a converted copy of ``old``) with ``old``'s grad requirement and parameter
    status."""
    if old.requires_grad:
        new.requires_grad_(True)
    if _BUFFERS.get(id(old)) is old:
        _BUFFERS[id(new)] = new
    elif is_parameter(old):
        _PARAMETERS[id(new)] = new
    return new


class _ParameterMeta(type):
    def __instancecheck__(cls, obj: Any) -> bool:
        return isinstance(obj, ag.Tensor) and _PARAMETERS.get(id(obj)) is obj


class Parameter(metaclass=_ParameterMeta):
    """``nn.Parameter(data, requires_grad=True)``: a Tensor that is a parameter of any module
    holding it, as PyTorch's ``nn.Parameter`` -- also with ``requires_grad=False`` (a frozen
    parameter: listed by ``parameters()``, not a buffer).

    The result is a plain :class:`agnograd.Tensor` -- a new leaf sharing ``data``'s memory
    (no copy; ``data`` may be a Tensor or anything :func:`agnograd.tensor` reads) -- marked as
    a parameter; ``isinstance(t, nn.Parameter)`` is true for a tensor so made and for every
    tensor a module lists as a parameter. ``Parameter()`` is an empty float tensor.
    """

    def __new__(cls, data: Any = None, requires_grad: bool = True) -> ag.Tensor:  # type: ignore[misc]
        if data is None:
            t = ag.empty((0,))
        elif isinstance(data, ag.Tensor):
            t = data.detach()
        else:
            t = ag.asarray(data)
        if requires_grad:
            t.requires_grad_(True)
        _BUFFERS.pop(id(t), None)
        _PARAMETERS[id(t)] = t
        return t


class RemovableHandle:
    """What :meth:`Module.register_forward_hook` and :meth:`Module.register_forward_pre_hook`
    return: ``remove()`` unregisters the hook (also as a context manager, on exit)."""

    _next_id = 0

    def __init__(self, module: Module, kind: str) -> None:
        RemovableHandle._next_id += 1
        self.id = RemovableHandle._next_id
        self._module = weakref.ref(module)
        self._kind = kind

    def remove(self) -> None:
        module = self._module()
        if module is None:
            return
        hooks = module.__dict__.get(self._kind)
        if hooks is not None and self.id in hooks:
            del hooks[self.id]
            if not hooks:
                del module.__dict__[self._kind]  # the fast path of __call__ again
            _WORLD[0] += 1

    def __enter__(self) -> RemovableHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


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


def _tensors_in(obj: Any, prefix: str) -> Iterator[tuple[str, ag.Tensor]]:
    """(dotted name, Tensor) for the Tensors in ``obj`` (a Tensor, or lists, tuples and dicts
    of them), not looking into Modules."""
    if isinstance(obj, ag.Tensor):
        yield prefix, obj
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _tensors_in(value, f"{prefix}.{i}" if prefix else str(i))
    elif isinstance(obj, dict):
        for key, value in obj.items():
            if isinstance(key, str):
                yield from _tensors_in(value, f"{prefix}.{key}" if prefix else key)


def _own(module: Module, prefix: str) -> Iterator[tuple[str, ag.Tensor]]:
    """(dotted name, Tensor) for the tensors held by ``module`` itself (its public attributes,
    lists, tuples and dicts in them), in attribute order; sub-modules' tensors left out."""
    for name, value in vars(module).items():
        if not name.startswith("_"):
            yield from _tensors_in(value, f"{prefix}.{name}" if prefix else name)


def _walk(obj: Any, prefix: str, seen: set[int]) -> Iterator[tuple[str, Any]]:
    """(dotted name, Tensor or Module) for everything reachable from module ``obj``, in
    PyTorch's order: a module, its own tensors, then its sub-modules (in attribute order),
    each module once."""
    if isinstance(obj, ag.Tensor):
        yield prefix, obj
    elif isinstance(obj, Module):
        if id(obj) in seen:  # a module shared between two places: count it once
            return
        seen.add(id(obj))
        yield prefix, obj
        yield from _own(obj, prefix)
        for name, child in _children(obj, prefix):
            yield from _walk(child, name, seen)


def _same_values(a: ag.Tensor, b: ag.Tensor) -> bool:
    """Whether two values given for one tied tensor agree (NaN equal to NaN)."""
    if a.shape != b.shape:
        return False
    a, b = a.detach(), ag.to_backend(b.detach(), a.backend)
    same = a == b
    if a.dtype.kind in "fc" and b.dtype.kind in "fc":
        same = same | (ag.isnan(a) & ag.isnan(b))
    return bool(ag.all(same))


def _direct_modules(obj: Module) -> list[Module]:
    """The sub-modules held by ``obj``'s public attributes (directly or in containers)."""
    out: list[Module] = []
    stack: list[Any] = [v for k, v in vars(obj).items() if not k.startswith("_")]
    while stack:
        v = stack.pop()
        if isinstance(v, Module):
            out.append(v)
        elif isinstance(v, (list, tuple)):
            stack.extend(v)
        elif isinstance(v, dict):
            stack.extend(v.values())
    return out


def _every_name(obj: Any, prefix: str, path: set[int], own: bool = False
                ) -> Iterator[tuple[str, ag.Tensor]]:
    """(dotted name, Tensor) for every name under which a Tensor is reachable from module
    ``obj``: a tied tensor, or one in a sub-module shared by two places, under each of its
    names (as in PyTorch's ``state_dict``), each module's own tensors before its sub-modules'.
    ``path`` holds the modules being walked (a cycle stops). ``own``: only the tensors of
    ``obj`` itself (no sub-module is entered)."""
    if isinstance(obj, ag.Tensor):
        yield prefix, obj
    elif isinstance(obj, Module):
        if id(obj) in path:
            return
        path.add(id(obj))
        yield from _own(obj, prefix)
        if not own:
            for name, child in _children(obj, prefix):
                yield from _every_name(child, name, path)
        path.discard(id(obj))


def _state_items(module: Module, prefix: str, path: set[int]) -> Iterator[tuple[str, ag.Tensor]]:
    """``_every_name`` in PyTorch's ``state_dict`` order: a module's own parameters, its own
    buffers, then its sub-modules'."""
    if id(module) in path:
        return
    path.add(id(module))
    own = list(_own(module, prefix))
    yield from ((n, t) for n, t in own if is_parameter(t))
    yield from ((n, t) for n, t in own if not is_parameter(t))
    for name, child in _children(module, prefix):
        yield from _state_items(child, name, path)
    path.discard(id(module))


def _every_module(obj: Any, prefix: str, path: set[int], out: list[tuple[str, Module]]) -> None:
    """Append (dotted name, Module) for every name under which a module is reachable from
    ``obj`` (a shared sub-module under each; ``path``: the modules being walked)."""
    if isinstance(obj, Module):
        if id(obj) in path:
            return
        out.append((prefix, obj))
        path.add(id(obj))
        for name, value in vars(obj).items():
            if not name.startswith("_"):
                _every_module(value, f"{prefix}.{name}" if prefix else name, path, out)
        path.discard(id(obj))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            _every_module(value, f"{prefix}.{i}" if prefix else str(i), path, out)
    elif isinstance(obj, dict):
        for key, value in obj.items():
            if isinstance(key, str):
                _every_module(value, f"{prefix}.{key}" if prefix else key, path, out)


def _children(obj: Any, prefix: str, top: bool = True) -> Iterator[tuple[str, Module]]:
    """(name, Module) for the modules held by ``obj``'s public attributes, directly or in
    lists, tuples and dicts, in attribute order (not looking into those modules)."""
    if isinstance(obj, Module) and not top:
        yield prefix, obj
    elif isinstance(obj, Module):
        for name, value in vars(obj).items():
            if not name.startswith("_"):
                yield from _children(value, f"{prefix}.{name}" if prefix else name, False)
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _children(value, f"{prefix}.{i}" if prefix else str(i), False)
    elif isinstance(obj, dict):
        for key, value in obj.items():
            if isinstance(key, str):
                yield from _children(value, f"{prefix}.{key}" if prefix else key, False)


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
    # Names of weights that formats before MODULE_FORMAT 2 stored transposed (Linear's).
    _legacy_transposed: tuple[str, ...] = ()

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The computation; subclasses define it."""
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        d = self.__dict__
        if "_forward_hooks" not in d and "_forward_pre_hooks" not in d:
            return self.forward(*args, **kwargs)
        for hook, with_kwargs in list(d.get("_forward_pre_hooks", {}).values()):
            if with_kwargs:
                r = hook(self, args, kwargs)
                if r is not None:
                    if not (isinstance(r, tuple) and len(r) == 2):
                        raise RuntimeError(f"forward pre-hook {hook!r} registered with "
                                           "with_kwargs=True must return None or (args, kwargs)")
                    args, kwargs = r
            else:
                r = hook(self, args)
                if r is not None:
                    args = r if isinstance(r, tuple) else (r,)
        out = self.forward(*args, **kwargs)
        for hook, with_kwargs in list(d.get("_forward_hooks", {}).values()):
            r = hook(self, args, kwargs, out) if with_kwargs else hook(self, args, out)
            if r is not None:
                out = r
        return out

    def _add_hook(self, kind: str, hook: Callable[..., Any], prepend: bool,
                  with_kwargs: bool) -> RemovableHandle:
        if not callable(hook):
            raise TypeError(f"{kind[1:]}: the hook must be callable, not {type(hook).__name__}")
        hooks: dict[int, tuple[Callable[..., Any], bool]] = self.__dict__.setdefault(kind, {})
        handle = RemovableHandle(self, kind)
        hooks[handle.id] = (hook, bool(with_kwargs))
        if prepend:
            hooks_in_order = {handle.id: hooks.pop(handle.id), **hooks}
            hooks.clear()
            hooks.update(hooks_in_order)
        _WORLD[0] += 1  # a compiled step recorded without the hook must not replay
        return handle

    def register_forward_pre_hook(self, hook: Callable[..., Any], *, prepend: bool = False,
                                  with_kwargs: bool = False) -> RemovableHandle:
        """Call ``hook(module, args)`` before every ``forward``, as PyTorch's: a result that
        is not ``None`` replaces the positional arguments (a tuple, or one value); with
        ``with_kwargs=True``, ``hook(module, args, kwargs)`` may return ``(args, kwargs)``.
        ``prepend=True`` runs it before the hooks registered earlier. Returns a handle whose
        ``remove()`` unregisters it.

        Hooks are Python code: inside a step compiled by :func:`agnograd.jit` or
        :func:`agnograd.capture` they run while the step is recorded, and a replay repeats
        their Tensor computations only (registering or removing a hook makes the step record
        again)."""
        return self._add_hook("_forward_pre_hooks", hook, prepend, with_kwargs)

    def register_forward_hook(self, hook: Callable[..., Any], *, prepend: bool = False,
                              with_kwargs: bool = False) -> RemovableHandle:
        """Call ``hook(module, args, output)`` after every ``forward``, as PyTorch's: a result
        that is not ``None`` replaces the output (``with_kwargs=True``: ``hook(module, args,
        kwargs, output)``). E.g. to keep a layer's activations. Returns a handle whose
        ``remove()`` unregisters it. (See :meth:`register_forward_pre_hook` about compiled
        steps.)"""
        return self._add_hook("_forward_hooks", hook, prepend, with_kwargs)

    # A compiled step (ag.jit, ag.capture) guards what a module's attributes point to: assigning
    # or deleting one counts as a change of the world it checks before replaying.
    def __setattr__(self, name: str, value: Any) -> None:
        if not name.startswith("_"):  # public state: its leaves that require grad are parameters
            names = self.__dict__.get("_buffer_names")
            if (names is not None and name in names and isinstance(value, ag.Tensor)
                    and _PARAMETERS.get(id(value)) is value):
                # a parameter (nn.Parameter) assigned to a buffer's name: a parameter now, as
                # in PyTorch (it would otherwise silently stop being trained)
                del names[name]
                _mark_parameters(value)
            elif names is not None and name in names:  # a registered buffer's name: a buffer still
                if isinstance(value, ag.Tensor):
                    _PARAMETERS.pop(id(value), None)
                    _BUFFERS[id(value)] = value
            else:
                _mark_parameters(value)
                old = self.__dict__.get(name)
                if (value is not None and isinstance(old, ag.Tensor)
                        and _PARAMETERS.get(id(old)) is old
                        and not (isinstance(value, ag.Tensor) and _PARAMETERS.get(id(value)) is value)):
                    raise TypeError(
                        f"cannot assign {type(value).__name__} as parameter {name!r} of "
                        f"{type(self).__name__} (an nn.Parameter or None is expected, as in "
                        f"PyTorch): the parameter would silently become a buffer. Wrap the value "
                        f"with nn.Parameter(...) to replace the parameter, copy values into it "
                        f"with `with ag.no_grad(): module.{name}[...] = value` (or "
                        f"load_state_dict), or `del module.{name}` first to hold something else "
                        "there")
        object.__setattr__(self, name, value)
        _WORLD[0] += 1

    def __delattr__(self, name: str) -> None:
        object.__delattr__(self, name)
        names = self.__dict__.get("_buffer_names")
        if names is not None:
            names.pop(name, None)  # no longer a registered buffer (as PyTorch's del)
        _WORLD[0] += 1

    def _guard_items(self) -> list[tuple[str, Any]]:
        """What a compiled step guards: the public attributes, the training flag and the
        forward hooks."""
        items = [(k, v) for k, v in vars(self).items() if not k.startswith("_")]
        items.append(("training", self.training))
        for kind in ("_forward_pre_hooks", "_forward_hooks"):  # a hook added or removed
            hooks = self.__dict__.get(kind)
            if hooks:
                items.append((kind, tuple(h for h, _ in hooks.values())))
        return items

    def __deepcopy__(self, memo: dict[int, Any]) -> Module:
        """A deep copy whose copied parameters are parameters (frozen ones included) and whose
        tied tensors and shared sub-modules stay tied and shared."""
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        for k, v in vars(self).items():
            object.__setattr__(new, k, copy.deepcopy(v, memo))
        for _, t in _walk(self, "", set()):
            if isinstance(t, ag.Tensor):
                for marks in (_PARAMETERS, _BUFFERS):
                    twin = memo.get(id(t))
                    if marks.get(id(t)) is t and isinstance(twin, ag.Tensor):
                        marks[id(twin)] = twin
        return new

    def __getstate__(self) -> dict[str, Any]:
        # Pickling: remember which of the tensors held here (not in sub-modules, which pickle
        # their own) are frozen parameters, so they stay parameters when unpickled.
        state = dict(vars(self))
        frozen = [n for n, t in _every_name(self, "", {id(m) for m in _direct_modules(self)})
                  if not t.requires_grad and _PARAMETERS.get(id(t)) is t]
        if frozen:
            state["_frozen_parameters"] = frozen
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        frozen = state.pop("_frozen_parameters", ())
        vars(self).update(state)
        for name in state.get("_buffer_names", ()):  # registered buffers stay buffers
            t = state.get(name)
            if isinstance(t, ag.Tensor):
                _PARAMETERS.pop(id(t), None)
                _BUFFERS[id(t)] = t
        for name in frozen:
            try:
                t, _ = _locate(self, name)
            except KeyError:  # pragma: no cover - the state was changed by hand
                continue
            _PARAMETERS[id(t)] = t

    # -- discovery -----------------------------------------------------------------------------
    def named_tensors(self, prefix: str = "", recurse: bool = True,
                      remove_duplicate: bool = True) -> list[tuple[str, ag.Tensor]]:
        """Every state Tensor with its dotted name (a tensor reachable twice is listed once,
        under its first name, unless ``remove_duplicate=False``); ``recurse=False``: only the
        tensors held by this module itself, not by its sub-modules."""
        if not recurse:
            items: Iterator[tuple[str, Any]] = _every_name(self, prefix, set(), own=True)
        elif remove_duplicate:
            items = _walk(self, prefix, set())
        else:
            items = _every_name(self, prefix, set())
        out, ids = [], set()
        for name, obj in items:
            if isinstance(obj, ag.Tensor) and (not remove_duplicate or id(obj) not in ids):
                ids.add(id(obj))
                out.append((name, obj))
        return out

    def named_parameters(self, prefix: str = "", recurse: bool = True,
                         remove_duplicate: bool = True) -> list[tuple[str, ag.Tensor]]:
        """``(name, tensor)`` for every parameter, in PyTorch's order (a module's own, in
        attribute order, then its sub-modules', recursively): every state Tensor that
        requires grad, and every one that did when the module got it (a frozen weight,
        ``requires_grad_(False)``, is still listed, as PyTorch lists a frozen ``nn.Parameter``;
        optimizers skip parameters without a ``.grad``). State tensors that never required grad
        are buffers: in :meth:`state_dict`, not here. A tensor reachable under two names (tied
        weights) is listed once, under the first, unless ``remove_duplicate=False``. PyTorch's
        arguments: ``prefix`` is put before every name (``"prefix.name"``), ``recurse=False``
        lists only this module's own parameters."""
        out = []
        for n, t in self.named_tensors(prefix, recurse, remove_duplicate):
            if _BUFFERS and _BUFFERS.get(id(t)) is t:
                continue
            if t.requires_grad:
                if t.is_leaf:
                    _PARAMETERS[id(t)] = t  # e.g. appended to a list after the module got it
                out.append((n, t))
            elif _PARAMETERS.get(id(t)) is t:
                out.append((n, t))
        return Listing(out)

    def parameters(self, recurse: bool = True) -> list[ag.Tensor]:
        """The parameters (see :meth:`named_parameters`), e.g. for an optimizer: frozen ones
        included, so unfreezing one later makes the optimizer train it. A list (PyTorch
        returns a generator: ``list(...)`` of either is the same, and ``next(...)`` works on
        this one too, see :class:`Listing`)."""
        return Listing([t for _, t in self.named_parameters(recurse=recurse)])

    def named_buffers(self, prefix: str = "", recurse: bool = True,
                      remove_duplicate: bool = True) -> list[tuple[str, ag.Tensor]]:
        """``(name, tensor)`` for every state Tensor that is not a parameter (PyTorch's
        arguments, as :meth:`named_parameters`)."""
        return Listing([(n, t) for n, t in self.named_tensors(prefix, recurse, remove_duplicate)
                        if not is_parameter(t)])

    def buffers(self, recurse: bool = True) -> list[ag.Tensor]:
        """The state Tensors that are not parameters (constants saved with the model)."""
        return Listing([t for _, t in self.named_buffers(recurse=recurse)])

    def named_modules(self, memo: set[Module] | None = None, prefix: str = "",
                      remove_duplicate: bool = True) -> list[tuple[str, Module]]:
        """This module (name ``prefix``, ``""`` by default) and every sub-module, with their
        dotted names, parents before children (PyTorch's order and arguments: a module shared
        by two places once, unless ``remove_duplicate=False``; ``memo``, a set of modules to
        leave out, is updated with those listed)."""
        if not remove_duplicate:
            out: list[tuple[str, Module]] = []
            _every_module(self, prefix, set(), out)
            return Listing(out)
        seen = {id(m) for m in memo} if memo is not None else set()
        found = [(n, m) for n, m in _walk(self, prefix, seen) if isinstance(m, Module)]
        if memo is not None:
            memo.update(m for _, m in found)
        return Listing(found)

    def modules(self, remove_duplicate: bool = True) -> list[Module]:
        """This module and every sub-module."""
        return Listing([m for _, m in self.named_modules(remove_duplicate=remove_duplicate)])

    def named_children(self) -> list[tuple[str, Module]]:
        """The direct sub-modules with their names (``"fc"``, or ``"blocks.0"`` for one held in
        a plain list), each once, as PyTorch's ``named_children``."""
        out: list[tuple[str, Module]] = []
        seen: set[int] = set()
        for name, m in _children(self, ""):
            if id(m) not in seen:
                seen.add(id(m))
                out.append((name, m))
        return Listing(out)

    def children(self) -> list[Module]:
        """The direct sub-modules (see :meth:`named_children`)."""
        return Listing([m for _, m in self.named_children()])

    def get_submodule(self, target: str) -> Module:
        """The sub-module called ``target`` (a dotted name, ``""`` for this module), as
        PyTorch's ``get_submodule``.

        Raises:
            AttributeError: no sub-module has that name.
        """
        if target == "":
            return self
        for name, m in self.named_modules(remove_duplicate=False):
            if name == target:
                return m
        raise AttributeError(f"{type(self).__name__} has no sub-module {target!r} (its "
                             "sub-modules: see named_modules())")

    def get_parameter(self, target: str) -> ag.Tensor:
        """The parameter called ``target`` (a dotted name), as PyTorch's ``get_parameter``.

        Raises:
            AttributeError: no parameter has that name.
        """
        return _named(self, self.named_parameters(remove_duplicate=False), target, "parameter")

    def get_buffer(self, target: str) -> ag.Tensor:
        """The buffer called ``target`` (a dotted name), as PyTorch's ``get_buffer``.

        Raises:
            AttributeError: no buffer has that name.
        """
        return _named(self, self.named_buffers(remove_duplicate=False), target, "buffer")

    def num_parameters(self) -> int:
        """The number of scalar parameters (frozen ones included)."""
        return sum(t.size or 0 for t in self.parameters())

    # -- modes and gradients -------------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        """Set training mode (``mode=False``: evaluation mode) here and in every sub-module.

        Raises:
            ValueError: ``mode`` is not a bool (as PyTorch: ``train("False")`` would train).
        """
        if not isinstance(mode, bool):
            raise ValueError(f"{type(self).__name__}.train: the training mode must be a bool, "
                             f"not {type(mode).__name__} ({mode!r})")
        for m in self.modules():
            m.training = bool(mode)
        return self

    def eval(self) -> Module:
        """Evaluation mode (``train(False)``): dropout becomes the identity."""
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the ``.grad`` of every parameter (frozen ones included): set it to ``None``
        (the default, as PyTorch's), or with ``set_to_none=False`` fill it with zeros in place
        (detached from any graph first), so it keeps its identity and memory, as PyTorch's and
        :meth:`agnograd.optim.Optimizer.zero_grad`; parameters without a gradient keep
        ``None``."""
        with ag.no_grad():
            for t in self.parameters():
                g = t.grad
                if g is None:
                    continue
                if set_to_none:
                    t.grad = None
                    continue
                if g._node is not None or g.requires_grad:
                    g = t.grad = g.detach()
                g[...] = 0

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        """Set ``requires_grad`` on every parameter (frozen ones included; buffers are left
        alone), as PyTorch's ``Module.requires_grad_``: ``False`` freezes the module, ``True``
        unfreezes it (the parameters stay parameters either way). Returns ``self``."""
        for t in self.parameters():
            t.requires_grad_(requires_grad)
        return self

    def apply(self, fn: Callable[[Module], Any]) -> Module:
        """Call ``fn`` on every sub-module and then on this module, as PyTorch's
        ``Module.apply``: each child's sub-modules (recursively) before the child, children in
        attribute order, the module itself last -- so a sub-module held by two parents is
        visited under each, as in PyTorch (a module held twice by one parent, once). E.g.
        ``model.apply(init_weights)``. Returns ``self``."""
        order: list[Module] = []
        # an iterative post-order walk; ``path`` holds the modules being walked (a cycle stops)
        stack: list[tuple[Module, bool]] = [(self, False)]
        path: list[int] = []
        while stack:
            m, done = stack.pop()
            if done:
                path.pop()
                order.append(m)
                continue
            path.append(id(m))
            stack.append((m, True))
            children = [c for c in self._children_of(m) if id(c) not in path]
            stack.extend((c, False) for c in reversed(children))
        for m in order:
            fn(m)
        return self

    @staticmethod
    def _children_of(m: Module) -> list[Module]:
        return [c for _, c in m.named_children()]

    def register_buffer(self, name: str, tensor: ag.Tensor | None, persistent: bool = True
                        ) -> None:
        """Hold ``tensor`` as buffer ``name`` (PyTorch's ``register_buffer``): state that is
        not a parameter -- not in :meth:`parameters`, even if it requires grad -- converted
        by :meth:`astype` (floating ones) and :meth:`to_backend` with the parameters, and in
        :meth:`state_dict` (and :meth:`save`) unless ``persistent=False``. ``tensor=None``
        holds ``None`` (nothing in the state dict). Reassigning ``self.<name>`` later keeps the
        name's persistence, and a buffer: ``self.running = 0.9 * self.running + 0.1 * x.mean()``
        in ``forward`` stays a buffer even when the new value requires grad.

        Raises:
            KeyError: ``name`` is empty, contains ``"."``, or names an attribute that is not a
                buffer (a parameter, a sub-module, a method).
            TypeError: ``tensor`` is neither a Tensor nor ``None``.
            ValueError: ``name`` starts with ``_``: such attributes are private here (not
                state, never saved); choose a public name.
        """
        if not isinstance(name, str) or not name or "." in name:
            raise KeyError(f"register_buffer: the buffer name must be a non-empty string "
                           f"without '.', not {name!r}")
        if name.startswith("_"):
            raise ValueError(f"register_buffer: {name!r} starts with '_', which makes an "
                             "attribute private in agnograd (not state, not saved); give the "
                             "buffer a public name")
        if tensor is not None and not isinstance(tensor, ag.Tensor):
            raise TypeError(f"register_buffer: cannot assign {type(tensor).__name__} as buffer "
                            f"{name!r} (an agnograd Tensor or None is required); wrap it with "
                            "ag.asarray")
        names: dict[str, bool] = self.__dict__.get("_buffer_names", {})
        if name not in names and (name in vars(self) or hasattr(type(self), name)):
            old = getattr(self, name)
            if not (isinstance(old, ag.Tensor) and not is_parameter(old)):
                raise KeyError(f"register_buffer: attribute {name!r} already exists "
                               f"({type(old).__name__}) and is not a buffer")
        names = self.__dict__.setdefault("_buffer_names", {})
        names[name] = bool(persistent)
        if isinstance(tensor, ag.Tensor):  # a buffer, even a parameter given here (PyTorch's)
            _PARAMETERS.pop(id(tensor), None)
            _BUFFERS[id(tensor)] = tensor
        object.__setattr__(self, name, tensor)
        _WORLD[0] += 1

    def _check_new_name(self, what: str, name: Any) -> None:
        if not isinstance(name, str):
            raise TypeError(f"{what}: the name must be a string, not {type(name).__name__}")
        if not name or "." in name:
            raise KeyError(f"{what}: the name must be a non-empty string without '.', not "
                           f"{name!r}")
        if name.startswith("_"):
            raise ValueError(f"{what}: {name!r} starts with '_', which makes an attribute "
                             "private in agnograd (not state, not saved); choose a public name")
        if hasattr(type(self), name) and name != "training":
            raise KeyError(f"{what}: {name!r} is an attribute of {type(self).__name__} (a "
                           "method or class attribute); choose another name")

    def register_parameter(self, name: str, param: ag.Tensor | None) -> None:
        """Hold ``param`` (an :class:`nn.Parameter <Parameter>` or ``None``) as parameter
        ``name``, as PyTorch's ``register_parameter`` (the same as assigning it).

        Raises:
            TypeError: ``param`` is not a parameter (wrap it with ``nn.Parameter``).
            KeyError: ``name`` is empty, contains ``"."``, or names a method or an attribute
                that is not a parameter.
            ValueError: ``name`` starts with ``_`` (private in agnograd).
        """
        self._check_new_name("register_parameter", name)
        if param is not None and not (isinstance(param, ag.Tensor)
                                      and _PARAMETERS.get(id(param)) is param):
            raise TypeError(f"register_parameter: cannot assign {type(param).__name__} as "
                            f"parameter {name!r} (an nn.Parameter or None is required); wrap "
                            "it: nn.Parameter(tensor)")
        old = vars(self).get(name)
        if name in vars(self) and old is not None and not (
                isinstance(old, ag.Tensor) and _PARAMETERS.get(id(old)) is old):
            raise KeyError(f"register_parameter: attribute {name!r} already exists "
                           f"({type(old).__name__}) and is not a parameter")
        setattr(self, name, param)

    def add_module(self, name: str, module: Module | None) -> None:
        """Hold ``module`` (or ``None``) as sub-module ``name``, as PyTorch's ``add_module``
        (the same as assigning it).

        Raises:
            TypeError: ``module`` is not a Module.
            KeyError: ``name`` is empty, contains ``"."``, or names a method or an attribute
                that is not a sub-module.
            ValueError: ``name`` starts with ``_`` (private in agnograd).
        """
        self._check_new_name("add_module", name)
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"add_module: {type(module).__name__} is not a Module")
        old = vars(self).get(name)
        if name in vars(self) and old is not None and not isinstance(old, Module):
            raise KeyError(f"add_module: attribute {name!r} already exists "
                           f"({type(old).__name__}) and is not a sub-module")
        setattr(self, name, module)

    def register_module(self, name: str, module: Module | None) -> None:
        """The same as :meth:`add_module` (PyTorch's alias)."""
        self.add_module(name, module)

    def _non_persistent(self) -> set[str]:
        """The dotted names of the non-persistent buffers here and in sub-modules."""
        out: set[str] = set()
        for prefix, m in self.named_modules(remove_duplicate=False):
            for n, keep in m.__dict__.get("_buffer_names", {}).items():
                if not keep:
                    out.add(f"{prefix}.{n}" if prefix else n)
        return out

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self, *, prefix: str = "", keep_vars: bool = False) -> dict[str, ag.Tensor]:
        """Name -> detached Tensor for every state tensor: parameters (frozen ones included)
        and buffers, as PyTorch's: a tied tensor (or one in a sub-module shared by two places)
        under each of its names. The tensors share memory with the model's (no copy), so later
        in-place updates show through; ``save`` or copy them to keep a snapshot.
        Non-persistent buffers (``register_buffer(..., persistent=False)``) are left out.
        PyTorch's keywords: ``prefix`` is put before every name, ``keep_vars=True`` gives the
        model's tensors themselves (not detached)."""
        skip = self._non_persistent()
        return {prefix + name: (t if keep_vars else t.detach())
                for name, t in _state_items(self, "", set()) if name not in skip}

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True,
                        assign: bool = False) -> IncompatibleKeys:
        """Copy values into the model's tensors, keeping each tensor's backend and device.

        ``state`` maps names to Tensors or arrays of any backend (a state dict, or the arrays
        of a saved file, or a PyTorch ``state_dict()``: the layouts are PyTorch's). A tied
        tensor may be given under any of its names (PyTorch's state dicts hold each name);
        names given twice must hold equal values. Every name, shape and dtype is checked -- and
        every value converted -- before anything is assigned, so on error the model is
        unchanged. A value of another dtype of the same kind is converted to the tensor's dtype
        (float64 into a float32 model, int32 into int64); across kinds (integers into floating
        tensors, complex into real ones) it is refused, as is a float64 value too large for
        float32 (it would become infinite). Names of agnograd before ``Sequential`` named its
        layers as PyTorch (``layers.0.weight`` for ``0.weight``) are read as today's.

        Args:
            state: name -> value.
            strict: when true (the default) missing and unexpected names are errors; when
                false, only the names present in both are loaded (a shape that differs is an
                error either way, as in PyTorch).
            assign: PyTorch's option to take the given tensors themselves; only ``False`` (copy
                the values in) is supported.

        Returns:
            ``IncompatibleKeys(missing_keys, unexpected_keys)``, as PyTorch's: the model's
            names the state did not hold and the state's names the model does not have (both
            empty after a strict load).

        Raises:
            StateDictError: names missing or unexpected (strict), a shape differs, or a dtype
                cannot be converted.
            NotImplementedError: ``assign=True``.
        """
        if assign:
            raise NotImplementedError(
                f"{type(self).__name__}.load_state_dict(assign=True): agnograd copies the values "
                "into the model's tensors (assign=False); to use given tensors as parameters, "
                "assign them as attributes (module.weight = nn.Parameter(t))")
        state = self._modern_names(state)
        skip = self._non_persistent()
        own = {n: t for n, t in self.named_tensors() if n not in skip}
        first = {id(t): n for n, t in own.items()}
        alias = {n: first[id(t)] for n, t in _every_name(self, "", set())  # name -> first name
                 if id(t) in first and n not in skip}
        given: dict[str, list[str]] = {}  # first name -> the names of it that state holds
        for n in state:
            if n in alias:
                given.setdefault(alias[n], []).append(n)
        problems = []
        missing = [n for n in own if n not in given]
        unexpected = [n for n in state if n not in alias]
        missing_keys = [n for n, first in alias.items() if first not in given]
        if strict and missing:
            problems.append("missing " + ", ".join(repr(n) for n in missing))
        if strict and unexpected:
            problems.append("unexpected " + ", ".join(repr(n) for n in unexpected))
        pairs = []
        for name, t in own.items():
            if name not in given:
                continue
            names = given[name]
            values = []
            for n in names:
                value = state[n]
                if (not isinstance(value, ag.Tensor) and getattr(value, "requires_grad", False)
                        and callable(getattr(value, "detach", None))):
                    value = value.detach()  # e.g. dict(torch_model.named_parameters())
                try:
                    values.append(value if isinstance(value, ag.Tensor)
                                  else ag.tensor(value, backend=t.backend))
                except Exception as exc:
                    problems.append(f"{n!r} cannot be read as an array ({exc})")
            if len(values) < len(names):
                continue
            v = values[0]
            name = names[0]
            if v.shape != t.shape:
                problems.append(f"{name!r} has shape {v.shape}, the model's has shape {t.shape}")
            elif v.dtype != t.dtype and v.dtype.kind != t.dtype.kind:
                problems.append(f"{name!r} has dtype {v.dtype.name}, the model's has dtype "
                                f"{t.dtype.name} (only dtypes of the same kind are converted: "
                                f"cast the value with ag.astype first if that is meant)")
            elif any(not _same_values(w, v) for w in values[1:]):
                problems.append(f"{', '.join(map(repr, names))} name one tied tensor of the model "
                                "but hold different values")
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
        return IncompatibleKeys(missing_keys, unexpected)

    def _modern_names(self, state: Mapping[str, Any]) -> Mapping[str, Any]:
        """``state`` with the names of agnograd before ``Sequential`` named its layers as
        PyTorch does (``layers.0.weight``, now ``0.weight``) renamed; other names kept."""
        if not any(".layers." in "." + k for k in state):
            return state
        out: dict[str, Any] = {}
        for key, value in state.items():
            parts, kept = key.split("."), []
            obj: Any = self
            i = 0
            while i < len(parts):
                if (isinstance(obj, Module) and getattr(type(obj), "_legacy_layers", False)
                        and parts[i] == "layers" and "layers" not in vars(obj)
                        and i + 1 < len(parts) and parts[i + 1] in vars(obj)):
                    i += 1  # the old ``layers`` level of a Sequential
                    continue
                kept.append(parts[i])
                if isinstance(obj, Module):
                    obj = vars(obj).get(parts[i])
                elif isinstance(obj, (list, tuple)) and parts[i].isdigit() and int(parts[i]) < len(obj):
                    obj = obj[int(parts[i])]
                elif isinstance(obj, dict):
                    obj = obj.get(parts[i])
                else:
                    obj = None
                i += 1
            new = ".".join(kept)
            out[new if new not in state else key] = value
        return out

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the state to an ``.npz`` file (one array per name, plus a format marker
        ``__agnograd_format__``; no pickle). The file is replaced only once it has been written
        completely."""
        skip = self._non_persistent()
        arrays = {name: t.data for name, t in self.named_tensors() if name not in skip}
        arrays[MODULE_FORMAT_KEY] = ag.tensor(MODULE_FORMAT, dtype=ag.int64, backend="numpy").data
        save_npz(path, arrays)

    def load(self, path: str | os.PathLike[str]) -> Module:
        """Read a file written by :meth:`save` into this model (``allow_pickle=False``).

        A file written before :class:`~agnograd.nn.Linear` stored its weight as PyTorch does,
        ``(out_features, in_features)`` (a file without the ``__agnograd_format__`` marker), is
        converted: the weight of every ``Linear`` layer is transposed from the old
        ``(in_features, out_features)`` layout, with a warning (save the model again to update
        the file).

        Raises:
            FileNotFoundError: no such file.
            StateDictError: names, shapes or dtypes in the file do not match the model (which
                is then unchanged), or the file was written by a newer agnograd.
            ValueError: the file is not an ``.npz`` archive.
        """
        arrays = load_npz(path)
        marker = arrays.pop(MODULE_FORMAT_KEY, None)
        version = 1 if marker is None else int(marker)
        if version > MODULE_FORMAT:
            raise StateDictError(f"{os.fspath(path)}: written in format {version} by a newer "
                                 f"agnograd; this one reads formats up to {MODULE_FORMAT}: "
                                 "upgrade agnograd to load it")
        arrays = dict(self._modern_names(arrays))
        if version < 2:
            arrays = convert_linear_layout(self, arrays, f"{os.fspath(path)!r}")
        try:
            self.load_state_dict(arrays)
            return self
        except StateDictError as exc:
            raise StateDictError(f"{os.fspath(path)}: {exc}") from None

    # -- backends ------------------------------------------------------------------------------
    def to_backend(self, backend: str, device: Any = None) -> Module:
        """Move every state tensor to ``backend`` (and ``device``), in place; returns ``self``.

        The moved parameters are new Tensors (their gradients are dropped); an optimizer made
        before the move follows them (its state moved with them), as PyTorch's does after
        ``model.to(device)``.
        """
        ag.get_backend(backend)  # an unknown or unusable backend fails here, before any change
        # id(old) -> (old, new): a tensor reachable twice stays one (old is held: ids stay unique)
        done: dict[int, tuple[ag.Tensor, ag.Tensor]] = {}

        def move(name: str, t: ag.Tensor) -> ag.Tensor:
            if id(t) in done:
                return done[id(t)][1]
            new = ag.to_backend(t.detach(), backend)
            if device is not None:
                new = ag.asarray(new, device=device)
            new = t if new.data is t.data else _mark_like(new, t)  # (already there: kept)
            done[id(t)] = (t, new)
            return new

        _replace(self, move, "", set())
        _follow(done)
        _WORLD[0] += 1  # tensors replaced in containers: a compiled step re-checks its guards
        return self

    def astype(self, dtype: Any) -> Module:
        """Convert every floating-point state tensor to ``dtype`` (e.g. ``ag.float64``), in
        place; returns ``self``. Like :meth:`to_backend`, the parameters become new Tensors
        (an optimizer made before follows them, its floating state cast too); a tensor
        reachable under several names (tied weights) stays one tensor, and frozen parameters
        stay parameters."""
        done: dict[int, tuple[ag.Tensor, ag.Tensor]] = {}  # as in to_backend

        def cast(name: str, t: ag.Tensor) -> ag.Tensor:
            if not t.dtype.is_floating or t.dtype == dtype:
                return t
            if id(t) not in done:
                done[id(t)] = (t, _mark_like(ag.astype(t.detach(), dtype), t))
            return done[id(t)][1]

        _replace(self, cast, "", set())
        _follow(done)
        _WORLD[0] += 1
        return self

    def double(self) -> Module:
        """``astype(ag.float64)``, as PyTorch's ``Module.double()`` (floating state only)."""
        return self.astype(ag.float64)

    def float(self) -> Module:
        """``astype(ag.float32)``, as PyTorch's ``Module.float()`` (floating state only)."""
        return self.astype(ag.float32)

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


def convert_linear_layout(model: Module, arrays: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``arrays`` (name -> host array, read from a file of format 1) with the weight of every
    :class:`~agnograd.nn.Linear` layer of ``model`` transposed from the old ``(in_features,
    out_features)`` layout to ``(out_features, in_features)``; warns when it converted any.

    Raises:
        StateDictError: a (non-square) weight already has the new layout, so the file was not
            written by an older agnograd.
    """
    names = {id(t): n for n, t in model.named_tensors()}
    out = dict(arrays)
    done: set[int] = set()
    converted = []
    for m in model.modules():
        for attr in type(m)._legacy_transposed:
            t = vars(m).get(attr)
            if not isinstance(t, ag.Tensor) or t.ndim != 2 or id(t) in done:
                continue
            done.add(id(t))
            name = names.get(id(t))
            if name is None or name not in out:
                continue  # missing: load_state_dict reports it
            shape = tuple(out[name].shape)
            if shape == (t.shape[1], t.shape[0]):
                host = ag.tensor(out[name], backend="numpy")
                out[name] = ag.asarray(ag.matrix_transpose(host), copy=True).data
                converted.append(name)
            elif shape == t.shape:
                raise StateDictError(
                    f"{where} has no format marker, so it was read as written by agnograd 0.1, "
                    "which stored Linear weights as (in_features, out_features); but "
                    f"{name!r} has shape {shape}, the (out_features, in_features) layout of "
                    "today. If other code wrote it in that layout, load its arrays with "
                    "model.load_state_dict(...) instead")
    if converted:
        warnings.warn(f"{where} was written by agnograd 0.1 (Linear weights stored as "
                      f"(in_features, out_features)): transposed {', '.join(map(repr, converted))} "
                      "to today's (out_features, in_features), as PyTorch stores them; save "
                      "again to update the file", UserWarning, stacklevel=3)
    return out


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
    return found, None


def _slots(obj: Any, targets: Mapping[int, Any], prefix: str, seen: set[int],
           out: list[tuple[Any, Any, ag.Tensor, str]]) -> None:
    """Append ``(container, key, tensor, name)`` for every place where a Tensor whose id is in
    ``targets`` is reachable from ``obj``."""
    if isinstance(obj, Module):
        if id(obj) in seen:
            return
        seen.add(id(obj))
        items: Any = [(k, v) for k, v in vars(obj).items() if not k.startswith("_")]
    elif isinstance(obj, (list, tuple)):
        items = list(enumerate(obj))
    elif isinstance(obj, dict):
        items = [(k, v) for k, v in obj.items() if isinstance(k, str)]
    else:
        return
    for key, value in items:
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, ag.Tensor):
            if id(value) in targets:
                if isinstance(obj, tuple):
                    raise TypeError(f"functional_call: {name!r} sits in a tuple, which cannot be "
                                    "modified; use a list")
                out.append((obj, key, value, name))
        else:
            _slots(value, targets, name, seen, out)


def _put(obj: Any, key: Any, value: ag.Tensor) -> None:
    if isinstance(obj, (list, dict)):
        obj[key] = value
    else:
        object.__setattr__(obj, str(key), value)
    _WORLD[0] += 1  # a compiled step's guards see the replaced tensor


def functional_call(module: Module,
                    tensors: Mapping[str, ag.Tensor] | Sequence[Mapping[str, ag.Tensor]],
                    *args: Any, **kwargs: Any) -> Any:
    """Call ``module(*args, **kwargs)`` with some of its state tensors replaced by ``tensors``
    (name -> Tensor) for the duration of the call, e.g. to differentiate with respect to a
    copy of the parameters with :func:`agnograd.grad`:

        grads = ag.grad(lambda p: loss(functional_call(model, p, x)))(params)

    PyTorch's calling form is read too: ``functional_call(module, params, (x, y))`` -- a
    single (plain) tuple is the tuple of positional arguments, and ``functional_call(module,
    params, (x,), {"mask": m})`` or ``kwargs={"mask": m}`` gives the keyword arguments -- and
    ``tensors`` may be a tuple of dicts (e.g. ``(params, buffers)``), whose names must not
    repeat. (To pass one tuple as the only argument of ``forward``, wrap it: ``((a, b),)``.)

    A tensor reachable under several names (tied weights) is replaced everywhere it is
    reachable, whichever of its names is given (``torch.func.functional_call``'s default,
    ``tie_weights=True``); giving two of its names different tensors is an error.

    Raises:
        KeyError: a name is not a state tensor of ``module``.
        ValueError: two names of one tied tensor are given different tensors, or a name
            repeats across a tuple of dicts.
        TypeError: the tensor sits in a tuple (which cannot be modified).
    """
    given: Mapping[str, ag.Tensor]
    if isinstance(tensors, (tuple, list)):  # PyTorch: a tuple of dicts (params, buffers)
        merged: dict[str, ag.Tensor] = {}
        for d in tensors:
            repeated = sorted(set(merged) & set(d))
            if repeated:
                raise ValueError(f"functional_call: {', '.join(map(repr, repeated))} given in "
                                 "more than one of the dicts; give each name once")
            merged.update(d)
        given = merged
    else:
        given = tensors  # type: ignore[assignment]
    if args and type(args[0]) is tuple and (  # PyTorch's (args, kwargs) form
            len(args) == 1 or (len(args) == 2 and isinstance(args[1], dict) and not kwargs)):
        if len(args) == 2:
            kwargs = dict(args[1])
        elif isinstance(kwargs.get("kwargs"), dict) and set(kwargs) == {"kwargs"}:
            kwargs = dict(kwargs["kwargs"])
        args = args[0]
    targets: dict[int, tuple[str, Any]] = {}  # id(current tensor) -> (a name given, new)
    for name, new in given.items():
        found, _ = _locate(module, name)
        if id(found) in targets and targets[id(found)][1] is not new:
            raise ValueError(
                f"functional_call: {targets[id(found)][0]!r} and {name!r} name one tied tensor "
                "but were given different tensors; give one of them (it replaces the tensor "
                "under every name)")
        targets[id(found)] = (name, new)
    slots: list[tuple[Any, Any, ag.Tensor, str]] = []
    _slots(module, targets, "", set(), slots)
    try:
        for obj, key, old, _ in slots:
            _put(obj, key, targets[id(old)][1])
        return module(*args, **kwargs)
    finally:
        for obj, key, old, _ in slots:
            _put(obj, key, old)
