"""What Collect reads: the form list, the forms, their manifests and files, HEAD /submission
(odk.md §4-§8), replayed with Collect's own request shapes."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import subprocess
import uuid
from pathlib import Path
from xml.etree.ElementTree import Element

import httpx
import pytest
from defusedxml.ElementTree import fromstring

from tests.helpers import BA_DINH, HOAN_KIEM, PASSWORD, Api, unique
from tests.integration.openrosa.collect import (
    MANIFEST,
    XFORMS_LIST,
    Collect,
    ShopForm,
    basic,
    collect_for,
    openrosa_message,
    xml,
)
from tests.unit.forms.xlsforms import xlsform

VALIDATE_JAR = (
    Path(pytest.importorskip("pyxform").__file__).parent
    / "validators"
    / "odk_validate"
    / "bin"
    / "ODK_Validate.jar"
)


def md5(content: bytes) -> str:
    return "md5:" + hashlib.md5(content, usedforsecurity=False).hexdigest()


def entries(root: Element, ns: str, tag: str) -> list[dict[str, str]]:
    """Each `tag` child as {child local name: text}, every child in the document's namespace."""
    found = []
    for item in root.findall(f"{ns}{tag}"):
        assert all(child.tag.startswith(ns) for child in item), item
        found.append({child.tag.removeprefix(ns): child.text or "" for child in item})
        found[-1].update({f"@{k}": v for k, v in item.attrib.items()})
    return found


async def published_shop_form(api: Api) -> ShopForm:
    form = ShopForm.make()
    await form.publish(api)
    return form


async def test_the_form_list_offers_open_forms_the_user_fills_with_the_hash_of_the_served_bytes(
    api: Api, client: httpx.AsyncClient
) -> None:
    form = await published_shop_form(api)
    collect = await collect_for(api, await api.create_user("outreach"))
    response = await collect.form_list()
    root = xml(response)
    assert root.tag == f"{XFORMS_LIST}xforms"
    listed = {e["formID"]: e for e in entries(root, XFORMS_LIST, "xform")}
    # Programme forms for outreach workers, not the inspectors' ones.
    assert {"outreach_contact", "communication_event", form.form_id} <= set(listed)
    assert "inspection" not in listed and "tip_intake" not in listed
    ours = listed[form.form_id]
    assert ours["name"] == f"Form {form.form_id}" and ours["version"] == form.version
    assert ours["downloadUrl"] == f"{collect.server_url}/forms/{form.form_id}.xml"
    assert ours["manifestUrl"] == f"{collect.server_url}/forms/{form.form_id}/manifest"
    for entry in listed.values():
        assert entry["downloadUrl"].startswith(api.settings.public_base_url + "/collect/key/")
        download = await collect.get(entry["downloadUrl"])
        assert download.status_code == 200, download.text
        # Collect's identity of a form is the md5 of the file: it must equal the list's hash.
        assert entry["hash"] == md5(download.content), entry["formID"]
        assert fromstring(download.content).tag == "{http://www.w3.org/1999/xhtml}html"
    # The programme's forms pick the ward from wards.csv, so they have a manifest; a form without
    # media has none (Collect would fetch it on every refresh).
    assert "manifestUrl" in listed["outreach_contact"]
    plain = unique("plain_")
    await api.publish_xlsform(
        xlsform(
            [{"type": "text", "name": "remark", "label": "Remark"}],
            form_id=plain,
            plain_labels=True,
        )
    )
    relisted = {
        e["formID"]: e for e in entries(xml(await collect.form_list()), XFORMS_LIST, "xform")
    }
    assert plain in relisted and "manifestUrl" not in relisted[plain]


async def test_form_id_narrows_the_list_and_closed_forms_leave_it(
    api: Api, client: httpx.AsyncClient
) -> None:
    form = await published_shop_form(api)
    collect = await collect_for(api, await api.create_user("outreach"))
    only = entries(xml(await collect.form_list(f"formID={form.form_id}")), XFORMS_LIST, "xform")
    assert [e["formID"] for e in only] == [form.form_id]
    none = xml(await collect.form_list("formID=no_such_form"))
    assert none.findall(f"{XFORMS_LIST}xform") == []
    for state in ("closing", "closed"):
        changed = await client.patch(
            f"/api/v1/forms/{form.form_id}", json={"state": state}, headers=api.admin.headers
        )
        assert changed.status_code == 200, changed.text
        listed = entries(xml(await collect.form_list()), XFORMS_LIST, "xform")
        assert form.form_id not in {e["formID"] for e in listed}, state


async def test_a_role_that_fills_nothing_gets_an_empty_list_and_no_form(
    api: Api, client: httpx.AsyncClient
) -> None:
    form = await published_shop_form(api)
    collect = await collect_for(api, await api.create_user("viewer"))
    assert xml(await collect.form_list()).findall(f"{XFORMS_LIST}xform") == []
    # Hidden, not forbidden: as on the native API.
    base = collect.server_url
    for path in (f"/forms/{form.form_id}.xml", f"/forms/{form.form_id}/manifest"):
        message = openrosa_message(await collect.get(base + path), 404)
        assert form.form_id in message


async def test_the_manifest_lists_the_wards_the_entity_list_and_uploaded_media_with_their_hashes(
    api: Api, client: httpx.AsyncClient
) -> None:
    form = await published_shop_form(api)
    user = await api.create_user("outreach", [HOAN_KIEM, BA_DINH])
    collect = await collect_for(api, user)
    manifest_url = f"{collect.server_url}/forms/{form.form_id}/manifest"
    root = xml(await collect.get(manifest_url))
    assert root.tag == f"{MANIFEST}manifest"
    files = {f["filename"]: f for f in entries(root, MANIFEST, "mediaFile")}
    # logo.png is declared but not uploaded yet: not listed (Collect would fail to fetch it).
    assert set(files) == {"wards.csv", f"{form.list_name}.csv"}
    shops = files[f"{form.list_name}.csv"]
    assert shops["@type"] == "entityList"
    assert shops["integrityUrl"] == f"{collect.server_url}/lists/{form.list_name}/integrity"
    assert "@type" not in files["wards.csv"] and "integrityUrl" not in files["wards.csv"]

    logo = b"\x89PNG\r\n\x1a\n" + uuid.uuid4().bytes
    uploaded = await client.put(
        f"/api/v1/forms/{form.form_id}/media/logo.png",
        content=logo,
        headers={**api.admin.headers, "Content-Type": "image/png"},
    )
    assert uploaded.status_code == 200, uploaded.text
    assert uploaded.json()["md5"] == hashlib.md5(logo, usedforsecurity=False).hexdigest()
    files = {
        f["filename"]: f
        for f in entries(xml(await collect.get(manifest_url)), MANIFEST, "mediaFile")
    }
    assert set(files) == {"logo.png", "wards.csv", f"{form.list_name}.csv"}
    for file in files.values():
        download = await collect.get(file["downloadUrl"])
        assert download.status_code == 200, download.text
        assert file["hash"] == md5(download.content), file["filename"]
    served = await collect.get(files["logo.png"]["downloadUrl"])
    assert served.content == logo and served.headers["content-type"] == "image/png"
    wards = await collect.get(files["wards.csv"]["downloadUrl"])
    assert wards.headers["content-type"].startswith("text/csv")
    lines = wards.text.splitlines()
    assert lines[0] == "name,label"
    assert [line.split(",")[0] for line in lines[1:]] == [BA_DINH, HOAN_KIEM]
    assert all(line.split(",")[1].strip() for line in lines[1:])


async def test_media_only_for_files_the_form_names_and_never_the_ones_the_server_makes(
    api: Api, client: httpx.AsyncClient
) -> None:
    form = await published_shop_form(api)
    headers = {**api.admin.headers, "Content-Type": "text/csv"}
    for filename, status, code in (
        ("other.png", 409, "form_attachment_undeclared"),
        ("wards.csv", 409, "form_attachment_generated"),
        (f"{form.list_name}.csv", 409, "form_attachment_generated"),
    ):
        response = await client.put(
            f"/api/v1/forms/{form.form_id}/media/{filename}", content=b"a,b\n", headers=headers
        )
        assert response.status_code == status, response.text
        assert response.json()["code"] == code
    media = await client.get(f"/api/v1/forms/{form.form_id}/media", headers=api.admin.headers)
    assert media.status_code == 200
    assert {m["filename"]: (m["kind"], m["uploaded"]) for m in media.json()} == {
        "logo.png": ("media", False),
        "wards.csv": ("wards", False),
        f"{form.list_name}.csv": ("entity_list", False),
    }
    worker = await api.user_session("outreach")
    refused = await client.put(
        f"/api/v1/forms/{form.form_id}/media/logo.png", content=b"x", headers=worker.headers
    )
    assert refused.status_code == 403


async def test_head_submission_answers_204_with_the_largest_post(
    api: Api, client: httpx.AsyncClient
) -> None:
    collect = await collect_for(api, await api.create_user("inspector"))
    response = await collect.head_submission()
    assert response.status_code == 204 and response.content == b""
    assert response.headers["x-openrosa-version"] == "1.0"
    assert response.headers["date"]
    assert int(response.headers["x-openrosa-accept-content-length"]) == (
        api.settings.max_submission_bytes  # what POST /submission reads
    )


async def test_head_submission_answers_as_the_route_does(api: Api) -> None:
    """On a token URL, HEAD is answered before the framework's request machinery; GET (and
    HEAD on the HTTP Basic URL) go through the route. The answers are the same."""
    user = await api.create_user("inspector")
    collect = await collect_for(api, user)
    path = collect.target(collect.server_url.rstrip("/") + "/submission")
    early = await api.http.head(path, headers=collect.headers())
    routed = await api.http.get(path, headers=collect.headers())
    basic_path = path.replace(
        collect.server_url.removeprefix(api.settings.public_base_url), "/collect"
    )
    by_password = await api.http.head(
        basic_path,
        headers={**collect.headers(), "Authorization": basic(user["username"], PASSWORD)},
    )

    def answer(response: httpx.Response) -> tuple[int, bytes, dict[str, str]]:
        headers = {k: v for k, v in response.headers.items() if k != "date"}
        return response.status_code, response.content, headers

    assert answer(early) == answer(routed) == answer(by_password)
    assert early.status_code == 204 and early.headers["date"]


async def test_requests_without_the_openrosa_version_header_are_refused_in_openrosa_xml(
    api: Api, client: httpx.AsyncClient
) -> None:
    collect = await collect_for(api, await api.create_user("outreach"))
    path = collect.target(collect.server_url + "/formList")
    message = openrosa_message(await client.get(path), 400)
    assert "X-OpenRosa-Version" in message
    for method, suffix in [
        ("GET", "/forms/any/manifest"),
        ("GET", "/lists/establishments/integrity"),
        ("HEAD", "/submission"),
    ]:
        asked = await client.request(method, collect.target(collect.server_url + suffix))
        assert asked.status_code == 400, suffix
    # Collect's Date header is never read, however it is written.
    localized = "jeu., 21 août 2025 02:04:05 UTC".encode()
    headers = [*collect.headers().items(), ("Date", localized)]
    headers = [(k, v) for k, v in headers if k != "Date" or v == localized]
    assert (await client.get(path, headers=headers)).status_code == 200
    unknown = await collect.get(collect.server_url + "/forms/no_such_form.xml")
    assert "no_such_form" in openrosa_message(unknown, 404)
    nowhere = await collect.get(collect.server_url + "/no/such/thing")
    openrosa_message(nowhere, 404)


async def test_every_url_is_built_from_the_public_url_and_percent_encoded(
    db: object, api: Api
) -> None:
    from server.app import create_app
    from tests.conftest import Backend, make_settings

    assert isinstance(db, Backend)
    public = "https://fieldsync.example.org/h%C3%A0-n%E1%BB%99i"  # behind a proxy, at /hà-nội
    settings = make_settings(Path(db.settings.data_dir), db.url, FIELDSYNC_PUBLIC_URL=public + "/")
    app = create_app(settings, engine=db.engine, blob_store=db.app.state.blob_store)
    user = await api.create_user("outreach")
    form = await published_shop_form(api)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://internal") as http:
        token = await http.post(
            f"/api/v1/users/{user['id']}/collect-tokens", headers=api.admin.headers
        )
        assert token.status_code == 201, token.text
        server_url = token.json()["server_url"]
        assert server_url == f"{public}/collect/key/{token.json()['token']}"
        collect = Collect(http, public, server_url)
        listed = entries(xml(await collect.form_list()), XFORMS_LIST, "xform")
        ours = next(e for e in listed if e["formID"] == form.form_id)
        assert ours["downloadUrl"] == f"{server_url}/forms/{form.form_id}.xml"
        files = entries(xml(await collect.get(ours["manifestUrl"])), MANIFEST, "mediaFile")
        assert {f["downloadUrl"] for f in files} == {
            f"{server_url}/forms/{form.form_id}/attachments/wards.csv",
            f"{server_url}/forms/{form.form_id}/attachments/{form.list_name}.csv",
        }


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("java") is None, reason="no Java runtime for ODK Validate")
async def test_the_served_xform_passes_odk_validate(
    api: Api, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """JavaRosa inside ODK Validate loads the XForm as Collect would get it."""
    form = await published_shop_form(api)
    collect = await collect_for(api, await api.create_user("outreach"))
    download = await collect.get(f"{collect.server_url}/forms/{form.form_id}.xml")
    path = tmp_path / f"{form.form_id}.xml"
    path.write_bytes(download.content)
    result = await asyncio.to_thread(
        subprocess.run,
        ["java", "-jar", str(VALIDATE_JAR), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0 and "Xform is valid" in result.stdout, (
        result.stdout + result.stderr
    )
