"""A model device and a loop bridge for the property-based sync tests.

Hypothesis drives tests synchronously, but the app's database pool (PostgreSQL) lives in the
session's event loop. So the hypothesis part runs in a worker thread (`await asyncio.to_thread`)
and every call to the app is a coroutine sent back to the session loop with `LoopBridge.run`,
which the awaiting test leaves free to serve it.

`ModelDevice` follows PROTOCOL.md "Devices' side": a local change and its outbox op are written
together, `op_seq` is never reused, the whole unacknowledged outbox is resent, `base_version` comes
from the server copy the edit started from and is never rewritten, pulled records are applied only
if newer, the cursor is kept page by page. The device keeps the server's state (`server_copy`,
from pulls) apart from its own pending edits (the outbox), so convergence compares like with like.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import httpx

from tests.helpers import Session
from tests.ops import inspection_op

T = TypeVar("T")
Fault = Literal["none", "request_lost", "response_lost", "duplicated", "concurrent_duplicate"]
FAULTS: tuple[Fault, ...] = (
    "none",
    "request_lost",
    "response_lost",
    "duplicated",
    "concurrent_duplicate",
)


class LoopBridge:
    """Run coroutines on the session loop from the hypothesis thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=120)


@dataclass
class Write:
    """One entity change a device sent, and what the server said about it (once known)."""

    device_id: str
    user_id: str  # op_seq counts per (device, user): the pair names the op stream
    op_seq: int
    entity_id: str
    action: str
    properties: dict[str, Any]
    base_version: int
    base_properties: dict[str, Any] = field(default_factory=dict)
    delivered_tick: int | None = None  # the step at which it first reached the server
    status: str | None = None  # entity status from the op result
    version: int | None = None  # entity version after the op


@dataclass
class ModelDevice:
    http: httpx.AsyncClient
    session: Session
    role: str
    next_seq: int = 1
    outbox: list[dict[str, Any]] = field(default_factory=list)
    last_op_seq: int = 0
    cursor: str | None = None
    server_copy: dict[str, dict[str, Any]] = field(default_factory=dict)  # as pulled
    local: dict[str, dict[str, Any]] = field(default_factory=dict)  # pulled + own edits
    conflicts: dict[str, dict[str, Any]] = field(default_factory=dict)
    results: dict[int, dict[str, Any]] = field(default_factory=dict)
    writes: dict[int, Write] = field(default_factory=dict)

    @property
    def device_id(self) -> str:
        return self.session.device_id

    @property
    def headers(self) -> dict[str, str]:
        return self.session.headers

    # ---- local edits ---------------------------------------------------------------------

    def local_view(self, entity_id: str) -> dict[str, Any] | None:
        """What the device shows: the record as it last pulled it, with its own edits on top."""
        return self.local.get(entity_id)

    def _edit_locally(self, entity_id: str, action: str, properties: dict[str, Any]) -> None:
        view = self.local.setdefault(
            entity_id, {"id": entity_id, "version": 0, "deleted": False, "properties": {}}
        )
        view["properties"].update(properties)
        if action == "delete":
            view["deleted"] = True

    def edit(
        self,
        ward: str,
        entity_id: str,
        action: str,
        properties: dict[str, Any],
        *,
        base_version: int = 0,
        base_properties: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Write a local change and its outbox op together (one op = one inspection)."""
        op = inspection_op(
            self.next_seq,
            node=self.device_id[:8],
            ward=ward,
            entity_id=entity_id,
            action=action,
            base_version=base_version,
            properties=properties,
            base_properties=base_properties,
        )
        self.writes[self.next_seq] = Write(
            self.device_id,
            self.session.user["id"],
            self.next_seq,
            entity_id,
            action,
            dict(properties),
            base_version,
            dict(base_properties or {}),
        )
        self.next_seq += 1
        self.outbox.append(op)
        self._edit_locally(entity_id, action, properties)
        return op

    def create(self, ward: str, properties: dict[str, Any]) -> str:
        entity_id = str(uuid.uuid4())
        self.edit(ward, entity_id, "create", {**properties, "ward_code": ward})
        return entity_id

    def update(self, entity_id: str, properties: dict[str, Any]) -> bool:
        view = self.local_view(entity_id)
        if view is None:
            return False
        base = {name: view["properties"].get(name) for name in properties}
        self.edit(
            view["properties"]["ward_code"],
            entity_id,
            "update",
            properties,
            base_version=view["version"],
            base_properties=base,
        )
        return True

    def delete(self, entity_id: str) -> bool:
        view = self.local_view(entity_id)
        if view is None or view["deleted"]:
            return False
        ward = view["properties"]["ward_code"]
        self.edit(ward, entity_id, "delete", {}, base_version=view["version"])
        return True

    # ---- push ----------------------------------------------------------------------------

    async def _send(self, ops: list[dict[str, Any]]) -> dict[str, Any]:
        response = await self.http.post(
            "/api/v1/sync/push",
            json={"protocol": 1, "device_id": self.device_id, "ops": ops},
            headers=self.headers,
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def _learn(self, body: dict[str, Any]) -> None:
        for result in body["results"]:
            seq = result["op_seq"]
            known = self.results.get(seq)
            if known is not None:
                # A replay answers with the stored result of the first application.
                assert result["status"] == "duplicate", (known, result)
                assert result["entities"] == known["entities"], (known, result)
                assert result["errors"] == known["errors"], (known, result)
                continue
            self.results[seq] = result
            write = self.writes[seq]
            if result["entities"]:
                write.status = result["entities"][0]["status"]
                write.version = result["entities"][0]["version"]
            else:
                write.status = "rejected"
        self.last_op_seq = max(self.last_op_seq, body["last_op_seq"])
        self.outbox = [op for op in self.outbox if op["op_seq"] > self.last_op_seq]

    async def push(self, fault: Fault = "none", *, tick: int = 0) -> None:
        ops = list(self.outbox)
        if not ops or fault == "request_lost":
            return
        for op in ops:
            write = self.writes[op["op_seq"]]
            write.delivered_tick = write.delivered_tick if write.delivered_tick else tick
        if fault == "response_lost":
            await self._send(ops)  # committed, but the device never learns it
        elif fault == "duplicated":
            self._learn(await self._send(ops))
            self._learn(await self._send(ops))
        elif fault == "concurrent_duplicate":
            first, second = await asyncio.gather(self._send(ops), self._send(ops))
            # Whichever was serialised first applied the ops; learn from it first.
            ordered = sorted(
                (first, second), key=lambda b: [r["status"] == "duplicate" for r in b["results"]]
            )
            for body in ordered:
                self._learn(body)
        else:
            self._learn(await self._send(ops))

    async def push_all(self) -> None:
        while self.outbox:
            before = self.last_op_seq
            await self.push(tick=1_000_000)
            assert self.last_op_seq > before, "the server made no progress on this outbox"

    # ---- pull ----------------------------------------------------------------------------

    def _apply(self, change: dict[str, Any]) -> None:
        if change["type"] == "entity":
            if change["evict"]:
                self.server_copy.pop(change["id"], None)
                self.local.pop(change["id"], None)
                return
            if change["version"] > self.server_copy.get(change["id"], {}).get("version", 0):
                self.server_copy[change["id"]] = change
            if change["version"] > self.local.get(change["id"], {}).get("version", 0):
                # Newer than what the local copy started from: take it (base_version moves on
                # only here, for edits made from now on).
                self.local[change["id"]] = {
                    "id": change["id"],
                    "version": change["version"],
                    "deleted": change["deleted"],
                    "properties": dict(change["properties"]),
                }
        elif change["type"] == "conflict":
            if change.get("evict"):
                self.conflicts.pop(change["id"], None)
            elif change["version"] > self.conflicts.get(change["id"], {}).get("version", 0):
                self.conflicts[change["id"]] = change

    async def pull_page(self, max_items: int = 500) -> dict[str, Any]:
        response = await self.http.post(
            "/api/v1/sync/pull",
            json={
                "protocol": 1,
                "device_id": self.device_id,
                "cursor": self.cursor,
                "max_items": max_items,
            },
            headers=self.headers,
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body.get("reset"):
            self.server_copy.clear()
            self.local.clear()
            self.conflicts.clear()
        for change in body["changes"]:
            self._apply(change)
        self.cursor = body["cursor"]  # saved with the page it came with
        return body

    async def pull_all(self, max_items: int = 500) -> list[dict[str, Any]]:
        changes: list[dict[str, Any]] = []
        for _ in range(1000):
            body = await self.pull_page(max_items)
            changes.extend(body["changes"])
            if not body["has_more"]:
                return changes
        raise AssertionError("pull never finished")


def entity_view(change: dict[str, Any]) -> dict[str, Any]:
    """The parts of an entity a device and the server must agree on."""
    return {
        "list": change["list"],
        "version": change["version"],
        "deleted": change["deleted"],
        "label": change.get("label"),
        "properties": change["properties"],
        "conflicted": sorted(change.get("conflicted", [])),
    }


def differences(local: dict[str, Any], expected: dict[str, Any]) -> dict[str, Any]:
    """Per record id: (device's copy, server's) where they differ; for assertion messages."""
    return {
        key: (local.get(key), expected.get(key))
        for key in sorted(set(local) | set(expected))
        if local.get(key) != expected.get(key)
    }
