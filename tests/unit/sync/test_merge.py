"""The merge rules of PROTOCOL.md "Entities and conflicts", one rule or policy per test."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from sync.merge import (
    DELETED_KEY,
    LABEL_KEY,
    ConflictStale,
    EntityListDef,
    EntityState,
    MergeOutcome,
    Policy,
    PropertyDef,
    ResolutionInvalid,
    WriteContext,
    Writer,
    apply_entity_change,
    find_duplicate_candidates,
    natural_key,
    resolve_conflict,
)
from tests.unit.sync.factories import (
    BASE_PROPERTIES,
    ENTITY_ID,
    ESTABLISHMENTS,
    OTHER_ID,
    WARD,
    change,
    create_change,
    ctx,
)

T0 = 1_700_000_000_000


def created() -> EntityState:
    outcome = apply_entity_change(None, create_change(), ESTABLISHMENTS, ctx("dev-c", 1, T0))
    assert outcome.state is not None
    return outcome.state


def update(
    state: EntityState | None,
    props: dict[str, Any],
    context: WriteContext,
    base_version: int = 1,
    base: dict[str, Any] | None = None,
    action: str = "update",
) -> MergeOutcome:
    if base is None:
        base = {name: BASE_PROPERTIES[name] for name in props if name in BASE_PROPERTIES}
    return apply_entity_change(
        state, change(action, base_version, props, base), ESTABLISHMENTS, context
    )


def state_of(outcome: MergeOutcome) -> EntityState:
    assert outcome.state is not None
    return outcome.state


# -- create, validation ---------------------------------------------------------------------------


def test_create_stamps_every_property_with_version_one() -> None:
    state = created()
    assert state.version == 1 and not state.deleted and state.label == "Sao Mai"
    assert state.properties == BASE_PROPERTIES
    assert set(state.prop_versions.values()) == {1}
    assert state.prop_writers["name"] == Writer("dev-c", "user-dev-c", 1)
    assert state.prop_versions[LABEL_KEY] == 1


@pytest.mark.parametrize(
    ("the_change", "code", "path"),
    [
        (change("create", 0, {"name": "x"}), "scope_missing", "properties.ward_code"),
        (change("create", 0, {"ward_code": WARD, "colour": "red"}), "property_unknown", None),
        (change("create", 0, {"ward_code": WARD, "visits": "many"}), "property_type", None),
        (
            change("create", 0, {"ward_code": WARD, "risk_class": "extreme"}),
            "rank_value_unknown",
            None,
        ),
        (change("create", 0, {"ward_code": WARD, "services": "bar"}), "property_type", None),
        (change("update", 0, {"name": "x"}), "entity_not_found", "entity_id"),
        (change("delete", 0), "entity_not_found", "entity_id"),
    ],
)
def test_invalid_changes_are_rejected_without_effect(
    the_change: Any, code: str, path: str | None
) -> None:
    outcome = apply_entity_change(None, the_change, ESTABLISHMENTS, ctx("d", 1, T0))
    assert outcome.status == "rejected"
    assert outcome.state is None and not outcome.changed
    assert code in {error.code for error in outcome.errors}
    if path:
        assert path in {error.path for error in outcome.errors}


def test_counter_update_without_its_base_is_rejected() -> None:
    state = created()
    outcome = update(state, {"visits": 4}, ctx("d", 1, T0 + 1), base={})
    assert outcome.status == "rejected" and outcome.state == state
    assert [error.code for error in outcome.errors] == ["base_property_missing"]


def test_base_version_from_the_future_is_rejected() -> None:
    outcome = update(created(), {"name": "x"}, ctx("d", 1, T0 + 1), base_version=9)
    assert [error.code for error in outcome.errors] == ["base_version_ahead"]


def test_change_for_another_list_is_rejected() -> None:
    other = msgspec.structs.replace(change("update", 1, {"name": "x"}), list="cases")
    outcome = apply_entity_change(created(), other, ESTABLISHMENTS, ctx("d", 1, T0 + 1))
    assert [error.code for error in outcome.errors] == ["list_mismatch"]


def test_list_definition_is_checked() -> None:
    with pytest.raises(ValueError, match="scope"):
        EntityListDef(name="x", properties={"name": PropertyDef()})
    with pytest.raises(ValueError, match="rank_order"):
        PropertyDef(type="select_one", policy=Policy.RANK)
    with pytest.raises(ValueError, match="numeric"):
        PropertyDef(policy=Policy.COUNTER)


# -- the three cases per property -----------------------------------------------------------------


def test_fast_forward_when_the_property_was_seen() -> None:
    state = created()
    outcome = update(state, {"name": "Sao Mai 2"}, ctx("d1", 1, T0 + 1))
    new = state_of(outcome)
    assert outcome.status == "applied" and not outcome.conflicts
    assert new.version == 2 and new.properties["name"] == "Sao Mai 2"
    assert new.prop_versions["name"] == 2 and new.prop_versions["ward_code"] == 1
    # A second device that had seen version 2 fast-forwards too, even with an older clock.
    later = update(new, {"name": "Sao Mai 3"}, ctx("d2", 1, T0 - 10_000), base_version=2)
    assert later.status == "applied" and state_of(later).properties["name"] == "Sao Mai 3"


def test_converged_concurrent_edit_is_no_conflict_and_no_new_version() -> None:
    first = state_of(update(created(), {"name": "Same"}, ctx("d1", 1, T0 + 1)))
    second = update(first, {"name": "Same"}, ctx("d2", 1, T0 + 2))
    assert second.status == "applied" and not second.conflicts and not second.changed
    assert second.state == first


def test_own_earlier_op_is_never_in_conflict() -> None:
    first = state_of(update(created(), {"owner_phone": "0911"}, ctx("d1", 1, T0 + 1)))
    # d1 has not pulled version 2, so its next op still says base_version 1.
    own = update(first, {"owner_phone": "0922"}, ctx("d1", 2, T0 + 2))
    assert own.status == "applied" and not own.conflicts
    assert state_of(own).properties["owner_phone"] == "0922"
    other = update(first, {"owner_phone": "0933"}, ctx("d2", 7, T0 + 3))
    assert other.status == "conflict"


def test_untouched_properties_never_conflict() -> None:
    first = state_of(update(created(), {"name": "A"}, ctx("d1", 1, T0 + 1)))
    second = update(first, {"owner_phone": "0999"}, ctx("d2", 1, T0 + 2))
    assert second.status == "applied" and not second.conflicts
    assert state_of(second).properties["name"] == "A"


# -- policies -------------------------------------------------------------------------------------


def concurrent(
    prop: str, value_1: Any, value_2: Any, wall_1: int = T0 + 1, wall_2: int = T0 + 2
) -> tuple[MergeOutcome, MergeOutcome]:
    """d1 then d2 both edit `prop` from version 1."""
    first = update(created(), {prop: value_1}, ctx("d1", 1, wall_1))
    second = update(state_of(first), {prop: value_2}, ctx("d2", 1, wall_2))
    return first, second


def test_lww_later_hlc_wins_and_loser_is_kept() -> None:
    _, second = concurrent("name", "One", "Two")
    assert second.status == "merged" and state_of(second).properties["name"] == "Two"
    (conflict,) = second.conflicts
    assert (conflict.kind, conflict.status, conflict.property) == (
        "concurrent_update",
        "auto_resolved",
        "name",
    )
    assert [c.value for c in conflict.candidates] == ["One", "Two"]
    assert [c.device_id for c in conflict.candidates] == ["d1", "d2"]
    assert conflict.chosen == "Two" and conflict.base == "Karaoke Sao Mai"


def test_lww_earlier_hlc_arriving_late_loses_but_is_kept() -> None:
    _, second = concurrent("name", "One", "Two", wall_1=T0 + 5, wall_2=T0 + 2)
    assert state_of(second).properties["name"] == "One"
    assert not second.changed  # nothing changed on the entity, so no new version
    (conflict,) = second.conflicts
    assert conflict.chosen == "One" and "Two" in [c.value for c in conflict.candidates]


def test_lww_identical_clock_is_broken_by_device_id() -> None:
    state = created()
    first = update(state, {"name": "from-b"}, ctx("b", 1, T0 + 1, node="srv"))
    second = update(state_of(first), {"name": "from-a"}, ctx("a", 1, T0 + 1, node="srv"))
    assert state_of(second).properties["name"] == "from-b"  # "b" > "a"


def test_manual_opens_a_conflict_with_both_candidates() -> None:
    _, second = concurrent("owner_phone", "0911", "0922")
    assert second.status == "conflict"
    (conflict,) = second.conflicts
    assert conflict.status == "open" and conflict.chosen is None
    assert [c.value for c in conflict.candidates] == ["0911", "0922"]
    # Provisional value until a person resolves: the deterministic (HLC) pick.
    assert state_of(second).properties["owner_phone"] == "0922"


def test_rank_higher_state_wins_whatever_the_clock() -> None:
    _, second = concurrent("risk_class", "high", "low")
    assert state_of(second).properties["risk_class"] == "high"
    (conflict,) = second.conflicts
    assert conflict.status == "auto_resolved" and conflict.chosen == "high"
    _, other = concurrent("risk_class", "low", "high")
    assert state_of(other).properties["risk_class"] == "high"


def test_rank_can_go_down_when_the_writer_saw_the_higher_value() -> None:
    first = state_of(update(created(), {"risk_class": "high"}, ctx("d1", 1, T0 + 1)))
    down = update(first, {"risk_class": "low"}, ctx("d2", 1, T0 + 2), base_version=2)
    assert down.status == "applied" and state_of(down).properties["risk_class"] == "low"


def test_set_is_a_three_way_merge() -> None:
    # base {karaoke, bar}: d1 adds massage, d2 removes bar.
    _, second = concurrent("services", ["karaoke", "bar", "massage"], ["karaoke"])
    assert sorted(state_of(second).properties["services"]) == ["karaoke", "massage"]
    (conflict,) = second.conflicts
    assert conflict.status == "auto_resolved"
    assert sorted(conflict.chosen) == ["karaoke", "massage"]


def test_set_with_equal_members_in_another_order_is_converged() -> None:
    _, second = concurrent("services", ["bar", "karaoke", "x"], ["x", "karaoke", "bar"])
    assert not second.conflicts and not second.changed


def test_counter_deltas_add() -> None:
    _, second = concurrent("visits", 4, 6)  # +1 and +3 from base 3
    assert state_of(second).properties["visits"] == 7
    (conflict,) = second.conflicts
    assert conflict.chosen == 7 and conflict.status == "auto_resolved"


def test_counter_equal_increments_are_two_increments() -> None:
    _, second = concurrent("visits", 4, 4)
    assert state_of(second).properties["visits"] == 5


def test_label_is_last_writer_wins_without_conflict() -> None:
    state = created()
    first = apply_entity_change(
        state, change("update", 1, label="Later"), ESTABLISHMENTS, ctx("d1", 1, T0 + 9)
    )
    second = apply_entity_change(
        state_of(first), change("update", 1, label="Earlier"), ESTABLISHMENTS, ctx("d2", 1, T0 + 2)
    )
    assert state_of(second).label == "Later" and not second.conflicts


# -- entity level ---------------------------------------------------------------------------------


def test_delete_makes_a_tombstone() -> None:
    state = created()
    outcome = update(state, {}, ctx("d1", 1, T0 + 1), action="delete")
    tombstone = state_of(outcome)
    assert outcome.status == "applied" and tombstone.deleted and tombstone.version == 2
    assert tombstone.properties == state.properties  # kept for undelete
    assert tombstone.prop_writers[DELETED_KEY].device_id == "d1"
    again = update(tombstone, {}, ctx("d2", 1, T0 + 2), action="delete")
    assert again.state == tombstone and not again.conflicts


def test_delete_concurrent_with_unseen_update_is_a_conflict() -> None:
    edited = state_of(update(created(), {"name": "Renamed", "visits": 5}, ctx("d1", 1, T0 + 1)))
    outcome = update(edited, {}, ctx("d2", 1, T0 + 2), action="delete")
    assert outcome.status == "conflict" and state_of(outcome).deleted
    (conflict,) = outcome.conflicts
    assert conflict.kind == "delete_update" and conflict.status == "open"
    values = [c.value for c in conflict.candidates]
    assert {"deleted": False, "properties": {"name": "Renamed", "visits": 5}} in values
    assert {"deleted": True, "properties": {}} in values


def test_update_of_a_deleted_entity_is_a_conflict_and_stays_deleted() -> None:
    tombstone = state_of(update(created(), {}, ctx("d1", 1, T0 + 1), action="delete"))
    outcome = update(tombstone, {"name": "Renamed"}, ctx("d2", 1, T0 + 2))
    new = state_of(outcome)
    assert outcome.status == "conflict" and new.deleted
    assert new.properties["name"] == "Renamed"  # kept on the tombstone, restored by undelete
    (conflict,) = outcome.conflicts
    assert conflict.kind == "update_after_delete" and conflict.status == "open"
    assert {"deleted": False, "properties": {"name": "Renamed"}} in [
        c.value for c in conflict.candidates
    ]


def test_undelete_revives_the_entity() -> None:
    tombstone = state_of(update(created(), {}, ctx("d1", 1, T0 + 1), action="delete"))
    outcome = update(
        tombstone, {"name": "Back"}, ctx("d2", 1, T0 + 2), base_version=2, action="undelete"
    )
    revived = state_of(outcome)
    assert outcome.status == "applied" and not revived.deleted and revived.version == 3
    assert revived.properties["name"] == "Back"


def test_create_of_an_existing_id_is_an_update_from_base_zero() -> None:
    state = created()
    again = apply_entity_change(
        state,
        create_change({**BASE_PROPERTIES, "name": "Other", "visits": 2}),
        ESTABLISHMENTS,
        ctx("d9", 1, T0 + 5),
    )
    new = state_of(again)
    assert new.properties["name"] == "Other"  # lww, later clock
    assert new.properties["visits"] == 5  # counter: 3 + (2 - 0)
    assert {c.property for c in again.conflicts} == {"name", "visits"}
    # The creating device re-sending its create (a later op) is its own history: no conflict.
    own = apply_entity_change(state, create_change(), ESTABLISHMENTS, ctx("dev-c", 2, T0 + 6))
    assert not own.conflicts
    assert state_of(own).version == 1 and state_of(own).properties == state.properties


# -- duplicates -----------------------------------------------------------------------------------


def test_duplicate_candidates_by_natural_key() -> None:
    existing = created()
    twin_create = create_change(
        {"ward_code": WARD, "name": "  karaoke  SAO MAI "}, entity_id=OTHER_ID
    )
    twin = state_of(apply_entity_change(None, twin_create, ESTABLISHMENTS, ctx("d2", 1, T0 + 1)))
    elsewhere = msgspec.structs.replace(
        existing, properties={**existing.properties, "ward_code": "00007"}
    )
    dead = msgspec.structs.replace(existing, deleted=True)
    assert natural_key(twin.properties, ESTABLISHMENTS) == natural_key(
        existing.properties, ESTABLISHMENTS
    )

    (conflict,) = find_duplicate_candidates(twin, [existing, twin], ESTABLISHMENTS)
    assert conflict.kind == "duplicate_candidate" and conflict.status == "open"
    assert {c.value["entity_id"] for c in conflict.candidates} == {ENTITY_ID, OTHER_ID}
    assert find_duplicate_candidates(twin, [elsewhere, dead], ESTABLISHMENTS) == []


def test_no_natural_key_no_duplicates() -> None:
    no_key = msgspec.structs.replace(ESTABLISHMENTS, natural_key=None)
    state = created()
    other = msgspec.structs.replace(state, entity_id=OTHER_ID)
    assert find_duplicate_candidates(other, [state], no_key) == []


# -- resolution -----------------------------------------------------------------------------------


def open_manual_conflict() -> tuple[EntityState, Any]:
    _, second = concurrent("owner_phone", "0911", "0922")
    return state_of(second), second.conflicts[0]


def test_resolving_writes_the_chosen_candidate_as_a_new_version() -> None:
    state, conflict = open_manual_conflict()
    outcome = resolve_conflict(state, conflict, ESTABLISHMENTS, ctx("sup", 1, T0 + 9), choice=0)
    assert outcome.state.properties["owner_phone"] == "0911"
    assert outcome.state.version == state.version + 1 and outcome.changed
    assert outcome.resolved.status == "resolved" and outcome.resolved.chosen == "0911"
    assert outcome.state.prop_writers["owner_phone"].device_id == "sup"


def test_resolving_with_an_explicit_value() -> None:
    state, conflict = open_manual_conflict()
    outcome = resolve_conflict(state, conflict, ESTABLISHMENTS, ctx("sup", 1, T0 + 9), value="0933")
    assert outcome.state.properties["owner_phone"] == "0933"


def test_resolving_after_the_property_moved_on_is_stale() -> None:
    state, conflict = open_manual_conflict()
    moved = state_of(
        update(state, {"owner_phone": "0944"}, ctx("d3", 1, T0 + 9), base_version=state.version)
    )
    with pytest.raises(ConflictStale) as info:
        resolve_conflict(moved, conflict, ESTABLISHMENTS, ctx("sup", 1, T0 + 10), choice=0)
    assert info.value.code == "stale"
    # Another property moving on does not make it stale.
    other = state_of(update(state, {"name": "N"}, ctx("d3", 1, T0 + 9), base_version=state.version))
    resolve_conflict(other, conflict, ESTABLISHMENTS, ctx("sup", 1, T0 + 10), choice=0)


@pytest.mark.parametrize(
    ("choice", "value"), [(5, msgspec.UNSET), (None, 12), (None, msgspec.UNSET)]
)
def test_bad_resolutions_are_refused(choice: int | None, value: Any) -> None:
    state, conflict = open_manual_conflict()
    with pytest.raises(ResolutionInvalid) as info:
        resolve_conflict(
            state, conflict, ESTABLISHMENTS, ctx("sup", 1, T0 + 9), choice=choice, value=value
        )
    assert info.value.code == "resolution_invalid"


def test_resolving_delete_update_by_keeping_the_entity() -> None:
    edited = state_of(update(created(), {"name": "Renamed"}, ctx("d1", 1, T0 + 1)))
    deleted = update(edited, {}, ctx("d2", 1, T0 + 2), action="delete")
    conflict = deleted.conflicts[0]
    keep = next(i for i, c in enumerate(conflict.candidates) if not c.value["deleted"])
    outcome = resolve_conflict(
        state_of(deleted), conflict, ESTABLISHMENTS, ctx("sup", 1, T0 + 3), choice=keep
    )
    assert not outcome.state.deleted and outcome.state.properties["name"] == "Renamed"
    assert outcome.state.version == state_of(deleted).version + 1
    with pytest.raises(ConflictStale):
        resolve_conflict(
            outcome.state, conflict, ESTABLISHMENTS, ctx("sup", 2, T0 + 4), choice=keep
        )


def test_resolving_a_duplicate_only_records_the_decision() -> None:
    existing = created()
    twin = msgspec.structs.replace(existing, entity_id=OTHER_ID)
    (conflict,) = find_duplicate_candidates(twin, [existing], ESTABLISHMENTS)
    outcome = resolve_conflict(twin, conflict, ESTABLISHMENTS, ctx("sup", 1, T0 + 1), choice=1)
    assert outcome.state == twin and not outcome.changed
    assert outcome.resolved.status == "resolved"


# -- persistence ----------------------------------------------------------------------------------


def test_state_round_trips_through_json_columns() -> None:
    state = state_of(update(created(), {"name": "X"}, ctx("d1", 1, T0 + 1)))
    row = msgspec.json.decode(msgspec.json.encode(state))
    assert row["prop_writers"]["name"] == ["d1", "user-d1", 1]
    assert msgspec.convert(row, EntityState) == state
