"""Who may call a Collect URL: app-user tokens (made, listed, revoked by admins) and HTTP Basic
with its challenge (odk.md §3)."""

from __future__ import annotations

import base64
import json
import zlib

import httpx

from server.db.tables import AuditLog, CollectToken
from tests.helpers import PASSWORD, Api
from tests.integration.openrosa.collect import (
    Collect,
    ShopForm,
    basic,
    collect_for,
    collect_token,
    openrosa_message,
    xml,
)


def every_collect_url(collect: Collect, form_id: str, list_name: str) -> list[str]:
    base = collect.server_url
    return [
        f"{base}/formList",
        f"{base}/forms/{form_id}.xml",
        f"{base}/forms/{form_id}/manifest",
        f"{base}/forms/{form_id}/attachments/wards.csv",
        f"{base}/lists/{list_name}/integrity",
        f"{base}/submission",
    ]


async def test_a_token_is_shown_once_with_the_settings_qr_collect_scans(
    api: Api, client: httpx.AsyncClient
) -> None:
    user = await api.create_user("inspector")
    issued = await collect_token(api, user["id"], name="Tablet 7")
    assert set(issued) == {"id", "token", "server_url", "settings_qr", "created_at"}
    token = issued["token"]
    assert len(token) == 64
    assert issued["server_url"] == f"{api.settings.public_base_url}/collect/key/{token}"
    # base64 of zlib (not raw deflate, not gzip): what Collect's Inflater expects.
    settings = json.loads(zlib.decompress(base64.b64decode(issued["settings_qr"])))
    assert list(settings) == ["general", "project", "admin"]
    assert settings["general"] == {"server_url": issued["server_url"]}
    assert settings["admin"] == {} and user["username"] in settings["project"]["name"]

    listed = await client.get(
        f"/api/v1/users/{user['id']}/collect-tokens", headers=api.admin.headers
    )
    assert listed.status_code == 200
    assert [(t["id"], t["name"], t["revoked_at"]) for t in listed.json()] == [
        (issued["id"], "Tablet 7", None)
    ]
    assert token not in listed.text
    stored = await CollectToken.select().where(CollectToken.id == issued["id"]).first()
    assert stored is not None and token not in str(stored)

    audit = await AuditLog.select(AuditLog.action, AuditLog.details).where(
        AuditLog.action == "collect_token.create", AuditLog.target_id == user["id"]
    )
    assert len(audit) == 1 and token not in str(audit)


async def test_only_admins_make_tokens_and_unknown_ones_are_404(
    api: Api, client: httpx.AsyncClient
) -> None:
    user = await api.create_user("outreach")
    supervisor = await api.user_session("supervisor")
    path = f"/api/v1/users/{user['id']}/collect-tokens"
    assert (await client.post(path, headers=supervisor.headers)).status_code == 403
    assert (await client.get(path, headers=supervisor.headers)).status_code == 403
    missing = await client.post(
        "/api/v1/users/00000000-0000-4000-8000-000000000000/collect-tokens",
        headers=api.admin.headers,
    )
    assert missing.status_code == 404 and missing.json()["code"] == "user_not_found"
    for token_id in ("00000000-0000-4000-8000-000000000000", "not-a-uuid"):
        gone = await client.delete(f"{path}/{token_id}", headers=api.admin.headers)
        assert gone.status_code == 404 and gone.json()["code"] == "collect_token_not_found"


async def test_a_revoked_token_is_refused_at_once_on_every_collect_url_with_403(
    api: Api, client: httpx.AsyncClient
) -> None:
    form = ShopForm.make()
    await form.publish(api)
    user = await api.create_user("outreach")
    collect = await collect_for(api, user)
    other = await collect_for(api, user)  # a second tablet of the same user
    urls = every_collect_url(collect, form.form_id, form.list_name)
    for url in urls:
        response = await (
            collect.head_submission() if url.endswith("/submission") else collect.get(url)
        )
        assert response.status_code in (200, 204), (url, response.text)

    path = f"/api/v1/users/{user['id']}/collect-tokens/{await _token_id(collect)}"
    revoked = await client.delete(path, headers=api.admin.headers)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"], revoked.text
    again = await client.delete(path, headers=api.admin.headers)  # idempotent
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"]
    for url in urls:
        if url.endswith("/submission"):
            refused = await collect.head_submission()
            assert refused.status_code == 403, url
            assert "www-authenticate" not in refused.headers
            continue
        refused = await collect.get(url)
        assert "revoked" in openrosa_message(refused, 403), url
        # 403, not 401: Collect would ask for a password the token does not have.
        assert "www-authenticate" not in refused.headers
    # The user's other token goes on working.
    assert (await other.form_list()).status_code == 200


async def _token_id(collect: Collect) -> str:
    from server.auth import token_digest

    token = collect.server_url.rsplit("/", 1)[-1]
    row = (
        await CollectToken.select(CollectToken.id)
        .where(CollectToken.token_hash == token_digest(token))
        .first()
    )
    assert row is not None
    return str(row["id"])


async def test_a_token_acts_as_its_user_and_stops_when_the_user_is_disabled(
    api: Api, client: httpx.AsyncClient
) -> None:
    user = await api.create_user("trainer")
    collect = await collect_for(api, user)
    root = xml(await collect.form_list())
    listed = {e.findtext("{http://openrosa.org/xforms/xformsList}formID") for e in root}
    assert "training_session" in listed and "inspection" not in listed
    # A role change applies on the next request, as on the native API.
    changed = await client.patch(
        f"/api/v1/users/{user['id']}", json={"role": "inspector"}, headers=api.admin.headers
    )
    assert changed.status_code == 200
    root = xml(await collect.form_list())
    listed = {e.findtext("{http://openrosa.org/xforms/xformsList}formID") for e in root}
    assert "inspection" in listed and "training_session" not in listed
    disabled = await client.patch(
        f"/api/v1/users/{user['id']}", json={"disabled": True}, headers=api.admin.headers
    )
    assert disabled.status_code == 200
    assert "disabled" in openrosa_message(await collect.form_list(), 403)


async def test_a_malformed_or_unknown_token_is_403(api: Api, client: httpx.AsyncClient) -> None:
    public = api.settings.public_base_url
    for token in ("short", "x" * 64, "a!b$" + "c" * 60, "é" * 64):
        collect = Collect(client, public, f"{public}/collect/key/{token}")
        openrosa_message(await collect.form_list(), 403)


async def test_basic_auth_challenges_then_accepts_the_password(
    api: Api, client: httpx.AsyncClient
) -> None:
    """Collect sends no credentials until challenged; then it repeats the request with them and
    sends them proactively afterwards (odk.md §3.2)."""
    user = await api.create_user("outreach")
    public = api.settings.public_base_url
    collect = Collect(client, public, f"{public}/collect")
    challenged = await collect.form_list()
    assert challenged.status_code == 401
    assert challenged.headers["www-authenticate"] == 'Basic realm="fieldsync"'
    openrosa_message(challenged, 401)
    collect.authorization = basic(user["username"], PASSWORD)
    root = xml(await collect.form_list())
    entry = next(iter(root))
    # URLs handed back stay under /collect (no token): Collect sends the password there too.
    download = entry.findtext("{http://openrosa.org/xforms/xformsList}downloadUrl") or ""
    assert download.startswith(f"{public}/collect/forms/")
    assert (await collect.get(download)).status_code == 200
    assert (await collect.head_submission()).status_code == 204

    collect.authorization = basic(user["username"], "not the password")
    wrong = await collect.form_list()
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"].startswith("Basic")
    collect.authorization = "Basic !!!"
    assert (await collect.form_list()).status_code == 401


async def test_a_password_check_is_remembered_briefly_but_a_change_or_disabling_applies_at_once(
    api: Api, client: httpx.AsyncClient
) -> None:
    user = await api.create_user("outreach")
    public = api.settings.public_base_url
    collect = Collect(client, public, f"{public}/collect", basic(user["username"], PASSWORD))
    for _ in range(3):
        assert (await collect.form_list()).status_code == 200
    # One argon2 check for the session: the audit log records each real check.
    checks = AuditLog.count().where(
        AuditLog.action == "auth.collect_basic", AuditLog.target_id == user["id"]
    )
    assert await checks == 1

    changed = await client.patch(
        f"/api/v1/users/{user['id']}",
        json={"password": "a brand new password"},
        headers=api.admin.headers,
    )
    assert changed.status_code == 200
    assert (await collect.form_list()).status_code == 401
    collect.authorization = basic(user["username"], "a brand new password")
    assert (await collect.form_list()).status_code == 200
    assert await checks == 2

    disabled = await client.patch(
        f"/api/v1/users/{user['id']}", json={"disabled": True}, headers=api.admin.headers
    )
    assert disabled.status_code == 200
    assert "disabled" in openrosa_message(await collect.form_list(), 403)


async def test_a_wrong_basic_password_counts_as_a_failed_login(
    api: Api, client: httpx.AsyncClient
) -> None:
    """The same throttle as the login endpoint: a password cannot be guessed faster through
    Collect's URLs (the lock itself is tested with the login endpoint)."""
    user = await api.create_user("outreach")
    public = api.settings.public_base_url
    collect = Collect(client, public, f"{public}/collect", basic(user["username"], "wrong"))
    assert (await collect.form_list()).status_code == 401
    failures = await AuditLog.select(AuditLog.details).where(
        AuditLog.action == "auth.login_failed", AuditLog.actor_username == user["username"]
    )
    assert len(failures) == 1
