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

from podium.errors import (
    ConfigError,
    DefinitionError,
    InputError,
    PodiumError,
    RunNotFound,
    StoreError,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INFRA = 0, 1, 2, 3
# The most rows a listing prints: beyond it a query only fills the memory.
MAX_LIST_LIMIT = 100_000

T = TypeVar("T")


def err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    err(f"error: {message}")
    raise typer.Exit(code)


def exit_code_for(exc: PodiumError) -> int:
    if isinstance(exc, StoreError):
        return EXIT_INFRA
    if isinstance(exc, DefinitionError | InputError | ConfigError | RunNotFound):
        return EXIT_USAGE
    return EXIT_FAILED


def report(exc: BaseException) -> NoReturn:
    """Turn any error into a message and an exit code; never a bare traceback."""
    if isinstance(exc, DefinitionError):
        n = len(exc.problems)
        err(f"error: {n} problem{'s' if n != 1 else ''} found:")
        for p in exc.problems:
            err(f"  {p.render()}")
        raise typer.Exit(EXIT_USAGE)
    if isinstance(exc, PodiumError):
        fail(exc.message, exit_code_for(exc))
    if os.environ.get("PODIUM_DEBUG"):
        import traceback

        traceback.print_exception(exc)
    fail(f"internal error: {type(exc).__name__}: {exc} (set PODIUM_DEBUG=1 for details)",
         EXIT_INFRA)


def check_limit(limit: int, flag: str = "--limit") -> None:
    """A listing's size: SQLite reads LIMIT -1 as "no limit", and 10**21 overflows it."""
    if not 1 <= limit <= MAX_LIST_LIMIT:
        fail(f"{flag} {limit}: give a number of rows between 1 and {MAX_LIST_LIMIT}")


def quiet_stdout() -> None:
    """The reader of our stdout went away (``podium runs | head``): drop the rest quietly."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _printable_streams() -> None:
    """Progress symbols (▶ ✓ …) on a terminal that cannot show them become '?', not a crash."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None and getattr(stream, "errors", None) == "strict":
            with contextlib.suppress(Exception):
                reconfigure(errors="replace")


def guarded(fn: Callable[[], T]) -> T:
    _printable_streams()
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
        raise typer.Exit(130) from None
    except BaseException as exc:  # noqa: BLE001 - every error becomes a message and an exit code
        report(exc)


def run_async(
    make: Callable[[], Awaitable[T]],
    on_interrupt: Callable[[], None] | None = None,
    *,
    json_stdout: bool = False,
) -> T:
    """Run a coroutine; SIGINT/SIGTERM call ``on_interrupt`` once (graceful), then abort.

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
                err("stopping (press Ctrl-C again to abort)")
                on_interrupt()
            elif task is not None:
                task.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread
                loop.add_signal_handler(sig, handler)
        return await make()

    redirect: contextlib.AbstractContextManager[Any] = (
        contextlib.redirect_stdout(sys.stderr) if json_stdout else contextlib.nullcontext()
    )
    with redirect:
        return asyncio.run(main())


def _shown(text: str, n: int = 24) -> str:
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
        text = read_text(input_file, what="input file", option="--input-file")
        loaded, _ = parse_document(text, str(input_file))
        if not isinstance(loaded, dict):
            fail(f"--input-file {input_file}: must hold a JSON or YAML object (key: value ...)")
        data.update(loaded)
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            fail(f"-i {pair!r}: write key=value (e.g. -i source=data.csv or -i n=5)")
        shown = f"-i {_shown(key)}={_shown(raw)}"
        try:
            pair.encode("utf-8")
        except UnicodeEncodeError:  # bytes of another encoding, kept by surrogateescape
            fail(f"{shown}: not UTF-8 text (fix: pass the value in UTF-8)")
        try:
            value: Any = parse_json_value(raw)
        except NotJSON:
            value = raw
        except RefusedValue as exc:
            fail(f"{shown}: {exc.message} (fix: {exc.hint})")
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
    sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")
    sys.stdout.flush()
