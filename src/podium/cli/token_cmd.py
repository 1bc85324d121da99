"""``podium token``: the API tokens that ``podium serve`` checks (``podium.auth``).

``create`` prints the token once, on stdout; the database keeps only a salted slow
hash of its secret, so nothing can show it again. ``list`` never shows a secret.
"""

# Annotations stay evaluated (no ``from __future__ import annotations``), as in the
# other command modules: typer reads every command's signature at start-up.

import sys
from typing import Annotated, Any

import typer

from podium.cli.app import DbOpt, JsonOpt, app
from podium.cli.common import dump_json, err, fail, guarded, run_async, shown

token_app = typer.Typer(
    help="API tokens for `podium serve`: create (shown once), list, revoke.",
    no_args_is_help=True)
app.add_typer(token_app, name="token")

_SCOPES = ("read", "write", "admin", "agent")


@token_app.command("create")
def create(
    scope: Annotated[
        str, typer.Option("--scope", metavar="SCOPE",
                          help="read, write (and read), admin (everything) or agent (only"
                          " agents registering themselves).")],
    name: Annotated[
        str | None, typer.Option("--name", metavar="NAME",
                                 help="What it is for, e.g. ci-deploy (1-64 printable"
                                 " characters).")
    ] = None,
    expires: Annotated[
        str | None, typer.Option("--expires", metavar="DURATION",
                                 help="Its lifetime, e.g. 30d (1m to 10 years; default:"
                                 " it never expires).")
    ] = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a token and print it, once: only a hash of it is kept."""

    def body() -> None:
        from podium.auth import MAX_NAME_CHARS, MIN_EXPIRES_S, Scope, create_token, name_problem
        from podium.definition.durations import parse_duration

        if scope not in _SCOPES:
            fail(f"--scope '{shown(scope)}': one of {', '.join(_SCOPES)} (fix: e.g."
                 " --scope read)")
        if name is not None and (problem := name_problem(name)):
            fail(f"--name '{shown(name, MAX_NAME_CHARS)}': {problem} (fix: e.g. --name"
                 " ci-deploy)")
        expires_s = None
        if expires is not None:
            try:
                expires_s = parse_duration(expires)
            except ValueError as exc:
                fail(f"--expires '{shown(expires)}': {exc} (fix: e.g. --expires 30d)")
            if expires_s < MIN_EXPIRES_S:
                fail(f"--expires '{shown(expires)}': at least 1m (fix: e.g. --expires 30d)")

        async def go() -> Any:
            from podium.store.factory import default_db_url, open_store

            store = open_store(default_db_url(db))
            await store.open()
            try:
                return await create_token(store, Scope(scope), name, expires_s,
                                          await store.now())
            finally:
                await store.close()

        token, record = run_async(go, json_stdout=as_json)
        if as_json:
            dump_json({"token": token, "id": record.id, "name": record.name,
                       "scope": str(record.scope),
                       **_times(record, "created_at", "expires_at")})
        else:
            print(token, flush=True)
        until = (f"until {_at(record.expires_at)}" if record.expires_at is not None
                 else "with no expiry")
        err(f"token {record.id} ({record.scope}) created, {until}. It is shown only this"
            " once (podium keeps a hash of it): keep it in a secret store. A client sends"
            " it as the header 'Authorization: Bearer <the token>'.")

    guarded(body, as_json=as_json)


@token_app.command("list")
def list_(db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """The tokens (never their secrets): scope, status, created, expires, last used."""

    async def go() -> Any:
        from podium.store.factory import default_db_url, open_store

        store = open_store(default_db_url(db), readonly=True)
        await store.open()
        try:
            return await store.list_tokens(), await store.now()
        finally:
            await store.close()

    def body() -> None:
        from podium.auth import token_status

        found, now = run_async(go, json_stdout=as_json)
        if as_json:
            dump_json([{**_doc(r), "status": token_status(r, now)} for r in found])
            return
        if not found:
            print("no tokens (create one: podium token create --scope read)")
            return
        print(f"{'ID':<13} {'NAME':<24} {'SCOPE':<6} {'STATUS':<8} {'CREATED':<21}"
              f" {'EXPIRES':<21} LAST USED")
        for r in found:
            expires = _at(r.expires_at) if r.expires_at is not None else "never"
            used = _at(r.last_used_at) if r.last_used_at is not None else "never"
            print(f"{r.id:<13} {shown(r.name, 24) or '-':<24} {r.scope:<6}"
                  f" {token_status(r, now):<8} {_at(r.created_at):<21} {expires:<21} {used}",
                  file=sys.stdout)

    guarded(body, as_json=as_json)


@token_app.command("revoke")
def revoke(
    token_id: Annotated[str, typer.Argument(metavar="ID",
                                            help="The token's id (see `podium token list`).")],
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke a token: `podium serve` refuses it within 30 seconds."""

    def body() -> None:
        from podium.auth import CACHE_S, ID_PATTERN, parse_token

        whole = parse_token(token_id)
        ident = whole[0] if whole is not None else token_id  # the whole token: its id
        if not ID_PATTERN.fullmatch(ident):
            fail(f"'{shown(token_id)}' is not a token id: 12 of a-z and 2-7 (fix: see"
                 " `podium token list`)")

        async def go() -> Any:
            from podium.store.factory import default_db_url, open_store

            store = open_store(default_db_url(db))
            await store.open()
            try:
                done = await store.revoke_token(ident, await store.now())
                return done, await store.token_secret(ident)
            finally:
                await store.close()

        done, found = run_async(go, json_stdout=as_json)
        if found is None:
            fail(f"no token {ident!r} (fix: see `podium token list` for the ids)")
        record = found[0]
        if not done:
            fail(f"token {ident} was revoked already, at {_at(record.revoked_at)} (fix:"
                 " nothing to do; see `podium token list`)")
        if as_json:
            dump_json({**_doc(record), "status": "revoked"})
        else:
            err(f"token {ident}{f' ({record.name})' if record.name else ''} revoked;"
                f" `podium serve` refuses it within {CACHE_S:.0f} s")

    guarded(body, as_json=as_json)


def _times(record: Any, *keys: str) -> dict[str, Any]:
    from podium.docs import rfc3339

    return {k: rfc3339(getattr(record, k)) for k in keys}


def _doc(record: Any) -> dict[str, Any]:
    """A token as ``--json`` shows it: never its secret (the record has none)."""
    return {"id": record.id, "name": record.name, "scope": str(record.scope),
            **_times(record, "created_at", "expires_at", "revoked_at", "last_used_at")}


def _at(ts: float | None) -> str:
    import time

    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))
