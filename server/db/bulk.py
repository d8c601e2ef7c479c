"""Fixed SQL for the hot write path: one multi-row statement per table instead of a query per row.

Piccolo builds a query object per row, which cost a push a third of its CPU; these helpers write
plain parameterised SQL (`{}` placeholders, run by `engine.fetch`) on the current transaction's
connection, the same on SQLite and PostgreSQL.

Table and column names come from code, never from input; every value is a bound parameter
(hence the `noqa: S608` on the statements built here).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from piccolo.table import Table

from server.db.engine import fetch, is_sqlite

# Parameters per statement: below SQLite's and PostgreSQL's limits (32,766 and 32,767).
MAX_PARAMETERS = 30_000


def placeholders(count: int) -> str:
    """`{}, {}, ...` for an IN list of `count` values."""
    return ", ".join(["{}"] * count)


async def insert_rows(
    table: type[Table],
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    on_conflict: str = "",
) -> None:
    """INSERT rows (tuples in `columns` order) in as few statements as the parameter limit allows."""
    if not rows:
        return
    width = len(columns)
    row_sql = "(" + ", ".join(["{}"] * width) + ")"
    per_statement = max(1, MAX_PARAMETERS // width)
    head = f"INSERT INTO {table._meta.tablename} ({', '.join(columns)}) VALUES "  # noqa: S608
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        values: list[Any] = []
        for row in chunk:
            assert len(row) == width
            values.extend(row)
        await fetch(head + ", ".join([row_sql] * len(chunk)) + " " + on_conflict, *values)


@dataclass(frozen=True)
class Insert:
    """The rows of one table for `insert_tables`."""

    table: type[Table]
    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]
    on_conflict: str = ""


async def insert_tables(*inserts: Insert) -> None:
    """The rows of several tables, in one round trip on PostgreSQL: one statement whose INSERTs
    but the last are data-modifying WITH clauses (they all run; none sees another's rows, so
    use it for tables that do not read each other). SQLite has no such clause, and a statement
    over the parameter limit is split: then one `insert_rows` per table."""
    inserts = tuple(i for i in inserts if i.rows)
    parameters = sum(len(i.rows) * len(i.columns) for i in inserts)
    if len(inserts) < 2 or is_sqlite() or parameters > MAX_PARAMETERS:
        for i in inserts:
            await insert_rows(i.table, i.columns, i.rows, on_conflict=i.on_conflict)
        return
    statements: list[str] = []
    values: list[Any] = []
    for i in inserts:
        row_sql = "(" + ", ".join(["{}"] * len(i.columns)) + ")"
        statements.append(
            f"INSERT INTO {i.table._meta.tablename} ({', '.join(i.columns)}) "  # noqa: S608
            f"VALUES {', '.join([row_sql] * len(i.rows))} {i.on_conflict}".rstrip()
        )
        for row in i.rows:
            assert len(row) == len(i.columns)
            values.extend(row)
    clauses = ", ".join(f"written_{n} AS ({sql})" for n, sql in enumerate(statements[:-1]))
    await fetch(f"WITH {clauses} {statements[-1]}", *values)


def upsert_clause(key: str, columns: Sequence[str]) -> str:
    """ON CONFLICT (key) DO UPDATE every other column to the new row's value (both engines)."""
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c != key)
    return f"ON CONFLICT ({key}) DO UPDATE SET {updates}"


async def select_in(
    table: type[Table], columns: str, column: str, values: Sequence[Any], *, where: str = ""
) -> list[dict[str, Any]]:
    """SELECT `columns` of the rows whose `column` is one of `values` (and `where`, fixed SQL)."""
    rows: list[dict[str, Any]] = []
    extra = f" AND {where}" if where else ""
    for start in range(0, len(values), MAX_PARAMETERS):
        chunk = values[start : start + MAX_PARAMETERS]
        rows.extend(
            await fetch(
                f"SELECT {columns} FROM {table._meta.tablename} "  # noqa: S608
                f"WHERE {column} IN ({placeholders(len(chunk))}){extra}",
                *chunk,
            )
        )
    return rows
