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


# Every placeholder the engine writes (`<EMAIL_1>`, `<ORDER_ID_12>`): one pattern for them all, and a
# lookup, so that restoring costs the same with 40,000 placeholders as with one (an alternation of the
# placeholders themselves took seconds to compile for a large prompt, on the event loop).
PLACEHOLDER = re.compile(r"<[A-Z0-9_]+?_\d+>")


class Restorer:
    __slots__ = ("escaped", "heads", "mapping", "max_len", "pattern")

    def __init__(self, mapping: dict[str, str]) -> None:
        self.mapping = mapping  # placeholder -> original value
        self.escaped: dict[str, str] = {}  # filled as needed: most answers hold few placeholders
        self.pattern = PLACEHOLDER
        self.max_len = max(len(p) for p in mapping)
        # "<EMAIL_", "<PHONE_": what a placeholder starts with, one per label in use.
        self.heads = tuple({p[: p.rindex("_") + 1] for p in mapping})

    def _value(self, placeholder: str, json_text: bool) -> str:
        value = self.mapping.get(placeholder)
        if value is None:
            return placeholder  # the model wrote something placeholder-like of its own: left as it is
        if not json_text:
            return value
        escaped = self.escaped.get(placeholder)
        if escaped is None:
            escaped = self.escaped[placeholder] = json_escaped(value)
        return escaped

    def restore(self, text: str, json_text: bool = False) -> str:
        if "<" not in text:
            return text
        return PLACEHOLDER.sub(lambda m: self._value(m.group(), json_text), text)

    def is_prefix(self, tail: str) -> bool:
        """Whether `tail` (starting with "<") could still become one of this answer's placeholders."""
        if len(tail) >= self.max_len:
            return False
        for head in self.heads:
            if head.startswith(tail) or (tail.startswith(head) and tail[len(head) :].isdigit()):
                return True
        return False

    def feed(self, held: str, text: str, json_text: bool = False) -> tuple[str, str]:
        """(text to send now, text to hold) for the next piece of a streamed string."""
        buf = held + text if held else text
        start = buf.find("<", max(len(buf) - self.max_len + 1, 0))
        while start >= 0:
            if self.is_prefix(buf[start:]):
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
