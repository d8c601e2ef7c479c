"""Stateful sync test (Hypothesis `RuleBasedStateMachine`) on SQLite and PostgreSQL.

Three inspectors with overlapping wards and one supervisor create, update (base_version and
base_properties from their local copy), delete and create establishments with the same natural
key; they push with faults (request lost, response lost after commit, duplicated, the same push
twice at once), pull (sometimes only one small page), the supervisor resolves open conflicts, and
the admin reassigns devices' wards; a fourth inspector takes over an inspector's tablet, pushes
on it (each user has their own op stream on a device) and hands it back, while the holder's own
unpushed ops wait in its outbox. After quiescence (every device pushes its whole outbox,
then pulls to the end) the test checks:
- convergence: every device's copy equals the server's state projected on its scope (entities;
  and, for the supervisor, conflict records);
- exactly-once: each op stream's (device and user) op_seq has one ledger row and one stored
  submission, and the device learned one result for each (replays answer the stored result, never
  another user's);
- no acknowledged value lost: each value the server accepted is current, causally overwritten
  (a later write that had seen it, or a resolution of that property), or a conflict candidate.

How async fits: the machine's rules are synchronous, the app and its database pool live in the
session's event loop. The test awaits `asyncio.to_thread(run_state_machine_as_test, ...)`, which
leaves the loop free, and each rule sends its coroutine to that loop (`LoopBridge`, model.py).
Each example draws three wards of its own from Hanoi's 126 and restarts the same four devices
on them with empty local data (logins cost an argon2 hash each, so devices are made once; their
op_seq simply goes on across examples, and the exactly-once checks count over all of them).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)

from server.db.tables import Ward
from server.db.tables_sync import ConflictRow, Entity, OpLedger, OpStream, Submission
from server.services.entity_lists import lists_for_role
from server.services.entity_store import state_of
from tests.helpers import PASSWORD, Api, login
from tests.integration.sync.model import (
    FAULTS,
    LoopBridge,
    ModelDevice,
    Write,
    differences,
    entity_view,
)

pytestmark = pytest.mark.db

TEST_WARDS = {"00070", "00004", "00008", "00025"}  # busy with other tests
NAMES = ("Karaoke Sao Mai", "Quán Hoa Mai")
ADDRESSES = ("12 Phố Huế", "5 Hàng Bài")
EDITS: dict[str, tuple[str, ...]] = {
    "risk_class": ("low", "medium", "high"),  # manual: concurrent edits open a conflict
    "result": ("no_violation", "violation_found"),  # lww: the loser is kept as a candidate
    "managed": ("yes", "no"),
}
SUPERVISOR = 3
GUEST = 4
ACCEPTED = ("applied", "merged", "conflict")


@dataclass
class Context:
    api: Api
    bridge: LoopBridge
    user_ids: list[str]  # three inspectors, then the supervisor, then the guest inspector
    usernames: list[str]
    devices: list[ModelDevice]
    guests: list[ModelDevice]  # the guest inspector's op stream on each inspector's tablet
    ward_pool: list[str]


@dataclass
class Resolution:
    tick: int
    entity_id: str
    property: str | None


def make_machine(ctx: Context) -> type[RuleBasedStateMachine]:
    class SyncMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.tick = 0
            self.devices: list[ModelDevice] = []
            self.wards: list[list[str]] = []
            self.resolutions: list[Resolution] = []
            self.takeovers = 0

        def run(self, coro: Any) -> Any:
            self.tick += 1
            return ctx.bridge.run(coro)

        # ---- setup -------------------------------------------------------------------------

        @initialize(
            wards=st.lists(st.sampled_from(ctx.ward_pool), min_size=3, max_size=3, unique=True)
        )
        def start(self, wards: list[str]) -> None:
            a, b, c = wards
            self.example_wards = wards
            self.wards = [[a, b], [b, c], [a, c], [a, b, c]]
            self.devices = ctx.devices
            self.wards.append([a, b, c])  # the guest
            self.run(self._start())

        async def _start(self) -> None:
            await self._assign(GUEST, self.wards[GUEST])
            for index, device in enumerate(self.devices + ctx.guests):
                if index < len(self.devices):
                    await self._assign(index, self.wards[index])
                # The same device starting over on new wards: op_seq goes on, local data is new.
                device.cursor, device.server_copy, device.local = None, {}, {}
                device.conflicts = {}
                device.writes = {}
            # Two establishments everyone in ward a or b starts from.
            first = self.devices[0]
            for ward in self.wards[0]:
                address = f"{uuid.uuid4().hex[:6]} Phố Huế"  # no duplicates of earlier examples
                first.create(
                    ward, {"business_name": "Bar Đêm", "address": address, "risk_class": "low"}
                )
            await first.push_all()
            for device in self.devices:
                await device.pull_all()

        async def _assign(self, index: int, wards: list[str]) -> None:
            response = await ctx.api.http.patch(
                f"/api/v1/users/{ctx.user_ids[index]}",
                json={"wards": wards},
                headers=ctx.api.admin.headers,
            )
            assert response.status_code == 200, response.text
            self.wards[index] = sorted(wards)

        # ---- edits -------------------------------------------------------------------------

        def _pick(self, device: ModelDevice, index: int) -> str | None:
            ids = sorted(device.local)
            return ids[index % len(ids)] if ids else None

        @rule(
            who=st.integers(0, 3),
            ward=st.integers(0, 2),
            name=st.sampled_from(NAMES),
            address=st.sampled_from(ADDRESSES),
        )
        def create(self, who: int, ward: int, name: str, address: str) -> None:
            wards = self.wards[who]
            self.devices[who].create(
                wards[ward % len(wards)],
                {"business_name": name, "address": address, "risk_class": "low", "managed": "yes"},
            )

        @rule(
            who=st.integers(0, 3),
            index=st.integers(0, 40),
            prop=st.sampled_from(sorted(EDITS)),
            value=st.integers(0, 2),
        )
        def update(self, who: int, index: int, prop: str, value: int) -> None:
            device = self.devices[who]
            entity_id = self._pick(device, index)
            if entity_id is not None:
                device.update(entity_id, {prop: EDITS[prop][value % len(EDITS[prop])]})

        @rule(
            who=st.tuples(st.integers(0, 3), st.integers(0, 3)),
            index=st.integers(0, 40),
            prop=st.sampled_from(sorted(EDITS)),
        )
        def edit_same(self, who: tuple[int, int], index: int, prop: str) -> None:
            """Two devices edit the same property of a record both hold, each from its own copy."""
            first, second = (self.devices[i] for i in who)
            shared = sorted(set(first.local) & set(second.local))
            if first is second or not shared:
                return
            entity_id = shared[index % len(shared)]
            values = EDITS[prop]
            first.update(entity_id, {prop: values[0]})
            second.update(entity_id, {prop: values[1]})

        @rule(who=st.integers(0, 3), index=st.integers(0, 40))
        def delete(self, who: int, index: int) -> None:
            device = self.devices[who]
            entity_id = self._pick(device, index)
            if entity_id is not None:
                device.delete(entity_id)

        # ---- network -----------------------------------------------------------------------

        @rule(who=st.integers(0, 3), fault=st.sampled_from(FAULTS))
        def push(self, who: int, fault: Any) -> None:
            self.run(self.devices[who].push(fault, tick=self.tick + 1))

        @rule(who=st.integers(0, 3), interrupted=st.booleans())
        def pull(self, who: int, interrupted: bool) -> None:
            device = self.devices[who]
            if interrupted:
                self.run(device.pull_page(max_items=2))  # the connection drops after one page
            else:
                self.run(device.pull_all())

        # ---- a tablet changes hands ---------------------------------------------------------

        @precondition(lambda self: bool(self.devices) and self.takeovers < 2)
        @rule(
            who=st.integers(0, 2),
            ward=st.integers(0, 2),
            creates=st.integers(0, 2),
            fault=st.sampled_from(FAULTS),
        )
        def takeover(self, who: int, ward: int, creates: int, fault: Any) -> None:
            """The guest logs in on an inspector's tablet (the holder's sessions end; its own
            unpushed ops stay in its outbox), edits and pushes there, and hands it back."""
            self.takeovers += 1
            self.run(self._takeover(who, ward, creates, fault))

        async def _takeover(self, who: int, ward: int, creates: int, fault: Any) -> None:
            holder, guest = self.devices[who], ctx.guests[who]
            await hand_over(guest, ctx.usernames[GUEST])
            for _ in range(creates):
                guest.create(
                    self.example_wards[ward],
                    {"business_name": "Quán Khách", "address": "9 Tràng Tiền", "managed": "yes"},
                )
            for index in range(2):
                entity_id = self._pick(guest, index)
                if entity_id is not None:
                    guest.update(entity_id, {"risk_class": EDITS["risk_class"][index]})
            await guest.push(fault, tick=self.tick)
            await hand_over(holder, ctx.usernames[who])

        # ---- supervision -------------------------------------------------------------------

        @rule(index=st.integers(0, 20), choice=st.integers(0, 1), twice=st.booleans())
        def resolve(self, index: int, choice: int, twice: bool) -> None:
            self.run(self._resolve(index, choice, twice))

        async def _resolve(self, index: int, choice: int, twice: bool) -> None:
            supervisor = self.devices[SUPERVISOR]
            listed = await ctx.api.http.get(
                "/api/v1/conflicts", params={"status": "open"}, headers=supervisor.headers
            )
            assert listed.status_code == 200, listed.text
            mine = [c for c in listed.json() if c["entity_id"] in self._entities_of_example()]
            if not mine:
                return
            conflict = mine[index % len(mine)]
            body = {
                "choice": choice % len(conflict["candidates"]),
                "resolution_id": str(uuid.uuid4()),
            }
            url = f"/api/v1/conflicts/{conflict['id']}/resolve"
            done = await ctx.api.http.post(url, json=body, headers=supervisor.headers)
            if done.status_code == 409:
                assert done.json()["code"] == "stale", done.text
                return
            assert done.status_code == 200, done.text
            self.resolutions.append(
                Resolution(self.tick, conflict["entity_id"], conflict["property"])
            )
            if twice:  # the same resolution again: idempotent
                again = await ctx.api.http.post(url, json=body, headers=supervisor.headers)
                assert again.status_code == 200 and again.json() == done.json(), again.text

        def _entities_of_example(self) -> set[str]:
            devices = self.devices + ctx.guests
            return {w.entity_id for d in devices for w in d.writes.values()}

        @precondition(lambda self: bool(self.devices))
        @rule(
            who=st.integers(0, 3),
            wards=st.lists(st.integers(0, 2), min_size=1, max_size=3, unique=True),
        )
        def reassign(self, who: int, wards: list[int]) -> None:
            self.run(self._assign(who, [self.example_wards[i] for i in wards]))

        # ---- after quiescence --------------------------------------------------------------

        def teardown(self) -> None:
            if self.devices:
                self.run(self._quiesce_and_check())

        async def _quiesce_and_check(self) -> None:
            for who, guest in enumerate(ctx.guests):
                if guest.outbox:  # the guest comes back for the ops it left on that tablet
                    await hand_over(guest, ctx.usernames[GUEST])
                    await guest.push_all()
                    await hand_over(self.devices[who], ctx.usernames[who])
            for device in self.devices:
                await device.push_all()
            for device in self.devices:
                await device.pull_all()
            for index, device in enumerate(self.devices):
                await check_convergence(device, self.wards[index])
            for device in self.devices + ctx.guests:
                await check_exactly_once(device)
            await check_nothing_lost(self.devices + ctx.guests, self.resolutions)

    return SyncMachine


async def check_convergence(device: ModelDevice, wards: list[str]) -> None:
    lists = await lists_for_role(device.role)
    rows = await Entity.select().where(
        Entity.ward_code.is_in(wards), Entity.list.is_in(list(lists))
    )
    ids = [r["entity_id"] for r in rows]
    open_props: dict[str, set[str]] = {}
    if ids:
        for c in await ConflictRow.select(ConflictRow.entity_id, ConflictRow.property).where(
            ConflictRow.entity_id.is_in(ids), ConflictRow.status == "open"
        ):
            open_props.setdefault(c["entity_id"], set()).add(c["property"] or "@entity")
    expected = {}
    for row in rows:
        state = state_of(row)
        expected[state.entity_id] = {
            "list": state.list,
            "version": state.version,
            "deleted": state.deleted,
            "label": state.label,
            "properties": state.properties,
            "conflicted": sorted(open_props.get(state.entity_id, set())),
        }
    local = {entity_id: entity_view(c) for entity_id, c in device.server_copy.items()}
    assert local == expected, (
        f"{device.role} {device.device_id} in {wards}: copy != server",
        differences(local, expected),
    )
    if device.role == "supervisor":
        conflicts = await ConflictRow.select(
            ConflictRow.id, ConflictRow.status, ConflictRow.version
        ).where(ConflictRow.ward_code.is_in(wards))
        server_side = {c["id"]: (c["status"], c["version"]) for c in conflicts}
        copy = {i: (c["status"], c["version"]) for i, c in device.conflicts.items()}
        assert copy == server_side, "the supervisor's conflict records differ from the server's"


async def hand_over(device: ModelDevice, username: str) -> None:
    """Log `username` in on the device's tablet: the tablet is now theirs (and their stream's)."""
    device.session = await login(device.http, username, PASSWORD, device_id=device.device_id)


async def check_exactly_once(device: ModelDevice) -> None:
    sent = device.next_seq - 1
    user_id = device.session.user["id"]
    ledger = await OpLedger.select(OpLedger.op_seq).where(
        OpLedger.device_id == device.device_id, OpLedger.user_id == user_id
    )
    assert sorted(r["op_seq"] for r in ledger) == list(range(1, sent + 1))
    submissions = await Submission.select(Submission.op_seq).where(
        Submission.device_id == device.device_id, Submission.user_id == user_id
    )
    assert sorted(r["op_seq"] for r in submissions) == list(range(1, sent + 1))
    state = (
        await OpStream.select(OpStream.last_op_seq)
        .where(OpStream.device_id == device.device_id, OpStream.user_id == user_id)
        .first()
    )
    assert (state["last_op_seq"] if state else 0) == sent
    assert sorted(device.results) == list(range(1, sent + 1))


def _overwritten(
    write: Write, prop: str | None, later: list[Write], resolutions: list[Resolution]
) -> bool:
    """A later accepted write (or a resolution) that had seen this one."""
    for other in later if prop is not None else []:  # only a resolution undoes a delete
        if other is write or other.entity_id != write.entity_id or prop not in other.properties:
            continue
        same_device = (
            other.device_id == write.device_id
            and other.user_id == write.user_id
            and other.op_seq > write.op_seq
        )
        saw_it = write.version is not None and other.base_version >= write.version
        # The same value reached by two devices: a writer who started from it had seen it.
        saw_value = (
            prop in other.base_properties
            and other.base_properties[prop] == (write.properties[prop])
        )
        if same_device or saw_it or saw_value:
            return True
    assert write.delivered_tick is not None
    return any(
        r.entity_id == write.entity_id
        and (r.property is None or prop is None or r.property == prop)
        and r.tick > write.delivered_tick
        for r in resolutions
    )


async def check_nothing_lost(devices: list[ModelDevice], resolutions: list[Resolution]) -> None:
    writes = [w for d in devices for w in d.writes.values()]
    accepted = [w for w in writes if w.status in ACCEPTED]
    entity_ids = sorted({w.entity_id for w in accepted})
    if not entity_ids:
        return
    states = {
        r["entity_id"]: state_of(r)
        for r in await Entity.select().where(Entity.entity_id.is_in(entity_ids))
    }
    conflicts: dict[str, list[dict[str, Any]]] = {}
    for row in await ConflictRow.select().where(ConflictRow.entity_id.is_in(entity_ids)):
        conflicts.setdefault(row["entity_id"], []).append(row)

    def candidates(entity_id: str) -> list[tuple[str | None, Any]]:
        out = []
        for row in conflicts.get(entity_id, []):
            raw = row["candidates"]
            for candidate in msgspec.json.decode(raw) if isinstance(raw, str) else raw:
                out.append((row["property"], candidate["value"]))
        return out

    lost = []
    for write in accepted:
        state = states[write.entity_id]
        found = candidates(write.entity_id)
        if write.action == "delete":
            tombstone_kept = state.deleted or any(
                p is None and isinstance(v, dict) and v.get("deleted") is True for p, v in found
            )
            if not (tombstone_kept or _overwritten(write, None, accepted, resolutions)):
                lost.append((write, "delete"))
            continue
        for prop, value in write.properties.items():
            if prop in write.base_properties and write.base_properties[prop] == value:
                continue  # not edited: the device only restated the value it started from
            current = state.properties.get(prop) == value
            candidate = any(
                (p == prop and v == value)
                or (
                    p is None and isinstance(v, dict) and v.get("properties", {}).get(prop) == value
                )
                for p, v in found
            )
            if not (current or candidate or _overwritten(write, prop, accepted, resolutions)):
                lost.append((write, prop))
    if lost:
        # Everything needed to see how the value went: the entity's bookkeeping and its history.
        write = lost[0][0]
        state = states[write.entity_id]
        history = [w for w in writes if w.entity_id == write.entity_id]
        raise AssertionError(
            f"accepted values neither current, overwritten nor candidates: {lost}\n"
            f"entity now: {msgspec.to_builtins(state)}\n"
            f"conflicts: {conflicts.get(write.entity_id)}\n"
            f"writes: {history}\nresolutions: {resolutions}"
        )


async def test_devices_converge_without_loss_or_duplicates(api: Api) -> None:
    user_ids, usernames, devices = [], [], []
    for role in ("inspector", "inspector", "inspector", "supervisor", "inspector"):
        user = await api.create_user(role, ["00070"])
        user_ids.append(user["id"])
        usernames.append(user["username"])
        if len(devices) < GUEST:
            session = await login(api.http, user["username"], PASSWORD)
            devices.append(ModelDevice(api.http, session, role))
    # The guest's stream on each inspector's tablet: logged in there once, then handed back.
    guests = []
    for holder, username in zip(devices[:SUPERVISOR], usernames[:SUPERVISOR], strict=True):
        guest = await login(api.http, usernames[GUEST], PASSWORD, device_id=holder.device_id)
        guests.append(ModelDevice(api.http, guest, "inspector"))
        holder.session = await login(api.http, username, PASSWORD, device_id=holder.device_id)
    pool = sorted(r["code"] for r in await Ward.select(Ward.code) if r["code"] not in TEST_WARDS)
    bridge = LoopBridge(asyncio.get_running_loop())
    ctx = Context(api, bridge, user_ids, usernames, devices, guests, pool)
    await asyncio.to_thread(
        run_state_machine_as_test,
        make_machine(ctx),
        settings=settings(
            max_examples=20,
            stateful_step_count=35,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        ),
    )


async def test_a_losing_concurrent_edit_marks_the_record_conflicted_on_devices(api: Api) -> None:
    """When the edit that arrives second loses (manual policy, older HLC), the entity keeps its
    value but gains an open conflict: devices that already hold that version must learn it."""
    ward = "00070"
    a, b, observer = [
        ModelDevice(api.http, await api.user_session("inspector", [ward]), "inspector")
        for _ in range(3)
    ]
    entity_id = a.create(ward, {"business_name": "Quán Gió", "address": "1 Lý Thái Tổ"})
    await a.push()
    for device in (a, b, observer):
        await device.pull_all()
    b.update(entity_id, {"risk_class": "medium"})  # edited first offline: the older HLC
    await asyncio.sleep(0.005)
    a.update(entity_id, {"risk_class": "high"})
    await a.push()
    await observer.pull_all()
    await b.push()
    assert b.writes[1].status == "conflict"
    await observer.pull_all()
    await check_convergence(observer, [ward])
