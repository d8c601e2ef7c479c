"""tus headers: Upload-Metadata and Upload-Checksum parse, or answer 400 with a stable code."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.errors import BadRequest
from server.services.uploads.tus import Checksum, parse_checksum, parse_metadata


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def test_metadata_decodes_each_value_and_skips_empty_items() -> None:
    header = (
        f"sha256 {b64('ab' * 32)}, filename {b64('nhà hàng.png')},,content_type {b64('image/png')}"
    )

    assert parse_metadata(header) == {
        "sha256": "ab" * 32,
        "filename": "nhà hàng.png",
        "content_type": "image/png",
    }
    assert parse_metadata("") == {}


def test_a_key_without_a_value_is_empty() -> None:
    assert parse_metadata("is_confidential") == {"is_confidential": ""}


@pytest.mark.parametrize("value", ["not base64!", b64(b"\xff\xfe")])
def test_metadata_that_is_not_base64_utf8_is_refused(value: str) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_metadata(f"filename {value}")

    assert refused.value.instance_code == "upload_metadata_invalid"
    assert "'filename'" in refused.value.detail


@given(st.dictionaries(st.from_regex(r"[a-z_]{1,12}", fullmatch=True), st.text(max_size=40)))
def test_metadata_round_trips(values: dict[str, str]) -> None:
    assert parse_metadata(",".join(f"{k} {b64(v)}" for k, v in values.items())) == values


def test_checksum_names_its_algorithm_and_digest() -> None:
    digest = hashlib.sha256(b"chunk").digest()

    assert parse_checksum(f"sha256 {b64(digest)}") == Checksum("sha256", digest)
    assert parse_checksum(f" sha1 {b64(digest[:20])} ") == Checksum("sha1", digest[:20])
    assert parse_checksum(None) is None
    assert parse_checksum("") is None


@pytest.mark.parametrize(
    ("header", "code"),
    [
        ("md5 AAAA", "checksum_algorithm_unsupported"),
        ("sha256 not-base64!", "checksum_invalid"),
    ],
)
def test_a_bad_checksum_header_is_refused(header: str, code: str) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_checksum(header)

    assert refused.value.instance_code == code
