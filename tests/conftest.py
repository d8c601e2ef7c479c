"""Shared fixtures: every database test runs on SQLite and on a throwaway PostgreSQL database.

PostgreSQL is the machine's server (FIELDSYNC_TEST_PG_URL, default postgres@127.0.0.1:5432). When
it is unreachable the postgres half is skipped with the reason printed, unless
FIELDSYNC_TEST_REQUIRE_PG=1 (set by .ci/run), which turns that into a failure.
"""

from __future__ import annotations

import asyncio
import os
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from argon2 import PasswordHasher, profiles
from hypothesis import settings as hypothesis_settings
from litestar import Litestar
from piccolo.engine.base import Engine

from server.app import create_app
from server.auth import use_password_hasher
from server.blobstores.local import LocalBlobStore
from server.bootstrap import ensure_first_admin
from server.db.engine import close_engine, create_engine, open_engine, use_engine
from server.db.migrate import migrate
from server.services.forms import publish_templates
from server.services.uploads import UploadRuntime
from server.services.wards import seed_wards
from server.settings import Settings, load_settings
from tests.helpers import ADMIN_PASSWORD, ADMIN_USERNAME, Api

pytest_plugins = ["tests.fixtures.s3"]

# Logins and new users cost an argon2 hash each; the suite makes hundreds, at the cheapest
# parameters (servers started as subprocesses keep the real ones).
use_password_hasher(PasswordHasher.from_parameters(profiles.CHEAPEST))

PG_ADMIN_URL = os.environ.get(
    "FIELDSYNC_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REQUIRE_PG = os.environ.get("FIELDSYNC_TEST_REQUIRE_PG") == "1"
# A strong key: production settings refuse repetitive ones (tests run with the default FIELDSYNC_ENV).
TEST_SECRET = "Vt7nQ2xLk9Rb4sWz1Hc8JmYd3FgP6aEu0oNiKqTr5lBw"

# CI runs the property tests on Hypothesis's fixed examples, so a submission fails only for what it
# changed; everywhere else they explore (and a failure found there is kept in .hypothesis/).
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")


@dataclass
class Backend:
    name: str
    url: str
    engine: Engine
    settings: Settings
    app: Litestar


def pg_admin(sql: str) -> None:
    """Run one statement (CREATE/DROP DATABASE) on the PostgreSQL server's admin database."""

    async def run_sql() -> None:
        conn = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    # Its own thread and loop: callers run inside the session's running loop.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, run_sql()).result()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh database for this session, dropped at the end. Sync on purpose: the async `backend`
    fixture asks for it through getfixturevalue, which cannot await."""
    name = f"fieldsync_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        pg_admin(f'CREATE DATABASE "{name}"')
    except (OSError, asyncpg.PostgresError) as exc:
        reason = f"PostgreSQL unreachable at {PG_ADMIN_URL}: {exc!r}"
        if REQUIRE_PG:
            pytest.fail(reason + " (FIELDSYNC_TEST_REQUIRE_PG=1)")
        pytest.skip(reason)
    yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
async def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Backend]:
    data_dir = tmp_path_factory.mktemp(f"data-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{data_dir / 'fieldsync.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    settings = make_settings(data_dir, url)
    engine = create_engine(url)
    use_engine(engine)
    await open_engine(engine, pool_size=10)
    await migrate()
    await seed_wards()
    await publish_templates()

    await ensure_first_admin(settings)
    blob_store = LocalBlobStore(data_dir / "blobs")
    await blob_store.ensure_ready()
    app = create_app(
        settings,
        engine=engine,
        blob_store=blob_store,
        upload_runtime=UploadRuntime.from_settings(settings),
    )
    yield Backend(request.param, url, engine, settings, app)
    await close_engine(engine)


def make_settings(data_dir: Path, database_url: str, **extra: str) -> Settings:
    env = {
        "FIELDSYNC_DATA_DIR": str(data_dir),
        "FIELDSYNC_DATABASE_URL": database_url,
        "FIELDSYNC_SECRET_KEY": TEST_SECRET,
        "FIELDSYNC_ADMIN_USERNAME": ADMIN_USERNAME,
        "FIELDSYNC_ADMIN_PASSWORD": ADMIN_PASSWORD,
        **extra,
    }
    return load_settings(env)


@pytest.fixture
def db(backend: Backend) -> Backend:
    """Bind the tables to this test's backend (tests of both backends share one process)."""
    use_engine(backend.engine)
    return backend


@pytest.fixture
async def client(db: Backend) -> AsyncIterator[httpx.AsyncClient]:
    # Each test calls from its own address so per-address login throttling never leaks between tests.
    address = f"10.{random.randint(0, 255)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
    transport = httpx.ASGITransport(app=db.app, client=(address, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://fieldsync.test") as http:
        yield http


@pytest.fixture
async def api(client: httpx.AsyncClient, db: Backend) -> Api:
    """An admin-authenticated API helper."""
    return await Api.as_admin(client, db.settings)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def pytest_report_header(config: Any) -> list[str]:
    return [f"postgres: {PG_ADMIN_URL} (required: {REQUIRE_PG})"]


@pytest.fixture(scope="session")
def repo_root() -> Iterator[Path]:
    yield Path(__file__).resolve().parent.parent
