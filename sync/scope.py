"""Scope algebra of pull (PROTOCOL.md "Pull"): what a device holds, what left it, what it lacks.

A user sees the entities of some wards (or every ward) and some lists. When that changes, pull
evicts what left the scope the device was served under and back-fills what the new scope adds.
These pure functions answer which (ward, list) pairs each of those is; pull turns the answers
into queries. A ward set is a sorted tuple of ward codes, or `EVERY_WARD` for a city-wide user.
"""

from __future__ import annotations

import msgspec

from schemas.identity import CITY_WIDE

Wards = tuple[str, ...]
EVERY_WARD: Wards = (CITY_WIDE,)


def ward_set(wards: Wards) -> Wards:
    """The canonical spelling: sorted and unique, or `EVERY_WARD` if it has the city-wide mark."""
    return EVERY_WARD if CITY_WIDE in wards else tuple(sorted(set(wards)))


class Scope(msgspec.Struct, frozen=True):
    wards: Wards
    lists: tuple[str, ...]

    def holds(self, ward: str, list_: str) -> bool:
        return list_ in self.lists and (self.wards == EVERY_WARD or ward in self.wards)


class WardFilter(msgspec.Struct, frozen=True):
    """The wards in `codes`; with `excluding`, every ward but those."""

    codes: Wards
    excluding: bool = False

    def matches(self, ward: str) -> bool:
        return (ward in self.codes) != self.excluding


class Region(msgspec.Struct, frozen=True):
    """The records of one ward filter and some lists."""

    wards: WardFilter
    lists: tuple[str, ...]

    def matches(self, ward: str, list_: str) -> bool:
        return list_ in self.lists and self.wards.matches(ward)


def common_wards(a: Wards, b: Wards) -> Wards:
    if a == EVERY_WARD:
        return b
    if b == EVERY_WARD:
        return a
    return tuple(sorted(set(a) & set(b)))


def narrowed(held: Scope, current: Scope) -> Scope:
    """What the device still holds in full once what left `current` is evicted from `held`."""
    lists = tuple(sorted(set(held.lists) & set(current.lists)))
    return Scope(common_wards(held.wards, current.wards), lists)


def wards_lost(served: Wards, current: Wards) -> WardFilter | None:
    """The wards of `served` not in `current`; None if there are none."""
    if current == EVERY_WARD:
        return None
    if served == EVERY_WARD:
        return WardFilter(current, excluding=True)
    lost = tuple(sorted(set(served) - set(current)))
    return WardFilter(lost) if lost else None


def left_scope(served: Scope, current: Scope) -> tuple[Region, ...]:
    """Regions whose union is exactly the (ward, list) pairs `served` holds and `current` does
    not: lost wards in every served list, and lost lists in every served ward."""
    regions = []
    lost = wards_lost(served.wards, current.wards)
    if lost is not None and served.lists:
        regions.append(Region(lost, served.lists))
    lost_lists = tuple(name for name in served.lists if name not in current.lists)
    if lost_lists and served.wards:
        everywhere = WardFilter((), excluding=True)
        wards = everywhere if served.wards == EVERY_WARD else WardFilter(served.wards)
        regions.append(Region(wards, lost_lists))
    return tuple(regions)


def backfill_wards(held: Scope, owed: Wards | None, current: Scope) -> Wards:
    """The wards to back-fill, in every list of `current`, once the device holds `held` in full
    and an unfinished back-fill still owed it `owed`: all that `current` holds and `held` does
    not, plus what was owed and is still in scope (a ward taken away during its back-fill is not
    back-filled further). Empty if there is nothing to back-fill; never outside `current`."""
    added_lists = set(current.lists) - set(held.lists)
    if added_lists or (held.wards != EVERY_WARD and current.wards == EVERY_WARD):
        return current.wards  # new lists (or the whole city): every ward of the scope
    if current.wards == EVERY_WARD or held.wards == EVERY_WARD:
        need: set[str] = set()  # city-wide before and now, or what is held covers the scope
    else:
        need = set(current.wards) - set(held.wards)
    if owed is not None:
        still_owed = common_wards(owed, current.wards)
        if still_owed == EVERY_WARD:
            return EVERY_WARD
        need |= set(still_owed)
    return tuple(sorted(need))
