"""`client_credentials` (RFC 6749 §4.4): an agent gets a token in its own name."""

from valetkey.identity.scopes import parse_scope_param
from valetkey.oauth import audience
from valetkey.oauth.context import TokenRequest
from valetkey.oauth.errors import InvalidScope, UnauthorizedClient
from valetkey.oauth.grants import AccessTokenSpec


class ClientCredentialsGrant:
    grant_type = "client_credentials"
    parameters = frozenset({"scope", "resource"})

    def __init__(self, issuer: str, default_lifetime: int) -> None:
        self._issuer = issuer
        self._default_lifetime = default_lifetime

    async def handle(self, request: TokenRequest) -> AccessTokenSpec:
        client = request.context.client
        if not client.is_agent:
            raise UnauthorizedClient("only agents obtain tokens with client_credentials")
        requested = parse_scope_param(request.params.get("scope", "")) or None
        chosen = audience.select(
            request.tenant_resources,
            request.resources_requested,
            requested,
            client.scopes,
            self._issuer,
        )
        if not chosen.scopes:
            raise InvalidScope("this agent holds no scope: nothing to put in a token")
        lifetime = request.context.tenant.settings.access_token_lifetime(self._default_lifetime)
        return AccessTokenSpec(
            subject=client.id, audience=chosen.audience, scopes=chosen.scopes, lifetime=lifetime
        )
