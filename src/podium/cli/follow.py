"""``podium status RUN --follow``: a run's events as they come, from a server or the database.

With ``--server URL`` it reads the server's event stream (``GET /runs/{id}/events``),
reconnecting with ``Last-Event-ID`` when the connection drops, so no event is
missed or printed twice; without, it reads the database every quarter second.
Either way it prints the progress lines ``podium run`` prints, stops when the
run ends (or waits for someone), and exits as ``podium run`` does: 0 succeeded
or waiting, 1 otherwise. With ``--json`` it prints nothing on the way and the
run's document (``status --json``'s) at the end.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from typing import Any

import typer

from podium.cli.common import (
    dump_json,
    err,
    fail,
    run_async,
    server_message,
    token_from_env,
)
from podium.docs import EXIT_FAILED, EXIT_OK
from podium.state import TERMINAL_RUN_STATUSES, RunStatus

__all__ = ["follow_run"]

_POLL_S = 0.25
_RECONNECTS = 30  # a server gone this many times in a row (a second apart): give up
_RESTING = frozenset({*TERMINAL_RUN_STATUSES, RunStatus.WAITING})


def follow_run(run_id: str, *, db: str | None, server: str | None, token_env: str | None,
               as_json: bool, verbose: bool) -> None:
    from podium.cli.progress import PlainProgress

    show = None if as_json else PlainProgress()
    if server is not None:
        doc = _from_server(run_id, server.rstrip("/"), token_from_env(token_env), show, verbose)
    else:
        if token_env is not None:
            fail("--token-env goes with --server (fix: add --server URL, or leave it out)")
        doc = run_async(lambda: _from_database(run_id, db, show, verbose))
    if as_json:
        dump_json(doc)
    else:
        _say_end(doc)
    raise typer.Exit(EXIT_OK if doc["status"] in (RunStatus.SUCCEEDED, RunStatus.WAITING)
                     else EXIT_FAILED)


def _say_end(doc: dict[str, Any]) -> None:
    error = doc.get("error")
    why = f": {error['type']}: {error['message']}" if isinstance(error, dict) else ""
    print(f"run {doc['run_id']} {doc['status']}{why}", flush=True)


async def _from_database(run_id: str, db: str | None, show: Any, verbose: bool
                         ) -> dict[str, Any]:
    from podium.docs import event_doc, run_doc
    from podium.runtime import Runtime, RuntimeConfig

    async with Runtime(RuntimeConfig(db=db, readonly=True, alerts=False)) as rt:
        store = rt.store
        run = await store.get_run(run_id)
        seen = 0
        while True:
            events = await store.get_events(run.run_id)
            for event in events[seen:]:
                if show is not None:
                    show(event)
            seen = len(events)
            run = await store.get_run(run.run_id)
            if run.status in _RESTING and seen >= len(await store.get_events(run.run_id)):
                break
            await asyncio.sleep(_POLL_S)
        doc = run_doc(run, verbose=verbose)
        doc["timeline"] = [event_doc(e, verbose=verbose) for e in events]
        return doc


def _from_server(run_id: str, url: str, token: str | None, show: Any, verbose: bool
                 ) -> dict[str, Any]:
    import httpx

    from podium.events import event_from_dict

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    last: int | None = None
    failures = 0
    with httpx.Client(timeout=httpx.Timeout(30.0, read=None), headers=headers) as client:
        while True:
            try:
                ended = _stream(client, url, run_id, last, show, event_from_dict)
            except httpx.HTTPError as exc:
                failures += 1
                if failures > _RECONNECTS:
                    fail(f"--server {url}: the event stream keeps failing ({exc}) (fix: is"
                         " podium serve running there?)")
                time.sleep(1.0)
                continue
            if isinstance(ended, int):  # the stream dropped: go on after the last event
                last, failures = ended, 0
                continue
            break
        answer = client.get(f"{url}/runs/{run_id}", params={"verbose": str(verbose).lower()})
        if answer.status_code != 200:
            _refused(url, answer)
        doc: dict[str, Any] = answer.json()
        return doc


def _stream(client: Any, url: str, run_id: str, last: int | None, show: Any, parse: Any
            ) -> int | str:
    """Read one connection of the stream: "end" when the run ended, else the number of
    the last event read (to reconnect after)."""
    headers = {"Last-Event-ID": str(last)} if last is not None else {}
    seen = last or 0
    with client.stream("GET", f"{url}/runs/{run_id}/events", headers=headers) as response:
        if response.status_code != 200:
            response.read()
            _refused(url, response)
        fields: dict[str, str] = {}
        for line in response.iter_lines():
            if line.startswith(":"):
                continue
            if line:
                name, _, value = line.partition(": ")
                fields[name] = value
                continue
            if fields.get("event") == "end":
                return "end"
            if "data" in fields and "id" in fields:
                seen = int(fields["id"])
                if show is not None:
                    show(_event(parse, fields, run_id))
            fields = {}
    return seen


def _event(parse: Any, fields: dict[str, str], run_id: str) -> Any:
    doc = json.loads(fields["data"])
    doc["type"] = fields.get("event", doc.get("type"))
    doc["run_id"] = run_id
    for key in ("ts", "at"):
        if isinstance(doc.get(key), str):
            doc[key] = dt.datetime.fromisoformat(doc[key].replace("Z", "+00:00")).timestamp()
    return parse(doc)


def _refused(url: str, response: Any) -> None:
    message = server_message(response)
    err(f"error: {url}: {message}")
    fail(f"--server {url}: {message}")
