"""A submission's instance XML, as ODK Collect sends it, read by the exact form version's paths.

Two steps, because the form is only known once the XML names it: `read_envelope` parses the
document (defusedxml: no DTD, no entities, so no XML bomb) and reads what the root and `meta`
say (form id, version, instanceID, deprecatedID, encryption); `read_instance` then reads the
answers by the form's field paths into the same JSON shape a native push carries (groups as
objects, repeats as lists, numbers as numbers, select_multiple as a list), plus what only the
XML carries: the files the answers name, when the form was completed, and the `meta/entity`
blocks (odk.md §7.5). Namespace prefixes are ignored when matching names, as Central does
(`orx:meta/orx:instanceID`).
"""

from __future__ import annotations

import re
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from schemas.errors import CodedError, ErrorCode
from schemas.forms import Field, FormSpec

__all__ = [
    "EncryptedEnvelope",
    "EntityDeclaration",
    "Envelope",
    "Instance",
    "InstanceXmlError",
    "normalize_uuid",
    "read_envelope",
    "read_instance",
]

_BINARY_TYPES = frozenset({"image", "audio", "file"})
_INTEGER = re.compile(r"[+-]?\d+")
_DECIMAL = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
# Collect's yes: only "1" and "true" mean it (odk.md §7.5).
_TRUE = frozenset({"1", "true"})


class InstanceXmlError(CodedError, ValueError):
    """The XML is not a submission the server can read (HTTP 400)."""

    code = ErrorCode.SUBMISSION_XML_INVALID


def _local(tag: object) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _attribute(element: ET.Element, name: str) -> str | None:
    """An attribute by local name, whatever its namespace (`version` or `orx:version`)."""
    if name in element.attrib:
        return element.attrib[name]
    for key, value in element.attrib.items():
        if _local(key) == name:
            return value
    return None


def _child(element: ET.Element | None, name: str) -> ET.Element | None:
    if element is None:
        return None
    return next((c for c in element if _local(c.tag) == name), None)


def _text(element: ET.Element | None) -> str:
    return (element.text or "").strip() if element is not None else ""


def normalize_uuid(value: str) -> str | None:
    """`uuid:5B9C…` → `5b9c…`; None unless a UUID in its canonical 36-character form remains."""
    text = value.strip()
    if text[:5].lower() == "uuid:":
        text = text[5:]
    try:
        parsed = uuid.UUID(text)
    except ValueError:
        return None
    return str(parsed) if len(text) == 36 else None


@dataclass(frozen=True)
class EncryptedEnvelope:
    """An encrypted form's manifest (`encrypted="yes"`, odk.md §9.7): stored as received."""

    files: list[str]  # media/file in order (decryption needs it), then encryptedXmlFile
    encrypted_key: str
    encrypted_xml_file: str
    signature: str


@dataclass(frozen=True)
class Envelope:
    """What the document says before its form is known."""

    form_id: str
    version: str
    instance_id: str  # normalized: a bare lower-case UUID
    deprecated_id: str | None
    encrypted: EncryptedEnvelope | None
    root: ET.Element = field(repr=False, compare=False)


def read_envelope(xml: bytes) -> Envelope:
    """Parse the document and read its envelope; InstanceXmlError says what is wrong."""
    try:
        root = fromstring(xml, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as error:
        raise InstanceXmlError(
            f"The submission XML declares a DTD or entities, which are refused ({error})."
        ) from None
    except (ET.ParseError, ValueError) as error:
        raise InstanceXmlError(f"The submission XML is not well-formed: {error}.") from None
    form_id = (_attribute(root, "id") or "").strip()
    if not form_id:
        raise InstanceXmlError("The submission XML names no form: its root has no id attribute.")
    meta = _child(root, "meta")
    raw_id = _text(_child(meta, "instanceID")) or _text(_child(root, "instanceID"))
    if not raw_id:
        raise InstanceXmlError("The submission XML has no meta/instanceID.")
    instance_id = normalize_uuid(raw_id)
    if instance_id is None:
        raise InstanceXmlError(f"meta/instanceID {raw_id[:80]!r} is not a UUID.")
    raw_deprecated = _text(_child(meta, "deprecatedID"))
    deprecated_id = normalize_uuid(raw_deprecated) if raw_deprecated else None
    if raw_deprecated and deprecated_id is None:
        raise InstanceXmlError(f"meta/deprecatedID {raw_deprecated[:80]!r} is not a UUID.")
    encrypted = None
    if (_attribute(root, "encrypted") or "").strip().lower() == "yes":
        encrypted = _encrypted(root)
    return Envelope(
        form_id=form_id,
        version=(_attribute(root, "version") or "").strip(),
        instance_id=instance_id,
        deprecated_id=deprecated_id,
        encrypted=encrypted,
        root=root,
    )


def _encrypted(root: ET.Element) -> EncryptedEnvelope:
    media = [
        _text(f) for m in root if _local(m.tag) == "media" for f in m if _local(f.tag) == "file"
    ]
    xml_file = _text(_child(root, "encryptedXmlFile"))
    key = _text(_child(root, "base64EncryptedKey"))
    if not xml_file or not key:
        raise InstanceXmlError(
            "An encrypted submission needs base64EncryptedKey and encryptedXmlFile."
        )
    files = [name for name in media if name]
    return EncryptedEnvelope(
        files=list(dict.fromkeys([*files, xml_file])),
        encrypted_key=key,
        encrypted_xml_file=xml_file,
        signature=_text(_child(root, "base64EncryptedElementSignature")),
    )


@dataclass(frozen=True)
class EntityDeclaration:
    """One `meta/entity` block (odk.md §7.5): which entity, and what the form saw of it."""

    dataset: str
    entity_id: str | None  # normalized; None when the id is missing or not a UUID
    raw_id: str
    create: bool
    update: bool
    base_version: int | None
    trunk_version: int | None
    branch_id: str | None
    label: str | None


@dataclass
class Instance:
    """The answers, as a native push carries them, and what only the XML says."""

    data: dict[str, Any]
    files: list[str]  # file names the binary answers name, in order, once each
    completed: str | None  # meta/timeEnd, else the `end` field, else `start`: ISO 8601 as sent
    entities: list[EntityDeclaration]
    # The text of every answer outside repeats, by XForm path: entity properties are read here.
    texts: dict[str, str]

    def completed_at(self, zone: tzinfo) -> datetime | None:
        """When the form was completed; a time without an offset is read in `zone`."""
        if not self.completed:
            return None
        try:
            moment = datetime.fromisoformat(self.completed)
        except ValueError:
            return None
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=zone)


def read_instance(envelope: Envelope, spec: FormSpec) -> Instance:
    """Read the answers by `spec`'s paths. Elements the form does not declare are kept (the
    validation reports them as unknown fields), except OpenRosa's own metadata under `meta`."""
    reader = _Reader()
    root = envelope.root
    root_path = f"/{_local(root.tag)}"
    data = reader.group(root, spec.fields, root_path, in_repeat=False)
    meta = _child(root, "meta")
    completed = _text(_child(meta, "timeEnd")) or None
    if completed is None:
        for kind in ("end", "start"):
            found = next(
                (
                    f
                    for f in spec.fields
                    if f.source_type == kind or (f.name == kind and f.type == "datetime")
                ),
                None,
            )
            if found is not None and reader.texts.get(found.path):
                completed = reader.texts[found.path]
                break
    return Instance(
        data=data,
        files=list(dict.fromkeys(reader.files)),
        completed=completed,
        entities=[
            _entity(entity)
            for element in root.iter()
            if _local(element.tag) == "meta"
            for entity in element
            if _local(entity.tag) == "entity"
        ],
        texts=reader.texts,
    )


def _entity(element: ET.Element) -> EntityDeclaration:
    def number(name: str) -> int | None:
        text = (_attribute(element, name) or "").strip()
        return int(text) if text.isdigit() else None

    raw_id = (_attribute(element, "id") or "").strip()
    label = _child(element, "label")
    branch = (_attribute(element, "branchId") or "").strip()
    return EntityDeclaration(
        dataset=(_attribute(element, "dataset") or "").strip(),
        entity_id=normalize_uuid(raw_id) if raw_id else None,
        raw_id=raw_id,
        create=(_attribute(element, "create") or "").strip().lower() in _TRUE,
        update=(_attribute(element, "update") or "").strip().lower() in _TRUE,
        base_version=number("baseVersion"),
        trunk_version=number("trunkVersion"),
        branch_id=branch or None,
        label=(label.text or "").strip() if label is not None and label.text else None,
    )


class _Reader:
    def __init__(self) -> None:
        self.files: list[str] = []
        self.texts: dict[str, str] = {}

    def group(
        self, element: ET.Element, fields: list[Field], path: str, *, in_repeat: bool
    ) -> dict[str, Any]:
        declared = {f.name: f for f in fields}
        values: dict[str, Any] = {}
        repeats: dict[str, list[Any]] = {}
        for child in element:
            name = _local(child.tag)
            declaration = declared.get(name)
            child_path = f"{path}/{name}"
            if declaration is None:
                if name == "meta" or _local(element.tag) == "meta":
                    continue  # OpenRosa metadata the form does not declare (entity, timeEnd…)
                values[name] = self.undeclared(child)
                continue
            if declaration.type == "repeat":
                item = self.group(child, declaration.children, child_path, in_repeat=True)
                repeats.setdefault(name, []).append(item)
            elif declaration.type == "group":
                inner = self.group(child, declaration.children, child_path, in_repeat=in_repeat)
                if inner:
                    values[name] = inner
            else:
                text = (child.text or "").strip()
                if not in_repeat and text:
                    self.texts[child_path] = text
                if text:
                    values[name] = _typed(declaration, text)
                    if declaration.type in _BINARY_TYPES:
                        self.files.append(text)
        values.update(repeats)
        return values

    def undeclared(self, element: ET.Element) -> Any:
        if len(element) == 0:
            return (element.text or "").strip()
        return {_local(c.tag): self.undeclared(c) for c in element}


def _typed(declaration: Field, text: str) -> Any:
    """The answer as a native device sends it; text that does not fit stays text (the
    validation then reports `wrong_type`)."""
    kind = declaration.type
    if kind == "integer" and _INTEGER.fullmatch(text):
        return int(text)
    if kind == "decimal" and _DECIMAL.fullmatch(text):
        return float(text)
    if kind == "select_multiple":
        return text.split()
    return text
