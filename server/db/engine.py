"""Choosing, binding and opening the database engine; the one transaction helper."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from piccolo.apps.migrations.tables import Migration
from piccolo.engine.base import Engine
from piccolo.engine.postgres import PostgresEngine
from piccolo.engine.sqlite import SQLiteEngine, TransactionType

from server.db.registry import ALL_TABLES

os.environ.setdefault("PICCOLO_CONF", "server.db.piccolo_conf")

# SQLite waits this long for the single writer instead of failing with "database is locked".
SQLITE_BUSY_TIMEOUT_S = 30


def create_engine(database_url: str) -> Engine:
    if database_url.startswith("sqlite:///"):
        path = Path(database_url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        # WAL lets readers proceed while one writer commits; it is a property of the file, set once.
        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
        return SQLiteEngine(path=str(path), timeout=SQLITE_BUSY_TIMEOUT_S)
    # No extensions: every id is generated in Python, so no superuser-only CREATE EXTENSION.
    return PostgresEngine(config={"dsn": database_url}, extensions=())


def use_engine(engine: Engine) -> None:
    """Point every table (and Piccolo's migration machinery) at this engine."""
    from server.db import piccolo_conf

    piccolo_conf.DB = engine
    for table in [*ALL_TABLES, Migration]:
        table._meta.db = engine


def current_engine() -> Engine:
    return ALL_TABLES[0]._meta.db


async def open_engine(engine: Engine, *, pool_size: int = 10) -> None:
    if isinstance(engine, PostgresEngine):
        await engine.start_connection_pool(min_size=1, max_size=pool_size)


async def close_engine(engine: Engine) -> None:
    if isinstance(engine, PostgresEngine):
        await engine.close_connection_pool()


def is_sqlite(engine: Engine | None = None) -> bool:
    return (engine or current_engine()).engine_type == "sqlite"


@asynccontextmanager
async def transaction() -> AsyncIterator[Any]:
    """One transaction for a multi-row write. On SQLite take the write lock up front (IMMEDIATE):
    a deferred transaction that later upgrades to a writer can fail with SQLITE_BUSY at once."""
    engine = current_engine()
    if isinstance(engine, SQLiteEngine):
        async with engine.transaction(transaction_type=TransactionType.immediate) as tx:
            yield tx
    else:
        async with engine.transaction() as tx:
            yield tx


async def ping() -> None:
    await current_engine().run_ddl("SELECT 1")
