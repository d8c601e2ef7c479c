"""Upload fixtures: the app on the local store (both databases) and on the real S3 server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from litestar import Litestar

from server.app import create_app
from server.blobstore_s3 import S3BlobStore
from tests.conftest import Backend
from tests.fixtures.s3 import S3Server
from tests.helpers import Api, Session
from tests.integration.blobstore.helpers import s3_options, unique_bucket
from tests.integration.uploads.helpers import Tus


@pytest.fixture
async def s3_store(s3_server: S3Server) -> S3BlobStore:
    store = S3BlobStore(unique_bucket(), s3_options(s3_server))
    await store.ensure_ready()
    return store


@pytest.fixture
def s3_app(db: Backend, s3_store: S3BlobStore) -> Litestar:
    return create_app(db.settings, engine=db.engine, blob_store=s3_store)


def asgi_client(app: Litestar) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("10.9.9.9", 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://fieldsync.test")


@pytest.fixture
async def s3_http(s3_app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(s3_app) as http:
        yield http


@pytest.fixture
async def worker(api: Api) -> Session:
    """An outreach worker of Hoan Kiem (the default ward of Api.create_user)."""
    return await api.user_session("outreach")


@pytest.fixture
def tus(client: httpx.AsyncClient, worker: Session) -> Tus:
    return Tus(client, worker.headers)


def app_store(app: Litestar) -> Any:
    return app.state.blob_store
