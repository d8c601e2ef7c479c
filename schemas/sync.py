"""Wire types of PROTOCOL.md "Push", "Entities and conflicts" and "Pull" (protocol version 1).

Only shapes and per-field constraints live here; the rules that need server state (op_seq gaps,
wards of the user, form versions) are checked by `sync` and `server`.
"""

from __future__ import annotations

from datetime import datetime
from itertools import pairwise
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import UNSET, Meta, UnsetType

from schemas.common import ErrorItem, UUIDStr, WardCode
from schemas.forms import NotCheckedRule

__all__ = [
    "HLC_PATTERN",
    "Attachment",
    "Change",
    "ConflictCandidate",
    "ConflictChangeOut",
    "ConflictRecord",
    "EntityChange",
    "EntityChangeOut",
    "EntityResult",
    "ErrorItem",
    "FlaggedSubmission",
    "FormChangeOut",
    "Op",
    "OpResult",
    "PullRequest",
    "PullResponse",
    "PushRequest",
    "PushResponse",
    "Resolve",
    "Submission",
    "SubmissionFlag",
    "decode",
    "encode",
]

PROTOCOL_VERSION = 1
MAX_OPS_PER_PUSH = 500
MAX_ENTITIES_PER_SUBMISSION = 50
MAX_ATTACHMENTS_PER_SUBMISSION = 100
MAX_PROPERTIES_PER_ENTITY = 200
MAX_PULL_ITEMS = 1000
MAX_PULL_BYTES = 8 * 1024 * 1024

# The node part excludes ":" so the three fields split unambiguously.
HLC_PATTERN = r"^[0-9]{13}:[0-9]{5}:[A-Za-z0-9_-]{1,64}$"
HLCStr = Annotated[
    str,
    Meta(pattern=HLC_PATTERN, description='HLC "<wall_ms:013d>:<counter:05d>:<node>"'),
]
OpSeq = Annotated[int, Meta(ge=1, description="Per-device operation number, contiguous from 1")]
Version = Annotated[int, Meta(ge=0, description="Server entity version; 0 = not seen yet")]
ListName = Annotated[str, Meta(pattern=r"^[a-z][a-z0-9_]{0,62}$", description="Entity list name")]
# XLSForm names (pyxform): letter or underscore, then letters, digits, _ . -
PropertyName = Annotated[str, Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")]
FormId = Annotated[str, Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")]
FormVersion = Annotated[str, Meta(min_length=1, max_length=64)]
Sha256Hex = Annotated[str, Meta(pattern=r"^[0-9a-f]{64}$", description="Lower-case hex SHA-256")]
FileName = Annotated[str, Meta(min_length=1, max_length=255, pattern=r"^[^/\\\x00]+$")]
ContentType = Annotated[str, Meta(pattern=r"^[\w.+-]+/[\w.+-]+$", max_length=127)]
BlobSize = Annotated[int, Meta(ge=0, le=5 * 1024 * 1024 * 1024)]
Label = Annotated[str, Meta(max_length=500)]
UtcTime = Annotated[datetime, Meta(tz=True)]
Properties = Annotated[dict[PropertyName, Any], Meta(max_length=MAX_PROPERTIES_PER_ENTITY)]

OpKind = Literal["submission", "resolve"]
EntityAction = Literal["create", "update", "delete", "undelete"]
EntityStatus = Literal["applied", "merged", "conflict", "rejected"]
OpStatus = Literal["applied", "duplicate", "rejected"]
ConflictKind = Literal[
    "concurrent_update", "delete_update", "update_after_delete", "duplicate_candidate"
]
ConflictStatus = Literal["open", "auto_resolved", "resolved", "superseded"]
FormState = Literal["open", "closing", "closed"]
ResetReason = Literal["expired", "scope", "integrity"]


class Attachment(msgspec.Struct, kw_only=True, frozen=True):
    name: FileName
    sha256: Sha256Hex
    size: BlobSize
    content_type: ContentType = "application/octet-stream"


class EntityChange(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    list: ListName
    entity_id: UUIDStr
    action: EntityAction
    base_version: Version = 0
    label: Label | None = None
    properties: Properties = msgspec.field(default_factory=dict)
    base_properties: Properties | None = None

    def __post_init__(self) -> None:
        if self.action == "create" and self.base_version != 0:
            raise ValueError("a create has base_version 0")


class Submission(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    instance_id: UUIDStr
    form_id: FormId
    form_version: FormVersion
    captured_at: UtcTime
    ward_code: WardCode
    data: dict[str, Any]
    attachments: Annotated[list[Attachment], Meta(max_length=MAX_ATTACHMENTS_PER_SUBMISSION)] = (
        msgspec.field(default_factory=list)
    )
    deprecated_id: UUIDStr | None = None
    entities: Annotated[list[EntityChange], Meta(max_length=MAX_ENTITIES_PER_SUBMISSION)] = (
        msgspec.field(default_factory=list)
    )


class ResolveBody(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """Pick candidate `choice` of a conflict, or write an explicit `value` (which may be null).
    As the body of `POST /api/v1/conflicts/{id}/resolve` the conflict id is in the path."""

    resolution_id: UUIDStr
    choice: Annotated[int, Meta(ge=0)] | None = None
    value: Any | UnsetType = UNSET

    def __post_init__(self) -> None:
        if (self.choice is None) == (self.value is UNSET):
            raise ValueError("give exactly one of `choice` or `value`")


class Resolve(ResolveBody, kw_only=True, frozen=True, omit_defaults=True):
    """The `resolve` op of a push: a resolution naming its conflict."""

    conflict_id: UUIDStr


class Op(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    op_seq: OpSeq
    op_id: UUIDStr
    hlc: HLCStr
    kind: OpKind
    submission: Submission | None = None
    resolve: Resolve | None = None

    def __post_init__(self) -> None:
        # The payload must match `kind`, and only that payload may be present.
        if self.kind == "submission" and (self.submission is None or self.resolve is not None):
            raise ValueError("a submission op carries `submission` and no `resolve`")
        if self.kind == "resolve" and (self.resolve is None or self.submission is not None):
            raise ValueError("a resolve op carries `resolve` and no `submission`")


class PushRequest(msgspec.Struct, kw_only=True, frozen=True):
    protocol: Literal[1]
    device_id: UUIDStr
    ops: Annotated[list[Op], Meta(max_length=MAX_OPS_PER_PUSH)]

    def __post_init__(self) -> None:
        seqs = [op.op_seq for op in self.ops]
        if any(b <= a for a, b in pairwise(seqs)):
            raise ValueError("ops must be in strictly ascending op_seq")


class EntityResult(msgspec.Struct, kw_only=True, frozen=True):
    entity_id: str
    status: EntityStatus
    version: int
    conflict_ids: list[str] = msgspec.field(default_factory=list)


class OpResult(msgspec.Struct, kw_only=True, frozen=True):
    op_seq: int
    status: OpStatus
    errors: list[ErrorItem] = msgspec.field(default_factory=list)
    entities: list[EntityResult] = msgspec.field(default_factory=list)
    missing_blobs: list[str] = msgspec.field(default_factory=list)
    # On a `duplicate`: what the op's first application answered (`applied` or `rejected`).
    original_status: OpStatus | None = None
    # How many of the submission's rules the server accepted without deciding (flagged for
    # supervisors; docs/protocol.md "Validation"). Never a reason to resend or change anything.
    flags: int = 0


class PushResponse(msgspec.Struct, kw_only=True, frozen=True):
    last_op_seq: int
    server_hlc: str
    results: list[OpResult] = msgspec.field(default_factory=list)


class SubmissionFlag(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """A rule the server accepted without deciding: it could not evaluate `expression` exactly,
    or the reference engines disagree on it (`reason` says which, in words). `path` is the JSON
    path of the answer in the push body, as in an op's errors."""

    path: str
    rule: NotCheckedRule
    expression: str | None = None
    reason: str


class FlaggedSubmission(msgspec.Struct, kw_only=True, frozen=True):
    """An accepted submission with rules the server did not decide, as supervisors review it
    (`GET /api/v1/submissions/flagged`)."""

    instance_id: str
    form_id: str
    form_version: str
    ward_code: str
    captured_at: datetime
    received_at: datetime
    flags: list[SubmissionFlag]


# Classes with a field named `list` cannot say `list[...]` in their own annotations.
StrList = list[str]


class ConflictCandidate(msgspec.Struct, kw_only=True, frozen=True):
    value: Any
    hlc: str
    device_id: str
    user_id: str
    op_seq: int
    at_version: int


CandidateList = list[ConflictCandidate]


class ConflictRecord(msgspec.Struct, kw_only=True, frozen=True):
    """A conflict as served by `GET /api/v1/conflicts`; `version` orders its state changes."""

    id: str
    list: str
    entity_id: str
    kind: ConflictKind
    status: ConflictStatus
    candidates: CandidateList
    property: str | None = None
    base: Any = None
    chosen: Any = None
    resolved_by: str | None = None
    resolved_at: datetime | None = None
    version: int = 1


class PullRequest(msgspec.Struct, kw_only=True, frozen=True):
    protocol: Literal[1]
    device_id: UUIDStr
    cursor: Annotated[str, Meta(max_length=4096)] | None = None
    max_items: Annotated[int, Meta(ge=1, le=MAX_PULL_ITEMS)] = 500
    max_bytes: Annotated[int, Meta(ge=1024, le=MAX_PULL_BYTES)] = 1024 * 1024


class EntityChangeOut(msgspec.Struct, kw_only=True, frozen=True, tag_field="type", tag="entity"):
    list: str
    id: str
    version: int
    deleted: bool = False
    evict: bool = False
    label: str | None = None
    properties: dict[str, Any] = msgspec.field(default_factory=dict)
    conflicted: StrList = msgspec.field(default_factory=StrList)


class FormChangeOut(msgspec.Struct, kw_only=True, frozen=True, tag_field="type", tag="form"):
    form_id: str
    version: str
    state: FormState
    hash: str


class ConflictChangeOut(ConflictRecord, frozen=True, tag_field="type", tag="conflict"):
    """A conflict record in a pull page: the same fields as `ConflictRecord`, tagged.

    `evict` (an extension of PROTOCOL.md): the conflict left the caller's wards; drop the local
    copy. An evicted record carries no candidate values."""

    evict: bool = False


Change = EntityChangeOut | FormChangeOut | ConflictChangeOut


class PullResponse(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    cursor: str
    has_more: bool
    server_hlc: str
    acked_through: int
    changes: list[Change]  # required: always on the wire, also when empty
    reset: ResetReason | None = None


# Built once (msgspec encoders/decoders are reusable and thread-safe).
JSON_ENCODER = msgspec.json.Encoder()
MSGPACK_ENCODER = msgspec.msgpack.Encoder()
_DECODERS: dict[tuple[type, str], msgspec.json.Decoder[Any] | msgspec.msgpack.Decoder[Any]] = {}
for _type in (PushRequest, PushResponse, PullRequest, PullResponse, ConflictRecord, Resolve):
    _DECODERS[(_type, "json")] = msgspec.json.Decoder(_type)
    _DECODERS[(_type, "msgpack")] = msgspec.msgpack.Decoder(_type)

MediaKind = Literal["json", "msgpack"]
T = TypeVar("T")


def encode(obj: Any, media: MediaKind = "json") -> bytes:
    """Encode a wire value as JSON or msgpack."""
    return (JSON_ENCODER if media == "json" else MSGPACK_ENCODER).encode(obj)


def decode(data: bytes, type_: type[T], media: MediaKind = "json") -> T:
    """Decode and validate `data` as `type_`; raises msgspec.ValidationError/DecodeError."""
    decoder = _DECODERS.get((type_, media))
    if decoder is None:
        raise KeyError(f"no prebuilt decoder for {type_.__name__}")
    result: T = decoder.decode(data)
    return result
