"""Cheap token estimates for when no provider count is available (mock provider, disconnects)."""

from __future__ import annotations

from typing import Any


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
