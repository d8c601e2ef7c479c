"""op_seq is counted per (device, user) binding: a shared tablet that changes hands starts a new
op stream for the new user instead of continuing (and colliding with) the previous user's.

device_sync kept only the sequence (its scope columns were never used: the cursor carries the
scope), so it is replaced by op_stream; the ledger learns whose stream an op belongs to.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-30T04:30:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "op streams per (device, user): op_stream replaces device_sync; op_ledger.user_id"


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="fieldsync", description=DESCRIPTION)

    async def op_streams():
        engine = engine_finder()
        postgres = engine.engine_type == "postgres"
        bigint = "BIGINT" if postgres else "INTEGER"
        await engine.run_ddl(
            'CREATE TABLE IF NOT EXISTS "op_stream" ('
            "\"key\" VARCHAR(73) PRIMARY KEY NOT NULL DEFAULT '', "
            "\"device_id\" VARCHAR(36) NOT NULL DEFAULT '', "
            "\"user_id\" VARCHAR(36) NOT NULL DEFAULT '', "
            f'"last_op_seq" {bigint} NOT NULL DEFAULT 0, '
            '"updated_at" TIMESTAMPTZ NOT NULL DEFAULT current_timestamp)'
        )
        await engine.run_ddl('CREATE INDEX IF NOT EXISTS op_stream_device ON op_stream ("device_id")')
        await engine.run_ddl(
            "ALTER TABLE op_ledger ADD COLUMN \"user_id\" VARCHAR(36) NOT NULL DEFAULT ''"
        )
        if postgres:  # "<device_id>:<user_id>:<op_seq>" (SQLite does not enforce lengths)
            await engine.run_ddl('ALTER TABLE op_ledger ALTER COLUMN "key" TYPE VARCHAR(100)')
        # What was pushed before this migration is credited to the user the device's row names
        # (its first pusher); nothing was deployed, so no takeover history needs untangling.
        await engine.run_ddl(
            "INSERT INTO op_stream (key, device_id, user_id, last_op_seq, updated_at) "
            "SELECT device_id || ':' || user_id, device_id, user_id, last_op_seq, updated_at "
            "FROM device_sync"
        )
        await engine.run_ddl(
            "UPDATE op_ledger SET user_id = COALESCE("
            "(SELECT d.user_id FROM device_sync d WHERE d.device_id = op_ledger.device_id), '')"
        )
        await engine.run_ddl(
            "UPDATE op_ledger SET key = device_id || ':' || user_id || ':' || CAST(op_seq AS TEXT)"
        )
        await engine.run_ddl("DROP INDEX IF EXISTS op_ledger_device_position")
        await engine.run_ddl(
            "CREATE INDEX IF NOT EXISTS op_ledger_stream_position "
            "ON op_ledger (device_id, user_id, max_position)"
        )
        await engine.run_ddl("DROP TABLE device_sync")

    manager.add_raw(op_streams)
    return manager
