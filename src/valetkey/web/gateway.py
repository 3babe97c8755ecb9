"""`/v1/gateway/{provider}/{path}`: the agent's call to a platform, made by ValetKey.

In order: authenticate the agent (Bearer or DPoP; the token's audience must be this
provider's gateway), derive the intent from the path, check the token's scope for the
call's class, ask the decision point (approvals included), pick the connection (the
user's for a delegated token, the agent's own otherwise), get a usable platform token
from the vault, forward, and stream the answer back — sanitised when asked. Every call
that reaches the decision point is audited twice: the decision, and the call with the
platform's status and latency.

A raw ASGI handler, ahead of FastAPI's routing like the OAuth endpoints (see
oauth_routes): this is the product's hottest path.
"""

import time
from typing import Any

from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from valetkey.audit.events import AuditEvent
from valetkey.gateway import proxy
from valetkey.gateway.calls import NarrowingError, narrowed, owner_of
from valetkey.gateway.sanitize import sanitize
from valetkey.policy.authorizer import Authorizer, CallerError
from valetkey.policy.decision import Caller, Decision
from valetkey.policy.intent import Intent
from valetkey.vault.platform import PlatformError
from valetkey.vault.providers import Provider, ProviderError, valid_name
from valetkey.vault.refresh import ConnectionUnusable, Slot
from valetkey.vault.service import gateway_audience
from valetkey.web import v1
from valetkey.web.correlation import correlation_id
from valetkey.web.errors import log, problem

PREFIX = "/v1/gateway/"
MAX_REQUEST_BODY = 10 * 1024 * 1024
_TEXT_TYPES = ("text/html", "application/xhtml+xml", "text/plain")


class Refusal(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def _refuse(status: int, code: str, title: str, detail: str = "", **extra: Any) -> Refusal:
    return Refusal(problem(status, code, title, detail, **extra))


async def _read_body(receive: Receive, length: str | None) -> bytes:
    if length is not None and (not length.isdigit() or int(length) > MAX_REQUEST_BODY):
        raise _refuse(
            413,
            "too_large",
            "Request too large",
            f"a gateway request body is at most {MAX_REQUEST_BODY} bytes",
        )
    body = bytearray()
    while True:
        message = await receive()
        body += message.get("body", b"")
        if len(body) > MAX_REQUEST_BODY:
            raise _refuse(413, "too_large", "Request too large")
        if not message.get("more_body"):
            return bytes(body)


def _split_query(query: str) -> tuple[str, bool]:
    """The query for the platform, and whether `sanitize=html` (ValetKey's own) was in it."""
    kept, wanted = [], False
    for part in query.split("&") if query else ():
        if part == "sanitize=html":
            wanted = True
        else:
            kept.append(part)
    return "&".join(kept), wanted


def _denied(decision: Decision) -> Refusal:
    body = decision.to_json()
    extra = {"decision": decision.decision, "decision_id": decision.id, "reasons": body["reasons"]}
    if decision.approval is not None:
        extra["approval"] = decision.approval
    first = decision.reasons[0] if decision.reasons else None
    if decision.decision == "approval_required":
        return _refuse(
            403,
            "approval_required",
            "Approval required",
            "a human must approve this call; retry it with the header "
            "X-ValetKey-Approval once approved",
            **extra,
        )
    if first is not None and first.code == "rate_limited":
        refusal = _refuse(
            429, "rate_limited", "Rate limited", first.message, **extra, limits=decision.limits
        )
        retry = decision.limits.get("retry_after")
        if retry is not None:
            refusal.response.headers["Retry-After"] = str(max(1, int(retry)))
        return refusal
    code = first.code if first else "denied"
    return _refuse(403, code, "Denied", first.message if first else "", **extra)


class Gateway:
    def __init__(self, state: Any) -> None:
        runtime = state.runtime
        self._state = state
        self._issuer: str = runtime.settings.issuer
        self._authorizer: Authorizer = state.authorizer
        self._providers = state.gateway_providers
        self._connections = state.gateway_connections
        self._vault = state.vault
        self._forwarder: proxy.Forwarder = state.forwarder
        self._audit = state.audit
        self._clock = runtime.clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        cid = correlation_id(scope)
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._call(scope, receive, tracked, cid)
        except Refusal as refusal:
            await refusal.response(scope, receive, send)
        except v1.Unauthorized as exc:
            await v1.unauthorized(exc)(scope, receive, send)
        except Exception:
            if started:  # the platform or the agent went away mid-stream: nothing to add
                log.warning("gateway call %s ended mid-response", cid, exc_info=True)
                return
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            await problem(500, "server_error", "Internal error")(scope, receive, send)

    async def _call(self, scope: Scope, receive: Receive, send: Send, cid: str) -> None:
        method: str = scope["method"]
        raw_path = scope.get("raw_path") or scope["path"].encode()
        path = raw_path.decode("latin-1").split("?", 1)[0]
        name, _, rest = path[len(PREFIX) :].partition("/")
        headers: dict[bytes, bytes] = {}
        proofs: list[str] = []
        for key, value in scope["headers"]:
            if key == b"dpop":
                proofs.append(value.decode("latin-1"))
            headers.setdefault(key, value)

        def header(key: bytes) -> str | None:
            value = headers.get(key)
            return value.decode("latin-1") if value is not None else None

        claims, ctx = await v1.token_from(
            self._state, method, header(b"authorization") or "", proofs, path
        )
        try:
            caller, ctx = await self._authorizer.caller(claims, ctx)
        except CallerError as exc:
            raise v1.Unauthorized("Bearer", "invalid_token", str(exc)) from exc
        if not valid_name(name) or gateway_audience(self._issuer, name) not in v1.audiences(claims):
            raise v1.Unauthorized(
                "Bearer",
                "invalid_token",
                "the access token is not for this provider's gateway "
                f"(its resource must be {self._issuer}{PREFIX}{name})",
            )
        provider = await self._providers.find(caller.tenant, name)
        if provider is None:
            raise _refuse(
                404, "unknown_provider", "Unknown provider", f"no provider {name!r} in this tenant"
            )
        query, sanitize_wanted = _split_query(scope.get("query_string", b"").decode("latin-1"))
        try:
            klass = proxy.method_class(method)
            derived = provider.config.intent(name, method, "/" + rest)
            mapped = derived[0] != klass
            action, resource = await narrowed(
                derived,
                mapped,
                klass,
                header(b"x-valetkey-action"),
                header(b"x-valetkey-resource"),
                lambda a: self._authorizer.action_class(caller, a),
            )
        except ProviderError as exc:
            await self._refused(caller, cid, name, method, rest, "invalid_path", str(exc))
            raise _refuse(400, "invalid_path", "Invalid path", str(exc)) from exc
        except NarrowingError as exc:
            await self._refused(caller, cid, name, method, rest, "invalid_intent", str(exc))
            raise _refuse(400, "invalid_intent", "Invalid intent", str(exc)) from exc
        needed = f"{name}:{klass}"
        if needed not in str(claims.get("scope", "")).split():
            raise _refuse(
                403,
                "insufficient_scope",
                "Insufficient scope",
                f"a {method} through this gateway needs the scope {needed!r}",
            )
        body = await _read_body(receive, header(b"content-length"))
        slot = await self._connection(caller, provider)  # none: no decision to spend
        intent = Intent(action, resource, context={"channel": "gateway"})
        decision = await self._authorizer.decide(
            caller, ctx, intent, header(b"x-valetkey-approval"), cid
        )
        if decision.decision != "allow":
            raise _denied(decision)
        await self._forward(
            scope,
            receive,
            send,
            cid,
            caller,
            provider,
            slot,
            method,
            "/" + rest,
            query,
            body,
            decision,
            sanitize_wanted,
        )

    async def _refused(self, caller: Caller, cid: str, name: str, method: str, rest: str,
                       code: str, message: str) -> None:  # fmt: skip
        """A call refused before any decision (a path that would leave the API base, an
        intent header that would widen): on the record under the agent's name, since that
        is what an agent talked into probing looks like."""
        await self._audit.record(AuditEvent(
            "gateway.called", caller.tenant.id, self._clock.now(), cid, outcome="failure",
            reason=f"{code}: {message}", agent_id=caller.agent.id,
            user_id=caller.user.id if caller.user else None, jti=caller.jti,
            data={"provider": name, "method": method, "path": ("/" + rest)[:512],
                  "status": None, "refused": code},
        ))  # fmt: skip

    async def _connection(self, caller: Caller, provider: Provider) -> Slot:
        kind, owner = owner_of(caller)
        found: Slot | None = await self._connections.find_for(
            caller.tenant.id, provider.id, kind, owner
        )
        whose = "the user" if kind == "user" else "the agent"
        if found is None:
            raise _refuse(
                409,
                "connection_required",
                "No connection",
                f"{whose} has not connected {provider.name}; connect it at "
                f"{self._issuer}/v1/connections/start?provider={provider.name}",
            )
        return found

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        cid: str,
        caller: Caller,
        provider: Provider,
        slot: Slot,
        method: str,
        path: str,
        query: str,
        body: bytes,
        decision: Decision,
        sanitize_wanted: bool,
    ) -> None:
        started = time.perf_counter()
        stale: int | None = None
        sanitizing = sanitize_wanted or provider.config.sanitize
        connection = slot.connection
        recorded = False

        def event(status: int | None, error: str | None) -> AuditEvent:
            """`gateway.called`: the platform's status and its time to answer."""
            return AuditEvent(
                "gateway.called", caller.tenant.id, self._clock.now(), cid,
                outcome="success" if status is not None and status < 400 else "failure",
                reason=error, agent_id=caller.agent.id,
                user_id=caller.user.id if caller.user else None, jti=caller.jti,
                data={"provider": provider.name, "connection_id": connection.id,
                      "method": method, "path": path, "decision_id": decision.id,
                      "status": status, "sanitized": sanitizing,
                      "latency_ms": round((time.perf_counter() - started) * 1000, 2)},
            )  # fmt: skip

        upstream: proxy.Upstream | None = None
        status: int | None = None
        error: str | None = None
        api_base = provider.config.api_base
        try:
            for _attempt in range(2):  # a second time only after a 401 and a refresh
                try:
                    tokens, version = await self._vault.access(
                        connection.id, stale_version=stale, cid=cid,
                        read=slot if stale is None else None,
                    )  # fmt: skip
                except ConnectionUnusable as exc:
                    raise _refuse(409, exc.code, "Connection unusable", str(exc)) from exc
                except PlatformError as exc:
                    raise _refuse(
                        exc.status,
                        exc.code,
                        "Platform unavailable",
                        f"refreshing the platform token failed: {exc}",
                    ) from exc
                api_base = tokens.api_base or provider.config.api_base
                url = api_base + path + (f"?{query}" if query else "")
                outbound = proxy.outbound_headers(
                    scope["headers"],
                    tokens.access_token or "",
                    tokens.token_type,
                    caller.agent.id,
                    cid,
                )
                if sanitizing:
                    outbound = [(k, v) for k, v in outbound if k.lower() != "accept-encoding"]
                    outbound.append(("Accept-Encoding", "identity"))
                upstream = await self._forwarder.send(method, url, outbound, body)
                if upstream.status != 401 or stale is not None:
                    break
                upstream.close()
                stale = version
            assert upstream is not None
            status = upstream.status
            recorded = True  # durable before the answer goes out, like the decision
            await self._audit.record(event(status, None))
            await self._respond(scope, send, upstream, provider, path, api_base, sanitizing)
        except proxy.UpstreamError as exc:
            error = exc.code
            raise _refuse(exc.status, exc.code, "Platform unavailable", str(exc)) from exc
        except Refusal as refusal:
            error = error or str(refusal.response.status_code)
            raise
        finally:
            if upstream is not None:
                upstream.close()
            if not recorded:  # a refusal: on the record before the refusal is sent
                await self._audit.record(event(status, error))

    async def _respond(
        self,
        scope: Scope,
        send: Send,
        upstream: proxy.Upstream,
        provider: Provider,
        path: str,
        api_base: str,
        sanitizing: bool,
    ) -> None:
        headers = proxy.returned_headers(
            upstream.headers,
            api_base=api_base,
            upstream_url=api_base + path,
            gateway_base=f"{self._issuer}{PREFIX}{provider.name}",
        )
        headers = [(k, v) for k, v in headers if k != b"x-correlation-id"]
        media = next((v.decode("latin-1") for k, v in headers if k == b"content-type"), "")
        textual = media.split(";", 1)[0].strip().lower() in _TEXT_TYPES
        length = upstream.length
        if scope["method"] == "HEAD":  # no body; the platform's length stands
            if length is not None:
                headers.append((b"content-length", str(length).encode()))
            await _send_whole(send, upstream.status, headers, b"")
            return
        if sanitizing and textual:
            raw = await upstream.read(proxy.SANITIZE_LIMIT)
            if raw is None:
                raise _refuse(
                    502,
                    "too_large_to_sanitize",
                    "Response too large",
                    f"a response to sanitise is at most {proxy.SANITIZE_LIMIT} bytes",
                )
            charset = "utf-8"
            if "charset=" in media:
                charset = media.split("charset=", 1)[1].split(";")[0].strip().strip('"')
            try:
                text = raw.decode(charset, errors="replace")
            except LookupError:
                text = raw.decode("utf-8", errors="replace")
            cleaned = sanitize(text, media)
            out = cleaned.body.encode("utf-8")
            headers = [
                (k, v)
                for k, v in headers
                if k not in (b"content-type", b"content-encoding", b"etag")
            ]
            headers += [
                (b"content-type", (media.split(";")[0] + "; charset=utf-8").encode()),
                (b"x-valetkey-sanitized", (cleaned.header() or "none").encode()),
                (b"content-length", str(len(out)).encode()),
            ]
            await _send_whole(send, upstream.status, headers, out)
            return
        if length is not None and length <= proxy.BUFFER_LIMIT:
            whole = await upstream.read(proxy.BUFFER_LIMIT)
            assert whole is not None
            headers.append((b"content-length", str(len(whole)).encode()))
            await _send_whole(send, upstream.status, headers, whole)
            return
        if length is not None:
            headers.append((b"content-length", str(length).encode()))
        await send({"type": "http.response.start", "status": upstream.status, "headers": headers})
        async for chunk in upstream.chunks():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _send_whole(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _operation(method: str) -> dict[str, Any]:
    problem_json = {"application/problem+json": {"schema": {"type": "object"}}}
    return {
        "tags": ["gateway"],
        "summary": f"{method.upper()} a platform API path through the gateway",
        "operationId": f"gateway_{method}",
        "description": "Authenticated with the agent's token for `{issuer}/v1/gateway/"
        "{provider}` (Bearer or DPoP). `X-ValetKey-Action` / `X-ValetKey-Resource` may "
        "narrow the intent, `X-ValetKey-Approval` presents an approval, `?sanitize=html` "
        "strips hidden content from text responses.",
        "parameters": [
            {"name": "provider", "in": "path", "required": True, "schema": {"type": "string"}},
            {"name": "path", "in": "path", "required": True, "schema": {"type": "string"}},
            {"name": "sanitize", "in": "query", "schema": {"type": "string", "enum": ["html"]}},
        ],
        "responses": {
            "200": {"description": "The platform's answer, streamed back"},
            **{str(code): {"description": text, "content": problem_json} for code, text in (
                (400, "Invalid path or intent"), (401, "No valid agent token"),
                (403, "Denied, insufficient scope, or approval required"),
                (404, "Unknown provider"), (409, "No usable connection"),
                (429, "Rate limited"), (502, "Platform unavailable"),
                (504, "Platform timeout"))},
        },
    }  # fmt: skip


def openapi_paths() -> dict[str, Any]:
    """The gateway bypasses FastAPI's routing (see the module docstring): its description."""
    methods = ("get", "post", "put", "patch", "delete", "head")
    return {"/v1/gateway/{provider}/{path}": {m: _operation(m) for m in methods}}
