"""The durability tests' tools: the real ``podium`` CLI in subprocesses, the real file read back.

A ``Sandbox`` is one folder with one SQLite database, one execution log (every
agent call appends a line, see ``crash_agents.py``) and the workflow files of a
test. Processes it starts are killed and reaped at teardown if a test stopped
half-way, so no orphan keeps writing. The database is read with plain
``sqlite3`` in read-only mode: what a test sees is what a crash left on disk,
not what Podium's own reader makes of it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NamedTuple

import yaml

HERE = Path(__file__).resolve().parent
AGENTS_FILE = HERE / "crash_agents.yaml"


class Exec(NamedTuple):
    """One agent call, as the agent logged it before doing anything."""

    run_id: str
    step_id: str
    attempt: int
    key: str
    capability: str
    input: Any


class Event(NamedTuple):
    seq: int
    type: str
    data: dict[str, Any]


def wait_for(cond: Callable[[], bool], timeout: float, interval: float = 0.005) -> bool:
    """Poll ``cond`` until it holds or ``timeout`` seconds passed; report which."""
    end = time.monotonic() + timeout
    while True:
        if cond():
            return True
        if time.monotonic() > end:
            return False
        time.sleep(interval)


@dataclass
class Sandbox:
    root: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _files: list[IO[bytes]] = field(default_factory=list)

    @property
    def db(self) -> Path:
        return self.root / "podium.db"

    @property
    def url(self) -> str:
        return f"sqlite:///{self.db}"

    @property
    def log(self) -> Path:
        return self.root / "exec.log"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("PODIUM_DB", "PODIUM_AGENTS", "PODIUM_DEBUG")}
        env["PODIUM_TEST_LOG"] = str(self.log)
        env["PODIUM_TEST_DIR"] = str(self.root)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def argv(self, *args: str, agents: bool = False, db: str | None = None) -> list[str]:
        out = [sys.executable, "-m", "podium", *args, "--db", db or self.url]
        if agents:
            out += ["--agents", str(AGENTS_FILE)]
        return out

    def podium(self, *args: str, agents: bool = False, db: str | None = None,
               timeout: float = 90) -> subprocess.CompletedProcess[str]:
        """Run one command to its end; stdout and stderr captured as text."""
        return subprocess.run(self.argv(*args, agents=agents, db=db), cwd=self.root,
                              env=self.env(), capture_output=True, text=True, timeout=timeout,
                              check=False)

    def spawn(self, *args: str, agents: bool = False,
              db: str | None = None) -> subprocess.Popen[bytes]:
        """Start a command in the background; its stdout and stderr go to files."""
        n = len(self.procs)
        out = (self.root / f"stdout-{n}.txt").open("wb")
        err = (self.root / f"stderr-{n}.txt").open("wb")
        self._files += [out, err]
        proc = subprocess.Popen(self.argv(*args, agents=agents, db=db), cwd=self.root,
                                env=self.env(), stdout=out, stderr=err)
        self.procs.append(proc)
        return proc

    def stdout_of(self, proc: subprocess.Popen[bytes]) -> str:
        return (self.root / f"stdout-{self.procs.index(proc)}.txt").read_text(errors="replace")

    def stderr_of(self, proc: subprocess.Popen[bytes]) -> str:
        return (self.root / f"stderr-{self.procs.index(proc)}.txt").read_text(errors="replace")

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL and reap: a zombie would still look alive to Podium's pid check."""
        proc.kill()
        proc.wait()

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                self.kill(proc)
        for f in self._files:
            f.close()

    # --- files --------------------------------------------------------------
    def workflow(self, name: str, doc: dict[str, Any]) -> Path:
        path = self.root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    def executions(self) -> list[Exec]:
        if not self.log.exists():
            return []
        out = []
        for line in self.log.read_text().splitlines():
            run_id, step_id, attempt, key, cap, data = line.split(" ", 5)
            out.append(Exec(run_id, step_id, int(attempt), key, cap, json.loads(data)))
        return out

    # --- the database, read-only ------------------------------------------------
    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)
        try:
            yield conn
        finally:
            conn.close()

    def run_ids(self) -> list[str]:
        if not self.db.exists():
            return []
        with self.read() as conn:
            try:
                rows = conn.execute("SELECT run_id FROM runs ORDER BY created_at").fetchall()
            except sqlite3.OperationalError:  # killed before the schema was committed
                return []
        return [r[0] for r in rows]

    def run_row(self, run_id: str) -> dict[str, Any]:
        with self.read() as conn:
            conn.row_factory = sqlite3.Row
            row = conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        assert row is not None, f"no run {run_id} in {self.db}"
        return dict(row)

    def steps(self, run_id: str) -> dict[str, dict[str, Any]]:
        with self.read() as conn:
            conn.row_factory = sqlite3.Row
            rows = conn.execute("SELECT * FROM steps WHERE run_id = ?", (run_id,)).fetchall()
        out = {}
        for r in rows:
            d = dict(r)
            d["output"] = None if d["output"] is None else json.loads(d["output"])
            out[d["step_id"]] = d
        return out

    def events(self, run_id: str) -> list[Event]:
        with self.read() as conn:
            rows = conn.execute("SELECT seq, type, data FROM events WHERE run_id = ? ORDER BY seq",
                                (run_id,)).fetchall()
        return [Event(seq, kind, json.loads(data)) for seq, kind, data in rows]

    def succeeded_steps(self, run_id: str) -> frozenset[str]:
        return frozenset(k for k, s in self.steps(run_id).items() if s["status"] == "succeeded")


def chain(n: int, sleep_ms: tuple[int, int] = (10, 40), **extra: Any) -> dict[str, Any]:
    """A sequential workflow of ``n`` logging steps (s00, s01, ...)."""
    steps = [{"id": f"s{i:02d}", "agent": "record", "input": {"sleep_ms": list(sleep_ms)}}
             for i in range(n)]
    return {"name": "chain", "mode": "sequential", "steps": steps,
            "output": f"${{{{ steps.s{n - 1:02d}.output }}}}", **extra}
