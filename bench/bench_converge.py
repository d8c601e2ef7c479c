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
from device.simulator import add_workload_arguments, simulate, workload


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
                        **workload(args),
                        admin_username="admin",
                        admin_password=ADMIN_PASSWORD,
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
    add_workload_arguments(parser)
    parser.add_argument("--timeout", type=float, default=1200)
    raise SystemExit(asyncio.run(main_async(parser.parse_args())))


if __name__ == "__main__":
    main()
