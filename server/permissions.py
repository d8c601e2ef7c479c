"""Who may do what: the one permission table (docs/permissions.md says it in words).

Each role is granted verbs; `can(principal, verb, scope)` answers, `require` refuses with 403
`role_forbidden`. Controllers ask it through guards (server/api/deps.py), services ask it for what
depends on the record (a form's roles, a ward). Adding a role means adding it to `schemas.identity.Role`
and a line here; nothing else names roles.

Verbs:
- `user.admin`: manage users and devices.  `audit.read`: read the audit trail.
- `form.admin`: upload, publish, open and close forms; validate a submission against a version.
- `form.review`: list a form's versions and diff them.
- `form.read_all`: read every form and every entity list (still only in the caller's wards).
- `form.fill`: fill a form. Granted by the form's own `roles` list (data, per form; pass
  `FormScope`), and to roles granted `form.fill_any`.
- `form.read`: read a form's spec: `form.read_all`, or `form.fill` on that form.
- `data.submit`: push submissions and entity changes (the lists follow from `form.fill`).
- `conflict.resolve`: see and resolve conflicts in the caller's wards, and be told of lost wards.
- `submission.supervise`: see how many of a submission's attachments arrived, and the accepted
  submissions flagged with rules the server did not decide (in the caller's wards).
- `sensitive.read`: for the coming privacy issue, declared but checked nowhere yet: supervisors
  of the record's ward (pass `WardScope`) and admins; the owning outreach worker is a later rule.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from schemas.errors import ErrorCode
from schemas.identity import ROLES, Role
from server.errors import Forbidden

Verb = Literal[
    "user.admin",
    "audit.read",
    "form.admin",
    "form.review",
    "form.read_all",
    "form.fill_any",
    "form.fill",
    "form.read",
    "data.submit",
    "conflict.resolve",
    "submission.supervise",
    "sensitive.read",
]

_SUPERVISING: frozenset[Verb] = frozenset(
    {"form.review", "form.read_all", "conflict.resolve", "submission.supervise", "sensitive.read"}
)
_FIELD: frozenset[Verb] = frozenset({"data.submit"})
_ADMINISTERING: frozenset[Verb] = frozenset(
    {"user.admin", "audit.read", "form.admin", "form.fill_any"}
)

GRANTS: Mapping[Role, frozenset[Verb]] = {
    "admin": _ADMINISTERING | _SUPERVISING | _FIELD,
    "supervisor": _SUPERVISING | _FIELD,
    "outreach": _FIELD,
    "trainer": _FIELD,
    "inspector": _FIELD,
    "viewer": frozenset({"form.read_all"}),
}

# Roles whose users are city-wide whatever wards they are given.
CITY_WIDE_ROLES: frozenset[Role] = frozenset({"admin"})


class HasRole(Protocol):
    @property
    def role(self) -> str: ...

    def may_see_ward(self, ward_code: str) -> bool: ...


@dataclass(frozen=True)
class FormScope:
    """The form a verb is asked about: its `roles` column says who fills it."""

    roles: Collection[str]


@dataclass(frozen=True)
class WardScope:
    """The ward of the record a verb is asked about."""

    ward_code: str


Scope = FormScope | WardScope | None


def role_can(role: str, verb: Verb) -> bool:
    """What a role is granted outright, whatever the record."""
    return verb in GRANTS.get(role, frozenset())  # type: ignore[call-overload]


def roles_with(verb: Verb) -> tuple[Role, ...]:
    return tuple(role for role in ROLES if role_can(role, verb))


def can(principal: HasRole, verb: Verb, scope: Scope = None) -> bool:
    role = principal.role
    match verb, scope:
        case "form.fill", FormScope(roles=roles):
            return role_can(role, "form.fill_any") or role in roles
        case "form.read", FormScope():
            return role_can(role, "form.read_all") or can(principal, "form.fill", scope)
        case "sensitive.read", WardScope(ward_code=ward):
            return role_can(role, verb) and principal.may_see_ward(ward)
        case (("form.fill" | "form.read" | "sensitive.read"), _):
            raise TypeError(f"{verb} is asked about a record: pass its scope")
    return role_can(role, verb)


def require(principal: HasRole, verb: Verb, scope: Scope = None) -> None:
    if not can(principal, verb, scope):
        roles = roles_with(verb)
        raise Forbidden(
            f"This action needs the role {' or '.join(roles)}.", code=ErrorCode.ROLE_FORBIDDEN
        )
