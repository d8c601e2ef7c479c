"""The URLs ODK Collect talks to (odk.md §0), under `/collect/key/{token}` and `/collect`.

Thin handlers: one service call each (`server/openrosa/catalog.py`, `attachments.py`), answers in
the documents of `documents.py`. `POST /submission` lives in `submission_routes.py`.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, route
from litestar.di import NamedDependency

from server.api.deps import settings_of
from server.auth import Principal
from server.openrosa.auth import CollectController, require_openrosa_version
from server.openrosa.documents import openrosa_headers


class CollectFormsController(CollectController):
    @route(
        "/submission",
        http_method=["HEAD", "GET"],
        status_code=204,
        guards=[require_openrosa_version],
    )
    async def submission_preflight(
        self, request: Request[Any, Any, Any], principal: NamedDependency[Principal]
    ) -> Response[None]:
        """Collect asks before every submission how large one POST may be; only a 204 counts
        (odk.md §8), and GET answers the same, as Central's does."""
        headers = openrosa_headers(method="HEAD", settings=settings_of(request))
        return Response(None, status_code=204, headers=headers)
