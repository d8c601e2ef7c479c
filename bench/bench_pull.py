"""Pull: an incremental pull of 100 changes must cost the same whatever the change log's length,
and a new device must receive 10k establishments quickly.

For each log length (default 10k and 1M changes) a fresh database is filled directly with
PostgreSQL (INSERT ... SELECT generate_series: establishments and their change-log rows, the
`change_counter` advanced), spread over the city's 126 wards with 10k of them in the benchmark
inspector's ward. Then, through the API:
- initial sync: new devices pull everything in scope, default page size and max_items=1000;
- incremental: another device of the inspector pushes 100 changes in the ward, and pulls are timed
  from the cursor taken just before them (repeated; medians).

Run:  PYTHONPATH=. .venv/bin/python -m bench.bench_pull
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx

from bench.common import (
    ADMIN_PASSWORD,
    MSGPACK,
    USER_PASSWORD,
    BenchDevice,
    ServerProcess,
    client,
    create_inspector,
    load_average,
    login,
    machine,
    median,
    now_stamp,
    percentile,
    print_table,
    throwaway_database,
    ward_codes,
)

HOAN_KIEM = "00070"
IN_WARD = 10_000  # establishments of the inspector's ward (the initial-sync target)

# One establishment per change-log row, as the server itself would have written them
# (server/services/entity_store.py and changes.py). $1 first position - 1, $2 rows, $3 the
# inspector's ward, $4 the other wards, $5 every how many rows one falls in the inspector's ward.
BULK_INSERT = """
WITH rows AS (
    SELECT i,
           md5('bench-entity-' || i)::uuid::text AS entity_id,
           CASE WHEN i % $5 = 0 THEN $3::text
                ELSE ($4::text[])[1 + i % cardinality($4::text[])] END AS ward
    FROM generate_series(1, $2::bigint) AS i
), entities AS (
    INSERT INTO entity (entity_id, list, ward_code, version, deleted, natural_key, state, updated_at)
    SELECT entity_id, 'establishments', ward, 1, false,
           format('["%s","karaoke %s","%s phố huế"]', ward, i, i),
           json_build_object(
               'entity_id', entity_id, 'list', 'establishments', 'version', 1,
               'deleted', false, 'label', NULL,
               'properties', json_build_object(
                   'ward_code', ward, 'business_name', 'Karaoke ' || i, 'kind', 'karaoke',
                   'address', i || ' Phố Huế'),
               'prop_versions', json_build_object(
                   'ward_code', 1, 'business_name', 1, 'kind', 1, 'address', 1),
               'prop_hlcs', json_build_object(
                   'ward_code', h, 'business_name', h, 'kind', h, 'address', h),
               'prop_writers', json_build_object(
                   'ward_code', w, 'business_name', w, 'kind', w, 'address', w)),
           now()
    FROM rows,
         LATERAL (SELECT lpad((1767225600000 + i)::text, 13, '0') || ':00000:bulk' AS h,
                         json_build_array('bulk-device', 'bulk-user', i) AS w) AS meta
)
INSERT INTO change_log (position, record_key, kind, record_id, list, ward_code, committed_at)
SELECT $1::bigint + i, 'entity:' || entity_id, 'entity', entity_id, 'establishments', ward, now()
FROM rows
"""


@dataclass
class LogSize:
    changes: int
    insert_s: float = 0.0
    initial: dict[int, list[float]] = field(default_factory=dict)  # max_items -> seconds
    initial_items: dict[int, int] = field(default_factory=dict)
    initial_pages: dict[int, int] = field(default_factory=dict)
    incremental_ms: list[float] = field(default_factory=list)
    # Pages of 100 in-scope changes behind a stale cursor: how much the other wards' traffic costs.
    scoped_page_ms: list[float] = field(default_factory=list)
    plans: list[str] = field(default_factory=list)


async def bulk_fill(database_url: str, changes: int, ward: str, others: list[str]) -> float:
    started = time.perf_counter()
    conn = await asyncpg.connect(database_url)
    try:
        head = await conn.fetchval("SELECT coalesce(max(position), 0) FROM change_log")
        every = max(1, changes // IN_WARD)
        await conn.execute(BULK_INSERT, head, changes, ward, others, every)
        # The counter row must hand out positions after the bulk rows.
        await conn.execute(
            "UPDATE change_counter SET value = (SELECT max(position) FROM change_log) "
            "WHERE name = 'log'"
        )
        await conn.execute("ANALYZE entity")
        await conn.execute("ANALYZE change_log")
    finally:
        await conn.close()
    return time.perf_counter() - started


async def explain(database_url: str, after: int, ward: str) -> str:
    """The plan of pull's log query (changes.read) from `after` in one ward, as PostgreSQL runs it."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) "
            "SELECT position, kind, record_id, list, ward_code FROM change_log "
            "WHERE position > $1 AND kind IN ('form', 'entity', 'evict') "
            "AND (ward_code IN ($2) OR kind = 'form') "
            "AND (list IN ('establishments') OR kind = 'form') "
            "ORDER BY position LIMIT 501",
            after,
            ward,
        )
    finally:
        await conn.close()
    return "\n".join(r[0] for r in rows)


async def new_device(http: httpx.AsyncClient, username: str, ward: str, media: str) -> BenchDevice:
    device_id, token = await login(http, username, USER_PASSWORD)
    return BenchDevice(http, device_id, token, ward, media=media)


async def initial_sync(
    device: BenchDevice, max_items: int | None, page_ms: list[float] | None = None
) -> tuple[float, int, int]:
    """Pull every page from no cursor; returns (seconds, entities received, pages)."""
    extra = {} if max_items is None else {"max_items": max_items}
    started = time.perf_counter()
    entities = pages = 0
    while True:
        before = time.perf_counter()
        body = await device.pull(**extra)
        if page_ms is not None:
            page_ms.append((time.perf_counter() - before) * 1000)
        pages += 1
        entities += sum(1 for c in body["changes"] if c["type"] == "entity")
        if not body["has_more"]:
            return time.perf_counter() - started, entities, pages


async def measure(size: LogSize, args: argparse.Namespace) -> None:
    media = MSGPACK if args.media == "msgpack" else "application/json"
    async with throwaway_database() as url:
        with tempfile.TemporaryDirectory(prefix="bench_pull_") as tmp:
            profile = (
                args.profile.resolve().with_suffix(f".{size.changes}.prof")
                if args.profile
                else None
            )
            server = ServerProcess(url, Path(tmp), profile_to=profile)
            server.start()
            try:
                async with client(server.base_url, 4) as http:
                    _, admin_token = await login(http, "admin", ADMIN_PASSWORD)
                    wards = await ward_codes(http, admin_token)
                    ward = HOAN_KIEM if HOAN_KIEM in wards else wards[0]
                    others = [w for w in wards if w != ward]
                    username = await create_inspector(http, admin_token, [ward])
                    size.insert_s = await bulk_fill(url, size.changes, ward, others)
                    print(
                        f"  {size.changes:,} changes inserted in {size.insert_s:.1f} s", flush=True
                    )

                    for max_items in (None, 1000):
                        key = max_items or 500
                        for _ in range(args.initial_repeats):
                            device = await new_device(http, username, ward, media)
                            seconds, items, pages = await initial_sync(device, max_items)
                            size.initial.setdefault(key, []).append(seconds)
                            size.initial_items[key], size.initial_pages[key] = items, pages

                    reader = await new_device(http, username, ward, media)
                    await initial_sync(reader, 100, size.scoped_page_ms)
                    before = reader.cursor
                    writer = await new_device(http, username, ward, media)
                    for _ in range(2):
                        await writer.push(writer.creates(50))
                    for _ in range(args.repeats):
                        reader.cursor = before
                        started = time.perf_counter()
                        body = await reader.pull()
                        size.incremental_ms.append((time.perf_counter() - started) * 1000)
                        got = sum(1 for c in body["changes"] if c["type"] == "entity")
                        if got != 100 or body["has_more"]:
                            raise RuntimeError(f"expected 100 changes, got {got}")
                    if args.explain:
                        conn = await asyncpg.connect(url)
                        head = await conn.fetchval("SELECT max(position) FROM change_log")
                        await conn.close()
                        size.plans.append(await explain(url, head - 100, ward))
                        size.plans.append(await explain(url, 0, ward))
            finally:
                server.stop()


async def main_async(args: argparse.Namespace) -> None:
    print(f"bench_pull {now_stamp()} — {machine()}; {load_average()}")
    print(
        f"{args.media} bodies; log lengths {', '.join(f'{n:,}' for n in args.log_sizes)}; "
        f"{IN_WARD:,} establishments in the inspector's ward, the rest over the other 125 wards"
    )
    sizes = [LogSize(n) for n in args.log_sizes]
    for size in sizes:
        print(f"log of {size.changes:,} changes:", flush=True)
        await asyncio.wait_for(measure(size, args), timeout=args.timeout)
        print(f"  done; {load_average()}", flush=True)

    print_table(
        "Incremental pull of 100 changes (from the cursor just before them)",
        ["log length", "pulls", "median ms", "p95 ms", "min ms", f"ratio to {sizes[0].changes:,}"],
        [
            [
                f"{s.changes:,}",
                len(s.incremental_ms),
                f"{median(s.incremental_ms):.1f}",
                f"{percentile(s.incremental_ms, 0.95):.1f}",
                f"{min(s.incremental_ms):.1f}",
                f"{median(s.incremental_ms) / median(sizes[0].incremental_ms):.2f}",
            ]
            for s in sizes
        ],
    )
    print_table(
        "Pages of 100 in-scope changes behind an old cursor (initial sync with max_items=100)",
        ["log length", "in-scope share", "pages", "median ms", "p95 ms"],
        [
            [
                f"{s.changes:,}",
                f"1 in {max(1, s.changes // IN_WARD)}",
                len(s.scoped_page_ms),
                f"{median(s.scoped_page_ms):.1f}",
                f"{percentile(s.scoped_page_ms, 0.95):.1f}",
            ]
            for s in sizes
        ],
    )
    print_table(
        "Initial sync of a new device (all pages)",
        ["log length", "max_items", "pages", "entities", "median s", "runs"],
        [
            [
                f"{s.changes:,}",
                key,
                s.initial_pages[key],
                f"{s.initial_items[key]:,}",
                f"{median(runs):.2f}",
                " ".join(f"{r:.2f}" for r in runs),
            ]
            for s in sizes
            for key, runs in s.initial.items()
        ],
    )
    for s in sizes:
        for title, plan in zip(("incremental", "initial first page"), s.plans, strict=False):
            print(f"\nplan of the log query, {title}, log of {s.changes:,}:\n{plan}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--log-sizes", type=int, nargs="+", default=[10_000, 1_000_000], help="change-log lengths"
    )
    parser.add_argument("--repeats", type=int, default=30, help="timed incremental pulls")
    parser.add_argument("--initial-repeats", type=int, default=3)
    parser.add_argument("--media", choices=["msgpack", "json"], default="json")
    parser.add_argument("--explain", action="store_true", help="print PostgreSQL's query plans")
    parser.add_argument(
        "--profile", type=Path, help="run the server under cProfile: PATH.<log length>.prof"
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="hard limit per log length")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
