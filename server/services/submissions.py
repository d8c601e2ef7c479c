"""What supervisors see of one submission beyond its entities: its attachments' arrival."""

from __future__ import annotations

from schemas.blobs import AttachmentStatus
from schemas.errors import ErrorCode
from server.auth import Principal
from server.db.tables_sync import Submission
from server.errors import NotFound
from server.permissions import require
from server.services.blobs import attachment_status


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
