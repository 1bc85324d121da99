"""``podium submit`` stores a run without executing it; bad worker settings exit 2.

On SQLite nothing claims a submitted run by itself (``podium worker`` needs
PostgreSQL): ``podium resume`` executes it, as it does any run nobody holds.
"""

from __future__ import annotations

import json

import pytest

from tests.integration.podium_proc import Sandbox, chain


def test_a_submitted_run_waits_pending_until_something_executes_it(sandbox: Sandbox) -> None:
    sb = sandbox
    wf = sb.workflow("sub", chain(2, (0, 0), name="sub") | {"queue": "reports"})
    out = sb.podium("submit", str(wf), "-i", "n=5", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["status"] == "pending"
    assert doc["queue"] == "reports"
    run_id = doc["run_id"]
    assert sb.executions() == []  # nothing ran
    row = sb.run_row(run_id)
    assert (row["status"], row["owner"], row["queue"]) == ("pending", None, "reports")
    assert json.loads(row["capabilities"]) == ["record"]
    status = json.loads(sb.podium("status", run_id, "--json").stdout)
    assert (status["status"], status["owner"], status["queue"]) == ("pending", None, "reports")
    assert [e["type"] for e in status["timeline"]] == ["run_submitted"]

    done = sb.podium("resume", run_id, "--json", agents=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "succeeded"
    types = [e.type for e in sb.events(run_id)]
    assert types[:2] == ["run_submitted", "run_started"]
    started = next(e for e in sb.events(run_id) if e.type == "run_started")
    assert started.data["resumed"] is False  # its first start
    assert [x.step_id for x in sb.executions()] == ["s00", "s01"]


def test_submit_validates_as_run_does_and_stores_nothing_on_bad_input(
        sandbox: Sandbox) -> None:
    sb = sandbox
    wf = sb.workflow("strict", chain(1, (0, 0), name="strict") | {
        "input_schema": {"type": "object", "required": ["n"]}})
    out = sb.podium("submit", str(wf), "--json")
    assert out.returncode == 2
    assert "n" in json.loads(out.stdout)["error"]["message"]
    bad_queue = sb.podium("submit", str(wf), "-i", "n=1", "--queue", "Not A Queue")
    assert bad_queue.returncode == 2
    assert "--queue" in bad_queue.stderr
    assert sb.run_ids() == []


@pytest.mark.parametrize(("args", "words"), [
    (["--db", "sqlite:///x.db"], "podium worker needs PostgreSQL"),
    (["--db", "memory://"], "podium worker needs PostgreSQL"),
    (["--db", "postgresql://u@127.0.0.1:1/x", "--concurrency", "0"], "--concurrency 0"),
    (["--db", "postgresql://u@127.0.0.1:1/x", "--lease", "0.5s"], "--lease '0.5s'"),
    (["--db", "postgresql://u@127.0.0.1:1/x", "--lease", "soon"], "--lease 'soon'"),
    (["--db", "postgresql://u@127.0.0.1:1/x", "--name", "bad name"], "--name 'bad name'"),
    (["--db", "postgresql://u@127.0.0.1:1/x", "--queue", "A B"], "--queue 'A B'"),
])
def test_bad_worker_settings_exit_2_naming_the_flag(sandbox: Sandbox, args: list[str],
                                                    words: str) -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "podium", "worker", *args], cwd=sandbox.root,
                         env=sandbox.env(), capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 2, out.stderr
    assert words in out.stderr
    assert "Traceback" not in out.stderr
