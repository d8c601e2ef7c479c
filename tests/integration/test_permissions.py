"""Every route is guarded by the permission table or listed public, and the guards refuse each
role exactly what server/permissions.py does not grant it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
from litestar import Litestar
from litestar.handlers import HTTPRouteHandler
from litestar.routes import HTTPRoute

from schemas.identity import ROLES
from server.openrosa.auth import collect_guard
from server.permissions import role_can, roles_with
from tests.conftest import Backend
from tests.helpers import Api, assert_problem
from tests.integration.test_openapi import operations, schema_of

PUBLIC = {
    ("GET", "/health/live"),
    ("GET", "/health/ready"),
    ("POST", "/api/v1/auth/login"),
    ("POST", "/api/v1/auth/refresh"),
    ("OPTIONS", "/api/v1/uploads"),  # tus capabilities
}


def route_handlers(app: Litestar) -> Iterator[tuple[tuple[str, str], HTTPRouteHandler]]:
    for route in app.routes:
        if isinstance(route, HTTPRoute):
            for method, (handler, _) in route.route_handler_map.items():
                yield (method, route.path_format), handler


def guard_verbs(handler: HTTPRouteHandler) -> list[Any]:
    """The verbs of the permission guards on a route (None: any signed-in role)."""
    return [g.verb for g in handler.resolve_guards() if hasattr(g, "verb")]


def guarded_routes(app: Litestar) -> Iterator[tuple[str, str, list[Any]]]:
    for (method, path), handler in route_handlers(app):
        if handler.resolve_include_in_schema() and (method, path) not in PUBLIC:
            yield method, path, guard_verbs(handler)


def url_of(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


async def test_every_route_in_the_schema_is_guarded_or_public(
    db: Backend, client: httpx.AsyncClient
) -> None:
    handlers = dict(route_handlers(db.app))
    in_schema = set()
    for method, path, operation in operations(await schema_of(client)):
        in_schema.add((method, path))
        guarded = bool(guard_verbs(handlers[(method, path)]))
        assert guarded != ((method, path) in PUBLIC), (method, path)
        assert guarded == bool(operation.get("security")), (method, path)
    assert in_schema >= PUBLIC
    for (method, path), handler in handlers.items():
        # Outside the schema: Litestar's own OPTIONS answers, the schema pages themselves, and
        # ODK Collect's XML routes, which authenticate the Collect way (token or HTTP Basic).
        if (method, path) not in in_schema:
            collect = path.startswith("/collect") and collect_guard in handler.resolve_guards()
            assert method == "OPTIONS" or path.startswith("/schema") or collect, (method, path)


def test_routes_that_name_the_caller_admin_are_guarded_by_admin_only_verbs(db: Backend) -> None:
    for (method, path), handler in route_handlers(db.app):
        if "admin" in handler.parsed_fn_signature.parameters:
            verbs = [v for v in guard_verbs(handler) if v is not None]
            assert verbs, (method, path)
            assert all(roles_with(v) == ("admin",) for v in verbs), (method, path, verbs)


async def test_every_guarded_route_asks_for_a_token_first(
    db: Backend, client: httpx.AsyncClient
) -> None:
    for method, path, _ in guarded_routes(db.app):
        response = await client.request(method, url_of(path), content=b"{not json")
        if method == "HEAD":
            assert response.status_code == 401, path
        else:
            assert_problem(response, 401, "token_missing")


async def test_each_role_is_refused_what_the_table_does_not_grant_it(
    db: Backend, api: Api, client: httpx.AsyncClient
) -> None:
    refused = 0
    for role in ROLES:
        session = api.admin if role == "admin" else await api.user_session(role)
        for method, path, verbs in guarded_routes(db.app):
            granted = all(v is None or role_can(role, v) for v in verbs)
            # A body that is not JSON: a granted call stops at 400 and writes nothing.
            response = await client.request(
                method, url_of(path), headers=session.headers, content=b"{not json"
            )
            forbidden = response.status_code == 403 and (
                method == "HEAD" or response.json()["code"] == "role_forbidden"
            )
            assert forbidden != granted, (role, method, path, response.text)
            refused += not granted
    assert refused > 50, "the walk found too few refusals to prove anything"
