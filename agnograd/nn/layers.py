"""Layers: ``Linear``, ``LayerNorm``, ``Embedding``, the
containers (``Sequential``, ``ModuleList``, ``ModuleDict``), ``MLP``, ``Dropout``, ``Flatten``,
``Identity`` and the activation modules (convolution and pooling: ``agnograd.nn.conv``)."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableSequence, Sequence
from typing import Any

import agnograd as ag

from ..backends.host import HostRNG, host_rng
from ..capture import _state as _capture
from ..random import Generator
from . import functional as F
from .init import default_dtype, initializer
from .module import Module, Parameter, check_input_dtype

__all__ = ["Linear", "LayerNorm", "Embedding", "Sequential", "ModuleList", "ModuleDict",
           "ParameterList", "ParameterDict", "MLP",
           "Dropout", "Flatten", "Unflatten", "Identity", "ReLU", "Tanh", "Sigmoid", "GELU",
           "Softplus", "LeakyReLU", "ELU", "SiLU", "ACTIVATIONS",
           "BatchNorm1d", "BatchNorm2d", "GroupNorm", "InstanceNorm1d", "InstanceNorm2d"]

Seed = int | Sequence[int] | HostRNG | None


_linear = F._linear


class Linear(Module):
    """``y = x Wᵀ + b`` with ``W`` of shape ``(out_features, in_features)``, as PyTorch's
    ``nn.Linear`` (and :class:`Conv2d`: output channels first), so a PyTorch state dict loads
    as it is. (agnograd 0.1 stored ``W`` as ``(in_features, out_features)``; :meth:`Module.load`
    and :func:`load_training_state` convert its files.)

    Shapes: ``x (..., in_features) -> y (..., out_features)``; ``dL/dW = dL/dyᵀ x``. ``W`` is
    drawn by ``init`` (Glorot uniform by default; ``"he"`` for ReLU layers) from a host
    generator seeded by ``seed`` and moved to ``backend``; ``b`` starts at zero.

    Args:
        in_features: size of each input sample.
        out_features: size of each output sample.
        bias: whether to add the bias ``b``.
        backend: where the parameters live (``None``: the default backend).
        dtype: the parameters' dtype (``None``: :func:`agnograd.set_default_dtype`'s, else
            float32).
        seed: an int, a sequence of ints or a host generator; ``None`` draws fresh entropy.
        init: ``"glorot"``, ``"glorot_normal"``, ``"he"`` or ``"he_uniform"``.
    """

    _legacy_transposed = ("weight",)  # agnograd 0.1's files hold it as (in, out)

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 backend: str | None = None, dtype: Any = None, seed: Seed = None,
                 init: str = "glorot") -> None:
        if in_features < 1 or out_features < 1:
            raise ValueError(f"Linear({in_features}, {out_features}): sizes must be positive")
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        dtype = default_dtype(dtype)
        # Drawn as (in, out), the initialisers' (fan_in, fan_out) layout -- the same values for a
        # seed as agnograd 0.1 drew -- and stored transposed, as PyTorch does.
        w = initializer(init)((self.in_features, self.out_features), seed=seed, backend=backend,
                              dtype=dtype, requires_grad=False)
        flat = ag.reshape(ag.matrix_transpose(w), (-1,))  # row-major, as a new (out, in) array
        self.weight = ag.asarray(ag.reshape(flat, (self.out_features, self.in_features)),
                                 copy=True).requires_grad_()
        self.bias: ag.Tensor | None = None
        if bias:
            self.bias = ag.tensor([0.0] * self.out_features, backend=self.weight.backend,
                                  dtype=dtype, device=self.weight.device, requires_grad=True)

    def forward(self, x: ag.Tensor) -> ag.Tensor:
        check_input_dtype(self, x, self.weight)
        return _linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, backend={self.weight.backend!r}, "
                f"dtype={self.weight.dtype.name}")


class Sequential(Module):
    """Applies its layers in order, as PyTorch's ``nn.Sequential``: ``Sequential(*layers)`` or
    ``Sequential(OrderedDict(name=layer, ...))``. The layers are named ``"0"``, ``"1"``, ... (or
    by the dict's keys), so the state-dict keys are PyTorch's: ``0.weight``, ``2.bias``. A layer
    may also be a plain function of one Tensor (not in PyTorch; it holds no state).

    Indexing with an int gives a layer, with a slice a new ``Sequential`` of the same layers;
    ``len``, iteration, ``append``, ``extend``, ``insert``, ``pop``, ``del``, item assignment,
    ``+`` and ``*`` work as in PyTorch (deleting, inserting or popping renumbers the layers
    ``"0"``, ``"1"``, ...). ``layers`` is a list-like view of the layers (``seq.layers[2]``;
    assigning through it replaces the layer). Names saved by agnograd before this layout
    (``layers.0.weight``) still load."""

    _legacy_layers = True  # load_state_dict reads the old names ``layers.<i>.<...>``

    def __init__(self, *layers: Any) -> None:
        self._names: list[str] = []
        if len(layers) == 1 and isinstance(layers[0], Mapping):
            for name, layer in layers[0].items():
                self._put(_check_layer_name(name), layer)
        else:
            for layer in layers:
                self._put(str(len(self._names)), layer)

    def _put(self, name: str, layer: Any) -> None:
        vars(self)[name] = _check_layer(layer)
        if name not in self._names:
            self._names.append(name)
        _capture.touch()  # a compiled step recorded with the old layers must not replay

    def _renumber(self, layers: list[Any]) -> None:
        for name in self._names:
            del vars(self)[name]
        self._names = []
        for layer in layers:
            self._put(str(len(self._names)), layer)
        _capture.touch()

    def _items(self) -> list[Any]:
        return [vars(self)[n] for n in self._names]

    def forward(self, x: Any) -> Any:
        for name in self._names:
            x = vars(self)[name](x)
        return x

    def _index(self, i: int) -> str:
        k = operator.index(i)
        n = len(self._names)
        if not -n <= k < n:
            raise IndexError(f"Sequential index {i} out of range for {n} layers")
        return self._names[k % n]

    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return type(self)(dict(list(zip(self._names, self._items()))[i]))
        return vars(self)[self._index(i)]

    def __setitem__(self, i: int, layer: Any) -> None:
        self._put(self._index(i), layer)

    def __delitem__(self, i: int | slice) -> None:
        layers = self._items()
        if not isinstance(i, slice):
            self._index(i)  # an index out of range raises IndexError
        del layers[i]
        self._renumber(layers)

    def __len__(self) -> int:
        return len(self._names)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._items())

    def append(self, layer: Any) -> Sequential:
        """Add ``layer`` at the end (named ``str(len(self))``); returns ``self``."""
        self._put(str(len(self._names)), layer)
        return self

    def extend(self, layers: Iterable[Any]) -> Sequential:
        """Append every layer of ``layers``; returns ``self``."""
        for layer in list(layers):
            self.append(layer)
        return self

    def insert(self, index: int, layer: Any) -> Sequential:
        """Insert ``layer`` before position ``index`` (``-len(self) <= index <= len(self)``,
        as PyTorch's) and renumber; returns ``self``."""
        n = len(self._names)
        k = operator.index(index)
        if not -n <= k <= n:
            raise IndexError(f"Sequential.insert: index {index} out of range for {n} layers")
        layers = self._items()
        layers.insert(k, _check_layer(layer))
        self._renumber(layers)
        return self

    def pop(self, index: int | slice) -> Any:
        """Remove the layer at ``index`` and return it (the rest renumbered)."""
        layer = self[index]
        del self[index]
        return layer

    def __add__(self, other: Sequential) -> Sequential:
        if not isinstance(other, Sequential):
            raise TypeError(f"Sequential + {type(other).__name__}: add another Sequential")
        return Sequential(*self._items(), *other._items())

    def __iadd__(self, other: Sequential) -> Sequential:
        if not isinstance(other, Sequential):
            raise TypeError(f"Sequential += {type(other).__name__}: add another Sequential")
        return self.extend(other._items())

    def __mul__(self, other: int) -> Sequential:
        if not isinstance(other, int) or isinstance(other, bool) or other <= 0:
            raise ValueError(f"Sequential * {other!r}: multiply by a positive int")
        return Sequential(*(self._items() * other))  # the same layers repeated, as PyTorch

    __rmul__ = __mul__

    def __imul__(self, other: int) -> Sequential:
        repeated = self * other
        self._renumber(repeated._items())
        return self

    @property
    def layers(self) -> _LayerView:
        """The layers as a list-like view: indexing, ``len``, iteration; assigning, deleting
        and inserting through it change the Sequential."""
        return _LayerView(self)

    def __dir__(self) -> list[str]:
        return [str(d) for d in super().__dir__() if not str(d).isdigit()]


class _LayerView(MutableSequence[Any]):
    """``Sequential.layers``: the layers, as a list that writes through."""

    def __init__(self, seq: Sequential) -> None:
        self._seq = seq

    def __getitem__(self, i: Any) -> Any:
        return self._seq._items()[i]

    def __setitem__(self, i: Any, layer: Any) -> None:
        if isinstance(i, slice):
            layers = self._seq._items()
            layers[i] = [_check_layer(x) for x in layer]
            self._seq._renumber(layers)
        else:
            self._seq[i] = layer

    def __delitem__(self, i: Any) -> None:
        del self._seq[i]

    def __len__(self) -> int:
        return len(self._seq)

    def insert(self, index: int, layer: Any) -> None:
        layers = self._seq._items()
        layers.insert(index, _check_layer(layer))
        self._seq._renumber(layers)

    def __eq__(self, other: object) -> bool:
        return list(self) == (list(other) if isinstance(other, (list, _LayerView)) else other)

    def __repr__(self) -> str:
        return repr(self._seq._items())


def _check_layer(layer: Any) -> Any:
    if not (isinstance(layer, Module) or callable(layer)):
        raise TypeError(f"Sequential holds Modules (or functions of one Tensor), not "
                        f"{type(layer).__name__}")
    return layer


def _check_layer_name(name: Any) -> str:
    if not isinstance(name, str) or not name or "." in name or name.startswith("_") \
            or hasattr(Sequential, name) or name == "training":
        raise KeyError(f"Sequential: {name!r} cannot name a layer (a non-empty string without "
                       "'.', not starting with '_', not a method name)")
    return name


class ModuleList(Module):
    """A list of modules whose parameters the container finds: ``layers.0.weight``, as in
    PyTorch. Supports indexing (an int, or a slice giving a new ``ModuleList``), ``len``,
    iteration, ``append``, ``extend`` and ``insert``. It has no ``forward``: iterate over it."""

    def __init__(self, modules: Iterable[Module] | None = None) -> None:
        self._n = 0
        if modules is not None:
            self.extend(modules)

    def _items(self) -> list[Module]:
        return [vars(self)[str(i)] for i in range(self._n)]

    def _set_all(self, items: list[Module]) -> None:
        for i in range(self._n):
            del vars(self)[str(i)]
        for i, m in enumerate(items):
            vars(self)[str(i)] = _check_module(m, "ModuleList")
        self._n = len(items)
        _capture.touch()

    def append(self, module: Module) -> ModuleList:
        vars(self)[str(self._n)] = _check_module(module, "ModuleList")
        self._n += 1
        _capture.touch()
        return self

    def extend(self, modules: Iterable[Module]) -> ModuleList:
        for m in modules:
            self.append(m)
        return self

    def insert(self, index: int, module: Module) -> None:
        items = self._items()
        items.insert(index, module)
        self._set_all(items)

    def _key(self, i: int) -> str:
        """The attribute holding entry ``i`` (negative from the end), as a list would index."""
        k = operator.index(i)
        if not -self._n <= k < self._n:
            raise IndexError(f"ModuleList index {i} out of range for {self._n} modules")
        return str(k % self._n)

    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return ModuleList(self._items()[i])
        return vars(self)[self._key(i)]

    def __setitem__(self, i: int, module: Module) -> None:
        vars(self)[self._key(i)] = _check_module(module, "ModuleList")
        _capture.touch()  # a compiled step recorded with the old module must not replay

    def __delitem__(self, i: int | slice) -> None:
        items = self._items()
        del items[i]
        self._set_all(items)

    def __len__(self) -> int:
        return self._n

    def __iter__(self) -> Iterator[Module]:
        return (vars(self)[str(i)] for i in range(self._n))

    def pop(self, index: int = -1) -> Module:
        """Remove the module at ``index`` and return it (the rest renumbered)."""
        module = self[index]
        del self[index]
        return module  # type: ignore[no-any-return]

    def __add__(self, other: Iterable[Module]) -> ModuleList:
        return ModuleList([*self._items(), *other])

    def __iadd__(self, other: Iterable[Module]) -> ModuleList:
        return self.extend(other)


def _check_module(m: Any, where: str) -> Module:
    if not isinstance(m, Module):
        raise TypeError(f"{where} holds Modules, not {type(m).__name__}")
    return m


class _KeyedModule(Module):
    """The dict interface of :class:`ModuleDict` and :class:`ParameterDict`: string keys in
    insertion order, each entry an attribute (so the module's walk finds it under its key).
    Keys must be identifier-like names without ``.``, not starting with ``_``, and not the name
    of a method. Subclasses say what an entry may be (:meth:`_entry`)."""

    def __init__(self, entries: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None
                 ) -> None:
        self._keys: list[str] = []
        if entries is not None:
            self.update(entries)

    def _entry(self, value: Any) -> Any:
        raise NotImplementedError

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(key, str) or not key or key.startswith("_") or "." in key \
                or hasattr(type(self), key) or key == "training":
            raise KeyError(f"{type(self).__name__}: {key!r} cannot be a key (a non-empty string "
                           "without '.', not starting with '_', not a method name)")
        vars(self)[key] = self._entry(value)
        if key not in self._keys:
            self._keys.append(key)
        _capture.touch()  # a compiled step recorded with the old entry must not replay

    def __getitem__(self, key: str) -> Any:
        if key not in self._keys:
            raise KeyError(key)
        return vars(self)[key]

    def __delitem__(self, key: str) -> None:
        if key not in self._keys:
            raise KeyError(key)
        del vars(self)[key]
        self._keys.remove(key)
        _capture.touch()

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._keys))

    def keys(self) -> list[str]:
        return list(self._keys)

    def values(self) -> list[Any]:
        return [vars(self)[k] for k in self._keys]

    def items(self) -> list[tuple[str, Any]]:
        return [(k, vars(self)[k]) for k in self._keys]

    def get(self, key: str, default: Any = None) -> Any:
        return vars(self)[key] if key in self._keys else default

    def update(self, entries: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> None:
        pairs = entries.items() if isinstance(entries, Mapping) else entries
        for k, v in pairs:
            self[k] = v

    def pop(self, key: str) -> Any:
        """Remove the entry ``key`` and return it."""
        value = self[key]
        del self[key]
        return value

    def clear(self) -> None:
        """Remove every entry."""
        for key in list(self._keys):
            del self[key]


class ModuleDict(_KeyedModule):
    """A dict of modules (string keys, insertion order) whose parameters the container finds:
    ``heads.cls.weight``, as in PyTorch. Keys must be identifiers-like names without ``.``, not
    starting with ``_``, and not the name of a method. It has no ``forward``."""

    def __init__(self, modules: Mapping[str, Module] | Iterable[tuple[str, Module]] | None = None
                 ) -> None:
        super().__init__(modules)

    def _entry(self, value: Any) -> Any:
        return _check_module(value, "ModuleDict")


def _as_parameter(value: Any) -> Any:
    """A Tensor that is not a parameter made one (``nn.Parameter(value)``, sharing memory), as
    PyTorch's ``ParameterList``/``ParameterDict`` do; parameters and other objects as they are."""
    if isinstance(value, ag.Tensor) and not isinstance(value, Parameter):
        return Parameter(value)
    return value


class ParameterList(Module):
    """A list of parameters, as PyTorch's ``nn.ParameterList``: named ``"0"``, ``"1"``, ...
    (``params.0`` in the state dict). A Tensor that is not a parameter is made one
    (``nn.Parameter(t)``, sharing memory); indexing (an int, or a slice giving a new
    ``ParameterList``), ``len``, iteration, item assignment, ``append`` and ``extend``. It has
    no ``forward``."""

    def __init__(self, values: Iterable[Any] | None = None) -> None:
        self._n = 0
        if values is not None:
            self.extend(values)

    def _key(self, i: int) -> str:
        k = operator.index(i)
        if not -self._n <= k < self._n:
            raise IndexError(f"ParameterList index {i} out of range for {self._n} entries")
        return str(k % self._n)

    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return ParameterList([vars(self)[str(k)] for k in range(self._n)][i])
        return vars(self)[self._key(i)]

    def __setitem__(self, i: int, value: Any) -> None:
        vars(self)[self._key(i)] = _as_parameter(value)
        _capture.touch()

    def __len__(self) -> int:
        return self._n

    def __iter__(self) -> Iterator[Any]:
        return (vars(self)[str(i)] for i in range(self._n))

    def append(self, value: Any) -> ParameterList:
        vars(self)[str(self._n)] = _as_parameter(value)
        self._n += 1
        _capture.touch()
        return self

    def extend(self, values: Iterable[Any]) -> ParameterList:
        for v in list(values):
            self.append(v)
        return self

    def __iadd__(self, values: Iterable[Any]) -> ParameterList:
        return self.extend(values)

    def extra_repr(self) -> str:
        return ", ".join(f"({i}): Parameter of shape {tuple(v.shape)}, {v.dtype.name}"
                         if isinstance(v, ag.Tensor) else f"({i}): {type(v).__name__}"
                         for i, v in enumerate(self))


class ParameterDict(_KeyedModule):
    """A dict of parameters (string keys, insertion order), as PyTorch's
    ``nn.ParameterDict``: ``scales.a`` in the state dict. A Tensor that is not a parameter is
    made one (``nn.Parameter(t)``, sharing memory). Keys follow :class:`ModuleDict`'s rules.
    It has no ``forward``."""

    def __init__(self, parameters: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None
                 ) -> None:
        super().__init__(parameters)

    def _entry(self, value: Any) -> Any:
        return _as_parameter(value)

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self._keys:
            self[key] = default
        return self[key]

    def copy(self) -> ParameterDict:
        """A new ParameterDict holding the same parameters."""
        return ParameterDict(self.items())

    def extra_repr(self) -> str:
        return ", ".join(f"({k}): Parameter of shape {tuple(v.shape)}, {v.dtype.name}"
                         if isinstance(v, ag.Tensor) else f"({k}): {type(v).__name__}"
                         for k, v in self.items())


class LayerNorm(Module):
    """:func:`agnograd.nn.functional.layer_norm` over the last axes ``normalized_shape``, with a
    learnt elementwise ``weight`` (ones) and ``bias`` (zeros) when ``elementwise_affine``."""

    def __init__(self, normalized_shape: int | Sequence[int], eps: float = 1e-5,
                 elementwise_affine: bool = True, bias: bool = True, backend: str | None = None,
                 dtype: Any = None) -> None:
        self.normalized_shape = (int(normalized_shape),) if isinstance(normalized_shape, int) \
            else tuple(int(n) for n in normalized_shape)
        self.eps = float(eps)
        dtype = default_dtype(dtype)
        self.weight: ag.Tensor | None = None
        self.bias: ag.Tensor | None = None
        if elementwise_affine:
            with ag.default_backend(backend or ag.get_default_backend().name):
                self.weight = ag.ones(self.normalized_shape, dtype=dtype).requires_grad_()
                if bias:
                    self.bias = ag.zeros(self.normalized_shape, dtype=dtype).requires_grad_()

    def forward(self, x: ag.Tensor) -> ag.Tensor:
        if self.weight is not None:
            check_input_dtype(self, x, self.weight)
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (f"normalized_shape={self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.weight is not None}")


class Embedding(Module):
    """A lookup table: :func:`agnograd.nn.functional.embedding` of integer indices into
    ``weight`` of shape ``(num_embeddings, embedding_dim)``, drawn from N(0, 1) on the host
    (``seed``) as in PyTorch; the row ``padding_idx`` starts at zero and gets no gradient."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None,
                 backend: str | None = None, dtype: Any = None, seed: Seed = None) -> None:
        if num_embeddings < 1 or embedding_dim < 1:
            raise ValueError(f"Embedding({num_embeddings}, {embedding_dim}): sizes must be "
                             "positive")
        self.num_embeddings = int(num_embeddings)
        self.embedding_dim = int(embedding_dim)
        if padding_idx is not None:
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError(f"Embedding: padding_idx {padding_idx} is out of range for "
                                 f"{num_embeddings} embeddings")
            padding_idx %= num_embeddings
        self.padding_idx = padding_idx
        host = host_rng(seed).normal(0.0, 1.0, size=(self.num_embeddings, self.embedding_dim))
        if padding_idx is not None:
            host[padding_idx] = 0.0
        self.weight = ag.tensor(host, backend=backend, dtype=default_dtype(dtype), requires_grad=True)

    def forward(self, x: Any) -> ag.Tensor:
        return F.embedding(x, self.weight, self.padding_idx)

    def extra_repr(self) -> str:
        pad = "" if self.padding_idx is None else f", padding_idx={self.padding_idx}"
        return f"{self.num_embeddings}, {self.embedding_dim}{pad}"


class _Activation(Module):
    fn: Callable[[ag.Tensor], ag.Tensor]

    def forward(self, x: ag.Tensor) -> ag.Tensor:
        return type(self).fn(x)


class ReLU(_Activation):
    """:func:`agnograd.nn.functional.relu` as a layer."""

    fn = staticmethod(F.relu)


class Tanh(_Activation):
    """:func:`agnograd.nn.functional.tanh` as a layer."""

    fn = staticmethod(F.tanh)


class Sigmoid(_Activation):
    """:func:`agnograd.nn.functional.sigmoid` as a layer."""

    fn = staticmethod(F.sigmoid)


class Softplus(Module):
    """:func:`agnograd.nn.functional.softplus` as a layer."""

    def __init__(self, beta: float = 1.0, threshold: float = 20.0) -> None:
        self.beta = float(beta)
        self.threshold = float(threshold)

    def forward(self, x: ag.Tensor) -> ag.Tensor:
        return F.softplus(x, self.beta, self.threshold)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, threshold={self.threshold}"


class LeakyReLU(Module):
    """:func:`agnograd.nn.functional.leaky_relu` as a layer."""

    def __init__(self, negative_slope: float = 0.01) -> None:
        self.negative_slope = float(negative_slope)

    def forward(self, x: ag.Tensor) -> ag.Tensor:
        return F.leaky_relu(x, self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class ELU(Module):
    """:func:`agnograd.nn.functional.elu` as a layer."""

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = float(alpha)

    def forward(self, x: ag.Tensor) -> ag.Tensor:
        return F.elu(x, self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class SiLU(_Activation):
    """:func:`agnograd.nn.functional.silu` as a layer."""

    fn = staticmethod(F.silu)


class Identity(Module):
    """Returns its input (a placeholder, e.g. for a layer switched off)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # accepts and ignores, like PyTorch
        pass

    def forward(self, x: ag.Tensor) -> ag.Tensor:
        return x


class Flatten(Module):
    """Flattens axes ``start_dim..end_dim`` (inclusive) into one: ``(N, C, H, W)`` becomes
    ``(N, C·H·W)`` with the defaults."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        self.start_dim = int(start_dim)
        self.end_dim = int(end_dim)

    def forward(self, x: ag.Tensor) -> ag.Tensor:
        n = x.ndim
        start = self.start_dim + n if self.start_dim < 0 else self.start_dim
        end = self.end_dim + n if self.end_dim < 0 else self.end_dim
        if n == 0:
            return ag.reshape(x, (1,))
        if not 0 <= start <= end < n:
            raise ValueError(f"Flatten(start_dim={self.start_dim}, end_dim={self.end_dim}) does "
                             f"not fit an input of shape {x.shape}")
        shape = x.shape
        return ag.reshape(x, (*shape[:start], math.prod(shape[start:end + 1]), *shape[end + 1:]))

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class GELU(Module):
    """:func:`agnograd.nn.functional.gelu` as a layer."""

    def __init__(self, approximate: str = "none") -> None:
        self.approximate = approximate

    def forward(self, x: ag.Tensor) -> ag.Tensor:
        return F.gelu(x, approximate=self.approximate)  # type: ignore[arg-type]

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class Dropout(Module):
    """:func:`agnograd.nn.functional.dropout` as a layer: active in training mode only.

    Without ``seed`` its masks are drawn on the device, from ``generator`` (an
    :class:`agnograd.random.Generator`) or the default generator of the input's backend and
    device (:func:`agnograd.manual_seed` makes a run reproducible): capture-safe. With
    ``seed`` (an int, a sequence of ints or a host generator) they come from a host generator
    seeded once, as before -- reproducible, but refused inside ``ag.capture``/``ag.jit``."""

    def __init__(self, p: float = 0.5, seed: Seed = None,
                 generator: Generator | None = None) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1], not {p}")
        if seed is not None and generator is not None:
            raise TypeError("Dropout: give seed (a host generator) or generator (a device "
                            "generator), not both")
        self.p = float(p)
        self._rng = None if seed is None else host_rng(seed)
        self._generator = generator

    def forward(self, x: ag.Tensor) -> ag.Tensor:
        return F.dropout(x, self.p, self.training, self._rng, self._generator)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Unflatten(Module):
    """Splits axis ``dim`` into ``unflattened_size``: ``Unflatten(1, (1, 8, 8))`` turns
    ``(N, 64)`` into ``(N, 1, 8, 8)``."""

    def __init__(self, dim: int, unflattened_size: Sequence[int]) -> None:
        self.dim = int(dim)
        self.unflattened_size = tuple(int(n) for n in unflattened_size)

    def forward(self, x: ag.Tensor) -> ag.Tensor:
        d = self.dim + x.ndim if self.dim < 0 else self.dim
        if not 0 <= d < x.ndim or math.prod(self.unflattened_size) != x.shape[d]:
            raise ValueError(f"Unflatten({self.dim}, {self.unflattened_size}) does not fit an "
                             f"input of shape {x.shape}")
        return ag.reshape(x, (*x.shape[:d], *self.unflattened_size, *x.shape[d + 1:]))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"


# activation name -> (function, initialiser suited to it)
ACTIVATIONS: dict[str, tuple[Callable[[ag.Tensor], ag.Tensor], str]] = {
    "tanh": (F.tanh, "glorot"),
    "sigmoid": (F.sigmoid, "glorot"),
    "relu": (F.relu, "he"),
    "gelu": (F.gelu, "he"),
    "softplus": (F.softplus, "he"),
    "leaky_relu": (F.leaky_relu, "he"),
    "elu": (F.elu, "he"),
    "silu": (F.silu, "he"),
    "identity": ((lambda x: x), "glorot"),
}


class MLP(Module):
    """A multilayer perceptron: ``Linear`` layers of the given sizes with ``activation``
    between them (none after the last).

    ``MLP([64, 64, 64, 10])`` is the 3-layer tanh network of the docs:
    ``x1 = tanh(x W1 + b1)``, ``x2 = tanh(x1 W2 + b2)``, ``x3 = x2 W3 + b3`` (the logits).

    Args:
        sizes: ``[in, hidden..., out]``, at least two entries.
        activation: ``"tanh"`` (default), ``"relu"``, ``"sigmoid"``, ``"gelu"``,
            ``"softplus"``, ``"leaky_relu"``, ``"elu"``, ``"silu"``, ``"identity"``, or any
            function of one Tensor.
        bias: whether the layers add a bias.
        backend: where the parameters live (``None``: the default backend).
        dtype: the parameters' dtype (``None``: float32).
        seed: layer ``i`` is seeded with ``(seed, i)``; ``None`` draws fresh entropy.
        init: the initialiser; by default Glorot for tanh/sigmoid/identity and He for
            ReLU-like activations (Glorot for a custom function).
        dropout: dropout probability after each hidden activation (0: none).
    """

    def __init__(self, sizes: Sequence[int], activation: str | Callable[[ag.Tensor], ag.Tensor] = "tanh",
                 bias: bool = True, backend: str | None = None, dtype: Any = None,
                 seed: int | None = None, init: str | None = None, dropout: float = 0.0) -> None:
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2:
            raise ValueError(f"MLP needs at least an input and an output size, got {sizes}")
        if isinstance(activation, str):
            if activation not in ACTIVATIONS:
                raise ValueError(f"unknown activation {activation!r}; choose one of "
                                 f"{', '.join(ACTIVATIONS)} or pass a function")
            fn, default_init = ACTIVATIONS[activation]
            self.activation_name = activation
        else:
            fn, default_init = activation, "glorot"
            self.activation_name = getattr(activation, "__name__", type(activation).__name__)
        self.activation = fn
        self.sizes = sizes
        self.layers = [
            Linear(sizes[i], sizes[i + 1], bias=bias, backend=backend, dtype=dtype,
                   seed=None if seed is None else (seed, i),
                   init=init or (default_init if i < len(sizes) - 2 else "glorot"))
            for i in range(len(sizes) - 1)
        ]
        self.dropout = Dropout(dropout, seed=None if seed is None else (seed, len(sizes))) \
            if dropout else None

    def forward(self, x: ag.Tensor) -> ag.Tensor:
        *hidden, last = self.layers
        for layer in hidden:
            x = self.activation(layer(x))
            if self.dropout is not None:
                x = self.dropout(x)
        return last(x)  # type: ignore[no-any-return]

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}, activation={self.activation_name!r}"


# ---------------------------------------------------------------------------------------------
# Batch, group and instance normalisation (helper `norm`)


class _NormBase(Module):
    """Per-channel normalisation with PyTorch's state: ``weight`` (ones) and ``bias`` (zeros)
    when ``affine`` (no ``bias`` with ``bias=False``, PyTorch's newest argument);
    ``running_mean`` (zeros), ``running_var`` (ones) and the int64 0-d ``num_batches_tracked``
    when ``track_running_stats`` -- buffers (:meth:`Module.register_buffer`: state, not
    parameters), saved under PyTorch's names and updated in place, so a captured or
    jitted step replays their update."""

    _dims: tuple[int, ...] = ()  # the accepted input ranks
    _what = ""
    running_mean: ag.Tensor | None
    running_var: ag.Tensor | None
    num_batches_tracked: ag.Tensor | None

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True,
                 backend: str | None = None, dtype: Any = None, bias: bool = True) -> None:
        if num_features < 1:
            raise ValueError(f"{type(self).__name__}({num_features}): num_features must be "
                             "positive")
        self.num_features = int(num_features)
        self.eps = float(eps)
        self.momentum = None if momentum is None else float(momentum)
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        dtype = default_dtype(dtype)
        self.weight: ag.Tensor | None = None
        self.bias: ag.Tensor | None = None
        with ag.default_backend(backend or ag.get_default_backend().name):
            if self.affine:  # (bias=False: a weight only, as PyTorch's)
                self.weight = ag.ones(self.num_features, dtype=dtype).requires_grad_()
                if bias:
                    self.bias = ag.zeros(self.num_features, dtype=dtype).requires_grad_()
            track = self.track_running_stats  # else None, as PyTorch registers them
            self.register_buffer("running_mean",
                                 ag.zeros(self.num_features, dtype=dtype) if track else None)
            self.register_buffer("running_var",
                                 ag.ones(self.num_features, dtype=dtype) if track else None)
            self.register_buffer("num_batches_tracked",
                                 ag.zeros((), dtype=ag.int64) if track else None)

    def reset_running_stats(self) -> None:
        """Running mean to 0, running variance to 1 and the batch count to 0, in place."""
        if self.running_mean is not None and self.running_var is not None:
            with ag.no_grad():
                self.running_mean[...] = 0.0
                self.running_var[...] = 1.0
                if self.num_batches_tracked is not None:
                    self.num_batches_tracked[...] = 0

    def _factor(self) -> float | ag.Tensor:
        """The weight of this batch in the running statistics, after counting the batch:
        ``momentum``, or ``1 / num_batches_tracked`` (a cumulative average) for ``None``."""
        nbt = self.num_batches_tracked
        if nbt is not None:
            with ag.no_grad():
                nbt += 1
        if self.momentum is not None:
            return self.momentum
        if nbt is None:  # pragma: no cover - track_running_stats is off: no update
            return 0.0
        with ag.no_grad():
            dt = self.running_mean.dtype if self.running_mean is not None else ag.float32
            return 1.0 / ag.astype(nbt, dt)

    def _check(self, input: Any) -> ag.Tensor:
        x: ag.Tensor = input if isinstance(input, ag.Tensor) else ag.as_tensor(input)
        if x.ndim not in self._dims:
            raise ValueError(f"{type(self).__name__}: expected a {self._what} input, got shape "
                             f"{x.shape}")
        if self.weight is not None:
            check_input_dtype(self, x, self.weight)
        return x

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")


class _BatchNorm(_NormBase):
    def forward(self, x: Any) -> ag.Tensor:
        x = self._check(x)
        c = x.shape[1]
        if c != self.num_features:
            raise ValueError(f"{type(self).__name__}({self.num_features}) got an input with {c} "
                             f"channels (shape {x.shape}); axis 1 holds the channels")
        use_batch = self.training or self.running_mean is None
        momentum: float | ag.Tensor = 0.0
        if self.training and self.track_running_stats:
            momentum = self._factor()
        update = self.training and self.track_running_stats
        return F.batch_norm(x, self.running_mean if update or not use_batch else None,
                            self.running_var if update or not use_batch else None,
                            self.weight, self.bias, use_batch, momentum, self.eps)


class BatchNorm1d(_BatchNorm):
    """Batch normalisation over ``(N, C)`` or ``(N, C, L)`` inputs, as ``torch.nn.BatchNorm1d``:
    :func:`agnograd.nn.functional.batch_norm` with the batch's statistics in training mode
    (updating the running ones) and the running statistics in evaluation mode (the batch's when
    ``track_running_stats=False``). ``momentum=None``: the running statistics are the
    cumulative average of every batch's (``1 / num_batches_tracked``)."""

    _dims = (2, 3)
    _what = "2D (N, C) or 3D (N, C, L)"


class BatchNorm2d(_BatchNorm):
    """Batch normalisation over ``(N, C, H, W)`` inputs, as ``torch.nn.BatchNorm2d``; see
    :class:`BatchNorm1d`."""

    _dims = (4,)
    _what = "4D (N, C, H, W)"


class _InstanceNorm(_NormBase):
    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = False, track_running_stats: bool = False,
                 backend: str | None = None, dtype: Any = None, bias: bool = True) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, backend, dtype,
                         bias)

    def forward(self, x: Any) -> ag.Tensor:
        x = self._check(x)
        unbatched = x.ndim == self._dims[0]
        if unbatched:
            x = ag.expand_dims(x, axis=0)
        if x.shape[1] != self.num_features and self.affine:
            raise ValueError(f"{type(self).__name__}({self.num_features}) got an input with "
                             f"{x.shape[1]} channels (shape {x.shape}); axis 1 holds the channels")
        use_input = self.training or not self.track_running_stats
        # as PyTorch: num_batches_tracked stays 0, and momentum=None leaves the statistics as
        # they are (a factor of 0)
        momentum = 0.0 if self.momentum is None else self.momentum
        stats = self.track_running_stats and x.shape[1] == self.num_features
        y = F.instance_norm(x, self.running_mean if stats else None,
                            self.running_var if stats else None, self.weight, self.bias,
                            use_input, momentum, self.eps)
        return ag.squeeze(y, axis=0) if unbatched else y


class InstanceNorm1d(_InstanceNorm):
    """Instance normalisation of ``(N, C, L)`` or ``(C, L)`` inputs, as
    ``torch.nn.InstanceNorm1d`` (``affine=False`` and ``track_running_stats=False`` by
    default): :func:`agnograd.nn.functional.instance_norm`. As in PyTorch, training updates
    the running statistics (when tracked) with ``momentum`` but leaves ``num_batches_tracked``
    at 0, and ``momentum=None`` leaves them unchanged."""

    _dims = (2, 3)
    _what = "2D (C, L) or 3D (N, C, L)"


class InstanceNorm2d(_InstanceNorm):
    """Instance normalisation of ``(N, C, H, W)`` or ``(C, H, W)`` inputs, as
    ``torch.nn.InstanceNorm2d``; see :class:`InstanceNorm1d`."""

    _dims = (3, 4)
    _what = "3D (C, H, W) or 4D (N, C, H, W)"


class GroupNorm(Module):
    """Group normalisation, as ``torch.nn.GroupNorm``: :func:`agnograd.nn.functional.group_norm`
    of ``(N, C, *)`` inputs with ``num_groups`` groups of channels and, when ``affine``, a
    per-channel ``weight`` (ones) and ``bias`` (zeros)."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True,
                 backend: str | None = None, dtype: Any = None, bias: bool = True) -> None:
        if num_groups < 1 or num_channels % num_groups:
            raise ValueError(f"GroupNorm({num_groups}, {num_channels}): num_groups must divide "
                             "num_channels")
        self.num_groups = int(num_groups)
        self.num_channels = int(num_channels)
        self.eps = float(eps)
        self.affine = bool(affine)
        dtype = default_dtype(dtype)
        self.weight: ag.Tensor | None = None
        self.bias: ag.Tensor | None = None
        if self.affine:  # (bias=False: a weight only, as PyTorch's)
            with ag.default_backend(backend or ag.get_default_backend().name):
                self.weight = ag.ones(self.num_channels, dtype=dtype).requires_grad_()
                if bias:
                    self.bias = ag.zeros(self.num_channels, dtype=dtype).requires_grad_()

    def forward(self, x: Any) -> ag.Tensor:
        x = x if isinstance(x, ag.Tensor) else ag.as_tensor(x)
        if self.weight is not None:
            check_input_dtype(self, x, self.weight)
        if x.ndim < 2 or x.shape[1] != self.num_channels:
            raise ValueError(f"GroupNorm({self.num_groups}, {self.num_channels}): expected an "
                             f"input (N, {self.num_channels}, *), got shape {x.shape}")
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"
