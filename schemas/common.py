"""Shared wire shapes: problem details (RFC 9457) and named constraints."""

from __future__ import annotations

from typing import Annotated

import msgspec

UUIDStr = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
        description="UUID (devices generate UUIDv7 for records they create)",
    ),
]
WardCode = Annotated[
    str, msgspec.Meta(pattern=r"^[0-9]{5}$", description="Official 5-digit ward code")
]


class ErrorItem(msgspec.Struct, frozen=True):
    path: str
    code: str
    message: str


class Problem(msgspec.Struct, omit_defaults=True):
    """RFC 9457 problem details; `code` is a stable machine string."""

    type: str
    title: str
    status: int
    code: str
    detail: str = ""
    errors: list[ErrorItem] = msgspec.field(default_factory=list)
    retry_after: int | None = None
    server_time: str | None = None
