"""multipart/form-data read as a stream (server/openrosa/multipart.py): parts reach their sinks
whatever the chunking, names are UTF-8, a file is stored under its hash as it arrives."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from server.blobstores.local import LocalBlobStore
from server.errors import BadRequest, PayloadTooLarge
from server.openrosa.multipart import (
    BlobWriter,
    Collected,
    PartHeaders,
    PartSink,
    boundary_of,
    read_parts,
)
from sync.blobs import STAGING_PART_SIZE

BOUNDARY = "3f1c0d2e-8a4b-4c7e-9a61-0f2d5b7e9c11"


def body(*parts: tuple[str, str | None, str | None, bytes]) -> bytes:
    out = b""
    for name, filename, kind, data in parts:
        disposition = f'form-data; name="{name}"' + (
            f'; filename="{filename}"' if filename is not None else ""
        )
        out += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n".encode()
        if kind:
            out += f"Content-Type: {kind}\r\n".encode()
        out += b"\r\n" + data + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


async def chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def read(data: bytes, size: int) -> list[tuple[PartHeaders, bytes]]:
    seen: list[tuple[PartHeaders, Collected]] = []

    async def open_part(headers: PartHeaders) -> PartSink:
        sink = Collected(1 << 20, headers.name)
        seen.append((headers, sink))
        return sink

    await read_parts(chunks(data, size), BOUNDARY.encode(), open_part)
    assert all(sink.closed for _, sink in seen)
    return [(headers, bytes(sink.data)) for headers, sink in seen]


@pytest.mark.parametrize("size", [1, 7, 64 * 1024])
async def test_parts_arrive_whole_whatever_the_chunking(size: int) -> None:
    xml = b"<data id='x'>\r\n--not-a-boundary</data>"
    jpeg = b"\xff\xd8\xff" + os.urandom(3000)
    parts = await read(
        body(
            ("xml_submission_file", "Trees_2025-08-21.xml", "text/xml", xml),
            ("ảnh mặt tiền.jpg", "ảnh mặt tiền.jpg", "image/jpeg", jpeg),
            ("*isIncomplete*", None, None, b"yes"),
        ),
        size,
    )
    assert [(h.name, h.filename, h.content_type) for h, _ in parts] == [
        ("xml_submission_file", "Trees_2025-08-21.xml", "text/xml"),
        ("ảnh mặt tiền.jpg", "ảnh mặt tiền.jpg", "image/jpeg"),
        ("*isIncomplete*", None, ""),
    ]
    assert [data for _, data in parts] == [xml, jpeg, b"yes"]


@pytest.mark.parametrize(
    "data",
    [
        body(("a", None, None, b"x"))[:-10],  # cut before the closing boundary
        b"no boundary here at all",
        f"--{BOUNDARY}\r\nContent-Type: text/xml\r\n\r\nx\r\n--{BOUNDARY}--\r\n".encode(),
    ],
    ids=["truncated", "not multipart", "no disposition"],
)
async def test_malformed_bodies_are_refused(data: bytes) -> None:
    with pytest.raises(BadRequest) as caught:
        await read(data, 5)
    assert caught.value.instance_code == "malformed_body"


def test_the_boundary_comes_from_a_multipart_form_data_content_type() -> None:
    assert boundary_of(f"multipart/form-data; boundary={BOUNDARY}") == BOUNDARY.encode()
    assert boundary_of(f'Multipart/Form-Data; boundary="{BOUNDARY}"') == BOUNDARY.encode()
    assert boundary_of("multipart/mixed; boundary=x") is None
    assert boundary_of("multipart/form-data") is None
    assert boundary_of("text/xml") is None


def headers(name: str) -> PartHeaders:
    return PartHeaders(name=name, filename=name, content_type="image/jpeg")


@pytest.mark.parametrize(
    "size", [50 * 1024, 2 * STAGING_PART_SIZE + 123], ids=["one put", "staged in parts"]
)
async def test_a_file_is_stored_under_the_hash_of_its_bytes(tmp_path: Path, size: int) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    await store.ensure_ready()
    data = b"\xff\xd8\xff" + os.urandom(size - 3)
    writer = BlobWriter(store, headers("front.jpg"), limit=size)
    async for chunk in chunks(data, 64 * 1024 + 1):
        await writer.write(chunk)
    await writer.close()
    assert writer.stored is not None
    sha256 = hashlib.sha256(data).hexdigest()
    assert (writer.stored.sha256, writer.stored.size) == (sha256, size)
    assert writer.stored.head == data[:16]
    assert b"".join([c async for c in await store.open(sha256)]) == data
    assert [h async for h in store.staging_handles()] == []


async def test_a_file_over_the_limit_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    await store.ensure_ready()
    writer = BlobWriter(store, headers("big.jpg"), limit=STAGING_PART_SIZE + 10)
    with pytest.raises(PayloadTooLarge):
        async for chunk in chunks(os.urandom(STAGING_PART_SIZE + 11), 1 << 20):
            await writer.write(chunk)
    assert [h async for h in store.staging_handles()] == []
    assert [k async for k in store.keys()] == []
