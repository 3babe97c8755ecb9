"""Provider configurations: every preset parses with its quirks, mappings turn API paths
into intents, and no path can leave the API base."""

import pytest

from valetkey.vault.providers import (
    ProviderError,
    load_preset,
    parse_config,
    preset_names,
    with_api_base,
)

PRESETS = ["atlassian", "github", "google", "hubspot", "microsoft", "salesforce", "slack"]


def test_every_preset_ships_and_parses() -> None:
    assert preset_names() == PRESETS
    for name in PRESETS:
        config = parse_config(load_preset(name))
        assert config.preset == name
        assert config.token_url.startswith("https://")


def test_preset_quirks_are_encoded() -> None:
    slack = parse_config(load_preset("slack"))
    assert slack.scope_delimiter == "," and slack.scope_param(("chat:write", "users:read")) == (
        "chat:write,users:read"
    )
    assert parse_config(load_preset("microsoft")).refresh.rotating is True
    assert parse_config(load_preset("google")).refresh.rotating is False
    assert parse_config(load_preset("google")).extra_authorize_params["access_type"] == "offline"
    ms = parse_config(load_preset("microsoft"), placeholders={"directory": "contoso-id"})
    assert "/contoso-id/oauth2/v2.0/token" in ms.token_url
    assert "/common/" in parse_config(load_preset("microsoft")).token_url
    github = parse_config(load_preset("github"))
    assert github.token_request_headers == {"Accept": "application/json"}
    salesforce = parse_config(load_preset("salesforce"))
    assert salesforce.api_base_from_token == "instance_url"
    assert with_api_base(salesforce, "https://acme.my.salesforce.com").api_base == (
        "https://acme.my.salesforce.com"
    )
    atlassian = parse_config(load_preset("atlassian"))
    assert atlassian.scope_param(("read:jira-work",)) == "offline_access read:jira-work"


def test_paths_map_to_intents_with_a_method_fallback() -> None:
    hubspot = parse_config(load_preset("hubspot"))
    assert hubspot.intent("crm", "GET", "/crm/v3/objects/deals/42") == (
        "crm:deals.read", "crm:deals/42",
    )  # fmt: skip
    assert hubspot.intent("crm", "DELETE", "/crm/v3/objects/deals/42") == (
        "crm:deals.delete", "crm:deals/42",
    )  # fmt: skip
    assert hubspot.intent("crm", "GET", "/crm/v3/objects/contacts/7") == (
        "read", "crm:crm/v3/objects/contacts/7",
    )  # fmt: skip
    assert hubspot.intent("crm", "POST", "/x")[0] == "write"
    assert hubspot.intent("crm", "PUT", "/x")[0] == "write"
    with pytest.raises(ProviderError):
        hubspot.intent("crm", "TRACE", "/x")


@pytest.mark.parametrize(
    "path",
    ["/../secrets", "/a/../../b", "/a/%2e%2e/b", "/a/%2E%2E/b", "//evil.example/x",
     "https://evil.example/x", "/a%2fb", "/a\\b", "/a/./b", "/a?x=1", "/a#f", "/a\x00b"],
)  # fmt: skip
def test_path_escapes_are_refused(path: str) -> None:
    with pytest.raises(ProviderError):
        parse_config(load_preset("hubspot")).intent("crm", "GET", path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"token_url": "http://evil.example/token"}, "https"),
        ({"api_base": "https://user:pw@api.example"}, "credentials"),
        ({"scope_delimiter": ";"}, "scope_delimiter"),
        ({"surprise": 1}, "unknown provider field"),
        ({"token_auth_method": "none"}, "token_auth_method"),
        ({"actions": [{"method": "GET", "path": "/d/{id}", "action": "x", "resource": "{other}"}]},
         "variables"),
        ({"actions": [{"method": "GET", "path": "/../{id}", "action": "x", "resource": "r"}]},
         "segments"),
    ],
)  # fmt: skip
def test_bad_configurations_are_refused(change: dict[str, object], message: str) -> None:
    with pytest.raises(ProviderError, match=message):
        parse_config({**load_preset("hubspot"), **change})


def test_loopback_http_is_allowed_for_local_platforms() -> None:
    config = parse_config({"authorize_url": "http://127.0.0.1:9000/auth",
                           "token_url": "http://127.0.0.1:9000/token",
                           "api_base": "http://127.0.0.1:9000/api/"})  # fmt: skip
    assert config.api_base == "http://127.0.0.1:9000/api"
