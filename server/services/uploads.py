"""Resumable uploads (tus 1.0): state in the `upload` table, bytes staged in the blob store.

Bytes arrive in PATCH bodies of any size and are cut into STAGING_PART_SIZE parts; bytes that do
not fill a part wait in the staging area's tail, so memory per request stays about two parts.
`received` in the row only ever counts durably staged bytes, so a cut connection or a restart
resumes where the row says. Without Upload-Checksum each stored part is committed at once (an
upload cut at 80% resumes at 80%); with it, nothing of the PATCH is committed unless it matches.

The SHA-256 of the whole upload is computed while it streams and kept per app instance; after a
restart (or on another worker) the store hashes the assembled bytes back instead.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import re
import secrets
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from server.auth import Principal
from server.db.engine import transaction
from server.db.tables_blobs import Blob, Upload
from server.errors import (
    BadRequest,
    Conflict,
    DomainError,
    Gone,
    NotFound,
    PayloadTooLarge,
    TooManyRequests,
    Unprocessable,
    UnsupportedMediaType,
)
from server.services.blobs import (
    ALLOWED_CONTENT_TYPES,
    SNIFF_BYTES,
    normalize_content_type,
    record_blob,
    sniff_content_type,
)
from sync.blobs import STAGING_PART_SIZE, BlobHashMismatch, BlobStore, StagedPart

log = logging.getLogger("fieldsync.uploads")

TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = "creation,creation-with-upload,termination,checksum,expiration"
CHECKSUM_ALGORITHMS = {"sha256": hashlib.sha256, "sha1": hashlib.sha1}
# An interrupted upload's staged parts are kept this long after its last byte, then removed.
UPLOAD_EXPIRY = timedelta(hours=24)
# Unfinished uploads one user may have at once (a tablet sends a few files in parallel at most).
MAX_ACTIVE_UPLOADS_PER_USER = 4

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class ChecksumMismatch(DomainError):
    status = 460  # tus checksum extension: "Checksum Mismatch"
    code = "checksum_mismatch"
    title = "Checksum mismatch"


class PreconditionFailed(DomainError):
    status = 412
    code = "tus_version_unsupported"
    title = "Unsupported protocol version"


class ClientDisconnected(Exception):
    """The request body ended early: the connection was cut."""


@dataclass(frozen=True)
class UploadView:
    id: str
    length: int
    offset: int
    state: str
    sha256: str
    expires_at: datetime


@dataclass
class UploadRuntime:
    """Per app instance: a lock per upload and the running SHA-256 of each upload's bytes."""

    locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    hashers: dict[str, tuple[int, Any]] = field(default_factory=dict)  # id -> (offset, hasher)
    expiry: timedelta = UPLOAD_EXPIRY

    def lock(self, upload_id: str) -> asyncio.Lock:
        return self.locks.setdefault(upload_id, asyncio.Lock())

    def forget(self, upload_id: str) -> None:
        self.hashers.pop(upload_id, None)
        self.locks.pop(upload_id, None)


def _now() -> datetime:
    return datetime.now(UTC)


def _loaded(value: Any) -> Any:
    # Piccolo hands JSON columns back as text unless asked otherwise.
    return json.loads(value) if isinstance(value, str) else value


def _view(row: Mapping[str, Any]) -> UploadView:
    return UploadView(
        id=row["id"],
        length=row["upload_length"],
        offset=row["received"],
        state=row["state"],
        sha256=row["sha256"],
        expires_at=row["expires_at"],
    )


def parse_metadata(header: str) -> dict[str, str]:
    """`Upload-Metadata: key base64value,key2 base64value2` (tus 1.0)."""
    metadata: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in header.split(","))):
        key, _, encoded = item.partition(" ")
        try:
            metadata[key] = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise BadRequest(
                f"Upload-Metadata value for {key!r} is not base64 UTF-8.",
                code="upload_metadata_invalid",
            ) from None
    return metadata


def parse_checksum(header: str | None) -> tuple[str, bytes] | None:
    """`Upload-Checksum: <algorithm> <base64 digest>`."""
    if not header:
        return None
    algorithm, _, encoded = header.strip().partition(" ")
    if algorithm not in CHECKSUM_ALGORITHMS:
        raise BadRequest(
            f"Upload-Checksum algorithm {algorithm!r} is not supported (sha256, sha1).",
            code="checksum_algorithm_unsupported",
        )
    try:
        return algorithm, base64.b64decode(encoded.strip(), validate=True)
    except binascii.Error:
        raise BadRequest("Upload-Checksum digest is not base64.", code="checksum_invalid") from None


async def create_upload(
    principal: Principal,
    *,
    length: int,
    metadata: Mapping[str, str],
    max_bytes: int,
    runtime: UploadRuntime,
    store: BlobStore,
) -> UploadView:
    """Check the limits before any byte is stored; a hash already stored completes at once."""
    sha256 = metadata.get("sha256", "").strip().lower()
    if not _SHA256_HEX.fullmatch(sha256):
        raise BadRequest(
            "Upload-Metadata needs sha256: the file's SHA-256 as 64 hex characters.",
            code="upload_metadata_invalid",
        )
    content_type = metadata.get("content_type") or metadata.get("filetype") or ""
    if normalize_content_type(content_type) not in {
        normalize_content_type(t) for t in ALLOWED_CONTENT_TYPES
    }:
        raise UnsupportedMediaType(
            f"Attachments of type {content_type or '(none)'!r} are not accepted.",
            code="content_type_not_allowed",
        )
    if length > max_bytes:
        raise PayloadTooLarge(
            f"The file has {length} bytes; the most an attachment may have is {max_bytes}.",
            code="upload_too_large",
        )
    filename = (metadata.get("filename") or metadata.get("name") or "")[:255]
    now = _now()
    row: dict[str, Any] = {
        "id": secrets.token_hex(16),
        "user_id": principal.user_id,
        "sha256": sha256,
        "upload_length": length,
        "received": 0,
        "filename": filename,
        "content_type": content_type.split(";", 1)[0].strip().lower(),
        "metadata": dict(metadata),
        "state": "active",
        "created_at": now,
        "updated_at": now,
        "expires_at": now + runtime.expiry,
    }
    existing = await Blob.select(Blob.size).where(Blob.sha256 == sha256).first().run()
    if existing is not None and existing["size"] == length:
        row.update(state="done", received=length)  # dedupe: the bytes are already verified
    async with transaction():
        if row["state"] == "active":
            active = await Upload.count().where(
                (Upload.user_id == principal.user_id)
                & (Upload.state == "active")
                & (Upload.expires_at > now)
            )
            if active >= MAX_ACTIVE_UPLOADS_PER_USER:
                raise TooManyRequests(
                    f"At most {MAX_ACTIVE_UPLOADS_PER_USER} unfinished uploads at once; "
                    "finish or cancel one first.",
                    code="too_many_uploads",
                    headers={"Retry-After": "30"},
                )
        await Upload.insert(Upload(**row)).run()
    if row["state"] == "active" and length == 0:
        await store.put(sha256, _no_bytes(), size=0, content_type=row["content_type"])
        return await _complete_empty(row)
    return _view(row)


async def _no_bytes() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an async generator


async def _complete_empty(row: dict[str, Any]) -> UploadView:
    await record_blob(row["sha256"], 0, row["content_type"], row["user_id"])
    await (
        Upload.update({Upload.state: "done", Upload.updated_at: _now()})
        .where(Upload.id == row["id"])
        .run()
    )
    row.update(state="done")
    return _view(row)


async def get_upload(
    principal: Principal, upload_id: str, *, store: BlobStore, runtime: UploadRuntime
) -> UploadView:
    # Waits for a PATCH in flight (one cut mid-body still commits what arrived) so the offset
    # a resuming client reads is the one its next PATCH must use.
    async with runtime.lock(upload_id):
        row = await _usable_row(principal, upload_id, store)
    return _view(row)


async def _owned_row(principal: Principal, upload_id: str) -> dict[str, Any]:
    row = await Upload.select().where(Upload.id == upload_id).first().run()
    if row is None or row["user_id"] != principal.user_id:
        raise NotFound("There is no such upload.", code="upload_not_found")
    return row


async def _usable_row(principal: Principal, upload_id: str, store: BlobStore) -> dict[str, Any]:
    """The caller's upload, unless it expired (its staged parts are removed now) or failed."""
    row = await _owned_row(principal, upload_id)
    if row["state"] == "active" and row["expires_at"] <= _now():
        await _discard(row, store, state="expired", failure="upload_expired")
        row["state"] = "expired"
    if row["state"] == "expired":
        raise Gone("This upload expired; start a new one.", code="upload_expired")
    if row["state"] == "failed":
        raise Gone(
            "This upload failed verification; start a new one.", code=row["failure"] or "gone"
        )
    return row


async def _discard(row: Mapping[str, Any], store: BlobStore, *, state: str, failure: str) -> None:
    if row["staging"]:
        await store.discard_staged(row["staging"])
    await (
        Upload.update(
            {
                Upload.state: state,
                Upload.failure: failure,
                Upload.staging: "",
                Upload.parts: [],
                Upload.tail_size: 0,
                Upload.updated_at: _now(),
            }
        )
        .where(Upload.id == row["id"])
        .run()
    )


async def terminate(
    principal: Principal, upload_id: str, *, store: BlobStore, runtime: UploadRuntime
) -> None:
    async with runtime.lock(upload_id):
        row = await _owned_row(principal, upload_id)
        if row["staging"]:
            await store.discard_staged(row["staging"])
        await Upload.delete().where(Upload.id == upload_id).run()
    runtime.forget(upload_id)


@dataclass
class _Progress:
    """What is durably staged: committed to the row after each part (or once, with a checksum)."""

    parts: list[StagedPart]
    tail_size: int
    sniffed_type: str | None

    @property
    def received(self) -> int:
        return sum(part.size for part in self.parts) + self.tail_size


async def append(
    principal: Principal,
    upload_id: str,
    *,
    offset: int,
    body: AsyncIterator[bytes],
    checksum: tuple[str, bytes] | None,
    store: BlobStore,
    runtime: UploadRuntime,
) -> UploadView:
    """Stage a PATCH body at `offset`; complete and verify the upload when its last byte arrives."""
    async with runtime.lock(upload_id):
        row = await _usable_row(principal, upload_id, store)
        if offset != row["received"]:
            raise Conflict(
                f"Upload-Offset {offset} does not match the {row['received']} bytes received.",
                code="upload_offset_mismatch",
            )
        if row["state"] == "done" or await _already_stored(row):
            await _drain(body)
            if row["state"] != "done":
                await _finish_deduplicated(row, store)
            return _view({**row, "state": "done", "received": row["upload_length"]})
        return await _stage_body(row, body, checksum, store, runtime)


async def _already_stored(row: Mapping[str, Any]) -> bool:
    """Another device finished the same file meanwhile: nothing more needs to be sent."""
    return (
        await Blob.exists()
        .where((Blob.sha256 == row["sha256"]) & (Blob.size == row["upload_length"]))
        .run()
    )


async def _finish_deduplicated(row: Mapping[str, Any], store: BlobStore) -> None:
    if row["staging"]:
        await store.discard_staged(row["staging"])
    await (
        Upload.update(
            {
                Upload.state: "done",
                Upload.received: row["upload_length"],
                Upload.staging: "",
                Upload.parts: [],
                Upload.tail_size: 0,
                Upload.updated_at: _now(),
            }
        )
        .where(Upload.id == row["id"])
        .run()
    )


async def _drain(body: AsyncIterator[bytes]) -> None:
    async for _ in body:
        pass


async def _stage_body(
    row: dict[str, Any],
    body: AsyncIterator[bytes],
    checksum: tuple[str, bytes] | None,
    store: BlobStore,
    runtime: UploadRuntime,
) -> UploadView:
    upload_id, length = row["id"], row["upload_length"]
    handle = row["staging"]
    if not handle:
        handle = await store.begin_staging(upload_id, content_type=row["content_type"])
        await Upload.update({Upload.staging: handle}).where(Upload.id == upload_id).run()
        row["staging"] = handle
    committed = _Progress(
        parts=[StagedPart(number=n, size=s, etag=e) for n, s, e in _loaded(row["parts"])],
        tail_size=row["tail_size"],
        sniffed_type=row["sniffed_type"],
    )
    progress = _Progress(list(committed.parts), committed.tail_size, committed.sniffed_type)
    buffer = bytearray(await store.read_tail(handle, committed.tail_size))
    cached = runtime.hashers.get(upload_id)
    hasher = cached[1].copy() if cached and cached[0] == committed.received else None
    if committed.received == 0:
        hasher = hashlib.sha256()
    hashed_in_buffer = len(buffer)  # the tail was hashed when it was committed
    chunk_check = CHECKSUM_ALGORITHMS[checksum[0]]() if checksum else None
    remaining = length - committed.received
    arrived = 0

    async def commit() -> None:
        nonlocal committed
        await _commit(row, committed.received, progress)
        committed = _Progress(list(progress.parts), progress.tail_size, progress.sniffed_type)
        if hasher is not None:
            runtime.hashers[upload_id] = (committed.received, hasher.copy())

    async def stage_part(data: bytes) -> None:
        nonlocal hashed_in_buffer
        if not progress.parts:
            progress.sniffed_type = sniff_content_type(data[:SNIFF_BYTES]) or ""
            if progress.sniffed_type != normalize_content_type(row["content_type"]):
                await _fail(row, store, runtime, "content_type_mismatch")
                raise UnsupportedMediaType(
                    f"The file's bytes are {progress.sniffed_type or 'of an unknown type'}, "
                    f"not the declared {row['content_type']}.",
                    code="content_type_mismatch",
                )
        if hasher is not None:
            hasher.update(data[hashed_in_buffer:])
        hashed_in_buffer = max(0, hashed_in_buffer - len(data))
        progress.parts.append(await store.stage_part(handle, len(progress.parts) + 1, data))
        progress.tail_size = 0

    disconnected = False
    try:
        async for chunk in body:
            arrived += len(chunk)
            if arrived > remaining:
                raise PayloadTooLarge(
                    f"More bytes than the {remaining} left of the declared Upload-Length.",
                    code="upload_length_exceeded",
                )
            if chunk_check is not None:
                chunk_check.update(chunk)
            buffer += chunk
            while len(buffer) >= STAGING_PART_SIZE:
                part = bytes(buffer[:STAGING_PART_SIZE])
                del buffer[:STAGING_PART_SIZE]
                await stage_part(part)
                # The last part is committed by completion, so HEAD never shows a finished
                # offset for an upload that is not readable yet.
                if checksum is None and progress.received < length:  # tail_size is 0 here
                    await commit()
    except ClientDisconnected:
        disconnected = True  # keep what arrived: the client resumes from HEAD's offset
    if checksum is not None:
        if disconnected or chunk_check is None or chunk_check.digest() != checksum[1]:
            raise ChecksumMismatch(
                "The chunk does not match its Upload-Checksum; send it again.",
            )
    # The buffer starts with the committed tail, so staged parts plus the buffer is everything.
    if sum(part.size for part in progress.parts) + len(buffer) == length and length > 0:
        if buffer:
            await stage_part(bytes(buffer))
        return await _complete(row, progress, hasher, store, runtime)
    if len(buffer) != progress.tail_size or progress.received != committed.received:
        if hasher is not None:
            hasher.update(buffer[hashed_in_buffer:])
        if len(buffer) != progress.tail_size:
            await store.stage_tail(handle, bytes(buffer))
        progress.tail_size = len(buffer)
        await commit()
    return _view({**row, "received": committed.received})


async def _commit(row: Mapping[str, Any], previous: int, progress: _Progress) -> None:
    # Conditional on the previous offset: a PATCH racing from another worker loses, never mixes.
    updated = (
        await Upload.update(
            {
                Upload.received: progress.received,
                Upload.parts: [[p.number, p.size, p.etag] for p in progress.parts],
                Upload.tail_size: progress.tail_size,
                Upload.sniffed_type: progress.sniffed_type,
                Upload.updated_at: _now(),
            }
        )
        .where((Upload.id == row["id"]) & (Upload.received == previous))
        .returning(Upload.id)
        .run()
    )
    if not updated:
        raise Conflict("Another request changed this upload.", code="upload_offset_mismatch")


async def _fail(
    row: Mapping[str, Any], store: BlobStore, runtime: UploadRuntime, failure: str
) -> None:
    await _discard(row, store, state="failed", failure=failure)
    runtime.forget(row["id"])


async def _complete(
    row: Mapping[str, Any],
    progress: _Progress,
    hasher: Any,
    store: BlobStore,
    runtime: UploadRuntime,
) -> UploadView:
    """Verify size and SHA-256, publish under the hash, record the blob; or discard and refuse."""
    sha256 = row["sha256"]
    try:
        info = await store.publish_staged(
            row["staging"],
            progress.parts,
            sha256=sha256,
            content_type=row["content_type"],
            digest=hasher.hexdigest() if hasher is not None else None,
        )
    except BlobHashMismatch:
        await _fail(row, store, runtime, "blob_hash_mismatch")
        raise Unprocessable(
            "The file's bytes do not match its declared SHA-256; nothing was kept.",
            code="blob_hash_mismatch",
        ) from None
    await record_blob(sha256, info.size, row["content_type"], row["user_id"])
    await (
        Upload.update(
            {
                Upload.state: "done",
                Upload.received: row["upload_length"],
                Upload.staging: "",
                Upload.parts: [],
                Upload.tail_size: 0,
                Upload.sniffed_type: progress.sniffed_type,
                Upload.updated_at: _now(),
            }
        )
        .where(Upload.id == row["id"])
        .run()
    )
    runtime.forget(row["id"])
    return _view({**row, "state": "done", "received": row["upload_length"]})
