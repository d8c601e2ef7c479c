"""A hash is not a capability: a blob of another ward stays hidden until its bytes are sent."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx

from server.blobstores.s3 import S3BlobStore
from server.db.tables_blobs import Blob
from tests.conftest import Backend
from tests.helpers import BA_DINH, HOAN_KIEM, Api, Session, assert_problem
from tests.integration.sync.helpers import Device
from tests.integration.uploads.helpers import Tus, png, read_blob, sha256_hex, staging_left


def attachment(data: bytes) -> dict[str, Any]:
    return {
        "name": "front.png",
        "sha256": sha256_hex(data),
        "size": len(data),
        "content_type": "image/png",
    }


async def pushed(device: Device, op: dict[str, Any]) -> dict[str, Any]:
    response = await device.push(op)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["results"][0]
    assert result["status"] in ("applied", "duplicate") and result["errors"] == [], result
    return result


async def inspector(api: Api, *wards: str) -> Device:
    return Device(api.http, await api.user_session("inspector", list(wards)))


async def photo_of_hoan_kiem(api: Api, uploads: httpx.AsyncClient | None = None) -> bytes:
    """An inspector of Hoan Kiem uploads a photo and pushes the inspection that references it."""
    owner = await inspector(api, HOAN_KIEM)
    data = png(20_000)
    await Tus(uploads or api.http, owner.headers).upload(data)
    assert (await pushed(owner, owner.inspection(HOAN_KIEM, attachments=[attachment(data)])))[
        "missing_blobs"
    ] == []
    return data


async def check(http: httpx.AsyncClient, session: Session, *sha256s: str) -> list[str]:
    response = await http.post(
        "/api/v1/blobs/check", json={"sha256": list(sha256s)}, headers=session.headers
    )
    assert response.status_code == 200, response.text
    missing: list[str] = response.json()["missing"]
    return missing


async def test_check_answers_missing_for_a_blob_the_caller_may_not_read(api: Api) -> None:
    data = await photo_of_hoan_kiem(api)
    colleague = await api.user_session("supervisor", [HOAN_KIEM])
    elsewhere = await api.user_session("inspector", [BA_DINH])

    assert await check(api.http, colleague, sha256_hex(data)) == []
    assert await check(api.http, elsewhere, sha256_hex(data)) == [sha256_hex(data)]


async def test_a_foreign_hash_in_a_push_grants_nothing_until_its_bytes_are_sent(
    api: Api, db: Backend
) -> None:
    data = await photo_of_hoan_kiem(api)
    sha = sha256_hex(data)
    url = f"/api/v1/blobs/{sha}"
    stored_file = Path(db.app.state.blob_store.root) / sha[:2] / sha
    stored_inode = os.stat(stored_file).st_ino
    guesser = await inspector(api, BA_DINH)
    supervisor = await api.user_session("supervisor", [BA_DINH])
    op = guesser.inspection(BA_DINH, attachments=[attachment(data)])
    status_url = f"/api/v1/submissions/{op['submission']['instance_id']}/attachments"

    assert (await pushed(guesser, op))["missing_blobs"] == [sha]
    assert_problem(await api.http.get(url, headers=guesser.headers), 404, "blob_not_found")
    assert_problem(await api.http.get(url, headers=supervisor.headers), 404, "blob_not_found")
    status = (await api.http.get(status_url, headers=supervisor.headers)).json()
    assert status == {"expected": 1, "received": 0, "missing": [sha]}
    assert (await pushed(guesser, op))["missing_blobs"] == [sha]  # a replay: the same rule

    # Whoever really holds the file proves it by sending it: verified, and stored only once.
    tus = Tus(api.http, guesser.headers)
    created = await tus.create(len(data), sha)
    assert created.headers["upload-offset"] == "0"
    sent = await tus.patch(created.headers["location"], 0, data)
    assert sent.status_code == 204 and sent.headers["upload-offset"] == str(len(data))

    assert (await api.http.get(url, headers=guesser.headers)).content == data
    assert (await api.http.get(url, headers=supervisor.headers)).content == data
    status = (await api.http.get(status_url, headers=supervisor.headers)).json()
    assert status == {"expected": 1, "received": 1, "missing": []}
    assert (await pushed(guesser, op))["missing_blobs"] == []
    assert os.stat(stored_file).st_ino == stored_inode  # the stored object was not written again
    assert await Blob.count().where(Blob.sha256 == sha) == 1


async def test_other_bytes_under_a_stored_hash_are_refused(api: Api, db: Backend) -> None:
    data = await photo_of_hoan_kiem(api)
    sha = sha256_hex(data)
    guesser = await inspector(api, BA_DINH)
    tus = Tus(api.http, guesser.headers)
    location = (await tus.create(len(data), sha)).headers["location"]

    response = await tus.patch(location, 0, png(len(data)))

    assert_problem(response, 422, "blob_hash_mismatch")
    assert_problem(
        await api.http.get(f"/api/v1/blobs/{sha}", headers=guesser.headers), 404, "blob_not_found"
    )
    assert await read_blob(db.app.state.blob_store, sha) == data


async def test_a_pusher_who_may_read_the_blob_need_not_send_it(api: Api) -> None:
    data = await photo_of_hoan_kiem(api)
    sha = sha256_hex(data)
    colleague = await inspector(api, HOAN_KIEM)
    both_wards = await inspector(api, HOAN_KIEM, BA_DINH)
    supervisor = await api.user_session("supervisor", [BA_DINH])

    again = colleague.inspection(HOAN_KIEM, attachments=[attachment(data)])
    across = both_wards.inspection(BA_DINH, attachments=[attachment(data)])

    assert (await pushed(colleague, again))["missing_blobs"] == []
    assert (await pushed(both_wards, across))["missing_blobs"] == []
    # Who could read it may share it: the reference grants it to the ward it was made in.
    response = await api.http.get(f"/api/v1/blobs/{sha}", headers=supervisor.headers)
    assert response.content == data


async def test_s3_bytes_sent_for_a_stored_blob_leave_it_as_it_was(
    api: Api, s3_http: httpx.AsyncClient, s3_store: S3BlobStore
) -> None:
    # On S3 the parts stage at the blob's own key: completing them there must not happen when
    # the blob is already stored; the multipart upload is dropped instead.
    data = await photo_of_hoan_kiem(api, s3_http)
    sha = sha256_hex(data)
    guesser = await inspector(api, BA_DINH)
    tus = Tus(s3_http, guesser.headers)
    location = (await tus.create(len(data), sha)).headers["location"]
    refused = await tus.patch(location, 0, png(len(data)))
    assert_problem(refused, 422, "blob_hash_mismatch")
    location = (await tus.create(len(data), sha)).headers["location"]

    sent = await tus.patch(location, 0, data)

    assert sent.status_code == 204, sent.text
    assert await read_blob(s3_store, sha) == data
    assert await staging_left(s3_store, location, sha256s=(sha,)) == []
    readable = await s3_http.get(f"/api/v1/blobs/{sha}", headers=guesser.headers)
    assert readable.status_code == 307


async def test_a_file_a_colleague_sent_meanwhile_completes_the_upload_and_counts(
    api: Api,
) -> None:
    # Pushed before anyone had the file; a colleague of the same ward then sends it. The pusher
    # may read it now, so their upload completes at once and their reference counts as received.
    pusher, colleague = await inspector(api, HOAN_KIEM), await inspector(api, HOAN_KIEM)
    supervisor = await api.user_session("supervisor", [HOAN_KIEM])
    data = png(20_000)
    op = pusher.inspection(HOAN_KIEM, attachments=[attachment(data)])
    assert (await pushed(pusher, op))["missing_blobs"] == [sha256_hex(data)]
    await Tus(api.http, colleague.headers).upload(data)
    assert (
        await pushed(colleague, colleague.inspection(HOAN_KIEM, attachments=[attachment(data)]))
    )["missing_blobs"] == []

    created = await Tus(api.http, pusher.headers).create(len(data), sha256_hex(data))

    assert created.headers["upload-offset"] == str(len(data))
    status_url = f"/api/v1/submissions/{op['submission']['instance_id']}/attachments"
    status = (await api.http.get(status_url, headers=supervisor.headers)).json()
    assert status == {"expected": 1, "received": 1, "missing": []}
