"""The OpenAI-compatible API (/v1/chat/completions, /v1/embeddings, /v1/models) and Anthropic's /v1/messages.

Served by proxy.asgi.ProxyHandler: no middleware, no thread hop, no synchronous database query.
Each endpoint is one line into proxy.pipeline, which orders the phases of a call.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from django.http import HttpRequest, HttpResponse

from observability import scores
from proxy import errors, pipeline
from proxy.errors import ProxyError
from proxy.inbound import anthropic, response_store
from proxy.inbound import completions as legacy
from proxy.inbound import openai as inbound
from proxy.inbound import responses as responses_api
from proxy.lifecycle import ensure_background

logger = logging.getLogger("gateway.proxy")

__all__ = [
    "chat_completions",
    "completions",
    "count_tokens",
    "embeddings",
    "feedback",
    "messages",
    "models",
    "not_found",
    "responses",
    "stored_response",
    "stored_response_input_items",
]


async def chat_completions(request: HttpRequest) -> HttpResponse:
    return await pipeline.handle(request, "chat/completions")


async def completions(request: HttpRequest) -> HttpResponse:
    # OpenAI's legacy completions: served by the chat pipeline, translated in and out (proxy.inbound.completions).
    return await pipeline.handle(request, "chat/completions", front=legacy.COMPLETIONS, label="completions")


async def responses(request: HttpRequest) -> HttpResponse:
    # OpenAI's Responses API: served by the chat pipeline, translated in and out (proxy.inbound.responses).
    return await pipeline.handle(request, "chat/completions", front=responses_api.RESPONSES, label="responses")


async def stored_response(request: HttpRequest, response_id: str) -> HttpResponse:
    """GET (the response object) and DELETE of a stored Responses API answer, this tenant's only."""

    async def serve(key: Any) -> Any:
        if request.method == "GET":
            stored = await response_store.load(key.tenant_id, response_id)
            if stored is None:
                raise response_store.not_found(response_id)
            return stored["response"]
        if request.method == "DELETE":
            if not await response_store.delete(key.tenant_id, response_id):
                raise response_store.not_found(response_id)
            return {"id": response_id, "object": "response.deleted", "deleted": True}
        raise ProxyError(405, f"Method {request.method} is not allowed here; use GET or DELETE.")

    return await _keyed(request, serve)


async def stored_response_input_items(request: HttpRequest, response_id: str) -> HttpResponse:
    async def serve(key: Any) -> Any:
        if request.method != "GET":
            raise ProxyError(405, f"Method {request.method} is not allowed here; use GET.")
        stored = await response_store.load(key.tenant_id, response_id)
        if stored is None:
            raise response_store.not_found(response_id)
        return responses_api.input_items_page(stored["input_items"], request.GET)

    return await _keyed(request, serve)


async def feedback(request: HttpRequest) -> HttpResponse:
    """POST /v1/feedback: a score of one of this key's calls, or of any call of its tenant for an admin key
    (observability.scores)."""

    async def serve(key: Any) -> Any:
        if request.method != "POST":
            raise ProxyError(405, f"Method {request.method} is not allowed here; use POST.")
        body = inbound.parse_body(request)
        try:
            tenant = await inbound.tenant_of(key)
            stored = await scores.record_feedback(
                key.tenant_id, key.key_id, body, tenant.score_definitions, admin=key.admin
            )
        except scores.ScoreError as exc:
            raise errors.bad_request(str(exc), param=exc.param) from None
        if stored is None:
            raise ProxyError(
                404,
                "No call of this key has that id (x-gateway-call-id or x-request-id): a key scores only its own "
                "calls (an admin key every call of its tenant), and a call's log row must still be kept (the "
                "tenant's retention).",
                code="call_not_found",
            )
        return stored

    return await _keyed(request, serve)


async def _keyed(request: HttpRequest, serve: Any) -> HttpResponse:
    """A read of the key's tenant's own data (no upstream call): authenticated, answered in OpenAI's shape."""
    ensure_background()
    started = time.perf_counter()
    try:
        body = await serve(await inbound.authenticate(request))
    except ProxyError as exc:
        response = exc.response()
    except Exception:
        logger.exception("serving %s failed", request.path)
        response = errors.internal_error().response()
    else:
        response = HttpResponse(orjson.dumps(body), content_type="application/json")
    response["x-request-id"] = inbound.request_id(request)
    response["x-gateway-overhead-ms"] = f"{(time.perf_counter() - started) * 1000:.3f}"
    return response


async def embeddings(request: HttpRequest) -> HttpResponse:
    return await pipeline.handle(request, "embeddings")


async def messages(request: HttpRequest) -> HttpResponse:
    # Anthropic's Messages API: the pipeline works in OpenAI's chat format, the front end translates.
    response = await pipeline.handle(request, "chat/completions", front=anthropic.ANTHROPIC, label="messages")
    if response.has_header("x-request-id"):
        # Where the anthropic SDK reads it (`_request_id`): Anthropic's own header name.
        response["request-id"] = response["x-request-id"]
    return response


async def count_tokens(request: HttpRequest) -> HttpResponse:
    started = time.perf_counter()
    response = await _count_tokens(request)
    if response.has_header("x-request-id"):
        response["request-id"] = response["x-request-id"]
    response["x-gateway-overhead-ms"] = f"{(time.perf_counter() - started) * 1000:.3f}"  # no upstream call
    return response


async def models(request: HttpRequest, model: str | None = None) -> HttpResponse:
    ensure_background()
    started = time.perf_counter()
    request_id = inbound.request_id(request)
    try:
        if request.method != "GET":
            raise ProxyError(405, f"Method {request.method} is not allowed here; use GET.")
        key = await inbound.authenticate(request)
        tenant = await inbound.tenant_of(key)
        if model is not None:
            if model not in tenant.models or not key.may_use(model):
                raise errors.model_not_found(model)
            body: dict[str, Any] = inbound.model_object(model, tenant)
        else:
            names = sorted(n for n in tenant.models if key.may_use(n))
            body = {"object": "list", "data": [inbound.model_object(n, tenant) for n in names]}
    except ProxyError as exc:
        response = exc.response()
    except Exception:
        logger.exception("listing models failed")
        response = errors.internal_error().response()
    else:
        response = pipeline.models_response(body)
    response["x-request-id"] = request_id
    response["x-gateway-overhead-ms"] = f"{(time.perf_counter() - started) * 1000:.3f}"
    return response


async def not_found(request: HttpRequest, path: str = "") -> HttpResponse:
    started = time.perf_counter()
    exc = ProxyError(404, f"Unknown endpoint: {request.method} {request.path}", code="unknown_url")
    response = exc.response()
    response["x-request-id"] = inbound.request_id(request)
    response["x-gateway-overhead-ms"] = f"{(time.perf_counter() - started) * 1000:.3f}"
    return response


async def _count_tokens(request: HttpRequest) -> HttpResponse:
    """POST /v1/messages/count_tokens: an estimate of the prompt's input tokens; no provider is called."""
    ensure_background()
    try:
        if request.method != "POST":
            raise ProxyError(405, f"Method {request.method} is not allowed here; use POST.")
        key = await inbound.authenticate_secret(anthropic.credential(request))
        tenant = await inbound.tenant_of(key)
        chat = anthropic.to_chat(inbound.parse_body(request), count_only=True, relay=True)
        if chat["model"] not in tenant.routes or not key.may_use(chat["model"]):
            raise errors.model_not_found(chat["model"])
        response = HttpResponse(
            orjson.dumps({"input_tokens": anthropic.estimate_input_tokens(chat)}), content_type="application/json"
        )
    except ProxyError as exc:
        response = anthropic.ANTHROPIC.error_response(exc)
    except Exception:
        logger.exception("count_tokens failed")
        response = anthropic.ANTHROPIC.error_response(errors.internal_error())
    response["x-request-id"] = inbound.request_id(request)
    return response
