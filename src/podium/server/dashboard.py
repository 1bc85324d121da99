"""The dashboard: static pages served by the API app, and the routes only they need.

``/`` is the page and ``/ui/<file>`` its scripts and styles, from ``static/`` in the
package (plain HTML, CSS and ES modules: nothing to build, nothing fetched from
another site). Everything the page shows it reads from the API itself, with the
session cookie of ``POST /session`` (see ``podium.server.session``) or, while the
server is open, with nothing.

The page's own answers carry a Content-Security-Policy that allows scripts, styles
and connections from this origin only and no inline script: step outputs are the
users' data, and the page writes them with ``textContent`` only, but should a
mistake ever put markup in, the browser still runs none of it.
"""

from __future__ import annotations

import re
from importlib.resources import files
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from podium.server.session import CSRF_COOKIE, SESSION_COOKIE, SESSION_S

if TYPE_CHECKING:
    from podium.auth import Principal
    from podium.server.api import _Guard
    from podium.server.app import PodiumServer

__all__ = ["CSP", "add_dashboard"]

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
       " connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
_ASSET = re.compile(r"[a-z0-9][a-z0-9-]{0,63}\.(?:html|js|css|svg)")


class Login(BaseModel):
    token: str = Field(..., min_length=1, max_length=256, description="An API token")


def _asset(name: str) -> bytes | None:
    if not _ASSET.fullmatch(name):
        return None  # no path, no dot-dot: only a file of static/ by its plain name
    path = files("podium.server").joinpath("static", name)
    return path.read_bytes() if path.is_file() else None


def add_dashboard(app: FastAPI, server: PodiumServer, guard: _Guard) -> None:
    """The page, its files, the session routes, and a run's graph as JSON."""
    from podium.server.api import ApiError

    read = guard.need("read")

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        body = _asset("index.html")
        assert body is not None, "podium.server/static/index.html is part of the package"
        return Response(body, media_type=_TYPES[".html"], headers=_HEADERS)

    @app.get("/ui/{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        body = _asset(name)
        if body is None:
            raise ApiError(404, "not_found", f"no dashboard file {name[:64]!r}")
        return Response(body, media_type=_TYPES["." + name.rsplit(".", 1)[1]],
                        headers=_HEADERS)

    @app.get("/session", tags=["session"])
    async def whoami(request: Request) -> dict[str, Any]:
        """Who the dashboard is logged in as (``user`` null: not logged in); ``open``:
        the server needs no token at all (no token exists, loopback bind)."""
        if await guard.is_open(request):
            return {"open": True, "user": {"name": "anyone on this machine",
                                           "scope": "admin"}}
        session = await guard.sessions.get(request.cookies.get(SESSION_COOKIE))
        if session is None:
            return {"open": False, "user": None}
        p = session.principal
        return {"open": False, "user": {"name": p.name, "scope": str(p.scope)}}

    def start_session(request: Request, answer: Response, principal: Principal,
                      expires: float | None) -> Response:
        sid, session = guard.sessions.open(principal, expires)
        secure = request.url.scheme == "https"
        max_age = int(SESSION_S) if expires is None else max(
            1, int(session.expires_at - guard.sessions.clock.now()))
        answer.set_cookie(SESSION_COOKIE, sid, max_age=max_age, path="/", secure=secure,
                          httponly=True, samesite="strict")
        answer.set_cookie(CSRF_COOKIE, session.csrf, max_age=max_age, path="/",
                          secure=secure, httponly=False, samesite="strict")
        return answer

    @app.post("/session", tags=["session"])
    async def login(body: Login, request: Request) -> Response:
        """Log the dashboard in with a token: sets the session and CSRF cookies."""
        auth = server.auth
        principal = await auth.authenticate(body.token.strip()) if auth is not None else None
        if principal is None:
            raise ApiError(401, "unauthorized", "the token is unknown, expired or revoked"
                           " (fix: podium token create --scope read|write|admin)")
        found = await auth.store.token_secret(principal.token_id) if auth else None
        expires = found[0].expires_at if found is not None else None
        answer = JSONResponse({"user": {"name": principal.name,
                                        "scope": str(principal.scope)}})
        return start_session(request, answer, principal, expires)

    @app.get("/session/link", include_in_schema=False)
    async def login_link(request: Request, code: str = "") -> Response:
        """A one-time login link (``podium demo --ui`` prints one): its code opens a
        session once, then the dashboard; an unknown or used code lands on the
        dashboard's own login form."""
        found = server.logins.redeem(code)
        answer = RedirectResponse("/", status_code=303, headers={
            "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})
        if found is None:
            return answer
        return start_session(request, answer, *found)

    @app.delete("/session", tags=["session"])
    async def logout(request: Request) -> JSONResponse:
        """Log out: the session ends here, and its cookies are cleared."""
        guard.sessions.close(request.cookies.get(SESSION_COOKIE))
        answer = JSONResponse({"user": None})
        for name in (SESSION_COOKIE, CSRF_COOKIE):
            answer.delete_cookie(name, path="/", samesite="strict",
                                 secure=request.url.scheme == "https",
                                 httponly=name == SESSION_COOKIE)
        return answer

    @app.get("/runs/{run_id}/graph", tags=["runs"], dependencies=[Depends(read)])
    async def graph(run_id: str) -> dict[str, Any]:
        """The run's plan as nodes (steps, with their current status and their input as
        the definition writes it, expressions unevaluated) and edges."""
        from podium.definition.loader import workflow_from_dict
        from podium.definition.plan import compile_plan
        from podium.server.api import _id

        run = await server.engine.store.get_run(_id(run_id))
        plan = compile_plan(workflow_from_dict(run.definition))
        steps = run.steps
        nodes = []
        for n in plan.nodes:
            state = steps.get(n.id)
            nodes.append({"id": n.id, "agent": n.agent or None,
                          "workflow": n.step.workflow, "optional": n.optional,
                          "for_each": n.step.for_each is not None,
                          "waits": None if n.wait is None else n.wait.kind,
                          "trigger": n.trigger, "input": n.step.input,
                          "status": getattr(state, "status", None) or "pending",
                          "attempts": getattr(state, "attempts", 0)})
        edges = [{"from": plan.nodes[d].id, "to": n.id, "trigger": n.trigger}
                 for n in plan.nodes for d in n.deps]
        return {"run_id": run.run_id, "workflow": run.workflow, "status": run.status,
                "nodes": nodes, "edges": edges}

