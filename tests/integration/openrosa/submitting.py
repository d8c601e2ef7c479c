"""What ODK Collect POSTs to /submission (odk.md §9.1, §10), byte for byte: the multipart
layout and part names OkHttp writes (a UUID boundary, no per-part Content-Length, raw UTF-8 file
names), the instance XML Collect saves (answers in form order, `meta/entity`, `deprecatedID`),
`*isIncomplete*` on a batch that is not the last. Sent by the `Collect` install of collect.py.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import httpx
from defusedxml.ElementTree import fromstring

from tests.integration.openrosa.collect import RESPONSE, Collect

# A JPEG as a camera writes it (the magic bytes are what the server sniffs), about 50 KiB.
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 200


def photo(seed: str) -> bytes:
    """A distinct small JPEG per seed."""
    return JPEG + seed.encode()


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
class Sender:
    """A Collect install sending submissions."""

    collect: Collect

    @property
    def device_id(self) -> str:
        return self.collect.device_id

    @property
    def submission_url(self) -> str:
        return self.collect.target(self.collect.server_url.rstrip("/") + "/submission")

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {**self.collect.headers(), **(extra or {})}

    async def head(self) -> httpx.Response:
        return await self.collect.head_submission()

    async def post(
        self, parts: list[Part], *, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        boundary = str(uuid.uuid4())
        return await self.collect.http.post(
            self.submission_url,
            content=multipart(parts, boundary),
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
    root = fromstring(response.content)
    assert root.tag == f"{RESPONSE}OpenRosaResponse", response.text
    message = root.find(f"{RESPONSE}message")
    assert message is not None, response.text
    return message.text or ""
