"""The programme's forms filled in JavaRosa (the engine inside ODK Collect) with the attachments
the server serves: the ward is picked from wards.csv, the record from its entity list limited to
that ward, picking it fills the form with its values, and the entity block Collect submits updates
that record from its version; with no record picked the form creates one.

Skipped, with the reason, only where java or javac is missing (the harness is compiled here)."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from defusedxml.ElementTree import fromstring

from forms import programme
from forms.spec import fields_by_name, walk_fields
from schemas.forms import EntityBinding, FormSpec
from tests.oracle.javarosa import JAR, compile_java, missing_java

FILLER_SOURCE = Path(__file__).parent / "javarosa" / "FormFiller.java"
ENTITY_FORMS = ("inspection", "training_attendance", "outreach_contact", "tip_intake")
MY_WARD, OTHER_WARD = "00004", "00070"
PICKED, NEIGHBOUR, ELSEWHERE = (str(uuid.UUID(int=n, version=4)) for n in (1, 2, 3))
BRANCH = str(uuid.UUID(int=9, version=4))
# Answers a person gives to reach every field the record fills (outreach: consent opens screening).
TO_REACH = {"outreach_contact": {"/data/consent": "yes"}}
PREFILL = re.compile(r"instance\('(\w+)'\)/root/item\[name=\$\{(\w+)\}\]/(\w+)")


def binding_of(spec: FormSpec) -> EntityBinding:
    [binding] = spec.entities
    return binding


def pick_of(spec: FormSpec) -> str:
    match = re.fullmatch(r"coalesce\(\$\{(\w+)\}, uuid\(\)\)", binding_of(spec).entity_id or "")
    assert match, binding_of(spec).entity_id
    return fields_by_name(spec)[match[1]].path


def answer_at(data: dict[str, Any], path: str) -> Any:
    value: Any = data
    for step in path.split("/")[2:]:
        value = value.get(step) if isinstance(value, dict) else None
    return value


def record(form_id: str) -> dict[str, str]:
    """The record the entity list holds, with the values of the form's sample submission."""
    spec = programme.template(form_id).spec
    sample = programme.FORMS[form_id].sample
    values = {}
    for prop, path in binding_of(spec).properties.items():
        value = answer_at(sample, path)
        values[prop] = " ".join(value) if isinstance(value, list) else str(value or "")
    return values


def write_media(directory: Path) -> None:
    """wards.csv and each list's CSV as the server serves them, plus the columns Collect adds
    to its local copy (__trunkVersion, __branchId)."""
    with (directory / programme.WARDS_FILE).open("w", newline="", encoding="utf-8") as out:
        csv.writer(out).writerows(
            [["name", "label"], [MY_WARD, "Phường Hàng Bạc"], [OTHER_WARD, "Phường Ba Đình"]]
        )
    for form_id in ENTITY_FORMS:
        binding = binding_of(programme.template(form_id).spec)
        properties = list(programme.LISTS[binding.list_name].properties)
        values = record(form_id)
        rows = [["name", "label", "__version", "__trunkVersion", "__branchId", *properties]]
        for entity_id, ward, version in (
            (PICKED, MY_WARD, 3),
            (NEIGHBOUR, MY_WARD, 1),
            (ELSEWHERE, OTHER_WARD, 2),
        ):
            row = {**values, "ward_code": ward}
            label = f"{binding.list_name} {entity_id[:8]}"
            rows.append([entity_id, label, version, version, BRANCH, *(row[p] for p in properties)])
        with (directory / programme.list_file(binding.list_name)).open(
            "w", newline="", encoding="utf-8"
        ) as out:
            csv.writer(out).writerows(rows)


def runs() -> list[tuple[str, str, dict[str, str]]]:
    """(form, what, answers): each entity form updating the picked record, then creating one."""
    found = []
    for form_id in ENTITY_FORMS:
        spec = programme.template(form_id).spec
        base = {"/data/ward_code": MY_WARD, **TO_REACH.get(form_id, {})}
        found.append((form_id, "update", {**base, pick_of(spec): PICKED}))
        found.append((form_id, "create", base))
    return found


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[tuple[str, str], dict]]:
    reason = missing_java()
    if reason is not None:
        pytest.skip(reason)
    workdir = tmp_path_factory.mktemp("javarosa-fill")
    compile_java(FILLER_SOURCE, workdir)
    media = workdir / "media"
    media.mkdir()
    write_media(media)
    plan = runs()
    request = {
        "media_dir": str(media),
        "runs": [
            {"xform": programme.template(form_id).xform, "answers": answers}
            for form_id, _, answers in plan
        ],
    }
    (workdir / "request.json").write_text(json.dumps(request), encoding="utf-8")
    completed = subprocess.run(
        ["java", "-cp", f"{JAR}:{workdir}", "FormFiller", "request.json", "response.json"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    results = json.loads((workdir / "response.json").read_text(encoding="utf-8"))["results"]
    yield {
        (form_id, what): result for (form_id, what, _), result in zip(plan, results, strict=True)
    }


def instance(result: dict[str, Any]) -> ET.Element:
    assert "error" not in result, result["error"]
    assert result["errors"] == []
    element: ET.Element = fromstring(result["instance"])
    return element


def entity(root: ET.Element) -> dict[str, str]:
    found = root.find("meta/entity")
    assert found is not None
    return {**found.attrib, "label": found.findtext("label") or ""}


def same(a: str, b: str) -> bool:
    """Equal answers; a dateTime as an instant (JavaRosa writes milliseconds)."""
    if a == b:
        return True
    try:
        return datetime.fromisoformat(a) == datetime.fromisoformat(b)
    except ValueError:
        return False


@pytest.mark.parametrize("form_id", ENTITY_FORMS)
def test_the_ward_and_the_record_are_picked_from_what_the_server_serves(
    filled: dict[tuple[str, str], dict], form_id: str
) -> None:
    choices = filled[(form_id, "update")]["choices"]
    assert choices["/data/ward_code"] == [MY_WARD, OTHER_WARD]
    # Only the records of the picked ward are offered.
    assert choices[pick_of(programme.template(form_id).spec)] == [PICKED, NEIGHBOUR]


@pytest.mark.parametrize("form_id", ENTITY_FORMS)
def test_picking_a_record_fills_the_form_and_updates_it_from_its_version(
    filled: dict[tuple[str, str], dict], form_id: str
) -> None:
    spec = programme.template(form_id).spec
    root = instance(filled[(form_id, "update")])
    expected = record(form_id)
    compared = 0
    for field in walk_fields(spec.fields):
        match = PREFILL.fullmatch(field.calculation or "")
        node = root.find(field.path.removeprefix("/data/"))
        if match is None or node is None:
            continue  # not prefilled, or not relevant here (not in the instance)
        assert same(node.text or "", expected[match[3]]), (field.path, node.text)
        compared += 1
    assert compared >= 3, form_id
    assert entity(root) == {
        "dataset": binding_of(spec).list_name,
        "create": "0",
        "update": "1",
        "baseVersion": "3",
        "trunkVersion": "3",
        "branchId": BRANCH,
        "id": PICKED,
        "label": entity(root)["label"],
    }
    assert entity(root)["label"]


@pytest.mark.parametrize("form_id", ENTITY_FORMS)
def test_with_no_record_picked_the_form_creates_one(
    filled: dict[tuple[str, str], dict], form_id: str
) -> None:
    created = entity(instance(filled[(form_id, "create")]))
    assert (created["create"], created["update"], created["baseVersion"]) == ("1", "0", "")
    assert uuid.UUID(created["id"]).version == 4
