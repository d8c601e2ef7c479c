"""Import of an uploaded XLSForm (.xlsx) or XForm (.xml) into the XForm XML and the normalized spec.

The workbook is checked first with openpyxl so each problem names its sheet, row and column in
words an admin understands; only a workbook that passes is handed to pyxform, whose own errors are
mapped back to a sheet and row when its message says which.
"""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import IO, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import openpyxl
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import iterparse
from msgspec import UNSET
from openpyxl.utils import get_column_letter
from pyxform.errors import PyXFormError
from pyxform.xls2xform import convert

from forms import expressions
from forms.spec import language_code, with_hash
from schemas.errors import CodedError, ErrorCode
from schemas.forms import Choice, EntityBinding, Field, FieldType, FormSpec, ImportIssue

MAX_ISSUES = 200
# What an uploaded workbook may unpack to, checked before openpyxl or pyxform parse it (the
# programme's forms unpack to under 40 KB and span under 3,000 cells): a few thousand questions
# and tens of thousands of choices fit; a decompression bomb does not.
MAX_XLSX_UNPACKED_BYTES = 32 * 1024 * 1024
MAX_XLSX_CELLS = 250_000  # rows x columns a sheet spans, as openpyxl fills it in
MAX_XLSX_ELEMENTS = 4 * MAX_XLSX_CELLS  # XML elements in all: a cell is two or three
_UNPACK_CHUNK = 64 * 1024
_SHEET_NS = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
_CELL_REF = re.compile(r"([A-Za-z]{1,3})(\d+)")

# XLSForm/pyxform type → spec type; anything else is imported as text with a warning.
_TYPE_MAP: dict[str, FieldType] = {
    "text": "text",
    "string": "text",
    "integer": "integer",
    "int": "integer",
    "decimal": "decimal",
    "range": "decimal",
    "select one": "select_one",
    "select all that apply": "select_multiple",
    "select one external": "select_one",
    "date": "date",
    "today": "date",
    "time": "time",
    "datetime": "datetime",
    "dateTime": "datetime",
    "start": "datetime",
    "end": "datetime",
    "geopoint": "geopoint",
    "photo": "image",
    "image": "image",
    "audio": "audio",
    "background-audio": "audio",
    "file": "file",
    "video": "file",
    "note": "note",
    "calculate": "calculate",
    "group": "group",
    "repeat": "repeat",
}
# Metadata and special inputs whose value is a plain string.
_TEXT_LIKE = frozenset(
    {
        "barcode",
        "hidden",
        "acknowledge",
        "deviceid",
        "username",
        "email",
        "phonenumber",
        "simserial",
        "subscriberid",
        "geotrace",
        "geoshape",
        "trigger",
        "start-geopoint",
        "audit",
    }
)
_EXPRESSION_COLUMNS = ("relevant", "constraint", "calculation", "required", "choice_filter")
_ENTITY_EXPRESSION_COLUMNS = ("label", "create_if", "update_if", "entity_id")
_YES = frozenset({"yes", "true", "true()", "1", "y"})
_NO = frozenset({"no", "false", "false()", "0", "n", ""})
_BEGIN = re.compile(r"^begin[ _](group|repeat)$")
_END = re.compile(r"^end[ _](group|repeat)$")
_SELECT = re.compile(
    r"^(select_one|select_multiple|select one|select all that apply|rank)\s+(\S+)"
    r"(\s+(or_other|or specify other|or other))?$"
)
_FROM_FILE = re.compile(r"^(select_one_from_file|select_multiple_from_file|select_one_external)\b")
_PYXFORM_ROW = re.compile(r"\[row\s*:\s*(\d+)\]\s*")
_PYXFORM_SHEET = re.compile(r"'(survey|choices|settings|entities|external_choices)' sheet")
_RELATIVE_REF = re.compile(r"(?<![\w/.])\.\./([A-Za-z_][\w.-]*)")


class FormImportError(CodedError):
    """The upload is not a usable form; `issues` says where and why."""

    code = ErrorCode.XLSFORM_INVALID

    def __init__(self, issues: list[ImportIssue]) -> None:
        self.issues = issues[:MAX_ISSUES]
        summary = "; ".join(_describe(issue) for issue in self.issues[:3])
        super().__init__(f"The form cannot be imported: {summary}")


class FormTooLarge(FormImportError):
    """The workbook unpacks to more bytes or cells than a form has (a decompression bomb)."""

    code = ErrorCode.XLSFORM_TOO_LARGE


def _describe(issue: ImportIssue) -> str:
    where = f"sheet '{issue.sheet}'" if issue.sheet else "file"
    if issue.row is not None:
        where += f", row {issue.row}"
    if issue.column:
        where += f", column {issue.column}"
    return f"{where}: {issue.message}"


@dataclass(frozen=True)
class ImportedForm:
    source: bytes
    filename: str
    source_kind: Literal["xlsform", "xform"]
    xform: str
    spec: FormSpec
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Row:
    number: int  # spreadsheet row, 1-based (header is row 1)
    cells: dict[str, str]  # header (as written, stripped) -> cell text
    letters: dict[str, str]  # header -> column letter

    def get(self, column: str) -> str:
        return self.cells.get(column, "")


@dataclass
class _Sheet:
    title: str
    headers: list[str]
    rows: list[_Row]

    def column(self, header: str) -> str | None:
        for row in self.rows:
            if header in row.letters:
                return row.letters[header]
        return None


def import_form(data: bytes, filename: str) -> ImportedForm:
    """Import either an XLSForm workbook or an XForm XML, chosen by name and content."""
    if filename.lower().endswith(".xml") or data.lstrip()[:1] == b"<":
        from forms.xform import import_xform  # local: keeps the two parsers independent

        return import_xform(data, filename)
    return import_xlsform(data, filename)


def import_xlsform(data: bytes, filename: str) -> ImportedForm:
    if filename.lower().endswith(".xml") or data.lstrip()[:1] == b"<":
        return import_form(data, filename)
    sheets = _read_workbook(data)
    issues = _check_workbook(sheets)
    if issues:
        raise FormImportError(issues)
    warnings: list[str] = []
    try:
        result = convert(data, warnings=warnings, file_type=".xlsx")
    except PyXFormError as error:
        raise FormImportError([_pyxform_issue(str(error))]) from error
    except Exception as error:  # pyxform can fail on odd input with plain Python errors
        raise FormImportError(
            [ImportIssue(sheet="", message=f"The form could not be converted: {error}")]
        ) from error
    assert result._pyxform is not None
    spec = _spec_from_pyxform(result._pyxform, sheets, warnings)
    return ImportedForm(
        source=data,
        filename=filename,
        source_kind="xlsform",
        xform=result.xform,
        spec=spec,
        warnings=[line for w in warnings for line in w.splitlines() if line.strip()],
    )


# --- reading and checking the workbook -------------------------------------------------------


def _cell_text(value: object) -> str:
    if value is None:
        return ""
    if value is True:
        return "TRUE"
    if value is False:
        return "FALSE"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).replace("\xa0", " ").strip()


def _read_workbook(data: bytes) -> dict[str, _Sheet]:
    not_xlsx = ImportIssue(
        sheet="",
        message="This file is not an Excel workbook (.xlsx). Save the form as .xlsx and retry.",
    )
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise FormImportError([not_xlsx])
    _check_unpacked_size(data, not_xlsx)
    try:
        workbook = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as error:  # openpyxl raises many types for a damaged archive
        raise FormImportError([not_xlsx]) from error
    sheets: dict[str, _Sheet] = {}
    try:
        for worksheet in workbook.worksheets:
            rows_iter = worksheet.iter_rows(values_only=True)
            header_values = next(rows_iter, ())
            headers = [_cell_text(v) for v in header_values]
            rows: list[_Row] = []
            for number, values in enumerate(rows_iter, start=2):
                cells: dict[str, str] = {}
                letters: dict[str, str] = {}
                for index, value in enumerate(values):
                    if index < len(headers) and headers[index]:
                        letters[headers[index]] = get_column_letter(index + 1)
                        text = _cell_text(value)
                        if text:
                            cells[headers[index]] = text
                if cells:
                    rows.append(_Row(number=number, cells=cells, letters=letters))
            sheets[worksheet.title.strip().lower()] = _Sheet(worksheet.title, headers, rows)
    finally:
        workbook.close()
    return sheets


def _too_large(message: str) -> FormTooLarge:
    return FormTooLarge([ImportIssue(sheet="", message=message)])


@dataclass
class _Budget:
    """What is left for the whole archive: bytes unpacked, and XML elements read."""

    unpacked_bytes: int = MAX_XLSX_UNPACKED_BYTES
    elements: int = MAX_XLSX_ELEMENTS


class _Unpacked:
    """Reads a zip member, counting the bytes as they are decompressed (the sizes a zip
    declares may lie)."""

    def __init__(self, member: IO[bytes], budget: _Budget) -> None:
        self._member, self._budget = member, budget

    def read(self, size: int = _UNPACK_CHUNK) -> bytes:
        chunk = self._member.read(min(size, _UNPACK_CHUNK) if size > 0 else _UNPACK_CHUNK)
        self._budget.unpacked_bytes -= len(chunk)
        if self._budget.unpacked_bytes < 0:
            mib = MAX_XLSX_UNPACKED_BYTES // (1024 * 1024)
            raise _too_large(f"The workbook unpacks to more than {mib} MiB; a form is far smaller.")
        return chunk


def _check_unpacked_size(data: bytes, not_xlsx: ImportIssue) -> None:
    """Unpack every member once before anything parses it: at most MAX_XLSX_UNPACKED_BYTES in
    all, and no sheet spanning more than MAX_XLSX_CELLS."""
    budget = _Budget()
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for info in archive.infolist():
                with archive.open(info) as member:
                    unpacked = _Unpacked(member, budget)
                    try:
                        _check_sheet_span(unpacked, info.filename, budget)
                    except (ET.ParseError, DefusedXmlException):
                        pass  # not XML (or not safe XML): openpyxl refuses it if it is a sheet
                    while unpacked.read():
                        pass
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError):
        raise FormImportError([not_xlsx]) from None


def _column_number(letters: str) -> int:
    number = 0
    for letter in letters.upper():
        number = number * 26 + ord(letter) - ord("A") + 1
    return number


def _check_sheet_span(unpacked: _Unpacked, name: str, budget: _Budget) -> None:
    """Any worksheet XML (wherever the workbook keeps it): the rows x columns it spans, from its
    dimension and cell references, as openpyxl pads every row to the widest one. Elements are
    dropped once read, so memory stays flat whatever the file holds."""
    max_row = max_col = row = col = 0
    open_elements: list[ET.Element] = []
    for event, element in iterparse(unpacked, events=("start", "end")):
        if event == "end":
            open_elements.pop()
            if open_elements:
                open_elements[-1].clear()  # its finished children are not needed
            continue
        open_elements.append(element)
        budget.elements -= 1
        if budget.elements < 0:
            raise _too_large(f"The workbook holds more than {MAX_XLSX_ELEMENTS} XML elements.")
        tag = element.tag
        if tag == f"{_SHEET_NS}dimension":
            last = _CELL_REF.fullmatch(element.get("ref", "").rsplit(":", 1)[-1])
            if last:
                max_col = max(max_col, _column_number(last[1]))
                max_row = max(max_row, int(last[2]))
        elif tag == f"{_SHEET_NS}row":
            number = element.get("r", "")
            row = int(number) if number.isdigit() else row + 1
            col = 0
        elif tag == f"{_SHEET_NS}c":
            ref = _CELL_REF.fullmatch(element.get("r", ""))
            col = _column_number(ref[1]) if ref else col + 1
        else:
            continue
        max_row, max_col = max(max_row, row), max(max_col, col)
        if max_row * max_col > MAX_XLSX_CELLS:
            raise _too_large(
                f"The worksheet {name} spans more than {MAX_XLSX_CELLS} cells "
                "(rows x columns); a form is far smaller."
            )


def _letter(sheet: _Sheet, header: str) -> str | None:
    if header in sheet.headers:
        return get_column_letter(sheet.headers.index(header) + 1)
    return None


def _check_workbook(sheets: dict[str, _Sheet]) -> list[ImportIssue]:
    survey = sheets.get("survey")
    if survey is None:
        return [
            ImportIssue(
                sheet="survey",
                message="The workbook has no sheet named 'survey'; every XLSForm needs one.",
            )
        ]
    issues: list[ImportIssue] = []
    for header in ("type", "name"):
        if header not in survey.headers:
            issues.append(
                ImportIssue(
                    sheet=survey.title,
                    row=1,
                    message=f"The 'survey' sheet has no '{header}' column in its first row.",
                )
            )
    if issues:
        return issues
    choice_lists = (
        {row.get("list_name") for row in sheets["choices"].rows} if "choices" in sheets else set()
    )
    names: dict[str, int] = {}
    for row in survey.rows:
        name = row.get("name")
        kind = row.get("type")
        if not name or _END.match(kind):
            continue
        if name in names:
            issues.append(
                ImportIssue(
                    sheet=survey.title,
                    row=row.number,
                    column=_letter(survey, "name"),
                    message=f"The field name '{name}' is used twice: rows {names[name]} and "
                    f"{row.number}. Each field needs its own name.",
                )
            )
        else:
            names[name] = row.number
    for row in survey.rows:
        kind = " ".join(row.get("type").split())
        select = _SELECT.match(kind)
        if select and not _FROM_FILE.match(kind) and select.group(2) not in choice_lists:
            issues.append(
                ImportIssue(
                    sheet=survey.title,
                    row=row.number,
                    column=_letter(survey, "type"),
                    message=f"The choice list '{select.group(2)}' does not exist: add rows with "
                    f"list_name '{select.group(2)}' to the 'choices' sheet.",
                )
            )
        for column in _EXPRESSION_COLUMNS:
            text = row.get(column)
            if column == "required" and text.lower() in _YES | _NO:
                continue
            if text:
                issues.extend(_check_expression(text, survey, row, column, names))
    if "entities" in sheets:
        entities = sheets["entities"]
        for row in entities.rows:
            for column in _ENTITY_EXPRESSION_COLUMNS:
                if row.get(column):
                    issues.extend(_check_expression(row.get(column), entities, row, column, names))
    if "settings" in sheets:
        issues.extend(_check_time_zone(sheets["settings"]))
    return issues


def _check_time_zone(settings: _Sheet) -> list[ImportIssue]:
    """The settings sheet's `time_zone`, if given, must name an IANA zone (pyxform ignores it)."""
    row = settings.rows[0] if settings.rows else None
    name = row.get("time_zone") if row else ""
    if not row or not name:
        return []
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return [
            ImportIssue(
                sheet=settings.title,
                row=row.number,
                column=_letter(settings, "time_zone"),
                message=f"The time_zone '{name}' is not a time zone name; write an IANA name "
                "such as Asia/Ho_Chi_Minh or Asia/Tokyo, or leave it empty for the programme's.",
            )
        ]
    return []


def _check_expression(
    text: str, sheet: _Sheet, row: _Row, column: str, names: dict[str, int]
) -> list[ImportIssue]:
    letter = _letter(sheet, column)
    try:
        parsed = expressions.parse_expression(text)
    except expressions.ExpressionSyntaxError as error:
        return [
            ImportIssue(
                sheet=sheet.title,
                row=row.number,
                column=letter,
                message=f"The {column} expression '{text}' cannot be read: {error.message} "
                f"(near character {error.position + 1}).",
            )
        ]
    return [
        ImportIssue(
            sheet=sheet.title,
            row=row.number,
            column=letter,
            message=f"The {column} expression refers to ${{{ref}}}, but no field is named '{ref}'.",
        )
        for ref in sorted(expressions.references(parsed))
        if ref not in names
    ]


def _pyxform_issue(message: str) -> ImportIssue:
    row_match = _PYXFORM_ROW.search(message)
    sheet_match = _PYXFORM_SHEET.search(message)
    return ImportIssue(
        sheet=sheet_match.group(1) if sheet_match else "survey",
        row=int(row_match.group(1)) if row_match else None,
        message=_PYXFORM_ROW.sub("", message).strip(),
    )


# --- building the spec from pyxform's JSON -----------------------------------------------------


def _as_labels(value: object, default_code: str) -> dict[str, str]:
    if isinstance(value, dict):
        labels: dict[str, str] = {}
        for lang, text in value.items():
            code = default_code if lang == "default" else language_code(lang)
            if text and text != "-":
                labels.setdefault(code, str(text))
        return labels
    if value:
        return {default_code: str(value)}
    return {}


def _languages(node: dict[str, Any], found: set[str]) -> None:
    for key in ("label", "hint"):
        if isinstance(node.get(key), dict):
            found.update(node[key])
    for child in node.get("children", []) or []:
        if isinstance(child, dict):
            _languages(child, found)
    for choice in node.get("choices", []) or []:
        if isinstance(choice, dict) and isinstance(choice.get("label"), dict):
            found.update(choice["label"])


def _yes(value: object) -> bool:
    return str(value or "").strip().lower() in _YES


def _required(value: object) -> bool | str:
    text = str(value or "").strip()
    if text.lower() in _YES:
        return True
    if text.lower() in _NO:
        return False
    return text


class _Builder:
    def __init__(
        self,
        root: dict[str, Any],
        default_code: str,
        save_to: dict[str, str],
        warnings: list[str],
    ) -> None:
        self.root = root
        self.default_code = default_code
        self.save_to = save_to
        self.warnings = warnings
        self.names: set[str] = set()

    def expression(self, text: object) -> str | None:
        value = str(text or "").strip()
        if not value:
            return None
        # pyxform writes or_other relevance as `../name`; names are unique so `${name}` is the same.
        return _RELATIVE_REF.sub(
            lambda m: f"${{{m.group(1)}}}" if m.group(1) in self.names else m.group(0), value
        )

    def fields(self, children: list[dict[str, Any]], parent_path: str) -> list[Field]:
        built: list[Field] = []
        for node in children:
            if node.get("type") in ("entity", "attribute", "label"):
                continue  # pyxform's entity plumbing under meta, described by EntityBinding
            built.append(self.field(node, parent_path))
        return built

    def field(self, node: dict[str, Any], parent_path: str) -> Field:
        name = str(node["name"])
        path = f"{parent_path}/{name}"
        source_type = str(node.get("type", "text"))
        kind = _TYPE_MAP.get(source_type)
        if kind is None:
            kind = "text"
            if source_type not in _TEXT_LIKE:
                self.warnings.append(f"Field '{name}': type '{source_type}' is checked as text.")
        bind = node.get("bind") or {}
        choices: list[Choice] = []
        choice_list = node.get("list_name") or None
        choices_known = True
        if kind in ("select_one", "select_multiple"):
            raw = node.get("choices")
            if raw is None and choice_list:
                raw = (self.root.get("choices") or {}).get(choice_list)
            if raw is None:
                choices_known = False  # select_one_from_file / external choices
                choice_list = choice_list or node.get("itemset")
            choices = [
                Choice(name=str(c["name"]), labels=_as_labels(c.get("label"), self.default_code))
                for c in raw or []
            ]
        save_to = self.save_to.get(name)
        return Field(
            name=name,
            path=path,
            type=kind,
            source_type="" if source_type.replace(" ", "_") == kind else source_type,
            labels=_as_labels(node.get("label"), self.default_code),
            hint=_as_labels(node.get("hint"), self.default_code),
            choice_list=choice_list,
            choices=choices,
            choices_known=choices_known,
            choice_filter=self.expression(node.get("choice_filter")),
            required=_required(bind.get("required")),
            required_message=_as_labels(bind.get("jr:requiredMsg"), self.default_code),
            constraint=self.expression(bind.get("constraint")),
            constraint_message=_as_labels(bind.get("jr:constraintMsg"), self.default_code),
            relevant=self.expression(bind.get("relevant")),
            calculation=self.expression(bind.get("calculate")),
            default=str(node["default"]) if node.get("default") not in (None, "") else None,
            read_only=_yes(bind.get("readonly")),
            sensitive=_yes(node.get("sensitive")),
            save_to=save_to.split("#", 1)[-1] if save_to else None,
            children=self.fields(node.get("children") or [], path)
            if kind in ("group", "repeat")
            else [],
        )


def _collect_names(children: list[dict[str, Any]], into: set[str]) -> None:
    for node in children:
        if "name" in node:
            into.add(str(node["name"]))
        _collect_names(node.get("children") or [], into)


def _spec_from_pyxform(
    root: dict[str, Any], sheets: dict[str, _Sheet], warnings: list[str]
) -> FormSpec:
    settings_rows = sheets["settings"].rows if "settings" in sheets else []
    settings = settings_rows[0].cells if settings_rows else {}
    found: set[str] = set()
    _languages(root, found)
    for choice_rows in (root.get("choices") or {}).values():
        for choice in choice_rows:
            if isinstance(choice.get("label"), dict):
                found.update(choice["label"])
    codes = sorted({language_code(name) for name in found if name != "default"})
    declared = settings.get("default_language", "")
    default_code = (
        language_code(declared) if declared else ("vi" if "vi" in codes or not codes else codes[0])
    )
    languages = sorted(set(codes) | {default_code})
    # Vietnamese first: the programme's forms are authored in Vietnamese.
    languages.sort(key=lambda code: (code != default_code, code))

    survey = sheets["survey"]
    save_to = {row.get("name"): row.get("save_to") for row in survey.rows if row.get("save_to")}
    builder = _Builder(root, default_code, save_to, warnings)
    _collect_names(root.get("children") or [], builder.names)
    instance_root = f"/{root.get('name') or 'data'}"
    fields = builder.fields(root.get("children") or [], instance_root)
    entities = _entity_bindings(sheets, fields, builder)
    spec = FormSpec(
        form_id=str(root.get("id_string") or settings.get("form_id") or ""),
        title=str(root.get("title") or settings.get("form_title") or ""),
        version=str(root.get("version") or settings.get("version") or ""),
        default_language=default_code,
        languages=languages,
        fields=fields,
        entities=entities,
        time_zone=settings.get("time_zone") or UNSET,
    )
    return with_hash(spec)


def _entity_bindings(
    sheets: dict[str, _Sheet], fields: list[Field], builder: _Builder
) -> list[EntityBinding]:
    from forms.spec import walk_fields

    if "entities" not in sheets:
        return []
    rows = [row for row in sheets["entities"].rows if row.get("list_name")]
    bindings: list[EntityBinding] = []
    for row in rows:
        list_name = row.get("list_name")
        properties: dict[str, str] = {}
        for f in walk_fields(fields):
            raw = builder.save_to.get(f.name)
            if not raw:
                continue
            target_list, _, prop = raw.rpartition("#")
            if (target_list or rows[0].get("list_name")) == list_name:
                properties[prop] = f.path
        bindings.append(
            EntityBinding(
                list_name=list_name,
                create_if=builder.expression(row.get("create_if")),
                update_if=builder.expression(row.get("update_if")),
                label=builder.expression(row.get("label")),
                entity_id=builder.expression(row.get("entity_id")),
                properties=properties,
            )
        )
    return bindings
