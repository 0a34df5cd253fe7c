"""The reverse-mode engine: gradient mode, graph nodes, recording, and the one backward walk.

- :mod:`.mode` -- gradient mode and anomaly mode (per thread);
- :mod:`.node` -- :class:`Node`, the output markers, edges, the in-place version counter;
- :mod:`.recording` -- how an op attaches its node to the graph (``record`` and its spelled-out
  forms);
- :mod:`.walk` -- the backward walk (``backward``).

(The modules are not named after the functions they hold, so re-exporting ``record`` and
``backward`` here does not shadow a submodule.)

Import order (no cycles): ``mode`` and ``node`` need nothing of agnograd but each other;
``agnograd._tensor`` needs none of this package at import time (``Tensor.backward`` imports the
walk when called); ``recording`` and ``walk`` import ``Tensor``; the op modules import this
package.
"""

from __future__ import annotations

from .mode import (
    anomaly_mode,
    enable_grad,
    grad_mode,
    is_grad_enabled,
    no_grad,
    set_grad_enabled,
)
from .node import FREED, OUT, Node, Out, edge_of, edge_target, out, version_cell
from .recording import record, record_binary, record_multi, record_unary
from .walk import backward

__all__ = [
    "FREED",
    "OUT",
    "Node",
    "Out",
    "anomaly_mode",
    "backward",
    "edge_of",
    "edge_target",
    "enable_grad",
    "grad_mode",
    "is_grad_enabled",
    "no_grad",
    "out",
    "record",
    "record_binary",
    "record_multi",
    "record_unary",
    "set_grad_enabled",
    "version_cell",
]
