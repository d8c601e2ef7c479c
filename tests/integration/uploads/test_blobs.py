"""Downloads only for who may see a referencing submission; check, status, and garbage collection."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from server.blobstores.s3 import S3BlobStore
from server.db.tables_blobs import Blob, Upload
from server.db.tables_sync import Submission, SubmissionAttachment
from server.services.blobs import attachment_status, collect_garbage
from server.services.uploads import UploadRuntime
from server.services.uploads.hashing import Sha256Hashing
from tests.conftest import Backend, make_settings
from tests.helpers import BA_DINH, HOAN_KIEM, Api, Session, assert_problem
from tests.integration.uploads.conftest import asgi_client, process_app
from tests.integration.uploads.helpers import (
    MiB,
    Tus,
    blob_row,
    png,
    read_blob,
    sha256_hex,
    staging_left,
    upload_row,
)


async def reference(
    sha256: str, ward_code: str, instance_id: str | None = None, *, pusher: str
) -> str:
    """An accepted submission of `pusher` and its attachment row, as push writes them."""
    if instance_id is None:
        instance_id = f"uuid:{uuid.uuid4()}"
        await Submission.insert(
            Submission(
                id=str(uuid.uuid4()),
                instance_id=instance_id,
                form_id="inspection",
                form_version="2026010101",
                status="accepted",
                ward_code=ward_code,
                user_id=pusher,
                device_id=str(uuid.uuid4()),
                hlc="",
                captured_at=datetime.now(UTC),
                content_hash="",
                data={},
            )
        ).run()
    await SubmissionAttachment.insert(
        SubmissionAttachment(
            instance_id=instance_id,
            sha256=sha256,
            name="photo.png",
            size=1,
            content_type="image/png",
            ward_code=ward_code,
        )
    ).run()
    return instance_id


async def test_download_is_for_the_uploader_and_those_who_see_a_reference(
    tus: Tus, api: Api, client: httpx.AsyncClient, worker: Session
) -> None:
    data = png(300_000)
    sha = sha256_hex(data)
    await tus.upload(data)
    colleague = await api.user_session("supervisor", [HOAN_KIEM])
    other_ward = await api.user_session("outreach", [BA_DINH])
    city = await api.user_session("viewer", ["*"])
    url = f"/api/v1/blobs/{sha}"

    own = await client.get(url, headers=tus.token_headers)
    assert own.status_code == 200
    assert own.content == data
    assert own.headers["content-type"] == "image/png"
    assert_problem(await client.get(url, headers=colleague.headers), 404, "blob_not_found")

    await reference(sha, HOAN_KIEM, pusher=worker.user["id"])

    assert (await client.get(url, headers=colleague.headers)).content == data
    assert (await client.get(url, headers=city.headers)).content == data
    hidden = await client.get(url, headers=other_ward.headers)
    unknown = await client.get(f"/api/v1/blobs/{'0' * 64}", headers=other_ward.headers)
    assert_problem(hidden, 404, "blob_not_found")
    assert hidden.json() == unknown.json()  # existence is not revealed
    assert_problem(await client.get(url), 401, "token_missing")


async def test_local_download_honours_range(tus: Tus, client: httpx.AsyncClient) -> None:
    data = png(2 * MiB + 17)
    sha = sha256_hex(data)
    await tus.upload(data)
    url = f"/api/v1/blobs/{sha}"

    middle = await client.get(url, headers={**tus.token_headers, "Range": "bytes=1000-1999"})
    suffix = await client.get(url, headers={**tus.token_headers, "Range": "bytes=-10"})
    beyond = await client.get(url, headers={**tus.token_headers, "Range": f"bytes={len(data)}-"})

    assert middle.status_code == 206
    assert middle.content == data[1000:2000]
    assert middle.headers["content-range"] == f"bytes 1000-1999/{len(data)}"
    assert suffix.content == data[-10:]
    assert_problem(beyond, 416, "range_not_satisfiable")
    assert beyond.headers["content-range"] == f"bytes */{len(data)}"


async def test_check_lists_what_is_missing(tus: Tus, client: httpx.AsyncClient) -> None:
    data = png(5000)
    await tus.upload(data)
    absent = sha256_hex(b"not uploaded yet")

    response = await client.post(
        "/api/v1/blobs/check",
        json={"sha256": [sha256_hex(data), absent, absent]},
        headers=tus.token_headers,
    )
    bad = await client.post(
        "/api/v1/blobs/check", json={"sha256": ["NOT-HEX"]}, headers=tus.token_headers
    )

    assert response.status_code == 200
    assert response.json() == {"missing": [absent]}
    assert_problem(bad, 400, "validation_failed")


async def test_attachment_status_counts_received_files(
    tus: Tus, db: Backend, worker: Session
) -> None:
    files = [png(3000), png(4000), png(5000)]
    instance = await reference(sha256_hex(files[0]), HOAN_KIEM, pusher=worker.user["id"])
    for data in files[1:]:
        await reference(sha256_hex(data), HOAN_KIEM, instance, pusher=worker.user["id"])
    await tus.upload(files[0])
    await tus.upload(files[2])

    status = await attachment_status(instance)

    assert (status.expected, status.received) == (3, 2)
    assert status.missing == [sha256_hex(files[1])]


async def test_gc_removes_unreferenced_old_blobs_and_abandoned_uploads(
    tus: Tus, db: Backend, worker: Session
) -> None:
    store = db.app.state.blob_store
    kept, dropped = png(3000), png(3000)
    await tus.upload(kept)
    await tus.upload(dropped)
    await reference(sha256_hex(kept), HOAN_KIEM, pusher=worker.user["id"])
    abandoned = png(6 * MiB)
    location = (await tus.create(len(abandoned), sha256_hex(abandoned))).headers["location"]
    await tus.patch(location, 0, abandoned[: 5 * MiB + 1])
    later = datetime.now(UTC) + timedelta(days=10)

    plan = await collect_garbage(store, grace=timedelta(hours=1), dry_run=True, now=later)
    assert sha256_hex(dropped) in plan.blobs
    assert sha256_hex(kept) not in plan.blobs
    assert location.rsplit("/", 1)[1] in plan.uploads
    assert await store.exists(sha256_hex(dropped))  # a dry run removes nothing

    await collect_garbage(store, grace=timedelta(hours=1), dry_run=False, now=later)

    assert not await store.exists(sha256_hex(dropped))
    assert await blob_row(sha256_hex(dropped)) is None
    assert await read_blob(store, sha256_hex(kept)) == kept
    assert await staging_left(store, location, sha256s=(sha256_hex(abandoned),)) == []


async def test_gc_keeps_recent_blobs(tus: Tus, db: Backend) -> None:
    data = png(2000)
    await tus.upload(data)

    plan = await collect_garbage(db.app.state.blob_store, grace=timedelta(hours=1), dry_run=True)

    assert sha256_hex(data) not in plan.blobs


# --- on the real S3 server ---------------------------------------------------------------------


def without_libcrypto(db: Backend) -> UploadRuntime:
    """A server process where libcrypto's SHA256_* API is not reachable: no savable hash."""
    return UploadRuntime(expiry=db.settings.upload_expiry, hashing=Sha256Hashing(libcrypto=None))


async def staged_by_one_process(
    db: Backend,
    store: S3BlobStore,
    worker: Session,
    data: bytes,
    first: int,
    runtime: UploadRuntime | None = None,
) -> str:
    """Create the upload and send its first `first` bytes from a server process that then stops;
    return its location."""
    async with asgi_client(process_app(db, store, runtime=runtime)) as h:
        tus = Tus(h, worker.headers)
        location = (await tus.create(len(data), sha256_hex(data))).headers["location"]
        assert (await tus.patch(location, 0, data[:first])).status_code == 204
    return location


async def test_s3_upload_redirects_to_a_presigned_url_that_expires(
    db: Backend, s3_store: S3BlobStore, worker: Session, tmp_path: Path
) -> None:
    # Long enough for the first fetch on a loaded 2-core machine, short enough to see it expire.
    ttl = 3
    settings = make_settings(tmp_path, db.url, FIELDSYNC_BLOB_URL_TTL_SECONDS=str(ttl))
    app = process_app(db, s3_store, settings)
    async with asgi_client(app) as http:
        tus = Tus(http, worker.headers)
        data = png(300_000)
        sha = sha256_hex(data)
        location = await tus.upload(data)
        assert await staging_left(s3_store, location) == []

        signed_at = time.monotonic()
        response = await http.get(f"/api/v1/blobs/{sha}", headers=worker.headers)

    assert response.status_code == 307
    presigned = response.headers["location"]
    assert f"X-Amz-Expires={ttl}&" in presigned
    async with httpx.AsyncClient() as outside:
        fetched = await outside.get(presigned)
        assert fetched.status_code == 200
        assert sha256_hex(fetched.content) == sha
        await asyncio.sleep(max(0.0, signed_at + ttl + 1.2 - time.monotonic()))
        assert (await outside.get(presigned)).status_code == 403


async def test_s3_wrong_hash_leaves_nothing_readable(
    s3_http: httpx.AsyncClient, s3_store: S3BlobStore, worker: Session, db: Backend
) -> None:
    tus = Tus(s3_http, worker.headers)
    data = png(5 * MiB + 100)
    claimed = sha256_hex(b"a different recording")
    location = (await tus.create(len(data), claimed)).headers["location"]

    response = await tus.patch(location, 0, data)

    assert_problem(response, 422, "blob_hash_mismatch")
    assert not await s3_store.exists(claimed)
    assert await staging_left(s3_store, location) == []
    stored = [key async for key in s3_store.keys()]
    assert claimed not in stored and sha256_hex(data) not in stored
    assert await s3_store.staged_keys() == []


async def test_s3_restart_between_patches_resumes(
    db: Backend, s3_store: S3BlobStore, worker: Session
) -> None:
    data = png(5 * MiB + 64 * 1024 + 3)
    first = 5 * MiB + 32 * 1024  # a part and a tail staged
    location = await staged_by_one_process(db, s3_store, worker, data, first)
    row = await upload_row(location)
    assert row is not None
    # Staged at the blob's own key (the hash state is saved with the row), so completing
    # after the restart needs no copy.
    assert s3_store.staging_blob(str(row["staging"])) == sha256_hex(data)
    async with asgi_client(process_app(db, s3_store)) as h:
        after = Tus(h, worker.headers)
        offset = int((await after.head(location)).headers["upload-offset"])
        response = await after.patch(location, offset, data[offset:])

    assert (offset, response.status_code) == (first, 204)
    assert await read_blob(s3_store, sha256_hex(data)) == data
    assert await Blob.count().where(Blob.sha256 == sha256_hex(data)) == 1
    assert await staging_left(s3_store, location) == []


async def test_s3_without_a_savable_hash_state_stages_privately_and_hashes_back(
    db: Backend, s3_store: S3BlobStore, worker: Session
) -> None:
    # Where libcrypto's SHA256_* API is not reachable, the hash cannot outlive the process: the
    # parts stage under uploads/ and the store hashes them back and copies them at completion.
    data = png(5 * MiB + 70_000)
    first = 5 * MiB + 30_000
    location = await staged_by_one_process(
        db, s3_store, worker, data, first, runtime=without_libcrypto(db)
    )
    row = await upload_row(location)
    assert row is not None and s3_store.staging_blob(str(row["staging"])) is None
    async with asgi_client(process_app(db, s3_store, runtime=without_libcrypto(db))) as h:
        response = await Tus(h, worker.headers).patch(location, first, data[first:])

    assert response.status_code == 204, response.text
    assert await read_blob(s3_store, sha256_hex(data)) == data
    assert await staging_left(s3_store, location) == []


async def test_s3_staged_at_the_blob_key_but_unresumable_hash_starts_over(
    db: Backend, s3_store: S3BlobStore, worker: Session
) -> None:
    # Bytes staged at the blob's key publish only with a digest: a process that cannot resume
    # the saved hash refuses the upload (410) and removes its parts, nothing readable.
    data = png(5 * MiB + 70_000)
    first = 5 * MiB + 30_000
    location = await staged_by_one_process(db, s3_store, worker, data, first)
    async with asgi_client(process_app(db, s3_store, runtime=without_libcrypto(db))) as h:
        response = await Tus(h, worker.headers).patch(location, first, data[first:])

    assert_problem(response, 410, "upload_cannot_resume")
    assert not await s3_store.exists(sha256_hex(data))
    assert await staging_left(s3_store, location) == []


async def test_s3_gc_keeps_staging_at_blob_keys_of_live_uploads_only(
    s3_http: httpx.AsyncClient, s3_store: S3BlobStore, worker: Session
) -> None:
    tus = Tus(s3_http, worker.headers)
    live, abandoned = png(5 * MiB + 10), png(5 * MiB + 10)
    locations = []
    for data in (live, abandoned):
        location = (await tus.create(len(data), sha256_hex(data))).headers["location"]
        assert (await tus.patch(location, 0, data[: 5 * MiB + 1])).status_code == 204
        locations.append(location)
    await (
        Upload.update({Upload.expires_at: datetime.now(UTC) - timedelta(seconds=1)})
        .where(Upload.id == locations[1].rsplit("/", 1)[1])
        .run()
    )
    orphan_sha = sha256_hex(b"staged by a server that died before recording it")
    orphan = await s3_store.begin_staging("orphan-staging", sha256=orphan_sha)

    plan = await collect_garbage(s3_store, grace=timedelta(hours=1), dry_run=False)

    assert orphan in plan.staging
    assert await staging_left(s3_store, locations[0]) != []
    assert await staging_left(s3_store, locations[1], sha256s=(sha256_hex(abandoned),)) == []
    assert await staging_left(s3_store, sha256s=(orphan_sha,)) == []
