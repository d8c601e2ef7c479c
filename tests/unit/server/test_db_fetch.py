"""`engine.fetch` hands PostgreSQL the placeholders Piccolo's QueryString would have made."""

from __future__ import annotations

from piccolo.querystring import QueryString

from server.db.engine import _numbered


def test_placeholders_are_numbered_as_piccolo_numbers_them() -> None:
    for sql, args in [
        ("SELECT 1", ()),
        ("SELECT a FROM t WHERE b = {} AND c IN ({}, {})", (1, 2, 3)),
        ("INSERT INTO t (j) VALUES ({}) ON CONFLICT DO NOTHING", ("x",)),
    ]:
        expected, _ = QueryString(sql, *args).compile_string(engine_type="postgres")
        assert _numbered(sql) == expected


def test_doubled_braces_are_literal_braces() -> None:
    assert _numbered("SELECT '{{}}'::jsonb, {}") == "SELECT '{}'::jsonb, $1"
