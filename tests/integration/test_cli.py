"""The `fieldsync` command line as an operator uses it: real subprocesses, real files."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from server.db.migrate import migrate
from server.db.tables import Ward
from tests.conftest import Backend
from tests.helpers import new_device_id
from tests.integration.served import CLI, cli_env, fresh_server


def test_make_run_smoke(tmp_path: Path) -> None:
    """What `make run` does on a fresh machine: migrate, seed, print the admin password, serve."""
    with fresh_server(tmp_path) as (base, password):
        login = httpx.post(
            f"{base}/api/v1/auth/login",
            json={"username": "admin", "password": password, "device_id": new_device_id()},
        )
        assert login.status_code == 200, login.text
        token = login.json()["access_token"]
        wards = httpx.get(f"{base}/api/v1/wards", headers={"Authorization": f"Bearer {token}"})
        assert len(wards.json()) == 126
        assert (tmp_path / "var" / "fieldsync.db").exists() and (
            tmp_path / "var" / "blobs"
        ).is_dir()
        # ODK Collect through uvicorn: the token's URL names the address served (the public
        # URL's default follows --port), and every answer is dated exactly once.
        admin = login.json()["user"]["id"]
        issued = httpx.post(
            f"{base}/api/v1/users/{admin}/collect-tokens",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert issued.status_code == 201, issued.text
        server_url = issued.json()["server_url"]
        assert server_url.startswith(base + "/collect/key/")
        collect = {"X-OpenRosa-Version": "1.0"}
        head = httpx.head(f"{server_url}/submission?deviceID=collect%3Aabc", headers=collect)
        forms = httpx.get(f"{server_url}/formList", headers=collect)
        assert (head.status_code, forms.status_code) == (204, 200)
        for response in (login, wards, head, forms):
            assert len(response.headers.get_list("date")) == 1, response.headers


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("FIELDSYNC_PORT", "eighty"),
        ("FIELDSYNC_DATABASE_URL", "mysql://localhost/x"),
        ("FIELDSYNC_BLOB_STORE", "s3://bucket"),
        ("FIELDSYNC_S3_SECURE", "perhaps"),
        ("FIELDSYNC_SECRET_KEY", "short"),
    ],
)
def test_bad_configuration_is_one_clear_line(tmp_path: Path, variable: str, value: str) -> None:
    result = subprocess.run(
        [*CLI, "migrate"],
        env=cli_env(tmp_path, **{variable: value}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and variable in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_migrate_seed_create_user_are_idempotent_commands(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    for command in (["migrate"], ["migrate"], ["seed-wards"], ["seed-wards"]):
        result = subprocess.run(
            [*CLI, *command], env=env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
    create = [
        *CLI,
        "create-user",
        "--username",
        "lan.inspector",
        "--role",
        "inspector",
        "--wards",
        "00070,00004",
        "--password",
        "a long enough password",
    ]
    first = subprocess.run(create, env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0 and "created inspector lan.inspector" in first.stdout
    again = subprocess.run(create, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "taken" in again.stderr and "Traceback" not in again.stderr
    bad_ward = subprocess.run(
        [
            *CLI,
            "create-user",
            "--username",
            "x.worker",
            "--role",
            "outreach",
            "--wards",
            "12345",
            "--password",
            "a long enough password",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad_ward.returncode == 1 and "12345" in bad_ward.stderr


@pytest.mark.db
async def test_migrate_twice_is_a_no_op(db: Backend) -> None:
    before = await Ward.count()
    await migrate()
    assert await Ward.count() == before == 126
