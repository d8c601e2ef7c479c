"""The uploads service: create, read, append to and terminate one caller's tus uploads."""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import msgspec

from schemas.errors import ErrorCode
from server.auth import Principal
from server.db.engine import transaction
from server.db.tables_blobs import Blob
from server.errors import (
    BadRequest,
    Conflict,
    Gone,
    NotFound,
    PayloadTooLarge,
    TooManyRequests,
    Unprocessable,
    UnsupportedMediaType,
)
from server.services.blobs import missing_blobs, normalize_content_type, record_blob
from server.services.uploads.pipeline import Patch, close_upload
from server.services.uploads.rows import (
    UploadRow,
    UploadView,
    close_row,
    count_active,
    delete_row,
    insert_row,
    load_row,
    new_row,
    now,
    progress_of,
    set_staging,
)
from server.services.uploads.runtime import Live, UploadRuntime
from server.services.uploads.tus import Checksum
from server.settings import Settings
from sync.blobs import BlobStore

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


async def create_upload(
    principal: Principal,
    *,
    length: int,
    metadata: Mapping[str, str],
    settings: Settings,
    runtime: UploadRuntime,
    store: BlobStore,
) -> UploadView:
    """Check the limits before any byte is stored; a hash the caller may already read completes
    at once, as their push would, making them a holder (anyone else proves they hold the file
    by sending its bytes)."""
    sha256 = metadata.get("sha256", "").strip().lower()
    if not _SHA256_HEX.fullmatch(sha256):
        raise BadRequest(
            "Upload-Metadata needs sha256: the file's SHA-256 as 64 hex characters.",
            code=ErrorCode.UPLOAD_METADATA_INVALID,
        )
    content_type = metadata.get("content_type") or metadata.get("filetype") or ""
    allowed = {normalize_content_type(t) for t in settings.allowed_content_type_set}
    if normalize_content_type(content_type) not in allowed:
        raise UnsupportedMediaType(
            f"Attachments of type {content_type or '(none)'!r} are not accepted.",
            code=ErrorCode.CONTENT_TYPE_NOT_ALLOWED,
        )
    if length > settings.max_upload_bytes:
        raise PayloadTooLarge(
            f"The file has {length} bytes; the most an attachment may have is "
            f"{settings.max_upload_bytes}.",
            code=ErrorCode.UPLOAD_TOO_LARGE,
        )
    if length == 0 and sha256 != _EMPTY_SHA256:
        # Refused before the row exists: a failed empty upload must not hold a slot for a day.
        raise Unprocessable(
            f"An empty file hashes to {_EMPTY_SHA256}, not the declared SHA-256.",
            code=ErrorCode.BLOB_HASH_MISMATCH,
        )
    row = new_row(
        upload_id=secrets.token_hex(16),
        user_id=principal.user_id,
        sha256=sha256,
        length=length,
        filename=(metadata.get("filename") or metadata.get("name") or "")[:255],
        content_type=content_type.split(";", 1)[0].strip().lower(),
        metadata=dict(metadata),
        expiry=runtime.expiry,
    )
    existing = await Blob.select(Blob.size).where(Blob.sha256 == sha256).first().run()
    if (
        existing is not None
        and existing["size"] == length
        and not await missing_blobs(principal, [sha256], referenced=True)
    ):
        # Dedupe: the bytes are already verified.
        row = msgspec.structs.replace(row, state="done", received=length)
    async with transaction():
        if row.state == "active":
            limit = settings.max_active_uploads_per_user
            if await count_active(principal.user_id, row.created_at) >= limit:
                raise TooManyRequests(
                    f"At most {limit} unfinished uploads at once; finish or cancel one first.",
                    code=ErrorCode.TOO_MANY_UPLOADS,
                    headers={"Retry-After": "30"},
                )
        await insert_row(row)
    if row.state == "active" and length == 0:
        await store.put(sha256, _no_bytes(), size=0, content_type=row.content_type)
        await record_blob(row.sha256, 0, row.content_type, row.user_id)
        row = await close_row(row, "done")
    return row.view()


async def _no_bytes() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an async generator


async def get_upload(
    principal: Principal, upload_id: str, *, store: BlobStore, runtime: UploadRuntime
) -> UploadView:
    # Waits for a PATCH in flight (one cut mid-body still commits what arrived) and for its parts
    # in flight, so the offset a resuming client reads is durable and its next PATCH's.
    async with _owner_lock(principal, upload_id, runtime):
        await runtime.settle(upload_id)
        row = await _usable_row(principal, upload_id, store, runtime)
    return row.view()


@asynccontextmanager
async def _owner_lock(
    principal: Principal, upload_id: str, runtime: UploadRuntime
) -> AsyncIterator[None]:
    """Hold the upload's lock, asked only once the caller owns it: unknown ids leave no lock."""
    await _owned_row(principal, upload_id, runtime)
    async with runtime.lock(upload_id):
        yield


async def _owned_row(principal: Principal, upload_id: str, runtime: UploadRuntime) -> UploadRow:
    row = await load_row(upload_id)
    if row is None or row.user_id != principal.user_id:
        if row is None:
            runtime.forget(upload_id)  # removed by another process (DELETE, gc-blobs)
        raise NotFound("There is no such upload.", code=ErrorCode.UPLOAD_NOT_FOUND)
    return row


async def _usable_row(
    principal: Principal,
    upload_id: str,
    store: BlobStore,
    runtime: UploadRuntime,
    row: UploadRow | None = None,
) -> UploadRow:
    """The caller's upload, unless it expired (its staged parts are removed now) or failed."""
    row = row or await _owned_row(principal, upload_id, runtime)
    if row.state == "active" and row.expires_at <= now():
        row = await close_upload(
            row, store, runtime, state="expired", failure=ErrorCode.UPLOAD_EXPIRED
        )
    if row.state == "expired":
        raise Gone("This upload expired; start a new one.", code=ErrorCode.UPLOAD_EXPIRED)
    if row.state == "failed":
        raise Gone(
            "This upload failed verification; start a new one.",
            code=ErrorCode(row.failure or ErrorCode.GONE),
        )
    return row


async def terminate(
    principal: Principal, upload_id: str, *, store: BlobStore, runtime: UploadRuntime
) -> None:
    async with _owner_lock(principal, upload_id, runtime):
        await runtime.settle(upload_id)
        row = await _owned_row(principal, upload_id, runtime)
        if row.staging:
            await store.discard_staged(row.staging)
        await delete_row(upload_id)
        runtime.forget(upload_id)


async def append(
    principal: Principal,
    upload_id: str,
    *,
    offset: int,
    body: AsyncIterator[bytes],
    checksum: Checksum | None,
    store: BlobStore,
    runtime: UploadRuntime,
) -> UploadView:
    """Stage a PATCH body at `offset`; complete and verify the upload when its last byte arrives."""
    async with _owner_lock(principal, upload_id, runtime):
        row = await _owned_row(principal, upload_id, runtime)
        live = runtime.live.get(upload_id)
        if live is not None and not (
            offset == live.accepted and row.staging == live.handle and row.state == "active"
        ):
            # Not the continuation this process expects: what the row says, once parts landed.
            await runtime.settle(upload_id)
            row = await _owned_row(principal, upload_id, runtime)
            live = runtime.live.get(upload_id)
            if live is not None and live.committed.received != row.received:
                runtime.live.pop(upload_id)  # another process moved it on
                live = None
        row = await _usable_row(principal, upload_id, store, runtime, row)
        expected = live.accepted if live is not None else row.received
        if offset != expected:
            raise Conflict(
                f"Upload-Offset {offset} does not match the {expected} bytes received.",
                code=ErrorCode.UPLOAD_OFFSET_MISMATCH,
            )
        if row.state == "done":
            await _drain(body)
            return row.view()
        # Another device may have finished the same file meanwhile: asked while the body arrives
        # (the client sends it anyway); if so, what this PATCH staged is dropped at its end.
        stored = asyncio.create_task(_already_readable(principal, row))
        try:
            if live is None:
                row, live = await _live_from_row(row, store, runtime)
            return await Patch(row, live, checksum, store, runtime, stored).run(body)
        except BaseException:
            if not stored.done():
                stored.cancel()
            await asyncio.wait([stored])
            # Parts in flight from before may still land; the row then says what is durable.
            await runtime.settle(upload_id)
            runtime.live.pop(upload_id, None)
            raise


async def _already_readable(principal: Principal, row: UploadRow) -> bool:
    """Another device finished the same file meanwhile, and this caller may read it: nothing
    more needs to be sent. (Who may not read it still proves possession with the bytes.)"""
    return (
        await Blob.exists()
        .where((Blob.sha256 == row.sha256) & (Blob.size == row.upload_length))
        .run()
    ) and not await missing_blobs(principal, [row.sha256], referenced=True)


async def _drain(body: AsyncIterator[bytes]) -> None:
    async for _ in body:
        pass


async def _live_from_row(
    row: UploadRow, store: BlobStore, runtime: UploadRuntime
) -> tuple[UploadRow, Live]:
    """This process's state of an upload, from its row (staging begun if it had none)."""
    if not row.staging:
        # With a savable hash the digest is always known at completion: stage at the blob's key.
        handle = await store.begin_staging(
            row.id,
            content_type=row.content_type,
            sha256=row.sha256 if runtime.hashing.savable else None,
        )
        row = await set_staging(row, handle)
    committed = progress_of(row)
    received = committed.received
    hashing = runtime.hashing
    hasher = hashing.new() if received == 0 else hashing.restored(committed.hash_state, received)
    if hasher is None and store.staging_blob(row.staging) is not None:
        # Staged at the blob's key, it can only publish with a digest, and this one's hashing
        # cannot be resumed here: start again rather than hold bytes that can never publish.
        await close_upload(
            row, store, runtime, state="failed", failure=ErrorCode.UPLOAD_CANNOT_RESUME
        )
        raise Gone(
            "This upload cannot be resumed on this server; start a new one.",
            code=ErrorCode.UPLOAD_CANNOT_RESUME,
        )
    live = Live(
        handle=row.staging,
        committed=committed,
        accepted=received,
        hasher=hasher,
        sniffed_type=committed.sniffed_type,
        expires_at=row.expires_at,
    )
    runtime.prune(now())
    runtime.live[row.id] = live
    return row, live
