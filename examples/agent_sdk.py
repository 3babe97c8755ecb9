"""An agent in plain Python with ValetKey's SDK: its own identity, an intent check before
it acts, and a platform call through the gateway — the CRM's token never reaches it.

The agent's identity comes from its deployment, never from a prompt:

    export VALETKEY_ISSUER=http://127.0.0.1:8400
    export VALETKEY_CLIENT_ID=agt_...
    export VALETKEY_CLIENT_SECRET_FILE=/run/secrets/crm-bot   # or VALETKEY_PRIVATE_KEY_FILE
    python examples/agent_sdk.py 42

The agent needs the gateway's scopes for the `crm` provider (`valetkey agents create
crm-bot --scope crm:read …`) and a connection to the CRM (`valetkey connections import
… --agent ID` or the connect flow); see docs/sdk.md and docs/vault.md.
"""

import sys
from typing import Any

from valetkey.sdk import AgentClient, ApprovalRequired, Decision, Denied, Intent, correlation_id

PROVIDER = "crm"


def authorized(client: AgentClient, intent: Intent) -> Decision:
    """Ask first; when a human must decide, wait for them and ask again with the approval.
    Raises `Denied` when the answer is no — the code after this line runs only on yes."""
    try:
        return client.authorize(intent)
    except ApprovalRequired as pending:
        print(f"waiting for a human to approve: {pending.approval.url}", file=sys.stderr)
        approval = pending.wait(timeout=300)
        return client.authorize(intent, approval_id=approval.id)


def read_deal(client: AgentClient, deal_id: str, user_request: str) -> dict[str, Any]:
    intent = Intent("read", f"{PROVIDER}:deals/{deal_id}", context={"user_request": user_request})
    authorized(client, intent)
    with client.gateway(PROVIDER) as crm:  # ValetKey injects the CRM's token, not us
        response = crm.get(f"/deals/{deal_id}")
        response.raise_for_status()
        deal: dict[str, Any] = response.json()
        return deal


def main(argv: list[str]) -> int:
    deal_id = argv[1] if len(argv) > 1 else "42"
    reset = correlation_id.set(f"example-deal-{deal_id}")  # one id for the whole task
    try:
        with AgentClient.from_env() as client:
            deal = read_deal(client, deal_id, "What's the latest on the Acme deal?")
    except Denied as denied:
        print(f"ValetKey said no: {denied}", file=sys.stderr)
        return 2
    finally:
        correlation_id.reset(reset)
    print(f"deal {deal['id']}: {deal['name']}, {deal['stage']}, {deal['amount']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
