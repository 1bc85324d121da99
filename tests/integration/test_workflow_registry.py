"""Workflows registered in the database (``podium workflow register``), called by name
from a parent in another folder: real ``python -m podium`` processes on a real SQLite
file (and once on a real PostgreSQL server).

A registered sub-workflow is embedded in the parent's definition when the run starts,
so a parent killed mid-child and resumed after a newer version was registered goes on
with the one it started with. Pinned versions, the refusal of other content under a
registered version, the unknown-name error, list/show and validate with and without a
database are checked from the outside: exit codes, --json documents, messages.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.podium_proc import AGENTS_FILE, Sandbox, wait_for


def child(version: int | str, *steps: str) -> dict[str, Any]:
    return {"name": "child", "version": version, "mode": "sequential",
            "steps": [{"id": s, "agent": "hang-once" if s == "hang" else "record",
                       **({"input": {"hang_s": 60}} if s == "hang" else {})} for s in steps],
            "output": {"last": f"${{{{ steps.{steps[-1]}.output.step }}}}"}}


def parent(**call: Any) -> dict[str, Any]:
    return {"name": "parent", "mode": "sequential", "steps": [
        {"id": "first", "agent": "record"},
        {"id": "call", "workflow": "child", **call},
        {"id": "last", "agent": "record", "input": "${{ steps.call.output }}"}],
        "output": "${{ steps.last.output }}"}


def lib_file(sb: Sandbox, doc: dict[str, Any], name: str = "child") -> Path:
    """A file in lib/, away from the parent: only the registry links them."""
    path = sb.root / "lib" / f"{name}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def register(sb: Sandbox, doc: dict[str, Any], *, db: str | None = None) -> dict[str, Any]:
    out = sb.podium("workflow", "register", str(lib_file(sb, doc)), "--json", db=db)
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


def test_a_parent_runs_a_registered_child_and_a_resume_keeps_the_version_it_started_with(
        sandbox: Sandbox) -> None:
    sb = sandbox
    got = register(sb, child(1, "c1", "hang"))
    assert (got["name"], got["version"], got["new"]) == ("child", "1", True)
    assert len(got["digest"]) == 64
    wf = sb.workflow("parent", parent())
    proc = sb.spawn("run", str(wf), agents=True)
    assert wait_for(lambda: any(x.step_id == "hang" for x in sb.executions()), 30)
    sb.kill(proc)
    (run,) = [r for r in sb.run_ids() if "." not in r]

    # A newer version registered meanwhile, and the file gone: neither changes the run.
    assert register(sb, child(2, "c1", "other"))["new"] is True
    (sb.root / "lib" / "child.yaml").unlink()
    done = sb.podium("resume", run, "--json", agents=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "succeeded"
    calls = Counter((x.run_id, x.step_id) for x in sb.executions())
    assert calls == Counter({(run, "first"): 1, (f"{run}.call", "c1"): 1,
                             (f"{run}.call", "hang"): 2, (run, "last"): 1})
    kid = sb.run_row(f"{run}.call")
    assert (kid["status"], kid["version"]) == ("succeeded", "1")
    assert json.loads(kid["output"]) == {"last": "hang"}
    assert sb.steps(run)["call"]["output"] == json.loads(kid["output"])
    kept = json.loads(sb.run_row(run)["definition"])["workflows"]["child"]
    assert [s["id"] for s in kept["steps"]] == ["c1", "hang"]

    # A new run takes the newest registered version.
    again = sb.podium("run", str(wf), "--json", agents=True)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["output"]["input"] == {"last": "other"}


def test_a_step_pins_a_registered_version(sandbox: Sandbox) -> None:
    sb = sandbox
    register(sb, child(1, "one"))
    register(sb, child("2", "two"))
    for version, step in ((1, "one"), ("2", "two"), (2, "two")):
        wf = sb.workflow("parent", parent(version=version))
        out = sb.podium("run", str(wf), "--json", agents=True)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["output"]["input"] == {"last": step}


def test_other_content_under_a_registered_version_is_refused_and_the_same_is_a_no_op(
        sandbox: Sandbox) -> None:
    sb = sandbox
    register(sb, child(1, "one"))
    same = sb.podium("workflow", "register", str(lib_file(sb, child(1, "one"))))
    assert same.returncode == 0, same.stderr
    assert same.stdout == "child 1\n"
    assert "registered already, with the same content: nothing changed" in same.stderr
    other = sb.podium("workflow", "register", str(lib_file(sb, child(1, "changed"))),
                      "--json")
    assert other.returncode == 2
    error = json.loads(other.stdout)["error"]
    assert error["type"] == "config_error"
    assert "'child' version 1 is registered already with other content" in error["message"]
    assert "bump version:" in other.stderr
    assert "Traceback" not in other.stderr
    show = json.loads(sb.podium("workflow", "show", "child", "--json").stdout)
    assert [s["id"] for s in show["definition"]["steps"]] == ["one"]


def test_a_file_with_problems_is_not_registered(sandbox: Sandbox) -> None:
    sb = sandbox
    bad = child(1, "one")
    bad["steps"][0]["depends_on"] = ["nowhere"]
    bad["steps"].append({"id": "x", "agent": "record", "retyr": 1})
    out = sb.podium("workflow", "register", str(lib_file(sb, bad)), "--json")
    assert out.returncode == 2
    problems = json.loads(out.stdout)["error"]["problems"]
    # Both at once (an unknown dependency, a misspelt key), each with its line.
    assert [(p["step"], p["field"]) for p in problems] == [("one", "depends_on"),
                                                            ("x", "retyr")]
    assert all(p["line"] for p in problems)
    listed = sb.podium("workflow", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []


def test_an_unknown_sub_workflow_says_where_it_looked_and_exits_2(sandbox: Sandbox) -> None:
    sb = sandbox
    wf = sb.workflow("parent", parent())
    out = sb.podium("run", str(wf), agents=True)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert (f"parent.yaml:7: step 'call': workflow: unknown sub-workflow 'child': not under"
            f" workflows:, no child.yaml (.yml, .json) in {sb.root}, not registered in the"
            f" database sqlite:///{sb.db}") in out.stderr
    assert "(fix: register it (podium workflow register child.yaml)" in out.stderr
    assert sb.run_ids() == []

    register(sb, child(1, "one"))
    wf = sb.workflow("parent", parent(version=3))
    out = sb.podium("submit", str(wf), "--json")
    assert out.returncode == 2
    [p] = json.loads(out.stdout)["error"]["problems"]
    assert (p["step"], p["field"], p["line"]) == ("call", "workflow", 7)
    assert p["message"].startswith("unknown sub-workflow 'child' version 3:")
    assert "its newest registered version there is 1" in p["message"]
    assert "a file with version: 3" in p["hint"]


def test_list_and_show(sandbox: Sandbox) -> None:
    sb = sandbox
    empty = sb.podium("workflow", "list")
    assert (empty.returncode, empty.stdout) == (0, "no registered workflows (register one:"
                                                   " podium workflow register FILE)\n")
    register(sb, child(1, "one"))
    register(sb, child(2, "two"))
    register(sb, {"name": "alone", "steps": [{"id": "a", "agent": "record"}]})
    listed = json.loads(sb.podium("workflow", "list", "--json").stdout)
    assert [(w["name"], [v["version"] for v in w["versions"]]) for w in listed] == [
        ("alone", ["1"]), ("child", ["2", "1"])]
    assert set(listed[1]["versions"][0]) == {"name", "version", "digest", "registered_at"}
    assert listed[1]["versions"][0]["registered_at"].endswith("Z")  # RFC 3339, as elsewhere
    text = sb.podium("workflow", "list").stdout
    assert "child" in text
    assert "2, 1" in text

    shown = sb.podium("workflow", "show", "child", "--version", "1")
    assert shown.returncode == 0, shown.stderr
    assert yaml.safe_load(shown.stdout) == child(1, "one")
    newest = json.loads(sb.podium("workflow", "show", "child", "--json").stdout)
    assert (newest["version"], newest["definition"]) == ("2", child(2, "two"))
    missing = sb.podium("workflow", "show", "child", "--version", "7")
    assert missing.returncode == 2
    assert "no registered workflow 'child' version 7 (fix: one of its versions: 2, 1)" in (
        missing.stderr)
    nobody = sb.podium("workflow", "show", "nobody", "--json")
    assert nobody.returncode == 2
    assert json.loads(nobody.stdout)["error"]["type"] == "usage"


def test_validate_looks_in_the_database_given_or_the_projects_and_never_makes_one(
        sandbox: Sandbox, tmp_path: Path) -> None:
    sb = sandbox
    wf = sb.workflow("parent", parent())
    project = tmp_path / "project"
    project.mkdir()

    def validate(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "podium", "validate", str(wf), *args,
                               "--agents", str(AGENTS_FILE)], cwd=project, env=sb.env(),
                              capture_output=True, text=True, timeout=60, check=False)

    none = validate()
    assert none.returncode == 2
    assert (f"and no database to look in (none at {project}/.podium/podium.db; give --db URL)"
            in none.stderr)
    assert not (project / ".podium").exists()
    missing = validate("--db", f"sqlite:///{project}/nothing.db")
    assert missing.returncode == 2
    assert f"not registered in the database sqlite:///{project}/nothing.db" in missing.stderr
    assert list(project.iterdir()) == []

    register(sb, child(1, "one"))
    given = validate("--db", sb.url, "--json")
    assert given.returncode == 0, given.stderr
    assert json.loads(given.stdout)[str(wf)]["valid"] is True
    # The project's own database, found from the folder, as every command finds it.
    (project / ".podium").mkdir()
    sb.db.rename(project / ".podium" / "podium.db")
    found = validate()
    assert found.returncode == 0, found.stderr


def test_a_definition_over_the_size_limit_is_not_registered(
        sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    sb = sandbox
    # Each file is under the limit; the parent with its child embedded is not.
    lib_file(sb, {**child(1, "one"), "description": "c" * 1500})
    big = lib_file(sb, {**parent(), "description": "p" * 1500}, name="parent")
    monkeypatch.setenv("PODIUM_MAX_FILE_BYTES", "2KiB")
    out = sb.podium("workflow", "register", str(big))
    assert out.returncode == 2
    assert "over the limit of 2 KiB" in out.stderr
    monkeypatch.delenv("PODIUM_MAX_FILE_BYTES")
    assert json.loads(sb.podium("workflow", "list", "--json").stdout) == []


def test_register_and_run_on_postgresql(sandbox: Sandbox, pg_url: str) -> None:
    sb = sandbox
    assert register(sb, child(1, "one"), db=pg_url)["new"] is True
    assert register(sb, child(1, "one"), db=pg_url)["new"] is False
    wf = sb.workflow("parent", parent(version=1))
    out = sb.podium("run", str(wf), "--json", agents=True, db=pg_url)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["output"]["input"] == {"last": "one"}
    listed = json.loads(sb.podium("workflow", "list", "--json", db=pg_url).stdout)
    assert [w["name"] for w in listed] == ["child"]
    refused = sb.podium("workflow", "register", str(lib_file(sb, child(1, "two"))), db=pg_url)
    assert refused.returncode == 2
    assert "bump version:" in refused.stderr
