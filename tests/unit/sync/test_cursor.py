from __future__ import annotations

import base64
import hashlib
import hmac

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.cursor import (
    Backfill,
    Cursor,
    CursorInvalid,
    CursorWrongDevice,
    EvictConflicts,
    EvictHeld,
    Evicting,
    EvictMovedOut,
    decode_cursor,
    encode_cursor,
    scope_fingerprint,
)

KEY = b"k" * 32
DEVICE = "0190a1b2-0000-7000-8000-0000000000d1"
OTHER_DEVICE = "0190a1b2-0000-7000-8000-0000000000d2"


def make_cursor(**overrides: object) -> Cursor:
    fields: dict[str, object] = {
        "device_id": DEVICE,
        "position": 1234,
        "scope": scope_fingerprint(["00004", "00007"], "outreach", ["cases"]),
        "issued_at_ms": 1_700_000_000_000,
        "backfill": Backfill(("00007",), ("cases",), through_position=1200, after=1187),
    }
    fields.update(overrides)
    return Cursor(**fields)  # type: ignore[arg-type]


@settings(max_examples=50)
@given(
    position=st.integers(min_value=0, max_value=2**62),
    issued=st.integers(min_value=0, max_value=2**50),
    with_backfill=st.booleans(),
)
def test_round_trip(position: int, issued: int, with_backfill: bool) -> None:
    cursor = make_cursor(
        position=position, issued_at_ms=issued, **({} if with_backfill else {"backfill": None})
    )
    token = encode_cursor(cursor, KEY)
    assert token.isascii() and "=" not in token  # URL- and JSON-safe
    assert decode_cursor(token, KEY, DEVICE) == cursor


def test_every_single_character_change_is_refused() -> None:
    token = encode_cursor(make_cursor(), KEY)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
    for index, original in enumerate(token):
        for replacement in alphabet:
            if replacement == original:
                continue
            tampered = token[:index] + replacement + token[index + 1 :]
            with pytest.raises(CursorInvalid):
                decode_cursor(tampered, KEY, DEVICE)


@settings(max_examples=50)
@given(st.data())
def test_flipping_any_bit_of_the_payload_is_refused(data: st.DataObject) -> None:
    token = encode_cursor(make_cursor(), KEY)
    payload_text, signature = token.split(".")
    payload = bytearray(base64.urlsafe_b64decode(payload_text + "=" * (-len(payload_text) % 4)))
    index = data.draw(st.integers(min_value=0, max_value=len(payload) - 1))
    bit = data.draw(st.integers(min_value=0, max_value=7))
    payload[index] ^= 1 << bit
    forged = base64.urlsafe_b64encode(bytes(payload)).rstrip(b"=").decode() + "." + signature
    with pytest.raises(CursorInvalid):
        decode_cursor(forged, KEY, DEVICE)


@pytest.mark.parametrize(
    "garbage", ["", ".", "abc", "a.b.c", "....", "!!!.???", "ünïcode.x", "AAAA.AAAA"]
)
def test_garbage_is_refused(garbage: str) -> None:
    with pytest.raises(CursorInvalid) as info:
        decode_cursor(garbage, KEY, DEVICE)
    assert info.value.code == "cursor_invalid"


def test_another_key_is_refused() -> None:
    token = encode_cursor(make_cursor(), KEY)
    with pytest.raises(CursorInvalid):
        decode_cursor(token, b"x" * 32, DEVICE)


def test_another_devices_cursor_is_refused() -> None:
    token = encode_cursor(make_cursor(), KEY)
    with pytest.raises(CursorWrongDevice) as info:
        decode_cursor(token, KEY, OTHER_DEVICE)
    assert info.value.code == "cursor_device_mismatch"


def test_short_key_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="at least"):
        encode_cursor(make_cursor(), b"short")


def test_scope_fingerprint_ignores_order_and_duplicates_but_not_content() -> None:
    base = scope_fingerprint(["00004", "00007"], "outreach", ["cases", "tips"])
    assert scope_fingerprint(["00007", "00004", "00004"], "outreach", ["tips", "cases"]) == base
    assert scope_fingerprint(["00004"], "outreach", ["cases", "tips"]) != base
    assert scope_fingerprint(["00004", "00007"], "supervisor", ["cases", "tips"]) != base
    assert scope_fingerprint(["00004", "00007"], "outreach", ["cases"]) != base


@pytest.mark.parametrize(
    "phase", [EvictHeld(), EvictHeld("e-17"), EvictMovedOut(1201), EvictConflicts("c-3")]
)
def test_each_eviction_phase_round_trips(phase: EvictHeld | EvictMovedOut | EvictConflicts) -> None:
    evicting = Evicting(target="f" * 32, phase=phase, wards=("00004",), lists=("cases",))
    cursor = make_cursor(evicting=evicting)
    assert decode_cursor(encode_cursor(cursor, KEY), KEY, DEVICE).evicting == evicting


def _signed(fields: list[object]) -> str:
    """A token of any layout, signed as the server signs one."""
    payload = msgspec.msgpack.encode(fields)
    signature = hmac.new(KEY, b"fieldsync/pull-cursor/v1\x00" + payload, hashlib.sha256).digest()
    return ".".join(base64.urlsafe_b64encode(p).rstrip(b"=").decode() for p in (payload, signature))


def test_a_cursor_of_the_older_layout_is_refused_only_mid_backfill_or_evictions() -> None:
    """Before typed phases a back-fill's `after` was a string and evictions a "e:"/"l:"/"c:"
    string; such cursors are refused (400 cursor_invalid), an idle one still reads."""
    old = [DEVICE, 1234, "s" * 32, 1_700_000_000_000]
    idle = _signed([*old, None, ["00004"], ["cases"], None])
    assert decode_cursor(idle, KEY, DEVICE).position == 1234
    backfilling = _signed([*old, [["00007"], ["cases"], 1200, "1187"], ["00004"], ["cases"], None])
    evicting = _signed([*old, None, ["00004"], ["cases"], ["f" * 32, "e:e-17", [], []]])
    for token in (backfilling, evicting):
        with pytest.raises(CursorInvalid):
            decode_cursor(token, KEY, DEVICE)
