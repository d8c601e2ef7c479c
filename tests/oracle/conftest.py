"""The JavaRosa and Enketo oracles, run once per session; their figures are printed at the end."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.oracle import three_way
from tests.oracle.corpus import form_xlsx
from tests.oracle.differential import (
    OracleForm,
    Outcome,
    load_form,
    run,
    summary,
    write_report,
)
from tests.oracle.enketo import EnketoHarness, EnketoUnavailable, install, missing_node
from tests.oracle.javarosa import OracleUnavailable, compile_harness, missing_java

_SUMMARY = pytest.StashKey[list[str]]()
_ENKETO_SUMMARY = pytest.StashKey[list[str]]()


@pytest.fixture(scope="session")
def oracle_form() -> OracleForm:
    return load_form(form_xlsx())


@pytest.fixture(scope="session")
def oracle_outcomes(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    oracle_form: OracleForm,
) -> Iterator[list[Outcome]]:
    """Every case of the corpus through the server's evaluator and JavaRosa, at both clocks.

    Skipped (with the reason) only where java or javac is missing; anything else missing fails.
    """
    reason = missing_java()
    if reason is not None:
        pytest.skip(reason)
    workdir = tmp_path_factory.mktemp("javarosa-oracle")
    try:
        harness = compile_harness(workdir / "classes")
    except OracleUnavailable as exc:
        pytest.fail(str(exc))
    outcomes = run(oracle_form, harness, workdir)
    report = os.environ.get("FIELDSYNC_ORACLE_REPORT")
    if report:
        write_report(outcomes, Path(report))
    lines = summary(outcomes)
    if report:
        lines.append(f"  per-case report: {report}")
    request.config.stash[_SUMMARY] = lines
    yield outcomes


@pytest.fixture(scope="session")
def enketo_results(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    oracle_form: OracleForm,
    oracle_outcomes: list[Outcome],
) -> list[three_way.ThreeWay]:
    """The same cases through Enketo's evaluator, beside the server's and JavaRosa's answers.

    Skipped (with the reason) where node or npm is missing or `npm ci` cannot run.
    """
    reason = missing_node()
    if reason is not None:
        pytest.skip(reason)
    try:
        install()
    except EnketoUnavailable as exc:
        pytest.skip(f"the Enketo oracle cannot be installed: {exc}")
    workdir = tmp_path_factory.mktemp("enketo-oracle")
    results = three_way.run(oracle_form, EnketoHarness(), workdir, oracle_outcomes)
    lines = three_way.summary(results, oracle_form.spec)
    report = os.environ.get("FIELDSYNC_ENKETO_REPORT")
    if report:
        three_way.write_report(results, oracle_form.spec, Path(report))
        lines.append(f"  per-case report: {report}")
    request.config.stash[_ENKETO_SUMMARY] = lines
    return results


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for title, key in (("JavaRosa oracle", _SUMMARY), ("Enketo oracle", _ENKETO_SUMMARY)):
        lines = terminalreporter.config.stash.get(key, None)
        if lines:
            terminalreporter.section(title)
            for line in lines:
                terminalreporter.write_line(line)
