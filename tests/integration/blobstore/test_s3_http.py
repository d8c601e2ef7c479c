"""The event loop's S3 connections (server/blobstores/s3_http.py) against a scripted HTTP server:
the answers a real S3 may give that weed does not (chunked bodies, `Connection: close`, a body
that runs to the end of the stream, 5xx), and how the store's small PUT treats them."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pytest

from server.blobstores import S3Options
from server.blobstores.s3 import S3BlobStore, S3RequestFailed
from server.blobstores.s3_http import S3Connections
from sync.blobs import BlobStoreUnavailable

NO_SUCH_BUCKET = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchBucket</Code>'
    b"<Message>The specified bucket does not exist</Message></Error>"
)


def answer(status: str, body: bytes = b"", *headers: str, length: bool = True) -> bytes:
    lines = [f"HTTP/1.1 {status}", *headers]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class ScriptedS3:
    """Answers each request with the next scripted bytes; `close` after an answer ends the
    connection there."""

    script: list[tuple[bytes, bool]]
    connections: int = 0
    requests: list[tuple[bytes, bytes]] = field(default_factory=list)  # (head, body)
    server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while self.script:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                self.requests.append((head, await reader.readexactly(length)))
                reply, close = self.script.pop(0)
                writer.write(reply)
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def stop(self) -> None:
        if self.server is not None:
            self.server.close()


@pytest.fixture
async def scripted() -> ScriptedS3:
    return ScriptedS3(script=[])


def connections_to(port: int) -> S3Connections:
    return S3Connections("127.0.0.1", port, None, connect_timeout=2.0, read_timeout=5.0)


def sized(body: bytes) -> dict[str, str]:
    return {"Host": "127.0.0.1", "Content-Length": str(len(body))}


def store_at(port: int) -> S3BlobStore:
    return S3BlobStore(
        "photos",
        S3Options(endpoint=f"127.0.0.1:{port}", access_key="key", secret_key="secret"),
    )


async def test_chunked_and_sized_answers_keep_the_connection(scripted: ScriptedS3) -> None:
    scripted.script = [
        (
            answer(
                "200 OK",
                b"4\r\nfiel\r\n4\r\ndsyn\r\n1\r\nc\r\n0\r\n\r\n",
                "Transfer-Encoding: chunked",
                length=False,
            ),
            False,
        ),
        (answer("200 OK", b"sized"), False),
    ]
    port = await scripted.start()
    try:
        connections = connections_to(port)
        url = urlsplit(f"http://127.0.0.1:{port}/photos/a")

        first = await connections.request("PUT", url, sized(b"x" * 10), b"x" * 10)
        second = await connections.request("PUT", url, sized(b"y"), b"y")

        assert (first.status, first.body) == (200, b"fieldsync")
        assert (second.status, second.body) == (200, b"sized")
        assert scripted.connections == 1
        assert [body for _, body in scripted.requests] == [b"x" * 10, b"y"]
        assert scripted.requests[0][0].startswith(b"PUT /photos/a HTTP/1.1\r\n")
    finally:
        scripted.stop()


async def test_an_answer_that_closes_is_not_reused(scripted: ScriptedS3) -> None:
    scripted.script = [
        (answer("200 OK", b"", "Connection: close"), True),
        (answer("200 OK", b"to the end", length=False), True),
        (answer("200 OK"), False),
    ]
    port = await scripted.start()
    try:
        connections = connections_to(port)
        url = urlsplit(f"http://127.0.0.1:{port}/photos/a")

        await connections.request("PUT", url, sized(b"1"), b"1")
        unsized = await connections.request("PUT", url, sized(b"2"), b"2")
        await connections.request("PUT", url, sized(b"3"), b"3")

        assert unsized.body == b"to the end"
        assert scripted.connections == 3
    finally:
        scripted.stop()


async def test_a_put_answered_503_is_sent_again(scripted: ScriptedS3) -> None:
    scripted.script = [
        (answer("503 Slow Down"), False),
        (answer("503 Slow Down"), False),
        (answer("200 OK", b"", 'ETag: "abc"'), False),
    ]
    port = await scripted.start()
    data = b"a photo"
    try:
        info = await store_at(port).put_bytes(hashlib.sha256(data).hexdigest(), data)

        assert info.size == len(data)
        assert [body for _, body in scripted.requests] == [data] * 3
        head = scripted.requests[0][0].decode()
        assert f"x-amz-content-sha256: {hashlib.sha256(data).hexdigest()}" in head
        assert "Authorization: AWS4-HMAC-SHA256 Credential=key/" in head
    finally:
        scripted.stop()


async def test_a_put_answered_5xx_every_time_is_unavailable(scripted: ScriptedS3) -> None:
    scripted.script = [(answer("502 Bad Gateway"), False)] * 3
    port = await scripted.start()
    try:
        with pytest.raises(BlobStoreUnavailable):
            await store_at(port).put_bytes(hashlib.sha256(b"x").hexdigest(), b"x")
        assert len(scripted.requests) == 3
    finally:
        scripted.stop()


async def test_a_refused_put_carries_s3s_code(scripted: ScriptedS3) -> None:
    scripted.script = [
        (answer("404 Not Found", NO_SUCH_BUCKET, "Content-Type: application/xml"), False)
    ]
    port = await scripted.start()
    try:
        with pytest.raises(S3RequestFailed) as refused:
            await store_at(port).put_bytes(hashlib.sha256(b"x").hexdigest(), b"x")
        assert refused.value.s3_code == "NoSuchBucket"
    finally:
        scripted.stop()
