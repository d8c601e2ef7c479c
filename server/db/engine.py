"""Choosing, binding and opening the database engine; the one transaction helper."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import lru_cache
from pathlib import Path
from string import Formatter
from typing import Any

from piccolo.apps.migrations.tables import Migration
from piccolo.engine.base import Engine
from piccolo.engine.postgres import PostgresEngine
from piccolo.engine.sqlite import SQLiteEngine, TransactionType, dict_factory
from piccolo.query.methods.select import Select
from piccolo.querystring import QueryString
from piccolo.table import Table

from server.db.registry import ALL_TABLES

os.environ.setdefault("PICCOLO_CONF", "server.db.piccolo_conf")

# SQLite waits this long for the single writer instead of failing with "database is locked".
SQLITE_BUSY_TIMEOUT_S = 30


class _Statements:
    """One long-lived SQLite connection on one thread of its own: a statement is one hop to it."""

    def __init__(self, connection_kwargs: dict[str, Any], pragmas: tuple[str, ...], name: str):
        self._kwargs, self._pragmas = connection_kwargs, pragmas
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._connection: sqlite3.Connection | None = None

    async def run(self, query: str, args: list[Any]) -> list[dict[str, Any]]:
        return await asyncio.get_running_loop().run_in_executor(
            self._thread, self._run, query, args
        )

    def _run(self, query: str, args: list[Any]) -> list[dict[str, Any]]:
        if self._connection is None:
            connection = sqlite3.connect(**self._kwargs, check_same_thread=False)
            connection.row_factory = dict_factory
            for pragma in self._pragmas:
                connection.execute(pragma)
            self._connection = connection
        return self._connection.execute(query, args).fetchall()  # autocommit (isolation_level None)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._close)

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class FieldsyncSQLiteEngine(SQLiteEngine):
    """Piccolo's SQLite engine, except for statements outside a transaction.

    Piccolo opens a connection (with a thread of its own, and a parse of the schema) for every
    such statement, about 0.8 ms each. Here they go to two long-lived autocommit connections
    instead, each on its own thread: SELECTs to a reader (`query_only`: in WAL mode it never
    waits for the writer), everything else to a writer. Transactions are Piccolo's, unchanged,
    on a connection each. `close()` closes both; they reopen if the engine is used again.
    """

    def __init__(self, path: str, **connection_kwargs: Any) -> None:
        super().__init__(path=path, **connection_kwargs)
        kwargs = dict(self.connection_kwargs)
        self._reader = _Statements(kwargs, ("PRAGMA query_only = 1",), "sqlite-read")
        self._writer = _Statements(kwargs, ("PRAGMA foreign_keys = 1",), "sqlite-write")

    async def _run_in_new_connection(
        self,
        query: str,
        args: list[Any] | None = None,
        query_type: str = "generic",
        table: type[Table] | None = None,
    ) -> Any:
        if query_type == "insert" and self.get_version_sync() < 3.35:  # no RETURNING: Piccolo's
            return await super()._run_in_new_connection(query, args, query_type, table)
        is_read = query.lstrip()[:6].upper() == "SELECT"
        return await (self._reader if is_read else self._writer).run(query, args or [])

    async def close(self) -> None:
        await self._reader.close()
        await self._writer.close()


def create_engine(database_url: str) -> Engine:
    if database_url.startswith("sqlite:///"):
        path = Path(database_url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        # WAL lets readers proceed while one writer commits; it is a property of the file, set once.
        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
        return FieldsyncSQLiteEngine(path=str(path), timeout=SQLITE_BUSY_TIMEOUT_S)
    # No extensions: every id is generated in Python, so no superuser-only CREATE EXTENSION.
    return PostgresEngine(config={"dsn": database_url}, extensions=())


def use_engine(engine: Engine) -> None:
    """Point every table (and Piccolo's migration machinery) at this engine."""
    from server.db import piccolo_conf

    piccolo_conf.DB = engine
    tables: list[type[Table]] = [*ALL_TABLES, Migration]
    for table in tables:
        table._meta.db = engine


def current_engine() -> Engine:
    return ALL_TABLES[0]._meta.db


def locking(query: Select) -> Select:
    """The query, holding its rows until the transaction ends: PostgreSQL locks them
    (FOR UPDATE); SQLite's write transaction already holds the single write lock."""
    return query.lock_rows() if current_engine().engine_type == "postgres" else query


async def open_engine(engine: Engine, *, pool_size: int = 10) -> None:
    if isinstance(engine, PostgresEngine):
        await engine.start_connection_pool(
            min_size=1, max_size=pool_size, reset=_session_needs_no_reset
        )


async def _session_needs_no_reset(connection: Any) -> None:
    """What a connection going back to the pool runs after asyncpg rolled back an open
    transaction: nothing. asyncpg's default sends a reset query (`pg_advisory_unlock_all(); CLOSE
    ALL; UNLISTEN *; RESET ALL`), a round trip per statement outside a transaction, and this
    server sets no session state for it to undo (tests/unit/server/test_db_session.py)."""


async def close_engine(engine: Engine) -> None:
    if isinstance(engine, PostgresEngine):
        await engine.close_connection_pool()
    elif isinstance(engine, FieldsyncSQLiteEngine):
        await engine.close()


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


async def fetch(sql: str, *args: Any) -> list[dict[str, Any]]:
    """Fixed SQL (`{}` placeholders, every value a bound parameter) on the current transaction's
    connection, else a pooled one; rows as dicts. On PostgreSQL it goes to asyncpg directly:
    Piccolo's query machinery cost more than the statement (0.03 of 0.05 ms of CPU per statement
    inside a transaction, bench_openrosa's submission runs about ten)."""
    engine = current_engine()
    if isinstance(engine, PostgresEngine) and engine.pool is not None:
        query = _numbered(sql)
        transaction = engine.current_transaction.get()
        if transaction is not None:
            records = await transaction.connection.fetch(query, *args)
        else:
            records = await engine.pool.fetch(query, *args)
        return [dict(record) for record in records]
    rows = await engine.run_querystring(QueryString(sql, *args))
    return engine.transform_response_to_dicts(rows) if rows else []


@lru_cache(maxsize=512)
def _numbered(sql: str) -> str:
    """`{}` placeholders as PostgreSQL's `$1, $2, ...`, read as Piccolo's QueryString reads them
    (`{{` and `}}` are literal braces)."""
    parts: list[str] = []
    count = 0
    for literal, placeholder, _, _ in Formatter().parse(sql):
        parts.append(literal)
        if placeholder is not None:
            count += 1
            parts.append(f"${count}")
    return "".join(parts)


async def ping() -> None:
    await current_engine().run_ddl("SELECT 1")
