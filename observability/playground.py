"""The console's playground: a conversation with one model, or with two side by side, sent through the
gateway's own /v1/chat/completions with a short-lived key of the signed-in person.

- The key: one per (tenant, person), reused while it is valid and replaced when it has expired or was
  revoked (`playground_key_get_or_create`). Its secret is kept encrypted in `PlaygroundKey`, since the
  console sends the calls itself: the browser never holds a key.
- The conversation travels with the form, as JSON in a hidden field (`parse_conversation`,
  `dump_conversation`), bounded in turns and characters; the server keeps no state per conversation.
- The calls (`ask_all`) go in process to the ASGI application that serves the gateway (the one
  settings.ASGI_APPLICATION names, as the server loads it), with the key in the Authorization header:
  the proxy authenticates, routes, limits, bills and logs them like any client's, and no network hop
  or reachable PUBLIC_URL is needed. The URL is the contract; this app imports nothing of `proxy`.
  Two models are asked at the same time (asyncio.gather), each answer timed on its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cache
from typing import Any

import httpx
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from observability.keyslots import held_key
from observability.models import PlaygroundKey
from routing.selectors import model_names_for
from tenants.audit import Actor
from tenants.models import Tenant, VirtualKey
from tenants.services import virtual_key_create

logger = logging.getLogger("gateway.playground")

KEY_TTL = timedelta(minutes=15)
# A key this close to its expiry is not reused: a call started with it could outlive it and fail with
# "key expired" half-way through a conversation.
REUSE_MARGIN = timedelta(minutes=1)

# The conversation comes back with every post: these bound what the server parses and what one call sends.
MAX_TURNS = 20
MAX_TEXT_CHARS = 32_000  # one message, or the system prompt
MAX_CONVERSATION_CHARS = 400_000
MAX_OUTPUT_TOKENS = 32_768
# The gateway has its own upstream deadlines (GATEWAY_UPSTREAM_READ_TIMEOUT); this only bounds how long
# a console request waits for them. Giving up cancels the call, which the log records as the client leaving.
ANSWER_TIMEOUT_S = 180.0


# --- The conversation --------------------------------------------------------------------------------


@dataclass
class Answer:
    """One model's answer to one turn: its text, or why there is none."""

    model: str
    content: str = ""
    error: str = ""
    latency_ms: float | None = None
    request_id: str = ""  # the gateway's x-request-id: the call's log entry and cost
    # Only for the turn just answered; not carried in the form.
    served_by: str = ""  # x-gateway-model: provider/upstream model
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str = ""

    def stored(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "content": self.content,
            "error": self.error,
            "latency_ms": self.latency_ms,
            "request_id": self.request_id,
        }


@dataclass
class Turn:
    user: str
    answers: list[Answer] = field(default_factory=list)  # in column order: the model, then the one beside it
    fresh: bool = False  # answered by this very request (its stats and cost are shown)


def _text(value: Any, limit: int) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise ValueError
    return value


def _answer_of(value: Any) -> Answer:
    if not isinstance(value, dict):
        raise ValueError
    latency = value.get("latency_ms")
    if latency is not None and (
        isinstance(latency, bool) or not isinstance(latency, int | float) or not math.isfinite(latency) or latency < 0
    ):
        raise ValueError
    return Answer(
        model=_text(value.get("model"), 200),
        content=_text(value.get("content", ""), MAX_CONVERSATION_CHARS),
        error=_text(value.get("error", ""), 2000),
        latency_ms=latency,
        request_id=_text(value.get("request_id", ""), 100),
    )


def parse_conversation(raw: str) -> list[Turn]:
    """The turns posted back by the form. ValueError (with a message for the person) when it is not one."""
    if not raw.strip():
        return []
    if len(raw) > MAX_CONVERSATION_CHARS:
        raise ValueError("This conversation has grown too long to send again: start a new one.")
    try:
        data = json.loads(raw)
        if not isinstance(data, list) or len(data) > MAX_TURNS:
            raise ValueError
        turns = []
        for item in data:
            if not isinstance(item, dict) or not isinstance(item.get("answers"), list):
                raise ValueError
            answers = [_answer_of(a) for a in item["answers"]]
            if not 1 <= len(answers) <= 2:
                raise ValueError
            turns.append(Turn(user=_text(item.get("user"), MAX_TEXT_CHARS), answers=answers))
    except ValueError:
        raise ValueError("The conversation could not be read back: start a new one.") from None
    return turns


def dump_conversation(turns: list[Turn]) -> str:
    return json.dumps([{"user": t.user, "answers": [a.stored() for a in t.answers]} for t in turns])


def messages_for(system: str, turns: list[Turn], message: str, column: int) -> list[dict[str, str]]:
    """The chat the model in `column` is sent: the system prompt, the earlier turns with its own answers,
    and the new message. Where it has no answer of its own (it failed, or joined the conversation later),
    the other model's answer stands in, as shown on screen; a turn no model answered is left out."""
    messages = [{"role": "system", "content": system}] if system else []
    for turn in turns:
        own = turn.answers[column : column + 1]
        reply = next((a for a in own + turn.answers if not a.error), None)
        if reply is None:
            continue
        messages += [{"role": "user", "content": turn.user}, {"role": "assistant", "content": reply.content}]
    messages.append({"role": "user", "content": message})
    return messages


# --- The playground key --------------------------------------------------------------------------------


def _reusable(key: VirtualKey | None) -> bool:
    if key is None or key.revoked:
        return False
    return key.expires_at is not None and key.expires_at > timezone.now() + REUSE_MARGIN


def playground_key_of(tenant: Tenant, *, user: Any) -> VirtualKey | None:
    """This person's playground key in this tenant, if they have one that will be reused."""
    slot = PlaygroundKey.objects.filter(tenant=tenant, user=user).select_related("key").first()
    return slot.key if slot is not None and _reusable(slot.key) else None


def playground_key_get_or_create(tenant: Tenant, *, actor: Actor) -> tuple[VirtualKey, str]:
    """The acting person's playground key and its secret: the one they have while it is valid, else a new
    short-lived one (counted against them, like any key they create)."""
    user = actor.user
    if user is None:
        raise ValueError("A playground key belongs to a person: an API token or the CLI has none.")
    with transaction.atomic():
        slot, _created = PlaygroundKey.objects.get_or_create(tenant=tenant, user=user)
        # Two sends at once (two tabs) queue here, so they share one new key instead of minting two.
        slot = PlaygroundKey.objects.select_for_update(of=("self",)).select_related("key").get(pk=slot.pk)

        def mint() -> tuple[VirtualKey, str]:
            slot.updated_at = timezone.now()
            return virtual_key_create(
                tenant,
                name=f"playground {user.email or user.get_username()}"[:200],
                actor=actor,
                expires_at=timezone.now() + KEY_TTL,
                metadata={"source": "playground"},
            )

        return held_key(slot, usable=_reusable, mint=mint)


def playground_models(tenant: Tenant, key: VirtualKey | None) -> list[str]:
    """The tenant's models the person's playground key may call (a new key may call them all)."""
    names = model_names_for(tenant)
    if key is not None and key.allowed_models:
        names = [m for m in names if m in key.allowed_models]
    return names


# --- Calls to the gateway ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ask:
    model: str
    messages: list[dict[str, str]]


@cache
def _gateway_app() -> Any:
    # The server has already imported it: this is the same object, not a second gateway.
    return import_string(settings.ASGI_APPLICATION)


def _error_text(status: int, body: Any, raw: str) -> str:
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    if not isinstance(message, str) or not message:
        message = " ".join(raw.split())[:300] or "no explanation given"
    # Kept short: it travels back with the conversation (parse_conversation takes up to 2,000 characters).
    return f"{status}: {message[:1000]}"


def _answer_from(ask: Ask, response: httpx.Response, latency_ms: float) -> Answer:
    answer = Answer(
        model=ask.model,
        latency_ms=round(latency_ms, 1),
        request_id=response.headers.get("x-request-id", "")[:100],
        served_by=response.headers.get("x-gateway-model", ""),
    )
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code >= 400 or not isinstance(body, dict):
        answer.error = _error_text(response.status_code, body, response.text)
        return answer
    choices = body.get("choices")
    choice = _dict(choices[0]) if isinstance(choices, list) and choices else {}
    message = _dict(choice.get("message"))
    content, refusal = message.get("content"), message.get("refusal")
    if isinstance(content, str):
        answer.content = content
    elif isinstance(refusal, str) and refusal:
        answer.content = f"(refused) {refusal}"
    elif message.get("tool_calls"):
        answer.content = "(the model asked to call a tool; the playground offers none)"
    answer.finish_reason = str(choice.get("finish_reason") or "")
    usage = _dict(body.get("usage"))
    answer.prompt_tokens = _count(usage.get("prompt_tokens"))
    answer.completion_tokens = _count(usage.get("completion_tokens"))
    return answer


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


async def _ask(secret: str, ask: Ask, options: dict[str, Any]) -> Answer:
    started = time.perf_counter()
    try:
        transport = httpx.ASGITransport(app=_gateway_app())
        async with (
            asyncio.timeout(ANSWER_TIMEOUT_S),
            httpx.AsyncClient(transport=transport, base_url=settings.PUBLIC_URL) as client,
        ):
            response = await client.post(
                "/v1/chat/completions",
                json={"model": ask.model, "messages": ask.messages, **options},
                headers={"Authorization": f"Bearer {secret}"},
            )
    except TimeoutError:
        return Answer(model=ask.model, error=f"No answer within {ANSWER_TIMEOUT_S:g} s.")
    except Exception as exc:
        # Whatever went wrong is this column's message, never the page's 500.
        logger.exception("playground call failed")
        return Answer(model=ask.model, error=f"The gateway could not be asked: {type(exc).__name__}.")
    return _answer_from(ask, response, (time.perf_counter() - started) * 1000)


async def ask_all(secret: str, asks: list[Ask], *, temperature: float | None, max_tokens: int | None) -> list[Answer]:
    """Each model's answer, in the order asked; all are asked at once. Never raises: a failure is an
    Answer with an error."""
    options: dict[str, Any] = {}
    if temperature is not None:
        options["temperature"] = temperature
    if max_tokens is not None:
        options["max_tokens"] = max_tokens
    return list(await asyncio.gather(*(_ask(secret, ask, options) for ask in asks)))
