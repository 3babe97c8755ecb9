"""Redirect URIs: exact matching, loopback on any port, and no way to smuggle another host."""

import pytest

from valetkey.errors import InvalidInput
from valetkey.identity.redirect_uris import matches, validate

REGISTERED = ("http://127.0.0.1/cb", "http://[::1]/cb", "https://app.example/cb")


@pytest.mark.parametrize(
    "uri",
    ["http://127.0.0.1/cb", "http://127.0.0.1:5555/cb", "http://[::1]:4444/cb",
     "https://app.example/cb"],
)  # fmt: skip
def test_registered_uris_match_and_loopback_on_any_port(uri: str) -> None:
    assert matches(REGISTERED, uri)


@pytest.mark.parametrize(
    "uri",
    [
        "http://127.0.0.1:80@evil.example/cb",  # userinfo: the browser would go to evil
        "http://localhost:x@evil.example/cb",
        "http://[::1]:1@evil.example/cb",
        "http://127.0.0.1:99999999/cb",
        "http://127.0.0.1:1/cb2",
        "https://app.example/cb/",
        "https://app.example:443/cb",  # exact match only, outside loopback
        "https://APP.example/cb",
        "http://[",
        "",
    ],
)
def test_anything_else_does_not(uri: str) -> None:
    assert not matches(REGISTERED, uri)


@pytest.mark.parametrize(
    "uri",
    ["http://app.example/cb", "https://app.example/cb#frag", "https://u:p@app.example/cb",
     "http://a@127.0.0.1/cb", "javascript:alert(1)", "ftp://x.example/", "https://", "http://["],
)  # fmt: skip
def test_validation_refuses_unsafe_registrations(uri: str) -> None:
    with pytest.raises(InvalidInput):
        validate(uri)


def test_validation_accepts_https_loopback_and_private_use_schemes() -> None:
    for uri in ("https://app.example/cb?x=1", "http://127.0.0.1/cb", "com.example.app:/cb"):
        assert validate(uri) == uri
