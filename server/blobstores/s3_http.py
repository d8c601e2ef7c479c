"""Kept-alive HTTP/1.1 connections to one S3 endpoint, driven by the event loop.

The minio SDK is blocking: each of its calls takes a worker thread, and for a small object most
of its cost is Python around the request (urllib3 and http.client writing and parsing it, the
thread hand-off, the GIL going back and forth with the event loop). The hot path of ODK Collect
submissions puts two small objects per submission (the XML and a photo), so `S3BlobStore` sends
those through here: one request written as bytes on a connection the event loop owns, the
response read by its length. Signing stays the SDK's (`minio.signer.sign_v4_s3`, with the
payload hash the caller already has).

A connection carries one exchange at a time and goes back to the pool only after a complete
response that does not ask to close; anything else (an error, a cancellation mid-way) closes it.
Connections belong to the event loop that opened them: used from another loop, the pool starts
afresh.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from urllib.parse import SplitResult

MAX_HEADER_BYTES = 64 * 1024


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]  # names in lower case; a repeated header keeps its last value
    body: bytes


class StaleConnection(ConnectionError):
    """A kept-alive connection the server had closed: nothing was answered, send it again."""


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    reused: bool = False

    def close(self) -> None:
        try:
            self.writer.close()
        except RuntimeError:  # its event loop is closed already
            pass


@dataclass
class S3Connections:
    host: str
    port: int
    tls: ssl.SSLContext | None
    connect_timeout: float
    read_timeout: float
    keep: int = 16  # idle connections kept; more are opened when needed and closed after use
    _idle: list[_Connection] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None

    async def request(
        self, method: str, url: SplitResult, headers: dict[str, str], body: bytes
    ) -> Response:
        """One exchange. A kept-alive connection found closed by the server raises
        StaleConnection before anything was answered (the caller may send again); OSError and
        TimeoutError otherwise."""
        connection = await self._acquire()
        try:
            response = await self._exchange(connection, method, url, headers, body)
        except BaseException:
            connection.close()
            raise
        if response.headers.get("connection", "").lower() == "close" or connection.reader.at_eof():
            connection.close()  # asked to, or the body ran to the end of the stream
        else:
            self._release(connection)
        return response

    async def _acquire(self) -> _Connection:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            for stale in self._idle:
                stale.close()
            self._idle, self._loop = [], loop
        if self._idle:
            connection = self._idle.pop()
            connection.reused = True
            return connection
        async with asyncio.timeout(self.connect_timeout):
            reader, writer = await asyncio.open_connection(
                self.host, self.port, ssl=self.tls, limit=MAX_HEADER_BYTES
            )
        return _Connection(reader, writer)

    def _release(self, connection: _Connection) -> None:
        if len(self._idle) < self.keep and not connection.writer.is_closing():
            self._idle.append(connection)
        else:
            connection.close()

    async def _exchange(
        self,
        connection: _Connection,
        method: str,
        url: SplitResult,
        headers: dict[str, str],
        body: bytes,
    ) -> Response:
        target = url.path + (f"?{url.query}" if url.query else "")
        lines = [f"{method} {target} HTTP/1.1"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        connection.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if body:
            connection.writer.write(body)
        head = b""
        try:
            await connection.writer.drain()
            async with asyncio.timeout(self.read_timeout):
                head = await connection.reader.readuntil(b"\r\n\r\n")
                status, response_headers = _parse_head(head)
                content = await _read_body(connection.reader, method, status, response_headers)
        except (asyncio.IncompleteReadError, ConnectionError) as error:
            unanswered = not head and not getattr(error, "partial", b"")
            if connection.reused and unanswered:
                raise StaleConnection("closed by S3 while it was idle") from error
            raise ConnectionError(f"S3 closed the connection mid-answer: {error!r}") from error
        except asyncio.LimitOverrunError as error:
            raise ConnectionError("S3 sent a response head over 64 KiB") from error
        return Response(status, response_headers, content)


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ConnectionError(f"S3 answered something other than HTTP: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


async def _read_body(
    reader: asyncio.StreamReader, method: str, status: int, headers: dict[str, str]
) -> bytes:
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return b""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunks: list[bytes] = []
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass  # trailers
                return b"".join(chunks)
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
    if "content-length" in headers:
        length = int(headers["content-length"])
        return await reader.readexactly(length) if length else b""
    return await reader.read()
