"""A fake Bedrock Runtime: a real HTTP server on loopback speaking Converse, ConverseStream and
InvokeModel for the Titan Text Embeddings and Cohere Embed models.

Written from AWS's API reference. Every request must carry a valid SigV4 signature (service
"bedrock"): the fake recomputes it with botocore's signer from the known credentials and the request
as received (method, raw path, signed headers, body), and answers 403 InvalidSignatureException /
UnrecognizedClientException in AWS's error shape (x-amzn-ErrorType header, {"message": ...}) when it
does not match. Streams are `application/vnd.amazon.eventstream` frames (prelude, prelude CRC,
string headers, JSON payload, message CRC), written in odd-sized slices so frames split anywhere.

The model id in the path picks the behaviour:
- any model: a text answer; with tools offered and no tool result yet, a toolUse of the first tool;
  after a toolResult, a text answer quoting the result
- "cached-...": usage with cache reads and writes
- "error-<AwsType>": that AWS error with its documented status (Throttling adds retry-after: 3)
- "stream-exception-<awsType>": a stream that sends some text, then that exception frame
- "corrupt-crc": a stream whose second frame has a wrong message CRC
- "truncated": a stream that ends without messageStop
InvokeModel (`/model/<id>/invoke`) answers embedding models with `fake_vector(text, size)`:
- an id with "titan-embed": one {"inputText", "dimensions"?} per call (256, 512 or 1024), answered with
  {"embedding", "inputTextTokenCount" (words), "embeddingsByType"}; each call takes 4 ms per character
  of its text (at most 0.1 s) so that concurrent calls finish out of order, and `max_in_flight` records
  how many were open at once; the text "fail:<AwsType>" answers that AWS error
- an id with "cohere.embed": {"texts" (at most 96), "input_type"} answered with {"embeddings", "id",
  "response_type": "embeddings_floats", "texts"}; an id ending "-billed" adds Cohere's meta.billed_units
`GET /foundation-models` (the control plane's ListFoundationModels, same signature check) lists MODELS.
`fake.script(model, {"content": [blocks], "stopReason": "tool_use"})` makes the next Converse (JSON)
answer for that model id that message.
Every request is recorded (raw path, lower-cased headers, JSON body).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.fakes.loopback import LoopbackServer

REGION = "us-east-1"
# Access key id -> (secret, session token or None): the credentials the fake accepts.
CREDENTIALS = {
    "AKIDALICEEXAMPLE01": ("alice-secret-key-0000000000000000000001", None),
    "ASIABOBTEMPEXAMPLE": ("bob-temp-secret-000000000000000000000002", "bob-session-token-FwoGZXIvYXdzEXAMPLE"),
}
ANSWER_WORDS = ["Hello", " from", " the", " fake", " Bedrock", "."]
MODELS = ["anthropic.claude-3-5-haiku-20241022-v1:0", "amazon.titan-embed-text-v2:0"]
# AWS's documented HTTP status of each error type (ModelNotReady is a 429 on the wire).
AWS_STATUS = {
    "ThrottlingException": 429,
    "ValidationException": 400,
    "AccessDeniedException": 403,
    "ResourceNotFoundException": 404,
    "ModelNotReadyException": 429,
    "ServiceUnavailableException": 503,
    "ModelTimeoutException": 408,
    "InternalServerException": 500,
    "ModelErrorException": 424,
}
SLICES = [1, 7, 3, 13, 2, 29, 5, 64]
TITAN_DIMENSIONS = (256, 512, 1024)
COHERE_INPUT_TYPES = ("search_document", "search_query", "classification", "clustering")


def fake_vector(text: str, size: int) -> list[float]:
    """A vector that depends on the text; sixteenths, so float32 holds every value exactly."""
    seed = zlib.crc32(text.encode())
    return [((seed >> (i % 24)) % 33 - 16) / 16 for i in range(size)]


def _string_header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    return struct.pack("B", len(raw_name)) + raw_name + b"\x07" + struct.pack(">H", len(raw_value)) + raw_value


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message: prelude (total length, headers length), prelude CRC32, headers,
    payload, then the CRC32 of everything before it."""
    raw_headers = b"".join(_string_header(k, v) for k, v in headers.items())
    total = 12 + len(raw_headers) + len(payload) + 4
    prelude = struct.pack(">II", total, len(raw_headers))
    head = prelude + struct.pack(">I", zlib.crc32(prelude))
    body = head + raw_headers + payload
    return body + struct.pack(">I", zlib.crc32(body))


def event(name: str, data: dict) -> bytes:
    # Bedrock pads payloads with a "p" field of varying length so sizes leak nothing; clients ignore it.
    payload = json.dumps({**data, "p": "abcdefghij"[: len(name) % 10]}, separators=(",", ":")).encode()
    return frame({":event-type": name, ":content-type": "application/json", ":message-type": "event"}, payload)


def exception(name: str, message: str) -> bytes:
    payload = json.dumps({"message": message}).encode()
    return frame({":exception-type": name, ":content-type": "application/json", ":message-type": "exception"}, payload)


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeBedrock(LoopbackServer):
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[Recorded] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    scripts: dict[str, list[dict]] = field(default_factory=dict)

    def script(self, model: str, *steps: dict) -> None:
        self.scripts.setdefault(model, []).extend(steps)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def reset(self) -> None:
        self.requests.clear()
        self.in_flight = self.max_in_flight = 0
        self.scripts.clear()

    # --- AWS plumbing ---------------------------------------------------------------------------

    def _aws_error(self, error_type: str, message: str, status: int | None = None, headers: dict | None = None):
        all_headers = {
            "x-amzn-ErrorType": f"{error_type}:http://internal.amazon.com/coral/com.amazon.bedrock/",
            "x-amzn-RequestId": "req-error-0001",
            **(headers or {}),
        }
        return web.json_response({"message": message}, status=status or AWS_STATUS[error_type], headers=all_headers)

    def _check_signature(self, request: web.Request, body: bytes) -> web.Response | None:
        auth = request.headers.get("authorization", "")
        algorithm, _, rest = auth.partition(" ")
        fields = dict(part.strip().split("=", 1) for part in rest.split(",") if "=" in part)
        if algorithm != "AWS4-HMAC-SHA256" or not {"Credential", "SignedHeaders", "Signature"} <= fields.keys():
            return self._aws_error("MissingAuthenticationTokenException", "Missing Authentication Token", 403)
        key_id, date, region, service, terminal = (fields["Credential"].split("/") + [""] * 5)[:5]
        known = CREDENTIALS.get(key_id)
        if known is None:
            return self._aws_error(
                "UnrecognizedClientException", "The security token included in the request is invalid.", 403
            )
        secret, token = known
        signed = fields["SignedHeaders"].split(";")
        sent_token = request.headers.get("x-amz-security-token")
        if sent_token != token or (token is not None and "x-amz-security-token" not in signed):
            return self._aws_error(
                "UnrecognizedClientException", "The security token included in the request is invalid.", 403
            )
        timestamp = request.headers.get("x-amz-date", "")
        if (region, service, terminal) != (REGION, "bedrock", "aws4_request") or not timestamp.startswith(date):
            return self._aws_error("InvalidSignatureException", "Credential should be scoped correctly.", 403)
        if "host" not in signed:
            return self._aws_error("InvalidSignatureException", "'Host' must be a signed header.", 403)
        # Recompute the signature over the request exactly as it arrived.
        replay = AWSRequest(
            method=request.method,
            url=f"http://{request.host}{request.raw_path}",
            data=body,
            headers={name: request.headers.get(name, "") for name in signed},
        )
        replay.context["timestamp"] = timestamp
        signer = SigV4Auth(Credentials(key_id, secret, token), service, region)
        canonical = signer.canonical_request(replay)
        expected = signer.signature(signer.string_to_sign(replay, canonical), replay)
        if not hmac.compare_digest(expected, fields["Signature"]):
            return self._aws_error(
                "InvalidSignatureException",
                "The request signature we calculated does not match the signature you provided. "
                "Check your AWS Secret Access Key and signing method.",
                403,
            )
        return None

    # --- handlers -------------------------------------------------------------------------------

    async def foundation_models(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append(Recorded(request.raw_path, {k.lower(): v for k, v in request.headers.items()}, None))
        denied = self._check_signature(request, body)
        if denied is not None:
            return denied
        summaries = [
            {
                "modelId": m,
                "modelArn": f"arn:aws:bedrock:{REGION}::foundation-model/{m}",
                "providerName": m.split(".")[0],
            }
            for m in MODELS
        ]
        return web.json_response({"modelSummaries": summaries}, headers={"x-amzn-RequestId": "req-list-0001"})

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        raw_path = request.raw_path
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        self.requests.append(Recorded(raw_path, {k.lower(): v for k, v in request.headers.items()}, parsed))
        denied = self._check_signature(request, body)
        if denied is not None:
            return denied
        parts = raw_path.split("?", 1)[0].split("/")
        if len(parts) != 4 or parts[1] != "model" or parts[3] not in ("converse", "converse-stream", "invoke"):
            return self._aws_error("UnknownOperationException", "Unknown operation", 404)
        model = unquote(parts[2])
        if model.startswith("error-"):
            error_type = model.removeprefix("error-")
            headers = {"retry-after": "3"} if error_type == "ThrottlingException" else None
            return self._aws_error(error_type, f"{error_type} from the fake Bedrock for {model}", headers=headers)
        if parts[3] == "invoke":
            return await self._invoke(model, parsed)
        if not isinstance(parsed, dict) or not parsed.get("messages"):
            return self._aws_error("ValidationException", "A conversation must start with a user message.")
        if parts[3] == "converse":
            return web.json_response(self._answer(model, parsed), headers={"x-amzn-RequestId": "req-0001"})
        return await self._stream(request, model, parsed)

    async def _invoke(self, model: str, body: Any) -> web.Response:
        if not isinstance(body, dict):
            return self._aws_error("ValidationException", "Malformed input request, please reformat your input.")
        if "titan-embed" in model:
            return await self._titan(body)
        if "cohere.embed" in model:
            return self._cohere(model, body)
        return self._aws_error("ValidationException", f"The fake Bedrock does not invoke {model}.")

    async def _titan(self, body: dict) -> web.Response:
        text, size = body.get("inputText"), body.get("dimensions", 1024)
        if not isinstance(text, str) or set(body) - {"inputText", "dimensions", "normalize", "embeddingTypes"}:
            return self._aws_error("ValidationException", "Malformed input request: inputText is required.")
        if size not in TITAN_DIMENSIONS:
            return self._aws_error("ValidationException", f"dimensions must be one of {list(TITAN_DIMENSIONS)}.")
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(min(0.004 * len(text), 0.1))
        finally:
            self.in_flight -= 1
        if text.startswith("fail:"):
            error_type = text.removeprefix("fail:")
            return self._aws_error(error_type, f"{error_type} for one text from the fake Bedrock")
        vector = fake_vector(text, size)
        answer = {"embedding": vector, "inputTextTokenCount": len(text.split()), "embeddingsByType": {"float": vector}}
        return web.json_response(answer, headers={"x-amzn-RequestId": "req-invoke-0001"})

    def _cohere(self, model: str, body: dict) -> web.Response:
        texts = body.get("texts")
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts) or len(texts) > 96:
            return self._aws_error("ValidationException", "texts must be a list of at most 96 strings.")
        if body.get("input_type") not in COHERE_INPUT_TYPES:
            return self._aws_error("ValidationException", "input_type is required.")
        answer: dict[str, Any] = {
            "embeddings": [fake_vector(t, 1024) for t in texts],
            "id": "emb-fake-0001",
            "response_type": "embeddings_floats",
            "texts": texts,
        }
        if model.endswith("-billed"):
            answer["meta"] = {"billed_units": {"input_tokens": sum(len(t.split()) for t in texts)}}
        return web.json_response(answer, headers={"x-amzn-RequestId": "req-invoke-0002"})

    def _usage(self, model: str) -> dict:
        usage = {"inputTokens": 12, "outputTokens": 7, "totalTokens": 19}
        if model.startswith("cached-"):
            usage.update(cacheReadInputTokens=100, cacheWriteInputTokens=50, totalTokens=169)
        return usage

    def _tool_turn(self, body: dict) -> tuple[str, dict] | None:
        """(toolUseId, toolUse) when the model should call a tool: tools offered, no result yet."""
        tools = (body.get("toolConfig") or {}).get("tools") or []
        last = body["messages"][-1]
        if not tools or any("toolResult" in block for block in last.get("content", [])):
            return None
        name = tools[0]["toolSpec"]["name"]
        return "tooluse_fake0001", {"toolUseId": "tooluse_fake0001", "name": name, "input": {"city": "Paris"}}

    def _reply_text(self, body: dict) -> str:
        last = body["messages"][-1]
        results = [b["toolResult"] for b in last.get("content", []) if "toolResult" in b]
        if results:
            text = "".join(c.get("text", "") for c in results[0].get("content", []))
            return f"The tool said: {text}"
        return "".join(ANSWER_WORDS)

    def _answer(self, model: str, body: dict) -> dict:
        tool = self._tool_turn(body)
        if self.scripts.get(model):
            step = self.scripts[model].pop(0)
            content, stop = step["content"], step.get("stopReason", "end_turn")
        elif tool is not None:
            content = [{"text": "Let me check."}, {"toolUse": tool[1]}]
            stop = "tool_use"
        else:
            content, stop = [{"text": self._reply_text(body)}], "end_turn"
        return {
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": stop,
            "usage": self._usage(model),
            "metrics": {"latencyMs": 42},
        }

    def _frames(self, model: str, body: dict) -> list[bytes]:
        frames = [event("messageStart", {"role": "assistant"})]
        tool = self._tool_turn(body)
        if tool is not None:
            frames.append(event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Let me check."}}))
            frames.append(event("contentBlockStop", {"contentBlockIndex": 0}))
            use = tool[1]
            start = {"toolUse": {"toolUseId": use["toolUseId"], "name": use["name"]}}
            frames.append(event("contentBlockStart", {"contentBlockIndex": 1, "start": start}))
            arguments = json.dumps(use["input"])
            for piece in (arguments[:5], arguments[5:]):
                frames.append(
                    event("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": piece}}})
                )
            frames.append(event("contentBlockStop", {"contentBlockIndex": 1}))
            stop = "tool_use"
        else:
            text = self._reply_text(body)
            words = ANSWER_WORDS if text == "".join(ANSWER_WORDS) else [text]
            for word in words:
                frames.append(event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": word}}))
            frames.append(event("contentBlockStop", {"contentBlockIndex": 0}))
            stop = "end_turn"
        if model.startswith("stream-exception-"):
            name = model.removeprefix("stream-exception-")
            return [*frames[:3], exception(name, f"{name} mid-stream from the fake Bedrock")]
        if model == "truncated":
            return frames
        frames.append(event("messageStop", {"stopReason": stop}))
        frames.append(event("metadata", {"usage": self._usage(model), "metrics": {"latencyMs": 42}}))
        if model == "corrupt-crc":
            bad = bytearray(frames[1])
            bad[-1] ^= 0xFF
            frames[1] = bytes(bad)
        return frames

    async def _stream(self, request: web.Request, model: str, body: dict) -> web.StreamResponse:
        response = web.StreamResponse(
            status=200, headers={"content-type": "application/vnd.amazon.eventstream", "x-amzn-RequestId": "req-0002"}
        )
        await response.prepare(request)
        data = b"".join(self._frames(model, body))
        position, turn = 0, 0
        while position < len(data):
            size = SLICES[turn % len(SLICES)]
            await response.write(data[position : position + size])
            position, turn = position + size, turn + 1
            if turn % 4 == 0:
                await asyncio.sleep(0.001)  # let slices leave as separate reads
        await response.write_eof()
        return response

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> FakeBedrock:
        app = web.Application()
        app.router.add_get("/foundation-models", self.foundation_models)
        app.router.add_route("POST", "/{tail:.*}", self.handle)
        self.serve(app, "fake-bedrock")
        return self
