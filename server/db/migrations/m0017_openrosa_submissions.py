"""OpenRosa submissions (ODK Collect's POST /submission) in the same submission table: the XML
as received, and what the envelope said; and entity_version, what each entity held at each
version (an OpenRosa update names only the version it started from). Hand-written; mirrors
Submission and EntityVersion in server/db/tables_sync.py."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import JSON, Integer, Varchar
from piccolo.engine import engine_finder
from piccolo.table import Table

ID = "2026-12-03T06:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "OpenRosa submissions kept as received; entity_version, an entity at each version"


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

    async def entity_version():
        engine = engine_finder()

        # Raw steps run before a manager's add_table, and the backfill needs the table: both here.
        class EntityVersion(Table, tablename="entity_version", db=engine):
            key = Varchar(length=48, primary_key=True)
            entity_id = Varchar(length=36)
            version = Integer()
            content = JSON()

        await EntityVersion.create_table(if_not_exists=True).run()
        # Each entity's current version is the only one known of the entities that exist now.
        if engine.engine_type == "postgres":
            content = "json_build_object('label', state->'label', 'properties', state->'properties')"
        else:
            content = (
                "json_object('label', json_extract(state, '$.label'), "
                "'properties', json(json_extract(state, '$.properties')))"
            )
        await EntityVersion.raw(
            "INSERT INTO entity_version (key, entity_id, version, content) "  # noqa: S608
            f"SELECT entity_id || ':' || version, entity_id, version, {content} FROM entity"
        )

    manager.add_raw(openrosa_submissions)
    manager.add_raw(entity_version)
    return manager
