"""Forms: upload a draft, publish immutable versions, list what a device may fill, validate.

Pure work (parsing, diffs, validation) is in `forms/`; this module owns the transactions.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import re
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any
from xml.sax.saxutils import quoteattr
from zoneinfo import ZoneInfo

import msgspec

from forms import programme
from forms.diff import diff_specs, incompatible_type_changes
from forms.odk_validate import Verdict, java_runtime, validate_xforms
from forms.spec import entity_lists, with_hash, zone_of
from forms.validation import FileChoices, validate_submission
from forms.xlsform import FormImportError, FormTooLarge, ImportedForm, import_form
from schemas.common import ErrorItem
from schemas.errors import ErrorCode
from schemas.forms import (
    DraftUploaded,
    FormDiff,
    FormDraft,
    FormInfo,
    FormListItem,
    FormSpec,
    FormUpdate,
    FormVersionInfo,
    PublishRequest,
    ValidationResult,
)
from schemas.sync import EntityChange
from server.auth import Principal
from server.db.engine import current_engine, fetch, transaction
from server.db.json_columns import from_json, to_json
from server.db.tables_forms import Form, FormVersion
from server.errors import BadRequest, Conflict, Forbidden, NotFound, PayloadTooLarge
from server.permissions import FormScope, can
from server.services import audit
from server.services import changes as change_log
from server.services.entity_lists import forget_role_lists, register_form_lists

# Who fills an uploaded form until an admin says otherwise (the programme's own: forms/programme.py).
FIELD_ROLES = ["supervisor", "outreach", "trainer", "inspector"]
# ODK Validate on an upload: at most this long, and this many JVMs at once (~60 MB and a core each).
ODK_VALIDATE_SECONDS = 60.0
_odk_validate_slots = threading.BoundedSemaphore(2)
# Verdicts by the XForm's sha256 (the same XForm is judged the same way), only decided ones.
_odk_verdicts: dict[str, Verdict] = {}
ODK_VERDICT_CACHE_SIZE = 256
# Published versions never change, so their parsed specs are kept (push validates every op).
PUBLISHED_SPEC_CACHE_SIZE = 256
_published_specs: dict[tuple[int, str], FormSpec] = {}
# Admins, supervisors and viewers read every form version; field roles read the forms they fill.


def _now() -> datetime:
    return datetime.now(UTC)


def _draft_key(form_id: str) -> str:
    return f"{form_id}#draft"


_INSTANCE_ROOT = re.compile(r"(<instance>\s*<[^\s>/!?]+)([^>]*?)(/?>)")
_VERSION_ATTRIBUTE = re.compile(r"""\sversion\s*=\s*("[^"]*"|'[^']*')""")


def _versioned(xform: str, version: str) -> str:
    """The XForm with `version` on its primary instance, as the version is published: Collect
    sends that attribute back with every submission, and a version given at publish time that
    differs from the settings sheet's (or fills its absence) must be the one it sends."""
    match = _INSTANCE_ROOT.search(xform)
    if match is None:
        return xform
    attributes = _VERSION_ATTRIBUTE.sub("", match.group(2))
    root = f"{match.group(1)}{attributes} version={quoteattr(version)}{match.group(3)}"
    return xform[: match.start()] + root + xform[match.end() :]


def _version_key(form_id: str, version: str) -> str:
    return f"{form_id}@{version}"


def import_problem(error: FormImportError) -> BadRequest:
    """An admin-readable 400: each issue with its sheet, row and column."""
    errors = [
        ErrorItem(
            path="/".join(
                str(p) for p in (issue.sheet, issue.row, issue.column) if p not in (None, "")
            ),
            code=ErrorCode.XLSFORM_INVALID,
            message=issue.message,
        )
        for issue in error.issues
    ]
    return BadRequest(str(error), code=ErrorCode.XLSFORM_INVALID, errors=errors)


# ---- drafts and publishing ---------------------------------------------------------------------


async def upload_draft(actor: Principal | None, data: bytes, filename: str) -> DraftUploaded:
    try:
        # Parsing a large workbook takes seconds of CPU: off the event loop, so requests go on.
        imported = await asyncio.to_thread(import_form, data, filename)
    except FormTooLarge as error:
        raise PayloadTooLarge(str(error), code=ErrorCode.XLSFORM_TOO_LARGE) from None
    except FormImportError as error:
        raise import_problem(error) from None
    imported = await checked_by_odk_validate(imported)
    return await save_draft(actor, imported)


async def checked_by_odk_validate(imported: ImportedForm) -> ImportedForm:
    """The form as ODK Collect's engine loads it (ODK Validate, as Central runs it): refused with
    JavaRosa's message when it cannot load it; kept with a warning saying the check was skipped
    where no Java runtime is installed or the check ran out of time."""
    key = hashlib.sha256(imported.xform.encode()).hexdigest()
    verdict = _odk_verdicts.get(key)
    if verdict is None:
        verdict = await asyncio.to_thread(_odk_validate, imported.xform)
        if verdict.valid is not None:
            if len(_odk_verdicts) >= ODK_VERDICT_CACHE_SIZE:
                _odk_verdicts.pop(next(iter(_odk_verdicts)))
            _odk_verdicts[key] = verdict
    if verdict.valid is False:
        raise BadRequest(
            f"ODK Collect cannot load this form (ODK Validate): {verdict.message}",
            code=ErrorCode.XFORM_INVALID,
            errors=[ErrorItem(path="file", code=ErrorCode.XFORM_INVALID, message=verdict.message)],
        )
    if verdict.valid is None:
        warning = f"Not checked with ODK Validate (JavaRosa): {verdict.message}."
        return dataclasses.replace(imported, warnings=[*imported.warnings, warning])
    return imported


def _odk_validate(xform: str) -> Verdict:
    with _odk_validate_slots:
        [verdict] = validate_xforms([xform], java=java_runtime(), timeout=ODK_VALIDATE_SECONDS)
    return verdict


async def save_draft(
    actor: Principal | None, imported: ImportedForm, *, roles: list[str] | None = None
) -> DraftUploaded:
    spec = with_hash(imported.spec)
    form_id = spec.form_id
    async with transaction():
        form = await Form.select(Form.form_id).where(Form.form_id == form_id).first()
        if form is None:
            await Form.insert(
                Form(form_id=form_id, title=spec.title, roles=to_json(roles or FIELD_ROLES))
            )
        else:
            await Form.update({Form.title: spec.title, Form.updated_at: _now()}).where(
                Form.form_id == form_id
            )
        await FormVersion.delete().where(FormVersion.key == _draft_key(form_id))
        await FormVersion.insert(
            FormVersion(
                key=_draft_key(form_id),
                form=form_id,
                version=spec.version or None,
                status="draft",
                hash=spec.hash,
                spec=to_json(spec),
                xform=imported.xform,
                source=imported.source,
                source_filename=imported.filename,
                source_kind=imported.source_kind,
                warnings=to_json(imported.warnings),
                created_by=actor.user_id if actor else None,
            )
        )
        await audit.record(
            actor,
            "form.upload_draft",
            target_type="form",
            target_id=form_id,
            details={"hash": spec.hash, "filename": imported.filename},
            actor_username="system",
        )
    return DraftUploaded(
        form_id=form_id,
        title=spec.title,
        draft=FormDraft(hash=spec.hash, fields=spec.fields, warnings=imported.warnings),
    )


async def publish(actor: Principal | None, form_id: str, request: PublishRequest) -> FormSpec:
    async with transaction():
        draft = await FormVersion.select().where(FormVersion.key == _draft_key(form_id)).first()
        if draft is None:
            await _form_row(form_id)
            raise Conflict(
                "This form has no draft to publish; upload one first.", code=ErrorCode.NO_DRAFT
            )
        spec = from_json(draft["spec"], FormSpec)
        version = request.version or spec.version
        if not version:
            raise BadRequest(
                "Give a version: the form's settings sheet has none.",
                code=ErrorCode.VERSION_REQUIRED,
                errors=[
                    ErrorItem(
                        path="$.version", code=ErrorCode.REQUIRED, message="version is required"
                    )
                ],
            )
        if await FormVersion.exists().where(FormVersion.key == _version_key(form_id, version)):
            raise Conflict(
                f"Version {version} of {form_id} is already published; versions never change.",
                code=ErrorCode.VERSION_EXISTS,
            )
        latest = await _latest_published(form_id)
        if latest is not None and not request.force:
            changed = incompatible_type_changes(latest, spec)
            if changed:
                raise Conflict(
                    "This version changes the type of existing fields; publish with force to accept.",
                    code=ErrorCode.INCOMPATIBLE_CHANGE,
                    errors=[
                        ErrorItem(path=p, code=ErrorCode.TYPE_CHANGED, message="field type changed")
                        for p in changed
                    ],
                )
        published = with_hash(msgspec.structs.replace(spec, version=version))
        now = _now()
        await FormVersion.insert(
            FormVersion(
                key=_version_key(form_id, version),
                form=form_id,
                version=version,
                status="published",
                hash=published.hash,
                spec=to_json(published),
                xform=_versioned(draft["xform"], version),
                source=draft["source"],
                source_filename=draft["source_filename"],
                source_kind=draft["source_kind"],
                warnings=draft["warnings"],
                created_by=draft["created_by"],
                published_at=now,
                published_by=actor.user_id if actor else None,
            )
        )
        await FormVersion.delete().where(FormVersion.key == _draft_key(form_id))
        await Form.update({Form.current_version: version, Form.updated_at: now}).where(
            Form.form_id == form_id
        )
        await register_form_lists(published)
        await change_log.record_form(form_id)
        await audit.record(
            actor,
            "form.publish",
            target_type="form",
            target_id=form_id,
            details={"version": version, "hash": published.hash, "force": request.force},
            actor_username="system",
        )
    forget_role_lists()
    return published


async def publish_templates() -> list[str]:
    """Publish the programme's forms (forms/programme.py) on a fresh database (idempotent)."""
    published = []
    existing = {row["form_id"] for row in await Form.select(Form.form_id)}
    for form_id in sorted(programme.FORMS):
        if form_id in existing:  # checked before the workbook is parsed, the slow part
            continue
        roles = list(programme.FORMS[form_id].roles)
        await save_draft(None, programme.template(form_id), roles=roles)
        await publish(None, form_id, PublishRequest())
        published.append(form_id)
    return published


# ---- reading -----------------------------------------------------------------------------------


async def _form_row(form_id: str) -> dict[str, Any]:
    # Fixed SQL: every submission (push, OpenRosa) reads its form's row, and building a Piccolo
    # select costs more than the query.
    rows = await fetch(
        "SELECT form_id, title, state, roles, current_version FROM form WHERE form_id = {}",
        form_id,
    )
    if not rows:
        raise NotFound(f"There is no form {form_id!r}.", code=ErrorCode.FORM_UNKNOWN)
    return rows[0]


async def _latest_published(form_id: str) -> FormSpec | None:
    row = await (
        FormVersion.select(FormVersion.spec)
        .where(FormVersion.form == form_id, FormVersion.status == "published")
        .order_by(FormVersion.id, ascending=False)
        .first()
    )
    return from_json(row["spec"], FormSpec) if row else None


def form_scope(form: dict[str, Any]) -> FormScope:
    """A form row as the permission table reads it: its roles column says who fills it."""
    return FormScope(from_json(form["roles"], list[str]))


async def get_spec(
    principal: Principal | None, form_id: str, version: str, *, form: dict[str, Any] | None = None
) -> FormSpec:
    """An immutable published version. Callers who may not fill the form see 404."""
    form = form or await _form_row(form_id)
    if principal is not None and not can(principal, "form.read", form_scope(form)):
        raise NotFound(f"There is no form {form_id!r}.", code=ErrorCode.FORM_UNKNOWN)
    cache_key = (id(current_engine()), _version_key(form_id, version))
    spec = _published_specs.get(cache_key)
    if spec is None:
        row = await (
            FormVersion.select(FormVersion.spec).where(FormVersion.key == cache_key[1]).first()
        )
        if row is None:
            raise NotFound(
                f"Form {form_id!r} has no published version {version!r}.",
                code=ErrorCode.FORM_VERSION_UNKNOWN,
            )
        spec = from_json(row["spec"], FormSpec)
        if len(_published_specs) >= PUBLISHED_SPEC_CACHE_SIZE:
            _published_specs.pop(next(iter(_published_specs)))
        _published_specs[cache_key] = spec
    return spec


async def get_xform(principal: Principal, form_id: str, version: str) -> str:
    await get_spec(principal, form_id, version)
    row = await (
        FormVersion.select(FormVersion.xform)
        .where(FormVersion.key == _version_key(form_id, version))
        .first()
    )
    assert row is not None
    return str(row["xform"])


async def list_for_device(principal: Principal) -> list[FormListItem]:
    """Open forms the caller fills, each pinned to its current version; closing ones are hidden."""
    forms = await Form.select().where(Form.state == "open", Form.current_version.is_not_null())
    fillable = [f for f in forms if can(principal, "form.fill", form_scope(f))]
    if not fillable:
        return []
    keys = [_version_key(f["form_id"], f["current_version"]) for f in fillable]
    versions = {
        r["key"]: r
        for r in await FormVersion.select(
            FormVersion.key, FormVersion.hash, FormVersion.spec
        ).where(FormVersion.key.is_in(keys))
    }
    items = []
    for form in sorted(fillable, key=lambda f: f["form_id"]):
        form_id, version = form["form_id"], form["current_version"]
        row = versions[_version_key(form_id, version)]
        base = f"/api/v1/forms/{form_id}/versions/{version}"
        items.append(
            FormListItem(
                form_id=form_id,
                title=form["title"],
                version=version,
                hash=row["hash"],
                state=form["state"],
                entity_lists=entity_lists(from_json(row["spec"], FormSpec)),
                spec_url=base,
                xform_url=f"{base}/xform",
            )
        )
    return items


def list_etag(items: list[FormListItem]) -> str:
    return '"' + hashlib.sha256(msgspec.json.encode(items)).hexdigest()[:32] + '"'


async def list_versions(form_id: str) -> list[FormVersionInfo]:
    await _form_row(form_id)
    rows = await (
        FormVersion.select(
            FormVersion.version,
            FormVersion.status,
            FormVersion.hash,
            FormVersion.source_filename,
            FormVersion.source_kind,
            FormVersion.created_at,
            FormVersion.published_at,
        )
        .where(FormVersion.form == form_id)
        .order_by(FormVersion.id)
    )
    return [FormVersionInfo(form_id=form_id, **row) for row in rows]


def _info(form: dict[str, Any], has_draft: bool) -> FormInfo:
    return FormInfo(
        form_id=form["form_id"],
        title=form["title"],
        state=form["state"],
        roles=from_json(form["roles"], list[str]),
        current_version=form["current_version"],
        has_draft=has_draft,
    )


async def form_info(form_id: str) -> FormInfo:
    form = await _form_row(form_id)
    return _info(form, await FormVersion.exists().where(FormVersion.key == _draft_key(form_id)))


async def list_forms() -> list[FormInfo]:
    drafts = {
        r["form"]
        for r in await FormVersion.select(FormVersion.form).where(FormVersion.status == "draft")
    }
    return [_info(f, f["form_id"] in drafts) for f in await Form.select().order_by(Form.form_id)]


async def update_form(actor: Principal, form_id: str, update: FormUpdate) -> FormInfo:
    await _form_row(form_id)
    changes: dict[Any, Any] = {Form.updated_at: _now()}
    if update.state is not None:
        changes[Form.state] = update.state
    if update.roles is not None:
        changes[Form.roles] = to_json(sorted(set(update.roles)))
    async with transaction():
        await Form.update(changes).where(Form.form_id == form_id)
        await change_log.record_form(form_id)
        await audit.record(
            actor,
            "form.update",
            target_type="form",
            target_id=form_id,
            details=msgspec.to_builtins(update),
        )
    forget_role_lists()
    return await form_info(form_id)


async def diff_versions(form_id: str, a: str, b: str) -> FormDiff:
    return diff_specs(await get_spec(None, form_id, a), await get_spec(None, form_id, b))


# ---- validation (the sync core calls accepting_spec + validate) --------------------------------


async def accepting_spec(principal: Principal, form_id: str, version: str) -> FormSpec:
    """The exact version a submission names, refusing closed forms and forms the caller may not
    fill (hidden from their form list, so they would never have had it)."""
    form = await _form_row(form_id)
    if not can(principal, "form.fill", form_scope(form)):
        raise Forbidden(
            f"Your role may not fill the form {form_id!r}.", code=ErrorCode.FORM_FORBIDDEN
        )
    if form["state"] == "closed":
        raise Conflict(
            f"Form {form_id!r} is closed and takes no new submissions.", code=ErrorCode.FORM_CLOSED
        )
    return await get_spec(None, form_id, version, form=form)


def file_choices(principal: Principal, changes: Iterable[EntityChange] = ()) -> FileChoices:
    """What the files a form picks from hold for this submitter: `wards.csv` their own wards (the
    scope rule); an entity list the records this submission changes (each change is checked
    where it is applied). Any other record picked from a list stays undecided, so it is flagged."""
    changed: dict[str, set[str]] = {}
    for change in changes:
        changed.setdefault(programme.list_file(change.list), set()).add(change.entity_id)
    choices = {name: _holds(ids) for name, ids in changed.items()}
    choices[programme.WARDS_FILE] = principal.may_see_ward
    return choices


def _holds(ids: set[str]) -> Callable[[str], bool | None]:
    return lambda value: True if value in ids else None


async def validate(
    principal: Principal,
    form_id: str,
    version: str,
    data: dict[str, Any],
    *,
    zone: ZoneInfo,
    language: str = "vi",
) -> ValidationResult:
    """Checks answers as push would for a form completed now by `principal`, in the form's time
    zone (else the programme's, `zone`)."""
    spec = await get_spec(None, form_id, version)
    now = _now().astimezone(zone_of(spec, zone))
    return validate_submission(
        spec, data, now=now, language=language, file_choices=file_choices(principal)
    )
