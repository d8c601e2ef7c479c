"""A deliberately naive model of the entity merge rules, written from PROTOCOL.md and the design
note of sync/merge.py without sharing its code. It keeps plain dicts, re-derives every decision
from the per-property records, and is only used to cross-check the engine on random histories.

Entity:   {"version", "deleted", "label", "props": {name: Rec}, "label_rec": Rec|None,
           "deleted_rec": Rec|None}
Rec:      {"value", "ver", "hlc", "dev", "user", "seq"}
Conflict: {"entity_id", "kind", "status", "property", "base", "candidates": [Cand], "chosen",
           "seen_version"}; Cand = (value, hlc, dev, user, seq, at_version)
"""

from __future__ import annotations

import copy
import json
import unicodedata
from typing import Any

TOMBSTONE = {"deleted": True, "properties": {}}


class Who:
    def __init__(self, dev: str, user: str, seq: int, hlc: str) -> None:
        self.dev, self.user, self.seq, self.hlc = dev, user, seq, hlc


class ReferenceServer:
    def __init__(
        self,
        policies: dict[str, str],
        rank_orders: dict[str, tuple[str, ...]],
        key: tuple[str, ...],
    ) -> None:
        self.policies = policies
        self.rank_orders = rank_orders
        self.natural_key_names = key
        self.entities: dict[str, dict[str, Any]] = {}
        self.conflicts: list[dict[str, Any]] = []

    # -- small rules -----------------------------------------------------------------------------

    def equal(self, name: str, a: Any, b: Any) -> bool:
        if self.policies[name] == "set" and isinstance(a, list) and isinstance(b, list):
            return sorted(set(a)) == sorted(set(b))
        return type(a) is type(b) and a == b

    @staticmethod
    def rec(value: Any, version: int, who: Who) -> dict[str, Any]:
        return {
            "value": value,
            "ver": version,
            "hlc": who.hlc,
            "dev": who.dev,
            "user": who.user,
            "seq": who.seq,
        }

    @staticmethod
    def knew(rec: dict[str, Any] | None, base_version: int, who: Who) -> bool:
        if rec is None or rec["ver"] <= base_version:
            return True
        return rec["dev"] == who.dev and rec["user"] == who.user and rec["seq"] < who.seq

    @staticmethod
    def cand(value: Any, rec_or_who: Any, at_version: int) -> tuple[Any, ...]:
        if isinstance(rec_or_who, Who):
            w = rec_or_who
            return (value, w.hlc, w.dev, w.user, w.seq, at_version)
        r = rec_or_who
        return (value, r["hlc"], r["dev"], r["user"], r["seq"], at_version)

    @staticmethod
    def sort_cands(cands: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        return sorted(cands, key=lambda c: (c[1], c[2], c[4]))

    def add_conflict(self, entity_id: str, **fields: Any) -> dict[str, Any]:
        conflict = {"entity_id": entity_id, "base": None, "chosen": None, **fields}
        self.conflicts.append(conflict)
        return conflict

    # -- changes -----------------------------------------------------------------------------------

    def apply(
        self,
        entity_id: str,
        action: str,
        base_version: int,
        props: dict[str, Any],
        base_props: dict[str, Any] | None,
        label: str | None,
        who: Who,
    ) -> str:
        """Returns the entity status; appends any conflicts to self.conflicts."""
        entity = self.entities.get(entity_id)
        if entity is None:
            if action != "create":
                return "rejected"
            self.entities[entity_id] = {
                "version": 1,
                "deleted": False,
                "label": label,
                "props": {n: self.rec(v, 1, who) for n, v in props.items()},
                "label_rec": self.rec(label, 1, who) if label is not None else None,
                "deleted_rec": None,
            }
            self.find_duplicates(entity_id, who)
            return "applied"

        old = copy.deepcopy(entity)
        new_version = old["version"] + 1
        touched = False
        new_conflicts: list[dict[str, Any]] = []

        if action == "delete":
            if old["deleted"]:
                return "applied"
            entity["deleted"] = True
            entity["deleted_rec"] = self.rec(None, new_version, who)
            entity["version"] = new_version
            unseen = sorted(
                n for n, r in old["props"].items() if not self.knew(r, base_version, who)
            )
            if unseen:
                newest = unseen[0]
                for n in unseen:
                    r, best = old["props"][n], old["props"][newest]
                    if (r["hlc"], r["dev"], r["seq"]) > (best["hlc"], best["dev"], best["seq"]):
                        newest = n
                live_value = {
                    "deleted": False,
                    "properties": {n: old["props"][n]["value"] for n in unseen},
                }
                live = self.cand(
                    live_value, old["props"][newest], max(old["props"][n]["ver"] for n in unseen)
                )
                dead = self.cand(TOMBSTONE, who, old["version"])
                new_conflicts.append(
                    self.add_conflict(
                        entity_id,
                        kind="delete_update",
                        status="open",
                        property=None,
                        candidates=self.sort_cands([live, dead]),
                        seen_version=new_version,
                    )
                )
            return "conflict" if new_conflicts else "applied"

        if action == "undelete" and old["deleted"]:
            entity["deleted"] = False
            entity["deleted_rec"] = self.rec(None, new_version, who)
            touched = True

        base_props = base_props or {}
        for name in sorted(props):
            value = props[name]
            policy = self.policies[name]
            r = old["props"].get(name)
            if name in base_props and self.equal(name, base_props[name], value):
                continue
            if self.knew(r, base_version, who):
                if r is None or not self.equal(name, r["value"], value):
                    entity["props"][name] = self.rec(value, new_version, who)
                    touched = True
                continue
            assert r is not None
            if policy != "counter" and self.equal(name, r["value"], value):
                continue
            if name in base_props:
                base = base_props[name]
            else:
                base = {"counter": 0, "set": []}.get(policy)
            me_later = (who.hlc, who.dev, who.seq) > (r["hlc"], r["dev"], r["seq"])
            if policy in ("lww", "manual"):
                result = value if me_later else r["value"]
            elif policy == "rank":
                order = self.rank_orders[name]
                mine = order.index(value) if value in order else -1
                theirs = order.index(r["value"]) if r["value"] in order else -1
                if mine != theirs:
                    result = value if mine > theirs else r["value"]
                else:
                    result = value if me_later else r["value"]
            elif policy == "set":
                server_set = set(r["value"] or [])
                removed = set(base or []) - set(value or [])
                added = set(value or []) - set(base or [])
                result = sorted((server_set - removed) | added)
            else:  # counter
                result = (r["value"] or 0) + (value or 0) - (base or 0)
            if not self.equal(name, r["value"], result):
                entity["props"][name] = self.rec(result, new_version, who)
                touched = True
            cands = [self.cand(r["value"], r, r["ver"]), self.cand(value, who, old["version"])]
            new_conflicts.append(
                self.add_conflict(
                    entity_id,
                    kind="concurrent_update",
                    status="open" if policy == "manual" else "auto_resolved",
                    property=name,
                    base=base_props.get(name),
                    candidates=self.sort_cands(cands),
                    chosen=None if policy == "manual" else result,
                    seen_version=entity["props"][name]["ver"],
                )
            )

        lr = old["label_rec"]
        if label is not None and (
            lr is None or (who.hlc, who.dev, who.seq) >= (lr["hlc"], lr["dev"], lr["seq"])
        ):
            if label != old["label"]:
                entity["label"] = label
                entity["label_rec"] = self.rec(label, new_version, who)
                touched = True
            else:  # same text, newer stamp: the register's stamp moves, the version does not
                entity["label_rec"] = {
                    **lr,
                    "hlc": who.hlc,
                    "dev": who.dev,
                    "user": who.user,
                    "seq": who.seq,
                }

        if touched:
            entity["version"] = new_version

        if old["deleted"] and action != "undelete":
            differs = {
                n: v
                for n, v in sorted(props.items())
                if n not in old["props"] or not self.equal(n, old["props"][n]["value"], v)
            }
            if differs:
                dr = old["deleted_rec"]
                dead = self.cand(TOMBSTONE, dr, dr["ver"])
                upd = self.cand({"deleted": False, "properties": differs}, who, old["version"])
                new_conflicts.append(
                    self.add_conflict(
                        entity_id,
                        kind="update_after_delete",
                        status="open",
                        property=None,
                        candidates=self.sort_cands([dead, upd]),
                        seen_version=entity["version"],
                    )
                )

        statuses = {c["status"] for c in new_conflicts}
        if "open" in statuses:
            return "conflict"
        return "merged" if statuses else "applied"

    # -- duplicates --------------------------------------------------------------------------------

    def key_of(self, entity: dict[str, Any]) -> str | None:
        parts = []
        for name in self.natural_key_names:
            rec = entity["props"].get(name)
            value = rec["value"] if rec else None
            if isinstance(value, str):
                value = " ".join(unicodedata.normalize("NFC", value).casefold().split())
            if value is None or value == "":
                return None
            parts.append(value)
        return json.dumps(parts, ensure_ascii=False)

    def identity(self, entity_id: str) -> tuple[Any, ...]:
        entity = self.entities[entity_id]
        first = entity["props"][self.natural_key_names[0]]
        value = {
            "entity_id": entity_id,
            "label": entity["label"],
            "properties": {
                n: (entity["props"][n]["value"] if n in entity["props"] else None)
                for n in self.natural_key_names
            },
        }
        return self.cand(value, first, first["ver"])

    def find_duplicates(self, entity_id: str, who: Who) -> None:
        mine = self.key_of(self.entities[entity_id])
        if mine is None:
            return
        for other_id in sorted(self.entities):
            other = self.entities[other_id]
            if other_id == entity_id or other["deleted"] or self.key_of(other) != mine:
                continue
            self.add_conflict(
                entity_id,
                kind="duplicate_candidate",
                status="open",
                property=None,
                candidates=self.sort_cands([self.identity(other_id), self.identity(entity_id)]),
                seen_version=1,
            )

    # -- resolution --------------------------------------------------------------------------------

    def resolve(self, index: int, choice: int, who: Who) -> str:
        """Resolve conflict number `index` with candidate `choice`: "resolved" or "stale"."""
        conflict = self.conflicts[index]
        entity = self.entities[conflict["entity_id"]]
        chosen = conflict["candidates"][choice][0]
        new_version = entity["version"] + 1
        touched = False
        if conflict["kind"] == "duplicate_candidate":
            pass
        elif conflict["property"] is not None:
            name = conflict["property"]
            r = entity["props"].get(name)
            if (r["ver"] if r else 0) != conflict["seen_version"]:
                return "stale"
            if r is None or not self.equal(name, r["value"], chosen):
                entity["props"][name] = self.rec(chosen, new_version, who)
                touched = True
        else:
            if entity["version"] != conflict["seen_version"]:
                return "stale"
            if chosen["deleted"] != entity["deleted"]:
                entity["deleted"] = chosen["deleted"]
                entity["deleted_rec"] = self.rec(None, new_version, who)
                touched = True
            for name in sorted(chosen["properties"]):
                value = chosen["properties"][name]
                r = entity["props"].get(name)
                if r is None or not self.equal(name, r["value"], value):
                    entity["props"][name] = self.rec(value, new_version, who)
                    touched = True
        if touched:
            entity["version"] = new_version
        conflict["status"] = "resolved"
        conflict["chosen"] = chosen
        return "resolved"

    # -- comparison form ---------------------------------------------------------------------------

    def canonical(self, entity_id: str) -> dict[str, Any]:
        entity = self.entities[entity_id]
        meta = {
            n: (r["ver"], r["hlc"], (r["dev"], r["user"], r["seq"]))
            for n, r in entity["props"].items()
        }
        for key, rec in (("@label", entity["label_rec"]), ("@deleted", entity["deleted_rec"])):
            if rec is not None:
                meta[key] = (rec["ver"], rec["hlc"], (rec["dev"], rec["user"], rec["seq"]))
        return {
            "version": entity["version"],
            "deleted": entity["deleted"],
            "label": entity["label"],
            "properties": {n: r["value"] for n, r in entity["props"].items()},
            "meta": meta,
        }

    def canonical_conflicts(self) -> list[tuple[Any, ...]]:
        return [
            (
                c["entity_id"],
                c["kind"],
                c["status"],
                c["property"],
                json.dumps(c["base"]),
                json.dumps([list(cand) for cand in c["candidates"]]),
                json.dumps(c["chosen"]),
                c["seen_version"],
            )
            for c in self.conflicts
        ]
