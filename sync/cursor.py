"""Opaque, signed pull cursors (PROTOCOL.md "Pull").

A token is `base64url(msgpack(Cursor)) "." base64url(HMAC-SHA256(key, domain + payload))`, no
padding. The device stores and returns it verbatim; any change to it, another key, or another
device's token is refused. The server decides what `position` means (a change-log position
handed out in commit order) and when a cursor is too old (`reset: "expired"`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Iterable

import msgspec

from schemas.errors import CodedError, ErrorCode

_DOMAIN = b"fieldsync/pull-cursor/v1\x00"  # so the key signs nothing else by accident
MIN_KEY_BYTES = 16


class CursorInvalid(CodedError, ValueError):
    code = ErrorCode.CURSOR_INVALID


class CursorWrongDevice(CodedError, ValueError):
    code = ErrorCode.CURSOR_DEVICE_MISMATCH


class Backfill(msgspec.Struct, frozen=True, array_like=True):
    """A paged snapshot in progress after the user's scope grew.

    `wards`/`lists` are what is being snapshotted, `through_position` the log position the
    snapshot is consistent with, `after` the last log position served of it (keyset paging): the
    log is resumed from `through_position` once the snapshot is done.
    """

    wards: tuple[str, ...]
    lists: tuple[str, ...]
    through_position: int
    after: int = 0


class EvictHeld(msgspec.Struct, frozen=True, array_like=True, tag="held"):
    """First phase: entities now in the part of the scope that left; `after` is the last entity
    id evicted."""

    after: str = ""


class EvictMovedOut(msgspec.Struct, frozen=True, array_like=True, tag="moved"):
    """Then entities that moved out of that part since the cursor: their evict rows in the log,
    which the device no longer reads there; `after` is the last log position read (0: the
    cursor's)."""

    after: int = 0


class EvictConflicts(msgspec.Struct, frozen=True, array_like=True, tag="conflicts"):
    """Last, for supervisors, the conflict records of that part; `after` is the last conflict id
    evicted."""

    after: str = ""


EvictionPhase = EvictHeld | EvictMovedOut | EvictConflicts


class Evicting(msgspec.Struct, frozen=True, array_like=True):
    """Evictions in progress after the scope shrank, paged like everything else.

    Until they are done the cursor keeps the scope the device was served under (`Cursor.wards`,
    `lists`, `scope`). `target` is the scope fingerprint they lead to: if the scope changes again
    meanwhile they restart against the new one. `phase` says where they go on from.
    """

    target: str
    phase: EvictionPhase
    # What the device still holds in full: the old scope narrowed by every scope evicted toward
    # since. Once they are done, whatever of the current scope lies outside it is back-filled
    # (a ward taken away and given back mid-way gets its partly evicted records again).
    wards: tuple[str, ...] = ()
    lists: tuple[str, ...] = ()


class Cursor(msgspec.Struct, frozen=True, array_like=True):
    device_id: str
    position: int
    scope: str  # scope_fingerprint() of the user's wards, role and lists when issued
    issued_at_ms: int
    backfill: Backfill | None = None
    # What the device was served under: a scope change evicts what left and back-fills what came.
    wards: tuple[str, ...] = ()
    lists: tuple[str, ...] = ()
    evicting: Evicting | None = None


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Cursor)


def scope_fingerprint(wards: Iterable[str], role: str, lists: Iterable[str]) -> str:
    """A short stable hash of what a user may see; a change means back-fill or evict."""
    canonical = json.dumps([sorted(set(wards)), role, sorted(set(lists))], separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise CursorInvalid("cursor is not valid base64url") from exc
    # Reject non-canonical spellings, so that no altered token decodes to the same bytes.
    if _b64encode(data) != text:
        raise CursorInvalid("cursor is not canonical base64url")
    return data


def _signature(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, _DOMAIN + payload, hashlib.sha256).digest()


def _check_key(key: bytes) -> None:
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"cursor key must have at least {MIN_KEY_BYTES} bytes")


def encode_cursor(cursor: Cursor, key: bytes) -> str:
    _check_key(key)
    payload = _encoder.encode(cursor)
    return f"{_b64encode(payload)}.{_b64encode(_signature(key, payload))}"


def decode_cursor(token: str, key: bytes, device_id: str) -> Cursor:
    """Verify and open a token presented by `device_id`.

    Raises `CursorInvalid` for anything not signed by `key`, `CursorWrongDevice` for a valid
    cursor that was issued to another device.
    """
    _check_key(key)
    if not token.isascii() or token.count(".") != 1:
        raise CursorInvalid("malformed cursor")
    payload_text, signature_text = token.split(".")
    payload = _b64decode(payload_text)
    if not hmac.compare_digest(_b64decode(signature_text), _signature(key, payload)):
        raise CursorInvalid("cursor signature does not match")
    try:
        cursor = _decoder.decode(payload)
    except msgspec.DecodeError as exc:  # signed by us but of an older layout
        raise CursorInvalid("cursor payload is not understood") from exc
    if cursor.device_id != device_id:
        raise CursorWrongDevice("cursor was issued to another device")
    return cursor
