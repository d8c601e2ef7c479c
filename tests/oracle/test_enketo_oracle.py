"""Enketo's evaluator as a second oracle: does the server flag every rule the engines read apart?

The corpus of tests/oracle/corpus.py runs through `openrosa-xpath-evaluator` (Enketo's evaluator,
npm, under Node.js with jsdom, behind the rewriting enketo-core applies to expressions: see
tests/oracle/enketo/enketo-oracle.js) at the same two clocks, and is compared with JavaRosa's
answers and the server's verdicts (tests/oracle/three_way.py).

The rule: the server decides a constraint or relevance false only where neither engine reads it
true. Where JavaRosa and Enketo differ the server must leave the rule undecided (accepted and
flagged); a decided false there is a record Enketo accepted that the server rejects. The figures
and every divergent pattern the server decides are printed at the end of the run; with
FIELDSYNC_ENKETO_REPORT=path every case is written there as JSON.
"""

from __future__ import annotations

from tests.oracle.corpus import CLOCKS, SCENARIOS
from tests.oracle.differential import OracleForm
from tests.oracle.three_way import ThreeWay, describe, summary

SHOWN = 40


def _values(results: list[ThreeWay]) -> dict[tuple[str, str, str, str], str | None]:
    return {
        (r.case.clock, r.case.scenario, r.case.context, r.case.expression): r.enketo_value
        for r in results
        if r.case.kind == "calculation"
    }


def test_enketo_sees_each_instance_the_last_saved_one_and_the_labels(
    enketo_results: list[ThreeWay],
) -> None:
    """A harness that loaded nothing would still answer: check what Enketo sees."""
    seen = _values(enketo_results)
    clock = next(iter(CLOCKS.values())).isoformat()
    for scenario, data in SCENARIOS.items():
        assert seen[(clock, scenario, "/data/result", "${full_name}")] == data["full_name"]
        assert seen[(clock, scenario, "/data/result", "${age}")] == str(data["age"])
        # Inside a repeat, ${n} is the n of the same instance.
        assert seen[(clock, scenario, "/data/rep[2]/member_result", "${n}")] == str(
            data["rep"][1].get("n", "")
        )
        assert seen[(clock, scenario, "/data/result", "${last-saved#district}")] == "Đống Đa"
    assert seen[(clock, "filled", "/data/result", "/data/grp/district")] == "Ba Đình"
    choice = "jr:choice-name('no', '${consent}')"
    assert seen[(clock, "filled", "/data/result", choice)] == "Không (en)"


def test_enketo_reads_the_fixed_clock_in_hanoi(enketo_results: list[ThreeWay]) -> None:
    seen = _values(enketo_results)
    for now in CLOCKS.values():
        at = (now.isoformat(), "filled", "/data/result")
        assert seen[(*at, "today()")] == "2026-06-17"
        assert seen[(*at, "format-date-time(now(), '%H:%M:%S')")] == now.strftime("%H:%M:%S")


def test_the_server_never_decides_false_where_an_engine_says_true(
    enketo_results: list[ThreeWay], oracle_form: OracleForm
) -> None:
    """Where JavaRosa or Enketo reads a constraint or relevance true, the server may not decide
    it false: it must agree, or leave it undecided (accepted and flagged)."""
    rejected = [r for r in enketo_results if r.server_false_where_an_engine_says_true]
    expressions = {(r.case.kind, r.case.expression) for r in rejected}
    assert not rejected, (
        f"{len(rejected)} cases ({len(expressions)} expressions) where the server decides false "
        "and JavaRosa or Enketo says true:\n"
        + "\n".join(describe(r) for r in rejected[:SHOWN])
        + "\n\n"
        + "\n".join(summary(enketo_results, oracle_form.spec))
    )
