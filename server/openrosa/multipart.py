"""multipart/form-data read as a stream, each part handed to a sink as its bytes arrive.

python-multipart's push parser is fed the request body chunk by chunk; its callbacks only note
what they saw, and the notes are played to async sinks between chunks, so a part's bytes go on
(to the blob store) while the body is still arriving and memory holds about one chunk of it.
Part headers are read as UTF-8: Collect writes non-ASCII file names raw (odk.md §11.14).

`BlobWriter` is the sink for a file: it hashes while it receives, writes a file that fits in one
staging part with one `put_bytes`, and stages a larger one part by part, published under its
digest once the last byte arrived.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from schemas.errors import ErrorCode
from server.errors import BadRequest, PayloadTooLarge
from sync.blobs import STAGING_PART_SIZE, BlobStore, StagedPart

SNIFF_BYTES = 16  # what server.services.blobs.sniff_content_type reads
MAX_PART_HEADERS = 16
MAX_PART_HEADER_BYTES = 8 * 1024


@dataclass(frozen=True)
class PartHeaders:
    name: str
    filename: str | None
    content_type: str


class PartSink(Protocol):
    async def write(self, data: bytes) -> None: ...

    async def close(self) -> None: ...


class Discard:
    """A part nobody keeps (`*isIncomplete*`, a file the XML does not name)."""

    async def write(self, data: bytes) -> None:
        return None

    async def close(self) -> None:
        return None


def boundary_of(content_type: str) -> bytes | None:
    """The boundary of a multipart/form-data Content-Type, else None."""
    media, options = parse_options_header(content_type)
    if media != b"multipart/form-data":
        return None
    return options.get(b"boundary") or None


def _malformed(detail: str) -> BadRequest:
    return BadRequest(f"The multipart body is malformed: {detail}", code=ErrorCode.MALFORMED_BODY)


async def read_parts(
    body: AsyncIterator[bytes],
    boundary: bytes,
    open_part: Callable[[PartHeaders], Awaitable[PartSink]],
) -> None:
    """Feed `body` to the parser; each part's bytes go to the sink `open_part` gives for it."""
    notes: list[tuple[str, Any]] = []
    header: dict[str, bytearray] = {"field": bytearray(), "value": bytearray()}
    headers: dict[str, bytes] = {}

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header["value"] += data[start:end]

    def on_header_end() -> None:
        headers[header["field"].decode("latin-1").strip().lower()] = bytes(header["value"])
        header["field"], header["value"] = bytearray(), bytearray()

    def on_headers_finished() -> None:
        notes.append(("begin", _part_headers(headers)))
        headers.clear()

    parser = MultipartParser(
        boundary,
        callbacks={
            "on_part_data": lambda data, start, end: notes.append(("data", data[start:end])),
            "on_part_end": lambda: notes.append(("end", None)),
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_end": lambda: notes.append(("done", None)),
        },
        max_header_count=MAX_PART_HEADERS,
        max_header_size=MAX_PART_HEADER_BYTES,
    )
    sink: PartSink | None = None
    done = False
    async for chunk in body:
        try:
            parser.write(chunk)
        except MultipartParseError as error:
            raise _malformed(str(error)) from None
        for kind, value in notes:
            if kind == "begin":
                sink = await open_part(value)
            elif kind == "data" and sink is not None:
                await sink.write(value)
            elif kind == "end" and sink is not None:
                await sink.close()
                sink = None
            elif kind == "done":
                done = True
        notes.clear()
    if not done:
        raise _malformed("the body ends before its closing boundary.")


def _part_headers(headers: dict[str, bytes]) -> PartHeaders:
    # Through latin-1 and back: parse_options_header returns the parameters' raw bytes, which
    # are then read as UTF-8.
    disposition = headers.get("content-disposition", b"").decode("latin-1")
    kind, options = parse_options_header(disposition)
    if kind != b"form-data":
        raise _malformed("a part has no Content-Disposition: form-data.")
    filename = options.get(b"filename")
    return PartHeaders(
        name=_utf8(options.get(b"name", b"")),
        filename=_utf8(filename) if filename is not None else None,
        content_type=_utf8(headers.get("content-type", b"")).strip().lower(),
    )


def _utf8(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


class Collected:
    """A sink that keeps a part's bytes, up to `limit` (the XML part, which is parsed whole)."""

    def __init__(self, limit: int, what: str) -> None:
        self.limit = limit
        self.what = what
        self.data = bytearray()
        self.closed = False

    async def write(self, data: bytes) -> None:
        if len(self.data) + len(data) > self.limit:
            raise PayloadTooLarge(
                f"The {self.what} is larger than {self.limit} bytes.",
                code=ErrorCode.PAYLOAD_TOO_LARGE,
            )
        self.data += data

    async def close(self) -> None:
        self.closed = True


@dataclass(frozen=True)
class StoredFile:
    name: str
    sha256: str
    size: int
    head: bytes  # the first bytes, for content sniffing
    declared_type: str


class BlobWriter:
    """Streams one file part into the blob store, hashing on the way (bounded memory: one
    staging part)."""

    def __init__(self, store: BlobStore, headers: PartHeaders, *, limit: int) -> None:
        self.store = store
        self.headers = headers
        self.limit = limit
        self.hasher = hashlib.sha256()
        self.size = 0
        self.head = b""
        self.buffer = bytearray()
        self.handle: str | None = None
        self.parts: list[StagedPart] = []
        self.stored: StoredFile | None = None

    async def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            await self.discard()
            raise PayloadTooLarge(
                f"The file {self.headers.name!r} is larger than {self.limit} bytes.",
                code=ErrorCode.UPLOAD_TOO_LARGE,
            )
        if len(self.head) < SNIFF_BYTES:
            self.head = (self.head + data)[:SNIFF_BYTES]
        self.hasher.update(data)
        self.buffer += data
        while len(self.buffer) >= STAGING_PART_SIZE:
            await self._stage(bytes(self.buffer[:STAGING_PART_SIZE]))
            del self.buffer[:STAGING_PART_SIZE]

    async def _stage(self, data: bytes) -> None:
        if self.handle is None:
            self.handle = await self.store.begin_staging(secrets.token_hex(16))
        try:
            self.parts.append(await self.store.stage_part(self.handle, len(self.parts) + 1, data))
        except BaseException:
            await self.discard()
            raise

    async def close(self) -> None:
        digest = self.hasher.hexdigest()
        kind = self.headers.content_type or None
        if self.handle is None:
            await self.store.put_bytes(digest, bytes(self.buffer), content_type=kind)
        else:
            if self.buffer:
                await self._stage(bytes(self.buffer))
            handle, self.handle = self.handle, None
            await self.store.publish_staged(
                handle, self.parts, sha256=digest, content_type=kind, digest=digest
            )
        self.buffer = bytearray()
        self.stored = StoredFile(
            name=self.headers.name,
            sha256=digest,
            size=self.size,
            head=self.head,
            declared_type=self.headers.content_type,
        )

    async def discard(self) -> None:
        """Drop what was staged (a part that broke off or was refused)."""
        handle, self.handle = self.handle, None
        self.buffer = bytearray()
        if handle is not None:
            await self.store.discard_staged(handle)
