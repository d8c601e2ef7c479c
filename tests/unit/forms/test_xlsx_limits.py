"""Workbooks are unpacked under limits before anything parses them: decompression bombs are refused."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from forms.xlsform import (
    MAX_XLSX_CELLS,
    MAX_XLSX_ELEMENTS,
    MAX_XLSX_UNPACKED_BYTES,
    FormTooLarge,
    import_form,
)
from tests.unit.forms.xlsforms import with_first_sheet_edited

TEMPLATE = Path(__file__).parents[3] / "forms" / "templates" / "inspection.xlsx"


def inspection_with(old: bytes, new: bytes) -> bytes:
    return with_first_sheet_edited(TEMPLATE.read_bytes(), old, new)


def test_whitespace_past_the_unpacked_limit_is_refused_before_parsing() -> None:
    padding = b" " * (MAX_XLSX_UNPACKED_BYTES + 1)
    bomb = inspection_with(b"<sheetData>", b"<sheetData>" + padding)
    assert len(bomb) < 200_000  # deflates to almost nothing

    started = time.monotonic()
    with pytest.raises(FormTooLarge, match="unpacks to more than 32 MiB"):
        import_form(bomb, "inspection.xlsx")
    assert time.monotonic() - started < 5


def test_whitespace_within_the_limit_is_still_a_form() -> None:
    padding = b" " * (MAX_XLSX_UNPACKED_BYTES // 2)

    imported = import_form(
        inspection_with(b"<sheetData>", b"<sheetData>" + padding), "inspection.xlsx"
    )

    assert imported.spec.form_id == "inspection"


def test_a_sheet_spanning_too_many_cells_is_refused() -> None:
    # Two cells in the file, but openpyxl would fill in a million rows of 26 columns.
    far = b'<row r="1000000"><c r="Z1000000" t="inlineStr"><is><t>x</t></is></c></row>'
    with pytest.raises(FormTooLarge, match=f"spans more than {MAX_XLSX_CELLS} cells"):
        import_form(inspection_with(b"</sheetData>", far + b"</sheetData>"), "inspection.xlsx")


def test_a_declared_dimension_counts_too() -> None:
    with pytest.raises(FormTooLarge, match="spans more than"):
        import_form(
            inspection_with(b"<sheetData>", b'<dimension ref="A1:XFD1048576"/><sheetData>'),
            "inspection.xlsx",
        )


def test_a_flood_of_tiny_elements_is_refused() -> None:
    flood = b"<extLst>" + b"<ext/>" * (MAX_XLSX_ELEMENTS + 1) + b"</extLst>"
    with pytest.raises(FormTooLarge, match="XML elements"):
        import_form(inspection_with(b"</worksheet>", flood + b"</worksheet>"), "inspection.xlsx")
