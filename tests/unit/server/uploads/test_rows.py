"""The upload row as a Struct: both shapes of the parts column, and the progress it records."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from server.services.uploads.rows import PartsColumn, Progress, UploadRow, new_row, progress_of
from sync.blobs import StagedPart


def selected(**column: object) -> dict[str, object]:
    """An `upload` row as Piccolo's select hands it back (JSON columns loaded)."""
    at = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
    row = msgspec.to_builtins(
        new_row(
            upload_id="a" * 32,
            user_id="0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
            sha256="ab" * 32,
            length=12_000_000,
            filename="establishment.png",
            content_type="image/png",
            metadata={"sha256": "ab" * 32},
            expiry=timedelta(hours=24),
        ),
        builtin_types=(datetime,),
    )
    return {**row, "created_at": at, "updated_at": at, "expires_at": at, **column}


def test_a_row_with_a_saved_hash_state_gives_its_parts_tail_and_state() -> None:
    column = {"parts": [[1, 5, "e1"], [2, 5, "e2"]], "sha256_state": "c3RhdGU="}
    row = msgspec.convert(
        selected(parts=column, tail_size=3, received=13, sniffed_type="image/png"), UploadRow
    )

    progress = progress_of(row)

    assert progress == Progress(
        parts=[StagedPart(1, 5, "e1"), StagedPart(2, 5, "e2")],
        tail_size=3,
        sniffed_type="image/png",
        hash_state="c3RhdGU=",
    )
    assert progress.received == row.received == 13
    assert json.loads(json.dumps(progress.column())) == column  # what commit_progress writes


def test_a_row_written_before_hash_states_holds_the_bare_list() -> None:
    row = msgspec.convert(selected(parts=[[1, 5, ""]], tail_size=0, received=5), UploadRow)

    assert progress_of(row) == Progress([StagedPart(1, 5, "")], 0, None, None)


def test_a_new_row_has_nothing_staged_and_expires_after_the_expiry() -> None:
    row = msgspec.convert(selected(), UploadRow)

    assert (row.state, row.received, row.staging, row.parts) == ("active", 0, "", [])
    assert progress_of(row).received == 0
    view = row.view()
    assert (view.length, view.offset, view.state) == (12_000_000, 0, "active")


def test_a_row_whose_columns_do_not_fit_is_refused() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(selected(parts={"parts": [[1, "five", ""]]}), UploadRow)
    assert PartsColumn().parts == []
