"""`fieldsync` command line: serve, migrate, seed-wards, create-user, gc-blobs, simulate."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec

from schemas.identity import ROLES
from server.settings import Settings, SettingsError, load_settings


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["simulate"]:
        # A client of a running server: it reads no server settings.
        from device.simulator import main as simulate

        return simulate(argv[1:])
    parser = argparse.ArgumentParser(prog="fieldsync", description="fieldsync server")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "simulate",
        help="drive many reference clients against a running server and check convergence "
        "(fieldsync simulate --help)",
    )

    serve = sub.add_parser(
        "serve", help="migrate, seed, create the first admin if needed, and serve HTTP"
    )
    serve.add_argument("--host", help="bind address (default FIELDSYNC_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default FIELDSYNC_PORT or 8000)")

    sub.add_parser("migrate", help="apply database migrations (idempotent)")
    sub.add_parser(
        "seed-wards", help="load the 126 Hanoi wards from vietnam-provinces (idempotent)"
    )

    create = sub.add_parser("create-user", help="create a user")
    create.add_argument("--username", required=True)
    create.add_argument(
        "--role",
        required=True,
        choices=ROLES,
    )
    create.add_argument(
        "--wards", default="", help='comma-separated ward codes, or "*" for city-wide'
    )
    create.add_argument("--full-name", default="")
    create.add_argument(
        "--password", help="default: FIELDSYNC_NEW_USER_PASSWORD, else asked on the terminal"
    )

    gc = sub.add_parser(
        "gc-blobs",
        help="remove attachments no submission references, and abandoned uploads",
    )
    gc.add_argument("--dry-run", action="store_true", help="list what would be removed")
    gc.add_argument(
        "--grace-hours",
        type=float,
        default=72.0,
        help="keep unreferenced blobs younger than this (default 72: devices push files first)",
    )

    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        if args.command == "serve":
            return _serve(settings, args)
        if args.command == "migrate":
            return _run(settings, _migrate)
        if args.command == "seed-wards":
            return _run(settings, _seed_wards)
        if args.command == "gc-blobs":
            return _run(settings, lambda s: _gc_blobs(s, args))
        if args.command == "create-user":
            return _run(settings, lambda s: _create_user(s, args))
    except SettingsError as exc:
        print(f"fieldsync: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 1


def _run(settings: Settings, job: Callable[[Settings], Awaitable[int]]) -> int:
    from server.errors import DomainError

    async def with_engine() -> int:
        from server.db.engine import close_engine, create_engine, open_engine, use_engine

        engine = create_engine(settings.database_url)
        use_engine(engine)
        await open_engine(engine, pool_size=2)
        try:
            return await job(settings)
        finally:
            await close_engine(engine)

    try:
        return asyncio.run(with_engine())
    except DomainError as exc:
        print(f"fieldsync: {exc.detail or exc.title}", file=sys.stderr)
        for item in exc.errors:
            print(f"  {item.path}: {item.message}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"fieldsync: cannot reach the database: {exc}", file=sys.stderr)
        return 1


async def _migrate(settings: Settings) -> int:
    from server.db.migrate import migrate

    await migrate()
    print("fieldsync: migrations applied")
    return 0


async def _seed_wards(settings: Settings) -> int:
    from server.services.wards import seed_wards

    inserted = await seed_wards()
    print(f"fieldsync: wards loaded ({inserted} new)")
    return 0


async def _create_user(settings: Settings, args: Any) -> int:
    from schemas.identity import UserCreate
    from server.services import identity

    password = (
        args.password
        or os.environ.get("FIELDSYNC_NEW_USER_PASSWORD")
        or getpass.getpass("Password: ")
    )
    wards = [w.strip() for w in args.wards.split(",") if w.strip()]
    try:
        data = msgspec.convert(
            {
                "username": args.username,
                "password": password,
                "role": args.role,
                "wards": wards,
                "full_name": args.full_name,
            },
            UserCreate,
        )
    except msgspec.ValidationError as exc:
        print(f"fieldsync: {exc}", file=sys.stderr)
        return 1
    user = await identity.create_user(None, data)
    print(f"fieldsync: created {user.role} {user.username} ({user.id})")
    return 0


async def _gc_blobs(settings: Settings, args: Any) -> int:
    from datetime import timedelta

    from server.app import blob_store_from_settings
    from server.services.blobs import collect_garbage

    store = blob_store_from_settings(settings)
    await store.ensure_ready()
    report = await collect_garbage(
        store, grace=timedelta(hours=args.grace_hours), dry_run=args.dry_run
    )
    verb = "would remove" if args.dry_run else "removed"
    for kind, items in (
        ("blob", report.blobs),
        ("upload", report.uploads),
        ("staging", report.staging),
        ("stray object", report.stray_objects),
    ):
        for item in items:
            print(f"fieldsync: {verb} {kind} {item}")
    total = len(report.blobs) + len(report.uploads) + len(report.staging)
    print(f"fieldsync: gc-blobs {verb} {total + len(report.stray_objects)} item(s)")
    return 0


def _serve(settings: Settings, args: Any) -> int:
    import uvicorn

    from server.app import create_app
    from server.bootstrap import prepare

    host = args.host or settings.host
    port = args.port or settings.port
    # FIELDSYNC_PUBLIC_URL's default follows the address actually served.
    settings = msgspec.structs.replace(settings, host=host, port=port)
    try:
        generated = asyncio.run(prepare(settings))
    except OSError as exc:
        print(f"fieldsync: cannot reach the database: {exc}", file=sys.stderr)
        return 1
    if generated:
        print(
            f"fieldsync: created the first admin {settings.admin_username!r} with password: {generated}\n"
            "fieldsync: this password is shown once; change it after logging in.",
            flush=True,
        )
    print(f"fieldsync: serving on http://{host}:{port} (API docs at /schema)", flush=True)
    # proxy_headers=False: uvicorn would otherwise believe X-Forwarded-For from any loopback peer;
    # the app believes it only from FIELDSYNC_TRUSTED_PROXIES.
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level="info",
        server_header=False,
        date_header=False,  # the app dates every answer itself (OpenRosa needs Date)
        proxy_headers=False,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
