"""Attachments stream through the store in bounded memory, whatever their size."""

from __future__ import annotations

import hashlib
import tracemalloc
from collections.abc import AsyncIterator

from sync.blobs import BlobStore
from tests.integration.blobstore.helpers import MiB

BLOB_SIZE = 64 * MiB
PEAK_LIMIT = 32 * MiB
BLOCK = 256 * 1024


def block(i: int) -> bytes:
    # Distinct content per block, so the stream cannot be deduplicated or compressed away.
    return hashlib.sha256(i.to_bytes(8, "big")).digest() * (BLOCK // 32)


def generated_blob_sha256() -> str:
    hasher = hashlib.sha256()
    for i in range(BLOB_SIZE // BLOCK):
        hasher.update(block(i))
    return hasher.hexdigest()


async def generated_blob() -> AsyncIterator[bytes]:
    for i in range(BLOB_SIZE // BLOCK):
        yield block(i)


async def test_a_64_mb_put_and_read_stay_within_32_mb(store: BlobStore) -> None:
    key = generated_blob_sha256()
    tracemalloc.start()
    try:
        info = await store.put(key, generated_blob(), size=BLOB_SIZE)
        _, put_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        hasher = hashlib.sha256()
        async for chunk in await store.open(key):
            hasher.update(chunk)
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert info.size == BLOB_SIZE
    assert hasher.hexdigest() == key
    assert put_peak < PEAK_LIMIT, f"put peaked at {put_peak / MiB:.1f} MiB"
    assert read_peak < PEAK_LIMIT, f"read peaked at {read_peak / MiB:.1f} MiB"
