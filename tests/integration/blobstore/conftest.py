"""Blob store fixtures: each contract test runs against the local directory and a real S3 server."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.blobstores import open_blob_store
from sync.blobs import BlobStore
from tests.fixtures.s3 import S3Server
from tests.integration.blobstore.helpers import s3_options, unique_bucket


@pytest.fixture(params=["local", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "local":
        blob_store = open_blob_store(f"local:{tmp_path / 'blobs'}", s3=None)
    else:
        server: S3Server = request.getfixturevalue("s3_server")
        blob_store = open_blob_store(f"s3://{unique_bucket()}", s3=s3_options(server))
    await blob_store.ensure_ready()
    return blob_store
