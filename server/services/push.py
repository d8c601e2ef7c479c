"""Push (PROTOCOL.md "Push"): exactly-once, contiguous per-device ops, applied in one transaction.

One push is one transaction: the device row is locked (pushes of one device are serialised), each
new op is applied and its result stored in the op ledger, the device's last op_seq advances, and
the change-log rows are written last (commit order, see changes.py). A transient failure rolls the
whole push back and answers 503, so nothing advances.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import msgspec

from forms.validation import validate_submission
from schemas.common import ErrorItem
from schemas.sync import EntityResult, Op, OpResult, PushRequest, PushResponse
from server.auth import Principal
from server.db.engine import current_engine, transaction
from server.db.json_columns import from_json, to_json
from server.db.tables_sync import DeviceSync, OpLedger, Submission, SubmissionAttachment
from server.errors import BadRequest, DomainError, Forbidden
from server.services import changes as change_log
from server.services import conflicts, entities
from server.services.blobs import missing_blobs
from server.services.entity_lists import get_list, lists_for_role, may_write
from server.services.forms import accepting_spec
from sync.hlc import HLC, is_too_far_ahead

SERVER_NODE = "server"


def now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def server_hlc() -> str:
    return HLC(now_ms(), 0, SERVER_NODE).format()


@dataclass
class PushContext:
    principal: Principal
    refs: list[change_log.ChangeRef] = field(default_factory=list)


async def apply_push(principal: Principal, request: PushRequest) -> PushResponse:
    if request.device_id != principal.device_id:
        raise Forbidden("This token belongs to another device.", code="device_mismatch")
    _check_order(request.ops)
    server_now = now_ms()
    for index, op in enumerate(request.ops):
        if is_too_far_ahead(op.hlc, server_now):
            raise BadRequest(
                "The device clock is more than 5 minutes ahead of the server; correct the offset and retry.",
                code="clock_skew",
                errors=[
                    ErrorItem(
                        path=f"$.ops[{index}].hlc",
                        code="clock_skew",
                        message="hlc is in the future",
                    )
                ],
                extra={"server_time": datetime.now(UTC).isoformat()},
            )
    async with transaction():
        last = await _lock_device(principal)
        replayed = await _stored_results(
            principal.device_id, [op.op_seq for op in request.ops if op.op_seq <= last]
        )
        results: list[OpResult] = []
        applied: list[tuple[Op, OpResult, list[change_log.ChangeRef]]] = []
        ctx = PushContext(principal)
        for op in request.ops:
            if op.op_seq <= last:
                stored = replayed.get(op.op_seq) or OpResult(op_seq=op.op_seq, status="applied")
                results.append(msgspec.structs.replace(stored, status="duplicate"))
                continue
            if op.op_seq > last + 1:
                break  # a gap: the device resends from last_op_seq + 1
            ctx.refs = []
            result = await _apply_op(ctx, op)
            applied.append((op, result, ctx.refs))
            results.append(result)
            last = op.op_seq
        if applied:
            positions = await change_log.record([ref for _, _, refs in applied for ref in refs])
            await OpLedger.insert(
                *[
                    OpLedger(
                        key=f"{principal.device_id}:{op.op_seq}",
                        device_id=principal.device_id,
                        op_seq=op.op_seq,
                        op_id=op.op_id,
                        kind=op.kind,
                        status=result.status,
                        # Only entity rows count: workers never receive conflict rows, so a
                        # conflict's position must not hold their acked_through back.
                        max_position=max(
                            (positions.get(r.record_key, 0) for r in refs if r.kind == "entity"),
                            default=0,
                        ),
                        result=to_json(result),
                    )
                    for op, result, refs in applied
                ]
            )
            await DeviceSync.update(
                {DeviceSync.last_op_seq: last, DeviceSync.updated_at: datetime.now(UTC)}
            ).where(DeviceSync.device_id == principal.device_id)
    return PushResponse(last_op_seq=last, server_hlc=server_hlc(), results=results)


def _check_order(ops: list[Op]) -> None:
    for index in range(1, len(ops)):
        if ops[index].op_seq != ops[index - 1].op_seq + 1:
            raise BadRequest(
                "Ops must be in ascending, contiguous op_seq order.",
                code="ops_not_contiguous",
                errors=[
                    ErrorItem(
                        path=f"$.ops[{index}].op_seq",
                        code="ops_not_contiguous",
                        message="expected the next op_seq",
                    )
                ],
            )


async def _lock_device(principal: Principal) -> int:
    """Create the device's sync row if new, lock it, return its last applied op_seq."""
    query = DeviceSync.select(DeviceSync.last_op_seq).where(
        DeviceSync.device_id == principal.device_id
    )
    if current_engine().engine_type == "postgres":
        # Ensure the row exists without racing a concurrent first push, then lock it.
        await DeviceSync.raw(
            "INSERT INTO device_sync (device_id, user_id, last_op_seq, scope_fingerprint, scope_wards, scope_lists, updated_at) "
            "VALUES ({}, {}, 0, '', '[]', '[]', now()) ON CONFLICT (device_id) DO NOTHING",
            principal.device_id,
            principal.user_id,
        )
        row = await query.lock_rows().first()
    else:
        row = await query.first()
        if row is None:
            await DeviceSync.insert(
                DeviceSync(device_id=principal.device_id, user_id=principal.user_id)
            )
            row = {"last_op_seq": 0}
    assert row is not None
    return int(row["last_op_seq"])


async def _stored_results(device_id: str, op_seqs: list[int]) -> dict[int, OpResult]:
    if not op_seqs:
        return {}
    rows = await OpLedger.select(OpLedger.op_seq, OpLedger.result).where(
        OpLedger.device_id == device_id, OpLedger.op_seq.is_in(op_seqs)
    )
    return {int(r["op_seq"]): from_json(r["result"], OpResult) for r in rows}


async def _apply_op(ctx: PushContext, op: Op) -> OpResult:
    if op.kind == "resolve":
        if op.resolve is None:
            return _rejected(op, "$.resolve", "op_invalid", "a resolve op needs `resolve`")
        try:
            record = await conflicts.resolve(
                ctx.principal, op.resolve, hlc=op.hlc, op_seq=op.op_seq, refs=ctx.refs
            )
        except DomainError as error:
            return _rejected(op, "$.resolve", error.instance_code, error.detail or error.title)
        return OpResult(
            op_seq=op.op_seq,
            status="applied",
            entities=[
                EntityResult(
                    entity_id=record.entity_id,
                    status="applied",
                    version=record.version,
                    conflict_ids=[record.id],
                )
            ],
        )
    if op.submission is None:
        return _rejected(op, "$.submission", "op_invalid", "a submission op needs `submission`")
    return await _apply_submission(ctx, op)


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


async def _apply_submission(ctx: PushContext, op: Op) -> OpResult:
    sub = op.submission
    assert sub is not None
    principal = ctx.principal
    digest = content_hash(op)
    errors: list[ErrorItem] = []
    accepted = (
        await Submission.select(Submission.content_hash)
        .where(Submission.instance_id == sub.instance_id, Submission.status == "accepted")
        .first()
    )
    if accepted is not None:
        if accepted["content_hash"] == digest:
            # The same submission again under a new op: idempotent, nothing more to apply.
            return OpResult(
                op_seq=op.op_seq,
                status="applied",
                missing_blobs=await missing_blobs(a.sha256 for a in sub.attachments),
            )
        errors.append(
            ErrorItem(
                path="$.submission.instance_id",
                code="instance_id_reused",
                message="this instance_id was already used for different content; edits use deprecated_id",
            )
        )
    if not errors and not principal.may_see_ward(sub.ward_code):
        errors.append(
            ErrorItem(
                path="$.submission.ward_code",
                code="ward_forbidden",
                message=f"ward {sub.ward_code} is not assigned to you",
            )
        )
    if not errors and not may_write(principal.role):
        errors.append(
            ErrorItem(
                path="$.submission", code="role_forbidden", message="this role does not submit data"
            )
        )
    if not errors:
        try:
            spec = await accepting_spec(sub.form_id, sub.form_version)
        except DomainError as error:
            errors.append(
                ErrorItem(
                    path="$.submission.form_version", code=error.instance_code, message=error.detail
                )
            )
        else:
            validation = validate_submission(spec, sub.data, now=datetime.now(UTC))
            errors.extend(
                ErrorItem(path=f"$.submission.data{e.path}", code=e.code, message=e.message)
                for e in validation.errors
            )
    if not errors:
        writable = await lists_for_role(principal.role)
        for index, change in enumerate(sub.entities):
            if change.list not in writable or await get_list(change.list) is None:
                errors.append(
                    ErrorItem(
                        path=f"$.submission.entities[{index}].list",
                        code="list_forbidden",
                        message=f"you may not write the list {change.list!r}",
                    )
                )
    await _store_submission(principal, op, digest, "rejected" if errors else "accepted", errors)
    if errors:
        return OpResult(op_seq=op.op_seq, status="rejected", errors=errors)

    entity_results: list[EntityResult] = []
    for index, change in enumerate(sub.entities):
        outcome = await entities.apply_change(
            principal,
            change,
            hlc=op.hlc,
            op_seq=op.op_seq,
            submission_ward=sub.ward_code,
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
    if sub.attachments:
        await SubmissionAttachment.insert(
            *[
                SubmissionAttachment(
                    instance_id=sub.instance_id,
                    sha256=a.sha256,
                    name=a.name,
                    size=a.size,
                    content_type=a.content_type,
                    ward_code=sub.ward_code,
                )
                for a in sub.attachments
            ]
        )
    return OpResult(
        op_seq=op.op_seq,
        status="applied",
        errors=errors,
        entities=entity_results,
        missing_blobs=await missing_blobs(a.sha256 for a in sub.attachments),
    )


def submission_id(device_id: str, op_seq: int) -> str:
    """Unique by construction (one op per device and op_seq), so storing needs no lookup first;
    the device-generated op_id is not trusted to be unique across devices."""
    return str(uuid.uuid5(uuid.UUID(device_id), str(op_seq)))


async def _store_submission(
    principal: Principal, op: Op, digest: str, status: str, errors: list[ErrorItem]
) -> None:
    """Every submission is kept, accepted or not: rejected data is never dropped."""
    sub = op.submission
    assert sub is not None
    await Submission.insert(
        Submission(
            id=submission_id(principal.device_id, op.op_seq),
            instance_id=sub.instance_id,
            form_id=sub.form_id,
            form_version=sub.form_version,
            status=status,
            ward_code=sub.ward_code,
            user_id=principal.user_id,
            device_id=principal.device_id,
            op_seq=op.op_seq,
            hlc=op.hlc,
            captured_at=sub.captured_at,
            deprecated_id=sub.deprecated_id,
            content_hash=digest,
            data=to_json(sub.data),
            errors=to_json(errors),
        )
    )
