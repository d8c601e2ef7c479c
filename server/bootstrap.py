"""What a fresh installation needs before it serves: schema, reference wards, a first admin."""

from __future__ import annotations

import secrets

from schemas.identity import UserCreate
from server.db.engine import close_engine, create_engine, open_engine, use_engine
from server.db.migrate import migrate
from server.services import identity
from server.services.forms import publish_templates
from server.services.wards import seed_wards
from server.settings import Settings


async def prepare(settings: Settings) -> str | None:
    """Migrate, seed wards, create the first admin if none exists. Returns a generated password."""
    engine = create_engine(settings.database_url)
    use_engine(engine)
    await open_engine(engine, pool_size=2)
    try:
        await migrate()
        await seed_wards()
        await publish_templates()
        return await ensure_first_admin(settings)
    finally:
        await close_engine(engine)


async def ensure_first_admin(settings: Settings) -> str | None:
    if await identity.count_admins() > 0:
        return None
    password = settings.admin_password or secrets.token_urlsafe(12)
    await identity.create_user(
        None,
        UserCreate(username=settings.admin_username, password=password, role="admin", wards=["*"]),
    )
    return None if settings.admin_password else password
