"""``podium failures`` and ``podium alerts`` as a user runs them, against real runs' database.

The runs are real ``podium run`` processes on a scratch SQLite database:
``mixed`` twice (fetch succeeds; login is optional and fails both of its
attempts with a message that carries a password; pull fails once then
succeeds) and ``other`` once (one succeeds; two fails once then succeeds).
That is 13 attempts, 7 of them failed, so every count and rate below is exact.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

AGENTS_MODULE = '''
"""Agents of the failure-tracking tests (imported by the podium process)."""
from podium import Unavailable

SECRET = "hunter" + "2"  # never written whole in this file's source lines


def ok(task):
    return {"ok": task.step_id}


def leaky(task):
    raise ValueError(f"db login failed: password={SECRET} for user etl")


def flaky(task):
    if task.attempt < 2:
        raise Unavailable(f"upstream busy (attempt {task.attempt})")
    return {"attempt": task.attempt}
'''

AGENTS_FILE = """\
agents:
  - {id: fetcher, capabilities: [ok], python: "fail_agents:ok"}
  - {id: leaker, capabilities: [leaky], python: "fail_agents:leaky"}
  - {id: flake, capabilities: [flaky], python: "fail_agents:flaky"}
"""

RETRY = "retry: {max_attempts: 2, initial_delay: 10ms, jitter: none}"
MIXED = f"""\
name: mixed
steps:
  - {{id: fetch, agent: ok}}
  - {{id: login, agent: leaky, optional: true, {RETRY}}}
  - {{id: pull, agent: flaky, depends_on: [fetch], {RETRY}}}
"""
OTHER = f"""\
name: other
steps:
  - {{id: one, agent: ok}}
  - {{id: two, agent: flaky, depends_on: [one], {RETRY}}}
"""
ALERTS = """\
rules:
  - {name: leaker-streak, kind: consecutive_failures, count: 2, scope: agent, agent: leaker,
     severity: critical}
  - {name: flake-streak, kind: consecutive_failures, count: 1, scope: agent, agent: flake}
"""


@dataclass(frozen=True, repr=False)
class Result:
    args: tuple[str, ...]
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def __repr__(self) -> str:
        return (f"podium {' '.join(self.args)} -> exit {self.code}\n"
                f"--- stdout ---\n{self.out}\n--- stderr ---\n{self.err}")


class Project:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        for name, text in {"fail_agents.py": AGENTS_MODULE, "podium.yaml": AGENTS_FILE,
                           "mixed.yaml": MIXED, "other.yaml": OTHER,
                           "alerts.yaml": ALERTS}.items():
            (folder / name).write_text(textwrap.dedent(text), encoding="utf-8")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PODIUM_")}
        self.env.update(PYTHONIOENCODING="utf-8", NO_COLOR="1", PYTHONDONTWRITEBYTECODE="1")

    @property
    def db(self) -> Path:
        return self.folder / "p.db"

    def __call__(self, *args: str) -> Result:
        proc = subprocess.run([sys.executable, "-m", "podium", *args, "--db",
                               f"sqlite:///{self.db}"], cwd=self.folder, env=self.env,
                              capture_output=True, text=True, timeout=50,
                              stdin=subprocess.DEVNULL, check=False)
        return Result(args, proc.returncode, proc.stdout, proc.stderr)

    def run(self, workflow: str, *extra: str) -> dict[str, Any]:
        res = self("run", workflow, "--json", *extra)
        assert res.code == 0, res
        doc: dict[str, Any] = res.json()
        assert doc["status"] == "succeeded", res
        return doc

    def database_bytes(self) -> bytes:
        """Every byte SQLite wrote (the database and its write-ahead log, if any)."""
        return b"".join(p.read_bytes() for p in self.folder.glob("p.db*"))


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Project:
    project = Project(tmp_path_factory.mktemp("failures"))
    for workflow in ("mixed.yaml", "mixed.yaml", "other.yaml"):
        project.run(workflow)
    return project


def failures(project: Project, by: str) -> dict[str, Any]:
    res = project("failures", "--since", "1h", "--by", by, "--json")
    assert res.code == 0, res
    assert "hunter2" not in res.out + res.err, res
    doc: dict[str, Any] = res.json()
    assert (doc["by"], doc["since"]) == (by, "1h")
    assert (doc["attempts"], doc["failures"]) == (13, 7)
    assert doc["success_rate"] == round(6 / 13, 4)
    return doc


def rows(doc: dict[str, Any]) -> list[tuple[Any, ...]]:
    by = doc["by"]
    return [(g[by], g["calls"], g["failures"], g["success_rate"]) for g in doc["groups"]]


# An unquoted password may hold spaces: the scrubber masks up to the next separator, so
# the words after it go too (a few characters lost, no half of a password kept).
LEAK = "ValueError: db login failed: password=***"


def test_failures_by_agent_counts_calls_failures_and_success_rates_exactly(
    history: Project,
) -> None:
    doc = failures(history, "agent")
    assert rows(doc) == [("leaker", 4, 4, 0.0), ("flake", 6, 3, 0.5), ("fetcher", 3, 0, 1.0)]
    leaker = doc["groups"][0]
    assert leaker["top_errors"] == [{"type": "agent_error", "message": LEAK, "count": 4}]
    flake = doc["groups"][1]
    assert flake["top_errors"] == [{"type": "unavailable",
                                    "message": "upstream busy (attempt 1)", "count": 3}]
    assert doc["groups"][2]["top_errors"] == []


def test_failures_by_step_are_keyed_by_workflow_and_step(history: Project) -> None:
    assert rows(failures(history, "step")) == [
        ("mixed/login", 4, 4, 0.0), ("mixed/pull", 4, 2, 0.5), ("other/two", 2, 1, 0.5),
        ("mixed/fetch", 2, 0, 1.0), ("other/one", 1, 0, 1.0)]


def test_failures_by_type_count_each_error_type(history: Project) -> None:
    doc = failures(history, "type")
    assert rows(doc) == [("agent_error", 4, 4, None), ("unavailable", 3, 3, None)]
    assert doc["top_errors"] == [
        {"type": "agent_error", "message": LEAK, "count": 4},
        {"type": "unavailable", "message": "upstream busy (attempt 1)", "count": 3}]
    assert len(doc["recent"]) == 7
    assert {f["workflow"] for f in doc["recent"]} == {"mixed", "other"}


def test_failures_by_workflow(history: Project) -> None:
    assert rows(failures(history, "workflow")) == [
        ("mixed", 10, 6, 0.4), ("other", 3, 1, round(2 / 3, 4))]


def test_a_secret_in_an_agent_error_is_scrubbed_in_output_and_in_the_database(
    history: Project,
) -> None:
    res = history("failures", "--since", "1h", "--by", "agent")  # the table, for a person
    assert res.code == 0, res
    assert "password=***" in res.out
    assert "hunter2" not in res.out + res.err
    runs = history("runs", "--json")
    assert runs.code == 0, runs
    for run in runs.json():
        status = history("status", run["run_id"], "--verbose", "--json")
        assert status.code == 0, status
        assert "hunter2" not in status.out
    assert b"hunter2" not in history.database_bytes()
    # ...while the rest of the message is kept, as stored in the events themselves
    with sqlite3.connect(f"file:{history.db}?mode=ro", uri=True) as conn:
        stored = [r[0] for r in conn.execute(
            "SELECT json_extract(data, '$.error.message') FROM events"
            " WHERE type = 'step_attempt_failed'")]
    assert stored.count(LEAK) == 4


def test_failures_text_table_lists_each_group(history: Project) -> None:
    res = history("failures", "--since", "1h", "--by", "workflow")
    assert res.code == 0, res
    lines = res.out.splitlines()
    assert lines[0] == "last 1h: 13 attempts, 7 failed, success rate 46.2%"
    assert lines[2].split()[:4] == ["WORKFLOW", "CALLS", "FAILED", "SUCCESS"]
    assert lines[3].split()[:4] == ["mixed", "10", "6", "40.0%"]
    assert lines[4].split()[:4] == ["other", "3", "1", "66.7%"]


def test_failures_window_leaves_out_older_attempts(history: Project) -> None:
    time.sleep(0.05)
    res = history("failures", "--since", "10ms", "--json")
    assert res.code == 0, res
    doc = res.json()
    assert (doc["attempts"], doc["failures"], doc["success_rate"], doc["groups"]) == (
        0, 0, None, [])


@pytest.mark.parametrize(("args", "message"), [
    (("--by", "colour"), "--by 'colour'"),
    (("--since", "a while"), "--since"),
])
def test_failures_rejects_bad_options_with_exit_2(
    history: Project, args: tuple[str, ...], message: str,
) -> None:
    res = history("failures", *args)
    assert res.code == 2, res
    assert message in res.err
    assert "Traceback" not in res.err


# --- alerts --------------------------------------------------------------------------


@pytest.fixture
def alerted(tmp_path: Path) -> Project:
    """One run of ``mixed`` with the alerts file: leaker's streak fires, flake's resolves."""
    project = Project(tmp_path)
    project.run("mixed.yaml", "--alerts", "alerts.yaml")
    return project


def test_alerts_json_lists_what_fired_during_the_run(alerted: Project) -> None:
    res = alerted("alerts", "--json")
    assert res.code == 0, res
    alerts = {a["key"]: a for a in res.json()}
    assert set(alerts) == {"leaker-streak:agent=leaker", "flake-streak:agent=flake"}
    leaker = alerts["leaker-streak:agent=leaker"]
    assert (leaker["status"], leaker["severity"], leaker["level"]) == ("firing", "critical", 0)
    assert leaker["labels"] == {"agent": "leaker"}
    assert leaker["workflow"] == "mixed"
    assert "2 consecutive failures" in leaker["summary"]
    assert leaker["acked_at"] is None
    flake = alerts["flake-streak:agent=flake"]
    assert flake["status"] == "resolved"
    assert flake["resolved_at"] >= flake["fired_at"]

    firing = alerted("alerts", "--status", "firing", "--json")
    assert [a["key"] for a in firing.json()] == ["leaker-streak:agent=leaker"]
    text = alerted("alerts")
    assert text.code == 0, text
    assert "leaker-streak:agent=leaker" in text.out
    assert "firing" in text.out


def test_alerts_ack_acknowledges_once_and_unknown_keys_exit_2(alerted: Project) -> None:
    key = "leaker-streak:agent=leaker"
    res = alerted("alerts", "ack", key, "--by", "alice", "--json")
    assert res.code == 0, res
    doc = res.json()
    assert doc["acked"] is True
    assert doc["alert"]["acked_by"] == "alice"
    assert doc["alert"]["acked_at"] is not None

    again = alerted("alerts", "ack", key, "--by", "bob")
    assert again.code == 0, again
    assert "already acknowledged" in again.out
    listed = {a["key"]: a for a in alerted("alerts", "--json").json()}
    assert listed[key]["acked_by"] == "alice"

    resolved = alerted("alerts", "ack", "flake-streak:agent=flake")
    assert resolved.code == 0, resolved
    assert "is resolved" in resolved.out

    unknown = alerted("alerts", "ack", "no-such:alert")
    assert unknown.code == 2, unknown
    assert "no alert with key 'no-such:alert'" in unknown.err
    unknown_json = alerted("alerts", "ack", "no-such:alert", "--json")
    assert unknown_json.code == 2, unknown_json
    error = unknown_json.json()["error"]
    assert (error["type"], error["exit_code"]) == ("alert_not_found", 2)
    assert "no alert with key 'no-such:alert'" in error["message"]


def test_alerts_on_an_empty_database(tmp_path: Path) -> None:
    project = Project(tmp_path)
    res = project("alerts", "--json")
    assert res.code == 0, res
    assert res.json() == []
    text = project("alerts")
    assert (text.code, text.out.strip()) == (0, "no alerts")
