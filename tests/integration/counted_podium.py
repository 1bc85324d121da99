"""The ``podium`` CLI with its store's reads counted, for tests that measure how often a
server reads the database (``GET /events``' feed, a run's events and record).

Every call of the counted methods of the SQLite and PostgreSQL stores adds one to
its name; the counts and the process's CPU seconds are written as one JSON document
to ``$PODIUM_COUNT_FILE`` every 0.1 s (replaced whole, so a reader never sees half).
``$PODIUM_TEST_BACKLOG``, when set, is how many events a ``GET /events`` stream may
fall behind before it is cut off (10,000 otherwise): a test of the cut then needs
fewer events.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import threading
import time
from collections import Counter
from typing import Any

COUNTED = ("read_feed", "feed_head", "get_events", "get_run")
COUNTS: Counter[str] = Counter()


def _count(cls: type, name: str) -> None:
    fn = getattr(cls, name)

    @functools.wraps(fn)
    async def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        COUNTS[name] += 1
        return await fn(self, *args, **kwargs)

    setattr(cls, name, counted)


def _write_counts(path: str) -> None:
    while True:
        cpu = os.times()
        doc = {**COUNTS, "cpu_s": cpu.user + cpu.system, "at": time.monotonic()}
        with open(path + ".tmp", "w") as f:
            json.dump(doc, f)
        os.replace(path + ".tmp", path)
        time.sleep(0.1)


if __name__ == "__main__":
    from podium.store.postgres import PostgresStore
    from podium.store.sqlite import SQLiteStore

    for store in (SQLiteStore, PostgresStore):
        for method in COUNTED:
            _count(store, method)
    threading.Thread(target=_write_counts, args=(os.environ["PODIUM_COUNT_FILE"],),
                     name="counts", daemon=True).start()
    if os.environ.get("PODIUM_TEST_BACKLOG"):
        from podium.server import feed_hub

        feed_hub.FeedHubConfig = functools.partial(  # type: ignore[misc]  # a test's knob
            feed_hub.FeedHubConfig, backlog=int(os.environ["PODIUM_TEST_BACKLOG"]))
    from podium.cli import main

    sys.argv[0] = "podium"
    main()
