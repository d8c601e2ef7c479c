"""The forms Collect may list and download: each open form the caller fills, at its current
version, with the md5 of exactly the XForm bytes served and the media files it declares.

Published versions never change, so a version's md5 and declared media are computed once and
kept (the form list is asked for on every refresh, the XForm text is large).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import unescape

from schemas.errors import ErrorCode
from server.auth import Principal
from server.db.engine import current_engine
from server.db.tables_forms import Form, FormVersion
from server.errors import NotFound
from server.openrosa.documents import FormListEntry, md5_hash, url
from server.permissions import can
from server.services.forms import form_scope

# Where an XForm names a file Collect must have beside it: secondary instances
# (`jr://file-csv/establishments.csv`, `jr://file/items.xml`) and itext media.
_MEDIA_REFERENCE = re.compile(r"jr://(?:images|audio|video|file|file-csv)/([^\"'<>\s]+)")
CACHE_SIZE = 256


@dataclass(frozen=True)
class PublishedXForm:
    form_id: str
    version: str
    md5: str
    media: tuple[str, ...]  # declared file names, in the order the XForm names them


_published: dict[tuple[int, str], PublishedXForm] = {}


def declared_media(xform: str) -> tuple[str, ...]:
    """The file names an XForm refers to, each once, in order; none with a directory part
    (Collect keeps only the name) or `..`."""
    names: dict[str, None] = {}
    for match in _MEDIA_REFERENCE.finditer(xform):
        name = unescape(match.group(1), {"&quot;": '"', "&apos;": "'"}).rsplit("/", 1)[-1]
        if name and name not in ("..", "."):
            names.setdefault(name)
    return tuple(names)


def _version_key(form_id: str, version: str) -> str:
    return f"{form_id}@{version}"


def _remember(form_id: str, version: str, xform: str) -> PublishedXForm:
    published = PublishedXForm(
        form_id=form_id,
        version=version,
        md5=md5_hash(xform.encode("utf-8")),
        media=declared_media(xform),
    )
    if len(_published) >= CACHE_SIZE:
        _published.pop(next(iter(_published)))
    _published[(id(current_engine()), _version_key(form_id, version))] = published
    return published


async def published_versions(forms: list[dict[str, Any]]) -> dict[str, PublishedXForm]:
    """The current version of each form row (by form_id), reading only what is not kept yet."""
    engine = id(current_engine())
    found: dict[str, PublishedXForm] = {}
    missing = []
    for form in forms:
        key = _version_key(form["form_id"], form["current_version"])
        if (engine, key) in _published:
            found[form["form_id"]] = _published[(engine, key)]
        else:
            missing.append(key)
    if missing:
        rows = await FormVersion.select(
            FormVersion.form, FormVersion.version, FormVersion.xform
        ).where(FormVersion.key.is_in(missing))
        for row in rows:
            found[row["form"]] = _remember(row["form"], row["version"], row["xform"])
    return found


async def fillable_forms(principal: Principal, *, open_only: bool) -> list[dict[str, Any]]:
    """Published forms the caller fills; with `open_only`, those taking submissions now (a
    closing form is not offered to new tablets)."""
    query = Form.select().where(Form.current_version.is_not_null())
    if open_only:
        query = query.where(Form.state == "open")
    return [f for f in await query if can(principal, "form.fill", form_scope(f))]


async def form_list(principal: Principal, base: str, only: str | None) -> list[FormListEntry]:
    """The `<xforms>` entries: open forms the caller fills (only `only`, if given), by name."""
    forms = await fillable_forms(principal, open_only=True)
    if only is not None:
        forms = [f for f in forms if f["form_id"] == only]
    published = await published_versions(forms)
    entries = []
    for form in forms:
        form_id = form["form_id"]
        xform = published[form_id]
        entries.append(
            FormListEntry(
                form_id=form_id,
                name=form["title"] or form_id,
                version=xform.version,
                hash=xform.md5,
                download_url=url(base, "forms", f"{form_id}.xml"),
                manifest_url=url(base, "forms", form_id, "manifest") if xform.media else None,
            )
        )
    return sorted(entries, key=lambda e: (e.name, e.form_id))


async def fillable_form(
    principal: Principal, form_id: str
) -> tuple[dict[str, Any], PublishedXForm]:
    """A published form the caller fills, whatever its state (a tablet that has it may still
    need its media); others are hidden, as on the native API."""
    form = await Form.select().where(Form.form_id == form_id).first()
    if (
        form is None
        or form["current_version"] is None
        or not can(principal, "form.fill", form_scope(form))
    ):
        raise NotFound(f"There is no form {form_id!r}.", code=ErrorCode.FORM_UNKNOWN)
    return form, (await published_versions([form]))[form_id]


async def xform_bytes(principal: Principal, form_id: str) -> bytes:
    """The current version's XForm, exactly the bytes the form list hashed."""
    form, _ = await fillable_form(principal, form_id)
    row = await (
        FormVersion.select(FormVersion.xform)
        .where(FormVersion.key == _version_key(form_id, form["current_version"]))
        .first()
    )
    assert row is not None
    return str(row["xform"]).encode("utf-8")
