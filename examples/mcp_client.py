"""An MCP client behind ValetKey: the agent's ValetKey token (from the SDK) is the only
credential it holds; ValetKey's `/mcp` shows it the tools it may use and decides each call.

    VALETKEY_ISSUER=http://127.0.0.1:8400 VALETKEY_CLIENT_ID=agt_… \\
    VALETKEY_CLIENT_SECRET_FILE=./secret python examples/mcp_client.py crm__get_deal 42

Interactive MCP clients need only the URL (see mcp_client_config.json): they discover
ValetKey from the 401, register and sign the user in themselves.
"""

import asyncio
import sys

import httpx2
import mcp_types as types
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from valetkey.sdk import AsyncAgentClient


async def main(tool: str, deal_id: str) -> int:
    async with AsyncAgentClient.from_env() as agent:
        issuer = agent.issuer
        token = await agent.token(resource=f"{issuer}/mcp", scope="mcp:read mcp:delete")
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token.value}"}) as http,
        Client(streamable_http_client(f"{issuer}/mcp", http_client=http)) as mcp,
    ):
        print("tools:", ", ".join(t.name for t in (await mcp.list_tools()).tools))
        result = await mcp.call_tool(tool, {"deal_id": deal_id})
    text = " ".join(c.text for c in result.content if isinstance(c, types.TextContent))
    print(("refused: " if result.is_error else "") + text)
    return 1 if result.is_error else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2])))
