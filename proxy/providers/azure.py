"""Azure OpenAI: OpenAI's wire format behind per-deployment URLs, an api-version and an `api-key` header.

Differences from api.openai.com that matter here:
- the deployment is in the path and the API version in the query; the `model` field is ignored;
- a stream may start with a chunk whose `choices` is empty and that carries only
  `prompt_filter_results` (and chunks carry `content_filter_results`): relayed as they are;
- the content filter refuses a prompt with HTTP 400 and code `content_filter`, and an answer with
  `finish_reason: "content_filter"`; both reach the client as a 400 with code `content_filter`
  when nothing else was produced;
- the Responses API lives on the v1 surface (`/openai/v1/responses`, the deployment as `model`), while
  legacy completions keep the deployment path: both are relayed in the client's format.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from proxy.errors import error_body
from proxy.providers.base import CallContext, UpstreamResult, UpstreamStream, relays
from proxy.providers.openai import OpenAIAdapter
from proxy.snapshot import Deployment
from proxy.upstream import get_client

DEFAULT_API_VERSION = "2024-10-21"  # the current GA version; it supports stream_options.include_usage

ANSWER_FILTERED_MESSAGE = "The response was filtered by Azure OpenAI's content management policy."
CONTENT_FILTER_MESSAGE = (
    "The response was filtered due to the prompt triggering Azure OpenAI's content management policy."
)


def _content_filter_result(result: UpstreamResult) -> UpstreamResult:
    """Azure's content-filter refusal in OpenAI's error shape: 400, code content_filter."""
    try:
        data = orjson.loads(result.body)
        err = data["error"]
        message = str(err.get("message") or CONTENT_FILTER_MESSAGE)
        param = err.get("param")
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        message, param = CONTENT_FILTER_MESSAGE, None
    return UpstreamResult(
        status=400,
        body=error_body(message, type="invalid_request_error", param=param, code="content_filter"),
        error_type="content_filter",
        error_message=message[:2000],
        headers=result.headers,
    )


def _filtered_answer(data: Any) -> bool:
    """True when every choice was stopped by the content filter before producing anything."""
    if not isinstance(data, dict):
        return False
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        return False
    for choice in choices:
        if not isinstance(choice, dict) or choice.get("finish_reason") != "content_filter":
            return False
        message = choice.get("message") or {}
        if message.get("content") or message.get("tool_calls"):
            return False  # a partial answer is still an answer: relay it with its finish_reason
    return True


class AzureAdapter(OpenAIAdapter):
    kind = "azure"

    def prepare(self, deployment: Deployment) -> None:
        base = deployment.base_url.rstrip("/")
        version = deployment.api_version or DEFAULT_API_VERSION
        deployment.urls = {
            e: f"{base}/openai/deployments/{deployment.upstream_model}/{e}?api-version={version}"
            for e in self.endpoints
            if e != "responses"
        }
        # Azure serves the Responses API only on its OpenAI-compatible v1 surface: no deployment in the
        # path and no api-version; the deployment's name goes in the body's `model`.
        deployment.urls["responses"] = f"{base}/openai/v1/responses"
        headers = {"content-type": "application/json", "accept-encoding": "identity"}
        if deployment.api_key:
            headers["api-key"] = deployment.api_key
        deployment.headers = headers

    def headers(self, deployment: Deployment, ctx: CallContext) -> dict[str, str]:
        headers = {**deployment.headers, "x-ms-client-request-id": ctx.request_id}
        if deployment.extra_headers:
            headers.update(deployment.extra_headers)  # the operator's headers go last, like openai.py
        return headers

    def build(self, deployment: Deployment, payload: dict[str, Any], ctx: CallContext) -> httpx.Request:
        if relays(deployment.kind, ctx.native_kind):
            return self.relay(deployment, ctx)
        # Azure routes by the deployment in the URL, so the body is forwarded as the client sent it,
        # apart from asking for stream usage (a new dict: the payload may be retried elsewhere).
        if ctx.stream and not ctx.client_wants_usage:
            options = payload.get("stream_options")
            payload = {
                **payload,
                "stream_options": {**options, "include_usage": True}
                if isinstance(options, dict)
                else {"include_usage": True},
            }
        return get_client().build_request(
            "POST", deployment.urls[ctx.endpoint], content=orjson.dumps(payload), headers=self.headers(deployment, ctx)
        )

    async def send(self, deployment: Deployment, payload: dict[str, Any], ctx: CallContext) -> UpstreamResult:
        result = await super().send(deployment, payload, ctx)
        if result.status >= 400:
            return _content_filter_result(result) if _is_content_filter_error(result) else result
        if not result.native and ctx.endpoint == "chat/completions" and b'"content_filter"' in result.body:
            try:
                data = orjson.loads(result.body)
            except orjson.JSONDecodeError:
                return result
            if _filtered_answer(data):
                filtered = UpstreamResult(
                    status=400,
                    body=error_body(ANSWER_FILTERED_MESSAGE, type="invalid_request_error", code="content_filter"),
                    usage=result.usage,  # the prompt was still processed, and billed
                    error_type="content_filter",
                    error_message="finish_reason content_filter",
                    headers=result.headers,
                )
                return filtered
        return result

    async def open_stream(
        self, deployment: Deployment, payload: dict[str, Any], ctx: CallContext
    ) -> UpstreamResult | UpstreamStream:
        result = await super().open_stream(deployment, payload, ctx)
        if isinstance(result, UpstreamResult) and _is_content_filter_error(result):
            return _content_filter_result(result)
        return result


def _is_content_filter_error(result: UpstreamResult) -> bool:
    if result.status != 400 or b"content_filter" not in result.body:
        return False
    try:
        err = orjson.loads(result.body)["error"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return False
    return isinstance(err, dict) and err.get("code") == "content_filter"
