"""``python -m agnograd``: the ``agnograd`` command (see :mod:`agnograd.cli`)."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
