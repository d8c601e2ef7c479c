"""Piccolo app registration: the migrations folder and the tables it manages."""

from pathlib import Path

from piccolo.conf.apps import AppConfig

from server.db.registry import ALL_TABLES

APP_NAME = "fieldsync"

APP_CONFIG = AppConfig(
    app_name=APP_NAME,
    migrations_folder_path=str(Path(__file__).parent / "migrations"),
    table_classes=list(ALL_TABLES),
    migration_dependencies=[],
    commands=[],
)
