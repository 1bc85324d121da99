"""The ``podium`` command line.

Only ``podium.cli.app`` is imported here: the other command modules load when a
command of theirs, the help or the full command list is asked for (``PodiumGroup``).
"""

from __future__ import annotations

from podium.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    import logging

    from podium.redact import RedactingFilter

    # Podium's warnings go to stderr as plain lines, scrubbed of secrets on the way.
    handler = logging.StreamHandler()
    handler.addFilter(RedactingFilter())
    logging.basicConfig(level=logging.WARNING, format="%(message)s", handlers=[handler])
    app()
