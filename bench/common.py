"""What the benchmarks share: a throwaway PostgreSQL database, the real server as a subprocess,
inspector devices that push and pull over HTTP/1.1 keep-alive, and figures printed as tables.

Everything talks to 127.0.0.1 only. Benchmarks print figures; they never assert timings.
"""

from __future__ import annotations

import math
import os
import platform
import secrets
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec

from tests.ops import inspection_op

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN_DSN = os.environ.get("BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
# Made up per run: the server is started by this process and dropped with its database.
ADMIN_PASSWORD = secrets.token_urlsafe(16)
USER_PASSWORD = secrets.token_urlsafe(16)
MSGPACK = "application/msgpack"

RESULTS = ("violation_found", "no_violation")


def machine() -> str:
    """One line saying where the figures come from: client and server share these cores."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}; client and server on the same cores"
    )


def load_average() -> str:
    """Other work on the machine skews the figures: print the load next to them."""
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min) {five:.1f} (5 min)"


def now_stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (fraction in 0..1) of a non-empty sample."""
    ordered = sorted(values)
    rank = min(len(ordered), max(1, math.ceil(fraction * len(ordered))))
    return ordered[rank - 1]


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def print_table(title: str, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    text = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in text) for i in range(len(header))]
    print(f"\n{title}")
    for index, row in enumerate(text):
        print("  " + " | ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)))
        if index == 0:
            print("  " + "-+-".join("-" * w for w in widths))
    sys.stdout.flush()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def throwaway_database(prefix: str = "fieldsync_bench") -> AsyncIterator[str]:
    """A fresh PostgreSQL database for one run, dropped at the end whatever happens."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base = PG_ADMIN_DSN.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        admin = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@dataclass
class ServerProcess:
    """`fieldsync serve` (uvicorn, one worker) on a free 127.0.0.1 port, as an operator runs it."""

    database_url: str
    data_dir: Path
    profile_to: Path | None = None
    pool_size: int = 10
    env: dict[str, str] = field(default_factory=dict)  # more FIELDSYNC_* settings
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"

    def start(self, timeout: float = 120.0) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FIELDSYNC_")}
        env.update(
            PYTHONPATH=str(ROOT),
            FIELDSYNC_DATABASE_URL=self.database_url,
            FIELDSYNC_DATA_DIR=str(self.data_dir),
            FIELDSYNC_ADMIN_PASSWORD=ADMIN_PASSWORD,
            FIELDSYNC_SECRET_KEY=secrets.token_urlsafe(32),
            FIELDSYNC_DB_POOL_SIZE=str(self.pool_size),
        )
        env["FIELDSYNC_ACCESS_TOKEN_MINUTES"] = str(120)  # tokens outlive the longest run
        env.update(self.env)
        # cProfile writes its file when uvicorn returns after SIGINT (graceful shutdown).
        prefix = ["-m", "cProfile", "-o", str(self.profile_to)] if self.profile_to else []
        command = [sys.executable, *prefix, "-m", "server.cli", "serve", "--port", str(self.port)]
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early; see {self.log_path}")
            try:
                if httpx.get(f"{self.base_url}/health/live", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server did not become live in {timeout:.0f} s; see {self.log_path}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(2)  # SIGINT: graceful, lets cProfile dump its stats
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def client(base_url: str, connections: int) -> httpx.AsyncClient:
    """HTTP/1.1 keep-alive; one pooled connection per concurrent device."""
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=httpx.Timeout(120.0),
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
    )


async def login(http: httpx.AsyncClient, username: str, password: str) -> tuple[str, str]:
    """Log a new device in; returns (device_id, bearer token)."""
    device_id = str(uuid.uuid4())
    response = await http.post(
        "/api/v1/auth/login",
        json={"username": username, "password": password, "device_id": device_id},
    )
    if response.status_code != 200:
        raise RuntimeError(f"login of {username} failed: {response.text}")
    return device_id, response.json()["access_token"]


async def create_inspector(http: httpx.AsyncClient, admin_token: str, wards: list[str]) -> str:
    username = f"insp{uuid.uuid4().hex[:10]}"
    response = await http.post(
        "/api/v1/users",
        json={"username": username, "password": USER_PASSWORD, "role": "inspector", "wards": wards},
        headers={"Authorization": f"Bearer {admin_token}"},
    )
    if response.status_code != 201:
        raise RuntimeError(f"creating an inspector failed: {response.text}")
    return username


async def ward_codes(http: httpx.AsyncClient, admin_token: str) -> list[str]:
    response = await http.get("/api/v1/wards", headers={"Authorization": f"Bearer {admin_token}"})
    return sorted(w["code"] for w in response.json())


@dataclass
class BenchDevice:
    """A minimal reference device: its op_seq, the versions it holds, its pull cursor."""

    http: httpx.AsyncClient
    device_id: str
    token: str
    ward: str
    media: str = MSGPACK
    next_seq: int = 1
    cursor: str | None = None
    versions: dict[str, int] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.token}",
            "content-type": self.media,
            "accept": self.media,
        }

    def encode(self, value: Any) -> bytes:
        return (
            msgspec.msgpack.encode(value) if self.media == MSGPACK else msgspec.json.encode(value)
        )

    def decode(self, body: bytes) -> Any:
        return msgspec.msgpack.decode(body) if self.media == MSGPACK else msgspec.json.decode(body)

    def inspection(
        self, entity_id: str, *, action: str, properties: dict[str, Any]
    ) -> dict[str, Any]:
        """One submission op of the `inspection` form carrying one `establishments` change."""
        op = inspection_op(
            self.next_seq,
            node=self.device_id[:8],
            ward=self.ward,
            entity_id=entity_id,
            action=action,
            base_version=self.versions.get(entity_id, 0),
            properties=properties,
        )
        self.next_seq += 1
        return op

    def creates(self, count: int) -> list[dict[str, Any]]:
        return [
            self.inspection(
                str(uuid.uuid4()),
                action="create",
                properties={
                    "business_name": f"Karaoke {uuid.uuid4().hex[:8]}",
                    "kind": "karaoke",
                    "address": f"{index} Phố Huế",
                },
            )
            for index in range(count)
        ]

    def updates(self, entity_ids: Sequence[str], round_: int) -> list[dict[str, Any]]:
        return [
            self.inspection(
                entity_id,
                action="update",
                properties={
                    "result": RESULTS[round_ % 2],
                    "last_inspection_date": f"2026-03-{1 + round_ % 28:02d}",
                },
            )
            for entity_id in entity_ids
        ]

    async def push(self, ops: list[dict[str, Any]]) -> dict[str, Any]:
        """Push one batch; remember the entity versions the server answered with."""
        response = await self.http.post(
            "/api/v1/sync/push",
            content=self.encode({"protocol": 1, "device_id": self.device_id, "ops": ops}),
            headers=self.headers,
        )
        if response.status_code != 200:
            raise RuntimeError(f"push failed ({response.status_code}): {response.text[:500]}")
        body: dict[str, Any] = self.decode(response.content)
        for result in body["results"]:
            if result["status"] != "applied":
                raise RuntimeError(f"op not applied: {result}")
            for entity in result["entities"]:
                if entity["status"] not in ("applied", "merged"):
                    raise RuntimeError(f"entity change not applied: {entity}")
                self.versions[entity["entity_id"]] = entity["version"]
        return body

    async def pull(self, **extra: Any) -> dict[str, Any]:
        response = await self.http.post(
            "/api/v1/sync/pull",
            content=self.encode(
                {"protocol": 1, "device_id": self.device_id, "cursor": self.cursor, **extra}
            ),
            headers=self.headers,
        )
        if response.status_code != 200:
            raise RuntimeError(f"pull failed ({response.status_code}): {response.text[:500]}")
        body: dict[str, Any] = self.decode(response.content)
        self.cursor = body["cursor"]
        return body


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), to show how the two cores were shared."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU time all cores spent not idle (Linux /proc/stat); the rest of it is mostly PostgreSQL."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def database_backends_cpu(database: str) -> dict[int, float]:
    """CPU seconds of each PostgreSQL backend serving `database` (its process title names it)."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            title = (proc / "cmdline").read_bytes()
            if title.startswith(b"postgres:") and f" {database} ".encode() in title:
                found[int(proc.name)] = cpu_seconds(int(proc.name))
        except OSError:
            continue  # the process ended meanwhile
    return found


@dataclass
class CpuMeter:
    """CPU seconds over a phase: the server process, PostgreSQL's backends for the benchmark's
    database (a backend that exits during the phase is not counted), this client, and the rest
    of the machine (other work running meanwhile)."""

    server_pid: int
    database: str
    marks: tuple[float, dict[int, float], float, float] = (0.0, {}, 0.0, 0.0)

    def _read(self) -> tuple[float, dict[int, float], float, float]:
        return (
            cpu_seconds(self.server_pid),
            database_backends_cpu(self.database),
            time.process_time(),
            machine_busy_seconds(),
        )

    def start(self) -> None:
        self.marks = self._read()

    def stop(self) -> dict[str, float]:
        server0, db0, client0, busy0 = self.marks
        server1, db1, client1, busy1 = self._read()
        server, client_ = server1 - server0, client1 - client0
        db = sum(cpu - db0.get(pid, 0.0) for pid, cpu in db1.items())
        rest = max(0.0, busy1 - busy0 - server - db - client_)
        return {"server": server, "postgres": db, "client": client_, "rest": rest}
