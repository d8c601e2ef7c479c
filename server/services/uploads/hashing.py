"""SHA-256 whose progress can be saved in the upload row and resumed by any process.

OpenSSL's SHA256_CTX is plain bytes, so libcrypto's SHA256_* calls (through ctypes) give a hash
whose state survives a restart. Where libcrypto is not reachable, `Sha256Hashing(None)` hashes
with hashlib and saves nothing: the blob store then hashes the staged parts back at completion.
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import ctypes.util
import hashlib
import logging
import struct
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger("fieldsync.uploads")

# sizeof(SHA256_CTX) in OpenSSL and LibreSSL: h[8], Nl, Nh, data[16], num, md_len (32 bits each).
_CTX_BYTES = 112
_CTX_BUFFER = 256  # room to spare, in case a build pads the struct


class Sha256Hasher(Protocol):
    """What the upload pipeline asks of a SHA-256 (hashlib's objects have it too)."""

    def update(self, data: bytes, /) -> None: ...
    def copy(self) -> Sha256Hasher: ...
    def hexdigest(self) -> str: ...


class SavableSha256:
    """hashlib-like SHA-256 over libcrypto's SHA256_* calls, whose context is plain bytes.

    ctypes releases the GIL during the calls, so hashing in a worker thread runs in parallel.
    """

    def __init__(self, lib: ctypes.CDLL, context: bytes | None = None) -> None:
        self._lib = lib
        self._ctx = ctypes.create_string_buffer(_CTX_BUFFER)
        if context is None:
            lib.SHA256_Init(self._ctx)
        else:
            ctypes.memmove(self._ctx, context, len(context))

    def update(self, data: bytes, /) -> None:
        self._lib.SHA256_Update(self._ctx, data, len(data))

    def copy(self) -> SavableSha256:
        return SavableSha256(self._lib, self._ctx.raw[:_CTX_BYTES])

    def hexdigest(self) -> str:
        out = ctypes.create_string_buffer(32)
        self._lib.SHA256_Final(out, self.copy()._ctx)
        return out.raw.hex()

    def hashed_bytes(self) -> int:
        low, high = struct.unpack_from("=II", self._ctx.raw, 32)  # Nl, Nh: the length in bits
        return ((high << 32) | low) // 8

    def state(self) -> str:
        return base64.b64encode(self._ctx.raw[:_CTX_BYTES]).decode()


def load_libcrypto() -> ctypes.CDLL | None:
    """libcrypto with a working SHA256_* API (the one hashlib uses), or None."""
    candidates: list[str] = []
    try:
        import _hashlib

        candidates.append(_hashlib.__file__ or "")
    except ImportError:  # pragma: no cover - CPython builds without OpenSSL
        pass
    candidates.append(ctypes.util.find_library("crypto") or "")
    for path in filter(None, candidates):
        try:
            lib = ctypes.CDLL(path)
            lib.SHA256_Init.argtypes = [ctypes.c_void_p]
            lib.SHA256_Update.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
            lib.SHA256_Final.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
        except (OSError, AttributeError):
            continue
        # Saved after 1000 bytes, restored into a fresh buffer, continued: must equal hashlib.
        first = SavableSha256(lib)
        first.update(b"f" * 1000)
        resumed = SavableSha256(lib, base64.b64decode(first.state()))
        resumed.update(b"s" * 77)
        expected = hashlib.sha256(b"f" * 1000 + b"s" * 77).hexdigest()
        if resumed.hexdigest() == expected and resumed.hashed_bytes() == 1077:
            return lib
    log.warning("libcrypto's SHA256_* API is not usable: uploads hash back at completion")
    return None


@dataclass(frozen=True)
class Sha256Hashing:
    """How this process hashes uploads: with a savable state (libcrypto) or without (None)."""

    libcrypto: ctypes.CDLL | None

    @classmethod
    def load(cls) -> Sha256Hashing:
        return cls(load_libcrypto())

    @property
    def savable(self) -> bool:
        return self.libcrypto is not None

    def new(self) -> Sha256Hasher:
        return SavableSha256(self.libcrypto) if self.libcrypto is not None else hashlib.sha256()

    def restored(self, state: str | None, size: int) -> Sha256Hasher | None:
        """The hasher saved with `size` bytes hashed, or None if there is none usable."""
        if self.libcrypto is None or not state:
            return None
        try:
            context = base64.b64decode(state, validate=True)
        except binascii.Error:
            return None
        if len(context) != _CTX_BYTES:
            return None
        hasher = SavableSha256(self.libcrypto, context)
        return hasher if hasher.hashed_bytes() == size else None


def saved_state(hasher: Sha256Hasher | None) -> str | None:
    """What the row keeps of `hasher`: its state if it can be resumed elsewhere, else None."""
    return hasher.state() if isinstance(hasher, SavableSha256) else None
