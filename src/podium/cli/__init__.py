"""The ``podium`` command line."""

from __future__ import annotations

from podium.cli import fleet as _fleet  # noqa: F401 - registers its commands
from podium.cli import observe_cmd as _observe  # noqa: F401 - registers its commands
from podium.cli import runs as _runs  # noqa: F401 - registers its commands
from podium.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    app()
