"""The savable SHA-256: a state saved after some bytes resumes to hashlib's digest, and a state
that does not fit the row is never trusted."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.services.uploads.hashing import Sha256Hashing, saved_state

SAVABLE = Sha256Hashing.load()
needs_libcrypto = pytest.mark.skipif(
    not SAVABLE.savable, reason="libcrypto's SHA256_* API is not reachable here"
)


@needs_libcrypto
@settings(max_examples=50)
@given(first=st.binary(max_size=300), rest=st.binary(max_size=300))
def test_a_saved_state_resumes_to_the_digest_of_all_bytes(first: bytes, rest: bytes) -> None:
    hasher = SAVABLE.new()
    hasher.update(first)
    state = saved_state(hasher)

    resumed = SAVABLE.restored(state, len(first))

    assert resumed is not None
    resumed.update(rest)
    assert resumed.hexdigest() == hashlib.sha256(first + rest).hexdigest()


@needs_libcrypto
def test_copies_and_digests_leave_the_hasher_unchanged() -> None:
    hasher = SAVABLE.new()
    hasher.update(b"field")
    copy = hasher.copy()
    copy.update(b" notes")

    assert hasher.hexdigest() == hashlib.sha256(b"field").hexdigest()
    hasher.update(b" notes")
    assert hasher.hexdigest() == copy.hexdigest() == hashlib.sha256(b"field notes").hexdigest()


@needs_libcrypto
def test_a_state_that_does_not_fit_the_row_is_not_restored() -> None:
    hasher = SAVABLE.new()
    hasher.update(b"x" * 100)
    state = saved_state(hasher)
    assert state is not None

    assert SAVABLE.restored(state, 99) is None  # the row counts other bytes
    assert SAVABLE.restored(None, 0) is None
    assert SAVABLE.restored("", 0) is None
    assert SAVABLE.restored("not base64!", 100) is None
    assert SAVABLE.restored(base64.b64encode(b"short").decode(), 100) is None


def test_without_libcrypto_nothing_is_saved_or_restored() -> None:
    hashing = Sha256Hashing(libcrypto=None)
    hasher = hashing.new()
    hasher.update(b"photo")

    assert not hashing.savable
    assert hasher.hexdigest() == hashlib.sha256(b"photo").hexdigest()
    assert saved_state(hasher) is None
    assert saved_state(None) is None
    assert hashing.restored(saved_state(SAVABLE.new()), 0) is None
