"""rwkv-rag-gateway: the HTTP layer. Never imports torch."""

__all__ = ["__version__"]
__version__ = "0.1.0"
