"""tus 1.0 protocol helpers: versions, extensions, and the Upload-Metadata and Upload-Checksum
headers. Pure: no I/O."""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import NamedTuple

from schemas.errors import ErrorCode
from server.errors import BadRequest

TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = "creation,creation-with-upload,termination,checksum,expiration"
CHECKSUM_ALGORITHMS = {"sha256": hashlib.sha256, "sha1": hashlib.sha1}


class ClientDisconnected(Exception):
    """The request body ended early: the connection was cut."""


class Checksum(NamedTuple):
    """An Upload-Checksum: the algorithm's name and the digest the request's bytes must have."""

    algorithm: str
    digest: bytes


def parse_metadata(header: str) -> dict[str, str]:
    """`Upload-Metadata: key base64value,key2 base64value2` (tus 1.0)."""
    metadata: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in header.split(","))):
        key, _, encoded = item.partition(" ")
        try:
            metadata[key] = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise BadRequest(
                f"Upload-Metadata value for {key!r} is not base64 UTF-8.",
                code=ErrorCode.UPLOAD_METADATA_INVALID,
            ) from None
    return metadata


def parse_checksum(header: str | None) -> Checksum | None:
    """`Upload-Checksum: <algorithm> <base64 digest>`."""
    if not header:
        return None
    algorithm, _, encoded = header.strip().partition(" ")
    if algorithm not in CHECKSUM_ALGORITHMS:
        raise BadRequest(
            f"Upload-Checksum algorithm {algorithm!r} is not supported (sha256, sha1).",
            code=ErrorCode.CHECKSUM_ALGORITHM_UNSUPPORTED,
        )
    try:
        return Checksum(algorithm, base64.b64decode(encoded.strip(), validate=True))
    except binascii.Error:
        raise BadRequest(
            "Upload-Checksum digest is not base64.", code=ErrorCode.CHECKSUM_INVALID
        ) from None
