"""JSON columns: written as text, and read back as text (SQLite) or already parsed (asyncpg)."""

from __future__ import annotations

from typing import Any

import msgspec


def to_json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def from_json(value: Any, type_: Any = Any) -> Any:
    """A column's value as `type_`, whichever form the driver returned it in."""
    if isinstance(value, str):
        return msgspec.json.decode(value, type=type_)
    return value if type_ is Any else msgspec.convert(value, type_)
