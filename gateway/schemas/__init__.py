"""Wire types, named as in the OpenAI (and Cohere/Jina rerank) specs, one module per API
surface. Bounds, enums and lengths live in the types (``msgspec.Meta``), so the decoder
reports a bad field as a 400 naming it; limits that are settings are checked by one
validator per request type. Engines and the knowledge base never see these types:
converters live at the edge. Unknown request fields are accepted (clients send vendor
extras)."""
