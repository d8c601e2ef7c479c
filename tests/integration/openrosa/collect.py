"""ODK Collect as it talks to a server (odk.md §2.1, §10): its headers, its `deviceID` query
parameter, its 12-hour `Date`, its URL building; plus the small form the tests serve to it."""

from __future__ import annotations

import base64
import secrets
import string
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote
from xml.etree.ElementTree import Element

import httpx
from defusedxml.ElementTree import fromstring

from tests.helpers import HOAN_KIEM, Api, Session, unique
from tests.ops import hlc
from tests.unit.forms.xlsforms import xlsform

USER_AGENT = (
    "org.odk.collect.android/v2025.2.3 Dalvik/2.1.0 "
    "(Linux; U; Android 14; Pixel 7 Build/AP2A.240805.005)"
)
XFORMS_LIST = "{http://openrosa.org/xforms/xformsList}"
MANIFEST = "{http://openrosa.org/xforms/xformsManifest}"
RESPONSE = "{http://openrosa.org/http/response}"


def collect_date(now: datetime | None = None) -> str:
    """Java's `SimpleDateFormat("E, dd MMM yyyy hh:mm:ss zz", Locale.US)` in GMT: `hh` is the
    12-hour clock, so 14:04 is sent as 02:04."""
    return (now or datetime.now(UTC)).strftime("%a, %d %b %Y %I:%M:%S GMT")


def install_id() -> str:
    alphabet = string.ascii_letters + string.digits
    return "collect:" + "".join(secrets.choice(alphabet) for _ in range(16))


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


@dataclass
class Collect:
    """One Collect install configured with `server_url` (absolute, under `public`)."""

    http: httpx.AsyncClient
    public: str
    server_url: str
    authorization: str | None = None
    device_id: str = field(default_factory=install_id)

    def headers(self) -> dict[str, str]:
        headers = {
            "User-Agent": USER_AGENT,
            "X-OpenRosa-Version": "1.0",
            "Date": collect_date(),
            "Accept-Encoding": "gzip",
        }
        if self.authorization:
            headers["Authorization"] = self.authorization
        return headers

    def target(self, absolute: str, query: str = "") -> str:
        """The request path of an absolute URL from a document, with what Collect appends:
        `Uri.Builder.appendQueryParameter` percent-encodes the value (`collect%3A…`)."""
        assert absolute.startswith(self.public + "/"), (absolute, self.public)
        path = absolute.removeprefix(self.public)
        device = "deviceID=" + quote(self.device_id, safe="")
        return f"{path}?{query + '&' if query else ''}{device}"

    async def get(self, absolute: str, query: str = "") -> httpx.Response:
        return await self.http.get(self.target(absolute, query), headers=self.headers())

    async def head_submission(self) -> httpx.Response:
        return await self.http.head(
            self.target(self.server_url.rstrip("/") + "/submission"), headers=self.headers()
        )

    async def form_list(self, query: str = "") -> httpx.Response:
        """Collect strips every trailing slash of server_url, then appends /formList."""
        return await self.get(self.server_url.rstrip("/") + "/formList", query)


def xml(response: httpx.Response) -> Element:
    """The body as a strict parser reads it (no DTD, no entities), after the transport checks
    Collect makes on every OpenRosa document (odk.md §4.3)."""
    assert response.status_code == 200, response.text
    assert "text/xml" in response.headers["content-type"].lower()
    assert response.headers["x-openrosa-version"] == "1.0"
    assert response.headers["date"]
    assert int(response.headers["content-length"]) == len(response.content)
    root: Element = fromstring(response.content)
    return root


def openrosa_message(response: httpx.Response, status: int) -> str:
    """The first `<message>` of an OpenRosaResponse error, as Collect shows it."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/xml")
    assert response.headers["x-openrosa-version"] == "1.0"
    root = fromstring(response.content)
    assert root.tag == f"{RESPONSE}OpenRosaResponse"
    message = root.find(f"{RESPONSE}message")
    assert message is not None and message.get("nature") == "error"
    return message.text or ""


@dataclass
class ShopForm:
    """A small valid form using what Collect needs served: the caller's wards, an entity list of
    its own (so no other test's entities show), an image and a photo question."""

    form_id: str
    list_name: str
    version: str = "2026010101"

    @classmethod
    def make(cls) -> ShopForm:
        return cls(form_id=unique("shop_"), list_name=unique("shops_"))

    def workbook(self) -> bytes:
        return xlsform(
            [
                {"type": "select_one_from_file wards.csv", "name": "ward", "label": "Ward"},
                {
                    "type": f"select_one_from_file {self.list_name}.csv",
                    "name": "shop",
                    "label": "Shop",
                },
                {
                    "type": "text",
                    "name": "shop_name",
                    "label": "Shop name",
                    "save_to": "shop_name",
                },
                {"type": "note", "name": "intro", "label": "Look", "image": "logo.png"},
                {"type": "image", "name": "photo", "label": "Photo"},
            ],
            form_id=self.form_id,
            version=self.version,
            entities=[{"list_name": self.list_name, "label": "${shop_name}"}],
            plain_labels=True,
        )

    async def publish(self, api: Api) -> None:
        await api.publish_xlsform(self.workbook())

    def op(
        self,
        session: Session,
        op_seq: int,
        *,
        entity_id: str,
        name: str,
        ward: str = HOAN_KIEM,
        action: str = "create",
        base_version: int = 0,
        base: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A native push op of this form creating, updating or deleting one shop (`base`: the
        properties the update was made from)."""
        change: dict[str, Any] = {
            "list": self.list_name,
            "entity_id": entity_id,
            "action": action,
            "base_version": base_version,
        }
        if action != "delete":
            change["label"] = name
            change["properties"] = {"ward_code": ward, "shop_name": name}
        if base is not None:
            change["base_properties"] = base
        return {
            "op_seq": op_seq,
            "op_id": str(uuid.uuid4()),
            "hlc": hlc(node=session.device_id[:8]),
            "kind": "submission",
            "submission": {
                "instance_id": str(uuid.uuid4()),
                "form_id": self.form_id,
                "form_version": self.version,
                "captured_at": "2026-02-20T03:00:00Z",
                "ward_code": ward,
                "data": {"ward": ward, "shop_name": name},
                "entities": [change],
            },
        }


async def push(http: httpx.AsyncClient, session: Session, *ops: dict[str, Any]) -> None:
    response = await http.post(
        "/api/v1/sync/push",
        json={"protocol": 1, "device_id": session.device_id, "ops": list(ops)},
        headers=session.headers,
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert all(r["status"] == "applied" for r in results), results
    entities = [e for r in results for e in r.get("entities", [])]
    assert all(e["status"] == "applied" for e in entities), entities


async def collect_token(api: Api, user_id: str, name: str = "") -> dict[str, Any]:
    response = await api.http.post(
        f"/api/v1/users/{user_id}/collect-tokens",
        json={"name": name} if name else None,
        headers=api.admin.headers,
    )
    assert response.status_code == 201, response.text
    token: dict[str, Any] = response.json()
    return token


async def collect_for(api: Api, user: dict[str, Any]) -> Collect:
    """A Collect install configured with a new token of `user`."""
    token = await collect_token(api, user["id"])
    return Collect(api.http, api.settings.public_base_url, token["server_url"])
