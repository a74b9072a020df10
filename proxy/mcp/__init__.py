"""The MCP gateway: the tenant's MCP servers behind its virtual keys (proxy.mcp.endpoint)."""
