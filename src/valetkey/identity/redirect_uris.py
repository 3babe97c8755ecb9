"""Redirect URIs of clients that use `/oauth/authorize` (RFC 6749 §3.1.2, RFC 8252, RFC 9700
§4.1): registered in full, matched exactly, except that a loopback URI matches on any port
because a native app's local listener gets whatever port is free (RFC 8252 §7.3).
"""

from urllib.parse import SplitResult, urlsplit

from valetkey.errors import InvalidInput

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "[::1]", "localhost"})
MAX_LENGTH = 2048


def _parts(uri: str) -> SplitResult | None:
    """The URI split, or None when it cannot be a redirect target: unparseable, with
    userinfo (`http://127.0.0.1:80@evil.example/` goes to evil.example), or a bad port."""
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 (raises ValueError on a malformed port)
    except ValueError:
        return None
    if "@" in parts.netloc or parts.username is not None or parts.password is not None:
        return None
    return parts


def _loopback(uri: str) -> tuple[str, str, str] | None:
    """(scheme, host, path+query) of an `http` loopback URI, else None."""
    parts = _parts(uri)
    if parts is None or parts.scheme != "http" or parts.hostname is None:
        return None
    host = parts.hostname.lower()
    if ("[" + host + "]" if ":" in host else host) not in LOOPBACK_HOSTS:
        return None
    return parts.scheme, host, parts.path + ("?" + parts.query if parts.query else "")


def validate(uri: str) -> str:
    """A URI an admin may register: https, http on loopback, or a private-use scheme."""
    if not uri or len(uri) > MAX_LENGTH or not uri.isprintable() or " " in uri:
        raise InvalidInput(f"redirect URI {uri[:80]!r} is not a valid URI")
    parts = _parts(uri)
    if parts is None:
        raise InvalidInput(f"redirect URI {uri[:80]!r} has userinfo or a malformed authority")
    if parts.fragment or "#" in uri:
        raise InvalidInput("a redirect URI must not have a fragment (RFC 6749 §3.1.2)")
    if parts.scheme == "https" and parts.netloc:
        return uri
    if parts.scheme == "http":
        if _loopback(uri) is None:
            raise InvalidInput("http redirect URIs are for loopback only; use https")
        return uri
    if parts.scheme and "." in parts.scheme and not parts.netloc.startswith("/"):
        return uri  # a private-use scheme of a native app (RFC 8252 §7.1), e.g. com.example:/cb
    raise InvalidInput(
        "a redirect URI is https, http on a loopback address, or a private-use scheme"
    )


def matches(registered: tuple[str, ...], presented: str) -> bool:
    """Exact string match; loopback URIs compare without their port."""
    if _parts(presented) is None:
        return False
    if presented in registered:
        return True
    wanted = _loopback(presented)
    return wanted is not None and any(_loopback(r) == wanted for r in registered)
