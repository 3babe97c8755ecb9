"""`from_env()`: an agent's identity comes from its deployment, never from its prompt.

The variables are set by whoever deploys the agent (a secret manager, a mounted file).
A model's output is untrusted text: the SDK never takes a credential, an issuer or a key
from it, and agent code should not either — a prompt injection that can name the issuer
can send the agent's secret to an attacker's "token endpoint".
"""

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from valetkey.sdk.errors import SDKError

_TRUE = {"1", "true", "yes", "on"}


def arguments(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Constructor arguments from `VALETKEY_*` variables (see `AgentClient.from_env`)."""
    env = os.environ if environ is None else environ

    def required(name: str) -> str:
        value = env.get(name, "").strip()
        if not value:
            raise SDKError(f"{name} is not set")
        return value

    def file(name: str) -> str | None:
        path = env.get(name, "").strip()
        if not path:
            return None
        try:
            return Path(path).read_text()
        except OSError as exc:
            raise SDKError(f"{name}: cannot read {path} ({exc.strerror})") from exc

    secret = env.get("VALETKEY_CLIENT_SECRET") or None
    secret_file = file("VALETKEY_CLIENT_SECRET_FILE")
    key = file("VALETKEY_PRIVATE_KEY_FILE")
    given = [n for n, v in (("VALETKEY_CLIENT_SECRET", secret),
                            ("VALETKEY_CLIENT_SECRET_FILE", secret_file),
                            ("VALETKEY_PRIVATE_KEY_FILE", key)) if v is not None]  # fmt: skip
    if len(given) != 1:
        raise SDKError(
            "set exactly one of VALETKEY_CLIENT_SECRET, VALETKEY_CLIENT_SECRET_FILE and "
            f"VALETKEY_PRIVATE_KEY_FILE (found: {', '.join(given) or 'none'})"
        )
    args: dict[str, Any] = {
        "issuer": required("VALETKEY_ISSUER"),
        "client_id": required("VALETKEY_CLIENT_ID"),
        "client_secret": secret if secret is not None else _strip(secret_file),
        "private_key": key,
    }
    if env.get("VALETKEY_PRIVATE_KEY_ID"):
        args["key_id"] = env["VALETKEY_PRIVATE_KEY_ID"].strip()
    if env.get("VALETKEY_RESOURCE"):
        args["resource"] = env["VALETKEY_RESOURCE"].strip()
    if env.get("VALETKEY_SCOPE"):
        args["scope"] = env["VALETKEY_SCOPE"].strip()
    if env.get("VALETKEY_DPOP"):
        args["dpop"] = env["VALETKEY_DPOP"].strip().lower() in _TRUE
    return args


def _strip(secret: str | None) -> str | None:
    """A secret file's content without the trailing newline editors and `echo` add."""
    return secret.strip() if secret is not None else None
