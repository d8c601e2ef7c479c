"""Refuse hostile input before anything decodes it, on every route at once.

A JSON or msgpack body nests at most `MAX_DEPTH` levels: msgspec decodes recursively, and about
1,000 levels end in a RecursionError (a 500 and a traceback per request). The check reads the raw
bytes, without recursion. Binary bodies (tus uploads, multipart XLSForm files) are left alone.
"""

from __future__ import annotations

import logging
import re
from functools import cache
from typing import Any, Literal

from litestar import Request
from litestar.enums import RequestEncodingType
from litestar.handlers import HTTPRouteHandler
from litestar.params import BodyKwarg

from server.api.sync import MSGPACK_TYPES
from server.errors import BadRequest

log = logging.getLogger("fieldsync.input")

MAX_DEPTH = 64

BodyFormat = Literal["json", "msgpack", "negotiated", "binary"]


async def refuse_hostile_input(request: Request[Any, Any, Any]) -> None:
    """Litestar before_request hook: raise a 400 for a body nested too deep."""
    body_format = _body_format(request.route_handler)
    if body_format == "binary":
        return
    body = await request.body()
    if not body:
        return
    if body_format == "negotiated":
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        body_format = "msgpack" if media in MSGPACK_TYPES else "json"
    if msgpack_too_deep(body) if body_format == "msgpack" else json_too_deep(body):
        log.warning(
            "refused %s %s from %s: body nested deeper than %d levels (%d bytes)",
            request.method,
            request.url.path,
            request.client.host if request.client else "?",
            MAX_DEPTH,
            len(body),
        )
        raise BadRequest(
            f"The body is nested deeper than {MAX_DEPTH} levels.", code="malformed_body"
        )


@cache
def _body_format(handler: HTTPRouteHandler) -> BodyFormat:
    """How this route reads its body: as its `data` parameter says, or by Content-Type itself."""
    if handler.resolve_request_max_body_size() is None:
        return "binary"  # streams its body (tus), bounded by the upload's own length
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


def json_too_deep(body: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether a JSON text opens more than `limit` nested arrays or objects, without parsing it.

    One translate keeps what matters: quotes, brackets, backslashes and the letter after each
    backslash. Escaped quotes go, then what lies between quotes, then possessive regexes follow
    the nesting (linear: nothing to backtrack). A body that merely fails to close (truncated,
    stray bracket) is left to the JSON parser.
    """
    marks = body.translate(_JSON_MARKS, delete=_JSON_UNMARKED)
    if b'\\"' in marks:  # an escaped quote ends no string: drop \\ pairs, then \" pairs
        marks = marks.replace(b"\\\\", b"").replace(b'\\"', b"")
    structure = marks.translate(None, b"\\e")
    # Adjacent quotes are an empty string or the seam between two strings: never a bracket.
    structure = structure.replace(b'""', b"")
    if b'"' in structure:
        structure = b"".join(structure.split(b'"')[::2])
    levels, pos = _nesting_levels(limit), 0
    for depth in range(limit + 1):
        balanced = levels[limit - depth].match(structure, pos)
        pos = balanced.end() if balanced else pos
        if pos == len(structure) or structure[pos] != _OPEN:
            return False
        pos += 1  # a bracket that does not close within the limit: look inside it
    return True


@cache
def _nesting_levels(limit: int) -> list[re.Pattern[bytes]]:
    """levels[k] matches a run of bracket groups nested at most k deep."""
    levels, pattern = [], b""
    for _ in range(limit + 1):
        levels.append(re.compile(pattern))
        pattern = rb"(?:\[" + pattern + rb"\])*+"
    return levels


_OPEN = ord("[")
# {} become [], and what may follow a backslash stays, as e.
_JSON_MARKS = bytes.maketrans(b"{}bfu/nrt", b"[]eeeeeee")
_JSON_UNMARKED = bytes(b for b in range(256) if b not in b'"[]{}\\bfu/nrt')


# msgpack: bytes after a header byte for fixed-size values
_FIXED_SIZE = {
    0xC0: 0, 0xC2: 0, 0xC3: 0, 0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8,
    0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8, 0xD4: 2, 0xD5: 3, 0xD6: 5, 0xD7: 9, 0xD8: 17,
}  # fmt: skip
# str/bin/ext with a length: (width of the length, bytes before the payload after it)
_SIZED = {
    0xC4: (1, 0), 0xC5: (2, 0), 0xC6: (4, 0), 0xC7: (1, 1), 0xC8: (2, 1), 0xC9: (4, 1),
    0xD9: (1, 0), 0xDA: (2, 0), 0xDB: (4, 0),
}  # fmt: skip
# array/map with a length: (width of the length, items per entry)
_CONTAINERS = {0xDC: (2, 1), 0xDD: (4, 1), 0xDE: (2, 2), 0xDF: (4, 2)}


def msgpack_too_deep(body: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether the first msgpack object in `body` nests deeper than `limit`, walked header by
    header without recursion. A truncated or invalid body stops the walk: the decoder refuses it."""
    pos, end = 0, len(body)
    enclosing: list[int] = []  # items still expected by each open container
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
            pos += head & 0x1F
        elif (size := _FIXED_SIZE.get(head, -1)) >= 0:
            pos += size
        elif (sized := _SIZED.get(head)) is not None:
            width, skip = sized
            pos += width + skip + int.from_bytes(body[pos : pos + width], "big")
        elif (container := _CONTAINERS.get(head)) is not None:
            width, per_entry = container
            items = int.from_bytes(body[pos : pos + width], "big") * per_entry
            pos += width
        else:
            return False  # 0xC1 is never used
        left -= 1
        if items >= 0:
            if len(enclosing) >= limit:
                return True
            enclosing.append(left)
            left = items
        while not left:
            if not enclosing:
                return False
            left = enclosing.pop()
    return False
