"""The staged-upload contract (resumable uploads): the same from the local directory and S3."""

from __future__ import annotations

import hashlib
import os
import secrets

import pytest

from sync.blobs import STAGING_PART_SIZE, BlobHashMismatch, BlobKeyInvalid, BlobStore
from tests.integration.blobstore.helpers import read_all, sha256_hex

DATA = os.urandom(2 * STAGING_PART_SIZE + 12345)
DATA_SHA = sha256_hex(DATA)


def parts_of(data: bytes) -> list[bytes]:
    return [data[i : i + STAGING_PART_SIZE] for i in range(0, len(data), STAGING_PART_SIZE)]


async def staged_handles(store: BlobStore) -> list[str]:
    return [handle async for handle in store.staging_handles()]


@pytest.mark.parametrize("caller_hashed", [True, False])
async def test_staged_parts_publish_as_one_verified_blob(
    store: BlobStore, caller_hashed: bool
) -> None:
    handle = await store.begin_staging(secrets.token_hex(8), content_type="audio/ogg")
    # Parts may arrive out of order and be re-staged (a retried chunk replaces the first try).
    chunks = parts_of(DATA)
    staged = {}
    for number in (2, 1, 3, 2):
        staged[number] = await store.stage_part(handle, number, chunks[number - 1])
    assert not await store.exists(DATA_SHA)  # nothing readable before publishing

    info = await store.publish_staged(
        handle,
        [staged[1], staged[2], staged[3]],
        sha256=DATA_SHA,
        content_type="audio/ogg",
        digest=DATA_SHA if caller_hashed else None,
    )

    assert (info.size, info.content_type) == (len(DATA), "audio/ogg")
    assert await read_all(await store.open(DATA_SHA)) == DATA
    assert handle not in await staged_handles(store)


@pytest.mark.parametrize("caller_hashed", [True, False])
async def test_publishing_the_wrong_bytes_leaves_nothing(
    store: BlobStore, caller_hashed: bool
) -> None:
    data = os.urandom(STAGING_PART_SIZE + 10)
    claimed = sha256_hex(b"what the device said it was")
    handle = await store.begin_staging(secrets.token_hex(8))
    parts = [await store.stage_part(handle, n + 1, c) for n, c in enumerate(parts_of(data))]

    with pytest.raises(BlobHashMismatch):
        await store.publish_staged(
            handle, parts, sha256=claimed, digest=sha256_hex(data) if caller_hashed else None
        )

    assert not await store.exists(claimed)
    assert handle not in await staged_handles(store)


async def test_the_tail_holds_bytes_short_of_a_part(store: BlobStore) -> None:
    handle = await store.begin_staging(secrets.token_hex(8))
    await store.stage_tail(handle, b"first bytes")
    await store.stage_tail(handle, b"first bytes and more")

    assert await store.read_tail(handle, 11) == b"first bytes"
    assert await store.read_tail(handle, 20) == b"first bytes and more"
    assert await store.read_tail(handle, 0) == b""
    await store.discard_staged(handle)
    await store.discard_staged(handle)  # twice is fine
    assert handle not in await staged_handles(store)


async def test_an_existing_blob_wins_over_staged_bytes(store: BlobStore) -> None:
    data = b"photo of the establishment"
    sha = hashlib.sha256(data).hexdigest()
    first = await store.begin_staging(secrets.token_hex(8))
    await store.publish_staged(first, [await store.stage_part(first, 1, data)], sha256=sha)
    second = await store.begin_staging(secrets.token_hex(8))

    info = await store.publish_staged(
        second, [await store.stage_part(second, 1, data)], sha256=sha, digest=sha
    )

    assert info.size == len(data)
    assert second not in await staged_handles(store)


async def test_staging_ids_cannot_escape(store: BlobStore) -> None:
    with pytest.raises(BlobKeyInvalid):
        await store.begin_staging("../../etc")
