"""Helpers over the normalized form spec: language codes, hashing, walking fields by name/path."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from zoneinfo import ZoneInfo

import msgspec

from schemas.forms import Field, FormSpec

_LANG_CODE = re.compile(r"\(([A-Za-z]{2,3}(?:-[A-Za-z0-9]+)*)\)\s*$")
CONTAINER_TYPES = frozenset({"group", "repeat"})


def language_code(name: str) -> str:
    """`Tiếng Việt (vi)` → `vi`; a name without a code is kept, lower-cased."""
    match = _LANG_CODE.search(name)
    return match.group(1).lower() if match else name.strip().lower()


def spec_hash(spec: FormSpec) -> str:
    """sha256 of the canonical JSON of the spec with its own hash blanked."""
    canonical = msgspec.json.encode(msgspec.structs.replace(spec, hash=""), order="deterministic")
    return hashlib.sha256(canonical).hexdigest()


def with_hash(spec: FormSpec) -> FormSpec:
    return msgspec.structs.replace(spec, hash=spec_hash(spec))


def walk_fields(fields: list[Field]) -> Iterator[Field]:
    """Every field, depth first, containers before their children."""
    for field in fields:
        yield field
        yield from walk_fields(field.children)


def fields_by_name(spec: FormSpec) -> dict[str, Field]:
    return {field.name: field for field in walk_fields(spec.fields)}


def fields_by_path(spec: FormSpec) -> dict[str, Field]:
    return {field.path: field for field in walk_fields(spec.fields)}


def sensitive_paths(spec: FormSpec) -> list[str]:
    """Paths of fields holding personal data (the `sensitive` column)."""
    return [field.path for field in walk_fields(spec.fields) if field.sensitive]


def zone_of(spec: FormSpec, default: ZoneInfo) -> ZoneInfo:
    """Where the form's today() and now() are judged: its own time zone, else `default` (the
    programme's). The name was checked when the form was imported."""
    return ZoneInfo(spec.time_zone) if spec.time_zone else default


def entity_lists(spec: FormSpec) -> list[str]:
    return [binding.list_name for binding in spec.entities]
