"""The MCP tools, one module per group: ``read`` (search, stores, files, chunks), ``ask``
(a grounded answer) and ``write`` (opt-in changes)."""
