"""OpenRosa submissions (odk.md §9): ODK Collect's POST /submission through the sync core.

The multipart body is read as a stream (server/openrosa/multipart.py): the XML part is kept (it
is parsed whole), each file part goes to the blob store as it arrives, hashed on the way. The
XML is read by the exact form version it names (forms/instance_xml.py) into the submission a
native push would carry, and goes through the same path (`push.apply_submission`): form-role,
ward scope, validation in the form's time zone, flags, entity changes through the merge engine.

Collect's rules, as Central answers them: `instanceID` is the idempotency key (an identical
resend answers 201 again and completes the files that were missing; different XML under the
same instanceID is 409), files may arrive over several POSTs, `meta/deprecatedID` makes an edit
(404 if it names nothing, 409 if that was edited already). Unlike Central, entity changes are
applied before the answer, so the device is told of one the server refused. A refused
submission stores nothing: Collect keeps it and sends it again once it can be accepted.

Each Collect install (its `deviceID`) is an op stream of its own: its submissions take
consecutive op_seqs, so the merge engine sees a device's later offline edit of an entity as
following its earlier one, as it does for a native device.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from asyncpg.exceptions import UniqueViolationError

from forms.instance_xml import (
    EntityDeclaration,
    Envelope,
    Instance,
    InstanceXmlError,
    read_envelope,
    read_instance,
)
from forms.spec import zone_of
from schemas.common import ErrorItem
from schemas.errors import ErrorCode
from schemas.forms import FormSpec
from schemas.sync import Attachment, EntityChange, OpResult
from schemas.sync import Submission as SubmissionIn
from server.auth import Principal
from server.db.engine import fetch, transaction
from server.db.tables_sync import Entity, Submission, SubmissionAttachment
from server.errors import (
    BadRequest,
    Conflict,
    DomainError,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    UnsupportedMediaType,
)
from server.openrosa.multipart import (
    BlobWriter,
    Collected,
    Discard,
    PartHeaders,
    PartSink,
    StoredFile,
    boundary_of,
    read_parts,
)
from server.services import changes as change_log
from server.services import push
from server.services.blobs import (
    AttachmentStatus,
    attachment_status,
    normalize_content_type,
    record_blobs,
    sniff_content_type,
)
from server.services.entity_lists import get_list
from server.services.entity_store import version_content
from server.services.forms import accepting_spec
from server.settings import Settings
from server.text_rules import control_characters
from sync.blobs import BlobStore
from sync.hlc import DEFAULT_MAX_SKEW_MS, HLC
from sync.merge import EntityListDef

XML_PART = "xml_submission_file"
INCOMPLETE_PART = "*isIncomplete*"
XML_CONTENT_TYPE = "application/xml"
ENCRYPTED_CONTENT_TYPE = "application/octet-stream"
DEVICE_NAMESPACE = uuid.UUID("5f0c3b52-8d0e-4b44-9f7e-6f1e0a5d2c11")  # Collect deviceID → id
MAX_CLIENT_TEXT = 255
# What Collect shows for a submission stored complete; other outcomes add sentences to it.
RECEIVED = "Submission received."
_INTEGER = re.compile(r"[+-]?\d+")
_DECIMAL = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")

# How a refused submission answers: the core's op-level code → the HTTP error Collect sees.
_REFUSALS: dict[str, type[DomainError]] = {
    ErrorCode.WARD_FORBIDDEN: Forbidden,
    ErrorCode.ROLE_FORBIDDEN: Forbidden,
    ErrorCode.FORM_FORBIDDEN: Forbidden,
    ErrorCode.LIST_FORBIDDEN: Forbidden,
    ErrorCode.FORM_UNKNOWN: NotFound,
    ErrorCode.FORM_VERSION_UNKNOWN: NotFound,
    ErrorCode.FORM_CLOSED: Conflict,
    ErrorCode.INSTANCE_ID_REUSED: Conflict,
}


@dataclass(frozen=True)
class Receipt:
    """What the device is told (the OpenRosaResponse message) and what was stored."""

    instance_id: str
    message: str
    created: bool  # a new submission (False: a resend, or the files of a split upload)
    received: int  # files of this submission the server now has
    expected: int
    ignored: list[str] = field(default_factory=list)  # parts the XML does not name
    entities: list[str] = field(default_factory=list)  # entity changes refused, in words


@dataclass
class _Client:
    device_ref: str  # Collect's deviceID query parameter ("collect:…"), may be empty
    user_agent: str


class _Parts:
    """Opens a sink for each part of the body, and reads the XML as soon as it is complete, so
    the file parts after it are kept only if the XML names them."""

    def __init__(self, principal: Principal, store: BlobStore, settings: Settings) -> None:
        self.principal = principal
        self.store = store
        self.settings = settings
        self.xml: Collected | None = None
        self.envelope: Envelope | None = None
        self.spec: FormSpec | None = None
        self.instance: Instance | None = None
        self.named: set[str] | None = None  # the files the XML names, once it was read
        self.files: dict[str, BlobWriter] = {}
        self.ignored: list[str] = []
        self.failure: DomainError | None = None  # answered once the body has been read
        # The XML goes to the blob store while the files after it arrive.
        self.xml_sha256 = ""
        self.xml_stored: asyncio.Task[Any] | None = None

    async def open(self, headers: PartHeaders) -> PartSink:
        await self._read_xml()
        if self.failure is not None:
            return Discard()
        if headers.name == XML_PART:
            if self.xml is not None:
                return Discard()  # a second one: Collect sends one, Central reads the first
            self.xml = Collected(self.settings.max_body_bytes, "submission XML")
            return self.xml
        if headers.name == INCOMPLETE_PART or headers.filename is None:
            return Discard()  # Collect marks non-final batches; every POST stands on its own
        if headers.name in self.files or (
            self.named is not None and headers.name not in self.named
        ):
            self.ignored.append(headers.name)
            return Discard()
        writer = BlobWriter(self.store, headers, limit=self.settings.max_upload_bytes)
        self.files[headers.name] = writer
        return writer

    async def _read_xml(self) -> None:
        if self.xml is None or not self.xml.closed or self.envelope or self.failure:
            return  # not complete yet, or read already
        try:
            xml = bytes(self.xml.data)
            self.envelope = read_envelope(xml)
            self.xml_sha256 = hashlib.sha256(xml).hexdigest()
            self.xml_stored = asyncio.create_task(
                self.store.put_bytes(self.xml_sha256, xml, content_type=XML_CONTENT_TYPE)
            )
            self.spec = await accepting_spec(
                self.principal, self.envelope.form_id, self.envelope.version
            )
            if self.envelope.encrypted is not None:
                self.named = set(self.envelope.encrypted.files)
            else:
                self.instance = read_instance(self.envelope, self.spec)
                self.named = set(self.instance.files)
        except InstanceXmlError as error:
            self.failure = BadRequest(str(error), code=ErrorCode.SUBMISSION_XML_INVALID)
        except DomainError as error:
            self.failure = error

    async def finish(self) -> None:
        await self._read_xml()
        if self.failure is not None:
            raise self.failure
        if self.xml is None or self.envelope is None:
            raise BadRequest(
                f"The multipart body has no {XML_PART} part.",
                code=ErrorCode.SUBMISSION_XML_MISSING,
            )
        assert self.named is not None
        for name in [n for n in self.files if n not in self.named]:
            self.files.pop(name)  # arrived before the XML: stored, referenced by nothing
            self.ignored.append(name)


async def receive_submission(
    principal: Principal,
    body: AsyncIterator[bytes],
    *,
    content_type: str,
    content_length: int | None,
    device_ref: str,
    user_agent: str,
    store: BlobStore,
    settings: Settings,
) -> Receipt:
    """Read one POST /submission and record it; a DomainError says why it was refused."""
    limit = settings.max_submission_bytes
    if content_length is not None and content_length > limit:
        raise PayloadTooLarge(
            f"A submission may have at most {limit} bytes; this one has {content_length}.",
            code=ErrorCode.PAYLOAD_TOO_LARGE,
        )
    boundary = boundary_of(content_type)
    if boundary is None:
        raise UnsupportedMediaType(
            "Send the submission as multipart/form-data with an xml_submission_file part.",
            code=ErrorCode.UNSUPPORTED_MEDIA_TYPE,
        )
    parts = _Parts(principal, store, settings)
    try:
        await read_parts(_bounded(body, limit), boundary, parts.open)
        await parts.finish()
    except BaseException:
        for writer in parts.files.values():
            await writer.discard()
        if parts.xml_stored is not None:
            await asyncio.gather(parts.xml_stored, return_exceptions=True)
        raise
    assert parts.xml is not None and parts.envelope is not None and parts.spec is not None
    assert parts.xml_stored is not None
    await parts.xml_stored
    xml_sha256, xml = parts.xml_sha256, parts.xml.data
    client = _Client(device_ref[:MAX_CLIENT_TEXT], user_agent[:MAX_CLIENT_TEXT])
    files = [w.stored for w in parts.files.values() if w.stored is not None]
    try:
        return await _record(
            _as_device(principal, client),
            parts.envelope,
            parts.spec,
            parts.instance,
            xml_sha256=xml_sha256,
            xml_size=len(xml),
            files=files,
            ignored=parts.ignored,
            client=client,
            settings=settings,
        )
    except UniqueViolationError:
        # Another device stored the same instanceID (or new entity) first; a resend decides.
        raise ServiceUnavailable(
            "A concurrent submission wrote the same record; send it again.",
            code=ErrorCode.CONCURRENT_WRITE,
            headers={"Retry-After": "1"},
        ) from None


async def _bounded(body: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    """The body, refused once it passes `limit` (a chunked body has no Content-Length)."""
    received = 0
    async for chunk in body:
        received += len(chunk)
        if received > limit:
            raise PayloadTooLarge(
                f"A submission may have at most {limit} bytes.", code=ErrorCode.PAYLOAD_TOO_LARGE
            )
        yield chunk


def _as_device(principal: Principal, client: _Client) -> Principal:
    """The caller as the Collect install that sent this (its op stream), else as signed in."""
    if not client.device_ref:
        return principal
    device = uuid.uuid5(DEVICE_NAMESPACE, client.device_ref)
    return dataclasses.replace(principal, device_id=str(device))


# ---- recording -----------------------------------------------------------------------------


async def _record(
    principal: Principal,
    envelope: Envelope,
    spec: FormSpec,
    instance: Instance | None,
    *,
    xml_sha256: str,
    xml_size: int,
    files: list[StoredFile],
    ignored: list[str],
    client: _Client,
    settings: Settings,
) -> Receipt:
    zone = zone_of(spec, ZoneInfo(settings.timezone))
    allowed = {normalize_content_type(t) for t in settings.allowed_content_type_set}
    encrypted = envelope.encrypted is not None
    accepted: list[tuple[StoredFile, str]] = []
    refused: list[str] = []
    for stored in files:
        kind = ENCRYPTED_CONTENT_TYPE if encrypted else sniff_content_type(stored.head)
        if kind is None or (not encrypted and kind not in allowed):
            refused.append(stored.name)
        else:
            accepted.append((stored, kind))
    now = datetime.now(UTC)
    received = [(s.sha256, s.size, k) for s, k in accepted]
    xml_blob = (xml_sha256, xml_size, XML_CONTENT_TYPE)
    async with transaction():
        # First, so that two POSTs of one install (a resend racing a slow first answer) are
        # decided one after the other.
        op_seq = await push.take_op_seq(principal, now)
        current = await _accepted_row(envelope.instance_id)
        if current is not None:
            if current["content_hash"] != xml_sha256:
                raise Conflict(
                    "A submission already exists with this instanceID, but with different XML. "
                    "A resend to add files must send the identical xml_submission_file.",
                    code=ErrorCode.INSTANCE_ID_REUSED,
                )
            await record_blobs(principal.user_id, received)
            await _complete_files(envelope.instance_id, accepted)
            status = await attachment_status(envelope.instance_id)
            return _receipt(envelope.instance_id, False, status, ignored, refused, [], 0)
        carried = await _edited_files(envelope) if envelope.deprecated_id else {}
        ward = _ward_of(principal, spec, instance)
        changes, skipped = await _entity_changes(spec, instance) if instance else ([], [])
        captured_at = (instance.completed_at(zone) if instance else None) or now
        submission = SubmissionIn(
            instance_id=envelope.instance_id,
            form_id=spec.form_id,
            form_version=spec.version,
            captured_at=captured_at.astimezone(UTC),
            ward_code=ward,
            data=instance.data if instance is not None else {},
            attachments=[
                Attachment(name=s.name, sha256=s.sha256, size=s.size, content_type=k)
                for s, k in accepted
            ],
            deprecated_id=envelope.deprecated_id,
            entities=changes,
        )
        bad_text = control_characters(submission.data, "$.submission.data")
        if bad_text:
            raise BadRequest(
                "Text may not contain control characters other than tab, line feed and "
                "carriage return.",
                code=ErrorCode.VALIDATION_FAILED,
                errors=bad_text,
            )
        origin = push.Origin(
            op_seq=op_seq,
            hlc=_hlc(captured_at, now, principal.device_id),
            digest=xml_sha256,
            xml_sha256=xml_sha256,
            envelope=_envelope_record(envelope, client, xml_size),
            sealed=envelope.encrypted is not None,
        )
        await record_blobs(principal.user_id, received, kept=[xml_blob])
        # What a push's prefetch would read is known here: the instanceID is new (looked up
        # above, under the stream's lock), and this caller holds every file it just sent.
        ctx = push.PushContext(principal, now=now, zone=ZoneInfo(settings.timezone))
        ctx.specs[(spec.form_id, spec.version)] = spec
        await ctx.entities.load(change.entity_id for change in changes)
        result = await push.apply_submission(ctx, submission, origin)
        if result.status == "rejected":
            raise _refusal(result)
        names = {s.name for s, _ in accepted}
        pending = [name for name in _named_files(envelope, instance) if name not in names]
        for name in pending:
            row = carried.get(name)
            sha256, size, kind = row if row is not None else ("", 0, "")
            ctx.attachments.append((envelope.instance_id, sha256, name, size, kind, ward))
        await ctx.write()
        await change_log.record(ctx.refs)
    # Counted here rather than read back: what this POST sent, and what an edit carried over.
    status = AttachmentStatus(
        expected=len(accepted) + len(pending),
        received=len(accepted) + sum(1 for name in pending if name in carried),
        missing=[],
        missing_files=[name for name in pending if name not in carried],
    )
    return _receipt(
        envelope.instance_id,
        True,
        status,
        ignored,
        refused,
        skipped + _entity_notes(result, changes),
        result.flags,
    )


def _named_files(envelope: Envelope, instance: Instance | None) -> list[str]:
    if envelope.encrypted is not None:
        return envelope.encrypted.files
    return instance.files if instance is not None else []


async def _accepted_row(instance_id: str) -> dict[str, Any] | None:
    rows = await fetch(
        "SELECT content_hash, user_id FROM submission "
        "WHERE instance_id = {} AND status = 'accepted'",
        instance_id,
    )
    return rows[0] if rows else None


async def _edited_files(envelope: Envelope) -> dict[str, tuple[str, int, str]]:
    """An edit names a current submission; the files it does not send again carry over by name
    (Central's rule). 404 if it names nothing, 409 if that was edited already."""
    deprecated = envelope.deprecated_id
    found = await (
        Submission.select(Submission.form_id)
        .where(Submission.instance_id == deprecated, Submission.status == "accepted")
        .first()
    )
    if found is None or found["form_id"] != envelope.form_id:
        raise NotFound(
            f"This edits submission {deprecated}, which the server does not have.",
            code=ErrorCode.SUBMISSION_NOT_FOUND,
        )
    newer = await (
        Submission.select(Submission.instance_id)
        .where(Submission.deprecated_id == deprecated, Submission.status == "accepted")
        .first()
    )
    if newer is not None:
        raise Conflict(
            f"Submission {deprecated} was edited already (by {newer['instance_id']}); this "
            "edit starts from an out-of-date copy.",
            code=ErrorCode.STALE,
        )
    rows = await SubmissionAttachment.select(
        SubmissionAttachment.name,
        SubmissionAttachment.sha256,
        SubmissionAttachment.size,
        SubmissionAttachment.content_type,
    ).where(SubmissionAttachment.instance_id == deprecated)
    return {r["name"]: (r["sha256"], r["size"], r["content_type"]) for r in rows if r["sha256"]}


async def _complete_files(instance_id: str, files: list[tuple[StoredFile, str]]) -> None:
    """A resend: the files it carries take their place among the submission's (Central upserts
    them, so a file sent again with other bytes replaces the first)."""
    for stored, kind in files:
        await SubmissionAttachment.update(
            {
                SubmissionAttachment.sha256: stored.sha256,
                SubmissionAttachment.size: stored.size,
                SubmissionAttachment.content_type: kind,
            }
        ).where(
            (SubmissionAttachment.instance_id == instance_id)
            & (SubmissionAttachment.name == stored.name)
        )


def _ward_of(principal: Principal, spec: FormSpec, instance: Instance | None) -> str:
    """The submission's ward: its `ward_code` answer, or the answer a list's ward property is
    saved from; an encrypted one (unreadable) or a form without a ward takes the submitter's
    only ward."""
    if instance is not None:
        root = spec.fields[0].path.rsplit("/", 1)[0] if spec.fields else "/data"
        paths = [f"{root}/ward_code"] + [
            b.properties["ward_code"] for b in spec.entities if "ward_code" in b.properties
        ]
        for path in paths:
            if path in instance.texts:
                ward = instance.texts[path]
                if not re.fullmatch(r"[0-9]{5}", ward):
                    raise BadRequest(
                        f"The ward {ward[:20]!r} is not a 5-digit ward code.",
                        code=ErrorCode.VALIDATION_FAILED,
                        errors=[
                            ErrorItem(
                                path="$.submission.data.ward_code",
                                code=ErrorCode.INVALID,
                                message="a ward code has 5 digits",
                            )
                        ],
                    )
                return ward
    if not principal.city_wide and len(principal.wards) == 1:
        return principal.wards[0]
    raise BadRequest(
        "The submission names no ward, and you work in more than one.",
        code=ErrorCode.VALIDATION_FAILED,
        errors=[
            ErrorItem(
                path="$.submission.data.ward_code",
                code=ErrorCode.REQUIRED,
                message="the ward is required",
            )
        ],
    )


def _hlc(captured_at: datetime, now: datetime, device_id: str) -> str:
    """The HLC of the submission's writes: when it was completed on the tablet (a form filled on
    Monday and sent on Friday writes as of Monday, as a native device's op), never in the future."""
    latest = now + timedelta(milliseconds=DEFAULT_MAX_SKEW_MS)
    wall = min(captured_at, latest, now)
    return HLC(int(wall.timestamp() * 1000), 0, device_id).format()


def _envelope_record(envelope: Envelope, client: _Client, xml_size: int) -> dict[str, Any]:
    record: dict[str, Any] = {
        "device_id": client.device_ref,
        "user_agent": client.user_agent,
        "xml_size": xml_size,
    }
    if envelope.encrypted is not None:
        record["encrypted"] = {
            "key": envelope.encrypted.encrypted_key,
            "xml_file": envelope.encrypted.encrypted_xml_file,
            "signature": envelope.encrypted.signature,
            "files": envelope.encrypted.files,
        }
    return record


def _refusal(result: OpResult) -> DomainError:
    """The core rejected the submission: the first error decides the status, all are listed."""
    first = result.errors[0]
    kind = _REFUSALS.get(first.code)
    if kind is not None:
        return kind(first.message, code=ErrorCode(first.code), errors=result.errors)
    return BadRequest(
        "The answers do not meet the form's rules.",
        code=ErrorCode.VALIDATION_FAILED,
        errors=result.errors,
    )


# ---- entities ------------------------------------------------------------------------------


async def _entity_changes(
    spec: FormSpec, instance: Instance
) -> tuple[list[EntityChange], list[str]]:
    """`meta/entity` blocks as the native protocol's entity changes (odk.md §7.5), and the
    blocks that cannot be one, in words. The values are the answers the form saves to each
    property; empty answers change nothing."""
    bindings = {b.list_name: b for b in spec.entities}
    changes: list[EntityChange] = []
    notes: list[str] = []
    for declaration in instance.entities:
        binding = bindings.get(declaration.dataset)
        listdef = await get_list(declaration.dataset) if binding is not None else None
        if binding is None or listdef is None:
            notes.append(f"{declaration.dataset or '(no dataset)'}: the form declares no such list")
            continue
        if declaration.entity_id is None:
            if declaration.create or declaration.update:
                notes.append(
                    f"{declaration.dataset}: the entity id {declaration.raw_id!r} is not a UUID"
                )
            continue
        action = await _action(declaration)
        if action is None:
            continue
        properties = {
            prop: _property_value(listdef, prop, instance.texts[path])
            for prop, path in binding.properties.items()
            if instance.texts.get(path)
        }
        base_version = _base_version(declaration) if action == "update" else 0
        base_properties = None
        if action == "update":
            # What the device saw, as a native device sends it: the answers it did not edit are
            # then not mistaken for edits of what others changed since.
            seen = await version_content(declaration.entity_id, base_version)
            if seen is not None:
                base_properties = {p: seen["properties"].get(p) for p in properties}
        changes.append(
            EntityChange(
                list=declaration.dataset,
                entity_id=declaration.entity_id,
                action=action,
                base_version=base_version,
                label=declaration.label or None,
                properties=properties,
                base_properties=base_properties,
            )
        )
    return changes, notes


async def _action(declaration: EntityDeclaration) -> Literal["create", "update"] | None:
    """Update when asked and the entity exists; create when asked (an update of an entity the
    server does not have yet falls back to a create when the form allows both, as Central)."""
    if declaration.update and declaration.create:
        assert declaration.entity_id is not None
        exists = await Entity.exists().where(Entity.entity_id == declaration.entity_id)
        return "update" if exists else "create"
    if declaration.update:
        return "update"
    return "create" if declaration.create else None


def _base_version(declaration: EntityDeclaration) -> int:
    """The server version the device's copy started from. Offline edits count locally
    (baseVersion 4 on trunkVersion 3 is the device's second edit of server version 3): the
    merge then starts from the trunk, and the device's own earlier edits, being earlier ops of
    its op stream, are seen by the later ones. An entity created offline starts at 1."""
    base = declaration.base_version or 0
    if declaration.branch_id:
        trunk = declaration.trunk_version
        if trunk is None:
            return min(base, 1)
        return min(base, trunk)
    return base


def _property_value(listdef: EntityListDef, name: str, text: str) -> Any:
    """An answer as the list's property type holds it; text that does not fit is kept as text
    (the merge engine refuses it with property_type)."""
    pdef = listdef.properties.get(name)
    kind = pdef.type if pdef is not None else "any"
    if kind in ("int", "integer") and _INTEGER.fullmatch(text):
        return int(text)
    if kind == "decimal" and _DECIMAL.fullmatch(text):
        return float(text)
    if kind == "select_multiple":
        return text.split()
    if kind == "bool" and text in ("true", "false", "1", "0"):
        return text in ("true", "1")
    return text


def _entity_notes(result: OpResult, changes: list[EntityChange]) -> list[str]:
    notes = []
    for index, entity in enumerate(result.entities):
        if entity.status != "rejected":
            continue
        prefix = f"$.submission.entities[{index}]"
        reasons = [e.message for e in result.errors if e.path.startswith(prefix)]
        change = changes[index]
        notes.append(f"{change.list} {change.entity_id}: {'; '.join(reasons) or 'refused'}")
    return notes


def _receipt(
    instance_id: str,
    created: bool,
    status: AttachmentStatus,
    ignored: list[str],
    refused: list[str],
    entities: list[str],
    flags: int,
) -> Receipt:
    sentences = [RECEIVED if created else "Submission received again."]
    if status.expected:
        sentences.append(f"{status.received} of {status.expected} files received.")
    if refused:
        sentences.append(
            "Files not stored, their type is not accepted: " + ", ".join(refused) + "."
        )
    if ignored:
        sentences.append("Files the form does not name were ignored: " + ", ".join(ignored) + ".")
    if entities:
        sentences.append("Not applied: " + " ".join(f"{note}." for note in entities))
    if flags:
        sentences.append(f"{flags} rule(s) will be reviewed by a supervisor.")
    return Receipt(
        instance_id=instance_id,
        message=" ".join(sentences),
        created=created,
        received=status.received,
        expected=status.expected,
        ignored=ignored,
        entities=entities,
    )
