"""What one app instance holds of uploads in use: a lock per upload, and each upload's live state
with its parts in flight. Built in the app's lifespan and drained when it stops."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from server.services.uploads.hashing import Sha256Hasher, Sha256Hashing, saved_state
from server.services.uploads.rows import Progress, commit_progress
from server.settings import Settings
from sync.blobs import BlobStore


@dataclass
class Live:
    """One upload in this process: the row's progress plus the parts still in flight."""

    handle: str
    committed: Progress  # the row's progress; flights advance it as they land, in order
    accepted: int  # where the next PATCH continues: committed.received + the parts in flight
    hasher: (
        Sha256Hasher | None
    )  # SHA-256 of the first `accepted` bytes; None: the store hashes back
    sniffed_type: str | None
    expires_at: datetime
    flights: list[Flight] = field(default_factory=list)

    async def settle(self) -> BaseException | None:
        """Wait for every part in flight (never cancelling them); return the first failure."""
        tasks = [flight.task for flight in self.flights]
        self.flights = []
        if tasks:
            await asyncio.wait(tasks)
        failures = [
            asyncio.CancelledError("a part in flight was cancelled")
            if task.cancelled()
            else task.exception()
            for task in tasks
        ]
        return next((failure for failure in failures if failure is not None), None)


class Flight:
    """One part on its way: staged and hashed at once (the hash in part order, in a worker
    thread), then recorded in the row after the part before it."""

    def __init__(
        self,
        live: Live,
        upload_id: str,
        store: BlobStore,
        expiry: timedelta,
        number: int,
        data: bytes,
        hash_from: int,
        hasher: Sha256Hasher | None,
    ) -> None:
        self.previous = live.flights[-1] if live.flights else None
        self.staged = asyncio.Event()  # its bytes are stored and hashed: memory released
        self.hashed = asyncio.Event()
        self.task = asyncio.create_task(
            self._fly(live, upload_id, store, expiry, number, data, hash_from, hasher)
        )

    async def _fly(
        self,
        live: Live,
        upload_id: str,
        store: BlobStore,
        expiry: timedelta,
        number: int,
        data: bytes,
        hash_from: int,
        hasher: Sha256Hasher | None,
    ) -> None:
        try:
            staging = asyncio.ensure_future(store.stage_part(live.handle, number, data))
            try:
                hash_state = await self._hash(hasher, data, hash_from)
            finally:
                # Never left running on its own: its failure is this flight's.
                part = await staging
        finally:
            self.hashed.set()
            self.staged.set()
        del data
        if self.previous is not None:
            await self.previous.task  # in order: after a failed part none is recorded
        progress = Progress(
            parts=[*live.committed.parts, part],
            tail_size=0,
            sniffed_type=live.sniffed_type,
            hash_state=hash_state,
        )
        live.expires_at = await commit_progress(
            upload_id, live.committed.received, progress, expiry
        )
        live.committed = progress

    async def _hash(self, hasher: Sha256Hasher | None, data: bytes, hash_from: int) -> str | None:
        try:
            if self.previous is not None:
                await self.previous.hashed.wait()
            if hasher is None:
                return None
            await asyncio.to_thread(hasher.update, data[hash_from:] if hash_from else data)
            return saved_state(hasher)
        finally:
            self.hashed.set()


@dataclass
class _UploadLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0  # requests holding or waiting for it


@dataclass
class UploadRuntime:
    """Per app instance: a lock per upload in use and the uploads with state in this process.

    Both maps hold only what is in use: a lock lives while a request holds or waits for it, and
    an upload's state goes when it completes, fails, is deleted or expires (`prune`)."""

    expiry: timedelta = timedelta(hours=24)
    hashing: Sha256Hashing = field(default_factory=Sha256Hashing.load)
    locks: dict[str, _UploadLock] = field(default_factory=dict)
    live: dict[str, Live] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> UploadRuntime:
        return cls(expiry=settings.upload_expiry)

    @asynccontextmanager
    async def lock(self, upload_id: str) -> AsyncIterator[None]:
        entry = self.locks.setdefault(upload_id, _UploadLock())
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self.locks[upload_id]

    def forget(self, upload_id: str) -> None:
        self.live.pop(upload_id, None)

    def prune(self, now: datetime) -> None:
        """Drop the state of uploads abandoned past their expiry (none of their parts in flight)."""
        for upload_id, live in list(self.live.items()):
            if live.expires_at <= now and not live.flights and upload_id not in self.locks:
                del self.live[upload_id]

    async def settle(self, upload_id: str) -> None:
        """Let the upload's parts in flight land; after a failure the row alone says the state."""
        live = self.live.get(upload_id)
        if live is not None and await live.settle() is not None:
            self.live.pop(upload_id, None)

    async def drain(self) -> None:
        """At shutdown: let every part in flight land, so clients resume where they were told."""
        for upload_id in list(self.live):
            await self.settle(upload_id)
