from __future__ import annotations

from pathlib import Path

import pytest

from server.settings import SettingsError, load_settings, variable_names


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
