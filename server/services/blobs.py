"""Verified blobs: which exist, who may read one, content sniffing, and garbage collection.

The sync core calls `missing_blobs` (push answers `missing_blobs`) and `attachment_status`
("2 of 3 files received"). A hash is never a capability: a blob is readable only by its holders
(who sent its bytes, see BlobHolder) and by callers who may see a submission whose pusher is a
holder. Everyone else is told it is missing, and completes an upload only by sending the bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import msgspec

from schemas.blobs import MAX_CHECK_HASHES, AttachmentStatus
from schemas.errors import ErrorCode
from server.auth import Principal
from server.db.bulk import Insert, insert_rows, insert_tables, placeholders
from server.db.engine import fetch, transaction
from server.db.tables_blobs import Blob, BlobHolder, Upload
from server.db.tables_sync import Submission, SubmissionAttachment
from server.errors import NotFound
from server.settings import DEFAULT_ALLOWED_CONTENT_TYPES
from sync.blobs import BlobStore, validate_key

log = logging.getLogger("fieldsync.blobs")

__all__ = [
    "ALLOWED_CONTENT_TYPES",
    "MAX_CHECK_HASHES",
    "AttachmentStatus",
    "BlobView",
    "GarbageReport",
    "attachment_status",
    "collect_garbage",
    "missing_blobs",
    "readable_blob",
    "record_blob",
    "sniff_content_type",
]

# What devices may attach by default (FIELDSYNC_ALLOWED_CONTENT_TYPES overrides it), each
# recognised by its magic bytes in `sniff_content_type`.
ALLOWED_CONTENT_TYPES = DEFAULT_ALLOWED_CONTENT_TYPES
# Names clients use for the same format, mapped to the one `sniff_content_type` answers.
_SAME_FORMAT = {
    "image/jpg": "image/jpeg",
    "image/heif": "image/heic",
    "audio/x-m4a": "audio/mp4",
    "audio/m4a": "audio/mp4",
    "audio/mp3": "audio/mpeg",
    "audio/x-wav": "audio/wav",
    "audio/wave": "audio/wav",
}
_HEIC_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}
_MP4_AUDIO_BRANDS = {b"M4A ", b"M4B ", b"mp42", b"mp41", b"isom", b"iso2", b"dash"}
# Bytes `sniff_content_type` needs from the start of a file.
SNIFF_BYTES = 16


class BlobView(msgspec.Struct, frozen=True):
    sha256: str
    size: int
    content_type: str


@dataclass
class GarbageReport:
    blobs: list[str] = field(default_factory=list)  # unreferenced blobs past the grace period
    uploads: list[str] = field(default_factory=list)  # expired or finished upload rows
    staging: list[str] = field(default_factory=list)  # staging areas no upload owns
    stray_objects: list[str] = field(default_factory=list)  # stored keys with no blob row


def normalize_content_type(value: str) -> str:
    base = value.split(";", 1)[0].strip().lower()
    return _SAME_FORMAT.get(base, base)


def sniff_content_type(head: bytes) -> str | None:
    """The format the first bytes of a file announce, or None if it is none we accept."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _HEIC_BRANDS:
            return "image/heic"
        if brand in _MP4_AUDIO_BRANDS:
            return "audio/mp4"
        return None
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if head.startswith(b"OggS"):
        return "audio/ogg"
    if head.startswith(b"#!AMR"):
        return "audio/amr"
    if head.startswith(b"ID3") or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "audio/mpeg"
    return None


def content_type_matches(declared: str, head: bytes) -> bool:
    return sniff_content_type(head) == normalize_content_type(declared)


async def missing_blobs(
    principal: Principal, sha256s: Iterable[str], *, referenced: bool = False
) -> list[str]:
    """The hashes (in the order given, once each) this caller must still upload: not stored, or
    stored but not readable by them.

    `referenced`: the caller's submissions reference these (push, or an upload for one). Those
    they may read make them a holder, so their references grant them to their wards too; the
    others wait for the bytes.
    """
    wanted = list(dict.fromkeys(sha256s))
    if not wanted:
        return []
    held = await _held_by(principal.user_id, wanted)
    granted = await _granted_in_scope(principal, [sha for sha in wanted if sha not in held])
    if referenced and granted:
        now = datetime.now(UTC)
        await insert_rows(
            BlobHolder,
            ("key", "sha256", "user_id", "created_at"),
            [(f"{sha}:{principal.user_id}", sha, principal.user_id, now) for sha in granted],
            on_conflict="ON CONFLICT DO NOTHING",
        )
    return [sha for sha in wanted if sha not in held and sha not in granted]


async def _held_by(user_id: str, sha256s: list[str]) -> set[str]:
    """Stored blobs among `sha256s` whose bytes `user_id` has shown to hold."""
    found: set[str] = set()
    for start in range(0, len(sha256s), 500):  # bounded IN lists
        chunk = sha256s[start : start + 500]
        rows = await fetch(
            "SELECT h.sha256 FROM blob_holder h JOIN blob b ON b.sha256 = h.sha256 "  # noqa: S608
            f"WHERE h.user_id = {{}} AND h.sha256 IN ({placeholders(len(chunk))})",
            user_id,
            *chunk,
        )
        found.update(row["sha256"] for row in rows)
    return found


async def _granted_in_scope(principal: Principal, sha256s: list[str]) -> set[str]:
    """Stored blobs among `sha256s` that an accepted submission in the caller's wards references,
    pushed by a holder of the blob."""
    if not sha256s or not (principal.city_wide or principal.wards):
        return set()
    wards = [] if principal.city_wide else list(principal.wards)
    in_wards = f" AND a.ward_code IN ({placeholders(len(wards))})" if wards else ""
    found: set[str] = set()
    for start in range(0, len(sha256s), 500):
        chunk = sha256s[start : start + 500]
        rows = await fetch(
            "SELECT DISTINCT a.sha256 FROM submission_attachment a "  # noqa: S608
            "JOIN submission s ON s.instance_id = a.instance_id AND s.status = 'accepted' "
            "JOIN blob_holder h ON h.sha256 = a.sha256 AND h.user_id = s.user_id "
            "JOIN blob b ON b.sha256 = a.sha256 "
            f"WHERE a.sha256 IN ({placeholders(len(chunk))}){in_wards}",
            *chunk,
            *wards,
        )
        found.update(row["sha256"] for row in rows)
    return found


async def attachment_status(instance_id: str) -> AttachmentStatus:
    """A file counts as received once its reference grants read access: the blob is stored and
    the submission's pusher holds it (sent the bytes, or could read it when pushing). A file an
    OpenRosa submission names but that has not arrived yet has no hash: it counts by name."""
    rows = (
        await SubmissionAttachment.select(SubmissionAttachment.sha256, SubmissionAttachment.name)
        .where(SubmissionAttachment.instance_id == instance_id)
        .order_by(SubmissionAttachment.id)
        .run()
    )
    expected = list(dict.fromkeys(row["sha256"] for row in rows if row["sha256"]))
    pending = [row["name"] for row in rows if not row["sha256"]]
    pusher = (
        await Submission.select(Submission.user_id)
        .where(Submission.instance_id == instance_id, Submission.status == "accepted")
        .first()
        .run()
    )
    held = await _held_by(pusher["user_id"], expected) if pusher and expected else set()
    missing = [sha for sha in expected if sha not in held]
    return AttachmentStatus(
        expected=len(expected) + len(pending),
        received=len(expected) - len(missing),
        missing=missing,
        missing_files=pending,
    )


async def readable_blob(principal: Principal, sha256: str) -> BlobView:
    """The blob if this caller may read it; NotFound otherwise (never reveals existence)."""
    hidden = NotFound("There is no such attachment.", code=ErrorCode.BLOB_NOT_FOUND)
    try:
        validate_key(sha256)
    except ValueError:
        raise hidden from None
    row = await Blob.select().where(Blob.sha256 == sha256).first().run()
    if row is None or await missing_blobs(principal, [sha256]):  # stored, not readable by them
        raise hidden
    return BlobView(sha256=sha256, size=row["size"], content_type=row["content_type"])


async def record_blob(sha256: str, size: int, content_type: str, uploader: str) -> None:
    """Record that `uploader` sent the verified bytes: the blob's row unless another upload of
    the same bytes got there first (the database decides, no check-then-insert), and the
    uploader as one of its holders."""
    now = datetime.now(UTC)
    async with transaction():
        await Blob.insert(
            Blob(
                sha256=sha256,
                size=size,
                content_type=content_type,
                first_uploader=uploader,
                created_at=now,
            )
        ).on_conflict(action="DO NOTHING")
        await BlobHolder.insert(
            BlobHolder(key=f"{sha256}:{uploader}", sha256=sha256, user_id=uploader, created_at=now)
        ).on_conflict(action="DO NOTHING")


async def record_blobs(
    uploader: str,
    held: Iterable[tuple[str, int, str]],
    kept: Iterable[tuple[str, int, str]] = (),
) -> None:
    """`record_blob` for files that arrived in a multipart POST, inside the caller's
    transaction, in one statement (two on SQLite): (sha256, size, content type) each, verified
    by the blob store's put. `kept` blobs get no holder: nobody reads them through the
    attachments API (a submission's XML)."""
    held_rows = list(dict.fromkeys(held))
    rows = held_rows + [row for row in dict.fromkeys(kept) if row not in held_rows]
    if not rows:
        return
    now = datetime.now(UTC)
    await insert_tables(
        Insert(
            Blob,
            ("sha256", "size", "content_type", "first_uploader", "created_at"),
            [(sha, size, kind, uploader, now) for sha, size, kind in rows],
            on_conflict="ON CONFLICT DO NOTHING",
        ),
        Insert(
            BlobHolder,
            ("key", "sha256", "user_id", "created_at"),
            [
                (f"{sha}:{uploader}", sha, uploader, now)
                for sha in dict.fromkeys(r[0] for r in held_rows)
            ],
            on_conflict="ON CONFLICT DO NOTHING",
        ),
    )


async def collect_garbage(
    store: BlobStore,
    *,
    grace: timedelta,
    dry_run: bool,
    now: datetime | None = None,
) -> GarbageReport:
    """Remove unreferenced blobs older than `grace`, expired uploads and their staged parts."""
    now = now or datetime.now(UTC)
    cutoff = now - grace
    report = GarbageReport()

    referenced = {
        row["sha256"]
        for row in await SubmissionAttachment.select(SubmissionAttachment.sha256).distinct().run()
    } | {
        # An OpenRosa submission's XML, kept as received.
        row["xml_sha256"]
        for row in await Submission.select(Submission.xml_sha256)
        .where(Submission.xml_sha256.is_not_null())
        .distinct()
        .run()
    }
    old_blobs = await Blob.select(Blob.sha256).where(Blob.created_at < cutoff).run()
    report.blobs = sorted(row["sha256"] for row in old_blobs if row["sha256"] not in referenced)

    stale_uploads = (
        await Upload.select(Upload.id, Upload.staging).where(Upload.expires_at < now).run()
    )
    report.uploads = sorted(row["id"] for row in stale_uploads)

    # Listed before the rows are read: a staging area that appears meanwhile belongs to a row
    # that already exists (rows are inserted before staging begins).
    staged_handles = [handle async for handle in store.staging_handles()]
    stale_ids = set(report.uploads)
    live_rows = [
        row
        for row in await Upload.select(Upload.id, Upload.sha256, Upload.state).run()
        if row["id"] not in stale_ids
    ]
    live_ids = {row["id"] for row in live_rows}
    # Staged at a blob's own key (S3), a handle names the blob rather than the upload: it is kept
    # while any unfinished upload of that hash is.
    live_shas = {row["sha256"] for row in live_rows if row["state"] == "active"}

    def abandoned(handle: str) -> bool:
        blob = store.staging_blob(handle)
        if blob is not None:
            return blob not in live_shas
        return handle.split("/", 1)[0] not in live_ids

    report.staging = sorted(h for h in staged_handles if abandoned(h))

    known = {row["sha256"] for row in await Blob.select(Blob.sha256).run()}
    recent = {
        row["sha256"]
        for row in await Upload.select(Upload.sha256).where(Upload.updated_at >= cutoff).run()
    }
    report.stray_objects = sorted(
        [key async for key in store.keys() if key not in known and key not in recent]
    )
    if dry_run:
        return report

    for sha256 in report.blobs:
        async with transaction():
            # Re-checked inside the transaction: a push may have referenced it meanwhile.
            if (
                await SubmissionAttachment.exists()
                .where(SubmissionAttachment.sha256 == sha256)
                .run()
            ) or await Submission.exists().where(Submission.xml_sha256 == sha256).run():
                continue
            await Blob.delete().where(Blob.sha256 == sha256).run()
            await BlobHolder.delete().where(BlobHolder.sha256 == sha256).run()
        await store.delete(sha256)
    for row in stale_uploads:
        if row["staging"]:
            await store.discard_staged(row["staging"])
        await Upload.delete().where(Upload.id == row["id"]).run()
    for handle in report.staging:
        await store.discard_staged(handle)
    for key in report.stray_objects:
        await store.delete(key)
    log.info(
        "gc-blobs removed %d blobs, %d uploads, %d staging areas, %d stray objects",
        len(report.blobs),
        len(report.uploads),
        len(report.staging),
        len(report.stray_objects),
    )
    return report
