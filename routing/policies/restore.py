"""Putting pseudonymized values back: in whole answers, and in streamed text that arrives in pieces.

A placeholder (`<EMAIL_1>`) may be split across stream events at any offset. `Restorer.feed` emits
everything that cannot be the start of a placeholder and holds back only a tail that is a proper
prefix of one, so the client never waits for more than the longest placeholder's length.
"""

from __future__ import annotations

import re
from typing import Any

import orjson


def json_escaped(value: str) -> str:
    """A value as it must appear inside a JSON string (tool-call arguments are JSON text)."""
    return orjson.dumps(value).decode()[1:-1]


class Restorer:
    __slots__ = ("escaped", "mapping", "max_len", "pattern", "prefixes")

    def __init__(self, mapping: dict[str, str]) -> None:
        self.mapping = mapping  # placeholder -> original value
        self.escaped = {p: json_escaped(v) for p, v in mapping.items()}
        self.pattern = re.compile("|".join(re.escape(p) for p in sorted(mapping, key=len, reverse=True)))
        self.max_len = max(len(p) for p in mapping)
        self.prefixes = frozenset(p[:i] for p in mapping for i in range(1, len(p)))

    def restore(self, text: str, json_text: bool = False) -> str:
        if "<" not in text:
            return text
        table = self.escaped if json_text else self.mapping
        return self.pattern.sub(lambda m: table[m.group()], text)

    def feed(self, held: str, text: str, json_text: bool = False) -> tuple[str, str]:
        """(text to send now, text to hold) for the next piece of a streamed string."""
        buf = held + text if held else text
        start = buf.find("<", max(len(buf) - self.max_len + 1, 0))
        while start >= 0:
            if buf[start:] in self.prefixes:
                return self.restore(buf[:start], json_text), buf[start:]
            start = buf.find("<", start + 1)
        return self.restore(buf, json_text), ""

    def restore_tree(self, value: Any, json_text: bool = False) -> Any:
        """Every string in a decoded JSON value, restored (tool-call arguments as JSON text)."""
        if isinstance(value, str):
            return self.restore(value, json_text)
        if isinstance(value, list):
            return [self.restore_tree(v, json_text) for v in value]
        if isinstance(value, dict):
            return {
                k: self.restore_tree(v, json_text or (k == "arguments" and isinstance(v, str)))
                for k, v in value.items()
            }
        return value
