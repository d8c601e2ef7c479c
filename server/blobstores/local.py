"""The blob store in a local directory: files published by atomic rename and fsynced."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import shutil
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

from sync.blobs import (
    CHUNK_SIZE,
    DEFAULT_CONTENT_TYPE,
    SHA256_HEX,
    STAGING_ID,
    STAGING_PART_SIZE,
    BlobHashMismatch,
    BlobInfo,
    BlobNotFound,
    BlobRangeInvalid,
    BlobStore,
    BlobStoreUnavailable,
    StagedPart,
    deduplicated_info,
    validate_key,
    validate_staging_id,
    verify_received,
)


class LocalBlobStore(BlobStore):
    """Blobs as files under `root/<first two hex>/<sha256>`, with `<sha256>.type` holding the
    content type. Writes go to `root/.staging/` and are published with an atomic rename.
    Resumable uploads stage under `root/.uploads/<staging id>/` (`data` written at each part's
    offset, `tail`); the handle is the staging id."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.staging = self.root / ".staging"
        self.uploads = self.root / ".uploads"

    def _blob_path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def _type_path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / f"{sha256}.type"

    async def ensure_ready(self) -> None:
        try:
            await asyncio.to_thread(self.staging.mkdir, parents=True, exist_ok=True)
        except OSError as exc:
            raise BlobStoreUnavailable(f"cannot create blob directory {self.root}: {exc}") from exc

    async def check(self) -> None:
        def probe() -> None:
            if not self.staging.is_dir() or not os.access(self.staging, os.W_OK):
                raise BlobStoreUnavailable(f"blob directory {self.staging} is missing or read-only")

        await asyncio.to_thread(probe)

    async def stat(self, sha256: str) -> BlobInfo | None:
        validate_key(sha256)
        return await asyncio.to_thread(self._stat_sync, sha256)

    def _stat_sync(self, sha256: str) -> BlobInfo | None:
        try:
            size = self._blob_path(sha256).stat().st_size
        except FileNotFoundError:
            return None
        try:
            content_type = self._type_path(sha256).read_text(encoding="utf-8")
        except FileNotFoundError:
            content_type = DEFAULT_CONTENT_TYPE
        return BlobInfo(sha256=sha256, size=size, content_type=content_type)

    async def put(
        self,
        sha256: str,
        chunks: AsyncIterable[bytes],
        *,
        size: int | None = None,
        content_type: str | None = None,
    ) -> BlobInfo:
        validate_key(sha256)
        existing = await self.stat(sha256)
        if existing is not None:
            return deduplicated_info(existing, size)
        await self.ensure_ready()
        staged = self.staging / f"{sha256}.{secrets.token_hex(8)}"
        staged_type = self.staging / f"{staged.name}.type"
        hasher = hashlib.sha256()
        received = 0
        try:
            with await asyncio.to_thread(staged.open, "wb") as file:
                buffer = bytearray()
                async for chunk in chunks:
                    received += len(chunk)
                    if size is not None and received > size:
                        raise BlobHashMismatch(f"more than the declared {size} bytes received")
                    buffer += chunk
                    if len(buffer) >= CHUNK_SIZE:
                        pending, buffer = buffer, bytearray()
                        await asyncio.to_thread(_write_and_hash, file, hasher, pending)
                await asyncio.to_thread(_write_and_hash, file, hasher, buffer)
                await asyncio.to_thread(_flush_and_sync, file)
            verify_received(sha256, hasher.hexdigest(), size, received)
            info = BlobInfo(sha256, received, content_type or DEFAULT_CONTENT_TYPE)
            await asyncio.to_thread(self._publish, staged, staged_type, info)
            return info
        finally:
            await asyncio.to_thread(_remove_quietly, staged, staged_type)

    def _publish(self, staged: Path, staged_type: Path, info: BlobInfo) -> None:
        target = self._blob_path(info.sha256)
        target.parent.mkdir(exist_ok=True)
        # The type file is published first so a readable blob always has its content type.
        with staged_type.open("w", encoding="utf-8") as file:
            file.write(info.content_type)
            _flush_and_sync(file)
        os.replace(staged_type, self._type_path(info.sha256))
        os.replace(staged, target)
        _sync_directory(target.parent)

    async def read_range(self, sha256: str, offset: int, length: int) -> AsyncIterator[bytes]:
        try:
            file = await asyncio.to_thread(self._blob_path(sha256).open, "rb")
        except FileNotFoundError:
            raise BlobNotFound(sha256) from None
        try:
            await asyncio.to_thread(file.seek, offset)
            while length > 0:
                chunk = await asyncio.to_thread(file.read, min(CHUNK_SIZE, length))
                if not chunk:
                    break
                length -= len(chunk)
                yield chunk
        finally:
            await asyncio.to_thread(file.close)

    async def delete(self, sha256: str) -> None:
        validate_key(sha256)
        # The blob goes first so a half-finished delete never leaves a blob without its type.
        await asyncio.to_thread(_remove_quietly, self._blob_path(sha256), self._type_path(sha256))

    async def keys(self) -> AsyncIterator[str]:
        def list_fanout_dirs() -> list[Path]:
            if not self.root.is_dir():
                return []
            return [d for d in self.root.iterdir() if len(d.name) == 2 and d.is_dir()]

        for directory in await asyncio.to_thread(list_fanout_dirs):
            names = await asyncio.to_thread(os.listdir, directory)
            for name in names:
                if SHA256_HEX.fullmatch(name):
                    yield name

    async def presigned_get_url(
        self, sha256: str, *, expires: timedelta, filename: str | None = None
    ) -> str | None:
        validate_key(sha256)
        return None  # the server streams local blobs itself

    def _upload_dir(self, handle: str) -> Path:
        return self.uploads / validate_staging_id(handle)

    async def begin_staging(
        self, staging_id: str, *, content_type: str | None = None, sha256: str | None = None
    ) -> str:
        # Publishing is an atomic rename whatever the key, so the handle is the staging id.
        directory = self._upload_dir(staging_id)
        await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
        return staging_id

    async def stage_part(self, handle: str, number: int, data: bytes) -> StagedPart:
        if number < 1:
            raise BlobRangeInvalid(f"part numbers start at 1, got {number}")
        path = self._upload_dir(handle) / "data"
        offset = (number - 1) * STAGING_PART_SIZE
        await asyncio.to_thread(_write_at, path, offset, data)
        return StagedPart(number=number, size=len(data), etag="")

    async def stage_tail(self, handle: str, data: bytes) -> None:
        directory = self._upload_dir(handle)
        await asyncio.to_thread(_replace_file, directory / "tail", directory / "tail.new", data)

    async def read_tail(self, handle: str, size: int) -> bytes:
        if size == 0:
            return b""
        path = self._upload_dir(handle) / "tail"
        data = await asyncio.to_thread(_read_prefix, path, size)
        if len(data) < size:
            raise BlobNotFound(f"staged tail of {handle} has {len(data)} bytes, expected {size}")
        return data

    async def publish_staged(
        self,
        handle: str,
        parts: Sequence[StagedPart],
        *,
        sha256: str,
        content_type: str | None = None,
        digest: str | None = None,
    ) -> BlobInfo:
        validate_key(sha256)
        directory = self._upload_dir(handle)
        try:
            existing = await self.stat(sha256)
            if existing is not None:
                return existing
            size = sum(part.size for part in parts)
            path = directory / "data"
            await asyncio.to_thread(_truncate_and_sync, path, size)
            if digest is None:
                digest = await asyncio.to_thread(_hash_file, path)
            verify_received(sha256, digest, size, size)
            info = BlobInfo(sha256, size, content_type or DEFAULT_CONTENT_TYPE)
            await asyncio.to_thread(self._publish, path, directory / "data.type", info)
            return info
        finally:
            await self.discard_staged(handle)

    async def discard_staged(self, handle: str) -> None:
        directory = self._upload_dir(handle)
        await asyncio.to_thread(shutil.rmtree, directory, True)

    async def staging_handles(self) -> AsyncIterator[str]:
        def list_uploads() -> list[str]:
            if not self.uploads.is_dir():
                return []
            return [d.name for d in self.uploads.iterdir() if STAGING_ID.fullmatch(d.name)]

        for name in await asyncio.to_thread(list_uploads):
            yield name


def _write_and_hash(file: IO[bytes], hasher: hashlib._Hash, data: bytearray) -> None:
    hasher.update(data)
    file.write(data)


def _write_at(path: Path, offset: int, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace_file(path: Path, temporary: Path, data: bytes) -> None:
    with temporary.open("wb") as file:
        file.write(data)
        _flush_and_sync(file)
    os.replace(temporary, path)


def _read_prefix(path: Path, size: int) -> bytes:
    try:
        with path.open("rb") as file:
            return file.read(size)
    except FileNotFoundError:
        return b""


def _truncate_and_sync(path: Path, size: int) -> None:
    # Parts re-staged past the committed ones (a refused chunk) may have left bytes beyond `size`.
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)


def _hash_file(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(CHUNK_SIZE):
            hasher.update(chunk)
    return hasher.hexdigest()


def _flush_and_sync(file: IO[Any]) -> None:
    file.flush()
    os.fsync(file.fileno())


def _sync_directory(directory: Path) -> None:
    # Makes the rename itself durable across a power loss.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_quietly(*paths: Path) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
