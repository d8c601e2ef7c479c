from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-30T06:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "index of the refresh-token families that are still live"


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="fieldsync", description=DESCRIPTION)

    async def live_refresh_family():
        # Every authenticated request asks whether its token's family still has an unrevoked
        # refresh token. A family gains a row per rotation; indexing only the unrevoked rows
        # answers that from the first index entry, and an ended family has none at all.
        await engine_finder().run_ddl(
            "CREATE INDEX IF NOT EXISTS refresh_token_live_family "
            "ON refresh_token (family_id) WHERE revoked_at IS NULL"
        )

    manager.add_raw(live_refresh_family)
    return manager
