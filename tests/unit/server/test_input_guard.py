"""The input guard's raw-byte scans agree with a real decoder on any document, however it is spelled."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.api.input_guard import check_body, json_scan, msgpack_scan
from server.text_rules import CONTROL, control_characters

LIMIT = 4  # a small limit, so random documents cross it often

# Text that stresses the scans: quotes, backslashes, brackets, control characters, non-ASCII.
tricky_text = st.text(
    alphabet=st.sampled_from(list('ab"\\[]{}\t\n\r\x00\x01\x08\x0c\x1b\x7f\x85\x9f\xa0ếố\u2028😀')),
    max_size=8,
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | tricky_text
)
documents = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(tricky_text, inner, max_size=4),
    max_leaves=30,
)


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    return 0


def has_control(value: Any) -> bool:
    if isinstance(value, str):
        return CONTROL.search(value) is not None
    if isinstance(value, list):
        return any(map(has_control, value))
    if isinstance(value, dict):
        return any(has_control(k) or has_control(v) for k, v in value.items())
    return False


def json_spellings(value: Any) -> list[bytes]:
    """msgspec writes non-ASCII raw; Python's json module escapes everything as \\uXXXX."""
    return [
        msgspec.json.encode(value),
        json.dumps(value).encode(),
        json.dumps(value, ensure_ascii=False, indent=1).encode(),
    ]


@settings(max_examples=400, deadline=None)
@given(documents)
def test_json_depth_and_control_scans_agree_with_the_document(value: Any) -> None:
    for body in json_spellings(value):
        too_deep, suspect = json_scan(body, LIMIT)
        assert too_deep == (depth(value) > LIMIT), body
        if has_control(value):
            assert suspect, body
        assert check_body(body, msgpack=False) == (False, control_characters(value))
        assert bool(control_characters(value)) == has_control(value)


@settings(max_examples=400, deadline=None)
@given(documents)
def test_msgpack_scan_agrees_with_the_document(value: Any) -> None:
    body = msgspec.msgpack.encode(value)
    too_deep, suspect = msgpack_scan(body, LIMIT)
    assert too_deep == (depth(value) > LIMIT)
    if not too_deep:
        assert suspect == has_control(value)
    assert check_body(body, msgpack=True) == (False, control_characters(value))


@pytest.mark.parametrize(
    "value",
    [
        "x" * 40,  # str8
        "y" * 300,  # str16
        "z" * 70_000,  # str32
        b"\x00" * 10,  # bin8: bytes are not text
        b"\x00" * 70_000,  # bin32
        1.5,
        2**40,
        -(2**40),
        msgspec.msgpack.Ext(5, b"\x00\x01"),  # fixext2
        msgspec.msgpack.Ext(5, b"\x00" * 3),  # ext8
        msgspec.msgpack.Ext(5, b"\x00" * 300),
        list(range(20)),  # array16
        {str(i): i for i in range(20)},  # map16
    ],
)
def test_msgpack_scan_steps_over_every_kind_of_value(value: Any) -> None:
    # The value sits between two containers: a wrong skip would misread the depth after it.
    deep_after = [[value], [[["\x01"]]]]
    assert msgpack_scan(msgspec.msgpack.encode(deep_after), 4) == (False, True)
    assert msgpack_scan(msgspec.msgpack.encode(deep_after), 3) == (True, False)


@pytest.mark.parametrize("size", [31, 40, 300, 70_000])  # fixstr, str8, str16, str32
def test_msgpack_scan_reads_every_length_of_string(size: int) -> None:
    clean, dirty = "ố" * (size // 3) + "x" * (size % 3), "x" * (size - 1) + "\x0b"
    assert msgpack_scan(msgspec.msgpack.encode({"a": [clean]})) == (False, False)
    assert msgpack_scan(msgspec.msgpack.encode({"a": [dirty]})) == (False, True)


@pytest.mark.parametrize(
    "body",
    [
        b"[[[[",
        b'{"a": [[[',
        b"]" * 100,
        b'{"a": [1, 2}',
        b"[[[[]]]]]]]]",
        b'"[[[[[[[[[',
        b'{"a": "\\',
    ],
)
def test_json_that_does_not_close_is_left_to_the_parser(body: bytes) -> None:
    assert json_scan(body, LIMIT) == (False, False)
    assert check_body(body, msgpack=False) == (False, [])


@pytest.mark.parametrize("literals", [b"true", b"false", b"null", b"-1.5e+3", b'"t\\"n[[[[[["'])
def test_json_literals_and_numbers_do_not_hide_depth(literals: bytes) -> None:
    shallow = b"[" + literals + b", [[[" + literals + b"]]]]"
    deep = b"[" + literals + b", [[[[" + literals + b"]]]]]"
    assert json_scan(shallow, LIMIT) == (False, False)
    assert json_scan(deep, LIMIT) == (True, False)


@pytest.mark.parametrize(
    ("text", "control"),
    [
        (b"\\u000B", True),  # encoders may write upper-case hex
        (b"\\u001F", True),
        (b"\\u007F", True),
        (b"\\u009F", True),
        (b"\x7f", True),  # DEL and C1 are legal unescaped in JSON
        (b"\xc2\x85", True),
        (b"\\u0008", True),
        (b"\\b", True),
        (b"\\f", True),
        (b"\\u0009\\u000a\\u000D \\u00e9 \\u1ea1 \\n\\t\\r", False),
        # Escaped backslashes: the scan suspects, decoding clears.
        (b"C:\\\\build \\\\u0000", False),
    ],
)
def test_json_control_escapes_in_any_spelling(text: bytes, control: bool) -> None:
    body = b'{"note": "' + text + b'"}'
    too_deep, suspect = json_scan(body)
    assert not too_deep and suspect >= control
    assert bool(check_body(body, msgpack=False)[1]) == control


def test_scans_of_hostile_bodies_stop_early() -> None:
    assert json_scan(b"[" * 5_000_000) == (True, False)
    assert json_scan(b"[" * 100 + b"]" * 100) == (True, False)
    assert json_scan(b"[]" * 1_000_000) == (False, False)
    assert msgpack_scan(b"\x91" * 5_000_000 + b"\x90") == (True, False)
    assert msgpack_scan(b"\xdd\xff\xff\xff\xff") == (False, False)  # truncated: the decoder says so
    assert msgpack_scan(b"\x92\xc1") == (False, False)  # 0xC1 is never used


def test_paths_name_each_field_in_document_order() -> None:
    value = {"a": {"b c": ["ok", "x\x00"]}, "k\x1b": 1, "ops": [{"note": "tab\tnew\nline\r"}]}
    errors = control_characters(value)
    assert [(e.path, e.code) for e in errors] == [
        ('$.a["b c"][1]', "control_character"),
        ('$["k\\u001b"]', "control_character"),
    ]
    assert "U+0000" in errors[0].message and "name" in errors[1].message
