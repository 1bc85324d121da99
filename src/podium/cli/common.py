"""What every command shares: exit codes, error rendering, input parsing, the loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer

from podium.docs import ERROR_TYPES as ERROR_TYPES  # the commands' names for them, too
from podium.docs import EXIT_FAILED as EXIT_FAILED
from podium.docs import EXIT_INFRA as EXIT_INFRA
from podium.docs import EXIT_OK as EXIT_OK
from podium.docs import EXIT_USAGE as EXIT_USAGE
from podium.docs import error_type_for as error_type_for
from podium.docs import exit_code_for as exit_code_for
from podium.docs import problem_doc as problem_doc
from podium.errors import DefinitionError, PodiumError

EXIT_INTERRUPTED = 130
# The most rows a listing prints: beyond it a query only fills the memory.
MAX_LIST_LIMIT = 100_000

T = TypeVar("T")


class _Output:
    """What this command promised its stdout: one JSON document (``--json``), written yet?"""

    json = False
    written = False


_OUT = _Output()


class Failure(Exception):
    """A command gives up: ``guarded`` prints the message (and the JSON document)."""

    def __init__(self, message: str, code: int = EXIT_USAGE, kind: str = "usage") -> None:
        super().__init__(message)
        self.message, self.code, self.kind = message, code, kind


def err(message: str) -> None:
    """A line on stderr; a reader that went away (``2>&1 | tee`` after Ctrl-C) is
    no reason to fail what the line was about."""
    try:
        print(message, file=sys.stderr, flush=True)
    except (BrokenPipeError, ValueError):
        _quiet(sys.stderr)


def plural(n: int, word: str, words: str | None = None) -> str:
    """``1 step``, ``2 steps``: every count the CLI prints agrees with its noun."""
    return f"{n} {word if n == 1 else words or word + 's'}"


def fail(message: str, code: int = EXIT_USAGE, *, kind: str = "usage") -> NoReturn:
    """Stop the command with ``error: message`` and ``code`` (as ``{"error"}`` under --json)."""
    raise Failure(message, code, kind)


def json_error(kind: str, message: str, code: int, **extra: Any) -> None:
    """The one document ``--json`` promises, for a failure; nothing if one was written."""
    if _OUT.json and not _OUT.written:
        dump_json({"error": {"type": kind, "message": message, "exit_code": code, **extra}})


def _give_up(kind: str, message: str, code: int, **extra: Any) -> NoReturn:
    err(f"error: {message}")
    json_error(kind, message, code, **extra)
    raise typer.Exit(code)


def report(exc: BaseException) -> NoReturn:
    """Turn any error into a message and an exit code; never a bare traceback."""
    if isinstance(exc, Failure):
        _give_up(exc.kind, exc.message, exc.code)
    if isinstance(exc, DefinitionError):
        err(f"error: {plural(len(exc.problems), 'problem')} found:")
        for p in exc.problems:
            err(f"  {p.render()}")
        json_error("definition_error", exc.message, EXIT_USAGE,
                   problems=[problem_doc(p) for p in exc.problems])
        raise typer.Exit(EXIT_USAGE)
    if isinstance(exc, PodiumError):
        _give_up(error_type_for(exc), exc.message, exit_code_for(exc))
    if os.environ.get("PODIUM_DEBUG"):
        import traceback

        traceback.print_exception(exc)
    _give_up("internal",
             f"internal error: {type(exc).__name__}: {exc} (set PODIUM_DEBUG=1 for details)",
             EXIT_INFRA)


def check_limit(limit: int, flag: str = "--limit") -> None:
    """A listing's size: SQLite reads LIMIT -1 as "no limit", and 10**21 overflows it."""
    if not 1 <= limit <= MAX_LIST_LIMIT:
        fail(f"{flag} {limit}: give a number of rows between 1 and {MAX_LIST_LIMIT}")


def quiet_stdout() -> None:
    """The reader of our stdout went away (``podium runs | head``): drop the rest quietly."""
    _quiet(sys.stdout)


def _quiet(stream: Any) -> None:
    """Point a stream whose reader is gone at /dev/null, so later writes (and the
    interpreter's last flush) cost nothing and raise nothing."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)


def _printable_streams() -> None:
    """Progress symbols (▶ ✓ …) on a terminal that cannot show them become '?', not a crash."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None and getattr(stream, "errors", None) == "strict":
            with contextlib.suppress(Exception):
                reconfigure(errors="replace")


def guarded(fn: Callable[[], T], *, as_json: bool = False) -> T:
    """Run a command's body: every way out is a message on stderr and an exit code, and
    with ``as_json`` also exactly one JSON document on stdout (``{"error": ...}``)."""
    _printable_streams()
    _OUT.json, _OUT.written = as_json, False
    try:
        return fn()
    except (typer.Exit, typer.Abort, SystemExit):
        raise
    except BrokenPipeError:
        quiet_stdout()
        raise typer.Exit(EXIT_FAILED) from None
    except (KeyboardInterrupt, asyncio.CancelledError):
        # A second Ctrl-C (or SIGTERM) aborts the loop: that is the user's doing, not a bug.
        err("interrupted")
        json_error("interrupted", "interrupted", EXIT_INTERRUPTED)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except BaseException as exc:  # noqa: BLE001 - every error becomes a message and an exit code
        report(exc)


class Interrupt:
    """What the first Ctrl-C stops: set by a command once it knows (a run's handle)."""

    __slots__ = ("_stop",)

    def __init__(self) -> None:
        self._stop: Callable[[], None] | None = None

    def on(self, stop: Callable[[], None]) -> None:
        self._stop = stop

    def __call__(self) -> None:
        if self._stop is not None:
            self._stop()


def run_async(
    make: Callable[[], Awaitable[T]],
    on_interrupt: Callable[[], None] | None = None,
    *,
    json_stdout: bool = False,
    on_second: Callable[[], None] | None = None,
) -> T:
    """Run a coroutine; SIGINT/SIGTERM call ``on_interrupt`` once (graceful), then abort
    (or call ``on_second`` first, when given: a worker's hurried hand-back).

    With ``json_stdout`` whatever runs meanwhile (an agent's ``print``) writes to
    stderr, so that stdout stays the one JSON document ``--json`` promises.
    """

    async def main() -> T:
        loop = asyncio.get_running_loop()
        hits = {"n": 0}
        task = asyncio.current_task()

        def handler() -> None:
            hits["n"] += 1
            if hits["n"] == 1 and on_interrupt is not None:
                on_interrupt()  # first: the message below may find nobody to read it
                err("stopping (press Ctrl-C again to abort)")
            elif hits["n"] == 2 and on_second is not None:
                on_second()
                err("stopping now: attempts in flight are cut short (again to abort)")
            elif task is not None:
                task.cancel()

        # SIGHUP: the terminal went away; stop as for Ctrl-C rather than die with the run
        # left running. Not when it is ignored (nohup): then the user wants it to go on.
        sigs = [signal.SIGINT, signal.SIGTERM]
        if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
            sigs.append(signal.SIGHUP)
        for sig in sigs:
            with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread
                loop.add_signal_handler(sig, handler)
        return await make()

    redirect: contextlib.AbstractContextManager[Any] = (
        contextlib.redirect_stdout(sys.stderr) if json_stdout else contextlib.nullcontext()
    )
    with redirect:
        return asyncio.run(main())


def shown(text: str, n: int = 24) -> str:
    """A value as a message quotes it: cut, and escaped if it is not printable text."""
    cut = text[:n] if text[:n].isprintable() else ascii(text[:n])[1:-1]
    return cut + ("…" if len(text) > n else "")


def parse_inputs(pairs: list[str], input_file: Path | None) -> dict[str, Any]:
    """The run input from ``--input-file`` and ``-i`` pairs, under the limits of every file."""
    from podium.definition.documents import (
        NotJSON,
        RefusedValue,
        parse_document,
        parse_json_value,
        read_text,
    )

    data: dict[str, Any] = {}
    if input_file is not None:
        try:
            text = read_text(input_file, what="input file", option="--input-file")
        except DefinitionError as exc:  # missing, not a regular file, too big: the flag's value
            fail("; ".join(p.render() for p in exc.problems))
        loaded, _ = parse_document(text, str(input_file))
        if not isinstance(loaded, dict):
            fail(f"--input-file {input_file}: must hold a JSON or YAML object (key: value ...)")
        data.update(loaded)
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            fail(f"-i {pair!r}: write key=value (e.g. -i source=data.csv or -i n=5)")
        flag = f"-i {shown(key)}={shown(raw)}"
        try:
            pair.encode("utf-8")
        except UnicodeEncodeError:  # bytes of another encoding, kept by surrogateescape
            fail(f"{flag}: not UTF-8 text (fix: pass the value in UTF-8)")
        try:
            value: Any = parse_json_value(raw)
        except NotJSON:
            value = raw
        except RefusedValue as exc:
            fail(f"{flag}: {exc.message} (fix: {exc.hint})")
        data[key] = value
    return data


def in_workflow_order(run: Any) -> Any:
    """Put ``run.steps`` in the order of the workflow's steps (stores may return any order)."""
    steps = (run.definition or {}).get("steps") if isinstance(run.definition, dict) else None
    if not isinstance(steps, list) or not run.steps:
        return run
    rank = {s.get("id"): i for i, s in enumerate(steps) if isinstance(s, dict)}
    run.steps = dict(sorted(run.steps.items(), key=lambda kv: rank.get(kv[0], len(rank))))
    return run


def dump_json(doc: Any) -> None:
    _OUT.written = True
    sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")
    sys.stdout.flush()


def token_from_env(token_env: str | None) -> str | None:
    """An API token from the variable ``--token-env`` names (never from the command
    line, where ``ps`` and shell history would show it); known to the scrubber."""
    if token_env is None:
        return None
    from podium.redact import register_secret

    token = os.environ.get(token_env, "").strip()
    if not token:
        fail(f"--token-env {token_env}: the variable is not set or empty (fix: export"
             f" {token_env}=<a token from podium token create --scope read>)")
    register_secret(token)
    return token


def server_message(response: Any) -> str:
    """What a podium serve said when it refused (its error shape), else the status."""
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}"
