"""JavaRosa, the engine inside ODK Collect, as the oracle for the server's evaluator (issue 11).

A corpus of XLSForm expressions (tests/oracle/corpus.py) is evaluated over typed instances of one
form, at a Hanoi afternoon and a Hanoi early morning, by `forms.validation.evaluate_at`/`judge_at`
and by JavaRosa 5.1.0 from the jar pyxform ships (tests/oracle/javarosa/JavaRosaOracle.java, its
clock frozen with libfaketime). How a case is classified is in tests/oracle/differential.py.

The rules:
- a constraint or relevance the server judges false while JavaRosa judges it true fails the test
  (the server would reject a record the worker saw accepted);
- agreement on constraints and relevance together must be at least 95%;
- where JavaRosa throws, Collect would not have let the form be finalized normally: those cases
  are counted apart, never failed on, and left out of the rates;
- a case the server cannot evaluate ("not checked") counts against agreement.
The figures and the first disagreements are printed at the end of the run; with
FIELDSYNC_ORACLE_REPORT=path every case is written there as JSON.
"""

from __future__ import annotations

from tests.oracle.corpus import CORPUS, FUNCTIONS_NAMED_IN_ISSUE, KINDS, SCENARIOS
from tests.oracle.differential import (
    SERVER_FALSE,
    THRESHOLD,
    Outcome,
    describe,
    rates,
    summary,
)

MINIMUM_EXPRESSIONS = 500


def test_the_corpus_has_500_expressions_and_every_function_the_issue_names() -> None:
    distinct = {(e.kind, e.text) for e in CORPUS}
    assert len(distinct) >= MINIMUM_EXPRESSIONS
    assert {e.kind for e in CORPUS} == set(KINDS)
    missing = [f for f in FUNCTIONS_NAMED_IN_ISSUE if not any(f in e.text for e in CORPUS)]
    assert missing == []


def test_javarosa_sees_each_instance_and_the_last_saved_one(
    oracle_outcomes: list[Outcome],
) -> None:
    """A harness that restored nothing would agree with an empty server: check what it sees."""
    seen = {
        (o.scenario, o.context, o.expression): o.javarosa_value
        for o in oracle_outcomes
        if o.kind == "calculation"
    }
    for scenario, data in SCENARIOS.items():
        assert seen[(scenario, "/data/result", "${full_name}")] == data["full_name"]
        assert seen[(scenario, "/data/result", "${age}")] == str(data["age"])
        assert seen[(scenario, "/data/rep[2]/member_result", "${n}")] == str(
            data["rep"][1].get("n", "")
        )
        assert seen[(scenario, "/data/result", "${last-saved#district}")] == "Đống Đa"
    assert seen[("filled", "/data/result", "/data/grp/district")] == "Ba Đình"
    assert seen[("filled", "/data/result", "jr:choice-name('no', '${consent}')")] == "Không (en)"


def test_the_server_never_rejects_what_javarosa_accepts(oracle_outcomes: list[Outcome]) -> None:
    rejected = [o for o in oracle_outcomes if o.outcome == SERVER_FALSE]
    assert not rejected, (
        f"{len(rejected)} cases where the server says false and JavaRosa true:\n"
        + "\n".join(describe(o) for o in rejected[:30])
    )


def test_agreement_on_constraints_and_relevance_is_at_least_95_percent(
    oracle_outcomes: list[Outcome],
) -> None:
    judged = rates([o for o in oracle_outcomes if o.kind != "calculation"])
    figures = summary(oracle_outcomes, shown=0)
    assert judged.agreement >= THRESHOLD, "\n".join(figures)
