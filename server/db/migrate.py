"""Programmatic migrations (Piccolo's run_forwards); idempotent: applied ones are recorded and skipped."""

from __future__ import annotations

import contextlib
import io

from piccolo.apps.migrations.commands.forwards import run_forwards

from schemas.errors import ErrorCode
from server.db.piccolo_app import APP_NAME


class MigrationFailed(Exception):
    code = ErrorCode.MIGRATION_FAILED


async def migrate() -> None:
    # Piccolo prints progress to stdout; keep the server's output to what an operator needs.
    with contextlib.redirect_stdout(io.StringIO()) as out:
        result = await run_forwards(app_name=APP_NAME, migration_id="all")
    if not result.success:
        raise MigrationFailed(f"{result.message}\n{out.getvalue()}")
