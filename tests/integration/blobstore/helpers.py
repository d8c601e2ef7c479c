"""Shared helpers for the blob store contract tests."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import AsyncIterator

from server.blobstores import S3Options
from server.blobstores.local import LocalBlobStore
from server.blobstores.s3 import S3BlobStore
from sync.blobs import BlobStore
from tests.fixtures.s3 import S3Server

MiB = 1024 * 1024


def s3_options(server: S3Server, **overrides: object) -> S3Options:
    values: dict[str, object] = {
        "endpoint": server.endpoint,
        "access_key": server.access_key,
        "secret_key": server.secret_key,
        "region": server.region,
        "secure": False,
    }
    values.update(overrides)
    return S3Options(**values)  # type: ignore[arg-type]


def unique_bucket() -> str:
    return f"fieldsync-test-{secrets.token_hex(6)}"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def chunked(data: bytes, chunk_size: int = 300 * 1024) -> AsyncIterator[bytes]:
    """The bytes as an async stream of uneven-sized chunks, as a request body arrives."""
    for start in range(0, len(data), chunk_size):
        yield data[start : start + chunk_size]


async def read_all(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in chunks])


async def staging_leftovers(store: BlobStore) -> list[str]:
    """Whatever puts left outside the readable blobs (must be empty once puts have returned)."""
    if isinstance(store, LocalBlobStore):
        return sorted(p.name for p in store.staging.iterdir())
    assert isinstance(store, S3BlobStore)
    return await store.staged_keys()
