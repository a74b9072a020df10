"""Splitting a byte stream into Server-Sent Events, whatever the chunk boundaries."""

from __future__ import annotations


class SSESplitter:
    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        """Return the complete events (each ending in a blank line) seen so far."""
        buf = self._buf + chunk if self._buf else chunk
        if b"\r" in buf:
            # A "\r\n" split across two chunks is rejoined here before normalising.
            if buf.endswith(b"\r"):
                self._buf = buf
                return []
            buf = buf.replace(b"\r\n", b"\n")
        if b"\n\n" not in buf:
            self._buf = buf
            return []
        parts = buf.split(b"\n\n")
        self._buf = parts.pop()
        return [p + b"\n\n" for p in parts if p.strip()]

    def rest(self) -> bytes:
        rest, self._buf = self._buf, b""
        return rest + b"\n\n" if rest.strip() else b""


def event_data(event: bytes) -> bytes:
    """The data of an event (lines starting with 'data:'), joined by newlines."""
    if event.startswith(b"data: ") and event.count(b"\n") == 2:
        return event[6:-2]
    lines = [line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(lines)
