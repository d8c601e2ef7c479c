"""The blob stores (`local`, `s3`) and the opener that builds the configured one from
FIELDSYNC_BLOB_STORE (`local:<dir>` or `s3://<bucket>`)."""

from __future__ import annotations

from schemas.errors import ErrorCode
from server.blobstores.local import LocalBlobStore
from server.blobstores.s3 import S3BlobStore, S3Options
from sync.blobs import BlobStore

__all__ = ["S3Options", "open_blob_store"]


class BlobStoreSpecError(ValueError):
    code = ErrorCode.BLOB_STORE_SPEC_INVALID


def open_blob_store(spec: str, *, s3: S3Options | None) -> BlobStore:
    """Return the store for `spec`; no I/O happens until `ensure_ready()`/`check()`."""
    if spec.startswith("local:"):
        root = spec.removeprefix("local:")
        if not root:
            raise BlobStoreSpecError("local: needs a directory, e.g. local:./var/blobs")
        return LocalBlobStore(root)
    if spec.startswith("s3://"):
        bucket = spec.removeprefix("s3://").strip("/")
        if not bucket or "/" in bucket:
            raise BlobStoreSpecError(
                f"s3:// needs a bucket name, e.g. s3://fieldsync, got {spec!r}"
            )
        if s3 is None:
            raise BlobStoreSpecError("s3:// blob store needs S3 options (endpoint and keys)")
        return S3BlobStore(bucket, s3)
    raise BlobStoreSpecError(f"expected local:<dir> or s3://<bucket>, got {spec!r}")
