"""`uvicorn --factory tests.integration.uploads.server_process:app`: the app from FIELDSYNC_* env."""

from __future__ import annotations

from litestar import Litestar

from server.app import create_app
from server.settings import load_settings


def app() -> Litestar:
    return create_app(load_settings())
