"""A fake OpenAI upstream: a real HTTP server on loopback speaking OpenAI's wire format.

The model name in the request picks the behaviour, so one server serves every test:
- any model: a chat.completion (or SSE stream) with a usage block, like api.openai.com
- "fail-429" / "fail-500" / "fail-400": OpenAI's error body with that status (429 adds retry-after)
- "fail-html": a 502 with an HTML body, like a broken load balancer
- "slow-stream": a stream that sends one chunk every 50 ms for 10 s, to test client disconnects
Every request is recorded (path, headers, JSON body) and disconnects are counted.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

CONTENT_WORDS = ["Hello", " from", " the", " fake", " upstream", "."]


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeOpenAI:
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[Recorded] = field(default_factory=list)
    stream_cancellations: int = 0
    streams_completed: int = 0

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def reset(self) -> None:
        self.requests.clear()
        self.stream_cancellations = 0
        self.streams_completed = 0

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
        failure = self._failure(model)
        if failure is not None:
            return failure
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
                                "content": "".join(CONTENT_WORDS),
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
        words = CONTENT_WORDS * (40 if slow else 1)
        try:
            await response.write(
                event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
            )
            for word in words:
                if slow:
                    await asyncio.sleep(0.05)
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

    async def embeddings(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [{"object": "embedding", "index": i, "embedding": [0.1, -0.2, 0.3]} for i in range(len(inputs))]
        return web.json_response(
            {"object": "list", "data": data, "model": body["model"], "usage": {"prompt_tokens": 4, "total_tokens": 4}}
        )

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> FakeOpenAI:
        sock = socket.socket()
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/embeddings", self.embeddings)
        ready = threading.Event()

        def run() -> None:
            self.loop = asyncio.new_event_loop()
            runner = web.AppRunner(app, handle_signals=False)
            self.loop.run_until_complete(runner.setup())
            site = web.SockSite(runner, sock)
            self.loop.run_until_complete(site.start())
            self._runner = runner
            ready.set()
            self.loop.run_forever()
            self.loop.run_until_complete(runner.cleanup())

        self._thread = threading.Thread(target=run, name="fake-openai", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
