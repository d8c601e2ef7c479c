"""The Python side of the Enketo harness: install it with npm, run it under Node.js at a clock.

Enketo's evaluator is the npm package `openrosa-xpath-evaluator`, pinned with jsdom (the DOM whose
XPath it wraps) in tests/oracle/enketo/package-lock.json and installed by `npm ci` into
tests/oracle/enketo/node_modules (git-ignored): by `make test`, or by the test itself when run
alone. The harness (tests/oracle/enketo/enketo-oracle.js) freezes `Date` at the clock it is given.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from schemas.forms import Field, FormSpec
from tests.oracle.javarosa import ZONE, run_engine

PACKAGE = Path(__file__).parent / "enketo"
HARNESS_SOURCE = PACKAGE / "enketo-oracle.js"
LOCKFILE = PACKAGE / "package-lock.json"
# Written after a successful `npm ci` (the Makefile writes the same file).
INSTALLED = PACKAGE / "node_modules" / ".installed"
# The same command as the Makefile's; tests/oracle/enketo/.npmrc holds npm's settings.
INSTALL_COMMAND = ("npm", "ci", "--prefix", str(PACKAGE))
INSTALL_TIMEOUT_SECONDS = 300
# ICU (Node's Intl) still names Hanoi's zone by its old link name.
ZONE_NAMES = (ZONE, "Asia/Saigon")
LANGUAGE = "en"  # jr:choice-name answers in the language the JavaRosa side uses


class EnketoUnavailable(Exception):
    """Node.js or the npm packages are missing and cannot be installed here (the message says)."""


def missing_node() -> str | None:
    """Why the Enketo oracle cannot run on this machine, or None when node and npm are there."""
    absent = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if absent:
        return (
            f"{' and '.join(absent)} not found: the Enketo oracle needs Node.js 20 "
            "(Debian: apt-get install nodejs npm)"
        )
    return None


def installed() -> bool:
    """The packages are installed, from the current package.json and lockfile."""
    if not INSTALLED.is_file():
        return False
    done = INSTALLED.stat().st_mtime
    return all(done >= source.stat().st_mtime for source in (PACKAGE / "package.json", LOCKFILE))


def install() -> None:
    """`npm ci` from the lockfile, unless that install is already there."""
    reason = missing_node()
    if reason is not None:
        raise EnketoUnavailable(reason)
    if installed():
        return
    try:
        completed = subprocess.run(
            INSTALL_COMMAND,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise EnketoUnavailable(f"{' '.join(INSTALL_COMMAND)} timed out") from exc
    if completed.returncode != 0:
        raise EnketoUnavailable(
            f"{' '.join(INSTALL_COMMAND)} failed ({completed.returncode}): "
            f"{completed.stderr.strip()[-1000:]}"
        )
    INSTALLED.touch()


@dataclass(frozen=True)
class EnketoHarness:
    def run(self, request: dict[str, Any], clock: datetime, workdir: Path) -> dict[str, Any]:
        """One node process at `clock`, every case of `request` in it."""
        request = {**request, "clock_epoch_ms": round(clock.timestamp() * 1000)}
        command = ["node", str(HARNESS_SOURCE)]
        response = run_engine("Enketo", command, {}, request, clock, workdir, ZONE_NAMES)
        offset = clock.utcoffset()
        assert offset is not None
        assert response["clock"]["offset_minutes"] == offset.total_seconds() // 60
        return response


def choice_labels(spec: FormSpec) -> dict[str, dict[str, str]]:
    """Each select's choices by value, labelled in LANGUAGE, keyed by the field's path."""
    labels: dict[str, dict[str, str]] = {}
    _choice_labels(spec.fields, labels)
    return labels


def _choice_labels(fields: list[Field], into: dict[str, dict[str, str]]) -> None:
    for f in fields:
        _choice_labels(f.children, into)
        if f.choices:
            into[f.path] = {c.name: c.labels.get(LANGUAGE, "") for c in f.choices}
