"""server/db/bulk.py's insert_tables: several tables' rows in one statement on PostgreSQL, one
statement per table on SQLite and above the parameter limit; the same rows either way."""

from __future__ import annotations

import secrets
import sqlite3
from datetime import UTC, datetime

import pytest
from asyncpg.exceptions import UniqueViolationError

from server.db import bulk
from server.db.bulk import Insert, insert_tables
from server.db.engine import transaction
from server.db.tables_blobs import Blob, BlobHolder
from tests.conftest import Backend

BLOB_COLUMNS = ("sha256", "size", "content_type", "first_uploader", "created_at")
HOLDER_COLUMNS = ("key", "sha256", "user_id", "created_at")
UPLOADER = "00000000-0000-4000-8000-00000000b01c"


def blob_rows(count: int) -> tuple[list[tuple], list[tuple]]:
    now = datetime.now(UTC)
    shas = [secrets.token_hex(32) for _ in range(count)]
    return (
        [(sha, n, "image/jpeg", UPLOADER, now) for n, sha in enumerate(shas)],
        [(f"{sha}:{UPLOADER}", sha, UPLOADER, now) for sha in shas],
    )


async def stored(rows: list[tuple]) -> tuple[int, int]:
    shas = [row[0] for row in rows]
    blobs = await Blob.count().where(Blob.sha256.is_in(shas))
    holders = await BlobHolder.count().where(BlobHolder.sha256.is_in(shas))
    return blobs, holders


@pytest.mark.parametrize("limit", [bulk.MAX_PARAMETERS, 12], ids=["one statement", "split"])
async def test_rows_of_two_tables_are_all_written(
    db: Backend, limit: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bulk, "MAX_PARAMETERS", limit)
    blobs, holders = blob_rows(3)

    async with transaction():
        await insert_tables(
            Insert(Blob, BLOB_COLUMNS, blobs, on_conflict="ON CONFLICT DO NOTHING"),
            Insert(BlobHolder, HOLDER_COLUMNS, holders, on_conflict="ON CONFLICT DO NOTHING"),
            Insert(BlobHolder, HOLDER_COLUMNS, []),  # nothing to write: left out
        )
        # Written again: each table's conflict clause applies within the one statement too.
        await insert_tables(
            Insert(Blob, BLOB_COLUMNS, blobs, on_conflict="ON CONFLICT DO NOTHING"),
            Insert(BlobHolder, HOLDER_COLUMNS, holders, on_conflict="ON CONFLICT DO NOTHING"),
        )

    assert await stored(blobs) == (3, 3)


async def test_a_failing_table_writes_nothing(db: Backend) -> None:
    blobs, holders = blob_rows(2)

    with pytest.raises((UniqueViolationError, sqlite3.IntegrityError)):
        async with transaction():
            await insert_tables(
                Insert(Blob, BLOB_COLUMNS, blobs),
                Insert(BlobHolder, HOLDER_COLUMNS, holders + holders[:1]),  # a duplicate key
            )

    assert await stored(blobs) == (0, 0)
