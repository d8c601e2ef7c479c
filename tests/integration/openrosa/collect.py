"""ODK Collect as it talks to a server (odk.md §10): the headers it sends, its `deviceID`, the
multipart layout and part names of a submission, and its instance XML with `meta/entity`.

Built by hand, byte for byte, rather than with httpx's `files=`: the point is to replay what
Collect's OkHttp sends (a UUID boundary, no per-part Content-Length, raw UTF-8 file names).
"""

from __future__ import annotations

import random
import string
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import httpx

from schemas.identity import CollectTokenCreate
from server.auth import Principal
from server.services.collect_tokens import create_token
from server.settings import Settings
from tests.helpers import Session

USER_AGENT = (
    "org.odk.collect.android/v2025.2.3 Dalvik/2.1.0 (Linux; U; Android 14; Pixel 7 "
    "Build/AP2A.240805.005)"
)
OPENROSA_NS = "http://openrosa.org/http/response"
# A JPEG as a camera writes it (the magic bytes are what the server sniffs), about 50 KiB.
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 200


def photo(seed: str) -> bytes:
    """A distinct small JPEG per seed."""
    return JPEG + seed.encode()


def collect_date(moment: datetime | None = None) -> str:
    """Collect's `Date`: `E, dd MMM yyyy hh:mm:ss zz` with a 12-hour clock (odk.md §2.1)."""
    return (moment or datetime.now(UTC)).strftime("%a, %d %b %Y %I:%M:%S GMT")


def install_id() -> str:
    return "collect:" + "".join(random.choices(string.ascii_letters + string.digits, k=16))


async def token_url(settings: Settings, admin: Session, user_id: str) -> str:
    """The path of an app-user token's Collect URL (`/collect/key/{token}`)."""
    actor = Principal(
        user_id=admin.user["id"],
        username=admin.user["username"],
        role="admin",
        wards=("*",),
        device_id=admin.device_id,
    )
    issued = await create_token(settings, actor, user_id, CollectTokenCreate(name="tablet"))
    return "/collect/key/" + issued.token


@dataclass
class Part:
    name: str
    data: bytes
    filename: str | None = None
    content_type: str | None = None


def multipart(parts: list[Part], boundary: str) -> bytes:
    """OkHttp's MultipartBody.FORM: each part's Content-Disposition (and Content-Type for a
    file), no per-part Content-Length."""
    body = bytearray()
    for part in parts:
        disposition = f'form-data; name="{part.name}"'
        if part.filename is not None:
            disposition += f'; filename="{part.filename}"'
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
        if part.content_type:
            body += f"Content-Type: {part.content_type}\r\n".encode()
        body += b"\r\n" + part.data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return bytes(body)


@dataclass
class Instance:
    """One filled form as Collect saves it: answers in form order, meta last."""

    form_id: str
    version: str
    answers: list[tuple[str, Any]]
    instance_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    deprecated_id: str | None = None
    entity: dict[str, str] | None = None  # meta/entity attributes, plus "label"
    files: dict[str, bytes] = field(default_factory=dict)

    def xml(self) -> bytes:
        body = "".join(_element(name, value) for name, value in self.answers)
        meta = f"<orx:instanceID>uuid:{self.instance_id}</orx:instanceID>"
        if self.deprecated_id:
            meta += f"<orx:deprecatedID>uuid:{self.deprecated_id}</orx:deprecatedID>"
        if self.entity is not None:
            attrs = " ".join(
                f"{key}={quoteattr(value)}" for key, value in self.entity.items() if key != "label"
            )
            label = self.entity.get("label")
            inner = f"<label>{escape(label)}</label>" if label else ""
            meta = f"<entity {attrs}>{inner}</entity>" + meta
        return (
            '<?xml version="1.0" encoding="UTF-8"?>'
            f'<data xmlns:jr="http://openrosa.org/javarosa" xmlns:orx="http://openrosa.org/xforms" '
            f'id="{self.form_id}" version="{self.version}">{body}<orx:meta>{meta}</orx:meta></data>'
        ).encode()

    def edited(self, **answers: Any) -> Instance:
        """Collect's edit of a sent instance: a new instanceID naming this one as deprecated."""
        changed = [(name, answers.get(name, value)) for name, value in self.answers]
        return Instance(
            form_id=self.form_id,
            version=self.version,
            answers=changed,
            deprecated_id=self.instance_id,
            entity=self.entity,
            files=dict(self.files),
        )


def _element(name: str, value: Any) -> str:
    if value is None or value == "":
        return f"<{name}/>"
    if isinstance(value, dict):
        return f"<{name}>" + "".join(_element(k, v) for k, v in value.items()) + f"</{name}>"
    if isinstance(value, list):
        return "".join(_element(name, item) for item in value)
    return f"<{name}>{escape(str(value))}</{name}>"


@dataclass
class Collect:
    """One Collect install pointed at `base` (a token URL path, or `/collect` with Basic)."""

    http: httpx.AsyncClient
    base: str
    auth: tuple[str, str] | None = None
    device_id: str = field(default_factory=install_id)

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {
            "User-Agent": USER_AGENT,
            "X-OpenRosa-Version": "1.0",
            "Date": collect_date(),
            "Accept-Encoding": "gzip",
        }
        if self.auth is not None:
            basic = httpx.BasicAuth(*self.auth)
            request = httpx.Request("GET", "http://x")
            headers["Authorization"] = next(basic.auth_flow(request)).headers["Authorization"]
        return {**headers, **(extra or {})}

    async def head(self) -> httpx.Response:
        return await self.http.head(
            f"{self.base}/submission", params={"deviceID": self.device_id}, headers=self.headers()
        )

    async def post(
        self, parts: list[Part], *, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        boundary = str(uuid.uuid4())
        body = multipart(parts, boundary)
        return await self.http.post(
            f"{self.base}/submission",
            params={"deviceID": self.device_id},
            content=body,
            headers=self.headers(
                {"Content-Type": f"multipart/form-data; boundary={boundary}", **(headers or {})}
            ),
        )

    async def submit(
        self,
        instance: Instance,
        files: list[str] | None = None,
        *,
        incomplete: bool = False,
        extra: list[Part] | None = None,
    ) -> httpx.Response:
        """One POST: the XML, then the named files (all of the instance's by default), then
        `*isIncomplete*` on a batch that is not the last."""
        names = list(instance.files) if files is None else files
        parts = [
            Part(
                "xml_submission_file",
                instance.xml(),
                filename=f"{instance.form_id}_2026-02-20_10-03-59.xml",
                content_type="text/xml",
            ),
            *[Part(n, instance.files[n], filename=n, content_type="image/jpeg") for n in names],
            *(extra or []),
        ]
        if incomplete:
            parts.append(Part("*isIncomplete*", b"yes"))
        return await self.post(parts)


def message_of(response: httpx.Response) -> str:
    """The first <message> of an OpenRosaResponse, read with a strict parser."""
    from defusedxml.ElementTree import fromstring

    root = fromstring(response.content)
    assert root.tag == f"{{{OPENROSA_NS}}}OpenRosaResponse", response.text
    message = root.find(f"{{{OPENROSA_NS}}}message")
    assert message is not None, response.text
    return message.text or ""
