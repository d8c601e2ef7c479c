"""Every problem code comes from the one registry (`schemas.errors.ErrorCode`), and
docs/protocol.md lists every code a device can receive."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from schemas.errors import LOCAL_CODES, ErrorCode

ROOT = Path(__file__).resolve().parents[2]
CODE_SOURCES = ("server", "sync", "forms", "device")


def documented_codes() -> set[str]:
    text = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    section = text.split("\n## 8. Problem codes\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"`([a-z][a-z0-9_]*)`", section))


def test_docs_list_every_code_a_device_can_receive() -> None:
    missing = {c.value for c in ErrorCode} - {c.value for c in LOCAL_CODES} - documented_codes()
    assert not missing, f"add to docs/protocol.md, Problem codes: {sorted(missing)}"


def test_docs_list_no_code_outside_the_registry() -> None:
    unknown = documented_codes() - {c.value for c in ErrorCode}
    assert not unknown, f"not in ErrorCode: {sorted(unknown)}"


def test_local_codes_are_not_documented_as_received() -> None:
    assert not {c.value for c in LOCAL_CODES} & documented_codes()


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
