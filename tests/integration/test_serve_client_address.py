"""`fieldsync serve` believes X-Forwarded-For from no one by default, not even from loopback."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.helpers import new_device_id

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_forged_forwarded_for_from_loopback_is_not_the_audited_address(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIELDSYNC_")}
    env.update(FIELDSYNC_DATA_DIR=str(tmp_path / "var"), PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        password = None
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, f"server exited early with {proc.poll()}"
            if match := re.search(r"with password: (\S+)", line):
                password = match.group(1)
            if "serving on" in line:
                break
        assert password
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                if httpx.get(f"{base}/health/live").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        login = httpx.post(
            f"{base}/api/v1/auth/login",
            json={"username": "admin", "password": password, "device_id": new_device_id()},
            headers={"X-Forwarded-For": "203.0.113.77"},
        )
        assert login.status_code == 200, login.text
        token = login.json()["access_token"]
        audit = httpx.get(f"{base}/api/v1/audit", headers={"Authorization": f"Bearer {token}"})
        logins = [e for e in audit.json() if e["action"] == "auth.login"]
        assert [e["address"] for e in logins] == ["127.0.0.1"]
    finally:
        proc.terminate()
        proc.wait(timeout=20)
