"""Push (PROTOCOL.md "Push"): exactly-once, contiguous per-device ops, applied in one transaction.

One push is one transaction: the device row is locked (pushes of one device are serialised), each
new op is applied and its result stored in the op ledger, the device's last op_seq advances, and
the change-log rows are written last (commit order, see changes.py). A transient failure rolls the
whole push back and answers 503, so nothing advances.

The work is batched per push, not per op: what the ops need from the database (their entities,
locked in entity_id order; accepted submissions with their instance_ids; stored blobs; form
versions) is read up front in a few queries, the ops are applied in order in memory, and the rows
they produce are written in one statement per table. A `resolve` op writes through the database,
so the batch is flushed before it.

The submission path (`apply_submission`: form-role and ward checks, validation in the form's time
zone, flags, entity changes through the merge engine, the rows it writes) is the sync core: an
OpenRosa POST from ODK Collect (server/openrosa/submission.py) goes through the same function,
as a one-submission op stream of its own (`lock_stream`, `advance_stream`).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
from asyncpg.exceptions import UniqueViolationError

from forms.spec import FormSpec, zone_of
from forms.validation import validate_submission
from schemas.common import ErrorItem
from schemas.errors import ErrorCode
from schemas.forms import ValidationResult
from schemas.sync import EntityResult, Op, OpResult, PushRequest, PushResponse, SubmissionFlag
from schemas.sync import Submission as SubmissionIn
from server.auth import Principal
from server.db.bulk import Insert, insert_rows, insert_tables, select_in
from server.db.engine import fetch, transaction
from server.db.json_columns import from_json, to_json
from server.db.tables_sync import OpLedger, Submission, SubmissionAttachment
from server.errors import BadRequest, DomainError, Forbidden, ServiceUnavailable
from server.permissions import can
from server.services import changes as change_log
from server.services import conflicts, entities
from server.services.blobs import missing_blobs
from server.services.entity_lists import get_list, lists_for_role
from server.services.entity_store import EntityBatch
from server.services.forms import accepting_spec, file_choices
from server.text_rules import control_characters_of, json_member, scrubbed
from sync.hlc import DEFAULT_MAX_SKEW_MS, HLC, is_too_far_ahead

SERVER_NODE = "server"


def now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def server_hlc() -> str:
    return HLC(now_ms(), 0, SERVER_NODE).format()


SUBMISSION_COLUMNS = (
    "id",
    "instance_id",
    "form_id",
    "form_version",
    "status",
    "ward_code",
    "user_id",
    "device_id",
    "op_seq",
    "hlc",
    "captured_at",
    "received_at",
    "deprecated_id",
    "content_hash",
    "data",
    "errors",
    "flags",
    "xml_sha256",
    "envelope",
)
ATTACHMENT_COLUMNS = ("instance_id", "sha256", "name", "size", "content_type", "ward_code")
LEDGER_COLUMNS = (
    "key",
    "device_id",
    "user_id",
    "op_seq",
    "op_id",
    "kind",
    "status",
    "max_position",
    "result",
    "created_at",
)


@dataclass(frozen=True)
class Origin:
    """Where one submission came from: its op (the op stream's op_seq, the HLC its writes carry)
    and what identifies its content. An OpenRosa submission also keeps the XML as received."""

    op_seq: int
    hlc: str
    digest: str  # content hash: an identical resend is idempotent, a different one a reuse
    xml_sha256: str | None = None
    envelope: dict[str, Any] = field(default_factory=dict)
    # An encrypted OpenRosa submission: its answers cannot be read, so they are not checked.
    sealed: bool = False


@dataclass
class PushContext:
    """One push's working set: what it read up front and the rows it will write."""

    principal: Principal
    now: datetime
    zone: ZoneInfo  # the programme's time zone: today() and now() are judged in it, or the form's
    refs: list[change_log.ChangeRef] = field(default_factory=list)
    entities: EntityBatch = field(default_factory=EntityBatch)
    accepted: dict[str, str] = field(default_factory=dict)  # instance_id -> content hash
    missing: set[str] = field(default_factory=set)  # attachment hashes not stored yet
    specs: dict[tuple[str, str], FormSpec | DomainError] = field(default_factory=dict)
    submissions: list[tuple] = field(default_factory=list)
    attachments: list[tuple] = field(default_factory=list)
    bad_text: dict[int, list[ErrorItem]] = field(default_factory=dict)  # op_seq -> errors

    def fill_time(self, sub: SubmissionIn, spec: FormSpec) -> datetime:
        """When the device says the form was completed, in the form's time zone (else the
        programme's): today() and now() are judged then, as on the tablet (a form filled on
        Monday and synced on Friday is Monday's), never later than the clock skew the push
        already allows."""
        latest = self.now + timedelta(milliseconds=DEFAULT_MAX_SKEW_MS)
        return min(sub.captured_at, latest).astimezone(zone_of(spec, self.zone))

    async def prefetch(self, ops: list[Op]) -> None:
        await self.prefetch_submissions([op.submission for op in ops if op.submission is not None])

    async def prefetch_submissions(self, subs: list[SubmissionIn]) -> None:
        if not subs:
            return
        instance_ids = sorted({s.instance_id for s in subs})
        rows = await select_in(
            Submission,
            "instance_id, content_hash",
            "instance_id",
            instance_ids,
            where="status = 'accepted'",
        )
        self.accepted = {r["instance_id"]: r["content_hash"] for r in rows}
        self.missing = set(
            await missing_blobs(
                self.principal, (a.sha256 for s in subs for a in s.attachments), referenced=True
            )
        )
        await self.entities.load(change.entity_id for s in subs for change in s.entities)

    async def spec(self, form_id: str, version: str) -> FormSpec:
        key = (form_id, version)
        if key not in self.specs:
            try:
                self.specs[key] = await accepting_spec(self.principal, form_id, version)
            except DomainError as error:
                self.specs[key] = error
        found = self.specs[key]
        if isinstance(found, DomainError):
            raise found
        return found

    def missing_of(self, sub: SubmissionIn) -> list[str]:
        return [h for h in dict.fromkeys(a.sha256 for a in sub.attachments) if h in self.missing]

    async def write(self) -> None:
        """Everything but the change log and the ledger, which come last (changes.py)."""
        await self.entities.flush()
        await insert_tables(
            Insert(Submission, SUBMISSION_COLUMNS, self.submissions),
            Insert(SubmissionAttachment, ATTACHMENT_COLUMNS, self.attachments),
        )


async def apply_push(principal: Principal, request: PushRequest, *, zone: ZoneInfo) -> PushResponse:
    if request.device_id != principal.device_id:
        raise Forbidden("This token belongs to another device.", code=ErrorCode.DEVICE_MISMATCH)
    _check_order(request.ops)
    server_now = now_ms()
    for index, op in enumerate(request.ops):
        if is_too_far_ahead(op.hlc, server_now):
            raise BadRequest(
                "The device clock is more than 5 minutes ahead of the server; correct the offset and retry.",
                code=ErrorCode.CLOCK_SKEW,
                errors=[
                    ErrorItem(
                        path=f"$.ops[{index}].hlc",
                        code=ErrorCode.CLOCK_SKEW,
                        message="hlc is in the future",
                    )
                ],
                extra={"server_time": datetime.now(UTC).isoformat()},
            )
    ops, bad_text = _judge_text(request.ops)
    try:
        return await _apply_in_transaction(principal, ops, bad_text, zone)
    except UniqueViolationError:
        # Another device's push committed the same key first (an instance_id, a new entity id):
        # nothing of this push was applied; a retry re-reads and decides.
        raise ServiceUnavailable(
            "A concurrent push wrote the same record; retry.",
            code=ErrorCode.CONCURRENT_WRITE,
            headers={"Retry-After": "1"},
        ) from None


async def _apply_in_transaction(
    principal: Principal, ops: list[Op], bad_text: dict[int, list[ErrorItem]], zone: ZoneInfo
) -> PushResponse:
    async with transaction():
        stream = principal.op_stream
        last = await lock_stream(principal)
        replayed = await _stored_results(stream, [op.op_seq for op in ops if op.op_seq <= last])
        still_missing = set(
            await missing_blobs(
                principal, (h for r in replayed.values() for h in r.missing_blobs), referenced=True
            )
        )
        results: list[OpResult] = []
        applied: list[tuple[Op, OpResult, list[change_log.ChangeRef]]] = []
        ctx = PushContext(principal, now=datetime.now(UTC), zone=zone, bad_text=bad_text)
        new_ops = [op for op in ops if op.op_seq > last]
        if new_ops and new_ops[0].op_seq != last + 1:
            new_ops = []  # a gap: nothing will be applied, so nothing to read or lock
        await ctx.prefetch(new_ops)
        for op in ops:
            if op.op_seq <= last:
                stored = replayed.get(op.op_seq) or OpResult(op_seq=op.op_seq, status="applied")
                results.append(
                    msgspec.structs.replace(
                        stored,
                        status="duplicate",
                        original_status=stored.status,
                        # Files may have arrived since: a replay answers what is missing now.
                        missing_blobs=[h for h in stored.missing_blobs if h in still_missing],
                    )
                )
                continue
            if op.op_seq > last + 1:
                break  # a gap: the device resends from last_op_seq + 1
            ctx.refs = []
            result = await _apply_op(ctx, op)
            applied.append((op, result, ctx.refs))
            results.append(result)
            last = op.op_seq
        if applied:
            await ctx.write()
            await advance_stream(principal, last, ctx.now)
            positions = await change_log.record([ref for _, _, refs in applied for ref in refs])
            await insert_rows(
                OpLedger,
                LEDGER_COLUMNS,
                [
                    (
                        f"{stream}:{op.op_seq}",
                        principal.device_id,
                        principal.user_id,
                        op.op_seq,
                        op.op_id,
                        op.kind,
                        result.status,
                        # Only entity rows count: workers never receive conflict rows, so a
                        # conflict's position must not hold their acked_through back.
                        max(
                            (positions.get(r.record_key, 0) for r in refs if r.kind == "entity"),
                            default=0,
                        ),
                        to_json(result),
                        ctx.now,
                    )
                    for op, result, refs in applied
                ],
            )
    return PushResponse(last_op_seq=last, server_hlc=server_hlc(), results=results)


async def advance_stream(principal: Principal, last: int, now: datetime) -> None:
    """Record the op stream's last applied op_seq (its row is locked by `lock_stream`)."""
    await fetch(
        "UPDATE op_stream SET last_op_seq = {}, updated_at = {} WHERE key = {}",
        last,
        now,
        principal.op_stream,
    )


def _check_order(ops: list[Op]) -> None:
    for index in range(1, len(ops)):
        if ops[index].op_seq != ops[index - 1].op_seq + 1:
            raise BadRequest(
                "Ops must be in ascending, contiguous op_seq order.",
                code=ErrorCode.OPS_NOT_CONTIGUOUS,
                errors=[
                    ErrorItem(
                        path=f"$.ops[{index}].op_seq",
                        code=ErrorCode.OPS_NOT_CONTIGUOUS,
                        message="expected the next op_seq",
                    )
                ],
            )


async def lock_stream(principal: Principal) -> int:
    """Create the op stream's row if new, lock it, return its last applied op_seq.

    One upsert that always updates: it creates the row without racing a concurrent first push
    and takes its row lock (PostgreSQL) until commit; SQLite's IMMEDIATE transaction already
    holds the single write lock."""
    rows = await fetch(
        "INSERT INTO op_stream (key, device_id, user_id, last_op_seq, updated_at) "
        "VALUES ({}, {}, {}, 0, {}) "
        "ON CONFLICT (key) DO UPDATE SET key = excluded.key "
        "RETURNING last_op_seq",
        principal.op_stream,
        principal.device_id,
        principal.user_id,
        datetime.now(UTC),
    )
    return int(rows[0]["last_op_seq"])


async def take_op_seq(principal: Principal, now: datetime) -> int:
    """The op stream's next op_seq, for one submission that is its own op (OpenRosa): one
    upsert that creates the row if new, advances it and holds its lock until commit."""
    rows = await fetch(
        "INSERT INTO op_stream (key, device_id, user_id, last_op_seq, updated_at) "
        "VALUES ({}, {}, {}, 1, {}) "
        "ON CONFLICT (key) DO UPDATE SET last_op_seq = op_stream.last_op_seq + 1, "
        "updated_at = excluded.updated_at "
        "RETURNING last_op_seq",
        principal.op_stream,
        principal.device_id,
        principal.user_id,
        now,
    )
    return int(rows[0]["last_op_seq"])


async def _stored_results(stream: str, op_seqs: list[int]) -> dict[int, OpResult]:
    if not op_seqs:
        return {}
    # By the unique key: a long-lived stream's ledger is not read to find a few replayed ops.
    rows = await OpLedger.select(OpLedger.op_seq, OpLedger.result).where(
        OpLedger.key.is_in([f"{stream}:{seq}" for seq in op_seqs])
    )
    return {int(r["op_seq"]): from_json(r["result"], OpResult) for r in rows}


def _judge_text(ops: list[Op]) -> tuple[list[Op], dict[int, list[ErrorItem]]]:
    """Control characters in an op's payload reject that op alone (server/text_rules.py), so the
    ops behind it still apply and the device never wedges. The op is then kept as it came but
    with those characters replaced, since PostgreSQL cannot store them."""
    judged, bad_text = [], {}
    for op in ops:
        payload, root = (
            (op.submission, "$.submission") if op.submission else (op.resolve, "$.resolve")
        )
        errors = control_characters_of(payload, root) if payload is not None else []
        if errors:
            bad_text[op.op_seq] = errors
            op = msgspec.convert(scrubbed(msgspec.to_builtins(op)), Op)
        judged.append(op)
    return judged, bad_text


async def _apply_op(ctx: PushContext, op: Op) -> OpResult:
    bad_text = ctx.bad_text.get(op.op_seq)
    if bad_text:
        if op.submission is not None:
            _store_submission(ctx, op.submission, _origin(op), "rejected", bad_text)
        return OpResult(op_seq=op.op_seq, status="rejected", errors=bad_text)
    if op.kind == "resolve":
        if op.resolve is None:
            return _rejected(op, "$.resolve", ErrorCode.OP_INVALID, "a resolve op needs `resolve`")
        # The resolution reads and writes the database: it must see this push's writes so far,
        # and the batch must not hold a copy of the entity it changes.
        await ctx.entities.flush()
        try:
            record, entity_version = await conflicts.resolve(
                ctx.principal, op.resolve, hlc=op.hlc, op_seq=op.op_seq, refs=ctx.refs
            )
        except DomainError as error:
            return _rejected(op, "$.resolve", error.instance_code, error.detail or error.title)
        ctx.entities.forget(record.entity_id)
        return OpResult(
            op_seq=op.op_seq,
            status="applied",
            entities=[
                EntityResult(
                    entity_id=record.entity_id,
                    status="applied",
                    version=entity_version,
                    conflict_ids=[record.id],
                )
            ],
        )
    if op.submission is None:
        return _rejected(
            op, "$.submission", ErrorCode.OP_INVALID, "a submission op needs `submission`"
        )
    return await apply_submission(ctx, op.submission, _origin(op))


def _origin(op: Op) -> Origin:
    return Origin(op_seq=op.op_seq, hlc=op.hlc, digest=content_hash(op))


def _rejected(
    op: Op, path: str, code: str, message: str, errors: list[ErrorItem] | None = None
) -> OpResult:
    return OpResult(
        op_seq=op.op_seq,
        status="rejected",
        errors=errors or [ErrorItem(path=path, code=code, message=message)],
    )


def content_hash(op: Op) -> str:
    assert op.submission is not None
    return hashlib.sha256(msgspec.json.encode(op.submission)).hexdigest()


async def apply_submission(ctx: PushContext, sub: SubmissionIn, origin: Origin) -> OpResult:
    """Check and apply one submission into `ctx` (nothing is written until `ctx.write`): a
    rejection is stored as a rejected submission, an accepted one with its entity changes."""
    principal = ctx.principal
    op_seq, digest = origin.op_seq, origin.digest
    errors: list[ErrorItem] = []
    flags: list[SubmissionFlag] = []
    accepted = ctx.accepted.get(sub.instance_id)
    if accepted is not None:
        if accepted == digest:
            # The same submission again under a new op: idempotent, nothing more to apply.
            return OpResult(op_seq=op_seq, status="applied", missing_blobs=ctx.missing_of(sub))
        errors.append(
            ErrorItem(
                path="$.submission.instance_id",
                code=ErrorCode.INSTANCE_ID_REUSED,
                message="this instance_id was already used for different content; edits use deprecated_id",
            )
        )
    if not errors and not principal.may_see_ward(sub.ward_code):
        errors.append(
            ErrorItem(
                path="$.submission.ward_code",
                code=ErrorCode.WARD_FORBIDDEN,
                message=f"ward {sub.ward_code} is not assigned to you",
            )
        )
    if not errors and not can(principal, "data.submit"):
        errors.append(
            ErrorItem(
                path="$.submission",
                code=ErrorCode.ROLE_FORBIDDEN,
                message="this role does not submit data",
            )
        )
    if not errors:
        try:
            spec = await ctx.spec(sub.form_id, sub.form_version)
        except DomainError as error:
            unknown_version = error.instance_code == ErrorCode.FORM_VERSION_UNKNOWN
            field = "form_version" if unknown_version else "form_id"
            errors.append(
                ErrorItem(
                    path=f"$.submission.{field}", code=error.instance_code, message=error.detail
                )
            )
        else:
            validation = (
                validate_submission(
                    spec,
                    sub.data,
                    now=ctx.fill_time(sub, spec),
                    file_choices=file_choices(principal, sub.entities),
                )
                if not origin.sealed
                else ValidationResult(valid=True)
            )
            errors.extend(
                ErrorItem(path=data_path(e.path), code=e.code, message=e.message)
                for e in validation.errors
            )
            # Undecided rules never reject (docs/protocol.md "Validation"): accepted and flagged.
            flags = [
                SubmissionFlag(
                    path=data_path(n.path), rule=n.rule, expression=n.expression, reason=n.reason
                )
                for n in validation.not_checked
            ]
    if not errors:
        writable = await lists_for_role(principal.role)
        for index, change in enumerate(sub.entities):
            if change.list not in writable or await get_list(change.list) is None:
                errors.append(
                    ErrorItem(
                        path=f"$.submission.entities[{index}].list",
                        code=ErrorCode.LIST_FORBIDDEN,
                        message=f"you may not write the list {change.list!r}",
                    )
                )
    _store_submission(ctx, sub, origin, "rejected" if errors else "accepted", errors, flags)
    if errors:
        return OpResult(op_seq=op_seq, status="rejected", errors=errors)

    entity_results: list[EntityResult] = []
    for index, change in enumerate(sub.entities):
        outcome = await entities.apply_change(
            principal,
            change,
            hlc=origin.hlc,
            op_seq=op_seq,
            submission_ward=sub.ward_code,
            batch=ctx.entities,
            refs=ctx.refs,
        )
        if outcome.errors:
            errors.extend(
                ErrorItem(
                    path=f"$.submission.entities[{index}]{e.path.removeprefix('$')}",
                    code=e.code,
                    message=e.message,
                )
                for e in outcome.errors
            )
        entity_results.append(outcome.result)
    ctx.attachments.extend(
        (sub.instance_id, a.sha256, a.name, a.size, a.content_type, sub.ward_code)
        for a in sub.attachments
    )
    return OpResult(
        op_seq=op_seq,
        status="applied",
        errors=errors,
        entities=entity_results,
        missing_blobs=ctx.missing_of(sub),
        flags=len(flags),
    )


_REPEAT_ITEM = re.compile(r"(.*)\[(\d+)\]")


def data_path(field_path: str) -> str:
    """A form field's XPath ("/data/visit/people[2]/age": the form's root, 1-based repeats) as the
    JSON path of the answer in the push body ("$.submission.data.visit.people[1].age")."""
    path = "$.submission.data"
    for step in field_path.split("/")[2:]:
        item = _REPEAT_ITEM.fullmatch(step)
        name, index = (item.group(1), int(item.group(2)) - 1) if item else (step, None)
        path = json_member(path, name)
        if index is not None:
            path += f"[{index}]"
    return path


def submission_id(principal: Principal, op_seq: int) -> str:
    """Unique by construction (one op per stream and op_seq), so storing needs no lookup first;
    the device-generated op_id is not trusted to be unique across devices."""
    return str(uuid.uuid5(uuid.UUID(principal.device_id), f"{principal.user_id}:{op_seq}"))


def _store_submission(
    ctx: PushContext,
    sub: SubmissionIn,
    origin: Origin,
    status: str,
    errors: list[ErrorItem],
    flags: list[SubmissionFlag] | None = None,
) -> None:
    """Every submission is kept, accepted or not: rejected data is never dropped. `flags` are the
    rules validation did not decide (a rejected submission keeps them too, for the record)."""
    principal = ctx.principal
    if status == "accepted":
        ctx.accepted[sub.instance_id] = origin.digest
    ctx.submissions.append(
        (
            submission_id(principal, origin.op_seq),
            sub.instance_id,
            sub.form_id,
            sub.form_version,
            status,
            sub.ward_code,
            principal.user_id,
            principal.device_id,
            origin.op_seq,
            origin.hlc,
            sub.captured_at,
            ctx.now,
            sub.deprecated_id,
            origin.digest,
            to_json(sub.data),
            to_json(errors),
            to_json(flags or []),
            origin.xml_sha256,
            to_json(origin.envelope),
        )
    )
