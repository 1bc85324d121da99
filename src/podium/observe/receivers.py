"""Where alerts go: the log, a webhook, or an Alertmanager.

Delivery never blocks the engine: ``Dispatcher.notify`` only puts the
notification on the receiver's bounded queue; one worker per receiver sends
it, retrying with capped exponential backoff. A dead webhook or a slow
Alertmanager delays only its own queue, and when a queue is full the oldest
notification is dropped (with a warning), never the engine's time.

A webhook with a secret is signed the way Stripe and Slack sign theirs, so a
receiver can refuse a forged, altered or replayed notification: the HMAC
covers ``"{timestamp}." + body``, the timestamp (unix seconds, taken at each
delivery attempt) travels in its own header, and an event id, the same on
every retry of one notification (and in the signed body as ``id``), lets a
receiver drop a duplicate delivered twice within its time tolerance.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import hmac
import logging
import os
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from podium.clock import Clock, SystemClock
from podium.definition.alerts import ReceiverSpec
from podium.redact import mask_url, redact_value, register_secret, register_sensitive_headers
from podium.state import AlertRecord

__all__ = [
    "EVENT_ID_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "AlertmanagerReceiver",
    "Dispatcher",
    "LogReceiver",
    "Notification",
    "Receiver",
    "WebhookReceiver",
    "build_receiver",
    "sign",
]

log = logging.getLogger("podium.alerts")
SIGNATURE_HEADER = "X-Podium-Signature"
TIMESTAMP_HEADER = "X-Podium-Timestamp"
EVENT_ID_HEADER = "X-Podium-Event-Id"


def _event_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Notification:
    alert: AlertRecord
    status: str  # firing | resolved
    severity: str
    level: int
    receivers: tuple[str, ...] = field(default=())
    #: The same on every delivery attempt of this notification: receivers de-duplicate on it.
    id: str = field(default_factory=_event_id)

    def payload(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "severity": self.severity,
                "level": self.level, "alert": self.alert.to_dict()}


class Receiver(Protocol):
    name: str

    async def send(self, note: Notification) -> None:
        """Deliver once; raise to have the dispatcher retry."""
        ...

    async def aclose(self) -> None: ...


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The signature header value: HMAC-SHA256 of ``"{timestamp}." + body``, hex, ``sha256=``.

    Signing the timestamp with the body is what makes a replay detectable: an
    old notification re-sent with a fresh timestamp no longer matches.
    """
    signed = str(timestamp).encode() + b"." + body
    return "sha256=" + hmac.new(secret, signed, hashlib.sha256).hexdigest()


class LogReceiver:
    def __init__(self, name: str = "log") -> None:
        self.name = name

    async def send(self, note: Notification) -> None:
        a = note.alert
        log.warning("alert %s [%s] %s: %s (level %d, key %s)", note.status, note.severity,
                    a.rule, a.summary, note.level, a.key)

    async def aclose(self) -> None:
        return None


class _HttpReceiver:
    def __init__(self, spec: ReceiverSpec, clock: Clock | None = None) -> None:
        self.name = spec.name
        self.spec = spec
        self._clock: Clock = clock or SystemClock()
        self._client: Any = None
        # Its credentials are secrets Podium reads: scrubbed by value from then on.
        register_sensitive_headers(dict(spec.headers))
        if spec.url:
            mask_url(spec.url)  # registers a password in the URL
        if spec.secret_env:
            register_secret(os.environ.get(spec.secret_env))

    def _http(self) -> Any:
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(timeout=self.spec.timeout)
        return self._client

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> None:
        response = await self._http().post(url, content=body, headers=headers)
        if response.status_code >= 300:
            raise RuntimeError(f"{self.name}: {url} answered {response.status_code}")

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


class WebhookReceiver(_HttpReceiver):
    """POSTs the notification as JSON, signed with HMAC-SHA256 when a secret is set."""

    async def send(self, note: Notification) -> None:
        body = orjson.dumps(redact_value(note.payload()))
        headers = {"Content-Type": "application/json", **self.spec.headers,
                   EVENT_ID_HEADER: note.id}
        secret = os.environ.get(self.spec.secret_env) if self.spec.secret_env else None
        if secret:
            # Each attempt is signed when it is sent: a retry after a long backoff
            # is still fresh for a receiver that refuses old timestamps.
            timestamp = int(self._clock.now())
            headers[TIMESTAMP_HEADER] = str(timestamp)
            headers[SIGNATURE_HEADER] = sign(secret.encode(), timestamp, body)
        assert self.spec.url is not None
        await self._post(self.spec.url, body, headers)


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).isoformat().replace("+00:00", "Z")


class AlertmanagerReceiver(_HttpReceiver):
    """Speaks the Alertmanager v2 API (``POST /api/v2/alerts``).

    Alertmanager resolves an alert by itself when nobody re-sends it within its
    ``resolve_timeout`` (5m by default), so the alert manager re-sends a firing
    alert to this receiver every ``refresh_s``.
    """

    refresh_s: float = 60.0

    async def send(self, note: Notification) -> None:
        a = note.alert
        labels = {"alertname": a.rule, "severity": note.severity, "podium_key": a.key,
                  "kind": a.kind, **{k: str(v) for k, v in a.labels.items()}}
        if a.workflow:
            labels["workflow"] = a.workflow
        item: dict[str, Any] = {
            "labels": labels,
            "annotations": {"summary": a.summary, "escalation_level": str(note.level)},
            "startsAt": _iso(a.fired_at),
        }
        if note.status == "resolved" and a.resolved_at is not None:
            item["endsAt"] = _iso(a.resolved_at)
        assert self.spec.url is not None
        await self._post(self.spec.url.rstrip("/") + "/api/v2/alerts",
                         orjson.dumps([redact_value(item)]),
                         {"Content-Type": "application/json", **self.spec.headers})


def build_receiver(spec: ReceiverSpec, clock: Clock | None = None) -> Receiver:
    """The receiver ``spec`` describes; ``clock`` dates webhook signatures."""
    if spec.type == "log":
        return LogReceiver(spec.name)
    if spec.type == "webhook":
        return WebhookReceiver(spec, clock)
    return AlertmanagerReceiver(spec, clock)


class Dispatcher:
    """One bounded queue and one worker per receiver; retries with backoff."""

    def __init__(
        self,
        receivers: dict[str, Receiver],
        *,
        clock: Clock | None = None,
        queue_size: int = 1000,
        max_retries: int = 5,
        initial_backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
    ) -> None:
        self.receivers = receivers
        self._clock: Clock = clock or SystemClock()
        self._queues: dict[str, asyncio.Queue[Notification]] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._queue_size = queue_size
        self._max_retries = max_retries
        self._initial = initial_backoff_s
        self._max = max_backoff_s
        self.delivered: dict[str, int] = {}
        self.failed: dict[str, int] = {}
        self.dropped: dict[str, int] = {}

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for name in self.receivers:
            if name in self._queues:
                continue
            self._queues[name] = asyncio.Queue(self._queue_size)
            self._workers.append(loop.create_task(self._work(name), name=f"podium:receiver:{name}"))

    def notify(self, receiver: str, note: Notification) -> None:
        """Queue a notification; returns at once whatever the receiver is doing."""
        queue = self._queues.get(receiver)
        if queue is None:
            if receiver not in self.receivers:
                log.warning("alert for unknown receiver %s dropped", receiver)
            return
        if queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                queue.get_nowait()
                queue.task_done()
            self.dropped[receiver] = self.dropped.get(receiver, 0) + 1
            log.warning("receiver %s is behind; dropped its oldest notification", receiver)
        queue.put_nowait(note)

    async def _work(self, name: str) -> None:
        receiver = self.receivers[name]
        queue = self._queues[name]
        retries = getattr(getattr(receiver, "spec", None), "max_retries", self._max_retries)
        while True:
            note = await queue.get()
            try:
                delay = self._initial
                for attempt in range(retries + 1):
                    try:
                        await receiver.send(note)
                        self.delivered[name] = self.delivered.get(name, 0) + 1
                        break
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:  # noqa: BLE001 - a receiver must never kill its worker
                        if attempt == retries:
                            self.failed[name] = self.failed.get(name, 0) + 1
                            log.warning("receiver %s gave up on alert %s: %s", name,
                                        note.alert.key, exc)
                            break
                        log.info("receiver %s failed (%s); retrying in %.1fs", name, exc, delay)
                        await self._clock.sleep(delay)
                        delay = min(delay * 2, self._max)
            finally:
                queue.task_done()

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Wait (bounded) until queued notifications are delivered or given up."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                for queue in self._queues.values():
                    await queue.join()

    async def aclose(self, timeout_s: float = 2.0) -> None:
        await self.drain(timeout_s)
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers.clear()
        self._queues.clear()
        for receiver in self.receivers.values():
            await receiver.aclose()
