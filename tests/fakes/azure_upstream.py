"""A fake Azure OpenAI resource: a real HTTP server on loopback speaking Azure's wire format.

Routes: `POST /openai/deployments/{deployment}/chat/completions|embeddings?api-version=...` with the
key in `api-key` (a wrong key: Azure's 401 body; no api-version: Azure's 404 "Resource not found").
`POST /openai/v1/responses` is the v1 surface's Responses API (the deployment in `model`, no
api-version; OpenAI's format, tests.fakes.openai_upstream.answer_responses).
`GET /openai/models?api-version=...` (same key and version checks) lists MODELS as Models - List does;
scripts for the pseudo-deployment LISTING answer it instead (`{"status": 401, "message": "..."}`).
Answers carry Azure's `prompt_filter_results` and per-choice `content_filter_results`; a stream
starts with Azure's chunk whose `choices` is empty (id "", created 0, model "") and that holds only
`prompt_filter_results`, and adds a usage chunk when `stream_options.include_usage` is set.

The deployment name picks the behaviour:
- any deployment: a text answer; "tools": a tool call until the last message is a tool result;
- "filtered-prompt": Azure's 400 content_filter error (innererror ResponsibleAIPolicyViolation);
- "filtered-answer": 200 with finish_reason content_filter and no content;
- "filtered-stream": a stream whose answer is cut by finish_reason content_filter.
`fake.script("d", {"status": 429}, {"status": 500})` answers the next requests for deployment "d"
with Azure's error bodies (429 adds retry-after and retry-after-ms headers).
Every request is recorded (path, query, headers, JSON body).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.loopback import LoopbackServer
from tests.fakes.openai_upstream import answer_responses

API_KEY = "az-upstream-test-0001"
WORDS = ["Hello", " from", " the", " fake", " Azure", "."]
MODELS = ["gpt-4o", "text-embedding-3-small"]
LISTING = "(models)"

SAFE = {
    "hate": {"filtered": False, "severity": "safe"},
    "self_harm": {"filtered": False, "severity": "safe"},
    "sexual": {"filtered": False, "severity": "safe"},
    "violence": {"filtered": False, "severity": "safe"},
}
PROMPT_FILTER = [{"prompt_index": 0, "content_filter_results": SAFE}]


@dataclass
class Recorded:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


@dataclass
class FakeAzure(LoopbackServer):
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[Recorded] = field(default_factory=list)
    scripts: dict[str, list[dict]] = field(default_factory=dict)

    def script(self, deployment: str, *steps: dict) -> None:
        self.scripts.setdefault(deployment, []).extend(steps)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def reset(self) -> None:
        self.requests.clear()
        self.scripts.clear()

    # --- wire format ----------------------------------------------------------------------------

    @staticmethod
    def _error(status: int, body: dict, headers: dict | None = None) -> web.Response:
        return web.json_response(body, status=status, headers=headers)

    def _scripted(self, step: dict) -> web.Response | None:
        status = step.get("status", 200)
        if status == 200:
            return None
        if status == 429:
            message = (
                "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have "
                "exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after 6 seconds."
            )
            return self._error(
                429,
                {"error": {"code": "429", "message": message}},
                headers={"retry-after": "6", "retry-after-ms": "6000", "x-ratelimit-remaining-requests": "0"},
            )
        if status == 404:
            return self._error(
                404,
                {
                    "error": {
                        "code": "DeploymentNotFound",
                        "message": "The API deployment for this resource does not exist.",
                    }
                },
            )
        return self._error(
            status,
            {
                "error": {
                    "message": "The server had an error while processing your request.",
                    "type": "server_error",
                    "param": None,
                    "code": None,
                }
            },
        )

    async def models(self, request: web.Request) -> web.Response:
        self.requests.append(Recorded(request.path, dict(request.query), dict(request.headers), None))
        if self.scripts.get(LISTING):
            step = self.scripts[LISTING].pop(0)
            return self._error(step["status"], {"error": {"code": str(step["status"]), "message": step.get("message")}})
        if "api-version" not in request.query:
            return self._error(404, {"error": {"code": "404", "message": "Resource not found"}})
        if request.headers.get("api-key") != API_KEY:
            message = (
                "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid "
                "key for an active subscription and use a correct regional API endpoint for your resource."
            )
            return self._error(401, {"error": {"code": "401", "message": message}})
        data = [
            {
                "id": m,
                "object": "model",
                "status": "succeeded",
                "created_at": 1718841600,
                "lifecycle_status": "generally-available",
            }
            for m in MODELS
        ]
        return web.json_response({"data": data, "object": "list"})

    async def handle(self, request: web.Request) -> web.StreamResponse:
        deployment, operation = request.match_info["deployment"], request.match_info["operation"]
        raw = await request.read()
        body = json.loads(raw) if raw else None
        self.requests.append(Recorded(request.path, dict(request.query), dict(request.headers), body))
        if "api-version" not in request.query:
            return self._error(404, {"error": {"code": "404", "message": "Resource not found"}})
        if request.headers.get("api-key") != API_KEY:
            message = (
                "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid "
                "key for an active subscription and use a correct regional API endpoint for your resource."
            )
            return self._error(401, {"error": {"code": "401", "message": message}})
        steps = self.scripts.get(deployment)
        if steps:
            scripted = self._scripted(steps.pop(0))
            if scripted is not None:
                return scripted
        if operation == "embeddings":
            inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
            data = [{"object": "embedding", "index": i, "embedding": [0.5, -0.5, 0.25]} for i in range(len(inputs))]
            return web.json_response(
                {
                    "object": "list",
                    "data": data,
                    "model": "text-embedding-3-small",
                    "usage": {"prompt_tokens": 3, "total_tokens": 3},
                }
            )
        if deployment == "filtered-prompt":
            return self._error(
                400,
                {
                    "error": {
                        "message": "The response was filtered due to the prompt triggering Azure OpenAI's content "
                        "management policy. Please modify your prompt and retry.",
                        "type": None,
                        "param": "prompt",
                        "code": "content_filter",
                        "status": 400,
                        "innererror": {
                            "code": "ResponsibleAIPolicyViolation",
                            "content_filter_result": {**SAFE, "violence": {"filtered": True, "severity": "high"}},
                        },
                    }
                },
            )
        if body.get("stream"):
            return await self._stream(request, body, deployment)
        return web.json_response(
            self._completion(body, deployment), headers={"apim-request-id": "apim-1", "x-request-id": "az-req-1"}
        )

    def _usage(self, body: dict, produced: int) -> dict:
        prompt = 9 + sum(len(str(m.get("content", ""))) // 4 for m in body.get("messages", []))
        return {
            "prompt_tokens": prompt,
            "completion_tokens": produced,
            "total_tokens": prompt + produced,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        }

    def _wants_tool_call(self, body: dict, deployment: str) -> bool:
        return deployment == "tools" and body["messages"][-1].get("role") != "tool"

    def _completion(self, body: dict, deployment: str) -> dict:
        message: dict[str, Any] = {"role": "assistant", "content": "".join(WORDS), "refusal": None}
        finish = "stop"
        if self._wants_tool_call(body, deployment):
            name = body["tools"][0]["function"]["name"]
            message["content"] = None
            message["tool_calls"] = [
                {"id": "call_az1", "type": "function", "function": {"name": name, "arguments": '{"city":"Paris"}'}}
            ]
            finish = "tool_calls"
        elif deployment == "tools":
            message["content"] = f"The tool said {body['messages'][-1]['content']}"
        if deployment == "filtered-answer":
            message["content"], finish = None, "content_filter"
        return {
            "id": "chatcmpl-az1",
            "object": "chat.completion",
            "created": 1730000000,
            "model": "gpt-4o-2024-08-06",
            "prompt_filter_results": PROMPT_FILTER,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": finish,
                    "content_filter_results": SAFE
                    if finish != "content_filter"
                    else {**SAFE, "violence": {"filtered": True, "severity": "medium"}},
                }
            ],
            "usage": self._usage(body, len(WORDS)),
            "system_fingerprint": "fp_az",
        }

    async def _stream(self, request: web.Request, body: dict, deployment: str) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"content-type": "text/event-stream; charset=utf-8", "apim-request-id": "apim-2"}
        )
        await response.prepare(request)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        base = {
            "id": "chatcmpl-az2",
            "object": "chat.completion.chunk",
            "created": 1730000000,
            "model": "gpt-4o-2024-08-06",
            "system_fingerprint": "fp_az",
        }

        async def send(payload: dict) -> None:
            if include_usage and "usage" not in payload:
                payload["usage"] = None
            frame = b"data: " + json.dumps(payload).encode() + b"\n\n"
            await response.write(frame[:5])
            await response.write(frame[5:])

        # Azure's first chunk: no choices, only the prompt's filter results.
        await send(
            {"choices": [], "created": 0, "id": "", "model": "", "object": "", "prompt_filter_results": PROMPT_FILTER}
        )
        await send(
            {
                **base,
                "choices": [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": ""},
                        "finish_reason": None,
                        "content_filter_results": {},
                    }
                ],
            }
        )
        if self._wants_tool_call(body, deployment):
            name = body["tools"][0]["function"]["name"]
            call = {"index": 0, "id": "call_az1", "type": "function", "function": {"name": name, "arguments": ""}}
            await send({**base, "choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]})
            for piece in ('{"city"', ':"Paris"}'):
                delta = {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
                await send({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
            finish, produced = "tool_calls", 8
        else:
            words = WORDS[:2] if deployment == "filtered-stream" else WORDS
            for word in words:
                await send(
                    {
                        **base,
                        "choices": [
                            {
                                "index": 0,
                                "delta": {"content": word},
                                "finish_reason": None,
                                "content_filter_results": SAFE,
                            }
                        ],
                    }
                )
            finish, produced = ("content_filter" if deployment == "filtered-stream" else "stop"), len(words)
        await send(
            {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish, "content_filter_results": {}}]}
        )
        if include_usage:
            await send({**base, "choices": [], "usage": self._usage(body, produced)})
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def responses(self, request: web.Request) -> web.StreamResponse:
        """The v1 surface's Responses API (no api-version, the deployment in `model`): OpenAI's format."""
        raw = await request.read()
        body = json.loads(raw) if raw else None
        self.requests.append(Recorded(request.path, dict(request.query), dict(request.headers), body))
        if request.headers.get("api-key") != API_KEY:
            return self._error(
                401, {"error": {"code": "401", "message": "Access denied due to invalid subscription key."}}
            )
        if not isinstance(body, dict) or body.get("input") is None or not body.get("model"):
            error = {"message": "Missing required parameter: 'input'.", "type": "invalid_request_error", "code": None}
            return self._error(400, {"error": {**error, "param": "input"}})
        if body["model"] == "missing":
            error = {"code": "DeploymentNotFound", "message": "The API deployment for this resource does not exist."}
            return self._error(404, {"error": error})
        return await answer_responses(request, body, "resp_azure")

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> FakeAzure:
        app = web.Application()
        app.router.add_post("/openai/deployments/{deployment}/{operation:chat/completions|embeddings}", self.handle)
        app.router.add_get("/openai/models", self.models)
        app.router.add_post("/openai/v1/responses", self.responses)
        self.serve(app, "fake-azure")
        return self
