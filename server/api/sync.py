"""Sync endpoints (PROTOCOL.md "Push", "Pull", conflicts), in JSON or msgpack."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, Parameter, QueryParameter

from schemas.common import ErrorItem
from schemas.errors import ErrorCode
from schemas.sync import (
    ConflictRecord,
    FlaggedSubmission,
    PullRequest,
    PullResponse,
    PushRequest,
    PushResponse,
    Resolve,
    ResolveBody,
)
from server.api.deps import ANY_ROLE, allow, settings_of
from server.api.openapi import BEARER, BODY, PARAMS, SIGNED_IN, Documented, problems
from server.auth import Principal
from server.errors import BadRequest
from server.services import conflicts
from server.services.blobs import AttachmentStatus
from server.services.pull import pull
from server.services.push import apply_push, server_hlc
from server.services.submissions import attachments_of, flagged_submissions
from server.text_rules import TEXT_JUDGED_PER_OP

MSGPACK_TYPES = ("application/msgpack", "application/x-msgpack", "application/vnd.msgpack")
T = TypeVar("T")


def decode_body(request: Request[Any, Any, Any], body: bytes, type_: type[T]) -> T:
    content_type = (
        request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    )
    try:
        if content_type in MSGPACK_TYPES:
            return msgspec.msgpack.decode(body, type=type_)
        return msgspec.json.decode(body, type=type_)
    except msgspec.ValidationError as error:
        message, _, where = str(error).partition(" - at `")
        raise BadRequest(
            "The request does not follow the sync protocol.",
            code=ErrorCode.VALIDATION_FAILED,
            errors=[
                ErrorItem(path=where.rstrip("`") or "$", code=ErrorCode.INVALID, message=message)
            ],
        ) from None
    except msgspec.DecodeError as error:
        raise BadRequest(
            f"The body is not valid {content_type}: {error}", code=ErrorCode.MALFORMED_BODY
        ) from None


def encode_for(request: Request[Any, Any, Any], value: Any) -> Response[bytes]:
    accept = request.headers.get("accept", "")
    if any(kind in accept for kind in MSGPACK_TYPES):
        return Response(msgspec.msgpack.encode(value), media_type="application/msgpack")
    return Response(msgspec.json.encode(value), media_type="application/json")


class SyncController(Controller):
    path = "/api/v1/sync"
    tags = ["sync"]
    guards = [ANY_ROLE]
    security = BEARER

    @post(
        "/push",
        status_code=200,
        summary="Push ops (exactly-once, contiguous op_seq)",
        responses=problems(*SIGNED_IN, *BODY, 403),
        operation_class=Documented(body=PushRequest, answer=PushResponse).operation_class(),
        opt={TEXT_JUDGED_PER_OP: True},
    )
    async def push(
        self, request: Request[Any, Any, Any], principal: NamedDependency[Principal]
    ) -> Response[bytes]:
        body = decode_body(request, await request.body(), PushRequest)
        zone = settings_of(request).zone
        return encode_for(request, await apply_push(principal, body, zone=zone))

    @post(
        "/pull",
        status_code=200,
        summary="Pull changes in scope after a cursor",
        responses=problems(*SIGNED_IN, *BODY, 403),
        operation_class=Documented(body=PullRequest, answer=PullResponse).operation_class(),
    )
    async def pull(
        self, request: Request[Any, Any, Any], principal: NamedDependency[Principal]
    ) -> Response[bytes]:
        body = decode_body(request, await request.body(), PullRequest)
        return encode_for(request, await pull(settings_of(request), principal, body))


class ConflictController(Controller):
    path = "/api/v1/conflicts"
    tags = ["sync"]
    guards = [allow("conflict.resolve")]
    security = BEARER

    @get(
        "/",
        summary="Conflicts in the caller's wards (supervisors)",
        responses=problems(*SIGNED_IN, *PARAMS, 403),
    )
    async def list_conflicts(
        self,
        principal: NamedDependency[Principal],
        status: FromQuery[str | None] = None,
        list_name: Annotated[str | None, QueryParameter(name="list")] = None,
        ward: FromQuery[str | None] = None,
        limit: FromQuery[Annotated[int, Parameter(ge=1, le=1000)]] = 200,
    ) -> list[ConflictRecord]:
        return await conflicts.list_conflicts(
            principal, status=status, list_name=list_name, ward=ward, limit=limit
        )

    @post(
        "/{conflict_id:str}/resolve",
        status_code=200,
        summary="Resolve a conflict (idempotent on resolution_id)",
        responses=problems(*SIGNED_IN, *BODY, 403, 404, 409),
    )
    async def resolve(
        self,
        principal: NamedDependency[Principal],
        conflict_id: FromPath[str],
        data: JSONBody[ResolveBody],
    ) -> ConflictRecord:
        request = Resolve(
            conflict_id=conflict_id,
            resolution_id=data.resolution_id,
            choice=data.choice,
            value=data.value,
        )
        return await conflicts.resolve_via_api(principal, request, hlc=server_hlc())


class SubmissionController(Controller):
    path = "/api/v1/submissions"
    tags = ["sync"]
    guards = [allow("submission.supervise")]
    security = BEARER

    @get(
        "/flagged",
        summary="Accepted submissions with rules the server did not decide (supervisors)",
        description=(
            "Newest first, in the caller's wards. Each flag names the answer (its JSON path in "
            "the push body), the rule, its expression and why the server did not decide it; "
            'see docs/protocol.md "Validation".'
        ),
        responses=problems(*SIGNED_IN, *PARAMS, 403),
    )
    async def flagged(
        self,
        principal: NamedDependency[Principal],
        ward: FromQuery[str | None] = None,
        form_id: FromQuery[str | None] = None,
        limit: FromQuery[Annotated[int, Parameter(ge=1, le=1000)]] = 200,
    ) -> list[FlaggedSubmission]:
        return await flagged_submissions(principal, ward=ward, form_id=form_id, limit=limit)

    @get(
        "/{instance_id:str}/attachments",
        summary="How many of a submission's files arrived (supervisors)",
        responses=problems(*SIGNED_IN, *PARAMS, 403, 404),
    )
    async def attachments(
        self, principal: NamedDependency[Principal], instance_id: FromPath[str]
    ) -> AttachmentStatus:
        return await attachments_of(principal, instance_id)
