"""Reading a Collect submission's XML by the form's paths (forms/instance_xml.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from functools import cache

import pytest

from forms.instance_xml import InstanceXmlError, normalize_uuid, read_envelope, read_instance
from forms.validation import validate_submission
from forms.xlsform import import_xlsform
from schemas.forms import FormSpec
from tests.unit.forms.xlsforms import end, q, xlsform

INSTANCE = "5b9cf8d1-106f-4004-844f-c072d76762ed"
ENTITY = "6fdfa3b6-64fb-46cf-b98c-c92b57f914b1"
BRANCH = "0b4d9f2e-2c4e-4a53-9d0e-4d9a1d2c7f11"


@cache
def trees() -> FormSpec:
    """Every shape the reader maps: numbers, a multiple choice, a group, a repeat, a photo, an
    `end` timestamp and an entity list."""
    survey = [
        q("end", "end"),
        q("text", "tree", save_to="species"),
        q("integer", "circumference", save_to="circumference"),
        q("decimal", "height"),
        q("select_multiple damage", "damage", save_to="damage"),
        q("begin_group", "site"),
        q("text", "street"),
        end("group"),
        q("begin_repeat", "visits"),
        q("date", "visit_date"),
        q("image", "visit_photo"),
        end("repeat"),
        q("image", "photo"),
    ]
    choices = [("damage", "bark", "Vỏ"), ("damage", "roots", "Rễ")]
    entities = [{"list_name": "trees", "label": "${tree}"}]
    workbook = xlsform(survey, choices, form_id="trees", version="7", entities=entities)
    return import_xlsform(workbook, "trees.xlsx").spec


def submission(
    body: str = "", *, meta: str = "", root_attrs: str = 'id="trees" version="7"'
) -> bytes:
    default = (
        "<end>2026-02-20T10:03:59.120+07:00</end><tree>oak</tree><circumference>52</circumference>"
        "<height>12.5</height><damage>bark roots</damage><site><street>Phố Huế</street></site>"
        "<visits><visit_date>2026-02-01</visit_date><visit_photo>1.jpg</visit_photo></visits>"
        "<visits><visit_date>2026-02-02</visit_date><visit_photo/></visits>"
        "<photo>2.jpg</photo>"
    )
    return (
        f'<data xmlns:orx="http://openrosa.org/xforms" {root_attrs}>{body or default}'
        f"<orx:meta><orx:instanceID>uuid:{INSTANCE}</orx:instanceID>{meta}</orx:meta></data>"
    ).encode()


def test_answers_are_read_into_the_shape_a_native_push_carries() -> None:
    envelope = read_envelope(submission())
    assert (envelope.form_id, envelope.version, envelope.instance_id) == ("trees", "7", INSTANCE)
    assert envelope.deprecated_id is None and envelope.encrypted is None
    instance = read_instance(envelope, trees())
    assert instance.data == {
        "end": "2026-02-20T10:03:59.120+07:00",
        "tree": "oak",
        "circumference": 52,
        "height": 12.5,
        "damage": ["bark", "roots"],
        "site": {"street": "Phố Huế"},
        "visits": [
            {"visit_date": "2026-02-01", "visit_photo": "1.jpg"},
            {"visit_date": "2026-02-02"},
        ],
        "photo": "2.jpg",
        "meta": {"instanceID": f"uuid:{INSTANCE}"},
    }
    assert instance.files == ["1.jpg", "2.jpg"]
    assert instance.texts["/data/circumference"] == "52"
    assert "/data/visits/visit_date" not in instance.texts  # repeated answers are not properties
    result = validate_submission(trees(), instance.data, now=datetime(2026, 3, 1, tzinfo=UTC))
    assert result.errors == []


def test_the_completion_time_is_time_end_then_the_end_field() -> None:
    zone = timezone(timedelta(hours=7))
    instance = read_instance(read_envelope(submission()), trees())
    assert instance.completed_at(zone) == datetime(2026, 2, 20, 3, 3, 59, 120000, tzinfo=UTC)
    stamped = submission(meta="<orx:timeEnd>2026-02-21T08:00:00</orx:timeEnd>")
    later = read_instance(read_envelope(stamped), trees()).completed_at(zone)
    assert later == datetime(2026, 2, 21, 8, tzinfo=zone)  # no offset: the form's zone
    assert read_instance(read_envelope(submission("<tree>oak</tree>")), trees()).completed is None


def test_an_element_the_form_does_not_declare_is_kept_for_validation_but_metadata_is_not() -> None:
    xml = submission(
        "<tree>oak</tree><casino>yes</casino>",
        meta=f"<orx:deprecatedID>uuid:{ENTITY}</orx:deprecatedID><orx:instanceName>x</orx:instanceName>",
    )
    envelope = read_envelope(xml)
    assert envelope.deprecated_id == ENTITY
    instance = read_instance(envelope, trees())
    assert instance.data == {
        "tree": "oak",
        "casino": "yes",
        "meta": {"instanceID": f"uuid:{INSTANCE}"},
    }
    result = validate_submission(trees(), instance.data, now=datetime(2026, 3, 1, tzinfo=UTC))
    assert [(e.path, e.code) for e in result.errors] == [("/data/casino", "unknown_field")]


def test_entity_blocks_are_read_with_their_versions() -> None:
    block = (
        f'<entity dataset="trees" id="uuid:{ENTITY.upper()}" update="1" create="0" '
        f'baseVersion="4" trunkVersion="3" branchId="{BRANCH}"><label>52cm oak</label></entity>'
    )
    [entity] = read_instance(read_envelope(submission(meta=block)), trees()).entities
    assert (entity.dataset, entity.entity_id, entity.create, entity.update) == (
        "trees",
        ENTITY,
        False,
        True,
    )
    assert (entity.base_version, entity.trunk_version, entity.branch_id, entity.label) == (
        4,
        3,
        BRANCH,
        "52cm oak",
    )
    offline_create = '<entity dataset="trees" id="x" create="true" baseVersion="" trunkVersion=""/>'
    [created] = read_instance(read_envelope(submission(meta=offline_create)), trees()).entities
    assert (created.entity_id, created.create, created.base_version, created.label) == (
        None,
        True,
        None,
        None,
    )


def test_an_encrypted_envelope_names_its_files_in_order() -> None:
    xml = (
        '<data id="trees" version="7" encrypted="yes" '
        'xmlns="http://www.opendatakit.org/xforms/encrypted">'
        "<base64EncryptedKey>pFT0+==</base64EncryptedKey>"
        f'<orx:meta xmlns:orx="http://openrosa.org/xforms"><orx:instanceID>uuid:{INSTANCE}'
        "</orx:instanceID></orx:meta>"
        "<media><file>b.jpg.enc</file></media><media><file>a.jpg.enc</file></media>"
        "<encryptedXmlFile>submission.xml.enc</encryptedXmlFile>"
        "<base64EncryptedElementSignature>UHIo==</base64EncryptedElementSignature></data>"
    ).encode()
    encrypted = read_envelope(xml).encrypted
    assert encrypted is not None
    assert encrypted.files == ["b.jpg.enc", "a.jpg.enc", "submission.xml.enc"]
    assert (encrypted.encrypted_key, encrypted.signature) == ("pFT0+==", "UHIo==")


BOMB = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
    b'<data id="trees">&lol2;</data>'
)
EXTERNAL = b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]><data id="t">&x;</data>'


@pytest.mark.parametrize(
    ("xml", "says"),
    [
        (BOMB, "DTD"),
        (EXTERNAL, "DTD"),
        (b"<data id='trees'><meta>", "not well-formed"),
        (b"", "not well-formed"),
        (
            b"<data><meta><instanceID>uuid:" + INSTANCE.encode() + b"</instanceID></meta></data>",
            "no form",
        ),
        (b"<data id='trees'><tree>oak</tree></data>", "no meta/instanceID"),
        (b"<data id='trees'><meta><instanceID>42</instanceID></meta></data>", "not a UUID"),
        (
            b"<data id='trees' encrypted='yes'><meta><instanceID>uuid:"
            + INSTANCE.encode()
            + b"</instanceID></meta></data>",
            "encryptedXmlFile",
        ),
    ],
)
def test_bad_documents_are_refused_with_a_reason(xml: bytes, says: str) -> None:
    with pytest.raises(InstanceXmlError, match=says):
        read_envelope(xml)


def test_uuids_are_normalized_and_only_uuids_pass() -> None:
    assert normalize_uuid(f"UUID:{INSTANCE.upper()}") == INSTANCE
    assert normalize_uuid(INSTANCE) == INSTANCE
    assert normalize_uuid(INSTANCE.replace("-", "")) is None
    assert normalize_uuid("uuid:") is None
