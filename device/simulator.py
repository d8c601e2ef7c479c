"""Device simulator: many reference clients editing shared records offline, then a convergence check.

`fieldsync simulate --devices 50 --days 3 --edits-per-day 40 --overlap 0.2 --server URL` drives
`SyncClient`s against a running server through the admin API and the sync API only:

1. the admin creates one inspector per device (spread over a few wards) and one supervisor;
2. every simulated day each device makes `edits_per_day` inspections, each creating an
   establishment or editing one (with probability `overlap` one of the ward's shared records, which
   every device of the ward edits, else one of its own); some devices are offline for a stretch of
   the day; online devices sync now and then through a `FaultyTransport` that loses requests and
   responses (after the server handled them) with probability `loss`;
3. at the end the faults stop, everyone syncs, the supervisor resolves every open conflict, and
   everyone syncs again (quiescence);
4. checks: every device equals the server projected on its scope (the server as an admin pulls
   it city-wide); no op was applied twice (the server's own answers, also the lost ones, say
   `applied` at most once per op); no acknowledged value is lost (it is current, causally
   overwritten by a later write that saw it, or a candidate of a conflict).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec

from device.client import LocalEntity, SyncClient, SyncUnavailable
from forms import programme
from schemas.sync import OpResult, PushResponse

FORM_ID = "inspection"
FORM_VERSION = programme.form_version(FORM_ID)
LIST = "establishments"
ROLE = "inspector"
# What the role reads (as the server derives it: the lists of the forms the role fills).
ROLE_LISTS = {ROLE: programme.lists_of_role(ROLE)}
DEVICES_PER_WARD = 5

RISK = programme.choice_names(FORM_ID, "risk_class")  # manual policy: edits conflict
RESULTS = programme.choice_names(FORM_ID, "result")  # lww
MANAGED = programme.choice_names(FORM_ID, "managed")  # lww
VIOLATIONS = programme.choice_names(FORM_ID, "violations")  # set
# Valid `inspection` data; the entity changes the ops carry are what the simulation varies.
INSPECTION_DATA = programme.inspection_answers(violations=["no_licence"])


class FaultyTransport(httpx.AsyncBaseTransport):
    """Wraps a transport and loses requests (never reach the server) or responses (the server
    handled the request, the device never hears back). Faults are scripted (`drop_requests`,
    `drop_responses`, `unavailable` count down) or random (`loss`); `seen` keeps every push
    response the server produced, delivered or not, so duplicates can be counted honestly."""

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        *,
        loss: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        self.inner = inner
        self.loss = loss
        self.rng = rng or random.Random(0)
        self.drop_requests = 0
        self.drop_responses = 0
        self.unavailable = 0  # answer 503 + Retry-After without reaching the server
        self.offline = False
        self.seen: list[PushResponse] = []
        self.lost_requests = 0
        self.lost_responses = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.offline:
            raise httpx.ConnectError("offline", request=request)
        if self.unavailable > 0:
            self.unavailable -= 1
            return httpx.Response(
                503,
                headers={"retry-after": "1", "content-type": "application/problem+json"},
                json={
                    "type": "/problems/unavailable",
                    "title": "x",
                    "status": 503,
                    "code": "unavailable",
                },
            )
        if self.drop_requests > 0 or (self.loss and self.rng.random() < self.loss / 2):
            self.drop_requests = max(0, self.drop_requests - 1)
            self.lost_requests += 1
            raise httpx.ConnectError("request lost", request=request)
        response = await self.inner.handle_async_request(request)
        body = await response.aread()
        if request.url.path.endswith("/sync/push") and response.status_code == 200:
            media = "msgpack" if "msgpack" in response.headers.get("content-type", "") else "json"
            if media == "json":
                self.seen.append(msgspec.json.decode(body, type=PushResponse))
            else:
                self.seen.append(msgspec.msgpack.decode(body, type=PushResponse))
        if self.drop_responses > 0 or (self.loss and self.rng.random() < self.loss / 2):
            self.drop_responses = max(0, self.drop_responses - 1)
            self.lost_responses += 1
            raise httpx.ReadError("response lost", request=request)
        # `body` is decoded already: do not let the copy decode it again.
        headers = [
            (k, v)
            for k, v in response.headers.multi_items()
            if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")
        ]
        return httpx.Response(response.status_code, headers=headers, content=body, request=request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass
class SimulationReport:
    devices: int
    days: int
    edits: int  # local edits made (each one op)
    ops: int  # ops in all outboxes, resolutions included
    wall_seconds: float
    conflicts: int  # conflict records on the server
    conflicts_by_kind: dict[str, int]
    resolved_by_supervisor: int
    duplicates: int  # ops the server answered `applied`/`rejected` more than once
    unacknowledged: int  # ops still without a result after quiescence
    lost_values: int
    checked_values: int
    diverged_devices: int
    lost_requests: int
    lost_responses: int
    details: list[str] = field(default_factory=list)

    @property
    def ops_per_second(self) -> float:
        return self.ops / self.wall_seconds if self.wall_seconds else 0.0

    @property
    def ok(self) -> bool:
        return not (
            self.duplicates or self.lost_values or self.diverged_devices or self.unacknowledged
        )

    def format(self) -> str:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.conflicts_by_kind.items())) or "-"
        lines = [
            f"devices            {self.devices} x {self.days} days",
            f"edits              {self.edits}",
            f"ops                {self.ops} ({self.ops_per_second:.1f} ops/s)",
            f"wall time          {self.wall_seconds:.1f} s",
            f"faults             {self.lost_requests} requests lost, "
            f"{self.lost_responses} responses lost",
            f"conflicts          {self.conflicts} ({kinds}); "
            f"{self.resolved_by_supervisor} resolved by the supervisor",
            f"duplicates         {self.duplicates}",
            f"unacknowledged     {self.unacknowledged}",
            f"lost values        {self.lost_values} of {self.checked_values} checked",
            f"diverged devices   {self.diverged_devices}",
            f"result             {'CONVERGED' if self.ok else 'FAILED'}",
        ]
        return "\n".join(lines + [f"  ! {d}" for d in self.details[:20]])


@dataclass
class SimDevice:
    client: SyncClient
    transport: FaultyTransport
    http: httpx.AsyncClient
    ward: str
    role: str = "inspector"
    own: list[str] = field(default_factory=list)
    offline_steps: range = range(0)


@dataclass(frozen=True)
class Write:
    """One acknowledged property value: which op wrote it and the entity version it produced."""

    entity_id: str
    prop: str
    value: Any
    base: Any
    device_id: str
    op_seq: int
    base_version: int
    version: int


async def _no_wait(_: float) -> None:
    await asyncio.sleep(0)  # backoff in simulated time: yield, do not wait


def _random_edit(rng: random.Random) -> dict[str, Any]:
    edit: dict[str, Any] = {}
    for prop in rng.sample(("risk_class", "result", "managed", "violations"), rng.randint(1, 2)):
        if prop == "risk_class":
            edit[prop] = rng.choice(RISK)
        elif prop == "result":
            edit[prop] = rng.choice(RESULTS)
        elif prop == "managed":
            edit[prop] = rng.choice(MANAGED)
        else:
            edit[prop] = sorted(rng.sample(VIOLATIONS, rng.randint(1, 2)))
    return edit


def _inspect(device: SimDevice, change: Any) -> None:
    data = {"ward_code": device.ward, **INSPECTION_DATA}
    device.client.submit(FORM_ID, FORM_VERSION, device.ward, data, entities=[change])


async def _sync(device: SimDevice) -> None:
    try:
        await device.client.sync()
    except SyncUnavailable:
        pass  # offline or unlucky: the outbox keeps everything for next time


async def simulate(
    server_url: str,
    *,
    devices: int = 50,
    days: int = 3,
    edits_per_day: int = 40,
    overlap: float = 0.2,
    seed: int = 0,
    admin_username: str = "admin",
    admin_password: str,
    loss: float = 0.05,
    offline: float = 0.3,
    sync_probability: float = 0.25,
    shared_per_ward: int = 3,
    transport: httpx.AsyncBaseTransport | None = None,
) -> SimulationReport:
    """Run the simulation against `server_url` (or the given transport, e.g. an ASGI app)."""
    rng = random.Random(seed)
    run = uuid.uuid4().hex[:8]  # users and devices are new on every run, also on a reused server
    started = time.perf_counter()
    password = secrets.token_urlsafe(18)  # the simulated users' password, this run only

    def new_http(faults: float) -> tuple[httpx.AsyncClient, FaultyTransport]:
        inner = transport or httpx.AsyncHTTPTransport(retries=0)
        faulty = FaultyTransport(inner, loss=faults, rng=random.Random(rng.getrandbits(64)))
        http = httpx.AsyncClient(transport=faulty, base_url=server_url, timeout=60)
        return http, faulty

    def new_client(http: httpx.AsyncClient) -> SyncClient:
        device_rng = random.Random(rng.getrandbits(64))
        return SyncClient(
            http,
            device_id=str(uuid.uuid4()),
            sleep=_no_wait,
            rng=device_rng,
            max_attempts=12,
        )

    opened: list[httpx.AsyncClient] = []
    try:
        admin_http, _ = new_http(0.0)
        opened.append(admin_http)
        admin = new_client(admin_http)
        await admin.login(admin_username, admin_password)
        headers = {"authorization": f"Bearer {admin.store.meta('access_token')}"}
        wards_response = await admin_http.get("/api/v1/wards", headers=headers)
        wards_response.raise_for_status()
        codes = sorted(w["code"] for w in wards_response.json())
        wards = rng.sample(codes, max(1, -(-devices // DEVICES_PER_WARD)))

        async def create_user(role: str, user_wards: list[str], index: int) -> str:
            username = f"sim-{run}-{role[:4]}-{index}"
            body = {"username": username, "password": password, "role": role, "wards": user_wards}
            response = await admin_http.post("/api/v1/users", json=body, headers=headers)
            if response.status_code != 201:
                raise RuntimeError(f"cannot create {username}: {response.text}")
            return username

        fleet: list[SimDevice] = []
        for index in range(devices):
            ward = wards[index % len(wards)]
            username = await create_user("inspector", [ward], index)
            http, faulty = new_http(loss)
            opened.append(http)
            client = new_client(http)
            await client.login(username, password)
            fleet.append(SimDevice(client, faulty, http, ward))
        sup_http, sup_transport = new_http(0.0)
        opened.append(sup_http)
        supervisor = new_client(sup_http)
        await supervisor.login(await create_user("supervisor", wards, 0), password)

        # Shared records: created by the first device of each ward, known to all before day 1.
        shared: dict[str, list[str]] = defaultdict(list)
        edits = 0
        for ward in wards:
            first = next(d for d in fleet if d.ward == ward)
            for n in range(shared_per_ward):
                props = {"business_name": f"Cơ sở chung {n}", "risk_class": "low", "managed": "yes"}
                entity_id, change = first.client.create_entity(
                    LIST, props, label=props["business_name"]
                )
                _inspect(first, change)
                shared[ward].append(entity_id)
                edits += 1
        faults = [d.transport for d in fleet]
        for t in faults:
            t.loss = 0.0
        await asyncio.gather(*(_sync(d) for d in fleet))
        await asyncio.gather(*(_sync(d) for d in fleet))
        for t in faults:
            t.loss = loss

        for _day in range(days):
            for device in fleet:
                if rng.random() < offline:
                    start = rng.randrange(edits_per_day)
                    device.offline_steps = range(start, start + max(1, edits_per_day // 2))
                else:
                    device.offline_steps = range(0)
            for step in range(edits_per_day):
                for device in rng.sample(fleet, len(fleet)):
                    device.transport.offline = step in device.offline_steps
                    _edit(device, shared[device.ward], overlap, rng)
                    edits += 1
                syncing = [
                    d for d in fleet if not d.transport.offline and rng.random() < sync_probability
                ]
                await asyncio.gather(*(_sync(d) for d in syncing))
            for device in fleet:
                device.transport.offline = False
            await asyncio.gather(*(_sync(d) for d in fleet))

        # Quiescence: no more faults; push everything, resolve, pull everything.
        for device in fleet:
            device.transport.loss, device.transport.offline = 0.0, False
        await asyncio.gather(*(d.client.push() for d in fleet))
        await supervisor.pull()
        for conflict in supervisor.conflicts("open"):
            supervisor.resolve(conflict.id, choice=0)
        resolved = (await supervisor.sync())[0].applied
        await asyncio.gather(*(d.client.pull() for d in fleet))
        await supervisor.pull()
        await admin.pull()
        wall = time.perf_counter() - started

        report = _check(admin, supervisor, fleet, wards)
        report.devices, report.days, report.edits = devices, days, edits
        report.wall_seconds = wall
        report.resolved_by_supervisor = resolved
        report.lost_requests = sum(t.lost_requests for t in faults) + sup_transport.lost_requests
        report.lost_responses = sum(t.lost_responses for t in faults)
        return report
    finally:
        for http in opened:
            await http.aclose()


def _edit(device: SimDevice, shared: list[str], overlap: float, rng: random.Random) -> None:
    client = device.client
    own = [
        e
        for e in device.own
        if (entity := client.entity(LIST, e)) is not None and not entity.deleted
    ]
    target = None
    if rng.random() < overlap and shared:
        target = rng.choice(shared)
    elif own and rng.random() > 0.15:
        target = rng.choice(own)
    if target is None or client.entity(LIST, target) is None:
        name = f"Cơ sở {client.device_id[:6]} {len(device.own)}"
        props = {
            "business_name": name,
            "address": f"{len(device.own)} Phố Huế",
            **_random_edit(rng),
        }
        entity_id, change = client.create_entity(LIST, props, label=name)
        device.own.append(entity_id)
    elif target in device.own and rng.random() < 0.03:
        change = client.delete_entity(LIST, target)
    else:
        change = client.update_entity(LIST, target, _random_edit(rng))
    _inspect(device, change)


def _entity_view(entity: LocalEntity) -> tuple[Any, ...]:
    return (entity.version, entity.deleted, entity.label, entity.properties)


def _check(
    admin: SyncClient, supervisor: SyncClient, fleet: Sequence[SimDevice], wards: list[str]
) -> SimulationReport:
    details: list[str] = []
    server = {e.id: e for e in admin.entities()}
    conflicts = admin.conflicts()

    # Convergence: each device holds exactly the server's records in its scope, nothing pending.
    diverged = 0
    scopes: list[tuple[SyncClient, set[str], tuple[str, ...] | None]] = [
        (d.client, {d.ward}, ROLE_LISTS[d.role]) for d in fleet
    ]
    scopes.append((supervisor, set(wards), None))
    for client, scope_wards, lists in scopes:
        expected = {
            e.id: _entity_view(e)
            for e in server.values()
            if e.properties.get("ward_code") in scope_wards and (lists is None or e.list in lists)
        }
        held = {e.id: _entity_view(e) for e in client.entities()}
        pending = [e.id for e in client.entities() if e.pending]
        if held != expected or pending:
            diverged += 1
            missing = set(expected) - set(held)
            extra = set(held) - set(expected)
            differ = [k for k in set(held) & set(expected) if held[k] != expected[k]]
            details.append(
                f"device {client.device_id[:8]}: {len(missing)} missing, {len(extra)} extra, "
                f"{len(differ)} different, {len(pending)} pending"
            )

    # Exactly-once: the server's own answers (lost ones included) apply each op at most once.
    duplicates = 0
    for device in fleet:
        firsts: dict[int, int] = defaultdict(int)
        for response in device.transport.seen:
            for result in response.results:
                if result.status != "duplicate":
                    firsts[result.op_seq] += 1
        duplicates += sum(n - 1 for n in firsts.values() if n > 1)
    all_clients = [d.client for d in fleet] + [supervisor]
    unacknowledged = sum(1 for c in all_clients for entry in c.outbox() if entry.state == "pending")

    # No lost value: every acknowledged write is current, causally overwritten, or a candidate.
    writes = _acknowledged_writes(all_clients)
    by_key: dict[tuple[str, str], list[Write]] = defaultdict(list)
    for w in writes:
        by_key[(w.entity_id, w.prop)].append(w)
    candidates: dict[tuple[str, str | None], list[Any]] = defaultdict(list)
    for conflict in conflicts:
        for c in conflict.candidates:
            candidates[(conflict.entity_id, conflict.property)].append(c)
    lost = 0
    for w in writes:
        entity = server.get(w.entity_id)
        current = entity.properties.get(w.prop) if entity else None
        if _holds(current, w.value, w.base):
            continue
        if any(
            (o.device_id == w.device_id and o.op_seq > w.op_seq)
            or o.base_version >= w.version
            # It saw this value (written here, or by an equal write this one converged with).
            or (o.base == w.value and o.version > w.version)
            for o in by_key[(w.entity_id, w.prop)]
            if o is not w
        ):
            continue  # a later write that had seen this one replaced it
        if any(
            # By value: a write that converged with another one is represented by that writer.
            _holds(c.value, w.value, w.base)
            for c in candidates[(w.entity_id, w.prop)]
        ):
            continue
        lost += 1
        details.append(
            f"lost: {w.entity_id}.{w.prop} = {w.value!r} (device {w.device_id[:8]} op {w.op_seq}"
            f", base v{w.base_version} -> v{w.version}; now {current!r})"
        )

    # The server may hold earlier runs' records: count this run's conflicts only.
    conflicts = [c for c in conflicts if c.entity_id in {w.entity_id for w in writes}]
    by_kind: dict[str, int] = defaultdict(int)
    for conflict in conflicts:
        by_kind[conflict.kind] += 1
    return SimulationReport(
        devices=0,
        days=0,
        edits=0,
        ops=sum(len(c.outbox()) for c in all_clients),
        wall_seconds=0.0,
        conflicts=len(conflicts),
        conflicts_by_kind=dict(by_kind),
        resolved_by_supervisor=0,
        duplicates=duplicates,
        unacknowledged=unacknowledged,
        lost_values=lost,
        checked_values=len(writes),
        diverged_devices=diverged,
        lost_requests=0,
        lost_responses=0,
        details=details,
    )


def _holds(container: Any, value: Any, base: Any) -> bool:
    """`container` still carries `value`; for a multi-select, the elements the write added."""
    if isinstance(value, list) and isinstance(container, list):
        added = set(value) - set(base if isinstance(base, list) else [])
        return added <= set(container)
    return bool(container == value)


def _acknowledged_writes(clients: Sequence[SyncClient]) -> list[Write]:
    writes = []
    for client in clients:
        for entry in client.outbox():
            result: OpResult | None = entry.result
            sub = entry.op.submission
            if result is None or entry.state != "applied" or sub is None:
                continue
            for change, outcome in zip(sub.entities, result.entities, strict=False):
                if outcome.status == "rejected":
                    continue
                base = change.base_properties or {}
                for prop, value in change.properties.items():
                    if change.action == "update" and prop in base and base[prop] == value:
                        continue  # untouched: the user did not change it
                    writes.append(
                        Write(
                            entity_id=change.entity_id,
                            prop=prop,
                            value=value,
                            base=base.get(prop),
                            device_id=client.device_id,
                            op_seq=entry.op.op_seq,
                            base_version=change.base_version,
                            version=outcome.version,
                        )
                    )
    return writes


def add_workload_arguments(parser: argparse.ArgumentParser) -> None:
    """The fleet's options, the same for `fieldsync simulate` and `bench/bench_converge.py`."""
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--edits-per-day", type=int, default=40)
    parser.add_argument("--overlap", type=float, default=0.2)
    parser.add_argument("--loss", type=float, default=0.05)
    parser.add_argument("--offline", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)


def workload(args: argparse.Namespace) -> dict[str, Any]:
    """The `simulate` keyword arguments that `add_workload_arguments` parsed."""
    names = ("devices", "days", "edits_per_day", "overlap", "loss", "offline", "seed")
    return {name: getattr(args, name) for name in names}


def main(argv: Sequence[str] | None = None) -> int:
    """`fieldsync simulate`: print the report; exit 0 when converged with nothing lost."""
    parser = argparse.ArgumentParser(prog="fieldsync simulate", description=__doc__.split("\n")[0])
    parser.add_argument("--server", required=True, help="base URL, e.g. http://127.0.0.1:8000")
    add_workload_arguments(parser)
    parser.add_argument("--admin-user", default=os.environ.get("FIELDSYNC_ADMIN_USERNAME", "admin"))
    parser.add_argument("--admin-password", default=os.environ.get("FIELDSYNC_ADMIN_PASSWORD"))
    args = parser.parse_args(argv)
    if not args.admin_password:
        parser.error("give --admin-password or set FIELDSYNC_ADMIN_PASSWORD")
    report = asyncio.run(
        simulate(
            args.server,
            **workload(args),
            admin_username=args.admin_user,
            admin_password=args.admin_password,
        )
    )
    print(report.format())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
