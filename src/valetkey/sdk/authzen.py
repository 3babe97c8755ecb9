"""`AuthZenClient`: ask ValetKey's policies from another enforcement point (OpenID AuthZEN).

A resource server or gateway that authenticated its caller itself asks whether `subject`
may do `action` on `resource` (`POST {issuer}/access/v1/evaluation`). It authenticates as
a ValetKey client holding the `pdp` right (`valetkey clients create pep --tenant T --right
pdp`) with HTTP Basic. Mapping onto Cedar (docs/policy.md): `{"type": "agent", "id":
"agt_…"}` → `Agent::"agt_…"`, `{"type": "user", …}` → `User::…`, the action's name →
`Action::"…"`, the resource's type and id → `<type>::"<id>"`; `properties` become entity
attributes and `context` the Cedar context. Anything but an explicit `true` is a deny.
"""

from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote_plus

import httpx

from valetkey.sdk import _jose
from valetkey.sdk.correlation import HEADER as CORRELATION_HEADER
from valetkey.sdk.correlation import current_correlation_id
from valetkey.sdk.errors import ProblemError

EVALUATION_PATH = "/access/v1/evaluation"


def _request(
    subject: Mapping[str, Any],
    action: str | Mapping[str, Any],
    resource: Mapping[str, Any],
    context: Mapping[str, Any] | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "subject": dict(subject),
        "action": {"name": action} if isinstance(action, str) else dict(action),
        "resource": dict(resource),
    }
    if context is not None:
        body["context"] = dict(context)
    return body


def _decision(response: httpx.Response) -> bool:
    if response.status_code != 200:
        try:
            body = response.json()
        except ValueError:
            body = None
        problem = body if isinstance(body, dict) else {"code": "http_error"}
        raise ProblemError(response.status_code, problem)
    body = response.json()
    return isinstance(body, dict) and body.get("decision") is True


class _Base:
    def __init__(self, issuer: str, client_id: str, client_secret: str) -> None:
        self.issuer = issuer.rstrip("/")
        basic = f"{quote_plus(client_id)}:{quote_plus(client_secret)}"
        self._authorization = "Basic " + _jose.b64_std(basic.encode())

    def _headers(self) -> dict[str, str]:
        return {"Authorization": self._authorization, CORRELATION_HEADER: current_correlation_id()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(issuer={self.issuer!r})"


class AuthZenClient(_Base):
    """AuthZEN evaluations against ValetKey (sync). Close it, or use `with`."""

    def __init__(
        self, issuer: str, client_id: str, client_secret: str, *, timeout: float = 10.0
    ) -> None:
        super().__init__(issuer, client_id, client_secret)
        self._http = httpx.Client(timeout=timeout, follow_redirects=False)

    def evaluate(
        self,
        subject: Mapping[str, Any],
        action: str | Mapping[str, Any],
        resource: Mapping[str, Any],
        context: Mapping[str, Any] | None = None,
    ) -> bool:
        """True only when ValetKey's policies permit; `ProblemError` if it refuses to ask."""
        response = self._http.post(self.issuer + EVALUATION_PATH, headers=self._headers(),
                                   json=_request(subject, action, resource, context))  # fmt: skip
        return _decision(response)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncAuthZenClient(_Base):
    """`AuthZenClient` for asyncio."""

    def __init__(
        self, issuer: str, client_id: str, client_secret: str, *, timeout: float = 10.0
    ) -> None:
        super().__init__(issuer, client_id, client_secret)
        self._http = httpx.AsyncClient(timeout=timeout, follow_redirects=False)

    async def evaluate(
        self,
        subject: Mapping[str, Any],
        action: str | Mapping[str, Any],
        resource: Mapping[str, Any],
        context: Mapping[str, Any] | None = None,
    ) -> bool:
        body = _request(subject, action, resource, context)
        response = await self._http.post(
            self.issuer + EVALUATION_PATH, headers=self._headers(), json=body
        )
        return _decision(response)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
