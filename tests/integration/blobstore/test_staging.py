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


# Staged at the blob's own key (`begin_staging(sha256=...)`): the caller vouches it will pass the
# digest it computed, so S3 completes the multipart upload in place instead of copying it.


async def test_staged_at_the_blob_key_is_readable_only_once_published(store: BlobStore) -> None:
    handle = await store.begin_staging(secrets.token_hex(8), sha256=DATA_SHA)
    parts = [await store.stage_part(handle, n + 1, c) for n, c in enumerate(parts_of(DATA))]
    assert not await store.exists(DATA_SHA)
    assert [key async for key in store.keys()] == []
    assert handle in await staged_handles(store)

    info = await store.publish_staged(handle, parts, sha256=DATA_SHA, digest=DATA_SHA)

    assert info.size == len(DATA)
    assert await read_all(await store.open(DATA_SHA)) == DATA
    assert handle not in await staged_handles(store)


@pytest.mark.parametrize("digest", ["of_the_bytes", "none"])
async def test_staged_at_the_blob_key_the_wrong_bytes_never_become_readable(
    store: BlobStore, digest: str
) -> None:
    data = os.urandom(STAGING_PART_SIZE + 10)
    claimed = sha256_hex(b"what the device said it was")
    handle = await store.begin_staging(secrets.token_hex(8), sha256=claimed)
    parts = [await store.stage_part(handle, n + 1, c) for n, c in enumerate(parts_of(data))]
    await store.stage_tail(handle, b"tail bytes")

    with pytest.raises(BlobHashMismatch):
        await store.publish_staged(
            handle,
            parts,
            sha256=claimed,
            digest=sha256_hex(data) if digest == "of_the_bytes" else None,
        )

    assert not await store.exists(claimed)
    assert [key async for key in store.keys()] == []
    assert await staged_handles(store) == []


async def test_two_staging_areas_for_one_blob_keep_their_own_tails(store: BlobStore) -> None:
    """Two devices sending the same file at once: staged side by side, stored once."""
    first = await store.begin_staging(secrets.token_hex(8), sha256=DATA_SHA)
    second = await store.begin_staging(secrets.token_hex(8), sha256=DATA_SHA)
    assert first != second
    await store.stage_tail(first, b"first device")
    await store.stage_tail(second, b"second device")
    assert await store.read_tail(first, 12) == b"first device"
    assert await store.read_tail(second, 13) == b"second device"
    if store.staging_blob(first) is not None:  # S3: the handle names the blob it stages
        assert store.staging_blob(first) == store.staging_blob(second) == DATA_SHA
    chunks = parts_of(DATA)
    for handle in (first, second):
        parts = [await store.stage_part(handle, n + 1, c) for n, c in enumerate(chunks)]
        info = await store.publish_staged(handle, parts, sha256=DATA_SHA, digest=DATA_SHA)
        assert info.size == len(DATA)

    assert await read_all(await store.open(DATA_SHA)) == DATA
    assert [key async for key in store.keys()] == [DATA_SHA]
    assert await staged_handles(store) == []
