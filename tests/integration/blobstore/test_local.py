"""What only the local directory store does: its layout, atomic publish and readiness."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.blobstores import BlobStoreSpecError, S3Options, open_blob_store
from server.blobstores.local import LocalBlobStore
from server.blobstores.s3 import S3BlobStore
from sync.blobs import BlobStoreUnavailable
from tests.integration.blobstore.helpers import chunked, read_all, sha256_hex


async def test_blobs_are_fanned_out_by_hash_prefix(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    await store.ensure_ready()
    data = b"photo"
    key = sha256_hex(data)

    await store.put(key, chunked(data), content_type="image/jpeg")

    assert (tmp_path / "blobs" / key[:2] / key).read_bytes() == data
    assert list((tmp_path / "blobs" / ".staging").iterdir()) == []


async def test_a_file_that_is_not_a_blob_is_not_listed(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    await store.ensure_ready()
    data = b"record"
    await store.put(sha256_hex(data), chunked(data))
    (tmp_path / "ab").mkdir(exist_ok=True)
    (tmp_path / "ab" / "notes.txt").write_text("operator notes")

    assert [key async for key in store.keys()] == [sha256_hex(data)]


async def test_check_reports_a_missing_directory_until_ensure_ready(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "not-yet")

    with pytest.raises(BlobStoreUnavailable):
        await store.check()
    await store.ensure_ready()
    await store.check()


async def test_ensure_ready_reports_a_directory_it_cannot_create(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("in the way")
    store = LocalBlobStore(tmp_path / "file" / "blobs")

    with pytest.raises(BlobStoreUnavailable):
        await store.ensure_ready()


async def test_put_creates_the_directory_if_it_was_removed(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    data = b"late start"

    await store.put(sha256_hex(data), chunked(data))

    assert await read_all(await store.open(sha256_hex(data))) == data


async def test_factory_builds_the_configured_store(tmp_path: Path) -> None:
    local = open_blob_store(f"local:{tmp_path}", s3=None)
    s3 = open_blob_store(
        "s3://fieldsync",
        s3=S3Options(endpoint="127.0.0.1:9000", access_key="key", secret_key="secret"),
    )

    assert isinstance(local, LocalBlobStore)
    assert local.root == tmp_path
    assert isinstance(s3, S3BlobStore)
    assert s3.bucket == "fieldsync"


@pytest.mark.parametrize("spec", ["local:", "s3://", "s3://a/b", "ftp://fieldsync", "./var/blobs"])
def test_factory_refuses_a_bad_spec(spec: str) -> None:
    options = S3Options(endpoint="127.0.0.1:9000", access_key="key", secret_key="secret")

    with pytest.raises(BlobStoreSpecError):
        open_blob_store(spec, s3=options)


def test_factory_needs_s3_options_for_an_s3_spec() -> None:
    with pytest.raises(BlobStoreSpecError):
        open_blob_store("s3://fieldsync", s3=None)
