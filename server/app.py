"""The application factory: one Litestar app per Settings, with its engine and blob store."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email.utils import formatdate

from litestar import Litestar
from litestar.datastructures import MutableScopeHeaders
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.routes import HTTPRoute
from litestar.static_files import create_static_files_router
from litestar.types import BeforeMessageSendHookHandler, Message, Scope
from litestar.utils import ensure_async_callable
from piccolo.engine.base import Engine
from swagger_ui_bundle import swagger_ui_path

from server.api.admin import AuditController, DeviceController, UserController
from server.api.auth import AuthController
from server.api.deps import DEPENDENCIES, proxy_headers_middleware
from server.api.forms import FormController
from server.api.health import HealthController
from server.api.input_guard import refuse_hostile_input
from server.api.openapi import BEARER_SCHEME
from server.api.sync import ConflictController, SubmissionController, SyncController
from server.api.uploads import BlobController, UploadController
from server.api.wards import WardController
from server.blobstores import S3Options, open_blob_store
from server.db.engine import close_engine, create_engine, open_engine, use_engine
from server.errors import EXCEPTION_HANDLERS
from server.openrosa.auth import at_collect_paths
from server.openrosa.documents import collect_aware
from server.openrosa.submission_routes import CollectRoutes
from server.services.uploads import UploadRuntime
from server.settings import Settings
from sync.blobs import BlobStore

VERSION = "0.1.0"

# Swagger UI is served from the swagger-ui-bundle-v2 package: the docs work on an offline intranet.
DOCS_ASSETS = "/schema/assets"
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}
AUTH_PATH = "/api/v1/auth/"


async def add_security_headers(message: Message, scope: Scope) -> None:
    """Runs on every response the app sends, problem+json, 404s and tus answers included."""
    if message["type"] != "http.response.start":
        return
    headers = MutableScopeHeaders.from_message(message)
    for name, value in SECURITY_HEADERS.items():
        headers[name] = value
    if "date" not in headers:  # the app dates its answers (uvicorn's would come twice)
        headers["Date"] = formatdate(usegmt=True)
    if scope["path"].startswith(AUTH_PATH):  # tokens must never sit in a cache
        headers["Cache-Control"] = "no-store"


def allow_every_method(app: Litestar) -> BeforeMessageSendHookHandler:
    """Litestar's automatic OPTIONS answer lists only the methods of the first handler registered
    on a path (GET /users/{id} but not PATCH); this sets Allow to every method of the path."""
    allowed = {
        route.path_format: ", ".join(sorted(route.methods))
        for route in app.routes
        if isinstance(route, HTTPRoute)
    }

    async def complete_allow(message: Message, scope: Scope) -> None:
        if message["type"] != "http.response.start" or scope.get("method") != "OPTIONS":
            return
        methods = allowed.get(scope.get("path_template", ""))
        if methods and 200 <= message["status"] < 300:
            MutableScopeHeaders.from_message(message)["Allow"] = methods

    return complete_allow


def blob_store_from_settings(settings: Settings) -> BlobStore:
    s3 = None
    if settings.blob_store.startswith("s3://"):
        s3 = S3Options(
            endpoint=settings.s3_endpoint,
            public_endpoint=settings.s3_public_endpoint or None,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key,
            region=settings.s3_region,
            secure=settings.s3_secure,
        )
    return open_blob_store(settings.blob_store, s3=s3)


def create_app(
    settings: Settings,
    *,
    engine: Engine | None = None,
    blob_store: BlobStore | None = None,
    upload_runtime: UploadRuntime | None = None,
) -> Litestar:
    """Build the app. An engine, blob store or upload runtime passed in is owned by the caller
    (tests share them, and drive the app without running its lifespan)."""

    @asynccontextmanager
    async def resources(app: Litestar) -> AsyncIterator[None]:
        owned_engine = engine is None
        db = engine or create_engine(settings.database_url)
        use_engine(db)
        if owned_engine:
            await open_engine(db, pool_size=settings.db_pool_size)
        store = blob_store or blob_store_from_settings(settings)
        if blob_store is None:
            await store.ensure_ready()
        app.state.blob_store = store
        uploads = upload_runtime or UploadRuntime.from_settings(settings)
        app.state.upload_runtime = uploads
        try:
            yield
        finally:
            await uploads.drain()  # parts of tus uploads still on their way to the store
            if owned_engine:
                await close_engine(db)

    app = Litestar(
        route_handlers=[
            HealthController,
            AuthController,
            UserController,
            DeviceController,
            AuditController,
            WardController,
            FormController,
            SyncController,
            ConflictController,
            SubmissionController,
            UploadController,
            BlobController,
            *at_collect_paths(CollectRoutes),
            create_static_files_router(
                path=DOCS_ASSETS, directories=[swagger_ui_path], name="docs_assets"
            ),
        ],
        dependencies=DEPENDENCIES,
        middleware=proxy_headers_middleware(settings),
        # One error registry; on ODK Collect's URLs it answers in OpenRosa XML.
        exception_handlers=collect_aware(EXCEPTION_HANDLERS),
        before_request=refuse_hostile_input,  # hostile input is refused before anything decodes it
        lifespan=[resources],
        before_send=[add_security_headers],
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="fieldsync",
            version=VERSION,
            description="Offline-first field data sync for Hanoi's 2026-2030 programme (PROTOCOL.md v1).",
            path="/schema",
            components=BEARER_SCHEME,
            render_plugins=[
                SwaggerRenderPlugin(
                    path="/",
                    js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                    css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                    standalone_preset_js_url=f"{DOCS_ASSETS}/swagger-ui-standalone-preset.js",
                    favicon=f"<link rel='icon' type='image/png' href='{DOCS_ASSETS}/favicon-32x32.png'>",
                )
            ],
        ),
        logging_config=None,
        debug=False,
    )
    app.before_send.append(ensure_async_callable(allow_every_method(app)))  # routes known now
    app.state.settings = settings
    if blob_store is not None:
        app.state.blob_store = (
            blob_store  # usable without running the lifespan (tests drive the ASGI app)
        )
    if upload_runtime is not None:
        app.state.upload_runtime = upload_runtime  # likewise
    logging.getLogger("fieldsync").setLevel(logging.INFO)
    return app
