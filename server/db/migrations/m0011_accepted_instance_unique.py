from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-29T07:50:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "one accepted submission per instance_id, enforced by the database"


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="fieldsync", description=DESCRIPTION)

    async def accepted_instance_unique():
        # PROTOCOL.md: an instance_id names one accepted submission (edits use deprecated_id);
        # rejected reuses are kept beside it. Push checks this first; the index makes two
        # concurrent pushes of the same instance_id fail (and retry) instead of both landing.
        # Being unique, it also lets the planner pick it for push's `instance_id IN (...)`
        # lookup whether or not the table has statistics yet.
        await engine_finder().run_ddl(
            "CREATE UNIQUE INDEX IF NOT EXISTS submission_accepted_instance "
            "ON submission (instance_id) WHERE status = 'accepted'"
        )

    manager.add_raw(accepted_instance_unique)
    return manager
