"""Pooled PostgreSQL connections go back to the pool without a reset query
(server/db/engine.py), which is right only while no statement of the server leaves session state
behind: a setting, a LISTEN, an advisory lock, an open cursor, a prepared statement by name."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SESSION_STATE = re.compile(
    "|".join(
        [
            # A statement that starts with SET: an UPDATE's SET clause does not, and SET LOCAL
            # ends with the transaction.
            r"(^|[\"'])\s*SET\s+(?!LOCAL\b)",
            r"set_config\s*\(",
            r"\bLISTEN\s",
            r"pg_(try_)?advisory_lock",
            r"CURSOR\s+WITH\s+HOLD",
            r"\bPREPARE\s+\w+\s+AS\b",
            r"add_listener\s*\(",
        ]
    ),
    re.IGNORECASE,
)


def test_the_server_sets_no_session_state() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sorted((ROOT / "server").rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if SESSION_STATE.search(line)
    ]
    assert found == [], (
        "session state outlives the request on a pooled connection; reset it in "
        "server/db/engine.py's pool reset: " + "; ".join(found)
    )


def test_the_pattern_finds_session_state() -> None:
    for statement in (
        '"SET statement_timeout = 5"',
        "'SET SESSION search_path TO x'",
        "SELECT set_config('a.b', '1', false)",
        "LISTEN changes",
        "SELECT pg_advisory_lock(1)",
        "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
        "await connection.add_listener('x', f)",
    ):
        assert SESSION_STATE.search(statement), statement
    for statement in (
        "UPDATE op_stream SET last_op_seq = {}, updated_at = {} WHERE key = {}",
        "ON CONFLICT (key) DO UPDATE SET last_op_seq = op_stream.last_op_seq + 1",
        "\"SET LOCAL lock_timeout = '1s'\"",
    ):
        assert not SESSION_STATE.search(statement), statement
