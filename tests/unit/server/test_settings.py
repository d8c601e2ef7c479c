from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from server.settings import (
    DEFAULT_ALLOWED_CONTENT_TYPES,
    SettingsError,
    load_settings,
    variable_names,
)


def test_defaults_are_embedded(tmp_path: Path) -> None:
    s = load_settings({"FIELDSYNC_DATA_DIR": str(tmp_path)})
    assert s.database_url == f"sqlite:///{tmp_path / 'fieldsync.db'}"
    assert s.blob_store == f"local:{tmp_path / 'blobs'}"
    assert (s.host, s.port, s.access_token_minutes) == ("127.0.0.1", 8000, 15)
    # The generated signing key is kept, so a restart keeps sessions valid.
    assert load_settings({"FIELDSYNC_DATA_DIR": str(tmp_path)}).secret_key == s.secret_key
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_s3_settings(tmp_path: Path) -> None:
    s = load_settings(
        {
            "FIELDSYNC_DATA_DIR": str(tmp_path),
            "FIELDSYNC_BLOB_STORE": "s3://fieldsync",
            "FIELDSYNC_S3_ENDPOINT": "minio:9000",
            "FIELDSYNC_S3_ACCESS_KEY": "k",
            "FIELDSYNC_S3_SECRET_KEY": "s",
            "FIELDSYNC_S3_SECURE": "false",
            "FIELDSYNC_PORT": "9001",
        }
    )
    assert s.s3_public_endpoint == "minio:9000" and s.s3_secure is False and s.port == 9001


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"FIELDSYNC_PORT": "0"}, "FIELDSYNC_PORT"),
        ({"FIELDSYNC_ACCESS_TOKEN_MINUTES": "soon"}, "FIELDSYNC_ACCESS_TOKEN_MINUTES"),
        ({"FIELDSYNC_BLOB_STORE": "ftp://x"}, "FIELDSYNC_BLOB_STORE"),
        (
            {
                "FIELDSYNC_BLOB_STORE": "s3://b",
                "FIELDSYNC_S3_ENDPOINT": "http://h:9000/",
                "FIELDSYNC_S3_ACCESS_KEY": "a",
                "FIELDSYNC_S3_SECRET_KEY": "b",
            },
            "FIELDSYNC_S3_ENDPOINT",
        ),
        (
            {"FIELDSYNC_BLOB_STORE": "s3://b", "FIELDSYNC_S3_ENDPOINT": "h:9000"},
            "FIELDSYNC_S3_ACCESS_KEY",
        ),
    ],
)
def test_errors_name_the_variable(tmp_path: Path, env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        load_settings({"FIELDSYNC_DATA_DIR": str(tmp_path), **env})


def test_variable_names() -> None:
    names = variable_names()
    assert "FIELDSYNC_DATABASE_URL" in names and "FIELDSYNC_S3_PUBLIC_ENDPOINT" in names


def test_attachment_settings_default_to_the_documented_values(tmp_path: Path) -> None:
    s = load_settings({"FIELDSYNC_DATA_DIR": str(tmp_path)})
    assert (s.upload_expiry_hours, s.blob_url_ttl_seconds, s.max_active_uploads_per_user) == (
        24,
        300,
        4,
    )
    assert s.upload_expiry == timedelta(hours=24) and s.blob_url_ttl == timedelta(minutes=5)
    assert s.allowed_content_type_set == DEFAULT_ALLOWED_CONTENT_TYPES
    assert {"image/jpeg", "audio/ogg", "application/pdf"} <= s.allowed_content_type_set


def test_attachment_settings_from_the_environment(tmp_path: Path) -> None:
    s = load_settings(
        {
            "FIELDSYNC_DATA_DIR": str(tmp_path),
            "FIELDSYNC_UPLOAD_EXPIRY_HOURS": "6",
            "FIELDSYNC_ALLOWED_CONTENT_TYPES": " Image/JPEG, application/pdf,,",
            "FIELDSYNC_BLOB_URL_TTL_SECONDS": "60",
            "FIELDSYNC_MAX_ACTIVE_UPLOADS_PER_USER": "2",
        }
    )
    assert s.upload_expiry == timedelta(hours=6)
    assert s.allowed_content_type_set == {"image/jpeg", "application/pdf"}
    assert s.blob_url_ttl == timedelta(seconds=60)
    assert s.max_active_uploads_per_user == 2


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("FIELDSYNC_UPLOAD_EXPIRY_HOURS", "0"),
        ("FIELDSYNC_UPLOAD_EXPIRY_HOURS", "a day"),
        ("FIELDSYNC_ALLOWED_CONTENT_TYPES", "image/jpeg,jpeg"),
        ("FIELDSYNC_ALLOWED_CONTENT_TYPES", "image/jpeg;q=1"),
        ("FIELDSYNC_ALLOWED_CONTENT_TYPES", " , "),
        ("FIELDSYNC_BLOB_URL_TTL_SECONDS", "-5"),
        ("FIELDSYNC_BLOB_URL_TTL_SECONDS", "999999999"),
        ("FIELDSYNC_MAX_ACTIVE_UPLOADS_PER_USER", "0"),
    ],
)
def test_bad_attachment_settings_name_the_variable_in_one_line(
    tmp_path: Path, variable: str, value: str
) -> None:
    with pytest.raises(SettingsError, match=f"^{variable}: ") as raised:
        load_settings({"FIELDSYNC_DATA_DIR": str(tmp_path), variable: value})
    assert "\n" not in str(raised.value)


def test_attachment_variables_are_known() -> None:
    assert {
        "FIELDSYNC_UPLOAD_EXPIRY_HOURS",
        "FIELDSYNC_ALLOWED_CONTENT_TYPES",
        "FIELDSYNC_BLOB_URL_TTL_SECONDS",
        "FIELDSYNC_MAX_ACTIVE_UPLOADS_PER_USER",
    } <= set(variable_names())


EXAMPLE_SECRET_KEY = "change-me-to-at-least-32-random-characters-000"  # .env.example's placeholder
STRONG_SECRET_KEY = "q8Zr2LbT0vXy5NcW7mHk3JdP9sFa1GeU4oRi6QlVwYtBn"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("FIELDSYNC_SECRET_KEY", EXAMPLE_SECRET_KEY),
        ("FIELDSYNC_SECRET_KEY", "x" * 64),
        ("FIELDSYNC_SECRET_KEY", "test-secret-key-" + "x" * 32),
        ("FIELDSYNC_SECRET_KEY", "ab" * 32),
        ("FIELDSYNC_ADMIN_PASSWORD", "change-me-admin"),
        ("FIELDSYNC_ADMIN_PASSWORD", "admin"),
        ("FIELDSYNC_S3_SECRET_KEY", "change-me-minio-secret"),
        ("FIELDSYNC_DATABASE_URL", "postgresql://fieldsync:change-me-postgres@db:5432/fieldsync"),
    ],
)
def test_placeholder_and_weak_secrets_stop_production_start_up(
    tmp_path: Path, variable: str, value: str
) -> None:
    env = {
        "FIELDSYNC_DATA_DIR": str(tmp_path),
        "FIELDSYNC_SECRET_KEY": STRONG_SECRET_KEY,
        "FIELDSYNC_BLOB_STORE": "s3://fieldsync",
        "FIELDSYNC_S3_ENDPOINT": "minio:9000",
        "FIELDSYNC_S3_ACCESS_KEY": "fieldsync",
        "FIELDSYNC_S3_SECRET_KEY": "a-real-minio-secret",
        variable: value,
    }
    with pytest.raises(SettingsError) as refused:
        load_settings(env)
    message = str(refused.value)
    assert message.startswith(variable + ":") and "\n" not in message
    assert (
        value not in message
    )  # the line may end up in a log: it names the variable, not the secret
    # A developer's machine may keep them.
    assert load_settings({**env, "FIELDSYNC_ENV": "development"}).env == "development"


def test_strong_and_generated_secret_keys_start_production(tmp_path: Path) -> None:
    explicit = load_settings(
        {"FIELDSYNC_DATA_DIR": str(tmp_path), "FIELDSYNC_SECRET_KEY": STRONG_SECRET_KEY}
    )
    assert explicit.env == "production" and explicit.secret_key == STRONG_SECRET_KEY
    hex_key = "8df93df9760fb73a855dbd633a78594b"  # `openssl rand -hex 16`
    assert load_settings({"FIELDSYNC_DATA_DIR": str(tmp_path), "FIELDSYNC_SECRET_KEY": hex_key})
    # `make run` on a fresh machine: nothing set, the key and the admin password are generated.
    generated = load_settings({"FIELDSYNC_DATA_DIR": str(tmp_path / "fresh")})
    assert generated.env == "production" and len(generated.secret_key) >= 32


def test_env_accepts_only_production_or_development(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"^FIELDSYNC_ENV: "):
        load_settings({"FIELDSYNC_DATA_DIR": str(tmp_path), "FIELDSYNC_ENV": "staging"})


def test_trusted_proxies_are_addresses_or_networks(tmp_path: Path) -> None:
    base = {"FIELDSYNC_DATA_DIR": str(tmp_path)}
    assert load_settings(base).trusted_proxy_list == []  # none: X-Forwarded-For is never believed
    listed = load_settings(
        {**base, "FIELDSYNC_TRUSTED_PROXIES": "10.0.0.5, 172.16.0.0/12,fd00::/8"}
    )
    assert listed.trusted_proxy_list == ["10.0.0.5/32", "172.16.0.0/12", "fd00::/8"]
    with pytest.raises(SettingsError, match=r"^FIELDSYNC_TRUSTED_PROXIES: 'proxy\.local' is not"):
        load_settings({**base, "FIELDSYNC_TRUSTED_PROXIES": "10.0.0.5,proxy.local"})


def test_timezone_is_an_iana_zone(tmp_path: Path) -> None:
    base = {"FIELDSYNC_DATA_DIR": str(tmp_path)}
    assert load_settings(base).zone.key == "Asia/Ho_Chi_Minh"
    assert load_settings({**base, "FIELDSYNC_TIMEZONE": "Asia/Bangkok"}).zone.key == "Asia/Bangkok"
    for wrong in ("Hanoi", "../../etc/passwd", "UTC+7"):
        with pytest.raises(
            SettingsError, match=r"^FIELDSYNC_TIMEZONE: .* is not an IANA time zone"
        ):
            load_settings({**base, "FIELDSYNC_TIMEZONE": wrong})


def test_public_url_defaults_to_the_served_address(tmp_path: Path) -> None:
    s = load_settings({"FIELDSYNC_DATA_DIR": str(tmp_path), "FIELDSYNC_PORT": "8123"})
    assert s.public_base_url == "http://127.0.0.1:8123"
    v6 = load_settings({"FIELDSYNC_DATA_DIR": str(tmp_path), "FIELDSYNC_HOST": "::1"})
    assert v6.public_base_url == "http://[::1]:8000"


def test_public_url_keeps_its_path_without_a_trailing_slash(tmp_path: Path) -> None:
    s = load_settings(
        {"FIELDSYNC_DATA_DIR": str(tmp_path), "FIELDSYNC_PUBLIC_URL": "https://x.example/fs/"}
    )
    assert s.public_base_url == "https://x.example/fs"


@pytest.mark.parametrize(
    "value",
    [
        "fieldsync.example.org",
        "ftp://fieldsync.example.org",
        "https://",
        "https://x.example/?a=1",
        "https://x.example/#top",
        "https://user:pw@x.example",
        "https://x.example/thư mục",
        "https://x.example:port",
    ],
)
def test_a_public_url_collect_cannot_use_is_refused(tmp_path: Path, value: str) -> None:
    with pytest.raises(SettingsError, match=r"^FIELDSYNC_PUBLIC_URL: ") as raised:
        load_settings({"FIELDSYNC_DATA_DIR": str(tmp_path), "FIELDSYNC_PUBLIC_URL": value})
    assert "\n" not in str(raised.value)
