"""Hostile files, values and flags get a clear error in bounded time and memory.

Each entry of the corpus is a real ``podium`` command in a subprocess (see
bounded.py) with the exit code it must get (2: bad input) and words its one
message must contain (the file, field or flag, and the fix). Every entry also
must finish well within ``TIME_LIMIT_S`` and ``PEAK_RSS_LIMIT_MB``, print no
traceback and leave no run behind. Static inputs live in ``hostile/``; the
big or odd ones (deep nesting, long numbers, devices, FIFOs) are made here.
The limits themselves are in the README's "Limits" section.
"""

from __future__ import annotations

import http.server
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.acceptance.bounded import PEAK_RSS_LIMIT_MB, TIME_LIMIT_S, Measured, run_bounded
from tests.acceptance.podium_cli import Podium

DATA = Path(__file__).resolve().parent / "hostile"

Args = tuple[str | Path, ...]


@dataclass(frozen=True)
class Case:
    """One hostile input: how to make the command, and what it must answer."""

    make: Callable[[Podium], Args]
    says: tuple[str, ...]
    code: int = 2
    env: dict[str, str] = field(default_factory=dict)


def deep_yaml(levels: int) -> str:
    return "[" * levels + "]" * levels


def fifo(podium: Podium, name: str) -> Path:
    path = podium.cwd / name
    os.mkfifo(path)
    return path


def write(podium: Podium, name: str, text: str) -> Path:
    path = podium.cwd / name
    path.write_text(text, encoding="utf-8")
    return path


def step_input_workflow(value: str) -> str:
    return f"name: deep\nsteps:\n  - id: s\n    agent: echo\n    input: {value}\n"


CASES: dict[str, Case] = {
    # --- aliases -------------------------------------------------------------------------
    "alias-bomb-workflow": Case(
        lambda p: ("validate", DATA / "alias-bomb.yaml"),
        says=("alias-bomb.yaml", "aliases", "100,000")),
    "alias-bomb-workflow-run": Case(
        lambda p: ("run", DATA / "alias-bomb.yaml"), says=("alias-bomb.yaml", "aliases")),
    "alias-bomb-agents-file": Case(
        lambda p: ("run", "ok.yaml", "--agents", DATA / "alias-bomb-agents.yaml"),
        says=("alias-bomb-agents.yaml", "aliases")),
    "alias-bomb-alerts-file": Case(
        lambda p: ("run", "ok.yaml", "-i", "who=x", "--alerts", DATA / "alias-bomb-alerts.yaml"),
        says=("alias-bomb-alerts.yaml", "aliases")),
    "alias-bomb-input-file": Case(
        lambda p: ("run", "typed.yaml", "--input-file", DATA / "alias-bomb-input.yaml"),
        says=("alias-bomb-input.yaml", "aliases")),
    "recursive-alias": Case(
        lambda p: ("validate", DATA / "recursive-alias.yaml"),
        says=("recursive-alias.yaml:3", "contains itself")),
    # --- depth ---------------------------------------------------------------------------
    "10000-deep-yaml": Case(
        lambda p: ("validate", write(p, "deep.yaml", step_input_workflow(deep_yaml(10_000)))),
        says=("deep.yaml:5", "nested")),
    "10000-deep-json-workflow": Case(
        lambda p: ("validate", write(p, "deep.json", "[" * 10_000 + "]" * 10_000)),
        says=("deep.json", "nested", "64")),
    "10000-deep-json-input-file": Case(
        lambda p: ("run", "typed.yaml", "--input-file",
                   write(p, "deep-in.json", '{"x": ' + "[" * 10_000 + "]" * 10_000 + "}")),
        says=("deep-in.json", "nested")),
    "2000-brackets-in-i": Case(
        lambda p: ("run", "typed.yaml", "-i", "x=" + "[" * 2000),
        says=("-i", "x=", "nested")),
    "2000-deep-json-in-i": Case(
        lambda p: ("run", "typed.yaml", "-i", "x=" + "[" * 2000 + "]" * 2000),
        says=("-i", "x=", "nested")),
    "300-deep-step-input-validate": Case(
        lambda p: ("validate", write(p, "deep300.yaml", step_input_workflow(deep_yaml(300)))),
        says=("deep300.yaml:5", "nested", "64")),
    "300-deep-step-input-run": Case(
        lambda p: ("run", write(p, "deep300.yaml", step_input_workflow(deep_yaml(300)))),
        says=("deep300.yaml:5", "nested")),
    # --- numbers -------------------------------------------------------------------------
    "5000-digit-max-attempts": Case(
        lambda p: ("validate", write(p, "digits.yaml", "name: digits\nsteps:\n  - id: s\n"
                   "    agent: echo\n    retry: {max_attempts: " + "9" * 5000 + "}\n")),
        says=("digits.yaml:5", "5,000 characters", "64 bits")),
    "5000-digit-number-json-workflow": Case(
        lambda p: ("validate", write(p, "digits.json", '{"name": "digits", "steps": [{"id": "s",'
                   ' "agent": "echo", "retry": {"max_attempts": ' + "9" * 5000 + "}}]}")),
        says=("digits.json", "64 bits")),
    "5000-digit-number-in-i": Case(
        lambda p: ("run", "typed.yaml", "-i", "n=" + "9" * 5000), says=("-i", "n=", "64 bits")),
    "30-digit-integer-in-i": Case(
        lambda p: ("run", "typed.yaml", "-i", "n=" + "9" * 30), says=("-i", "n=", "64 bits")),
    "30-digit-integer-in-input-file": Case(
        lambda p: ("run", "typed.yaml", "--input-file", write(p, "big.yaml", "n: " + "9" * 30)),
        says=("big.yaml:1", "64 bits")),
    "huge-float-in-step-input": Case(
        lambda p: ("validate", write(p, "float.yaml", step_input_workflow("1.0e+999"))),
        says=("float.yaml:5", "too large for a float")),
    "huge-duration": Case(
        lambda p: ("validate", write(p, "long.yaml", "name: long\nsteps:\n  - id: s\n"
                                                    "    agent: echo\n    timeout: 99999999d\n")),
        says=("long.yaml:5", "timeout", "at most")),
    # --- duplicate keys ------------------------------------------------------------------
    "duplicate-key-workflow-yaml": Case(
        lambda p: ("validate", DATA / "duplicate-key.yaml"),
        says=("duplicate-key.yaml:6", "duplicate key 'agent'", "line 5")),
    "duplicate-key-workflow-json": Case(
        lambda p: ("validate", DATA / "duplicate-key.json"),
        says=("duplicate-key.json:5", "duplicate key 'agent'", "line 4")),
    "duplicate-key-agents-file": Case(
        lambda p: ("run", "ok.yaml", "-i", "who=x", "--agents",
                   DATA / "duplicate-key-agents.yaml"),
        says=("duplicate-key-agents.yaml:5", "duplicate key 'python'", "line 4")),
    "duplicate-key-alerts-file": Case(
        lambda p: ("run", "ok.yaml", "-i", "who=x", "--alerts",
                   DATA / "duplicate-key-alerts.yaml"),
        says=("duplicate-key-alerts.yaml:5", "duplicate key 'after'", "line 4")),
    "duplicate-key-input-file": Case(
        lambda p: ("run", "typed.yaml", "--input-file", DATA / "duplicate-key-input.json"),
        says=("duplicate-key-input.json:2", "duplicate key 'who'", "line 1")),
    "duplicate-key-in-i": Case(
        lambda p: ("run", "typed.yaml", "-i", 'x={"a": 1, "a": 2}'),
        says=("-i", "x=", "duplicate key 'a'")),
    # --- binary --------------------------------------------------------------------------
    "binary-tag": Case(
        lambda p: ("validate", DATA / "binary-tag.yaml"), says=("binary-tag.yaml:5", "!!binary")),
    "binary-agents-file": Case(
        lambda p: ("run", "ok.yaml", "--agents",
                   write_bytes(p, "agents.yaml", b"agents:\n  - id: caf\xe9\n")),
        says=("agents.yaml", "UTF-8")),
    "nul-bytes-alerts-file": Case(
        lambda p: ("run", "ok.yaml", "-i", "who=x", "--alerts",
                   write_bytes(p, "alerts.yaml", b"rules: []\n\x00\x00\x00")),
        says=("alerts.yaml", "NUL")),
    "lone-surrogate-in-i": Case(
        lambda p: ("run", "typed.yaml", "-i", "x=caf\udce9"), says=("-i", "x=", "UTF-8")),
    "escaped-lone-surrogate-in-i": Case(
        lambda p: ("run", "typed.yaml", "-i", 'x="\\ud800"'), says=("-i", "x=", "surrogate")),
    # --- devices, FIFOs, sizes -----------------------------------------------------------
    "input-file-dev-zero": Case(
        lambda p: ("run", "typed.yaml", "--input-file", "/dev/zero"),
        says=("/dev/zero", "not a regular file")),
    "input-file-dev-urandom": Case(
        lambda p: ("run", "typed.yaml", "--input-file", "/dev/urandom"),
        says=("/dev/urandom", "not a regular file")),
    "input-file-fifo": Case(
        lambda p: ("run", "typed.yaml", "--input-file", fifo(p, "in.fifo")),
        says=("in.fifo", "not a regular file")),
    "input-file-directory": Case(
        lambda p: ("run", "typed.yaml", "--input-file", p.cwd),
        says=("--input-file", "not a regular file")),
    "workflow-file-fifo": Case(
        lambda p: ("validate", fifo(p, "wf.fifo")), says=("wf.fifo", "not a regular file")),
    "agents-file-fifo": Case(
        lambda p: ("run", "ok.yaml", "--agents", fifo(p, "agents.fifo")),
        says=("agents.fifo", "not a regular file")),
    "input-file-over-the-size-limit": Case(
        lambda p: ("run", "typed.yaml", "--input-file", write(p, "big.json", " " * 5000 + "{}")),
        says=("big.json", "4 KiB", "PODIUM_MAX_FILE_BYTES"), env={"PODIUM_MAX_FILE_BYTES": "4KiB"}),
    "bad-size-limit-setting": Case(
        lambda p: ("validate", "ok.yaml"),
        says=("PODIUM_MAX_FILE_BYTES", "lots"), env={"PODIUM_MAX_FILE_BYTES": "lots"}),
    # --- input_schema --------------------------------------------------------------------
    "catastrophic-pattern": Case(
        lambda p: ("run", DATA / "regex-bomb.yaml", "-i", "word=" + "a" * 40 + "!"),
        says=("input.word", "does not match")),
    "catastrophic-pattern-properties": Case(
        lambda p: ("run", DATA / "regex-bomb-keys.yaml", "--input-file",
                   write(p, "keys.json", '{"' + "a" * 40 + '!": "x"}')),
        says=("input", "not match any of the regexes")),
    "unique-items-of-30000-objects": Case(
        lambda p: ("run", DATA / "unique-items.yaml", "--input-file", write(
            p, "many.json", json.dumps({"xs": [{"n": i} for i in range(30_000)] + [{"n": 0}]}))),
        says=("input.xs", "has non-unique elements")),
    "backreference-pattern": Case(
        lambda p: ("validate", DATA / "backreference.yaml"),
        says=("backreference.yaml", "input_schema", "pattern", "RE2")),
    "file-ref-in-input-schema": Case(
        lambda p: ("validate", DATA / "file-ref.yaml"),
        says=("file-ref.yaml:4", "input_schema", "$ref", "file:///etc/hostname")),
    # --- flags and settings --------------------------------------------------------------
    "zero-health-interval": Case(
        lambda p: ("validate", DATA / "zero-interval-agents.yaml"),
        says=("zero-interval-agents.yaml:5", "health.interval", "greater than 0")),
    "zero-step-timeout": Case(
        lambda p: ("validate", write(p, "zero.yaml", "name: zero\nsteps:\n  - id: s\n"
                                                    "    agent: echo\n    timeout: 0s\n")),
        says=("zero.yaml:5", "timeout", "greater than 0")),
    "alerts-limit-negative": Case(lambda p: ("alerts", "--limit", "-1"), says=("--limit", "-1")),
    "runs-limit-zero": Case(lambda p: ("runs", "--limit", "0"), says=("--limit", "0")),
    "runs-limit-negative": Case(lambda p: ("runs", "--limit", "-1"), says=("--limit", "-1")),
    "runs-limit-huge": Case(
        lambda p: ("runs", "--limit", "999999999999999999999"),
        says=("--limit", "999999999999999999999", "100000")),
    "db-unknown-query-options": Case(
        lambda p: ("runs", "--db", f"sqlite:///{p.cwd / 'q.db'}?mode=ro&vfs=unix-none"),
        says=("--db", "mode", "vfs", "durability")),
    "db-bad-durability": Case(
        lambda p: ("runs", "--db", f"sqlite:///{p.cwd / 'q.db'}?durability=fast"),
        says=("--db", "durability", "fast")),
    "db-nul-byte": Case(
        lambda p: ("runs", "--db", f"sqlite:///{p.cwd}/a%00b.db"), says=("--db", "NUL")),
    "db-5000-character-path": Case(
        lambda p: ("runs", "--db", f"sqlite:///{p.cwd}/{'d' * 5000}.db"),
        says=("--db", "too long")),
    "db-fifo": Case(
        lambda p: ("runs", "--db", f"sqlite:///{fifo(p, 'db.fifo')}"),
        says=("--db", "db.fifo", "not a regular file")),
    "db-fifo-bare-path": Case(
        lambda p: ("runs", "--db", str(fifo(p, "db.fifo"))),
        says=("--db", "db.fifo", "not a regular file")),
    "db-directory": Case(
        lambda p: ("run", "ok.yaml", "-i", "who=x", "--db", f"sqlite:///{p.cwd}"),
        says=("--db", "directory")),
}


def write_bytes(podium: Podium, name: str, data: bytes) -> Path:
    path = podium.cwd / name
    path.write_bytes(data)
    return path


def runs_in(db: Path) -> int:
    """Runs recorded in a database file (none if it was never made)."""
    if not db.is_file():
        return 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        return conn.execute("SELECT count(*) FROM runs").fetchone()[0] if "runs" in tables else 0
    finally:
        conn.close()


def assert_clear_error(res: Measured, code: int, says: tuple[str, ...]) -> None:
    assert res.code is not None, f"hung: killed after {TIME_LIMIT_S}s\n{res!r}"
    assert res.peak_rss_mb < PEAK_RSS_LIMIT_MB, res
    assert res.code == code, res
    assert "Traceback" not in res.err + res.out, res
    assert "internal error" not in res.err, res
    for words in says:
        assert words in res.err, (words, res)


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_input_gets_a_clear_error_in_bounded_time_and_memory(
    podium: Podium, name: str
) -> None:
    case = CASES[name]
    args = case.make(podium)

    res = run_bounded(podium, *args, env=case.env)

    assert_clear_error(res, case.code, case.says)
    assert runs_in(podium.db) == 0, "a run was recorded"


class _CountingHandler(http.server.BaseHTTPRequestHandler):
    hits: list[str]

    def do_GET(self) -> None:
        self.hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"type": "object"}')

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def schema_server() -> Iterator[tuple[str, list[str]]]:
    """An HTTP server on 127.0.0.1 that serves a schema and counts who asked."""
    hits: list[str] = []
    handler = type("Handler", (_CountingHandler,), {"hits": hits})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/schema.json", hits
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize("command", ["validate", "run"])
def test_remote_ref_in_input_schema_is_refused_and_never_fetched(
    podium: Podium, schema_server: tuple[str, list[str]], command: str
) -> None:
    url, hits = schema_server
    wf = write(podium, "remote.yaml", "name: remote\ninput_schema:\n"
               f"  properties:\n    x: {{$ref: '{url}'}}\nsteps:\n  - {{id: s, agent: echo}}\n")
    args: Args = (command, wf) if command == "validate" else (command, wf, "-i", "x=1")

    res = run_bounded(podium, *args)

    assert_clear_error(res, 2, ("remote.yaml:4", "input_schema", "$ref", url))
    assert hits == [], "the schema was fetched"
    assert runs_in(podium.db) == 0


def test_an_input_error_quotes_a_huge_value_cut(podium: Podium) -> None:
    """A 1 MB string that breaks maxLength is not echoed back whole."""
    big = write(podium, "big.json", json.dumps({"word": "a" * 1_000_000}))
    wf = write(podium, "short.yaml", "name: short\ninput_schema:\n  properties:\n"
               "    word: {type: string, maxLength: 10}\nsteps:\n  - {id: s, agent: echo}\n")

    res = run_bounded(podium, "run", wf, "--input-file", big)

    assert_clear_error(res, 2, ("input.word", "is too long"))
    assert len(res.err) < 2000, len(res.err)


def test_local_refs_in_input_schema_still_work(podium: Podium) -> None:
    """Refusing remote refs keeps ``#/...`` ones: the run's input is checked through them."""
    wf = write(podium, "local.yaml", "name: local\ninput_schema:\n  $defs:\n"
               "    count: {type: integer, minimum: 1}\n  properties:\n"
               "    n: {$ref: '#/$defs/count'}\nsteps:\n  - {id: s, agent: echo}\n")

    assert run_bounded(podium, "validate", wf).code == 0
    bad = run_bounded(podium, "run", wf, "-i", "n=0")
    good = run_bounded(podium, "run", wf, "-i", "n=3")

    assert_clear_error(bad, 2, ("input.n", "minimum of 1"))
    assert good.code == 0, good


def test_a_linear_time_pattern_still_matches_like_before(podium: Podium) -> None:
    """The pattern engine changed, not what a pattern means for ordinary input."""
    res_ok = run_bounded(podium, "run", DATA / "regex-bomb.yaml", "-i", "word=aaaa")
    res_bad = run_bounded(podium, "run", DATA / "regex-bomb.yaml", "-i", "word=aab")

    assert res_ok.code == 0, res_ok
    assert_clear_error(res_bad, 2, ("input.word", "does not match"))
