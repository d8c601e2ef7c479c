"""The blob store on S3 (MinIO, SeaweedFS, AWS) through the blocking `minio` SDK.

Every SDK call runs in a worker thread, except the PUT of a small blob whose bytes the caller
holds (`put_bytes`: a multipart submission's XML and files), which goes from the event loop over
connections of its own (s3_http.py), addressed and signed by the SDK's code. A put streams into `staging/<sha256>.<random>` as a
multipart upload of PART_SIZE parts, hashing on the way; only a verified object is copied
server-side to `blobs/<sha256>`, so the public key never holds unverified bytes.
A resumable upload whose caller hashes the bytes itself stages as a multipart upload at
`blobs/<sha256>` directly (invisible until completed) and completes it only once the digest
matched: no copy. Without that promise it stages privately under `uploads/` and is copied.
Memory per put is bounded by about 3 x PART_SIZE + one caller chunk (the SDK assembles a part by
concatenation and then slices it), about 16 MiB; measured 15-16 MiB for a 64 MiB put.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import itertools
import os
import secrets
import ssl
import threading
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar, cast
from urllib.parse import quote

import certifi
import urllib3
from defusedxml import ElementTree
from minio import Minio
from minio.commonconfig import CopySource
from minio.credentials import Credentials
from minio.datatypes import Object, Part
from minio.error import MinioException, S3Error, ServerError
from minio.helpers import DictType
from minio.signer import sign_v4_s3
from minio.time import to_amz_date, utcnow

from server.blobstores.s3_http import Response, S3Connections, StaleConnection
from sync.blobs import (
    CHUNK_SIZE,
    DEFAULT_CONTENT_TYPE,
    BlobHashMismatch,
    BlobInfo,
    BlobNotFound,
    BlobStore,
    BlobStoreError,
    BlobStoreUnavailable,
    StagedPart,
    deduplicated_info,
    validate_key,
    validate_staging_id,
    verify_received,
)

# Multipart part size: S3's minimum, since memory per put grows with it (objects up to 50 GB).
PART_SIZE = 5 * 1024 * 1024
BLOB_PREFIX = "blobs/"
STAGING_PREFIX = "staging/"
# Resumable uploads: a multipart upload at `blobs/<sha256>` (handle "blobs/<sha256>/<multipart
# upload id>") or, when the caller does not hash, at `uploads/<staging id>` (handle "<staging
# id>/<multipart upload id>"); the bytes not yet filling a part wait in an `uploads/...tail` object.
UPLOADS_PREFIX = "uploads/"
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchObject", "NotFound", "ResourceNotFound"})
# A PUT from the event loop answered 5xx is sent again this many times (as urllib3's Retry does
# for the SDK's calls), after 0.2 s and then 0.4 s.
PUT_RETRIES = 2
_RETRY_STATUSES = frozenset({500, 502, 503, 504})

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class S3Options:
    endpoint: str  # host:port the server talks to
    access_key: str
    secret_key: str
    public_endpoint: str | None = None  # host:port devices see in presigned URLs; default endpoint
    region: str = "us-east-1"
    secure: bool = False
    connect_timeout: float = 3.0  # short, so a readiness probe answers quickly when S3 is down
    read_timeout: float = 60.0
    probe_timeout: float = 5.0  # read timeout of check(): a hung S3 must not hang /health/ready


class S3RequestFailed(BlobStoreError):
    """S3 answered with an error this store does not translate (the S3 code is kept)."""

    def __init__(self, s3_code: str, message: str) -> None:
        super().__init__(f"S3 {s3_code}: {message}")
        self.s3_code = s3_code


class S3BlobStore(BlobStore):
    def __init__(self, bucket: str, options: S3Options) -> None:
        self.bucket = bucket
        self.options = options
        self._client = _minio(options, options.read_timeout)
        self._probe = _minio(options, options.probe_timeout)
        public_secure, public_host = _split_endpoint(
            options.public_endpoint or options.endpoint, options.secure
        )
        self._credentials = Credentials(options.access_key, options.secret_key)
        self._connections: S3Connections | None = None  # for small puts; opened on first use
        # Only signs URLs; the explicit region means it never asks the network for one.
        self._signer = Minio(
            public_host,
            access_key=options.access_key,
            secret_key=options.secret_key,
            secure=public_secure,
            region=options.region,
        )

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking SDK call in a thread and translate its failures."""
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except (urllib3.exceptions.HTTPError, ServerError) as exc:
            raise BlobStoreUnavailable(f"S3 at {self.options.endpoint} unreachable: {exc}") from exc
        except S3Error as exc:
            raise S3RequestFailed(exc.code or "Unknown", exc.message or "") from exc
        except MinioException as exc:
            raise BlobStoreError(f"S3 request failed: {exc}") from exc

    async def ensure_ready(self) -> None:
        if await self._call(self._client.bucket_exists, self.bucket):
            return
        try:
            await self._call(self._client.make_bucket, self.bucket)
        except S3RequestFailed as exc:
            # Another worker created it between the two calls.
            if exc.s3_code not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                raise

    async def check(self) -> None:
        try:
            exists = await self._call(self._probe.bucket_exists, self.bucket)
        except BlobStoreUnavailable:
            raise
        except BlobStoreError as exc:  # bad credentials make the store as unusable as an outage
            raise BlobStoreUnavailable(str(exc)) from exc
        if not exists:
            raise BlobStoreUnavailable(f"S3 bucket {self.bucket!r} does not exist")

    async def stat(self, sha256: str) -> BlobInfo | None:
        validate_key(sha256)
        try:
            obj = await self._call(self._client.stat_object, self.bucket, BLOB_PREFIX + sha256)
        except S3RequestFailed as exc:
            if exc.s3_code in _NOT_FOUND_CODES:
                return None
            raise
        return BlobInfo(
            sha256=sha256,
            size=obj.size or 0,
            content_type=obj.content_type or DEFAULT_CONTENT_TYPE,
        )

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
        staging_key = f"{STAGING_PREFIX}{sha256}.{secrets.token_hex(8)}"
        reader = _ChunkReader(chunks, asyncio.get_running_loop(), size)
        upload = asyncio.ensure_future(
            self._call(
                self._client.put_object,
                self.bucket,
                staging_key,
                reader,
                -1,
                content_type=content_type or DEFAULT_CONTENT_TYPE,
                part_size=PART_SIZE,
                num_parallel_uploads=1,  # one part in flight keeps memory bounded
            )
        )
        try:
            try:
                await asyncio.shield(upload)
            except asyncio.CancelledError:
                reader.abort()
                # Let the worker thread stop before cleaning up, or it could recreate the object.
                await asyncio.gather(upload, return_exceptions=True)
                raise
            verify_received(sha256, reader.hexdigest(), size, reader.received)
            await self._call(
                self._client.copy_object,
                self.bucket,
                BLOB_PREFIX + sha256,
                CopySource(self.bucket, staging_key),
            )
            return BlobInfo(sha256, reader.received, content_type or DEFAULT_CONTENT_TYPE)
        finally:
            await self._remove_staging(staging_key)

    async def put_bytes(
        self, sha256: str, data: bytes, *, content_type: str | None = None
    ) -> BlobInfo:
        """One PUT at the blob's key, the bytes verified first: no staging object, no copy and
        no stat (rewriting a blob with its own verified bytes changes nothing readable). Sent
        from the event loop, signed with the digest just checked (it is the payload's SHA-256):
        no worker thread, no second hash of the bytes."""
        validate_key(sha256)
        verify_received(sha256, hashlib.sha256(data).hexdigest(), len(data), len(data))
        kind = content_type or DEFAULT_CONTENT_TYPE
        await self._put_from_loop(BLOB_PREFIX + sha256, data, payload_sha256=sha256, kind=kind)
        return BlobInfo(sha256, len(data), kind)

    async def _put_from_loop(
        self, key: str, data: bytes, *, payload_sha256: str, kind: str
    ) -> None:
        """PutObject through `s3_http.S3Connections`, addressed and signed as the SDK would."""
        for attempt in range(PUT_RETRIES + 1):
            url = self._client._base_url.build(
                method="PUT", region=self.options.region, bucket_name=self.bucket, object_name=key
            )
            date = utcnow()
            headers: DictType = {
                "Host": url.netloc,
                "Content-Type": kind,
                "Content-Length": str(len(data)),
                "x-amz-content-sha256": payload_sha256,
                "x-amz-date": to_amz_date(date),
            }
            signed = sign_v4_s3(
                method="PUT",
                url=url,
                region=self.options.region,
                headers=headers,
                credentials=self._credentials,
                content_sha256=payload_sha256,
                date=date,
            )
            try:
                connections = self._connections_for(url.hostname or "", url.port, url.scheme)
                response = await connections.request("PUT", url, cast(dict[str, str], signed), data)
            except StaleConnection:
                continue  # S3 had closed the idle connection: the next attempt opens a new one
            except (OSError, TimeoutError) as exc:
                raise BlobStoreUnavailable(
                    f"S3 at {self.options.endpoint} unreachable: {exc!r}"
                ) from exc
            if response.status in _RETRY_STATUSES and attempt < PUT_RETRIES:
                await asyncio.sleep(0.2 * 2**attempt)
                continue
            if 200 <= response.status < 300:
                return
            raise _failure(response, self.options.endpoint)
        raise BlobStoreUnavailable(f"S3 at {self.options.endpoint} kept closing connections")

    def _connections_for(self, host: str, port: int | None, scheme: str) -> S3Connections:
        if self._connections is None:
            secure = scheme == "https"
            self._connections = S3Connections(
                host=host,
                port=port or (443 if secure else 80),
                tls=_tls_context() if secure else None,
                connect_timeout=self.options.connect_timeout,
                read_timeout=self.options.read_timeout,
            )
        return self._connections

    async def _remove_staging(self, staging_key: str) -> None:
        try:
            await self._call(self._client.remove_object, self.bucket, staging_key)
        except BlobStoreError:
            pass  # best effort: a put that never reached S3 left nothing to remove

    async def read_range(self, sha256: str, offset: int, length: int) -> AsyncIterator[bytes]:
        if length == 0:
            return
        try:
            response = await self._call(
                self._client.get_object,
                self.bucket,
                BLOB_PREFIX + sha256,
                offset=offset,
                length=length,
            )
        except S3RequestFailed as exc:
            if exc.s3_code in _NOT_FOUND_CODES:
                raise BlobNotFound(sha256) from exc
            raise
        try:
            stream = response.stream(CHUNK_SIZE)
            while (chunk := await self._call(next, stream, None)) is not None:
                yield chunk
        finally:
            await asyncio.to_thread(_release, response)

    async def delete(self, sha256: str) -> None:
        validate_key(sha256)
        await self._call(self._client.remove_object, self.bucket, BLOB_PREFIX + sha256)

    async def keys(self) -> AsyncIterator[str]:
        listing = self._client.list_objects(self.bucket, prefix=BLOB_PREFIX, recursive=True)
        while batch := await self._call(lambda: list(itertools.islice(listing, 1000))):
            for obj in batch:
                yield (obj.object_name or "").removeprefix(BLOB_PREFIX)

    async def staged_keys(self) -> list[str]:
        """Staging objects and unfinished multipart uploads (should be none at rest)."""
        listing = self._client.list_objects(self.bucket, prefix=STAGING_PREFIX, recursive=True)
        objects: list[Object] = await self._call(list, listing)
        # The SDK has no public call for this listing; first page (1000) is enough for diagnostics.
        uploads = await self._call(
            self._client._list_multipart_uploads, self.bucket, prefix=STAGING_PREFIX
        )
        return [obj.object_name or "" for obj in objects] + [
            f"{upload.object_name} (unfinished multipart upload)" for upload in uploads.uploads
        ]

    async def presigned_get_url(
        self, sha256: str, *, expires: timedelta, filename: str | None = None
    ) -> str | None:
        validate_key(sha256)
        headers = None
        if filename:
            headers = {"response-content-disposition": _content_disposition(filename)}
        return await self._call(
            self._signer.presigned_get_object,
            self.bucket,
            BLOB_PREFIX + sha256,
            expires=expires,
            response_headers=headers,
        )

    # --- staged (resumable) uploads -------------------------------------------------------------

    def _split_handle(self, handle: str) -> tuple[str, str]:
        """(object key of the multipart upload, multipart upload id)."""
        if handle.startswith(BLOB_PREFIX):  # "blobs/<sha256>/<multipart id>": at the blob's key
            sha256, _, multipart_id = handle.removeprefix(BLOB_PREFIX).partition("/")
            validate_key(sha256)
            key = BLOB_PREFIX + sha256
        else:  # "<staging id>/<multipart id>": private, copied to the blob's key when verified
            staging_id, _, multipart_id = handle.partition("/")
            key = UPLOADS_PREFIX + validate_staging_id(staging_id)
        if not multipart_id:
            raise BlobStoreError(f"not an S3 staging handle: {handle!r}")
        return key, multipart_id

    def _tail_key(self, handle: str) -> str:
        key, _ = self._split_handle(handle)
        if key.startswith(BLOB_PREFIX):
            # Two devices may stage the same blob at once: the tail is per multipart upload.
            return f"{UPLOADS_PREFIX}{hashlib.sha256(handle.encode()).hexdigest()[:40]}.tail"
        return key + ".tail"

    def staging_blob(self, handle: str) -> str | None:
        key, _ = self._split_handle(handle)
        return key.removeprefix(BLOB_PREFIX) if key.startswith(BLOB_PREFIX) else None

    async def begin_staging(
        self, staging_id: str, *, content_type: str | None = None, sha256: str | None = None
    ) -> str:
        validate_staging_id(staging_id)
        # With the declared hash (the caller verifies the digest before publishing), stage right
        # at the blob's key: a multipart upload is invisible until completed, and completing it
        # there replaces the server-side copy a private staging key needs.
        key = BLOB_PREFIX + validate_key(sha256) if sha256 else UPLOADS_PREFIX + staging_id
        headers = {"Content-Type": content_type or DEFAULT_CONTENT_TYPE}
        multipart_id = await self._call(
            self._client._create_multipart_upload, self.bucket, key, headers
        )
        if sha256:
            return f"{key}/{multipart_id}"
        return f"{staging_id}/{multipart_id}"

    async def stage_part(self, handle: str, number: int, data: bytes) -> StagedPart:
        key, multipart_id = self._split_handle(handle)
        etag = await self._call(
            self._client._upload_part, self.bucket, key, data, None, multipart_id, number
        )
        return StagedPart(number=number, size=len(data), etag=etag)

    async def stage_tail(self, handle: str, data: bytes) -> None:
        await self._call(self._client._put_object, self.bucket, self._tail_key(handle), data)

    async def read_tail(self, handle: str, size: int) -> bytes:
        if size == 0:
            return b""
        tail_key = self._tail_key(handle)

        def fetch() -> bytes:
            response = self._client.get_object(self.bucket, tail_key, offset=0, length=size)
            try:
                return bytes(response.read())
            finally:
                _release(response)

        try:
            data = await self._call(fetch)
        except S3RequestFailed as exc:
            if exc.s3_code in _NOT_FOUND_CODES:
                raise BlobNotFound(f"staged tail of {handle} is missing") from exc
            raise
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
        key, multipart_id = self._split_handle(handle)
        size = sum(part.size for part in parts)
        s3_parts = [Part(part.number, part.etag) for part in parts]
        completed_in_place = False
        try:
            existing = await self.stat(sha256)
            if existing is not None:
                return existing
            if key == BLOB_PREFIX + sha256:
                # Staged at the blob's own key: completing makes it readable, so the digest the
                # caller computed is checked first and a mismatch never completes.
                if digest is None:
                    raise BlobHashMismatch(
                        "bytes staged at the blob's key need the caller's digest to publish"
                    )
                verify_received(sha256, digest, size, size)
                await self._complete(key, multipart_id, s3_parts)
                completed_in_place = bool(s3_parts)  # an empty one was a plain put
                return BlobInfo(sha256, size, content_type or DEFAULT_CONTENT_TYPE)
            if key.startswith(BLOB_PREFIX):
                raise BlobHashMismatch(f"bytes staged for {key} cannot publish as {sha256}")
            # A multipart upload completes only under the key it was created for: assemble it
            # privately, verify (hashing it back unless the caller hashed it while streaming),
            # then copy it server-side under the public key.
            await self._complete(key, multipart_id, s3_parts)
            verify_received(sha256, digest or await self._hash_object(key), size, size)
            await self._call(
                self._client.copy_object,
                self.bucket,
                BLOB_PREFIX + sha256,
                CopySource(self.bucket, key),
            )
            return BlobInfo(sha256, size, content_type or DEFAULT_CONTENT_TYPE)
        finally:
            # Completed in place, the multipart upload is the blob now: only a tail may be left.
            await self._discard(handle, multipart_done=completed_in_place)

    async def _complete(self, key: str, multipart_id: str, parts: list[Part]) -> None:
        if not parts:  # S3 refuses an empty multipart upload; an empty blob is a plain put
            await self._call(self._client._put_object, self.bucket, key, b"")
            return
        await self._call(
            self._client._complete_multipart_upload, self.bucket, key, multipart_id, parts
        )

    async def _hash_object(self, key: str) -> str:
        response = await self._call(self._client.get_object, self.bucket, key)
        hasher = hashlib.sha256()
        try:
            stream = response.stream(CHUNK_SIZE)
            while (chunk := await self._call(next, stream, None)) is not None:
                hasher.update(chunk)
        finally:
            await asyncio.to_thread(_release, response)
        return hasher.hexdigest()

    async def discard_staged(self, handle: str) -> None:
        await self._discard(handle, multipart_done=False)

    async def _discard(self, handle: str, *, multipart_done: bool) -> None:
        key, multipart_id = self._split_handle(handle)
        cleanup: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        if not multipart_done:
            cleanup.append((self._client._abort_multipart_upload, (self.bucket, key, multipart_id)))
        cleanup.append((self._client.remove_object, (self.bucket, self._tail_key(handle))))
        if not key.startswith(BLOB_PREFIX):  # a completed private object; never the blob itself
            cleanup.append((self._client.remove_object, (self.bucket, key)))
        for call, args in cleanup:
            try:
                await self._call(call, *args)
            except S3RequestFailed as exc:
                if exc.s3_code not in _NOT_FOUND_CODES | {"NoSuchUpload"}:
                    raise

    async def staging_handles(self) -> AsyncIterator[str]:
        handles: set[str] = set()
        for prefix in (UPLOADS_PREFIX, BLOB_PREFIX):
            uploads = await self._call(
                self._client._list_multipart_uploads, self.bucket, prefix=prefix
            )
            for upload in uploads.uploads:
                name = upload.object_name or ""
                if prefix == BLOB_PREFIX:
                    handles.add(f"{name}/{upload.upload_id}")
                else:
                    handles.add(f"{name.removeprefix(UPLOADS_PREFIX)}/{upload.upload_id}")
        for handle in sorted(handles):
            yield handle


class _ChunkReader:
    """A blocking file-like view of an async byte stream, read by the SDK in a worker thread.

    Each read pulls the next chunk from the event loop on demand, so at most one caller chunk is
    held here; the digest and byte count are computed as the SDK reads.
    """

    def __init__(
        self,
        chunks: AsyncIterable[bytes],
        loop: asyncio.AbstractEventLoop,
        size: int | None,
    ) -> None:
        self._chunks = aiter(chunks)
        self._loop = loop
        self._size = size
        self._pending = b""
        self._eof = False
        self._aborted = False
        self._waiting: concurrent.futures.Future[bytes | None] | None = None
        self._lock = threading.Lock()  # so abort() cannot slip between the check and the wait
        self._hasher = hashlib.sha256()
        self.received = 0

    def abort(self) -> None:
        """Make the SDK's next or current read fail, so its thread stops and aborts the upload."""
        with self._lock:
            self._aborted = True
            if self._waiting is not None:
                self._waiting.cancel()

    def hexdigest(self) -> str:
        return self._hasher.hexdigest()

    async def _next_chunk(self) -> bytes | None:
        try:
            return await anext(self._chunks)
        except StopAsyncIteration:
            return None

    def read(self, n: int = -1) -> bytes:
        # An empty chunk from the caller must not look like end of stream to the SDK.
        while not self._pending and not self._eof:
            with self._lock:
                if self._aborted:
                    raise BlobStoreError("put cancelled")
                future = asyncio.run_coroutine_threadsafe(self._next_chunk(), self._loop)
                self._waiting = future
            try:
                chunk = future.result()
            except concurrent.futures.CancelledError:
                raise BlobStoreError("put cancelled") from None
            if chunk is None:
                self._eof = True
            else:
                self._hasher.update(chunk)
                self.received += len(chunk)
                if self._size is not None and self.received > self._size:
                    raise BlobHashMismatch(f"more than the declared {self._size} bytes received")
                self._pending = chunk
        if n < 0 or n >= len(self._pending):
            data, self._pending = self._pending, b""
        else:
            data, self._pending = self._pending[:n], self._pending[n:]
        return data


def _failure(response: Response, endpoint: str) -> BlobStoreError:
    """A refused PUT as the SDK's calls are translated (`S3BlobStore._call`): S3's error code
    when it sent one, else unavailable for a 5xx."""
    code = message = ""
    if response.body:
        try:
            root = ElementTree.fromstring(response.body)
            code = root.findtext("Code") or ""
            message = root.findtext("Message") or ""
        except ElementTree.ParseError:
            pass
    if code:
        return S3RequestFailed(code, message)
    if response.status >= 500:
        return BlobStoreUnavailable(f"S3 at {endpoint} answered HTTP {response.status}")
    return S3RequestFailed(f"HTTP{response.status}", response.body[:200].decode("latin-1"))


def _tls_context() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=os.environ.get("SSL_CERT_FILE") or certifi.where())


def _minio(options: S3Options, read_timeout: float) -> Minio:
    return Minio(
        options.endpoint,
        access_key=options.access_key,
        secret_key=options.secret_key,
        secure=options.secure,
        region=options.region,
        http_client=_http_client(options, read_timeout),
    )


def _http_client(options: S3Options, read_timeout: float) -> urllib3.PoolManager:
    # Few retries and a short connect timeout: an outage surfaces in seconds, not minutes.
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=options.connect_timeout, read=read_timeout),
        maxsize=10,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=urllib3.Retry(
            total=2, read=0, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]
        ),
    )


def _split_endpoint(endpoint: str, secure: bool) -> tuple[bool, str]:
    """Accept `host:port` or a full `http(s)://host:port` (a TLS proxy in front of S3)."""
    if endpoint.startswith("https://"):
        return True, endpoint.removeprefix("https://").rstrip("/")
    if endpoint.startswith("http://"):
        return False, endpoint.removeprefix("http://").rstrip("/")
    return secure, endpoint


def _content_disposition(filename: str) -> str:
    ascii_fallback = (
        filename.encode("ascii", "replace").decode().replace('"', "_").replace("?", "_")
    )
    return f"attachment; filename=\"{ascii_fallback}\"; filename*=UTF-8''{quote(filename)}"


def _release(response: Any) -> None:
    response.close()
    response.release_conn()
