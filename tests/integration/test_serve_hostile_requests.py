"""Both HTTP servers against hostile and careless requests, on real sockets.

``podium agent serve`` and ``podium serve`` run as subprocesses on 127.0.0.1,
started as a user starts them (the CLI), or through their Python ``serve``
function where a test needs deadlines shorter than the defaults. Requests
come from httpx where a well-behaved client would send them, and from raw
sockets where none would (a body declared at 512 MiB, headers a byte at a
time, connections that never send anything). The agent records every call in
``calls.log``, so a test sees whether a refused request reached the function.

Time bounds here catch hangs (a server that never drops a connection), with
margins of several times the deadline under test; memory bounds catch a
buffered body (hundreds of MiB), with margins of tens of MiB.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.observe_tools import free_port

TOKEN_ENV = "PODIUM_TEST_AGENT_TOKEN"  # noqa: S105 - the name of a variable
TOKEN = "t0k3n-only-this-test-knows-5f2c"  # noqa: S105 - a test token for a test server

AGENT_MODULE = '''
from pathlib import Path


def record(task):
    with Path("calls.log").open("a", encoding="utf-8") as fh:
        fh.write(task.step_id + "\\n")
    return {"called": task.step_id}
'''


def task_body(step: str = "s") -> bytes:
    return json.dumps({"run_id": "r", "step_id": step, "attempt": 1,
                       "idempotency_key": f"r:{step}", "capability": "rec",
                       "input": {}}).encode()


JSON = {"Content-Type": "application/json"}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "guard_agents.py").write_text(AGENT_MODULE, encoding="utf-8")
    return tmp_path


def calls(folder: Path) -> list[str]:
    path = folder / "calls.log"
    return path.read_text(encoding="utf-8").split() if path.exists() else []


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


class Server:
    """A server subprocess: its URL, port, process and log."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc, self.port, self.log_path = proc, port, log
        self.url = f"http://127.0.0.1:{port}"

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


@contextlib.contextmanager
def running(args: list[str], folder: Path, port: int, ready: str = "/health",
            env: dict[str, str] | None = None) -> Iterator[Server]:
    """Start ``python ARGS`` in ``folder``, wait until ``ready`` answers, stop it with SIGTERM."""
    log_path = folder / f"server-{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, *args], cwd=folder, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    server = Server(proc, port, log_path)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}:\n{server.log()}")
            try:
                if httpx.get(server.url + ready, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server did not come up:\n{server.log()}")
            time.sleep(0.05)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    assert "Traceback" not in server.log(), server.log()


def agent_cli(port: int, *more: str) -> list[str]:
    return ["-m", "podium", "agent", "serve", "guard_agents:record", "--capability", "rec",
            "--port", str(port), *more]


def agent_api(port: int, limits: str) -> list[str]:
    return ["-c", "from podium.agents.serve import serve; from podium.httpd import HttpLimits; "
                  f"serve('guard_agents:record', capability='rec', port={port}, "
                  f"limits=HttpLimits({limits}))"]


# --- request bodies ---------------------------------------------------------------


def test_a_body_declared_larger_than_the_limit_is_413_before_any_of_it_is_read(
    folder: Path,
) -> None:
    port = free_port()
    with running(agent_cli(port, "--max-body-bytes", str(1024 * 1024)), folder, port) as srv:
        before = rss_kib(srv.proc.pid)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.putrequest("POST", "/invoke")
            conn.putheader("Content-Type", "application/json")
            conn.putheader("Content-Length", str(512 * 1024 * 1024))
            conn.endheaders()  # and not one byte of the body: the answer comes anyway
            response = conn.getresponse()
            status, doc = response.status, json.loads(response.read())
        finally:
            conn.close()
        grown = rss_kib(srv.proc.pid) - before
    assert status == 413
    assert doc["error"]["type"] == "invalid_input"
    assert doc["error"]["retryable"] is False
    assert "larger than 1048576 bytes" in doc["error"]["message"]
    assert "--max-body-bytes" in doc["error"]["message"]
    assert grown < 16 * 1024, f"RSS grew by {grown} KiB"
    assert calls(folder) == []


def test_an_oversize_chunked_body_gets_413_and_the_server_does_not_hold_it(
    folder: Path,
) -> None:
    """256 MiB streamed without a length, against the default 16 MiB limit."""
    port = free_port()
    chunk = b"x" * (1024 * 1024)
    with running(agent_cli(port), folder, port) as srv:
        before = rss_kib(srv.proc.pid)
        with httpx.Client(timeout=60) as client:
            response = client.post(srv.url + "/invoke", headers=JSON,
                                   content=(chunk for _ in range(256)))
            grown = rss_kib(srv.proc.pid) - before
            assert response.status_code == 413, response.text
            assert "larger than 16777216 bytes" in response.json()["error"]["message"]
            # The connection was not poisoned, and the server still works.
            ok = client.post(srv.url + "/invoke", headers=JSON, content=task_body("after"))
    assert ok.status_code == 200, ok.text
    assert grown < 80 * 1024, f"RSS grew by {grown} KiB for a 256 MiB body"
    assert calls(folder) == ["after"]


def test_a_body_within_the_limit_is_served(folder: Path) -> None:
    port = free_port()
    with running(agent_cli(port, "--max-body-bytes", "2000"), folder, port) as srv:
        small = httpx.post(srv.url + "/invoke", headers=JSON, content=task_body("small"))
        big = httpx.post(srv.url + "/invoke", headers=JSON,
                         content=task_body("big")[:-1] + b', "pad": "' + b"p" * 2000 + b'"}')
    assert small.status_code == 200
    assert big.status_code == 413
    assert calls(folder) == ["small"]


# --- who may call -----------------------------------------------------------------


def test_with_token_env_invoke_needs_the_bearer_token_and_the_token_is_never_shown(
    folder: Path,
) -> None:
    port = free_port()
    # Kept with a trailing newline (as `$(cat file)` would not, but an env file may).
    with running(agent_cli(port, "--token-env", TOKEN_ENV), folder, port,
                 env={TOKEN_ENV: TOKEN + "\n"}) as srv:
        url = srv.url + "/invoke"
        missing = httpx.post(url, headers=JSON, content=task_body("missing"))
        wrong = httpx.post(url, headers={**JSON, "Authorization": f"Bearer {TOKEN}x"},
                           content=task_body("wrong"))
        basic = httpx.post(url, headers={**JSON, "Authorization": f"Basic {TOKEN}"},
                           content=task_body("basic"))
        right = httpx.post(url, headers={**JSON, "Authorization": f"Bearer {TOKEN}"},
                           content=task_body("right"))
        probe = httpx.get(srv.url + "/health").json()
        checked = httpx.get(srv.url + "/health",
                            headers={"Authorization": f"Bearer {TOKEN}"}).json()
        log = srv.log()
    for refused in (missing, wrong, basic):
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        error = refused.json()["error"]
        assert error["type"] == "invalid_input"
        assert error["retryable"] is False
        assert "bearer token" in error["message"]
        assert TOKEN not in refused.text
    assert right.status_code == 200
    assert right.json() == {"output": {"called": "right"}}
    assert calls(folder) == ["right"]
    # Probes get the protocol's fields; the agent's details need the token.
    assert probe == {"status": "healthy", "load": 0.0}
    assert checked["capability"] == "rec"
    assert TOKEN not in log
    assert "no --token-env" not in log


def test_without_a_token_the_server_warns_at_start_up_that_anyone_may_call_it(
    folder: Path,
) -> None:
    port = free_port()
    with running(agent_cli(port), folder, port) as srv:
        pass
    assert f"no --token-env, so any program that can reach http://127.0.0.1:{port}" in srv.log()


def test_podium_run_calls_a_token_protected_agent_with_its_agents_file_token_env(
    folder: Path,
) -> None:
    """Podium's own client, configured as users do, gets through every check."""
    port = free_port()
    (folder / "podium.yaml").write_text(
        "agents:\n"
        f"  - {{id: guarded, capabilities: [rec], url: 'http://localhost:{port}',"
        f" token_env: {TOKEN_ENV}}}\n", encoding="utf-8")
    (folder / "wf.yaml").write_text("name: guarded\nsteps:\n  - {id: one, agent: rec}\n",
                                    encoding="utf-8")
    env = {TOKEN_ENV: TOKEN}
    with running(agent_cli(port, "--token-env", TOKEN_ENV), folder, port, env=env):
        result = subprocess.run(
            [sys.executable, "-m", "podium", "run", "wf.yaml", "--json",
             "--db", f"sqlite:///{folder / 'p.db'}"],
            cwd=folder, env={**os.environ, **env}, capture_output=True, text=True,
            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["status"] == "succeeded"
    assert doc["steps"]["one"]["output"] == {"called": "one"}
    assert calls(folder) == ["one"]


# --- browsers: other sites' pages and rebound names --------------------------------


def test_a_cross_origin_text_plain_post_is_refused_and_the_function_is_not_called(
    folder: Path,
) -> None:
    """What any web page can send without a CORS preflight, and what it cannot forge."""
    port = free_port()
    with running(agent_cli(port), folder, port) as srv:
        url = srv.url + "/invoke"
        page = {"Origin": "http://evil.example", "Content-Type": "text/plain"}
        from_page = httpx.post(url, headers=page, content=task_body("page"))
        plain = httpx.post(url, headers={"Content-Type": "text/plain"}, content=task_body("p"))
        no_type = httpx.post(url, content=task_body("none"))
        cross = httpx.post(url, headers={**JSON, "Origin": "http://evil.example"},
                           content=task_body("cross"))
        null = httpx.post(url, headers={**JSON, "Origin": "null"}, content=task_body("null"))
        other_port = httpx.post(url, headers={**JSON, "Origin": "http://127.0.0.1:1"},
                                content=task_body("port"))
        site = httpx.post(url, headers={**JSON, "Sec-Fetch-Site": "cross-site"},
                          content=task_body("site"))
        same_site = httpx.post(url, headers={**JSON, "Sec-Fetch-Site": "same-site"},
                               content=task_body("samesite"))
        same = httpx.post(url, headers={**JSON, "Origin": srv.url,
                                        "Sec-Fetch-Site": "same-origin"},
                          content=task_body("same"))
    assert from_page.status_code == 403
    assert "cross-origin" in from_page.json()["error"]["message"]
    assert plain.status_code == 415
    assert "application/json" in plain.json()["error"]["message"]
    assert no_type.status_code == 415
    assert [r.status_code for r in (cross, null, other_port, site, same_site)] == [403] * 5
    assert same.status_code == 200
    assert calls(folder) == ["same"]


def test_a_request_naming_another_host_is_421_unless_the_name_is_allowed(
    folder: Path,
) -> None:
    """DNS rebinding: a page's own name pointed at 127.0.0.1 arrives with that name as Host."""
    port = free_port()
    with running(agent_cli(port, "--allowed-host", "agents.internal"), folder, port) as srv:
        url = srv.url + "/invoke"

        def status(host: str, step: str) -> int:
            return httpx.post(url, headers={**JSON, "Host": host},
                              content=task_body(step)).status_code

        got = {
            "evil.example": status("evil.example", "evil"),
            f"evil.example:{port}": status(f"evil.example:{port}", "evilport"),
            f"127.0.0.1:{port + 1}": status(f"127.0.0.1:{port + 1}", "otherport"),
            "127.0.0.1": status("127.0.0.1", "noport"),
            f"localhost:{port}": status(f"localhost:{port}", "localhost"),
            f"LOCALHOST:{port}": status(f"LOCALHOST:{port}", "upper"),
            "agents.internal:443": status("agents.internal:443", "named"),
        }
        evil = httpx.post(url, headers={**JSON, "Host": "evil.example"}, content=task_body("x"))
    assert got == {"evil.example": 421, f"evil.example:{port}": 421,
                   f"127.0.0.1:{port + 1}": 421, "127.0.0.1": 421,
                   f"localhost:{port}": 200, f"LOCALHOST:{port}": 200,
                   "agents.internal:443": 200}
    assert "--allowed-host" in evil.json()["error"]["message"]
    assert calls(folder) == ["localhost", "upper", "named"]


# --- slow and idle connections ------------------------------------------------------


async def _hold(port: int, kind: str, host: str, stop_after_s: float) -> float | None:
    """Connect and misbehave; return after how long the server closed us (None: it never did)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = time.monotonic()
    head = (f"POST /invoke HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            "Content-Length: 100\r\n\r\n").encode()
    trickle = head if kind == "headers" else (b"x" * 100 if kind == "body" else b"")
    if kind == "body":
        writer.write(head)
    try:
        i = 0
        while time.monotonic() - start < stop_after_s:
            if i < len(trickle):
                writer.write(trickle[i:i + 1])  # one byte at a time
                i += 1
            try:
                data = await asyncio.wait_for(reader.read(65536), 0.25)
            except TimeoutError:
                continue
            if not data:  # closed by the server (an answer may come first: read on)
                return time.monotonic() - start
        return None
    except (ConnectionError, OSError):
        return time.monotonic() - start
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


async def _attack(server: Server, host: str, legit_path: str) -> None:
    """400 half-open connections; each must be dropped near its deadline, and real calls work."""
    kinds = ["idle"] * 200 + ["headers"] * 150 + (["body"] * 50 if legit_path == "/invoke"
                                                 else ["headers"] * 50)
    holders = [asyncio.create_task(_hold(server.port, kind, host, stop_after_s=12))
               for kind in kinds]
    await asyncio.sleep(0.5)
    async with httpx.AsyncClient(timeout=10) as client:  # served meanwhile
        if legit_path == "/invoke":
            legit = await client.post(server.url + "/invoke", headers=JSON,
                                      content=task_body("legit"))
        else:
            legit = await client.get(server.url + legit_path)
    assert legit.status_code == 200, legit.text
    dropped = await asyncio.gather(*holders)
    never = [kind for kind, after in zip(kinds, dropped, strict=True) if after is None]
    assert never == [], f"{len(never)} connections never dropped: {sorted(set(never))}"
    slowest = max(after for after in dropped if after is not None)
    # Deadlines of 1 s (idle, headers) and 1 + 1 s (body): dropped well before 12 s.
    assert slowest < 8, slowest


SHORT = "header_timeout_s=1.0, body_timeout_s=1.0, idle_timeout_s=1"


async def test_podium_agent_serve_drops_idle_slowloris_and_slow_body_connections(
    folder: Path,
) -> None:
    port = free_port()
    with running(agent_api(port, SHORT), folder, port) as srv:
        await _attack(srv, f"127.0.0.1:{port}", "/invoke")
    assert calls(folder) == ["legit"]


async def test_podium_serve_drops_idle_and_slowloris_connections(folder: Path) -> None:
    port = free_port()
    args = ["-c", "from podium.server.app import ServerConfig, serve; "
                  "from podium.httpd import HttpLimits; "
                  f"serve('127.0.0.1', {port}, ServerConfig(db={str(folder / 'p.db')!r}), "
                  f"limits=HttpLimits({SHORT}))"]
    with running(args, folder, port, ready="/healthz") as srv:
        await _attack(srv, f"127.0.0.1:{port}", "/metrics")


def test_endless_headers_are_cut_at_the_header_limit(folder: Path) -> None:
    """The head limit (16 KiB by default) bounds what an unfinished request may pile up."""
    port = free_port()
    with running(agent_cli(port), folder, port) as srv, \
            socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        before = rss_kib(srv.proc.pid)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nX-Big: " % port)
        answer = b""
        with contextlib.suppress(ConnectionError):
            for _ in range(1024):  # up to 64 MiB of one header line, never ended
                sock.sendall(b"a" * 65536)
                if b"\r\n\r\n" in answer:
                    break
                sock.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    answer += sock.recv(4096)
                sock.setblocking(True)
        sock.settimeout(10)
        with contextlib.suppress(ConnectionError):
            answer += sock.recv(4096)
        grown = rss_kib(srv.proc.pid) - before
    assert answer.startswith(b"HTTP/1.1 400"), answer
    assert grown < 8 * 1024, f"RSS grew by {grown} KiB"


def _exchange(port: int, parts: list[bytes]) -> bytes:
    """Send ``parts`` a write each, apart; read until an answer's head or a close."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        with contextlib.suppress(ConnectionError):  # cut off mid-way: read the answer
            for part in parts:
                sock.sendall(part)
                time.sleep(0.05)  # separate reads on the server
        answer = b""
        with contextlib.suppress(ConnectionError, TimeoutError):
            while b"\r\n\r\n" not in answer:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
    return answer


def test_a_head_over_the_limit_is_400_whether_it_arrives_whole_or_in_pieces(folder: Path) -> None:
    """Finished headers over 16 KiB in one read (the parser's own parts are counted) and
    an unfinished head trickled in pieces are both refused, and the function never runs;
    a head just under the limit, in pieces, is served."""
    port = free_port()
    with running(agent_cli(port), folder, port) as srv:
        start = b"POST /invoke HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % port

        def end(step: str) -> bytes:
            body = task_body(step)
            return (b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                    % len(body) + body)

        many = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 1000) for i in range(20))  # ~20 KiB
        whole = _exchange(port, [start + many + end("whole")])
        pieces = _exchange(port, [start] + [many[i:i + 4096] for i in range(0, len(many), 4096)]
                           + [end("pieces")])
        fits = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 1000) for i in range(12))  # ~12 KiB
        served = _exchange(port, [start] + [fits[i:i + 3000] for i in range(0, len(fits), 3000)]
                           + [end("fits")])
        assert srv.proc.poll() is None
    assert whole.startswith(b"HTTP/1.1 400"), whole[:200]
    assert pieces.startswith(b"HTTP/1.1 400"), pieces[:200]
    assert served.startswith(b"HTTP/1.1 200"), served[:300]
    assert calls(folder) == ["fits"]



def test_chunked_trailers_are_bounded_like_a_head(folder: Path) -> None:
    """A chunked body's trailer lines wait in the parser until they end, as header lines
    do: an endless one is cut near the head limit (the connection closed, the function
    never called), while a chunked body in tiny and in large chunks, with a few short
    trailers, is served."""
    port = free_port()
    head = (b"POST /invoke HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json"
            b"\r\nTransfer-Encoding: chunked\r\n\r\n" % port)

    def chunked(step: str, size: int) -> bytes:
        body = task_body(step)
        return b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size])
                        for i in range(0, len(body), size)) + b"0\r\n"

    with running(agent_cli(port), folder, port) as srv:
        tiny = _exchange(port, [head + chunked("tiny", 3) + b"\r\n"])
        large = _exchange(port, [head, chunked("large", 4096) + b"X-A: 1\r\nX-B: 2\r\n\r\n"])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            before = rss_kib(srv.proc.pid)
            sock.sendall(head + chunked("endless", 4096) + b"X-Trailer: ")
            sent = 0
            with contextlib.suppress(ConnectionError):
                for _ in range(1024):  # up to 64 MiB of one trailer line, never ended
                    sock.sendall(b"a" * 65536)
                    sent += 65536
            grown = rss_kib(srv.proc.pid) - before
        assert srv.proc.poll() is None
    assert tiny.startswith(b"HTTP/1.1 200"), tiny[:300]
    assert large.startswith(b"HTTP/1.1 200"), large[:300]
    assert sent < 32 * 1024 * 1024, f"{sent} bytes of trailer taken"
    assert grown < 8 * 1024, f"RSS grew by {grown} KiB"
    assert calls(folder) == ["tiny", "large"]


# --- podium serve ---------------------------------------------------------------------


def test_podium_serve_healthz_is_liveness_only_and_its_details_stay_on_this_machine(
    folder: Path,
) -> None:
    port = free_port()
    db = folder / "p.db"
    with running(["-m", "podium", "serve", "--port", str(port), "--db", f"sqlite:///{db}"],
                 folder, port, ready="/healthz") as srv:
        public = httpx.get(srv.url + "/healthz")
        local = httpx.get(srv.url + "/healthz?verbose").json()
        relayed = httpx.get(srv.url + "/healthz?verbose",
                            headers={"X-Forwarded-For": "203.0.113.9"})
        rebound = httpx.get(srv.url + "/healthz", headers={"Host": "evil.example"})
        localhost = httpx.get(srv.url + "/metrics", headers={"Host": f"localhost:{port}"})
        cross = httpx.get(srv.url + "/metrics", headers={"Origin": "http://evil.example"})
    assert public.json() == {"status": "ok"}
    assert str(folder) not in public.text
    assert socket.gethostname() not in public.text
    assert local["db"] == f"sqlite:///{db}"  # the detail view, from 127.0.0.1
    assert local["owner"].startswith(socket.gethostname())
    assert relayed.status_code == 403
    assert str(folder) not in relayed.text
    assert rebound.status_code == 421
    assert localhost.status_code == 200
    assert cross.status_code == 403


# --- addresses: checked before anything starts --------------------------------------


@pytest.mark.parametrize(("args", "shown"), [
    (["serve", "--port", "99999"], "--port 99999"),
    (["serve", "--port", "0"], "--port 0"),
    (["serve", "--host", "999.1.1.1"], "'999.1.1.1'"),
    (["serve", "--allowed-host", "not a name"], "'not a name'"),
    (["run", "wf.yaml", "--metrics-port", "70000"], "--metrics-port 70000"),
    (["agent", "serve", "guard_agents:record", "-c", "rec", "--port", "0"], "--port 0"),
    (["agent", "serve", "guard_agents:record", "-c", "rec", "--port", "70000"], "--port 70000"),
    (["agent", "serve", "guard_agents:record", "-c", "rec", "--port", "8080",
      "--host", "999.1.1.1"], "'999.1.1.1'"),
    (["agent", "serve", "guard_agents:record", "-c", "rec", "--port", "8080",
      "--token-env", "PODIUM_TEST_UNSET_TOKEN_VAR"], "PODIUM_TEST_UNSET_TOKEN_VAR"),
    (["agent", "serve", "guard_agents:record", "-c", "rec", "--port", "8080",
      "--max-body-bytes", "0"], "--max-body-bytes 0"),
])
def test_a_bad_address_or_setting_exits_2_naming_it_before_anything_starts(
    folder: Path, args: list[str], shown: str,
) -> None:
    (folder / "wf.yaml").write_text("name: w\nsteps:\n  - {id: a, agent: echo}\n",
                                    encoding="utf-8")
    db = folder / "p.db"
    env = {k: v for k, v in os.environ.items() if k != "PODIUM_TEST_UNSET_TOKEN_VAR"}
    result = subprocess.run([sys.executable, "-m", "podium", *args,
                             *(["--db", f"sqlite:///{db}"] if args[0] != "agent" else [])],
                            cwd=folder, env=env, capture_output=True, text=True, timeout=30,
                            check=False)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert shown in result.stderr
    assert "(fix: " in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not db.exists()  # nothing started: not even the database
    assert calls(folder) == []


def test_a_taken_metrics_port_is_a_clear_error(folder: Path) -> None:
    (folder / "wf.yaml").write_text("name: w\nsteps:\n  - {id: a, agent: echo}\n",
                                    encoding="utf-8")
    (folder / "podium.yaml").write_text(
        "agents:\n  - {id: echo, capabilities: [echo], python: 'guard_agents:record'}\n",
        encoding="utf-8")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "podium", "run", "wf.yaml", "--metrics-port", str(port),
             "--db", f"sqlite:///{folder / 'p.db'}"],
            cwd=folder, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stderr
    assert f"--metrics-port {port}: cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
    assert calls(folder) == []


def test_the_cli_default_body_limit_is_the_servers() -> None:
    from podium.cli.agent_cmd import DEFAULT_MAX_BODY_BYTES as CLI_DEFAULT
    from podium.httpd import DEFAULT_MAX_BODY_BYTES, HttpLimits

    assert CLI_DEFAULT == DEFAULT_MAX_BODY_BYTES == HttpLimits().max_body_bytes == 16 * 2**20

