"""Entity lists as Collect gets them (odk.md §7): the CSV of what this user may see, a hash that
moves whenever that CSV would, and the integrity answer for offline entities."""

from __future__ import annotations

import csv
import hashlib
import io
import uuid

import httpx

from tests.helpers import BA_DINH, HOAN_KIEM, Api, Session
from tests.integration.openrosa.collect import (
    MANIFEST,
    Collect,
    ShopForm,
    collect_for,
    push,
    xml,
)


class Shops:
    """A worker of both wards pushing shops natively; Collect installs read them."""

    def __init__(self, api: Api, form: ShopForm, worker: Session) -> None:
        self.api, self.form, self.worker, self.seq = api, form, worker, 0
        self.versions: dict[str, int] = {}

    async def write(self, entity_id: str, name: str, ward: str, action: str = "create") -> None:
        self.seq += 1
        base = self.versions.get(entity_id, 0)
        op = self.form.op(
            self.worker,
            self.seq,
            entity_id=entity_id,
            name=name,
            ward=ward,
            action=action,
            base_version=base,
        )
        await push(self.api.http, self.worker, op)
        self.versions[entity_id] = base + 1

    async def create(self, name: str, ward: str) -> str:
        entity_id = str(uuid.uuid4())
        await self.write(entity_id, name, ward)
        return entity_id


async def shops(api: Api) -> Shops:
    form = ShopForm.make()
    await form.publish(api)
    return Shops(api, form, await api.user_session("outreach", [HOAN_KIEM, BA_DINH]))


async def entity_file(collect: Collect, form: ShopForm) -> tuple[str, list[dict[str, str]]]:
    """(manifest hash, CSV rows) of the form's entity list, checking the hash is of the bytes."""
    manifest = xml(await collect.get(f"{collect.server_url}/forms/{form.form_id}/manifest"))
    entry = next(
        f
        for f in manifest.findall(f"{MANIFEST}mediaFile")
        if f.findtext(f"{MANIFEST}filename") == f"{form.list_name}.csv"
    )
    assert entry.get("type") == "entityList"
    download = await collect.get(entry.findtext(f"{MANIFEST}downloadUrl") or "")
    assert download.status_code == 200
    digest = "md5:" + hashlib.md5(download.content, usedforsecurity=False).hexdigest()
    assert entry.findtext(f"{MANIFEST}hash") == digest
    assert download.text.splitlines()[0] == "name,label,__version,shop_name,ward_code"
    return digest, list(csv.DictReader(io.StringIO(download.text)))


async def test_the_entity_csv_holds_only_the_users_wards_and_its_hash_follows_their_changes(
    api: Api, client: httpx.AsyncClient
) -> None:
    s = await shops(api)
    karaoke = await s.create('Karaoke, "Sao" đêm', HOAN_KIEM)
    massage = await s.create("Massage Ba Đình", BA_DINH)
    hoan_kiem = await collect_for(api, await api.create_user("outreach", [HOAN_KIEM]))
    city = await collect_for(api, await api.create_user("supervisor", ["*"]))

    first, rows = await entity_file(hoan_kiem, s.form)
    assert rows == [
        {
            "name": karaoke,
            "label": 'Karaoke, "Sao" đêm',
            "__version": "1",
            "shop_name": 'Karaoke, "Sao" đêm',
            "ward_code": HOAN_KIEM,
        }
    ]
    _, everything = await entity_file(city, s.form)
    assert {r["name"] for r in everything} == {karaoke, massage}

    # A change in another ward is not this user's concern: same hash, no download.
    await s.write(massage, "Massage Ba Đình 2", BA_DINH, action="update")
    assert (await entity_file(hoan_kiem, s.form))[0] == first
    # An update here, a move out of the ward, a delete: each changes the file, and the hash.
    await s.write(karaoke, "Karaoke Sao", HOAN_KIEM, action="update")
    updated, rows = await entity_file(hoan_kiem, s.form)
    assert updated != first and [(r["label"], r["__version"]) for r in rows] == [
        ("Karaoke Sao", "2")
    ]
    await s.write(karaoke, "Karaoke Sao", BA_DINH, action="update")
    moved, rows = await entity_file(hoan_kiem, s.form)
    assert moved != updated and rows == []
    await s.write(karaoke, "Karaoke Sao", HOAN_KIEM, action="update")
    back, rows = await entity_file(hoan_kiem, s.form)
    assert back not in (moved, updated) and [r["__version"] for r in rows] == ["4"]
    await s.write(karaoke, "", HOAN_KIEM, action="delete")
    deleted, rows = await entity_file(hoan_kiem, s.form)
    assert deleted != back and rows == []
    assert deleted == moved  # the same (empty) file: the same hash


async def test_integrity_says_which_offline_entities_are_gone_for_this_user(
    api: Api, client: httpx.AsyncClient
) -> None:
    s = await shops(api)
    kept = await s.create("Quán bar", HOAN_KIEM)
    deleted = await s.create("Nhà nghỉ", HOAN_KIEM)
    await s.write(deleted, "", HOAN_KIEM, action="delete")
    elsewhere = await s.create("Khách sạn", BA_DINH)
    unknown = str(uuid.uuid4())
    collect = await collect_for(api, await api.create_user("outreach", [HOAN_KIEM]))
    integrity = f"{collect.server_url}/lists/{s.form.list_name}/integrity"
    # Collect joins the ids with "," and Uri.Builder encodes it as %2C.
    asked = "%2C".join([kept, deleted, elsewhere, unknown])
    root = xml(await collect.get(integrity, f"id={asked}"))
    assert root.tag == "data"
    answer = {e.get("id"): e.findtext("deleted") for e in root.findall("entities/entity")}
    # Unknown ids are left out; one out of the user's wards counts as deleted for them.
    assert answer == {kept: "false", deleted: "true", elsewhere: "true"}
    everything = xml(await collect.get(integrity))
    assert {e.get("id") for e in everything.findall("entities/entity")} == {kept, deleted}


async def test_integrity_is_only_for_lists_a_form_of_the_user_reads(
    api: Api, client: httpx.AsyncClient
) -> None:
    s = await shops(api)
    restricted = await client.patch(
        f"/api/v1/forms/{s.form.form_id}", json={"roles": ["inspector"]}, headers=api.admin.headers
    )
    assert restricted.status_code == 200, restricted.text
    inspector = await collect_for(api, await api.create_user("inspector", [HOAN_KIEM]))
    outreach = await collect_for(api, await api.create_user("outreach", [HOAN_KIEM]))
    path = f"/lists/{s.form.list_name}/integrity"
    assert (await inspector.get(inspector.server_url + path)).status_code == 200
    for collect, url in (
        (outreach, outreach.server_url + path),
        (inspector, f"{inspector.server_url}/lists/no_such_list/integrity"),
    ):
        response = await collect.get(url)
        assert response.status_code == 404, url
