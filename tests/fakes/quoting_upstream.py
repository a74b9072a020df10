"""A fake upstream that quotes the provider key back, like api.openai.com does.

OpenAI answers a wrong key with "Incorrect API key provided: sk-...". Some OpenAI-compatible servers
quote the key in full, in a JSON error, in a plain-text error or in an error event inside a stream.
Whatever an upstream says, the gateway must not carry the provider key to its clients, logs or DB.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from aiohttp import web

from tests.fakes.loopback import LoopbackServer


def quoted_key_error(key: str) -> dict:
    message = f"Incorrect API key provided: {key}. You can find your API key at https://platform.openai.com/account."
    return {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}}


@dataclass
class QuotingUpstream(LoopbackServer):
    """An OpenAI-compatible server on loopback that accepts any key; the upstream model id picks the path.

    - "ok" / "ok-embed": a normal answer (JSON or SSE stream with usage)
    - "quote-401": a JSON 401 that quotes the key (also before a stream starts)
    - "quote-text": a plain-text 500 that quotes the key
    - "quote-stream": a stream that starts, then sends an error event quoting the key
    GET {base}/models lists models; under the /quote/ prefix it answers a 400 quoting the key instead.
    """

    host: str = "127.0.0.1"
    port: int = 0
    keys_seen: list[str] = field(default_factory=list)

    def url(self, prefix: str = "") -> str:
        return f"http://{self.host}:{self.port}{prefix}/v1"

    def _key(self, request: web.Request) -> str:
        key = request.headers.get("authorization", "").removeprefix("Bearer ")
        self.keys_seen.append(key)
        return key

    async def chat(self, request: web.Request) -> web.StreamResponse:
        key = self._key(request)
        body = await request.json()
        model = body.get("model", "")
        stream = bool(body.get("stream"))
        if model == "quote-401" or (model == "quote-stream" and not stream):
            return web.json_response(quoted_key_error(key), status=401)
        if model == "quote-text":
            return web.Response(status=500, text=f"upstream auth proxy: key {key} rejected", content_type="text/plain")
        usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
        base = {"id": "chatcmpl-canary", "created": int(time.time()), "model": model}
        if not stream:
            choice = {"index": 0, "message": {"role": "assistant", "content": "Hi there"}, "finish_reason": "stop"}
            return web.json_response({**base, "object": "chat.completion", "choices": [choice], "usage": usage})
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)

        def event(payload: dict) -> bytes:
            return b"data: " + json.dumps(payload).encode() + b"\n\n"

        chunk = {**base, "object": "chat.completion.chunk"}
        await response.write(
            event({**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}}]})
        )
        if model == "quote-stream":
            await response.write(event(quoted_key_error(key)))
            await response.write_eof()
            return response
        await response.write(event({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
        await response.write(event({**chunk, "choices": [], "usage": usage}))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def embeddings(self, request: web.Request) -> web.Response:
        key = self._key(request)
        body = await request.json()
        if body.get("model") == "quote-401":
            return web.json_response(quoted_key_error(key), status=401)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [{"object": "embedding", "index": i, "embedding": [0.1, 0.2]} for i in range(len(inputs))]
        usage = {"prompt_tokens": 2, "total_tokens": 2}
        return web.json_response({"object": "list", "data": data, "model": body["model"], "usage": usage})

    async def models(self, request: web.Request) -> web.Response:
        key = self._key(request)
        if request.path.startswith("/quote/"):
            return web.json_response(quoted_key_error(key), status=400)
        return web.json_response({"object": "list", "data": [{"id": "ok", "object": "model"}]})

    def start(self) -> QuotingUpstream:
        app = web.Application()
        for prefix in ("", "/quote"):
            app.router.add_post(f"{prefix}/v1/chat/completions", self.chat)
            app.router.add_post(f"{prefix}/v1/embeddings", self.embeddings)
            app.router.add_get(f"{prefix}/v1/models", self.models)
        self.serve(app, "quoting-upstream")
        return self
