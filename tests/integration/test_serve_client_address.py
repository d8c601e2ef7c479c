"""`fieldsync serve` believes X-Forwarded-For from no one by default, not even from loopback."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.helpers import new_device_id
from tests.integration.served import fresh_server


def test_a_forged_forwarded_for_from_loopback_is_not_the_audited_address(tmp_path: Path) -> None:
    with fresh_server(tmp_path) as (base, password):
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
