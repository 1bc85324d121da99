"""``podium runs --watch``: every run's changes of state as they are committed.

It reads the feed of every committed event (the store's ``read_feed``: with
``--server URL`` the server's ``GET /events`` stream, reconnecting with
``Last-Event-ID``; without, the database twice a second), so a change is never
missed: the feed's position is taken before the list is read. One line per change
(submitted, started, waiting, a cancel asked, finished), or with ``--json`` one
JSON object per line. It goes on until Ctrl-C (exit 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from collections.abc import Awaitable, Callable
from typing import Any

from podium.cli.common import err, fail, run_async, server_message
from podium.errors import StoreError
from podium.state import RunStatus

__all__ = ["RUN_EVENTS", "watch_runs"]

_POLL_S = 0.5
_RECONNECTS = 30  # a server gone this many times in a row (a second apart): give up
RUN_EVENTS = ("run_submitted", "run_started", "run_waiting", "run_cancel_requested",
              "run_finished")
_STATUS_OF = {"run_submitted": RunStatus.PENDING, "run_started": RunStatus.RUNNING,
              "run_waiting": RunStatus.WAITING}


Rows = Callable[[Any], Awaitable[list[dict[str, Any]]]]


def watch_runs(rows: Rows, *, db: str | None, server: str | None,
               token: str | None, status: str | None, workflow: str | None,
               as_json: bool, show_list: Callable[[list[dict[str, Any]]], None]) -> None:
    """``rows(runtime)`` lists the runs from the database; with a server, ``GET /runs``
    does. ``show_list`` prints them as ``podium runs`` does."""
    stop = asyncio.Event()
    printer = _Printer(status, workflow, as_json)
    if server is not None:
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(server)
            ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        except ValueError:
            ok = False
        if not ok:
            fail(f"--server {server!r}: not the http(s) URL of a podium serve (fix: e.g."
                 " --server http://127.0.0.1:8080)")
        go = _from_server(server.rstrip("/"), token, status, workflow, printer, show_list, stop)
    else:
        go = _from_database(db, rows, printer, show_list, stop)
    run_async(lambda: go, on_interrupt=stop.set, json_stdout=False)


class _Printer:
    """One line per change of a run, for the runs the filters keep."""

    def __init__(self, status: str | None, workflow: str | None, as_json: bool) -> None:
        self.status, self.workflow, self.as_json = status, workflow, as_json
        self.workflows: dict[str, str] = {}  # run id -> its workflow, as learnt

    def learn(self, docs: list[dict[str, Any]]) -> None:
        for doc in docs:
            self.workflows[doc["run_id"]] = doc["workflow"]

    def __call__(self, doc: dict[str, Any]) -> None:
        kind, run_id = doc.get("type"), doc.get("run_id", "")
        if kind not in RUN_EVENTS:
            return
        if isinstance(doc.get("workflow"), str):
            self.workflows[run_id] = doc["workflow"]
        wf = self.workflows.get(run_id)
        if self.workflow is not None and wf != self.workflow:
            return  # (a run whose start this watch never saw is another workflow's or none)
        status = doc.get("status") if kind == "run_finished" else _STATUS_OF.get(kind)
        if self.status is not None and status != self.status:
            return
        at = doc.get("ts")
        change = {"run_id": run_id, "workflow": wf, "event": kind, "status": status,
                  "at": at}
        if kind == "run_finished":
            change["duration_s"] = doc.get("duration_s")
            error = doc.get("error")
            change["error"] = ({"type": error.get("type"), "message": error.get("message")}
                               if isinstance(error, dict) else None)
        if kind == "run_started" and doc.get("resumed"):
            change["resumed"] = True
        if self.as_json:
            print(json.dumps(change, default=str, separators=(",", ":")), flush=True)
            return
        print(_line(change), flush=True)


def _line(change: dict[str, Any]) -> str:
    from podium.definition.durations import format_duration

    at = change["at"]
    when = (dt.datetime.fromisoformat(at.replace("Z", "+00:00")).astimezone()
            if isinstance(at, str) else dt.datetime.now().astimezone())
    what = {"run_submitted": "submitted", "run_started": "started",
            "run_waiting": "waiting", "run_cancel_requested": "cancel requested",
            "run_finished": str(change["status"])}[change["event"]]
    if change.get("resumed"):
        what = "resumed"
    detail = ""
    if change.get("duration_s") is not None:
        detail = f" after {format_duration(change['duration_s'])}"
    if change.get("error"):
        detail += f": {change['error']['type']}: {change['error']['message']}"
    return (f"{when:%H:%M:%S} {change['run_id']} {(change['workflow'] or '-')[:22]}"
            f" {what}{detail}")


async def _from_database(db: str | None, rows: Rows, printer: _Printer,
                         show_list: Callable[[list[dict[str, Any]]], None],
                         stop: asyncio.Event) -> None:
    from podium.docs import event_doc
    from podium.runtime import Runtime, RuntimeConfig

    async with Runtime(RuntimeConfig(db=db, readonly=True, alerts=False)) as rt:
        store = rt.store
        position = await store.feed_head()  # before the list: no change falls between
        docs = await rows(rt)
        printer.learn(docs)
        show_list(docs)
        _watching()
        while not stop.is_set():
            try:
                page, scanned = await store.read_feed(position, limit=500)
            except StoreError as exc:
                if "no such table: feed" not in exc.message:
                    raise
                fail("this database has no feed of changes yet (it was made by an older"
                     " Podium) (fix: podium db upgrade --db URL, then watch again)")
            for _, event in page:
                printer({"run_id": event.run_id, **event_doc(event)})
            moved, position = scanned != position, scanned
            if not moved:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), _POLL_S)


async def _from_server(url: str, token: str | None, status: str | None, workflow: str | None,
                       printer: _Printer, show_list: Callable[[list[dict[str, Any]]], None],
                       stop: asyncio.Event) -> None:
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    last: str | None = None
    failures = 0
    listed = False
    params = {"types": ",".join(RUN_EVENTS)}
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0, read=None),
                                 headers=headers) as client:
        while not stop.is_set():
            reader = asyncio.ensure_future(
                _read_stream(client, url, params, last, listed, status, workflow, printer,
                             show_list))
            stopper = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if stopper in done:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
                return
            stopper.cancel()
            try:
                last, listed = reader.result()
                failures = 0  # it ended cleanly: the server closed it; go on after last
            except httpx.HTTPError as exc:
                failures += 1
                if failures > _RECONNECTS:
                    fail(f"--server {url}: the event stream keeps failing ({exc}) (fix: is"
                         " podium serve running there?)")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)


async def _read_stream(client: Any, url: str, params: dict[str, str], last: str | None,
                       listed: bool, status: str | None, workflow: str | None,
                       printer: _Printer, show_list: Callable[[list[dict[str, Any]]], None]
                       ) -> tuple[str | None, bool]:
    """One connection of the stream. The list is read once the stream is open (its
    start is fixed then), so no change falls between the two."""
    headers = {"Last-Event-ID": last} if last is not None else {}
    async with client.stream("GET", f"{url}/events", params=params,
                             headers=headers) as response:
        if response.status_code != 200:
            await response.aread()
            _refused(url, response)
        if not listed:
            query = {k: v for k, v in (("status", status), ("workflow", workflow)) if v}
            answer = await client.get(f"{url}/runs", params={**query, "limit": "50"})
            if answer.status_code != 200:
                _refused(url, answer)
            docs = answer.json()["runs"]
            printer.learn(docs)
            show_list(docs)
            _watching()
            listed = True
        fields: dict[str, str] = {}
        async for line in response.aiter_lines():
            if line.startswith(":"):
                continue
            if line:
                name, _, value = line.partition(": ")
                fields[name] = value
                continue
            if "data" in fields:
                try:
                    doc = json.loads(fields["data"])
                except ValueError:
                    fail(f"--server {url}: not a Podium event stream (an event's data is"
                         " not JSON) (fix: the URL of a podium serve)")
                doc["type"] = fields.get("event", doc.get("type"))
                printer(doc)
            if "id" in fields:
                last = fields["id"]  # (an id alone: where to go on from)
            fields = {}
    return last, listed


def _watching() -> None:
    err("watching for changes (Ctrl-C to stop)")


def _refused(url: str, response: Any) -> None:
    fail(f"--server {url}: {server_message(response)}")
