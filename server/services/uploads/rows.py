"""The `upload` row: one Struct for it, the progress it records, and every write to it.

The row's `parts` column holds {"parts": [[number, size, etag], ...], "sha256_state": base64}
(rows written before hash states were saved hold the bare list).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from piccolo.columns import Column

from schemas.errors import ErrorCode
from server.db.tables_blobs import Upload
from server.errors import Conflict
from sync.blobs import StagedPart

PartList = list[tuple[int, int, str]]  # [number, size, etag] per committed part, in order


class PartsColumn(msgspec.Struct):
    parts: PartList = []
    sha256_state: str | None = None  # the SHA-256 state after the row's `received` bytes


@dataclass(frozen=True)
class UploadView:
    id: str
    length: int
    offset: int
    state: str
    sha256: str
    expires_at: datetime


class UploadRow(msgspec.Struct, frozen=True):
    id: str
    user_id: str
    sha256: str
    upload_length: int
    received: int  # durably staged bytes: whole parts plus the tail
    filename: str
    content_type: str
    metadata: dict[str, str]
    state: str  # active | done | failed | expired
    failure: str  # the problem code of a failed upload
    sniffed_type: str | None
    staging: str  # the blob store's staging handle
    parts: PartsColumn | PartList
    tail_size: int
    created_at: datetime
    updated_at: datetime
    expires_at: datetime

    def view(self) -> UploadView:
        return UploadView(
            id=self.id,
            length=self.upload_length,
            offset=self.received,
            state=self.state,
            sha256=self.sha256,
            expires_at=self.expires_at,
        )


@dataclass(frozen=True)
class Progress:
    """What the row says is durably staged."""

    parts: list[StagedPart]
    tail_size: int
    sniffed_type: str | None
    hash_state: str | None  # the SHA-256 state after `received` bytes

    @property
    def received(self) -> int:
        return sum(part.size for part in self.parts) + self.tail_size

    def column(self) -> Any:
        parts = [(p.number, p.size, p.etag) for p in self.parts]
        return msgspec.to_builtins(PartsColumn(parts=parts, sha256_state=self.hash_state))


def progress_of(row: UploadRow) -> Progress:
    column = row.parts if isinstance(row.parts, PartsColumn) else PartsColumn(parts=row.parts)
    return Progress(
        parts=[StagedPart(number=n, size=s, etag=e) for n, s, e in column.parts],
        tail_size=row.tail_size,
        sniffed_type=row.sniffed_type,
        hash_state=column.sha256_state,
    )


def now() -> datetime:
    return datetime.now(UTC)


def new_row(
    *,
    user_id: str,
    sha256: str,
    length: int,
    filename: str,
    content_type: str,
    metadata: dict[str, str],
    upload_id: str,
    expiry: timedelta,
) -> UploadRow:
    created = now()
    return UploadRow(
        id=upload_id,
        user_id=user_id,
        sha256=sha256,
        upload_length=length,
        received=0,
        filename=filename,
        content_type=content_type,
        metadata=metadata,
        state="active",
        failure="",
        sniffed_type=None,
        staging="",
        parts=[],
        tail_size=0,
        created_at=created,
        updated_at=created,
        expires_at=created + expiry,
    )


async def insert_row(row: UploadRow) -> None:
    await Upload.insert(Upload(**msgspec.to_builtins(row, builtin_types=(datetime,)))).run()


async def load_row(upload_id: str) -> UploadRow | None:
    found = await Upload.select().where(Upload.id == upload_id).first().output(load_json=True).run()
    return None if found is None else msgspec.convert(found, UploadRow)


async def count_active(user_id: str, at: datetime) -> int:
    return await Upload.count().where(
        (Upload.user_id == user_id) & (Upload.state == "active") & (Upload.expires_at > at)
    )


async def set_staging(row: UploadRow, handle: str) -> UploadRow:
    await Upload.update({Upload.staging: handle}).where(Upload.id == row.id).run()
    return msgspec.structs.replace(row, staging=handle)


async def commit_progress(
    upload_id: str, previous: int, progress: Progress, expiry: timedelta
) -> datetime:
    """Record durably staged progress; an upload in use stays `expiry` past its last bytes."""
    at = now()
    # Conditional on the previous offset: a PATCH racing from another worker loses, never mixes.
    updated = (
        await Upload.update(
            {
                Upload.received: progress.received,
                Upload.parts: progress.column(),
                Upload.tail_size: progress.tail_size,
                Upload.sniffed_type: progress.sniffed_type,
                Upload.updated_at: at,
                Upload.expires_at: at + expiry,
            }
        )
        .where((Upload.id == upload_id) & (Upload.received == previous))
        .returning(Upload.id)
        .run()
    )
    if not updated:
        raise Conflict(
            "Another request changed this upload.", code=ErrorCode.UPLOAD_OFFSET_MISMATCH
        )
    return at + expiry


async def close_row(
    row: UploadRow, state: str, *, failure: str | None = None, sniffed_type: str | None = None
) -> UploadRow:
    """Close the upload: no staging, no parts; a `done` one has all its bytes."""
    closed = msgspec.structs.replace(
        row,
        state=state,
        received=row.upload_length if state == "done" else row.received,
        failure=row.failure if failure is None else failure,
        sniffed_type=row.sniffed_type if sniffed_type is None else sniffed_type,
        staging="",
        parts=[],
        tail_size=0,
        updated_at=now(),
    )
    values: dict[Column | str, Any] = {
        Upload.state: closed.state,
        Upload.staging: "",
        Upload.parts: [],
        Upload.tail_size: 0,
        Upload.updated_at: closed.updated_at,
    }
    if state == "done":
        values[Upload.received] = closed.received
    if failure is not None:
        values[Upload.failure] = failure
    if sniffed_type is not None:
        values[Upload.sniffed_type] = sniffed_type
    await Upload.update(values).where(Upload.id == row.id).run()
    return closed


async def delete_row(upload_id: str) -> None:
    await Upload.delete().where(Upload.id == upload_id).run()
