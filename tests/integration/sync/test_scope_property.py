"""Scope under reassignment (property test): nothing outside a user's current wards ever leaks.

Two watched users (an inspector and a supervisor) are reassigned at random among four Hanoi wards
while city-wide field staff create establishments (some with a photo, some with the natural key of
an existing one), make conflicting edits and move establishments between wards. Whatever the
watched users fetch — pull pages (possibly interrupted), `GET /api/v1/conflicts`,
`GET /api/v1/blobs/{sha}` — must belong to their wards at that moment; after a final pull each
one's local copy (evicts applied) is exactly the server's establishments in its current wards.

Hypothesis runs in a worker thread and sends each call to the session loop (see model.py).
Users and server data persist across examples (a login costs an argon2 hash), so a shrunk failing
example may depend on earlier ones; the focused tests at the end pin each bug this test found.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.db.tables_sync import ConflictRow, Entity
from server.services.entity_lists import lists_for_role
from server.services.entity_store import state_of
from tests.helpers import PASSWORD, Api, Session, login
from tests.integration.sync.model import LoopBridge, ModelDevice
from tests.integration.uploads.helpers import Tus, png, sha256_hex

pytestmark = pytest.mark.db

WARDS = ("00070", "00004", "00008", "00025")
NAMES = ("Karaoke Sao Mai", "Quán Hoa Mai", "Nhà nghỉ Bình An")
ADDRESSES = ("12 Phố Huế", "5 Hàng Bài")

wards_subset = st.lists(st.sampled_from(WARDS), min_size=1, max_size=3, unique=True)
actions = st.one_of(
    st.tuples(st.just("reassign"), st.integers(0, 1), wards_subset),
    st.tuples(
        st.just("create"),
        st.sampled_from(WARDS),
        st.sampled_from(NAMES),
        st.sampled_from(ADDRESSES),
        st.booleans(),
    ),
    st.tuples(st.just("clash"), st.integers(0, 30)),
    st.tuples(st.just("move"), st.integers(0, 30), st.sampled_from(WARDS)),
    st.tuples(st.just("pull"), st.integers(0, 1), st.sampled_from([2, 500])),
    st.tuples(st.just("look"), st.integers(0, 1)),
)


@dataclass
class Watched:
    user_id: str
    device: ModelDevice
    wards: list[str] = field(default_factory=list)


@dataclass
class World:
    api: Api
    staff: list[ModelDevice]
    watched: list[Watched]
    created: list[str] = field(default_factory=list)
    blobs: dict[str, str] = field(default_factory=dict)  # sha256 -> ward of its submission

    async def reassign(self, who: Watched, wards: list[str]) -> None:
        response = await self.api.http.patch(
            f"/api/v1/users/{who.user_id}", json={"wards": wards}, headers=self.api.admin.headers
        )
        assert response.status_code == 200, response.text
        who.wards = sorted(wards)

    async def create(self, ward: str, name: str, address: str, with_photo: bool) -> None:
        staff = self.staff[0]
        entity_id = staff.create(
            ward, {"business_name": name, "address": address, "risk_class": "low"}
        )
        if with_photo:
            photo = png(64)
            sha = sha256_hex(photo)
            await Tus(staff.http, staff.headers).upload(photo)
            staff.outbox[-1]["submission"]["attachments"] = [
                {
                    "name": "front.png",
                    "sha256": sha,
                    "size": len(photo),
                    "content_type": "image/png",
                }
            ]
            self.blobs[sha] = ward
        await staff.push()
        assert staff.writes[staff.next_seq - 1].status in ("applied", "conflict", "merged")
        self.created.append(entity_id)

    async def clash(self, index: int) -> None:
        """Two staff edit risk_class from the same version: an open (manual) conflict."""
        if not self.created:
            return
        entity_id = self.created[index % len(self.created)]
        for staff in self.staff:
            await staff.pull_all()
        for staff, risk in zip(self.staff, ("medium", "high"), strict=True):
            staff.update(entity_id, {"risk_class": risk})
        for staff in self.staff:
            await staff.push()

    async def move(self, index: int, ward: str) -> None:
        if not self.created:
            return
        staff = self.staff[1]
        await staff.pull_all()
        staff.update(self.created[index % len(self.created)], {"ward_code": ward})
        await staff.push()

    async def pull(self, who: Watched, max_items: int) -> None:
        body = await who.device.pull_page(max_items)
        await assert_in_wards(who, body["changes"])

    async def look(self, who: Watched) -> None:
        if who.device.role == "supervisor":
            response = await self.api.http.get("/api/v1/conflicts", headers=who.device.headers)
            assert response.status_code == 200, response.text
            records = response.json()
            await assert_conflicts_in_wards(who, [r["id"] for r in records])
        for sha, ward in self.blobs.items():
            response = await self.api.http.get(f"/api/v1/blobs/{sha}", headers=who.device.headers)
            if ward in who.wards:
                assert response.status_code == 200, (sha, ward, who.wards, response.text)
            else:
                assert response.status_code == 404, (sha, ward, who.wards, response.text)

    async def final_check(self) -> None:
        for who in self.watched:
            await assert_in_wards(who, await who.device.pull_all())
            lists = await lists_for_role(who.device.role)
            rows = await Entity.select().where(
                Entity.ward_code.is_in(who.wards), Entity.list.is_in(list(lists))
            )
            expected = {r["entity_id"]: _comparable(state_of(r)) for r in rows}
            local = {
                entity_id: {
                    "version": c["version"],
                    "deleted": c["deleted"],
                    "properties": c["properties"],
                }
                for entity_id, c in who.device.server_copy.items()
            }
            assert local == expected, f"{who.device.role} in {who.wards}"


def _comparable(state: Any) -> dict[str, Any]:
    return {"version": state.version, "deleted": state.deleted, "properties": state.properties}


async def assert_in_wards(who: Watched, changes: list[dict[str, Any]]) -> None:
    entity_ids = [c["id"] for c in changes if c["type"] == "entity" and not c["evict"]]
    for change in changes:
        if change["type"] == "entity" and not change["evict"]:
            assert change["properties"]["ward_code"] in who.wards, (change, who.wards)
    if entity_ids:
        rows = await Entity.select(Entity.entity_id, Entity.ward_code).where(
            Entity.entity_id.is_in(entity_ids)
        )
        assert {r["ward_code"] for r in rows} <= set(who.wards), (rows, who.wards)
    evicted = [c for c in changes if c["type"] == "conflict" and c.get("evict")]
    assert all(c["candidates"] == [] for c in evicted), "an evicted conflict carries no values"
    await assert_conflicts_in_wards(
        who, [c["id"] for c in changes if c["type"] == "conflict" and not c.get("evict")]
    )


async def assert_conflicts_in_wards(who: Watched, conflict_ids: list[str]) -> None:
    if not conflict_ids:
        return
    rows = await ConflictRow.select(ConflictRow.id, ConflictRow.ward_code).where(
        ConflictRow.id.is_in(conflict_ids)
    )
    assert len(rows) == len(set(conflict_ids))
    outside = [r for r in rows if r["ward_code"] not in who.wards]
    assert outside == [], (outside, who.wards)


async def _session(api: Api, role: str, wards: list[str]) -> tuple[str, Session]:
    user = await api.create_user(role, wards)
    return user["id"], await login(api.http, user["username"], PASSWORD)


async def test_reassignment_never_leaks_records_outside_the_wards(api: Api) -> None:
    staff = [
        ModelDevice(api.http, await api.user_session("inspector", ["*"]), "inspector")
        for _ in range(2)
    ]
    watched = []
    for role in ("inspector", "supervisor"):
        user_id, session = await _session(api, role, [WARDS[0]])
        watched.append(Watched(user_id, ModelDevice(api.http, session, role), [WARDS[0]]))
    bridge = LoopBridge(asyncio.get_running_loop())
    examples = itertools.count()

    @settings(
        max_examples=20,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        start=st.tuples(wards_subset, wards_subset),
        steps=st.lists(actions, min_size=3, max_size=12),
    )
    def scenario(start: tuple[list[str], list[str]], steps: list[tuple[Any, ...]]) -> None:
        next(examples)
        world = World(api, staff, watched)
        for who, wards in zip(watched, start, strict=True):
            bridge.run(world.reassign(who, wards))
            # A fresh snapshot: the same device starting over with no local data.
            who.device.cursor, who.device.server_copy, who.device.local = None, {}, {}
            who.device.conflicts = {}
        for step in steps:
            kind = step[0]
            if kind == "reassign":
                bridge.run(world.reassign(watched[step[1]], step[2]))
            elif kind == "create":
                bridge.run(world.create(*step[1:]))
            elif kind == "clash":
                bridge.run(world.clash(step[1]))
            elif kind == "move":
                bridge.run(world.move(step[1], step[2]))
            elif kind == "pull":
                bridge.run(world.pull(watched[step[1]], step[2]))
            else:
                bridge.run(world.look(watched[step[1]]))
        bridge.run(world.final_check())

    await asyncio.to_thread(scenario)
    assert next(examples) > 0, "hypothesis ran no example"


async def test_an_entity_moved_between_two_wards_of_a_device_stays_on_it(api: Api) -> None:
    """The eviction for the ward an entity left must not drop it from a device that sees both."""
    staff = ModelDevice(api.http, await api.user_session("inspector", ["*"]), "inspector")
    _, session = await _session(api, "inspector", [WARDS[0], WARDS[1]])
    both = ModelDevice(api.http, session, "inspector")
    entity_id = staff.create(WARDS[0], {"business_name": NAMES[0], "address": ADDRESSES[0]})
    await staff.push()
    await staff.pull_all()
    assert staff.update(entity_id, {"ward_code": WARDS[1]})
    await staff.push()
    assert staff.writes[2].status == "applied"
    await both.pull_all()
    assert entity_id in both.server_copy, "moved within the device's wards, yet evicted"
    assert both.server_copy[entity_id]["properties"]["ward_code"] == WARDS[1]


async def test_a_ward_removed_during_its_backfill_is_not_backfilled_further(api: Api) -> None:
    """A pull interrupted while back-filling a new ward, then the ward is taken away again: the
    rest of that back-fill must not be served (it is outside the wards now)."""
    staff = ModelDevice(api.http, await api.user_session("inspector", ["*"]), "inspector")
    user_id, session = await _session(api, "inspector", [WARDS[0]])
    who = Watched(user_id, ModelDevice(api.http, session, "inspector"), [WARDS[0]])
    world = World(api, [staff], [who])
    for name in NAMES:
        staff.create(WARDS[2], {"business_name": name, "address": ADDRESSES[1]})
    # A later change in the device's own ward moves its cursor past those of the other ward.
    staff.create(WARDS[0], {"business_name": NAMES[0], "address": ADDRESSES[0]})
    await staff.push()
    await who.device.pull_all()
    await world.reassign(who, [WARDS[0], WARDS[2]])
    first = await who.device.pull_page(max_items=1)
    assert first["has_more"], "the back-fill of the new ward needs more than one page"
    await world.reassign(who, [WARDS[0]])
    await assert_in_wards(who, await who.device.pull_all())
    in_removed_ward = [
        entity_id
        for entity_id, copy in who.device.server_copy.items()
        if copy["properties"]["ward_code"] == WARDS[2]
    ]
    assert in_removed_ward == []


async def test_conflicts_of_a_removed_ward_leave_the_supervisor(api: Api) -> None:
    """Conflict records sync to supervisors like entities; when a ward is taken away, its
    conflicts must leave the supervisor's device as its entities do (PROTOCOL.md "Pull")."""
    staff = [
        ModelDevice(api.http, await api.user_session("inspector", ["*"]), "inspector")
        for _ in range(2)
    ]
    user_id, session = await _session(api, "supervisor", [WARDS[0], WARDS[3]])
    who = Watched(user_id, ModelDevice(api.http, session, "supervisor"), [WARDS[0], WARDS[3]])
    world = World(api, staff, [who])
    await world.create(WARDS[3], NAMES[2], ADDRESSES[0], False)
    await world.clash(len(world.created) - 1)
    await who.device.pull_all()
    assert who.device.conflicts, "the supervisor holds the conflict of its ward"
    await world.reassign(who, [WARDS[0]])
    await assert_in_wards(who, await who.device.pull_all())
    held = list(who.device.conflicts)
    await assert_conflicts_in_wards(who, held)
