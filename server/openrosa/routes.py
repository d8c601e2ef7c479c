"""The URLs ODK Collect reads (odk.md §0), under `/collect/key/{token}` and `/collect`.

Thin handlers: one service call each (`catalog.py`: forms; `attachments.py`: their files and
entity lists), answered in the documents of `documents.py`. `POST /submission` is in
`submission_routes.py`.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from litestar import Request, Response, get, route
from litestar.di import NamedDependency
from litestar.params import FromPath, QueryParameter
from litestar.types import ASGIApp, Receive, Scope, Send

from schemas.errors import ErrorCode
from server.api.deps import settings_of
from server.auth import Principal
from server.errors import DomainError, NotFound
from server.openrosa import attachments, catalog
from server.openrosa.auth import OPENROSA_ONLY, CollectController
from server.openrosa.documents import (
    FORM_CONTENT_TYPE,
    OPENROSA_VERSION,
    collect_base_url,
    form_list_document,
    integrity_document,
    manifest_document,
    openrosa_headers,
    xml_response,
)
from server.services.collect_tokens import principal_for_token


def _preflight_first(app: ASGIApp) -> ASGIApp:
    """HEAD /submission on a token URL, answered before the framework's request machinery
    (guards, parameters, the response object, the input guard): Collect asks before every
    submission, and the answer is constant once the token passes. Anything else (a token that
    does not pass, no OpenRosa header, GET, HTTP Basic) goes on to the route, which answers it
    as before, errors included."""

    async def preflight(scope: Scope, receive: Receive, send: Send) -> None:
        token = scope.get("path_params", {}).get("token")
        if scope.get("method") == "HEAD" and token is not None and _speaks_openrosa(scope):
            try:
                await principal_for_token(token)
            except DomainError:
                pass
            else:
                settings = scope["litestar_app"].state.settings
                headers = openrosa_headers(method="HEAD", settings=settings)
                await send(
                    {
                        "type": "http.response.start",
                        "status": 204,
                        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
                    }
                )
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
        await app(scope, receive, send)

    return preflight


def _speaks_openrosa(scope: Scope) -> bool:
    return any(
        name == b"x-openrosa-version" and value.strip() == OPENROSA_VERSION.encode()
        for name, value in scope["headers"]
    )


def _download(content: bytes, media_type: str, filename: str) -> Response[bytes]:
    disposition = f"attachment; filename*=UTF-8''{quote(filename, safe='')}"
    headers = {**openrosa_headers(), "Content-Disposition": disposition}
    return Response(content, media_type=media_type, headers=headers)


class CollectFormsController(CollectController):
    @get("/formList", opt=OPENROSA_ONLY)
    async def form_list(
        self,
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        form_id: Annotated[str | None, QueryParameter(name="formID", required=False)] = None,
    ) -> Response[bytes]:
        """Open forms the caller fills; `formID` narrows it to one (OpenRosa form list API)."""
        base = collect_base_url(request, settings_of(request))
        entries = await catalog.form_list(principal, base, form_id)
        return xml_response(form_list_document(entries))

    @get("/forms/{form_file:str}")
    async def xform(
        self, principal: NamedDependency[Principal], form_file: FromPath[str]
    ) -> Response[bytes]:
        """`<form_id>.xml`: the bytes the form list's hash is the md5 of."""
        form_id = form_file.removesuffix(".xml")
        if form_id == form_file:
            raise NotFound("There is nothing at this address.", code=ErrorCode.NOT_FOUND)
        return _download(
            await catalog.xform_bytes(principal, form_id), FORM_CONTENT_TYPE, form_file
        )

    @get("/forms/{form_id:str}/manifest", opt=OPENROSA_ONLY)
    async def manifest(
        self,
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        form_id: FromPath[str],
    ) -> Response[bytes]:
        base = collect_base_url(request, settings_of(request))
        files = await attachments.manifest(principal, form_id, base)
        return xml_response(manifest_document(files))

    @get("/forms/{form_id:str}/attachments/{filename:str}")
    async def attachment(
        self, principal: NamedDependency[Principal], form_id: FromPath[str], filename: FromPath[str]
    ) -> Response[bytes]:
        served = await attachments.attachment(principal, form_id, filename)
        return _download(served.content, served.content_type, filename)

    @get("/lists/{list_name:str}/integrity", opt=OPENROSA_ONLY)
    async def integrity(
        self,
        principal: NamedDependency[Principal],
        list_name: FromPath[str],
        ids: Annotated[str | None, QueryParameter(name="id", required=False)] = None,
    ) -> Response[bytes]:
        """Which of the asked entities are deleted or out of reach: Collect drops its offline
        copies of those (`id` is comma-separated)."""
        wanted = None if ids is None else [i.strip() for i in ids.split(",") if i.strip()]
        states = await attachments.integrity(principal, list_name, wanted)
        return xml_response(integrity_document(states))

    @route(
        "/submission",
        http_method=["HEAD", "GET"],
        status_code=204,
        opt=OPENROSA_ONLY,
        middleware=[_preflight_first],
    )
    async def submission_preflight(
        self, request: Request[Any, Any, Any], principal: NamedDependency[Principal]
    ) -> Response[None]:
        """Collect asks before every submission how large one POST may be; only a 204 counts
        (odk.md §8), and GET answers the same, as Central's does."""
        headers = openrosa_headers(method="HEAD", settings=settings_of(request))
        return Response(None, status_code=204, headers=headers)
