"""Audience and scope selection for a token (RFC 8707 resource indicators, RFC 6749 §3.3).

One audience per token: a token for the CRM is useless at the mail API. Pure functions.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from valetkey.identity.models import Resource, valid_resource_uri
from valetkey.identity.scopes import closure
from valetkey.oauth.errors import InvalidScope, InvalidTarget


@dataclass(frozen=True, slots=True)
class Grantable:
    audience: str
    scopes: tuple[str, ...]
    resource: Resource | None


def all_implications(resources: Sequence[Resource]) -> dict[str, set[str]]:
    implies: dict[str, set[str]] = {}
    for resource in resources:
        for scope, lower in resource.implies.items():
            implies.setdefault(scope, set()).update(lower)
    return implies


def select(
    resources: Sequence[Resource],
    requested_resources: Sequence[str],
    requested_scopes: Sequence[str] | None,
    allowed_scopes: Sequence[str],
    default_audience: str,
) -> Grantable:
    """Pick the audience and the scopes; never wider than `allowed_scopes` (with implications)."""
    if len(requested_resources) > 1:
        raise InvalidTarget("request one resource per token")
    allowed = closure(allowed_scopes, all_implications(resources))
    if requested_scopes is not None:
        for scope in requested_scopes:
            if scope not in allowed:
                raise InvalidScope(f"scope {scope!r} is not allowed for this client")
    if requested_resources:
        return _for_resource(resources, requested_resources[0], requested_scopes, allowed_scopes)
    return _without_resource(resources, requested_scopes, allowed_scopes, default_audience)


def _for_resource(
    resources: Sequence[Resource],
    uri: str,
    requested: Sequence[str] | None,
    allowed_scopes: Sequence[str],
) -> Grantable:
    if not valid_resource_uri(uri):
        raise InvalidTarget("resource must be an absolute URI without a fragment")
    resource = next((r for r in resources if r.uri == uri), None)
    if resource is None:
        raise InvalidTarget("unknown resource")
    if requested is None:
        scopes = tuple(s for s in allowed_scopes if s in resource.scopes)
        if not scopes:
            raise InvalidScope("this client holds no scope of the requested resource")
    else:
        for scope in requested:
            if scope not in resource.scopes:
                raise InvalidScope(f"the resource does not accept scope {scope!r}")
        scopes = tuple(requested)
    return Grantable(resource.uri, scopes, resource)


def _without_resource(
    resources: Sequence[Resource],
    requested: Sequence[str] | None,
    allowed_scopes: Sequence[str],
    default_audience: str,
) -> Grantable:
    scopes = tuple(requested) if requested is not None else tuple(allowed_scopes)
    owners = [r for r in resources if any(s in r.scopes for s in scopes)]
    if not owners:
        return Grantable(default_audience, scopes, None)
    if requested is None and len(owners) > 1:
        raise InvalidTarget("this client's scopes span several resources: name one in `resource`")
    complete = [r for r in owners if all(s in r.scopes for s in scopes)]
    if len(complete) != 1:
        raise InvalidTarget("no single resource accepts all of these scopes: name one")
    return Grantable(complete[0].uri, scopes, complete[0])
