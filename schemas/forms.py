"""Wire types of PROTOCOL.md "Forms": the normalized form spec, import results, diffs, validation.

Paths: every field carries its XForm path (`/data/visit/violations/kind`); validation errors use the
same path with a 1-based position for each repeat instance (`/data/visit/violations[2]/kind`).
Labels, hints and messages are `{language code: text}` with codes taken from the `(xx)` suffix of
XLSForm language names (`label::Tiếng Việt (vi)` → "vi").
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

from schemas.common import ErrorItem

FieldType = Literal[
    "text",
    "integer",
    "decimal",
    "select_one",
    "select_multiple",
    "date",
    "time",
    "datetime",
    "geopoint",
    "image",
    "audio",
    "file",
    "note",
    "calculate",
    "group",
    "repeat",
]
FIELD_TYPES: tuple[str, ...] = FieldType.__args__  # type: ignore[attr-defined]

Labels = dict[str, str]


class Choice(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    labels: Labels = msgspec.field(default_factory=dict)


class Field(msgspec.Struct, kw_only=True, omit_defaults=True):
    name: str
    path: str
    type: FieldType
    # The XLSForm/XForm type as written (e.g. "start", "barcode"), when `type` is an approximation.
    source_type: str = ""
    labels: Labels = msgspec.field(default_factory=dict)
    hint: Labels = msgspec.field(default_factory=dict)
    choice_list: str | None = None
    choices: list[Choice] = msgspec.field(default_factory=list)
    # False when choices come from a file or another instance the server cannot see.
    choices_known: bool = True
    choice_filter: str | None = None
    required: bool | str = False
    required_message: Labels = msgspec.field(default_factory=dict)
    constraint: str | None = None
    constraint_message: Labels = msgspec.field(default_factory=dict)
    relevant: str | None = None
    calculation: str | None = None
    default: str | None = None
    read_only: bool = False
    sensitive: bool = False
    save_to: str | None = None
    children: list[Field] = msgspec.field(default_factory=list)


class EntityBinding(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One row of the XLSForm `entities` sheet plus the `save_to` columns that feed it."""

    list_name: str
    create_if: str | None = None
    update_if: str | None = None
    label: str | None = None
    entity_id: str | None = None
    properties: dict[str, str] = msgspec.field(default_factory=dict)  # property -> field path


class FormSpec(msgspec.Struct, kw_only=True):
    form_id: str
    title: str
    version: str
    default_language: str
    languages: list[str]
    fields: list[Field]
    entities: list[EntityBinding] = msgspec.field(default_factory=list)
    # The settings sheet's `time_zone` (an IANA name): today() and now() are judged in it instead
    # of the programme's zone. Absent, not null, when the form names none: a spec without it
    # encodes, and so hashes, as before the field existed.
    time_zone: str | UnsetType = UNSET
    # sha256 of the canonical spec JSON with `hash` empty; equal content gives an equal hash.
    hash: str = ""


class ImportIssue(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Where a spreadsheet is broken, in an admin's words; row is the spreadsheet row (1-based)."""

    sheet: str
    message: str
    row: int | None = None
    column: str | None = None


class FormDraft(msgspec.Struct, kw_only=True):
    """What an upload answers: the draft's hash, its fields and non-fatal warnings."""

    hash: str
    fields: list[Field]
    warnings: list[str] = msgspec.field(default_factory=list)


class FieldRef(msgspec.Struct, frozen=True, kw_only=True):
    path: str
    type: FieldType


class Relabel(msgspec.Struct, kw_only=True):
    path: str
    before: Labels
    after: Labels


class TypeChange(msgspec.Struct, frozen=True, kw_only=True):
    path: str
    before: FieldType
    after: FieldType


class ChoicesChange(msgspec.Struct, kw_only=True):
    path: str
    added: list[str] = msgspec.field(default_factory=list)
    removed: list[str] = msgspec.field(default_factory=list)
    relabelled: list[str] = msgspec.field(default_factory=list)


class FormDiff(msgspec.Struct, kw_only=True):
    added: list[FieldRef] = msgspec.field(default_factory=list)
    removed: list[FieldRef] = msgspec.field(default_factory=list)
    relabelled: list[Relabel] = msgspec.field(default_factory=list)
    type_changed: list[TypeChange] = msgspec.field(default_factory=list)
    choices_changed: list[ChoicesChange] = msgspec.field(default_factory=list)


NotCheckedRule = Literal["constraint", "relevant", "required", "choices", "choice_filter"]


class NotChecked(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A rule the server could not decide; it never rejects a submission (push accepts and flags
    it). `expression` is the rule's XPath as the form wrote it, when the rule has one."""

    path: str
    rule: NotCheckedRule
    reason: str
    expression: str | None = None


class ValidationResult(msgspec.Struct, kw_only=True):
    valid: bool
    errors: list[ErrorItem] = msgspec.field(default_factory=list)
    not_checked: list[NotChecked] = msgspec.field(default_factory=list)


ValidationCode = Literal[
    "unknown_field",
    "wrong_type",
    "unknown_choice",
    "required",
    "constraint",
    "not_relevant",
]


# ---- HTTP shapes of the forms API (PROTOCOL.md "Forms") ----------------------------------------

FormState = Literal["open", "closing", "closed"]


class FormListItem(msgspec.Struct, kw_only=True):
    """One entry of the device form list; URLs are version-pinned."""

    form_id: str
    title: str
    version: str
    hash: str
    state: FormState
    entity_lists: list[str]
    spec_url: str
    xform_url: str


class DraftUploaded(msgspec.Struct, kw_only=True):
    form_id: str
    title: str
    draft: FormDraft


class PublishRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    version: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._-]{1,64}$")] | None = None
    force: bool = False


class FormUpdate(msgspec.Struct, kw_only=True, omit_defaults=True):
    state: FormState | None = None
    roles: list[Literal["supervisor", "outreach", "trainer", "inspector", "viewer"]] | None = None


class FormInfo(msgspec.Struct, kw_only=True):
    form_id: str
    title: str
    state: FormState
    roles: list[str]
    current_version: str | None
    has_draft: bool


class FormVersionInfo(msgspec.Struct, kw_only=True):
    form_id: str
    version: str | None
    status: Literal["draft", "published"]
    hash: str
    source_filename: str
    source_kind: str
    created_at: datetime
    published_at: datetime | None


class FormMedia(msgspec.Struct, kw_only=True):
    """A file a form's XForm names (jr://images/…, jr://file-csv/…), as ODK Collect gets it:
    `media` is uploaded by an admin; `entity_list` (`<list>.csv`) and `wards` (`wards.csv`) are
    made by the server for each user."""

    filename: str
    kind: Literal["media", "entity_list", "wards"]
    declared: bool
    uploaded: bool
    content_type: str | None = None
    size: int | None = None
    md5: str | None = None
    uploaded_at: datetime | None = None


class ValidateRequest(msgspec.Struct, kw_only=True):
    data: dict[str, Any]
    language: str = "vi"
