"""A small tus client over httpx (for the in-process app) and test files with real magic bytes."""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass

import httpx

from server.db.tables_blobs import Blob, Upload
from sync.blobs import BlobStore

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


async def staging_left(store: BlobStore, *locations: str) -> list[str]:
    """Staging areas these uploads still hold in the store (the store is shared by many tests)."""
    ids = {location.rsplit("/", 1)[1] for location in locations}
    return [h async for h in store.staging_handles() if h.split("/", 1)[0] in ids]


async def blob_row(sha256: str) -> dict[str, object] | None:
    return await Blob.select().where(Blob.sha256 == sha256).first().run()


async def upload_row(location: str) -> dict[str, object] | None:
    upload_id = location.rsplit("/", 1)[1]
    return await Upload.select().where(Upload.id == upload_id).first().run()


async def read_blob(store: BlobStore, sha256: str) -> bytes:
    return b"".join([chunk async for chunk in await store.open(sha256)])
