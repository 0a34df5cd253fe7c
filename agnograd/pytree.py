"""Pytrees: nested containers of values, flattened to a list of leaves and a structure.

One implementation, used by the function transforms (:mod:`agnograd.func`: ``grad``,
``value_and_grad``, ``vjp``, ``jvp``, ``jacobian``, ``hessian``, ``hvp``) and by
:func:`agnograd.capture` (its arguments and outputs). Containers are those JAX knows without
registration:

- ``tuple`` and ``list`` (exact types): their items, in order;
- **NamedTuples** (tuple subclasses with ``_fields``): their fields, in order, rebuilt with
  ``type(t)(*children)``;
- ``dict``: its values in **sorted key order** (as JAX does, so two dicts with the same keys have
  the same structure whatever order they were filled in; keys that cannot be sorted together,
  e.g. ``1`` and ``"a"``, keep insertion order). Unflattening builds the dict in that order;
- ``collections.OrderedDict``: its values in insertion order (the order is part of the
  structure), rebuilt as an ``OrderedDict``; ``collections.defaultdict``: as ``dict``, rebuilt
  with its ``default_factory``;
- ``None``: an empty container -- no leaf, and unflattened back to ``None``.

Everything else (Tensors, arrays, Python numbers, strings, subclasses of ``list`` or ``dict``,
other tuple subclasses) is a leaf, unless ``is_leaf`` says so first.

>>> leaves, treedef = tree_flatten({"b": (1, None), "a": [2, 3]})
>>> leaves
[2, 3, 1]
>>> tree_unflatten(treedef, [x * 10 for x in leaves])
{'a': [20, 30], 'b': (10, None)}
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["TreeDef", "tree_flatten", "tree_unflatten", "tree_leaves", "tree_map", "tree_structure"]

# The kind of a node. ``None`` for a leaf; otherwise the container's type (``tuple``, ``list``,
# ``dict``, ``OrderedDict``, ``defaultdict``, a NamedTuple class, or ``type(None)``).
_LEAF = None


class TreeDef:
    """The structure of a pytree: what :func:`tree_flatten` returns next to the leaves.

    Immutable and hashable; two treedefs are ``==`` when the trees have the same containers
    (same types, same dict keys, same lengths) with leaves in the same places. ``num_leaves``
    is the number of leaves :func:`tree_unflatten` expects.
    """

    __slots__ = ("kind", "meta", "children", "num_leaves", "_hash")

    def __init__(self, kind: type | None, meta: Any, children: tuple[TreeDef, ...]) -> None:
        self.kind = kind
        self.meta = meta  # dict keys in flattening order; a defaultdict's factory; else None
        self.children = children
        self.num_leaves: int = 1 if kind is _LEAF else sum(c.num_leaves for c in children)
        self._hash: int | None = None

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if type(other) is not TreeDef:
            return NotImplemented
        return (self.kind is other.kind and self.num_leaves == other.num_leaves
                and self.meta == other.meta and self.children == other.children)

    def __ne__(self, other: object) -> bool:
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash((self.kind, self.meta, self.children))
        return self._hash

    def __repr__(self) -> str:
        return f"TreeDef({_show(self)})"


def _show(d: TreeDef) -> str:
    if d.kind is _LEAF:
        return "*"
    if d.kind is type(None):
        return "None"
    inner = [_show(c) for c in d.children]
    if d.kind is tuple:
        return "(" + ", ".join(inner) + ("," if len(inner) == 1 else "") + ")"
    if d.kind is list:
        return "[" + ", ".join(inner) + "]"
    if d.kind in (dict, OrderedDict, defaultdict):
        keys = d.meta[1] if d.kind is defaultdict else d.meta
        body = "{" + ", ".join(f"{k!r}: {v}" for k, v in zip(keys, inner)) + "}"
        return body if d.kind is dict else f"{d.kind.__name__}({body})"
    return f"{d.kind.__name__}(" + ", ".join(inner) + ")"


_LEAF_DEF = TreeDef(_LEAF, None, ())
_NONE_DEF = TreeDef(type(None), None, ())


def _dict_keys(d: dict[Any, Any]) -> tuple[Any, ...]:
    try:
        return tuple(sorted(d))
    except TypeError:  # keys of mixed types: insertion order
        return tuple(d)


def tree_flatten(tree: Any, is_leaf: Callable[[Any], bool] | None = None
                 ) -> tuple[list[Any], TreeDef]:
    """``(leaves, treedef)``: the leaves of ``tree`` left to right (dicts by sorted key) and its
    structure. ``is_leaf(node)`` returning true makes ``node`` a leaf even if it is a container
    (it is not asked about ``None``)."""
    leaves: list[Any] = []
    append = leaves.append

    def build(node: Any) -> TreeDef:
        if is_leaf is not None and node is not None and is_leaf(node):
            append(node)
            return _LEAF_DEF
        t = type(node)
        if t is tuple or t is list:
            return TreeDef(t, None, tuple([build(c) for c in node]))
        if t is dict or t is defaultdict:
            keys = _dict_keys(node)
            children = tuple([build(node[k]) for k in keys])
            if t is defaultdict:
                return TreeDef(t, (node.default_factory, keys), children)
            return TreeDef(t, keys, children)
        if t is OrderedDict:
            return TreeDef(t, tuple(node), tuple([build(v) for v in node.values()]))
        if node is None:
            return _NONE_DEF
        if isinstance(node, tuple) and hasattr(t, "_fields"):  # a NamedTuple
            return TreeDef(t, None, tuple([build(c) for c in node]))
        append(node)
        return _LEAF_DEF

    return leaves, build(tree)


def tree_unflatten(treedef: TreeDef, leaves: Iterable[Any]) -> Any:
    """The tree of structure ``treedef`` holding ``leaves`` (in :func:`tree_flatten`'s order)."""
    seq = list(leaves)
    if len(seq) != treedef.num_leaves:
        raise ValueError(f"tree_unflatten: the structure {treedef!r} has {treedef.num_leaves} "
                         f"leaves, got {len(seq)}")
    it = iter(seq)

    def build(d: TreeDef) -> Any:
        k = d.kind
        if k is _LEAF:
            return next(it)
        if k is type(None):
            return None
        children = [build(c) for c in d.children]
        if k is tuple:
            return tuple(children)
        if k is list:
            return children
        if k is dict:
            return dict(zip(d.meta, children))
        if k is OrderedDict:
            return OrderedDict(zip(d.meta, children))
        if k is defaultdict:
            factory, keys = d.meta
            return defaultdict(factory, zip(keys, children))
        return k(*children)  # a NamedTuple

    return build(treedef)


def tree_leaves(tree: Any, is_leaf: Callable[[Any], bool] | None = None) -> list[Any]:
    """The leaves of ``tree``, in :func:`tree_flatten`'s order."""
    return tree_flatten(tree, is_leaf)[0]


def tree_structure(tree: Any, is_leaf: Callable[[Any], bool] | None = None) -> TreeDef:
    """The :class:`TreeDef` of ``tree``."""
    return tree_flatten(tree, is_leaf)[1]


def tree_map(fn: Callable[..., Any], tree: Any, *rest: Any,
             is_leaf: Callable[[Any], bool] | None = None) -> Any:
    """``fn`` applied leaf by leaf: ``fn(leaf, *matching leaves of rest)``, in ``tree``'s
    structure. Every tree in ``rest`` must have ``tree``'s structure."""
    leaves, treedef = tree_flatten(tree, is_leaf)
    others = []
    for r in rest:
        r_leaves, r_def = tree_flatten(r, is_leaf)
        if r_def != treedef:
            raise ValueError(f"tree_map: a tree has structure {r_def!r}, not {treedef!r}")
        others.append(r_leaves)
    return tree_unflatten(treedef, [fn(*xs) for xs in zip(leaves, *others)])
