"""Promises of the ``podium`` command that a new user relies on, run for real.

Each test starts the real CLI in a subprocess in a scratch folder (see
podium_cli.py): ``--json`` owes stdout exactly one document whatever happens,
errors included. No test asserts on speed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

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
        (("runs", "--limit", "0"), "--limit"),
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
            "def broken(url):\n"
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
