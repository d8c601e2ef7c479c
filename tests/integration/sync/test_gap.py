"""Gap safety of the change log under concurrent commits (PROTOCOL.md "Pull", "Gap safety").

Many writers, each in its own transaction, record change rows through `changes.record`, then wait
a random time before COMMIT (some abort instead), while a poller reads `changes.read` from its last
seen position all the time. Every committed row must reach the poller.

The same harness runs against the naive auto-increment cursor (`record(..., commit_order=False)`),
and there it must miss rows; that proves the harness can see the bug it guards against. To make the
miss certain rather than likely, a few "laggard" writers, after taking their position, hold their
transaction open until the poller has seen a higher position (or a short timeout passes): with the
naive cursor a later writer commits meanwhile and the poller moves past the laggard's position for
good; with commit-order positions no higher position can become visible while a laggard is open
(the counter row lock), so the laggard simply commits after its timeout.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import dataclass, field

import pytest

from server.db.engine import transaction
from server.db.tables_sync import ChangeLog
from server.services import changes
from server.services.changes import ChangeRef
from tests.conftest import Backend

pytestmark = pytest.mark.db

PROBE_LIST = "gap_probe"  # no role reads this list: pulls of other tests never serve these rows
PROBE_WARD = "99999"
WRITERS = 60
CONCURRENT = 6  # below the pool size (10): the poller always finds a connection
LAGGARDS = (5, 20, 40)  # writer indexes that hold their transaction open
LAGGARD_WAIT_S = 0.4
ABORT_RATE = 0.2


class Aborted(Exception):
    """A writer gives up inside its transaction: its rows must never be seen."""


@dataclass
class Run:
    committed: set[str] = field(default_factory=set)
    aborted: set[str] = field(default_factory=set)
    observed: set[str] = field(default_factory=set)
    seen_position: int = 0
    progress: asyncio.Condition = field(default_factory=asyncio.Condition)


async def _writer(run: Run, index: int, rng: random.Random, *, commit_order: bool) -> None:
    record_ids = [f"{PROBE_LIST}-{uuid.uuid4().hex[:12]}" for _ in range(rng.randint(1, 3))]
    refs = [
        ChangeRef(kind="entity", record_id=r, list=PROBE_LIST, ward_code=PROBE_WARD)
        for r in record_ids
    ]
    abort = index not in LAGGARDS and rng.random() < ABORT_RATE
    await asyncio.sleep(rng.uniform(0, 0.02))
    try:
        async with transaction():
            positions = await changes.record(refs, commit_order=commit_order)
            if index in LAGGARDS:
                mine = max(positions.values())
                # Hold the transaction open until the poller has moved past this position.
                async with run.progress:
                    try:
                        await asyncio.wait_for(
                            run.progress.wait_for(lambda: run.seen_position > mine),
                            LAGGARD_WAIT_S,
                        )
                    except TimeoutError:
                        pass
            else:
                await asyncio.sleep(rng.uniform(0, 0.03))  # a random delay before COMMIT
            if abort:
                raise Aborted
    except Aborted:
        run.aborted.update(record_ids)
        return
    run.committed.update(record_ids)


async def _poll_once(run: Run) -> None:
    rows = await changes.read(
        run.seen_position,
        wards=[PROBE_WARD],
        lists=[PROBE_LIST],
        include_conflicts=False,
        limit=1000,
    )
    if rows:
        run.observed.update(r["record_id"] for r in rows)
        async with run.progress:
            run.seen_position = max(run.seen_position, int(rows[-1]["position"]))
            run.progress.notify_all()


async def _poller(run: Run, done: asyncio.Event) -> None:
    while not done.is_set():
        await _poll_once(run)
        await asyncio.sleep(0.001)
    await _poll_once(run)  # once more after the last commit


async def _run_harness(*, commit_order: bool, seed: int) -> Run:
    rng = random.Random(seed)
    run = Run()
    run.seen_position = await changes.head()
    gate = asyncio.Semaphore(CONCURRENT)

    async def gated(index: int) -> None:
        async with gate:
            await _writer(run, index, random.Random(rng.random()), commit_order=commit_order)

    done = asyncio.Event()
    poller = asyncio.create_task(_poller(run, done))
    try:
        await asyncio.gather(*(gated(i) for i in range(WRITERS)))
    finally:
        done.set()
        await poller
    return run


async def _forget_probe_rows() -> None:
    # The naive run leaves positions above the counter: remove them before other tests write.
    await ChangeLog.delete().where(ChangeLog.list == PROBE_LIST)


async def _gap_run(db: Backend, *, commit_order: bool) -> Run:
    """The harness on PostgreSQL, its probe rows removed afterwards."""
    if db.name == "sqlite":
        pytest.skip(
            "gap test needs concurrent writers: SQLite has a single writer, which is gap-free by construction"
        )
    try:
        return await _run_harness(commit_order=commit_order, seed=4)
    finally:
        await _forget_probe_rows()


async def test_poller_sees_every_committed_change(db: Backend) -> None:
    run = await _gap_run(db, commit_order=True)
    assert run.committed and run.aborted, "the harness must both commit and abort"
    assert run.committed - run.observed == set(), "committed changes the poller never saw"
    assert run.observed & run.aborted == set(), "the poller saw rows of aborted transactions"


async def test_naive_auto_increment_cursor_misses_changes(db: Backend) -> None:
    run = await _gap_run(db, commit_order=False)
    missed = run.committed - run.observed
    assert missed, "the naive cursor should have skipped the laggards' rows"
    assert run.observed & run.aborted == set()
