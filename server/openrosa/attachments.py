"""The files a form declares, as Collect fetches them (odk.md §6, §7): entity lists as CSV, the
caller's wards as `wards.csv`, and media an admin uploaded.

- `<list>.csv`, where `<list>` is an entity list: `name,label,__version,<properties>` with the
  current, non-deleted entities of the caller's wards only. Its hash is the md5 of those bytes;
  to keep the manifest cheap it is remembered against the newest change-log position of that
  list in those wards, which moves with every change that could alter the file (an entity
  written, deleted, or moved out of one of the wards leaves a row there).
- `wards.csv`: `name,label` (ward code, ward name) of the caller's own wards; the programme's
  forms pick the ward by name from it.
- anything else the form names: the bytes an admin uploaded (PUT /api/v1/forms/{id}/media/…);
  not listed until uploaded.
"""

from __future__ import annotations

import csv
import hashlib
import io
import mimetypes
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec
from piccolo.query.functions.aggregate import Max

from schemas.errors import ErrorCode
from schemas.forms import FormMedia
from server.auth import Principal
from server.db.engine import current_engine, transaction
from server.db.json_columns import from_json
from server.db.tables import Ward
from server.db.tables_forms import Form, FormAttachment, FormVersion
from server.db.tables_sync import ChangeLog, Entity
from server.errors import Conflict, NotFound
from server.openrosa.catalog import (
    declared_media,
    fillable_form,
    fillable_forms,
    published_versions,
)
from server.openrosa.documents import MediaFile, md5_hash, url
from server.services import audit
from server.services.entity_lists import get_list, lists_for_role
from sync.merge import EntityListDef

WARDS_FILE = "wards.csv"
ENTITY_COLUMNS = ("name", "label", "__version")
# Entity-list hashes kept: one per (list, ward set, change-log position) asked about.
HASH_CACHE_SIZE = 1024
# Integrity questions are answered a slice of ids at a time (SQLite binds at most 32766).
ID_CHUNK = 500

Kind = Literal["entity_list", "wards", "media"]


@dataclass(frozen=True)
class Served:
    content: bytes
    content_type: str


# ---- what a declared file is -------------------------------------------------------------------


async def kind_of(filename: str) -> tuple[Kind, EntityListDef | None]:
    if filename == WARDS_FILE:
        return "wards", None
    if filename.endswith(".csv"):
        listdef = await get_list(filename.removesuffix(".csv"))
        if listdef is not None:
            return "entity_list", listdef
    return "media", None


# ---- entity lists ------------------------------------------------------------------------------


class _CsvEntity(msgspec.Struct):
    """What the CSV needs of a stored EntityState."""

    label: str | None = None
    properties: dict[str, Any] = msgspec.field(default_factory=dict)


def _cell(value: Any) -> str:
    """A property as Collect's forms compare it: select_multiple space-separated, as in XForms."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return " ".join(_cell(v) for v in value)
    if isinstance(value, dict):
        return msgspec.json.encode(value).decode()
    return str(value)


def _csv(header: Iterable[str], rows: Iterable[Iterable[str]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")


def _ward_filter(principal: Principal) -> list[str] | None:
    """The wards whose records the caller sees; None for every ward."""
    return None if principal.city_wide else sorted(principal.wards)


async def entity_list_csv(principal: Principal, listdef: EntityListDef) -> bytes:
    """Current, non-deleted entities of the caller's wards, by id (a stable order: stable bytes)."""
    query = Entity.select(Entity.entity_id, Entity.version, Entity.state).where(
        Entity.list == listdef.name, Entity.deleted.eq(False)
    )
    wards = _ward_filter(principal)
    if wards is not None:
        query = query.where(Entity.ward_code.is_in(wards or [""]))
    properties = list(listdef.properties)
    rows = []
    for row in await query.order_by(Entity.entity_id):
        entity = from_json(row["state"], _CsvEntity)
        rows.append(
            [
                row["entity_id"],
                entity.label or row["entity_id"],  # Collect lists entities by label
                str(row["version"]),
                *(_cell(entity.properties.get(p)) for p in properties),
            ]
        )
    return _csv([*ENTITY_COLUMNS, *properties], rows)


_list_hashes: dict[tuple[Any, ...], str] = {}


async def entity_list_hash(principal: Principal, listdef: EntityListDef) -> str:
    """The md5 of `entity_list_csv` for this caller, recomputed only when the list moved on in
    the caller's wards."""
    wards = _ward_filter(principal)
    query = ChangeLog.select(Max(ChangeLog.position, alias="newest")).where(
        ChangeLog.list == listdef.name
    )
    if wards is not None:
        query = query.where(ChangeLog.ward_code.is_in(wards or [""]))
    newest = (await query)[0]["newest"] or 0
    ward_key = None if wards is None else tuple(wards)
    key = (id(current_engine()), listdef.name, tuple(listdef.properties), ward_key, newest)
    known = _list_hashes.get(key)
    if known is None:
        known = md5_hash(await entity_list_csv(principal, listdef))
        if len(_list_hashes) >= HASH_CACHE_SIZE:
            _list_hashes.pop(next(iter(_list_hashes)))
        _list_hashes[key] = known
    return known


async def wards_csv(principal: Principal) -> bytes:
    query = Ward.select(Ward.code, Ward.name).order_by(Ward.code)
    wards = _ward_filter(principal)
    if wards is not None:
        query = query.where(Ward.code.is_in(wards or [""]))
    return _csv(("name", "label"), ([r["code"], r["name"]] for r in await query))


# ---- manifest and downloads --------------------------------------------------------------------


async def manifest(principal: Principal, form_id: str, base: str) -> list[MediaFile]:
    """The files Collect should hold for the form, each with the hash of what it would get."""
    _, xform = await fillable_form(principal, form_id)
    uploaded = await _uploaded_hashes(form_id)
    files = []
    for filename in xform.media:
        download = url(base, "forms", form_id, "attachments", filename)
        kind, listdef = await kind_of(filename)
        if listdef is not None:
            files.append(
                MediaFile(
                    filename=filename,
                    hash=await entity_list_hash(principal, listdef),
                    download_url=download,
                    integrity_url=url(base, "lists", listdef.name, "integrity"),
                )
            )
        elif kind == "wards":
            files.append(MediaFile(filename, md5_hash(await wards_csv(principal)), download))
        elif filename in uploaded:
            files.append(MediaFile(filename, "md5:" + uploaded[filename], download))
    return files


async def attachment(principal: Principal, form_id: str, filename: str) -> Served:
    _, xform = await fillable_form(principal, form_id)
    if filename not in xform.media:
        raise _no_attachment(form_id, filename)
    kind, listdef = await kind_of(filename)
    if listdef is not None:
        return Served(await entity_list_csv(principal, listdef), "text/csv")
    if kind == "wards":
        return Served(await wards_csv(principal), "text/csv")
    row = await (
        FormAttachment.select(FormAttachment.content, FormAttachment.content_type)
        .where(FormAttachment.key == _media_key(form_id, filename))
        .first()
    )
    if row is None:
        raise _no_attachment(form_id, filename)
    return Served(bytes(row["content"]), row["content_type"])


def _no_attachment(form_id: str, filename: str) -> NotFound:
    return NotFound(
        f"The form {form_id!r} has no file {filename!r}.",
        code=ErrorCode.FORM_ATTACHMENT_NOT_FOUND,
    )


# ---- integrity ---------------------------------------------------------------------------------


async def readable_list(principal: Principal, name: str) -> EntityListDef:
    """A list the caller reads: one its role reads, or one a form it fills declares."""
    listdef = await get_list(name)
    if listdef is not None:
        if name in await lists_for_role(principal.role):
            return listdef
        forms = await fillable_forms(principal, open_only=False)
        published = await published_versions(forms)
        if any(f"{name}.csv" in xform.media for xform in published.values()):
            return listdef
    raise NotFound(f"There is no entity list {name!r}.", code=ErrorCode.NOT_FOUND)


async def integrity(
    principal: Principal, name: str, ids: list[str] | None
) -> list[tuple[str, bool]]:
    """(id, deleted) of the asked entities the server knows (others are left out, odk.md §7.4):
    deleted, or out of the caller's wards, counts as deleted. Without ids: the caller's
    entities of the list."""
    listdef = await readable_list(principal, name)
    columns = (Entity.entity_id, Entity.ward_code, Entity.deleted)
    if ids is None:
        query = Entity.select(*columns).where(Entity.list == listdef.name)
        wards = _ward_filter(principal)
        if wards is not None:
            query = query.where(Entity.ward_code.is_in(wards or [""]))
        rows = await query.order_by(Entity.entity_id)
    else:
        wanted = list(dict.fromkeys(i.removeprefix("uuid:") for i in ids if i))
        rows = []
        for start in range(0, len(wanted), ID_CHUNK):
            rows.extend(
                await Entity.select(*columns).where(
                    Entity.list == listdef.name,
                    Entity.entity_id.is_in(wanted[start : start + ID_CHUNK]),
                )
            )
        order = {entity_id: n for n, entity_id in enumerate(wanted)}
        rows.sort(key=lambda r: order[r["entity_id"]])
    return [
        (r["entity_id"], bool(r["deleted"]) or not principal.may_see_ward(r["ward_code"]))
        for r in rows
    ]


# ---- media an admin uploads --------------------------------------------------------------------


def _media_key(form_id: str, filename: str) -> str:
    return f"{form_id}/{filename}"


async def _uploaded_hashes(form_id: str) -> dict[str, str]:
    rows = await FormAttachment.select(FormAttachment.filename, FormAttachment.md5).where(
        FormAttachment.form == form_id
    )
    return {r["filename"]: r["md5"] for r in rows}


async def _declared_by_form(form_id: str) -> tuple[str, ...]:
    """Files named by the form's current version or its draft (media are uploaded before or
    after publishing)."""
    form = await Form.select(Form.current_version).where(Form.form_id == form_id).first()
    if form is None:
        raise NotFound(f"There is no form {form_id!r}.", code=ErrorCode.FORM_UNKNOWN)
    keys = [f"{form_id}#draft"]
    if form["current_version"] is not None:
        keys.append(f"{form_id}@{form['current_version']}")
    rows = await FormVersion.select(FormVersion.xform).where(FormVersion.key.is_in(keys))
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(declared_media(row["xform"])))
    return tuple(names)


async def list_media(form_id: str) -> list[FormMedia]:
    declared = await _declared_by_form(form_id)
    rows = {
        r["filename"]: r
        for r in await FormAttachment.select(
            FormAttachment.filename,
            FormAttachment.content_type,
            FormAttachment.size,
            FormAttachment.md5,
            FormAttachment.uploaded_at,
        ).where(FormAttachment.form == form_id)
    }
    media = []
    for filename in [*declared, *sorted(set(rows) - set(declared))]:
        kind, _ = await kind_of(filename)
        row = rows.get(filename)
        media.append(
            FormMedia(
                filename=filename,
                kind=kind,
                declared=filename in declared,
                uploaded=row is not None,
                content_type=row["content_type"] if row else None,
                size=row["size"] if row else None,
                md5=row["md5"] if row else None,
                uploaded_at=row["uploaded_at"] if row else None,
            )
        )
    return media


async def upload_media(
    actor: Principal, form_id: str, filename: str, content: bytes, content_type: str
) -> FormMedia:
    """Store (or replace) a media file the form declares; Collect fetches it when the manifest
    shows its new hash."""
    if filename not in await _declared_by_form(form_id):
        raise Conflict(
            f"The form {form_id!r} does not name a file {filename!r}; upload the files its "
            "XForm refers to (jr://images/…, jr://file-csv/…).",
            code=ErrorCode.FORM_ATTACHMENT_UNDECLARED,
        )
    kind, _ = await kind_of(filename)
    if kind != "media":
        raise Conflict(
            f"{filename!r} is made by the server for each user (the caller's wards or an "
            "entity list); it cannot be uploaded.",
            code=ErrorCode.FORM_ATTACHMENT_GENERATED,
        )
    media_type = content_type.split(";")[0].strip().lower()
    if not media_type or media_type == "application/octet-stream":
        media_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    md5 = hashlib.md5(content, usedforsecurity=False).hexdigest()
    now = datetime.now(UTC)
    key = _media_key(form_id, filename)
    async with transaction():
        await FormAttachment.delete().where(FormAttachment.key == key)
        await FormAttachment.insert(
            FormAttachment(
                key=key,
                form=form_id,
                filename=filename,
                content_type=media_type,
                size=len(content),
                md5=md5,
                content=content,
                uploaded_at=now,
                uploaded_by=uuid.UUID(actor.user_id),
            )
        )
        await audit.record(
            actor,
            "form.media_upload",
            target_type="form",
            target_id=form_id,
            details={"filename": filename, "md5": md5, "size": len(content)},
        )
    return FormMedia(
        filename=filename,
        kind="media",
        declared=True,
        uploaded=True,
        content_type=media_type,
        size=len(content),
        md5=md5,
        uploaded_at=now,
    )
