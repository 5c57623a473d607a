"""Chunk ids as MCP clients see them: opaque, sealed tokens rather than row numbers.

A token holds (store id, chunk id) and an HMAC of both under a per-install key, so a
client can only hand back ids the server gave out: a guessed or altered token is
"not found", as is a genuine one read by a caller that does not see its store (the
store is checked again on every read). Sequential integers would tell a client how
many chunks the whole install holds and invite walking them.

The key lives in the data directory (``mcp-chunk-ids.key``, created on first use) or
comes from ``mcp.chunk_id_key``; replicas sharing one PostgreSQL knowledge base set the
same key so a token from one replica reads on another.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from pathlib import Path

__all__ = ["ChunkIds", "load_key"]

_PREFIX = "chunk_"
# Truncated HMAC-SHA256: 96 bits are far beyond guessing through a tool call.
_MAC_BYTES = 12
KEY_FILE = "mcp-chunk-ids.key"


def load_key(directory: Path) -> bytes:
    """The install's key from ``directory``, created (readable by the owner only) when
    absent."""
    path = directory / KEY_FILE
    try:
        return bytes.fromhex(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        pass
    key = secrets.token_bytes(32)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key.hex())
    try:
        # Another process may have created it meanwhile: the first one written wins.
        os.link(tmp, path)
    except FileExistsError:
        tmp.unlink(missing_ok=True)
        return bytes.fromhex(path.read_text().strip())
    tmp.unlink(missing_ok=True)
    return key


class ChunkIds:
    def __init__(self, key: bytes | None = None) -> None:
        # Without a key (an in-process server) tokens are valid for this process only.
        self._key = key or secrets.token_bytes(32)

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:_MAC_BYTES]

    def seal(self, store_id: str, chunk_id: int) -> str:
        payload = f"{chunk_id}:{store_id}".encode()
        raw = self._mac(payload) + payload
        return _PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def open(self, token: str) -> tuple[str, int] | None:
        """(store id, chunk id) of a token this install sealed; None for any other."""
        if not token.startswith(_PREFIX) or len(token) > 512:
            return None
        body = token[len(_PREFIX) :]
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (binascii.Error, ValueError):
            return None
        mac, payload = raw[:_MAC_BYTES], raw[_MAC_BYTES:]
        if len(mac) != _MAC_BYTES or not hmac.compare_digest(mac, self._mac(payload)):
            return None
        number, _, store_id = payload.decode("utf-8", "replace").partition(":")
        if not number.isdigit() or not store_id:
            return None
        return store_id, int(number)
