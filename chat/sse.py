"""Server-sent events as bytes: framing and splitting. The relay of a remote model
splits its upstream's stream into whole events (a failure never leaves half an event);
the typed remote path decodes the same events into chunks."""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec

from engines.remote.client import bad_gateway

__all__ = ["DONE", "events", "sse"]

_encoder = msgspec.json.Encoder()
DONE = b"data: [DONE]\n\n"


def sse(payload: object) -> bytes:
    return b"data: " + _encoder.encode(payload) + b"\n\n"


def _check(event: bytes, limit: int) -> None:
    if len(event) > limit:
        raise bad_gateway(
            f"the upstream sent a stream event over {limit} bytes (max_event_bytes)",
            "upstream_event_too_large",
        )


async def events(chunks: AsyncIterator[bytes], max_event_bytes: int) -> AsyncIterator[list[bytes]]:
    """The stream's whole events (without their blank-line ends), as many as each read
    completed; none may exceed ``max_event_bytes``. Closing this closes ``chunks``."""
    buf = b""
    try:
        async for chunk in chunks:
            buf += chunk.replace(b"\r\n", b"\n") if b"\r" in chunk else chunk
            if b"\n\n" not in buf:
                _check(buf, max_event_bytes)
                continue
            *done, buf = buf.split(b"\n\n")
            for e in done:
                _check(e, max_event_bytes)
            _check(buf, max_event_bytes)
            whole = [e for e in done if e]
            if whole:
                yield whole
        if buf.strip():
            yield [buf]
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
