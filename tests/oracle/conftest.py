"""The JavaRosa oracle, run once per session; its figures are printed at the end of the run."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.oracle.corpus import form_xlsx
from tests.oracle.differential import Outcome, load_form, run, summary, write_report
from tests.oracle.javarosa import OracleUnavailable, compile_harness, missing_java

_SUMMARY = pytest.StashKey[list[str]]()


@pytest.fixture(scope="session")
def oracle_outcomes(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
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
    outcomes = run(load_form(form_xlsx()), harness, workdir)
    report = os.environ.get("FIELDSYNC_ORACLE_REPORT")
    if report:
        write_report(outcomes, Path(report))
    lines = summary(outcomes)
    if report:
        lines.append(f"  per-case report: {report}")
    request.config.stash[_SUMMARY] = lines
    yield outcomes


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = terminalreporter.config.stash.get(_SUMMARY, None)
    if lines:
        terminalreporter.section("JavaRosa oracle")
        for line in lines:
            terminalreporter.write_line(line)
