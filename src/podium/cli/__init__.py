"""The ``podium`` command line."""

from __future__ import annotations

from podium.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    app()
