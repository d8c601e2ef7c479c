"""Convergence: the device simulator (`fieldsync simulate`) against a real server on PostgreSQL.

Starts the server as an operator would (throwaway database, one uvicorn worker), runs the simulator
(50 reference clients by default, offline periods, lost requests and responses) and prints its
report: ops, conflicts, duplicates and lost values (both must be 0), convergence and wall time.

Run:  PYTHONPATH=. .venv/bin/python -m bench.bench_converge [--devices 50 --days 3 ...]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from bench.common import (
    ADMIN_PASSWORD,
    ServerProcess,
    load_average,
    machine,
    now_stamp,
    throwaway_database,
)
from device.simulator import simulate


async def main_async(args: argparse.Namespace) -> int:
    print(f"bench_converge {now_stamp()} — {machine()}; {load_average()}")
    async with throwaway_database("fieldsync_converge") as url:
        with tempfile.TemporaryDirectory(prefix="bench_converge_") as tmp:
            server = ServerProcess(url, Path(tmp))
            server.start()
            try:
                started = time.perf_counter()
                report = await asyncio.wait_for(
                    simulate(
                        server.base_url,
                        devices=args.devices,
                        days=args.days,
                        edits_per_day=args.edits_per_day,
                        overlap=args.overlap,
                        seed=args.seed,
                        admin_username="admin",
                        admin_password=ADMIN_PASSWORD,
                        loss=args.loss,
                        offline=args.offline,
                    ),
                    timeout=args.timeout,
                )
                wall = time.perf_counter() - started
            finally:
                server.stop()
    print(report.format())
    print(f"wall time {wall:.1f} s (set-up, simulation and checks); {load_average()} at the end")
    return 0 if report.ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--edits-per-day", type=int, default=40)
    parser.add_argument("--overlap", type=float, default=0.2)
    parser.add_argument("--loss", type=float, default=0.05)
    parser.add_argument("--offline", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=1200)
    raise SystemExit(asyncio.run(main_async(parser.parse_args())))


if __name__ == "__main__":
    main()
