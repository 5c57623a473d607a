"""The chat core: one typed path from any surface (chat completions, completions, the
Responses API, MCP ``ask``) to any backend (a local engine, remote upstreams).

A surface turns its wire request into a ``ChatCommand``; the core resolves the model or
profile, retrieves knowledge, and starts a ``Generation`` on the model's backend; the
surface turns the generation's typed events into JSON or SSE. No HTTP and no torch here.
"""
