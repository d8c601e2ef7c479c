"""A form field's path becomes the JSON path of its answer inside the push body."""

from __future__ import annotations

import pytest

from server.services.push import data_path


@pytest.mark.parametrize(
    ("field_path", "json_path"),
    [
        ("/data/ward_code", "$.submission.data.ward_code"),
        ("/data/visit/people[2]/age", "$.submission.data.visit.people[1].age"),
        ("/data/visit/people[1]", "$.submission.data.visit.people[0]"),
        ("/data/a-b", '$.submission.data["a-b"]'),
        ("/data/g/x.y[3]", '$.submission.data.g["x.y"][2]'),
        ("/inspection/kind", "$.submission.data.kind"),
    ],
)
def test_field_paths_become_json_paths(field_path: str, json_path: str) -> None:
    assert data_path(field_path) == json_path
