"""Python workflows through the real CLI: ``podium run/validate/graph/submit/export MODULE:ATTR``.

Each test starts ``python -m podium`` in a subprocess (the child inherits
PYTHONPATH), with a real SQLite file where a run is recorded, and checks the
exit code, the documents printed and what a user reads on stderr: a bad
reference exits 2 with the reference and the fix, never a traceback.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from podium import load_workflow, workflow_from_dict

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

EXPECTED_DECISION = {
    "order_id": "A-1001",
    "approved": True,
    "charge": 158.65,
    "reason": "fraud score 0.05 under the limit 0.5",
}


def podium(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "podium", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=60, check=False)


def no_traceback(out: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in out.stderr + out.stdout, out.stderr


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of examples/ to work in: runs and imports leave nothing in the repository."""
    folder = tmp_path / "project"
    shutil.copytree(EXAMPLES, folder, ignore=shutil.ignore_patterns("__pycache__", ".podium"))
    return folder


def test_run_a_python_file_reference_records_the_run(project: Path, tmp_path: Path) -> None:
    """From elsewhere, path/to/file.py:wf; the agents file beside the module is found."""
    db = tmp_path / "runs.db"
    out = podium("run", str(project / "python_workflow.py") + ":wf", "--db", f"sqlite:///{db}",
                 "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["status"] == "succeeded"
    assert doc["workflow"] == "order-review-py"
    assert doc["output"] == {"decision": EXPECTED_DECISION,
                             "summary": "order A-1001: charge 158.65"}
    assert {k: s["status"] for k, s in doc["steps"].items()} == dict.fromkeys(
        ("load", "fraud", "tax", "decide"), "succeeded")
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        (status, definition), = conn.execute(
            "SELECT status, definition FROM runs WHERE run_id = ?", (doc["run_id"],)).fetchall()
    assert status == "succeeded"
    # The run stored the same definition a file would have given it.
    stored = workflow_from_dict(json.loads(definition))
    assert stored.step("decide").depends_on == ["load", "fraud", "tax"]


def test_run_a_module_reference_from_its_folder(project: Path, tmp_path: Path) -> None:
    out = podium("run", "python_workflow:wf", "-i", "order_id=A-1001",
                 "--db", f"sqlite:///{tmp_path / 'runs.db'}", cwd=project)
    assert out.returncode == 0, out.stderr
    assert "succeeded" in out.stdout
    assert '"charge": 158.65' in out.stdout


def test_export_then_validate_gives_the_same_definition(project: Path) -> None:
    for fmt, name in (("yaml", "exported.yaml"), ("json", "exported.json")):
        out = podium("export", "python_workflow:wf", "--format", fmt, cwd=project)
        assert out.returncode == 0, out.stderr
        (project / name).write_text(out.stdout)
        check = podium("validate", name, "python_workflow:wf", "--json", cwd=project)
        assert check.returncode == 0, check.stdout + check.stderr
        results = json.loads(check.stdout)
        assert results[name]["valid"]
        assert results["python_workflow:wf"]["valid"]
        assert results[name]["capabilities_checked"] is True
    sys.path.insert(0, str(project))
    try:
        import importlib

        module = importlib.import_module("python_workflow")
        built = module.wf.build()
    finally:
        sys.path.remove(str(project))
        for name in ("python_workflow", "agents"):
            sys.modules.pop(name, None)
    assert load_workflow(project / "exported.yaml") == built
    assert load_workflow(project / "exported.json") == built
    # The same shape as the hand-written dag.yaml, up to its name and the Python extras.
    dag = yaml.safe_load((project / "dag.yaml").read_text())
    assert [s["id"] for s in built.to_dict()["steps"]] == [s["id"] for s in dag["steps"]]


def test_graph_and_validate_accept_python_references(project: Path) -> None:
    out = podium("graph", "python_workflow.py", cwd=project)  # the file's one workflow
    assert out.returncode == 0, out.stderr
    assert "s0 --> s1" in out.stdout
    assert "s2 --> s3" in out.stdout
    out = podium("validate", "python_workflow:wf", cwd=project)
    assert out.returncode == 0, out.stderr
    assert "python_workflow:wf: ok (order-review-py v1, 4 steps, dag)" in out.stdout


def test_submit_a_module_reference_stores_a_pending_run(project: Path, tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    out = podium("submit", "python_workflow:wf", "--db", f"sqlite:///{db}", "--json",
                 cwd=project)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert (doc["workflow"], doc["status"]) == ("order-review-py", "pending")


@pytest.mark.parametrize(("ref", "says"), [
    ("nosuch:wf", "no module named 'nosuch' in the current folder or on sys.path"),
    ("python_workflow:nope", "module 'python_workflow' has no attribute 'nope'"
                             " (workflows in it: wf)"),
    ("python_workflow:Flow", "'Flow' is a type, not a workflow"),
    ("missing.py:wf", "no file missing.py"),
    ("agents.py", "defines no workflow at module level"),
])
@pytest.mark.parametrize("command", ["run", "validate", "graph", "export", "submit"])
def test_a_bad_reference_exits_2_naming_it_and_the_fix(
    project: Path, tmp_path: Path, command: str, ref: str, says: str
) -> None:
    extra = ["--db", f"sqlite:///{tmp_path / 'x.db'}"] if command in ("run", "submit") else []
    out = podium(command, ref, *extra, cwd=project)
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"{ref}: {says}" in out.stderr
    assert "fix:" in out.stderr or "say which" in out.stderr
    no_traceback(out)


def test_json_error_document_for_a_bad_reference(project: Path, tmp_path: Path) -> None:
    out = podium("run", "python_workflow:nope", "--json",
                 "--db", f"sqlite:///{tmp_path / 'x.db'}", cwd=project)
    assert out.returncode == 2
    doc = json.loads(out.stdout)
    assert doc["error"]["type"] == "usage"
    assert "python_workflow:nope" in doc["error"]["message"]


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def test_an_invalid_flow_lists_every_problem_with_its_python_line(project: Path) -> None:
    write(project, "broken_flow.py", """
        from podium import Flow

        wf = Flow("broken")
        a = wf.step("a", "load-order", retyr=3)
        b = wf.step("b", "no such agent!", input=a.output)
        c = wf.step("a", "decide", timeout="soon")
        """)
    for command in ("validate", "run", "export"):
        out = podium(command, "broken_flow:wf", cwd=project)
        assert out.returncode == 2, out.stderr
        no_traceback(out)
        err = out.stderr
        assert "broken_flow.py:4: step 'a': retyr: unknown key 'retyr'" in err
        assert "broken_flow.py:5: step 'b': agent: 'no such agent!' is not allowed here" in err
        assert "broken_flow.py:6: step 'a': id: duplicate step id 'a'" in err
        assert "broken_flow.py:6: step 'a': timeout:" in err


def test_a_capability_nobody_provides_points_at_the_step_line(
    project: Path, tmp_path: Path
) -> None:
    write(project, "unknown_cap.py", """
        from podium import Flow

        wf = Flow("unknown-cap")
        a = wf.step("load", "load-order", input={"order_id": "A-1001"})
        b = wf.step("print", "printing", input=a.output)
        """)
    out = podium("validate", "unknown_cap:wf", "--json", cwd=project)
    assert out.returncode == 2
    (problem,) = json.loads(out.stdout)["unknown_cap:wf"]["problems"]
    assert (problem["file"], problem["line"], problem["step"], problem["field"]) == (
        "unknown_cap.py", 5, "print", "agent")
    out = podium("run", "unknown_cap:wf", "--db", f"sqlite:///{tmp_path / 'r.db'}",
                 cwd=project)
    assert out.returncode == 2
    assert "unknown_cap.py:5: step 'print': agent:" in out.stderr
    no_traceback(out)


def test_a_module_that_fails_to_import_is_reported_with_where(project: Path) -> None:
    write(project, "raises_flow.py", """
        from podium import Flow

        wf = Flow("raises")
        raise RuntimeError("no config for this environment")
        """)
    write(project, "syntax_flow.py", "wf = (\n")
    out = podium("validate", "raises_flow:wf", cwd=project)
    assert out.returncode == 2
    assert ("raises_flow:wf: importing 'raises_flow' failed: RuntimeError: no config for this"
            " environment (at ") in out.stderr
    assert "raises_flow.py:4)" in out.stderr
    no_traceback(out)
    out = podium("export", "syntax_flow.py:wf", cwd=project)
    assert out.returncode == 2
    assert "syntax error" in out.stderr
    assert "syntax_flow.py:1" in out.stderr
    no_traceback(out)


def test_many_workflows_in_a_file_need_the_attribute(project: Path) -> None:
    write(project, "two_flows.py", """
        from podium import Flow, define

        first = Flow("first")
        first.step("a", "load-order")

        @define("second")
        def second(wf: Flow) -> None:
            wf.step("a", "load-order")
        """)
    out = podium("validate", "two_flows.py", cwd=project)
    assert out.returncode == 2
    assert "two_flows.py: defines 2 workflows (first, second); say which: two_flows.py:first" in (
        out.stderr)
    out = podium("export", "two_flows.py:second", "--format", "json", cwd=project)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"name": "second", "version": 1, "mode": "dag",
                                      "steps": [{"id": "a", "agent": "load-order"}]}


def test_module_prints_do_not_spoil_the_exported_document(project: Path) -> None:
    write(project, "chatty_flow.py", """
        from podium import Flow

        print("importing chatty_flow")
        wf = Flow("chatty")
        wf.step("a", "load-order")
        """)
    out = podium("export", "chatty_flow:wf", cwd=project)
    assert out.returncode == 0, out.stderr
    assert "importing chatty_flow" in out.stderr
    data: Any = yaml.safe_load(out.stdout)
    assert data["name"] == "chatty"


def test_schedule_add_takes_a_python_reference(project: Path, tmp_path: Path) -> None:
    db = tmp_path / "sched.db"
    out = podium("schedule", "add", "python_workflow:wf", "--every", "1h", "--db",
                 f"sqlite:///{db}", "--json", cwd=project)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["workflow"] == "order-review-py"
    out = podium("schedule", "add", "python_workflow:nope", "--every", "1h", "--db",
                 f"sqlite:///{db}", cwd=project)
    assert out.returncode == 2
    assert "python_workflow:nope: module 'python_workflow' has no attribute 'nope'" in out.stderr
    no_traceback(out)
