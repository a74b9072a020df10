"""A fake Gemini API: a real HTTP server on loopback speaking generativelanguage.googleapis.com's format.

Routes (v1beta): `models/{model}:generateContent`, `models/{model}:streamGenerateContent?alt=sse`
(SSE frames `data: <GenerateContentResponse>\\r\\n\\r\\n`, no [DONE]; usageMetadata on every chunk,
cumulative, as Google sends it) and `models/{model}:batchEmbedContents`. The key must come in
`x-goog-api-key`; a wrong key gets Google's 400 INVALID_ARGUMENT with reason API_KEY_INVALID.

`GET /v1beta/models` (same key check) lists MODELS as `models/{id}` names; scripts for the pseudo-model
LISTING answer it instead (`fake.script(LISTING, {"status": 403, "message": "..."})`).

The model name picks the behaviour:
- any model: a text answer; "tools": a functionCall of the first declared function, or, once the last
  turn holds a functionResponse, a text answer quoting it;
- "cached": usage with cachedContentTokenCount; "thinking": a thought part and thoughtsTokenCount;
- "safety": finishReason SAFETY without content; "max-tokens": finishReason MAX_TOKENS;
- "blocked-prompt": promptFeedback.blockReason and no candidates;
- "stream-error": one chunk, then an error event; "stream-cut": chunks without a finishReason;
- "signed-tools" (and any "gemini-3..." model): as Gemini 3 does (ai.google.dev/gemini-api/docs/thought-signatures), two parallel
  functionCalls (Paris and Lyon), the first with a `thoughtSignature` (SIGNATURE, base64 with + / =);
  a request whose model turn holds functionCalls without that signature on the first one gets Gemini 3's
  400 INVALID_ARGUMENT "Function call is missing a thought_signature in functionCall parts" (the documented
  dummy SKIP_SIGNATURES pass, as they do at Google).
`fake.script("m", {"status": 429, "retry_delay": "12s"}, {"status": 503})` answers the next requests
for "m" with Google's error body for that status (RetryInfo detail when retry_delay is given);
`fake.script("m", {"text": "{...}"})` makes the next generateContent answer that one text part.
Every request is recorded (path, query, headers, JSON body).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.loopback import LoopbackServer

API_KEY = "gm-upstream-test-0001"
WORDS = ["Hello", " from", " the", " fake", " Gemini", "."]
MODELS = ["gemini-2.0-flash", "text-embedding-004"]
LISTING = "(models)"
SIGNATURE = base64.b64encode(bytes(range(250, 256)) + b"sig-paris?").decode()  # "+vv8/f7/...=="
SKIP_SIGNATURES = ("skip_thought_signature_validator", "context_engineering_is_the_way_to_go")

STATUSES = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
MESSAGES = {
    400: "Invalid value at 'generation_config.temperature' (TYPE_FLOAT), \"hot\"",
    403: "Method doesn't allow unregistered callers (callers without established identity).",
    404: "models/missing is not found for API version v1beta, or is not supported for generateContent.",
    429: "You exceeded your current quota, please check your plan and billing details.",
    500: "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
}


@dataclass
class Recorded:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


@dataclass
class FakeGemini(LoopbackServer):
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[Recorded] = field(default_factory=list)
    scripts: dict[str, list[dict]] = field(default_factory=dict)

    def script(self, model: str, *steps: dict) -> None:
        self.scripts.setdefault(model, []).extend(steps)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def reset(self) -> None:
        self.requests.clear()
        self.scripts.clear()

    # --- wire format ----------------------------------------------------------------------------

    @staticmethod
    def google_error(status: int, message: str | None = None, details: list | None = None) -> web.Response:
        error = {"code": status, "message": message or MESSAGES.get(status, "Error"), "status": STATUSES[status]}
        if details:
            error["details"] = details
        return web.json_response({"error": error}, status=status)

    def _scripted(self, step: dict) -> web.Response | None:
        status = step.get("status", 200)
        if status == 200:
            return None
        details = []
        if status == 429:
            details.append(
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [
                        {
                            "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                            "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                        }
                    ],
                }
            )
        if step.get("retry_delay"):
            details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": step["retry_delay"]})
        return self.google_error(status, step.get("message"), details)

    def _usage(self, body: dict, model: str, produced: int) -> dict:
        prompt = 5 + sum(
            len(p.get("text", "")) // 4 for c in body.get("contents", []) for p in c.get("parts", []) if "text" in p
        )
        usage = {"promptTokenCount": prompt, "candidatesTokenCount": produced, "totalTokenCount": prompt + produced}
        if model == "cached":
            usage["cachedContentTokenCount"] = prompt - 2
        if model == "thinking":
            usage["thoughtsTokenCount"] = 7
            usage["totalTokenCount"] += 7
        return usage

    @staticmethod
    def _unsigned_call(body: dict) -> str | None:
        """Gemini 3's complaint about a model turn whose function calls lost their thought signature."""
        for turn in body.get("contents", []):
            calls = [p for p in turn.get("parts", []) if "functionCall" in p]
            signed = calls[0].get("thoughtSignature") in (SIGNATURE, *SKIP_SIGNATURES) if calls else True
            if turn.get("role") == "model" and not signed:
                return (
                    "Function call is missing a thought_signature in functionCall parts. This is required for "
                    f"tools to work correctly, and missing thought_signature may lead to degraded model "
                    f"performance. Additional data, function call `default_api:{calls[0]['functionCall']['name']}`"
                )
        return None

    def _answer_parts(self, body: dict, model: str) -> list[dict]:
        if model == "signed-tools" or model.startswith("gemini-3"):
            last = body["contents"][-1]["parts"]
            responses = [p["functionResponse"] for p in last if "functionResponse" in p]
            if responses:
                return [{"text": f"{len(responses)} tools answered", "thoughtSignature": "c2lnLXRleHQ="}]
            name = body["tools"][0]["functionDeclarations"][0]["name"]
            return [
                {"functionCall": {"name": name, "args": {"city": "Paris"}}, "thoughtSignature": SIGNATURE},
                {"functionCall": {"name": name, "args": {"city": "Lyon"}}},
            ]
        if model == "tools":
            last = body["contents"][-1]["parts"]
            responses = [p["functionResponse"] for p in last if "functionResponse" in p]
            if responses:
                return [{"text": f"The tool {responses[0]['name']} said {json.dumps(responses[0]['response'])}"}]
            name = body["tools"][0]["functionDeclarations"][0]["name"]
            return [{"functionCall": {"name": name, "args": {"city": "Paris", "days": 2}}}]
        parts = [{"text": w} for w in WORDS]
        if model == "thinking":
            parts.insert(0, {"text": "Let me think.", "thought": True})
        return parts

    def _finish(self, model: str) -> str:
        return {"safety": "SAFETY", "max-tokens": "MAX_TOKENS"}.get(model, "STOP")

    def _key_invalid(self) -> web.Response:
        details = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            }
        ]
        return self.google_error(400, "API key not valid. Please pass a valid API key.", details)

    async def models(self, request: web.Request) -> web.Response:
        self.requests.append(Recorded(request.path, dict(request.query), dict(request.headers), None))
        if self.scripts.get(LISTING):
            scripted = self._scripted(self.scripts[LISTING].pop(0))
            if scripted is not None:
                return scripted
        if request.headers.get("x-goog-api-key") != API_KEY:
            return self._key_invalid()
        methods = {"text-embedding-004": ["embedContent"]}
        models = [
            {"name": f"models/{m}", "displayName": m, "supportedGenerationMethods": methods.get(m, ["generateContent"])}
            for m in MODELS
        ]
        return web.json_response({"models": models})

    async def generate(self, request: web.Request) -> web.StreamResponse:
        model, _, method = request.match_info["tail"].partition(":")
        raw = await request.read()
        body = json.loads(raw) if raw else None
        self.requests.append(Recorded(request.path, dict(request.query), dict(request.headers), body))
        if request.headers.get("x-goog-api-key") != API_KEY:
            details = [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"},
                }
            ]
            return self.google_error(400, "API key not valid. Please pass a valid API key.", details)
        steps = self.scripts.get(model)
        scripted_parts = None
        if steps:
            step = steps.pop(0)
            scripted = self._scripted(step)
            if scripted is not None:
                return scripted
            if "text" in step:
                scripted_parts = [{"text": step["text"]}]
        if (model == "signed-tools" or model.startswith("gemini-3")) and (problem := self._unsigned_call(body)):
            return self.google_error(400, problem)
        if method == "batchEmbedContents":
            embeddings = [
                {"values": [round(len(r["content"]["parts"][0]["text"]) / 10, 3), -0.25, 0.5]} for r in body["requests"]
            ]
            return web.json_response({"embeddings": embeddings})
        if method == "generateContent":
            return self._complete(body, model, scripted_parts)
        if method == "streamGenerateContent" and request.query.get("alt") == "sse":
            return await self._stream(request, body, model)
        return self.google_error(404, f"Method {method} not found")

    def _complete(self, body: dict, model: str, parts: list[dict] | None = None) -> web.Response:
        if model == "blocked-prompt":
            return web.json_response(
                {
                    "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": []},
                    "usageMetadata": self._usage(body, model, 0),
                    "modelVersion": model,
                }
            )
        parts = parts or self._answer_parts(body, model)
        candidate: dict[str, Any] = {"finishReason": self._finish(model), "index": 0}
        if model != "safety":
            thoughts = [p for p in parts if p.get("thought")]
            text = "".join(p["text"] for p in parts if "text" in p and not p.get("thought"))
            calls = [p for p in parts if "functionCall" in p]
            candidate["content"] = {"parts": thoughts + ([{"text": text}] if text else []) + calls, "role": "model"}
        produced = len(parts)
        return web.json_response(
            {
                "candidates": [candidate],
                "usageMetadata": self._usage(body, model, produced),
                "modelVersion": f"{model}-001",
                "responseId": "resp-fake-1",
            }
        )

    async def _stream(self, request: web.Request, body: dict, model: str) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        parts = self._answer_parts(body, model)
        for n, part in enumerate(parts, start=1):
            chunk: dict[str, Any] = {
                "candidates": [{"content": {"parts": [part], "role": "model"}, "index": 0}],
                # Cumulative: every chunk repeats the running totals.
                "usageMetadata": self._usage(body, model, n),
                "modelVersion": f"{model}-001",
                "responseId": "resp-fake-2",
            }
            last = n == len(parts)
            if last and model != "stream-cut":
                chunk["candidates"][0]["finishReason"] = self._finish(model)
            frame = b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n"
            # Split frames across writes to exercise the gateway's reassembly.
            await response.write(frame[:9])
            await response.write(frame[9:])
            if model == "stream-error" and n == 1:
                error = {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}
                await response.write(b"data: " + json.dumps(error).encode() + b"\r\n\r\n")
                break
        await response.write_eof()
        return response

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> FakeGemini:
        app = web.Application()
        app.router.add_post("/v1beta/models/{tail}", self.generate)
        app.router.add_get("/v1beta/models", self.models)
        self.serve(app, "fake-gemini")
        return self
