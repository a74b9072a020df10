"""The exact prompt cache: hits for JSON and streams, the request headers, TTLs, tenant isolation, what
a hit costs and logs, and the Redis round trips it takes. Driven in process through pipeline.handle
against the fake OpenAI upstream (which records every call it gets)."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
import redis
from django.conf import settings
from django.test import RequestFactory

from gateway_project.common.money import pico_to_nanos_ceil
from observability.logbuffer import buffer
from proxy import background as tasks
from proxy import lifecycle, limits, pipeline, redis_wire
from proxy.configcache import state
from proxy.relay import GatewayStreamResponse
from proxy.steps import cache as prompt_cache
from tenants.config import apply_config
from tenants.models import Tenant, hash_secret
from tests.helpers import LOOPBACK, UPSTREAM_KEY
from tests.openapi import validate

# Module-wide tenants (committed once, removed at the end); each test runs in its own rolled-back
# transaction, and reads the call log rows as the pipeline hands them to the log buffer.
pytestmark = pytest.mark.django_db

PRICED_MODELS = ("gpt-4o-mini", "tool-call", "no-done")


def tenant_yaml(slug: str, base_url: str, extra: str = "") -> str:
    models = "".join(
        f"  - name: {m}\n    deployments:\n      - provider: main\n        model: {m}\n" for m in PRICED_MODELS
    )
    prices = "".join(f"  - model: {m}\n    input: 1000\n    output: 2000\n" for m in PRICED_MODELS)
    return (
        f"tenant: {slug}\nname: {slug.title()} Corp\nproviders:\n  - name: main\n    kind: openai-compatible\n"
        f"    base_url: {base_url}\n    api_key: env:FAKE_UPSTREAM_KEY\nmodels:\n{models}prices:\n{prices}{extra}"
    )


BUDGET = "budgets:\n  - scope: tenant\n    limit_usd: 100\n    period: month\n    mode: hard\n"
POLICY = {"enabled": True, "ttl_s": 600}


@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker, fake_openai):
    """Alice's cache-acme (hard budget, cache on), Bob's cache-globex (cache on) and Carol's cache-initech
    (no cache policy), with a key each."""
    from tenants.audit import Actor
    from tenants.services import virtual_key_create

    with django_db_blocker.unblock(), pytest.MonkeyPatch.context() as mp:
        mp.setenv("FAKE_UPSTREAM_KEY", UPSTREAM_KEY)
        mp.setattr(settings, "GATEWAY_PRIVATE_UPSTREAMS", LOOPBACK)  # the fake upstream lives on loopback
        acme, _ = apply_config(tenant_yaml("cache-acme", fake_openai.base_url, BUDGET))
        globex, _ = apply_config(tenant_yaml("cache-globex", fake_openai.base_url))
        initech, _ = apply_config(tenant_yaml("cache-initech", fake_openai.base_url))
        Tenant.objects.filter(id__in=[acme.id, globex.id]).update(cache_policy=POLICY)
        people = {
            name: virtual_key_create(tenant, name=f"{name}-app", actor=Actor.cli())[1]
            for name, tenant in (("alice", acme), ("bob", globex), ("carol", initech))
        }
    yield {"acme": acme, "globex": globex, "initech": initech, **people}
    with django_db_blocker.unblock():
        Tenant.objects.filter(id__in=[acme.id, globex.id, initech.id]).delete()
    state.clear()


@pytest.fixture(autouse=True)
def logged(db, world, upstream, monkeypatch) -> list[dict]:
    """The call log rows of this test. No entries, budget counters or loaded config are left from the
    test before."""
    monkeypatch.setattr(lifecycle, "_started", True)  # no background tasks on these short-lived loops
    rows: list[dict] = []
    monkeypatch.setattr(buffer, "add", rows.append)
    r = redis.Redis.from_url(settings.REDIS_URL)
    for tenant in (world["acme"], world["globex"], world["initech"]):
        stale = list(r.scan_iter(f"gw:pc:{tenant.id}:*"))
        stale += [k for b in tenant.budgets.all() for k in r.scan_iter(f"gw:b:{b.id}:*")]
        if stale:
            r.delete(*stale)
    prompt_cache.local_store.clear()
    state.clear()
    return rows


def budget_keys(tenant) -> list[bytes]:
    r = redis.Redis.from_url(settings.REDIS_URL)
    return [k for b in tenant.budgets.all() for k in r.scan_iter(f"gw:b:{b.id}:*")]


def body(content: str = "What is a cache?", **extra) -> dict:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}], **extra}


async def post(
    secret: str, payload: dict, headers: dict | None = None, *, drain: bool = True, endpoint: str = "chat/completions"
):
    """One request; then, unless told not to, wait for what it spawned after its answer (the cache fill,
    the settlement), as a client's next request would come after a network round trip."""
    meta = {"HTTP_" + name.upper().replace("-", "_"): value for name, value in (headers or {}).items()}
    request = RequestFactory().post(
        f"/v1/{endpoint}",
        data=orjson.dumps(payload),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {secret}",
        **meta,
    )
    response = await pipeline.handle(request, endpoint)
    stream = response.events if isinstance(response, GatewayStreamResponse) else None
    content = b"".join([chunk async for chunk in stream]) if stream is not None else response.content
    if drain:
        await tasks.drain()
    return response, content


def run(coro_fn):
    """Run requests on one loop, and let the fills and settlements spawned after the answers finish."""

    async def go():
        result = await coro_fn()
        await tasks.drain()
        return result

    return asyncio.run(go())


def chunks(raw: bytes) -> list[dict]:
    events = [e for e in raw.split(b"\n\n") if e.strip()]
    assert events[-1] == b"data: [DONE]"
    return [orjson.loads(e[6:]) for e in events[:-1]]


def streamed_text(raw: bytes) -> str:
    return "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks(raw) if c["choices"])


def test_a_repeated_prompt_is_answered_from_the_cache_without_the_upstream(world, upstream):
    async def go():
        return await post(world["alice"], body()), await post(world["alice"], body())

    (first, first_body), (second, second_body) = run(go)
    assert (first.status_code, first["x-gateway-cache"]) == (200, "miss")
    assert (second.status_code, second["x-gateway-cache"], second["x-gateway-attempts"]) == (200, "hit", "0")
    assert second["x-gateway-model"] == first["x-gateway-model"]  # the model the answer stands for
    assert upstream.calls("gpt-4o-mini") == 1
    answer = orjson.loads(second_body)
    validate(answer, "CreateChatCompletionResponse")
    assert answer["choices"] == orjson.loads(first_body)["choices"]
    assert answer["usage"]["prompt_tokens"] > 0


def test_a_stream_is_stored_and_replayed_to_json_and_stream_requests(world, upstream):
    async def go():
        await post(world["alice"], body(stream=True))
        as_json = await post(world["alice"], body())
        as_stream = await post(world["alice"], body(stream=True, stream_options={"include_usage": True}))
        return as_json, as_stream

    (json_response, json_body), (stream_response, stream_body) = run(go)
    assert upstream.calls("gpt-4o-mini") == 1
    assert json_response["x-gateway-cache"] == stream_response["x-gateway-cache"] == "hit"
    assert json_response["x-gateway-model"] and stream_response["x-gateway-model"] == json_response["x-gateway-model"]
    answer = orjson.loads(json_body)
    validate(answer, "CreateChatCompletionResponse")
    assert answer["choices"][0]["message"]["content"] == "Hello from the fake upstream."
    assert answer["choices"][0]["finish_reason"] == "stop"
    replayed = chunks(stream_body)
    for chunk in replayed:
        validate(chunk, "CreateChatCompletionStreamResponse")
    assert streamed_text(stream_body) == "Hello from the fake upstream."
    assert [c["choices"][0]["finish_reason"] for c in replayed if c["choices"]][-1] == "stop"
    # The usage the upstream reported (hidden from the first client, who did not ask) is replayed last.
    assert replayed[-1]["choices"] == [] and replayed[-1]["usage"] == answer["usage"]


def test_a_json_answer_is_replayed_as_a_stream_without_usage_unless_asked(world, upstream):
    async def go():
        await post(world["alice"], body())
        return await post(world["alice"], body(stream=True))

    response, raw = run(go)
    assert response["x-gateway-cache"] == "hit"
    assert upstream.calls("gpt-4o-mini") == 1
    for chunk in chunks(raw):
        validate(chunk, "CreateChatCompletionStreamResponse")
        assert "usage" not in chunk
    assert streamed_text(raw) == "Hello from the fake upstream."


def test_tool_calls_survive_both_ways(world, upstream):
    tool = body(model="tool-call", tools=[{"type": "function", "function": {"name": "get_weather"}}])
    tool["model"] = "tool-call"

    async def go():
        await post(world["alice"], {**tool, "stream": True})  # stored from a stream whose arguments come in pieces
        as_json = await post(world["alice"], tool)
        other = {**tool, "messages": [{"role": "user", "content": "and in Rome?"}]}
        await post(world["alice"], other)  # stored from JSON
        as_stream = await post(world["alice"], {**other, "stream": True})
        return as_json, as_stream

    (_r1, json_body), (r2, stream_body) = run(go)
    assert upstream.calls("tool-call") == 2
    answer = orjson.loads(json_body)
    validate(answer, "CreateChatCompletionResponse")
    call = answer["choices"][0]["message"]["tool_calls"][0]
    assert call["id"] == "call_fake_weather1"
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'}
    assert answer["choices"][0]["finish_reason"] == "tool_calls"
    assert r2["x-gateway-cache"] == "hit"
    replayed = chunks(stream_body)
    for chunk in replayed:
        validate(chunk, "CreateChatCompletionStreamResponse")
    streamed = [tc for c in replayed for tc in (c["choices"][0]["delta"].get("tool_calls") or [])]
    assert streamed[0]["function"]["arguments"] == '{"city": "Paris", "unit": "celsius"}'
    assert replayed[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_embeddings_are_cached_too(world, upstream):
    payload = {"model": "gpt-4o-mini", "input": ["one", "two"]}

    async def go():
        first = await post(world["alice"], payload, endpoint="embeddings")
        return first, await post(world["alice"], payload, endpoint="embeddings")

    (first, first_raw), (second, second_raw) = run(go)
    assert (first["x-gateway-cache"], second["x-gateway-cache"]) == ("miss", "hit")
    assert len([r for r in upstream.requests if r.path == "/v1/embeddings"]) == 1
    assert orjson.loads(second_raw) == orjson.loads(first_raw)
    validate(orjson.loads(second_raw), "CreateEmbeddingResponse")


def test_an_unfinished_stream_is_never_stored(world, upstream):
    async def go():
        await post(world["alice"], body(model="no-done", stream=True))
        return await post(world["alice"], body(model="no-done", stream=True))

    response, _raw = run(go)
    assert response["x-gateway-cache"] == "miss"
    assert upstream.calls("no-done") == 2


def test_alice_and_bob_never_share_an_entry(world, upstream):
    async def go():
        await post(world["alice"], body())
        return await post(world["bob"], body()), await post(world["alice"], body())

    (bob, _), (alice, _) = run(go)
    assert bob["x-gateway-cache"] == "miss"  # same prompt, same model name, other tenant
    assert alice["x-gateway-cache"] == "hit"
    assert upstream.calls("gpt-4o-mini") == 2
    r = redis.Redis.from_url(settings.REDIS_URL)
    assert len(list(r.scan_iter(f"gw:pc:{world['acme'].id}:*"))) == 1
    assert len(list(r.scan_iter(f"gw:pc:{world['globex'].id}:*"))) == 1


def test_entries_expire_after_their_ttl(world, upstream):
    async def go():
        first = await post(world["alice"], body(), {"x-gateway-cache-ttl": "1"})
        await asyncio.sleep(1.1)
        return first, await post(world["alice"], body())

    (first, _), (later, _) = run(go)
    assert first["x-gateway-cache"] == later["x-gateway-cache"] == "miss"
    assert upstream.calls("gpt-4o-mini") == 2
    # The policy's TTL otherwise.
    r = redis.Redis.from_url(settings.REDIS_URL)
    assert [0 < r.ttl(k) <= 600 for k in r.scan_iter(f"gw:pc:{world['acme'].id}:*")] == [True]


def test_cache_control_and_the_request_headers(world, upstream):
    async def go():
        await post(world["alice"], body("one"), {"cache-control": "no-store"})
        not_stored = await post(world["alice"], body("one"))  # stored now
        skipped = await post(world["alice"], body("one"), {"Cache-Control": "max-age=0, no-cache"})
        hit = await post(world["alice"], body("one"))
        off = await post(world["alice"], body("one"), {"x-gateway-cache": "false"})
        return not_stored, skipped, hit, off

    (not_stored, _), (skipped, _), (hit, _), (off, _) = run(go)
    assert not_stored["x-gateway-cache"] == "miss"
    assert skipped["x-gateway-cache"] == "miss"
    assert hit["x-gateway-cache"] == "hit"
    assert "x-gateway-cache" not in off
    assert upstream.calls("gpt-4o-mini") == 4


def test_sampled_requests_are_cached_only_when_the_request_asks(world, upstream):
    warm = body("tell a story", temperature=0.7)

    async def go():
        await post(world["alice"], warm)
        plain = await post(world["alice"], warm)
        await post(world["alice"], warm, {"x-gateway-cache": "true"})
        asked = await post(world["alice"], warm, {"x-gateway-cache": "true"})
        return plain, asked

    (plain, _), (asked, _) = run(go)
    assert "x-gateway-cache" not in plain
    assert asked["x-gateway-cache"] == "hit"
    assert upstream.calls("gpt-4o-mini") == 3


def test_the_header_turns_the_cache_on_for_a_tenant_without_a_policy(world, upstream):
    async def go():
        plain = await post(world["carol"], body())
        await post(world["carol"], body(), {"x-gateway-cache": "true"})
        return plain, await post(world["carol"], body(), {"x-gateway-cache": "true"})

    (plain, _), (asked, _) = run(go)
    assert "x-gateway-cache" not in plain
    assert asked["x-gateway-cache"] == "hit"


@pytest.mark.parametrize(
    ("header", "value"), [("x-gateway-cache", "maybe"), ("x-gateway-cache-ttl", "-5"), ("x-gateway-cache-ttl", "1.5")]
)
def test_invalid_cache_headers_are_refused_in_openai_format(world, upstream, header, value):
    response, raw = run(lambda: post(world["alice"], body(), {header: value}))
    assert response.status_code == 400
    error = orjson.loads(raw)["error"]
    assert error["code"] == "invalid_header" and header in error["message"]
    assert upstream.calls("gpt-4o-mini") == 0


def test_a_hit_reserves_nothing_costs_nothing_and_logs_what_it_saved(world, upstream, logged):
    async def go():
        return await post(world["alice"], body()), await post(world["alice"], body())

    (miss, _), (hit, _) = run(go)
    miss_row, hit_row = ({r["request_id"]: r for r in logged}[resp["x-request-id"]] for resp in (miss, hit))
    assert miss_row["cache_status"] == "miss" and miss_row["cost_picodollars"] > 0
    assert miss_row["cost_saved_picodollars"] is None
    assert hit_row["cache_status"] == "hit"
    assert (hit_row["cost_picodollars"], hit_row["attempts"], hit_row["provider"]) == (0, [], "")
    # The stored usage at the deployment's price: the same answer cost exactly this upstream.
    assert hit_row["cost_saved_picodollars"] == miss_row["cost_picodollars"]
    assert hit_row["prompt_tokens"] == miss_row["prompt_tokens"]
    r = redis.Redis.from_url(settings.REDIS_URL)
    keys = budget_keys(world["acme"])
    reservations = [k for k in keys if k.endswith(b":res")]
    assert reservations and all(int(r.hget(k, "_total") or 0) == 0 for k in reservations)
    # The period's spend holds the miss alone.
    spent = [int(r.get(k)) for k in keys if r.type(k) == b"string"]
    assert spent == [pico_to_nanos_ceil(miss_row["cost_picodollars"])]


class _Flushes:
    """Each write the limiter's pipelined connection makes: the commands that left together."""

    def __init__(self, monkeypatch) -> None:
        self.writes: list[list[bytes]] = []
        original = redis_wire.Connection._flush
        flushes = self

        def flush(conn) -> None:
            if conn.out:
                flushes.writes.append([part.split(b"\r\n")[2] for part in conn.out])
            original(conn)

        monkeypatch.setattr(redis_wire.Connection, "_flush", flush)


def test_a_lookup_rides_on_the_admission_round_trip(world, upstream, monkeypatch):
    flushes = _Flushes(monkeypatch)

    async def go():
        await post(world["alice"], body("warm up the connection"))
        before_miss = len(flushes.writes)
        await post(world["alice"], body(), drain=False)
        at_miss = flushes.writes[before_miss:]
        await tasks.drain()
        after_miss = flushes.writes[before_miss:]
        before_hit = len(flushes.writes)
        response, _ = await post(world["alice"], body(), drain=False)
        at_hit = flushes.writes[before_hit:]
        await tasks.drain()
        after_hit = flushes.writes[before_hit:]
        return at_miss, after_miss, at_hit, after_hit, response

    at_miss, after_miss, at_hit, after_hit, response = run(go)
    assert response["x-gateway-cache"] == "hit"
    # One write before each answer: the GET went out with the admission script (the budget check).
    assert at_miss == [[b"GET", b"EVALSHA"]]
    assert at_hit == [[b"GET", b"EVALSHA"]]
    # The fill went out after the miss's answer, with the settlement.
    assert sorted(c for write in after_miss[1:] for c in write) == [b"EVALSHA", b"SET"]
    # After a hit: only the release of what admission recorded, and no second fill.
    assert [c for write in after_hit[1:] for c in write] == [b"EVALSHA"]


def test_without_admission_the_lookup_is_the_only_round_trip(world, upstream, monkeypatch):
    flushes = _Flushes(monkeypatch)

    async def go():
        await post(world["bob"], body("warm up"))  # globex: no limits and no budget
        before = len(flushes.writes)
        response, _ = await post(world["bob"], body("warm up"), drain=False)
        return flushes.writes[before:], response

    writes, response = run(go)
    assert response["x-gateway-cache"] == "hit"
    assert writes == [[b"GET"]]


def test_a_tenant_without_cache_pays_no_lookup(world, upstream, monkeypatch):
    flushes = _Flushes(monkeypatch)
    response, _ = run(lambda: post(world["carol"], body()))
    assert "x-gateway-cache" not in response
    assert flushes.writes == []


def test_the_in_process_store_serves_hits_without_redis(world, upstream, monkeypatch):
    monkeypatch.setattr(limits, "_limiter", limits.LocalLimiter())

    async def go():
        await post(world["alice"], body(stream=True))
        return await post(world["alice"], body())

    response, raw = run(go)
    assert response["x-gateway-cache"] == "hit"
    assert orjson.loads(raw)["choices"][0]["message"]["content"] == "Hello from the fake upstream."
    assert upstream.calls("gpt-4o-mini") == 1
    assert len(prompt_cache.local_store.entries) == 1


def test_a_hit_answers_the_anthropic_front_in_its_own_format(world, upstream):
    from proxy.inbound import anthropic

    async def messages(stream: bool):
        request = RequestFactory().post(
            "/v1/messages",
            data=orjson.dumps({**body(), "max_tokens": 100, "stream": stream}),
            content_type="application/json",
            HTTP_X_API_KEY=world["alice"],
        )
        response = await pipeline.handle(request, "chat/completions", front=anthropic.ANTHROPIC, label="messages")
        raw = b"".join([c async for c in response.events]) if stream else response.content
        await tasks.drain()
        return response, raw

    async def go():
        await messages(False)
        return await messages(False), await messages(True)

    (as_json, json_raw), (as_stream, stream_raw) = run(go)
    assert as_json["x-gateway-cache"] == as_stream["x-gateway-cache"] == "hit"
    assert upstream.calls("gpt-4o-mini") == 1
    message = orjson.loads(json_raw)
    assert message["type"] == "message" and message["content"][0]["text"] == "Hello from the fake upstream."
    assert b"event: message_start" in stream_raw and b"event: message_stop" in stream_raw
    assert b"Hello" in stream_raw


class _Pseudonymize:
    """Stands in for the PII step: swaps an email for a placeholder on the way up, restores it on the way
    down (answers and stream events), as the real step does."""

    async def on_request(self, call, payload):
        message = payload["messages"][-1]
        message["content"] = message["content"].replace("alice@acme.test", "<EMAIL_1>")

    def on_response(self, call, body):
        return body.replace(b"fake", b"alice@acme.test")

    def stream_filter(self, call):
        return lambda event: event.replace(b"fake", b"alice@acme.test")


def test_the_cache_stores_the_redacted_request_and_unrestored_answer_and_restores_hits(world, upstream):
    async def go():
        key = await state.key(hash_secret(world["alice"]))
        tenant = await state.tenant(key.tenant_id)
        tenant.steps = (_Pseudonymize(), *tenant.steps)
        first = await post(world["alice"], body("mail alice@acme.test", stream=True))
        json_hit = await post(world["alice"], body("mail alice@acme.test"))
        stream_hit = await post(world["alice"], body("mail alice@acme.test", stream=True))
        return first, json_hit, stream_hit

    (_first, first_raw), (json_hit, json_raw), (stream_hit, stream_raw) = run(go)
    assert upstream.requests[-1].body["messages"][-1]["content"] == "mail <EMAIL_1>"
    assert json_hit["x-gateway-cache"] == stream_hit["x-gateway-cache"] == "hit"
    assert b"alice@acme.test" in first_raw and b"alice@acme.test" in json_raw and b"alice@acme.test" in stream_raw
    r = redis.Redis.from_url(settings.REDIS_URL)
    stored = [prompt_cache.decode_entry(r.get(k)) for k in r.scan_iter(f"gw:pc:{world['acme'].id}:*")]
    assert len(stored) == 1
    assert b"alice@acme.test" not in orjson.dumps(stored[0]) and b"fake" in orjson.dumps(stored[0])


def test_with_the_pii_step_the_cache_keys_on_the_redacted_prompt(world, upstream):
    from proxy.steps.pii import pii_step

    async def go():
        key = await state.key(hash_secret(world["alice"]))
        tenant = await state.tenant(key.tenant_id)
        tenant.steps = (pii_step({"mode": "enforce", "detectors": {"email": "pseudonymize"}}), *tenant.steps)
        await post(world["alice"], body("write to alice@acme.test"))
        same = await post(world["alice"], body("write to alice@acme.test", stream=True))
        # Another address redacts to the same request: the stored answer serves it too.
        other = await post(world["alice"], body("write to carol@initech.test"))
        return same, other

    (same, _), (other, _) = run(go)
    assert same["x-gateway-cache"] == other["x-gateway-cache"] == "hit"
    assert upstream.calls("gpt-4o-mini") == 1
    assert upstream.requests[-1].body["messages"][-1]["content"] == "write to <EMAIL_1>"
    r = redis.Redis.from_url(settings.REDIS_URL)
    stored = [r.get(k) for k in r.scan_iter(f"gw:pc:{world['acme'].id}:*")]
    assert len(stored) == 1 and b"acme.test" not in stored[0]


# --- pure functions -----------------------------------------------------------------------------------


def test_the_key_ignores_field_order_and_non_semantic_fields_but_not_the_prompt():
    base = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
    same = {"temperature": 0, "user": "carol", "stream": True, "stream_options": {"include_usage": True}, **base}
    canonical = prompt_cache.canonical_request("chat/completions", base)
    assert canonical == prompt_cache.canonical_request("chat/completions", same)
    for changed in ({**base, "temperature": 0.5}, {**base, "tools": []}, {**base, "messages": []}):
        assert prompt_cache.canonical_request("chat/completions", changed) != canonical
    assert prompt_cache.canonical_request("embeddings", base) != canonical
    assert prompt_cache.entry_key(1, "m", canonical) != prompt_cache.entry_key(2, "m", canonical)
    assert prompt_cache.entry_key(1, "m", canonical) != prompt_cache.entry_key(1, "n", canonical)
    assert prompt_cache.entry_key(1, "m", canonical).startswith("gw:pc:1:")


def test_the_in_process_store_is_a_bounded_lru_with_ttl(monkeypatch):
    store = prompt_cache.LocalStore(max_entries=2)
    store.set("a", b"1", 60)
    store.set("b", b"2", 60)
    assert store.get("a") == b"1"  # now the most recently used
    store.set("c", b"3", 60)
    assert (store.get("a"), store.get("b"), store.get("c")) == (b"1", None, b"3")
    now = time.monotonic()
    monkeypatch.setattr(prompt_cache.time, "monotonic", lambda: now + 61)
    assert store.get("a") is None and len(store.entries) == 1
    # Bounded in bytes too: one big entry pushes the others out.
    by_size = prompt_cache.LocalStore(max_entries=100, max_bytes=10)
    by_size.set("a", b"12345", 60)
    by_size.set("b", b"12345", 60)
    by_size.set("c", b"123456", 60)
    assert list(by_size.entries) == ["c"] and by_size.size == 6


def test_the_assembler_rebuilds_a_stream_and_refuses_what_it_cannot_read():
    assembler = prompt_cache.StreamAssembler()
    for event in (
        b": keep-alive\n\n",
        b'data: {"id":"c1","created":5,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"}}]}\n\n',
        b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":" there"},"finish_reason":"stop"}]}\n\n',
        b"data: [DONE]\n\n",
        b'data: {"after":"done"}\n\n',
    ):
        assembler.collect(event)
    assert assembler.done
    answer = assembler.answer({"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5})
    assert answer["choices"][0]["message"]["content"] == "Hi there"
    assert (answer["id"], answer["created"], answer["choices"][0]["finish_reason"]) == ("c1", 5, "stop")
    broken = prompt_cache.StreamAssembler()
    broken.collect(b"data: {not json\n\n")
    assert broken.answer(None) is None


def test_entries_round_trip_compressed_or_not_and_only_answers_with_content_are_storable():
    small = {"choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}]}
    large = {"choices": [{"message": {"content": "x" * 10_000}, "finish_reason": "stop"}]}
    assert prompt_cache.encode_entry(small)[:1] == b"j" and prompt_cache.encode_entry(large)[:1] == b"z"
    assert prompt_cache.decode_entry(prompt_cache.encode_entry(large)) == large
    assert prompt_cache.decode_entry(b"zgarbage") is None
    assert prompt_cache.storable_answer("chat/completions", small)
    for bad in (
        {"error": {"message": "x"}},
        {"choices": []},
        {"choices": [{"message": {"content": ""}, "finish_reason": "stop"}]},
        {"choices": [{"message": {"content": "x"}, "finish_reason": "content_filter"}]},
    ):
        assert not prompt_cache.storable_answer("chat/completions", bad)
