"""Settings: every knob comes from a FIELDSYNC_* environment variable, parsed once into a Struct.

A wrong or missing value raises `SettingsError` naming the variable; the CLI prints that one line
and exits, so an operator never sees a traceback for a typo.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import secrets
from collections import Counter
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

PREFIX = "FIELDSYNC_"

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]


# What devices may attach unless FIELDSYNC_ALLOWED_CONTENT_TYPES says otherwise: photos of
# establishments, recordings of community sessions, scanned attendance sheets. Each has magic bytes
# that server/services/blobs.py recognises (a type it cannot sniff is refused at completion).
DEFAULT_ALLOWED_CONTENT_TYPES: frozenset[str] = frozenset(
    {
        "image/jpeg",
        "image/png",
        "image/webp",
        "image/heic",
        "image/heif",
        "audio/mpeg",
        "audio/mp4",
        "audio/x-m4a",
        "audio/m4a",
        "audio/ogg",
        "audio/wav",
        "audio/x-wav",
        "audio/wave",
        "audio/amr",
        "application/pdf",
    }
)
# Markers of the placeholders in .env.example ("change-me-..."): such a value was never changed.
PLACEHOLDER_MARKERS = ("change-me", "changeme", "change_me")
# A signing key must carry at least this much entropy, estimated as length x per-character Shannon
# entropy: 32 random base64 characters give ~150 bits, 32 random hex digits ~110, "x" * 64 gives 0.
MIN_SECRET_KEY_BITS = 96
_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*")


class SettingsError(Exception):
    """One clear line for the operator: which variable, what is wrong."""


class Settings(msgspec.Struct, kw_only=True, frozen=True):
    # production refuses placeholder and weak secrets at start-up; development accepts them.
    env: Literal["production", "development"] = "production"
    data_dir: str = "./var"
    database_url: str = ""  # default: sqlite:///<data_dir>/fieldsync.db
    blob_store: str = ""  # default: local:<data_dir>/blobs
    s3_endpoint: str = ""
    s3_public_endpoint: str = ""
    s3_access_key: str = ""
    s3_secret_key: str = ""
    s3_region: str = "us-east-1"
    s3_secure: bool = False
    secret_key: str = ""
    host: str = "127.0.0.1"
    port: Port = 8000
    # The address tablets reach the server at (scheme, host, port, path prefix): every URL in an
    # OpenRosa document ODK Collect reads is built from it. Default: http://{host}:{port}.
    public_url: str = ""
    access_token_minutes: PositiveInt = 15
    refresh_token_days: PositiveInt = 30
    max_body_bytes: PositiveInt = 10 * 1024 * 1024
    max_upload_bytes: PositiveInt = 200 * 1024 * 1024
    # One OpenRosa POST /submission (ODK Collect): the XML and the files of one batch. Collect
    # splits larger sets over several POSTs at the limit HEAD /submission advertises.
    max_submission_bytes: PositiveInt = 100_000_000
    login_max_failures: PositiveInt = 5
    login_lock_seconds: PositiveInt = 900
    # Comma-separated addresses or CIDRs of reverse proxies whose X-Forwarded-For is believed.
    trusted_proxies: str = ""
    # The programme's time zone (IANA name): forms' today() and now() are judged in it.
    timezone: str = "Asia/Ho_Chi_Minh"
    admin_username: str = "admin"
    admin_password: str = ""
    db_pool_size: PositiveInt = 10
    log_retention_days: PositiveInt = 90
    # Attachments: an interrupted upload's staged bytes are kept this long after its last byte.
    upload_expiry_hours: PositiveInt = 24
    # Comma-separated media types devices may attach (FIELDSYNC_ALLOWED_CONTENT_TYPES).
    allowed_content_types: str = ",".join(sorted(DEFAULT_ALLOWED_CONTENT_TYPES))
    blob_url_ttl_seconds: Annotated[int, msgspec.Meta(ge=1, le=7 * 24 * 3600)] = 300
    max_active_uploads_per_user: PositiveInt = 4

    @property
    def public_base_url(self) -> str:
        """FIELDSYNC_PUBLIC_URL without a trailing slash, or http://{host}:{port}."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def sqlite_path(self) -> Path | None:
        if self.database_url.startswith("sqlite:///"):
            return Path(self.database_url.removeprefix("sqlite:///"))
        return None

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith(("postgresql://", "postgres://"))

    @property
    def allowed_content_type_set(self) -> frozenset[str]:
        """FIELDSYNC_ALLOWED_CONTENT_TYPES as a set of lower-case `type/subtype` strings."""
        return _parse_content_types(self.allowed_content_types)

    @property
    def trusted_proxy_list(self) -> list[str]:
        """FIELDSYNC_TRUSTED_PROXIES as normalised addresses and networks (e.g. 10.0.0.0/8)."""
        return _parse_trusted_proxies(self.trusted_proxies)

    @property
    def zone(self) -> ZoneInfo:
        """FIELDSYNC_TIMEZONE as a time zone (checked at start-up)."""
        return ZoneInfo(self.timezone)

    @property
    def upload_expiry(self) -> timedelta:
        return timedelta(hours=self.upload_expiry_hours)

    @property
    def blob_url_ttl(self) -> timedelta:
        return timedelta(seconds=self.blob_url_ttl_seconds)


_FIELDS = {name: f"{PREFIX}{name.upper()}" for name in Settings.__struct_fields__}


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Parse FIELDSYNC_* variables; fill derived defaults; validate cross-field rules."""
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {
        var_field: env[var] for var_field, var in _FIELDS.items() if env.get(var)
    }
    try:
        settings = msgspec.convert(raw, Settings, strict=False)  # '8000' -> 8000, 'true' -> True
    except msgspec.ValidationError as exc:
        # msgspec says e.g. "Expected `int` >= 1 - at `$.port`"; map the path back to the variable.
        message, _, where = str(exc).partition(" - at `$.")
        var = _FIELDS.get(where.rstrip("`"), PREFIX + "*")
        raise SettingsError(f"{var}: {message}") from None
    return _complete(settings)


def _complete(s: Settings) -> Settings:
    data_dir = s.data_dir
    database_url = s.database_url or f"sqlite:///{Path(data_dir) / 'fieldsync.db'}"
    if not database_url.startswith(("sqlite:///", "postgresql://", "postgres://")):
        raise SettingsError(
            f"{PREFIX}DATABASE_URL: expected sqlite:///path or postgresql://..., "
            f"got {database_url.split('://')[0]!r}://..."
        )
    blob_store = s.blob_store or f"local:{Path(data_dir) / 'blobs'}"
    if blob_store.startswith("local:"):
        if not blob_store.removeprefix("local:"):
            raise SettingsError(
                f"{PREFIX}BLOB_STORE: local: needs a directory, e.g. local:./var/blobs"
            )
    elif blob_store.startswith("s3://"):
        if not blob_store.removeprefix("s3://").strip("/"):
            raise SettingsError(
                f"{PREFIX}BLOB_STORE: s3:// needs a bucket name, e.g. s3://fieldsync"
            )
        for field in ("s3_endpoint", "s3_access_key", "s3_secret_key"):
            if not getattr(s, field):
                raise SettingsError(f"{_FIELDS[field]}: required when {PREFIX}BLOB_STORE is s3://")
        if ":" not in s.s3_endpoint or "/" in s.s3_endpoint:
            raise SettingsError(f"{PREFIX}S3_ENDPOINT: expected host:port, got {s.s3_endpoint!r}")
    else:
        raise SettingsError(
            f"{PREFIX}BLOB_STORE: expected local:<dir> or s3://<bucket>, got {blob_store!r}"
        )
    try:
        _parse_content_types(s.allowed_content_types)
    except ValueError as exc:
        raise SettingsError(f"{PREFIX}ALLOWED_CONTENT_TYPES: {exc}") from None
    try:
        _parse_trusted_proxies(s.trusted_proxies)
    except ValueError as exc:
        raise SettingsError(f"{PREFIX}TRUSTED_PROXIES: {exc}") from None
    if s.public_url:
        problem = _public_url_problem(s.public_url)
        if problem:
            raise SettingsError(f"{PREFIX}PUBLIC_URL: {problem}")
    try:
        ZoneInfo(s.timezone)
    except (ValueError, ZoneInfoNotFoundError):
        raise SettingsError(
            f"{PREFIX}TIMEZONE: {s.timezone!r} is not an IANA time zone, e.g. Asia/Ho_Chi_Minh"
        ) from None
    secret_key = s.secret_key or _local_secret(Path(data_dir))
    if len(secret_key) < 32:
        raise SettingsError(f"{PREFIX}SECRET_KEY: must be at least 32 characters")
    if s.env == "production":
        _refuse_placeholder_secrets(s, database_url)
    return msgspec.structs.replace(
        s,
        database_url=database_url,
        blob_store=blob_store,
        s3_public_endpoint=s.s3_public_endpoint or s.s3_endpoint,
        secret_key=secret_key,
    )


def _refuse_placeholder_secrets(s: Settings, database_url: str) -> None:
    """A server must not start with a secret from .env.example or a guessable signing key."""
    generate = "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(48))'"
    if s.secret_key and _is_placeholder(s.secret_key):
        raise SettingsError(f"{PREFIX}SECRET_KEY: is the .env.example placeholder; {generate}")
    if s.secret_key and entropy_bits(s.secret_key) < MIN_SECRET_KEY_BITS:
        raise SettingsError(f"{PREFIX}SECRET_KEY: too little entropy (repetitive); {generate}")
    if s.admin_password and len(s.admin_password) < 10:
        # The first admin is created without the API's password rule (at least 10 characters).
        raise SettingsError(f"{PREFIX}ADMIN_PASSWORD: must be at least 10 characters")
    secrets_by_variable = {
        "admin_password": s.admin_password,
        "s3_secret_key": s.s3_secret_key,
        "database_url": urlsplit(database_url).password or "",
    }
    for field, value in secrets_by_variable.items():
        if _is_placeholder(value):
            raise SettingsError(
                f"{_FIELDS[field]}: contains a .env.example placeholder (change-me...); set a real secret"
            )


def _is_placeholder(value: str) -> bool:
    return any(marker in value.lower() for marker in PLACEHOLDER_MARKERS)


def entropy_bits(value: str) -> float:
    """Length x per-character Shannon entropy: a rough upper bound that catches repetitive keys."""
    counts = Counter(value)
    return -sum(n * math.log2(n / len(value)) for n in counts.values())


def _public_url_problem(url: str) -> str:
    """Why `url` cannot prefix the URLs Collect is handed ("" if it can): Collect needs absolute
    http(s) URLs, and a query or fragment would end up in the middle of each one."""
    example = "e.g. https://fieldsync.example.org or https://example.org/fieldsync"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a port that is not a number)
    except ValueError:
        return f"{url!r} is not a URL; {example}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"expected an absolute http:// or https:// URL, got {url!r}; {example}"
    if parts.query or parts.fragment or parts.username or parts.password:
        return f"no query, fragment or credentials allowed, got {url!r}; {example}"
    if not url.isascii() or any(ch.isspace() for ch in url):
        return f"spaces and non-ASCII characters must be percent-encoded, got {url!r}"
    return ""


def _parse_content_types(value: str) -> frozenset[str]:
    types = [item.strip().lower() for item in value.split(",") if item.strip()]
    if not types:
        raise ValueError(
            "expected a comma-separated list of media types, e.g. image/jpeg,image/png"
        )
    for item in types:
        if not _MEDIA_TYPE.fullmatch(item):
            raise ValueError(f"{item!r} is not a media type (type/subtype, e.g. image/jpeg)")
    return frozenset(types)


def _parse_trusted_proxies(value: str) -> list[str]:
    proxies = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        try:
            proxies.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ValueError(
                f"{item!r} is not an IP address or CIDR (e.g. 10.0.0.5 or 10.0.0.0/8)"
            ) from None
    return proxies


def _local_secret(data_dir: Path) -> str:
    """Embedded mode keeps a generated signing key next to the data so restarts keep sessions."""
    path = data_dir / "secret_key"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key)
    return key


def variable_names() -> list[str]:
    """All environment variable names the server reads (the docker-compose test checks against it)."""
    return sorted(_FIELDS.values())
