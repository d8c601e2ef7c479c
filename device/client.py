"""The reference device client: what a tablet does to sync (PROTOCOL.md "Devices' side").

It is used by the tests, the benchmarks and the simulator, and it is the worked example for the
tablet app's developers, so it favours plain code over cleverness. One `SyncClient` is one device:

    client = SyncClient(http, device_id=device_id, store_path="device.db")
    await client.login("lan.inspector", password)
    entity_id, change = client.create_entity("establishments", {"business_name": "Quán X"})
    client.submit("inspection", "2026113001", "00070", data, entities=[change])
    await client.sync()                       # push the outbox, then pull every page

The local store is `device/store.py`, the HTTP with retries and tokens `device/transport.py`.

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
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
import msgspec
from msgspec import UNSET, UnsetType

from device.store import DeviceStore, LocalEntity, OutboxEntry
from device.transport import API, Sleep, SyncError, SyncUnavailable, Transport
from schemas.errors import ErrorCode
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
        self.device_id = device_id
        self.now_ms = now_ms  # the device's own clock
        self.rng = rng or random.Random()  # one source for ids and backoff jitter
        self.push_batch = push_batch
        self.pull_page_items = pull_page_items
        self._push_lock = asyncio.Lock()  # one push in flight
        self._pull_lock = asyncio.Lock()
        self.store = DeviceStore(store_path)
        self.transport = Transport(
            http,
            self.store,
            save_tokens=self._store_tokens,
            sleep=sleep,
            rng=self.rng,
            max_attempts=max_attempts,
            backoff_base=backoff_base,
            backoff_cap=backoff_cap,
            msgpack=msgpack,
        )
        stored_device = self.store.meta("device_id")
        if stored_device is None:
            with self.store.transaction():
                self.store.set_meta("device_id", device_id)
        elif stored_device != device_id:
            raise SyncError(
                f"this store belongs to device {stored_device}",
                code=ErrorCode.STORE_DEVICE_MISMATCH,
            )
        self._clock = Clock(self._node, self._hlc_now, last=self.store.meta("hlc_last"))

    def close(self) -> None:
        self.store.close()

    @property
    def _node(self) -> str:
        return self.device_id  # a UUID fits the HLC node alphabet

    @property
    def clock_offset_ms(self) -> int:
        return int(self.store.meta("clock_offset_ms") or 0)

    def _hlc_now(self) -> int:
        return self.now_ms() + self.clock_offset_ms

    @property
    def cursor(self) -> str | None:
        return self.store.meta("cursor")

    @property
    def user(self) -> dict[str, Any] | None:
        """The logged-in user as the server described it: {id, username, role, wards}."""
        text = self.store.meta("user")
        return None if text is None else dict(json.loads(text))

    # ------------------------------------------------------------------------------------------
    # Identity

    @property
    def _stream(self) -> str:
        """The logged-in user's id: their op stream on this tablet."""
        user = self.user
        if user is None:
            raise SyncError("log in first", code=ErrorCode.NOT_LOGGED_IN)
        return str(user["id"])

    def _pushed_through(self) -> int:
        return int(self.store.meta(f"pushed_through:{self._stream}") or 0)

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
                    code=ErrorCode.UNSENT_OPS_OF_OTHER_USER,
                )
        body = {
            "username": username,
            "password": password,
            "device_id": self.device_id,
            "device_name": device_name,
        }
        response = await self.transport.request(
            "POST", f"{API}/auth/login", json_body=body, auth=False
        )
        return self._store_tokens(response.json())

    def _store_tokens(self, pair: dict[str, Any]) -> dict[str, Any]:
        with self.store.transaction():
            previous = self.user
            if previous is not None and previous["id"] != pair["user"]["id"]:
                # The previous user's ops are all confirmed (login checked): their overlays
                # would be compared with the new user's op_seq; the next pull brings the copies.
                self.store.clear_all_overlays()
            self.store.set_meta("access_token", pair["access_token"])
            self.store.set_meta("refresh_token", pair["refresh_token"])
            self.store.set_meta("user", json.dumps(pair["user"]))
        return dict(pair["user"])

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
                f"no {list_name} record {entity_id} on this device", code=ErrorCode.ENTITY_UNKNOWN
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
        with self.store.transaction():
            op_seq = int(self.store.meta(f"next_op_seq:{stream}") or 1)
            op = Op(
                op_seq=op_seq,
                op_id=self.new_id(),
                hlc=self._clock.send(),
                kind=kind,
                submission=submission,
                resolve=resolve,
            )
            self.store.add_op(stream, op)
            self.store.set_meta(f"next_op_seq:{stream}", str(op_seq + 1))
            self.store.set_meta("hlc_last", self._clock.last)
            for change in submission.entities if submission else ():
                self._overlay(change, op_seq)
        return op

    def _overlay(self, change: EntityChange, op_seq: int) -> None:
        """Lay the change over what the device shows until the server confirms it."""
        local = self.store.overlay(change.entity_id)
        if local is None:
            local = {"properties": {}}
        local["properties"].update(change.properties)
        if change.label is not None:
            local["label"] = change.label
        if change.action in ("delete", "undelete"):
            local["deleted"] = change.action == "delete"
        self.store.set_overlay(change.list, change.entity_id, local, op_seq)

    # ------------------------------------------------------------------------------------------
    # Reading the local store

    def entity(self, list_name: str, entity_id: str) -> LocalEntity | None:
        return self.store.entity(list_name, entity_id)

    def entities(self, list_name: str | None = None) -> list[LocalEntity]:
        """Every record on the device (tombstones included: see `LocalEntity.deleted`)."""
        return self.store.entities(list_name)

    def pending_ops(self) -> list[Op]:
        """Ops the server has not confirmed yet, in op_seq order (what the next push sends)."""
        if self.user is None:
            return []
        return self.store.ops_after(self._stream, self._pushed_through())

    def outbox(self) -> list[OutboxEntry]:
        """Every op ever written on this device (by any user), with the server's result once known."""
        return self.store.outbox()

    def conflicts(self, status: str | None = None) -> list[ConflictRecord]:
        """Conflicts pulled so far (supervisors and admins receive them)."""
        return [r for r in self.store.conflicts() if status is None or r.status == status]

    def forms(self) -> dict[str, FormChangeOut]:
        return self.store.forms()

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
                ops = self.store.ops_after(self._stream, pushed, self.push_batch)
                if not ops:
                    return report
                request = PushRequest(protocol=1, device_id=self.device_id, ops=ops)
                report.sent += len(ops)
                report.requests += 1
                try:
                    response = await self.transport.request(
                        "POST", f"{API}/sync/push", content=self.transport.encode(request)
                    )
                except SyncError as error:
                    if error.instance_code != "clock_skew" or skew_retried:
                        raise
                    self._correct_clock(error.problem.get("server_time"))
                    skew_retried = True
                    continue
                body: PushResponse = self.transport.decode(response, PushResponse)
                self._record_push(body, report)
                if body.last_op_seq == pushed and not body.results:
                    # Nothing moved although the server is at `pushed`: do not spin.
                    raise SyncError(
                        "the server applied none of the ops", code=ErrorCode.PUSH_STALLED
                    )

    def _record_push(self, body: PushResponse, report: PushReport) -> None:
        stream = self._stream
        with self.store.transaction():
            for result in body.results:
                if result.status == "duplicate":
                    report.duplicates += 1
                elif result.status == "applied":
                    report.applied += 1
                else:
                    report.rejected += 1
                state: Literal["applied", "rejected"] = (
                    "rejected" if _was_rejected(result) else "applied"
                )
                self.store.record_result(stream, result, state)
            # A gap (server behind the device) makes the next batch start at its last + 1.
            self.store.set_meta(f"pushed_through:{stream}", str(body.last_op_seq))
            self._learn_time(body.server_hlc)
        report.last_op_seq = body.last_op_seq

    def _learn_time(self, server_hlc: str) -> None:
        """Adopt the server's wall clock as offset, and let the HLC see the server's timestamp."""
        self.store.set_meta("clock_offset_ms", str(wall_ms(server_hlc) - self.now_ms()))
        self._clock.receive(server_hlc)
        self.store.set_meta("hlc_last", self._clock.last)

    def _correct_clock(self, server_time: Any) -> None:
        """After `clock_skew`: take the server's time, restart the HLC from it, and re-stamp the
        unconfirmed ops that are too far ahead (the server applied none of them, or will answer
        `duplicate` from its stored result, which does not look at the op's HLC)."""
        if isinstance(server_time, str):
            server_ms = int(datetime.fromisoformat(server_time).timestamp() * 1000)
        else:
            server_ms = self.now_ms() + self.clock_offset_ms
        with self.store.transaction():
            self.store.set_meta("clock_offset_ms", str(server_ms - self.now_ms()))
            self._clock = Clock(
                self._node, self._hlc_now, last=HLC(server_ms, 0, self._node).format()
            )
            stream = self._stream
            for op in self.store.ops_after(stream, self._pushed_through()):
                if wall_ms(op.hlc) - server_ms > DEFAULT_MAX_SKEW_MS // 2:
                    self.store.replace_op(
                        stream, msgspec.structs.replace(op, hlc=self._clock.send())
                    )
            self.store.set_meta("hlc_last", self._clock.last)

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
                response = await self.transport.request(
                    "POST", f"{API}/sync/pull", content=self.transport.encode(request)
                )
                page: PullResponse = self.transport.decode(response, PullResponse)
                self._apply_page(page, report)
                if not page.has_more:
                    return report

    def reset(self) -> None:
        """Forget the cursor and re-snapshot on the next pull. The outbox and pending edits stay;
        copies the snapshot does not confirm are dropped when it completes."""
        with self.store.transaction():
            self.store.delete_meta("cursor")
            self.store.mark_all_stale()

    def _apply_page(self, page: PullResponse, report: PullReport) -> None:
        report.pages += 1
        report.changes += len(page.changes)
        with self.store.transaction():
            if page.reset is not None:
                # The server restarted us from a snapshot: whatever it does not resend is gone.
                report.reset = page.reset
                self.store.mark_all_stale()
            for change in page.changes:
                if isinstance(change, EntityChangeOut):
                    self._apply_entity(change, report)
                elif isinstance(change, ConflictChangeOut):
                    self._apply_conflict(change)
                elif isinstance(change, FormChangeOut):
                    self.store.put_form(change)
            # Overlays whose ops are all reflected in the state served so far are done.
            self.store.clear_overlays_through(page.acked_through)
            self._clear_confirmed_overlays()
            # A local create the server never confirmed in scope (rejected, or out of scope).
            self.store.drop_unconfirmed_creates()
            if not page.has_more:
                self.store.drop_stale_copies()
            self.store.set_meta("cursor", page.cursor)
            self.store.set_meta("acked_through", str(page.acked_through))
            self._learn_time(page.server_hlc)
        report.acked_through = page.acked_through

    def _clear_confirmed_overlays(self) -> None:
        """Also done: an overlay whose last op the server answered, when the copy is at least
        the version that op produced (or the op was rejected). `acked_through` alone can lag
        behind: see docs/protocol.md, "acked_through"."""
        for answered in self.store.answered_overlays(self._stream):
            produced = [
                r.version for r in answered.result.entities if r.entity_id == answered.entity_id
            ]
            if (
                answered.state == "rejected"
                or (produced and produced[-1] <= answered.version)
                or not produced
            ):
                self.store.clear_overlay(answered.entity_id)

    def _apply_entity(self, change: EntityChangeOut, report: PullReport) -> None:
        if change.evict:
            # Out of scope now: drop the copy (not a delete). Queued ops stay in the outbox.
            self.store.drop_entity(change.id)
            report.evicted += 1
            return
        held = self.store.copy_version(change.id)
        if held is not None and change.version <= held:
            self.store.confirm_copy(change.id)
            return  # a replay or an older state: the local copy is as new or newer
        self.store.put_copy(change, held=held is not None)
        report.applied += 1

    def _apply_conflict(self, change: ConflictChangeOut) -> None:
        if change.evict:  # the conflict's ward left this user's scope
            self.store.drop_conflict(change.id)
            return
        held = self.store.conflict_version(change.id)
        if held is not None and change.version <= held:
            return
        fields = msgspec.structs.asdict(change)
        fields.pop("evict")
        self.store.put_conflict(ConflictRecord(**fields))

    # ------------------------------------------------------------------------------------------

    async def sync(self) -> tuple[PushReport, PullReport]:
        """Push the outbox, then pull every page (so the pull reflects what was just pushed)."""
        pushed = await self.push()
        pulled = await self.pull()
        return pushed, pulled


def _was_rejected(result: OpResult) -> bool:
    """A `duplicate` carries the stored result of the op's first processing with its status
    replaced; a rejected op is the one with errors and no entity results."""
    if result.status == "duplicate":
        return bool(result.errors) and not result.entities
    return result.status == "rejected"
