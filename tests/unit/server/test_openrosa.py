"""The pure parts of the Collect endpoints: documents, URLs, declared media, password checks."""

from __future__ import annotations

import base64
import json
import zlib

from defusedxml.ElementTree import fromstring

from server.openrosa.auth import PasswordChecks, basic_credentials
from server.openrosa.catalog import declared_media
from server.openrosa.documents import (
    FormListEntry,
    MediaFile,
    form_list_document,
    integrity_document,
    manifest_document,
    md5_hash,
    openrosa_response,
    url,
)
from server.services.collect_tokens import settings_qr

LIST = "{http://openrosa.org/xforms/xformsList}"
MANIFEST = "{http://openrosa.org/xforms/xformsManifest}"


def test_urls_are_percent_encoded_segment_by_segment() -> None:
    base = "https://x.example/collect/key/abc"
    assert url(base, "forms", "with space&more.xml") == (
        "https://x.example/collect/key/abc/forms/with%20space%26more.xml"
    )
    assert url(base, "forms", "a/b", "attachments", "ảnh.png").endswith(
        "/forms/a%2Fb/attachments/%E1%BA%A3nh.png"
    )


def test_the_form_list_escapes_text_and_urls_and_leaves_no_element_out() -> None:
    entry = FormListEntry(
        form_id="f1",
        name="Kiểm tra <cơ sở> & dịch vụ",
        version="",
        hash=md5_hash(b"<h:html/>"),
        download_url="https://x.example/a&b/forms/f1.xml",
        manifest_url=None,
    )
    document = form_list_document([entry])
    assert document.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    root = fromstring(document.encode("utf-8"))
    assert root.tag == f"{LIST}xforms"
    (xform,) = root
    values = {child.tag.removeprefix(LIST): child.text for child in xform}
    assert values == {
        "formID": "f1",
        "name": "Kiểm tra <cơ sở> & dịch vụ",
        "version": None,  # present and empty: Collect reads it as no version
        "hash": md5_hash(b"<h:html/>"),
        "downloadUrl": "https://x.example/a&b/forms/f1.xml",
    }
    assert "&amp;" in document


def test_the_manifest_marks_entity_lists_with_their_integrity_url() -> None:
    document = manifest_document(
        [
            MediaFile("logo.png", "md5:00", "https://x/a"),
            MediaFile("shops.csv", "md5:11", "https://x/b", integrity_url="https://x/c"),
        ]
    )
    root = fromstring(document.encode())
    assert root.tag == f"{MANIFEST}manifest"
    plain, entities = root
    assert plain.get("type") is None and plain.find(f"{MANIFEST}integrityUrl") is None
    assert entities.get("type") == "entityList"
    assert entities.findtext(f"{MANIFEST}integrityUrl") == "https://x/c"


def test_integrity_answers_true_or_false_exactly() -> None:
    root = fromstring(integrity_document([("a", True), ('b"<', False)]).encode())
    assert [(e.get("id"), e.findtext("deleted")) for e in root.iter("entity")] == [
        ("a", "true"),
        ('b"<', "false"),
    ]


def test_the_openrosa_response_envelope() -> None:
    response = openrosa_response("Không có <biểu mẫu> này", status=404)
    assert response.status_code == 404
    assert response.headers["X-OpenRosa-Version"] == "1.0"
    root = fromstring(response.content)
    assert root.tag == "{http://openrosa.org/http/response}OpenRosaResponse"
    message = root.find("{http://openrosa.org/http/response}message")
    assert message is not None and message.get("nature") == "error"
    assert message.text == "Không có <biểu mẫu> này"
    created = fromstring(openrosa_response("ok", status=201, method="POST").content)
    assert created[0].get("nature") == ""
    assert openrosa_response("ok", status=201, method="POST").headers["Cache-Control"] == (
        "no-store"
    )


def test_declared_media_are_the_files_the_xform_names_once_each() -> None:
    xform = (
        '<instance id="wards" src="jr://file-csv/wards.csv"/>'
        '<instance id="shops" src="jr://file-csv/shops.csv"/>'
        '<value form="image">jr://images/logo.png</value>'
        '<value form="audio">jr://audio/a&amp;b.mp3</value>'
        '<value form="image">jr://images/logo.png</value>'
        '<instance id="x" src="jr://file/sub/items.xml"/>'
        '<instance id="y" src="jr://file/../"/>'
    )
    assert declared_media(xform) == ("wards.csv", "shops.csv", "logo.png", "a&b.mp3", "items.xml")


def test_the_settings_qr_is_zlib_json_in_base64() -> None:
    payload = settings_qr("https://x.example/collect/key/t", "fieldsync: lan")
    settings = json.loads(zlib.decompress(base64.b64decode(payload)))
    assert settings == {
        "general": {"server_url": "https://x.example/collect/key/t"},
        "project": {"name": "fieldsync: lan"},
        "admin": {},
    }


def test_basic_credentials() -> None:
    encoded = base64.b64encode("lan:mật:khẩu".encode()).decode()
    assert basic_credentials(f"Basic {encoded}") == ("lan", "mật:khẩu")
    assert basic_credentials(f"basic  {encoded}") == ("lan", "mật:khẩu")
    for header in (
        "",
        "Bearer x",
        "Basic",
        "Basic !!!",
        "Basic " + base64.b64encode(b"nocolon").decode(),
    ):
        assert basic_credentials(header) is None


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_password_check_is_remembered_for_a_while_and_only_for_that_hash() -> None:
    clock = Clock()
    checks = PasswordChecks(seconds=60, size=2, clock=clock)
    row = {"id": "u1", "password_hash": "$argon2id$a"}
    key = PasswordChecks.key("secret", "Lan", "pw")
    assert key == PasswordChecks.key("secret", "lan", "pw")  # usernames are case-insensitive
    assert key != PasswordChecks.key("other secret", "lan", "pw")
    assert b"pw" not in key
    assert not checks.holds(key, row)
    checks.remember(key, row)
    assert checks.holds(key, row)
    assert not checks.holds(key, {**row, "password_hash": "$argon2id$b"})  # password changed
    assert not checks.holds(key, {**row, "id": "u2"})
    clock.now = 61
    assert not checks.holds(key, row) and len(checks) == 0


def test_password_checks_are_bounded_oldest_first() -> None:
    checks = PasswordChecks(seconds=60, size=2, clock=Clock())
    keys = [PasswordChecks.key("s", f"user{i}", "pw") for i in range(3)]
    rows = [{"id": f"u{i}", "password_hash": "h"} for i in range(3)]
    for key, row in zip(keys, rows, strict=True):
        checks.remember(key, row)
    assert len(checks) == 2
    assert not checks.holds(keys[0], rows[0])
    assert checks.holds(keys[2], rows[2])
