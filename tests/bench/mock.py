"""A zero-latency OpenAI-compatible (and Anthropic Messages) upstream: a raw asyncio protocol answering with canned bytes.

Run as its own process (`python -m tests.bench.mock --port 0`); it prints `MOCK_PORT <n>` once it
listens. No HTTP framework: a parse of the request head plus one transport.write per response
keeps its CPU cost per request in the tens of microseconds, so it doesn't distort the figures.

Routes (any other path: 404):
  POST /v1/chat/completions          chat.completion JSON, or SSE when the body says "stream": true
  POST /stream/v1/chat/completions   always SSE (like shared/bench, a base URL for a streaming model)
  POST /v1/embeddings                a small embedding list
  GET  /v1/models                    a model list
  POST /v1/messages                  Anthropic Messages API: a message JSON, or Anthropic's SSE events
                                     when the body says "stream": true (the `anthropic` bench variant)
  POST /stream/v1/messages           always Anthropic SSE
  GET  /_mock/stats                  {"requests": n}: lets the pre-check see the gateway really called us
Streams carry the usage chunk only when stream_options.include_usage is true, as OpenAI's do.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import sys

import orjson

from tests.bench.payloads import (
    CHAT_COMPLETION,
    EMBEDDINGS,
    JSON_ANSWER,
    SSE_DONE,
    SSE_EVENTS,
    SSE_USAGE_EVENT,
    STREAM_PIECES,
)

_STREAM_TRUE = re.compile(rb'"stream"\s*:\s*true')
_INCLUDE_USAGE = re.compile(rb'"include_usage"\s*:\s*true')
MAX_HEAD = 64 * 1024
MAX_BODY = 32 * 1024 * 1024


def _response(status: str, content_type: str, body: bytes, extra: str = "") -> bytes:
    head = f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {len(body)}\r\n{extra}\r\n"
    return head.encode("latin1") + body


def _sse_response(events: tuple[bytes, ...]) -> bytes:
    # Chunked, one HTTP chunk per event, like OpenAI; all written at once since the mock has no latency.
    head = (
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ncache-control: no-cache\r\n"
        "x-request-id: mock-req-0002\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    body = b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events) + b"0\r\n\r\n"
    return head.encode("latin1") + body


def _error(status: str, message: str) -> bytes:
    body = orjson.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}})
    return _response(status, "application/json", body)


JSON_RESPONSE = _response("200 OK", "application/json", CHAT_COMPLETION, "x-request-id: mock-req-0001\r\n")
SSE_RESPONSE = _sse_response((*SSE_EVENTS, SSE_DONE))
SSE_RESPONSE_WITH_USAGE = _sse_response((*SSE_EVENTS, SSE_USAGE_EVENT, SSE_DONE))
EMBEDDINGS_RESPONSE = _response("200 OK", "application/json", EMBEDDINGS)
MODELS_RESPONSE = _response(
    "200 OK",
    "application/json",
    b'{"object":"list","data":[{"id":"gpt-4o-mini","object":"model","created":1721172741,"owned_by":"system"}]}',
)
# Anthropic's wire format (docs.anthropic.com/en/api/messages, .../messages-streaming), with the same text
# and token counts as the OpenAI answers, so the pre-check verifies the gateway's translation back to
# OpenAI's format exactly (48 + 26 = 74 tokens for JSON; 48 + 12 for streams).
ANTHROPIC_MODEL = "claude-haiku-4-5-20251001"
ANTHROPIC_MESSAGE = orjson.dumps(
    {
        "id": "msg_mock0001",
        "type": "message",
        "role": "assistant",
        "model": ANTHROPIC_MODEL,
        "content": [{"type": "text", "text": JSON_ANSWER}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 48,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 26,
        },
    }
)


def _anthropic_event(data: dict) -> bytes:
    return b"event: " + data["type"].encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


ANTHROPIC_SSE_EVENTS: tuple[bytes, ...] = (
    _anthropic_event(
        {
            "type": "message_start",
            "message": {
                "id": "msg_mock0002",
                "type": "message",
                "role": "assistant",
                "model": ANTHROPIC_MODEL,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": 48,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                    "output_tokens": 1,
                },
            },
        }
    ),
    _anthropic_event({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    _anthropic_event({"type": "ping"}),
    *(
        _anthropic_event({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}})
        for piece in STREAM_PIECES
    ),
    _anthropic_event({"type": "content_block_stop", "index": 0}),
    _anthropic_event(
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 12},
        }
    ),
    _anthropic_event({"type": "message_stop"}),
)
ANTHROPIC_JSON_RESPONSE = _response("200 OK", "application/json", ANTHROPIC_MESSAGE, "request-id: req_mock0001\r\n")
ANTHROPIC_SSE_RESPONSE = _sse_response(ANTHROPIC_SSE_EVENTS)
NOT_FOUND = _error("404 Not Found", "mock: unknown path")
NOT_ALLOWED = _error("405 Method Not Allowed", "mock: method not allowed")
BAD_REQUEST = _error("400 Bad Request", "mock: malformed request")


class Stats:
    requests = 0


class MockProtocol(asyncio.Protocol):
    __slots__ = ("buf", "transport")

    def __init__(self) -> None:
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        # Bounded: each pass consumes one whole request from buf or stops.
        while buf and self.transport is not None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    self._fail()
                    return
                break
            head = buf[:end].lower()
            length = 0
            i = head.find(b"\r\ncontent-length:")
            if i >= 0:
                j = head.find(b"\r\n", i + 2)
                try:
                    length = int(head[i + 17 : j if j >= 0 else len(head)])
                except ValueError:
                    self._fail()
                    return
            elif b"\r\ntransfer-encoding:" in head:
                self._fail()  # no client we test with sends chunked request bodies
                return
            if length > MAX_BODY:
                self._fail()
                return
            total = end + 4 + length
            if len(buf) < total:
                break
            body = buf[end + 4 : total]
            buf = buf[total:]
            self.transport.write(self._answer(head, body))
            request_line = head.partition(b"\r\n")[0]
            if b"\r\nconnection: close" in head or request_line.endswith(b"http/1.0"):
                self.transport.close()
                break
        self.buf = buf

    def _fail(self) -> None:
        if self.transport is not None:
            self.transport.write(BAD_REQUEST)
            self.transport.close()
        self.buf = b""

    @staticmethod
    def _answer(head: bytes, body: bytes) -> bytes:
        method, _, rest = head.partition(b"\r\n")[0].partition(b" ")
        path = rest.partition(b" ")[0].partition(b"?")[0]
        if path == b"/_mock/stats":
            return _response("200 OK", "application/json", orjson.dumps({"requests": Stats.requests}))
        Stats.requests += 1
        if path in (b"/v1/chat/completions", b"/stream/v1/chat/completions"):
            if method != b"post":
                return NOT_ALLOWED
            if path.startswith(b"/stream/") or _STREAM_TRUE.search(body):
                return SSE_RESPONSE_WITH_USAGE if _INCLUDE_USAGE.search(body) else SSE_RESPONSE
            return JSON_RESPONSE
        if path in (b"/v1/messages", b"/stream/v1/messages"):
            if method != b"post":
                return NOT_ALLOWED
            if path.startswith(b"/stream/") or _STREAM_TRUE.search(body):
                return ANTHROPIC_SSE_RESPONSE
            return ANTHROPIC_JSON_RESPONSE
        if path in (b"/v1/embeddings", b"/stream/v1/embeddings"):
            return EMBEDDINGS_RESPONSE if method == b"post" else NOT_ALLOWED
        if path in (b"/v1/models", b"/stream/v1/models"):
            return MODELS_RESPONSE if method == b"get" else NOT_ALLOWED
        return NOT_FOUND


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(MockProtocol, host, port, backlog=4096, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bound = server.sockets[0].getsockname()[1]
    # The parent reads this line to learn the port (port 0 = let the kernel pick: no race).
    sys.stdout.write(f"MOCK_PORT {bound}\n")
    sys.stdout.flush()
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:  # the bench still runs, the mock just costs a little more
        asyncio.run(serve(args.host, args.port))
    else:
        uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
