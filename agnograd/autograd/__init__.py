"""The reverse-mode engine: gradient mode, graph nodes, recording, and the one backward walk.

- :mod:`.mode` -- gradient mode and anomaly mode (per thread; ``detect_anomaly``);
- :mod:`.node` -- :class:`Node`, the output markers, edges (and it re-exports the storage
  version counter, which lives in ``agnograd._tensor``);
- :mod:`.recording` -- how an op attaches its node to the graph (``record`` and its spelled-out
  forms);
- :mod:`.walk` -- the backward walk (``backward``);
- :mod:`.scope` -- what a function's freshly recorded graph read from outside it
  (``outside_reads``: ``custom_vjp``'s closure check and ``checkpoint``'s closure discovery).

(The modules are not named after the functions they hold, so re-exporting ``record`` and
``backward`` here does not shadow a submodule.)

Import order, one way (``tests/test_architecture.py`` checks there is no cycle):

- ``mode`` imports nothing of agnograd, ``node`` only ``mode`` and ``agnograd._tensor`` (which
  holds the storage version counter), ``scope`` only ``node``;
- ``agnograd._tensor`` imports nothing of this package at module level (``Tensor.backward``
  imports the walk when it is called);
- ``recording`` and ``walk`` import ``Tensor`` directly; under ``create_graph=True`` the walk
  asks a Tensor for the agnograd namespace (``__array_namespace__()``), so nothing is injected
  into this package at import time;
- the op modules, ``func``, ``custom``, ``graph``, ``testing`` import this package.
"""

from __future__ import annotations

from .mode import (
    anomaly_mode,
    detect_anomaly,
    enable_grad,
    grad_mode,
    is_grad_enabled,
    no_grad,
    set_grad_enabled,
)
from .node import (
    FREED,
    OUT,
    Node,
    Out,
    creation_mark,
    edge_of,
    edge_target,
    out,
    share_version,
    shares_storage,
    version_cell,
)
from .recording import record, record_binary, record_multi, record_unary, unpack_saved
from .scope import outside_reads, read_key, reads_other
from .walk import backward

__all__ = [
    "FREED",
    "OUT",
    "Node",
    "Out",
    "anomaly_mode",
    "backward",
    "creation_mark",
    "detect_anomaly",
    "edge_of",
    "edge_target",
    "enable_grad",
    "grad_mode",
    "is_grad_enabled",
    "no_grad",
    "out",
    "outside_reads",
    "read_key",
    "reads_other",
    "record",
    "record_binary",
    "record_multi",
    "record_unary",
    "set_grad_enabled",
    "share_version",
    "shares_storage",
    "unpack_saved",
    "version_cell",
]
