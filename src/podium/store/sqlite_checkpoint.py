"""Copying SQLite's write-ahead log into the database, off the event loop.

With normal durability the writer's connection never checkpoints by itself
(``wal_autocheckpoint = 0``): a checkpoint fsyncs, and inside a COMMIT on the
event loop that cost ~5 ms every ~60 three-step runs. A thread does it instead.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

__all__ = ["CHECKPOINT_RESTART_FRAMES", "CHECKPOINT_THREAD_AFTER", "Checkpointer"]

log = logging.getLogger("podium.store")

# The checkpointer thread runs at most this often, and once the log holds this many
# frames the writer finishes a checkpoint so the log restarts.
_CHECKPOINT_INTERVAL_S = 0.025
CHECKPOINT_RESTART_FRAMES = 1024
# ...and starts after this many write transactions: a short-lived process (a
# `podium run` of a few steps) leaves its small log to the checkpoint at close
# instead of paying for a thread and a concurrent fsync it has no use for.
CHECKPOINT_THREAD_AFTER = 32


class Checkpointer:
    """Copies the write-ahead log into the database on a thread of its own.

    A checkpoint is mostly two fsyncs of pages written since the last one: on
    this project's disks, ~5 ms for every ~60 three-step runs, paid inside a
    COMMIT on the event loop when SQLite checkpoints by itself. Here a thread
    with its own connection does that work (the GIL is released while SQLite
    runs) and the writer's connection never checkpoints automatically.

    The log restarts from its beginning only when a checkpoint has copied all of
    it, which a thread racing a busy writer never achieves. So once the log is
    long, the writer runs one checkpoint itself between two transactions
    (``restart_due``): it copies only what arrived since the thread's last pass.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self.restart_due = False
        self.failed = False
        self._thread = threading.Thread(
            target=self._loop, name=f"podium-checkpoint:{path.name}", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """Say the log grew (cheap: sets a flag the thread waits on)."""
        if not self._wake.is_set():  # set() takes a lock and notifies, every commit
            self._wake.set()

    def _loop(self) -> None:
        try:
            # Made and used on this thread only. Only normal durability has a
            # checkpointer: a checkpoint's fsyncs follow this connection's setting.
            conn = sqlite3.connect(self._path, isolation_level=None)
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            log.warning("checkpoints of %s stay on the writer: %s", self._path, exc)
            self.failed = True
            return
        try:
            while not self._stopping.is_set():
                self._wake.wait()
                self._wake.clear()
                if self._stopping.is_set():
                    break
                try:
                    _busy, frames, _copied = conn.execute(
                        "PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as exc:  # e.g. the disk is full: try again later
                    log.warning("checkpoint of %s failed, will retry: %s", self._path, exc)
                else:
                    if frames >= CHECKPOINT_RESTART_FRAMES:
                        self.restart_due = True
                self._stopping.wait(_CHECKPOINT_INTERVAL_S)
        finally:
            conn.close()

    def close(self) -> None:
        self._stopping.set()
        self._wake.set()
        self._thread.join()
