"""The correctness pre-check: a fast wrong answer is not a result.

Before any load, one JSON request and streamed requests (with and without
stream_options.include_usage) go through each target. Each must be HTTP 200 and carry exactly what
the mock said; otherwise the bench stops with a non-zero exit. Blocking http.client is plenty here.
"""

from __future__ import annotations

import http.client
import time
from dataclasses import dataclass

import orjson

from tests.bench.payloads import JSON_ANSWER, STREAM_ANSWER, request_body
from tests.bench.procs import BenchError, Managed

TIMEOUT = 10.0


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


def call(host: str, port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> Reply:
    conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()  # http.client undoes chunked encoding for us
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
    finally:
        conn.close()


def wait_until_answers(
    what: str, process: Managed, port: int, path: str, headers: dict[str, str], timeout: float, interval: float
) -> None:
    """Poll GET `path` on loopback until it answers 200, at most `timeout` seconds; BenchError (with the
    log's tail) when the process exits first or the time runs out."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        if process.proc.poll() is not None:
            raise BenchError(f"{what} exited with status {process.proc.returncode}:\n{process.log_tail()}")
        try:
            reply = call("127.0.0.1", port, "GET", path, headers=headers)
        except OSError as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            if reply.status == 200:
                return
            last = f"HTTP {reply.status}: {reply.body[:300]!r}"
        time.sleep(interval)
    raise BenchError(f"{what} was not ready within {timeout:.0f} s ({last}):\n{process.log_tail()}")


def _fail(what: str, reply: Reply, why: str) -> BenchError:
    return BenchError(f"pre-check failed: {what}: {why}\nHTTP {reply.status}, body: {reply.body[:800]!r}")


def check_json(what: str, reply: Reply) -> None:
    if reply.status != 200:
        raise _fail(what, reply, "expected HTTP 200")
    try:
        data = orjson.loads(reply.body)
        content = data["choices"][0]["message"]["content"]
        usage = data["usage"]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        raise _fail(what, reply, "not a chat.completion with choices and usage") from None
    if data.get("object") != "chat.completion" or content != JSON_ANSWER:
        raise _fail(what, reply, "not the mock's chat.completion")
    if not isinstance(usage, dict) or usage.get("total_tokens") != 74:
        raise _fail(what, reply, "usage block missing or altered")


def check_stream(what: str, reply: Reply, *, expect_usage: bool) -> None:
    if reply.status != 200:
        raise _fail(what, reply, "expected HTTP 200")
    if not reply.headers.get("content-type", "").startswith("text/event-stream"):
        raise _fail(what, reply, f"content-type is {reply.headers.get('content-type')!r}, not text/event-stream")
    events = [e for e in reply.body.replace(b"\r\n", b"\n").split(b"\n\n") if e.strip()]
    if not events or events[-1].strip() != b"data: [DONE]":
        raise _fail(what, reply, "the stream doesn't end with data: [DONE]")
    text, finish, usage_chunks = "", None, 0
    for event in events[:-1]:
        if not event.startswith(b"data: "):
            raise _fail(what, reply, f"unexpected event {event[:120]!r}")
        try:
            chunk = orjson.loads(event[6:])
        except orjson.JSONDecodeError:
            raise _fail(what, reply, f"event is not JSON: {event[:120]!r}") from None
        if chunk.get("object") != "chat.completion.chunk":
            raise _fail(what, reply, f"not a chat.completion.chunk: {event[:120]!r}")
        if chunk.get("usage"):
            usage_chunks += 1
        for choice in chunk.get("choices") or ():
            text += (choice.get("delta") or {}).get("content") or ""
            finish = choice.get("finish_reason") or finish
    if text != STREAM_ANSWER:
        raise _fail(what, reply, f"streamed text is {text!r}, expected {STREAM_ANSWER!r}")
    if finish != "stop":
        raise _fail(what, reply, "no finish_reason 'stop' chunk")
    if usage_chunks != (1 if expect_usage else 0):
        want = "one usage chunk" if expect_usage else "no usage chunk (the client didn't ask for one)"
        raise _fail(what, reply, f"expected {want}, got {usage_chunks}")


def precheck(
    label: str, host: str, port: int, json_path: str, stream_path: str, headers: dict[str, str], models: tuple[str, str]
) -> None:
    """One JSON and two stream requests against a target; raises BenchError on any deviation."""
    json_model, stream_model = models
    reply = call(host, port, "POST", json_path, request_body(json_model, stream=False), headers)
    check_json(f"{label} JSON", reply)
    reply = call(host, port, "POST", stream_path, request_body(stream_model, stream=True), headers)
    check_stream(f"{label} stream", reply, expect_usage=False)
    reply = call(host, port, "POST", stream_path, request_body(stream_model, stream=True, include_usage=True), headers)
    check_stream(f"{label} stream with include_usage", reply, expect_usage=True)


def mock_requests(port: int) -> int:
    """How many requests the mock has answered so far."""
    reply = call("127.0.0.1", port, "GET", "/_mock/stats")
    return int(orjson.loads(reply.body)["requests"])
