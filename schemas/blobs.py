"""Wire types of PROTOCOL.md "Attachments": which blobs the server still needs, and arrival status.

The tus upload exchange itself travels in headers (tus 1.0), so it has no body types here.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from schemas.sync import Sha256Hex

__all__ = ["MAX_CHECK_HASHES", "AttachmentStatus", "BlobCheck", "BlobCheckResult", "Sha256Hex"]

# Cap on one blobs/check request (a submission has a handful of attachments).
MAX_CHECK_HASHES = 1000


class BlobCheck(msgspec.Struct, frozen=True):
    """`POST /api/v1/blobs/check`: the hashes a device is about to reference."""

    sha256: Annotated[list[Sha256Hex], msgspec.Meta(max_length=MAX_CHECK_HASHES)]


class BlobCheckResult(msgspec.Struct, frozen=True):
    """Those of the asked hashes the server does not hold yet (in the order asked, once each)."""

    missing: list[str]


class AttachmentStatus(msgspec.Struct, frozen=True, omit_defaults=True):
    """What a supervisor sees for one submission: "2 of 3 files received". `missing` are the
    hashes not received yet; `missing_files` the names of files an OpenRosa submission (ODK
    Collect) named whose bytes have not arrived, so their hash is not known yet."""

    expected: int
    received: int
    missing: list[str]
    missing_files: list[str] = msgspec.field(default_factory=list)
