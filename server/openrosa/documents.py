"""The XML documents ODK Collect reads, and the headers it needs on every answer (odk.md §2, §4,
§6, §7.4): the form list, the manifest, the entity integrity list, and the OpenRosaResponse
envelope that carries errors and submission results.

Documents are built as text from escaped parts, in the exact shapes ODK Central writes (Collect's
parser is strict about namespaces and required elements: one bad `<xform>` loses the whole list),
and always encoded as UTF-8 (Collect ignores the declared charset).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import escape, quoteattr

import msgspec
from litestar import Request, Response
from litestar.connection import ASGIConnection

from schemas.common import Problem
from server.settings import Settings

OPENROSA_VERSION = "1.0"
# Litestar appends "; charset=utf-8" to text/* types itself.
XML_CONTENT_TYPE = "text/xml"
FORM_CONTENT_TYPE = "application/xml; charset=utf-8"
CSV_CONTENT_TYPE = "text/csv"
XFORMS_LIST_NS = "http://openrosa.org/xforms/xformsList"
MANIFEST_NS = "http://openrosa.org/xforms/xformsManifest"
RESPONSE_NS = "http://openrosa.org/http/response"
XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'
# Everything Collect is told lives under one of these; errors there answer in OpenRosa XML.
COLLECT_PREFIX = "/collect"


def md5_hash(content: bytes) -> str:
    """The `hash` of a form or media file: `md5:` and the md5 of exactly the bytes served."""
    return "md5:" + hashlib.md5(content, usedforsecurity=False).hexdigest()


def accept_content_length(settings: Settings) -> int:
    """The largest submission POST the server reads (HEAD /submission advertises it; Collect
    splits larger submissions into several POSTs)."""
    return settings.max_submission_bytes


def openrosa_headers(*, method: str = "GET", settings: Settings | None = None) -> dict[str, str]:
    """The headers of every answer on a Collect URL (odk.md §2.3). Cache-Control lets Collect's
    HTTP cache keep a copy but never reuse it unchecked; a POST's answer is never stored."""
    headers = {
        "X-OpenRosa-Version": OPENROSA_VERSION,
        "Date": formatdate(usegmt=True),
        "Content-Language": "en",
        "Cache-Control": "no-store" if method == "POST" else "private, no-cache",
    }
    if settings is not None:
        headers["X-OpenRosa-Accept-Content-Length"] = str(accept_content_length(settings))
    return headers


def xml_response(
    document: str | bytes,
    *,
    status: int = 200,
    method: str = "GET",
    settings: Settings | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response[bytes]:
    """An XML document with the OpenRosa headers; its Content-Length counts UTF-8 bytes."""
    content = document.encode("utf-8") if isinstance(document, str) else document
    return Response(
        content=content,
        status_code=status,
        media_type=XML_CONTENT_TYPE,
        headers={**openrosa_headers(method=method, settings=settings), **(headers or {})},
    )


def openrosa_response(
    message: str,
    *,
    status: int,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
) -> Response[bytes]:
    """The OpenRosaResponse envelope Collect shows the first `<message>` of: `nature="error"`
    for a 4xx/5xx, empty otherwise (Central's template, odk.md §2.4 and §9.4)."""
    nature = "error" if status >= 400 else ""
    document = (
        f'<OpenRosaResponse xmlns="{RESPONSE_NS}" items="0">\n'
        f"    <message nature={quoteattr(nature)}>{escape(message)}</message>\n"
        "  </OpenRosaResponse>"
    )
    return xml_response(document, status=status, method=method, headers=headers)


# ---- URLs --------------------------------------------------------------------------------------


def collect_base_url(connection: ASGIConnection[Any, Any, Any, Any], settings: Settings) -> str:
    """The absolute prefix the request came in under: URLs handed back keep the same way of
    authenticating (the token in the path, or none for HTTP Basic)."""
    token = connection.path_params.get("token")
    base = settings.public_base_url + COLLECT_PREFIX
    return f"{base}/key/{quote(token, safe='')}" if token is not None else base


def url(base: str, *segments: str) -> str:
    """`base` and percent-encoded path segments: Collect passes URLs to `new URL(...)` as is."""
    return base + "".join("/" + quote(segment, safe="") for segment in segments)


# ---- documents ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FormListEntry:
    form_id: str
    name: str
    version: str
    hash: str
    download_url: str
    manifest_url: str | None


def _element(name: str, text: str, indent: str) -> str:
    return f"{indent}<{name}>{escape(text)}</{name}>\n" if text else f"{indent}<{name}/>\n"


def form_list_document(entries: Iterable[FormListEntry]) -> str:
    """`<xforms>` as Central writes it (odk.md §4.2): every element Collect requires, `version`
    empty when the form has none, `manifestUrl` only for forms that declare media."""
    parts = [XML_DECLARATION, f'  <xforms xmlns="{XFORMS_LIST_NS}">\n']
    for entry in entries:
        parts.append("    <xform>\n")
        parts.append(_element("formID", entry.form_id, "      "))
        parts.append(_element("name", entry.name or entry.form_id, "      "))
        parts.append(_element("version", entry.version, "      "))
        parts.append(_element("hash", entry.hash, "      "))
        parts.append(_element("downloadUrl", entry.download_url, "      "))
        if entry.manifest_url:
            parts.append(_element("manifestUrl", entry.manifest_url, "      "))
        parts.append("    </xform>\n")
    parts.append("  </xforms>")
    return "".join(parts)


@dataclass(frozen=True)
class MediaFile:
    filename: str
    hash: str
    download_url: str
    # An entity list Collect merges with its local entities, and asks about deleted ones.
    integrity_url: str | None = None


def manifest_document(files: Iterable[MediaFile]) -> str:
    """`<manifest>` as Central writes it (odk.md §6.1); entity lists carry `type="entityList"`
    and their `integrityUrl`."""
    parts = [XML_DECLARATION, f'  <manifest xmlns="{MANIFEST_NS}">\n']
    for file in files:
        kind = ' type="entityList"' if file.integrity_url else ""
        parts.append(f"    <mediaFile{kind}>\n")
        parts.append(_element("filename", file.filename, "      "))
        parts.append(_element("hash", file.hash, "      "))
        parts.append(_element("downloadUrl", file.download_url, "      "))
        if file.integrity_url:
            parts.append(_element("integrityUrl", file.integrity_url, "      "))
        parts.append("    </mediaFile>\n")
    parts.append("  </manifest>")
    return "".join(parts)


def integrity_document(states: Iterable[tuple[str, bool]]) -> str:
    """`<data><entities>` naming which of the asked entities are deleted (odk.md §7.4); Collect
    reads `true`/`false` strictly."""
    parts = [XML_DECLARATION, "  <data>\n", "    <entities>\n"]
    for entity_id, deleted in states:
        parts.append(f"      <entity id={quoteattr(entity_id)}>\n")
        parts.append(f"        <deleted>{'true' if deleted else 'false'}</deleted>\n")
        parts.append("      </entity>\n")
    parts.append("    </entities>\n  </data>")
    return "".join(parts)


# ---- errors ------------------------------------------------------------------------------------

# How many of a problem's error items the message names.
MESSAGE_ITEMS = 3
ExceptionHandler = Callable[[Request[Any, Any, Any], Any], Response[Any]]


def is_collect_path(path: str) -> bool:
    return path == COLLECT_PREFIX or path.startswith(COLLECT_PREFIX + "/")


def problem_as_openrosa(request: Request[Any, Any, Any], problem: Response[Any]) -> Response[bytes]:
    """The same error, status and headers (a Basic challenge, Retry-After) as the native API
    answers, in the envelope Collect shows: the problem's detail becomes the message."""
    body = msgspec.json.decode(problem.content, type=Problem)
    message = body.detail or body.title
    if body.errors:  # which answers were refused, as far as one line on a tablet can say
        items = [f"{e.path}: {e.message}" for e in body.errors[:MESSAGE_ITEMS]]
        more = len(body.errors) - MESSAGE_ITEMS
        message += " (" + "; ".join(items) + (f"; {more} more" if more > 0 else "") + ")"
    headers = {k: v for k, v in problem.headers.items() if k.lower() != "content-type"}
    return openrosa_response(
        message, status=problem.status_code or body.status, method=request.method, headers=headers
    )


def collect_aware(handlers: Mapping[Any, ExceptionHandler]) -> dict[Any, ExceptionHandler]:
    """The app's exception handlers, answering in OpenRosa XML on Collect URLs: one registry of
    errors (server/errors.py) decides every status and code; only the rendering differs."""

    def wrapped(handler: ExceptionHandler) -> ExceptionHandler:
        def handle(request: Request[Any, Any, Any], exc: Any) -> Response[Any]:
            response = handler(request, exc)
            if is_collect_path(request.scope["path"]):
                return problem_as_openrosa(request, response)
            return response

        return handle

    return {kind: wrapped(handler) for kind, handler in handlers.items()}
