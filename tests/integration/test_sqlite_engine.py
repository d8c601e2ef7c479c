"""The SQLite engine's long-lived connections for statements outside a transaction."""

from __future__ import annotations

import asyncio
import contextvars
import sqlite3
from pathlib import Path

import pytest

from server.db.engine import FieldsyncSQLiteEngine, close_engine, create_engine, transaction


@pytest.fixture
async def engine(tmp_path: Path) -> FieldsyncSQLiteEngine:
    engine = create_engine(f"sqlite:///{tmp_path / 'e.db'}")
    assert isinstance(engine, FieldsyncSQLiteEngine)
    await engine.run_ddl("CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
    return engine


async def test_a_read_sees_the_write_before_it(engine: FieldsyncSQLiteEngine) -> None:
    for n in range(20):
        await engine.run_ddl(f"INSERT INTO item (name) VALUES ('n{n}')")
        rows = await engine.run_ddl("SELECT count(*) AS n FROM item")
        assert rows == [{"n": n + 1}]
    await close_engine(engine)


async def test_a_read_sees_a_transaction_once_it_committed(engine: FieldsyncSQLiteEngine) -> None:
    from server.db import engine as engine_module

    previous = engine_module.current_engine()
    engine_module.use_engine(engine)
    try:
        async with transaction():
            await engine.run_ddl("INSERT INTO item (name) VALUES ('inside')")
            # A task with a context of its own is outside the transaction: not committed yet.
            outside = asyncio.create_task(
                engine.run_ddl("SELECT name FROM item"), context=contextvars.Context()
            )
            assert await outside == []
        assert await engine.run_ddl("SELECT name FROM item") == [{"name": "inside"}]
    finally:
        engine_module.use_engine(previous)
        await close_engine(engine)


async def test_the_reader_never_writes(engine: FieldsyncSQLiteEngine) -> None:
    # Statements that start with SELECT go to the query_only reader: a write sent there by
    # mistake fails loudly instead of writing beside the single writer.
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        await engine._reader.run("INSERT INTO item (name) VALUES ('x')", [])
    assert await engine.run_ddl("SELECT count(*) AS n FROM item") == [{"n": 0}]
    await close_engine(engine)


async def test_failed_statements_leave_the_connections_usable(
    engine: FieldsyncSQLiteEngine,
) -> None:
    with pytest.raises(sqlite3.OperationalError):
        await engine.run_ddl("SELECT nothing FROM nowhere")
    with pytest.raises(sqlite3.IntegrityError):
        await engine.run_ddl("INSERT INTO item (id, name) VALUES (1, NULL)")
    await engine.run_ddl("INSERT INTO item (id, name) VALUES (1, 'ok')")
    assert await engine.run_ddl("SELECT name FROM item") == [{"name": "ok"}]
    await close_engine(engine)


async def test_closed_then_used_again_reopens(engine: FieldsyncSQLiteEngine) -> None:
    await engine.run_ddl("INSERT INTO item (name) VALUES ('a')")
    await close_engine(engine)
    assert await engine.run_ddl("SELECT name FROM item") == [{"name": "a"}]
    await close_engine(engine)
