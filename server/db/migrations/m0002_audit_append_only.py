from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-29T05:05:02:000000"
VERSION = "1.38.0"
DESCRIPTION = "audit_log is append-only: refuse UPDATE and DELETE at the database"


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="fieldsync", description=DESCRIPTION)

    async def audit_log_append_only():
        # The audit trail must not be rewritten, not even by the application's own code.
        db = engine_finder()
        if db.engine_type == "sqlite":
            for op in ("update", "delete"):
                await db.run_ddl(
                    f"CREATE TRIGGER IF NOT EXISTS audit_log_no_{op} BEFORE {op.upper()} ON audit_log "
                    "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END"
                )
        else:
            await db.run_ddl(
                "CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger AS $$ "
                "BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$ LANGUAGE plpgsql"
            )
            await db.run_ddl(
                "CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log "
                "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()"
            )

    manager.add_raw(audit_log_append_only)
    return manager
