"""Building protocol messages for the sync tests (raw HTTP, no reference client)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.helpers import Session
from tests.ops import hlc, inspection_op


@dataclass
class Device:
    """A minimal device: keeps its op_seq and cursor, builds ops."""

    http: httpx.AsyncClient
    session: Session
    next_seq: int = 1
    cursor: str | None = None
    store: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        return self.session.headers

    def inspection(
        self, ward: str, *, entity_id: str | None = None, **change: Any
    ) -> dict[str, Any]:
        """The next op: an inspection in `ward`; `change` as `tests.ops.inspection_op` takes it."""
        op = inspection_op(
            self.next_seq,
            node=self.session.device_id[:8],
            ward=ward,
            entity_id=entity_id or str(uuid.uuid4()),
            **change,
        )
        self.next_seq += 1
        return op

    def submission(
        self,
        form_id: str,
        ward: str,
        data: dict[str, Any],
        *,
        version: str = "1",
        captured_at: str = "2026-02-20T03:00:00Z",
    ) -> dict[str, Any]:
        """The next op: a submission of any form, without entity changes."""
        op = {
            "op_seq": self.next_seq,
            "op_id": str(uuid.uuid4()),
            "hlc": hlc(node=self.session.device_id[:8]),
            "kind": "submission",
            "submission": {
                "instance_id": str(uuid.uuid4()),
                "form_id": form_id,
                "form_version": version,
                "captured_at": captured_at,
                "ward_code": ward,
                "data": data,
            },
        }
        self.next_seq += 1
        return op

    async def push(self, *ops: dict[str, Any]) -> httpx.Response:
        return await self.http.post(
            "/api/v1/sync/push",
            json={"protocol": 1, "device_id": self.session.device_id, "ops": list(ops)},
            headers=self.headers,
        )

    async def pull(self, **extra: Any) -> dict[str, Any]:
        response = await self.http.post(
            "/api/v1/sync/pull",
            json={
                "protocol": 1,
                "device_id": self.session.device_id,
                "cursor": self.cursor,
                **extra,
            },
            headers=self.headers,
        )
        assert response.status_code == 200, response.text
        body = response.json()
        self.cursor = body["cursor"]
        for change in body["changes"]:
            if change["type"] == "entity":
                if change["evict"]:
                    self.store.pop(change["id"], None)
                elif change["version"] > self.store.get(change["id"], {}).get("version", 0):
                    self.store[change["id"]] = change
        return body

    async def pull_all(self) -> list[dict[str, Any]]:
        changes = []
        while True:
            body = await self.pull()
            changes.extend(body["changes"])
            if not body["has_more"]:
                return changes
