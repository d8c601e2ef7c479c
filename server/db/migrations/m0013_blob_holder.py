"""Blob holders: who has shown they hold a blob's bytes. Hand-written; mirrors BlobHolder in
server/db/tables_blobs.py."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import Timestamptz, Varchar
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.engine import engine_finder
from piccolo.table import Table

ID = "2026-11-30T05:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "blob_holder: a reference grants read access only if its pusher holds the bytes"


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="fieldsync", description=DESCRIPTION)

    async def blob_holder() -> None:
        # Raw steps run before a manager's add_table, and the backfill needs the table: both here.
        class BlobHolder(Table, tablename="blob_holder", db=engine_finder()):
            key = Varchar(length=101, primary_key=True)
            sha256 = Varchar(length=64, index=True)
            user_id = Varchar(length=36)
            created_at = Timestamptz(default=TimestamptzNow())

        await BlobHolder.create_table(if_not_exists=True).run()
        # Only the first uploaders sent bytes that were verified. References made before this
        # migration by anyone else grant nothing until their pusher uploads the file (or
        # references it again while able to read it): one of them may have been a guessed hash.
        await BlobHolder.raw(
            "INSERT INTO blob_holder (key, sha256, user_id, created_at) "
            "SELECT sha256 || ':' || first_uploader, sha256, first_uploader, created_at "
            "FROM blob WHERE first_uploader IS NOT NULL"
        )

    manager.add_raw(blob_holder)
    return manager
