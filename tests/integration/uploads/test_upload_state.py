"""Per-process upload state stays bounded: only uploads in use hold a lock or live state."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime, timedelta

from litestar import Litestar

from server.db.tables_blobs import Upload
from server.services.uploads import UploadRuntime
from tests.conftest import Backend
from tests.helpers import Api, Session, assert_problem
from tests.integration.uploads.conftest import asgi_client, process_app
from tests.integration.uploads.helpers import Tus, png, sha256_hex


def fresh_app(db: Backend, runtime: UploadRuntime) -> Litestar:
    """The app with a runtime of its own (the shared test app's runtime is shared by every test)."""
    return process_app(db, db.app.state.blob_store, runtime=runtime)


async def test_requests_for_unknown_or_foreign_uploads_leave_no_state(
    db: Backend, worker: Session, api: Api
) -> None:
    runtime = UploadRuntime()
    stranger = await api.user_session("outreach")
    async with asgi_client(fresh_app(db, runtime)) as http:
        owner = Tus(http, worker.headers)
        data = png(4000)
        foreign = (await owner.create(len(data), sha256_hex(data))).headers["location"]
        probe = Tus(http, stranger.headers)
        locations = [f"/api/v1/uploads/{secrets.token_hex(16)}" for _ in range(40)] + [foreign]
        heads, answers = [], []
        for location in locations:
            head, *rest = await asyncio.gather(
                probe.head(location),
                probe.patch(location, 0, b"x" * 10),
                http.delete(location, headers=probe.headers()),
            )
            heads.append(head.status_code)
            answers += rest

    assert set(heads) == {404}  # HEAD answers carry no body
    for answer in answers:
        assert_problem(answer, 404, "upload_not_found")
    assert runtime.locks == {}
    assert runtime.live == {}


async def test_completed_deleted_and_expired_uploads_leave_no_state(
    db: Backend, worker: Session
) -> None:
    runtime = UploadRuntime()
    async with asgi_client(fresh_app(db, runtime)) as http:
        tus = Tus(http, worker.headers)
        completed, deleted, expired = png(3000), png(3000), png(3000)
        await tus.upload(completed, chunk=1000)
        locations = []
        for data in (deleted, expired):
            location = (await tus.create(len(data), sha256_hex(data))).headers["location"]
            assert (await tus.patch(location, 0, data[:1000])).status_code == 204
            locations.append(location)
        assert len(runtime.live) == 2  # the two unfinished ones, mid-way
        assert (await http.delete(locations[0], headers=tus.headers())).status_code == 204
        await (
            Upload.update({Upload.expires_at: datetime.now(UTC) - timedelta(seconds=1)})
            .where(Upload.id == locations[1].rsplit("/", 1)[1])
            .run()
        )
        assert (await tus.head(locations[1])).status_code == 410

    assert runtime.locks == {}
    assert runtime.live == {}


async def test_an_abandoned_upload_is_dropped_once_it_expired(db: Backend, worker: Session) -> None:
    runtime = UploadRuntime(expiry=timedelta(milliseconds=200))
    async with asgi_client(fresh_app(db, runtime)) as http:
        tus = Tus(http, worker.headers)
        abandoned, later = png(3000), png(3000)
        location = (await tus.create(len(abandoned), sha256_hex(abandoned))).headers["location"]
        assert (await tus.patch(location, 0, abandoned[:1000])).status_code == 204
        assert list(runtime.live) == [location.rsplit("/", 1)[1]]
        await asyncio.sleep(0.3)  # nobody comes back for it

        next_one = (await tus.create(len(later), sha256_hex(later))).headers["location"]
        assert (await tus.patch(next_one, 0, later[:1000])).status_code == 204

    assert list(runtime.live) == [next_one.rsplit("/", 1)[1]]
    assert runtime.locks == {}
