"""Upload fixtures: the app on the local store (both databases) and on the real S3 server."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from litestar import Litestar

from server.app import create_app
from server.blobstores.s3 import S3BlobStore
from server.db.tables_blobs import Upload
from server.services.uploads import UploadRuntime
from server.settings import Settings
from sync.blobs import BlobStore
from tests.conftest import Backend
from tests.fixtures.s3 import S3Server
from tests.helpers import ADMIN_PASSWORD, ADMIN_USERNAME, Api, Session, login
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


# Logins and new users each run argon2 (a few tenths of a second): the admin's and the worker's
# sessions are made once per database and shared by this package's tests.
_SESSIONS: dict[tuple[str, str], tuple[float, Session]] = {}
_REUSE_FOR_SECONDS = 600.0  # access tokens live 15 minutes


async def _shared(db: Backend, who: str, make: Callable[[], Awaitable[Session]]) -> Session:
    made = _SESSIONS.get((db.name, who))
    if made is None or time.monotonic() - made[0] > _REUSE_FOR_SECONDS:
        made = (time.monotonic(), await make())
        _SESSIONS[(db.name, who)] = made
    return made[1]


@pytest.fixture
async def api(client: httpx.AsyncClient, db: Backend) -> Api:
    """The admin helper of tests/conftest.py, on a shared admin session."""
    admin = await _shared(db, "admin", lambda: login(client, ADMIN_USERNAME, ADMIN_PASSWORD))
    return Api(client, db.settings, admin)


@pytest.fixture
async def worker(api: Api, db: Backend) -> Session:
    """An outreach worker of Hoan Kiem (the default ward of Api.create_user), shared by the tests
    of one database; each test starts with none of its uploads unfinished (the per-user limit
    counts them), the ones earlier tests left behind marked expired."""
    session = await _shared(db, "worker", lambda: api.user_session("outreach"))
    await (
        Upload.update({Upload.state: "expired"})
        .where((Upload.user_id == session.user["id"]) & (Upload.state == "active"))
        .run()
    )
    return session


@pytest.fixture
def tus(client: httpx.AsyncClient, worker: Session) -> Tus:
    return Tus(client, worker.headers)


def app_store(app: Litestar) -> Any:
    return app.state.blob_store
