"""A2A's JSON-RPC binding over Podium's own HTTP transport, with the a2a-sdk's types.

``A2AAgent`` makes three calls on the hot path: ``SendMessage``, and for a
task that is not finished ``GetTask`` and ``CancelTask``. The SDK's client
makes them through httpx, a JSON-RPC library and its telemetry wrappers:
``bench/fleet.py`` measured 1.87 ms of engine CPU per A2A step that way, and
0.24 ms this way (an HTTP agent's step: 0.17 ms). This client sends the
same requests (the SDK's protobuf messages, turned into JSON by protobuf's
own ``json_format`` as the SDK does, the ``A2A-Version`` header) over the
``AiohttpTransport`` the HTTP agents use, reads the answer under the agent's
``max_response_bytes`` (``read_capped``), and parses it into the SDK's
types, so everything above it (parts, task states, errors) is unchanged.

What it raises: the SDK's own error classes for a JSON-RPC error (by code, as
the SDK maps them), ``HttpStatusError`` for a non-2xx answer, a
``TransportError`` for the network, ``OutputTooLarge`` past the limit.
Anything it does not speak (the HTTP+JSON binding, a tenant) stays with
the SDK's client.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from podium.agents.http import read_capped
from podium.agents.transport import Timeouts, Transport

if TYPE_CHECKING:
    from a2a.types import AgentCard, AgentInterface

# A protobuf message of the SDK's (protobuf ships no type stubs here).
Proto = Any

__all__ = ["HttpStatusError", "JsonRpcClient", "as_value", "fetch_card", "json_numbers",
           "jsonrpc_interface", "plain_message_output"]

_ERROR_INFO_TYPE = "type.googleapis.com/google.rpc.ErrorInfo"
_MAX_EXACT_FLOAT_INT = 2**53


class HttpStatusError(Exception):
    """A non-2xx answer: its status, ``Retry-After`` and a piece of its body."""

    def __init__(self, status: int, retry_after: str | None, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}" if detail else f"HTTP {status}")
        self.status_code, self.retry_after = status, retry_after


def jsonrpc_interface(card: AgentCard) -> AgentInterface | None:
    """The JSON-RPC interface the SDK would pick for this card, if it would pick JSON-RPC.

    The SDK takes the card's first interface in a binding it speaks (JSON-RPC
    or HTTP+JSON, the card's order of preference); this client only takes a
    JSON-RPC one of protocol 1.x without a tenant, and leaves the rest to it.
    """
    for interface in card.supported_interfaces:
        if interface.protocol_binding == "HTTP+JSON":
            return None
        if interface.protocol_binding == "JSONRPC":
            version = interface.protocol_version or "1.0"
            if interface.tenant or not version.startswith("1.") or not interface.url:
                return None
            found: AgentInterface = interface
            return found
    return None


class JsonRpcClient:
    """``send_message``, ``get_task`` and ``cancel_task`` as the SDK's ``Client`` has them."""

    def __init__(self, transport: Transport, interface: AgentInterface,
                 headers: Mapping[str, str], max_response_bytes: int, agent_id: str) -> None:
        self._transport = transport
        self._url = interface.url
        self._headers = {**headers, "Content-Type": "application/json",
                         "Accept": "application/json", "Accept-Encoding": "gzip, deflate",
                         "A2A-Version": interface.protocol_version or "1.0"}
        self._limit, self._agent_id = max_response_bytes, agent_id
        self._ids = itertools.count(1)

    async def send_message(self, request: Proto | dict[str, Any]) -> AsyncIterator[Any]:
        """One answer (a ``SendMessageResponse``: its payload a task or a message)."""
        from a2a.types import SendMessageResponse

        yield await self._call("SendMessage", request, SendMessageResponse())

    async def send_message_json(self, params: dict[str, Any],
                                extra: Mapping[str, str] | None = None) -> Any:
        """``SendMessage`` with the request as JSON; the ``result`` as JSON, unparsed.

        ``parse_send_result`` makes it the SDK's ``SendMessageResponse``; a caller
        that can read a plain answer directly skips that (protobuf's JSON parser
        is the largest part of an A2A call's CPU after the HTTP exchange).
        """
        return await self._call("SendMessage", params, None, extra)

    @staticmethod
    def parse_send_result(result: Any) -> Any:
        from a2a.types import SendMessageResponse
        from a2a.utils.proto_utils import parse_lenient

        return parse_lenient(result, SendMessageResponse())

    async def get_task(self, request: Proto) -> Any:
        from a2a.types import Task

        return await self._call("GetTask", request, Task())

    async def cancel_task(self, request: Proto) -> Any:
        from a2a.types import Task

        return await self._call("CancelTask", request, Task())

    async def _call(self, method: str, request: Proto | dict[str, Any], into: Proto | None,
                    extra: Mapping[str, str] | None = None) -> Any:
        """``request``: the SDK's message, or the JSON protobuf would make of it.

        The result parsed into ``into``, or as JSON when ``into`` is None.
        """
        if not isinstance(request, dict):
            from google.protobuf.json_format import (  # type: ignore[import-untyped]  # no stubs
                MessageToDict,
            )

            request = MessageToDict(request)
        body = orjson.dumps({"jsonrpc": "2.0", "method": method, "id": next(self._ids),
                             "params": request})
        headers = {**self._headers, **extra} if extra else self._headers
        async with self._transport.request("POST", self._url, headers=headers,
                                           body=body) as response:
            status = response.status
            content = await read_capped(response, self._limit, self._agent_id)
            retry_after = response.headers.get("retry-after")
        if not 200 <= status < 300:
            text = content[:200].decode("utf-8", errors="replace").strip()
            raise HttpStatusError(status, retry_after, text)
        try:
            answer = orjson.loads(content)
        except orjson.JSONDecodeError:
            answer = None
        if not isinstance(answer, dict):
            raise _client_error(f"Invalid JSON-RPC response: not a JSON object: {content[:100]!r}")
        error = answer.get("error")
        if error:
            raise _rpc_error(error)
        if "result" not in answer:
            raise _client_error("Invalid JSON-RPC response: it has neither 'result' nor 'error'")
        if into is None:
            return answer["result"]
        from a2a.utils.proto_utils import parse_lenient

        return parse_lenient(answer["result"], into)


async def fetch_card(transport: Transport, url: str, headers: Mapping[str, str], limit: int,
                     agent_id: str, timeouts: Timeouts | None = None) -> AgentCard:
    """The agent card at ``url``, parsed as the SDK's ``A2ACardResolver`` parses it.

    Health checks fetch it every interval: over the pooled aiohttp transport
    it costs a fraction of a millisecond, where the resolver's httpx request
    cost several (bench/health.py).
    """
    from a2a.client.card_resolver import parse_agent_card

    async with transport.request("GET", url, headers=headers, timeouts=timeouts) as response:
        status = response.status
        content = await read_capped(response, limit, agent_id)
        retry_after = response.headers.get("retry-after")
    if not 200 <= status < 300:
        text = content[:200].decode("utf-8", errors="replace").strip()
        raise HttpStatusError(status, retry_after, text)
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        raise _client_error(f"the agent card at {url} is not JSON: {exc}") from None
    card: AgentCard = parse_agent_card(data)
    return card


def _client_error(message: str) -> Exception:
    from a2a.client.errors import A2AClientError

    return A2AClientError(message)


def _rpc_error(error: Any) -> Exception:
    """The SDK's error class for a JSON-RPC error code, as its own client raises it."""
    from a2a.utils.errors import JSON_RPC_ERROR_CODE_MAP

    if not isinstance(error, dict):
        return _client_error(f"Invalid JSON-RPC response: error is not an object: {error!r}")
    code, message = error.get("code"), error.get("message", str(error))
    data = None
    raw = error.get("data")
    if isinstance(raw, list):
        for d in raw:
            if isinstance(d, dict) and d.get("@type") == _ERROR_INFO_TYPE:
                data = d.get("metadata") or None
                break
    for cls, known in JSON_RPC_ERROR_CODE_MAP.items():
        if known == code:
            return cls(message, data=data)
    return _client_error(f"JSON-RPC Error {code}: {message}")


# --- JSON as protobuf's Value carries it -------------------------------------------


def json_numbers(value: Any) -> Any:
    """Give whole numbers back their int type (``google.protobuf.Value`` made them floats)."""
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer() and abs(value) <= _MAX_EXACT_FLOAT_INT:
            return int(value)
        return value
    if isinstance(value, dict):
        return {k: json_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_numbers(v) for v in value]
    return value


def as_value(value: Any) -> Any:
    """``value`` as JSON after a trip through ``google.protobuf.Value``: numbers as doubles.

    Raises TypeError or ValueError where protobuf would refuse it (a non-string
    key, bytes, a set, an infinite or NaN number). Runs on every A2A request:
    a container's plain strings, booleans and None are kept without a call of
    their own (a step's input is mostly those).
    """
    kind = type(value)
    if kind is dict:
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"the key {k!r} is not a string")
            out[k] = v if v is None or type(v) in _KEPT else as_value(v)
        return out
    if kind is list or kind is tuple:
        return [v if v is None or type(v) in _KEPT else as_value(v) for v in value]
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"{number} is not a JSON number")
        return number
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"the key {k!r} is not a string")
            out[k] = as_value(v)
        return out
    if isinstance(value, list | tuple):
        return [as_value(v) for v in value]
    raise TypeError(f"a {type(value).__name__} is not a JSON value")


# Values that are JSON as they stand (exact types: a subclass goes the long way).
_KEPT = frozenset({str, bool})


_PLAIN_PART_KEYS = frozenset({"text", "data", "mediaType", "metadata", "filename"})
_ROLES = frozenset({"ROLE_AGENT", "ROLE_USER", "ROLE_UNSPECIFIED"})


def plain_message_output(result: Any) -> tuple[bool, Any] | None:
    """``A2AAgent``'s output of a JSON-RPC result that is a plain message, read as JSON.

    What parsing it into the SDK's ``SendMessageResponse`` and reading its
    parts gives (tests hold the two equal), for the common answer: one message
    whose parts are text or data. None for anything else (a task, a file part,
    a field of the wrong type), which then goes the SDK's way.
    """
    if not isinstance(result, dict) or len(result) != 1:
        return None
    message = result.get("message")
    if not isinstance(message, dict) or message.get("role", "ROLE_UNSPECIFIED") not in _ROLES:
        return None
    parts = message.get("parts", [])
    if not isinstance(parts, list):
        return None
    data: list[Any] = []
    texts: list[str] = []
    for part in parts:
        if not isinstance(part, dict) or not part.keys() <= _PLAIN_PART_KEYS:
            return None
        if not isinstance(part.get("mediaType", ""), str):
            return None
        if "text" in part:
            if "data" in part or not isinstance(part["text"], str):
                return None
            texts.append(part["text"])
        elif "data" in part:
            data.append(_plain_numbers(part["data"]))
        else:
            return None
    if data:
        return True, data[0] if len(data) == 1 else data
    if texts:
        return True, "\n".join(texts)
    return False, None


def _plain_numbers(value: Any) -> Any:
    """``json_numbers(_through_double(value))`` in one pass (tests hold them equal).

    A whole number that a double holds exactly (|n| <= 2**53) comes back as
    itself, so most numbers of an answer cost nothing; the rest take the
    two-step way. Exact types: the JSON parser makes nothing else, and any
    other type goes the two-step way too.
    """
    kind = type(value)
    if kind is dict:
        out = {}
        for k, v in value.items():
            vk = type(v)
            if v is None or vk is str or vk is bool or (
                    vk is int and -_MAX_EXACT_FLOAT_INT <= v <= _MAX_EXACT_FLOAT_INT):
                out[k] = v
            else:
                out[k] = _plain_numbers(v)
        return out
    if kind is list:
        return [_plain_numbers(v) for v in value]
    if value is None or kind is str or kind is bool:
        return value
    if kind is int and -_MAX_EXACT_FLOAT_INT <= value <= _MAX_EXACT_FLOAT_INT:
        return value
    return json_numbers(_through_double(value))


def _through_double(value: Any) -> Any:
    """JSON numbers as ``google.protobuf.Value`` keeps them: every one a double."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return float(value)
    if isinstance(value, dict):
        return {k: _through_double(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_through_double(v) for v in value]
    return value
