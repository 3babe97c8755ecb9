"""Approvers hear of approval requests: a signed webhook (checked with the independent
`standardwebhooks` library) with retries and a delivery log, and an email to the tenant's
approvers through a local SMTP server."""

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from tests.conftest import TenantSetup
from tests.integration.helpers import access_token
from tests.support.mailbox import Mailbox


class Receiver:
    """A webhook endpoint on 127.0.0.1 that fails its first `failures` calls."""

    def __init__(self, failures: int = 0) -> None:
        self.calls: list[tuple[dict[str, str], bytes, int]] = []
        self.failures = failures
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                status = 503 if len(receiver.calls) < receiver.failures else 204
                receiver.calls.append(
                    ({k.lower(): v for k, v in self.headers.items()}, body, status)
                )
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/valetkey"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, count: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while sum(1 for c in self.calls if c[2] < 300) < count and time.monotonic() < deadline:
            time.sleep(0.1)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver(failures=1)
    yield running
    running.server.shutdown()
    running.server.server_close()


def _request_approval(tenant: TenantSetup) -> dict[str, Any]:
    server, name = tenant.server, tenant.name
    tenant.agent = tenant.new_agent("mailer", "deals:read")
    server.cli("actions", "add", "mail.send", "--tenant", name, "--class", "send")
    token = access_token(tenant)
    response = httpx.post(server.base_url + "/v1/authorize", json={
        "action": "mail.send", "resource": "mail:to/cfo@acme.example",
        "context": {"user_request": "send the Q3 numbers to the CFO"},
    }, headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    assert response.json()["decision"] == "approval_required", response.text
    return dict(response.json()["approval"])


def test_webhook_is_signed_retried_and_logged(tenant: TenantSetup, receiver: Receiver) -> None:
    hook = tenant.server.cli("webhooks", "add", receiver.url, "--tenant", tenant.name)
    assert set(hook) == {"id", "url", "secret"} and hook["secret"].startswith("whsec_")
    listed = tenant.server.cli("webhooks", "list", "--tenant", tenant.name)
    assert "secret" not in listed[0] and hook["secret"] not in json.dumps(listed)
    approval = _request_approval(tenant)
    receiver.wait(1)
    assert [c[2] for c in receiver.calls][:2] == [503, 204]  # failed once, then retried
    headers, body, _ = receiver.calls[-1]
    payload = Webhook(hook["secret"]).verify(body, headers)  # raises if the signature is bad
    assert payload["type"] == "approval.requested"
    assert payload["approval"]["id"] == approval["id"]
    assert payload["intent"] == {"action": "mail.send", "resource": "mail:to/cfo@acme.example"}
    assert payload["user_request"] == "send the Q3 numbers to the CFO"
    assert (
        payload["agent"]["name"] == "mailer" and payload["agent"]["sponsor"] == "sam@acme.example"
    )
    with pytest.raises(WebhookVerificationError):
        Webhook(hook["secret"]).verify(body + b" ", headers)
    log = tenant.server.cli("webhooks", "deliveries", "--tenant", tenant.name)
    hooked = [d for d in log if d["channel"] == "webhook"]
    assert hooked[0]["status"] == "delivered" and hooked[0]["attempts"] == 2


def test_approvers_get_an_email(tenant: TenantSetup, mailbox: Mailbox) -> None:
    tenant.server.cli("users", "create", "ann@acme.example", "--tenant", tenant.name,
                      "--role", "approver")  # fmt: skip
    approval = _request_approval(tenant)
    deadline = time.monotonic() + 20
    mine: list[Any] = []
    while len(mine) < 2 and time.monotonic() < deadline:
        mine = [(m, text) for m, text in mailbox.texts() if approval["id"] in text]
        time.sleep(0.1)
    assert sorted(m["To"] for m, _ in mine) == ["ann@acme.example", "sam@acme.example"]
    message, text = mine[0]
    assert "mail.send" in text and "send the Q3 numbers to the CFO" in text
    assert approval["url"] in text and "mailer" in message["Subject"]
    assert f"/console/approvals/{approval['id']}" in text  # one tap from the phone
