"""OpenRosa submissions (ODK Collect's POST /submission) in the same submission table: the XML
as received, and what the envelope said. Hand-written; mirrors Submission in
server/db/tables_sync.py."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-12-03T06:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "submission.xml_sha256 and envelope: OpenRosa submissions kept as received"


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="fieldsync", description=DESCRIPTION)

    async def openrosa_submissions():
        engine = engine_finder()
        # The blob holding the instance XML exactly as Collect sent it (null for native pushes):
        # a resend is idempotent only if byte-identical, and the record is kept as received.
        await engine.run_ddl('ALTER TABLE submission ADD COLUMN "xml_sha256" VARCHAR(64) NULL')
        # deviceID, User-Agent, an encrypted form's key and signature: what came with the XML.
        await engine.run_ddl(
            "ALTER TABLE submission ADD COLUMN \"envelope\" JSON NOT NULL DEFAULT '{}'"
        )

    manager.add_raw(openrosa_submissions)
    return manager
