"""Cutting a PATCH body into staging parts: every byte once, in order, parts of the exact size."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.services import uploads

PART = 7  # small parts, so examples cross many boundaries


@pytest.fixture(autouse=True)
def small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(uploads, "STAGING_PART_SIZE", PART)


@given(
    tail=st.binary(max_size=PART - 1),
    chunks=st.lists(st.binary(max_size=3 * PART), max_size=12),
)
def test_parts_are_the_bytes_in_order(tail: bytes, chunks: list[bytes]) -> None:
    buffer = uploads._PartBuffer(tail)
    parts = []
    for chunk in chunks:
        while (part := buffer.add(chunk)) is not None:
            chunk = b""
            parts.append(part)
        assert len(buffer) < PART
    rest = buffer.take()
    assert all(len(part) == PART for part in parts)
    assert b"".join(parts) + rest == tail + b"".join(chunks)
    assert len(buffer) == 0 and buffer.take() == b""
