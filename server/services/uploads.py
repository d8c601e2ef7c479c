"""Resumable uploads (tus 1.0): state in the `upload` table, bytes staged in the blob store.

Bytes arrive in PATCH bodies of any size and are cut into STAGING_PART_SIZE parts; bytes that do
not fill a part wait in the staging area's tail. `received` in the row only ever counts durably
staged bytes, so a cut connection or a restart resumes where the row says (HEAD answers it).

Parts in flight: a full part is stored and hashed in the background while the next bytes
arrive (at most MAX_PARTS_IN_FLIGHT parts held at once, so memory stays a few parts per
upload); its row update follows once it is stored, in part order. A PATCH that ends exactly on a
part boundary is answered when its bytes are received, its last part possibly still in flight,
and the next PATCH may continue at once. Everything else waits for its parts first: a PATCH that leaves a
tail, one with Upload-Checksum (nothing of it counts unless it matches), the one that completes
the upload, HEAD (so it always answers a durable offset) and DELETE. If a part in flight fails,
or the process stops before it lands, the row still holds the offset before it: the next PATCH
gets the store's error or a 409, and the client resumes from HEAD, as tus clients do.

The SHA-256 of the whole upload is computed while it streams (in a worker thread) and its state
is saved with every row update (OpenSSL's SHA256_CTX, where libcrypto is reachable), so any
process can go on hashing after a restart. That lets the S3 store stage the parts straight at
`blobs/<sha256>` and complete them there only after the digest matched: no copy at completion,
and a mismatch never becomes readable. Without a savable state the parts stage privately and the
store hashes them back and copies them at completion.

The row's `parts` column holds {"parts": [[number, size, etag], ...], "sha256_state": base64}
(rows written before hash states were saved hold the bare list).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ctypes
import ctypes.util
import hashlib
import json
import logging
import re
import secrets
import struct
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
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
    SNIFF_BYTES,
    missing_blobs,
    normalize_content_type,
    record_blob,
    sniff_content_type,
)
from server.settings import Settings
from sync.blobs import STAGING_PART_SIZE, BlobHashMismatch, BlobStore, StagedPart

log = logging.getLogger("fieldsync.uploads")

TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = "creation,creation-with-upload,termination,checksum,expiration"
CHECKSUM_ALGORITHMS = {"sha256": hashlib.sha256, "sha1": hashlib.sha1}
# Parts of one upload on their way to the store while the next bytes arrive.
MAX_PARTS_IN_FLIGHT = 3

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


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


# --- SHA-256 whose progress can be saved in the row ------------------------------------------

# sizeof(SHA256_CTX) in OpenSSL and LibreSSL: h[8], Nl, Nh, data[16], num, md_len (32 bits each).
_CTX_BYTES = 112
_CTX_BUFFER = 256  # room to spare, in case a build pads the struct


class _SavableSha256:
    """hashlib-like SHA-256 over libcrypto's SHA256_* calls, whose context is plain bytes.

    ctypes releases the GIL during the calls, so hashing in a worker thread runs in parallel.
    """

    def __init__(self, lib: Any, context: bytes | None = None) -> None:
        self._lib = lib
        self._ctx = ctypes.create_string_buffer(_CTX_BUFFER)
        if context is None:
            lib.SHA256_Init(self._ctx)
        else:
            ctypes.memmove(self._ctx, context, len(context))

    def update(self, data: bytes) -> None:
        self._lib.SHA256_Update(self._ctx, data, len(data))

    def copy(self) -> _SavableSha256:
        return _SavableSha256(self._lib, self._ctx.raw[:_CTX_BYTES])

    def hexdigest(self) -> str:
        out = ctypes.create_string_buffer(32)
        self._lib.SHA256_Final(out, self.copy()._ctx)
        return out.raw.hex()

    def hashed_bytes(self) -> int:
        low, high = struct.unpack_from("=II", self._ctx.raw, 32)  # Nl, Nh: the length in bits
        return ((high << 32) | low) // 8

    def state(self) -> str:
        return base64.b64encode(self._ctx.raw[:_CTX_BYTES]).decode()


def _load_libcrypto() -> Any | None:
    """libcrypto with a working SHA256_* API (the one hashlib uses), or None."""
    candidates: list[str] = []
    try:
        import _hashlib

        candidates.append(_hashlib.__file__ or "")
    except ImportError:  # pragma: no cover - CPython builds without OpenSSL
        pass
    candidates.append(ctypes.util.find_library("crypto") or "")
    for path in filter(None, candidates):
        try:
            lib = ctypes.CDLL(path)
            lib.SHA256_Init.argtypes = [ctypes.c_void_p]
            lib.SHA256_Update.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
            lib.SHA256_Final.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
        except (OSError, AttributeError):
            continue
        # Saved after 1000 bytes, restored into a fresh buffer, continued: must equal hashlib.
        first = _SavableSha256(lib)
        first.update(b"f" * 1000)
        resumed = _SavableSha256(lib, base64.b64decode(first.state()))
        resumed.update(b"s" * 77)
        expected = hashlib.sha256(b"f" * 1000 + b"s" * 77).hexdigest()
        if resumed.hexdigest() == expected and resumed.hashed_bytes() == 1077:
            return lib
    log.warning("libcrypto's SHA256_* API is not usable: uploads hash back at completion")
    return None


_LIBCRYPTO = _load_libcrypto()


def _new_hasher() -> Any:
    return _SavableSha256(_LIBCRYPTO) if _LIBCRYPTO is not None else hashlib.sha256()


def _saved_state(hasher: Any) -> str | None:
    return hasher.state() if isinstance(hasher, _SavableSha256) else None


def _restored_hasher(state: str | None, size: int) -> Any | None:
    """The hasher saved with `size` bytes hashed, or None if there is none usable."""
    if _LIBCRYPTO is None or not state:
        return None
    try:
        context = base64.b64decode(state, validate=True)
    except binascii.Error:
        return None
    if len(context) != _CTX_BYTES:
        return None
    hasher = _SavableSha256(_LIBCRYPTO, context)
    return hasher if hasher.hashed_bytes() == size else None


# --- state ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UploadView:
    id: str
    length: int
    offset: int
    state: str
    sha256: str
    expires_at: datetime


@dataclass
class _Progress:
    """What the row says is durably staged."""

    parts: list[StagedPart]
    tail_size: int
    sniffed_type: str | None
    hash_state: str | None  # the SHA-256 state after `received` bytes

    @property
    def received(self) -> int:
        return sum(part.size for part in self.parts) + self.tail_size

    def column(self) -> dict[str, Any]:
        return {
            "parts": [[p.number, p.size, p.etag] for p in self.parts],
            "sha256_state": self.hash_state,
        }


@dataclass
class _Live:
    """One upload in this process: the row's progress plus the parts still in flight."""

    handle: str
    committed: _Progress  # the row's progress; flights advance it as they land, in order
    accepted: int  # where the next PATCH continues: committed.received + the parts in flight
    hasher: Any | None  # SHA-256 of the first `accepted` bytes; None: the store hashes back
    sniffed_type: str | None
    expires_at: datetime
    flights: list[_Flight] = field(default_factory=list)

    async def settle(self) -> BaseException | None:
        """Wait for every part in flight (never cancelling them); return the first failure."""
        tasks = [flight.task for flight in self.flights]
        self.flights = []
        if tasks:
            await asyncio.wait(tasks)
        failures = [
            asyncio.CancelledError("a part in flight was cancelled")
            if task.cancelled()
            else task.exception()
            for task in tasks
        ]
        return next((failure for failure in failures if failure is not None), None)


class _Flight:
    """One part on its way: staged and hashed at once (the hash in part order, in a worker
    thread), then recorded in the row after the part before it."""

    def __init__(
        self,
        live: _Live,
        upload_id: str,
        store: BlobStore,
        expiry: timedelta,
        number: int,
        data: bytes,
        hash_from: int,
        hasher: Any | None,
    ) -> None:
        self.previous = live.flights[-1] if live.flights else None
        self.staged = asyncio.Event()  # its bytes are stored and hashed: memory released
        self.hashed = asyncio.Event()
        self.task = asyncio.create_task(
            self._fly(live, upload_id, store, expiry, number, data, hash_from, hasher)
        )

    async def _fly(
        self,
        live: _Live,
        upload_id: str,
        store: BlobStore,
        expiry: timedelta,
        number: int,
        data: bytes,
        hash_from: int,
        hasher: Any | None,
    ) -> None:
        try:
            staging = asyncio.ensure_future(store.stage_part(live.handle, number, data))
            try:
                hash_state = await self._hash(hasher, data, hash_from)
            finally:
                # Never left running on its own: its failure is this flight's.
                part = await staging
        finally:
            self.hashed.set()
            self.staged.set()
        del data
        if self.previous is not None:
            await self.previous.task  # in order: after a failed part none is recorded
        progress = _Progress(
            parts=[*live.committed.parts, part],
            tail_size=0,
            sniffed_type=live.sniffed_type,
            hash_state=hash_state,
        )
        live.expires_at = await _commit(upload_id, live.committed.received, progress, expiry)
        live.committed = progress

    async def _hash(self, hasher: Any | None, data: bytes, hash_from: int) -> str | None:
        try:
            if self.previous is not None:
                await self.previous.hashed.wait()
            if hasher is None:
                return None
            await asyncio.to_thread(hasher.update, data[hash_from:] if hash_from else data)
            return _saved_state(hasher)
        finally:
            self.hashed.set()


@dataclass
class _UploadLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0  # requests holding or waiting for it


@dataclass
class UploadRuntime:
    """Per app instance: a lock per upload in use and the uploads with state in this process.

    Both maps hold only what is in use: a lock lives while a request holds or waits for it, and
    an upload's state goes when it completes, fails, is deleted or expires (`prune`)."""

    expiry: timedelta = timedelta(hours=24)
    locks: dict[str, _UploadLock] = field(default_factory=dict)
    live: dict[str, _Live] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> UploadRuntime:
        return cls(expiry=settings.upload_expiry)

    @asynccontextmanager
    async def lock(self, upload_id: str) -> AsyncIterator[None]:
        entry = self.locks.setdefault(upload_id, _UploadLock())
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self.locks[upload_id]

    def forget(self, upload_id: str) -> None:
        self.live.pop(upload_id, None)

    def prune(self, now: datetime) -> None:
        """Drop the state of uploads abandoned past their expiry (none of their parts in flight)."""
        for upload_id, live in list(self.live.items()):
            if live.expires_at <= now and not live.flights and upload_id not in self.locks:
                del self.live[upload_id]

    async def settle(self, upload_id: str) -> None:
        """Let the upload's parts in flight land; after a failure the row alone says the state."""
        live = self.live.get(upload_id)
        if live is not None and await live.settle() is not None:
            self.live.pop(upload_id, None)

    async def drain(self) -> None:
        """At shutdown: let every part in flight land, so clients resume where they were told."""
        for upload_id in list(self.live):
            await self.settle(upload_id)


def _now() -> datetime:
    return datetime.now(UTC)


def _loaded(value: Any) -> Any:
    # Piccolo hands JSON columns back as text unless asked otherwise.
    return json.loads(value) if isinstance(value, str) else value


def _progress_of(row: Mapping[str, Any]) -> _Progress:
    stored = _loaded(row["parts"]) or []
    parts, state = (
        (stored.get("parts", []), stored.get("sha256_state"))
        if isinstance(stored, dict)
        else (stored, None)
    )
    return _Progress(
        parts=[StagedPart(number=n, size=s, etag=e) for n, s, e in parts],
        tail_size=row["tail_size"],
        sniffed_type=row["sniffed_type"],
        hash_state=state,
    )


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
            code="upload_metadata_invalid",
        )
    content_type = metadata.get("content_type") or metadata.get("filetype") or ""
    allowed = {normalize_content_type(t) for t in settings.allowed_content_type_set}
    if normalize_content_type(content_type) not in allowed:
        raise UnsupportedMediaType(
            f"Attachments of type {content_type or '(none)'!r} are not accepted.",
            code="content_type_not_allowed",
        )
    if length > settings.max_upload_bytes:
        raise PayloadTooLarge(
            f"The file has {length} bytes; the most an attachment may have is "
            f"{settings.max_upload_bytes}.",
            code="upload_too_large",
        )
    if length == 0 and sha256 != _EMPTY_SHA256:
        # Refused before the row exists: a failed empty upload must not hold a slot for a day.
        raise Unprocessable(
            f"An empty file hashes to {_EMPTY_SHA256}, not the declared SHA-256.",
            code="blob_hash_mismatch",
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
    if (
        existing is not None
        and existing["size"] == length
        and not await missing_blobs(principal, [sha256], referenced=True)
    ):
        row.update(state="done", received=length)  # dedupe: the bytes are already verified
    async with transaction():
        if row["state"] == "active":
            active = await Upload.count().where(
                (Upload.user_id == principal.user_id)
                & (Upload.state == "active")
                & (Upload.expires_at > now)
            )
            limit = settings.max_active_uploads_per_user
            if active >= limit:
                raise TooManyRequests(
                    f"At most {limit} unfinished uploads at once; finish or cancel one first.",
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
    # Waits for a PATCH in flight (one cut mid-body still commits what arrived) and for its parts
    # in flight, so the offset a resuming client reads is durable and its next PATCH's.
    await _owned_row(principal, upload_id, runtime)  # before the lock: unknown ids leave none
    async with runtime.lock(upload_id):
        await runtime.settle(upload_id)
        row = await _usable_row(principal, upload_id, store, runtime)
    return _view(row)


async def _owned_row(
    principal: Principal, upload_id: str, runtime: UploadRuntime | None = None
) -> dict[str, Any]:
    row = await Upload.select().where(Upload.id == upload_id).first().run()
    if row is None or row["user_id"] != principal.user_id:
        if row is None and runtime is not None:
            runtime.forget(upload_id)  # removed by another process (DELETE, gc-blobs)
        raise NotFound("There is no such upload.", code="upload_not_found")
    return row


async def _usable_row(
    principal: Principal,
    upload_id: str,
    store: BlobStore,
    runtime: UploadRuntime,
    row: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The caller's upload, unless it expired (its staged parts are removed now) or failed."""
    row = row or await _owned_row(principal, upload_id, runtime)
    if row["state"] == "active" and row["expires_at"] <= _now():
        await _discard(row, store, runtime, state="expired", failure="upload_expired")
        row["state"] = "expired"
    if row["state"] == "expired":
        raise Gone("This upload expired; start a new one.", code="upload_expired")
    if row["state"] == "failed":
        raise Gone(
            "This upload failed verification; start a new one.", code=row["failure"] or "gone"
        )
    return row


async def _discard(
    row: Mapping[str, Any], store: BlobStore, runtime: UploadRuntime, *, state: str, failure: str
) -> None:
    await runtime.settle(row["id"])  # no part may land in a staging area being removed
    runtime.forget(row["id"])
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
    await _owned_row(principal, upload_id, runtime)  # before the lock: unknown ids leave none
    async with runtime.lock(upload_id):
        await runtime.settle(upload_id)
        row = await _owned_row(principal, upload_id, runtime)
        if row["staging"]:
            await store.discard_staged(row["staging"])
        await Upload.delete().where(Upload.id == upload_id).run()
        runtime.forget(upload_id)


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
    await _owned_row(principal, upload_id, runtime)  # before the lock: unknown ids leave none
    async with runtime.lock(upload_id):
        row = await _owned_row(principal, upload_id, runtime)
        live = runtime.live.get(upload_id)
        if live is not None and not (
            offset == live.accepted and row["staging"] == live.handle and row["state"] == "active"
        ):
            # Not the continuation this process expects: what the row says, once parts landed.
            await runtime.settle(upload_id)
            row = await _owned_row(principal, upload_id, runtime)
            live = runtime.live.get(upload_id)
            if live is not None and live.committed.received != row["received"]:
                runtime.live.pop(upload_id)  # another process moved it on
                live = None
        row = await _usable_row(principal, upload_id, store, runtime, row)
        expected = live.accepted if live is not None else row["received"]
        if offset != expected:
            raise Conflict(
                f"Upload-Offset {offset} does not match the {expected} bytes received.",
                code="upload_offset_mismatch",
            )
        if row["state"] == "done":
            await _drain(body)
            return _view(row)
        # Another device may have finished the same file meanwhile: asked while the body arrives
        # (the client sends it anyway); if so, what this PATCH staged is dropped at its end.
        stored = asyncio.create_task(_already_readable(principal, row))
        try:
            if live is None:
                live = await _live_from_row(row, store, runtime)
            return await _Patch(row, live, checksum, store, runtime, stored).run(body)
        except BaseException:
            if not stored.done():
                stored.cancel()
            await asyncio.wait([stored])
            # Parts in flight from before may still land; the row then says what is durable.
            await runtime.settle(upload_id)
            runtime.live.pop(upload_id, None)
            raise


async def _already_readable(principal: Principal, row: Mapping[str, Any]) -> bool:
    """Another device finished the same file meanwhile, and this caller may read it: nothing
    more needs to be sent. (Who may not read it still proves possession with the bytes.)"""
    return (
        await Blob.exists()
        .where((Blob.sha256 == row["sha256"]) & (Blob.size == row["upload_length"]))
        .run()
    ) and not await missing_blobs(principal, [row["sha256"]], referenced=True)


async def _finish_deduplicated(
    row: Mapping[str, Any], store: BlobStore, runtime: UploadRuntime
) -> None:
    await runtime.settle(row["id"])
    runtime.forget(row["id"])
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


async def _live_from_row(row: dict[str, Any], store: BlobStore, runtime: UploadRuntime) -> _Live:
    upload_id = row["id"]
    handle = row["staging"]
    if not handle:
        # With a savable hash the digest is always known at completion: stage at the blob's key.
        handle = await store.begin_staging(
            upload_id,
            content_type=row["content_type"],
            sha256=row["sha256"] if _LIBCRYPTO is not None else None,
        )
        await Upload.update({Upload.staging: handle}).where(Upload.id == upload_id).run()
        row["staging"] = handle
    committed = _progress_of(row)
    received = committed.received
    hasher = _new_hasher() if received == 0 else _restored_hasher(committed.hash_state, received)
    if hasher is None and store.staging_blob(handle) is not None:
        # Staged at the blob's key, it can only publish with a digest, and this one's hashing
        # cannot be resumed here: start again rather than hold bytes that can never publish.
        await _discard(row, store, runtime, state="failed", failure="upload_cannot_resume")
        raise Gone(
            "This upload cannot be resumed on this server; start a new one.",
            code="upload_cannot_resume",
        )
    live = _Live(
        handle=handle,
        committed=committed,
        accepted=received,
        hasher=hasher,
        sniffed_type=committed.sniffed_type,
        expires_at=row["expires_at"],
    )
    runtime.prune(_now())
    runtime.live[upload_id] = live
    return live


class _PartBuffer:
    """Received chunks of the part being filled, joined into one bytes object (a single copy)
    once STAGING_PART_SIZE of them arrived."""

    def __init__(self, start: bytes) -> None:
        self._chunks = [start] if start else []
        self._size = len(start)

    def __len__(self) -> int:
        return self._size

    def add(self, chunk: bytes) -> bytes | None:
        """Keep `chunk`; a full part if there is one, keeping what follows it. Call again with
        b"" while it returns parts (one chunk may complete more than one)."""
        if chunk:
            self._chunks.append(chunk)
            self._size += len(chunk)
        over = self._size - STAGING_PART_SIZE
        if over < 0:
            return None
        # Below a part before this chunk, so what is over the part lies in the last chunk.
        rest = b""
        if over:
            last = self._chunks[-1]
            self._chunks[-1], rest = last[: len(last) - over], last[len(last) - over :]
        part = self.take()
        if rest:
            self._chunks, self._size = [rest], len(rest)
        return part

    def take(self) -> bytes:
        """Everything kept, emptied."""
        whole = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks, self._size = [], 0
        return whole


class _Patch:
    """One PATCH body: cut into parts, hashed, staged; committed, completed or left in flight."""

    def __init__(
        self,
        row: dict[str, Any],
        live: _Live,
        checksum: tuple[str, bytes] | None,
        store: BlobStore,
        runtime: UploadRuntime,
        stored: asyncio.Task[bool],
    ) -> None:
        self.row, self.live, self.store, self.runtime = row, live, store, runtime
        self.stored = stored
        self.checksum = checksum
        self.chunk_check = CHECKSUM_ALGORITHMS[checksum[0]]() if checksum else None
        # With a checksum nothing counts unless it matches: hash on a copy, stage uncommitted.
        self.hasher = live.hasher.copy() if checksum and live.hasher is not None else live.hasher
        self.start = live.accepted
        self.staged: list[StagedPart] = []  # parts of this PATCH not left to flights
        self.tail_before = (
            live.committed.tail_size if live.accepted == live.committed.received else 0
        )

    @property
    def length(self) -> int:
        return int(self.row["upload_length"])

    async def run(self, body: AsyncIterator[bytes]) -> UploadView:
        live = self.live
        # Bytes of the part being filled, from its start: the committed tail comes first.
        buffer = _PartBuffer(await self.store.read_tail(live.handle, self.tail_before))
        part_start = live.accepted - self.tail_before
        hashed = len(buffer)  # of `buffer`, already in the hash (the tail was hashed when stored)
        remaining = self.length - live.accepted
        arrived = 0
        disconnected = False
        try:
            async for chunk in body:
                arrived += len(chunk)
                if arrived > remaining:
                    raise PayloadTooLarge(
                        f"More bytes than the {remaining} left of the declared Upload-Length.",
                        code="upload_length_exceeded",
                    )
                if self.chunk_check is not None:
                    self.chunk_check.update(chunk)
                while (part := buffer.add(chunk)) is not None:
                    chunk = b""
                    await self._part_ready(part, part_start, already_hashed=hashed)
                    part_start += len(part)
                    hashed = 0
        except ClientDisconnected:
            disconnected = True  # keep what arrived: the client resumes from HEAD's offset
        if self.checksum is not None:
            assert self.chunk_check is not None
            if disconnected or self.chunk_check.digest() != self.checksum[1]:
                raise ChecksumMismatch(
                    "The chunk does not match its Upload-Checksum; send it again."
                )
        if await self.stored:
            await _finish_deduplicated(self.row, self.store, self.runtime)
            return _view({**self.row, "state": "done", "received": self.length})
        if part_start + len(buffer) == self.length and self.length > 0:
            if buffer:
                await self._part_ready(buffer.take(), part_start, already_hashed=hashed)
            return await self._complete()
        if not buffer and self.checksum is None:
            # Ended on a part boundary: answered now, its last part possibly still in flight.
            return self._answer(live.accepted)
        tail = buffer.take()
        return await self._commit_with_tail(
            tail,
            hashed,
            changed=part_start != self.start - self.tail_before or len(tail) != self.tail_before,
        )

    async def _hash(self, data: bytes, already_hashed: int) -> None:
        """Add `data` after its first `already_hashed` bytes to the hash, in a worker thread."""
        if self.live.flights:  # the parts in flight come first in the hash
            await self.live.flights[-1].hashed.wait()
        if self.hasher is None or len(data) <= already_hashed:
            return
        await asyncio.to_thread(
            self.hasher.update, data[already_hashed:] if already_hashed else data
        )

    async def _part_ready(self, data: bytes, start: int, *, already_hashed: int) -> None:
        live = self.live
        number = start // STAGING_PART_SIZE + 1
        if number == 1:
            live.sniffed_type = sniff_content_type(data[:SNIFF_BYTES]) or ""
            if live.sniffed_type != normalize_content_type(self.row["content_type"]):
                await _discard(
                    self.row,
                    self.store,
                    self.runtime,
                    state="failed",
                    failure="content_type_mismatch",
                )
                raise UnsupportedMediaType(
                    f"The file's bytes are {live.sniffed_type or 'of an unknown type'}, "
                    f"not the declared {self.row['content_type']}.",
                    code="content_type_mismatch",
                )
        end = start + len(data)
        if self.checksum is not None or end == self.length:
            # Committed when the checksum matched, or by completion (so HEAD never shows a
            # finished offset for an upload that is not readable yet).
            staging = asyncio.ensure_future(self.store.stage_part(live.handle, number, data))
            try:
                await self._hash(data, already_hashed)
            finally:
                part = await staging  # never left running on its own
            self.staged.append(part)
            return
        # A failure of an earlier part fails this PATCH; memory holds at most
        # MAX_PARTS_IN_FLIGHT parts being stored (their row updates need no bytes).
        while live.flights and live.flights[0].task.done():
            await live.flights.pop(0).task
        while len([f for f in live.flights if not f.staged.is_set()]) >= MAX_PARTS_IN_FLIGHT:
            await next(f for f in live.flights if not f.staged.is_set()).staged.wait()
        flight = _Flight(
            live,
            self.row["id"],
            self.store,
            self.runtime.expiry,
            number,
            data,
            already_hashed,
            self.hasher,
        )
        live.flights.append(flight)
        live.accepted = end

    def _answer(self, offset: int) -> UploadView:
        return _view({**self.row, "received": offset, "expires_at": self.live.expires_at})

    async def _commit_with_tail(self, tail: bytes, hashed: int, *, changed: bool) -> UploadView:
        live = self.live
        failure = await live.settle()
        if failure is not None:
            raise failure
        await self._hash(tail, hashed)
        if tail and changed:
            await self.store.stage_tail(live.handle, tail)
        progress = _Progress(
            parts=[*live.committed.parts, *self.staged],
            tail_size=len(tail),
            sniffed_type=live.sniffed_type,
            hash_state=_saved_state(self.hasher),
        )
        if (
            progress.received != live.committed.received
            or progress.tail_size != live.committed.tail_size
        ):
            live.expires_at = await _commit(
                self.row["id"], live.committed.received, progress, self.runtime.expiry
            )
            live.committed = progress
        live.accepted = progress.received
        live.hasher = self.hasher
        return self._answer(live.accepted)

    async def _complete(self) -> UploadView:
        """Verify size and SHA-256, publish under the hash, record the blob; or discard and refuse."""
        live, row, store = self.live, self.row, self.store
        failure = await live.settle()
        if failure is not None:
            raise failure
        parts = [*live.committed.parts, *self.staged]
        sha256 = row["sha256"]
        digest = self.hasher.hexdigest() if self.hasher is not None else None
        if digest is None and await Blob.exists().where(Blob.sha256 == sha256).run():
            # The store keeps a stored blob without reading the staged bytes back, so without
            # our own digest these bytes would prove nothing: start again with a hash.
            await _discard(row, store, self.runtime, state="failed", failure="upload_cannot_resume")
            raise Gone(
                "This upload cannot be resumed on this server; start a new one.",
                code="upload_cannot_resume",
            )
        try:
            if digest is not None and digest != sha256:
                # Checked here too: a store that already holds the blob does not look at them.
                raise BlobHashMismatch(f"content hashes to {digest}, declared {sha256}")
            info = await store.publish_staged(
                live.handle,
                parts,
                sha256=sha256,
                content_type=row["content_type"],
                digest=digest,
            )
        except BlobHashMismatch:
            await _discard(row, store, self.runtime, state="failed", failure="blob_hash_mismatch")
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
                    Upload.sniffed_type: live.sniffed_type,
                    Upload.updated_at: _now(),
                }
            )
            .where(Upload.id == row["id"])
            .run()
        )
        self.runtime.forget(row["id"])
        return _view({**row, "state": "done", "received": row["upload_length"]})


async def _commit(
    upload_id: str, previous: int, progress: _Progress, expiry: timedelta
) -> datetime:
    """Record durably staged progress; an upload in use stays `expiry` past its last bytes."""
    now = _now()
    # Conditional on the previous offset: a PATCH racing from another worker loses, never mixes.
    updated = (
        await Upload.update(
            {
                Upload.received: progress.received,
                Upload.parts: progress.column(),
                Upload.tail_size: progress.tail_size,
                Upload.sniffed_type: progress.sniffed_type,
                Upload.updated_at: now,
                Upload.expires_at: now + expiry,
            }
        )
        .where((Upload.id == upload_id) & (Upload.received == previous))
        .returning(Upload.id)
        .run()
    )
    if not updated:
        raise Conflict("Another request changed this upload.", code="upload_offset_mismatch")
    return now + expiry
