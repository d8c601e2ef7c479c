"""The Python side of the JavaRosa harness: find the jar and libfaketime, compile, run at a clock."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

import pyxform

from schemas.forms import Field, FormSpec

HARNESS_SOURCE = Path(__file__).parent / "javarosa" / "JavaRosaOracle.java"
# Compiled beside each harness: the read-only jr:// file roots both use.
FILE_ROOT_SOURCE = HARNESS_SOURCE.with_name("FileRoot.java")
# pyxform's wheel ships ODK Validate, which bundles JavaRosa (5.1.0 with pyxform 4.5).
JAR = Path(pyxform.__file__).parent / "validators" / "odk_validate" / "bin" / "ODK_Validate.jar"
ZONE = "Asia/Ho_Chi_Minh"
RUN_TIMEOUT_SECONDS = 300
_QUOTE = {'"': "&quot;"}


class OracleUnavailable(Exception):
    """Something the oracle needs is not installed (the message says what)."""


def libfaketime_library() -> Path:
    """libfaketime.so.1 as the PyPI package `libfaketime` (test extra) ships it."""
    spec = importlib.util.find_spec("libfaketime")
    if spec is None or not spec.submodule_search_locations:
        raise OracleUnavailable("the libfaketime package is missing: pip install -e '.[test]'")
    for location in spec.submodule_search_locations:
        library = Path(location) / "vendor" / "libfaketime" / "src" / "libfaketime.so.1"
        if library.is_file():
            return library
    raise OracleUnavailable("the libfaketime package has no libfaketime.so.1")


def missing_java() -> str | None:
    """Why the oracle cannot run on this machine, or None when java and javac are there."""
    absent = [tool for tool in ("java", "javac") if shutil.which(tool) is None]
    if absent:
        return (
            f"{' and '.join(absent)} not found: the JavaRosa oracle needs a JDK "
            "(Debian: apt-get install default-jdk-headless)"
        )
    return None


@dataclass(frozen=True)
class Harness:
    classes: Path
    faketime: Path

    def run(self, request: dict[str, Any], clock: datetime, workdir: Path) -> dict[str, Any]:
        """One JVM at `clock` (frozen by libfaketime), every case of `request` in it."""
        local = clock.astimezone(ZoneInfo(ZONE))
        env = {
            "LD_PRELOAD": str(self.faketime),
            # Absolute and frozen: every now() in the run is this instant (read in TZ).
            "FAKETIME": local.strftime("%Y-%m-%d %H:%M:%S"),
        }
        command = ["java", f"-Duser.timezone={ZONE}", "-cp", f"{JAR}{os.pathsep}{self.classes}"]
        return run_engine(
            "JavaRosa", [*command, "JavaRosaOracle"], env, request, clock, workdir, (ZONE,)
        )


def run_engine(
    engine: str,
    command: list[str],
    env: dict[str, str],
    request: dict[str, Any],
    clock: datetime,
    workdir: Path,
    zones: tuple[str, ...],
) -> dict[str, Any]:
    """Run an engine's harness (`command request.json response.json`) in the programme's zone and
    check it ran at `clock`: a run on the real clock would compare today() with the wrong day."""
    workdir.mkdir(parents=True, exist_ok=True)
    request_path, response_path = workdir / "request.json", workdir / "response.json"
    request_path.write_text(json.dumps(request, ensure_ascii=False), encoding="utf-8")
    completed = subprocess.run(
        [*command, str(request_path), str(response_path)],
        env={**os.environ, "TZ": ZONE, **env},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
        check=False,
    )
    if completed.returncode != 0:
        raise AssertionError(
            f"the {engine} harness failed ({completed.returncode}):\n{completed.stderr[-4000:]}"
        )
    response: dict[str, Any] = json.loads(response_path.read_text(encoding="utf-8"))
    reported = response["clock"]
    assert reported["epoch_ms"] == round(clock.timestamp() * 1000), (
        f"{engine} ran at {reported['date']}, not at the fixed clock {clock.isoformat()}"
    )
    assert reported["zone"] in zones, f"{engine} ran in time zone {reported['zone']}"
    return response


def compile_harness(into: Path) -> Harness:
    reason = missing_java()
    if reason is not None:
        raise OracleUnavailable(reason)
    if not JAR.is_file():
        raise OracleUnavailable(f"pyxform ships no ODK Validate jar at {JAR}")
    faketime = libfaketime_library()
    compile_java(HARNESS_SOURCE, into)
    return Harness(classes=into, faketime=faketime)


def compile_java(harness: Path, into: Path) -> None:
    """Compile a harness (with the file roots it shares) against pyxform's JavaRosa."""
    sources = [str(harness), str(FILE_ROOT_SOURCE)]
    command = ["javac", "-encoding", "UTF-8", "-cp", str(JAR), "-d", str(into), *sources]
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS, check=False
    )
    if completed.returncode != 0:
        raise AssertionError(f"javac failed on {harness.name}:\n{completed.stderr}")


# ------------------------------------------------------------------ the instance as Collect saves


def instance_xml(spec: FormSpec, data: dict[str, Any]) -> str:
    """The submission JSON as the XML instance Collect would have saved."""
    root = spec.fields[0].path.split("/")[1] if spec.fields else "data"
    body = "".join(_element(f, data.get(f.name)) for f in spec.fields)
    return f'<{root} id="{escape(spec.form_id, _QUOTE)}" version="{escape(spec.version, _QUOTE)}">{body}</{root}>'


def text_answers(spec: FormSpec, data: dict[str, Any]) -> list[dict[str, str]]:
    """Every non-empty text answer with its path, as typed (restoring the XML trims them)."""
    answers: list[dict[str, str]] = []
    _text_answers(
        spec.fields,
        data,
        "/" + (spec.fields[0].path.split("/")[1] if spec.fields else "data"),
        answers,
    )
    return answers


def _text_answers(
    fields: list[Field], values: dict[str, Any], path: str, into: list[dict[str, str]]
) -> None:
    for f in fields:
        value = values.get(f.name)
        if f.type == "group" and isinstance(value, dict):
            _text_answers(f.children, value, f"{path}/{f.name}", into)
        elif f.type == "repeat" and isinstance(value, list):
            for position, item in enumerate(value, start=1):
                _text_answers(f.children, item, f"{path}/{f.name}[{position}]", into)
        elif f.type == "text" and isinstance(value, str) and value:
            into.append({"path": f"{path}/{f.name}", "value": value})


def _element(f: Field, value: Any) -> str:
    if f.type == "group":
        inner = value if isinstance(value, dict) else {}
        return f"<{f.name}>{''.join(_element(c, inner.get(c.name)) for c in f.children)}</{f.name}>"
    if f.type == "repeat":
        items = value if isinstance(value, list) else []
        return "".join(
            f"<{f.name}>{''.join(_element(c, item.get(c.name)) for c in f.children)}</{f.name}>"
            for item in items
        )
    return f"<{f.name}>{escape(_text(value))}</{f.name}>"


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    if isinstance(value, float):
        return repr(value)
    return str(value)
