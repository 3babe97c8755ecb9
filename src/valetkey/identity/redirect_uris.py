"""Redirect URIs of clients that use `/oauth/authorize` (RFC 6749 §3.1.2, RFC 8252, RFC 9700
§4.1): registered in full, matched exactly, except that a loopback URI matches on any port
because a native app's local listener gets whatever port is free (RFC 8252 §7.3).
"""

from urllib.parse import urlsplit

from valetkey.errors import InvalidInput

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "[::1]", "localhost"})
MAX_LENGTH = 2048


def _loopback(uri: str) -> tuple[str, str, str] | None:
    """(scheme, host, path+query) of an `http` loopback URI, else None."""
    parts = urlsplit(uri)
    if parts.scheme != "http":
        return None
    host = parts.netloc.rsplit(":", 1)[0] if not parts.netloc.endswith("]") else parts.netloc
    if host.lower() not in LOOPBACK_HOSTS:
        return None
    return parts.scheme, host.lower(), parts.path + ("?" + parts.query if parts.query else "")


def validate(uri: str) -> str:
    """A URI an admin may register: https, http on loopback, or a private-use scheme."""
    if not uri or len(uri) > MAX_LENGTH or not uri.isprintable() or " " in uri:
        raise InvalidInput(f"redirect URI {uri[:80]!r} is not a valid URI")
    parts = urlsplit(uri)
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
    if presented in registered:
        return True
    wanted = _loopback(presented)
    return wanted is not None and any(_loopback(r) == wanted for r in registered)
