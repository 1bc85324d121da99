"""The process ends when its run ends, and a run is never left going unseen.

Real ``podium`` processes: a sync agent still sleeping after its attempt timed
out must not keep a finished run's process alive; sync agents get as many
threads as they may run calls at once; Ctrl-C stops a run whose output goes
into a pipe that died with it (``podium run ... | tee log``, and tee got the
Ctrl-C too).
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import threading
import time
from pathlib import Path

from podium import AgentRegistry, Engine, PythonAgent
from podium.definition import workflow_from_dict
from tests.integration.podium_proc import Sandbox, wait_for

AGENTS = '''
import os, time
from pathlib import Path

def sleepy(task):
    time.sleep(float(task.input["seconds"]))
    return "awake"

def ticker(task):
    Path(os.environ["PODIUM_TEST_DIR"], "started").touch()
    for _ in range(600):
        time.sleep(0.1)
    return "done"
'''


def _project(sb: Sandbox) -> None:
    (sb.root / "slow_agents.py").write_text(AGENTS)
    (sb.root / "podium.yaml").write_text(
        "agents:\n"
        "  - {id: sleepy, capabilities: [sleepy], python: 'slow_agents:sleepy'}\n"
        "  - {id: ticker, capabilities: [ticker], python: 'slow_agents:ticker'}\n")


def test_a_timed_out_sync_agent_does_not_keep_the_process_alive(sandbox: Sandbox) -> None:
    """Two 1 s timeouts of a 30 s sleep: the run fails and the process exits with the
    run's exit code; it does not wait for the abandoned threads (the old default pool
    made it wait for them, ~30 s more)."""
    _project(sandbox)
    wf = sandbox.workflow("t", {"name": "t", "steps": [{
        "id": "nap", "agent": "sleepy", "input": {"seconds": 30}, "timeout": "1s",
        "retry": {"max_attempts": 2, "initial_delay": "10ms", "jitter": "none"}}]})
    t0 = time.monotonic()
    out = sandbox.podium("run", str(wf), "--json", timeout=25)
    took = time.monotonic() - t0
    assert out.returncode == 1, out.stderr
    doc = json.loads(out.stdout)
    assert (doc["status"], doc["steps"]["nap"]["attempts"]) == ("failed", 2)
    assert doc["error"]["type"] == "timeout"
    assert took < 25  # bounded by the timeouts, never by the 30 s the thread still sleeps
    with sandbox.read() as conn:
        (status,) = conn.execute("SELECT status FROM runs").fetchone()
    assert status == "failed"  # committed before the process exited


async def test_sync_agents_run_as_many_calls_at_once_as_they_may() -> None:
    """max_parallel 10, max_concurrency 100: ten sync calls are in flight together (a
    barrier of ten only opens if they are); the default pool had 6 threads here."""
    barrier = threading.Barrier(10, timeout=20)
    inside = [0, 0]  # now, most
    lock = threading.Lock()

    def meet(task: object) -> str:
        with lock:
            inside[0] += 1
            inside[1] = max(inside[1], inside[0])
        try:
            barrier.wait()
        finally:
            with lock:
                inside[0] -= 1
        return "met"

    registry = AgentRegistry([PythonAgent(meet, id="meet", capabilities=["meet"],
                                          max_concurrency=100)])
    wf = workflow_from_dict({"name": "wide", "mode": "parallel", "max_parallel": 10,
                             "steps": [{"id": f"s{i}", "agent": "meet"} for i in range(30)]})
    async with Engine(registry=registry) as engine:
        run = await asyncio.wait_for(engine.run(wf), 60)
    assert run.status == "succeeded", run.error
    assert inside[1] == 10


def test_ctrl_c_stops_a_run_whose_output_pipe_is_gone(sandbox: Sandbox) -> None:
    """`podium run long.yaml 2>&1 | tee log`, then Ctrl-C: tee dies with it, so every
    write of podium's fails with EPIPE. The run is still cancelled, recorded as such,
    and the process exits (it used to go on unseen)."""
    _project(sandbox)
    wf = sandbox.workflow("long", {"name": "long", "steps": [
        {"id": "tick", "agent": "ticker"}]})
    proc = subprocess.Popen(sandbox.argv("run", str(wf)), cwd=sandbox.root, env=sandbox.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert wait_for(lambda: (Path(sandbox.root) / "started").exists(), 30)
        assert proc.stdout is not None
        proc.stdout.close()  # the reader (tee) is gone
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    (run_id,) = sandbox.run_ids()
    assert sandbox.run_row(run_id)["status"] == "cancelled"
    assert proc.returncode == 1


def test_a_closed_stdout_lets_the_run_finish_and_record_its_end(sandbox: Sandbox) -> None:
    """`podium run ... | head -1`: the reader goes away after one line. Decided and
    documented: the run goes on to its end, recorded in the store, and the exit code is
    the run's; nothing is printed to the dead pipe and nothing crashes."""
    _project(sandbox)
    wf = sandbox.workflow("short", {"name": "short", "mode": "sequential", "steps": [
        {"id": f"n{i}", "agent": "sleepy", "input": {"seconds": 0.2}} for i in range(4)]})
    proc = subprocess.Popen(sandbox.argv("run", str(wf)), cwd=sandbox.root, env=sandbox.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.readline()
    proc.stdout.close()
    _out, err = proc.communicate(timeout=60)
    (run_id,) = sandbox.run_ids()
    assert sandbox.run_row(run_id)["status"] == "succeeded"
    assert proc.returncode == 0, err
    assert b"Traceback" not in err
