"""Root errors of the service layer; adapters (HTTP, CLI) turn them into their own shapes."""


class ValetKeyError(Exception):
    """Base of every error the service layer raises on purpose."""

    code = "error"


class NotFound(ValetKeyError):
    code = "not_found"


class Conflict(ValetKeyError):
    code = "conflict"


class InvalidInput(ValetKeyError):
    code = "invalid_input"


class Forbidden(ValetKeyError):
    code = "forbidden"
