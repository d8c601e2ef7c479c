"""The blob store contract: the same behaviour from the local directory and from S3."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from sync.blobs import (
    CHUNK_SIZE,
    DEFAULT_CONTENT_TYPE,
    BlobHashMismatch,
    BlobKeyInvalid,
    BlobNotFound,
    BlobRangeInvalid,
    BlobStore,
)
from tests.integration.blobstore.helpers import (
    MiB,
    chunked,
    read_all,
    sha256_hex,
    staging_leftovers,
)

# Larger than two S3 parts (5 MiB), so the multipart path and its part boundaries are exercised.
MULTI_PART = os.urandom(11 * MiB + 12345)
MULTI_PART_SHA = sha256_hex(MULTI_PART)


async def test_multi_megabyte_stream_round_trips(store: BlobStore) -> None:
    info = await store.put(
        MULTI_PART_SHA, chunked(MULTI_PART), size=len(MULTI_PART), content_type="image/jpeg"
    )

    assert (info.sha256, info.size, info.content_type) == (
        MULTI_PART_SHA,
        len(MULTI_PART),
        "image/jpeg",
    )
    assert await store.stat(MULTI_PART_SHA) == info
    chunks = [chunk async for chunk in await store.open(MULTI_PART_SHA)]
    assert b"".join(chunks) == MULTI_PART
    assert max(len(chunk) for chunk in chunks) <= CHUNK_SIZE
    assert await staging_leftovers(store) == []


async def test_put_without_size_or_type_is_verified_by_hash_alone(store: BlobStore) -> None:
    data = b"attendance sheet, ward Hoan Kiem"
    info = await store.put(sha256_hex(data), chunked(data, 7))

    assert info.size == len(data)
    assert info.content_type == DEFAULT_CONTENT_TYPE
    assert await read_all(await store.open(info.sha256)) == data


async def test_empty_blob(store: BlobStore) -> None:
    info = await store.put(sha256_hex(b""), chunked(b""), size=0)

    assert info.size == 0
    assert await read_all(await store.open(info.sha256)) == b""


READ_RANGES = [
    (0, 10),
    (0, None),
    (CHUNK_SIZE - 3, 10),  # straddles a read chunk boundary
    (5 * MiB - 1, 2),  # straddles an S3 part boundary
    (len(MULTI_PART) - 5, None),
    (len(MULTI_PART) - 5, 100),  # runs past the end: truncated, as HTTP Range does
    (len(MULTI_PART), None),  # at the end: nothing
    (1234, 0),
    (3 * MiB + 7, 2 * MiB + 1),
]


async def test_open_reads_the_requested_range(store: BlobStore) -> None:
    await store.put(MULTI_PART_SHA, chunked(MULTI_PART, 2 * MiB))

    for offset, length in READ_RANGES:
        got = await read_all(await store.open(MULTI_PART_SHA, offset=offset, length=length))

        end = None if length is None else offset + length
        assert got == MULTI_PART[offset:end], (offset, length)


@pytest.mark.parametrize(("offset", "length"), [(-1, None), (0, -1), (101, None), (101, 1)])
async def test_open_refuses_an_impossible_range(
    store: BlobStore, offset: int, length: int | None
) -> None:
    data = os.urandom(100)
    await store.put(sha256_hex(data), chunked(data))

    with pytest.raises(BlobRangeInvalid):
        await store.open(sha256_hex(data), offset=offset, length=length)


@pytest.mark.parametrize("size", [1000, 9 * MiB], ids=["single-part", "multi-part"])
async def test_hash_mismatch_leaves_nothing_behind(store: BlobStore, size: int) -> None:
    data = os.urandom(size)
    declared = sha256_hex(b"what the device claimed it sent")

    with pytest.raises(BlobHashMismatch) as caught:
        await store.put(declared, chunked(data), size=size)

    assert caught.value.code == "blob_hash_mismatch"
    assert not await store.exists(declared)
    assert not await store.exists(sha256_hex(data))
    assert [key async for key in store.keys()] == []
    assert await staging_leftovers(store) == []
    with pytest.raises(BlobNotFound):
        await store.open(declared)


@pytest.mark.parametrize("declared_size", [999, 1001, 0])
async def test_size_mismatch_leaves_nothing_behind(store: BlobStore, declared_size: int) -> None:
    data = os.urandom(1000)

    with pytest.raises(BlobHashMismatch):
        await store.put(sha256_hex(data), chunked(data, 100), size=declared_size)

    assert not await store.exists(sha256_hex(data))
    assert await staging_leftovers(store) == []


async def test_oversized_stream_is_refused_without_reading_it_all(store: BlobStore) -> None:
    consumed = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal consumed
        while True:
            consumed += 64 * 1024
            yield b"\0" * (64 * 1024)

    with pytest.raises(BlobHashMismatch):
        await store.put(sha256_hex(b"x" * MiB), endless(), size=MiB)

    assert consumed <= MiB + 64 * 1024
    assert await staging_leftovers(store) == []


async def test_putting_an_existing_key_is_a_no_op(store: BlobStore) -> None:
    data = b"photo of the establishment front"
    key = sha256_hex(data)
    first = await store.put(key, chunked(data), content_type="image/png")

    async def must_not_be_read() -> AsyncIterator[bytes]:
        raise AssertionError("dedupe must not read the stream")
        yield b""  # pragma: no cover

    again = await store.put(key, must_not_be_read(), size=len(data), content_type="text/plain")

    assert again == first  # the first content type wins
    assert [k async for k in store.keys()] == [key]


async def test_existing_key_with_a_different_declared_size_is_a_mismatch(
    store: BlobStore,
) -> None:
    data = b"audio of a community session"
    await store.put(sha256_hex(data), chunked(data))

    with pytest.raises(BlobHashMismatch):
        await store.put(sha256_hex(data), chunked(data), size=len(data) + 1)


async def test_same_blob_put_concurrently_is_stored_once(store: BlobStore) -> None:
    data = os.urandom(3 * MiB)
    key = sha256_hex(data)

    infos = await asyncio.gather(*(store.put(key, chunked(data), size=len(data)) for _ in range(3)))

    assert {info.size for info in infos} == {len(data)}
    assert [k async for k in store.keys()] == [key]
    assert await read_all(await store.open(key)) == data
    assert await staging_leftovers(store) == []


async def test_delete_is_idempotent(store: BlobStore) -> None:
    data = b"scanned attendance sheet"
    key = sha256_hex(data)
    await store.put(key, chunked(data))

    await store.delete(key)
    await store.delete(key)

    assert not await store.exists(key)
    assert await store.stat(key) is None
    with pytest.raises(BlobNotFound) as caught:
        await store.open(key)
    assert caught.value.code == "blob_not_found"
    assert [k async for k in store.keys()] == []


async def test_keys_lists_every_stored_blob(store: BlobStore) -> None:
    blobs = [f"record {i}".encode() for i in range(5)]
    for data in blobs:
        await store.put(sha256_hex(data), chunked(data))
    await store.delete(sha256_hex(blobs[0]))

    keys = [key async for key in store.keys()]

    assert sorted(keys) == sorted(sha256_hex(data) for data in blobs[1:])


async def test_stat_and_exists(store: BlobStore) -> None:
    data = b"x" * 4321
    key = sha256_hex(data)
    assert await store.stat(key) is None
    assert not await store.exists(key)

    await store.put(key, chunked(data), content_type="application/pdf")

    assert await store.exists(key)
    info = await store.stat(key)
    assert info is not None
    assert (info.size, info.content_type) == (4321, "application/pdf")


@pytest.mark.parametrize(
    "key",
    ["../../etc/passwd", "A" * 64, "g" * 64, "ab" * 31, "", "ab/" + "c" * 61],
)
async def test_keys_that_are_not_sha256_hex_are_refused(store: BlobStore, key: str) -> None:
    with pytest.raises(BlobKeyInvalid):
        await store.stat(key)
    with pytest.raises(BlobKeyInvalid):
        await store.put(key, chunked(b"data"))
    with pytest.raises(BlobKeyInvalid):
        await store.delete(key)
    with pytest.raises(BlobKeyInvalid):
        await store.open(key)


async def test_presigned_url_only_where_the_store_can_serve_directly(store: BlobStore) -> None:
    data = b"photo"
    await store.put(sha256_hex(data), chunked(data))

    url = await store.presigned_get_url(sha256_hex(data), expires=timedelta(minutes=5))

    if store.__class__.__name__ == "LocalBlobStore":
        assert url is None
    else:
        assert url is not None
        assert url.startswith("http://")


async def test_empty_chunks_in_the_stream_are_not_end_of_stream(store: BlobStore) -> None:
    data = os.urandom(6 * MiB)

    async def with_empty_chunks() -> AsyncIterator[bytes]:
        async for chunk in chunked(data, MiB):
            yield b""
            yield chunk

    info = await store.put(sha256_hex(data), with_empty_chunks(), size=len(data))

    assert info.size == len(data)
    assert await read_all(await store.open(info.sha256)) == data


async def test_a_stream_that_breaks_mid_way_leaves_nothing_behind(store: BlobStore) -> None:
    data = os.urandom(7 * MiB)

    async def cut_connection() -> AsyncIterator[bytes]:
        async for chunk in chunked(data, MiB):
            yield chunk
        raise ConnectionResetError("device went offline")

    with pytest.raises(ConnectionResetError):
        await store.put(sha256_hex(data), cut_connection(), size=len(data))

    assert not await store.exists(sha256_hex(data))
    assert await staging_leftovers(store) == []


async def test_a_cancelled_put_leaves_nothing_behind(store: BlobStore) -> None:
    data = os.urandom(7 * MiB)
    halfway = asyncio.Event()

    async def stalls_after_six_mib() -> AsyncIterator[bytes]:
        async for chunk in chunked(data[: 6 * MiB], MiB):
            yield chunk
        halfway.set()
        await asyncio.Event().wait()  # the device stops sending; the request gets cancelled
        yield data[6 * MiB :]

    put = asyncio.create_task(store.put(sha256_hex(data), stalls_after_six_mib(), size=len(data)))
    await halfway.wait()
    put.cancel()
    with pytest.raises(asyncio.CancelledError):
        await put

    assert not await store.exists(sha256_hex(data))
    assert await staging_leftovers(store) == []


async def test_put_bytes_stores_verified_bytes_and_refuses_others(store: BlobStore) -> None:
    """A multipart POST's small file: the caller holds the bytes and their hash."""
    data = os.urandom(50 * 1024)
    key = sha256_hex(data)
    with pytest.raises(BlobHashMismatch):
        await store.put_bytes(sha256_hex(b"another photo"), data, content_type="image/jpeg")
    assert [k async for k in store.keys()] == []

    info = await store.put_bytes(key, data, content_type="image/jpeg")
    again = await store.put_bytes(key, data, content_type="image/jpeg")

    assert info == again
    assert (info.sha256, info.size, info.content_type) == (key, len(data), "image/jpeg")
    assert await read_all(await store.open(key)) == data
    assert [k async for k in store.keys()] == [key]
    assert await staging_leftovers(store) == []
