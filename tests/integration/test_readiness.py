"""/health/ready names the dependency that is down, and answers 503."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from server.app import create_app
from server.blobstores import S3Options, open_blob_store
from server.blobstores.local import LocalBlobStore
from server.db.engine import create_engine, use_engine
from tests.conftest import Backend, make_settings


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _ready(app: object) -> httpx.Response:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as http:  # type: ignore[arg-type]
        return await http.get("/health/ready")


async def test_blob_store_down(db: Backend) -> None:
    store = open_blob_store(
        "s3://fieldsync",
        s3=S3Options(endpoint=f"127.0.0.1:{_closed_port()}", access_key="k", secret_key="s" * 20),
    )
    response = await _ready(create_app(db.settings, engine=db.engine, blob_store=store))
    assert response.status_code == 503 and response.headers["retry-after"]
    assert response.json() == {
        "status": "unavailable",
        "checks": {"database": "ok", "blob_store": "unavailable"},
    }


@pytest.mark.filterwarnings("ignore:.*Unable to fetch server version")
async def test_database_down(db: Backend, tmp_path: Path) -> None:
    url = f"postgresql://postgres@127.0.0.1:{_closed_port()}/nothing"
    engine = create_engine(url)
    store = LocalBlobStore(tmp_path / "blobs")
    await store.ensure_ready()
    app = create_app(make_settings(tmp_path, url), engine=engine, blob_store=store)
    use_engine(engine)
    try:
        response = await _ready(app)
    finally:
        use_engine(db.engine)
    assert response.status_code == 503
    assert response.json()["checks"] == {"database": "unavailable", "blob_store": "ok"}
    assert "127.0.0.1" not in response.text


@pytest.mark.filterwarnings("ignore:.*Unable to fetch server version")
async def test_push_while_database_is_down_is_503_with_retry_after(
    db: Backend, tmp_path: Path
) -> None:
    url = f"postgresql://postgres@127.0.0.1:{_closed_port()}/nothing"
    engine = create_engine(url)
    store = LocalBlobStore(tmp_path / "blobs")
    app = create_app(make_settings(tmp_path, url), engine=engine, blob_store=store)
    use_engine(engine)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as http:
            response = await http.post(
                "/api/v1/sync/push",
                json={
                    "protocol": 1,
                    "device_id": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
                    "ops": [],
                },
                headers={"Authorization": "Bearer " + _token(db)},
            )
    finally:
        use_engine(db.engine)
    assert response.status_code == 503 and int(response.headers["retry-after"]) > 0
    body = response.json()
    assert body["code"] == "database_unavailable" and "127.0.0.1" not in response.text


def _token(db: Backend) -> str:
    from datetime import timedelta

    from server.auth import issue_access_token

    return issue_access_token(
        secret=db.settings.secret_key,
        user_id="00000000-0000-0000-0000-000000000001",
        role="inspector",
        device_id="0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
        lifetime=timedelta(minutes=5),
    )
