"""The ``podium`` command line.

Only ``podium.cli.app`` is imported here: the other command modules load when a
command of theirs, the help or the full command list is asked for (``PodiumGroup``).
"""

from __future__ import annotations

from podium.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    app()
