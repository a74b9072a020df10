"""A fake OpenAI upstream: a real HTTP server on loopback speaking OpenAI's wire format.

The model name in the request picks the behaviour, so one server serves every test:
- any model: a chat.completion (or SSE stream) with a usage block, like api.openai.com
- "fail-429" / "fail-500" / "fail-400": OpenAI's error body with that status (429 adds retry-after)
- "fail-html": a 502 with an HTML body, like a broken load balancer
- "slow-stream": a stream that sends one chunk every 50 ms for 10 s, to test client disconnects
- "drip-stream": a stream that sends one chunk every 100 ms for about a second
- "stall-stream": a stream that sends its first chunk, then nothing more (the connection stays open)
- "echo-key": a 401 that quotes the credential it got, in full and masked (as OpenAI does)
- "stream-echo-key": a stream that sends one chunk, then an error event quoting the credential
- "redirect": a 302 to another host; "json-200": a chat.completion JSON even for a stream request
- "no-done": a stream that ends (cleanly) without data: [DONE]
- "nul-error": a 400 whose error message and type contain NUL characters
- "tool-call": calls the get_weather tool (JSON or stream, arguments streamed in pieces) until the
  conversation ends with the tool's result, then answers normally
Any model can also be scripted from a test: `fake.script("m", {"status": 429, "headers": {...}},
{"status": 503}, {"delay": 0.2})` answers the next three requests for "m" that way (errors in OpenAI's
shape, `"reset": True` drops the connection, `"hang": True` never answers, a bare delay slows the first
byte of a normal answer), then behaves normally again; `{"content": "..."}` makes the next JSON answer's
message content that text (a structured-output answer, say).
POST /v1/completions is legacy completions (see `completions`: echo, logprobs, several prompts, n,
streams with the usage chunk). POST /v1/responses is OpenAI's Responses API (stateless here): JSON or the documented event stream
(response.created, .in_progress, .output_item.added, .content_part.added, .output_text.delta x N,
.output_text.done, .content_part.done, .output_item.done, response.completed, each with its
sequence_number), a `web_search_call` item first when the request has a web_search tool, usage with
input/output token details; model "responses-fail" streams response.failed after one delta.
POST /v1/embeddings answers [0.1, -0.2, 0.3] per input, except for the model "bow-embed": a bag-of-words
embedding (512 dimensions, each lower-cased word and word pair hashed to one), so texts that share words
lie close, as a real embedding model's paraphrases do. POST /v1/moderations is OpenAI's moderation API
(omni-moderation's 13 categories, booleans and scores, per input): words of violence flag `violence`,
of self-harm `self-harm`.
GET /v1/models lists two models; /html/v1/models answers 200 with a web page, /odd/v1/models with
JSON that is not a model list.
Every request is recorded (path, headers, JSON body) and disconnects are counted.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import re
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.loopback import LoopbackServer

CONTENT_WORDS = ["Hello", " from", " the", " fake", " upstream", "."]
MODERATION_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
VIOLENT = {"kill", "stab", "shoot", "murder", "bomb"}
SELF_HARM = {"suicide", "overdose"}
BOW_DIMENSIONS = 512


def bag_of_words(text: str) -> list[float]:
    """A unit vector with one dimension per hashed word and word pair (see the module's docstring)."""
    words = re.findall(r"[a-z0-9']+", text.lower())
    vector = [0.0] * BOW_DIMENSIONS
    for token in words + [f"{a} {b}" for a, b in itertools.pairwise(words)]:
        vector[zlib.crc32(token.encode()) % BOW_DIMENSIONS] += 1.0
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


_SERIAL = itertools.count(1)


async def answer_responses(request: web.Request, body: dict, id_prefix: str) -> web.StreamResponse:
    """OpenAI's Responses API answer (JSON or the documented event stream) to a checked request: shared
    by this fake and the Azure one, whose v1 surface speaks the same format."""
    text = "".join(CONTENT_WORDS)
    items_in = body["input"] if isinstance(body["input"], list) else [body["input"]]
    usage = {
        "input_tokens": 11 + len(json.dumps(items_in)) // 40,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": len(CONTENT_WORDS),
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 0,
    }
    usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
    response: dict[str, Any] = {
        "id": f"{id_prefix}{next(_SERIAL):08d}",
        "object": "response",
        "created_at": int(time.time()),
        "status": "in_progress",
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": body["model"],
        "output": [],
        "parallel_tool_calls": True,
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "store": body.get("store", True),
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": body.get("tools") or [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": None,
        "metadata": {},
    }
    searches = [
        {
            "id": "ws_fake1",
            "type": "web_search_call",
            "status": "completed",
            "action": {"type": "search", "query": "q"},
        }
        for t in body.get("tools") or ()
        if isinstance(t, dict) and t.get("type") == "web_search"
    ]
    message = {
        "id": "msg_fake1",
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }
    if not body.get("stream"):
        return web.json_response({**response, "status": "completed", "output": [*searches, message], "usage": usage})
    stream = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await stream.prepare(request)
    sequence = 0

    async def send(kind: str, **fields: Any) -> None:
        nonlocal sequence
        data = {"type": kind, "sequence_number": sequence, **fields}
        sequence += 1
        await stream.write(f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode())

    await send("response.created", response=response)
    await send("response.in_progress", response=response)
    index = 0
    for search in searches:
        await send("response.output_item.added", output_index=index, item={**search, "status": "in_progress"})
        await send("response.output_item.done", output_index=index, item=search)
        index += 1
    pending = {**message, "status": "in_progress", "content": []}
    await send("response.output_item.added", output_index=index, item=pending)
    part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    await send("response.content_part.added", item_id="msg_fake1", output_index=index, content_index=0, part=part)
    for word in CONTENT_WORDS:
        await send(
            "response.output_text.delta",
            item_id="msg_fake1",
            output_index=index,
            content_index=0,
            delta=word,
            logprobs=[],
        )
        if body["model"] == "responses-fail":
            failed = {
                **response,
                "status": "failed",
                "error": {"code": "server_error", "message": "The model failed."},
            }
            await send("response.failed", response=failed)
            return stream
    await send(
        "response.output_text.done",
        item_id="msg_fake1",
        output_index=index,
        content_index=0,
        text=text,
        logprobs=[],
    )
    await send(
        "response.content_part.done",
        item_id="msg_fake1",
        output_index=index,
        content_index=0,
        part={**part, "text": text},
    )
    await send("response.output_item.done", output_index=index, item=message)
    await send(
        "response.completed",
        response={**response, "status": "completed", "output": [*searches, message], "usage": usage},
    )
    return stream


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: Any
    at: float = field(default_factory=time.monotonic)  # when the request arrived, before any scripted delay


@dataclass
class FakeOpenAI(LoopbackServer):
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[Recorded] = field(default_factory=list)
    stream_cancellations: int = 0
    streams_completed: int = 0
    scripts: dict[str, list[dict]] = field(default_factory=dict)

    def script(self, model: str, *steps: dict) -> None:
        self.scripts.setdefault(model, []).extend(steps)

    def calls(self, model: str) -> int:
        return sum(1 for r in self.requests if isinstance(r.body, dict) and r.body.get("model") == model)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def reset(self) -> None:
        self.requests.clear()
        self.stream_cancellations = 0
        self.streams_completed = 0
        self.scripts.clear()

    # --- handlers -------------------------------------------------------------------------------

    def _error(self, status: int, message: str, type_: str, code: str | None, headers: dict | None = None):
        body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
        return web.json_response(body, status=status, headers=headers)

    async def _record(self, request: web.Request) -> Any:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        self.requests.append(Recorded(request.path, dict(request.headers), body))
        return body

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        if request.headers.get("authorization") != "Bearer sk-upstream-test-0001":
            return self._error(401, "Incorrect API key provided: sk-up***.", "invalid_request_error", "invalid_api_key")
        model = body.get("model", "")
        steps = self.scripts.get(model)
        scripted_content = None
        if steps:
            step = steps.pop(0)
            scripted = await self._scripted(step, request)
            if scripted is not None:
                return scripted
            scripted_content = step.get("content")
        failure = self._failure(model)
        if failure is not None:
            return failure
        hostile = await self._hostile(model, request, body)
        if hostile is not None:
            return hostile
        prompt_tokens = 9 + sum(len(str(m.get("content", ""))) // 4 for m in body.get("messages", []))
        completion_tokens = len(CONTENT_WORDS)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
        created = int(time.time())
        messages = body.get("messages") or [{}]
        if model == "tool-call" and messages[-1].get("role") != "tool":
            return await self._tool_call(request, body, usage, created)
        if not body.get("stream"):
            return web.json_response(
                {
                    "id": "chatcmpl-fake123",
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {
                                "role": "assistant",
                                "content": "".join(CONTENT_WORDS) if scripted_content is None else scripted_content,
                                "refusal": None,
                                "annotations": [],
                            },
                            "logprobs": None,
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage,
                    "service_tier": "default",
                    "system_fingerprint": "fp_fake",
                },
                headers={"x-request-id": "upstream-req-1", "openai-processing-ms": "12"},
            )
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        response = web.StreamResponse(headers={"content-type": "text/event-stream", "x-request-id": "upstream-req-2"})
        await response.prepare(request)
        base = {
            "id": "chatcmpl-fake123",
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_fake",
        }

        def event(choices: list, usage_value: Any = "absent") -> bytes:
            payload = {**base, "choices": choices}
            if include_usage:
                payload["usage"] = None if usage_value == "absent" else usage_value
            return b"data: " + json.dumps(payload).encode() + b"\n\n"

        slow = model == "slow-stream"
        drip = model == "drip-stream"
        words = CONTENT_WORDS * (40 if slow else 2 if drip else 1)
        try:
            await response.write(
                event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
            )
            for word in words:
                if slow or drip:
                    await asyncio.sleep(0.05 if slow else 0.1)
                elif model == "stall-stream" and word != words[0]:
                    await asyncio.sleep(3600)
                chunk = event([{"index": 0, "delta": {"content": word}, "logprobs": None, "finish_reason": None}])
                # Split events across writes to exercise the gateway's SSE reassembly.
                await response.write(chunk[:7])
                await response.write(chunk[7:])
            await response.write(event([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]))
            if include_usage:
                await response.write(event([], {**usage, "completion_tokens": len(words)}))
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
            self.streams_completed += 1
        except (ConnectionResetError, asyncio.CancelledError):
            self.stream_cancellations += 1
            raise
        return response

    async def _tool_call(self, request: web.Request, body: dict, usage: dict, created: int) -> web.StreamResponse:
        call_id, name, arguments = "call_fake_weather1", "get_weather", '{"city": "Paris", "unit": "celsius"}'
        if not body.get("stream"):
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}],
                "refusal": None,
                "annotations": [],
            }
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "tool_calls"}
            return web.json_response(
                {
                    "id": "chatcmpl-faketool",
                    "object": "chat.completion",
                    "created": created,
                    "model": body["model"],
                    "choices": [choice],
                    "usage": usage,
                }
            )
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        base = {
            "id": "chatcmpl-faketool",
            "object": "chat.completion.chunk",
            "created": created,
            "model": body["model"],
        }

        async def send(choices: list, usage_value: Any = None) -> None:
            payload = {**base, "choices": choices}
            if include_usage:
                payload["usage"] = usage_value
            await response.write(b"data: " + json.dumps(payload).encode() + b"\n\n")

        # As OpenAI streams a tool call: id and name first, then the arguments in pieces.
        first = {"index": 0, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
        await send([{"index": 0, "delta": {"role": "assistant", "content": None, "tool_calls": [first]}}])
        for piece in (arguments[:9], arguments[9:20], arguments[20:]):
            delta = {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
            await send([{"index": 0, "delta": delta, "finish_reason": None}])
        await send([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}])
        if include_usage:
            await send([], usage)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _scripted(self, step: dict, request: web.Request) -> web.StreamResponse | None:
        if step.get("delay"):
            await asyncio.sleep(step["delay"])
        if step.get("hang"):
            await asyncio.sleep(3600)
        if step.get("reset"):
            request.transport.close()  # the connection drops without an answer
            return web.Response(status=500)
        status = step.get("status", 200)
        if status == 200:
            return None
        messages = {
            429: ("Rate limit reached for requests", "requests", "rate_limit_exceeded"),
            400: ("Invalid request.", "invalid_request_error", None),
            401: ("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
        }
        message, type_, code = messages.get(status, ("The server had an error.", "server_error", None))
        if step.get("context"):
            message = "This model's maximum context length is 128000 tokens. However, your messages resulted in 200000 tokens."
            type_, code = "invalid_request_error", "context_length_exceeded"
        return self._error(status, message, type_, code, headers=step.get("headers"))

    def _failure(self, model: str) -> web.Response | None:
        if model == "fail-429":
            return self._error(
                429,
                "Rate limit reached for requests",
                "requests",
                "rate_limit_exceeded",
                headers={"retry-after": "7"},
            )
        if model == "fail-500":
            return self._error(500, "The server had an error while processing your request.", "server_error", None)
        if model == "fail-400":
            return self._error(400, "Invalid value for 'temperature'.", "invalid_request_error", "invalid_value")
        if model == "fail-html":
            return web.Response(status=502, text="<html><body>Bad gateway</body></html>", content_type="text/html")
        return None

    async def _hostile(self, model: str, request: web.Request, body: dict) -> web.StreamResponse | None:
        auth = request.headers.get("authorization", "")
        key = auth.partition(" ")[2]
        if model == "echo-key":
            masked = f"{key[:6]}***{key[-4:]}"
            return self._error(
                401,
                f"Incorrect API key provided: {auth}. You can find your key (it looks like {masked}) in your account.",
                "invalid_request_error",
                "invalid_api_key",
            )
        if model == "nul-error":
            return self._error(400, "bad\x00input", "invalid\x00request", "nul\x00code")
        if model == "redirect":
            return web.Response(status=302, headers={"location": "https://login.example.test/"})
        if model == "json-200":
            return web.json_response({"id": "chatcmpl-x", "object": "chat.completion", "choices": []})
        if model not in ("stream-echo-key", "no-done"):
            return None
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        chunk = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1, "model": model}
        delta = {"index": 0, "delta": {"role": "assistant", "content": "Hello"}, "finish_reason": None}
        await response.write(b"data: " + json.dumps({**chunk, "choices": [delta]}).encode() + b"\n\n")
        if model == "stream-echo-key":
            error = {
                "error": {"message": f"Invalid credentials: {auth}", "type": "invalid_request_error", "code": None}
            }
            await response.write(b"data: " + json.dumps(error).encode() + b"\n\n")
            await response.write(b"data: [DONE]\n\n")  # some servers send it even after an error
        await response.write_eof()
        return response

    async def responses(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        if request.headers.get("authorization") != "Bearer sk-upstream-test-0001":
            return self._error(401, "Incorrect API key provided: sk-up***.", "invalid_request_error", "invalid_api_key")
        if not isinstance(body, dict) or not body.get("model") or body.get("input") is None:
            return self._error(
                400, "Missing required parameter: 'input'.", "invalid_request_error", "missing_required_parameter"
            )
        if body.get("previous_response_id") and not str(body["previous_response_id"]).startswith("resp_openai"):
            return self._error(
                404,
                f"Previous response with id '{body['previous_response_id']}' not found.",
                "invalid_request_error",
                "previous_response_not_found",
            )
        return await answer_responses(request, body, "resp_openai")

    async def completions(self, request: web.Request) -> web.StreamResponse:
        """Legacy completions: a text per prompt (a list of strings or of token arrays gives one choice
        per prompt, times n), `echo` puts the prompt first, `logprobs: k` gives tokens, token_logprobs,
        top_logprobs and text_offset; a stream sends text_completion chunks, the usage chunk
        (choices []) when stream_options.include_usage is set, then [DONE]."""
        body = await self._record(request)
        if request.headers.get("authorization") != "Bearer sk-upstream-test-0001":
            return self._error(401, "Incorrect API key provided: sk-up***.", "invalid_request_error", "invalid_api_key")
        prompt = body.get("prompt") if isinstance(body, dict) else None
        if prompt is None or not body.get("model"):
            return self._error(
                400, "You must provide a prompt parameter.", "invalid_request_error", "missing_required_parameter"
            )
        prompts = prompt if isinstance(prompt, list) and not all(isinstance(p, int) for p in prompt) else [prompt]
        n = int(body.get("n") or 1)
        words = CONTENT_WORDS[: max(1, min(len(CONTENT_WORDS), int(body.get("max_tokens") or 16)))]
        finish = "length" if len(words) < len(CONTENT_WORDS) else "stop"
        k = body.get("logprobs")

        def text_of(p: Any) -> str:
            return (p if isinstance(p, str) and body.get("echo") else "") + "".join(words)

        def logprobs_of(text: str) -> dict | None:
            if k is None:
                return None
            offsets, at = [], 0
            for word in words:
                offsets.append(at)
                at += len(word)
            return {
                "tokens": list(words),
                "token_logprobs": [-0.25 * (i + 1) for i in range(len(words))],
                "top_logprobs": [{w: -0.25 * (i + 1)} for i, w in enumerate(words)] if k else None,
                "text_offset": offsets,
            }

        prompt_tokens = 4 + len(json.dumps(prompt)) // 4
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(words) * len(prompts) * n,
            "total_tokens": prompt_tokens + len(words) * len(prompts) * n,
        }
        base = {"id": f"cmpl-fake{next(_SERIAL):06d}", "object": "text_completion", "created": int(time.time())}
        base["model"] = body["model"]
        if not body.get("stream"):
            choices = []
            for p in prompts:
                for _ in range(n):
                    text = text_of(p)
                    choice = {
                        "text": text,
                        "index": len(choices),
                        "logprobs": logprobs_of(text),
                        "finish_reason": finish,
                    }
                    choices.append(choice)
            return web.json_response({**base, "choices": choices, "usage": usage})
        stream = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await stream.prepare(request)
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage")

        async def send(data: dict) -> None:
            await stream.write(b"data: " + json.dumps(data).encode() + b"\n\n")

        for word in words:
            await send({**base, "choices": [{"text": word, "index": 0, "logprobs": None, "finish_reason": None}]})
        await send({**base, "choices": [{"text": "", "index": 0, "logprobs": None, "finish_reason": finish}]})
        if include_usage:
            await send({**base, "choices": [], "usage": usage})
        await stream.write(b"data: [DONE]\n\n")
        return stream

    async def models(self, request: web.Request) -> web.Response:
        if request.path.startswith("/html/"):
            return web.Response(text="<html><body>Welcome to nginx!</body></html>", content_type="text/html")
        if request.path.startswith("/odd/"):
            return web.json_response({"status": "ok"})
        if request.path.startswith("/quote/"):
            # Some providers quote the credential they refused, with a status other than 401.
            key = request.headers.get("authorization", "").removeprefix("Bearer ")
            error = {"message": f"Incorrect API key provided: {key}.", "type": "invalid_request_error"}
            return web.json_response({"error": error}, status=400)
        return web.json_response({"object": "list", "data": [{"id": "gpt-4o"}, {"id": "gpt-4o-mini"}]})

    async def embeddings(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        if body.get("model") == "bow-embed":
            data = [{"object": "embedding", "index": i, "embedding": bag_of_words(t)} for i, t in enumerate(inputs)]
            return web.json_response(
                {"object": "list", "data": data, "model": "bow-embed", "usage": {"prompt_tokens": 8, "total_tokens": 8}}
            )
        data = [{"object": "embedding", "index": i, "embedding": [0.1, -0.2, 0.3]} for i in range(len(inputs))]
        return web.json_response(
            {"object": "list", "data": data, "model": body["model"], "usage": {"prompt_tokens": 4, "total_tokens": 4}}
        )

    async def moderations(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        if request.headers.get("authorization") != "Bearer sk-upstream-test-0001":
            return self._error(401, "Incorrect API key provided: sk-up***.", "invalid_request_error", "invalid_api_key")
        inputs = body.get("input")
        inputs = inputs if isinstance(inputs, list) else [inputs]
        if not all(isinstance(i, str) for i in inputs):
            return self._error(400, "input must be a string or an array of strings", "invalid_request_error", None)
        results = []
        for text in inputs:
            words = set(re.findall(r"[a-z]+", text.lower()))
            flagged = {"violence": bool(words & VIOLENT), "self-harm": bool(words & SELF_HARM)}
            categories = {name: flagged.get(name, False) for name in MODERATION_CATEGORIES}
            scores = {name: (0.93 if categories[name] else 0.0012) for name in MODERATION_CATEGORIES}
            results.append(
                {
                    "flagged": any(categories.values()),
                    "categories": categories,
                    "category_scores": scores,
                    "category_applied_input_types": {name: ["text"] for name in MODERATION_CATEGORIES},
                }
            )
        return web.json_response(
            {"id": f"modr-{next(_SERIAL)}", "model": body.get("model") or "omni-moderation-latest", "results": results}
        )

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> FakeOpenAI:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_post("/v1/moderations", self.moderations)
        app.router.add_post("/v1/responses", self.responses)
        app.router.add_post("/v1/completions", self.completions)
        for prefix in ("", "/html", "/odd", "/quote"):
            app.router.add_get(f"{prefix}/v1/models", self.models)
        self.serve(app, "fake-openai")
        return self
