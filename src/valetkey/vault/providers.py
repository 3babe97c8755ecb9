"""Providers: a downstream platform's OAuth configuration and API base, and how its API
paths map to actions.

A provider is data. Presets for common platforms (JSON files next to this module) encode
their documented quirks — rotating or static refresh tokens, comma-separated scopes, an
API base that comes from the token response, endpoints with a directory placeholder — so
an admin gives only a client id and secret. Parsing is strict: an unknown field, a
non-https endpoint or a mapping that does not parse is refused with a clear message.

Path mapping: `GET /deals/{id}` → `crm:deals.read` on `crm:deals/{id}`; any path the
mappings do not name falls back by method (GET/HEAD → read, POST/PUT/PATCH → write,
DELETE → delete) on the resource `<provider>:<path>`, without the path's leading slash.
A path is only ever a path under the API base: no scheme, no host, no `..`, no encoded
slashes or dots, no backslashes.
"""

import json
import re
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

PRESETS_PACKAGE = "valetkey.vault.presets"
METHOD_CLASSES = {"GET": "read", "HEAD": "read", "OPTIONS": "read", "POST": "write",
                  "PUT": "write", "PATCH": "write", "DELETE": "delete"}  # fmt: skip
_NAME_RE = re.compile(r"[a-z][a-z0-9-]{0,39}")
_VAR_RE = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
_FIELDS = {
    "preset", "title", "authorize_url", "token_url", "revoke_url", "api_base",
    "api_base_from_token", "placeholders", "scope_delimiter", "default_scopes",
    "token_auth_method", "pkce", "extra_authorize_params", "token_request_headers",
    "refresh", "actions", "quirks", "sanitize", "grant_errors",
}  # fmt: skip


class ProviderError(ValueError):
    """The provider's configuration or a request path is not acceptable."""


@dataclass(frozen=True, slots=True)
class ActionMapping:
    method: str
    path: str  # a template: /crm/v3/objects/deals/{id}
    action: str
    resource: str  # a template using the path's variables: crm:deals/{id}
    pattern: re.Pattern[str] = field(compare=False, repr=False, default=re.compile(""))

    def match(self, method: str, path: str) -> tuple[str, str] | None:
        if method != self.method:
            return None
        found = self.pattern.fullmatch(path)
        if found is None:
            return None
        return self.action, self.resource.format(**found.groupdict())


@dataclass(frozen=True, slots=True)
class RefreshPolicy:
    rotating: bool = False  # every refresh returns a new refresh token to persist
    before_expiry: int = 300  # refresh this many seconds before the access token expires
    at_least_every_hours: float | None = None  # refresh idle connections against revocation


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    authorize_url: str
    token_url: str
    api_base: str
    revoke_url: str | None = None
    api_base_from_token: str | None = None
    scope_delimiter: str = " "
    default_scopes: tuple[str, ...] = ()
    token_auth_method: Literal["client_secret_basic", "client_secret_post"] = "client_secret_basic"
    pkce: bool = True
    extra_authorize_params: dict[str, str] = field(default_factory=dict)
    token_request_headers: dict[str, str] = field(default_factory=dict)
    refresh: RefreshPolicy = field(default_factory=RefreshPolicy)
    actions: tuple[ActionMapping, ...] = ()
    sanitize: bool = False
    preset: str | None = None
    # The token endpoint's error codes that mean "the grant is gone" (RFC 6749's
    # invalid_grant; Slack and GitHub have their own names for it).
    grant_errors: tuple[str, ...] = ("invalid_grant",)

    def to_json(self) -> dict[str, Any]:
        return {
            "preset": self.preset, "authorize_url": self.authorize_url,
            "token_url": self.token_url, "revoke_url": self.revoke_url,
            "api_base": self.api_base, "api_base_from_token": self.api_base_from_token,
            "scope_delimiter": self.scope_delimiter, "default_scopes": list(self.default_scopes),
            "token_auth_method": self.token_auth_method, "pkce": self.pkce,
            "extra_authorize_params": self.extra_authorize_params,
            "token_request_headers": self.token_request_headers,
            "refresh": {"rotating": self.refresh.rotating,
                        "before_expiry": self.refresh.before_expiry,
                        "at_least_every_hours": self.refresh.at_least_every_hours},
            "actions": [{"method": a.method, "path": a.path, "action": a.action,
                         "resource": a.resource} for a in self.actions],
            "sanitize": self.sanitize,
            "grant_errors": list(self.grant_errors),
        }  # fmt: skip

    def scope_param(self, scopes: tuple[str, ...]) -> str:
        return self.scope_delimiter.join(dict.fromkeys((*self.default_scopes, *scopes)))

    def intent(self, provider: str, method: str, path: str) -> tuple[str, str]:
        """The (action, resource) a gateway call declares, from the mappings or by method."""
        clean = safe_path(path)
        for mapping in self.actions:
            found = mapping.match(method, clean)
            if found is not None:
                return found
        klass = METHOD_CLASSES.get(method)
        if klass is None:
            raise ProviderError(f"method {method!r} is not allowed through the gateway")
        return klass, f"{provider}:{clean[1:]}"


def safe_path(path: str) -> str:
    """A relative API path, refused if it could leave the API base."""
    if not path.startswith("/"):
        path = "/" + path
    decoded = unquote(path)
    if len(path) > 2048 or not path.isprintable() or "\\" in decoded or "//" in path:
        raise ProviderError("the path is not a plain API path")
    parts = urlsplit(path)
    if parts.scheme or parts.netloc or parts.query or parts.fragment:
        raise ProviderError("the path is not a plain API path")
    if any(segment in (".", "..") for segment in decoded.split("/")):
        raise ProviderError("the path may not contain . or .. segments")
    if "%2f" in path.lower() or "%5c" in path.lower() or "%2e" in path.lower():
        raise ProviderError("the path may not contain encoded slashes or dots")
    return path


def _https(name: str, url: Any, *, placeholders: dict[str, str]) -> str:
    if not isinstance(url, str) or not url:
        raise ProviderError(f"{name} is required")
    concrete = url
    for key, value in placeholders.items():
        concrete = concrete.replace("{" + key + "}", value)
    parts = urlsplit(concrete)
    loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise ProviderError(f"{name} must be an https URL (http only on loopback)")
    if not parts.hostname or parts.fragment or parts.username or parts.password:
        raise ProviderError(f"{name} must be an absolute URL without credentials or fragment")
    return concrete.rstrip("/") if name == "api_base" else concrete


def _mapping(raw: Any) -> ActionMapping:
    if not isinstance(raw, dict) or set(raw) - {"method", "path", "action", "resource"}:
        raise ProviderError("an action mapping is {method, path, action, resource}")
    method, path = str(raw.get("method", "")).upper(), raw.get("path")
    action, resource = raw.get("action"), raw.get("resource")
    if method not in METHOD_CLASSES or not all(
        isinstance(v, str) for v in (path, action, resource)
    ):
        raise ProviderError("an action mapping needs a method, a path, an action and a resource")
    assert isinstance(path, str) and isinstance(action, str) and isinstance(resource, str)
    names = _VAR_RE.findall(path)
    if len(set(names)) != len(names) or not set(_VAR_RE.findall(resource)) <= set(names):
        raise ProviderError(f"mapping {path!r}: the resource may use only the path's variables")
    safe_path(_VAR_RE.sub("x", path))
    pattern = "".join(
        f"(?P<{part[1:-1]}>[^/]+)" if _VAR_RE.fullmatch(part) else re.escape(part)
        for part in re.split(r"(\{[a-z_][a-z0-9_]*\})", path)
        if part
    )
    return ActionMapping(method, path, action, resource, re.compile(pattern))


def parse_config(data: Any, *, placeholders: dict[str, str] | None = None) -> ProviderConfig:
    """A provider's configuration from its JSON form (a preset, or an admin's options)."""
    if not isinstance(data, dict):
        raise ProviderError("a provider configuration is a JSON object")
    unknown = set(data) - _FIELDS
    if unknown:
        raise ProviderError(f"unknown provider field {sorted(unknown)[0]!r}")
    values = {**dict(data.get("placeholders") or {}), **(placeholders or {})}
    from_token = data.get("api_base_from_token")
    api_base = data.get("api_base")
    if from_token and api_base == "{" + str(from_token) + "}":
        api_base = "https://api-base-from-token.invalid"  # replaced when a connection has it
    delimiter = data.get("scope_delimiter", " ")
    if delimiter not in (" ", ","):
        raise ProviderError("scope_delimiter is a space or a comma")
    method = data.get("token_auth_method", "client_secret_basic")
    if method not in ("client_secret_basic", "client_secret_post"):
        raise ProviderError("token_auth_method is client_secret_basic or client_secret_post")
    refresh = data.get("refresh") or {}
    if not isinstance(refresh, dict) or set(refresh) - {"rotating", "before_expiry",
                                                        "at_least_every_hours"}:  # fmt: skip
        raise ProviderError("refresh is {rotating, before_expiry, at_least_every_hours}")
    return ProviderConfig(
        authorize_url=_https("authorize_url", data.get("authorize_url"), placeholders=values),
        token_url=_https("token_url", data.get("token_url"), placeholders=values),
        api_base=_https("api_base", api_base, placeholders=values),
        revoke_url=(
            _https("revoke_url", data["revoke_url"], placeholders=values)
            if data.get("revoke_url")
            else None
        ),
        api_base_from_token=str(from_token) if from_token else None,
        scope_delimiter=delimiter,
        default_scopes=tuple(str(s) for s in data.get("default_scopes") or ()),
        token_auth_method=method,
        pkce=bool(data.get("pkce", True)),
        extra_authorize_params={
            str(k): str(v) for k, v in (data.get("extra_authorize_params") or {}).items()
        },
        token_request_headers={
            str(k): str(v) for k, v in (data.get("token_request_headers") or {}).items()
        },
        refresh=RefreshPolicy(
            bool(refresh.get("rotating", False)),
            int(refresh.get("before_expiry", 300)),
            _hours(refresh.get("at_least_every_hours")),
        ),
        actions=tuple(_mapping(m) for m in data.get("actions") or ()),
        sanitize=bool(data.get("sanitize", False)),
        preset=data.get("preset"),
        grant_errors=_grant_errors(data.get("grant_errors")),
    )


def _hours(raw: Any) -> float | None:
    if raw is None:
        return None
    if not isinstance(raw, int | float) or isinstance(raw, bool) or raw <= 0:
        raise ProviderError("refresh.at_least_every_hours is a positive number of hours")
    return float(raw)


def _grant_errors(raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ("invalid_grant",)
    if not isinstance(raw, list) or not all(isinstance(e, str) and e for e in raw):
        raise ProviderError("grant_errors is a list of OAuth error codes")
    return tuple(dict.fromkeys(["invalid_grant", *raw]))


def preset_names() -> list[str]:
    return sorted(
        p.name.removesuffix(".json")
        for p in resources.files(PRESETS_PACKAGE).iterdir()
        if p.name.endswith(".json")
    )


def load_preset(name: str) -> dict[str, Any]:
    if name not in preset_names():
        raise ProviderError(f"unknown preset {name!r}: use one of {', '.join(preset_names())}")
    data: dict[str, Any] = json.loads(
        resources.files(PRESETS_PACKAGE).joinpath(f"{name}.json").read_text()
    )
    return data


def valid_name(name: str) -> bool:
    return bool(_NAME_RE.fullmatch(name))


def with_api_base(config: ProviderConfig, api_base: str) -> ProviderConfig:
    """The configuration with a connection's own API base (e.g. Salesforce's instance)."""
    return replace(config, api_base=_https("api_base", api_base, placeholders={}))


@dataclass(frozen=True, slots=True)
class Provider:
    id: str
    tenant_id: str
    name: str
    config: ProviderConfig
    client_id: str
    scopes: tuple[str, ...]
    created_at: float
