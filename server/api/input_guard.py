"""Refuse hostile input before anything decodes or stores it, on every route at once.

Two rules. A JSON or msgpack body nests at most `MAX_DEPTH` levels: msgspec decodes recursively,
and about 1,000 levels end in a RecursionError. No text that can reach the database (strings and
keys of a body, query and path parameters) holds a control character other than tab, line feed
and carriage return: PostgreSQL refuses NUL in text and jsonb, and the others have no place in
field data. Binary bodies (tus uploads, multipart XLSForm files) are left alone.

Both checks look at the raw bytes first and decode only when a control character may be present,
so a clean body costs a few C-speed scans (see bench/bench_input_guard.py).
"""

from __future__ import annotations

import logging
import re
from functools import cache
from typing import Any, Literal

import msgspec
from litestar import Request
from litestar.enums import RequestEncodingType
from litestar.handlers import HTTPRouteHandler
from litestar.params import BodyKwarg

from schemas.common import ErrorItem
from schemas.errors import ErrorCode
from server.api.sync import MSGPACK_TYPES
from server.errors import BadRequest
from server.text_rules import (
    BINARY_BODY,
    CONTROL,
    MAX_REPORTED,
    TEXT_JUDGED_PER_OP,
    control_characters,
    control_item,
    json_member,
)

log = logging.getLogger("fieldsync.input")

MAX_DEPTH = 64

# JSON can spell them as escapes; raw C0 bytes inside a JSON string are malformed JSON anyway.
_JSON_CONTROL_ESCAPE = re.compile(rb"\\u00(?:0[0-8bcefBCEF]|1[0-9a-fA-F]|7[fF]|[89][0-9a-fA-F])")
_JSON_C1 = re.compile(b"\xc2[\x80-\x9f]")

BodyFormat = Literal["json", "msgpack", "negotiated", "binary"]


async def refuse_hostile_input(request: Request[Any, Any, Any]) -> None:
    """Litestar before_request hook: raise a 400 for deep bodies and control characters."""
    errors = _parameter_errors(request)
    if errors:
        raise _control_problem(errors)
    body_format = _body_format(request.route_handler)
    if body_format == "binary":
        return
    body = await request.body()
    if not body:
        return
    if body_format == "negotiated":
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        body_format = "msgpack" if media in MSGPACK_TYPES else "json"
    # Push judges text per op (server/services/push.py): one op's bad text must not wedge the
    # device by refusing the ops behind it; the envelope's strings are all typed patterns.
    per_op = bool(request.route_handler.opt.get(TEXT_JUDGED_PER_OP))
    too_deep, errors = check_body(body, msgpack=body_format == "msgpack", control=not per_op)
    if too_deep:
        log.warning(
            "refused %s %s from %s: body nested deeper than %d levels (%d bytes)",
            request.method,
            request.url.path,
            request.client.host if request.client else "?",
            MAX_DEPTH,
            len(body),
        )
        raise BadRequest(
            f"The body is nested deeper than {MAX_DEPTH} levels.", code=ErrorCode.MALFORMED_BODY
        )
    if errors:
        raise _control_problem(errors)


def check_body(body: bytes, *, msgpack: bool, control: bool = True) -> tuple[bool, list[ErrorItem]]:
    """(nested deeper than MAX_DEPTH, the strings holding control characters) of a body; the
    second only if `control`.

    Decodes only a body that may hold a control character, and never a deep one.
    """
    too_deep, suspect = msgpack_scan(body) if msgpack else json_scan(body)
    if too_deep or not suspect or not control:
        return too_deep, []
    try:
        value = msgspec.msgpack.decode(body) if msgpack else msgspec.json.decode(body)
    except msgspec.DecodeError:
        return False, []  # malformed: the route's own decoding answers malformed_body
    return False, control_characters(value)


def _control_problem(errors: list[ErrorItem]) -> BadRequest:
    return BadRequest(
        "Text may not contain control characters other than tab, line feed and carriage return.",
        code=ErrorCode.VALIDATION_FAILED,
        errors=errors,
    )


def _parameter_errors(request: Request[Any, Any, Any]) -> list[ErrorItem]:
    errors = []
    for source, items in (
        ("query", request.query_params.multi_items()),
        ("path", request.path_params.items()),
    ):
        for key, value in items:
            if isinstance(key, str) and CONTROL.search(key):
                errors.append(control_item(json_member(source, key), key, "name"))
            if isinstance(value, str) and CONTROL.search(value):
                errors.append(control_item(json_member(source, key), value, "value"))
    return errors[:MAX_REPORTED]


@cache
def _body_format(handler: HTTPRouteHandler) -> BodyFormat:
    """How this route reads its body: as its `data` parameter says, or by Content-Type itself."""
    if handler.resolve_request_max_body_size() is None:
        return "binary"  # streams its body (tus), bounded by the upload's own length
    if handler.opt.get(BINARY_BODY):
        return "binary"  # a file the handler reads whole (form media)
    data = handler.parsed_fn_signature.parameters.get("data")
    if data is None:
        return "negotiated"  # reads request.body() itself, like sync.decode_body
    kwarg = data.kwarg_definition
    media = kwarg.media_type if isinstance(kwarg, BodyKwarg) else RequestEncodingType.JSON
    if media == RequestEncodingType.JSON:
        return "json"
    if media == RequestEncodingType.MESSAGEPACK:
        return "msgpack"
    return "binary"  # multipart and url-encoded forms


def json_scan(body: bytes, limit: int = MAX_DEPTH) -> tuple[bool, bool]:
    """(nested deeper than `limit`, some string may hold a control character) for a JSON text,
    without parsing it: the answer to the second is a superset, confirmed by decoding.

    One translate keeps what matters: quotes, brackets, backslashes and the letter after each
    backslash. Escaped quotes go, then what lies between quotes, then possessive regexes follow
    the nesting (linear: nothing to backtrack). A body that merely fails to close (truncated,
    stray bracket) is left to the JSON parser.
    """
    marks = body.translate(_JSON_MARKS, delete=_JSON_UNMARKED)
    suspect = (
        b"\\c" in marks  # \b or \f
        or b"\x7f" in body
        or (b"\xc2" in body and _JSON_C1.search(body) is not None)
        or (b"\\u" in marks and _JSON_CONTROL_ESCAPE.search(body) is not None)
    )
    if b'\\"' in marks:  # an escaped quote ends no string: drop \\ pairs, then \" pairs
        marks = marks.replace(b"\\\\", b"").replace(b'\\"', b"")
    structure = marks.translate(None, b"\\ceu")
    # Adjacent quotes are an empty string or the seam between two strings: never a bracket.
    structure = structure.replace(b'""', b"")
    if b'"' in structure:
        structure = b"".join(structure.split(b'"')[::2])
    levels, pos = _nesting_levels(limit), 0
    for depth in range(limit + 1):
        balanced = levels[limit - depth].match(structure, pos)
        pos = balanced.end() if balanced else pos
        if pos == len(structure) or structure[pos] != _OPEN:
            return False, suspect
        pos += 1  # a bracket that does not close within the limit: look inside it
    return True, suspect


@cache
def _nesting_levels(limit: int) -> list[re.Pattern[bytes]]:
    """levels[k] matches a run of bracket groups nested at most k deep."""
    levels, pattern = [], b""
    for _ in range(limit + 1):
        levels.append(re.compile(pattern))
        pattern = rb"(?:\[" + pattern + rb"\])*+"
    return levels


_OPEN = ord("[")
# {} become [], and what may follow a backslash stays as c (b, f: control), u, or e (the rest).
_JSON_MARKS = bytes.maketrans(b"{}bfu/nrt", b"[]ccueeee")
_JSON_UNMARKED = bytes(b for b in range(256) if b not in b'"[]{}\\bfu/nrt')


# msgpack: bytes after a header byte for fixed-size values
_FIXED_SIZE = {
    0xC0: 0, 0xC2: 0, 0xC3: 0, 0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8,
    0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8, 0xD4: 2, 0xD5: 3, 0xD6: 5, 0xD7: 9, 0xD8: 17,
}  # fmt: skip
# str/bin/ext with a length: (width of the length, bytes before the payload after it, is text)
_SIZED = {
    0xC4: (1, 0, False), 0xC5: (2, 0, False), 0xC6: (4, 0, False),
    0xC7: (1, 1, False), 0xC8: (2, 1, False), 0xC9: (4, 1, False),
    0xD9: (1, 0, True), 0xDA: (2, 0, True), 0xDB: (4, 0, True),
}  # fmt: skip
# array/map with a length: (width of the length, items per entry)
_CONTAINERS = {0xDC: (2, 1), 0xDD: (4, 1), 0xDE: (2, 2), 0xDF: (4, 2)}


def msgpack_scan(body: bytes, limit: int = MAX_DEPTH) -> tuple[bool, bool]:
    """(nested deeper than `limit`, some string may hold a control character) for the first
    msgpack object in `body`, walked header by header without recursion. A truncated or invalid
    body stops the walk undecided: the decoder refuses it."""
    pos, end = 0, len(body)
    enclosing: list[int] = []  # items still expected by each open container
    texts: list[bytes] = []
    left = 1
    while pos < end:
        head = body[pos]
        pos += 1
        items = -1
        if head < 0x80 or head >= 0xE0:
            pass
        elif head < 0x90:
            items = (head & 0x0F) * 2
        elif head < 0xA0:
            items = head & 0x0F
        elif head < 0xC0:
            size = head & 0x1F
            texts.append(body[pos : pos + size])
            pos += size
        elif (size := _FIXED_SIZE.get(head, -1)) >= 0:
            pos += size
        elif (sized := _SIZED.get(head)) is not None:
            width, skip, is_text = sized
            size = int.from_bytes(body[pos : pos + width], "big")
            pos += width + skip
            if is_text:
                texts.append(body[pos : pos + size])
            pos += size
        elif (container := _CONTAINERS.get(head)) is not None:
            width, per_entry = container
            items = int.from_bytes(body[pos : pos + width], "big") * per_entry
            pos += width
        else:
            break  # 0xC1 is never used
        left -= 1
        if items >= 0:
            if len(enclosing) >= limit:
                return True, False
            enclosing.append(left)
            left = items
        while not left:
            if not enclosing:
                pos = end
                break
            left = enclosing.pop()
    # One pass over all the text at C speed beats a search per string.
    text = b"\n".join(texts)
    suspect = len(text.translate(None, _C0_AND_DEL)) < len(text) or (
        b"\xc2" in text and (_JSON_C1.search(text) is not None)
    )
    return False, suspect


_C0_AND_DEL = bytes(b for b in range(0x20) if b not in b"\t\n\r") + b"\x7f"
