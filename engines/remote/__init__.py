"""Remote engines: a model served by one or more OpenAI-compatible upstream servers (this
project's engine workers, vLLM, TEI, llama.cpp, Ollama), with health checks, least-
outstanding routing, chat state-cache affinity, retries before the first byte and a
circuit breaker per upstream."""
