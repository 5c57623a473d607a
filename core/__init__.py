"""Shared foundations with no HTTP, no torch and no storage: the one error hierarchy and
small shared types. Every other package may import ``core``; ``core`` imports none of them."""
