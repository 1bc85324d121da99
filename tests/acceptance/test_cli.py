"""Acceptance tests of the ``podium`` command, run for real in subprocesses.

They check the CLI contract of DESIGN.md: exit codes (0 success, 1 the
workflow failed, 2 bad usage or invalid input, 3 infrastructure), the
``--json`` document of a run, how ``-i`` and ``--input-file`` are parsed,
plain progress without a terminal, and the ``validate``, ``graph``,
``schema``, ``runs``, ``status``, ``resume``, ``cancel``, ``rollback`` and
``demo`` commands. No test asserts on speed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.acceptance.podium_cli import Podium, assert_no_traceback, make_project

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

RUN_KEYS = {"run_id", "workflow", "version", "status", "output", "error", "steps"}
STEP_KEYS = {"status", "attempts", "agent", "output", "error", "started_at", "finished_at"}
CONTRACT_COMMANDS = {"demo", "run", "validate", "graph", "runs", "status", "resume", "cancel",
                     "rollback", "schema"}


def last_run_id(podium: Podium) -> str:
    ids = podium.run_ids()
    assert ids, "no run was recorded"
    return ids[0]


def unique_prefix(run_id: str, others: list[str]) -> str:
    for n in range(1, len(run_id)):
        prefix = run_id[:n]
        if not any(o != run_id and o.startswith(prefix) for o in others):
            return prefix
    return run_id


def problem_lines(stderr: str) -> list[str]:
    """The indented problem lines a DefinitionError prints."""
    return [line.strip() for line in stderr.splitlines() if line.startswith("  ")]


def lines_of(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def index_matching(lines: list[str], pattern: str) -> int:
    for i, line in enumerate(lines):
        if re.search(pattern, line):
            return i
    raise AssertionError(f"no line matches {pattern!r} in:\n" + "\n".join(lines))


# --- podium run: exit codes --------------------------------------------------------------


def test_run_success_exits_0_and_prints_the_output(podium: Podium) -> None:
    """A succeeding workflow: exit 0, summary names the run and shows the output."""
    res = podium("run", "ok.yaml", "-i", "who=ann")

    assert res.code == 0, res
    assert_no_traceback(res)
    run_id = last_run_id(podium)
    assert f"run {run_id} succeeded" in res.out
    assert '"greeting": "hi ann"' in res.out
    assert "error" not in res.err.lower(), res


def test_run_tunes_the_garbage_collector_of_its_process(podium: Podium) -> None:
    """podium run freezes start-up objects and collects less often (podium.tuning)."""
    res = podium("run", "gc.yaml", "--json")
    assert res.code == 0, res
    out = json.loads(res.out)["output"]["probe"]  # a dag's output: {sink: its output}
    assert out["threshold"] == [20_000, 20, 100]
    assert out["frozen"] > 10_000  # the modules and the loaded workflow


def test_run_failure_exits_1_with_each_attempts_error_and_no_traceback(podium: Podium) -> None:
    """A failing workflow: exit 1; every failed attempt's error type and message, no traceback."""
    res = podium("run", "fail.yaml")

    assert res.code == 1, res
    assert_no_traceback(res)
    run_id = last_run_id(podium)
    assert f"run {run_id} failed" in res.out
    summary = res.out[res.out.index(f"run {run_id} failed"):]
    assert re.search(r"explode attempt 1\b.*agent_error: ValueError: kaboom on attempt 1", summary)
    assert re.search(r"explode attempt 2\b.*agent_error: ValueError: kaboom on attempt 2", summary)
    assert re.search(r"error: agent_error: .*explode.*kaboom on attempt 2", summary)
    # the agent's source lines are in the stored record, not on the screen
    assert "_explode(task.attempt)" not in res.out + res.err


def test_run_invalid_workflow_exits_2_listing_every_problem_with_file_line_step_field(
    podium: Podium,
) -> None:
    """Every problem of the file on stderr at once, each with file:line, step and field."""
    res = podium("run", "broken.yaml")

    assert res.code == 2, res
    assert_no_traceback(res)
    assert res.out == ""
    problems = problem_lines(res.err)
    expected = [
        r"^broken\.yaml:5: step 'fetch': timeout: .*'5 parsecs'",
        r"^broken\.yaml:8: step 'store': depends_on: .*'ghost'",
        r"^broken\.yaml:9: step 'store': colour: unknown key 'colour'",
        r"^broken\.yaml:12: step 'report': input: .*'nowhere'",
    ]
    for pattern in expected:
        assert any(re.search(pattern, p) for p in problems), (pattern, res.err)
    assert len(problems) == len(expected), res.err
    assert podium.run_ids() == []  # nothing was started


@pytest.mark.parametrize("pair", ["count", "=5", ""])
def test_run_input_pair_without_key_and_equals_sign_exits_2(podium: Podium, pair: str) -> None:
    """-i needs key=value: a missing '=' or an empty key is bad usage, said plainly."""
    res = podium("run", "typed.yaml", "-i", pair)

    assert res.code == 2, res
    assert_no_traceback(res)
    assert "key=value" in res.err
    assert podium.run_ids() == []


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ((), "'count' is a required property"),
        (("-i", "count=many"), "input.count: 'many' is not of type 'integer'"),
        (("-i", "count=0"), "input.count: 0 is less than the minimum of 1"),
    ],
)
def test_run_input_failing_input_schema_exits_2_before_anything_runs(
    podium: Podium, args: tuple[str, ...], says: str
) -> None:
    """Input that does not fit input_schema is refused up front: exit 2, no run recorded."""
    res = podium("run", "needs-count.yaml", *args)

    assert res.code == 2, res
    assert_no_traceback(res)
    assert says in res.err
    assert "-i" in res.err  # says how to pass the input
    assert podium.run_ids() == []


def test_run_unknown_capability_exits_2_naming_the_step_and_known_capabilities(
    podium: Podium,
) -> None:
    """No agent for 'translation': exit 2; the error names the step and lists what exists."""
    res = podium("run", "unknown-cap.yaml")

    assert res.code == 2, res
    assert_no_traceback(res)
    assert "step 'translate'" in res.err
    assert "'translation'" in res.err
    known = re.search(r"known capabilities: ([^)\n]*)", res.err)
    assert known is not None, res.err
    assert {"boom", "chatty", "echo", "flaky", "slow", "tally"} <= {
        c.strip() for c in known.group(1).split(",")}
    assert podium.run_ids() == []


def test_run_missing_workflow_file_exits_2(podium: Podium) -> None:
    res = podium("run", "nope.yaml")

    assert res.code == 2, res
    assert_no_traceback(res)
    assert "nope.yaml" in res.err
    assert "not found" in res.err


@pytest.mark.parametrize("kind", ["random-bytes", "foreign-sqlite", "directory"])
@pytest.mark.parametrize("command", ["run", "runs", "status"])
def test_unusable_database_exits_3_and_a_directory_2_without_traceback(
    podium: Podium, kind: str, command: str
) -> None:
    """A --db that is not a Podium database is an infrastructure error (3), left untouched.

    A directory is no database at all: a mistyped --db, so bad usage (2).
    """
    bad = podium.cwd / "bad.db"
    if kind == "random-bytes":
        bad.write_bytes(os.urandom(4096))
    elif kind == "foreign-sqlite":
        import sqlite3

        conn = sqlite3.connect(bad)
        conn.execute("CREATE TABLE users (id INTEGER, name TEXT)")
        conn.commit()
        conn.close()
    else:
        bad.mkdir()
    before = b"" if kind == "directory" else bad.read_bytes()
    args = {"run": ("run", "ok.yaml", "-i", "who=ann"), "runs": ("runs",),
            "status": ("status", "abc")}[command]

    res = podium(*args, "--db", f"sqlite:///{bad}")

    assert res.code == (2 if kind == "directory" else 3), res
    assert_no_traceback(res)
    assert "bad.db" in res.err
    assert res.out == ""
    if kind != "directory":
        assert bad.read_bytes() == before


def test_run_json_on_unusable_database_exits_3_with_an_error_document(podium: Podium) -> None:
    """--json owes stdout one document also when the database is unusable (DESIGN.md)."""
    bad = podium.cwd / "junk.db"
    bad.write_bytes(os.urandom(2048))
    res = podium("run", "ok.yaml", "-i", "who=ann", "--json", "--db", str(bad))

    assert res.code == 3, res
    error = res.json()["error"]
    assert (error["type"], error["exit_code"]) == ("store_error", 3)
    assert "junk.db" in error["message"]
    assert "junk.db" in res.err
    assert_no_traceback(res)


def test_db_flag_wins_over_podium_db_and_default_is_dot_podium_in_cwd(podium: Podium) -> None:
    """--db beats $PODIUM_DB; without either the database is ./.podium/podium.db."""
    junk = podium.cwd / "junk.db"
    junk.write_bytes(os.urandom(1024))
    res = podium("run", "ok.yaml", "-i", "who=ann", "--db", podium.db_url,
                 env={"PODIUM_DB": f"sqlite:///{junk}"})
    assert res.code == 0, res

    res = podium("run", "ok.yaml", "-i", "who=ann", env={"PODIUM_DB": None})
    assert res.code == 0, res
    assert (podium.cwd / ".podium" / "podium.db").is_file()
    listed = podium("runs", "--json", env={"PODIUM_DB": None})
    assert listed.code == 0, listed
    assert len(listed.json()) == 1


# --- podium run --json -------------------------------------------------------------------


def assert_run_document(doc: Any, steps: list[str]) -> None:
    assert isinstance(doc, dict)
    assert RUN_KEYS.issubset(doc), sorted(doc)
    assert set(doc["steps"]) == set(steps)
    for sid, step in doc["steps"].items():
        assert STEP_KEYS.issubset(step), (sid, sorted(step))


def test_run_json_prints_exactly_one_document_with_the_contract_shape(podium: Podium) -> None:
    """--json: the whole stdout is one JSON object (run, steps); no progress lines."""
    res = podium("run", "ok.yaml", "-i", "who=ann", "--json")

    assert res.code == 0, res
    doc = res.json()  # the whole of stdout, or this raises
    assert_run_document(doc, ["hello", "shout"])
    assert doc["run_id"] == last_run_id(podium)
    assert (doc["workflow"], doc["version"], doc["status"]) == ("greet", 2, "succeeded")
    assert doc["output"] == {"greeting": "hi ann"}
    assert doc["error"] is None
    hello, shout = doc["steps"]["hello"], doc["steps"]["shout"]
    assert (hello["status"], hello["attempts"], hello["agent"]) == ("succeeded", 1, "echoer")
    assert hello["output"] == {"step": "hello", "input": {"who": "ann"}}
    assert shout["output"] == {"step": "shout", "input": {"said": "ann"}}
    assert hello["error"] is None
    assert hello["started_at"] <= hello["finished_at"] <= shout["started_at"]
    assert "▶" not in res.out
    assert "started" not in res.out.replace('"started_at"', "")
    assert "error" not in res.err.lower(), res


def test_run_json_of_a_failed_run_exits_1_with_errors_and_skipped_steps(podium: Podium) -> None:
    res = podium("run", "fail.yaml", "--json")

    assert res.code == 1, res
    assert_no_traceback(res)
    doc = res.json()
    assert_run_document(doc, ["prepare", "explode", "cleanup"])
    assert doc["status"] == "failed"
    assert doc["output"] is None
    assert doc["error"]["type"] == "agent_error"
    assert "kaboom on attempt 2" in doc["error"]["message"]
    steps = doc["steps"]
    assert (steps["prepare"]["status"], steps["prepare"]["attempts"]) == ("succeeded", 1)
    explode = steps["explode"]
    assert (explode["status"], explode["attempts"], explode["agent"]) == ("failed", 2, "bomber")
    assert explode["error"]["type"] == "agent_error"
    assert explode["error"]["message"] == "ValueError: kaboom on attempt 2"
    assert (steps["cleanup"]["status"], steps["cleanup"]["attempts"]) == ("skipped", 0)
    assert "Traceback" not in json.dumps(doc)  # tracebacks only with status --verbose


def test_run_json_stays_one_document_when_an_agent_prints(podium: Podium) -> None:
    """An agent's print() goes to stderr under --json; without --json it shows as usual."""
    podium.write("chatty.yaml", """\
        name: chatty
        steps:
          - {id: talk, agent: chatty}
        output: "${{ steps.talk.output.said }}"
        """)
    res = podium("run", "chatty.yaml", "--json")

    assert res.code == 0, res
    assert res.json()["output"] == "hello"
    assert "chatty agent: hello from inside the step" in res.err

    plain = podium("run", "chatty.yaml")
    assert plain.code == 0, plain
    assert "chatty agent: hello from inside the step" in plain.out


# --- -i and --input-file -----------------------------------------------------------------


def run_output(podium: Podium, *args: str) -> Any:
    res = podium("run", "typed.yaml", "--json", *args)
    assert res.code == 0, res
    return res.json()["output"]


def test_input_pairs_are_json_when_valid_json_and_strings_otherwise(podium: Podium) -> None:
    """-i n=5 is 5, tags='["a"]' a list, name=bob a string; '=' after the first is value."""
    out = run_output(
        podium,
        "-i", "n=5",
        "-i", 'tags=["a"]',
        "-i", "name=bob",
        "-i", "ratio=0.5",
        "-i", "flag=true",
        "-i", "nothing=null",
        "-i", 'quoted="5"',
        "-i", 'obj={"k": [1, 2]}',
        "-i", "expr=a=b",
        "-i", "empty=",
        "-i", "spaced=hello world",
    )
    assert out == {
        "n": 5,
        "tags": ["a"],
        "name": "bob",
        "ratio": 0.5,
        "flag": True,
        "nothing": None,
        "quoted": "5",
        "obj": {"k": [1, 2]},
        "expr": "a=b",
        "empty": "",
        "spaced": "hello world",
    }
    assert isinstance(out["n"], int)


def test_input_pair_given_twice_keeps_the_last(podium: Podium) -> None:
    assert run_output(podium, "-i", "n=1", "-i", "n=2") == {"n": 2}


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("in.json", '{"n": 5, "tags": ["a"], "name": "bob", "nested": {"x": null}}'),
        ("in.yaml", "n: 5\ntags: [a]\nname: bob\nnested: {x: null}\n"),
        ("in.yml", "n: 5\ntags:\n  - a\nname: bob\nnested:\n  x: ~\n"),
    ],
)
def test_input_file_takes_a_json_or_yaml_object(podium: Podium, name: str, text: str) -> None:
    podium.write(name, text)
    out = run_output(podium, "--input-file", name)
    assert out == {"n": 5, "tags": ["a"], "name": "bob", "nested": {"x": None}}


def test_input_pair_overrides_one_key_of_the_input_file(podium: Podium) -> None:
    podium.write("in.yaml", "n: 5\nname: bob\n")
    out = run_output(podium, "--input-file", "in.yaml", "-i", "name=alice", "-i", "extra=[1]")
    assert out == {"n": 5, "name": "alice", "extra": [1]}


@pytest.mark.parametrize(
    ("name", "text", "says"),
    [
        ("list.yaml", "- 1\n- 2\n", "object"),
        ("scalar.json", "42", "object"),
        ("broken.json", '{"n": 5,', "invalid JSON"),
        ("missing.yaml", None, "missing.yaml"),
    ],
)
def test_unusable_input_file_exits_2(
    podium: Podium, name: str, text: str | None, says: str
) -> None:
    if text is not None:
        podium.write(name, text)
    res = podium("run", "typed.yaml", "--input-file", name)

    assert res.code == 2, res
    assert_no_traceback(res)
    assert says in res.err
    assert podium.run_ids() == []


# --- progress ----------------------------------------------------------------------------


def test_without_a_tty_progress_is_plain_lines_per_step(podium: Podium) -> None:
    """Started / succeeded / failed attempt / retry / failed / skipped, in order, one per line."""
    res = podium("run", "fail.yaml")

    assert res.code == 1, res
    assert "\x1b[" not in res.out  # no terminal control codes
    lines = lines_of(res.out)
    run_id = last_run_id(podium)
    order = [
        index_matching(lines, rf"^run {run_id} started: doomed v1$"),
        index_matching(lines, r"\bprepare attempt 1 on echoer$"),
        index_matching(lines, r"\bprepare succeeded in \d"),
        index_matching(lines, r"\bexplode attempt 1 on bomber$"),
        index_matching(lines, r"\bexplode attempt 1 failed: agent_error: ValueError: kaboom"),
        index_matching(lines, r"\bexplode retry \(attempt 2\)"),
        index_matching(lines, r"\bexplode attempt 2 on bomber$"),
        index_matching(lines, r"\bexplode attempt 2 failed: agent_error: ValueError: kaboom"),
        index_matching(lines, r"\bexplode failed after 2 attempt"),
        index_matching(lines, r"\bcleanup skipped\b"),
        index_matching(lines, rf"^run {run_id} failed"),
    ]
    assert order == sorted(order), lines


def test_progress_shows_a_retry_that_then_succeeds(podium: Podium) -> None:
    podium.write("flaky.yaml", """\
        name: wobbly
        steps:
          - id: call
            agent: flaky
            input: {fail_times: 2}
            retry: {max_attempts: 3, initial_delay: 10ms, jitter: none}
        output: "${{ steps.call.output.attempt }}"
        """)
    res = podium("run", "flaky.yaml")

    assert res.code == 0, res
    lines = lines_of(res.out)
    order = [
        index_matching(lines, r"\bcall attempt 1 on flake$"),
        index_matching(lines, r"\bcall attempt 1 failed: unavailable: service busy \(attempt 1\)"),
        index_matching(lines, r"\bcall retry \(attempt 2\) in \d"),
        index_matching(lines, r"\bcall attempt 2 failed: unavailable"),
        index_matching(lines, r"\bcall retry \(attempt 3\) in \d"),
        index_matching(lines, r"\bcall attempt 3 on flake$"),
        index_matching(lines, r"\bcall succeeded in \d"),
    ]
    assert order == sorted(order), lines
    assert res.out.rstrip().endswith("output: 3")


def run_on_a_tty(podium: Podium, *args: str) -> tuple[int, str, str]:
    """Run with stdout on a pseudo-terminal; return exit code, terminal output, stderr."""
    master, slave = os.openpty()
    try:
        proc = podium.popen(*args, stdout=slave, env={"COLUMNS": "120"})
    finally:
        os.close(slave)
    chunks = []
    try:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(master)
    code = proc.wait(timeout=45)
    assert proc.stderr is not None
    err = proc.stderr.read()
    proc.stderr.close()
    return code, b"".join(chunks).decode("utf-8", "replace"), err


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_on_a_tty_progress_is_a_live_table_and_json_stays_pure(podium: Podium) -> None:
    """With a terminal: a table of steps; with --json on a terminal still only the JSON."""
    code, out, err = run_on_a_tty(podium, "run", "ok.yaml", "-i", "who=ann")
    assert code == 0, (out, err)
    for word in ("step", "status", "agent", "hello", "shout", "echoer", "succeeded"):
        assert word in out
    assert "succeeded in" in out
    assert "Traceback" not in err

    code, out, err = run_on_a_tty(podium, "run", "ok.yaml", "-i", "who=ann", "--json")
    assert code == 0, (out, err)
    doc = json.loads(out)
    assert doc["status"] == "succeeded"


@pytest.mark.parametrize(
    ("args", "code"),
    [(("run", "ok.yaml", "-i", "who=ann"), 0), (("run", "fail.yaml"), 1),
     (("run", "ok.yaml", "-i", "who=ann", "--json"), 0), (("runs",), 1), (("schema",), 1)],
)
def test_a_reader_that_goes_away_is_no_crash(
    podium: Podium, args: tuple[str, ...], code: int
) -> None:
    """`podium ... | head`: no traceback, no 'internal error'; a run still reports its outcome."""
    proc = podium.popen(*args)
    assert proc.stdout is not None
    proc.stdout.close()  # the reader is gone before podium writes a byte
    _, err = proc.communicate(timeout=45)

    assert "Traceback" not in err
    assert "internal error" not in err
    assert "Exception ignored" not in err
    assert proc.returncode == code, err
    if args[0] == "run":
        assert podium("runs", "--json").json()[0]["status"] == (
            "succeeded" if code == 0 else "failed")


def test_a_terminal_that_cannot_show_the_progress_symbols_is_no_crash(podium: Podium) -> None:
    """An ASCII-only stdout gets '?' for the symbols, not a UnicodeEncodeError."""
    res = podium("run", "ok.yaml", "-i", "who=ann", env={"PYTHONIOENCODING": "ascii"})

    assert res.code == 0, res
    assert_no_traceback(res)
    assert re.search(r"hello attempt 1 on echoer", res.out)
    assert re.search(r"shout succeeded in \d", res.out)
    run_id = last_run_id(podium)
    status = podium("status", run_id, env={"PYTHONIOENCODING": "ascii"})
    assert status.code == 0, status
    assert_no_traceback(status)
    assert status.out.startswith(f"run {run_id}: greet v2 ")


# --- podium validate ---------------------------------------------------------------------


def test_validate_exits_0_when_every_file_is_valid(podium: Podium) -> None:
    # The examples' agents are checked too, so they are named: ./podium.yaml comes first.
    res = podium("validate", "ok.yaml", "fail.yaml")
    examples = podium("validate", EXAMPLES / "dag.yaml", "--agents", EXAMPLES / "podium.yaml")

    assert res.code == 0, res
    assert examples.code == 0, examples
    assert "ok.yaml: ok" in res.out
    assert "fail.yaml: ok" in res.out
    assert "dag.yaml: ok" in examples.out
    assert "error" not in res.err.lower(), res


def test_validate_exits_2_listing_every_problem_of_the_invalid_file(podium: Podium) -> None:
    """One bad file among good ones: exit 2; all its problems (4 distinct kinds) listed."""
    podium.write("worse.yaml", """\
        name: Worse Name
        steps:
          - id: a
            agent: echo
            depends_on: [b]
            retry: {max_attempts: 0}
          - id: b
            agent: echo
            depends_on: [a]
            timeout: soon
        """)
    res = podium("validate", "ok.yaml", "broken.yaml", "worse.yaml")

    assert res.code == 2, res
    assert_no_traceback(res)
    assert "ok.yaml: ok" in res.out
    broken = [p for p in problem_lines(res.err) if p.startswith("broken.yaml")]
    worse = [p for p in problem_lines(res.err) if p.startswith("worse.yaml")]
    assert "broken.yaml: 4 problem" in res.err
    for pattern in (r":5: step 'fetch': timeout: ", r":8: step 'store': depends_on: ",
                    r":9: step 'store': colour: unknown key", r":12: step 'report': input: "):
        assert any(re.search(pattern, p) for p in broken), (pattern, broken)
    for pattern in (r"^worse\.yaml:1: name: 'Worse Name'",
                    r"^worse\.yaml:6: step 'a': retry\.max_attempts: ",
                    r"^worse\.yaml:\d+: step '[ab]': depends_on: dependency cycle",
                    r"^worse\.yaml:10: step 'b': timeout: 'soon'"):
        assert any(re.search(pattern, p) for p in worse), (pattern, worse)
    assert all("(fix: " in p for p in broken + worse)  # every problem says what to change


def test_validate_lists_each_problem_once_when_step_ids_repeat(podium: Podium) -> None:
    podium.write("dup.yaml", """\
        name: dup
        steps:
          - id: a
            agent: echo
            depends_on: [ghost]
          - id: a
            agent: echo
        """)
    res = podium("validate", "dup.yaml")
    assert res.code == 2, res
    problems = problem_lines(res.err)
    assert any(re.search(r"^dup\.yaml:6: step 'a': id: duplicate step id 'a'", p)
               for p in problems), problems
    assert [p for p in problems if "'ghost'" in p] == [
        next(p for p in problems if "'ghost'" in p)]
    assert len(problems) == 2, problems


def test_validate_reports_json_syntax_errors_with_their_line(podium: Podium) -> None:
    podium.write("bad.json", '{"name": "j",\n "steps": [\n  {"id": "a" "agent": "echo"}\n ]}\n')
    res = podium("validate", "bad.json")

    assert res.code == 2, res
    assert re.search(r"bad\.json:3: invalid JSON", res.err), res


def test_validate_json_prints_one_document_per_file(podium: Podium) -> None:
    res = podium("validate", "--json", "ok.yaml", "broken.yaml")

    assert res.code == 2, res
    doc = res.json()
    assert set(doc) == {"ok.yaml", "broken.yaml"}
    assert doc["ok.yaml"]["valid"] is True
    assert doc["ok.yaml"]["workflow"] == "greet"
    bad = doc["broken.yaml"]
    assert bad["valid"] is False
    assert [(p["line"], p["step"], p["field"]) for p in bad["problems"]] == [
        (5, "fetch", "timeout"), (8, "store", "depends_on"), (9, "store", "colour"),
        (12, "report", "input")]
    assert all(p["file"] == "broken.yaml" and p["message"] for p in bad["problems"])

    good = podium("validate", "--json", "ok.yaml")
    assert good.code == 0, good
    assert good.json()["ok.yaml"]["valid"] is True


def test_validate_without_files_is_a_usage_error(podium: Podium) -> None:
    res = podium("validate")
    assert res.code == 2, res
    assert_no_traceback(res)


# --- podium graph ------------------------------------------------------------------------


def mermaid_edges(text: str) -> set[tuple[str, str]]:
    return {(m.group(1), m.group(2))
            for m in re.finditer(r"^\s*(\w+)\s*-->\s*(\w+)\s*$", text, re.M)}


def mermaid_labels(text: str) -> dict[str, str]:
    """Node id -> step id, from node declarations like s_x["x<br/>..."]."""
    return {m.group(1): m.group(2)
            for m in re.finditer(r'^\s*(\w+)\(?\["([\w-]+)', text, re.M)}


def graph_of(podium: Podium, path: str | Path) -> tuple[str, set[tuple[str, str]]]:
    res = podium("graph", path)
    assert res.code == 0, res
    assert res.out.startswith("flowchart")
    labels = mermaid_labels(res.out)
    start = next(m.group(1) for m in re.finditer(r"^\s*(\w+)\(\(input\)\)", res.out, re.M))
    edges = {(labels.get(a, "START" if a == start else a), labels.get(b, b))
             for a, b in mermaid_edges(res.out)}
    return res.out, edges


def test_graph_of_a_dag_has_every_step_and_every_edge(podium: Podium) -> None:
    text, edges = graph_of(podium, EXAMPLES / "dag.yaml")
    for step in ("load", "fraud", "tax", "decide"):
        assert step in text
    assert {("START", "load"), ("load", "fraud"), ("load", "tax"), ("fraud", "decide"),
            ("tax", "decide")} <= edges


def test_graph_of_a_sequential_workflow_is_a_chain(podium: Podium) -> None:
    _, edges = graph_of(podium, EXAMPLES / "sequential.yaml")
    steps = {"fetch", "clean", "summarise"}
    inner = {e for e in edges if e[0] in steps | {"START"} and e[1] in steps}
    assert inner == {("START", "fetch"), ("fetch", "clean"), ("clean", "summarise")}


def test_graph_of_a_parallel_workflow_fans_out_from_the_start(podium: Podium) -> None:
    _, edges = graph_of(podium, EXAMPLES / "parallel.yaml")
    steps = {"weather", "exchange-rate", "timezone", "holidays"}
    inner = {e for e in edges if e[1] in steps}
    assert inner == {("START", s) for s in steps}


def test_graph_keeps_steps_apart_whose_ids_differ_only_by_dash_and_underscore(
    podium: Podium,
) -> None:
    podium.write("twins.yaml", """\
        name: twins
        mode: parallel
        steps:
          - {id: a-b, agent: echo}
          - {id: a_b, agent: echo}
        """)
    res = podium("graph", "twins.yaml")
    assert res.code == 0, res
    labels = mermaid_labels(res.out)
    assert sorted(labels.values()) == ["a-b", "a_b"]
    assert len(labels) == 2


def test_graph_of_an_invalid_file_exits_2(podium: Podium) -> None:
    res = podium("graph", "broken.yaml")
    assert res.code == 2, res
    assert_no_traceback(res)
    assert res.out == ""


# --- podium schema -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def workflow_schema(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    podium = Podium(tmp_path_factory.mktemp("schema"))
    res = podium("schema")
    assert res.code == 0, res
    doc = res.json()
    assert isinstance(doc, dict)
    jsonschema.Draft202012Validator.check_schema(doc)
    return doc


def design_example() -> Any:
    """The annotated workflow of DESIGN.md, if the design page is at hand."""
    for design in (ROOT / "DESIGN.md", ROOT.parent / "shared" / "DESIGN.md"):
        if design.is_file():
            text = design.read_text(encoding="utf-8")
            block = re.search(r"## Workflow file.*?```yaml\n(.*?)```", text, re.S)
            if block:
                return yaml.safe_load(block.group(1))
    return None


@pytest.mark.parametrize("name", ["sequential", "parallel", "dag", "flaky", "failing", "design",
                                  "acceptance"])
def test_schema_accepts_real_workflow_files(workflow_schema: dict[str, Any], name: str) -> None:
    if name == "design":
        data = design_example()
        if data is None:
            pytest.skip("DESIGN.md is not beside the repository")
    elif name == "acceptance":
        from tests.acceptance.podium_cli import WORKFLOWS

        data = yaml.safe_load(textwrap.dedent(WORKFLOWS["fail.yaml"]))
    else:
        data = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text(encoding="utf-8"))
    errors = [e.message for e in jsonschema.Draft202012Validator(workflow_schema).iter_errors(data)]
    assert errors == []


@pytest.mark.parametrize("where", ["top", "step", "retry", "mode"])
def test_schema_rejects_an_unknown_key_or_value(
    workflow_schema: dict[str, Any], where: str
) -> None:
    data = yaml.safe_load((EXAMPLES / "dag.yaml").read_text(encoding="utf-8"))
    if where == "top":
        data["colour"] = "red"
    elif where == "step":
        data["steps"][1]["colour"] = "red"
    elif where == "retry":
        data["defaults"]["retry"]["colour"] = "red"
    else:
        data["mode"] = "zigzag"
    bad = "zigzag" if where == "mode" else "colour"
    errors = list(jsonschema.Draft202012Validator(workflow_schema).iter_errors(data))
    assert any(bad in e.message for e in errors), [e.message for e in errors]


def test_schema_rejects_a_workflow_without_steps(workflow_schema: dict[str, Any]) -> None:
    errors = list(jsonschema.Draft202012Validator(workflow_schema).iter_errors({"name": "x"}))
    assert any("steps" in e.message for e in errors)


# --- podium runs / status ----------------------------------------------------------------


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Podium, dict[str, str]]:
    """One database with five runs: greet ×2 (succeeded), doomed ×2 (failed), typed ×1."""
    podium = make_project(tmp_path_factory.mktemp("history"))
    ids: dict[str, str] = {}
    for key, args, code in [
        ("greet-1", ("ok.yaml", "-i", "who=a"), 0),
        ("doomed-1", ("fail.yaml",), 1),
        ("greet-2", ("ok.yaml", "-i", "who=b"), 0),
        ("doomed-2", ("fail.yaml",), 1),
        ("typed-1", ("typed.yaml", "-i", "n=1"), 0),
    ]:
        res = podium("run", *args, "--json")
        assert res.code == code, res
        ids[key] = res.json()["run_id"]
    return podium, ids


def test_runs_lists_every_run_newest_first(history: tuple[Podium, dict[str, str]]) -> None:
    podium, ids = history
    res = podium("runs")
    assert res.code == 0, res
    rows = lines_of(res.out)
    assert "RUN" in rows[0]
    assert "STATUS" in rows[0]
    order = [ids[k] for k in ("typed-1", "doomed-2", "greet-2", "doomed-1", "greet-1")]
    assert [row.split()[0] for row in rows[1:]] == order
    assert re.search(rf"^{ids['doomed-1']}\s+doomed\s+1\s+failed\b", res.out, re.M)
    assert re.search(rf"^{ids['greet-1']}\s+greet\s+2\s+succeeded\b", res.out, re.M)

    res = podium("runs", "--json")
    assert res.code == 0, res
    doc = res.json()
    assert [r["run_id"] for r in doc] == order
    assert all({"run_id", "workflow", "version", "status"} <= set(r) for r in doc)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--status", "failed"), ["doomed-2", "doomed-1"]),
        (("--workflow", "greet"), ["greet-2", "greet-1"]),
        (("--status", "failed", "--workflow", "doomed", "--limit", "1"), ["doomed-2"]),
        (("--limit", "2"), ["typed-1", "doomed-2"]),
        (("--status", "succeeded", "--workflow", "doomed"), []),
        (("--workflow", "no-such-workflow"), []),
    ],
)
def test_runs_json_filters_by_status_workflow_and_limit(
    history: tuple[Podium, dict[str, str]], args: tuple[str, ...], expected: list[str]
) -> None:
    podium, ids = history
    res = podium("runs", "--json", *args)
    assert res.code == 0, res
    doc = res.json()
    assert [r["run_id"] for r in doc] == [ids[k] for k in expected]
    if "--status" in args:
        want = args[args.index("--status") + 1]
        assert all(r["status"] == want for r in doc)
    failed = [r for r in doc if r["status"] == "failed"]
    assert all(r["error"]["type"] == "agent_error" for r in failed)


@pytest.mark.parametrize("args", [("--status", "exploded"), ("--limit", "0"), ("--limit", "x")])
def test_runs_rejects_bad_filters_with_exit_2(
    history: tuple[Podium, dict[str, str]], args: tuple[str, ...]
) -> None:
    podium, _ = history
    res = podium("runs", *args)
    assert res.code == 2, res
    assert_no_traceback(res)


def test_runs_on_an_empty_database(podium: Podium) -> None:
    res = podium("runs")
    assert res.code == 0, res
    assert res.out.strip() == "no runs"
    res = podium("runs", "--json")
    assert res.code == 0, res
    assert res.json() == []


def test_status_shows_steps_in_workflow_order_with_errors_and_timeline(
    history: tuple[Podium, dict[str, str]],
) -> None:
    podium, ids = history
    run_id = ids["doomed-1"]
    res = podium("status", run_id)

    assert res.code == 0, res
    assert res.out.startswith(f"run {run_id}: doomed v1")
    assert "failed" in lines_of(res.out)[0]
    assert "error: agent_error:" in res.out
    rows = [line.split() for line in lines_of(res.out)
            if line.split()[0] in ("prepare", "explode", "cleanup")]
    assert [r[:3] for r in rows] == [["prepare", "succeeded", "1"], ["explode", "failed", "2"],
                                     ["cleanup", "skipped", "0"]]
    assert "ValueError: kaboom on attempt 2" in res.out
    assert "timeline:" in res.out
    timeline = res.out[res.out.index("timeline:"):]
    for kind in ("run_started", "step_started", "step_attempt_failed", "step_retry_scheduled",
                 "step_failed", "step_skipped", "run_finished"):
        assert kind in timeline
    assert "Traceback" not in res.out  # only with --verbose


def test_status_json_is_the_run_document_plus_its_timeline(
    history: tuple[Podium, dict[str, str]],
) -> None:
    podium, ids = history
    res = podium("status", ids["doomed-2"], "--json")

    assert res.code == 0, res
    doc = res.json()
    assert_run_document(doc, ["prepare", "explode", "cleanup"])
    assert (doc["run_id"], doc["workflow"], doc["status"]) == (ids["doomed-2"], "doomed", "failed")
    assert list(doc["steps"]) == ["prepare", "explode", "cleanup"]
    assert doc["steps"]["explode"]["attempts"] == 2
    timeline = doc["timeline"]
    assert isinstance(timeline, list)
    types = [e["type"] for e in timeline]
    assert types[0] == "run_started"
    assert types[-1] == "run_finished"
    failed = [e for e in timeline if e["type"] == "step_attempt_failed"]
    assert [(e["step_id"], e["attempt"]) for e in failed] == [("explode", 1), ("explode", 2)]
    assert all("ts" in e for e in timeline)
    assert "Traceback" not in res.out


def test_status_verbose_shows_the_failing_agents_traceback(
    history: tuple[Podium, dict[str, str]],
) -> None:
    """The traceback is kept in the record: status --verbose shows the agent's own frames."""
    podium, ids = history
    res = podium("status", ids["doomed-1"], "--verbose")

    assert res.code == 0, res
    assert "Traceback (most recent call last):" in res.out
    assert "acc_agents.py" in res.out
    assert "in _explode" in res.out
    assert "ValueError: kaboom on attempt 2" in res.out
    assert res.out.count("Traceback (most recent call last):") == 1  # not repeated

    res = podium("status", ids["doomed-1"], "--verbose", "--json")
    assert res.code == 0, res
    tb = res.json()["steps"]["explode"]["error"]["traceback"]
    assert "in _explode" in tb
    assert "ValueError: kaboom on attempt 2" in tb


def test_status_accepts_a_unique_prefix_of_the_run_id(
    history: tuple[Podium, dict[str, str]],
) -> None:
    podium, ids = history
    run_id = ids["greet-2"]
    prefix = unique_prefix(run_id, list(ids.values()))
    assert len(prefix) < len(run_id)

    res = podium("status", prefix, "--json")
    assert res.code == 0, res
    assert res.json()["run_id"] == run_id
    assert res.json()["output"] == {"greeting": "hi b"}

    text = podium("status", prefix)
    assert text.code == 0, text
    assert text.out.startswith(f"run {run_id}: greet v2")


def test_status_of_an_unknown_or_ambiguous_run_id_exits_2(
    history: tuple[Podium, dict[str, str]],
) -> None:
    podium, ids = history
    res = podium("status", "zzzz-no-such-run")
    assert res.code == 2, res
    assert_no_traceback(res)
    assert "zzzz-no-such-run" in res.err

    res = podium("status", "zzzz-no-such-run", "--json")
    assert res.code == 2, res
    assert res.json()["error"]["type"] == "run_not_found"

    first, *rest = ids.values()
    common = first
    while common and not all(r.startswith(common) for r in rest):
        common = common[:-1]
    assert common, "run ids made within a minute share a prefix"
    res = podium("status", common)
    assert res.code == 2, res
    assert_no_traceback(res)
    assert "ambiguous" in res.err


# --- resume, cancel, rollback ------------------------------------------------------------


RESUMABLE = """\
    name: resumable
    steps:
      - {id: one, agent: tally}
      - {id: two, agent: tally, depends_on: [one], input: {gate: gate.closed}}
      - {id: three, agent: tally, depends_on: [two]}
    output: "${{ steps.three.output.done }}"
    """


def test_resume_redrives_a_failed_run_without_rerunning_succeeded_steps(
    podium: Podium,
) -> None:
    podium.write("resumable.yaml", RESUMABLE)
    (podium.cwd / "gate.closed").touch()
    first = podium("run", "resumable.yaml")
    assert first.code == 1, first
    run_id = last_run_id(podium)

    (podium.cwd / "gate.closed").unlink()
    res = podium("resume", run_id[:-2])  # the agents file is remembered: no --agents

    assert res.code == 0, res
    assert f"run {run_id} resumed" in res.out
    assert f"run {run_id} succeeded" in res.out
    calls = (podium.cwd / "calls.log").read_text(encoding="utf-8").split()
    assert calls == ["one", "two", "two", "three"]
    doc = podium("status", run_id, "--json").json()
    assert doc["status"] == "succeeded"
    assert doc["output"] == "three"
    assert doc["steps"]["two"]["attempts"] == 2


def test_rollback_compensates_succeeded_steps_newest_first(podium: Podium) -> None:
    podium.write("undoable.yaml", """\
        name: undoable
        steps:
          - id: book
            agent: tally
            compensate: {agent: tally, input: {name: unbook}}
          - id: pay
            agent: tally
            depends_on: [book]
            compensate: {agent: tally, input: {name: refund}}
        """)
    assert podium("run", "undoable.yaml").code == 0
    run_id = last_run_id(podium)

    res = podium("rollback", run_id, "--json")

    assert res.code == 0, res
    doc = res.json()
    assert doc["status"] == "rolled_back"
    assert {s["status"] for s in doc["steps"].values()} == {"compensated"}
    calls = (podium.cwd / "calls.log").read_text(encoding="utf-8").split()
    assert calls == ["book", "pay", "refund", "unbook"]

    again = podium("rollback", run_id)
    assert again.code == 2, again
    assert_no_traceback(again)


def start_slow_run(podium: Podium) -> tuple[subprocess.Popen[str], str]:
    """Start slow.yaml in the background; return once its first step has started."""
    proc = podium.popen("run", "slow.yaml", "-i", "seconds=25")
    assert proc.stdout is not None
    first = proc.stdout.readline()
    match = re.match(r"run (\S+) started", first)
    assert match, first
    while "nap attempt 1" not in (line := proc.stdout.readline()):
        assert line, "the run ended before its first step started"
    return proc, match.group(1)


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"podium did not stop:\n{out}\n{err}") from None
    return proc.returncode, out, err


def test_ctrl_c_cancels_the_run_gracefully(podium: Podium) -> None:
    proc, run_id = start_slow_run(podium)
    proc.send_signal(signal.SIGINT)
    code, out, err = finish(proc)

    assert code == 1, (out, err)
    assert "Traceback" not in err
    assert "stopping" in err
    assert f"run {run_id} cancelled" in out
    doc = podium("status", run_id, "--json").json()
    assert doc["status"] == "cancelled"
    assert doc["steps"]["nap"]["status"] == "cancelled"
    assert doc["steps"]["after"]["status"] == "skipped"


def test_cancel_stops_a_run_executing_in_another_process(podium: Podium) -> None:
    proc, run_id = start_slow_run(podium)
    try:
        res = podium("cancel", run_id, "--json")
        assert res.code == 0, res
        assert res.json()["cancel_requested"] is True
    finally:
        code, out, err = finish(proc)

    assert code == 1, (out, err)
    assert f"run {run_id} cancelled" in out
    assert podium("status", run_id, "--json").json()["status"] == "cancelled"

    again = podium("cancel", run_id)
    assert again.code == 0, again
    assert "already cancelled" in again.out


# --- podium demo -------------------------------------------------------------------------


def test_demo_runs_end_to_end_and_says_where_the_report_is(podium: Podium) -> None:
    report = podium.cwd / "out" / "sales.md"
    res = podium("demo", "--report", "out/sales.md")

    assert res.code == 0, res
    assert_no_traceback(res)
    assert re.search(rf"report is at {re.escape(str(report))}\s*$", res.out), res
    assert report.is_file()
    assert report.read_text(encoding="utf-8").startswith("#")
    runs = podium("runs", "--json").json()
    assert sorted((r["workflow"], r["status"]) for r in runs) == [
        ("podium-demo", "succeeded"), ("podium-demo-announce", "rolled_back"),
        ("podium-demo-publish", "rolled_back")]


def test_demo_writes_its_report_in_the_current_folder_by_default(podium: Podium) -> None:
    res = podium("demo")
    assert res.code == 0, res
    report = podium.cwd / "podium-demo-report.md"
    assert report.is_file()
    assert str(report) in res.out


def test_demo_json_prints_one_run_document(podium: Podium) -> None:
    res = podium("demo", "--json", "--report", "r.md")

    assert res.code == 0, res
    doc = res.json()
    assert_run_document(doc, ["collect", "process", "validate", "report", "forecast", "notify",
                              "deliver", "deliver[0]", "deliver[1]", "deliver[2]",
                              "flag_issues", "all_clear"])
    assert doc["status"] == "succeeded"
    assert (podium.cwd / "r.md").is_file()


# --- help --------------------------------------------------------------------------------


def listed_commands(help_text: str) -> set[str]:
    section = help_text.split("Commands:", 1)[1]
    return {m.group(1) for m in re.finditer(r"^  ([a-z][\w-]*)\b", section, re.M)}


def test_help_lists_every_command(podium: Podium) -> None:
    import typer.main

    from podium.cli import app

    res = podium("--help")
    assert res.code == 0, res
    listed = listed_commands(res.out)
    commands: dict[str, Any] = getattr(typer.main.get_command(app), "commands", {})
    registered = {name for name, cmd in commands.items() if not getattr(cmd, "hidden", False)}
    assert registered
    assert listed == registered
    assert CONTRACT_COMMANDS.issubset(listed)

    bare = podium()
    assert bare.code in (0, 2), bare  # no command: usage, not a crash
    assert "Commands:" in bare.out + bare.err


@pytest.mark.parametrize("command", sorted(CONTRACT_COMMANDS))
def test_every_command_has_help(podium: Podium, command: str) -> None:
    res = podium(command, "--help")
    assert res.code == 0, res
    assert "Usage:" in res.out
    if command not in ("graph", "schema"):
        assert "--json" in res.out


def test_unknown_command_and_unknown_option_are_usage_errors(podium: Podium) -> None:
    for args in (("frobnicate",), ("run", "ok.yaml", "--frobnicate")):
        res = podium(*args)
        assert res.code == 2, res
        assert_no_traceback(res)


def test_python_dash_m_podium_is_the_podium_command() -> None:
    res = subprocess.run([sys.executable, "-m", "podium", "--help"], capture_output=True,
                         text=True, check=False, timeout=45)
    assert res.returncode == 0
    assert "Usage:" in res.stdout
