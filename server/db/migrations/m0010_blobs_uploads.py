"""Blobs (verified attachments) and tus uploads. Hand-written; mirrors server/db/tables_blobs.py."""

from typing import Any

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import JSON, BigInt, Timestamptz, Varchar
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.columns.indexes import IndexMethod

ID = "2026-11-29T06:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "blob (verified attachments) and upload (resumable tus uploads)"


def _params(**given: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "null": False,
        "primary_key": False,
        "unique": False,
        "index": False,
        "index_method": IndexMethod.btree,
        "choices": None,
        "db_column_name": None,
        "secret": False,
    }
    params.update(given)
    return params


BLOB_COLUMNS: list[tuple[str, type, dict[str, Any]]] = [
    ("sha256", Varchar, _params(length=64, default="", primary_key=True)),
    ("size", BigInt, _params(default=0)),
    ("content_type", Varchar, _params(length=127, default="")),
    ("first_uploader", Varchar, _params(length=36, default=None, null=True, index=True)),
    ("created_at", Timestamptz, _params(default=TimestamptzNow())),
]

UPLOAD_COLUMNS: list[tuple[str, type, dict[str, Any]]] = [
    ("id", Varchar, _params(length=32, default="", primary_key=True)),
    ("user_id", Varchar, _params(length=36, default="", index=True)),
    ("sha256", Varchar, _params(length=64, default="", index=True)),
    ("upload_length", BigInt, _params(default=0)),
    ("received", BigInt, _params(default=0)),
    ("filename", Varchar, _params(length=255, default="")),
    ("content_type", Varchar, _params(length=127, default="")),
    ("metadata", JSON, _params(default="{}")),
    ("state", Varchar, _params(length=12, default="", index=True)),
    ("failure", Varchar, _params(length=40, default="")),
    ("sniffed_type", Varchar, _params(length=127, default=None, null=True)),
    ("staging", Varchar, _params(length=1024, default="")),
    ("parts", JSON, _params(default="[]")),
    ("tail_size", BigInt, _params(default=0)),
    ("created_at", Timestamptz, _params(default=TimestamptzNow())),
    ("updated_at", Timestamptz, _params(default=TimestamptzNow())),
    ("expires_at", Timestamptz, _params(default=TimestamptzNow(), index=True)),
]


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="fieldsync", description=DESCRIPTION)

    for class_name, tablename, columns in (
        ("Blob", "blob", BLOB_COLUMNS),
        ("Upload", "upload", UPLOAD_COLUMNS),
    ):
        manager.add_table(class_name=class_name, tablename=tablename, schema=None, columns=None)
        for column_name, column_class, params in columns:
            manager.add_column(
                table_class_name=class_name,
                tablename=tablename,
                column_name=column_name,
                db_column_name=column_name,
                column_class_name=column_class.__name__,
                column_class=column_class,
                params=params,
                schema=None,
            )

    return manager
