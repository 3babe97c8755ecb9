"""`correlation_id`: one id per task, on every request the SDK sends (`X-Correlation-Id`).

ValetKey records it on every audit event of the request and passes it on to the platform
through the gateway, so one user request can be followed from the agent through ValetKey
to the CRM. Set it once per task::

    token = correlation_id.set("ticket-4711")
    try:
        ...  # every SDK call in this context (and its asyncio tasks) carries it
    finally:
        correlation_id.reset(token)

Unset, each SDK call mints its own (`cor_` + 96 random bits), shared by that call's retries.
"""

import re
import secrets
from contextvars import ContextVar

HEADER = "X-Correlation-Id"

correlation_id: ContextVar[str | None] = ContextVar("valetkey_correlation_id", default=None)

# What ValetKey accepts; anything else it would replace with an id of its own.
_VALID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


def new_correlation_id() -> str:
    return "cor_" + secrets.token_hex(12)


def current_correlation_id() -> str:
    """The context's id when set and well-formed, else a new one."""
    value = correlation_id.get()
    return value if value is not None and _VALID.fullmatch(value) else new_correlation_id()
