"""The MCP gateway (`/mcp`): the tenant's upstream MCP servers' tools as ValetKey's own,
every call authorized one by one (docs/mcp.md).

- `upstreams` / `templates` / `tools`: the model and the pure rules (names, classes,
  resources, intents, sanitising results);
- `catalog`, `credentials`, `gateway`: listing and calling, with the vault's tokens;
- `upstream_client`: ValetKey as an MCP client (the official SDK);
- `server`: the SDK's server side, `create_mcp_app` and `mcp_lifespan`.

The SDK is imported only when the server side is first used, so the CLI (which manages
upstreams) does not pay for it.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from valetkey.mcp.gateway import Authenticated
    from valetkey.mcp.server import SCOPE_KEY, create_mcp_app, mcp_lifespan

__all__ = ["SCOPE_KEY", "Authenticated", "create_mcp_app", "mcp_lifespan"]


def __getattr__(name: str) -> Any:
    if name == "Authenticated":
        from valetkey.mcp import gateway

        return gateway.Authenticated
    if name in __all__:
        from valetkey.mcp import server

        return getattr(server, name)
    raise AttributeError(f"module 'valetkey.mcp' has no attribute {name!r}")
