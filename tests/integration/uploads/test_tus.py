"""tus 1.0 uploads on the local store, on SQLite and PostgreSQL: verified, resumable, deduplicated."""

from __future__ import annotations

import asyncio
import hashlib
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path

import httpx

from server.db.tables_blobs import Blob, Upload
from sync.blobs import BlobStoreUnavailable
from tests.conftest import Backend, make_settings
from tests.helpers import PASSWORD, Api, Session, assert_problem, login
from tests.integration.uploads.conftest import asgi_client, process_app
from tests.integration.uploads.helpers import (
    PDF_MAGIC,
    PNG_MAGIC,
    TUS,
    HeldParts,
    MiB,
    Tus,
    blob_row,
    checksum_header,
    png,
    read_blob,
    sha256_hex,
    staging_left,
    upload_row,
)


async def test_options_announces_the_protocol(client: httpx.AsyncClient, db: Backend) -> None:
    response = await client.options("/api/v1/uploads")

    assert response.status_code == 204
    assert response.headers["tus-resumable"] == "1.0.0"
    assert response.headers["tus-version"] == "1.0.0"
    extensions = set(response.headers["tus-extension"].split(","))
    assert {"creation", "creation-with-upload", "termination", "checksum"} <= extensions
    assert response.headers["tus-max-size"] == str(db.settings.max_upload_bytes)
    assert set(response.headers["tus-checksum-algorithm"].split(",")) == {"sha256", "sha1"}


async def test_upload_in_uneven_chunks_becomes_a_verified_blob(tus: Tus, db: Backend) -> None:
    # 3 MiB chunks against 5 MiB parts: bytes wait in the tail between PATCHes, a part is cut
    # from the tail and the next bytes, and the last part is the tail and the final bytes.
    data = png(6 * MiB + 4321)
    sha = sha256_hex(data)

    location = await tus.upload(data, chunk=3 * MiB)

    head = await tus.head(location)
    assert head.status_code == 200
    assert head.headers["upload-offset"] == str(len(data))
    assert head.headers["tus-resumable"] == "1.0.0"
    assert head.headers["cache-control"] == "no-store"
    row = await blob_row(sha)
    assert row is not None
    assert (row["size"], row["content_type"]) == (len(data), "image/png")
    store = db.app.state.blob_store
    assert await read_blob(store, sha) == data
    assert await staging_left(store, location) == []


async def test_creation_with_upload_completes_in_one_request(tus: Tus, db: Backend) -> None:
    data = PDF_MAGIC + b"attendance sheet, Hoan Kiem, 12 participants"
    created = await tus.create(len(data), sha256_hex(data), "application/pdf", body=data)

    assert created.status_code == 201, created.text
    assert created.headers["upload-offset"] == str(len(data))
    assert created.headers["location"].startswith("/api/v1/uploads/")
    assert await read_blob(db.app.state.blob_store, sha256_hex(data)) == data


async def test_a_stored_hash_completes_at_creation_without_bytes_for_who_may_read_it(
    tus: Tus, api: Api, worker: Session, db: Backend
) -> None:
    data = png(40_000)
    await tus.upload(data)
    second_device = await login(tus.http, worker.user["username"], PASSWORD)
    stranger = Tus(tus.http, (await api.user_session("outreach")).headers)

    created = await Tus(tus.http, second_device.headers).create(len(data), sha256_hex(data))
    must_send = await stranger.create(len(data), sha256_hex(data))

    assert created.status_code == 201
    assert created.headers["upload-offset"] == str(len(data))
    assert must_send.status_code == 201
    assert must_send.headers["upload-offset"] == "0"  # a hash is not proof of holding the file
    assert await Blob.count().where(Blob.sha256 == sha256_hex(data)) == 1


async def test_same_file_from_two_devices_at_once_is_stored_once(
    tus: Tus, api: Api, db: Backend
) -> None:
    data = png(6 * MiB)
    second = Tus(tus.http, (await api.user_session("outreach")).headers)

    locations = await asyncio.gather(tus.upload(data, chunk=MiB), second.upload(data, chunk=MiB))

    for location in locations:
        row = await upload_row(location)
        assert row is not None and row["state"] == "done"
    assert await Blob.count().where(Blob.sha256 == sha256_hex(data)) == 1
    store = db.app.state.blob_store
    assert await read_blob(store, sha256_hex(data)) == data
    assert await staging_left(store, *locations) == []


async def test_wrong_declared_hash_is_refused_and_nothing_is_readable(
    tus: Tus, db: Backend
) -> None:
    data = png(6 * MiB)
    claimed = sha256_hex(b"some other photo")
    created = await tus.create(len(data), claimed)
    location = created.headers["location"]
    first = await tus.patch(location, 0, data[: 5 * MiB + 10])
    assert first.status_code == 204

    last = await tus.patch(location, int(first.headers["upload-offset"]), data[5 * MiB + 10 :])

    assert_problem(last, 422, "blob_hash_mismatch")
    assert last.headers["tus-resumable"] == "1.0.0"
    assert await blob_row(claimed) is None
    store = db.app.state.blob_store
    assert not await store.exists(claimed)
    assert await staging_left(store, location) == []
    assert (await tus.head(location)).status_code == 410


async def test_chunk_checksum_mismatch_is_460_and_the_chunk_is_not_kept(
    tus: Tus, db: Backend
) -> None:
    data = png(6 * MiB)
    created = await tus.create(len(data), sha256_hex(data))
    location = created.headers["location"]

    wrong = await tus.patch(location, 0, data, checksum=checksum_header("sha256", b"not it"))

    assert_problem(wrong, 460, "checksum_mismatch")
    assert (await tus.head(location)).headers["upload-offset"] == "0"
    assert await blob_row(sha256_hex(data)) is None
    for algorithm, chunk in (("sha1", data[: 5 * MiB + 7]), ("sha256", data[5 * MiB + 7 :])):
        offset = int((await tus.head(location)).headers["upload-offset"])
        right = await tus.patch(location, offset, chunk, checksum=checksum_header(algorithm, chunk))
        assert right.status_code == 204, right.text
    assert await read_blob(db.app.state.blob_store, sha256_hex(data)) == data


async def test_offset_mismatch_is_409_and_changes_nothing(tus: Tus, db: Backend) -> None:
    data = png(100_000)
    location = (await tus.create(len(data), sha256_hex(data))).headers["location"]
    assert (await tus.patch(location, 0, data[:1000])).status_code == 204

    response = await tus.patch(location, 500, data[500:])

    assert_problem(response, 409, "upload_offset_mismatch")
    assert (await tus.head(location)).headers["upload-offset"] == "1000"
    assert await blob_row(sha256_hex(data)) is None


async def test_over_the_size_limit_is_413_before_any_byte(tus: Tus, db: Backend) -> None:
    before = await Upload.count()
    response = await tus.create(db.settings.max_upload_bytes + 1, "a" * 64)

    assert_problem(response, 413, "upload_too_large")
    assert response.headers["tus-resumable"] == "1.0.0"
    assert await Upload.count() == before


async def test_more_bytes_than_declared_are_refused(tus: Tus, db: Backend) -> None:
    data = png(1000)
    location = (await tus.create(len(data), sha256_hex(data))).headers["location"]

    response = await tus.patch(location, 0, data + b"extra")

    assert_problem(response, 413, "upload_length_exceeded")
    assert await blob_row(sha256_hex(data)) is None


async def test_types_outside_the_allowed_list_are_415(tus: Tus) -> None:
    response = await tus.create(100, "b" * 64, content_type="application/x-msdownload")
    assert_problem(response, 415, "content_type_not_allowed")


async def test_bytes_that_are_not_the_declared_type_are_415(tus: Tus, db: Backend) -> None:
    data = png(2000)
    created = await tus.create(len(data), sha256_hex(data), content_type="image/jpeg", body=data)

    assert_problem(created, 415, "content_type_mismatch")
    assert await blob_row(sha256_hex(data)) is None
    location = f"/api/v1/uploads/{(await Upload.select(Upload.id).where(Upload.sha256 == sha256_hex(data)).first().run())['id']}"
    assert await staging_left(db.app.state.blob_store, location) == []


async def test_too_many_unfinished_uploads_is_429(tus: Tus, db: Backend) -> None:
    for i in range(db.settings.max_active_uploads_per_user):
        assert (await tus.create(1000, sha256_hex(str(i).encode()))).status_code == 201

    response = await tus.create(1000, sha256_hex(b"one too many"))

    assert_problem(response, 429, "too_many_uploads")


async def test_patch_to_an_expired_upload_is_410_and_its_parts_are_gone(
    tus: Tus, db: Backend
) -> None:
    data = png(6 * MiB)
    location = (await tus.create(len(data), sha256_hex(data))).headers["location"]
    assert (await tus.patch(location, 0, data[: 5 * MiB + 3])).status_code == 204
    store = db.app.state.blob_store
    assert await staging_left(store, location) != []
    upload_id = location.rsplit("/", 1)[1]
    await (
        Upload.update({Upload.expires_at: datetime.now(UTC) - timedelta(seconds=1)})
        .where(Upload.id == upload_id)
        .run()
    )

    response = await tus.patch(location, 5 * MiB + 3, data[5 * MiB + 3 :])

    assert_problem(response, 410, "upload_expired")
    assert await staging_left(store, location) == []
    assert await blob_row(sha256_hex(data)) is None


async def test_delete_terminates_the_upload(tus: Tus, db: Backend) -> None:
    data = png(6 * MiB)
    location = (await tus.create(len(data), sha256_hex(data))).headers["location"]
    await tus.patch(location, 0, data[: 5 * MiB + 1])

    response = await tus.http.delete(location, headers=tus.headers())

    assert response.status_code == 204
    assert response.headers["tus-resumable"] == "1.0.0"
    assert (await tus.head(location)).status_code == 404
    assert await staging_left(db.app.state.blob_store, location, sha256s=(sha256_hex(data),)) == []


async def test_a_restart_between_two_patches_resumes(db: Backend, worker: Session) -> None:
    data = png(6 * MiB + 99)
    first_app = process_app(db, db.app.state.blob_store)
    async with asgi_client(first_app) as http:
        before = Tus(http, worker.headers)
        location = (await before.create(len(data), sha256_hex(data))).headers["location"]
        cut = 5 * MiB + 5  # a part and a tail staged
        assert (await before.patch(location, 0, data[:cut])).status_code == 204

    restarted = process_app(db, db.app.state.blob_store)
    async with asgi_client(restarted) as http:
        after = Tus(http, worker.headers)
        offset = int((await after.head(location)).headers["upload-offset"])
        assert offset == cut
        response = await after.patch(location, offset, data[offset:])

    assert response.status_code == 204, response.text
    assert response.headers["upload-offset"] == str(len(data))
    assert await read_blob(db.app.state.blob_store, sha256_hex(data)) == data


async def test_tus_requests_need_the_token_and_the_version(
    client: httpx.AsyncClient, tus: Tus, api: Api
) -> None:
    anonymous = await client.post("/api/v1/uploads", headers={**TUS, "Upload-Length": "10"})
    assert_problem(anonymous, 401, "token_missing")
    assert anonymous.headers["tus-resumable"] == "1.0.0"

    no_version = await client.post(
        "/api/v1/uploads", headers={**tus.token_headers, "Upload-Length": "10"}
    )
    assert_problem(no_version, 412, "tus_version_unsupported")


async def test_an_upload_belongs_to_its_creator(tus: Tus, api: Api) -> None:
    data = png(1000)
    location = (await tus.create(len(data), sha256_hex(data))).headers["location"]
    stranger = Tus(tus.http, (await api.user_session("outreach")).headers)

    assert (await stranger.head(location)).status_code == 404
    assert_problem(await stranger.patch(location, 0, data), 404, "upload_not_found")


async def test_patches_ending_on_part_boundaries_resume_at_durable_offsets(
    tus: Tus, db: Backend
) -> None:
    # Each 5 MiB PATCH is answered while its part may still be on its way to the store; HEAD
    # waits for it, so the offset it answers is the one the row holds.
    data = png(3 * 5 * MiB + 10)
    location = (await tus.create(len(data), sha256_hex(data))).headers["location"]
    offset = 0
    for _ in range(3):
        response = await tus.patch(location, offset, data[offset : offset + 5 * MiB])
        assert response.status_code == 204, response.text
        offset = int(response.headers["upload-offset"])
        assert offset % (5 * MiB) == 0
        head = await tus.head(location)
        row = await upload_row(location)
        assert row is not None
        assert int(head.headers["upload-offset"]) == row["received"] == offset

    last = await tus.patch(location, offset, data[offset:])

    assert last.status_code == 204, last.text
    assert await read_blob(db.app.state.blob_store, sha256_hex(data)) == data


async def test_a_part_still_in_flight_when_the_server_stops_is_not_counted(
    db: Backend, worker: Session
) -> None:
    data = png(5 * MiB + 700)
    store = db.app.state.blob_store
    held = HeldParts(store)
    stopping = process_app(db, held)
    async with asgi_client(stopping) as http:
        before = Tus(http, worker.headers)
        location = (await before.create(len(data), sha256_hex(data))).headers["location"]
        answered = await before.patch(location, 0, data[: 5 * MiB])
        assert answered.headers["upload-offset"] == str(5 * MiB)  # received, not yet stored

    restarted = process_app(db, store)
    async with asgi_client(restarted) as http:
        after = Tus(http, worker.headers)
        stale = await after.patch(location, 5 * MiB, data[5 * MiB :])
        offset = int((await after.head(location)).headers["upload-offset"])
        resumed = await after.patch(location, offset, data[offset:])

    assert_problem(stale, 409, "upload_offset_mismatch")
    assert offset == 0
    assert resumed.status_code == 204, resumed.text
    assert await read_blob(store, sha256_hex(data)) == data
    held.failure = RuntimeError("the stopped server's part never arrives")
    held.release.set()
    await stopping.state.upload_runtime.drain()


async def test_a_part_the_store_refuses_fails_the_next_patch_and_is_not_counted(
    db: Backend, worker: Session
) -> None:
    data = png(5 * MiB + 700)
    held = HeldParts(db.app.state.blob_store)
    held.failure = BlobStoreUnavailable("S3 is down")
    held.release.set()
    async with asgi_client(process_app(db, held)) as http:
        tus = Tus(http, worker.headers)
        location = (await tus.create(len(data), sha256_hex(data))).headers["location"]
        assert (await tus.patch(location, 0, data[: 5 * MiB])).status_code == 204

        refused = await tus.patch(location, 5 * MiB, data[5 * MiB :])
        offset = int((await tus.head(location)).headers["upload-offset"])
        held.failure = None
        resumed = await tus.patch(location, offset, data[offset:])

    assert_problem(refused, 503, "blob_store_unavailable")
    assert offset == 0
    assert resumed.status_code == 204, resumed.text
    assert await read_blob(db.app.state.blob_store, sha256_hex(data)) == data


async def test_limits_come_from_the_settings(db: Backend, worker: Session, tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        db.url,
        FIELDSYNC_ALLOWED_CONTENT_TYPES="application/pdf",
        FIELDSYNC_MAX_ACTIVE_UPLOADS_PER_USER="1",
        FIELDSYNC_UPLOAD_EXPIRY_HOURS="2",
    )
    app = process_app(db, db.app.state.blob_store, settings)
    async with asgi_client(app) as http:
        tus = Tus(http, worker.headers)
        photo = await tus.create(100, sha256_hex(b"photo"), content_type="image/png")
        sheet = await tus.create(100, sha256_hex(b"sheet"), content_type="application/pdf")
        another = await tus.create(100, sha256_hex(b"another"), content_type="application/pdf")

    assert_problem(photo, 415, "content_type_not_allowed")
    assert sheet.status_code == 201
    expires = parsedate_to_datetime(sheet.headers["upload-expires"])
    assert timedelta(hours=1) < expires - datetime.now(UTC) <= timedelta(hours=2)
    assert_problem(another, 429, "too_many_uploads")


async def test_one_long_patch_is_staged_in_bounded_memory(tus: Tus, db: Backend) -> None:
    # 64 MiB in one streamed PATCH: parts go to the store as they fill, at most a few at a time.
    size, block = 64 * MiB, 256 * 1024

    def blocks() -> Iterator[bytes]:
        for i in range(size // block):
            data = hashlib.sha256(i.to_bytes(8, "big")).digest() * (block // 32)
            yield PNG_MAGIC + data[len(PNG_MAGIC) :] if i == 0 else data

    hasher = hashlib.sha256()
    for chunk in blocks():
        hasher.update(chunk)

    async def body() -> AsyncIterator[bytes]:
        for chunk in blocks():
            yield chunk

    location = (await tus.create(size, hasher.hexdigest())).headers["location"]
    tracemalloc.start()
    try:
        response = await tus.patch(location, 0, body())  # type: ignore[arg-type]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert response.status_code == 204, response.text
    assert response.headers["upload-offset"] == str(size)
    # About five parts: three in flight, one waiting for them, the one filling; 64 MiB at once
    # would be far over.
    assert peak < 40 * MiB, f"peak {peak / MiB:.1f} MiB"
    assert (await blob_row(hasher.hexdigest())) is not None


async def test_an_empty_file_with_another_hash_is_refused_and_holds_no_slot(tus: Tus) -> None:
    refused = await tus.create(0, sha256_hex(b"not empty"))

    assert_problem(refused, 422, "blob_hash_mismatch")
    assert await Upload.count().where(Upload.sha256 == sha256_hex(b"not empty")) == 0
