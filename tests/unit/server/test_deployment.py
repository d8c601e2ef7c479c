"""docker-compose.yml cannot run here (no Docker engine); keep it honest by reading it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from server.settings import SettingsError, load_settings, variable_names

ROOT = Path(__file__).resolve().parents[3]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _dotenv() -> dict[str, str]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_services_and_ports() -> None:
    services = _compose()["services"]
    assert set(services) == {"postgres", "minio", "server"}
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["minio"]["image"].startswith("minio/minio")
    assert "8000:8000" in services["server"]["ports"]
    assert "9000:9000" in services["minio"]["ports"]
    assert services["server"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_server_environment_names_are_real_settings() -> None:
    env = _compose()["services"]["server"]["environment"]
    known = set(variable_names())
    assert set(env) <= known, set(env) - known
    for required in (
        "FIELDSYNC_DATABASE_URL",
        "FIELDSYNC_BLOB_STORE",
        "FIELDSYNC_S3_ENDPOINT",
        "FIELDSYNC_S3_ACCESS_KEY",
        "FIELDSYNC_S3_SECRET_KEY",
        "FIELDSYNC_SECRET_KEY",
    ):
        assert required in env


def test_every_interpolated_variable_is_in_env_example() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    used = set(re.findall(r"\$\{(\w+)\}", text))
    assert used <= set(_dotenv()), used - set(_dotenv())


def test_compose_environment_parses_into_settings(tmp_path: Path) -> None:
    """The server's environment, with .env.example substituted, is a valid configuration, which
    production refuses until its placeholder secrets are changed."""
    values = _dotenv()
    env = {
        k: re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], str(v))
        for k, v in _compose()["services"]["server"]["environment"].items()
    }
    env["FIELDSYNC_DATA_DIR"] = str(tmp_path)
    with pytest.raises(
        SettingsError, match=r"^FIELDSYNC_SECRET_KEY: is the \.env\.example placeholder"
    ):
        load_settings(env)
    settings = load_settings({**env, "FIELDSYNC_ENV": "development"})
    assert settings.is_postgres and settings.blob_store == "s3://fieldsync"
    assert (
        settings.s3_endpoint == "minio:9000"
        and settings.s3_public_endpoint == "files.example.org:9000"
    )


def test_dockerfile_serves_with_migrations() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'CMD ["fieldsync", "serve"]' in dockerfile and "EXPOSE 8000" in dockerfile
