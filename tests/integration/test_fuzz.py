"""Schemathesis against the app in-process: every operation, as an admin and as a field worker.

The app runs on schemathesis' own event loop thread, so it owns its engine through its lifespan,
on a fresh database of its own (the fuzzer publishes, closes and creates things freely).
FIELDSYNC_FUZZ_EXAMPLES sets the cases per operation, role and mode (`make fuzz` raises it).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hypothesis
import msgspec
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from schemathesis import checks
from schemathesis.generation import GenerationMode
from schemathesis.python import asgi

from server.app import create_app
from server.bootstrap import prepare
from server.db.engine import current_engine, use_engine
from tests.conftest import PG_ADMIN_URL, make_settings, pg_admin
from tests.helpers import ADMIN_PASSWORD, ADMIN_USERNAME, HOAN_KIEM, PASSWORD, unique

pytestmark = [pytest.mark.fuzz, pytest.mark.slow]

EXAMPLES = int(os.environ.get("FIELDSYNC_FUZZ_EXAMPLES", "5"))
SEED = os.environ.get("FIELDSYNC_FUZZ_SEED", "0")
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]


@schemathesis.serializer("application/msgpack")
def _msgpack(ctx: Any, value: Any) -> bytes:
    try:
        return msgspec.msgpack.encode(value)
    except OverflowError:  # an integer msgpack cannot carry: send what a broken client would
        return b"\xc1" + msgspec.json.encode(value)


@schemathesis.serializer("application/offset+octet-stream")
def _tus_bytes(ctx: Any, value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _in_own_loop(work: Callable[[], Any]) -> Any:
    # The pytest session's loop is running this test; setup work gets a loop of its own.
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, work()).result()


@pytest.fixture(params=["sqlite", "postgres"])
def fuzz_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fuzz.db'}"
        return
    request.getfixturevalue("postgres_url")  # skips (or fails) as the suite does without PG
    name = f"fieldsync_fuzz_{os.getpid()}_{uuid.uuid4().hex[:8]}"

    pg_admin(f'CREATE DATABASE "{name}"')
    yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Tally:
    cases: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    checks_run: int = 0
    failures: dict[str, str] = field(default_factory=dict)


def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    fuzz_database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(tmp_path, fuzz_database)
    suite_engine = current_engine()
    _in_own_loop(lambda: prepare(settings))
    app = create_app(settings)  # owns its engine and blob store, on schemathesis' loop
    started = time.monotonic()
    try:
        tally = _fuzz(app)
    finally:
        asgi.shutdown_lifespans()
        use_engine(suite_engine)

    with capsys.disabled():  # the figures the closing note quotes
        print(
            f"\nschemathesis [{fuzz_database.split(':')[0]}]: {sum(tally.cases.values())} cases"
            f" over {len(tally.cases)} operations in {time.monotonic() - started:.0f} s,"
            f" {tally.checks_run} checks ({', '.join(c.__name__ for c in CHECKS)}),"
            f" statuses {dict(sorted(tally.statuses.items()))}"
        )
    assert not tally.failures, "\n\n".join(f"{k}:\n{v}" for k, v in tally.failures.items())


def _fuzz(app: Any) -> Tally:
    schema = schemathesis.openapi.from_asgi("/schema/openapi.json", app)
    # The roles' tokens are sent as given, not replaced by generated Authorization values.
    schema.config.generation.update(with_security_parameters=False)
    with asgi.get_client(app) as http:
        admin = _login(http, ADMIN_USERNAME, ADMIN_PASSWORD)
        worker_name = unique("fuzz")
        created = http.post(
            "/api/v1/users",
            json={
                "username": worker_name,
                "password": PASSWORD,
                "role": "outreach",
                "wards": [HOAN_KIEM],
            },
            headers=admin,
        )
        assert created.status_code == 201, created.text
        worker = _login(http, worker_name, PASSWORD)

    tally = Tally()
    for result in schema.get_all_operations():
        operation = result.ok()
        for role, headers in (("admin", admin), ("worker", worker)):
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                _run(operation, role, headers, mode, tally)
    return tally


def _run(
    operation: Any, role: str, headers: dict[str, str], mode: GenerationMode, tally: Tally
) -> None:
    label = f"{operation.label} as {role} ({mode.value})"

    @hypothesis.settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @hypothesis.seed(zlib.crc32(f"{SEED}:{label}".encode()))  # reproducible, yet per role
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        tally.cases[operation.label] += 1
        tally.checks_run += len(CHECKS)
        try:
            response = case.call_and_validate(headers=headers, checks=CHECKS)
            tally.statuses[response.status_code] += 1
        except (AssertionError, BaseExceptionGroup) as failure:
            tally.failures.setdefault(label, f"{failure}\n{case.as_curl_command()}")

    try:
        run()
    except hypothesis.errors.Unsatisfiable:
        assert mode is GenerationMode.NEGATIVE, label  # nothing to get wrong: no parameters


def _login(http: Any, username: str, password: str) -> dict[str, str]:
    response = http.post(
        "/api/v1/auth/login",
        json={"username": username, "password": password, "device_id": str(uuid.uuid4())},
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}
