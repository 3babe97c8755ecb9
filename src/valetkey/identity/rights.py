"""A user's own rights: the scopes their roles hold, with the scope hierarchy applied.

By default `admin` holds every scope of the tenant's resources and `approver` and `member`
the read scopes; `valetkey roles set` replaces a role's scopes. Pure functions.
"""

from collections.abc import Iterable, Mapping, Sequence

from valetkey.identity.models import Resource
from valetkey.identity.scopes import closure


def is_read_scope(scope: str) -> bool:
    return scope == "read" or scope.endswith(":read")


def default_role_scopes(role: str, resources: Sequence[Resource]) -> tuple[str, ...]:
    every = dict.fromkeys(s for r in resources for s in r.scopes)
    if role == "admin":
        return tuple(every)
    return tuple(s for s in every if is_read_scope(s))


def role_scopes(
    role: str, custom: Mapping[str, Sequence[str]], resources: Sequence[Resource]
) -> tuple[str, ...]:
    if role in custom:
        return tuple(custom[role])
    return default_role_scopes(role, resources)


def user_rights(
    roles: Iterable[str], custom: Mapping[str, Sequence[str]], resources: Sequence[Resource]
) -> set[str]:
    implies: dict[str, set[str]] = {}
    for resource in resources:
        for scope, lower in resource.implies.items():
            implies.setdefault(scope, set()).update(lower)
    held = [s for role in roles for s in role_scopes(role, custom, resources)]
    return closure(held, implies)
