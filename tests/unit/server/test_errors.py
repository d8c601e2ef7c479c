"""Errors of the pure packages and of the database drivers answer by their type, not their name:
a subclass answers as its base, and no rename can turn a 4xx into a 500."""

from __future__ import annotations

import asyncpg.exceptions
import pytest
from litestar import get
from litestar.testing import create_test_client

from forms.xlsform import FormTooLarge
from schemas.errors import CodedError, ErrorCode
from server.errors import EXCEPTION_HANDLERS, PROBLEM_JSON
from sync.blobs import BlobKeyInvalid, BlobNotFound, BlobStoreUnavailable
from sync.cursor import CursorInvalid
from sync.hlc import HLCInvalid
from sync.merge import ConflictStale


class TamperedCursor(CursorInvalid):
    """A finer cursor error a later change might add: it must still answer 400."""


class WrongDeviceCursor(CursorInvalid):
    """A subclass with its own code keeps its base's status."""

    code = ErrorCode.CURSOR_DEVICE_MISMATCH


def answer_to(error: Exception) -> tuple[int, dict[str, object], dict[str, str]]:
    @get("/boom", sync_to_thread=False)
    def boom() -> None:
        raise error

    with create_test_client([boom], exception_handlers=EXCEPTION_HANDLERS) as client:
        response = client.get("/boom")
    assert response.headers["content-type"] == PROBLEM_JSON
    return response.status_code, response.json(), dict(response.headers)


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (CursorInvalid("bad"), 400, "cursor_invalid"),
        (TamperedCursor("bad"), 400, "cursor_invalid"),
        (WrongDeviceCursor("bad"), 400, "cursor_device_mismatch"),
        (HLCInvalid("bad"), 400, "hlc_invalid"),
        (ConflictStale("moved on"), 409, "stale"),
        (BlobNotFound("gone"), 404, "blob_not_found"),
        (FormTooLarge([]), 413, "xlsform_too_large"),
    ],
)
def test_pure_errors_answer_by_type(error: CodedError, status: int, code: str) -> None:
    got_status, problem, _ = answer_to(error)
    assert (got_status, problem["code"]) == (status, code)


def test_an_unavailable_blob_store_asks_for_a_retry() -> None:
    status, problem, headers = answer_to(BlobStoreUnavailable("down"))
    assert (status, problem["code"], headers["retry-after"]) == (503, "blob_store_unavailable", "5")


def test_an_unmapped_pure_error_is_an_internal_error_without_its_text() -> None:
    status, problem, _ = answer_to(BlobKeyInvalid("/etc/passwd is not a key"))
    assert (status, problem["code"]) == (500, "internal_error")
    assert "passwd" not in str(problem)


def test_a_database_outage_answers_retry_later() -> None:
    status, problem, headers = answer_to(asyncpg.exceptions.TooManyConnectionsError("full"))
    assert (status, problem["code"], headers["retry-after"]) == (503, "database_unavailable", "5")


def test_bad_data_sent_to_the_database_is_a_bug_not_an_outage() -> None:
    # DataError subclasses the transient InterfaceError: only the exact outage types retry.
    status, problem, _ = answer_to(asyncpg.exceptions.DataError("invalid input"))
    assert (status, problem["code"]) == (500, "internal_error")
