"""Small helpers the integration tests share: logging in, creating users, asserting problems."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

from server.settings import Settings

ADMIN_USERNAME = "admin"
ADMIN_PASSWORD = "admin-password-for-tests"
PASSWORD = "correct horse battery"

HOAN_KIEM = "00070"
BA_DINH = "00004"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def new_device_id() -> str:
    return str(uuid.uuid4())


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body = response.json()
    assert body["status"] == status
    assert body["code"] == code, body
    assert body["title"] and body["type"]
    assert "Traceback" not in response.text and "SELECT" not in response.text
    return body


@dataclass
class Session:
    access_token: str
    refresh_token: str
    device_id: str
    user: dict[str, Any]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


@dataclass
class Api:
    http: httpx.AsyncClient
    settings: Settings
    admin: Session
    created: list[str] = field(default_factory=list)

    @classmethod
    async def as_admin(cls, http: httpx.AsyncClient, settings: Settings) -> Api:
        session = await login(http, ADMIN_USERNAME, ADMIN_PASSWORD)
        return cls(http, settings, session)

    async def create_user(
        self, role: str = "outreach", wards: list[str] | None = None, **extra: Any
    ) -> dict[str, Any]:
        body = {
            "username": unique(role[:4]),
            "password": PASSWORD,
            "role": role,
            "wards": [HOAN_KIEM] if wards is None else wards,
            **extra,
        }
        response = await self.http.post("/api/v1/users", json=body, headers=self.admin.headers)
        assert response.status_code == 201, response.text
        return response.json()

    async def user_session(self, role: str = "outreach", wards: list[str] | None = None) -> Session:
        user = await self.create_user(role, wards)
        return await login(self.http, user["username"], PASSWORD)

    async def publish_xlsform(self, workbook: bytes) -> dict[str, Any]:
        """Upload a workbook and publish it as its settings sheet says; the published spec."""
        headers = self.admin.headers
        files = {"file": ("form.xlsx", workbook, XLSX)}
        upload = await self.http.post("/api/v1/forms", files=files, headers=headers)
        assert upload.status_code == 201, upload.text
        form_id = upload.json()["form_id"]
        published = await self.http.post(
            f"/api/v1/forms/{form_id}/publish", json={}, headers=headers
        )
        assert published.status_code == 201, published.text
        spec: dict[str, Any] = published.json()
        return spec


async def login(
    http: httpx.AsyncClient, username: str, password: str, device_id: str | None = None
) -> Session:
    device_id = device_id or new_device_id()
    response = await http.post(
        "/api/v1/auth/login",
        json={"username": username, "password": password, "device_id": device_id},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    return Session(body["access_token"], body["refresh_token"], device_id, body["user"])
