"""The corpus through Enketo's evaluator too, compared with JavaRosa's answers and the server's.

The server's rule (docs/validation.md): a constraint rejects only where the reference engines
agree it fails; where JavaRosa and Enketo differ the rule is not decided (accepted and flagged).
The server evaluates Enketo's reading beside JavaRosa's (`judge`). This module checks it against
Enketo itself: every case the engines answer differently, and what the server decided there.

For constraints and relevance the engines are compared on their booleans; for calculations on the
value read as text (JavaRosa's XPath string, Enketo's stringValue), for information only. A case
where one engine throws and the other answers counts as the engines differing; where both throw,
as both erring (left out of the agreement rate).
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from schemas.forms import Field, FormSpec
from tests.oracle.corpus import CLOCKS, KINDS, SCENARIOS
from tests.oracle.differential import (
    Case,
    OracleForm,
    Outcome,
    build_cases,
    javarosa_request,
    value_at,
)
from tests.oracle.enketo import EnketoHarness, choice_labels

ENGINES_AGREE = "engines agree"
ENGINES_DIFFER = "engines differ"
BOTH_ERROR = "both engines error"


@dataclass
class ThreeWay:
    """One case: the server's and JavaRosa's answers (`case`) beside Enketo's."""

    case: Outcome
    enketo_value: str | None
    enketo_boolean: bool | None
    enketo_error: str | None

    @property
    def judged(self) -> bool:
        return self.case.kind != "calculation"

    @property
    def engines(self) -> str:
        javarosa_failed = self.case.javarosa_error is not None
        enketo_failed = self.enketo_error is not None
        if javarosa_failed and enketo_failed:
            return BOTH_ERROR
        if javarosa_failed or enketo_failed:
            return ENGINES_DIFFER
        if self.judged:
            same = self.case.javarosa_boolean == self.enketo_boolean
        else:
            same = self.case.javarosa_value == self.enketo_value
        return ENGINES_AGREE if same else ENGINES_DIFFER

    @property
    def server_agrees_with_javarosa(self) -> bool:
        if self.case.javarosa_error is not None:
            return False
        if self.judged:
            return self.case.server_verdict == self.case.javarosa_boolean
        return self.case.server_error is None and self.case.server_value == self.case.javarosa_value

    @property
    def server_agrees_with_enketo(self) -> bool:
        if self.enketo_error is not None:
            return False
        if self.judged:
            return self.case.server_verdict is not None and (
                self.case.server_verdict == self.enketo_boolean
            )
        return self.case.server_error is None and self.case.server_value == self.enketo_value

    @property
    def server_false_where_an_engine_says_true(self) -> bool:
        """The server rejects (or hides) what one of the engines accepted (or showed)."""
        return (
            self.judged
            and self.case.server_verdict is False
            and (self.case.javarosa_boolean is True or self.enketo_boolean is True)
        )


def enketo_request(form: OracleForm, cases: list[Case]) -> dict[str, Any]:
    """The JavaRosa harness's request (same cases, same XPath), plus the choices' labels."""
    return {**javarosa_request(form, cases), "choice_labels": choice_labels(form.spec)}


def run(
    form: OracleForm, harness: EnketoHarness, workdir: Path, outcomes: list[Outcome]
) -> list[ThreeWay]:
    """Every case through Enketo at each clock, joined with its JavaRosa/server outcome."""
    cases = build_cases(form)
    request = enketo_request(form, cases)
    # differential.run lists the outcomes clock by clock, each clock in the order of the cases.
    assert len(outcomes) == len(cases) * len(CLOCKS)
    results = []
    for clock_index, (clock_name, now) in enumerate(CLOCKS.items()):
        response = harness.run(request, now, workdir / clock_name)
        by_id = {result["id"]: result for result in response["results"]}
        for index, case in enumerate(cases):
            outcome = outcomes[clock_index * len(cases) + index]
            assert (outcome.clock, outcome.context, outcome.expression) == (
                now.isoformat(),
                case.context,
                case.expression.text,
            )
            enketo = by_id[index]
            results.append(
                ThreeWay(
                    case=outcome,
                    enketo_value=enketo.get("value"),
                    enketo_boolean=enketo.get("boolean"),
                    enketo_error=enketo.get("error"),
                )
            )
    return results


# --------------------------------------------------------------- what a divergence is about


@dataclass(frozen=True)
class Reads:
    """What a case reads: the types and values of the fields it names, the form's repeats."""

    types: set[str]
    values: list[Any]
    repeats: tuple[str, ...]


@dataclass(frozen=True)
class Feature:
    label: str
    matches: Callable[[ThreeWay, Reads], bool]


def _text(pattern: str) -> Callable[[ThreeWay, Reads], bool]:
    compiled = re.compile(pattern)
    return lambda r, reads: compiled.search(r.case.expression) is not None


def _repeat_path_inside_the_repeat(r: ThreeWay, reads: Reads) -> bool:
    # JavaRosa pins /data/rep/x to the context's instance; Enketo does not for a form that
    # declares odk:xforms-version (pyxform's do), so it reads every instance.
    return any(
        r.case.context.startswith(f"{repeat}[")
        and re.search(rf"{re.escape(repeat)}(?![\[\w])", r.case.xpath) is not None
        for repeat in reads.repeats
    )


# In order: a case is counted under the first feature it has.
FEATURES: tuple[Feature, ...] = (
    Feature("floor()/ceiling(): JavaRosa lacks them", _text(r"\b(floor|ceiling)\(")),
    Feature(
        "jr:choice-name() in a constraint or relevance: Enketo replaces it in calculations only",
        _text(r"jr:choice-name\("),
    ),
    Feature("regex(): JavaScript RegExp, searched, without the u flag", _text(r"\bregex\(")),
    Feature("round(): halves, negative numbers, round(x, 0)", _text(r"\bround\(")),
    Feature("indexed-repeat()", _text(r"indexed-repeat\(")),
    Feature(
        "a repeated field used as one value: JavaRosa errs, Enketo takes the first",
        lambda r, reads: "This field is repeated" in (r.case.javarosa_error or ""),
    ),
    Feature(
        "a numeric predicate (rep[2]): nothing in JavaRosa, a position in Enketo",
        _text(r"\[\d+\]"),
    ),
    Feature(
        "an absolute path into a repeat, inside it (count(/data/rep), sum(/data/rep/n)): "
        "JavaRosa reads this instance, Enketo every instance",
        _repeat_path_inside_the_repeat,
    ),
    Feature("sum()/max()/min(): empty values, negative numbers", _text(r"\b(sum|max|min)\(")),
    Feature("format-date()/format-date-time()", _text(r"format-date(-time)?\(")),
    Feature("date() of a dateTime: Enketo keeps the time of day", _text(r"(?<![\w-])date\(")),
    Feature(
        "a group's value: its text in Enketo, empty in JavaRosa",
        lambda r, reads: "group" in reads.types,
    ),
    Feature(
        "a node as a boolean: Enketo true for any node, JavaRosa reads its value",
        _text(r"\bboolean\(|= true\(\)"),
    ),
    Feature(
        "numbers typed with a comma (12,5): NaN in Enketo",
        lambda r, reads: any(re.fullmatch(r"-?\d*,\d+", str(v)) for v in reads.values),
    ),
    Feature(
        "text that looks like a date ('2026-06-17') compared or added as a date in Enketo",
        _text(r"'\d{4}-\d\d-\d\d"),
    ),
    Feature("a time as a number: NaN in Enketo", lambda r, reads: "time" in reads.types),
    Feature(
        "dateTimes and now() compared: fractional days in Enketo, whole days in JavaRosa",
        lambda r, reads: "now()" in r.case.expression or "datetime" in reads.types,
    ),
)


@dataclass(frozen=True)
class FormIndex:
    types: dict[str, str]  # field name and path → type
    paths: dict[str, str]  # field name → path

    @classmethod
    def of(cls, spec: FormSpec) -> FormIndex:
        index = cls({}, {})

        def walk(fields: list[Field]) -> None:
            for f in fields:
                index.types[f.name] = index.types[f.path] = f.type
                index.paths[f.name] = f.path
                walk(f.children)

        walk(spec.fields)
        return index

    def reads(self, r: ThreeWay) -> Reads:
        """The fields a case names (`${name}`, and a constraint's own field), at its context."""
        context = r.case.context
        paths = [self.paths.get(n, "") for n in re.findall(r"\$\{([^}#]+)\}", r.case.expression)]
        if r.case.kind == "constraint":
            paths.append(re.sub(r"\[\d+\]", "", context))
        data = SCENARIOS[r.case.scenario]
        values = [value_at(data, _positioned(path, context)) for path in paths if path]
        repeats = tuple(p for n, p in self.paths.items() if self.types[n] == "repeat")
        return Reads({self.types.get(p, "") for p in paths}, values, repeats)


def _positioned(path: str, context: str) -> str:
    """`path` in the context's repeat instance (/data/rep/n at /data/rep[2]/x → /data/rep[2]/n)."""
    steps = context.split("/")
    for end, step in enumerate(steps, start=1):
        if "[" in step:
            prefix = "/".join(steps[:end])
            bare = re.sub(r"\[\d+\]", "", prefix)
            if path.startswith(bare + "/"):
                path = prefix + path[len(bare) :]
    return path


def feature(r: ThreeWay, index: FormIndex) -> str:
    """The first of FEATURES the case has, else the functions it calls."""
    reads = index.reads(r)
    for candidate in FEATURES:
        if candidate.matches(r, reads):
            return candidate.label
    functions = sorted(set(re.findall(r"([a-z][\w:-]*)\(", r.case.expression)))
    return "other: " + (", ".join(f"{f}()" for f in functions) or "operators and paths")


# ---------------------------------------------------------------------------------- the figures


def _percent(part: int, whole: int) -> str:
    return f"{part / whole:6.1%}" if whole else "     -"


def _answer(boolean: bool | None, value: str | None, error: str | None) -> str:
    if error is not None:
        return "error (" + error.split(", message: ")[-1][:70].strip() + ")"
    return str(boolean) if boolean is not None else repr(value)


def describe(r: ThreeWay) -> str:
    o = r.case
    server = "not decided (flagged)" if o.server_verdict is None else str(o.server_verdict)
    return (
        f"[{o.kind}] {o.expression}  at {o.context}, {o.scenario}, {o.clock}: "
        f"JavaRosa {_answer(o.javarosa_boolean, o.javarosa_value, o.javarosa_error)}, "
        f"Enketo {_answer(r.enketo_boolean, r.enketo_value, r.enketo_error)}, server {server}"
    )


def divergent(results: list[ThreeWay]) -> list[ThreeWay]:
    """Constraint and relevance cases where the engines give different booleans or one errs."""
    return [r for r in results if r.judged and r.engines == ENGINES_DIFFER]


def unflagged_by_feature(
    results: list[ThreeWay], spec: FormSpec
) -> dict[str, dict[tuple[str, str], list[ThreeWay]]]:
    """Divergent cases the server decided, by feature, then by (kind, expression)."""
    index = FormIndex.of(spec)
    grouped: dict[str, dict[tuple[str, str], list[ThreeWay]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for r in divergent(results):
        if r.case.server_verdict is not None:
            grouped[feature(r, index)][(r.case.kind, r.case.expression)].append(r)
    return grouped


def _kind_figures(kind: str, of_kind: list[ThreeWay]) -> str:
    engines = Counter(r.engines for r in of_kind)
    answered = len(of_kind) - engines[BOTH_ERROR]  # the rates leave out what both engines refuse
    differ = [r for r in of_kind if r.engines == ENGINES_DIFFER]
    pairs = {
        "JavaRosa=Enketo": engines[ENGINES_AGREE],
        "server=JavaRosa": sum(r.server_agrees_with_javarosa for r in of_kind),
        "server=Enketo": sum(r.server_agrees_with_enketo for r in of_kind),
        "all three": sum(
            r.engines == ENGINES_AGREE and r.server_agrees_with_enketo for r in of_kind
        ),
    }
    return (
        f"  {kind:<12} "
        + "  ".join(f"{name} {_percent(n, answered)}" for name, n in pairs.items())
        + f"  engines differ {len(differ):4d} (JavaRosa errs "
        f"{sum(r.case.javarosa_error is not None for r in differ)}, Enketo errs "
        f"{sum(r.enketo_error is not None for r in differ)})  "
        f"both err {engines[BOTH_ERROR]:3d}  of {len(of_kind)} cases"
    )


def summary(results: list[ThreeWay], spec: FormSpec, *, examples: int = 3) -> list[str]:
    """The three-way figures and the divergences the server does not flag."""
    expressions = {(r.case.kind, r.case.expression) for r in results}
    lines = [f"Enketo oracle: {len(expressions)} expressions, {len(results)} cases"]
    lines.extend(_kind_figures(k, [r for r in results if r.case.kind == k]) for k in KINDS)
    split = divergent(results)
    flagged = sum(r.case.server_verdict is None for r in split)
    failing = [r for r in results if r.server_false_where_an_engine_says_true]
    lines.append(
        f"  constraints+relevance where the engines differ: {len(split)} cases "
        f"({len({(r.case.kind, r.case.expression) for r in split})} expressions), "
        f"flagged by the server {flagged}, decided {len(split) - flagged}; "
        f"server false where an engine says true: {len(failing)}"
    )
    index = FormIndex.of(spec)
    flagged_by_feature = Counter(feature(r, index) for r in split if r.case.server_verdict is None)
    lines.append(
        "  flagged by the server, by feature: "
        + ", ".join(f"{label} ({n})" for label, n in flagged_by_feature.most_common())
    )
    grouped = unflagged_by_feature(results, spec)
    if grouped:
        lines.append("  engine-divergent patterns the server decides (does not flag), by feature:")

    def rejecting(found: list[ThreeWay]) -> int:
        return sum(r.server_false_where_an_engine_says_true for r in found)

    by_harm = sorted(
        grouped.items(),
        key=lambda item: (-sum(rejecting(v) for v in item[1].values()), -len(item[1])),
    )
    for label, by_expression in by_harm:
        found = sorted(by_expression.values(), key=lambda v: -rejecting(v))
        lines.append(
            f"    {label}: {len(found)} expressions, {sum(len(v) for v in found)} cases, "
            f"{sum(rejecting(v) for v in found)} where the server says false and an engine true"
        )
        lines.extend(f"      {describe(v[0])}" for v in found[:examples])
    return lines


def write_report(results: list[ThreeWay], spec: FormSpec, path: Path) -> None:
    index = FormIndex.of(spec)
    report = {
        "cases": [
            {
                **asdict(r.case),
                "enketo_value": r.enketo_value,
                "enketo_boolean": r.enketo_boolean,
                "enketo_error": r.enketo_error,
                "engines": r.engines,
                "feature": feature(r, index) if r.judged and r.engines == ENGINES_DIFFER else None,
            }
            for r in results
        ]
    }
    text = json.dumps(report, ensure_ascii=False, indent=1)
    path.write_bytes(text.encode("utf-8", "backslashreplace"))
