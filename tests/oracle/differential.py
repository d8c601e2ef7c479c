"""Runs the corpus through the server's evaluator and through JavaRosa and compares the two.

The outcome of a case, for constraints and relevance (JavaRosa's boolean vs `judge_at`):
- `agree`: the same verdict;
- `not checked`: the server cannot evaluate it (`judge_at` is None: accepted and flagged);
- `agree, flagged: engines differ`: the server's JavaRosa reading (`evaluate_at`) gives
  JavaRosa's answer, but Enketo reads the rule otherwise, so the verdict is left undecided
  (accepted and flagged, by the rule of docs/validation.md). The server computed what Collect
  computed, so this counts as agreement; the share of such cases is printed as "flagged";
- `server false, JavaRosa true`: the server rejects (or hides) what Collect accepted — the one
  outcome the differential test fails on;
- `server true, JavaRosa false`: the server lets through what Collect refused;
- `JavaRosa error`: JavaRosa throws (unknown function, a node-set of several nodes, a bad date);
  Collect would not have let such a form be finalized normally, so it is counted apart, never
  failed on, and left out of the agreement rate.
For calculations the string values are compared (`to_xpath_string` vs JavaRosa's
XPathFuncExpr.toString): `agree`, `not checked` (evaluate_at raised), `different value`,
`JavaRosa error`.

Agreement rate of a class = agree / (cases - JavaRosa errors); the not-checked rate has the same
denominator, so a case the server cannot evaluate counts against agreement.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pyxform.survey import Survey
from pyxform.survey_element import SurveyElement
from pyxform.xls2xform import convert

from forms.expressions import ExpressionSyntaxError, NotEvaluable, to_bool, to_xpath_string
from forms.validation import evaluate_at, judge_at
from forms.xlsform import import_xlsform
from schemas.forms import FormSpec
from tests.oracle.corpus import (
    CLOCKS,
    CORPUS,
    JAVAROSA_LOCALE,
    KINDS,
    LAST_SAVED,
    SCENARIOS,
    Expression,
)
from tests.oracle.javarosa import Harness, instance_xml, text_answers

AGREE = "agree"
NOT_CHECKED = "not checked"
# The server's JavaRosa reading agrees, but Enketo's differs: not decided, accepted and flagged.
FLAGGED = "agree, flagged: engines differ"
SERVER_FALSE = "server false, JavaRosa true"
SERVER_TRUE = "server true, JavaRosa false"
DIFFERENT = "different value"
JAVAROSA_ERROR = "JavaRosa error"
DISAGREEMENTS = (SERVER_FALSE, SERVER_TRUE, DIFFERENT)
THRESHOLD = 0.95


@dataclass(frozen=True)
class Case:
    expression: Expression
    context: str
    scenario: str
    xpath: str  # the expression as pyxform writes it into the XForm at this context


@dataclass
class Outcome:
    kind: str
    area: str
    expression: str
    xpath: str
    context: str
    scenario: str
    clock: str
    server_value: str | None
    server_error: str | None
    server_verdict: bool | None
    javarosa_type: str | None
    javarosa_value: str | None
    javarosa_boolean: bool | None
    javarosa_stored: str | None  # what Collect would save in a calculate (not compared)
    javarosa_error: str | None
    outcome: str


@dataclass(frozen=True)
class OracleForm:
    spec: FormSpec
    xform: str
    survey: Survey
    elements: dict[str, SurveyElement]  # XForm path without positions -> pyxform element

    def to_xpath(self, text: str, context: str) -> str:
        """`${name}` → path exactly as pyxform writes it for a rule at `context`."""
        element = self.elements[_without_positions(context)]
        return str(self.survey.insert_xpaths(text, element)).strip()


def load_form(xlsx: bytes) -> OracleForm:
    imported = import_xlsform(xlsx, "oracle.xlsx")
    converted = convert(xlsx, file_type=".xlsx")
    # The XForm Collect receives is the one the server imported: one form on both sides.
    assert converted.xform == imported.xform
    survey = converted._survey
    assert survey is not None
    elements = {e.get_xpath(): e for e in survey.iter_descendants()}
    return OracleForm(spec=imported.spec, xform=imported.xform, survey=survey, elements=elements)


def _without_positions(path: str) -> str:
    return "/".join(step.partition("[")[0] for step in path.split("/"))


def value_at(data: dict[str, Any], path: str) -> Any:
    node: Any = data
    for step in path.split("/")[2:]:
        name, _, rest = step.partition("[")
        node = node.get(name) if isinstance(node, dict) else None
        if rest:
            index = int(rest.rstrip("]")) - 1
            node = node[index] if isinstance(node, list) and index < len(node) else None
    return node


def build_cases(form: OracleForm) -> list[Case]:
    cases = []
    for scenario, data in SCENARIOS.items():
        for expression in CORPUS:
            for context in expression.contexts:
                empty = value_at(data, context) in (None, "", [])
                if expression.kind == "constraint" and empty:
                    continue  # Collect never evaluates a constraint on an empty answer
                xpath = form.to_xpath(expression.text, context)
                cases.append(Case(expression, context, scenario, xpath))
    return cases


def javarosa_request(form: OracleForm, cases: list[Case]) -> dict[str, Any]:
    scenarios = []
    for scenario, data in SCENARIOS.items():
        scenarios.append(
            {
                "id": scenario,
                "instance": instance_xml(form.spec, data),
                "text_answers": text_answers(form.spec, data),
                "cases": [
                    {
                        "id": index,
                        "kind": case.expression.kind,
                        "context": case.context,
                        "expression": case.xpath,
                    }
                    for index, case in enumerate(cases)
                    if case.scenario == scenario
                ],
            }
        )
    return {
        "xform": form.xform,
        "locale": JAVAROSA_LOCALE,
        "last_saved": instance_xml(form.spec, LAST_SAVED),
        "scenarios": scenarios,
    }


def _server(
    form: OracleForm, case: Case, now: datetime
) -> tuple[str | None, str | None, bool | None, bool | None]:
    data = SCENARIOS[case.scenario]
    text, path = case.expression.text, case.context
    value: str | None = None
    error: str | None = None
    reading: bool | None = None  # the boolean of the server's JavaRosa reading
    try:
        result = evaluate_at(form.spec, data, text, path=path, now=now)
        value, reading = to_xpath_string(result), to_bool(result)
    except (NotEvaluable, ExpressionSyntaxError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    verdict = None
    if case.expression.kind != "calculation":
        constraint = case.expression.kind == "constraint"
        rule: Literal["constraint", "relevant"] = "constraint" if constraint else "relevant"
        verdict = judge_at(form.spec, data, text, path=path, now=now, rule=rule)
    return value, error, verdict, reading


def _classify(
    kind: str, server: tuple[str | None, str | None, bool | None, bool | None], jr: dict[str, Any]
) -> str:
    value, error, verdict, reading = server
    if "error" in jr:
        return JAVAROSA_ERROR
    if kind == "calculation":
        if error is not None:
            return NOT_CHECKED
        return AGREE if value == jr["value"] else DIFFERENT
    if verdict is None:
        return FLAGGED if error is None and reading == jr["boolean"] else NOT_CHECKED
    if verdict == jr["boolean"]:
        return AGREE
    return SERVER_FALSE if jr["boolean"] else SERVER_TRUE


def run(form: OracleForm, harness: Harness, workdir: Path) -> list[Outcome]:
    cases = build_cases(form)
    request = javarosa_request(form, cases)
    outcomes = []
    for clock_name, now in CLOCKS.items():
        response = harness.run(request, now, workdir / clock_name)
        by_id = {result["id"]: result for result in response["results"]}
        for index, case in enumerate(cases):
            jr = by_id[index]
            server = _server(form, case, now)
            outcomes.append(
                Outcome(
                    kind=case.expression.kind,
                    area=case.expression.area,
                    expression=case.expression.text,
                    xpath=case.xpath,
                    context=case.context,
                    scenario=case.scenario,
                    clock=now.isoformat(),
                    server_value=server[0],
                    server_error=server[1],
                    server_verdict=server[2],
                    javarosa_type=jr.get("type"),
                    javarosa_value=jr.get("value"),
                    javarosa_boolean=jr.get("boolean"),
                    javarosa_stored=jr.get("stored"),
                    javarosa_error=jr.get("error"),
                    outcome=_classify(case.expression.kind, server, jr),
                )
            )
    return outcomes


# ---------------------------------------------------------------------------------- the figures


@dataclass(frozen=True)
class Rates:
    cases: int
    javarosa_errors: int
    agree: int
    not_checked: int
    counts: dict[str, int]

    @property
    def compared(self) -> int:
        return self.cases - self.javarosa_errors

    @property
    def agreement(self) -> float:
        return self.agree / self.compared if self.compared else 1.0

    @property
    def not_checked_rate(self) -> float:
        return self.not_checked / self.compared if self.compared else 0.0


def rates(outcomes: list[Outcome]) -> Rates:
    counts = Counter(o.outcome for o in outcomes)
    return Rates(
        cases=len(outcomes),
        javarosa_errors=counts[JAVAROSA_ERROR],
        agree=counts[AGREE] + counts[FLAGGED],
        not_checked=counts[NOT_CHECKED],
        counts=dict(counts),
    )


def describe(outcome: Outcome) -> str:
    server = outcome.server_error or repr(outcome.server_value)
    if outcome.kind != "calculation":
        server = f"{outcome.server_verdict} ({server})"
    javarosa = outcome.javarosa_error or repr(outcome.javarosa_value)
    if outcome.javarosa_boolean is not None:
        javarosa = f"{outcome.javarosa_boolean} ({javarosa})"
    return (
        f"[{outcome.kind}/{outcome.area}] {outcome.expression}  at {outcome.context}, "
        f"{outcome.scenario}, {outcome.clock}: server {server}, JavaRosa {javarosa}"
    )


def summary(outcomes: list[Outcome], *, shown: int = 30) -> list[str]:
    """The figures and the first disagreements, as printed at the end of the test run."""
    expressions = {(o.kind, o.expression) for o in outcomes}
    lines = [
        f"JavaRosa oracle: {len(expressions)} expressions, {len(outcomes)} cases "
        f"({len(SCENARIOS)} instances x {len(CLOCKS)} clocks)"
    ]
    for kind in KINDS:
        r = rates([o for o in outcomes if o.kind == kind])
        lines.append(
            f"  {kind:<12} agreement {r.agreement:6.1%}  not checked {r.not_checked_rate:6.1%}  "
            f"flagged {r.counts.get(FLAGGED, 0) / max(r.compared, 1):6.1%}  "
            f"JavaRosa errors {r.javarosa_errors:4d}  of {r.cases} cases  "
            + ", ".join(f"{name}: {n}" for name, n in sorted(r.counts.items()))
        )
    judged = rates([o for o in outcomes if o.kind != "calculation"])
    lines.append(
        f"  constraints+relevance agreement {judged.agreement:.1%} (needed {THRESHOLD:.0%}), "
        f"'{SERVER_FALSE}': {judged.counts.get(SERVER_FALSE, 0)}"
    )
    for label, wanted in (("disagreements", DISAGREEMENTS), ("not checked", (NOT_CHECKED,))):
        by_area = Counter(o.area for o in outcomes if o.outcome in wanted)
        lines.append(
            f"  {label} by area: " + ", ".join(f"{a} {n}" for a, n in by_area.most_common())
        )
    # One line per expression and outcome (the same expression disagrees at several cases).
    first: dict[tuple[str, str, str], Outcome] = {}
    for o in outcomes:
        if o.outcome in DISAGREEMENTS:
            first.setdefault((o.outcome, o.kind, o.expression), o)
    ordered = sorted(first.values(), key=lambda o: DISAGREEMENTS.index(o.outcome))
    if ordered and shown:
        lines.append(
            f"  first {min(shown, len(ordered))} of {len(ordered)} disagreeing expressions "
            f"({sum(o.outcome in DISAGREEMENTS for o in outcomes)} cases):"
        )
        lines.extend(f"    {o.outcome}: {describe(o)}" for o in ordered[:shown])
    return lines


def write_report(outcomes: list[Outcome], path: Path) -> None:
    report = {
        "clocks": {name: now.isoformat() for name, now in CLOCKS.items()},
        "instances": SCENARIOS,
        "last_saved_instance": LAST_SAVED,
        "rates": {kind: asdict(rates([o for o in outcomes if o.kind == kind])) for kind in KINDS},
        "cases": [asdict(o) for o in outcomes],
    }
    text = json.dumps(report, ensure_ascii=False, indent=1)
    # JavaRosa's substr can split a surrogate pair: keep the lone half as a JSON \\u escape.
    path.write_bytes(text.encode("utf-8", "backslashreplace"))
