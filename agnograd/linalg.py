"""The Array API ``linalg`` extension over agnograd Tensors (``ag.linalg.inv``, ...).

Every function here is differentiable; see each docstring for its VJP rule.
"""

from __future__ import annotations

from ._ops.linalg import *  # noqa: F403
from ._ops.linalg import EXTENSION_ALL as __all__  # noqa: F401
