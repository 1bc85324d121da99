"""Everything at once: ``GET /events`` (every run's committed events, in commit order,
resumable with ``Last-Event-ID``) and ``podium runs --watch`` (each run's changes of
state, from a server's stream or from the database), against a real ``podium serve``
process on 127.0.0.1 and a real SQLite file."""

from __future__ import annotations

import json
import signal
import threading
from typing import Any

import httpx

from tests.integration.podium_proc import Sandbox, wait_for
from tests.integration.test_api import RECORD, SLOW, Api, _token, api, start

__all__ = ["api"]  # the fixture, shared

Item = tuple[str, str, dict[str, Any]]  # (id, event, data)


def feed(api: Api, *, last: str | None = None, stop: Any = None, params: Any = None,
         token: str | None = None, opened: threading.Event | None = None) -> list[Item]:
    """Read ``/events`` until ``stop(items)`` says enough (the stream itself never ends)."""
    headers = {**api.headers(token), **({"Last-Event-ID": last} if last else {})}
    out: list[Item] = []
    with httpx.stream("GET", f"{api.url}/events", headers=headers, params=params,
                      timeout=30) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        if opened is not None:
            opened.set()  # the stream's start is fixed once its headers are sent
        fields: dict[str, str] = {}
        for line in r.iter_lines():
            if line.startswith(":"):
                continue
            if line:
                name, _, value = line.partition(": ")
                fields[name] = value
                continue
            if not fields:
                continue  # the end of a comment
            out.append((fields["id"], fields["event"], json.loads(fields["data"])))
            fields = {}
            if stop(out):
                break
    return out


def _finished(n: int) -> Any:
    return lambda items: sum(e == "run_finished" for _, e, _ in items) >= n


def _key(eid: str) -> tuple[int, int, str]:
    tx, seq, run_id = eid.split("-", 2)
    return int(tx), int(seq), run_id


def test_every_runs_events_once_in_commit_order_and_a_dropped_stream_resumes(
        api: Api) -> None:
    api.post("/runs", {"definition": RECORD, "input": {"n": 0}})  # before: not in a live feed
    first = api.until_status(api.get("/runs").json()["runs"][0]["run_id"], "succeeded")
    # From the start of the feed: the run from before is there.
    everything = feed(api, params={"after": "0"}, stop=_finished(1))
    assert {d["run_id"] for _, _, d in everything} == {first["run_id"]}

    got: list[Item] = []
    opened = threading.Event()
    reader = threading.Thread(target=lambda: got.extend(feed(
        api, opened=opened, stop=lambda items: len(items) >= 6)))
    reader.start()
    assert opened.wait(10)
    runs = [api.post("/runs", {"definition": SLOW if i == 0 else RECORD,
                               "input": None if i == 0 else {"n": i}}).json()["run_id"]
            for i in range(3)]
    reader.join(30)
    assert not reader.is_alive()
    assert len(got) == 6
    # The stream dropped after 6 events: go on from the last id, as a browser would.
    rest = feed(api, last=got[-1][0], stop=_finished(3))
    items = got + rest
    ids = [i for i, _, _ in items]
    assert len(set(ids)) == len(ids)  # nothing twice
    assert [_key(i) for i in ids] == sorted(
        (_key(i) for i in ids), key=lambda k: (k[0], k[2], k[1]))  # commit order
    assert first["run_id"] not in {d["run_id"] for _, _, d in items}  # live from the head
    for run_id in runs:  # nothing missed: each run's whole timeline, in order
        timeline = api.get(f"/runs/{run_id}").json()["timeline"]
        mine = [(e, d) for _, e, d in items if d["run_id"] == run_id]
        assert [e for e, _ in mine] == [t["type"] for t in timeline]
        assert [_key(i)[1] for i, _, d in items if d["run_id"] == run_id] == list(
            range(1, len(timeline) + 1))

    only = feed(api, params={"after": "0", "types": "run_started,run_finished"},
                stop=_finished(4))
    assert {e for _, e, _ in only} == {"run_started", "run_finished"}
    assert len(only) == 8

    bad = httpx.get(api.url + "/events", headers={"Last-Event-ID": "nope"}, timeout=10)
    assert bad.status_code == 400
    assert "not an event id" in bad.json()["error"]["message"]


def test_the_feed_needs_a_read_token(sandbox: Sandbox) -> None:
    read = _token(sandbox, "read")
    api = start(sandbox)
    assert httpx.get(api.url + "/events", timeout=10).status_code == 401
    api.token = read
    run_id = api.post("/runs", {"definition": RECORD}, token=_token(sandbox, "write")
                      ).json()["run_id"]
    items = feed(api, params={"after": "0"}, stop=_finished(1))
    assert {d["run_id"] for _, _, d in items} == {run_id}


def test_runs_watch_prints_each_change_from_the_database_or_a_server(
        sandbox: Sandbox) -> None:
    sb = sandbox
    api = start(sb)
    done = api.post("/runs", {"definition": RECORD, "input": {"n": 1}}).json()["run_id"]
    api.until_status(done, "succeeded")
    from_db = sb.spawn("runs", "--watch")
    from_server = sb.spawn("runs", "--watch", "--json", "--server", api.url)
    assert wait_for(lambda: "watching" in sb.stderr_of(from_db)
                    and "watching" in sb.stderr_of(from_server), 30, 0.05), (
        sb.stderr_of(from_db), sb.stderr_of(from_server))
    ok = api.post("/runs", {"definition": RECORD, "input": {"n": 2}}).json()["run_id"]
    bad = api.post("/runs", {"definition": {"name": "bad", "steps": [
        {"id": "x", "agent": "always-fail"}]}}).json()["run_id"]
    api.until_status(ok, "succeeded")
    api.until_status(bad, "failed")

    def lines(proc: Any) -> list[str]:
        return sb.stdout_of(proc).splitlines()

    assert wait_for(lambda: any(f"{bad} bad failed" in ln for ln in lines(from_db)), 30, 0.1), (
        lines(from_db), sb.stderr_of(from_db))
    assert wait_for(lambda: sum('"run_finished"' in ln for ln in lines(from_server)) >= 2,
                    30, 0.1), (lines(from_server), sb.stderr_of(from_server))
    for proc in (from_db, from_server):
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0, sb.stderr_of(proc)
        assert "Traceback" not in sb.stderr_of(proc)
    text = lines(from_db)
    assert text[0].startswith("RUN ")
    assert any(done in ln and "succeeded" in ln for ln in text[1:3])  # the list first
    changes = [ln.split(" ", 1)[1] for ln in text if ln[:2].isdigit() and ln[2] == ":"]
    assert f"{ok} rec started" in changes
    assert any(c.startswith(f"{ok} rec succeeded after ") for c in changes)
    failed = [c for c in changes if c.startswith(f"{bad} bad failed after ")]
    assert len(failed) == 1, changes
    assert ": " in failed[0].split(" after ", 1)[1], changes
    assert changes.index(f"{ok} rec started") < next(
        i for i, c in enumerate(changes) if c.startswith(f"{ok} rec succeeded"))
    assert not any(done in c for c in changes)  # finished before the watch: listed only
    docs = [json.loads(ln) for ln in lines(from_server)]
    assert docs[0]["run_id"] == done
    assert docs[0]["status"] == "succeeded"
    finished = {d["run_id"]: d for d in docs if d.get("event") == "run_finished"}
    assert finished[ok]["status"] == "succeeded"
    assert finished[ok]["workflow"] == "rec"
    assert finished[bad]["status"] == "failed"
    assert finished[bad]["error"]["type"]
    started = [d["run_id"] for d in docs if d.get("event") == "run_started"]
    assert sorted(started) == sorted([ok, bad])  # each once

    stray = sb.podium("runs", "--server", api.url)
    assert stray.returncode == 2
    assert "go with --watch" in stray.stderr
