"""Attachments over HTTP: tus 1.0 resumable uploads and content-addressed blob downloads.

`UploadController` speaks tus (core, creation, creation-with-upload, termination, checksum,
expiration) at /api/v1/uploads; `BlobController` answers /api/v1/blobs/check and serves
/api/v1/blobs/{sha256} to callers who may see a submission referencing it (404 to everyone else).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from email.utils import format_datetime
from typing import Any

from litestar import Controller, Request, Response, delete, get, head, post, route
from litestar.di import NamedDependency, Provide
from litestar.enums import HttpMethod
from litestar.exceptions import InternalServerException
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody
from litestar.response import Redirect, Stream

from schemas.blobs import BlobCheck, BlobCheckResult
from schemas.errors import ErrorCode
from server.api.deps import ANY_ROLE
from server.api.openapi import (
    ANY_TYPE,
    BEARER,
    BINARY,
    BODY,
    PARAMS,
    SIGNED_IN,
    Documented,
    header,
    problems,
)
from server.auth import Principal
from server.errors import (
    EXCEPTION_HANDLERS,
    BadRequest,
    PreconditionFailed,
    RangeNotSatisfiable,
    UnsupportedMediaType,
)
from server.services import blobs, uploads
from server.services.uploads import (
    CHECKSUM_ALGORITHMS,
    TUS_EXTENSIONS,
    TUS_VERSION,
    ClientDisconnected,
    UploadRuntime,
    UploadView,
)
from server.settings import Settings
from sync.blobs import BlobStore

OFFSET_OCTET_STREAM = "application/offset+octet-stream"
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")

# The tus headers, for the schema (the handlers read them themselves, as tus 1.0 says).
TUS_RESUMABLE = header(
    "Tus-Resumable", "The tus version (412 otherwise).", required=True, enum=[TUS_VERSION]
)
UPLOAD_CHECKSUM = header("Upload-Checksum", "`sha256 <base64 digest>` of this request's bytes.")
_UPLOAD_STATE = {
    "Tus-Resumable": "The tus version.",
    "Upload-Offset": "Bytes the server has.",
    "Upload-Length": "The upload's declared size.",
    "Upload-Expires": "When an unfinished upload expires (RFC 9110 date).",
    "Cache-Control": "no-store",
}


def _with_tus_header(handler: Callable[..., Response[Any]]) -> Callable[..., Response[Any]]:
    def handle(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
        response = handler(request, exc)
        response.headers["Tus-Resumable"] = TUS_VERSION
        return response

    return handle


def provide_upload_runtime(request: Request[Any, Any, Any]) -> UploadRuntime:
    return request.app.state.upload_runtime


def _store(request: Request[Any, Any, Any]) -> BlobStore:
    return request.app.state.blob_store


def _settings(request: Request[Any, Any, Any]) -> Settings:
    return request.app.state.settings


def _require_tus(request: Request[Any, Any, Any]) -> None:
    if request.headers.get("tus-resumable") != TUS_VERSION:
        raise PreconditionFailed(
            f"Send Tus-Resumable: {TUS_VERSION}.", headers={"Tus-Version": TUS_VERSION}
        )


def _int_header(request: Request[Any, Any, Any], name: str) -> int:
    value = request.headers.get(name, "")
    if not value.isdigit():
        raise BadRequest(
            f"{name} must be a non-negative integer.", code=ErrorCode.TUS_HEADER_INVALID
        )
    return int(value)


async def _body(request: Request[Any, Any, Any]) -> AsyncIterator[bytes]:
    try:
        async for chunk in request.stream():
            if chunk:
                yield chunk
    except InternalServerException as exc:  # Litestar's signal for a client gone mid-body
        raise ClientDisconnected(str(exc)) from exc


def _upload_headers(view: UploadView) -> dict[str, str]:
    headers = {
        "Tus-Resumable": TUS_VERSION,
        "Upload-Offset": str(view.offset),
        "Upload-Length": str(view.length),
        "Cache-Control": "no-store",
    }
    if view.state == "active":
        headers["Upload-Expires"] = format_datetime(view.expires_at, usegmt=True)
    return headers


class UploadController(Controller):
    path = "/api/v1/uploads"
    tags = ["attachments"]
    exception_handlers = {k: _with_tus_header(v) for k, v in EXCEPTION_HANDLERS.items()}
    # Built in the app's lifespan (server/app.py): locks and parts in flight of this process.
    dependencies = {"upload_runtime": Provide(provide_upload_runtime, sync_to_thread=False)}

    @route(
        "/",
        http_method=[HttpMethod.OPTIONS],
        summary="tus capabilities",
        status_code=204,
        operation_class=Documented(
            answer_status=204,
            empty=True,
            answer_headers={
                204: {
                    "Tus-Resumable": "The tus version.",
                    "Tus-Version": "Versions the server speaks.",
                    "Tus-Extension": "Extensions the server supports.",
                    "Tus-Max-Size": "Largest upload, in bytes.",
                    "Tus-Checksum-Algorithm": "Algorithms Upload-Checksum may use.",
                    "Allow": "Methods of this path.",
                }
            },
        ).operation_class(),
    )
    async def capabilities(self, request: Request[Any, Any, Any]) -> Response[None]:
        return Response(
            content=None,
            status_code=204,
            headers={
                "Tus-Resumable": TUS_VERSION,
                "Tus-Version": TUS_VERSION,
                "Tus-Extension": TUS_EXTENSIONS,
                "Tus-Max-Size": str(_settings(request).max_upload_bytes),
                "Tus-Checksum-Algorithm": ",".join(CHECKSUM_ALGORITHMS),
            },
        )

    @post(
        "/",
        summary="Create an upload (Upload-Length, Upload-Metadata with sha256, content_type)",
        request_max_body_size=None,  # creation-with-upload: bounded by Upload-Length instead
        security=BEARER,
        guards=[ANY_ROLE],
        responses=problems(*SIGNED_IN, *BODY, 409, 412, 415, 422, 429, 460),
        operation_class=Documented(
            body=BINARY,
            body_types=[OFFSET_OCTET_STREAM],
            body_required=False,
            headers=[
                TUS_RESUMABLE,
                header(
                    "Upload-Length", "Size of the file in bytes.", required=True, pattern="^[0-9]+$"
                ),
                header(
                    "Upload-Metadata",
                    "tus metadata: `sha256` (hex), `content_type`, optional `filename`, each base64.",
                    required=True,
                ),
                UPLOAD_CHECKSUM,
            ],
            answer_status=201,
            empty=True,
            answer_headers={201: {"Location": "The upload's URL.", **_UPLOAD_STATE}},
        ).operation_class(),
    )
    async def create(
        self,
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        upload_runtime: NamedDependency[UploadRuntime],
    ) -> Response[None]:
        _require_tus(request)
        length = _int_header(request, "upload-length")
        metadata = uploads.parse_metadata(request.headers.get("upload-metadata", ""))
        store = _store(request)
        view = await uploads.create_upload(
            principal,
            length=length,
            metadata=metadata,
            settings=_settings(request),
            runtime=upload_runtime,
            store=store,
        )
        has_body = request.headers.get("content-type", "").startswith(OFFSET_OCTET_STREAM)
        if has_body and view.state == "active":
            view = await uploads.append(
                principal,
                view.id,
                offset=0,
                body=_body(request),
                checksum=uploads.parse_checksum(request.headers.get("upload-checksum")),
                store=store,
                runtime=upload_runtime,
            )
        headers = _upload_headers(view)
        headers["Location"] = f"{self.path}/{view.id}"
        return Response(content=None, status_code=201, headers=headers)

    @head(
        "/{upload_id:str}",
        summary="How many bytes the server has",
        security=BEARER,
        guards=[ANY_ROLE],
        responses=problems(*SIGNED_IN, *PARAMS, 404, 410, 412),
        operation_class=Documented(
            headers=[TUS_RESUMABLE], empty=True, answer_headers={200: _UPLOAD_STATE}
        ).operation_class(),
    )
    async def offset(
        self,
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        upload_runtime: NamedDependency[UploadRuntime],
        upload_id: FromPath[str],
    ) -> Response[None]:
        _require_tus(request)
        view = await uploads.get_upload(
            principal, upload_id, store=_store(request), runtime=upload_runtime
        )
        return Response(content=None, status_code=200, headers=_upload_headers(view))

    @route(
        "/{upload_id:str}",
        http_method=[HttpMethod.PATCH],
        summary="Append bytes at Upload-Offset",
        status_code=204,
        request_max_body_size=None,  # bounded by the upload's remaining length instead
        security=BEARER,
        guards=[ANY_ROLE],
        responses=problems(*SIGNED_IN, *BODY, 404, 409, 410, 412, 415, 422, 460),
        operation_class=Documented(
            body=BINARY,
            body_types=[OFFSET_OCTET_STREAM],
            headers=[
                TUS_RESUMABLE,
                header(
                    "Upload-Offset", "Where these bytes start.", required=True, pattern="^[0-9]+$"
                ),
                UPLOAD_CHECKSUM,
            ],
            answer_status=204,
            empty=True,
            answer_headers={204: _UPLOAD_STATE},
        ).operation_class(),
    )
    async def append(
        self,
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        upload_runtime: NamedDependency[UploadRuntime],
        upload_id: FromPath[str],
    ) -> Response[None]:
        _require_tus(request)
        if not request.headers.get("content-type", "").startswith(OFFSET_OCTET_STREAM):
            raise UnsupportedMediaType(
                f"PATCH bodies must be {OFFSET_OCTET_STREAM}.", code=ErrorCode.TUS_CONTENT_TYPE
            )
        view = await uploads.append(
            principal,
            upload_id,
            offset=_int_header(request, "upload-offset"),
            body=_body(request),
            checksum=uploads.parse_checksum(request.headers.get("upload-checksum")),
            store=_store(request),
            runtime=upload_runtime,
        )
        return Response(content=None, status_code=204, headers=_upload_headers(view))

    @delete(
        "/{upload_id:str}",
        summary="Cancel an upload and drop its bytes",
        status_code=204,
        security=BEARER,
        guards=[ANY_ROLE],
        responses=problems(*SIGNED_IN, *PARAMS, 404, 409, 410, 412),
        operation_class=Documented(
            headers=[TUS_RESUMABLE],
            answer_status=204,
            empty=True,
            answer_headers={204: {"Tus-Resumable": "The tus version."}},
        ).operation_class(),
    )
    async def terminate(
        self,
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        upload_runtime: NamedDependency[UploadRuntime],
        upload_id: FromPath[str],
    ) -> Response[None]:
        _require_tus(request)
        await uploads.terminate(principal, upload_id, store=_store(request), runtime=upload_runtime)
        return Response(content=None, status_code=204, headers={"Tus-Resumable": TUS_VERSION})


class BlobController(Controller):
    path = "/api/v1/blobs"
    tags = ["attachments"]
    security = BEARER
    guards = [ANY_ROLE]

    @post(
        "/check",
        summary="Which of these hashes the server still needs",
        status_code=200,
        responses=problems(*SIGNED_IN, *BODY),
    )
    async def check(
        self, principal: NamedDependency[Principal], data: JSONBody[BlobCheck]
    ) -> BlobCheckResult:
        return BlobCheckResult(missing=await blobs.missing_blobs(principal, data.sha256))

    @get(
        "/{sha256:str}",
        summary="Download an attachment (307 to S3, or streamed with Range)",
        responses={
            **problems(*SIGNED_IN, *PARAMS, 404, 416),
            206: ResponseSpec(None, description="The requested byte range."),
            307: ResponseSpec(None, description="Fetch it from the presigned URL in Location."),
        },
        operation_class=Documented(
            headers=[header("Range", "One `bytes=` range.")],
            answer=BINARY,
            answer_types=[ANY_TYPE],
            answer_headers={
                200: {"Content-Disposition": "attachment", "ETag": "The sha256, quoted."},
                206: {"Content-Range": "Which bytes these are."},
                307: {"Location": "A presigned URL, valid for FIELDSYNC_BLOB_URL_TTL_SECONDS."},
            },
        ).operation_class(),
    )
    async def download(
        self,
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        sha256: FromPath[str],
    ) -> Response[Any]:
        blob = await blobs.readable_blob(principal, sha256)
        store = _store(request)
        # Saved, never rendered: a browser must not run an uploaded HTML or SVG in our origin.
        url = await store.presigned_get_url(
            sha256, expires=_settings(request).blob_url_ttl, filename=sha256
        )
        common = {
            "Cache-Control": "private, no-store",
            "ETag": f'"{sha256}"',
            "Content-Disposition": f'attachment; filename="{sha256}"',
        }
        if url is not None:
            return Redirect(url, status_code=307, headers=common)
        start, end = _byte_range(request.headers.get("range"), blob.size)
        common["Accept-Ranges"] = "bytes"
        common["Content-Length"] = str(end - start)
        status = 200
        if (start, end) != (0, blob.size):
            status = 206
            common["Content-Range"] = f"bytes {start}-{end - 1}/{blob.size}"
        chunks = await store.open(sha256, offset=start, length=end - start)
        return Stream(chunks, status_code=status, media_type=blob.content_type, headers=common)


def _byte_range(header: str | None, size: int) -> tuple[int, int]:
    """[start, end) for one `bytes=` range; the whole blob if there is none (or several)."""
    if not header or "," in header:
        return 0, size
    match = _RANGE.fullmatch(header.strip())
    if match is None or match.groups() == ("", ""):
        return 0, size  # a Range we do not understand is ignored, as RFC 9110 allows
    first, last = match.groups()
    if first == "":  # suffix: the last N bytes
        start, end = max(0, size - int(last)), size
    else:
        start = int(first)
        end = size if last == "" else min(int(last) + 1, size)
    if start >= size or start >= end:
        raise RangeNotSatisfiable(
            f"The attachment has {size} bytes.", headers={"Content-Range": f"bytes */{size}"}
        )
    return start, end
