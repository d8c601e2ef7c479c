"""What supervisors see of submissions beyond their entities: attachments' arrival, and the
accepted submissions with rules the server did not decide (flags)."""

from __future__ import annotations

from piccolo.columns.combination import WhereRaw

from schemas.blobs import AttachmentStatus
from schemas.errors import ErrorCode
from schemas.sync import FlaggedSubmission, SubmissionFlag
from server.auth import Principal
from server.db.json_columns import from_json
from server.db.tables_sync import Submission
from server.errors import NotFound
from server.permissions import require
from server.services.blobs import attachment_status

# The predicate of the `submission_flagged` index (m0015), written the same so it is used.
_HAS_FLAGS = "CAST(flags AS TEXT) <> '[]'"


async def attachments_of(principal: Principal, instance_id: str) -> AttachmentStatus:
    """ "2 of 3 files received" for an accepted submission in the caller's wards; 404 otherwise."""
    require(principal, "submission.supervise")
    row = (
        await Submission.select(Submission.ward_code)
        .where(Submission.instance_id == instance_id, Submission.status == "accepted")
        .first()
    )
    if row is None or not principal.may_see_ward(row["ward_code"]):
        raise NotFound("No such submission.", code=ErrorCode.SUBMISSION_NOT_FOUND)
    return await attachment_status(instance_id)


async def flagged_submissions(
    principal: Principal, *, ward: str | None, form_id: str | None, limit: int = 200
) -> list[FlaggedSubmission]:
    """Accepted submissions in the caller's wards that carry flags, newest first."""
    require(principal, "submission.supervise")
    wards = principal.listed_wards(ward)
    if wards == []:
        return []
    query = Submission.select(
        Submission.instance_id,
        Submission.form_id,
        Submission.form_version,
        Submission.ward_code,
        Submission.captured_at,
        Submission.received_at,
        Submission.flags,
    ).where(Submission.status == "accepted", WhereRaw(_HAS_FLAGS))
    if wards is not None:
        query = query.where(Submission.ward_code.is_in(wards))
    if form_id:
        query = query.where(Submission.form_id == form_id)
    rows = await query.order_by(Submission.received_at, Submission.id, ascending=False).limit(limit)
    return [
        FlaggedSubmission(
            instance_id=row["instance_id"],
            form_id=row["form_id"],
            form_version=row["form_version"],
            ward_code=row["ward_code"],
            captured_at=row["captured_at"],
            received_at=row["received_at"],
            flags=from_json(row["flags"], list[SubmissionFlag]),
        )
        for row in rows
    ]
