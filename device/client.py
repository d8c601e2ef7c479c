"""The reference device client: what a tablet does to sync (PROTOCOL.md "Devices' side").

It is used by the tests, the benchmarks and the simulator, and it is the worked example for the
tablet app's developers, so it favours plain code over cleverness. One `SyncClient` is one device:

    client = SyncClient(http, device_id=device_id, store_path="device.db")
    await client.login("lan.inspector", password)
    entity_id, change = client.create_entity("establishments", {"business_name": "Quán X"})
    client.submit("inspection", "2026010101", "00070", data, entities=[change])
    await client.sync()                       # push the outbox, then pull every page

The local store is SQLite (a file, or ":memory:"):

- `entities`: the last server copy of each record in scope (`version`, `deleted`, `label`,
  `properties`) plus the device's pending local overlay (`local`, the edits not yet confirmed by
  the server, and `local_op_seq`, the last outbox op carrying them). Reads show copy + overlay.
- `outbox`: every op the device wrote, by user and `op_seq`, with its state and the server's
  result. Rows are never deleted: an op is the only copy of what someone captured.
- `meta`: device id, per user the next op_seq and the op_seq the server has confirmed, cursor,
  HLC, clock offset, tokens.
- `conflicts` and `forms`: what supervisors and form lists need.

Rules kept here (numbers from PROTOCOL.md "Devices' side"):
1. a local change and its outbox op are written in one SQLite transaction; op_seq is persisted
   and never reused;
2. one push in flight; transport errors, 503 and 429 are retried with jittered backoff; the
   outbox is never dropped, not even when the cursor is reset;
3. an op is never rewritten after it is queued (its `base_version` stays what the user saw),
   except its HLC when the server refuses it with `clock_skew` (the op was not applied then);
4. pulled records apply only if their `version` is greater than the local one, `evict` drops the
   local copy, and the cursor is stored in the same transaction as the page;
5. HLC wall time = device clock + the offset learned from `server_hlc`;
6. op_seq counts per (device, user) (docs/protocol.md "Device binding"): a tablet that changes
   hands first pushes the previous user's outbox, and refuses the new login while any of it is
   unsent; each user's ops then continue their own sequence on this tablet.

Only httpx, msgspec, the standard library, `schemas` and `sync`: no server code.
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

import httpx
import msgspec
from msgspec import UNSET, UnsetType

from schemas.sync import (
    Attachment,
    ConflictChangeOut,
    ConflictRecord,
    EntityChange,
    EntityChangeOut,
    FormChangeOut,
    Op,
    OpResult,
    PullRequest,
    PullResponse,
    PushRequest,
    PushResponse,
    Resolve,
    Submission,
    decode,
    encode,
)
from sync.hlc import DEFAULT_MAX_SKEW_MS, HLC, Clock, wall_ms

__all__ = [
    "LocalEntity",
    "OutboxEntry",
    "PullReport",
    "PushReport",
    "SyncClient",
    "SyncError",
    "SyncUnavailable",
    "uuid7",
]

API = "/api/v1"
SELECT_ENTITIES = (
    "SELECT list, id, version, deleted, label, properties, conflicted, local FROM entities"
)
MSGPACK = "application/msgpack"
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entities (
    id TEXT PRIMARY KEY,
    list TEXT NOT NULL,
    version INTEGER NOT NULL DEFAULT 0,      -- 0: created here, not yet seen from the server
    deleted INTEGER NOT NULL DEFAULT 0,
    label TEXT,
    properties TEXT NOT NULL DEFAULT '{}',
    conflicted TEXT NOT NULL DEFAULT '[]',
    local TEXT,                               -- pending overlay {properties, label?, deleted?}
    local_op_seq INTEGER,                     -- last outbox op carrying the overlay
    stale INTEGER NOT NULL DEFAULT 0          -- not (yet) confirmed by a re-snapshot
);
CREATE INDEX IF NOT EXISTS entities_by_list ON entities (list);
CREATE TABLE IF NOT EXISTS outbox (
    user_id TEXT NOT NULL,                    -- whose op stream: op_seq counts per user here
    op_seq INTEGER NOT NULL,
    op TEXT NOT NULL,                         -- the Op as JSON, exactly as pushed
    state TEXT NOT NULL DEFAULT 'pending',    -- pending | applied | rejected
    result TEXT,                              -- the server's OpResult as JSON
    PRIMARY KEY (user_id, op_seq)
);
CREATE TABLE IF NOT EXISTS conflicts (id TEXT PRIMARY KEY, version INTEGER, record TEXT);
CREATE TABLE IF NOT EXISTS forms (form_id TEXT PRIMARY KEY, version TEXT, state TEXT, hash TEXT);
"""

StrList = list[str]  # LocalEntity has a field named `list`
Sleep = Callable[[float], Awaitable[None]]


class SyncError(Exception):
    """The server refused a request (a problem+json `code`), or the device cannot go on."""

    code: ClassVar[str] = "sync_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        problem: Any = None,
    ) -> None:
        super().__init__(message)
        self.instance_code = code or self.code
        self.status = status
        self.problem = problem or {}


class SyncUnavailable(SyncError):
    """The server stayed unreachable (or busy) through every retry: try again later."""

    code: ClassVar[str] = "unavailable"


@dataclass(frozen=True)
class LocalEntity:
    """What the device shows: the server copy with the pending local overlay on top."""

    list: str
    id: str
    version: int  # of the server copy (0: never seen from the server)
    deleted: bool
    label: str | None
    properties: dict[str, Any]
    conflicted: StrList
    pending: bool  # carries local edits the server has not confirmed yet


@dataclass(frozen=True)
class OutboxEntry:
    op: Op
    state: Literal["pending", "applied", "rejected"]
    result: OpResult | None


@dataclass
class PushReport:
    sent: int = 0  # ops sent, counting resends
    applied: int = 0
    duplicates: int = 0  # the server had applied them already (a lost response)
    rejected: int = 0
    requests: int = 0
    last_op_seq: int = 0


@dataclass
class PullReport:
    pages: int = 0
    changes: int = 0
    applied: int = 0  # entity copies replaced by a newer version
    evicted: int = 0
    reset: str | None = None
    acked_through: int = 0


def uuid7(now_ms: int, rng: random.Random) -> str:
    """A UUIDv7 (time-ordered) as PROTOCOL.md asks devices to use for records they create."""
    value = (now_ms & ((1 << 48) - 1)) << 80 | rng.getrandbits(80)
    value &= ~(0xF << 76)
    value |= 0x7 << 76  # version 7
    value &= ~(0x3 << 62)
    value |= 0x2 << 62  # RFC 4122 variant
    return str(uuid.UUID(int=value))


def _device_clock_ms() -> int:
    return int(time.time() * 1000)


class SyncClient:
    """One device: local store, outbox, HLC, and the push/pull loop against one server."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        device_id: str,
        store_path: str = ":memory:",
        now_ms: Callable[[], int] = _device_clock_ms,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        max_attempts: int = 8,
        backoff_base: float = 0.2,
        backoff_cap: float = 30.0,
        push_batch: int = 100,
        pull_page_items: int = 500,
        msgpack: bool = False,
    ) -> None:
        self.http = http
        self.device_id = device_id
        self.now_ms = now_ms  # the device's own clock
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.push_batch = push_batch
        self.pull_page_items = pull_page_items
        self.msgpack = msgpack
        self._push_lock = asyncio.Lock()  # one push in flight
        self._pull_lock = asyncio.Lock()
        self._db = sqlite3.connect(store_path, isolation_level=None)
        self._db.executescript(SCHEMA)
        stored_device = self._meta("device_id")
        if stored_device is None:
            with self._transaction():
                self._set_meta("device_id", device_id)
        elif stored_device != device_id:
            raise SyncError(
                f"this store belongs to device {stored_device}", code="store_device_mismatch"
            )
        self._clock = Clock(self._node, self._hlc_now, last=self._meta("hlc_last"))

    # ------------------------------------------------------------------------------------------
    # Local store plumbing

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One local transaction: everything in it is written, or nothing."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def close(self) -> None:
        self._db.close()

    @property
    def _node(self) -> str:
        return self.device_id  # a UUID fits the HLC node alphabet

    @property
    def clock_offset_ms(self) -> int:
        return int(self._meta("clock_offset_ms") or 0)

    def _hlc_now(self) -> int:
        return self.now_ms() + self.clock_offset_ms

    @property
    def cursor(self) -> str | None:
        return self._meta("cursor")

    @property
    def user(self) -> dict[str, Any] | None:
        """The logged-in user as the server described it: {id, username, role, wards}."""
        text = self._meta("user")
        return None if text is None else dict(json.loads(text))

    # ------------------------------------------------------------------------------------------
    # Identity

    @property
    def _stream(self) -> str:
        """The logged-in user's id: their op stream on this tablet."""
        user = self.user
        if user is None:
            raise SyncError("log in first", code="not_logged_in")
        return str(user["id"])

    def _pushed_through(self) -> int:
        return int(self._meta(f"pushed_through:{self._stream}") or 0)

    async def login(self, username: str, password: str, device_name: str = "") -> dict[str, Any]:
        """Log in on this tablet. Another user's login first sends the current user's outbox
        (the server ends their session), and is refused while any of it is still unsent."""
        current = self.user
        if current is not None and current["username"] != username.lower() and self.pending_ops():
            try:
                await self.push()
            except (SyncError, httpx.TransportError):
                pass  # reported below: the ops stay, their user pushes them later
            if self.pending_ops():
                raise SyncError(
                    f"{current['username']} has ops on this tablet that have not reached the "
                    "server; sync them before another user logs in",
                    code="unsent_ops_of_other_user",
                )
        body = {
            "username": username,
            "password": password,
            "device_id": self.device_id,
            "device_name": device_name,
        }
        response = await self._request("POST", f"{API}/auth/login", json_body=body, auth=False)
        return self._store_tokens(response.json())

    async def _refresh_tokens(self) -> None:
        refresh_token = self._meta("refresh_token")
        if refresh_token is None:
            raise SyncError("log in first", code="not_logged_in")
        # Not retried: if the answer is lost the token is rotated anyway and resending it would
        # end the whole session family (theft detection); the caller logs in again then.
        response = await self.http.post(
            f"{API}/auth/refresh", json={"refresh_token": refresh_token}
        )
        if response.status_code != 200:
            raise self._problem(response)
        self._store_tokens(response.json())

    def _store_tokens(self, pair: dict[str, Any]) -> dict[str, Any]:
        with self._transaction() as db:
            previous = self.user
            if previous is not None and previous["id"] != pair["user"]["id"]:
                # The previous user's ops are all confirmed (login checked): their overlays
                # would be compared with the new user's op_seq; the next pull brings the copies.
                db.execute("UPDATE entities SET local = NULL, local_op_seq = NULL")
                db.execute("DELETE FROM entities WHERE version = 0")
            self._set_meta("access_token", pair["access_token"])
            self._set_meta("refresh_token", pair["refresh_token"])
            self._set_meta("user", json.dumps(pair["user"]))
        return dict(pair["user"])

    # ------------------------------------------------------------------------------------------
    # HTTP with retries

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        content: bytes | None = None,
        auth: bool = True,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        """Send with jittered exponential backoff on transport errors, 503 and 429; refresh the
        access token once on 401 `token_expired`. Other problems raise `SyncError`."""
        refreshed = False
        attempt = 0
        while True:
            headers = {}
            if content is not None:
                headers["content-type"] = MSGPACK if self.msgpack else "application/json"
                headers["accept"] = MSGPACK if self.msgpack else "application/json"
            if auth:
                token = self._meta("access_token")
                if token is None:
                    raise SyncError("log in first", code="not_logged_in")
                headers["authorization"] = f"Bearer {token}"
            retry_after: float | None = None
            try:
                response = await self.http.request(
                    method, path, json=json_body, content=content, headers=headers, params=params
                )
            except httpx.TransportError:
                response = None
            if response is not None:
                if response.status_code < 400:
                    return response
                if response.status_code == 401 and auth and not refreshed:
                    if self._problem(response).instance_code == "token_expired":
                        await self._refresh_tokens()
                        refreshed = True
                        continue
                if response.status_code not in (429, 503):
                    raise self._problem(response)
                retry_after = _retry_after(response)
            attempt += 1
            if attempt >= self.max_attempts:
                raise SyncUnavailable(f"{method} {path}: no answer after {attempt} attempts")
            await self.sleep(self._backoff(attempt, retry_after))

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Exponential with jitter, so many devices coming back online do not retry in step."""
        ceiling = min(self.backoff_cap, self.backoff_base * 2 ** (attempt - 1))
        delay = ceiling / 2 + self.rng.uniform(0, ceiling / 2)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.backoff_cap))
        return delay

    @staticmethod
    def _problem(response: httpx.Response) -> SyncError:
        try:
            problem = response.json()
        except ValueError:
            problem = {}
        if not isinstance(problem, dict):
            problem = {}
        return SyncError(
            str(problem.get("detail") or f"HTTP {response.status_code}"),
            code=str(problem.get("code") or f"http_{response.status_code}"),
            status=response.status_code,
            problem=problem,
        )

    def _encode(self, value: Any) -> bytes:
        return encode(value, "msgpack" if self.msgpack else "json")

    def _decode(self, response: httpx.Response, type_: type[Any]) -> Any:
        if response.headers.get("content-type", "").startswith(MSGPACK):
            return decode(response.content, type_, "msgpack")
        return decode(response.content, type_, "json")

    # ------------------------------------------------------------------------------------------
    # Local changes: each writes its outbox op and the local overlay in one transaction

    def new_id(self) -> str:
        return uuid7(self.now_ms(), self.rng)

    def create_entity(
        self,
        list_name: str,
        properties: dict[str, Any],
        *,
        label: str | None = None,
        entity_id: str | None = None,
    ) -> tuple[str, EntityChange]:
        """A new record; pass the change to `submit` with the submission that creates it."""
        entity_id = entity_id or self.new_id()
        change = EntityChange(
            list=list_name,
            entity_id=entity_id,
            action="create",
            base_version=0,
            label=label,
            properties=dict(properties),
        )
        return entity_id, change

    def update_entity(
        self,
        list_name: str,
        entity_id: str,
        properties: dict[str, Any],
        *,
        label: str | None = None,
    ) -> EntityChange:
        """An edit starting from what the device shows now.

        `base_version` is the server copy's version and `base_properties` the values the user saw
        (copy + own pending edits): the server fast-forwards what it already had at that version,
        and treats a device's own earlier ops as seen."""
        current = self._require_entity(list_name, entity_id)
        return EntityChange(
            list=list_name,
            entity_id=entity_id,
            action="update",
            base_version=current.version,
            label=label,
            properties=dict(properties),
            base_properties={name: current.properties.get(name) for name in properties},
        )

    def delete_entity(self, list_name: str, entity_id: str) -> EntityChange:
        current = self._require_entity(list_name, entity_id)
        return EntityChange(
            list=list_name, entity_id=entity_id, action="delete", base_version=current.version
        )

    def undelete_entity(self, list_name: str, entity_id: str) -> EntityChange:
        current = self._require_entity(list_name, entity_id)
        return EntityChange(
            list=list_name, entity_id=entity_id, action="undelete", base_version=current.version
        )

    def _require_entity(self, list_name: str, entity_id: str) -> LocalEntity:
        current = self.entity(list_name, entity_id)
        if current is None:
            raise SyncError(
                f"no {list_name} record {entity_id} on this device", code="entity_unknown"
            )
        return current

    def submit(
        self,
        form_id: str,
        form_version: str,
        ward_code: str,
        data: dict[str, Any],
        *,
        entities: Sequence[EntityChange] = (),
        attachments: Sequence[Attachment] = (),
        instance_id: str | None = None,
        deprecated_id: str | None = None,
        captured_at: datetime | None = None,
    ) -> str:
        """Queue a form submission (and the entity changes it carries); returns its instance_id."""
        instance_id = instance_id or self.new_id()
        submission = Submission(
            instance_id=instance_id,
            form_id=form_id,
            form_version=form_version,
            captured_at=captured_at or datetime.fromtimestamp(self._hlc_now() / 1000, UTC),
            ward_code=ward_code,
            data=data,
            attachments=list(attachments),
            deprecated_id=deprecated_id,
            entities=list(entities),
        )
        self._queue("submission", submission=submission)
        return instance_id

    def resolve(
        self, conflict_id: str, *, choice: int | None = None, value: Any | UnsetType = UNSET
    ) -> str:
        """Queue a supervisor's resolution (a candidate index, or a value); returns its id."""
        resolution_id = self.new_id()
        self._queue(
            "resolve",
            resolve=Resolve(
                conflict_id=conflict_id, resolution_id=resolution_id, choice=choice, value=value
            ),
        )
        return resolution_id

    def _queue(
        self,
        kind: Literal["submission", "resolve"],
        *,
        submission: Submission | None = None,
        resolve: Resolve | None = None,
    ) -> Op:
        stream = self._stream
        with self._transaction() as db:
            op_seq = int(self._meta(f"next_op_seq:{stream}") or 1)
            op = Op(
                op_seq=op_seq,
                op_id=self.new_id(),
                hlc=self._clock.send(),
                kind=kind,
                submission=submission,
                resolve=resolve,
            )
            db.execute(
                "INSERT INTO outbox (user_id, op_seq, op) VALUES (?, ?, ?)",
                (stream, op_seq, encode(op).decode()),
            )
            self._set_meta(f"next_op_seq:{stream}", str(op_seq + 1))
            self._set_meta("hlc_last", self._clock.last)
            for change in submission.entities if submission else ():
                self._overlay(change, op_seq)
        return op

    def _overlay(self, change: EntityChange, op_seq: int) -> None:
        row = self._db.execute(
            "SELECT local FROM entities WHERE id = ?", (change.entity_id,)
        ).fetchone()
        if row is None:
            self._db.execute(
                "INSERT INTO entities (id, list) VALUES (?, ?)", (change.entity_id, change.list)
            )
        local = json.loads(row[0]) if row and row[0] else {"properties": {}}
        local["properties"].update(change.properties)
        if change.label is not None:
            local["label"] = change.label
        if change.action in ("delete", "undelete"):
            local["deleted"] = change.action == "delete"
        self._db.execute(
            "UPDATE entities SET local = ?, local_op_seq = ? WHERE id = ?",
            (json.dumps(local), op_seq, change.entity_id),
        )

    # ------------------------------------------------------------------------------------------
    # Reading the local store

    def entity(self, list_name: str, entity_id: str) -> LocalEntity | None:
        row = self._db.execute(
            SELECT_ENTITIES + " WHERE id = ? AND list = ?",
            (entity_id, list_name),
        ).fetchone()
        return None if row is None else _local_entity(row)

    def entities(self, list_name: str | None = None) -> list[LocalEntity]:
        """Every record on the device (tombstones included: see `LocalEntity.deleted`)."""
        if list_name is None:
            rows = self._db.execute(SELECT_ENTITIES + " ORDER BY id")
        else:
            rows = self._db.execute(SELECT_ENTITIES + " WHERE list = ? ORDER BY id", (list_name,))
        return [_local_entity(row) for row in rows]

    def pending_ops(self) -> list[Op]:
        """Ops the server has not confirmed yet, in op_seq order (what the next push sends)."""
        if self.user is None:
            return []
        rows = self._db.execute(
            "SELECT op FROM outbox WHERE user_id = ? AND op_seq > ? ORDER BY op_seq",
            (self._stream, self._pushed_through()),
        )
        return [msgspec.json.decode(row[0], type=Op) for row in rows]

    def outbox(self) -> list[OutboxEntry]:
        """Every op ever written on this device (by any user), with the server's result once known."""
        rows = self._db.execute("SELECT op, state, result FROM outbox ORDER BY rowid")
        return [
            OutboxEntry(
                op=msgspec.json.decode(op, type=Op),
                state=state,
                result=msgspec.json.decode(result, type=OpResult) if result else None,
            )
            for op, state, result in rows
        ]

    def conflicts(self, status: str | None = None) -> list[ConflictRecord]:
        """Conflicts pulled so far (supervisors and admins receive them)."""
        records = [
            msgspec.json.decode(row[0], type=ConflictRecord)
            for row in self._db.execute("SELECT record FROM conflicts ORDER BY id")
        ]
        return [r for r in records if status is None or r.status == status]

    def forms(self) -> dict[str, FormChangeOut]:
        rows = self._db.execute("SELECT form_id, version, state, hash FROM forms")
        return {
            form_id: FormChangeOut(form_id=form_id, version=version, state=state, hash=hash_)
            for form_id, version, state, hash_ in rows
        }

    # ------------------------------------------------------------------------------------------
    # Push

    async def push(self) -> PushReport:
        """Send the outbox from the op after the last one the server confirmed, in batches."""
        report = PushReport()
        async with self._push_lock:
            skew_retried = False
            while True:
                pushed = self._pushed_through()
                report.last_op_seq = pushed
                rows = self._db.execute(
                    "SELECT op FROM outbox WHERE user_id = ? AND op_seq > ? ORDER BY op_seq LIMIT ?",
                    (self._stream, pushed, self.push_batch),
                ).fetchall()
                if not rows:
                    return report
                ops = [msgspec.json.decode(row[0], type=Op) for row in rows]
                request = PushRequest(protocol=1, device_id=self.device_id, ops=ops)
                report.sent += len(ops)
                report.requests += 1
                try:
                    response = await self._request(
                        "POST", f"{API}/sync/push", content=self._encode(request)
                    )
                except SyncError as error:
                    if error.instance_code != "clock_skew" or skew_retried:
                        raise
                    self._correct_clock(error.problem.get("server_time"))
                    skew_retried = True
                    continue
                body: PushResponse = self._decode(response, PushResponse)
                self._record_push(body, report)
                if body.last_op_seq == pushed and not body.results:
                    # Nothing moved although the server is at `pushed`: do not spin.
                    raise SyncError("the server applied none of the ops", code="push_stalled")

    def _record_push(self, body: PushResponse, report: PushReport) -> None:
        stream = self._stream
        with self._transaction() as db:
            for result in body.results:
                if result.status == "duplicate":
                    report.duplicates += 1
                elif result.status == "applied":
                    report.applied += 1
                else:
                    report.rejected += 1
                state = "rejected" if _was_rejected(result) else "applied"
                db.execute(
                    "UPDATE outbox SET state = ?, result = ? WHERE user_id = ? AND op_seq = ?",
                    (state, encode(result).decode(), stream, result.op_seq),
                )
            # A gap (server behind the device) makes the next batch start at its last + 1.
            self._set_meta(f"pushed_through:{stream}", str(body.last_op_seq))
            self._learn_time(body.server_hlc)
        report.last_op_seq = body.last_op_seq

    def _learn_time(self, server_hlc: str) -> None:
        """Adopt the server's wall clock as offset, and let the HLC see the server's timestamp."""
        self._set_meta("clock_offset_ms", str(wall_ms(server_hlc) - self.now_ms()))
        self._clock.receive(server_hlc)
        self._set_meta("hlc_last", self._clock.last)

    def _correct_clock(self, server_time: Any) -> None:
        """After `clock_skew`: take the server's time, restart the HLC from it, and re-stamp the
        unconfirmed ops that are too far ahead (the server applied none of them, or will answer
        `duplicate` from its stored result, which does not look at the op's HLC)."""
        if isinstance(server_time, str):
            server_ms = int(datetime.fromisoformat(server_time).timestamp() * 1000)
        else:
            server_ms = self.now_ms() + self.clock_offset_ms
        with self._transaction() as db:
            self._set_meta("clock_offset_ms", str(server_ms - self.now_ms()))
            self._clock = Clock(
                self._node, self._hlc_now, last=HLC(server_ms, 0, self._node).format()
            )
            stream, pushed = self._stream, self._pushed_through()
            for op_seq, text in db.execute(
                "SELECT op_seq, op FROM outbox WHERE user_id = ? AND op_seq > ? ORDER BY op_seq",
                (stream, pushed),
            ).fetchall():
                op = msgspec.json.decode(text, type=Op)
                if wall_ms(op.hlc) - server_ms > DEFAULT_MAX_SKEW_MS // 2:
                    op = msgspec.structs.replace(op, hlc=self._clock.send())
                    db.execute(
                        "UPDATE outbox SET op = ? WHERE user_id = ? AND op_seq = ?",
                        (encode(op).decode(), stream, op_seq),
                    )
            self._set_meta("hlc_last", self._clock.last)

    # ------------------------------------------------------------------------------------------
    # Pull

    async def pull(self) -> PullReport:
        """Fetch every page after the stored cursor; each page and its cursor commit together."""
        report = PullReport()
        async with self._pull_lock:
            while True:
                request = PullRequest(
                    protocol=1,
                    device_id=self.device_id,
                    cursor=self.cursor,
                    max_items=self.pull_page_items,
                )
                response = await self._request(
                    "POST", f"{API}/sync/pull", content=self._encode(request)
                )
                page: PullResponse = self._decode(response, PullResponse)
                self._apply_page(page, report)
                if not page.has_more:
                    return report

    def reset(self) -> None:
        """Forget the cursor and re-snapshot on the next pull. The outbox and pending edits stay;
        copies the snapshot does not confirm are dropped when it completes."""
        with self._transaction() as db:
            db.execute("DELETE FROM meta WHERE key = 'cursor'")
            db.execute("UPDATE entities SET stale = 1")

    def _apply_page(self, page: PullResponse, report: PullReport) -> None:
        report.pages += 1
        report.changes += len(page.changes)
        with self._transaction() as db:
            if page.reset is not None:
                # The server restarted us from a snapshot: whatever it does not resend is gone.
                report.reset = page.reset
                db.execute("UPDATE entities SET stale = 1")
            for change in page.changes:
                if isinstance(change, EntityChangeOut):
                    self._apply_entity(change, report)
                elif isinstance(change, ConflictChangeOut):
                    self._apply_conflict(change)
                elif isinstance(change, FormChangeOut):
                    db.execute(
                        "INSERT OR REPLACE INTO forms VALUES (?, ?, ?, ?)",
                        (change.form_id, change.version, change.state, change.hash),
                    )
            # Overlays whose ops are all reflected in the state served so far are done.
            db.execute(
                "UPDATE entities SET local = NULL, local_op_seq = NULL WHERE local_op_seq <= ?",
                (page.acked_through,),
            )
            self._clear_confirmed_overlays()
            # A local create the server never confirmed in scope (rejected, or out of scope).
            db.execute("DELETE FROM entities WHERE version = 0 AND local IS NULL")
            if not page.has_more:
                db.execute("DELETE FROM entities WHERE stale = 1 AND local IS NULL")
                db.execute("UPDATE entities SET stale = 0")
            self._set_meta("cursor", page.cursor)
            self._set_meta("acked_through", str(page.acked_through))
            self._learn_time(page.server_hlc)
        report.acked_through = page.acked_through

    def _clear_confirmed_overlays(self) -> None:
        """Also done: an overlay whose last op the server answered, when the copy is at least
        the version that op produced (or the op was rejected). `acked_through` alone can lag
        behind: see docs/protocol.md, "acked_through"."""
        rows = self._db.execute(
            "SELECT e.id, e.version, o.state, o.result FROM entities e "
            "JOIN outbox o ON o.op_seq = e.local_op_seq AND o.user_id = ? "
            "WHERE o.result IS NOT NULL",
            (self._stream,),
        ).fetchall()
        for entity_id, version, state, result_text in rows:
            result = msgspec.json.decode(result_text, type=OpResult)
            produced = [r.version for r in result.entities if r.entity_id == entity_id]
            if state == "rejected" or (produced and produced[-1] <= version) or not produced:
                self._db.execute(
                    "UPDATE entities SET local = NULL, local_op_seq = NULL WHERE id = ?",
                    (entity_id,),
                )

    def _apply_entity(self, change: EntityChangeOut, report: PullReport) -> None:
        if change.evict:
            # Out of scope now: drop the copy (not a delete). Queued ops stay in the outbox.
            self._db.execute("DELETE FROM entities WHERE id = ?", (change.id,))
            report.evicted += 1
            return
        row = self._db.execute("SELECT version FROM entities WHERE id = ?", (change.id,)).fetchone()
        if row is not None and change.version <= row[0]:
            self._db.execute("UPDATE entities SET stale = 0 WHERE id = ?", (change.id,))
            return  # a replay or an older state: the local copy is as new or newer
        values = (
            change.list,
            change.version,
            int(change.deleted),
            change.label,
            json.dumps(change.properties),
            json.dumps(change.conflicted),
            change.id,
        )
        if row is None:
            self._db.execute(
                "INSERT INTO entities (list, version, deleted, label, properties, conflicted, id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                values,
            )
        else:
            self._db.execute(
                "UPDATE entities SET list = ?, version = ?, deleted = ?, label = ?, "
                "properties = ?, conflicted = ?, stale = 0 WHERE id = ?",
                values,
            )
        report.applied += 1

    def _apply_conflict(self, change: ConflictChangeOut) -> None:
        if change.evict:  # the conflict's ward left this user's scope
            self._db.execute("DELETE FROM conflicts WHERE id = ?", (change.id,))
            return
        row = self._db.execute(
            "SELECT version FROM conflicts WHERE id = ?", (change.id,)
        ).fetchone()
        if row is not None and change.version <= row[0]:
            return
        fields = msgspec.structs.asdict(change)
        fields.pop("evict")
        record = ConflictRecord(**fields)
        self._db.execute(
            "INSERT OR REPLACE INTO conflicts VALUES (?, ?, ?)",
            (change.id, change.version, encode(record).decode()),
        )

    # ------------------------------------------------------------------------------------------

    async def sync(self) -> tuple[PushReport, PullReport]:
        """Push the outbox, then pull every page (so the pull reflects what was just pushed)."""
        pushed = await self.push()
        pulled = await self.pull()
        return pushed, pulled


def _local_entity(row: tuple[Any, ...]) -> LocalEntity:
    list_name, entity_id, version, deleted, label, properties, conflicted, local = row
    shown = json.loads(properties)
    is_deleted = bool(deleted)
    if local:
        overlay = json.loads(local)
        shown.update(overlay["properties"])
        label = overlay.get("label", label)
        is_deleted = overlay.get("deleted", is_deleted)
    return LocalEntity(
        list=list_name,
        id=entity_id,
        version=version,
        deleted=is_deleted,
        label=label,
        properties=shown,
        conflicted=json.loads(conflicted),
        pending=bool(local),
    )


def _was_rejected(result: OpResult) -> bool:
    """A `duplicate` carries the stored result of the op's first processing with its status
    replaced; a rejected op is the one with errors and no entity results."""
    if result.status == "duplicate":
        return bool(result.errors) and not result.entities
    return result.status == "rejected"


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
