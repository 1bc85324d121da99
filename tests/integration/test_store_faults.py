"""The SQLite store under the faults a user meets: a writer holding the lock, a
second store of one file in one process, a read-only mount and a full disk.

The mounts are real: each case runs in a private mount namespace (``unshare -m``,
or ``unshare -rm`` when not root) with a small tmpfs, so "disk full" is a real
ENOSPC and "read-only" a real read-only mount, never a mock.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from podium.errors import StoreError
from podium.store.factory import open_store
from podium.store.sqlite import SQLiteStore
from tests.integration.podium_proc import Sandbox, chain

# --- readers never wait for a writer -------------------------------------------------


def test_readers_do_not_wait_for_a_writer_holding_the_lock(sandbox: Sandbox) -> None:
    """`runs`, `status`, `failures` and `alerts` read a snapshot of the log: with another
    process holding the write lock (they used to wait 30 s for it, then exit 3) they
    answer at once, and never migrate."""
    wf = sandbox.workflow("w", chain(2, (0, 0)))
    out = sandbox.podium("run", str(wf), "--json", agents=True)
    assert out.returncode == 0, out.stderr
    run_id = json.loads(out.stdout)["run_id"]
    writer = sqlite3.connect(sandbox.db, isolation_level=None, timeout=1)
    try:
        writer.execute("BEGIN EXCLUSIVE")
        writer.execute("UPDATE podium_meta SET value = value WHERE key = 'schema_version'")
        for args in (("runs", "--json"), ("status", run_id, "--json"), ("failures", "--json"),
                     ("alerts", "--json")):
            t0 = time.monotonic()
            # A 20 s timeout catches the old 30 s wait with a wide margin.
            done = sandbox.podium(*args, timeout=20)
            assert done.returncode == 0, (args, done.stderr)
            json.loads(done.stdout)
            assert time.monotonic() - t0 < 20
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_a_reader_makes_no_database(sandbox: Sandbox) -> None:
    out = sandbox.podium("runs", "--json")
    assert (out.returncode, json.loads(out.stdout)) == (0, [])
    assert not sandbox.db.exists()
    out = sandbox.podium("status", "nope")
    assert out.returncode == 2
    assert "no run 'nope'" in out.stderr
    assert not sandbox.db.exists()


# --- one store per file and process --------------------------------------------------


async def test_one_store_object_per_file_in_a_process(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'one.db'}"
    first = open_store(url)
    await first.open()
    try:
        assert open_store(url) is first  # the same object, not a second connection
        assert open_store(f"sqlite:///{tmp_path}/./one.db", readonly=True) is first
        again = open_store(url)
        await again.open()  # one more user ...
        await again.close()  # ... gone: the store stays open for the first one
        assert await first.list_runs() == []
        with pytest.raises(StoreError, match="already open in this process"):
            await SQLiteStore(tmp_path / "one.db").open()
    finally:
        await first.close()
    assert open_store(url) is not first  # closed: a new store may open the file
    fresh = SQLiteStore(tmp_path / "one.db")
    await fresh.open()
    await fresh.close()


async def test_a_readonly_store_refuses_to_write(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    writer = SQLiteStore(db)
    await writer.open()
    await writer.close()
    reader = open_store(f"sqlite:///{db}", readonly=True)
    await reader.open()
    try:
        with pytest.raises(StoreError, match="read-only"):
            await reader.save_workflow("w", 1, {"name": "w"})
        with pytest.raises(StoreError, match="open read-only in this process"):
            open_store(f"sqlite:///{db}")
    finally:
        await reader.close()


# --- real mounts: read-only and full -------------------------------------------------


def _in_small_mount(sb: Sandbox, size: str, script: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` (sh) in a private mount namespace where ``$SMALL`` is a fresh tmpfs
    of ``size``; ``$PODIUM`` runs the CLI. Fails (never skips) where that cannot be done."""
    unshare = shutil.which("unshare")
    assert unshare is not None, "these tests need util-linux's unshare"
    small = sb.root / "small"
    small.mkdir()
    podium = f"{shlex.quote(sys.executable)} -m podium"
    full = (f"set -u\nmount -t tmpfs -o size={size} tmpfs {shlex.quote(str(small))}\n"
            f"SMALL={shlex.quote(str(small))}; PODIUM={shlex.quote(podium)}\n{script}")
    argv = [unshare, "-m"] if os.geteuid() == 0 else [unshare, "-rm"]
    out = subprocess.run([*argv, "sh", "-c", full], cwd=sb.root, env=sb.env(),
                         capture_output=True, text=True, timeout=180, check=False)
    assert "mount:" not in out.stderr, f"cannot make a test mount here: {out.stderr}"
    return out


def _big_workflow(sb: Sandbox, steps: int) -> Path:
    (sb.root / "big_agents.py").write_text(
        "def big(task):\n    return {'step': task.step_id, 'blob': 'x' * 60000}\n")
    (sb.root / "podium.yaml").write_text(
        "agents: [{id: big, capabilities: [big], python: 'big_agents:big'}]\n")
    return sb.workflow("big", {"name": "big", "mode": "sequential", "steps": [
        {"id": f"s{i:02d}", "agent": "big"} for i in range(steps)]})


def test_a_full_disk_is_named_and_loses_nothing(sandbox: Sandbox) -> None:
    """A run that fills its disk exits 3 saying the disk is full (not "damaged"), with no
    traceback; what committed before stays readable, and the run resumes once there is
    room (here: the file is copied by SQLite's own backup to a roomier folder)."""
    wf = _big_workflow(sandbox, 40)
    out = _in_small_mount(sandbox, "1m", f"""
$PODIUM run {wf} --db sqlite:///$SMALL/p.db > run.out 2> run.err; echo "rc=$?" > run.rc
$PODIUM runs --json --db sqlite:///$SMALL/p.db > runs.json
{shlex.quote(sys.executable)} -c "
import sqlite3, sys
src = sqlite3.connect('file:$SMALL/p.db?mode=ro', uri=True)
dst = sqlite3.connect('saved.db'); src.backup(dst); dst.close(); src.close()"
""")
    assert out.returncode == 0, out.stderr
    root = sandbox.root
    assert (root / "run.rc").read_text().strip() == "rc=3"
    err = (root / "run.err").read_text()
    assert "the disk is full" in err, err
    assert "damaged" not in err
    assert "Traceback" not in err + (root / "run.out").read_text()
    (row,) = json.loads((root / "runs.json").read_text())
    assert row["status"] == "running"
    assert row["resumable"]
    saved = Sandbox(root)
    (root / "saved.db").rename(saved.db)
    done = saved.succeeded_steps(row["run_id"])
    assert 0 < len(done) < 40
    resumed = saved.podium("resume", row["run_id"], "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["status"] == "succeeded"


def test_a_read_only_mount_is_named_and_still_readable(sandbox: Sandbox) -> None:
    """On a read-only mount, a writing command exits 3 saying "read-only" (not
    "damaged"); the reading commands still read the database."""
    wf = _big_workflow(sandbox, 3)
    out = _in_small_mount(sandbox, "8m", f"""
$PODIUM run {wf} --json --db sqlite:///$SMALL/p.db > first.json || exit 9
mount -o remount,ro $SMALL
$PODIUM run {wf} --db sqlite:///$SMALL/p.db > again.out 2> again.err; echo "rc=$?" > again.rc
$PODIUM run {wf} --db sqlite:///$SMALL/new.db > new.out 2> new.err; echo "rc=$?" > new.rc
$PODIUM runs --json --db sqlite:///$SMALL/p.db > runs.json 2> runs.err
""")
    assert out.returncode == 0, out.stderr
    root = sandbox.root
    first = json.loads((root / "first.json").read_text())
    for name in ("again", "new"):
        assert (root / f"{name}.rc").read_text().strip() == "rc=3"
        err = (root / f"{name}.err").read_text()
        assert "read-only" in err, err
        assert "damaged" not in err
        assert "Traceback" not in err
    rows = json.loads((root / "runs.json").read_text())
    assert [(r["run_id"], r["status"]) for r in rows] == [(first["run_id"], "succeeded")]
