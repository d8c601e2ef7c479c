from __future__ import annotations

from litestar import Controller, get
from litestar.di import NamedDependency

from schemas.identity import Ward
from server.api.deps import ANY_ROLE
from server.api.openapi import BEARER, SIGNED_IN, problems
from server.auth import Principal
from server.services.wards import list_wards


class WardController(Controller):
    path = "/api/v1/wards"
    tags = ["reference"]
    guards = [ANY_ROLE]
    security = BEARER

    @get("/", summary="The 126 communes and wards of Hanoi", responses=problems(*SIGNED_IN))
    async def list_wards(self, principal: NamedDependency[Principal]) -> list[Ward]:
        return await list_wards()
