"""Content-addressed blob store: the interface every store implements, and its shared rules.

Keys are lowercase hex SHA-256 digests of the bytes. A blob becomes readable under its key only
after its size and digest were verified, so a corrupted or truncated upload is never served.
The stores themselves (a local directory, S3) live in `server/blobstores/`: they do I/O.
"""

from __future__ import annotations

import abc
import hashlib
import re
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import timedelta

from schemas.errors import CodedError, ErrorCode

# Bytes handed to a worker thread or read back per chunk: large enough to amortise the thread hop.
CHUNK_SIZE = 1024 * 1024
# What a blob stored without a declared content type reports.
DEFAULT_CONTENT_TYPE = "application/octet-stream"

SHA256_HEX = re.compile(r"[0-9a-f]{64}")
# Every staged part but the last has exactly this size: S3's minimum multipart part size.
STAGING_PART_SIZE = 5 * 1024 * 1024
# Staging ids are chosen by the caller (an upload id); this guards the local store against paths.
STAGING_ID = re.compile(r"[0-9a-zA-Z_-]{8,64}")


class BlobStoreError(CodedError):
    code = ErrorCode.BLOB_STORE_ERROR


class BlobStoreUnavailable(BlobStoreError):
    """Transient: the store cannot be reached (down, timeout, misconfigured credentials)."""

    code = ErrorCode.BLOB_STORE_UNAVAILABLE


class BlobHashMismatch(BlobStoreError):
    """The bytes did not match the declared sha256 or size; nothing was stored."""

    code = ErrorCode.BLOB_HASH_MISMATCH


class BlobNotFound(BlobStoreError):
    code = ErrorCode.BLOB_NOT_FOUND


class BlobKeyInvalid(BlobStoreError, ValueError):
    """The key is not a lowercase hex sha256 (also guards the local store against path tricks)."""

    code = ErrorCode.BLOB_KEY_INVALID


class BlobRangeInvalid(BlobStoreError, ValueError):
    """A negative offset/length, or an offset past the end of the blob (HTTP 416)."""

    code = ErrorCode.BLOB_RANGE_INVALID


@dataclass(frozen=True)
class StagedPart:
    """One part of a resumable upload, stored but not yet readable."""

    number: int  # 1-based, consecutive
    size: int
    etag: str  # S3's part ETag; empty for the local store


@dataclass(frozen=True)
class BlobInfo:
    sha256: str
    size: int
    content_type: str


def validate_key(sha256: str) -> str:
    """Return the key unchanged if it is a lowercase hex sha256, else raise BlobKeyInvalid."""
    if not isinstance(sha256, str) or not SHA256_HEX.fullmatch(sha256):
        raise BlobKeyInvalid(f"blob key must be 64 lowercase hex characters, got {sha256!r}")
    return sha256


def validate_staging_id(staging_id: str) -> str:
    if not isinstance(staging_id, str) or not STAGING_ID.fullmatch(staging_id):
        raise BlobKeyInvalid(f"staging id must be 8-64 url-safe characters, got {staging_id!r}")
    return staging_id


def resolve_range(size: int, offset: int, length: int | None) -> int:
    """Validate a read range against a blob of `size` bytes; return how many bytes to read.

    A length running past the end is truncated, as HTTP Range does.
    """
    if offset < 0 or (length is not None and length < 0):
        raise BlobRangeInvalid(f"invalid range offset={offset} length={length}")
    if offset > size:
        raise BlobRangeInvalid(f"offset {offset} is past the end of a {size}-byte blob")
    remaining = size - offset
    return remaining if length is None else min(length, remaining)


class BlobStore(abc.ABC):
    """A content-addressed store of immutable blobs.

    Contract shared by every implementation (tests/integration/blobstore/):
    - `put` streams in bounded memory, hashes while writing, and publishes the blob under its key
      only if the byte count (when `size` is given) and the sha256 both match; otherwise nothing
      is left behind (no readable blob, no staging leftovers) and BlobHashMismatch is raised.
    - `put` of a key that already exists is a no-op that returns the stored info WITHOUT reading
      `chunks` (dedupe: the bytes are already verified); a declared `size` that differs from the
      stored size raises BlobHashMismatch. The first content type wins.
    - Failures to reach the store raise BlobStoreUnavailable; unknown keys raise BlobNotFound.
    """

    @abc.abstractmethod
    async def ensure_ready(self) -> None:
        """Create the directory / bucket if missing (run at start-up)."""

    @abc.abstractmethod
    async def check(self) -> None:
        """Cheap readiness probe; raises BlobStoreUnavailable."""

    @abc.abstractmethod
    async def put(
        self,
        sha256: str,
        chunks: AsyncIterable[bytes],
        *,
        size: int | None = None,
        content_type: str | None = None,
    ) -> BlobInfo: ...

    async def put_bytes(
        self, sha256: str, data: bytes, *, content_type: str | None = None
    ) -> BlobInfo:
        """Store a small blob whose bytes the caller holds (a file of a multipart POST): the same
        contract as `put`. A store may write it at its key at once, since the digest is checked
        here, before anything is written."""
        verify_received(sha256, hashlib.sha256(data).hexdigest(), len(data), len(data))
        return await self.put(sha256, _one_chunk(data), size=len(data), content_type=content_type)

    @abc.abstractmethod
    async def stat(self, sha256: str) -> BlobInfo | None: ...

    async def exists(self, sha256: str) -> bool:
        return await self.stat(sha256) is not None

    async def open(
        self, sha256: str, *, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        """Check the blob and range now (BlobNotFound, BlobRangeInvalid), then stream the bytes.

        Use as `async for chunk in await store.open(key, offset=..., length=...)`.
        """
        info = await self.stat(sha256)
        if info is None:
            raise BlobNotFound(sha256)
        return self.read_range(sha256, offset, resolve_range(info.size, offset, length))

    @abc.abstractmethod
    def read_range(self, sha256: str, offset: int, length: int) -> AsyncIterator[bytes]:
        """Stream `length` bytes from `offset`, a range `open` has already checked."""

    @abc.abstractmethod
    async def delete(self, sha256: str) -> None:
        """Remove the blob; deleting a missing key is not an error."""

    @abc.abstractmethod
    def keys(self) -> AsyncIterator[str]:
        """Every stored blob key, in no particular order (for garbage collection)."""

    @abc.abstractmethod
    async def presigned_get_url(
        self, sha256: str, *, expires: timedelta, filename: str | None = None
    ) -> str | None:
        """A time-limited URL devices can fetch directly, or None if the server must stream."""

    # Staged (resumable) uploads. A staging area, named by the caller, collects numbered parts
    # across requests and restarts; nothing in it is readable until `publish_staged` verified it.
    # Every part but the last is exactly STAGING_PART_SIZE bytes; bytes that do not yet fill a
    # part wait in the staging area's one "tail" (rewritten whole, so it stays under a part).
    # The caller records which parts and how much tail are committed (the database does).

    @abc.abstractmethod
    async def begin_staging(
        self, staging_id: str, *, content_type: str | None = None, sha256: str | None = None
    ) -> str:
        """Open a staging area; return the store's handle for it (to keep with the upload).

        `sha256` is the declared hash of the bytes to come, given by a caller that will pass
        `digest` to `publish_staged`: a store may then stage straight at the blob's own key
        (S3 completes the multipart upload there, no copy), since publishing checks the digest
        before anything becomes readable.
        """

    def staging_blob(self, handle: str) -> str | None:
        """The blob key a staging area was opened at (`begin_staging(sha256=...)`), if the store
        staged it there; None when the handle starts with its staging id instead."""
        return None

    @abc.abstractmethod
    async def stage_part(self, handle: str, number: int, data: bytes) -> StagedPart:
        """Store part `number` (re-staging a number replaces it)."""

    @abc.abstractmethod
    async def stage_tail(self, handle: str, data: bytes) -> None:
        """Replace the staging area's tail with `data` (shorter than a part)."""

    @abc.abstractmethod
    async def read_tail(self, handle: str, size: int) -> bytes:
        """The first `size` bytes of the tail (b"" if size is 0)."""

    @abc.abstractmethod
    async def publish_staged(
        self,
        handle: str,
        parts: Sequence[StagedPart],
        *,
        sha256: str,
        content_type: str | None = None,
        digest: str | None = None,
    ) -> BlobInfo:
        """Make the parts, in order, readable as blob `sha256`, then discard the staging area.

        `digest` is the sha256 the caller computed while the bytes streamed; without it the store
        reads the staged bytes back to hash them (a staging area opened with `sha256` refuses to
        publish without it). A mismatch raises BlobHashMismatch and discards the staging area, so
        nothing becomes readable. An existing blob wins (dedupe).
        """

    @abc.abstractmethod
    async def discard_staged(self, handle: str) -> None:
        """Remove everything staged under `handle`; discarding twice is not an error."""

    @abc.abstractmethod
    def staging_handles(self) -> AsyncIterator[str]:
        """Handles of every staging area present (garbage collection finds abandoned ones)."""


async def _one_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data


def deduplicated_info(existing: BlobInfo, size: int | None) -> BlobInfo:
    if size is not None and size != existing.size:
        raise BlobHashMismatch(
            f"declared size {size} differs from the stored blob's {existing.size} bytes"
        )
    return existing


def verify_received(sha256: str, actual: str, size: int | None, received: int) -> None:
    """Raise BlobHashMismatch unless the received bytes match the declared size and digest."""
    if size is not None and received != size:
        raise BlobHashMismatch(f"received {received} bytes, declared {size}")
    if actual != sha256:
        raise BlobHashMismatch(f"content hashes to {actual}, declared {sha256}")
