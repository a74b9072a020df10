"""The exact prompt cache: a policy step that answers a repeated request from a stored answer.

Keyed by tenant and the normalized request (canonical JSON of everything that changes the answer,
hashed with blake2b), so tenants never share entries, and a streamed and a JSON request for the same
prompt share one. The step runs last (after PII redaction), so it keys on the redacted request and
stores the upstream's unrestored answer: no raw personal value is ever stored, and a hit is rendered
through the earlier steps' response hooks like any upstream answer (pseudonyms restored).

Hot path: the step itself does no I/O. The lookup rides on the admission round trip (`money.admit`
pipelines a GET with the admission script on the limiter's connection); a hit reserves nothing. The
fill is spawned after the answer and leaves with the next write on that connection. Without Redis the
entries live in a bounded in-process LRU with TTL.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import time
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from django.conf import settings

from gateway_project.common.dbidentity import database_identity
from gateway_project.common.money import to_pico
from proxy.admission import outage
from proxy.background import spawn
from proxy.call import int_or_none
from proxy.limits import RedisLimiter, limiter
from proxy.providers.base import UpstreamResult, UpstreamStream
from proxy.sse import event_data
from routing.policies.spec import DEFAULT_TTL_S

if TYPE_CHECKING:
    from proxy.call import CacheHeaders, Call
    from proxy.steps import StreamFilter

logger = logging.getLogger("gateway.cache")

# Request fields that do not change the answer: a streamed and a JSON request share an entry, and so
# do two end users asking the same thing.
NON_SEMANTIC = frozenset(
    {"stream", "stream_options", "user", "metadata", "store", "service_tier", "prompt_cache_key", "safety_identifier"}
)
# Answers above this size are not stored (a few huge answers would push everything else out).
MAX_ENTRY_BYTES = 1 << 20
COMPRESS_OVER = 2048
LOCAL_MAX_ENTRIES = getattr(settings, "GATEWAY_PROMPT_CACHE_ENTRIES", 2048)
LOCAL_MAX_BYTES = getattr(settings, "GATEWAY_PROMPT_CACHE_BYTES", 64 << 20)
# "messages": chat completions asked for in Anthropic's format (proxy.inbound.anthropic), entries of their own.
CACHEABLE_ENDPOINTS = frozenset({"chat/completions", "messages", "embeddings"})


# --- keys and entries ----------------------------------------------------------------------------------


def canonical_request(endpoint: str, payload: dict[str, Any]) -> bytes:
    """The request as the cache sees it: endpoint and every field that changes the answer, with
    sorted keys (orjson sorts nested objects too), so field order never splits entries."""
    normalized = {k: v for k, v in payload.items() if k not in NON_SEMANTIC}
    return orjson.dumps([endpoint, normalized], option=orjson.OPT_SORT_KEYS)


def entry_key(tenant_id: int, model: str, canonical: bytes) -> str:
    """The store key: namespaced per tenant, and the tenant and its database are hashed in too
    (tenant ids restart in a fresh database that may share Redis with an old one)."""
    digest = hashlib.blake2b(digest_size=20, person=b"gw-prompt-cache")
    digest.update(b"%s\x00%d\x00%s\x00" % (database_identity().encode(), tenant_id, model.encode()))
    digest.update(canonical)
    return f"gw:pc:{tenant_id}:{digest.hexdigest()}"


def encode_entry(answer: dict[str, Any]) -> bytes:
    raw = orjson.dumps(answer)
    if len(raw) > COMPRESS_OVER:
        return b"z" + zlib.compress(raw, 1)
    return b"j" + raw


def decode_entry(value: bytes | None) -> dict[str, Any] | None:
    if not value:
        return None
    try:
        raw = zlib.decompress(value[1:]) if value[:1] == b"z" else value[1:]
        answer = orjson.loads(raw)
    except (zlib.error, orjson.JSONDecodeError):
        logger.warning("unreadable prompt cache entry; treated as a miss")
        return None
    return answer if isinstance(answer, dict) else None


def storable_answer(endpoint: str, answer: Any) -> bool:
    """Only successful answers with content are stored: no errors, no empty or filtered answers."""
    if not isinstance(answer, dict) or answer.get("error"):
        return False
    if endpoint == "embeddings":
        return bool(answer.get("data"))
    choices = answer.get("choices")
    if not isinstance(choices, list) or not choices:
        return False
    for choice in choices:
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict) or not (message.get("content") or message.get("tool_calls")):
            return False
        if choice.get("finish_reason") not in ("stop", "length", "tool_calls", "function_call"):
            return False
    return True


def saved_picodollars(price: Any, usage: dict[str, Any] | None) -> int | None:
    """What the stored answer's usage would cost at `price` (gateway_project.common.money.Price), as Call._cost
    prices a call; None when unpriced or without usage."""
    if price is None or not isinstance(usage, dict):
        return None
    prompt = int_or_none(usage.get("prompt_tokens"))
    if prompt is None:
        return None
    completion = int_or_none(usage.get("completion_tokens")) or 0
    details = usage.get("prompt_tokens_details")
    details = details if isinstance(details, dict) else {}
    cached = int_or_none(details.get("cached_tokens")) or 0
    written = int_or_none(details.get("cache_write_tokens")) or 0
    return to_pico(price.cost(prompt, completion, cached, written))


# --- the in-process store (no REDIS_URL) ---------------------------------------------------------------


class LocalStore:
    """An LRU with a TTL per entry, bounded in entries and in bytes, for the embedded single-process setup."""

    def __init__(self, max_entries: int = LOCAL_MAX_ENTRIES, max_bytes: int = LOCAL_MAX_BYTES) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.size = 0
        self.entries: collections.OrderedDict[str, tuple[float, bytes]] = collections.OrderedDict()

    def get(self, key: str) -> bytes | None:
        item = self.entries.get(key)
        if item is None:
            return None
        expires, value = item
        if expires <= time.monotonic():
            del self.entries[key]
            self.size -= len(value)
            return None
        self.entries.move_to_end(key)
        return value

    def set(self, key: str, value: bytes, ttl_s: int) -> None:
        old = self.entries.pop(key, None)
        if old is not None:
            self.size -= len(old[1])
        self.entries[key] = (time.monotonic() + ttl_s, value)
        self.size += len(value)
        while len(self.entries) > self.max_entries or self.size > self.max_bytes:
            _key, (_expires, evicted) = self.entries.popitem(last=False)
            self.size -= len(evicted)

    def clear(self) -> None:
        self.entries.clear()
        self.size = 0


local_store = LocalStore()


# --- replay: a stored answer as a JSON body or as SSE events -------------------------------------------


def _sse(data: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


def replay_events(answer: dict[str, Any], include_usage: bool) -> list[bytes]:
    """A stored chat completion as the chunks OpenAI would stream: each choice's role, content and tool
    calls, then its finish reason, then (when asked) the usage chunk, then [DONE]."""
    base = {
        "id": answer.get("id") or "chatcmpl-cached",
        "object": "chat.completion.chunk",
        "created": answer.get("created") or int(time.time()),
        "model": answer.get("model") or "",
    }
    if answer.get("system_fingerprint"):
        base["system_fingerprint"] = answer["system_fingerprint"]
    if include_usage:
        base["usage"] = None  # as OpenAI sends it on every chunk but the last
    events = []
    finishes = []
    for position, choice in enumerate(answer.get("choices") or ()):
        index = choice.get("index", position)
        message = choice.get("message") or {}
        delta: dict[str, Any] = {"role": "assistant", "content": message.get("content")}
        if message.get("refusal"):
            delta["refusal"] = message["refusal"]
        tool_calls = message.get("tool_calls")
        if tool_calls:
            delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(tool_calls)]
        events.append(
            _sse({**base, "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": None}]})
        )
        finishes.append(
            _sse(
                {
                    **base,
                    "choices": [
                        {"index": index, "delta": {}, "logprobs": None, "finish_reason": choice.get("finish_reason")}
                    ],
                }
            )
        )
    events += finishes
    if include_usage:
        events.append(_sse({**base, "choices": [], "usage": answer.get("usage")}))
    events.append(b"data: [DONE]\n\n")
    return events


class ReplayStream(UpstreamStream):
    """A cache hit for a streaming request: the stored answer's events, relayed like an upstream's."""

    def __init__(self, events: list[bytes], usage: dict | None) -> None:
        super().__init__()
        self._events = events
        self.usage = usage

    async def events(self):
        for event in self._events:
            yield event


class StreamAssembler:
    """Rebuilds the chat completion from a relayed stream's chunks, to store it once the stream ended
    cleanly: content, refusal and tool calls per choice, finish reasons; usage comes from the upstream.

    While the stream is relayed it only keeps the events (bytes); they are decoded in `answer()`, which
    runs in the fill spawned after the stream ended, off the relay's path."""

    __slots__ = ("choices", "done", "events", "failed", "head", "size")

    def __init__(self) -> None:
        self.head: dict[str, Any] = {}
        self.choices: dict[int, dict[str, Any]] = {}
        self.events: list[bytes] = []
        self.size = 0
        self.done = False
        self.failed = False

    def collect(self, event: bytes) -> None:
        if self.failed or self.done:
            return
        if event.startswith((b"data: [DONE]", b"data:[DONE]")):
            self.done = True
            return
        self.size += len(event)
        if self.size > MAX_ENTRY_BYTES:
            self.failed, self.events = True, []  # too big to store: stop keeping it
            return
        self.events.append(event)

    def feed(self, event: bytes) -> None:
        """Decode one chunk into the answer being built."""
        if self.failed:
            return
        data = event_data(event)
        if not data.strip():
            return  # a comment or keep-alive event
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            self.failed = True
            return
        if not isinstance(chunk, dict) or chunk.get("error"):
            self.failed = True
            return
        if not self.head:
            self.head = {k: chunk[k] for k in ("id", "created", "model", "system_fingerprint") if chunk.get(k)}
        for choice in chunk.get("choices") or ():
            index = choice.get("index", 0)
            state = self.choices.setdefault(index, {"content": [], "refusal": [], "tools": {}, "finish": None})
            delta = choice.get("delta") or {}
            if delta.get("content"):
                state["content"].append(delta["content"])
            if delta.get("refusal"):
                state["refusal"].append(delta["refusal"])
            for call in delta.get("tool_calls") or ():
                tool = state["tools"].setdefault(
                    call.get("index", 0), {"id": "", "type": "function", "name": "", "args": []}
                )
                if call.get("id"):
                    tool["id"] = call["id"]
                if call.get("type"):
                    tool["type"] = call["type"]
                function = call.get("function") or {}
                if function.get("name"):
                    tool["name"] += function["name"]
                if function.get("arguments"):
                    tool["args"].append(function["arguments"])
            if choice.get("finish_reason"):
                state["finish"] = choice["finish_reason"]

    def answer(self, usage: dict | None) -> dict[str, Any] | None:
        """The chat completion, or None when a chunk could not be read (then nothing is stored)."""
        for event in self.events:
            self.feed(event)
        self.events = []
        if self.failed:
            return None
        choices = []
        for index in sorted(self.choices):
            state = self.choices[index]
            message: dict[str, Any] = {
                "role": "assistant",
                "content": "".join(state["content"]) if state["content"] else None,
                "refusal": "".join(state["refusal"]) if state["refusal"] else None,
            }
            if state["tools"]:
                message["tool_calls"] = [
                    {"id": t["id"], "type": t["type"], "function": {"name": t["name"], "arguments": "".join(t["args"])}}
                    for _i, t in sorted(state["tools"].items())
                ]
            choices.append({"index": index, "message": message, "logprobs": None, "finish_reason": state["finish"]})
        answer = {"id": "", "created": 0, "model": "", **self.head, "object": "chat.completion", "choices": choices}
        if usage:
            answer["usage"] = usage
        return answer


# --- per call ------------------------------------------------------------------------------------------


@dataclass(slots=True)
class CacheCall:
    """The cache's part in one call (`call.cache`): what to look up, whether to store, what was found."""

    canonical: bytes
    ttl_s: int
    lookup: bool  # false with Cache-Control: no-cache
    store: bool  # false with Cache-Control: no-store
    key: str = ""
    hit: dict[str, Any] | None = None
    assembler: StreamAssembler | None = None

    def bind(self, call: Call) -> str:
        """The entry's key, for the model the call was routed to (rules and splits change the answer)."""
        if not self.key:
            assert call.key is not None  # the cache step runs after authentication
            self.key = entry_key(call.key.tenant_id, call.route or call.model, self.canonical)
        return self.key

    def lookup_key(self, call: Call) -> str:
        """The key to fetch along with the admission round trip, or "" when there is nothing to fetch
        from Redis: no lookup asked, or the in-process store (looked up right here, no I/O)."""
        if not self.lookup:
            return ""
        key = self.bind(call)
        if isinstance(limiter(), RedisLimiter):
            return key
        self.found(local_store.get(key))
        return ""

    async def fetch(self, key: str) -> None:
        """The lookup on its own, when admission has nothing to check: the call's one round trip."""
        store = limiter()
        try:
            value = await store.get(key) if isinstance(store, RedisLimiter) else local_store.get(key)
        except Exception as exc:
            outage.failed("prompt cache lookup (treated as a miss)", exc)  # one log line per outage
            return
        self.found(value)

    def found(self, value: bytes | None) -> bool:
        self.hit = decode_entry(value)
        return self.hit is not None

    def replay(self, call: Call, stream: bool, include_usage: bool) -> UpstreamResult | UpstreamStream:
        """Answer the call from the stored entry: zero upstream cost, the saved cost logged."""
        answer = self.hit or {}
        usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else None
        call.cache_status = "hit"
        deployment = call.deployment
        call.cost_saved = saved_picodollars(deployment.price if deployment is not None else None, usage)
        call.deployment = None  # no provider was called
        # Still say which model the answer stands for (the deployment the call was routed to).
        headers = {"x-gateway-model": f"{deployment.provider_name}/{deployment.upstream_model}"} if deployment else {}
        if stream:
            replayed = ReplayStream(replay_events(answer, include_usage), usage)
            replayed.headers = headers
            return replayed
        return UpstreamResult(status=200, body=orjson.dumps(answer), usage=usage, headers=headers)

    async def fill(self, call: Call, answer: dict[str, Any]) -> None:
        """Store the answer; spawned after the response went out (the SET then waits for company)."""
        if not storable_answer(call.endpoint, answer):
            return
        value = encode_entry(answer)
        if len(value) > MAX_ENTRY_BYTES:
            return
        key = self.bind(call)
        store = limiter()
        if not isinstance(store, RedisLimiter):
            local_store.set(key, value, self.ttl_s)
            return
        try:
            await store.set(key, value, self.ttl_s)
        except Exception as exc:
            outage.failed("prompt cache fill", exc)

    def stream_ended(self, call: Call, upstream: UpstreamStream) -> None:
        """Called when a relayed stream closed: store it only if it ended cleanly with [DONE]."""
        assembler = self.assembler
        if assembler is None or self.hit is not None or not self.store:
            return
        if not assembler.done or assembler.failed or upstream.error_type or call.error_type or call.disconnected:
            return
        spawn(self._fill_stream(call, assembler, upstream.usage))

    async def _fill_stream(self, call: Call, assembler: StreamAssembler, usage: dict | None) -> None:
        answer = assembler.answer(usage)
        if answer is not None:
            await self.fill(call, answer)


# --- the step ------------------------------------------------------------------------------------------


class PromptCache:
    """The compiled `cache:` policy of a tenant (Tenant.cache_policy), as a pipeline step."""

    def __init__(self, *, enabled: bool, ttl_s: int = DEFAULT_TTL_S, models: frozenset[str] | None = None) -> None:
        self.enabled = enabled
        self.ttl_s = ttl_s
        self.models = models  # None: every model

    def __repr__(self) -> str:
        return f"PromptCache(enabled={self.enabled}, ttl_s={self.ttl_s}, models={self.models})"

    def applies(self, call: Call, payload: dict[str, Any], headers: CacheHeaders | None) -> bool:
        if call.endpoint not in CACHEABLE_ENDPOINTS:
            return False
        asked = headers.use if headers is not None else None
        if asked is not None:
            return asked  # x-gateway-cache: true|false decides, whatever the policy and temperature
        if not self.enabled or (self.models is not None and call.model not in self.models):
            return False
        temperature = payload.get("temperature")
        # Sampled answers differ on purpose: only cached when the request asks (absent = not sampled here).
        return not (isinstance(temperature, int | float) and temperature > 0)

    async def on_request(self, call: Call, payload: dict[str, Any]) -> bytes | None:
        headers = call.cache_headers
        if not self.applies(call, payload, headers):
            return None
        ttl_s = headers.ttl_s if headers is not None and headers.ttl_s else self.ttl_s
        try:
            canonical = canonical_request(call.endpoint, payload)
        except orjson.JSONEncodeError:  # e.g. an integer beyond 64 bits: such a request is simply not cached
            return None
        call.cache = CacheCall(
            canonical,
            ttl_s,
            lookup=not (headers is not None and headers.no_cache),
            store=not (headers is not None and headers.no_store),
        )
        call.cache_status = "miss"
        return None

    def on_response(self, call: Call, body: bytes) -> bytes:
        cache = call.cache
        if cache is not None and cache.hit is None and cache.store and call.status == 200:
            spawn(_fill_json(call, cache, body))
        return body

    def stream_filter(self, call: Call) -> StreamFilter | None:
        cache = call.cache
        if cache is None or cache.hit is not None or not cache.store:
            return None
        assembler = cache.assembler = StreamAssembler()

        def collect(event: bytes) -> bytes:
            assembler.collect(event)
            return event

        return collect


async def _fill_json(call: Call, cache: CacheCall, body: bytes) -> None:
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return
    await cache.fill(call, answer)


# A tenant without a cache policy whose request sends x-gateway-cache: true.
ON_REQUEST = PromptCache(enabled=False)


def compile_cache(spec: dict | None) -> PromptCache | None:
    """Tenant.cache_policy, normalized by routing.policies.spec ({"enabled", "ttl_s", "models"?}), as a
    step; None when the tenant has none."""
    if spec is None:
        return None
    models = spec.get("models")
    return PromptCache(enabled=spec["enabled"], ttl_s=spec["ttl_s"], models=frozenset(models) if models else None)


def with_request_cache(steps: tuple, headers: CacheHeaders | None) -> tuple:
    """The call's steps: the tenant's, plus a cache step last when the request turns the cache on and the
    tenant has no cache policy."""
    if headers is None or not headers.use or (steps and isinstance(steps[-1], PromptCache)):
        return steps
    return (*steps, ON_REQUEST)
