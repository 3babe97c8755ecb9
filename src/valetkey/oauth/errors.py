"""OAuth errors as data (RFC 6749 §5.2, RFC 7009 §2.2.1, RFC 8707 §2).

Only `error` and `error_description` reach the client; the web layer renders them in one
place. Anything unexpected becomes `server_error` there, never a traceback.
"""

from typing import ClassVar


class OAuthError(Exception):
    error: ClassVar[str] = "server_error"
    status_code: ClassVar[int] = 500

    def __init__(self, description: str = "") -> None:
        super().__init__(description)
        self.description = description

    def to_json(self) -> dict[str, str]:
        body = {"error": self.error}
        if self.description:
            body["error_description"] = self.description
        return body


class InvalidRequest(OAuthError):
    """The request is missing a parameter, repeats one, or is otherwise malformed."""

    error = "invalid_request"
    status_code = 400


class InvalidClient(OAuthError):
    """Client authentication failed (unknown client, bad credential, suspended agent)."""

    error = "invalid_client"
    status_code = 401

    def __init__(self, description: str = "", *, basic_challenge: bool = False) -> None:
        super().__init__(description)
        self.basic_challenge = basic_challenge


class InvalidGrant(OAuthError):
    """The grant or assertion is invalid, expired, revoked or issued to another client."""

    error = "invalid_grant"
    status_code = 400


class UnauthorizedClient(OAuthError):
    """The authenticated client may not use this grant type or endpoint."""

    error = "unauthorized_client"
    status_code = 400


class NotPermitted(OAuthError):
    """The authenticated client lacks the right this endpoint requires (e.g. `introspect`)."""

    error = "unauthorized_client"
    status_code = 403


class UnsupportedGrantType(OAuthError):
    """The grant type is not supported by this server."""

    error = "unsupported_grant_type"
    status_code = 400


class InvalidScope(OAuthError):
    """The requested scope is invalid, unknown, or exceeds what the client may hold."""

    error = "invalid_scope"
    status_code = 400


class InvalidTarget(OAuthError):
    """The requested resource is invalid, unknown, or not one this client may reach."""

    error = "invalid_target"
    status_code = 400


class InvalidAuthorizationDetails(OAuthError):
    """The `authorization_details` are malformed or exceed what is allowed (RFC 9396 §5)."""

    error = "invalid_authorization_details"
    status_code = 400


class UnsupportedTokenType(OAuthError):
    """The server does not support revocation of this token type."""

    error = "unsupported_token_type"
    status_code = 400


class ServerError(OAuthError):
    error = "server_error"
    status_code = 500
