"""ODK Collect: app-user tokens, form media, and the index the entity-list hashes read.
Hand-written; mirrors CollectToken (server/db/tables.py) and FormAttachment (tables_forms.py)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import (
    UUID,
    BigInt,
    BigSerial,
    Bytea,
    ForeignKey,
    Timestamptz,
    Varchar,
)
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.engine import engine_finder
from piccolo.table import Table

ID = "2026-12-02T06:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "collect_token and form_attachment for ODK Collect; change_log (list, ward, position)"


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="fieldsync", description=DESCRIPTION)

    async def openrosa() -> None:
        db = engine_finder()

        # Stand-ins for the referenced tables: only their primary keys matter here.
        class AppUser(Table, tablename="app_user", db=db):
            id = UUID(primary_key=True)

        class Form(Table, tablename="form", db=db):
            form_id = Varchar(length=64, primary_key=True)

        class CollectToken(Table, tablename="collect_token", db=db):
            id = UUID(primary_key=True)
            token_hash = Varchar(length=64, unique=True)
            user = ForeignKey(references=AppUser, null=False, index=True)
            name = Varchar(length=200, default="")
            created_at = Timestamptz(default=TimestamptzNow())
            created_by = UUID(null=True, default=None)
            revoked_at = Timestamptz(null=True, default=None)

        class FormAttachment(Table, tablename="form_attachment", db=db):
            id = BigSerial(primary_key=True)
            key = Varchar(length=330, unique=True)
            form = ForeignKey(references=Form, null=False)
            filename = Varchar(length=255)
            content_type = Varchar(length=127)
            size = BigInt()
            md5 = Varchar(length=32)
            content = Bytea()
            uploaded_at = Timestamptz(default=TimestamptzNow())
            uploaded_by = UUID(null=True, default=None)

        await CollectToken.create_table(if_not_exists=True).run()
        await FormAttachment.create_table(if_not_exists=True).run()
        # A manifest names each entity list's hash: the newest change-log position of that list
        # in the caller's wards, one short index walk per ward.
        await db.run_ddl(
            "CREATE INDEX IF NOT EXISTS change_log_list_ward_position "
            "ON change_log (list, ward_code, position)"
        )

    manager.add_raw(openrosa)
    return manager
