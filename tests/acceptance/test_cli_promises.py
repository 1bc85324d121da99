"""Promises of the ``podium`` command that a new user relies on, run for real.

Each test starts the real CLI in a subprocess in a scratch folder (see
podium_cli.py): ``--json`` owes stdout exactly one document whatever happens,
errors included. No test asserts on speed.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
import time
from typing import Any

import pytest

from podium.definition import parse_duration
from tests.acceptance.podium_cli import Podium, Result, assert_no_traceback


def error_of(res: Result, kind: str, code: int) -> dict[str, Any]:
    """The ``{"error": ...}`` document: the whole of stdout, with the human text on stderr."""
    assert res.code == code, res
    assert_no_traceback(res)
    doc = res.json()  # the whole stdout parses: exactly one document
    assert set(doc) == {"error"}, doc
    error = doc["error"]
    assert error["type"] == kind, res
    assert error["exit_code"] == code
    assert error["message"], res
    assert "error" in res.err.lower(), res  # the message for people is still there
    return dict(error)


# --- --json: one document for every outcome ---------------------------------------------


@pytest.mark.parametrize(
    ("args", "kind"),
    [
        (("status", "zzzz-no-such-run"), "run_not_found"),
        (("resume", "zzzz-no-such-run"), "run_not_found"),
        (("rollback", "zzzz-no-such-run"), "run_not_found"),
        (("cancel", "zzzz-no-such-run"), "run_not_found"),
        (("run", "needs-count.yaml"), "input_error"),
        (("run", "needs-count.yaml", "-i", "count=many"), "input_error"),
        (("run", "typed.yaml", "-i", "no-equals-sign"), "usage"),
        (("run", "ok.yaml", "--input-file", "missing.json"), "usage"),
        (("run", "ok.yaml", "--agents", "no-such-agents.yaml"), "definition_error"),
        (("runs", "--status", "happy"), "usage"),
        (("failures", "--by", "colour"), "usage"),
        (("failures", "--since", "a while"), "usage"),
        (("alerts", "ack", "no-such:alert"), "alert_not_found"),
    ],
)
def test_json_failures_are_one_error_document_with_type_message_and_exit_code(
    podium: Podium, args: tuple[str, ...], kind: str
) -> None:
    """Unknown runs, invalid input and bad values: exit 2, one `{"error"}` on stdout."""
    error_of(podium(*args, "--json"), kind, 2)


def test_json_missing_or_invalid_workflow_lists_each_problem(podium: Podium) -> None:
    """A DefinitionError's problems are in the document, with file, line, step and field."""
    missing = error_of(podium("run", "nope.yaml", "--json"), "definition_error", 2)
    assert "not found" in missing["message"]
    assert missing["problems"][0]["file"] == "nope.yaml"

    broken = error_of(podium("run", "broken.yaml", "--json"), "definition_error", 2)
    where = {(p["line"], p["step"], p["field"]) for p in broken["problems"]}
    assert (5, "fetch", "timeout") in where
    assert (9, "store", "colour") in where
    assert all(p["file"] == "broken.yaml" for p in broken["problems"])


@pytest.mark.parametrize(
    "args",
    [("run", "ok.yaml", "-i", "who=ann"), ("runs",), ("status", "abc"), ("alerts",),
     ("failures",), ("resume", "--all"), ("rollback", "abc"), ("cancel", "abc")],
)
def test_json_on_an_unusable_database_is_a_store_error_exiting_3(
    podium: Podium, args: tuple[str, ...]
) -> None:
    """A --db that is not a Podium database: exit 3, `store_error`, the file named."""
    junk = podium.cwd / "junk.db"
    junk.write_bytes(os.urandom(4096))
    error = error_of(podium(*args, "--json", "--db", f"sqlite:///{junk}"), "store_error", 3)
    assert "junk.db" in error["message"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("run",), "Missing argument"),
        (("resume", "--all", "--limit", "1"), "--limit"),  # resume has no --limit
        (("status", "abc", "--frobnicate"), "--frobnicate"),
        (("frobnicate",), "frobnicate"),
        (("alerts", "--frobnicate"), "--frobnicate"),
        (("runs", "--limit", "many"), "--limit"),
    ],
)
def test_json_usage_errors_found_by_the_parser_are_one_document_too(
    podium: Podium, args: tuple[str, ...], says: str
) -> None:
    """typer/click reject the command line before any command runs: still one document."""
    error = error_of(podium(*args, "--json"), "usage", 2)
    assert says in error["message"]
    assert "--help" in error["message"]


def test_without_json_a_usage_error_prints_nothing_on_stdout(podium: Podium) -> None:
    res = podium("runs", "--limit", "0")
    assert res.code == 2, res
    assert res.out == ""
    assert "--limit" in res.err


def test_json_internal_error_is_a_document_exiting_3_without_traceback(podium: Podium) -> None:
    """A bug (any exception Podium did not mean to raise) is `internal`, exit 3.

    The fault is injected into the real CLI process (the store factory raises),
    as no real input should reach such a bug.
    """
    code = ("import sys, podium.store.factory as f\n"
            "def broken(url, **_kw):\n"
            "    raise RuntimeError('injected fault')\n"
            "f.open_store = broken\n"
            "sys.argv = ['podium', *sys.argv[1:]]\n"
            "from podium.cli import main\n"
            "main()\n")
    proc = subprocess.run([sys.executable, "-c", code, "runs", "--json"], cwd=podium.cwd,
                          env=podium.env, capture_output=True, text=True, encoding="utf-8",
                          timeout=45, check=False)
    res = Result(("runs", "--json"), proc.returncode, proc.stdout, proc.stderr)
    error = error_of(res, "internal", 3)
    assert "RuntimeError: injected fault" in error["message"]


# --- --json timestamps: RFC 3339 UTC with milliseconds ----------------------------------

RFC3339_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def assert_time(value: Any) -> dt.datetime:
    """An RFC 3339 UTC string with milliseconds, of a moment during this test."""
    assert isinstance(value, str), value
    assert RFC3339_MS.match(value), value
    when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert abs(when.timestamp() - time.time()) < 3600, value  # today, not 1970 or ms as s
    return when


def test_json_timestamps_are_rfc3339_utc_strings_in_every_command(podium: Podium) -> None:
    """run, status (timeline ts and a retry's due time), runs, failures, alerts, ack,
    resume and rollback all print `2026-12-02T04:25:12.123Z`, never epoch seconds."""
    podium.write("podium-alerts.yaml", """\
        rules:
          - {name: boom-streak, kind: consecutive_failures, count: 1, scope: agent,
             agent: bomber}
        """)
    podium.write("undo.yaml", """\
        name: undo
        steps:
          - {id: book, agent: echo, compensate: {agent: echo}}
        """)
    failed = podium("run", "fail.yaml", "--json")
    assert failed.code == 1, failed
    doc = failed.json()
    created = assert_time(doc["created_at"])
    assert assert_time(doc["started_at"]) >= created
    assert assert_time(doc["finished_at"]) >= created
    assert_time(doc["steps"]["explode"]["started_at"])
    assert doc["steps"]["cleanup"]["started_at"] is None  # skipped: never started

    status = podium("status", doc["run_id"], "--json").json()
    assert status["created_at"] == doc["created_at"]
    for event in status["timeline"]:
        assert_time(event["ts"])
    retries = [e for e in status["timeline"] if e["type"] == "step_retry_scheduled"]
    assert retries, status["timeline"]
    assert assert_time(retries[0]["at"]) >= assert_time(retries[0]["ts"])

    for row in podium("runs", "--json").json():
        for key in ("created_at", "started_at", "finished_at"):
            assert_time(row[key])
    for failure in podium("failures", "--json").json()["recent"]:
        assert_time(failure["ts"])
    alerts = podium("alerts", "--json").json()
    assert alerts, "the boom-streak alert fired"
    assert_time(alerts[0]["fired_at"])
    acked = podium("alerts", "ack", alerts[0]["key"], "--json").json()
    assert_time(acked["alert"]["acked_at"])

    resumed = podium("resume", doc["run_id"], "--json")
    assert resumed.code == 1, resumed
    assert_time(resumed.json()["finished_at"])
    assert podium("run", "undo.yaml").code == 0
    rolled = podium("rollback", podium.run_ids()[0], "--json")
    assert rolled.code == 0, rolled
    assert_time(rolled.json()["finished_at"])


def test_human_tables_keep_local_time(podium: Podium) -> None:
    """Without --json the tables show local wall-clock time, as people read it."""
    assert podium("run", "ok.yaml", "-i", "who=ann").code == 0
    res = podium("runs", env={"TZ": "UTC"})
    assert res.code == 0, res
    assert re.search(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", res.out), res


# --- rollback with nothing to undo, and a resume's own time ------------------------------


def test_rollback_with_nothing_to_compensate_says_so_and_leaves_the_status(
    podium: Podium,
) -> None:
    """No succeeded step has a `compensate`: exit 0, a clear message, nothing written."""
    assert podium("run", "ok.yaml", "-i", "who=ann").code == 0
    assert podium("run", "fail.yaml").code == 1
    failed_id, ok_id = podium.run_ids()
    before = {rid: podium("status", rid, "--json").json() for rid in (ok_id, failed_id)}

    res = podium("rollback", ok_id)
    assert res.code == 0, res
    assert_no_traceback(res)
    assert "nothing to compensate" in res.out
    assert "stays succeeded" in res.out

    res = podium("rollback", failed_id, "--json")
    assert res.code == 0, res
    doc = res.json()
    assert doc["nothing_to_compensate"] is True
    assert "nothing to compensate" in doc["message"]
    assert doc["status"] == "failed"

    for rid, old in before.items():
        now = podium("status", rid, "--json").json()
        assert now == old  # same status, same steps, not one event more
        assert "rollback_started" not in {e["type"] for e in now["timeline"]}


def test_rollback_that_compensates_says_nothing_to_compensate_false(podium: Podium) -> None:
    podium.write("undo.yaml", """\
        name: undo
        steps:
          - {id: book, agent: tally, compensate: {agent: tally, input: {name: unbook}}}
          - {id: look, agent: echo, depends_on: [book]}
        """)
    assert podium("run", "undo.yaml").code == 0
    res = podium("rollback", podium.run_ids()[0], "--json")
    assert res.code == 0, res
    doc = res.json()
    assert (doc["status"], doc["nothing_to_compensate"]) == ("rolled_back", False)
    assert doc["steps"]["book"]["status"] == "compensated"
    assert doc["steps"]["look"]["status"] == "succeeded"  # it had nothing to undo
    assert (podium.cwd / "calls.log").read_text(encoding="utf-8").split() == ["book", "unbook"]


def test_resume_summary_gives_this_executions_time_not_the_time_since_creation(
    podium: Podium,
) -> None:
    """The first execution naps 1 s, then a second passes: the resume, which only
    re-runs the last step, reports its own time, at least those 2 s below the span
    from the run's creation to its end (what it printed before)."""
    podium.write("nap-then-gate.yaml", """\
        name: nap-then-gate
        steps:
          - {id: nap, agent: slow, input: {seconds: 1}}
          - {id: gated, agent: tally, depends_on: [nap], input: {gate: gate.closed}}
        """)
    (podium.cwd / "gate.closed").touch()
    assert podium("run", "nap-then-gate.yaml").code == 1
    run_id = podium.run_ids()[0]
    (podium.cwd / "gate.closed").unlink()
    time.sleep(1.0)

    res = podium("resume", run_id)

    assert res.code == 0, res
    took = re.search(rf"run {run_id} succeeded in (\S+) \(this resume\)", res.out)
    assert took is not None, res
    doc = podium("status", run_id, "--json").json()
    span = (dt.datetime.fromisoformat(doc["finished_at"].replace("Z", "+00:00"))
            - dt.datetime.fromisoformat(doc["created_at"].replace("Z", "+00:00")))
    assert parse_duration(took.group(1)) <= span.total_seconds() - 2.0, (took, span)


# --- validate checks agents as run would -------------------------------------------------

UNPROVIDED = """\
    name: unprovided
    steps:
      - id: fetch
        agent: echo
      - id: translate
        agent: translation
        depends_on: [fetch]
      - id: pinned
        agent: "@no-such-agent"
      - id: booked
        agent: echo
        compensate: {agent: unbooking}
    """


def test_validate_reports_unprovided_agents_with_file_line_step_and_field(
    podium: Podium,
) -> None:
    """A capability, an @agent-id and a compensate agent nobody provides: each on its line,
    in the words `podium run` uses; exit 2."""
    podium.write("unprovided.yaml", UNPROVIDED)

    res = podium("validate", "unprovided.yaml", "ok.yaml")

    assert res.code == 2, res
    assert_no_traceback(res)
    assert "ok.yaml: ok" in res.out
    lines = [line.strip() for line in res.err.splitlines() if line.startswith("  ")]
    assert any(re.match(r"unprovided\.yaml:6: step 'translate': agent: .*capability "
                        r"'translation'", p) for p in lines), res.err
    assert any(re.match(r"unprovided\.yaml:9: step 'pinned': agent: .*agent id "
                        r"'no-such-agent'", p) for p in lines), res.err
    assert any(re.match(r"unprovided\.yaml:12: step 'booked': compensate\.agent: "
                        r".*'unbooking'", p) for p in lines), res.err
    assert len(lines) == 3, res.err

    ran = podium("run", "unprovided.yaml")  # run refuses the same steps, on the same lines
    assert ran.code == 2, ran
    assert sorted(p.strip() for p in ran.err.splitlines() if p.startswith("  ")) == sorted(lines)

    doc = podium("validate", "unprovided.yaml", "--json").json()["unprovided.yaml"]
    assert doc["valid"] is False
    assert [(p["line"], p["step"], p["field"]) for p in doc["problems"]] == [
        (6, "translate", "agent"), (9, "pinned", "agent"), (12, "booked", "compensate.agent")]


def test_validate_finds_agents_files_as_run_does(podium: Podium) -> None:
    """--agents, $PODIUM_AGENTS, ./podium.yaml and podium.yaml beside the workflow."""
    podium.write("elsewhere/needs.yaml", """\
        name: needs
        steps: [{id: t, agent: translation}]
        """)
    podium.write("elsewhere/agents.py", "def translate(task):\n    return 'hola'\n")
    podium.write("providers.yaml", """\
        agents: [{id: tr, capabilities: [translation], python: "elsewhere.agents:translate"}]
        """)
    podium.write("elsewhere/podium.yaml", """\
        agents: [{id: tr, capabilities: [translation], python: "agents:translate"}]
        """)
    # ./podium.yaml (no translation) comes before the one beside the workflow, as for run.
    assert podium("validate", "elsewhere/needs.yaml").code == 2
    assert podium("validate", "elsewhere/needs.yaml", "--agents", "providers.yaml").code == 0
    assert podium("validate", "elsewhere/needs.yaml",
                  env={"PODIUM_AGENTS": "providers.yaml"}).code == 0
    (podium.cwd / "podium.yaml").unlink()
    beside = podium("validate", "elsewhere/needs.yaml", "--json")
    assert beside.code == 0, beside
    doc = beside.json()["elsewhere/needs.yaml"]
    assert doc["capabilities_checked"] is True
    assert doc["agents_file"].endswith("elsewhere/podium.yaml")


def test_validate_without_an_agents_file_says_capabilities_were_not_checked(
    podium: Podium,
) -> None:
    (podium.cwd / "podium.yaml").unlink()
    res = podium("validate", "unknown-cap.yaml")
    assert res.code == 0, res
    notes = [line for line in res.err.splitlines() if "not checked" in line]
    assert len(notes) == 1, res.err
    assert "no agents file" in notes[0]
    assert "--agents" in notes[0]

    doc = podium("validate", "unknown-cap.yaml", "--json").json()["unknown-cap.yaml"]
    assert (doc["valid"], doc["capabilities_checked"]) == (True, False)
    assert "not checked" in doc["note"]


def test_validate_counts_agents_from_entry_points_and_agent_decorators(podium: Podium) -> None:
    """Capabilities that an installed package's podium.agents entry point or an @agent
    function (in a module the agents file imports) provides are not reported."""
    plugins = podium.cwd / "plugins"
    podium.write("plugins/plug_agents.py", "def translate(task):\n    return 'hola'\n")
    podium.write("plugins/plug-0.1.dist-info/METADATA",
                 "Metadata-Version: 2.1\nName: plug\nVersion: 0.1\n")
    podium.write("plugins/plug-0.1.dist-info/entry_points.txt",
                 "[podium.agents]\ntranslation = plug_agents:translate\n")
    podium.write("deco_agents.py", """\
        from podium import agent


        def plain(task):
            return 1


        @agent("summarise")
        def summarise(task):
            return "short"
        """)
    podium.write("podium.yaml", """\
        agents: [{id: echoer, capabilities: [echo], python: "deco_agents:plain"}]
        """)
    podium.write("both.yaml", """\
        name: both
        steps:
          - {id: t, agent: translation}
          - {id: s, agent: summarise}
        """)

    without = podium("validate", "both.yaml")
    assert without.code == 2, without
    assert "'translation'" in without.err
    assert "'summarise'" not in without.err  # the decorator provides it

    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(plugins),
                                                       os.environ.get("PYTHONPATH")]))}
    res = podium("validate", "both.yaml", env=env)
    assert res.code == 0, res
    ran = podium("run", "both.yaml", env=env)
    assert ran.code == 0, ran


# --- the default database is found like git finds .git -----------------------------------


def test_a_run_made_in_a_subfolder_is_stored_in_the_nearest_podium_folder(
    podium: Podium,
) -> None:
    """`.podium/` at the project root: a run made from `examples/` is stored there, and
    `podium status RUN` from the root finds it. $PODIUM_DB and --db still win."""
    assert not [p for p in podium.cwd.resolve().parents if (p / ".podium").is_dir()]
    no_env = {"PODIUM_DB": None}
    root = podium.cwd
    (root / ".podium").mkdir()
    examples = Podium(root / "examples")
    examples.env = dict(podium.env)
    podium.write("examples/acc_agents.py", (root / "acc_agents.py").read_text())
    podium.write("examples/podium.yaml", (root / "podium.yaml").read_text())
    podium.write("examples/ok.yaml", (root / "ok.yaml").read_text())

    made = examples("run", "ok.yaml", "-i", "who=ann", "--json", env=no_env)
    assert made.code == 0, made
    run_id = made.json()["run_id"]
    assert not (root / "examples" / ".podium").exists()
    assert (root / ".podium" / "podium.db").is_file()

    found = podium("status", run_id, "--json", env=no_env)
    assert found.code == 0, found
    assert found.json()["status"] == "succeeded"

    elsewhere = examples("run", "ok.yaml", "-i", "who=bob", env={"PODIUM_DB": podium.db_url})
    assert elsewhere.code == 0, elsewhere
    assert [r["run_id"] for r in podium("runs", "--json", env=no_env).json()] == [run_id]
    flag = examples("runs", "--json", "--db", podium.db_url, env=no_env)
    assert len(flag.json()) == 1
    assert flag.json()[0]["run_id"] != run_id


def test_without_a_podium_folder_above_one_is_made_in_the_current_folder(
    podium: Podium,
) -> None:
    assert not [p for p in podium.cwd.resolve().parents if (p / ".podium").is_dir()]
    (podium.cwd / "sub").mkdir()
    sub = Podium(podium.cwd / "sub")
    sub.env = dict(podium.env)
    res = sub("runs", "--json", env={"PODIUM_DB": None})
    assert res.code == 0, res
    assert not (podium.cwd / "sub" / ".podium").exists()  # a reader makes nothing
    res = sub("run", podium.cwd / "ok.yaml", "-i", "who=sub", "--agents",
              podium.cwd / "podium.yaml", "--json", env={"PODIUM_DB": None})
    assert res.code == 0, res
    assert (podium.cwd / "sub" / ".podium" / "podium.db").is_file()
    assert not (podium.cwd / ".podium").exists()


# --- help and version --------------------------------------------------------------------


def command_paths() -> list[tuple[str, ...]]:
    """Every command and subcommand of `podium`, as typed."""
    import typer.main

    from podium.cli import app

    paths: list[tuple[str, ...]] = []

    def walk(command: Any, path: tuple[str, ...]) -> None:
        paths.append(path)
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            walk(sub, (*path, name))

    walk(typer.main.get_command(app), ())
    return paths


@pytest.mark.parametrize("path", command_paths(), ids=lambda p: " ".join(p) or "podium")
def test_help_shows_placeholders_people_type(podium: Podium, path: tuple[str, ...]) -> None:
    """FILE, RUN, KEY=VALUE, N, URL...: no `<list[str]>`, `<int range>`, `<path>` or `{file}`."""
    res = podium(*path, "--help")
    assert res.code == 0, res
    assert not re.search(r"<[a-z][\w\[\], ]*>", res.out), res.out
    assert not re.search(r"\{[a-z_]+\}", res.out), res.out
    usage = res.out.splitlines()[0]
    arguments = r"( [A-Z:.=\[\]]+| COMMAND \[ARGS\]\.\.\.)*"
    assert re.fullmatch(r"Usage: \S.* \[OPTIONS\]" + arguments, usage), usage


def test_version_prints_the_installed_version(podium: Podium) -> None:
    from importlib.metadata import version

    res = podium("--version")
    assert res.code == 0, res
    assert res.out.strip() == f"podium {version('podium')}"


# --- small things a new user hit ---------------------------------------------------------


def test_status_verbose_says_when_an_error_has_no_traceback(podium: Podium) -> None:
    """A typed error (an agent's Unavailable, a timeout) has no traceback: --verbose says
    so under the step, while a raised exception still shows its traceback."""
    podium.write("busy.yaml", """\
        name: busy
        mode: parallel
        on_failure: continue
        steps:
          - {id: busy, agent: flaky, input: {fail_times: 5}}
          - {id: raises, agent: boom}
        """)
    assert podium("run", "busy.yaml").code == 1
    run_id = podium.run_ids()[0]

    res = podium("status", run_id, "--verbose")

    assert res.code == 0, res
    lines = res.out.splitlines()
    busy = next(i for i, line in enumerate(lines) if line.startswith("busy "))
    assert "no traceback recorded: 'unavailable' errors" in lines[busy + 1], res.out
    raises = next(i for i, line in enumerate(lines) if line.startswith("raises "))
    assert lines[raises + 1] == "Traceback (most recent call last):", res.out
    quiet = podium("status", run_id)
    assert "no traceback" not in quiet.out


def test_status_prints_durations_rounded_by_one_helper(podium: Podium) -> None:
    """Step durations, the timeline's offsets and its duration/delay fields are rounded
    (`0.17ms`, `10ms`, `1.5s`), never a float's full digits."""
    assert podium("run", "fail.yaml").code == 1
    res = podium("status", podium.run_ids()[0])
    assert res.code == 0, res
    timeline = res.out.split("timeline:", 1)[1]
    assert not re.search(r"\d\.\d{3,}", res.out), res.out
    assert "duration_s=" not in timeline
    assert "delay_s=" not in timeline
    unit = r"\d+(\.\d{1,2})?(ms|s)|\d+m(\d+(\.\d)?s)?"
    assert re.search(rf"step_succeeded .* duration=({unit})\b", timeline), timeline
    assert re.search(rf"step_retry_scheduled .* delay=10ms at=\+({unit})\b", timeline), timeline
    for line in timeline.strip("\n").splitlines():
        assert re.match(rf"  \+ *({unit}) [a-z_]+", line), line
    runs = podium("runs").out.splitlines()[1]
    assert re.search(rf" ({unit})$", runs), runs


def test_human_output_prints_unicode_as_typed_and_json_stays_valid(podium: Podium) -> None:
    podium.write("weather.py", "def now(task):\n    return {'temp': '21°C', 'city': 'Zürich'}\n")
    podium.write("podium.yaml", (podium.cwd / "podium.yaml").read_text()
                 + '  - {id: wx, capabilities: [weather], python: "weather:now"}\n')
    podium.write("weather.yaml", "name: weather\nsteps: [{id: now, agent: weather}]\n")

    res = podium("run", "weather.yaml")
    assert res.code == 0, res
    assert '"temp": "21°C"' in res.out
    assert "Zürich" in res.out
    assert "\\u00" not in res.out
    doc = podium("run", "weather.yaml", "--json")
    assert doc.json()["output"] == {"now": {"temp": "21°C", "city": "Zürich"}}


def test_counts_agree_with_their_nouns(podium: Podium) -> None:
    """'1 step', '1 attempt', '1 problem', never '1 steps' or 'attempt(s)'."""
    podium.write("once.yaml", "name: once\nsteps: [{id: only, agent: boom}]\n")
    podium.write("one-bad.yaml", "name: one-bad\nsteps: [{id: a, agent: echo, colour: red}]\n")
    checked = podium("validate", "gc.yaml", "one-bad.yaml")
    assert "gc.yaml: ok (gc v1, 1 step, dag)" in checked.out, checked
    assert "one-bad.yaml: 1 problem:" in checked.err, checked
    ran = podium("run", "once.yaml")
    assert "only failed after 1 attempt\n" in ran.out, ran
    assert "error: agent_error: step 'only' failed after 1 attempt:" in ran.out, ran
    invalid = podium("run", "one-bad.yaml")
    assert "error: 1 problem found:" in invalid.err, invalid
    failures = podium("failures")
    assert failures.out.startswith("last 1h: 1 attempt, 1 failed"), failures
    for res in (checked, ran, invalid, failures):
        assert not re.search(r"\b1 [a-z]+s\b|\(s\)", res.out + res.err), res


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        (("ver=1.10",), {"ver": "1.10"}),  # a string in the schema: the text as typed
        (("ver=007", "n=1.10"), {"ver": "007", "n": 1.1}),  # a number where it says number
        (("ver=true", "maybe=null"), {"ver": "true", "maybe": None}),
        (("maybe=2",), {"maybe": "2"}),
        (('ver="quoted"',), {"ver": "quoted"}),  # JSON's own string spelling still works
        (("ver=1.10", "ver=2"), {"ver": "2"}),  # the last -i of a key wins
        (("other=1.10",), {"other": 1.1}),  # not in the schema: JSON when valid, as before
    ],
)
def test_input_pairs_keep_the_text_where_input_schema_says_string(
    podium: Podium, pairs: tuple[str, ...], expected: dict[str, Any]
) -> None:
    podium.write("versioned.yaml", """\
        name: versioned
        input_schema:
          type: object
          properties:
            ver: {type: string}
            maybe: {type: [string, "null"]}
            n: {type: number}
        steps:
          - {id: look, agent: echo, input: "${{ input }}"}
        output: "${{ input }}"
        """)
    args = [a for pair in pairs for a in ("-i", pair)]
    res = podium("run", "versioned.yaml", *args, "--json")
    assert res.code == 0, res
    assert res.json()["output"] == expected
