"""The OpenAPI schema describes the API, and error answers name fields as a client sees them."""

from __future__ import annotations

import httpx

from tests.helpers import Api, assert_problem


async def test_a_bad_query_parameter_is_named_as_the_client_sent_it(
    api: Api, client: httpx.AsyncClient
) -> None:
    for url in ("/api/v1/conflicts?limit=0", "/api/v1/audit?limit=many"):
        problem = assert_problem(
            await client.get(url, headers=api.admin.headers), 400, "validation_failed"
        )
        assert [e["path"] for e in problem["errors"]] == ["query.limit"], problem
        assert "ParamType" not in str(problem)


async def test_a_body_of_the_wrong_type_is_the_root_not_an_argument_name(
    api: Api, client: httpx.AsyncClient
) -> None:
    login = assert_problem(
        await client.post("/api/v1/auth/login", json=[]), 400, "validation_failed"
    )
    assert login["errors"][0]["path"] == "$", login
    assert "data" not in login["errors"][0]["path"]

    bad_ward = {"username": "ward1x", "password": "p" * 20, "role": "outreach", "wards": [1]}
    user = assert_problem(
        await client.post("/api/v1/users", json=bad_ward, headers=api.admin.headers),
        400,
        "validation_failed",
    )
    assert [e["path"] for e in user["errors"]] == ["$.wards[0]"], user


async def test_options_and_405_list_every_method_of_the_path(
    api: Api, client: httpx.AsyncClient
) -> None:
    def allowed(response: httpx.Response) -> set[str]:
        return {m.strip() for m in response.headers["allow"].split(",")}

    user = await client.options("/api/v1/users/someone", headers=api.admin.headers)
    upload = await client.options("/api/v1/uploads/someid")
    forms = await client.options("/api/v1/forms")
    assert allowed(user) == {"GET", "PATCH", "OPTIONS"}
    assert allowed(upload) == {"HEAD", "PATCH", "DELETE", "OPTIONS"}
    assert allowed(forms) == {"GET", "POST", "OPTIONS"}
    tus = await client.options("/api/v1/uploads")
    assert tus.headers["tus-version"] == "1.0.0"
    assert allowed(tus) == {"POST", "OPTIONS"}

    wrong = await client.put("/api/v1/uploads/someid", headers=api.admin.headers)
    assert_problem(wrong, 405, "method_not_allowed")
    assert allowed(wrong) == {"HEAD", "PATCH", "DELETE", "OPTIONS"}
