"""Settings from `VALETKEY_*` environment variables.

Every field has a description and a safe default; `docs/configuration.md` is generated from
this model (`python -m valetkey.config`). Settings are built once and passed explicitly.
"""

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VALETKEY_", extra="ignore")

    data_dir: Path = Field(
        Path("./.valetkey"),
        description="Holds the embedded SQLite database and the local master key.",
    )
    database_url: str = Field(
        "",
        description=(
            "SQLAlchemy async URL. Empty means SQLite (WAL) at `DATA_DIR/valetkey.db`; "
            "use `postgresql+asyncpg://user:pass@host/db` to run several nodes."
        ),
    )
    issuer: str = Field(
        "http://127.0.0.1:8400",
        description="The issuer identifier (RFC 8414): `iss` of every token, base of every URL.",
    )
    master_key: str = Field(
        "",
        description=(
            "Base64url 256-bit key that wraps every data key. Empty: read or create "
            "`DATA_DIR/master.key` (mode 0600)."
        ),
        repr=False,
    )
    kms: str = Field(
        "",
        description=(
            "An external KMS instead of the master key: `module:factory`, a Python callable "
            "returning a key-encryption key (`key_id`, `wrap`, `unwrap`). Data keys are "
            "wrapped there; no master key file is created."
        ),
    )
    access_token_ttl: int = Field(
        900,
        ge=30,
        le=3600,
        description=(
            "Access token lifetime in seconds (15 min); a tenant may lower it; never above 3600."
        ),
    )
    exchange_token_ttl: int = Field(
        300,
        ge=30,
        le=3600,
        description=(
            "Lifetime of a token exchanged on behalf of a user (5 min); never past the "
            "subject token's `exp`."
        ),
    )
    refresh_token_ttl: int = Field(
        30 * 86400,
        ge=300,
        description=(
            "How long a delegated session's refresh tokens last from the consent, at most "
            "(never past the delegation's expiry); every use rotates the token."
        ),
    )
    max_chain_depth: int = Field(
        3, ge=1, le=10, description="Most actors a delegated token may carry in nested `act`."
    )
    dpop_nonce: bool = Field(
        True,
        description=(
            "Require a server nonce in DPoP proofs at the token endpoint (RFC 9449 §8); "
            "clients get it from the `use_dpop_nonce` error and the `DPoP-Nonce` header."
        ),
    )
    approval_ttl: int = Field(
        900,
        ge=30,
        le=7 * 86400,
        description="How long a human approval request waits before it expires (15 min).",
    )
    smtp_url: str = Field(
        "",
        description=(
            "Where approval emails go out (`smtp://host:port`); empty: no email. Approvers "
            "and admins of the tenant receive them."
        ),
    )
    smtp_from: str = Field("valetkey@localhost", description="The From address of emails.")
    mcp_allowed_origins: str = Field(
        "",
        description=(
            "Comma-separated origins (scheme://host[:port]) of browser-based MCP clients "
            "allowed at /mcp besides ValetKey's own; any other Origin is refused (403)."
        ),
    )
    gateway_timeout: float = Field(
        30.0,
        gt=0,
        le=600,
        description="Seconds the gateway waits for a platform to start answering a call.",
    )
    fetch_allow_hosts: str = Field(
        "",
        description=(
            "Comma-separated hosts or CIDRs that outbound fetches of client-supplied URLs "
            "(webhooks, metadata documents) may reach although private, loopback or "
            "link-local."
        ),
    )
    session_ttl: int = Field(
        3600,
        ge=60,
        description=(
            "How long a person stays signed in to the console and `/oauth/authorize` "
            "(seconds); signing out ends every session of the user at once."
        ),
    )
    signing_alg: str = Field(
        "ES256",
        description="Algorithm for new signing keys: `ES256` (default) or `EdDSA` (Ed25519).",
    )
    agent_domain: str = Field(
        "agents",
        description="Agents get the address `NAME@TENANT.<agent_domain>` unless given one.",
    )
    secret_grace: int = Field(
        86400,
        ge=0,
        description="Seconds a previous client secret keeps working after `rotate-secret`.",
    )
    audit_batch_max: int = Field(
        512, ge=1, description="At most this many audit events are committed in one transaction."
    )
    sqlite_busy_timeout_ms: int = Field(
        10000, ge=0, description="How long SQLite waits for another writer before failing."
    )
    log_level: str = Field("info", description="Server log level.")
    workers: int = Field(
        1,
        ge=1,
        description=(
            "Worker processes of this node; `valetkey serve --workers N` sets it. With more "
            "than one, SQLite audit commits run on each worker's event loop."
        ),
    )
    otel: bool = Field(
        False,
        description=(
            "FastAPI's native OpenTelemetry tracing, metrics and logs (off by default: it "
            "costs a measurable share of each request; see docs/performance.md)."
        ),
    )

    @field_validator("issuer")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("signing_alg")
    @classmethod
    def _known_alg(cls, value: str) -> str:
        if value not in ("ES256", "EdDSA"):
            raise ValueError("signing_alg must be ES256 or EdDSA")
        return value

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'valetkey.db').resolve()}"


def settings_reference() -> str:
    """Markdown table of every setting, for docs/configuration.md."""
    lines = [
        "# Configuration",
        "",
        "Generated from `valetkey.config.Settings` (`python -m valetkey.config`).",
        "",
        "| variable | default | description |",
        "|---|---|---|",
    ]
    for name, field in Settings.model_fields.items():
        default = "" if name == "master_key" else field.default
        lines.append(f"| `VALETKEY_{name.upper()}` | `{default}` | {field.description} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(settings_reference(), end="")
