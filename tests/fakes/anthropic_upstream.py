"""A fake Anthropic upstream: a real HTTP server on loopback speaking the Messages API's wire format.

Written from Anthropic's API reference (docs.claude.com/en/api/messages, /streaming, /errors):
- `POST /v1/messages` needs `x-api-key` (else 401 authentication_error) and `anthropic-version` (else
  400), and answers a `message` object, or with `"stream": true` the SSE events message_start,
  content_block_start, ping, content_block_delta (text_delta / input_json_delta), content_block_stop,
  message_delta (stop_reason and cumulative usage), message_stop, each framed `event: T\\ndata: {...}\\n\\n`.
- Errors are `{"type": "error", "error": {"type", "message"}, "request_id"}` with the documented status
  (400 invalid_request_error, 401 authentication_error, 403 permission_error, 404 not_found_error,
  413 request_too_large, 429 rate_limit_error with retry-after, 500 api_error, 529 overloaded_error).
By default a model answers "Hello from the fake Claude." (with `usage`). A test scripts the next answers
for a model: `fake.script("m", {"status": 429, "headers": {"retry-after": "7"}})`, or an answer
`{"content": [blocks...], "stop_reason": "tool_use", "usage": {...}}`, or `{"stream_error": "overloaded_error"}`
(a stream that fails after its first text delta), or `{"raw": b"...", "status": 413, "content_type": "text/html"}`.
`GET /v1/models` (same key and version checks) lists MODELS in Anthropic's page shape; scripts for the
pseudo-model LISTING answer it instead (`fake.script(LISTING, {"status": 401, "message": "..."})`).
Every request is recorded (path, headers, JSON body).

Extended thinking (docs.claude.com/en/docs/build-with-claude/extended-thinking): a scripted answer may hold
`{"type": "thinking", "thinking": "..."}` blocks (the fake signs them: `signature(text)`) and
`{"type": "redacted_thinking", "data": "..."}`; streamed, a thinking block is thinking_delta events then one
signature_delta. A request with `thinking: {type: enabled, budget_tokens}` needs 1024 <= budget < max_tokens,
and, as Anthropic checks, an assistant turn that used tools must start with its thinking blocks, sent back
with valid signatures. Blocks of other kinds (server_tool_use, web_search_tool_result...) stream as one
content_block_start holding the whole block.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.loopback import LoopbackServer

API_KEY = "sk-ant-test-0001"
DEFAULT_TEXT = "Hello from the fake Claude."
MODELS = ["claude-sonnet-4-20250514", "claude-3-5-haiku-20241022"]
LISTING = "(models)"
ERRORS = {
    400: ("invalid_request_error", 'messages: roles must alternate between "user" and "assistant"'),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "model: claude-nope"),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"),
    500: ("api_error", "Internal server error"),
    529: ("overloaded_error", "Overloaded"),
}


def signature(thinking: str) -> str:
    """The fake's stand-in for Anthropic's opaque signature of a thinking block."""
    return "sig_" + hashlib.sha256(thinking.encode()).hexdigest()[:24]


def _thinking_error(body: dict) -> str | None:
    """Why Anthropic would refuse a request's extended-thinking parts, or None."""
    thinking = body.get("thinking")
    enabled = isinstance(thinking, dict) and thinking.get("type") == "enabled"
    if enabled:
        budget = thinking.get("budget_tokens")
        if not isinstance(budget, int) or budget < 1024:
            return "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
        if budget >= body["max_tokens"]:
            return "`max_tokens` must be greater than `thinking.budget_tokens`"
    for i, message in enumerate(body.get("messages") or ()):
        if not isinstance(message, dict) or message.get("role") != "assistant":
            continue
        content = [b for b in message.get("content") or () if isinstance(b, dict)]
        if not content:
            continue
        for j, block in enumerate(content):
            if block.get("type") == "thinking" and block.get("signature") != signature(block.get("thinking", "")):
                return f"messages.{i}.content.{j}: Invalid `signature` in `thinking` block"
        uses_tools = any(b.get("type") == "tool_use" for b in content)
        if enabled and uses_tools and content[0].get("type") not in ("thinking", "redacted_thinking"):
            return (
                f"messages.{i}.content.0.type: Expected `thinking` or `redacted_thinking`, but found "
                f"`{content[0].get('type')}`. When `thinking` is enabled, a final `assistant` message must start "
                "with a thinking block."
            )
    return None


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]  # names in lower case
    body: Any


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


@dataclass
class FakeAnthropic(LoopbackServer):
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[Recorded] = field(default_factory=list)
    scripts: dict[str, list[dict]] = field(default_factory=dict)
    sent_events: list[bytes] = field(default_factory=list)  # the raw bytes of the last stream

    def script(self, model: str, *steps: dict) -> None:
        self.scripts.setdefault(model, []).extend(steps)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def reset(self) -> None:
        self.requests.clear()
        self.scripts.clear()
        self.sent_events.clear()

    # --- handlers -------------------------------------------------------------------------------

    def _error(self, status: int, err_type: str | None = None, message: str | None = None, headers=None):
        default_type, default_message = ERRORS.get(status, ("api_error", "Internal server error"))
        body = {
            "type": "error",
            "error": {"type": err_type or default_type, "message": message or default_message},
            "request_id": "req_fake_error",
        }
        return web.Response(
            body=_dumps(body),
            status=status,
            content_type="application/json",
            headers={"request-id": "req_fake_error", **(headers or {})},
        )

    async def models(self, request: web.Request) -> web.Response:
        self.requests.append(Recorded(request.path, {k.lower(): v for k, v in request.headers.items()}, None))
        if self.scripts.get(LISTING):
            step = self.scripts[LISTING].pop(0)
            return self._error(step["status"], message=step.get("message"))
        if request.headers.get("x-api-key") != API_KEY:
            return self._error(401)
        if not request.headers.get("anthropic-version"):
            return self._error(400, message="anthropic-version: header is required")
        data = [{"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"} for m in MODELS]
        return web.json_response({"data": data, "has_more": False, "first_id": MODELS[0], "last_id": MODELS[-1]})

    async def messages(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw
        self.requests.append(Recorded(request.path, {k.lower(): v for k, v in request.headers.items()}, body))
        if request.headers.get("x-api-key") != API_KEY:
            return self._error(401)
        if not request.headers.get("anthropic-version"):
            return self._error(400, message="anthropic-version: header is required")
        if not isinstance(body, dict) or not isinstance(body.get("max_tokens"), int):
            return self._error(400, message="max_tokens: Field required")
        if problem := _thinking_error(body):
            return self._error(400, message=problem)
        steps = self.scripts.get(body.get("model", ""))
        step = steps.pop(0) if steps else {}
        if "raw" in step:
            return web.Response(body=step["raw"], status=step["status"], content_type=step.get("content_type"))
        if step.get("status", 200) != 200:
            return self._error(step["status"], step.get("type"), step.get("message"), step.get("headers"))
        content = step.get("content") or [{"type": "text", "text": DEFAULT_TEXT}]
        content = [{**b, "signature": signature(b["thinking"])} if b["type"] == "thinking" else b for b in content]
        has_tool = any(b["type"] == "tool_use" for b in content)
        stop_reason = step.get("stop_reason") or ("tool_use" if has_tool else "end_turn")
        input_tokens = 10 + len(json.dumps(body.get("messages"))) // 4
        output_tokens = sum(len(json.dumps(b)) // 4 for b in content)
        usage = {
            "input_tokens": input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": output_tokens,
            **step.get("usage", {}),
        }
        message = {
            "id": "msg_01FakeAnthropic",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": usage,
        }
        if not body.get("stream"):
            return web.Response(
                body=_dumps(message), content_type="application/json", headers={"request-id": "req_fake_ok"}
            )
        return await self._stream(request, message, step)

    async def _stream(self, request: web.Request, message: dict, step: dict) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"content-type": "text/event-stream; charset=utf-8", "request-id": "req_fake_stream"}
        )
        await response.prepare(request)
        self.sent_events = []

        async def send(event_type: str, data: dict) -> None:
            frame = b"event: " + event_type.encode() + b"\ndata: " + _dumps(data) + b"\n\n"
            self.sent_events.append(frame)
            # Split every frame across two writes to exercise the gateway's SSE reassembly.
            await response.write(frame[:9])
            await response.write(frame[9:])

        usage = message["usage"]
        start_usage = {**usage, "output_tokens": 1}
        start = {**message, "content": [], "stop_reason": None, "usage": start_usage}
        await send("message_start", {"type": "message_start", "message": start})
        for index, block in enumerate(message["content"]):
            if block["type"] == "text":
                await send(
                    "content_block_start",
                    {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}},
                )
                if index == 0:
                    await send("ping", {"type": "ping"})
                words = block["text"].split(" ")
                for n, word in enumerate(words):
                    piece = word if n == 0 else " " + word
                    delta = {"type": "text_delta", "text": piece}
                    await send("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
                    if step.get("stream_error"):
                        err_type = step["stream_error"]
                        error = {"type": "error", "error": {"type": err_type, "message": ERRORS[529][1]}}
                        await send("error", error)
                        await response.write_eof()
                        return response
            elif block["type"] == "tool_use":
                start_block = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
                await send(
                    "content_block_start", {"type": "content_block_start", "index": index, "content_block": start_block}
                )
                arguments = json.dumps(block["input"])
                third = max(1, len(arguments) // 3)
                pieces = ["", arguments[:third], arguments[third : 2 * third], arguments[2 * third :]]
                for piece in pieces:
                    delta = {"type": "input_json_delta", "partial_json": piece}
                    await send("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
            elif block["type"] == "thinking":
                start_block = {"type": "thinking", "thinking": "", "signature": ""}
                await send(
                    "content_block_start", {"type": "content_block_start", "index": index, "content_block": start_block}
                )
                for n, word in enumerate(block["thinking"].split(" ")):
                    delta = {"type": "thinking_delta", "thinking": word if n == 0 else " " + word}
                    await send("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
                delta = {"type": "signature_delta", "signature": block["signature"]}
                await send("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
            else:  # redacted_thinking, server tool use and results: the whole block at once
                await send(
                    "content_block_start", {"type": "content_block_start", "index": index, "content_block": block}
                )
            await send("content_block_stop", {"type": "content_block_stop", "index": index})
        # message_delta's usage is cumulative (input and cache fields included).
        await send(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": usage,
            },
        )
        await send("message_stop", {"type": "message_stop"})
        await response.write_eof()
        return response

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> FakeAnthropic:
        app = web.Application()
        app.router.add_post("/v1/messages", self.messages)
        app.router.add_get("/v1/models", self.models)
        self.serve(app, "fake-anthropic")
        return self
