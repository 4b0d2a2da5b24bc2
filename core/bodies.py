"""Reading a request body with a size cap, before anything looks at it (framework-free)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping


async def read_capped(headers: Mapping[str, str], stream: AsyncIterator[bytes], limit: int) -> bytes | None:
    """The body, or ``None`` as soon as it is known to exceed ``limit`` bytes.

    A declared ``Content-Length`` over the limit (or not a number) is refused before reading;
    a chunked body is counted as it arrives, so an oversized one is never held in memory whole.
    """
    declared = headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in stream:
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
