"""OpenAI's wire format on the way in and out: credentials, body parsing and validation, errors.

Pure functions over the request: no I/O except the cached key lookup in `authenticate`.
"""

from __future__ import annotations

import os
import time
from typing import Any

import orjson
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, HttpResponseBase

from proxy import errors
from proxy.call import CacheHeaders
from proxy.configcache import ConfigUnavailable, state
from proxy.errors import ProxyError
from proxy.inbound import Front
from proxy.snapshot import Deployment, KeyEntry, TenantEntry
from tenants.models import hash_secret

MAX_TAGS = 20
MAX_TAG_LENGTH = 100


def request_id(request: HttpRequest) -> str:
    given = request.META.get("HTTP_X_REQUEST_ID", "")
    # ASCII only: the id is forwarded upstream in a header, and non-ASCII header values cannot be sent.
    if given and len(given) <= 100 and given.isascii() and given.isprintable():
        return given
    return "req_" + os.urandom(12).hex()


def bearer(request: HttpRequest) -> str:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            return value.strip()
    return ""


def credential(request: HttpRequest) -> str:
    """The virtual key: `Authorization: Bearer` (OpenAI SDKs), `api-key` (Azure-style clients) or
    `x-api-key` (Anthropic-style clients, which send it to every route)."""
    return (
        bearer(request)
        or request.META.get("HTTP_API_KEY", "").strip()
        or request.META.get("HTTP_X_API_KEY", "").strip()
    )


async def authenticate(request: HttpRequest) -> KeyEntry:
    return await authenticate_secret(credential(request))


def config_unavailable(what: str) -> ProxyError:
    return ProxyError(
        503,
        f"The gateway cannot load this {what} right now: its configuration database is unreachable and this "
        "gateway process has not served it before. Keys it has served keep working; retry shortly.",
        type="server_error",
        code="gateway_unavailable",
        headers={"retry-after": "2"},
    )


async def authenticate_secret(secret: str) -> KeyEntry:
    if not secret:
        raise ProxyError(
            401,
            "You didn't provide an API key. Send your gateway virtual key as 'Authorization: Bearer sk-gw-...'.",
            code="missing_api_key",
        )
    if not secret.startswith("sk-gw-") or len(secret) > 200:
        raise errors.invalid_key()
    try:
        entry = await state.key(hash_secret(secret))
    except ConfigUnavailable:
        raise config_unavailable("key") from None
    if entry is None:
        raise errors.invalid_key()
    if entry.revoked:
        raise ProxyError(401, "This API key has been revoked.", code="invalid_api_key")
    if entry.expires_at is not None and entry.expires_at <= time.time():
        raise ProxyError(401, "This API key has expired.", code="invalid_api_key")
    return entry


async def tenant_of(key: KeyEntry) -> TenantEntry:
    try:
        tenant = await state.tenant(key.tenant_id)
    except ConfigUnavailable:
        raise config_unavailable("tenant configuration") from None
    if tenant is None:
        raise errors.invalid_key()
    return tenant


def parse_body(request: HttpRequest) -> dict[str, Any]:
    try:
        raw = request.body
    except RequestDataTooBig:
        raise ProxyError(413, "The request body is too large.", code="request_too_large") from None
    if not raw:
        raise errors.bad_request("The request body is empty; send a JSON object.", code="invalid_json")
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise errors.bad_request(f"The request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(payload, dict):
        raise errors.bad_request("The request body must be a JSON object.", code="invalid_json")
    # orjson reads 1,024 levels but writes 254: a deeper request could be parsed and then never sent
    # (nor logged). Counted only when the body has that many brackets at all (a byte count, in C).
    if raw.count(b"{") + raw.count(b"[") > MAX_DEPTH and _depth(payload) > MAX_DEPTH:
        raise errors.bad_request(
            f"The request body's JSON is nested too deeply (more than {MAX_DEPTH} levels).", code="invalid_json"
        )
    return payload


MAX_DEPTH = 128


def _depth(payload: Any) -> int:
    deepest = 0
    stack = [(payload, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > deepest:
            deepest = depth
            if deepest > MAX_DEPTH:
                return deepest
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def require_model(payload: dict[str, Any]) -> str:
    model = payload.get("model")
    if model is None:
        raise errors.bad_request("you must provide a model parameter", param="model", code="missing_required_parameter")
    if not isinstance(model, str) or not model.strip():
        raise errors.bad_request("model must be a non-empty string", param="model", code="invalid_type")
    return model


def validate_chat(payload: dict[str, Any]) -> None:
    messages = payload.get("messages")
    if messages is None:
        raise errors.bad_request(
            "Missing required parameter: 'messages'.", param="messages", code="missing_required_parameter"
        )
    if not isinstance(messages, list) or not messages:
        raise errors.bad_request(
            "'messages' must be a non-empty array of message objects.", param="messages", code="invalid_type"
        )
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise errors.bad_request(
                f"Invalid message at messages[{i}]: each message must be an object with a 'role'.",
                param=f"messages[{i}]",
                code="invalid_type",
            )
    stream = payload.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise errors.bad_request("'stream' must be a boolean.", param="stream", code="invalid_type")
    options = payload.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise errors.bad_request("'stream_options' must be an object.", param="stream_options", code="invalid_type")
    for name in ("max_tokens", "max_completion_tokens"):
        value = payload.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise errors.bad_request(f"'{name}' must be a positive integer.", param=name, code="invalid_value")


def validate_embeddings(payload: dict[str, Any]) -> None:
    value = payload.get("input")
    if value is None:
        raise errors.bad_request(
            "Missing required parameter: 'input'.", param="input", code="missing_required_parameter"
        )
    ok = (isinstance(value, str) and value != "") or (
        isinstance(value, list)
        and value
        and (
            all(isinstance(x, str) and x for x in value)
            or all(isinstance(x, int) and not isinstance(x, bool) for x in value)
            or all(isinstance(x, list) and x and all(isinstance(t, int) for t in x) for x in value)
        )
    )
    if not ok:
        raise errors.bad_request(
            "'input' must be a non-empty string, an array of non-empty strings, or token arrays.",
            param="input",
            code="invalid_value",
        )


VALIDATORS = {"chat/completions": validate_chat, "embeddings": validate_embeddings}


def tags(request: HttpRequest, key: KeyEntry) -> list[str]:
    """The key's tags plus those of the x-gateway-tags header, bounded in number and length."""
    found = [t.strip()[:MAX_TAG_LENGTH] for t in key.tags if t.strip()]
    header = request.META.get("HTTP_X_GATEWAY_TAGS", "")
    if header:
        for tag in header.split(","):
            tag = tag.strip()[:MAX_TAG_LENGTH]
            if tag and tag not in found:
                found.append(tag)
    return found[:MAX_TAGS]


def no_fallback(request: HttpRequest) -> bool:
    """x-gateway-no-fallback: true | false (absent = false)."""
    raw = request.META.get("HTTP_X_GATEWAY_NO_FALLBACK")
    if raw is None:
        return False
    value = raw.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no", ""):
        return False
    raise errors.bad_request(f"Invalid x-gateway-no-fallback header {raw!r}: use true or false.", code="invalid_header")


MAX_TIMEOUT_HEADER = 86_400.0


def timeout_header(request: HttpRequest) -> float | None:
    """x-gateway-timeout: SECONDS. It can lower the model's deadline, never raise it."""
    raw = request.META.get("HTTP_X_GATEWAY_TIMEOUT")
    if raw is None:
        return None
    try:
        value = float(raw.strip())
    except ValueError:
        value = -1.0
    if not (0 < value <= MAX_TIMEOUT_HEADER):  # also refuses nan and inf
        raise errors.bad_request(
            f"Invalid x-gateway-timeout header {raw!r}: give a number of seconds above 0 "
            f"(at most {MAX_TIMEOUT_HEADER:.0f}).",
            code="invalid_header",
        )
    return value


MAX_CACHE_TTL = 30 * 86_400


def cache_headers(request: HttpRequest) -> CacheHeaders | None:
    """x-gateway-cache, x-gateway-cache-ttl and Cache-Control; None when the request sends none of them."""
    meta = request.META
    use_raw = meta.get("HTTP_X_GATEWAY_CACHE")
    ttl_raw = meta.get("HTTP_X_GATEWAY_CACHE_TTL")
    control = meta.get("HTTP_CACHE_CONTROL")
    if use_raw is None and ttl_raw is None and control is None:
        return None
    use = None
    if use_raw is not None:
        value = use_raw.strip().lower()
        if value in ("true", "1", "yes"):
            use = True
        elif value in ("false", "0", "no"):
            use = False
        else:
            raise errors.bad_request(
                f"Invalid x-gateway-cache header {use_raw!r}: use true or false.", code="invalid_header"
            )
    ttl = None
    if ttl_raw is not None:
        value = ttl_raw.strip()
        ttl = int(value) if value.isascii() and value.isdigit() else 0
        if not (0 < ttl <= MAX_CACHE_TTL):
            raise errors.bad_request(
                f"Invalid x-gateway-cache-ttl header {ttl_raw!r}: give a whole number of seconds from 1 to "
                f"{MAX_CACHE_TTL}.",
                code="invalid_header",
            )
    directives = {d.strip().lower() for d in control.split(",")} if control else set()
    return CacheHeaders(use, ttl, "no-cache" in directives, "no-store" in directives)


def set_headers(
    response: HttpResponseBase, call_request_id: str, deployment: Deployment | None, extra: dict | None
) -> None:
    response["x-request-id"] = call_request_id
    if deployment is not None:
        response["x-gateway-model"] = f"{deployment.provider_name}/{deployment.upstream_model}"
    if extra:
        for name, value in extra.items():
            response[name] = value


def model_object(name: str, tenant: TenantEntry) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": tenant.slug}


class OpenAIFront(Front):
    """OpenAI's format in and out. The pipeline works in OpenAI's format, so this front end is the
    identity; another (Anthropic's /v1/messages) translates at these same points."""

    name = "openai"

    def credential(self, request: HttpRequest) -> str:
        return credential(request)

    def parse(self, request: HttpRequest, endpoint: str) -> dict[str, Any]:
        payload = parse_body(request)
        require_model(payload)
        VALIDATORS[endpoint](payload)
        return payload

    def render(self, call: Any, body: bytes) -> bytes:
        return body

    def render_upstream_error(self, call: Any, status: int, body: bytes) -> bytes:
        return body

    def stream_filter(self, call: Any) -> Any:
        return None

    def error_response(self, exc: ProxyError) -> HttpResponse:
        return exc.response()


OPENAI = OpenAIFront()


def chat_completion_of(body: bytes) -> dict[str, Any] | None:
    """A complete chat answer as a dict, for a front end that rewrites it into another OpenAI shape
    (legacy completions, Responses); None for anything else (left as it is)."""
    try:
        completion = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return completion if isinstance(completion, dict) and "choices" in completion else None
