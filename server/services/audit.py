"""The append-only audit trail: who did what, when, to which target."""

from __future__ import annotations

from typing import Any

from server.auth import Principal
from server.db.json_columns import from_json, to_json
from server.db.tables import AuditLog


async def record(
    actor: Principal | None,
    action: str,
    *,
    target_type: str = "",
    target_id: str = "",
    details: dict[str, Any] | None = None,
    address: str = "",
    actor_username: str = "",
) -> None:
    """Write one audit row. Call it inside the transaction of the action it records."""
    await AuditLog.insert(
        AuditLog(
            actor_id=actor.user_id if actor else None,
            actor_username=actor.username if actor else actor_username,
            action=action,
            target_type=target_type,
            target_id=target_id,
            details=to_json(details or {}),
            address=address,
        )
    )


async def recent(limit: int = 100) -> list[dict[str, Any]]:
    rows = await AuditLog.select().order_by(AuditLog.id, ascending=False).limit(limit)
    for row in rows:
        row["details"] = from_json(row["details"])
    return rows
