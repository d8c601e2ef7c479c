"""`POST /submission` under ODK Collect's URLs (odk.md §9): one service call, answered 201 with
the OpenRosaResponse Collect shows. Refusals are the registry's errors, which the app answers in
OpenRosa XML on Collect URLs (`documents.collect_aware`); a POST is never answered 200 or 204.

Litestar cannot mount two controllers on one path (each adds its own OPTIONS handler, and the
second registration fails), and `HEAD /submission` lives in routes.py: so the POST is a mixin,
and `CollectRoutes` is the one controller of every Collect URL that the app mounts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from litestar import Request, Response, post
from litestar.di import NamedDependency
from litestar.params import QueryParameter

from server.api.deps import settings_of
from server.auth import Principal
from server.openrosa.auth import OPENROSA_ONLY
from server.openrosa.documents import openrosa_response
from server.openrosa.routes import CollectFormsController
from server.openrosa.submission import receive_submission


async def _body(request: Request[Any, Any, Any]) -> AsyncIterator[bytes]:
    # A client gone mid-body ends this with Litestar's own error; what was stored is unreferenced.
    async for chunk in request.stream():
        if chunk:
            yield chunk


class SubmissionHandlers:
    @post(
        "/submission",
        status_code=201,
        opt=OPENROSA_ONLY,
        # Read as a stream and bounded by FIELDSYNC_MAX_SUBMISSION_BYTES (413 before reading a
        # body whose Content-Length is over it), not by the app's JSON body limit.
        request_max_body_size=None,
    )
    async def submit(
        self,
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        # Collect's install id ("collect:…"): each install is an op stream of its own.
        device_id: Annotated[str, QueryParameter(name="deviceID")] = "",
    ) -> Response[bytes]:
        """A submission's XML and files, or more files of one sent before (Collect splits a
        large one over several POSTs); an identical resend answers 201 again."""
        receipt = await receive_submission(
            principal,
            _body(request),
            content_type=request.headers.get("content-type", ""),
            content_length=request.content_length,
            device_ref=device_id,
            user_agent=request.headers.get("user-agent", ""),
            store=request.app.state.blob_store,
            settings=settings_of(request),
        )
        return openrosa_response(receipt.message, status=201, method="POST")


class CollectRoutes(CollectFormsController, SubmissionHandlers):
    """Every Collect URL: the forms, media and HEAD of routes.py, and the submission POST."""
