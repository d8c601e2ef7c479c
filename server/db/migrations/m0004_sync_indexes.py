from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-29T05:28:48:000000"
VERSION = "1.38.0"
DESCRIPTION = "composite indexes: pull reads by scope after a position; acked_through by device"


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

    manager.add_raw(composite_indexes)
    return manager
