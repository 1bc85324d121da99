"""``podium prune`` through the real command, on a real SQLite file.

Runs are made by ``podium run`` itself (one that succeeds, one that fails, one still
executing in another process); the file is then read with ``sqlite3`` to prove that
what was pruned left no row behind and what was kept lost none.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time

from tests.acceptance.podium_cli import Podium, assert_no_traceback

# Leases of a second: a run this process ended is free a second later (its owner
# stays on the row until the lease runs out; a live lease keeps a run from a prune).
SHORT_LEASE = {"PODIUM_LEASE": "1s"}


def rows_of(podium: Podium, run_ids: list[str]) -> dict[str, int]:
    """Rows left of these runs, per table."""
    conn = sqlite3.connect(podium.db)
    try:
        marks = ",".join("?" * len(run_ids))
        return {t: conn.execute(f"SELECT count(*) FROM {t} WHERE run_id IN ({marks})",  # noqa: S608 - table names are ours
                                run_ids).fetchone()[0]
                for t in ("runs", "steps", "events")}
    finally:
        conn.close()


def test_prune_deletes_ended_runs_counts_them_dry_and_keeps_a_running_one(
        podium: Podium) -> None:
    assert podium("run", "ok.yaml", "-i", "who=ann", env=SHORT_LEASE).code == 0
    assert podium("run", "fail.yaml", env=SHORT_LEASE).code == 1
    ended = podium.run_ids()
    slow = podium.popen("run", "slow.yaml", "-i", "seconds=60", env=SHORT_LEASE)
    try:
        deadline = time.monotonic() + 20
        while len(podium.run_ids()) < 3:
            assert time.monotonic() < deadline, "the slow run never started"
            time.sleep(0.1)
        (running,) = set(podium.run_ids()) - set(ended)
        time.sleep(1.5)  # the ended runs' leases run out; the live one is renewed
        before = rows_of(podium, ended)
        assert before["runs"] == 2
        assert before["events"] > 0
        assert before["steps"] > 0

        dry = podium("prune", "--older-than", "0", "--dry-run", "--json")
        assert dry.code == 0, dry
        doc = dry.json()
        assert (doc["runs"], doc["dry_run"]) == (2, True)
        assert set(doc) == {"runs", "dry_run", "older_than", "finished_before", "statuses",
                            "workflow"}
        assert doc["finished_before"].endswith("Z")
        assert rows_of(podium, ended) == before  # a dry run deletes nothing

        none = podium("prune", "--older-than", "1d", "--json")
        assert (none.code, none.json()["runs"]) == (0, 0), none

        failed = podium("prune", "--older-than", "0", "--status", "failed", "--json")
        assert failed.code == 0, failed
        assert (failed.json()["runs"], failed.json()["statuses"]) == (1, ["failed"])

        text = podium("prune", "--older-than", "0s")
        assert text.code == 0, text
        assert text.out.startswith("deleted 1 run that ended before"), text
        assert rows_of(podium, ended) == {"runs": 0, "steps": 0, "events": 0}
        assert podium.run_ids() == [running]
        kept = rows_of(podium, [running])
        assert kept["runs"] == 1
        assert kept["events"] > 0
        assert podium("status", running, "--json").json()["status"] == "running"
    finally:
        slow.kill()
        with contextlib.suppress(Exception):
            slow.communicate(timeout=10)


def test_bad_flags_are_usage_errors_that_name_the_flag_and_the_fix(podium: Podium) -> None:
    for args, flag, fix in (
        (("--older-than", "soon"), "--older-than", "e.g. --older-than 30d"),
        (("--older-than", "-5d"), "--older-than", "e.g. --older-than 30d"),
        (("--older-than", "1d", "--status", "running"), "--status", "succeeded"),
        (("--older-than", "1d", "--status", "sucess"), "--status", "succeeded"),
        ((), "--older-than", ""),
    ):
        res = podium("prune", *args)
        assert res.code == 2, res
        assert flag in res.err, res
        assert fix in res.err, res
        assert_no_traceback(res)
        as_json = podium("prune", *args, "--json")
        assert as_json.code == 2, as_json
        error = as_json.json()["error"]
        assert (error["type"], error["exit_code"]) == ("usage", 2)
        assert flag in error["message"]


def test_an_unusable_database_is_exit_3_without_a_traceback(podium: Podium) -> None:
    podium.write("junk.db", "this is not a database, " * 100)
    for extra in ((), ("--dry-run",)):
        res = podium("prune", "--older-than", "30d", "--db", "sqlite:///junk.db", "--json",
                     *extra)
        assert res.code == 3, res
        assert res.json()["error"]["exit_code"] == 3
        assert_no_traceback(res)
