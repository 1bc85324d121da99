"""The ``podium`` CLI, run with an audit hook that forbids opening the database files.

On POSIX, closing any descriptor of a file drops every ``fcntl`` lock the process
holds on it, SQLite's included (see ``podium.store.sqlite_db``). So no Python code
in a process that may hold a connection may open the database or its ``-wal`` /
``-shm`` itself: only SQLite's C code does, and that does not pass through Python's
audit hooks. Any ``open`` of those files from Python (``open()``, ``os.open``,
``shutil.copy``...) ends this process at once with exit code 97 and the culprit's
stack on stderr. ``$PODIUM_AUDIT_DB`` names the database file.
"""

from __future__ import annotations

import os
import sys
import traceback


def _forbid_opening(db: str) -> None:
    guarded = {db, db + "-wal", db + "-shm", db + "-journal"}

    def hook(event: str, args: tuple[object, ...]) -> None:
        if event != "open" or not args:
            return
        target = args[0]
        if not isinstance(target, str | bytes | os.PathLike):
            return
        name = os.path.realpath(os.fsdecode(target))
        if name in guarded:
            os.write(2, f"FORBIDDEN: Python opened {name}\n".encode())
            os.write(2, "".join(traceback.format_stack()).encode())
            os._exit(97)

    sys.addaudithook(hook)


if __name__ == "__main__":
    _forbid_opening(os.path.realpath(os.environ["PODIUM_AUDIT_DB"]))
    from podium.cli import main

    sys.argv[0] = "podium"
    main()
