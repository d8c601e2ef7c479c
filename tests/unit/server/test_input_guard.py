"""The input guard's depth scans agree with a real decoder on any document, however it is spelled."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.api.input_guard import json_too_deep, msgpack_too_deep

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


def json_spellings(value: Any) -> list[bytes]:
    """msgspec writes non-ASCII raw; Python's json module escapes everything as \\uXXXX."""
    return [
        msgspec.json.encode(value),
        json.dumps(value).encode(),
        json.dumps(value, ensure_ascii=False, indent=1).encode(),
    ]


@settings(max_examples=400, deadline=None)
@given(documents)
def test_json_depth_scan_agrees_with_the_document(value: Any) -> None:
    for body in json_spellings(value):
        assert json_too_deep(body, LIMIT) == (depth(value) > LIMIT), body


@settings(max_examples=400, deadline=None)
@given(documents)
def test_msgpack_depth_scan_agrees_with_the_document(value: Any) -> None:
    assert msgpack_too_deep(msgspec.msgpack.encode(value), LIMIT) == (depth(value) > LIMIT)


@pytest.mark.parametrize(
    "value",
    [
        "x" * 40,  # str8
        "y" * 300,  # str16
        "z" * 70_000,  # str32
        b"\x00" * 10,  # bin8
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
    deep_after = [[value], [[["x"]]]]
    assert not msgpack_too_deep(msgspec.msgpack.encode(deep_after), 4)
    assert msgpack_too_deep(msgspec.msgpack.encode(deep_after), 3)


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
    assert not json_too_deep(body, LIMIT)


@pytest.mark.parametrize("literals", [b"true", b"false", b"null", b"-1.5e+3", b'"t\\"n[[[[[["'])
def test_json_literals_and_numbers_do_not_hide_depth(literals: bytes) -> None:
    shallow = b"[" + literals + b", [[[" + literals + b"]]]]"
    deep = b"[" + literals + b", [[[[" + literals + b"]]]]]"
    assert not json_too_deep(shallow, LIMIT)
    assert json_too_deep(deep, LIMIT)


def test_scans_of_hostile_bodies_stop_early() -> None:
    assert json_too_deep(b"[" * 5_000_000)
    assert json_too_deep(b"[" * 100 + b"]" * 100)
    assert not json_too_deep(b"[]" * 1_000_000)
    assert msgpack_too_deep(b"\x91" * 5_000_000 + b"\x90")
    assert not msgpack_too_deep(b"\xdd\xff\xff\xff\xff")  # truncated: the decoder says so
    assert not msgpack_too_deep(b"\x92\xc1")  # 0xC1 is never used
