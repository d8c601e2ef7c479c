"""The protocol's wire types (schemas/sync.py): what a device may send, and what it receives."""

from __future__ import annotations

import copy
from typing import Any

import msgspec
import pytest

from schemas.sync import (
    ConflictChangeOut,
    EntityChangeOut,
    FormChangeOut,
    PullRequest,
    PullResponse,
    PushRequest,
    decode,
    encode,
)

DEVICE = "0190a1b2-0000-7000-8000-0000000000d1"


def uuid(n: int) -> str:
    return f"0190a1b2-0000-7000-8000-{n:012d}"


def push_body() -> dict[str, Any]:
    return {
        "protocol": 1,
        "device_id": DEVICE,
        "ops": [
            {
                "op_seq": 1,
                "op_id": uuid(1),
                "hlc": "1700000000000:00000:d1",
                "kind": "submission",
                "submission": {
                    "instance_id": uuid(2),
                    "form_id": "establishment_visit",
                    "form_version": "2026010101",
                    "captured_at": "2026-01-05T03:04:05Z",
                    "ward_code": "00004",
                    "data": {"risk": "high"},
                    "attachments": [
                        {
                            "name": "front.jpg",
                            "sha256": "a" * 64,
                            "size": 1234,
                            "content_type": "image/jpeg",
                        }
                    ],
                    "entities": [
                        {
                            "list": "establishments",
                            "entity_id": uuid(3),
                            "action": "update",
                            "base_version": 4,
                            "properties": {"risk_class": "high"},
                            "base_properties": {"risk_class": "low"},
                        }
                    ],
                },
            },
            {
                "op_seq": 2,
                "op_id": uuid(4),
                "hlc": "1700000000001:00000:d1",
                "kind": "resolve",
                "resolve": {"conflict_id": uuid(5), "resolution_id": uuid(6), "value": None},
            },
        ],
    }


@pytest.mark.parametrize("media", ["json", "msgpack"])
def test_push_request_round_trips(media: Any) -> None:
    raw = msgspec.json.encode(push_body())
    request = decode(raw, PushRequest)
    again = decode(encode(request, media), PushRequest, media)
    assert again == request
    assert request.ops[1].resolve is not None and request.ops[1].resolve.value is None


def _break(path: list[Any], value: Any) -> bytes:
    body = copy.deepcopy(push_body())
    target: Any = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return msgspec.json.encode(body)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (["protocol"], 2),
        (["device_id"], "not-a-uuid"),
        (["ops", 0, "op_seq"], 0),
        (["ops", 1, "op_seq"], 1),  # not ascending
        (["ops", 0, "hlc"], "2026-01-05T03:04:05Z"),
        (["ops", 0, "kind"], "resolve"),  # payload does not match the kind
        (["ops", 0, "submission", "ward_code"], "4"),
        (["ops", 0, "submission", "captured_at"], "2026-01-05T03:04:05"),  # no time zone
        (["ops", 0, "submission", "attachments", 0, "sha256"], "XYZ"),
        (["ops", 0, "submission", "attachments", 0, "name"], "../etc/passwd"),
        (["ops", 0, "submission", "entities", 0, "action"], "merge"),
        (["ops", 0, "submission", "entities", 0, "list"], "Establishments!"),
        (["ops", 0, "submission", "entities", 0, "base_version"], -1),
        (["ops", 0, "submission", "entities", 0, "properties"], {"1bad": 1}),
        (["ops", 1, "resolve"], {"conflict_id": uuid(5), "resolution_id": uuid(6)}),
        (
            ["ops", 1, "resolve"],
            {"conflict_id": uuid(5), "resolution_id": uuid(6), "choice": 0, "value": 1},
        ),
    ],
)
def test_malformed_push_is_refused(path: list[Any], value: Any) -> None:
    with pytest.raises(msgspec.ValidationError):
        decode(_break(path, value), PushRequest)


def test_create_must_start_from_version_zero() -> None:
    body = _break(["ops", 0, "submission", "entities", 0, "action"], "create")
    with pytest.raises(msgspec.ValidationError, match="base_version 0"):
        decode(body, PushRequest)


def test_oversized_batch_is_refused() -> None:
    body = push_body()
    op = body["ops"][1]
    body["ops"] = [{**op, "op_seq": n + 1} for n in range(501)]
    with pytest.raises(msgspec.ValidationError):
        decode(msgspec.json.encode(body), PushRequest)


def test_pull_request_defaults_and_bounds() -> None:
    request = decode(
        b'{"protocol": 1, "device_id": "%s", "cursor": null}' % DEVICE.encode(), PullRequest
    )
    assert request.max_items == 500 and request.cursor is None
    with pytest.raises(msgspec.ValidationError):
        decode(b'{"protocol": 1, "device_id": "%s", "max_items": 0}' % DEVICE.encode(), PullRequest)


@pytest.mark.parametrize("media", ["json", "msgpack"])
def test_pull_changes_are_a_tagged_union(media: Any) -> None:
    response = PullResponse(
        cursor="c",
        has_more=False,
        server_hlc="1700000000000:00000:server",
        acked_through=3,
        changes=[
            EntityChangeOut(list="establishments", id=uuid(3), version=5, properties={"a": 1}),
            FormChangeOut(form_id="visit", version="2", state="open", hash="h"),
            ConflictChangeOut(
                id=uuid(7),
                list="establishments",
                entity_id=uuid(3),
                kind="delete_update",
                status="open",
                candidates=[],
            ),
        ],
    )
    raw = encode(response, media)
    assert decode(raw, PullResponse, media) == response
    if media == "json":
        wire = msgspec.json.decode(raw)
        assert [c["type"] for c in wire["changes"]] == ["entity", "form", "conflict"]
        assert "reset" not in wire  # omitted unless the device must re-snapshot
