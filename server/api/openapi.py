"""OpenAPI metadata the controllers share: problem responses, the bearer scheme, bodies that a
handler decodes itself (JSON or msgpack), and the headers of tus and conditional requests.

Litestar documents what it decodes and encodes; this module documents the rest, so a client
generator or a fuzzer sees the API as it behaves.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import (
    Components,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    RequestBody,
    Schema,
    SecurityScheme,
)

from schemas.common import Problem
from server.errors import PROBLEM_JSON

JSON = "application/json"
MSGPACK = "application/msgpack"
ANY_TYPE = "*/*"
BINARY: dict[str, Any] = {"type": "string", "format": "binary"}

BEARER_SCHEME = Components(
    security_schemes={
        "bearer": SecurityScheme(
            type="http",
            scheme="bearer",
            bearer_format="JWT",
            description="The access token of POST /api/v1/auth/login or /auth/refresh.",
        )
    }
)
BEARER: list[dict[str, list[str]]] = [{"bearer": []}]

_PROBLEMS = {
    400: "The request is not valid (problem+json lists the fields in `errors`).",
    401: "No valid access token (missing, expired, revoked device or disabled user).",
    403: "The caller's role or wards do not allow this.",
    404: "Nothing at this address, or nothing the caller may see.",
    409: "Conflicts with the current state.",
    410: "The upload expired.",
    412: "A precondition header is missing or unsupported (tus: Tus-Resumable).",
    413: "The body is larger than allowed.",
    415: "The content type is not accepted.",
    416: "The range is outside the attachment.",
    422: "The content does not match what was declared.",
    429: "Too many attempts or uploads; see Retry-After.",
    460: "The tus Upload-Checksum does not match the bytes received.",
    503: "The database or the blob store is unavailable; retry after Retry-After.",
}

# Every route reads the database, which may be unavailable for a moment.
_ALWAYS = (503,)
PARAMS = (400,)
BODY = (400, 413)
SIGNED_IN = (401,)
ADMIN = (401, 403)


def problems(*statuses: int) -> dict[int, ResponseSpec]:
    """The problem+json answers of a route, with the ones every route may give."""
    return {
        status: ResponseSpec(
            data_container=Problem,
            media_type=PROBLEM_JSON,
            description=_PROBLEMS[status],
            generate_examples=False,
        )
        for status in sorted({*_ALWAYS, *statuses})
    }


def inline_schema(type_: Any) -> dict[str, Any]:
    """The JSON Schema of a msgspec type with its definitions inlined (it is not in components);
    a dict is taken as a schema already."""
    if isinstance(type_, dict):
        return type_
    schema = msgspec.json.schema(type_)
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(copy.deepcopy(definitions[ref.removeprefix("#/$defs/")]))
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


def header(name: str, description: str, *, required: bool = False, **schema: Any) -> Parameter:
    return Parameter(
        name=name,
        param_in="header",
        required=required,
        description=description,
        schema=Schema(type=OpenAPIType.STRING, **schema),
    )


IF_NONE_MATCH = header("If-None-Match", "The ETag of the copy the device holds (304 if unchanged).")
NOT_MODIFIED = {304: ResponseSpec(data_container=None, description="The device's copy is current.")}


@dataclass
class Documented:
    """What Litestar cannot see: a body the handler decodes, extra answer types, headers."""

    body: Any = None
    body_types: Sequence[str] = (JSON, MSGPACK)
    body_required: bool = True
    answer: Any = None
    answer_types: Sequence[str] = (JSON, MSGPACK)
    answer_status: int = 200
    empty: bool = False  # the success answer has no body (tus)
    headers: Sequence[Parameter] = ()
    answer_headers: Mapping[int, Mapping[str, str]] | None = None

    def operation_class(self) -> type[Operation]:
        documented = self

        @dataclass
        class DocumentedOperation(Operation):
            def __post_init__(self) -> None:
                documented.apply(self)

        return DocumentedOperation

    def apply(self, operation: Operation) -> None:
        if self.body is not None:
            schema = inline_schema(self.body)
            operation.request_body = RequestBody(
                required=self.body_required,
                content={kind: OpenAPIMediaType(schema=schema) for kind in self.body_types},  # type: ignore[arg-type]
            )
        responses = operation.responses or {}
        success = responses[str(self.answer_status)]
        assert isinstance(success, OpenAPIResponse)
        if self.empty:
            success.content = None
        elif self.answer is not None:
            schema = inline_schema(self.answer)
            success.content = {
                kind: OpenAPIMediaType(schema=schema)  # type: ignore[arg-type]
                for kind in self.answer_types
            }
        if self.headers:
            operation.parameters = [*(operation.parameters or []), *self.headers]
        for status, named in (self.answer_headers or {}).items():
            response = responses[str(status)]
            assert isinstance(response, OpenAPIResponse)
            response.headers = {
                name: OpenAPIHeader(schema=Schema(type=OpenAPIType.STRING), description=description)
                for name, description in named.items()
            }
        operation.responses = responses
