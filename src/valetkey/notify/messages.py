"""What a notification says, and how a webhook is signed (Standard Webhooks).

Signing follows the Standard Webhooks spec: `webhook-id`, `webhook-timestamp` and
`webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">` with the secret's
bytes (the part after `whsec_`, base64). Any Standard Webhooks library verifies it.
"""

import base64
import hashlib
import hmac
import secrets
from email.message import EmailMessage
from typing import Any

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def approval_payload(approval: dict[str, Any], agent: dict[str, Any], user: str | None,
                     tenant: str) -> dict[str, Any]:  # fmt: skip
    """The approval request as webhooks and emails carry it: what, for whom, and why."""
    intent = approval["intent"]
    context = intent.get("context") or {}
    why = context.get("user_request") or context.get("request")
    return {
        "type": "approval.requested",
        "tenant": tenant,
        "approval": {k: approval[k] for k in ("id", "status", "expires_at", "url", "class")},
        "agent": agent,
        "on_behalf_of": user,
        "intent": {k: intent[k] for k in ("action", "resource", "count", "cost") if k in intent},
        "user_request": why if isinstance(why, str) else None,
    }


def approval_email(payload: dict[str, Any], sender: str, recipient: str) -> EmailMessage:
    intent, agent = payload["intent"], payload["agent"]
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = (
        f"Approve? {agent['name']} wants to {intent['action']} {intent['resource']}"
    )
    lines = [
        f"The agent {agent['name']} ({agent['id']}, sponsored by {agent.get('sponsor') or '-'})",
        f"wants to: {intent['action']} on {intent['resource']}"
        + (f" ({intent['count']} records)" if intent.get("count") else "")
        + (f", cost {intent['cost']}" if intent.get("cost") else ""),
        f"for: {payload['on_behalf_of'] or 'itself'}",
    ]
    if payload.get("user_request"):
        lines.append(f'because the user asked: "{payload["user_request"]}"')
    console = payload["approval"]["url"].replace("/v1/approvals/", "/console/approvals/")
    lines += ["", f"Approve or deny: {console}", f"(API: {payload['approval']['url']})",
              f"or: valetkey approvals approve {payload['approval']['id']} --by YOUR-EMAIL",
              f"This request expires at {payload['approval']['expires_at']}."]  # fmt: skip
    message.set_content("\n".join(lines))
    return message


def connection_payload(connection: dict[str, Any], tenant: str, reason: str) -> dict[str, Any]:
    """A connection that needs its owner: the platform refused the stored grant."""
    return {"type": "connection.needs_reauth", "tenant": tenant, "connection": connection,
            "reason": reason}  # fmt: skip


def connection_email(payload: dict[str, Any], sender: str, recipient: str) -> EmailMessage:
    connection = payload["connection"]
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = f"Reconnect {connection['provider']}: your agents lost access"
    again = (
        connection.get("connect_url") or "/v1/connections/start?provider=" + connection["provider"]
    )
    lines = [
        f"The {connection['provider']} connection {connection['id']} ({connection['owner']})",
        f"stopped working: {payload['reason']}.",
        "Agents cannot act on this platform for you until you connect it again:",
        f"  {again}",
    ]
    message.set_content("\n".join(lines))
    return message


def email_for(payload: dict[str, Any], sender: str, recipient: str) -> EmailMessage:
    """The email a delivery's payload calls for."""
    if payload.get("type") == "connection.needs_reauth":
        return connection_email(payload, sender, recipient)
    return approval_email(payload, sender, recipient)
