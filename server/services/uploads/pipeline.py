"""The part pipeline: one PATCH body cut into STAGING_PART_SIZE parts, hashed and staged, then
committed, completed or left in flight.

Four offsets, all counted from the file's first byte:
- `live.committed.received`: durably staged (whole parts plus the tail), what the row says;
- `live.accepted`: where the next PATCH continues, the committed bytes plus the parts in flight;
- `part_start`: where the part being filled starts (its first bytes may be the committed tail);
- `hashed`: how many bytes of the part being filled are already in the hash (the tail was hashed
  when it was stored).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec

from schemas.errors import ErrorCode
from server.db.tables_blobs import Blob
from server.errors import (
    ChecksumMismatch,
    Gone,
    PayloadTooLarge,
    Unprocessable,
    UnsupportedMediaType,
)
from server.services.blobs import (
    SNIFF_BYTES,
    normalize_content_type,
    record_blob,
    sniff_content_type,
)
from server.services.uploads.hashing import saved_state
from server.services.uploads.rows import (
    Progress,
    UploadRow,
    UploadView,
    close_row,
    commit_progress,
)
from server.services.uploads.runtime import Flight, Live, UploadRuntime
from server.services.uploads.tus import (
    CHECKSUM_ALGORITHMS,
    Checksum,
    ClientDisconnected,
)
from sync.blobs import STAGING_PART_SIZE, BlobHashMismatch, BlobStore, StagedPart

# Parts of one upload on their way to the store while the next bytes arrive.
MAX_PARTS_IN_FLIGHT = 3


class PartBuffer:
    """Received chunks of the part being filled, joined into one bytes object (a single copy)
    once `part_size` of them arrived."""

    def __init__(self, start: bytes, part_size: int = STAGING_PART_SIZE) -> None:
        self._chunks = [start] if start else []
        self._size = len(start)
        self._part_size = part_size

    def __len__(self) -> int:
        return self._size

    def add(self, chunk: bytes) -> bytes | None:
        """Keep `chunk`; a full part if there is one, keeping what follows it. Call again with
        b"" while it returns parts (one chunk may complete more than one)."""
        if chunk:
            self._chunks.append(chunk)
            self._size += len(chunk)
        over = self._size - self._part_size
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


async def close_upload(
    row: UploadRow,
    store: BlobStore,
    runtime: UploadRuntime,
    *,
    state: str,
    failure: str | None = None,
) -> UploadRow:
    """End an upload before its bytes publish: failed, expired, or done by another's blob."""
    await runtime.settle(row.id)  # no part may land in a staging area being removed
    runtime.forget(row.id)
    if row.staging:
        await store.discard_staged(row.staging)
    return await close_row(row, state, failure=failure)


class Patch:
    """One PATCH body: cut into parts, hashed, staged; committed, completed or left in flight."""

    def __init__(
        self,
        row: UploadRow,
        live: Live,
        checksum: Checksum | None,
        store: BlobStore,
        runtime: UploadRuntime,
        stored: asyncio.Task[bool],
    ) -> None:
        self.row, self.live, self.store, self.runtime = row, live, store, runtime
        self.stored = stored
        self.checksum = checksum
        self.chunk_check = CHECKSUM_ALGORITHMS[checksum.algorithm]() if checksum else None
        # With a checksum nothing counts unless it matches: hash on a copy, stage uncommitted.
        self.hasher = live.hasher.copy() if checksum and live.hasher is not None else live.hasher
        self.start = live.accepted
        self.staged: list[StagedPart] = []  # parts of this PATCH not left to flights
        self.tail_before = (
            live.committed.tail_size if live.accepted == live.committed.received else 0
        )

    @property
    def length(self) -> int:
        return self.row.upload_length

    async def run(self, body: AsyncIterator[bytes]) -> UploadView:
        live = self.live
        # Bytes of the part being filled, from its start: the committed tail comes first.
        buffer = PartBuffer(await self.store.read_tail(live.handle, self.tail_before))
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
                        code=ErrorCode.UPLOAD_LENGTH_EXCEEDED,
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
            if disconnected or self.chunk_check.digest() != self.checksum.digest:
                raise ChecksumMismatch(
                    "The chunk does not match its Upload-Checksum; send it again."
                )
        if await self.stored:
            closed = await close_upload(self.row, self.store, self.runtime, state="done")
            return closed.view()
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
            if live.sniffed_type != normalize_content_type(self.row.content_type):
                await close_upload(
                    self.row,
                    self.store,
                    self.runtime,
                    state="failed",
                    failure=ErrorCode.CONTENT_TYPE_MISMATCH,
                )
                raise UnsupportedMediaType(
                    f"The file's bytes are {live.sniffed_type or 'of an unknown type'}, "
                    f"not the declared {self.row.content_type}.",
                    code=ErrorCode.CONTENT_TYPE_MISMATCH,
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
        flight = Flight(
            live,
            self.row.id,
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
        answered = msgspec.structs.replace(
            self.row, received=offset, expires_at=self.live.expires_at
        )
        return answered.view()

    async def _commit_with_tail(self, tail: bytes, hashed: int, *, changed: bool) -> UploadView:
        live = self.live
        failure = await live.settle()
        if failure is not None:
            raise failure
        await self._hash(tail, hashed)
        if tail and changed:
            await self.store.stage_tail(live.handle, tail)
        progress = Progress(
            parts=[*live.committed.parts, *self.staged],
            tail_size=len(tail),
            sniffed_type=live.sniffed_type,
            hash_state=saved_state(self.hasher),
        )
        if (
            progress.received != live.committed.received
            or progress.tail_size != live.committed.tail_size
        ):
            live.expires_at = await commit_progress(
                self.row.id, live.committed.received, progress, self.runtime.expiry
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
        digest = self.hasher.hexdigest() if self.hasher is not None else None
        if digest is None and await Blob.exists().where(Blob.sha256 == row.sha256).run():
            # The store keeps a stored blob without reading the staged bytes back, so without
            # our own digest these bytes would prove nothing: start again with a hash.
            await close_upload(
                row, store, self.runtime, state="failed", failure=ErrorCode.UPLOAD_CANNOT_RESUME
            )
            raise Gone(
                "This upload cannot be resumed on this server; start a new one.",
                code=ErrorCode.UPLOAD_CANNOT_RESUME,
            )
        try:
            if digest is not None and digest != row.sha256:
                # Checked here too: a store that already holds the blob does not look at them.
                raise BlobHashMismatch(f"content hashes to {digest}, declared {row.sha256}")
            info = await store.publish_staged(
                live.handle,
                parts,
                sha256=row.sha256,
                content_type=row.content_type,
                digest=digest,
            )
        except BlobHashMismatch:
            await close_upload(
                row, store, self.runtime, state="failed", failure=ErrorCode.BLOB_HASH_MISMATCH
            )
            raise Unprocessable(
                "The file's bytes do not match its declared SHA-256; nothing was kept.",
                code=ErrorCode.BLOB_HASH_MISMATCH,
            ) from None
        await record_blob(row.sha256, info.size, row.content_type, row.user_id)
        # Published: its staging is now the blob, so the row closes without discarding it.
        done = await close_row(row, "done", sniffed_type=live.sniffed_type)
        self.runtime.forget(row.id)
        return done.view()
