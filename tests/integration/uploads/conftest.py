"""Upload fixtures: the app on the local store (both databases) and on the real S3 server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from litestar import Litestar

from server.app import create_app
from server.blobstores.s3 import S3BlobStore
from server.services.uploads import UploadRuntime
from server.settings import Settings
from sync.blobs import BlobStore
from tests.conftest import Backend
from tests.fixtures.s3 import S3Server
from tests.helpers import Api, Session
from tests.integration.blobstore.helpers import s3_options, unique_bucket
from tests.integration.uploads.helpers import Tus


@pytest.fixture(scope="session")
async def s3_store(s3_server: S3Server) -> S3BlobStore:
    """One bucket for this package's S3 tests: weed allocates a new bucket's volumes on its first
    write (about a second), so tests look only at the keys and staging areas they made."""
    store = S3BlobStore(unique_bucket(), s3_options(s3_server))
    await store.ensure_ready()
    return store


def process_app(
    db: Backend,
    store: BlobStore,
    settings: Settings | None = None,
    runtime: UploadRuntime | None = None,
) -> Litestar:
    """The app as one server process runs it: upload state of its own (a restart is a new app)."""
    settings = settings or db.settings
    runtime = runtime or UploadRuntime.from_settings(settings)
    return create_app(settings, engine=db.engine, blob_store=store, upload_runtime=runtime)


@pytest.fixture
def s3_app(db: Backend, s3_store: S3BlobStore) -> Litestar:
    return process_app(db, s3_store)


def asgi_client(app: Litestar) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("10.9.9.9", 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://fieldsync.test")


@pytest.fixture
async def s3_http(s3_app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(s3_app) as http:
        yield http


@pytest.fixture
async def worker(api: Api) -> Session:
    """An outreach worker of Hoan Kiem (the default ward of Api.create_user), new for each test,
    so the per-user limit on unfinished uploads starts at zero."""
    return await api.user_session("outreach")


@pytest.fixture
def tus(client: httpx.AsyncClient, worker: Session) -> Tus:
    return Tus(client, worker.headers)


def app_store(app: Litestar) -> Any:
    return app.state.blob_store
