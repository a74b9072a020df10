"""OpenAI's legacy completions (/v1/completions) over the chat pipeline.

The openai SDKs' `completions.create` and clients such as LlamaIndex's `OpenAILike` (whose default is
`is_chat_model=False`) call it. A prompt becomes one user message. Routing, retries, fallbacks, limits,
budgets, data policies, the prompt cache, logging and costs are the chat pipeline's, so they apply
exactly as for chat, on every provider kind. The call log names the endpoint `completions`.

The answer is turned back into `text_completion` objects, and a stream into completion chunks.
Without policy steps, deployments that have legacy completions themselves (kind openai,
openai-compatible, azure: base.NATIVE_FORMATS) are given the client's own body with the model swapped,
and their answers and chunks come back as they are; then everything the upstream serves works. Where the
route translates (another kind, or a data policy or cache on it), what a chat model cannot give is
refused with a 400 naming the parameter, never dropped silently:
- `suffix` (insertion);
- `logprobs`;
- `best_of` above 1;
- token-array prompts;
- more than one prompt per request.

`echo` is honoured (the prompt comes first in the text). `max_tokens` defaults to 16, as OpenAI's
does for this endpoint.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

import orjson
from django.http import HttpRequest

from proxy import errors
from proxy.inbound import openai as inbound
from proxy.providers.base import relays
from proxy.sse import event_data

DEFAULT_MAX_TOKENS = 16
# Chat parameters a completion request may carry over as they are.
CARRIED = (
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "n",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "seed",
    "user",
    "stream",
    "stream_options",
    "metadata",
    "service_tier",
)


def _prompt(body: dict[str, Any], relayable: list[errors.ProxyError] | None) -> str:
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        if len(prompt) == 1 and isinstance(prompt[0], str):
            return prompt[0]
        if prompt and all(isinstance(p, str) for p in prompt):
            refusal = errors.bad_request(
                f"This gateway serves one prompt per request (got {len(prompt)}) where completions are served "
                "by chat models; send them as separate requests.",
                param="prompt",
                code="unsupported_value",
            )
        elif prompt and (
            all(isinstance(p, int) for p in prompt)
            or all(isinstance(p, list) and p and all(isinstance(t, int) for t in p) for p in prompt)
        ):
            refusal = errors.bad_request(
                "Token-array prompts are served only by deployments that relay completions (kind openai, "
                "openai-compatible or azure) with no data policy or cache on the route: they are one "
                "provider's tokens.",
                param="prompt",
                code="unsupported_value",
            )
        else:
            raise errors.bad_request(
                "'prompt' must be a string or a list of strings.", param="prompt", code="invalid_type"
            )
        if relayable is None:
            raise refusal
        # Relayed as sent, if the route allows (check_plan): the chat payload, which the pipeline reads for
        # its estimates, holds the first prompt only.
        relayable.append(refusal)
        return prompt[0] if isinstance(prompt[0], str) else ""
    if prompt is None:
        raise errors.bad_request(
            "you must provide a prompt parameter", param="prompt", code="missing_required_parameter"
        )
    if not isinstance(prompt, str):
        raise errors.bad_request("'prompt' must be a string.", param="prompt", code="invalid_type")
    return prompt


def to_chat(body: dict[str, Any], relayable: list[errors.ProxyError] | None = None) -> dict[str, Any]:
    """The chat payload for a completions request (validated here; the chat validator runs after).
    What only a relay can serve (suffix, logprobs, best_of, several prompts, token arrays) is refused,
    or, given `relayable`, noted there for check_plan, once the route is known."""
    inbound.require_model(body)
    prompt = _prompt(body, relayable)
    for name, allowed in (("suffix", (None, "")), ("logprobs", (None,)), ("best_of", (None, 1))):
        if body.get(name) not in allowed:
            refusal = errors.bad_request(
                f"'{name}' is served on /v1/completions only by deployments that relay completions (kind openai, "
                "openai-compatible or azure) with no data policy or cache on the route; this route serves "
                "completions with chat models, which cannot honour it.",
                param=name,
                code="unsupported_parameter",
            )
            if relayable is None:
                raise refusal
            relayable.append(refusal)
    echo = body.get("echo")
    if echo is not None and not isinstance(echo, bool):
        raise errors.bad_request("'echo' must be a boolean.", param="echo", code="invalid_type")
    chat = {name: body[name] for name in CARRIED if name in body}
    chat.setdefault("max_tokens", DEFAULT_MAX_TOKENS)
    chat["messages"] = [{"role": "user", "content": prompt}]
    inbound.validate_chat(chat)
    return chat


def _choice(choice: dict[str, Any], prefix: str) -> dict[str, Any]:
    message = choice.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    finish = choice.get("finish_reason")
    return {
        "text": prefix + (content if isinstance(content, str) else ""),
        "index": choice.get("index", 0),
        "logprobs": None,
        # A chat model may stop for a tool call, which this endpoint has no word for.
        "finish_reason": finish if finish in ("stop", "length", "content_filter") else "stop",
    }


def to_completion(completion: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": "cmpl-" + str(completion.get("id", "")).removeprefix("chatcmpl-"),
        "object": "text_completion",
        "created": completion.get("created", 0),
        "model": completion.get("model", ""),
        "choices": [_choice(c, prefix) for c in completion.get("choices") or () if isinstance(c, dict)],
    }
    if completion.get("system_fingerprint"):
        out["system_fingerprint"] = completion["system_fingerprint"]
    if isinstance(completion.get("usage"), dict):
        out["usage"] = completion["usage"]
    return out


class StreamTranslator:
    """chat.completion.chunk events -> text_completion chunks; errors and [DONE] pass as they are."""

    __slots__ = ("echoed", "prefix")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.echoed: set[int] = set()

    def __call__(self, event: bytes) -> bytes | None:
        data = event_data(event)
        if not data.startswith(b"{"):
            return event  # [DONE]
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return event
        if not isinstance(chunk, dict) or "error" in chunk:
            return event
        choices = []
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            content = delta.get("content") if isinstance(delta, dict) else None
            text: str = content if isinstance(content, str) else ""
            index = choice.get("index", 0)
            if self.prefix and index not in self.echoed:
                self.echoed.add(index)
                text = self.prefix + text
            finish = choice.get("finish_reason")
            if not text and finish is None:
                continue  # the role-only opening chunk, a tool call's pieces: nothing to say
            if finish is not None and finish not in ("stop", "length", "content_filter"):
                finish = "stop"
            choices.append({"text": text, "index": index, "logprobs": None, "finish_reason": finish})
        if not choices and not isinstance(chunk.get("usage"), dict):
            return None
        out: dict[str, Any] = {
            "id": "cmpl-" + str(chunk.get("id", "")).removeprefix("chatcmpl-"),
            "object": "text_completion",
            "created": chunk.get("created", 0),
            "model": chunk.get("model", ""),
            "choices": choices,
        }
        if chunk.get("system_fingerprint"):
            out["system_fingerprint"] = chunk["system_fingerprint"]
        if isinstance(chunk.get("usage"), dict):
            out["usage"] = chunk["usage"]
        return b"data: " + orjson.dumps(out) + b"\n\n"


class CompletionsFront(inbound.OpenAIFront):
    """OpenAI's credentials and error shape (OpenAIFront); the body and the answer translated."""

    name = "completions"
    # Without policy steps, deployments that have legacy completions (base.NATIVE_FORMATS) get the
    # client's own body (the model swapped), and their answers and chunks come back as they are.
    native_kind = "completions"

    def parse(self, request: HttpRequest, endpoint: str) -> dict[str, Any]:
        return self.parse_native(request, endpoint)[0]

    def parse_native(self, request: HttpRequest, endpoint: str) -> tuple[dict[str, Any], dict[str, Any]]:
        body = inbound.parse_body(request)
        relayable: list[errors.ProxyError] = []
        chat = to_chat(body, relayable)
        RELAYABLE.set(tuple(relayable))
        # What echo prepends: the client's own prompt, as sent (the payload's copy may be redacted by
        # a data policy on its way upstream). One request per task: a context variable carries it.
        ECHO.set(chat["messages"][0]["content"] if body.get("echo") else "")
        return chat, body

    def check_plan(self, call: Any, plan: Any, relay: bool) -> None:
        refused = RELAYABLE.get()
        if refused and not (relay and all(relays(d.kind, "completions") for d in plan.deployments())):
            raise refused[0]

    def render(self, call: Any, body: bytes) -> bytes:
        completion = inbound.chat_completion_of(body)
        return body if completion is None else orjson.dumps(to_completion(completion, ECHO.get()))

    def stream_filter(self, call: Any) -> StreamTranslator:
        return StreamTranslator(ECHO.get())


ECHO: ContextVar[str] = ContextVar("completions_echo", default="")
# What this request asks that only a relay can serve (to_chat's refusals, held until the route is known).
RELAYABLE: ContextVar[tuple[errors.ProxyError, ...]] = ContextVar("completions_relayable", default=())


COMPLETIONS = CompletionsFront()
