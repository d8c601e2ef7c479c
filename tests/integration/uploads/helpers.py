"""A small tus client over httpx (for the in-process app) and test files with real magic bytes."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from dataclasses import dataclass

import httpx

from server.db.tables_blobs import Blob, Upload
from sync.blobs import BlobStore, StagedPart

MiB = 1024 * 1024
TUS = {"Tus-Resumable": "1.0.0"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PDF_MAGIC = b"%PDF-1.7\n"


def png(size: int) -> bytes:
    """Random bytes behind a PNG signature: sniffed as image/png, never deduplicated by accident."""
    return PNG_MAGIC + os.urandom(size - len(PNG_MAGIC))


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def metadata_header(**values: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


@dataclass
class Tus:
    http: httpx.AsyncClient
    token_headers: dict[str, str]

    def headers(self, **extra: str) -> dict[str, str]:
        return {**TUS, **self.token_headers, **extra}

    async def create(
        self,
        length: int,
        sha256: str,
        content_type: str = "image/png",
        body: bytes | None = None,
        filename: str = "establishment.png",
    ) -> httpx.Response:
        headers = self.headers(
            **{
                "Upload-Length": str(length),
                "Upload-Metadata": metadata_header(
                    sha256=sha256, content_type=content_type, filename=filename
                ),
            }
        )
        if body is not None:
            headers["Content-Type"] = "application/offset+octet-stream"
        return await self.http.post("/api/v1/uploads", headers=headers, content=body)

    async def patch(
        self, location: str, offset: int, data: bytes, checksum: str | None = None
    ) -> httpx.Response:
        headers = self.headers(
            **{"Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"}
        )
        if checksum:
            headers["Upload-Checksum"] = checksum
        return await self.http.patch(location, headers=headers, content=data)

    async def head(self, location: str) -> httpx.Response:
        return await self.http.head(location, headers=self.headers())

    async def upload(self, data: bytes, chunk: int = 3 * MiB, **create: str) -> str:
        """The whole tus exchange; returns the upload's location."""
        created = await self.create(len(data), create.pop("sha256", sha256_hex(data)), **create)
        assert created.status_code == 201, created.text
        location = created.headers["location"]
        offset = int(created.headers["upload-offset"])
        while offset < len(data):
            response = await self.patch(location, offset, data[offset : offset + chunk])
            assert response.status_code == 204, response.text
            offset = int(response.headers["upload-offset"])
        return location


def checksum_header(algorithm: str, data: bytes) -> str:
    return f"{algorithm} {base64.b64encode(hashlib.new(algorithm, data).digest()).decode()}"


async def staging_left(
    store: BlobStore, *locations: str, sha256s: tuple[str, ...] = ()
) -> list[str]:
    """Staging areas these uploads still hold in the store (the store is shared by many tests).

    A staging area at a blob's own key (S3) names the hash, not the upload: it counts if it is
    staged for one of `sha256s` or for the hash of one of the uploads' rows.
    """
    ids = {location.rsplit("/", 1)[1] for location in locations}
    hashes = set(sha256s)
    if ids:
        rows = await Upload.select(Upload.sha256).where(Upload.id.is_in(list(ids))).run()
        hashes.update(row["sha256"] for row in rows)
    left = []
    async for handle in store.staging_handles():
        blob = store.staging_blob(handle)
        if (blob in hashes) if blob is not None else handle.split("/", 1)[0] in ids:
            left.append(handle)
    return left


async def blob_row(sha256: str) -> dict[str, object] | None:
    return await Blob.select().where(Blob.sha256 == sha256).first().run()


async def upload_row(location: str) -> dict[str, object] | None:
    upload_id = location.rsplit("/", 1)[1]
    return await Upload.select().where(Upload.id == upload_id).first().run()


async def read_blob(store: BlobStore, sha256: str) -> bytes:
    return b"".join([chunk async for chunk in await store.open(sha256)])


class HeldParts:
    """A real blob store whose `stage_part` waits until `release` is set, then fails with `failure`
    if one is given: a part still on its way, or one S3 refuses, when the test says so."""

    def __init__(self, store: BlobStore) -> None:
        self._store = store
        self.release = asyncio.Event()
        self.failure: Exception | None = None

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    async def stage_part(self, handle: str, number: int, data: bytes) -> StagedPart:
        await self.release.wait()
        if self.failure is not None:
            raise self.failure
        return await self._store.stage_part(handle, number, data)
