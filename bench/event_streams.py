"""What idle ``GET /events`` streams cost a ``podium serve``: store reads and CPU a second.

Starts a real ``podium serve`` (SQLite in a temporary folder, or ``--db`` a
PostgreSQL URL) through ``tests/integration/counted_podium.py``, which counts the
store's reads (``read_feed``, ``feed_head``, ``get_events``, ``get_run``) and the
process's CPU seconds; opens 0, 1 and then 50 streams that sit idle, and measures
each over ``--seconds``.

    PYTHONPATH=src python bench/event_streams.py [--db postgresql://...] [--seconds 10]
    PYTHONPATH=../other/src python bench/event_streams.py     # another checkout's Podium
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
COUNTED = ROOT / "tests" / "integration" / "counted_podium.py"
AGENTS = ROOT / "tests" / "integration" / "crash_agents.yaml"


def _counts(path: Path) -> dict[str, float]:
    for _ in range(100):
        try:
            return dict(json.loads(path.read_text()))
        except (OSError, ValueError):
            time.sleep(0.05)
    raise SystemExit(f"no counts in {path}")


async def _measure(path: Path, seconds: float) -> tuple[float, float]:
    a = _counts(path)
    await asyncio.sleep(seconds)
    b = _counts(path)
    span = b["at"] - a["at"]
    reads = sum(b.get(k, 0) - a.get(k, 0)
                for k in ("read_feed", "feed_head", "get_events", "get_run"))
    return reads / span, (b["cpu_s"] - a["cpu_s"]) / span


async def _stream(url: str, client: httpx.AsyncClient, opened: asyncio.Event) -> None:
    async with client.stream("GET", url + "/events") as r:
        async for _line in r.aiter_lines():
            opened.set()


async def _run(url: str, counts: Path, seconds: float) -> None:
    async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=None),
                                 limits=httpx.Limits(max_connections=200)
                                 ) as client:
        tasks: list[asyncio.Task[None]] = []
        for n in (0, 1, 50):
            while len(tasks) < n:
                opened = asyncio.Event()
                tasks.append(asyncio.create_task(_stream(url, client, opened)))
                await asyncio.wait_for(opened.wait(), 30)
            await asyncio.sleep(1.0)
            reads, cpu = await _measure(counts, seconds)
            print(f"{n:3d} streams: {reads:7.1f} store reads/s, CPU {cpu:6.1%}")
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default=None)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--port", type=int, default=18431)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or f"sqlite:///{tmp}/podium.db"
        counts = Path(tmp) / "counts.json"
        env = {**os.environ, "PODIUM_COUNT_FILE": str(counts), "PODIUM_TEST_DIR": tmp,
               "PODIUM_TEST_LOG": f"{tmp}/exec.log",
               # $PYTHONPATH first: the Podium to measure (another checkout's src).
               "PYTHONPATH": os.pathsep.join([os.environ.get("PYTHONPATH", ""),
                                              str(ROOT / "src"), str(ROOT)])}
        proc = subprocess.Popen([sys.executable, str(COUNTED), "serve", "--port",
                                 str(args.port), "--db", db, "--agents", str(AGENTS),
                                 ], env=env, cwd=tmp, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{args.port}"
        try:
            for _ in range(300):
                try:
                    if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
            print(f"podium serve on {db.split('://')[0]}, {args.seconds:.0f} s a figure")
            asyncio.run(_run(url, counts, args.seconds))
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
