"""Every problem code comes from the one registry (`schemas.errors.ErrorCode`)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CODE_SOURCES = ("server", "sync", "forms", "device")


def literal_codes(tree: ast.AST) -> list[int]:
    """Lines passing a code as a string literal: `code="x"`, `ErrorItem(path, "x", ...)`."""
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        values = [kw.value for kw in node.keywords if kw.arg in ("code", "failure")]
        name = (
            node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        )
        if name == "ErrorItem" and len(node.args) > 1:
            values.append(node.args[1])
        lines += [v.lineno for v in values if isinstance(v, ast.Constant) and v.value]
    return lines


def test_codes_are_raised_from_the_registry_not_as_literals() -> None:
    found = {
        path.relative_to(ROOT).as_posix(): lines
        for package in CODE_SOURCES
        for path in sorted((ROOT / package).rglob("*.py"))
        if "migrations" not in path.parts
        and (lines := literal_codes(ast.parse(path.read_text(encoding="utf-8"))))
    }
    assert not found, found
