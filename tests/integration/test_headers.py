"""Security headers on every response, no-store on auth, attachments as downloads, local API docs."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from server.blobstores.s3 import S3BlobStore
from tests.conftest import Backend
from tests.fixtures.s3 import S3Server
from tests.helpers import ADMIN_PASSWORD, ADMIN_USERNAME, Api, assert_problem, new_device_id
from tests.integration.blobstore.helpers import s3_options, unique_bucket
from tests.integration.uploads.conftest import process_app
from tests.integration.uploads.helpers import TUS, Tus, png, sha256_hex

SECURITY = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


def assert_secured(response: httpx.Response) -> None:
    for name, value in SECURITY.items():
        assert response.headers.get(name) == value, (response.request.url, name, response.headers)
    # The app dates every answer (OpenRosa clients need Date); uvicorn is told not to.
    assert len(response.headers.get_list("date")) == 1, response.headers


async def test_every_kind_of_response_carries_the_security_headers(
    api: Api, client: httpx.AsyncClient
) -> None:
    admin = api.admin.headers
    sample = [
        await client.get("/health/live"),
        await client.get("/api/v1/wards", headers=admin),
        await client.get("/api/v1/wards"),  # 401 problem
        await client.get("/no/such/address"),  # 404 problem from the router
        await client.put("/api/v1/wards", headers=admin),  # 405
        await client.get("/api/v1/conflicts?limit=0", headers=admin),  # 400 validation
        await client.request("OPTIONS", "/api/v1/uploads", headers=TUS),  # tus 204
        await client.post("/api/v1/uploads", headers=admin),  # tus 412 problem
        await client.get("/api/v1/forms/inspection/versions/9/xform", headers=admin),  # 404
        await client.get("/schema"),
        await client.get("/schema/openapi.json"),
    ]
    statuses = {r.status_code for r in sample}
    assert {200, 204, 400, 401, 404, 405, 412} <= statuses
    for response in sample:
        assert_secured(response)


async def test_auth_responses_are_never_cached(client: httpx.AsyncClient) -> None:
    body = {"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD, "device_id": new_device_id()}
    login = await client.post("/api/v1/auth/login", json=body)
    assert login.status_code == 200
    tokens = login.json()
    refreshed = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    me = await client.get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    refused = await client.post("/api/v1/auth/refresh", json={"refresh_token": "x" * 40})
    assert refused.status_code == 401
    for response in (login, refreshed, me, refused):
        assert response.headers["cache-control"] == "no-store", response.request.url
        assert_secured(response)


async def _upload_and_fetch(api: Api, http: httpx.AsyncClient) -> tuple[bytes, httpx.Response]:
    """A field worker uploads an image, then asks for it back."""
    worker = await api.user_session("outreach")
    data = png(4000)
    await Tus(http, worker.headers).upload(data)
    return data, await http.get(f"/api/v1/blobs/{sha256_hex(data)}", headers=worker.headers)


async def test_a_streamed_attachment_is_a_download_never_rendered(
    api: Api, client: httpx.AsyncClient
) -> None:
    data, response = await _upload_and_fetch(api, client)
    sha = sha256_hex(data)

    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-disposition"] == f'attachment; filename="{sha}"'
    assert_secured(response)


@pytest.mark.s3
async def test_a_presigned_attachment_is_a_download_too(
    db: Backend, s3_server: S3Server, tmp_path: Path
) -> None:
    store = S3BlobStore(unique_bucket(), s3_options(s3_server))
    await store.ensure_ready()
    app = process_app(db, store)
    transport = httpx.ASGITransport(app=app, client=("10.9.9.8", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://fieldsync.test") as http:
        _, redirect = await _upload_and_fetch(await Api.as_admin(http, db.settings), http)
    assert redirect.status_code == 307
    async with httpx.AsyncClient() as outside:
        fetched = await outside.get(redirect.headers["location"])
    assert fetched.status_code == 200
    assert fetched.headers["content-disposition"].startswith("attachment;")


async def test_the_api_docs_load_nothing_from_another_host(client: httpx.AsyncClient) -> None:
    page = await client.get("/schema")
    assert page.status_code == 200
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
    assert urls, page.text[:500]
    for url in urls:
        assert url.startswith("/schema/assets/"), url
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 100
    assert "//" not in "".join(urls)
    # The other renderer loaded its script from a CDN: it is gone.
    assert (await client.get("/schema/scalar")).status_code == 404


async def test_unknown_docs_asset_is_a_problem(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/schema/assets/nope.js"), 404, "not_found")
