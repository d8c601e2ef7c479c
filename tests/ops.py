"""One factory for protocol ops: the inspection submission that carries one entity change.

The sync tests, their model device and the benchmarks all push this op; they differ only in
which change it carries, so they build it here.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from forms.programme import form_version, inspection_answers

FORM_VERSION = form_version("inspection")  # the programme's inspection form, published at startup
LIST = "establishments"
INSPECTION_DATA = inspection_answers()


def hlc(offset_ms: int = 0, node: str = "dev") -> str:
    return f"{int(time.time() * 1000) + offset_ms:013d}:00000:{node}"


def inspection_op(
    op_seq: int,
    *,
    node: str,
    ward: str,
    entity_id: str,
    action: str = "create",
    base_version: int = 0,
    properties: dict[str, Any] | None = None,
    base_properties: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
    attachments: list[dict[str, Any]] | None = None,
    form_version: str = FORM_VERSION,
) -> dict[str, Any]:
    """A submission op of the `inspection` form in `ward` carrying one `establishments` change."""
    change: dict[str, Any] = {
        "list": LIST,
        "entity_id": entity_id,
        "action": action,
        "base_version": base_version,
        "properties": properties or {},
    }
    if base_properties is not None:
        change["base_properties"] = base_properties
    return {
        "op_seq": op_seq,
        "op_id": str(uuid.uuid4()),
        "hlc": hlc(node=node),
        "kind": "submission",
        "submission": {
            "instance_id": str(uuid.uuid4()),
            "form_id": "inspection",
            "form_version": form_version,
            "captured_at": "2026-02-20T03:00:00Z",
            "ward_code": ward,
            "data": {"ward_code": ward, **INSPECTION_DATA, **(data or {})},
            "attachments": attachments or [],
            "entities": [change],
        },
    }
