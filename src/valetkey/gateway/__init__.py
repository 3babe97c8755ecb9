"""The tool gateway: what stands between an agent and the platforms it calls."""
