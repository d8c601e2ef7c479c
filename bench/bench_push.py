"""Push ingest: many inspector devices push batches of submissions, each updating one establishment.

Two phases after the set-up (each device creates its establishments, then one warm-up round):
- saturation: every device pushes its next batch as soon as the previous one answered (closed
  loop). Gives the sustained ops/s the server can absorb; latency there is mostly queueing.
- paced: devices push on a schedule that adds up to `--rate` ops/s (open loop), as tablets
  coming back online would. Gives the push latency at that load.

Run:  PYTHONPATH=. .venv/bin/python -m bench.bench_push
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    ADMIN_PASSWORD,
    MSGPACK,
    USER_PASSWORD,
    BenchDevice,
    CpuMeter,
    ServerProcess,
    client,
    create_inspector,
    load_average,
    login,
    machine,
    now_stamp,
    percentile,
    print_table,
    throwaway_database,
    ward_codes,
)


@dataclass
class Phase:
    name: str
    ops: int = 0
    load: str = ""
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    late_sends: int = 0
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0

    def row(self) -> list[str]:
        lat = self.latencies_ms
        return [
            self.name,
            str(len(lat)),
            str(self.ops),
            f"{self.seconds:.1f}",
            f"{self.ops_per_s:,.0f}",
            f"{percentile(lat, 0.50):.0f}",
            f"{percentile(lat, 0.95):.0f}",
            f"{percentile(lat, 0.99):.0f}",
            f"{self.cpu['server'] * 1000 / self.ops:.2f}",
            f"{self.cpu['postgres'] * 1000 / self.ops:.2f}",
            " ".join(f"{k} {v:.0f}s" for k, v in self.cpu.items()),
        ]


HEADER = [
    "phase",
    "pushes",
    "ops",
    "wall s",
    "ops/s",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "server CPU ms/op",
    "PG CPU ms/op",
    "CPU seconds",
]


async def devices_for(
    http: httpx.AsyncClient, count: int, per_user: int, media: str
) -> list[BenchDevice]:
    """`count` devices, `per_user` per inspector, each inspector in a ward of their own."""
    _, admin_token = await login(http, "admin", ADMIN_PASSWORD)
    wards = await ward_codes(http, admin_token)
    users = -(-count // per_user)
    if users > len(wards):
        raise SystemExit(f"at most {len(wards) * per_user} devices with {per_user} per user")
    names = [await create_inspector(http, admin_token, [wards[i]]) for i in range(users)]
    devices = []
    for index in range(count):
        # Logins hash a password: do them one by one, outside any measured phase.
        device_id, token = await login(http, names[index // per_user], USER_PASSWORD)
        devices.append(BenchDevice(http, device_id, token, wards[index // per_user], media=media))
    return devices


async def timed_push(device: BenchDevice, ops: list[dict[str, Any]], phase: Phase) -> None:
    started = time.perf_counter()
    await device.push(ops)
    phase.latencies_ms.append((time.perf_counter() - started) * 1000)
    phase.ops += len(ops)


async def saturate(devices: list[BenchDevice], seconds: float, round_: int, phase: Phase) -> int:
    """Closed loop: each device pushes back-to-back until the deadline; returns the next round."""
    deadline = time.perf_counter() + seconds
    rounds: list[int] = []

    async def run(device: BenchDevice) -> None:
        r = round_
        while time.perf_counter() < deadline:
            await timed_push(device, device.updates(list(device.versions), r), phase)
            r += 1
        rounds.append(r)

    started = time.perf_counter()
    await asyncio.gather(*(run(d) for d in devices))
    phase.seconds = time.perf_counter() - started
    return max(rounds)


async def paced(
    devices: list[BenchDevice], seconds: float, rate: float, batch: int, round_: int, phase: Phase
) -> None:
    """Open loop: device i pushes every `len(devices) * batch / rate` s, starts staggered."""
    interval = len(devices) * batch / rate
    batches = max(1, int(seconds / interval))
    t0 = time.perf_counter() + 0.5

    async def run(index: int, device: BenchDevice) -> None:
        for k in range(batches):
            due = t0 + (index / len(devices)) * interval + k * interval
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            else:
                phase.late_sends += 1
            await timed_push(device, device.updates(list(device.versions), round_ + k), phase)

    await asyncio.gather(*(run(i, d) for i, d in enumerate(devices)))
    phase.seconds = time.perf_counter() - t0


async def bench(server: ServerProcess, args: argparse.Namespace) -> list[Phase]:
    assert server.process is not None
    meter = CpuMeter(server.process.pid, server.database_url.rsplit("/", 1)[1])
    media = MSGPACK if args.media == "msgpack" else "application/json"
    async with client(server.base_url, args.devices) as http:
        devices = await devices_for(http, args.devices, args.devices_per_user, media)
        setup = Phase("create (setup)")
        meter.start()
        started = time.perf_counter()
        await asyncio.gather(*(timed_push(d, d.creates(args.batch), setup) for d in devices))
        setup.seconds = time.perf_counter() - started
        setup.cpu, setup.load = meter.stop(), load_average()
        warmup = Phase("update warm-up")
        await asyncio.gather(
            *(timed_push(d, d.updates(list(d.versions), 0), warmup) for d in devices)
        )

        saturation = Phase(f"update saturation ({args.devices} closed-loop)")
        meter.start()
        next_round = await saturate(devices, args.seconds, 1, saturation)
        saturation.cpu, saturation.load = meter.stop(), load_average()

        phases = [setup, saturation]
        for rate in args.rate:
            phase = Phase(f"update paced at {rate:,.0f} ops/s")
            meter.start()
            await paced(devices, args.seconds, rate, args.batch, next_round, phase)
            phase.cpu, phase.load = meter.stop(), load_average()
            next_round += len(phase.latencies_ms)
            phases.append(phase)
        return phases


async def main_async(args: argparse.Namespace) -> None:
    print(f"bench_push {now_stamp()} — {machine()}; {load_average()}")
    print(
        f"{args.devices} devices ({args.devices_per_user} per inspector), batches of {args.batch} "
        f"ops, one establishment update per op, {args.media} bodies, HTTP/1.1 keep-alive"
    )
    async with throwaway_database() as url:
        with tempfile.TemporaryDirectory(prefix="bench_push_") as tmp:
            profile = args.profile.resolve() if args.profile else None
            server = ServerProcess(url, Path(tmp), profile_to=profile)
            server.start()
            try:
                phases = await asyncio.wait_for(bench(server, args), timeout=args.timeout)
            finally:
                server.stop()
    print_table("Push ingest", HEADER, [p.row() for p in phases])
    for phase in phases:
        print(f"  {phase.name}: {phase.load} at its end")
        if phase.late_sends:
            print(
                f"  {phase.name}: {phase.late_sends} pushes started late (server behind the pace)"
            )
    if args.profile:
        print(f"server profile written to {args.profile}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--devices-per-user", type=int, default=5)
    parser.add_argument("--batch", type=int, default=50, help="ops per push")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each phase")
    parser.add_argument(
        "--rate", type=float, nargs="*", default=[1000.0], help="paced phases, ops/s"
    )
    parser.add_argument("--media", choices=["msgpack", "json"], default="msgpack")
    parser.add_argument("--profile", type=Path, help="run the server under cProfile, write here")
    parser.add_argument("--timeout", type=float, default=600.0, help="hard limit for the run")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
