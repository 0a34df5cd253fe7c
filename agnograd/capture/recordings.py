"""The recordings of one compiled function and input signature, each valid in its own world.

``ag.jit`` and ``ag.capture`` (staged) keep one :class:`Recordings` per input signature. A call
asks :meth:`Recordings.find` for a recording whose guards (:mod:`.guards`) hold now -- most
recently used first -- and replays it; when none does, the caller traces the call again and
:meth:`Recordings.add` keeps the new recording beside the others (gradient accumulation, for
one, alternates between a world where the leaves have no ``.grad`` and one where they do). A
recording that can never be replayed (``one_shot``: the step has a Python side effect a replay
would not repeat) is not kept: every such call is traced, which is a real eager call.
"""

from __future__ import annotations

import warnings
from typing import Any

from .guards import Guards
from .program import StagedProgram, Traced

__all__ = ["Recording", "Recordings"]


class Recording:
    """A staged program, the guards it may replay under, and how it returns its outputs."""

    __slots__ = ("program", "guards", "treedef", "extra")

    def __init__(self, traced: Traced) -> None:
        self.program: StagedProgram = traced.program
        self.guards: Guards = traced.guards
        self.treedef = traced.treedef
        self.extra: Any = None  # what the owner keeps per recording (capture: bound inputs)


class Recordings:
    """Up to ``limit`` recordings of one signature, most recently used last."""

    __slots__ = ("items", "limit", "retraced", "_warned", "who", "name")

    def __init__(self, limit: int, who: str, name: str) -> None:
        self.items: list[Recording] = []
        self.limit = limit
        self.retraced = 0  # calls traced again because no recording's guards held
        self._warned = False
        self.who = who
        self.name = name

    def find(self) -> tuple[Recording | None, str | None]:
        """A recording whose guards hold now (``None`` if none), and otherwise what changed
        since the most recently used one was recorded."""
        why = None
        items = self.items
        for k in range(len(items) - 1, -1, -1):
            rec = items[k]
            w = rec.guards.check()
            if w is None:
                if k != len(items) - 1:
                    items.append(items.pop(k))
                return rec, None
            if why is None:
                why = w
        return None, why

    def add(self, rec: Recording) -> None:
        self.items.append(rec)
        if len(self.items) > self.limit:
            del self.items[0]

    def note_retrace(self, why: str | None) -> None:
        """Count a call traced again; warn once when it keeps happening (every such call is a
        real, slower eager call: correct, but not what compiling was for)."""
        self.retraced += 1
        if why is not None and self.retraced >= 8 and not self._warned:
            self._warned = True
            warnings.warn(f"{self.who}({self.name}) has been recorded again {self.retraced} "
                          f"times for the same input signature; the last time because {why}. "
                          "Each such call runs eagerly and is traced (correct, but slow): keep "
                          "what changes between calls in Tensors updated in place, or outside "
                          "the compiled function", UserWarning, stacklevel=4)
