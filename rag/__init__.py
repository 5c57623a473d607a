"""Retrieval-augmented generation: knowledge profiles (resolved once and listed as models),
retrieval for a request, prompt packing and citations. Chat, completions, Responses and
MCP use it alike; it sits on the knowledge base's facade and never imports the gateway."""
