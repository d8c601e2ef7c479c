from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-29T05:59:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "composite indexes for pull and acked_through; the change-log counter row"


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="fieldsync", description=DESCRIPTION)

    async def composite_indexes():
        # Pull costs O(changes in scope since the cursor), never O(table size).
        db = engine_finder()
        for ddl in (
            "CREATE INDEX IF NOT EXISTS change_log_ward_position ON change_log (ward_code, position)",
            "CREATE INDEX IF NOT EXISTS change_log_kind_position ON change_log (kind, position)",
            "CREATE INDEX IF NOT EXISTS op_ledger_device_position ON op_ledger (device_id, max_position)",
            "CREATE INDEX IF NOT EXISTS entity_scope ON entity (list, ward_code, entity_id)",
            "CREATE INDEX IF NOT EXISTS submission_attachment_sha_ward ON submission_attachment (sha256, ward_code)",
        ):
            await db.run_ddl(ddl)
        # The one counter row; only ever updated (see ChangeCounter).
        await db.run_ddl("INSERT INTO change_counter (name, value) VALUES ('log', 0)")

    manager.add_raw(composite_indexes)
    return manager
