"""Property tests of the merge engine: it agrees with the reference model on random multi-device
histories, concurrent changes commute, and no acknowledged value is ever lost."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.sync import EntityChange
from sync.hlc import Clock
from sync.merge import (
    ConflictStale,
    EntityState,
    MergeOutcome,
    NewConflict,
    WriteContext,
    Writer,
    apply_entity_change,
    find_duplicate_candidates,
    resolve_conflict,
)
from tests.unit.sync.factories import (
    ENTITY_ID,
    ESTABLISHMENTS,
    OTHER_ID,
    POLICIES,
    RISK_ORDER,
    WARD,
    change,
)
from tests.unit.sync.reference_model import ReferenceServer, Who

DEVICES = ("d1", "d2", "d3")
IDS = (ENTITY_ID, OTHER_ID)
EDITABLE = ("name", "risk_class", "owner_phone", "services", "visits")
T0 = 1_700_000_000_000


def value_for(name: str, current: Any) -> st.SearchStrategy[Any]:
    if name == "name":
        return st.sampled_from(["Sao Mai", "sao  mai", "Hoa Hong", "Bien Xanh"])
    if name == "risk_class":
        return st.sampled_from(RISK_ORDER)
    if name == "owner_phone":
        return st.sampled_from(["0911", "0922", "0933"])
    if name == "services":
        return st.lists(st.sampled_from(["karaoke", "bar", "massage"]), unique=True)
    return st.integers(min_value=0, max_value=3).map(lambda delta: (current or 0) + delta)


def same(name: str, left: Any, right: Any) -> bool:
    if POLICIES[name] == "set" and isinstance(left, list) and isinstance(right, list):
        return set(left) == set(right)
    return bool(left == right) and type(left) is type(right)


# -- comparison forms ---------------------------------------------------------------------------


def canonical_state(state: EntityState) -> dict[str, Any]:
    return {
        "version": state.version,
        "deleted": state.deleted,
        "label": state.label,
        "properties": dict(state.properties),
        "meta": {
            key: (
                state.prop_versions[key],
                state.prop_hlcs[key],
                tuple(msgspec_writer(state.prop_writers[key])),
            )
            for key in state.prop_versions
        },
    }


def msgspec_writer(writer: Writer) -> tuple[str, str, int]:
    return (writer.device_id, writer.user_id, writer.op_seq)


def canonical_conflict(entity_id: str, conflict: NewConflict) -> tuple[Any, ...]:
    candidates = [
        [c.value, c.hlc, c.device_id, c.user_id, c.op_seq, c.at_version]
        for c in conflict.candidates
    ]
    return (
        entity_id,
        conflict.kind,
        conflict.status,
        conflict.property,
        json.dumps(conflict.base),
        json.dumps(candidates),
        json.dumps(conflict.chosen),
        conflict.seen_version,
    )


# -- a small world of devices, the engine-backed server and the reference server ---------------


class Device:
    def __init__(self, name: str, time: list[int], skew: int) -> None:
        self.name = name
        self.clock = Clock(name, lambda: time[0] + skew)
        self.seq = 0
        self.local: dict[str, dict[str, Any]] = {}  # id -> {"version", "deleted", "props"}
        self.outbox: list[tuple[WriteContext, EntityChange]] = []

    def next_context(self) -> WriteContext:
        self.seq += 1
        return WriteContext(
            device_id=self.name, user_id=f"user-{self.name}", op_seq=self.seq, hlc=self.clock.send()
        )


class World:
    def __init__(self) -> None:
        self.states: dict[str, EntityState] = {}
        self.conflicts: list[tuple[str, NewConflict]] = []
        self.reference = ReferenceServer(
            {name: str(policy) for name, policy in POLICIES.items()},
            {"risk_class": RISK_ORDER},
            ESTABLISHMENTS.natural_key or (),
        )
        # Every stamped write: (device, op_seq, property) -> value; and those a later write saw.
        self.acknowledged: dict[tuple[str, int, str], Any] = {}
        self.causally_overwritten: set[tuple[str, int, str]] = set()

    def apply(self, ctx: WriteContext, entity_change: EntityChange) -> None:
        entity_id = entity_change.entity_id
        before = self.states.get(entity_id)
        outcome = apply_entity_change(before, entity_change, ESTABLISHMENTS, ctx)
        conflicts = list(outcome.conflicts)
        if before is None and outcome.state is not None:
            others = [s for key, s in self.states.items() if key != entity_id]
            conflicts += find_duplicate_candidates(outcome.state, others, ESTABLISHMENTS)
        who = Who(ctx.device_id, ctx.user_id, ctx.op_seq, ctx.hlc)
        reference_status = self.reference.apply(
            entity_id,
            entity_change.action,
            entity_change.base_version,
            dict(entity_change.properties),
            dict(entity_change.base_properties) if entity_change.base_properties else None,
            entity_change.label,
            who,
        )
        assert outcome.status == reference_status
        if outcome.state is None:
            return
        check_nothing_lost_in_step(before, entity_change, ctx, outcome)
        self.track_writes(before, outcome.state, entity_change.base_version, ctx)
        self.states[entity_id] = outcome.state
        self.conflicts += [(entity_id, conflict) for conflict in conflicts]

    def track_writes(
        self, before: EntityState | None, after: EntityState, base_version: int, ctx: WriteContext
    ) -> None:
        for name, value in after.properties.items():
            if after.prop_writers[name] != ctx.writer or after.prop_versions[name] != after.version:
                continue
            self.acknowledged[(ctx.device_id, ctx.op_seq, name)] = value
            if before is not None and name in before.properties:
                last = before.prop_writers[name]
                own = last.device_id == ctx.device_id and last.op_seq < ctx.op_seq
                if before.prop_versions[name] <= base_version or own:
                    self.causally_overwritten.add((last.device_id, last.op_seq, name))

    def resolve(self, index: int, choice: int, ctx: WriteContext) -> None:
        entity_id, conflict = self.conflicts[index]
        state = self.states[entity_id]
        try:
            outcome = resolve_conflict(state, conflict, ESTABLISHMENTS, ctx, choice=choice)
        except ConflictStale:
            result = "stale"
        else:
            result = "resolved"
            # The resolver saw every candidate: what it replaces is causally overwritten.
            for name in outcome.state.properties:
                if outcome.state.prop_writers[name] == ctx.writer:
                    last = state.prop_writers[name]
                    self.causally_overwritten.add((last.device_id, last.op_seq, name))
                    self.acknowledged[(ctx.device_id, ctx.op_seq, name)] = outcome.state.properties[
                        name
                    ]
            self.states[entity_id] = outcome.state
            self.conflicts[index] = (entity_id, outcome.resolved)
        who = Who(ctx.device_id, ctx.user_id, ctx.op_seq, ctx.hlc)
        assert self.reference.resolve(index, choice, who) == result

    def pull(self, device: Device) -> None:
        device.local = {
            key: {"version": s.version, "deleted": s.deleted, "props": dict(s.properties)}
            for key, s in self.states.items()
        }

    def assert_matches_reference(self) -> None:
        assert set(self.states) == set(self.reference.entities)
        for entity_id, state in self.states.items():
            assert canonical_state(state) == self.reference.canonical(entity_id)
        engine_conflicts = [canonical_conflict(e, c) for e, c in self.conflicts]
        assert engine_conflicts == self.reference.canonical_conflicts()

    def assert_no_acknowledged_value_lost(self) -> None:
        candidates: set[tuple[str, int, str, str]] = set()
        for _, conflict in self.conflicts:
            for c in conflict.candidates:
                if conflict.property is not None:
                    candidates.add((c.device_id, c.op_seq, conflict.property, json.dumps(c.value)))
                elif isinstance(c.value, dict) and "deleted" in c.value:
                    for name, value in c.value["properties"].items():
                        candidates.add((c.device_id, c.op_seq, name, json.dumps(value)))
        for (device, op_seq, name), value in self.acknowledged.items():
            entity_states = [s for s in self.states.values() if name in s.properties]
            current = any(
                s.prop_writers[name] == Writer(device, f"user-{device}", op_seq)
                and same(name, s.properties[name], value)
                for s in entity_states
            )
            assert (
                current
                or (device, op_seq, name) in self.causally_overwritten
                or (device, op_seq, name, json.dumps(value)) in candidates
            ), f"lost {name}={value!r} written by {device}#{op_seq}"


def check_nothing_lost_in_step(
    before: EntityState | None,
    entity_change: EntityChange,
    ctx: WriteContext,
    outcome: MergeOutcome,
) -> None:
    """The incoming value and any value it displaced without having seen it are kept."""
    after = outcome.state
    assert after is not None

    def kept_as_candidate(name: str, value: Any, device: str | None = None) -> bool:
        for conflict in outcome.conflicts:
            for c in conflict.candidates:
                if device is not None and c.device_id != device:
                    continue
                if conflict.property == name and same(name, c.value, value):
                    return True
                if conflict.property is None and name in c.value.get("properties", {}):
                    if same(name, c.value["properties"][name], value):
                        return True
        return False

    base_properties = entity_change.base_properties or {}
    for name, value in entity_change.properties.items():
        if name in base_properties and same(name, base_properties[name], value):
            continue  # not an edit: the writer left the value as it found it
        assert same(name, after.properties.get(name), value) or kept_as_candidate(
            name, value, ctx.device_id
        )
        if before is None or name not in before.properties:
            continue
        old = before.properties[name]
        last = before.prop_writers[name]
        seen = before.prop_versions[name] <= entity_change.base_version or (
            last.device_id == ctx.device_id and last.op_seq < ctx.op_seq
        )
        if not seen and not same(name, old, after.properties[name]):
            assert kept_as_candidate(name, old)
    if before is not None and not before.deleted and after.deleted:
        for name, old in before.properties.items():
            if before.prop_versions[name] > entity_change.base_version and not (
                before.prop_writers[name].device_id == ctx.device_id
                and before.prop_writers[name].op_seq < ctx.op_seq
            ):
                assert kept_as_candidate(name, old)


def draw_edit(data: st.DataObject, device: Device, entity_id: str) -> EntityChange:
    local = device.local[entity_id]
    names = data.draw(st.lists(st.sampled_from(EDITABLE), min_size=1, max_size=3, unique=True))
    props = {name: data.draw(value_for(name, local["props"].get(name))) for name in names}
    base = {name: local["props"].get(name) for name in names}
    label = data.draw(st.sampled_from([None, None, "Sao Mai", "Hoa Hong"]))
    action = "undelete" if local["deleted"] else "update"
    local["props"].update(props)
    local["deleted"] = False
    return change(action, local["version"], props, base, label, entity_id=entity_id)


def draw_create(data: st.DataObject, device: Device, entity_id: str) -> EntityChange:
    props: dict[str, Any] = {"ward_code": WARD}
    for name in EDITABLE:
        props[name] = data.draw(value_for(name, 0))
    device.local[entity_id] = {"version": 0, "deleted": False, "props": dict(props)}
    return change("create", 0, props, None, "Sao Mai", entity_id=entity_id)


def run_history(data: st.DataObject, allow_resolve: bool) -> World:
    time = [T0]
    skews = data.draw(st.lists(st.integers(-50, 50), min_size=3, max_size=3))
    devices = [Device(name, time, skew) for name, skew in zip(DEVICES, skews, strict=True)]
    supervisor = Device("sup", time, 0)
    world = World()
    steps = data.draw(st.integers(min_value=4, max_value=30))
    kinds = ["edit", "edit", "edit", "delete", "create", "pull", "push", "push", "tick"]
    if allow_resolve:
        kinds.append("resolve")
    for _ in range(steps):
        device = data.draw(st.sampled_from(devices))
        kind = data.draw(st.sampled_from(kinds))
        if kind == "tick":
            time[0] += data.draw(st.integers(min_value=0, max_value=30))
        elif kind == "pull":
            world.pull(device)
        elif kind == "push" and device.outbox:
            count = data.draw(st.integers(min_value=1, max_value=len(device.outbox)))
            for ctx, entity_change in device.outbox[:count]:
                world.apply(ctx, entity_change)
            del device.outbox[:count]
        elif kind == "create":
            unknown = [e for e in IDS if e not in device.local]
            if unknown:
                entity_change = draw_create(data, device, data.draw(st.sampled_from(unknown)))
                device.outbox.append((device.next_context(), entity_change))
        elif kind in ("edit", "delete") and device.local:
            entity_id = data.draw(st.sampled_from(sorted(device.local)))
            local = device.local[entity_id]
            if kind == "delete" and not local["deleted"]:
                local["deleted"] = True
                entity_change = change("delete", local["version"], entity_id=entity_id)
            else:
                entity_change = draw_edit(data, device, entity_id)
            device.outbox.append((device.next_context(), entity_change))
        elif kind == "resolve" and world.conflicts:
            index = data.draw(st.integers(min_value=0, max_value=len(world.conflicts) - 1))
            candidates = world.conflicts[index][1].candidates
            choice = data.draw(st.integers(min_value=0, max_value=len(candidates) - 1))
            world.resolve(index, choice, supervisor.next_context())
    # Quiescence: every outbox reaches the server, in an arbitrary interleaving.
    while any(device.outbox for device in devices):
        device = data.draw(st.sampled_from([d for d in devices if d.outbox]))
        ctx, entity_change = device.outbox.pop(0)
        world.apply(ctx, entity_change)
    return world


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_engine_matches_reference_model_on_random_histories(data: st.DataObject) -> None:
    world = run_history(data, allow_resolve=True)
    world.assert_matches_reference()


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_no_acknowledged_value_is_lost(data: st.DataObject) -> None:
    world = run_history(data, allow_resolve=False)
    world.assert_no_acknowledged_value_lost()


# -- commutativity ------------------------------------------------------------------------------


def base_state(data: st.DataObject) -> EntityState:
    props: dict[str, Any] = {"ward_code": WARD}
    for name in EDITABLE:
        props[name] = data.draw(value_for(name, 0))
    created = change("create", 0, props, None, "Sao Mai")
    seed = WriteContext(device_id="d0", user_id="user-d0", op_seq=1, hlc=f"{T0:013d}:00000:d0")
    outcome = apply_entity_change(None, created, ESTABLISHMENTS, seed)
    assert outcome.state is not None
    return outcome.state


def draw_concurrent_change(data: st.DataObject, state: EntityState | None) -> EntityChange:
    label = data.draw(st.sampled_from([None, "Sao Mai", "Hoa Hong", "Bien Xanh"]))
    if state is None:  # the same id created by two devices
        props = {name: data.draw(value_for(name, 0)) for name in EDITABLE}
        return change("create", 0, {"ward_code": WARD, **props}, None, label or "Sao Mai")
    if data.draw(st.integers(min_value=0, max_value=3)) == 0:
        return change("delete", state.version)
    names = data.draw(st.lists(st.sampled_from(EDITABLE), min_size=1, max_size=5, unique=True))
    props = {name: data.draw(value_for(name, state.properties[name])) for name in names}
    base = {name: state.properties[name] for name in names}
    return change("update", state.version, props, base, label)


def comparable(outcomes: list[MergeOutcome]) -> tuple[Any, ...]:
    final = outcomes[-1].state
    assert final is not None
    properties = {
        name: sorted(value) if POLICIES[name] == "set" and isinstance(value, list) else value
        for name, value in final.properties.items()
    }
    conflicts = []
    for outcome in outcomes:
        for conflict in outcome.conflicts:
            # The kind of a delete/update conflict names which side arrived last.
            kind = "delete_vs_update" if conflict.property is None else conflict.kind
            chosen = (
                sorted(conflict.chosen) if isinstance(conflict.chosen, list) else conflict.chosen
            )
            candidates = [(c.value, c.hlc, c.device_id, c.op_seq) for c in conflict.candidates]
            conflicts.append(
                json.dumps([kind, conflict.status, conflict.property, chosen, candidates])
            )
    return (final.deleted, final.label, properties, sorted(conflicts))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_two_concurrent_changes_commute(data: st.DataObject) -> None:
    # Updates and deletes from one base version, or two creates of one id. (A create of an
    # existing id carries no base values, so it cannot commute with updates; see sync/merge.py.)
    state = None if data.draw(st.integers(min_value=0, max_value=4)) == 0 else base_state(data)
    first = draw_concurrent_change(data, state)
    second = draw_concurrent_change(data, state)
    walls = data.draw(st.lists(st.integers(T0 + 1, T0 + 3), min_size=2, max_size=2))
    ctx_1 = WriteContext(device_id="d1", user_id="u1", op_seq=1, hlc=f"{walls[0]:013d}:00000:d1")
    ctx_2 = WriteContext(device_id="d2", user_id="u2", op_seq=1, hlc=f"{walls[1]:013d}:00000:d2")

    def in_order(
        a: tuple[EntityChange, WriteContext], b: tuple[EntityChange, WriteContext]
    ) -> list[MergeOutcome]:
        one = apply_entity_change(state, a[0], ESTABLISHMENTS, a[1])
        two = apply_entity_change(one.state, b[0], ESTABLISHMENTS, b[1])
        assert one.status != "rejected" and two.status != "rejected"
        return [one, two]

    forward = in_order((first, ctx_1), (second, ctx_2))
    backward = in_order((second, ctx_2), (first, ctx_1))
    assert comparable(forward) == comparable(backward)
