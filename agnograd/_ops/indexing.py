"""Indexing (stub)."""

from __future__ import annotations

from typing import Any

from ._common import Tensor, wrap

__all__: list[str] = []


def scatter_add(xp: Any, n: int, index: Any, values: Any) -> Any:
    raise NotImplementedError


def getitem(x: Tensor, key: Any) -> Tensor:
    return wrap(x.data[key], x._backend)


def setitem(x: Tensor, key: Any, value: Any) -> None:
    x.data[key] = value
