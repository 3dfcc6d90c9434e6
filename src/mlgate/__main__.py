"""``python -m mlgate`` is the ``mlgate`` command."""

from __future__ import annotations

from mlgate.cli import main

main()
