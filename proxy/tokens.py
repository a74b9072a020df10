"""Cheap token estimates for when no provider count is available (mock provider, disconnects, a
stream cut before its usage arrived). Per model family: about four characters per token for OpenAI's
and Google's tokenizers on English text, about three and a half for Anthropic's (Claude, also on
Bedrock). They estimate, they do not pad: a cut stream must never cost more than the complete call."""

from __future__ import annotations

import math
from typing import Any

import orjson

CHARS_PER_TOKEN = {"anthropic": 3.5, "bedrock": 3.5}
DEFAULT_CHARS_PER_TOKEN = 4.0


def chars_per_token(kind: str) -> float:
    return CHARS_PER_TOKEN.get(kind, DEFAULT_CHARS_PER_TOKEN)


def estimate_request_tokens(payload: dict[str, Any], kind: str) -> int:
    """The prompt's tokens: the messages' text (about 3 tokens of framing each, and 3 to prime the
    reply, as OpenAI counts them), plus tool definitions and an embeddings input."""
    per = chars_per_token(kind)
    total = 0
    messages = payload.get("messages")
    if isinstance(messages, list):
        total = 3
        for message in messages:
            if isinstance(message, dict):
                total += 3 + math.ceil(len(_content_text(message.get("content"))) / per)
                calls = message.get("tool_calls")
                if calls:
                    total += math.ceil(len(orjson.dumps(calls)) / per)
    tools = payload.get("tools")
    if tools:
        total += math.ceil(len(orjson.dumps(tools)) / per)
    inputs = payload.get("input")
    if isinstance(inputs, str):
        total += math.ceil(len(inputs) / per)
    elif isinstance(inputs, list):
        total += sum(math.ceil(len(i) / per) for i in inputs if isinstance(i, str))
    return max(total, 1)


def estimate_tokens(text: str) -> int:
    # About four characters per token for English with OpenAI's tokenizers; rounded up, never zero.
    return max(1, (len(text) + 3) // 4) if text else 0


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def estimate_prompt_tokens(messages: list) -> int:
    # OpenAI's chat format adds about 3 tokens per message and 3 to prime the reply.
    total = 3
    for message in messages:
        if isinstance(message, dict):
            total += 3 + estimate_tokens(_content_text(message.get("content")))
    return total
