"""Every XForm the server serves passes ODK Validate (JavaRosa, the engine inside ODK Collect):
the programme's forms and the test corpus, all in one JVM. Skipped, with the reason, only where
no Java runtime is installed (`make test` installs one)."""

from __future__ import annotations

import pytest

from forms import programme
from forms.odk_validate import Verdict, java_runtime, validate_xforms
from forms.xlsform import import_xlsform
from tests.unit.forms.test_corpus import CORPUS, imported
from tests.unit.forms.xlsforms import q, xlsform

NO_JAVA = (
    "no Java runtime: ODK Validate needs one "
    "(Debian: apt-get install default-jre-headless, as `make test` does)"
)
# What the programme's forms did before issue 12: an entity update whose record is typed in, so
# the list the entity block reads (instance('people')) is never declared. Collect refuses it.
UNDECLARED_LIST = xlsform(
    [q("text", "existing", required="yes"), q("text", "note", save_to="note")],
    form_id="undeclared_list",
    entities=[
        {
            "list_name": "people",
            "label": "${note}",
            "update_if": "true()",
            "entity_id": "${existing}",
        }
    ],
)


def xforms() -> dict[str, str]:
    forms = {
        f"programme/{form_id}": programme.template(form_id).xform for form_id in programme.FORMS
    }
    forms |= {f"corpus/{name}": imported(name).xform for name in CORPUS}
    forms["undeclared_list"] = import_xlsform(UNDECLARED_LIST, "undeclared_list.xlsx").xform
    return forms


@pytest.fixture(scope="module")
def verdicts() -> dict[str, Verdict]:
    java = java_runtime()
    if java is None:
        pytest.skip(NO_JAVA)
    forms = xforms()
    return dict(
        zip(forms, validate_xforms(list(forms.values()), java=java, timeout=300), strict=True)
    )


@pytest.mark.parametrize("form_id", sorted(programme.FORMS))
def test_programme_form_loads_in_javarosa(verdicts: dict[str, Verdict], form_id: str) -> None:
    assert verdicts[f"programme/{form_id}"] == Verdict(True)


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_corpus_form_loads_in_javarosa(verdicts: dict[str, Verdict], name: str) -> None:
    assert verdicts[f"corpus/{name}"] == Verdict(True)


def test_a_form_collect_cannot_load_is_invalid_with_javarosas_message(
    verdicts: dict[str, Verdict],
) -> None:
    verdict = verdicts["undeclared_list"]
    assert verdict.valid is False
    assert "Instance referenced by instance(people)" in verdict.message
    assert "\tat " not in verdict.message and "Exception" not in verdict.message  # no Java stack


def test_without_java_the_form_is_not_checked_and_says_why() -> None:
    [verdict] = validate_xforms([xforms()["undeclared_list"]], java=None, timeout=5)
    assert verdict == Verdict(None, "no Java runtime is installed")


def test_a_run_past_its_time_is_not_checked_and_says_why() -> None:
    java = java_runtime()
    if java is None:
        pytest.skip(NO_JAVA)
    [verdict] = validate_xforms([programme.template("inspection").xform], java=java, timeout=0.01)
    assert verdict == Verdict(None, "ODK Validate did not finish within 0.01 s")
