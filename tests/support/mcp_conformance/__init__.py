"""The MCP conformance suite (`@modelcontextprotocol/conformance`, pinned in package.json)
against ValetKey's `/mcp`: an upstream with the tools its server scenarios call
(`upstream`), the test-only proxy that gives the suite's client the agent's token (`proxy`),
the node entry point (`run.mjs`) and the expected-failures baseline (`baseline.yml`)."""
