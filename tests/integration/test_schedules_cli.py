"""``podium schedule`` from the command line, and a server killed across slots.

Real ``python -m podium`` processes on a real SQLite file: bad flags exit 2 naming
the flag and the fix; add/list/pause/resume/delete; and ``podium serve`` fires an
every-second schedule, is killed with ``kill -9`` while slots pass, and is started
again: every slot from the first to the last is recorded once, each fired slot has
one run, and every run ends with one committed success of its step.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter

import pytest

from tests.integration.observe_tools import free_port
from tests.integration.podium_proc import Sandbox, wait_for

WF = {"name": "tick", "steps": [{"id": "a", "agent": "record", "input": {"n": 1}}]}


@pytest.mark.parametrize(("args", "message"), [
    (["--cron", "61 * * * *"], "--cron '61 * * * *': Bad minute"),
    (["--cron", "0 0 31 2 *"], "--cron '0 0 31 2 *'"),
    (["--cron", "0 2 * * *", "--tz", "Mars/Olympus"], "--tz 'Mars/Olympus': no such time zone"),
    ([], "give one of --cron EXPR or --every DURATION"),
    (["--cron", "0 2 * * *", "--every", "1m"], "give one of --cron EXPR or --every DURATION"),
    (["--every", "0.5s"], "--every '0.5s': at least 1s"),
    (["--every", "soon"], "--every 'soon': not a duration"),
    (["--every", "1m", "--overlap", "maybe"], "--overlap 'maybe': one of skip, queue, allow"),
    (["--every", "1m", "--catch-up", "-1"], "--catch-up -1: 0 to 1000"),
    (["--every", "1m", "--name", "Bad Name"], "--name 'Bad Name'"),
])
def test_bad_flags_exit_2_naming_the_flag(sandbox: Sandbox, args: list[str],
                                          message: str) -> None:
    wf = sandbox.workflow("tick", WF)
    out = sandbox.podium("schedule", "add", str(wf), *args)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert not sandbox.db.exists() or sandbox.podium("schedule", "list", "--json").stdout \
        .strip() == "[]"


def test_add_list_pause_resume_delete(sandbox: Sandbox) -> None:
    sb = sandbox
    wf = sb.workflow("tick", WF)
    out = sb.podium("schedule", "add", str(wf), "--cron", "0 2 * * *", "--tz", "Europe/Paris",
                    "--name", "nightly", "--json")
    assert out.returncode == 0, out.stderr
    added = json.loads(out.stdout)
    assert (added["id"], added["cron"], added["tz"], added["paused"]) == (
        "nightly", "0 2 * * *", "Europe/Paris", False)
    again = sb.podium("schedule", "add", str(wf), "--every", "1m", "--name", "nightly")
    assert again.returncode == 2
    assert "a schedule 'nightly' exists already" in again.stderr
    listed = json.loads(sb.podium("schedule", "list", "--json").stdout)
    assert [s["id"] for s in listed] == ["nightly"]
    assert listed[0]["next_at"] == added["next_at"]
    assert sb.podium("schedule", "pause", "nightly").returncode == 0
    assert json.loads(sb.podium("schedule", "list", "--json").stdout)[0]["paused"] is True
    text = sb.podium("schedule", "list").stdout
    assert "nightly" in text
    assert "paused" in text
    assert sb.podium("schedule", "resume", "nightly").returncode == 0
    assert json.loads(sb.podium("schedule", "list", "--json").stdout)[0]["paused"] is False
    missing = sb.podium("schedule", "pause", "nope")
    assert missing.returncode == 2
    assert "no schedule 'nope' (fix: one of: nightly" in missing.stderr
    assert sb.podium("schedule", "delete", "nightly").returncode == 0
    assert json.loads(sb.podium("schedule", "list", "--json").stdout) == []


def _slots(sb: Sandbox) -> list[tuple[float, str, str | None]]:
    with sb.read() as conn:
        return list(conn.execute("SELECT slot, status, run_id FROM schedule_slots"
                                 " ORDER BY slot"))


@pytest.mark.timeout(120)
def test_a_server_killed_across_slots_fires_each_slot_once(sandbox: Sandbox) -> None:
    sb = sandbox
    wf = sb.workflow("tick", WF)
    out = sb.podium("schedule", "add", str(wf), "--every", "1s", "--catch-up", "100",
                    "--overlap", "allow", "--name", "tick", agents=True)
    assert out.returncode == 0, out.stderr
    server = sb.spawn("serve", "--port", str(free_port()), agents=True)
    assert wait_for(lambda: sb.db.exists() and len(_slots(sb)) >= 3, 30, 0.1), \
        sb.stderr_of(server)
    sb.kill(server)
    time.sleep(2.5)  # slots pass with no server
    at_restart = _slots(sb)
    server = sb.spawn("serve", "--port", str(free_port()), agents=True)
    assert wait_for(lambda: len(_slots(sb)) >= len(at_restart) + 5, 30, 0.1), \
        sb.stderr_of(server)
    server.send_signal(signal.SIGTERM)
    server.wait(30)

    slots = _slots(sb)
    times = [s[0] for s in slots]
    assert times == [times[0] + i for i in range(len(times))], "a slot was left out"
    assert {s[1] for s in slots} == {"fired"}  # all within the grace: caught up, late
    runs = [s[2] for s in slots]
    assert len(set(runs)) == len(runs)
    with sb.read() as conn:
        stored = dict(conn.execute("SELECT run_id, status FROM runs"))
        successes = Counter(r for (r,) in conn.execute(
            "SELECT run_id FROM events WHERE type = 'step_succeeded'"))
    assert set(stored) == set(runs), "a run that is no slot's, or a slot without its run"
    # Runs of the last slots may still be going at the SIGTERM: the others succeeded, once.
    done = [r for r in runs if stored[r] == "succeeded"]
    assert len(done) >= len(runs) - 2
    assert all(successes[r] == 1 for r in done)
