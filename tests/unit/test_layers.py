"""The packages depend one way (schemas ← forms ← sync ← device, sync ← server), `sync/` does no
I/O, and what the packages below the server import from PyPI is a declared runtime dependency."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIRST_PARTY = ("schemas", "forms", "sync", "device", "server")
# What each package may import from the project (server/cli.py alone may import device).
MAY_IMPORT = {
    "schemas": {"schemas"},
    "forms": {"schemas", "forms"},
    "sync": {"schemas", "forms", "sync"},
    "device": {"schemas", "forms", "sync", "device"},
    "server": {"schemas", "forms", "sync", "server"},
}
# Modules that touch files, sockets, databases or processes: none of them belongs in sync/.
IO_MODULES = {"os", "shutil", "sqlite3", "socket", "subprocess", "asyncio", "httpx", "urllib3"}


def imports(package: str) -> dict[str, set[str]]:
    """Top-level module names each file of `package` imports (nested imports included)."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        found[path.relative_to(ROOT).as_posix()] = names
    return found


@pytest.mark.parametrize("package", FIRST_PARTY)
def test_packages_import_only_the_layers_below(package: str) -> None:
    wrong = {
        file: sorted(names & set(FIRST_PARTY) - MAY_IMPORT[package])
        for file, names in imports(package).items()
        if names & set(FIRST_PARTY) - MAY_IMPORT[package] and file != "server/cli.py"
    }
    assert not wrong, wrong


def test_sync_does_no_io() -> None:
    wrong = {file: sorted(names & IO_MODULES) for file, names in imports("sync").items()}
    assert not {file: names for file, names in wrong.items() if names}


def test_third_party_imports_are_runtime_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = {
        re.split(r"[\[<>=!~ ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        for requirement in project["dependencies"]
    }
    distributions = importlib.metadata.packages_distributions()
    undeclared = {}
    for package in ("schemas", "forms", "sync", "device"):
        for file, names in imports(package).items():
            for name in names - set(FIRST_PARTY) - set(sys.stdlib_module_names):
                needed = {d.lower().replace("_", "-") for d in distributions.get(name, [name])}
                if not needed & declared:
                    undeclared[f"{file}: {name}"] = sorted(needed)
    assert not undeclared, undeclared
