"""The reference device client against the real app on both databases, with transport faults."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from device.client import SyncClient, SyncError, SyncUnavailable
from device.simulator import FaultyTransport
from server.auth import issue_access_token
from server.db.tables_sync import Entity, Submission
from server.services.entity_store import state_of
from tests.conftest import Backend
from tests.helpers import BA_DINH, HOAN_KIEM, PASSWORD, Api
from tests.ops import FORM_VERSION, INSPECTION_DATA

pytestmark = pytest.mark.db

VERSION = FORM_VERSION


class Tablet:
    """A SyncClient with its own faulty transport and a sleep that only records its delays."""

    def __init__(self, client: SyncClient, transport: FaultyTransport, user: dict[str, Any]):
        self.client, self.transport, self.user = client, transport, user
        self.delays: list[float] = []


MakeTablet = Callable[..., Awaitable[Tablet]]


@pytest.fixture
async def tablet(api: Api, db: Backend) -> AsyncIterator[MakeTablet]:
    opened: list[httpx.AsyncClient] = []

    async def make(
        role: str = "inspector",
        wards: list[str] | None = None,
        *,
        user: dict[str, Any] | None = None,
        device_id: str | None = None,
        store_path: str = ":memory:",
        now_ms: Callable[[], int] | None = None,
        msgpack: bool = False,
    ) -> Tablet:
        user = user or await api.create_user(role, wards or [HOAN_KIEM])
        address = f"10.9.{random.randint(0, 255)}.{random.randint(1, 254)}"
        transport = FaultyTransport(httpx.ASGITransport(app=db.app, client=(address, 40000)))
        http = httpx.AsyncClient(transport=transport, base_url="http://fieldsync.test")
        opened.append(http)
        delays: list[float] = []

        async def sleep(seconds: float) -> None:
            delays.append(seconds)

        extra = {"now_ms": now_ms} if now_ms else {}
        client = SyncClient(
            http,
            device_id=device_id or str(uuid.uuid4()),
            store_path=store_path,
            sleep=sleep,
            rng=random.Random(uuid.uuid4().int),  # ids come from it: one seed per device
            msgpack=msgpack,
            **extra,
        )
        if client.user is None:
            await client.login(user["username"], PASSWORD)
        made = Tablet(client, transport, user)
        made.delays = delays
        return made

    yield make
    for http in opened:
        await http.aclose()


def inspect(client: SyncClient, ward: str, change: Any) -> str:
    return client.submit(
        "inspection", VERSION, ward, {"ward_code": ward, **INSPECTION_DATA}, entities=[change]
    )


def shown(client: SyncClient, entity_id: str) -> dict[str, Any]:
    entity = client.entity("establishments", entity_id)
    assert entity is not None
    return entity.properties


async def server_entities(wards: list[str], lists: list[str]) -> dict[str, tuple[Any, ...]]:
    rows = await Entity.select().where(Entity.ward_code.is_in(wards), Entity.list.is_in(lists))
    states = [state_of(row) for row in rows]
    return {s.entity_id: (s.version, s.deleted, s.label, s.properties) for s in states}


def device_entities(client: SyncClient) -> dict[str, tuple[Any, ...]]:
    return {e.id: (e.version, e.deleted, e.label, e.properties) for e in client.entities()}


async def test_two_tablets_edit_offline_and_converge(tablet: MakeTablet) -> None:
    a, b = (await tablet()).client, (await tablet(msgpack=True)).client
    supervisor = (await tablet("supervisor")).client
    entity_id, create = a.create_entity(
        "establishments",
        {"business_name": "Quán X", "risk_class": "low", "result": "compliant", "managed": "yes"},
        label="Quán X",
    )
    inspect(a, HOAN_KIEM, create)
    await a.sync()
    await b.sync()
    assert shown(b, entity_id)["business_name"] == "Quán X"

    # Offline, both edit: the same manual property differently, and different lww properties.
    inspect(a, HOAN_KIEM, a.update_entity("establishments", entity_id, {"risk_class": "high"}))
    inspect(a, HOAN_KIEM, a.update_entity("establishments", entity_id, {"result": "closed"}))
    inspect(b, HOAN_KIEM, b.update_entity("establishments", entity_id, {"risk_class": "medium"}))
    inspect(b, HOAN_KIEM, b.update_entity("establishments", entity_id, {"managed": "no"}))
    assert shown(a, entity_id)["risk_class"] == "high", "local edits show before they sync"
    assert a.entity("establishments", entity_id).pending  # type: ignore[union-attr]

    for client in (a, b, a):
        await client.sync()
    assert device_entities(a) == device_entities(b)
    merged = shown(a, entity_id)
    assert merged["result"] == "closed" and merged["managed"] == "no"
    assert merged["risk_class"] in ("high", "medium")
    assert a.entity("establishments", entity_id).conflicted == ["risk_class"]  # type: ignore[union-attr]

    await supervisor.pull()
    [conflict] = [c for c in supervisor.conflicts("open") if c.entity_id == entity_id]
    assert sorted(c.value for c in conflict.candidates) == ["high", "medium"]
    pick = next(i for i, c in enumerate(conflict.candidates) if c.value == "medium")
    supervisor.resolve(conflict.id, choice=pick)
    pushed, _ = await supervisor.sync()
    assert pushed.applied == 1 and pushed.rejected == 0
    assert [c for c in supervisor.conflicts("open") if c.entity_id == entity_id] == []
    for client in (a, b):
        await client.sync()
        assert shown(client, entity_id)["risk_class"] == "medium"
        assert client.entity("establishments", entity_id).conflicted == []  # type: ignore[union-attr]
    server = await server_entities([HOAN_KIEM], ["establishments", "tips"])
    assert device_entities(a) == device_entities(b) == server


async def test_lost_response_is_resent_and_applied_once(tablet: MakeTablet) -> None:
    made = await tablet()
    client = made.client
    entity_id, create = client.create_entity("establishments", {"business_name": "Quán Y"})
    instance_id = inspect(client, HOAN_KIEM, create)
    made.transport.drop_responses = 1  # the server commits, the answer never arrives
    report = await client.push()
    assert report.duplicates == 1 and report.applied == 0 and report.sent == 1
    assert [r.results[0].status for r in made.transport.seen] == ["applied", "duplicate"]
    assert len(made.delays) == 1
    assert await Submission.count().where(Submission.instance_id == instance_id) == 1
    [entry] = client.outbox()
    assert entry.state == "applied" and entry.result is not None
    assert entry.result.entities[0].version == 1
    await client.pull()
    assert client.entity("establishments", entity_id).version == 1  # type: ignore[union-attr]
    assert client.pending_ops() == []


async def test_lost_requests_and_503_are_retried_with_backoff(tablet: MakeTablet) -> None:
    made = await tablet()
    client = made.client
    inspect(client, HOAN_KIEM, client.create_entity("establishments", {"business_name": "Z"})[1])
    made.transport.drop_requests = 2
    made.transport.unavailable = 1
    report = await client.push()
    assert report.applied == 1 and report.duplicates == 0
    assert len(made.delays) == 3 and all(d > 0 for d in made.delays)
    assert made.delays[0] >= 1, "503 Retry-After is honoured (the 503 comes first)"
    # An unreachable server: the op stays queued, nothing is lost.
    inspect(client, HOAN_KIEM, client.create_entity("establishments", {"business_name": "W"})[1])
    made.transport.offline = True
    with pytest.raises(SyncUnavailable):
        await client.push()
    assert [op.op_seq for op in client.pending_ops()] == [2]
    made.transport.offline = False
    assert (await client.push()).applied == 1


async def test_a_device_equals_the_server_projected_on_its_scope(tablet: MakeTablet) -> None:
    hk = [await tablet(wards=[HOAN_KIEM]) for _ in range(2)]
    bd = await tablet(wards=[BA_DINH])
    rng = random.Random(7)
    ids: dict[str, list[str]] = {HOAN_KIEM: [], BA_DINH: []}
    for step in range(12):
        made = rng.choice([*hk, bd])
        ward = made.user["wards"][0]
        client = made.client
        known = [
            e.id for e in client.entities("establishments") if e.properties.get("ward_code") == ward
        ]
        if not known or rng.random() < 0.3:
            entity_id, change = client.create_entity(
                "establishments", {"business_name": f"Cơ sở {step}", "risk_class": "low"}
            )
            ids[ward].append(entity_id)
        else:
            change = client.update_entity(
                "establishments",
                rng.choice(known),
                {
                    "result": rng.choice(["compliant", "closed"]),
                    "managed": rng.choice(["yes", "no"]),
                },
            )
        inspect(client, ward, change)
        if rng.random() < 0.5:
            await client.sync()
    for made in [*hk, bd, *hk]:
        await made.client.sync()
    for made in [*hk, bd]:
        ward = made.user["wards"][0]
        expected = await server_entities([ward], ["establishments", "tips"])
        assert device_entities(made.client) == expected
        assert not any(e.pending for e in made.client.entities())
    assert not set(ids[BA_DINH]) & set(device_entities(hk[0].client)), "no leak across wards"


async def test_reassignment_evicts_and_backfills(api: Api, tablet: MakeTablet) -> None:
    made = await tablet(wards=[HOAN_KIEM])
    other = (await tablet(wards=[BA_DINH])).client
    mine, create = made.client.create_entity("establishments", {"business_name": "HK"})
    inspect(made.client, HOAN_KIEM, create)
    theirs, create = other.create_entity("establishments", {"business_name": "BD"})
    inspect(other, BA_DINH, create)
    await other.sync()
    await made.client.sync()
    assert made.client.entity("establishments", mine) is not None
    assert made.client.entity("establishments", theirs) is None
    response = await api.http.patch(
        f"/api/v1/users/{made.user['id']}", json={"wards": [BA_DINH]}, headers=api.admin.headers
    )
    assert response.status_code == 200, response.text
    report = await made.client.pull()
    assert report.evicted >= 1
    assert made.client.entity("establishments", mine) is None, "left scope: evicted"
    assert made.client.entity("establishments", theirs) is not None, "came into scope"
    assert device_entities(made.client) == await server_entities(
        [BA_DINH], ["establishments", "tips"]
    )


async def test_restart_from_the_sqlite_file_keeps_outbox_and_cursor(
    tablet: MakeTablet, tmp_path: Path
) -> None:
    path = str(tmp_path / "device.db")
    device_id = str(uuid.uuid4())
    first = await tablet(device_id=device_id, store_path=path)
    client = first.client
    inspect(client, HOAN_KIEM, client.create_entity("establishments", {"business_name": "A"})[1])
    await client.sync()
    cursor = client.cursor
    entity_id, create = client.create_entity("establishments", {"business_name": "B"})
    inspect(client, HOAN_KIEM, create)
    inspect(client, HOAN_KIEM, client.update_entity("establishments", entity_id, {"managed": "no"}))
    client.close()

    again = (await tablet(user=first.user, device_id=device_id, store_path=path)).client
    assert again.cursor == cursor and cursor is not None
    assert [op.op_seq for op in again.pending_ops()] == [2, 3]
    assert shown(again, entity_id) == {"business_name": "B", "managed": "no"}
    inspect(again, HOAN_KIEM, again.update_entity("establishments", entity_id, {"managed": "yes"}))
    assert [op.op_seq for op in again.pending_ops()] == [2, 3, 4], "op_seq is never reused"
    pushed, _ = await again.sync()  # the stored tokens still work
    assert pushed.applied == 3
    assert shown(again, entity_id)["managed"] == "yes"
    assert len(again.outbox()) == 4, "the outbox keeps every op"


async def test_gap_makes_the_device_resend_from_the_servers_last(tablet: MakeTablet) -> None:
    client = (await tablet()).client
    for name in ("A", "B", "C"):
        inspect(
            client, HOAN_KIEM, client.create_entity("establishments", {"business_name": name})[1]
        )
    # A device restored from an old backup may believe the server has more than it has.
    assert client.user is not None
    client.store.set_meta(f"pushed_through:{client.user['id']}", "2")
    report = await client.push()
    assert report.applied == 3 and report.last_op_seq == 3 and report.requests == 2


async def test_expired_access_token_is_refreshed(tablet: MakeTablet, db: Backend) -> None:
    made = await tablet()
    client = made.client
    refresh_before = client.store.meta("refresh_token")
    expired = issue_access_token(
        secret=db.settings.secret_key,
        user_id=made.user["id"],
        role="inspector",
        device_id=client.device_id,
        lifetime=timedelta(minutes=-1),
    )
    client.store.db.execute("UPDATE meta SET value = ? WHERE key = 'access_token'", (expired,))
    inspect(client, HOAN_KIEM, client.create_entity("establishments", {"business_name": "T"})[1])
    assert (await client.push()).applied == 1
    assert client.store.meta("refresh_token") != refresh_before


async def test_clock_ahead_is_corrected_from_the_server(tablet: MakeTablet) -> None:
    import time

    def fast_clock() -> int:
        return int(time.time() * 1000) + 20 * 60_000  # 20 minutes ahead

    client = (await tablet(now_ms=fast_clock)).client
    inspect(client, HOAN_KIEM, client.create_entity("establishments", {"business_name": "S"})[1])
    report = await client.push()
    assert report.applied == 1
    assert client.clock_offset_ms < -15 * 60_000


async def test_a_tablet_handed_to_another_user_sends_the_first_users_ops_first(
    tablet: MakeTablet, api: Api
) -> None:
    made = await tablet()
    client, first_user = made.client, made.user
    second_user = await api.create_user("inspector", [HOAN_KIEM])

    def new_inspection(name: str) -> None:
        _, create = client.create_entity("establishments", {"business_name": name})
        inspect(client, HOAN_KIEM, create)

    new_inspection("Quán Một")
    await client.sync()
    new_inspection("Quán Hai")  # still on the tablet when it changes hands

    made.transport.offline = True
    with pytest.raises(SyncError) as refused:
        await client.login(second_user["username"], PASSWORD)
    assert refused.value.instance_code == "unsent_ops_of_other_user"
    assert client.user is not None and client.user["id"] == first_user["id"]
    assert [op.op_seq for op in client.pending_ops()] == [2]

    made.transport.offline = False
    await client.login(second_user["username"], PASSWORD)  # sends the first user's op 2 first
    assert client.user is not None and client.user["id"] == second_user["id"]
    new_inspection("Quán Ba")
    assert [op.op_seq for op in client.pending_ops()] == [1]  # the second user's own stream
    assert (await client.push()).applied == 1

    await client.login(first_user["username"], PASSWORD)
    new_inspection("Quán Bốn")
    assert [op.op_seq for op in client.pending_ops()] == [3]
    await client.sync()
    stored = await Submission.select(Submission.user_id, Submission.op_seq).where(
        Submission.device_id == client.device_id
    )
    assert sorted((r["user_id"], r["op_seq"]) for r in stored) == sorted(
        [(first_user["id"], seq) for seq in (1, 2, 3)] + [(second_user["id"], 1)]
    )
    assert all(entry.state == "applied" for entry in client.outbox())
