"""A2A agents: remote agents spoken to through the official ``a2a-sdk`` (protocol 1.0).

An ``A2AAgent`` is known by its base URL. Its capabilities are the skills of
its agent card (fetched from ``{url}/.well-known/agent-card.json``), plus any
capabilities configured by hand.

A step is sent as ONE message whose only part is the step's input, as any A2A
client would send it, so an agent written for no orchestrator in particular
reads it where it reads every request: a string as a text part
(``text/plain``), any other JSON value (object, list, number, boolean, null)
as a data part (``application/json``; in protocol 1.0 a data part holds a
``google.protobuf.Value``, so it takes every JSON value, not only objects).
Podium's own fields travel in the message's ``metadata``, which A2A keeps for
exactly that, under one ``podium`` key::

    {"podium": {"run_id": ..., "step_id": ..., "attempt": 2,
                "idempotency_key": ..., "capability": ...}}

(protobuf's ``Struct`` makes ``attempt`` a double on the wire). The context id
is the task's idempotency key (the same for every attempt of one step of one
run) and the message id is ``"<idempotency key>#<attempt>"``, so the remote
side can recognise a retried or resumed delivery.

The answer is either a ``Message`` (its data part, else its text, is the
output) or a ``Task``; a task that is not finished yet is polled until it
reaches a terminal or interrupted state, and the data parts (else the text) of
its artifacts are the output. Failures map onto Podium's error types; "busy"
(``AgentError.busy``) marks an agent at capacity, back-pressure rather than a
failure:

=====================================  ====================================
what happened                          raised
=====================================  ====================================
task failed / rejected / canceled      ``AgentError`` with the status message
task input-required / auth-required    ``InvalidInput``
HTTP 429                               ``RateLimited``, busy (``Retry-After`` kept)
HTTP 503 with ``Retry-After``          ``Unavailable``, busy (``Retry-After`` kept)
connection refused, network error      ``Unavailable`` (also HTTP 502/504, 503 alone)
HTTP 408, client timeout               ``AttemptTimeout``
other HTTP 4xx, invalid params/request ``InvalidInput``
other HTTP 5xx, JSON-RPC internal      ``AgentError``
=====================================  ====================================

A2A 1.0 has no error of its own for "at capacity" (a2a-sdk 1.3's JSON-RPC
codes and REST reasons cover tasks, versions and malformed requests only), so
the HTTP status is the signal on both bindings Podium speaks.

How the bytes travel: a card offering JSON-RPC (nearly all do) is spoken to by
``podium.agents.a2a_jsonrpc`` over the HTTP agents' aiohttp transport, with the
SDK's types, JSON mapping and error classes: the SDK's own client costs ~6x
more CPU per call (bench/fleet.py). Cards offering only HTTP+JSON, or a
tenant, get the SDK's client over httpx, as does ``discover()``.

Data parts travel as ``google.protobuf.Value``, which stores every number as a
double; whole numbers in the output are turned back into ints (JSON does not
tell 6 from 6.0, Python code reading the output usually does).

The SDK is an optional extra: ``pip install 'podium[a2a]'``. It is imported
lazily, so ``podium`` works without it until an A2A agent is configured. No
event loop is captured at construction; the HTTP clients are created on first
use (on the running loop) and closed by ``aclose()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from podium.agents.a2a_jsonrpc import (
    JsonRpcClient,
    as_value,
    json_numbers,
    plain_message_output,
)
from podium.agents.base import (
    DEFAULT_MAX_RESPONSE_BYTES,
    AgentBase,
    HealthReport,
    Task,
    trace_headers,
)
from podium.errors import (
    AgentError,
    AttemptTimeout,
    ConfigError,
    InvalidInput,
    OutputTooLarge,
    PodiumError,
    RateLimited,
    Unavailable,
)

if TYPE_CHECKING:
    import httpx
    from a2a.client import Client
    from a2a.types import AgentCard, Message, Part
    from a2a.types import Task as A2ATask

    from podium.agents.transport import AiohttpTransport, Timeouts

__all__ = ["INSTALL_HINT", "A2AAgent"]

log = logging.getLogger("podium.agents.a2a")

INSTALL_HINT = "pip install 'podium[a2a]'"
_WELL_KNOWN_SUFFIX = "/.well-known/agent-card.json"
# The one metadata key Podium writes on a message: its fields stay out of the
# agent's own namespace, and one key is one thing for an agent to ignore.
_METADATA_KEY = "podium"


def _require_sdk() -> None:
    """Fail early, with the fix, when the optional ``a2a`` extra is missing."""
    try:
        import a2a.client
        import a2a.types  # noqa: F401
        import httpx  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            f"A2A agents need the a2a-sdk package, which cannot be imported ({exc})"
            f" (fix: {INSTALL_HINT})"
        ) from None


def _default_id(url: str) -> str:
    parts = urlsplit(url)
    raw = (parts.netloc + parts.path).strip("/") or url
    return re.sub(r"[^A-Za-z0-9_.:-]+", "-", raw).strip("-") or "a2a-agent"


def _skills_of(card: AgentCard) -> frozenset[str]:
    """A skill's id names the capability; a skill without one is known by its name, else tags."""
    names: set[str] = set()
    for skill in card.skills:
        if skill.id:
            names.add(skill.id)
        elif skill.name:
            names.add(skill.name)
        else:
            names.update(t for t in skill.tags if t)
    return frozenset(names)


def _output_of_parts(parts: Iterable[Part]) -> tuple[bool, Any]:
    """``(found, value)``: the data part(s) if any, else the text, else nothing."""
    from a2a.helpers import get_data_parts, get_text_parts

    parts = list(parts)
    data = [json_numbers(d) for d in get_data_parts(parts)]
    if data:
        return True, data[0] if len(data) == 1 else data
    texts = get_text_parts(parts)
    if texts:
        return True, "\n".join(texts)
    return False, None


def _status_text(task: A2ATask) -> str:
    """What the remote agent said about its task's state, as one line."""
    from a2a.helpers import get_data_parts, get_text_parts

    parts = list(task.status.message.parts)
    texts = [t.strip() for t in get_text_parts(parts) if t.strip()]
    if texts:
        return " ".join(texts)
    data = [json_numbers(d) for d in get_data_parts(parts)]
    if data:
        return str(data[0] if len(data) == 1 else data)
    return ""


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


class A2AAgent(AgentBase):
    """An A2A agent reached over HTTP (JSON-RPC or HTTP+JSON binding) with ``a2a-sdk``."""

    transport = "a2a"

    def __init__(
        self,
        url: str,
        *,
        id: str | None = None,
        capabilities: Iterable[str] = (),
        max_concurrency: int | None = None,
        weight: float = 1.0,
        region: str | None = None,
        labels: dict[str, str] | None = None,
        card_path: str | None = None,
        headers: Mapping[str, str] | None = None,
        request_timeout_s: float | None = 300.0,
        connect_timeout_s: float = 10.0,
        health_timeout_s: float = 5.0,
        poll_interval_s: float = 1.0,
        blocking: bool = True,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        """``url`` is the agent's base URL (or the full URL of its agent card).

        ``capabilities`` are added to the skills found on the card by
        ``discover()``. ``request_timeout_s`` bounds one HTTP exchange (a
        blocking send waits for the whole remote task, so keep it above the
        step timeout); ``poll_interval_s`` is the longest wait between two
        polls of an unfinished remote task. ``blocking=False`` asks the server
        to answer at once (``return_immediately``) and polls the task instead
        of holding one HTTP request open for the whole task.
        """
        _require_sdk()
        split = urlsplit(url)
        if split.scheme not in ("http", "https") or not split.netloc:
            raise ConfigError(
                f"A2A agent URL {url!r} is not an http(s) URL (fix: write e.g. http://127.0.0.1:9999)"
            )
        base = url.rstrip("/")
        if card_path is None and base.endswith(_WELL_KNOWN_SUFFIX):
            base = base[: -len(_WELL_KNOWN_SUFFIX)]
        super().__init__(id=id or _default_id(base), capabilities=capabilities,
                         max_concurrency=max_concurrency, weight=weight, region=region,
                         labels=labels, max_response_bytes=max_response_bytes)
        self.url = base
        self._discovered: frozenset[str] = frozenset()
        self._card_path = card_path
        self._headers = dict(headers or {})
        self._card_headers = {**self._headers, "Accept": "application/json",
                              "Accept-Encoding": "gzip, deflate"}
        self._request_timeout_s = request_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._health_timeout_s = health_timeout_s
        self._poll_interval_s = max(poll_interval_s, 0.01)
        self._blocking = blocking
        self._card: AgentCard | None = None
        # Created lazily on the running loop (never at construction).
        self._http: httpx.AsyncClient | None = None
        self._http_loop: asyncio.AbstractEventLoop | None = None
        self._client: Client | JsonRpcClient | None = None
        self._fast: AiohttpTransport | None = None  # JSON-RPC's, made on first use
        self._background: set[asyncio.Task[None]] = set()

    # --- construction helpers -------------------------------------------------
    @classmethod
    async def from_url(
        cls,
        url: str,
        *,
        id: str | None = None,
        **options: Any,
    ) -> A2AAgent:
        """Build an agent and discover its capabilities from its card.

        Raises ``Unavailable`` (agent unreachable) or ``AgentError`` (no
        usable card). Without ``id``, the id is the URL's ``host:port``.
        """
        agent = cls(url, id=id, **options)
        await agent.discover()
        return agent

    async def discover(self, *, timeout_s: float | None = 10.0) -> frozenset[str]:
        """Fetch the agent card; its skills become capabilities. Returns them all.

        Uses a short-lived HTTP client, so discovery can run on one event loop
        (say, while building a registry) and the calls on another.
        """
        import httpx

        from podium.agents.transport import ca_context

        async with httpx.AsyncClient(headers=self._headers, timeout=timeout_s,
                                     verify=ca_context()) as http:
            card = await self._fetch_card(http)
        self._use_card(card)
        self._discovered = _skills_of(card)
        if not self._discovered:
            log.warning("A2A agent %s at %s advertises no skills on its card", self._id, self.url)
        return self.capabilities

    def discover_sync(self, *, timeout_s: float | None = 10.0) -> frozenset[str]:
        """``discover()`` for synchronous code (e.g. building a registry from a file).

        Runs on a private event loop; when this thread already runs a loop,
        that private loop runs in a worker thread (the caller blocks for at
        most about ``timeout_s``).
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.discover(timeout_s=timeout_s))
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="podium-a2a-discover") as pool:
            return pool.submit(asyncio.run, self.discover(timeout_s=timeout_s)).result()

    # --- the Agent protocol -----------------------------------------------------
    @property
    def capabilities(self) -> frozenset[str]:
        # Those written in the agents file, and those its card advertises.
        return self._capabilities | self._discovered

    @property
    def card(self) -> AgentCard | None:
        """The last agent card fetched (``None`` before discovery or the first call)."""
        return self._card

    async def invoke(self, task: Task) -> Any:
        remote_id: str | None = None
        try:
            client = self._client
            if type(client) is not JsonRpcClient:
                # First call, or the SDK's client: made (or its loop checked) there. Ours
                # needs neither: its transport follows the running loop by itself.
                client = await self._a2a_client()
            if isinstance(client, JsonRpcClient):
                # The request as the JSON protobuf would make of the SDK's message, made
                # directly; a plain message answer read directly too (both tested equal
                # to the SDK's way): protobuf's JSON printer and parser cost more than
                # the HTTP exchange.
                raw = await client.send_message_json(self._params_for(task),
                                                     trace_headers(task))
                plain = plain_message_output(raw)
                if plain is not None:
                    return plain[1] if plain[0] else None
                result = self._payload(client.parse_send_result(raw))
            else:
                result = await self._send(client, self._request_for(task))
            from a2a.types import Message

            if isinstance(result, Message):
                found, value = _output_of_parts(result.parts)
                return value if found else None
            remote_id = result.id
            final = await self._until_settled(client, result)
        except asyncio.CancelledError:
            if remote_id is not None:
                self._cancel_remote_soon(remote_id)
            raise
        except PodiumError:
            raise
        except Exception as exc:
            raise self._translate(exc, "call") from exc
        return self._outcome(final)

    async def health(self) -> HealthReport:
        from podium.agents.transport import Timeouts

        t0 = time.perf_counter()
        try:
            card = await self._fetch_card_pooled(Timeouts(total_s=self._health_timeout_s))
        except AgentError as exc:
            # A busy agent is alive: still usable, ranked below those with room.
            return HealthReport("degraded" if exc.busy else "unhealthy", detail=exc.message)
        except PodiumError as exc:
            return HealthReport("unhealthy", detail=exc.message)
        except Exception as exc:  # noqa: BLE001 - a health check reports, it never raises
            return HealthReport("unhealthy", detail=f"{type(exc).__name__}: {exc}")
        latency_ms = (time.perf_counter() - t0) * 1000
        if self._card is None:
            self._use_card(card)
        return HealthReport("healthy", detail=f"agent card fetched in {latency_ms:.1f} ms")

    async def aclose(self) -> None:
        background = set(self._background)
        if background:
            _done, pending = await asyncio.wait(background, timeout=2.0)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending)
        fast, self._fast = self._fast, None
        if fast is not None:
            await fast.aclose()
        http, loop = self._http, self._http_loop
        self._http = self._http_loop = self._client = None
        if http is not None:
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if loop is running:
                await http.aclose()
            else:
                log.debug("A2A agent %s: HTTP client of another event loop dropped", self._id)

    def __repr__(self) -> str:
        return f"A2AAgent({self._id!r}, {self.url!r}, {sorted(self.capabilities)})"

    # --- internals ----------------------------------------------------------------
    @staticmethod
    def _types() -> Any:
        import a2a.types

        return a2a.types

    def _use_card(self, card: AgentCard) -> None:
        # Capabilities change only in discover(): a registry indexes them once.
        self._card = card
        self._client = None  # the next call builds a client for this card

    def _http_client(self) -> httpx.AsyncClient:
        import httpx

        loop = asyncio.get_running_loop()
        if self._http is not None and self._http_loop is not loop:
            # Made on another (most likely finished) loop: its connections are unusable here.
            log.debug("A2A agent %s: new event loop, new HTTP client", self._id)
            self._http = self._client = None
        if self._http is None:
            from podium.agents.httpx_capped import CappedTransport

            self._http = httpx.AsyncClient(
                headers=self._headers,
                timeout=httpx.Timeout(self._request_timeout_s, connect=self._connect_timeout_s),
                transport=CappedTransport(self.max_response_bytes, self._id),
            )
            self._http_loop = loop
        return self._http

    async def _fetch_card(
        self, http: httpx.AsyncClient, *, timeout_s: float | None = None
    ) -> AgentCard:
        from a2a.client import A2ACardResolver

        resolver = (
            A2ACardResolver(http, self.url, agent_card_path=self._card_path)
            if self._card_path
            else A2ACardResolver(http, self.url)
        )
        try:
            return await resolver.get_agent_card(
                http_kwargs={"timeout": timeout_s} if timeout_s is not None else None
            )
        except Exception as exc:
            raise self._translate(exc, "agent card") from exc

    async def _fetch_card_pooled(self, timeouts: Timeouts | None = None) -> AgentCard:
        """The card over the pooled aiohttp transport (health checks, first calls)."""
        from podium.agents.a2a_jsonrpc import fetch_card

        path = (self._card_path or _WELL_KNOWN_SUFFIX).lstrip("/")
        try:
            return await fetch_card(self._fast_transport(), f"{self.url}/{path}",
                                    self._card_headers, self.max_response_bytes, self._id,
                                    timeouts)
        except PodiumError:
            raise
        except Exception as exc:
            raise self._translate(exc, "agent card") from exc

    async def _a2a_client(self) -> Client | JsonRpcClient:
        if self._client is not None and self._http is not None:
            self._http_client()  # the SDK's client: on a new loop, it is made anew
        if self._client is None:
            from a2a.client import ClientConfig, ClientFactory
            from a2a.utils.constants import TransportProtocol

            from podium.agents.a2a_jsonrpc import JsonRpcClient, jsonrpc_interface

            card = self._card
            if card is None:
                card = await self._fetch_card_pooled()
                self._use_card(card)
            interface = jsonrpc_interface(card)
            if interface is not None:
                # The binding of nearly every card: ours over aiohttp, ~6x less CPU
                # per call than the SDK's client (see a2a_jsonrpc's docstring).
                self._client = JsonRpcClient(self._fast_transport(), interface, self._headers,
                                             self.max_response_bytes, self._id)
                return self._client
            config = ClientConfig(
                streaming=False,
                httpx_client=self._http_client(),  # shared: the SDK never closes it, aclose() does
                supported_protocol_bindings=[
                    TransportProtocol.JSONRPC, TransportProtocol.HTTP_JSON,
                ],
            )
            try:
                self._client = ClientFactory(config).create(card)
            except ValueError as exc:
                offered = ", ".join(i.protocol_binding for i in card.supported_interfaces) or "none"
                raise AgentError(
                    f"A2A agent '{self._id}' at {self.url}: its card offers no transport Podium"
                    f" speaks (JSONRPC, HTTP+JSON); it offers: {offered} ({exc})",
                    retryable=False, agent_id=self._id,
                ) from None
        return self._client

    def _fast_transport(self) -> AiohttpTransport:
        if self._fast is None:
            from podium.agents.transport import AiohttpTransport, Timeouts, default_ssl

            limit = self._max_concurrency
            self._fast = AiohttpTransport(
                max_connections=None if limit is None else limit + 2,
                timeouts=Timeouts(connect_s=self._connect_timeout_s,
                                  read_s=self._request_timeout_s),
                ssl=default_ssl(self.url),
            )
        return self._fast

    def _request_for(self, task: Task) -> Any:
        from a2a.helpers import new_data_part, new_text_part

        t = self._types()
        try:
            if isinstance(task.input, str):
                content = new_text_part(task.input, media_type="text/plain")
            else:
                content = new_data_part(task.input, media_type="application/json")
        except Exception as exc:  # noqa: BLE001 - protobuf's ParseError or a TypeError: not JSON
            raise InvalidInput(
                f"the input of step '{task.step_id}' cannot be sent to A2A agent '{self._id}':"
                f" it is not JSON ({exc})",
                agent_id=self._id, run_id=task.run_id, step_id=task.step_id,
            ) from None
        message = t.Message(
            role=t.Role.ROLE_USER,
            message_id=f"{task.idempotency_key}#{task.attempt}",
            context_id=task.idempotency_key,
            parts=[content],
            metadata={_METADATA_KEY: {
                "run_id": task.run_id,
                "step_id": task.step_id,
                "attempt": task.attempt,
                "idempotency_key": task.idempotency_key,
                "capability": task.capability,
            }},
        )
        # Blocking (the default): the server answers once the task settles; otherwise it
        # answers at once and we poll. history_length=0: no echo of our own message.
        config = t.SendMessageConfiguration(history_length=0,
                                            return_immediately=not self._blocking)
        return t.SendMessageRequest(message=message, configuration=config)

    def _params_for(self, task: Task) -> dict[str, Any]:
        """``MessageToDict(self._request_for(task))``, made directly (tests hold them equal)."""
        if isinstance(task.input, str):
            part: dict[str, Any] = {"text": task.input, "mediaType": "text/plain"}
        else:
            try:
                part = {"data": as_value(task.input), "mediaType": "application/json"}
            except (TypeError, ValueError) as exc:
                raise InvalidInput(
                    f"the input of step '{task.step_id}' cannot be sent to A2A agent"
                    f" '{self._id}': it is not JSON ({exc})",
                    agent_id=self._id, run_id=task.run_id, step_id=task.step_id,
                ) from None
        configuration: dict[str, Any] = {"historyLength": 0}
        if not self._blocking:
            configuration["returnImmediately"] = True
        return {
            "message": {
                "messageId": f"{task.idempotency_key}#{task.attempt}",
                "contextId": task.idempotency_key,
                "role": "ROLE_USER",
                "parts": [part],
                "metadata": {_METADATA_KEY: {
                    "run_id": task.run_id,
                    "step_id": task.step_id,
                    "attempt": float(task.attempt),
                    "idempotency_key": task.idempotency_key,
                    "capability": task.capability,
                }},
            },
            "configuration": configuration,
        }

    async def _send(self, client: Client | JsonRpcClient, request: Any) -> Message | A2ATask:
        last: Message | A2ATask | None = None
        async for event in client.send_message(request):
            kind = event.WhichOneof("payload")
            if kind == "message":
                return event.message
            if kind == "task":
                last = event.task
        return self._payload(None, last)

    def _payload(self, response: Any, last: Message | A2ATask | None = None
                 ) -> Message | A2ATask:
        """The message or task a ``SendMessageResponse`` (or the last event) carries."""
        if response is not None:
            kind = response.WhichOneof("payload")
            if kind in ("message", "task"):
                found: Message | A2ATask = getattr(response, kind)
                return found
        if last is None:
            raise AgentError(
                f"A2A agent '{self._id}' at {self.url} answered with neither a task nor a message",
                agent_id=self._id,
            )
        return last

    async def _until_settled(self, client: Client | JsonRpcClient, task: A2ATask
                             ) -> A2ATask:
        """Poll an unfinished remote task until it is terminal or needs the caller.

        Only ``submitted`` and ``working`` are waited on. Any other state that settles
        nothing (``unspecified``, or a number A2A 1.0 does not define) fails the attempt
        at once: it was polled until the attempt's timeout, for a state that would never
        change by waiting."""
        t = self._types()
        settled = {
            t.TaskState.TASK_STATE_COMPLETED, t.TaskState.TASK_STATE_FAILED,
            t.TaskState.TASK_STATE_CANCELED, t.TaskState.TASK_STATE_REJECTED,
            t.TaskState.TASK_STATE_INPUT_REQUIRED, t.TaskState.TASK_STATE_AUTH_REQUIRED,
        }
        going = {t.TaskState.TASK_STATE_SUBMITTED, t.TaskState.TASK_STATE_WORKING}
        delay = min(0.05, self._poll_interval_s)
        while task.status.state in going:
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._poll_interval_s)
            task = await client.get_task(t.GetTaskRequest(id=task.id, history_length=0))
        state = task.status.state
        if state not in settled:
            try:
                name = t.TaskState.Name(state)
            except ValueError:
                name = f"number {state}"
            self._cancel_remote_soon(task.id)
            raise AgentError(
                f"A2A agent '{self._id}' at {self.url}: task {task.id!r} is in state {name},"
                " neither going nor settled (fix: the agent must answer a state A2A 1.0"
                " defines: submitted, working, completed, failed, canceled, rejected,"
                " input-required or auth-required)", agent_id=self._id)
        return task

    def _outcome(self, task: A2ATask) -> Any:
        t = self._types()
        state = task.status.state
        said = _status_text(task)
        where = f"A2A agent '{self._id}' at {self.url}"
        if state == t.TaskState.TASK_STATE_COMPLETED:
            found, value = _output_of_parts(p for a in task.artifacts for p in a.parts)
            if not found:
                found, value = _output_of_parts(task.status.message.parts)
            return value if found else None
        if state == t.TaskState.TASK_STATE_FAILED:
            raise AgentError(f"{where}: task failed: {said or 'no reason given'}",
                             agent_id=self._id)
        if state == t.TaskState.TASK_STATE_REJECTED:
            raise AgentError(f"{where}: task rejected: {said or 'no reason given'}",
                             agent_id=self._id)
        if state == t.TaskState.TASK_STATE_CANCELED:
            raise AgentError(f"{where}: task canceled by the agent{': ' + said if said else ''}",
                             agent_id=self._id)
        # Interrupted: Podium has no one to answer; free the remote task and say why.
        self._cancel_remote_soon(task.id)
        need = "input" if state == t.TaskState.TASK_STATE_INPUT_REQUIRED else "authentication"
        raise InvalidInput(f"{where}: task needs more {need}: {said or 'no details given'}",
                           agent_id=self._id)

    def _cancel_remote_soon(self, task_id: str) -> None:
        """Best-effort ``CancelTask`` in the background (a cancelled caller must not wait)."""
        client = self._client
        if client is None:
            return

        async def cancel() -> None:
            with contextlib.suppress(Exception):
                request = self._types().CancelTaskRequest(id=task_id)
                await asyncio.wait_for(client.cancel_task(request), 5.0)

        try:
            loop = asyncio.get_running_loop()
            bg = loop.create_task(cancel(), name=f"podium:a2a-cancel:{task_id}")
        except RuntimeError:
            return
        self._background.add(bg)
        bg.add_done_callback(self._background.discard)

    def _translate(self, exc: BaseException, doing: str) -> AgentError:
        """Map what the SDK or httpx raised onto Podium's error types."""
        import httpx
        from a2a.client.errors import A2AClientTimeoutError
        from a2a.utils import errors as e

        from podium.agents.a2a_jsonrpc import HttpStatusError
        from podium.agents.http import parse_retry_after
        from podium.agents.transport import ConnectTimeout, NetworkError, ResponseTimeout

        where = f"A2A agent '{self._id}' at {self.url} ({doing})"
        chain = list(_causes(exc))
        too_large = next((c for c in chain if isinstance(c, OutputTooLarge)), None)
        if too_large is not None:
            return too_large
        detail = str(exc) or type(exc).__name__
        response = next((c.response for c in chain if isinstance(c, httpx.HTTPStatusError)), None)
        status = response.status_code if response is not None else None
        if status is None:
            status = getattr(exc, "status_code", None)
        said_when = response.headers.get("retry-after") if response is not None else None
        ours = next((c for c in chain if isinstance(c, HttpStatusError)), None)
        if ours is not None:  # our JSON-RPC client's (a2a_jsonrpc)
            status, said_when = ours.status_code, ours.retry_after
        if status == 429:
            return RateLimited(f"{where}: rate limited (HTTP 429)",
                               retry_after_s=parse_retry_after(said_when), agent_id=self._id)
        if status == 503 and said_when is not None:
            # "Come back later" from a live server: at capacity, not down (RFC 9110 15.6.4).
            return Unavailable(f"{where}: busy (HTTP 503 with Retry-After)",
                               busy=True, retry_after_s=parse_retry_after(said_when),
                               agent_id=self._id)
        if status in (502, 503, 504):
            return Unavailable(f"{where}: HTTP {status}", agent_id=self._id)
        timeouts = A2AClientTimeoutError | httpx.TimeoutException | ConnectTimeout | ResponseTimeout
        if status == 408 or any(isinstance(c, timeouts) for c in chain):
            return AttemptTimeout(f"{where}: timed out: {detail}", agent_id=self._id)
        invalid = (
            e.InvalidParamsError, e.InvalidRequestError, e.JSONParseError, e.MethodNotFoundError,
            e.ContentTypeNotSupportedError, e.UnsupportedOperationError,
            e.ExtensionSupportRequiredError, e.VersionNotSupportedError,
        )
        if isinstance(exc, invalid):
            return InvalidInput(f"{where}: {type(exc).__name__}: {detail}", agent_id=self._id)
        if status is not None and 400 <= status < 500:
            return InvalidInput(f"{where}: HTTP {status}: {detail}", agent_id=self._id)
        if status is not None:
            return AgentError(f"{where}: HTTP {status}: {detail}", agent_id=self._id)
        if any(isinstance(c, httpx.TransportError | NetworkError) for c in chain):
            return Unavailable(f"{where}: cannot reach the agent: {detail}", agent_id=self._id)
        return AgentError(f"{where}: {type(exc).__name__}: {detail}", agent_id=self._id)
