"""An httpx transport with a size limit, for the clients whose reading is not ours.

The A2A SDK reads its answers itself, through ``httpx``; this transport under
its client gives those answers the limit ``HttpAgent.read_capped`` gives the
HTTP agents' (``max_response_bytes``). Imported only by A2A agents: httpx
stays out of a process that has none.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx

from podium.agents.http import too_large

__all__ = ["CappedTransport"]


class _CappedStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, limit: int, agent_id: str) -> None:
        self._inner, self._limit, self._agent_id = inner, limit, agent_id

    async def __aiter__(self) -> AsyncIterator[bytes]:
        size = 0
        async for chunk in self._inner:
            size += len(chunk)
            if size > self._limit:
                raise too_large(self._agent_id, self._limit, f"more than {self._limit} bytes")
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class CappedTransport(httpx.AsyncBaseTransport):
    """An httpx transport whose answers may be at most ``limit`` bytes.

    For clients whose reading is not ours (the A2A SDK reads its answers itself):
    it asks for uncompressed answers, so the bytes it counts are the bytes that
    will be decoded, and fails the read past ``limit`` with ``OutputTooLarge``.
    """

    def __init__(self, limit: int, agent_id: str) -> None:
        from podium.agents.transport import ca_context

        # httpx would load the CA bundle again for every transport (tens of ms each).
        self._inner = httpx.AsyncHTTPTransport(verify=ca_context())
        self._limit, self._agent_id = limit, agent_id

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.headers["Accept-Encoding"] = "identity"
        response = await self._inner.handle_async_request(request)
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _CappedStream(response.stream, self._limit, self._agent_id)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()
