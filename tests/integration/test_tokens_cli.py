"""``podium token create|list|revoke`` from the outside: real ``python -m podium``
processes on a real SQLite file (and once on a real PostgreSQL server).

The token is printed once, on stdout, and authenticates against the database it was
made in; nothing printed afterwards (``list``, ``revoke``, any message) and nothing in
the database (the file's bytes, the PostgreSQL table) holds its secret. Bad flags exit
2 naming the flag, an unusable database 3, never with a traceback.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from typing import Any

import psycopg
import pytest

from podium.auth import Authenticator, Scope, create_token
from podium.clock import SystemClock
from podium.store.postgres import PostgresStore
from podium.store.sqlite import SQLiteStore
from tests.integration.podium_proc import Sandbox

TOKEN = re.compile(r"pdm_([a-z2-7]{12})_([A-Za-z0-9_-]{43})")
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def ok(out: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    return out


def made(sb: Sandbox, *args: str, db: str | None = None) -> dict[str, Any]:
    doc = json.loads(ok(sb.podium("token", "create", *args, "--json", db=db)).stdout)
    assert isinstance(doc, dict)
    return doc


def who(url: str, token: str) -> Any:
    """Who ``token`` is to a server on that database (an ``Authenticator`` as it uses)."""

    async def go() -> Any:
        store = (SQLiteStore.from_url(url) if url.startswith("sqlite")
                 else PostgresStore.from_url(url))
        await store.open()
        try:
            return await Authenticator(store, SystemClock()).authenticate(token)
        finally:
            await store.close()

    return asyncio.run(go())


def test_create_prints_the_token_once_and_it_authenticates(sandbox: Sandbox) -> None:
    sb = sandbox
    out = ok(sb.podium("token", "create", "--scope", "write", "--name", "ci deploy",
                       "--expires", "30d"))
    token = out.stdout.strip()
    m = TOKEN.fullmatch(token)
    assert m, out.stdout
    assert out.stdout == token + "\n"
    assert "Authorization: Bearer" in out.stderr
    assert "shown only this once" in out.stderr
    assert m[1] in out.stderr
    assert m[2] not in out.stderr
    principal = who(sb.url, token)
    assert principal is not None
    assert (principal.token_id, principal.name, principal.scope) == (m[1], "ci deploy",
                                                                     Scope.WRITE)
    assert who(sb.url, token[:-1] + ("A" if token[-1] != "A" else "B")) is None


def test_create_json_is_the_token_and_its_record(sandbox: Sandbox) -> None:
    sb = sandbox
    before = time.time()
    doc = made(sb, "--scope", "agent")
    assert set(doc) == {"token", "id", "name", "scope", "created_at", "expires_at"}
    m = TOKEN.fullmatch(doc["token"])
    assert m
    assert (doc["id"], doc["name"], doc["scope"], doc["expires_at"]) == (m[1], "", "agent",
                                                                         None)
    assert RFC3339.fullmatch(doc["created_at"])
    timed = made(sb, "--scope", "read", "--expires", "1h")
    assert RFC3339.fullmatch(timed["expires_at"])
    assert timed["expires_at"] > timed["created_at"]
    assert time.strftime("%Y-%m-%d", time.gmtime(before)) <= timed["created_at"][:10]
    assert who(sb.url, doc["token"]).scope is Scope.AGENT


def test_list_shows_every_token_and_its_status_and_never_a_secret(sandbox: Sandbox) -> None:
    sb = sandbox
    empty = ok(sb.podium("token", "list"))
    assert "no tokens" in empty.stdout
    assert json.loads(ok(sb.podium("token", "list", "--json")).stdout) == []
    active = made(sb, "--scope", "read", "--name", "dash")
    revoked = made(sb, "--scope", "admin", "--name", "old")
    ok(sb.podium("token", "revoke", revoked["id"]))

    async def expired() -> str:  # made an hour ago, for a minute
        store = SQLiteStore.from_url(sb.url)
        await store.open()
        try:
            token, _ = await create_token(store, Scope.WRITE, "gone", 60.0, time.time() - 3600)
            return token
        finally:
            await store.close()

    gone = asyncio.run(expired())
    listed = json.loads(ok(sb.podium("token", "list", "--json")).stdout)
    assert [(t["id"], t["name"], t["scope"], t["status"]) for t in listed] == [
        (TOKEN.fullmatch(gone)[1], "gone", "write", "expired"),  # type: ignore[index]
        (active["id"], "dash", "read", "active"),
        (revoked["id"], "old", "admin", "revoked")]
    assert set(listed[0]) == {"id", "name", "scope", "status", "created_at", "expires_at",
                              "revoked_at", "last_used_at"}
    assert RFC3339.fullmatch(listed[2]["revoked_at"])
    table = ok(sb.podium("token", "list"))
    assert re.search(rf"{active['id']}\s+dash\s+read\s+active", table.stdout)
    assert re.search(rf"{revoked['id']}\s+old\s+admin\s+revoked", table.stdout)
    assert "expired" in table.stdout
    for token in (active["token"], revoked["token"], gone):
        secret = token[17:]
        for shown in (table.stdout, table.stderr, json.dumps(listed)):
            assert secret not in shown


def test_last_use_is_listed_once_a_server_checked_the_token(sandbox: Sandbox) -> None:
    sb = sandbox
    doc = made(sb, "--scope", "read")
    assert who(sb.url, doc["token"]) is not None
    (listed,) = json.loads(ok(sb.podium("token", "list", "--json")).stdout)
    assert RFC3339.fullmatch(listed["last_used_at"])


def test_the_database_file_holds_no_secret(sandbox: Sandbox) -> None:
    sb = sandbox
    tokens = [made(sb, "--scope", s)["token"] for s in ("read", "write", "admin", "agent")]
    ok(sb.podium("token", "list"))  # and a reader leaves nothing either
    # Every byte of the database and its write-ahead log, as a thief would copy them.
    raw = b"".join(p.read_bytes() for p in sb.db.parent.glob(sb.db.name + "*"))
    assert b"api_tokens" in raw
    for token in tokens:
        ident, secret = TOKEN.fullmatch(token).groups()  # type: ignore[union-attr]
        assert ident.encode() in raw  # the id is kept as given...
        assert secret.encode() not in raw  # ...the secret never
        assert token.encode() not in raw


def test_revoke_once_then_the_token_is_refused(sandbox: Sandbox) -> None:
    sb = sandbox
    doc = made(sb, "--scope", "write", "--name", "ci")
    assert who(sb.url, doc["token"]) is not None
    out = ok(sb.podium("token", "revoke", doc["id"]))
    assert out.stdout == ""
    assert f"token {doc['id']} (ci) revoked" in out.stderr
    assert "within 30 s" in out.stderr
    assert who(sb.url, doc["token"]) is None
    again = sb.podium("token", "revoke", doc["id"], "--json")
    assert again.returncode == 2
    error = json.loads(again.stdout)["error"]
    assert re.search(r"revoked already, at .*fix: nothing to do", error["message"])
    # The whole token (as someone who only has that would paste it) revokes its id.
    other = made(sb, "--scope", "read")
    out = ok(sb.podium("token", "revoke", other["token"], "--json"))
    got = json.loads(out.stdout)
    assert (got["id"], got["status"]) == (other["id"], "revoked")
    assert RFC3339.fullmatch(got["revoked_at"])
    assert other["token"][17:] not in out.stdout + out.stderr


@pytest.mark.parametrize(("args", "message"), [
    (("revoke", "aaaaaaaaaaaa"), r"no token 'aaaaaaaaaaaa' \(fix: see `podium token list`"),
    (("revoke", "Not-An-Id"), r"'Not-An-Id' is not a token id: 12 of a-z and 2-7 \(fix"),
    (("create", "--scope", "root"), r"--scope 'root': one of read, write, admin, agent"),
    (("create", "--scope", "read", "--name", ""), r"--name '': 1 to 64 characters"),
    (("create", "--scope", "read", "--name", "x" * 65), r"--name 'x+…': 1 to 64 characters"),
    (("create", "--scope", "read", "--name", "a\tb"), r"--name 'a\\tb': printable"),
    (("create", "--scope", "read", "--expires", "30s"), r"--expires '30s': at least 1m"),
    (("create", "--scope", "read", "--expires", "3651d"), r"--expires '3651d': .*at most 3650d"),
    (("create", "--scope", "read", "--expires", "soon"), r"--expires 'soon': .*not a duration"),
])
def test_bad_input_exits_2_naming_what_to_fix(sandbox: Sandbox, args: tuple[str, ...],
                                              message: str) -> None:
    sb = sandbox
    out = sb.podium("token", *args)
    assert out.returncode == 2, out.stderr
    assert out.stdout == ""
    assert re.search(message, out.stderr), out.stderr
    assert "Traceback" not in out.stderr
    as_json = sb.podium("token", *args, "--json")
    assert as_json.returncode == 2
    assert json.loads(as_json.stdout)["error"]["exit_code"] == 2
    if args[0] == "create":
        assert json.loads(ok(sb.podium("token", "list", "--json")).stdout) == []


def test_an_unusable_database_exits_3(sandbox: Sandbox) -> None:
    sb = sandbox
    junk = sb.root / "junk.db"
    junk.write_bytes(b"not a database " * 100)
    for args in (("create", "--scope", "read"), ("list",), ("revoke", "aaaaaaaaaaaa")):
        out = sb.podium("token", *args, "--json", db=f"sqlite:///{junk}")
        assert out.returncode == 3, out.stderr
        assert json.loads(out.stdout)["error"]["type"] == "store_error"
        assert "Traceback" not in out.stderr


@pytest.mark.postgres
def test_create_list_revoke_on_postgresql_and_the_table_holds_no_secret(
        sandbox: Sandbox, pg_url: str) -> None:
    sb = sandbox
    doc = made(sb, "--scope", "admin", "--name", "ops", "--expires", "7d", db=pg_url)
    secret = doc["token"][17:]
    assert who(pg_url, doc["token"]).scope is Scope.ADMIN
    listed = json.loads(ok(sb.podium("token", "list", "--json", db=pg_url)).stdout)
    assert [(t["id"], t["status"]) for t in listed] == [(doc["id"], "active")]
    assert RFC3339.fullmatch(listed[0]["last_used_at"])
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute("SELECT * FROM api_tokens").fetchall()
        text = conn.execute("SELECT api_tokens::text FROM api_tokens").fetchall()
    assert len(rows) == 1
    assert doc["id"] in repr(rows)
    for shown in (repr(rows), repr(text)):
        assert secret not in shown
    salt, digest = rows[0][3], rows[0][4]
    assert (len(salt), len(digest)) == (16, 32)
    ok(sb.podium("token", "revoke", doc["id"], db=pg_url))
    assert who(pg_url, doc["token"]) is None
    again = sb.podium("token", "revoke", doc["id"], db=pg_url)
    assert again.returncode == 2
    assert "revoked already" in again.stderr
