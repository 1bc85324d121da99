"""Run the A2A TCK (a2aproject/a2a-tck) against an A2A server and tabulate each test.

Starts the server under test (SUT) from a command with ``{port}`` in it, waits
for its agent card at ``/.well-known/agent-card.json``, runs one TCK category
(``mandatory`` by default) over JSON-RPC, prints one line per test (passed,
failed, skipped, with the reason), and stops the SUT. ``--json`` prints the
same as one JSON document.

The TCK speaks protocol 1.0 JSON-RPC but sends no ``A2A-Version`` header, and
a2a-sdk 1.x takes a request without one for 0.3 and refuses it (-32009). The
TCK's own setting for extra headers is the environment variable
``A2A_AUTH_HEADERS`` (a JSON object, read by ``tck/config.py``
``get_auth_headers`` and added to every request its transport clients and its
raw JSON-RPC tests make); this script sets it to ``{"A2A-Version": "1.0"}``
(more with ``--header``).

Getting the TCK (its source is in the project's mirror of the public repository;
the machine reaches PyPI only)::

    mkdir -p /work/tck
    git -C /work/.mirror/a2aproject+a2a-tck/repo archive HEAD | tar -x -C /work/tck
    python3 -m venv /work/tck/.venv
    /work/tck/.venv/bin/pip install -r /work/tck/requirements.txt \\
        python-dotenv grpcio-status proto-plus pyOpenSSL aiohttp

Running it (from the repository root, in the project's venv with the ``a2a`` extra)::

    # the baseline: a plain a2a-sdk agent (bench/a2a_plain_sut.py)
    python bench/a2a_tck.py --tck /work/tck --plain
    python bench/a2a_tck.py --tck /work/tck --plain --json > /tmp/tck-baseline.json

    # another SUT: any command that serves A2A JSON-RPC at / on {port}
    python bench/a2a_tck.py --tck /work/tck \\
        --sut "podium a2a serve examples/flow.yaml --port {port}" \\
        --compare /tmp/tck-baseline.json

``--compare BASELINE`` (a ``--json`` output) lists the tests that pass there but
not here, and exits 1 only for those; without it the exit code is 1 on any
failed test. ``--plain-args "--no-streaming"`` passes options to the plain
SUT; ``--category capabilities`` runs that category instead; ``--url URL``
runs against a server already running (no ``--sut``). The SUT's output goes to
``--sut-log`` (a temporary file by default, shown on a failed start).
``--baseline`` runs the plain SUT first and compares with it in one go.

The plain agent's mandatory result (TCK snapshot 410ba92): 71 passed, 40
skipped, 5 failed. The 5 fail for any a2a-sdk 1.3 agent: tasks/list answers
``pageSize`` as asked, not as returned (test_list_tasks_empty_when_none_exist,
test_last_page_detection, test_default_page_size), and takes an unknown
``status`` (test_invalid_status_error); and the TCK's own
test_push_notification_not_supported_error_32003_enhanced calls its helper
wrongly (TypeError). test_default_page_size passes once the SUT holds over
50 tasks, e.g. on a second run against one server (``--url``).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CARD_PATH = "/.well-known/agent-card.json"

# As run_tck.py selects them (--transports jsonrpc adds mandatory_jsonrpc).
CATEGORIES: dict[str, tuple[str, str | None]] = {
    "mandatory": ("tests/mandatory/", "mandatory or mandatory_protocol or mandatory_jsonrpc"),
    "capabilities": ("tests/optional/capabilities/", None),
    "quality": ("tests/optional/quality/", None),
    "features": ("tests/optional/features/", None),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_card(base: str, proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the SUT exited with {proc.returncode} before serving its card")
        try:
            with urllib.request.urlopen(base + CARD_PATH, timeout=2) as r:  # noqa: S310
                if r.status == 200:
                    json.loads(r.read())
                    return
        except (OSError, urllib.error.URLError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"no agent card at {base}{CARD_PATH} after {timeout:g} s")
        time.sleep(0.2)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the SUT's process group (its own session), then SIGKILL after 10 s."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _skip_reason(longrepr: Any) -> str:
    """pytest-json-report keeps a skip as the repr of (path, line, 'Skipped: why')."""
    text = str(longrepr or "")
    with contextlib.suppress(ValueError, SyntaxError):
        parsed = ast.literal_eval(text)
        if isinstance(parsed, tuple) and parsed:
            text = str(parsed[-1])
    return text.removeprefix("Skipped: ")


def results(report: dict[str, Any]) -> list[dict[str, str]]:
    """One row per test: its id, outcome (passed/failed/skipped/error...) and why."""
    rows = []
    for t in report.get("tests", []):
        outcome = t.get("outcome", "?")
        reason = ""
        for phase in ("setup", "call", "teardown"):
            p = t.get(phase) or {}
            if p.get("outcome") == "skipped":
                reason = _skip_reason(p.get("longrepr"))
                break
            if p.get("outcome") == "failed":
                crash = p.get("crash") or {}
                reason = crash.get("message") or str(p.get("longrepr", ""))[-500:]
                if phase != "call":
                    outcome = "error"
                break
        rows.append({"test": t["nodeid"].removeprefix("tests/"), "outcome": outcome,
                     "reason": " ".join(reason.split())[:400]})
    return rows


def run_tck(tck: Path, python: str, url: str, category: str, headers: dict[str, str],
            extra: list[str]) -> dict[str, Any]:
    path, markers = CATEGORIES[category]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.json"
        cmd = [python, "-m", "pytest", path, f"--sut-url={url}", "--test-scope=all",
               "--transports", "jsonrpc", "--transport-strategy", "agent_preferred",
               "-q", "--tb=line", "-p", "no:cacheprovider",
               "--json-report", f"--json-report-file={out}"]
        if markers:
            cmd += ["-m", markers]
        env = dict(os.environ)
        env["A2A_AUTH_HEADERS"] = json.dumps(headers)
        started = time.monotonic()
        done = subprocess.run([*cmd, *extra], cwd=tck, env=env, capture_output=True,
                              text=True, check=False)
        seconds = round(time.monotonic() - started, 1)
        if not out.exists():
            sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
            raise RuntimeError(f"the TCK wrote no report (pytest exit {done.returncode})")
        report = json.loads(out.read_text())
    rows = results(report)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    return {"category": category, "url": url, "seconds": seconds, "counts": counts,
            "tests": rows}


def serve_and_run(a: argparse.Namespace, tck: Path, python: str, headers: dict[str, str],
                  command: Callable[[int], list[str]] | None) -> dict[str, Any]:
    """Start the SUT (``command(port)``), wait for its card, run the TCK, stop the SUT.

    With no command, the SUT is the one already running at ``--url``.
    """
    if command is None:
        url = a.url.rstrip("/")
        wait_for_card(url, None, a.start_timeout)
        return run_tck(tck, python, url, a.category, headers, a.pytest_args)
    port = a.port or free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = command(port)
    log_path = a.sut_log or Path(tempfile.mkstemp(prefix="a2a-sut-", suffix=".log")[1])
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            try:
                wait_for_card(url, proc, a.start_timeout)
            except RuntimeError:
                log.flush()
                sys.stderr.write(log_path.read_text(errors="replace")[-3000:])
                raise
            doc = run_tck(tck, python, url, a.category, headers, a.pytest_args)
        finally:
            stop(proc)
    doc["sut_log"] = str(log_path)
    return doc


def regressions(doc: dict[str, Any], baseline: dict[str, Any]) -> list[dict[str, str]]:
    """Tests passed in the baseline that did not pass here."""
    here = {r["test"]: r for r in doc["tests"]}
    missing = {"outcome": "absent", "reason": "not run"}
    return [{"test": t, **{k: here.get(t, missing)[k] for k in ("outcome", "reason")}}
            for t in (r["test"] for r in baseline["tests"] if r["outcome"] == "passed")
            if here.get(t, missing)["outcome"] != "passed"]


def print_table(doc: dict[str, Any]) -> None:
    order = {"failed": 0, "error": 1, "passed": 2, "skipped": 3}
    for r in sorted(doc["tests"], key=lambda r: (order.get(r["outcome"], 4), r["test"])):
        line = f"{r['outcome'].upper():8} {r['test']}"
        print(line + (f"\n         -> {r['reason']}" if r["reason"] else ""))
    counts = ", ".join(f"{n} {k}" for k, n in sorted(doc["counts"].items()))
    print(f"\n{doc['category']} against {doc['url']}: {counts} ({doc['seconds']} s)")
    if "regressions" in doc:
        print(f"{len(doc['regressions'])} passed in the baseline but not here:")
        for r in doc["regressions"]:
            print(f"  {r['outcome']:8} {r['test']}: {r['reason']}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[1:]))
    p.add_argument("--tck", type=Path, default=Path(os.environ.get("A2A_TCK_DIR", "/work/tck")),
                   help="the extracted TCK (default $A2A_TCK_DIR or /work/tck)")
    p.add_argument("--tck-python", help="the TCK venv's python (default TCK/.venv/bin/python)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--sut", help="command starting the SUT; {port} is replaced by the port")
    which.add_argument("--plain", action="store_true",
                     help="run bench/a2a_plain_sut.py (a plain a2a-sdk agent) as the SUT")
    which.add_argument("--url", help="a SUT already running at URL (not started nor stopped)")
    p.add_argument("--plain-args", default="", help="options for the plain SUT")
    p.add_argument("--port", type=int, help="port for the SUT (default: a free one)")
    p.add_argument("--category", choices=sorted(CATEGORIES), default="mandatory")
    p.add_argument("--header", action="append", default=[], metavar="NAME:VALUE",
                   help="another header for every request (A2A-Version: 1.0 is always sent)")
    p.add_argument("--start-timeout", type=float, default=60.0,
                   help="seconds to wait for the agent card")
    p.add_argument("--sut-log", type=Path, help="file for the SUT's output")
    p.add_argument("--compare", type=Path, help="a baseline --json output to compare with")
    p.add_argument("--baseline", action="store_true",
                   help="first run the plain SUT for the baseline, then compare with it")
    p.add_argument("--baseline-args", default="", help="options for the baseline's plain SUT")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("pytest_args", nargs="*", help="more pytest arguments, after --")
    a = p.parse_args()

    tck = a.tck.resolve()
    python = a.tck_python or str(tck / ".venv" / "bin" / "python")
    if not (tck / "run_tck.py").exists() or not Path(python).exists():
        p.error(f"no TCK with a venv at {tck} (see the docstring: how to extract and set it up)")
    headers = {"A2A-Version": "1.0"}
    for h in a.header:
        name, _, value = h.partition(":")
        headers[name.strip()] = value.strip()

    def plain(args: str) -> Callable[[int], list[str]]:
        return lambda port: [sys.executable, str(HERE / "a2a_plain_sut.py"),
                             "--port", str(port), *shlex.split(args)]

    sut = a.sut
    command = (plain(a.plain_args) if a.plain else
               None if sut is None else
               lambda port: shlex.split(sut.replace("{port}", str(port))))
    try:
        baseline = None
        if a.baseline:
            baseline = serve_and_run(a, tck, python, headers, plain(a.baseline_args))
            baseline["sut"] = f"bench/a2a_plain_sut.py {a.baseline_args}".strip()
        elif a.compare:
            baseline = json.loads(a.compare.read_text())
        doc = serve_and_run(a, tck, python, headers, command)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.plain:
        doc["sut"] = f"bench/a2a_plain_sut.py {a.plain_args}".strip()
    elif a.sut:
        doc["sut"] = a.sut
    if baseline is not None:
        doc["regressions"] = regressions(doc, baseline)
        if a.baseline:
            doc["baseline"] = baseline
    if a.json:
        print(json.dumps(doc, indent=2))
    else:
        print_table(doc)
    if baseline is not None:
        return 1 if doc["regressions"] else 0
    return 1 if any(r["outcome"] in ("failed", "error") for r in doc["tests"]) else 0


if __name__ == "__main__":
    sys.exit(main())
