"""The 126 official communes/wards of Hanoi, loaded from vietnam-provinces (never typed by hand)."""

from __future__ import annotations

from functools import cache

from vietnam_provinces import ProvinceCode
from vietnam_provinces import Ward as OfficialWard

from schemas.identity import Ward
from server.db.engine import transaction
from server.db.tables import Ward as WardRow

HANOI = ProvinceCode(1)


@cache
def _official_rows() -> tuple[WardRow, ...]:
    rows = [
        WardRow(
            code=f"{int(w.code):05d}", name=w.name, kind=w.division_type.value, codename=w.codename
        )
        for w in OfficialWard.iter_all()
        if w.province_code == HANOI
    ]
    return tuple(sorted(rows, key=lambda r: r.code))


@cache
def official_ward_codes() -> frozenset[str]:
    return frozenset(r.code for r in _official_rows())


async def seed_wards() -> int:
    """Insert missing wards and correct changed names; idempotent. Returns rows inserted."""
    stored = {
        r["code"]: (r["name"], r["kind"])
        for r in await WardRow.select(WardRow.code, WardRow.name, WardRow.kind)
    }
    missing = [r for r in _official_rows() if r.code not in stored]
    changed = [
        r for r in _official_rows() if r.code in stored and stored[r.code] != (r.name, r.kind)
    ]
    if not missing and not changed:
        return 0
    async with transaction():
        if missing:
            await WardRow.insert(
                *[
                    WardRow(code=r.code, name=r.name, kind=r.kind, codename=r.codename)
                    for r in missing
                ]
            )
        for r in changed:
            await WardRow.update({WardRow.name: r.name, WardRow.kind: r.kind}).where(
                WardRow.code == r.code
            )
    return len(missing)


async def list_wards() -> list[Ward]:
    rows = await WardRow.select(WardRow.code, WardRow.name, WardRow.kind).order_by(WardRow.code)
    return [Ward(code=r["code"], name=r["name"], kind=r["kind"]) for r in rows]
