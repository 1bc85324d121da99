"""An HTTP agent that answers badly on purpose, for the hostile-answer tests.

``python hostile_agent.py PORT`` serves the Podium HTTP agent protocol on
127.0.0.1:PORT with one behaviour per base path (``http://127.0.0.1:PORT/big``
has ``/big/invoke`` and ``/big/health``):

- ``big``: a 100 MB JSON answer with a Content-Length;
- ``bomb``: a gzip bomb, ~1 MB on the wire that unpacks into 1 GiB;
- ``endless``: a chunked answer that never ends;
- ``chunked``: 100 MB in chunks, no Content-Length;
- ``longtype``: an error whose type is 100,000 characters and message 1 MB;
- ``echo``: an error that repeats the request's bearer token
  (``credential rejected: <token>``), as a careless agent does;
- ``echoout``: succeeds, with the Authorization header in its output;
- ``slow``: answers after 1.5 s;
- ``gzipped``: a well-formed gzip answer of 2 MB once unpacked;
- ``ok``: ``{"output": "fine"}``.

Written on raw asyncio streams: no framework would send these answers.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import sys

_BOMB: bytes = b""


def _bomb() -> bytes:
    global _BOMB
    if not _BOMB:
        _BOMB = gzip.compress(b"0" * (1 << 30), compresslevel=9)
    return _BOMB


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        _method, path, _ = lines[0].split(" ", 2)
        pairs = (ln.partition(":") for ln in lines[1:] if ln)
        headers = {k.lower(): v.strip() for k, _, v in pairs}
        length = int(headers.get("content-length", "0"))
        if length:
            await reader.readexactly(length)
        mode = path.strip("/").split("/")[0]
        if path.endswith("/health"):
            await _send(writer, 200, b'{"status": "healthy"}')
        elif mode == "big":
            body = b'{"output": "' + b"x" * (100 * 1024 * 1024) + b'"}'
            await _send(writer, 200, body)
        elif mode == "bomb":
            await _send(writer, 200, _bomb(), extra="Content-Encoding: gzip\r\n")
        elif mode in ("endless", "chunked"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n")
            piece = b"x" * 65536
            chunk = b"%x\r\n%s\r\n" % (len(piece), piece)
            sent = 0
            while mode == "endless" or sent < 100 * 1024 * 1024:
                writer.write(chunk)
                sent += len(piece)
                await writer.drain()
            writer.write(b"0\r\n\r\n")
        elif mode == "echoout":
            said = headers.get("authorization", "")
            await _send(writer, 200, json.dumps({"output": {"seen": said}}).encode())
        elif mode == "slow":
            await asyncio.sleep(1.5)
            await _send(writer, 200, b'{"output": "late"}')
        elif mode == "gzipped":
            body = gzip.compress(b'{"output": "' + b"z" * (2 * 1024 * 1024) + b'"}')
            await _send(writer, 200, body, extra="Content-Encoding: gzip\r\n")
        elif mode == "longtype":
            body = json.dumps({"error": {"type": "t" * 100_000, "message": "m" * (1 << 20),
                                         "retryable": False}}).encode()
            await _send(writer, 500, body)
        elif mode == "echo":
            said = headers.get("authorization", "").partition(" ")[2]  # the bare token
            body = json.dumps({"error": {"type": "auth_failed", "retryable": False,
                                         "message": f"credential rejected: {said}"}}).encode()
            await _send(writer, 401, body)
        else:
            await _send(writer, 200, b'{"output": "fine"}')
        await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def _send(writer: asyncio.StreamWriter, status: int, body: bytes, extra: str = "") -> None:
    writer.write(f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n{extra}"
                 f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)


async def main(port: int) -> None:
    _bomb()  # made before listening: the first call must not wait for it
    server = await asyncio.start_server(_handle, "127.0.0.1", port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
