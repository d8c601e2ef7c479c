"""ODK Validate: JavaRosa, the engine inside ODK Collect, loading an XForm as Collect would.

pyxform's wheel ships it (`ODK_Validate.jar`, JavaRosa 5.1 with pyxform 4.5); it needs a Java
runtime. ODK Central runs it on every form it is given; the server runs it on every upload where
Java is installed, and the test suite on every form the programme and the tests publish.
Several forms go through one JVM: starting it costs most of the time.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyxform

JAR = Path(pyxform.__file__).parent / "validators" / "odk_validate" / "bin" / "ODK_Validate.jar"
# A short-lived JVM: the client compiler and the serial collector start it in about half the
# time; UTF-8 so JavaRosa's messages keep a form's Vietnamese text.
JVM_OPTIONS = (
    "-XX:TieredStopAtLevel=1",
    "-XX:+UseSerialGC",
    "-Xmx256m",
    "-Djava.awt.headless=true",
    "-Dfile.encoding=UTF-8",
    "-Dsun.stdout.encoding=UTF-8",
    "-Dsun.stderr.encoding=UTF-8",
    "-Dstdout.encoding=UTF-8",
    "-Dstderr.encoding=UTF-8",
)
_VALIDATING = "Validating: "
_VALID = ">> Xform is valid!"
_SUMMARY = "The following files failed validation:"
_STACK_FRAME = re.compile(r"^\s*(at \S+\(.*\)|\.\.\. \d+ more)\s*$")
_EXCEPTION_CLASS = re.compile(r"^(?:[a-z_][\w$]*\.)+[A-Z][\w$]*: ")


@dataclass(frozen=True)
class Verdict:
    """`valid` True or False as JavaRosa judged the form, None when it was not checked;
    `message` is JavaRosa's reason when invalid, and why not when not checked."""

    valid: bool | None
    message: str = ""


def java_runtime() -> str | None:
    """The `java` on PATH, or None where no Java runtime is installed."""
    return shutil.which("java")


def validate_xforms(xforms: Sequence[str], *, java: str | None, timeout: float) -> list[Verdict]:
    """A verdict per XForm (in order), all from one run of ODK Validate with `java`."""
    if java is None:
        return _not_checked(xforms, "no Java runtime is installed")
    if not JAR.is_file():
        return _not_checked(xforms, f"pyxform ships no ODK Validate ({JAR} is missing)")
    with tempfile.TemporaryDirectory(prefix="odk-validate-") as workdir:
        names = [f"form{index}.xml" for index in range(len(xforms))]
        for name, xform in zip(names, xforms, strict=True):
            (Path(workdir) / name).write_text(xform, encoding="utf-8")
        try:
            completed = subprocess.run(  # noqa: S603 (a fixed command line; the forms are files)
                [java, *JVM_OPTIONS, "-jar", str(JAR), *names],
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,  # one stream keeps each form's messages in its section
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return _not_checked(xforms, f"ODK Validate did not finish within {timeout:g} s")
        except OSError as error:
            return _not_checked(xforms, f"Java could not be started: {error}")
    output = completed.stdout.decode("utf-8", errors="replace")
    sections = _sections(output)
    verdicts = []
    for name in names:
        lines = sections.get(name)
        if lines is None:
            head = " ".join(output.split())[:300] or f"exit status {completed.returncode}"
            verdicts.append(Verdict(None, f"ODK Validate did not report on the form: {head}"))
        elif any(line.strip() == _VALID for line in lines):
            verdicts.append(Verdict(True))
        else:
            verdicts.append(Verdict(False, javarosa_message(lines)))
    return verdicts


def _not_checked(xforms: Sequence[str], reason: str) -> list[Verdict]:
    return [Verdict(None, reason) for _ in xforms]


def _sections(output: str) -> dict[str, list[str]]:
    """ODK Validate's output, per form: the lines after its `Validating: <file>` line."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in output.splitlines():
        if line.startswith(_VALIDATING):
            current = sections.setdefault(line.removeprefix(_VALIDATING).strip(), [])
        elif line.startswith(_SUMMARY):
            current = None
        elif current is not None:
            current.append(line)
    return sections


def javarosa_message(lines: Sequence[str]) -> str:
    """What JavaRosa said about a form, without Java's stack: the first exception's message."""
    kept: list[str] = []
    for line in lines:
        if line.startswith("Caused by:"):
            break
        if not line.strip() or line.startswith(">>") or _STACK_FRAME.match(line):
            continue
        kept.append(_EXCEPTION_CLASS.sub("", line.strip()))
    return "\n".join(kept) or "JavaRosa could not load the form."
