"""Resumable uploads (tus 1.0): state in the `upload` table, bytes staged in the blob store.

Bytes arrive in PATCH bodies of any size and are cut into STAGING_PART_SIZE parts; bytes that do
not fill a part wait in the staging area's tail. `received` in the row only ever counts durably
staged bytes, so a cut connection or a restart resumes where the row says (HEAD answers it).

Parts in flight: a full part is stored and hashed in the background while the next bytes
arrive (at most MAX_PARTS_IN_FLIGHT parts held at once, so memory stays a few parts per
upload); its row update follows once it is stored, in part order. A PATCH that ends exactly on a
part boundary is answered when its bytes are received, its last part possibly still in flight,
and the next PATCH may continue at once. Everything else waits for its parts first: a PATCH that
leaves a tail, one with Upload-Checksum (nothing of it counts unless it matches), the one that
completes the upload, HEAD (so it always answers a durable offset) and DELETE. If a part in flight
fails, or the process stops before it lands, the row still holds the offset before it: the next
PATCH gets the store's error or a 409, and the client resumes from HEAD, as tus clients do.

The SHA-256 of the whole upload is computed while it streams (in a worker thread) and its state
is saved with every row update (OpenSSL's SHA256_CTX, where libcrypto is reachable), so any
process can go on hashing after a restart. That lets the S3 store stage the parts straight at
`blobs/<sha256>` and complete them there only after the digest matched: no copy at completion,
and a mismatch never becomes readable. Without a savable state the parts stage privately and the
store hashes them back and copies them at completion.

Modules, each importing only those above it: `tus` (protocol headers, pure), `hashing` (the
savable SHA-256, pure), `rows` (the row Struct and every write to it), `runtime` (per-process
locks, live state, parts in flight), `pipeline` (one PATCH body into parts), `service` (the API).
"""

from server.services.uploads.rows import UploadView
from server.services.uploads.runtime import UploadRuntime
from server.services.uploads.service import append, create_upload, get_upload, terminate
from server.services.uploads.tus import (
    CHECKSUM_ALGORITHMS,
    TUS_EXTENSIONS,
    TUS_VERSION,
    ClientDisconnected,
    parse_checksum,
    parse_metadata,
)

__all__ = [
    "CHECKSUM_ALGORITHMS",
    "TUS_EXTENSIONS",
    "TUS_VERSION",
    "ClientDisconnected",
    "UploadRuntime",
    "UploadView",
    "append",
    "create_upload",
    "get_upload",
    "parse_checksum",
    "parse_metadata",
    "terminate",
]
