"""The OpenAPI schema describes the API, and error answers name fields as a client sees them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx

from tests.helpers import Api, assert_problem

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


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

    empty = assert_problem(await client.post("/api/v1/auth/login"), 400, "validation_failed")
    assert empty["errors"] == [{"path": "$", "code": "invalid", "message": "A body is required."}]

    bad_ward = {"username": "ward1x", "password": "p" * 20, "role": "outreach", "wards": [1]}
    user = assert_problem(
        await client.post("/api/v1/users", json=bad_ward, headers=api.admin.headers),
        400,
        "validation_failed",
    )
    assert [e["path"] for e in user["errors"]] == ["$.wards[0]"], user


async def schema_of(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


def operations(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield method.upper(), path, operation


async def test_bodies_the_handlers_decode_themselves_are_described(
    client: httpx.AsyncClient,
) -> None:
    paths = (await schema_of(client))["paths"]
    for path in ("/api/v1/sync/push", "/api/v1/sync/pull"):
        operation = paths[path]["post"]
        body = operation["requestBody"]
        assert body["required"] is True
        assert set(body["content"]) == {"application/json", "application/msgpack"}
        assert "device_id" in body["content"]["application/msgpack"]["schema"]["properties"]
        answer = operation["responses"]["200"]["content"]
        assert set(answer) == {"application/json", "application/msgpack"}
    ops = paths["/api/v1/sync/push"]["post"]["requestBody"]["content"]["application/json"]
    assert "$ref" not in str(ops), "an inlined body must not point at a definition it lacks"

    create = paths["/api/v1/uploads"]["post"]
    assert set(create["requestBody"]["content"]) == {"application/offset+octet-stream"}
    append = paths["/api/v1/uploads/{upload_id}"]["patch"]
    assert set(append["requestBody"]["content"]) == {"application/offset+octet-stream"}


async def test_every_signed_in_route_names_the_bearer_scheme(client: httpx.AsyncClient) -> None:
    schema = await schema_of(client)
    scheme = schema["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    public = {
        ("GET", "/health/live"),
        ("GET", "/health/ready"),
        ("POST", "/api/v1/auth/login"),
        ("POST", "/api/v1/auth/refresh"),
        ("OPTIONS", "/api/v1/uploads"),
    }
    for method, path, operation in operations(schema):
        if (method, path) in public:
            assert not operation.get("security"), (method, path)
        else:
            assert operation.get("security") == [{"bearer": []}], (method, path)
            assert "401" in operation["responses"], (method, path)


async def test_errors_are_declared_as_problem_json(client: httpx.AsyncClient) -> None:
    schema = await schema_of(client)
    for method, path, operation in operations(schema):
        for status, response in operation["responses"].items():
            if int(status) >= 400 and not (path == "/health/ready" and status == "503"):
                assert list(response.get("content", {})) == ["application/problem+json"], (
                    method,
                    path,
                    status,
                )
    paths = schema["paths"]
    assert {"401", "403", "409", "413"} <= set(paths["/api/v1/users"]["post"]["responses"])
    assert {"412", "413", "415", "429"} <= set(paths["/api/v1/uploads"]["post"]["responses"])
    assert {"304", "404"} <= set(
        paths["/api/v1/forms/{form_id}/versions/{version}"]["get"]["responses"]
    )


async def test_tus_headers_and_real_content_types_are_declared(client: httpx.AsyncClient) -> None:
    paths = (await schema_of(client))["paths"]
    append = paths["/api/v1/uploads/{upload_id}"]["patch"]
    sent = {p["name"]: p for p in append["parameters"] if p["in"] == "header"}
    assert sent["Tus-Resumable"]["required"] and sent["Upload-Offset"]["required"]
    assert {"Upload-Offset", "Upload-Expires"} <= set(append["responses"]["204"]["headers"])
    created = paths["/api/v1/uploads"]["post"]["responses"]["201"]
    assert "Location" in created["headers"] and "content" not in created
    capabilities = paths["/api/v1/uploads"]["options"]["responses"]["204"]["headers"]
    assert {"Tus-Version", "Tus-Extension", "Tus-Max-Size"} <= set(capabilities)

    xform = paths["/api/v1/forms/{form_id}/versions/{version}/xform"]["get"]
    assert list(xform["responses"]["200"]["content"]) == ["application/xml"]
    download = paths["/api/v1/blobs/{sha256}"]["get"]["responses"]
    assert list(download["200"]["content"]) == ["*/*"]
    assert {"206", "307", "416"} <= set(download)


async def test_the_xform_is_served_as_the_schema_says(api: Api, client: httpx.AsyncClient) -> None:
    listed = await client.get("/api/v1/forms", headers=api.admin.headers)
    form = listed.json()[0]
    url = f"/api/v1/forms/{form['form_id']}/versions/{form['version']}/xform"
    response = await client.get(url, headers=api.admin.headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/xml")


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
