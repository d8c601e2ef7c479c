"""What the input guard costs next to decoding: a 5 MB push of 500 ops, JSON and msgpack.

    PYTHONPATH=. .venv/bin/python -m bench.bench_input_guard

In-process (no server, no database): the guard's scans and msgspec's typed decode of the same
bytes, best of --repeat runs each. Also the slow path (a body holding one control character is
decoded once more to name the field) and hostile bodies (how long a refusal takes).
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable
from typing import Any

import msgspec

from schemas.sync import PushRequest
from server.api.input_guard import check_body, json_scan, msgpack_scan

# Free text as typed: quotes, tabs and line breaks are escapes in JSON; and the same without them.
NOTE = (
    "Cơ sở karaoke hoạt động quá giờ quy định; chủ cơ sở cam kết khắc phục.\n"
    'Nhân viên "lễ tân" chưa có hợp đồng lao động.\tĐã lập biên bản [số 12/BB].\r\n'
)
PLAIN_NOTE = NOTE.replace("\n", " ").replace("\t", " ").replace("\r", " ").replace('"', "'")


def push_body(ops: int, op_bytes: int, note: str = NOTE) -> dict[str, Any]:
    """A push of `ops` inspection submissions of about `op_bytes` JSON bytes each."""

    def op(seq: int) -> dict[str, Any]:
        data: dict[str, Any] = {f"q{i:02d}": i for i in range(30)}
        data.update(ward_code="00070", est_name=f"Karaoke Hoa Mai {seq}", kind="karaoke")
        data["violations"] = ["no_licence", "opening_hours"]
        data["staff"] = [{"name": f"Nguyễn Văn {k}", "age": 20 + k} for k in range(8)]
        data["notes"] = ""
        free = op_bytes - len(msgspec.json.encode(envelope(seq, data)))
        chars = free * len(note) // (len(msgspec.json.encode(note)) - 2)
        data["notes"] = (note * (chars // len(note) + 1))[: max(chars, 0)]
        return envelope(seq, data)

    def envelope(seq: int, data: dict[str, Any]) -> dict[str, Any]:
        return {
            "op_seq": seq,
            "op_id": str(uuid.uuid4()),
            "hlc": f"{1767225600000 + seq:013d}:00000:dev",
            "kind": "submission",
            "submission": {
                "instance_id": str(uuid.uuid4()),
                "form_id": "inspection",
                "form_version": "2026010101",
                "captured_at": "2026-02-20T03:00:00Z",
                "ward_code": "00070",
                "data": data,
                "attachments": [],
                "entities": [
                    {
                        "list": "establishments",
                        "entity_id": str(uuid.uuid4()),
                        "action": "update",
                        "base_version": 3,
                        "properties": {"risk_class": "high", "result": "violation_found"},
                        "base_properties": {"risk_class": "low", "result": "no_violation"},
                    }
                ],
            },
        }

    return {"protocol": 1, "device_id": str(uuid.uuid4()), "ops": [op(s + 1) for s in range(ops)]}


def best_ms(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ops", type=int, default=500)
    parser.add_argument("--op-bytes", type=int, default=10_485)  # 500 ops: 5 MiB
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()

    plain_json = msgspec.json.encode(push_body(args.ops, args.op_bytes, PLAIN_NOTE))
    push = push_body(args.ops, args.op_bytes)
    as_json, as_msgpack = msgspec.json.encode(push), msgspec.msgpack.encode(push)
    push["ops"][-1]["submission"]["data"]["notes"] += "\x00"
    dirty_json, dirty_msgpack = msgspec.json.encode(push), msgspec.msgpack.encode(push)
    r = args.repeat

    rows = [
        ("JSON", len(as_json), best_ms(lambda: check_body(as_json, msgpack=False), r),
         best_ms(lambda: msgspec.json.decode(as_json, type=PushRequest), r),
         best_ms(lambda: check_body(dirty_json, msgpack=False), r)),
        ("JSON, no escapes", len(plain_json), best_ms(lambda: check_body(plain_json, msgpack=False), r),
         best_ms(lambda: msgspec.json.decode(plain_json, type=PushRequest), r), float("nan")),
        ("msgpack", len(as_msgpack), best_ms(lambda: check_body(as_msgpack, msgpack=True), r),
         best_ms(lambda: msgspec.msgpack.decode(as_msgpack, type=PushRequest), r),
         best_ms(lambda: check_body(dirty_msgpack, msgpack=True), r)),
    ]  # fmt: skip
    print(f"push of {args.ops} ops, best of {r} runs")
    print(
        f"{'body':16} {'bytes':>10} {'guard ms':>9} {'decode ms':>10} {'ratio':>6} {'1 NUL ms':>9}"
    )
    for name, size, guard, decode, dirty in rows:
        print(
            f"{name:16} {size:>10,} {guard:>9.2f} {decode:>10.2f} {guard / decode:>6.2f} {dirty:>9.2f}"
        )

    ten_mb = 10 * 1024 * 1024
    hostile = {
        "JSON [ x 10 MB": lambda: json_scan(b"[" * ten_mb),
        "JSON [[] x 10 MB": lambda: json_scan(b"[[]" * (ten_mb // 3)),
        "JSON 64 deep, repeated, 10 MB": lambda: json_scan(
            (b"[" * 64 + b"]" * 64) * (ten_mb // 128)
        ),
        "msgpack 0x91 x 10 MB": lambda: msgpack_scan(b"\x91" * ten_mb),
    }
    print("hostile bodies (time to refuse or pass):")
    for name, scan in hostile.items():
        print(f"  {name:32} {best_ms(scan, 3):8.2f} ms")


if __name__ == "__main__":
    main()
