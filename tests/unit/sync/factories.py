"""Shared test data for the merge engine tests: one list with every policy, and small builders."""

from __future__ import annotations

from typing import Any

from schemas.sync import EntityChange
from sync.hlc import HLC
from sync.merge import EntityListDef, Policy, PropertyDef, WriteContext

RISK_ORDER = ("low", "medium", "high")
ESTABLISHMENTS = EntityListDef(
    name="establishments",
    properties={
        "ward_code": PropertyDef(),
        "name": PropertyDef(),
        "risk_class": PropertyDef(type="select_one", policy=Policy.RANK, rank_order=RISK_ORDER),
        "owner_phone": PropertyDef(policy=Policy.MANUAL),
        "services": PropertyDef(type="select_multiple", policy=Policy.SET),
        "visits": PropertyDef(type="int", policy=Policy.COUNTER),
    },
    natural_key=("ward_code", "name"),
)
POLICIES = {name: pdef.policy for name, pdef in ESTABLISHMENTS.properties.items()}

ENTITY_ID = "0190a1b2-0000-7000-8000-00000000e001"
OTHER_ID = "0190a1b2-0000-7000-8000-00000000e002"
WARD = "00004"


def ctx(
    device: str, op_seq: int, wall: int, counter: int = 0, node: str | None = None
) -> WriteContext:
    return WriteContext(
        device_id=device,
        user_id=f"user-{device}",
        op_seq=op_seq,
        hlc=HLC(wall, counter, node or device).format(),
    )


def change(
    action: str,
    base_version: int = 0,
    properties: dict[str, Any] | None = None,
    base_properties: dict[str, Any] | None = None,
    label: str | None = None,
    entity_id: str = ENTITY_ID,
) -> EntityChange:
    return EntityChange(
        list="establishments",
        entity_id=entity_id,
        action=action,  # type: ignore[arg-type]
        base_version=base_version,
        label=label,
        properties=properties or {},
        base_properties=base_properties,
    )


BASE_PROPERTIES: dict[str, Any] = {
    "ward_code": WARD,
    "name": "Karaoke Sao Mai",
    "risk_class": "medium",
    "owner_phone": "0900000001",
    "services": ["karaoke", "bar"],
    "visits": 3,
}


def create_change(properties: dict[str, Any] | None = None, **kwargs: Any) -> EntityChange:
    return change("create", 0, dict(properties or BASE_PROPERTIES), label="Sao Mai", **kwargs)
