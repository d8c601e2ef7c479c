"""Forms API (PROTOCOL.md "Forms"): admin authoring, device form lists, version-pinned downloads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from litestar import Controller, Request, Response, get, patch, post, put
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, MultipartBody

from schemas.forms import (
    DraftUploaded,
    FormDiff,
    FormInfo,
    FormListItem,
    FormMedia,
    FormSpec,
    FormUpdate,
    FormVersionInfo,
    PublishRequest,
    ValidateRequest,
    ValidationResult,
)
from server.api.deps import ANY_ROLE, allow, settings_of
from server.api.openapi import (
    ADMIN,
    ANY_TYPE,
    BEARER,
    BINARY,
    BODY,
    IF_NONE_MATCH,
    NOT_MODIFIED,
    PARAMS,
    SIGNED_IN,
    Documented,
    problems,
)
from server.auth import Principal
from server.openrosa import attachments
from server.services import forms
from server.text_rules import BINARY_BODY

T = TypeVar("T")

IMMUTABLE = "private, max-age=31536000, immutable"
CONDITIONAL = Documented(
    headers=[IF_NONE_MATCH],
    answer_headers={
        200: {
            "ETag": "Send it back as If-None-Match.",
            "Cache-Control": "`private, no-cache` for the list; a version never changes.",
        }
    },
).operation_class()


MEDIA_BODY = Documented(body=BINARY, body_types=(ANY_TYPE,)).operation_class()


@dataclass
class FormUpload:
    file: UploadFile


def _conditional(
    request: Request[Any, Any, Any], content: T, etag: str, cache_control: str
) -> Response[T | None]:
    """`content` with its ETag, or an empty 304 when If-None-Match names that ETag."""
    if etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
        return Response(None, status_code=304, headers={"ETag": etag})
    return Response(content, headers={"ETag": etag, "Cache-Control": cache_control})


class FormController(Controller):
    path = "/api/v1/forms"
    tags = ["forms"]
    guards = [ANY_ROLE]
    security = BEARER

    @get(
        "/",
        summary="Forms the caller may fill (ETag; If-None-Match answers 304)",
        responses={**problems(*SIGNED_IN), **NOT_MODIFIED},
        operation_class=CONDITIONAL,
    )
    async def list_forms(
        self, request: Request[Any, Any, Any], principal: NamedDependency[Principal]
    ) -> Response[list[FormListItem] | None]:
        items = await forms.list_for_device(principal)
        return _conditional(request, items, forms.list_etag(items), "private, no-cache")

    @get(
        "/admin",
        summary="Every form with its state, roles and draft (admin)",
        responses=problems(*ADMIN),
        guards=[allow("form.admin")],
    )
    async def admin_list(self, admin: NamedDependency[Principal]) -> list[FormInfo]:
        return await forms.list_forms()

    @post(
        "/",
        summary="Upload an XLSForm (.xlsx) or XForm (.xml) as the form's draft",
        responses=problems(*ADMIN, *BODY, 409),
        guards=[allow("form.admin")],
    )
    async def upload(
        self, admin: NamedDependency[Principal], data: MultipartBody[FormUpload]
    ) -> DraftUploaded:
        content = await data.file.read()
        return await forms.upload_draft(admin, content, data.file.filename or "form.xlsx")

    @post(
        "/{form_id:str}/publish",
        summary="Publish the draft as an immutable version",
        responses=problems(*ADMIN, *BODY, 404, 409),
        guards=[allow("form.admin")],
    )
    async def publish(
        self,
        admin: NamedDependency[Principal],
        form_id: FromPath[str],
        data: JSONBody[PublishRequest | None] = None,
    ) -> FormSpec:
        return await forms.publish(admin, form_id, data or PublishRequest())

    @patch(
        "/{form_id:str}",
        summary="Change state (open, closing, closed) or the roles that fill it",
        responses=problems(*ADMIN, *BODY, 404, 409),
        guards=[allow("form.admin")],
    )
    async def update(
        self, admin: NamedDependency[Principal], form_id: FromPath[str], data: JSONBody[FormUpdate]
    ) -> FormInfo:
        return await forms.update_form(admin, form_id, data)

    @get(
        "/{form_id:str}/media",
        summary="The files the form's XForm names (images, CSV lookups) and which are uploaded",
        responses=problems(*ADMIN, *PARAMS, 404),
        guards=[allow("form.admin")],
    )
    async def media(
        self, admin: NamedDependency[Principal], form_id: FromPath[str]
    ) -> list[FormMedia]:
        return await attachments.list_media(form_id)

    @put(
        "/{form_id:str}/media/{filename:str}",
        summary="Upload (or replace) a file the form names; ODK Collect gets it with the form",
        description="The body is the file. `wards.csv` and `<entity list>.csv` are made by the "
        "server for each user and cannot be uploaded.",
        responses=problems(*ADMIN, *BODY, 404, 409),
        guards=[allow("form.admin")],
        operation_class=MEDIA_BODY,
        opt={BINARY_BODY: True},
    )
    async def upload_media(
        self,
        request: Request[Any, Any, Any],
        admin: NamedDependency[Principal],
        form_id: FromPath[str],
        filename: FromPath[str],
    ) -> FormMedia:
        content = await request.body()  # bounded by FIELDSYNC_MAX_BODY_BYTES (413)
        content_type = request.headers.get("content-type", "")
        return await attachments.upload_media(admin, form_id, filename, content, content_type)

    @get(
        "/{form_id:str}/versions",
        summary="All versions of a form",
        responses=problems(*ADMIN, *PARAMS, 404),
        guards=[allow("form.review")],
    )
    async def versions(
        self, principal: NamedDependency[Principal], form_id: FromPath[str]
    ) -> list[FormVersionInfo]:
        return await forms.list_versions(form_id)

    @get(
        "/{form_id:str}/versions/{version:str}",
        summary="The normalized spec of one version (immutable)",
        responses={**problems(*ADMIN, *PARAMS, 404), **NOT_MODIFIED},
        operation_class=CONDITIONAL,
    )
    async def spec(
        self,
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        form_id: FromPath[str],
        version: FromPath[str],
    ) -> Response[FormSpec | None]:
        spec = await forms.get_spec(principal, form_id, version)
        return _conditional(request, spec, f'"{spec.hash}"', IMMUTABLE)

    @get(
        "/{form_id:str}/versions/{version:str}/xform",
        summary="The XForm XML of one version",
        media_type="application/xml",
        responses=problems(*ADMIN, *PARAMS, 404),
    )
    async def xform(
        self, principal: NamedDependency[Principal], form_id: FromPath[str], version: FromPath[str]
    ) -> Response[str]:
        xml = await forms.get_xform(principal, form_id, version)
        return Response(xml, media_type="application/xml", headers={"Cache-Control": IMMUTABLE})

    @get(
        "/{form_id:str}/versions/{a:str}/diff/{b:str}",
        summary="What changed between two versions",
        responses=problems(*ADMIN, *PARAMS, 404),
        guards=[allow("form.review")],
    )
    async def diff(
        self,
        principal: NamedDependency[Principal],
        form_id: FromPath[str],
        a: FromPath[str],
        b: FromPath[str],
    ) -> FormDiff:
        return await forms.diff_versions(form_id, a, b)

    @post(
        "/{form_id:str}/versions/{version:str}/validate",
        status_code=200,
        summary="Validate a submission against this exact version (admin)",
        responses=problems(*ADMIN, *BODY, 404),
        guards=[allow("form.admin")],
    )
    async def validate(
        self,
        request: Request[Any, Any, Any],
        admin: NamedDependency[Principal],
        form_id: FromPath[str],
        version: FromPath[str],
        data: JSONBody[ValidateRequest],
    ) -> ValidationResult:
        zone = settings_of(request).zone
        return await forms.validate(form_id, version, data.data, zone=zone, language=data.language)
