"""Cutting a PATCH body into staging parts: every byte once, in order, parts of the exact size."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from server.services.uploads.pipeline import PartBuffer

PART = 7  # small parts, so examples cross many boundaries


@given(
    tail=st.binary(max_size=PART - 1),
    chunks=st.lists(st.binary(max_size=3 * PART), max_size=12),
)
def test_parts_are_the_bytes_in_order(tail: bytes, chunks: list[bytes]) -> None:
    buffer = PartBuffer(tail, part_size=PART)
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
