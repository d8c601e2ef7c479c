from __future__ import annotations

import asyncio
import logging
from typing import Any

from litestar import Controller, Request, Response, get
from litestar.openapi.datastructures import ResponseSpec

from schemas.identity import HealthStatus
from server.db.engine import ping

log = logging.getLogger("fieldsync.health")
CHECK_TIMEOUT_S = 3.0


class HealthController(Controller):
    path = "/health"
    tags = ["health"]

    @get("/live", summary="The process is up")
    async def live(self) -> HealthStatus:
        return HealthStatus(status="ok", checks={})

    @get(
        "/ready",
        summary="The database and the blob store answer",
        responses={503: ResponseSpec(HealthStatus, description="Not ready; see `checks`.")},
    )
    async def ready(self, request: Request[Any, Any, Any]) -> Response[HealthStatus]:
        checks = {
            "database": await _check(ping()),
            "blob_store": await _check(request.app.state.blob_store.check()),
        }
        ok = all(v == "ok" for v in checks.values())
        return Response(
            HealthStatus(status="ok" if ok else "unavailable", checks=checks),
            status_code=200 if ok else 503,
            headers={} if ok else {"Retry-After": "5"},
        )


async def _check(probe: Any) -> str:
    try:
        await asyncio.wait_for(probe, CHECK_TIMEOUT_S)
    except (
        Exception
    ) as exc:  # any failure means "not ready"; the reason goes to the log, not the client
        log.warning("readiness check failed: %r", exc)
        return "unavailable"
    return "ok"
