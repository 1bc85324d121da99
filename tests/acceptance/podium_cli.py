"""The real ``podium`` command, run in a subprocess inside a scratch folder.

Every test gets a folder (``tmp_path``) holding an agents file
(``podium.yaml``), the agents module it names and a few workflow files; the
command runs with that folder as its working directory and its own SQLite
database, so nothing is written to the repository.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Imported by the podium process through the agents file, never by pytest.
AGENTS_MODULE = '''
"""Agents for the CLI acceptance tests."""

import asyncio
from pathlib import Path

from podium import Unavailable


def echo(task):
    return {"step": task.step_id, "input": task.input}


def _explode(attempt):
    raise ValueError(f"kaboom on attempt {attempt}")


def boom(task):
    _explode(task.attempt)


def flaky(task):
    if task.attempt <= int(task.input.get("fail_times", 1)):
        raise Unavailable(f"service busy (attempt {task.attempt})")
    return {"attempt": task.attempt}


async def slow(task):
    await asyncio.sleep(float(task.input.get("seconds", 20)))
    return "woke up"


def chatty(task):
    print("chatty agent: hello from inside the step")
    return {"said": "hello"}


def gc_settings(task):
    """What the process's garbage collector was set to (the CLI tunes it)."""
    import gc
    return {"threshold": list(gc.get_threshold()), "frozen": gc.get_freeze_count()}


def tally(task):
    """Log the call to calls.log; fail while the file named by input.gate exists."""
    name = task.input.get("name", task.step_id) if isinstance(task.input, dict) else task.step_id
    with Path("calls.log").open("a", encoding="utf-8") as fh:
        fh.write(f"{name}\\n")
    gate = task.input.get("gate") if isinstance(task.input, dict) else None
    if gate and Path(gate).exists():
        raise Unavailable(f"gate {gate} is closed")
    return {"done": name}
'''

AGENTS_FILE = """\
agents:
  - {id: echoer, capabilities: [echo], python: "acc_agents:echo"}
  - {id: bomber, capabilities: [boom], python: "acc_agents:boom"}
  - {id: flake, capabilities: [flaky], python: "acc_agents:flaky"}
  - {id: sloth, capabilities: [slow], python: "acc_agents:slow"}
  - {id: counter, capabilities: [tally], python: "acc_agents:tally"}
  - {id: chatter, capabilities: [chatty], python: "acc_agents:chatty"}
  - {id: gc-probe, capabilities: [gc_settings], python: "acc_agents:gc_settings"}
"""

WORKFLOWS = {
    # A two-step DAG that succeeds; the output is built from both steps.
    "ok.yaml": """\
        name: greet
        version: 2
        steps:
          - id: hello
            agent: echo
            input: {who: "${{ input.who }}"}
          - id: shout
            agent: echo
            depends_on: [hello]
            input: {said: "${{ steps.hello.output.input.who }}"}
        output: {greeting: "hi ${{ steps.shout.output.input.said }}"}
        """,
    # prepare succeeds; explode raises ValueError twice (2 attempts); cleanup is skipped.
    "fail.yaml": """\
        name: doomed
        steps:
          - id: prepare
            agent: echo
          - id: explode
            agent: boom
            depends_on: [prepare]
            retry: {max_attempts: 2, initial_delay: 10ms, jitter: none}
          - id: cleanup
            agent: echo
            depends_on: [explode]
        """,
    # Output is the run's input, unchanged: shows how -i and --input-file are parsed.
    "typed.yaml": """\
        name: typed
        steps:
          - id: look
            agent: echo
            input: "${{ input }}"
        output: "${{ input }}"
        """,
    "gc.yaml": """\
        name: gc
        steps:
          - {id: probe, agent: gc_settings}
        """,
    "needs-count.yaml": """\
        name: needs-count
        input_schema:
          type: object
          required: [count]
          properties: {count: {type: integer, minimum: 1}}
        steps:
          - {id: use, agent: echo, input: {count: "${{ input.count }}"}}
        """,
    "unknown-cap.yaml": """\
        name: polyglot
        steps:
          - {id: fetch, agent: echo}
          - {id: translate, agent: translation, depends_on: [fetch]}
        """,
    # Line numbers matter: the tests name them.
    "broken.yaml": """\
        name: broken
        steps:
          - id: fetch
            agent: echo
            timeout: 5 parsecs
          - id: store
            agent: echo
            depends_on: [ghost]
            colour: red
          - id: report
            agent: echo
            input: {x: "${{ steps.nowhere.output }}"}
        """,
    "slow.yaml": """\
        name: slowpoke
        steps:
          - {id: nap, agent: slow, input: {seconds: "${{ input.seconds }}"}}
          - {id: after, agent: echo, depends_on: [nap]}
        """,
}


@dataclass(frozen=True, repr=False)
class Result:
    args: tuple[str, ...]
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def __repr__(self) -> str:  # what a failed assertion shows
        return (f"podium {' '.join(self.args)} -> exit {self.code}\n"
                f"--- stdout ---\n{self.out}\n--- stderr ---\n{self.err}")


class Podium:
    """Runs ``python -m podium ...`` in ``cwd`` with a private database."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.db = cwd / "p.db"
        self.db_url = f"sqlite:///{self.db}"
        env = {k: v for k, v in os.environ.items()
               if k not in ("PODIUM_DB", "PODIUM_AGENTS", "PODIUM_DEBUG")}
        env.update(PODIUM_DB=self.db_url, PYTHONIOENCODING="utf-8", NO_COLOR="1",
                   PYTHONDONTWRITEBYTECODE="1")
        self.env = env

    def argv(self, args: tuple[str | Path, ...]) -> list[str]:
        return [sys.executable, "-m", "podium", *(str(a) for a in args)]

    def _env(self, env: Mapping[str, str | None] | None) -> dict[str, str]:
        merged = dict(self.env)
        for k, v in (env or {}).items():
            if v is None:
                merged.pop(k, None)
            else:
                merged[k] = v
        return merged

    def __call__(
        self, *args: str | Path, env: Mapping[str, str | None] | None = None,
        timeout: float = 45,
    ) -> Result:
        proc = subprocess.run(
            self.argv(args), cwd=self.cwd, env=self._env(env), capture_output=True,
            text=True, encoding="utf-8", timeout=timeout, stdin=subprocess.DEVNULL,
            check=False,
        )
        return Result(tuple(str(a) for a in args), proc.returncode, proc.stdout, proc.stderr)

    def popen(self, *args: str | Path, **kwargs: Any) -> subprocess.Popen[str]:
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        return subprocess.Popen(
            self.argv(args), cwd=self.cwd, env=self._env(kwargs.pop("env", None)),
            text=True, encoding="utf-8", stdin=subprocess.DEVNULL, **kwargs,
        )

    def write(self, name: str, text: str) -> Path:
        path = self.cwd / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    def run_ids(self) -> list[str]:
        """Every run id in the database, newest first."""
        res = self("runs", "--json", "--limit", "1000")
        assert res.code == 0, res
        return [r["run_id"] for r in res.json()]


def make_project(folder: Path) -> Podium:
    podium = Podium(folder)
    podium.write("acc_agents.py", AGENTS_MODULE)
    podium.write("podium.yaml", AGENTS_FILE)
    for name, text in WORKFLOWS.items():
        podium.write(name, text)
    return podium


def assert_no_traceback(res: Result) -> None:
    assert "Traceback" not in res.err, res
    assert "Traceback" not in res.out, res
