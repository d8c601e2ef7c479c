"""Builds XLSForm workbooks for the tests with openpyxl (a compact row format, two languages)."""

from __future__ import annotations

import io
import zipfile
from typing import Any

import openpyxl

VI = "Tiếng Việt (vi)"
EN = "English (en)"


def xlsform(
    survey: list[dict[str, str]],
    choices: list[tuple[str, str, str]] | None = None,
    *,
    form_id: str = "test_form",
    version: str = "1",
    entities: list[dict[str, str]] | None = None,
    plain_labels: bool = False,
    extra_sheets: dict[str, list[list[Any]]] | None = None,
    sheet_name: str = "survey",
    settings: dict[str, str] | None = None,
) -> bytes:
    """A workbook from survey rows; `label`, `hint` and `*_message` get vi and en columns;
    `settings` adds columns to the settings sheet (e.g. `time_zone`)."""
    localized = ("label", "hint", "constraint_message", "required_message")
    headers: list[str] = ["type", "name"]
    for row in survey:
        for key in row:
            if key in localized and not plain_labels:
                for lang in (VI, EN):
                    if f"{key}::{lang}" not in headers:
                        headers.append(f"{key}::{lang}")
            elif key not in headers:
                headers.append(key)
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = sheet_name
    sheet.append(headers)
    for row in survey:
        values: list[Any] = []
        for header in headers:
            key, _, lang = header.partition("::")
            text = row.get(key, "")
            if lang == EN and text:
                text = row.get(f"{key}_en", f"{text} (en)")
            values.append(text or None)
        sheet.append(values)
    if choices:
        sheet = book.create_sheet("choices")
        extra = sorted({k for c in choices if len(c) > 3 for k in c[3]})  # type: ignore[misc]
        if plain_labels:
            sheet.append(["list_name", "name", "label", *extra])
        else:
            sheet.append(["list_name", "name", f"label::{VI}", f"label::{EN}", *extra])
        for choice in choices:
            filters = [choice[3].get(k) for k in extra] if len(choice) > 3 else []  # type: ignore[misc]
            labels = [choice[2]] if plain_labels else [choice[2], f"{choice[2]} (en)"]
            sheet.append([choice[0], choice[1], *labels, *filters])
    more = settings or {}
    sheet = book.create_sheet("settings")
    sheet.append(["form_id", "version", "form_title", "default_language", *more])
    sheet.append(
        [form_id, version, f"Form {form_id}", None if plain_labels else VI, *more.values()]
    )
    if entities:
        sheet = book.create_sheet("entities")
        columns = ["list_name", "label", "create_if", "update_if", "entity_id"]
        sheet.append(columns)
        for entity in entities:
            sheet.append([entity.get(c) or None for c in columns])
    for name, rows in (extra_sheets or {}).items():
        sheet = book.create_sheet(name)
        for values in rows:
            sheet.append(values)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def q(kind: str, name: str, label: str = "", **columns: str) -> dict[str, str]:
    return {"type": kind, "name": name, "label": label or name, **columns}


def end(kind: str) -> dict[str, str]:
    return {"type": f"end_{kind}"}


def with_first_sheet_edited(workbook: bytes, old: bytes, new: bytes) -> bytes:
    """The workbook again, its first worksheet's XML with `old` replaced by `new` (deflated)."""
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(workbook)) as source,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target,
    ):
        for name in source.namelist():
            data = source.read(name)
            if name == "xl/worksheets/sheet1.xml":
                assert old in data
                data = data.replace(old, new, 1)
            target.writestr(name, data)
    return out.getvalue()
