"""The scope algebra of pull, checked pair by pair against what a scope holds."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sync.scope import (
    EVERY_WARD,
    Scope,
    Wards,
    backfill_wards,
    common_wards,
    left_scope,
    narrowed,
    ward_set,
    wards_lost,
)

WARDS = ("00004", "00007", "00008", "00070")
LISTS = ("cases", "establishments", "tips")
# Every ward a record can be in: also one that no scope here names (city-wide users see it).
ANY_WARD = (*WARDS, "00025")
PAIRS = [(ward, name) for ward in ANY_WARD for name in LISTS]

ward_sets = st.one_of(
    st.just(EVERY_WARD), st.lists(st.sampled_from(WARDS), unique=True).map(tuple).map(ward_set)
)
scopes = st.builds(
    Scope, ward_sets, st.lists(st.sampled_from(LISTS), unique=True).map(lambda x: tuple(sorted(x)))
)


def sees(wards: Wards, ward: str) -> bool:
    return wards == EVERY_WARD or ward in wards


@given(ward_sets, ward_sets)
def test_common_wards_are_the_wards_both_see(a: Wards, b: Wards) -> None:
    common = common_wards(a, b)
    assert all(sees(common, w) == (sees(a, w) and sees(b, w)) for w in ANY_WARD)
    assert common == ward_set(common)


@given(scopes, scopes)
def test_narrowed_holds_what_both_hold(held: Scope, current: Scope) -> None:
    still = narrowed(held, current)
    assert all(still.holds(*p) == (held.holds(*p) and current.holds(*p)) for p in PAIRS)


@given(ward_sets, ward_sets)
def test_wards_lost_are_those_served_and_no_longer_seen(served: Wards, current: Wards) -> None:
    lost = wards_lost(served, current)
    for ward in ANY_WARD:
        expected = sees(served, ward) and not sees(current, ward)
        assert (lost is not None and lost.matches(ward)) == expected, ward


@given(scopes, scopes)
def test_left_scope_is_exactly_what_was_served_and_is_out_of_scope_now(
    served: Scope, current: Scope
) -> None:
    regions = left_scope(served, current)
    for pair in PAIRS:
        left = any(region.matches(*pair) for region in regions)
        assert left == (served.holds(*pair) and not current.holds(*pair)), pair
    assert all(region.lists for region in regions), "a region with no list matches nothing"


@given(scopes, st.one_of(st.none(), ward_sets), scopes)
def test_backfill_brings_what_is_missing_and_nothing_out_of_scope(
    held: Scope, owed: Wards | None, current: Scope
) -> None:
    wards = backfill_wards(held, owed, current)
    backfill = Scope(wards, current.lists)
    for pair in PAIRS:
        if backfill.holds(*pair):
            assert current.holds(*pair), f"back-fills {pair} outside the scope"
        if current.holds(*pair) and not held.holds(*pair):
            assert backfill.holds(*pair), f"{pair} came into scope but is not back-filled"
        if owed is not None and sees(owed, pair[0]) and current.holds(*pair):
            assert backfill.holds(*pair), f"{pair} was still owed but is dropped"
    assert wards == ward_set(wards)


@given(scopes, scopes, scopes)
def test_evicting_toward_a_scope_and_back_restores_it(
    served: Scope, away: Scope, back: Scope
) -> None:
    """The scope shrinks to `away`, then becomes `back` before its evictions are done: what the
    device still holds plus the back-fill cover `back` (a ward given back mid-way)."""
    held = narrowed(narrowed(served, away), back)
    backfill = Scope(backfill_wards(held, None, back), back.lists)
    for pair in PAIRS:
        if back.holds(*pair):
            assert held.holds(*pair) or backfill.holds(*pair), pair


def test_a_ward_taken_away_during_its_backfill_is_not_backfilled_further() -> None:
    held = Scope(("00004",), ("establishments",))
    current = Scope(("00004",), ("establishments",))
    assert backfill_wards(held, ("00004", "00008"), current) == ("00004",)
    assert backfill_wards(held, ("00008",), current) == ()


def test_city_wide_to_some_wards_loses_every_other_ward() -> None:
    (region,) = left_scope(Scope(EVERY_WARD, ("cases",)), Scope(("00004",), ("cases",)))
    assert region.matches("00025", "cases") and not region.matches("00004", "cases")
