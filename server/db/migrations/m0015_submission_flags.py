"""submission.flags: the rules push accepted a submission without deciding (docs/protocol.md
"Validation"), which supervisors review through GET /api/v1/submissions/flagged."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-12-01T06:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "submission.flags: rules accepted without being decided, listed for supervisors"


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="fieldsync", description=DESCRIPTION)

    async def submission_flags():
        engine = engine_finder()
        # Submissions stored before this migration were checked by the same rule but their
        # undecided rules were not kept: they start unflagged.
        await engine.run_ddl(
            "ALTER TABLE submission ADD COLUMN \"flags\" JSON NOT NULL DEFAULT '[]'"
        )
        # Supervisors list the flagged accepted submissions newest first: a small slice of a
        # large table, so it gets its own index (the listing repeats this predicate exactly).
        await engine.run_ddl(
            "CREATE INDEX IF NOT EXISTS submission_flagged ON submission (received_at, id) "
            "WHERE status = 'accepted' AND CAST(flags AS TEXT) <> '[]'"
        )

    manager.add_raw(submission_flags)
    return manager
