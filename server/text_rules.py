"""The text the server stores: no control characters but tab, line feed and carriage return.

PostgreSQL refuses NUL in text and jsonb, and the other control characters have no place in field
data. The input guard refuses them in requests (server/api/input_guard.py); push judges them per op
instead, so one op's bad text never blocks the ops behind it (server/services/push.py).
"""

from __future__ import annotations

import re
from typing import Any, Literal

import msgspec

from schemas.common import ErrorItem
from schemas.errors import ErrorCode

CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
MAX_REPORTED = 20  # control characters named in one answer; the client fixes them all anyway
REPLACEMENT = "\ufffd"
# A route handler's `opt` key: its service judges the body's text per op, the input guard does not.
TEXT_JUDGED_PER_OP = "text_judged_per_op"
# Route opt: the body is a file (form media), read whole by the handler; it is not text.
BINARY_BODY = "binary_body"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def control_characters(value: Any, root: str = "$") -> list[ErrorItem]:
    """Every string or key of a decoded document holding a control character, in document order."""
    errors: list[ErrorItem] = []
    pending: list[tuple[str, Any, bool]] = [(root, value, False)]  # (path, value, is a key)
    while pending and len(errors) < MAX_REPORTED:
        path, item, is_key = pending.pop()
        if isinstance(item, str):
            if CONTROL.search(item):
                errors.append(control_item(path, item, "name" if is_key else "value"))
        elif isinstance(item, dict):
            children = []
            for key, child in item.items():
                member = json_member(path, key)
                children += [(member, key, True), (member, child, False)]
            pending.extend(reversed(children))
        elif isinstance(item, list):
            pending.extend((f"{path}[{i}]", c, False) for i, c in reversed(list(enumerate(item))))
    return errors


def json_member(path: str, key: Any) -> str:
    if isinstance(key, str) and _IDENTIFIER.fullmatch(key):
        return f"{path}.{key}"
    return f"{path}[{msgspec.json.encode(key if isinstance(key, str) else str(key)).decode()}]"


def control_item(path: str, text: str, what: Literal["name", "value"]) -> ErrorItem:
    found = CONTROL.search(text)
    code_point = f"U+{ord(found.group()):04X}" if found else "a control character"
    return ErrorItem(
        path=path,
        code=ErrorCode.CONTROL_CHARACTER,
        message=f"the {what} contains {code_point}; only tab, line feed and carriage return "
        "are allowed",
    )


# In msgspec's JSON: C0 characters are escaped (\b, \f, \u00XX), DEL and C1 are raw UTF-8.
_ENCODED_CONTROL = re.compile(rb"\\u00[01][0-9a-fA-F]|\\[bf]|\x7f|\xc2[\x80-\x9f]")


def control_characters_of(value: msgspec.Struct, root: str) -> list[ErrorItem]:
    """`control_characters` of a decoded Struct, after one C-speed look at its JSON that finds
    most values clean (a false alarm only costs the walk)."""
    if _ENCODED_CONTROL.search(msgspec.json.encode(value)) is None:
        return []
    return control_characters(msgspec.to_builtins(value), root)


def scrubbed(value: Any) -> Any:
    """A decoded document with every control character (in strings and keys) replaced by U+FFFD:
    what is kept of text the server refused, since it cannot store it as it came."""
    if isinstance(value, str):
        return CONTROL.sub(REPLACEMENT, value)
    if isinstance(value, dict):
        return {scrubbed(key): scrubbed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [scrubbed(item) for item in value]
    return value
