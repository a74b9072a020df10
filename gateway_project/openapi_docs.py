"""The /v1 gateway API in the OpenAPI document, beside the management API that DRF describes itself.

The proxy views are plain async Django views (no DRF, for speed), so drf-spectacular cannot see them.
This postprocessing hook adds them by hand under the tag "Gateway API (/v1)": the OpenAI-compatible
endpoints, the headers the gateway adds, and the error format with the statuses it answers with.
Keep it in step with proxy/urls.py (tests/tenants/test_api_docs.py checks the paths).
"""

from __future__ import annotations

import copy
from typing import Any

TAG = "Gateway API (/v1)"
SECURITY = "gatewayKey"

_ERROR_CODES = {
    "400": "Malformed JSON or body; `error.param` names the parameter.",
    "401": "Missing, unknown, revoked or expired virtual key (`invalid_api_key`).",
    "404": "A model this key may not use, that the tenant lacks, or that does not exist (all identical);"
    " also an unknown /v1 path (`unknown_url`).",
    "413": "The request body is too large (`request_too_large`).",
    "429": "A rate limit (`rate_limit_exceeded`) or a hard budget (`budget_exceeded`) refused the call;"
    " see `Retry-After` and the `x-ratelimit-*` headers.",
    "502": "The upstream provider could not be reached, or refused the connection (`upstream_blocked`).",
    "503": "The gateway cannot serve the call right now (`gateway_unavailable`, `budget_unavailable`);"
    " retry after `Retry-After` seconds.",
    "504": "The upstream provider timed out.",
}

_HEADER = {"schema": {"type": "string"}}
_COMMON_HEADERS = {
    "x-request-id": {**_HEADER, "description": "Yours if the request sent one, else a new id. Quote it to support."},
    "x-gateway-model": {
        **_HEADER,
        "description": "`provider/upstream-model` of the deployment that served the call.",
    },
    "x-gateway-overhead-ms": {
        **_HEADER,
        "description": "Milliseconds spent in the gateway itself, upstream time excluded (for a stream: until"
        " its headers went out).",
    },
}
_RATE_HEADERS = {
    f"x-ratelimit-{what}-{kind}": {
        "schema": {"type": "string"},
        "description": f"{desc} ({'requests' if kind == 'requests' else 'tokens'}), for the tightest limit.",
    }
    for kind in ("requests", "tokens")
    for what, desc in (
        ("limit", "The limit per minute"),
        ("remaining", "What is left this minute"),
        ("reset", "Time until the window resets, e.g. `1s`"),
    )
}
_RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait before retrying."}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_SCHEMAS: dict[str, Any] = {
    "GatewayError": {
        "type": "object",
        "description": "OpenAI's error format.",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string", "example": "invalid_request_error"},
                    "param": {"type": "string", "nullable": True},
                    "code": {"type": "string", "nullable": True, "example": "model_not_found"},
                },
            }
        },
    },
    "GatewayChatRequest": {
        "type": "object",
        "required": ["model", "messages"],
        "additionalProperties": True,
        "description": "OpenAI's chat completion request; other OpenAI parameters are passed through.",
        "properties": {
            "model": {"type": "string", "description": "A model name of your tenant that the key may use."},
            "messages": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"role": {"type": "string"}, "content": {}},
                    "required": ["role"],
                },
            },
            "stream": {"type": "boolean", "description": "Answer as server-sent events, chunk by chunk."},
            "max_tokens": {"type": "integer"},
            "temperature": {"type": "number"},
            "user": {"type": "string", "description": "Your end user's id; budgets can apply per end user."},
        },
    },
    "GatewayChatResponse": {
        "type": "object",
        "additionalProperties": True,
        "description": "OpenAI's chat completion object (or, with `stream: true`, `text/event-stream` chunks).",
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string", "example": "chat.completion"},
            "model": {"type": "string"},
            "choices": {"type": "array", "items": {"type": "object"}},
            "usage": {"type": "object"},
        },
    },
    "GatewayEmbeddingsRequest": {
        "type": "object",
        "required": ["model", "input"],
        "additionalProperties": True,
        "properties": {
            "model": {"type": "string"},
            "input": {"oneOf": [{"type": "string"}, {"type": "array", "items": {}}]},
        },
    },
    "GatewayEmbeddingsResponse": {
        "type": "object",
        "additionalProperties": True,
        "properties": {
            "object": {"type": "string", "example": "list"},
            "data": {"type": "array", "items": {"type": "object"}},
            "model": {"type": "string"},
            "usage": {"type": "object"},
        },
    },
    "GatewayResponsesRequest": {
        "type": "object",
        "required": ["model", "input"],
        "additionalProperties": True,
        "properties": {
            "model": {"type": "string"},
            "input": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}]},
            "instructions": {"type": "string"},
            "tools": {"type": "array", "items": {"type": "object"}},
            "text": {"type": "object"},
            "max_output_tokens": {"type": "integer"},
            "stream": {"type": "boolean"},
        },
    },
    "GatewayResponse": {
        "type": "object",
        "additionalProperties": True,
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string", "example": "response"},
            "status": {"type": "string", "example": "completed"},
            "output": {"type": "array", "items": {"type": "object"}},
            "usage": {"type": "object"},
        },
    },
    "GatewayFeedbackRequest": {
        "type": "object",
        "required": ["value"],
        "properties": {
            "call_id": {"type": "string"},
            "request_id": {"type": "string"},
            "name": {"type": "string", "default": "thumbs"},
            "value": {"type": "number"},
            "weight": {"type": "number", "minimum": 0, "maximum": 1, "default": 1},
            "comment": {"type": "string", "maxLength": 2000},
            "metadata": {"type": "object"},
        },
    },
    "GatewayFeedback": {
        "type": "object",
        "properties": {
            "object": {"type": "string", "example": "feedback"},
            "id": {"type": "integer"},
            "call_id": {"type": "string"},
            "request_id": {"type": "string"},
            "name": {"type": "string"},
            "value": {"type": "number"},
            "weight": {"type": "number"},
        },
    },
    "GatewayResponseDeleted": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string", "example": "response.deleted"},
            "deleted": {"type": "boolean"},
        },
    },
    "GatewayResponseItemList": {
        "type": "object",
        "properties": {
            "object": {"type": "string", "example": "list"},
            "data": {"type": "array", "items": {"type": "object"}},
            "has_more": {"type": "boolean"},
            "first_id": {"type": "string"},
            "last_id": {"type": "string"},
        },
    },
    "GatewayCompletionsRequest": {
        "type": "object",
        "required": ["model", "prompt"],
        "additionalProperties": True,
        "properties": {
            "model": {"type": "string"},
            "prompt": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
            "max_tokens": {"type": "integer", "default": 16},
            "echo": {"type": "boolean"},
            "stream": {"type": "boolean"},
        },
    },
    "GatewayCompletionsResponse": {
        "type": "object",
        "additionalProperties": True,
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string", "example": "text_completion"},
            "choices": {"type": "array", "items": {"type": "object"}},
            "usage": {"type": "object"},
        },
    },
    "GatewayModel": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string", "example": "model"},
            "created": {"type": "integer"},
            "owned_by": {"type": "string"},
        },
    },
    "GatewayKey": {
        "type": "object",
        "properties": {
            "object": {"type": "string", "example": "gateway.key"},
            "name": {"type": "string"},
            "tenant": {"type": "string"},
            "models": {"type": "array", "items": {"type": "string"}},
            "expires_at": {"type": "string", "format": "date-time", "nullable": True},
            "metadata": {"type": "object"},
            "limits": {
                "type": "object",
                "properties": {
                    name: {"type": "integer", "nullable": True}
                    for name in ("rpm", "tpm", "max_parallel", "tenant_rpm", "tenant_tpm")
                },
            },
            "spend": {
                "type": "object",
                "nullable": True,
                "description": "The key's own budget period and its spend, when the key has a budget.",
                "properties": {
                    "period": {"type": "string"},
                    "period_key": {"type": "string"},
                    "usd": {"type": "string", "example": "1.25"},
                },
            },
            "budgets": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "scope": {"type": "string", "example": "key:web"},
                        "period": {"type": "string", "enum": ["day", "week", "month", "total"]},
                        "period_key": {"type": "string", "example": "2026-12"},
                        "hard": {"type": "boolean"},
                        "limit_usd": {"type": "string"},
                        "spent_usd": {"type": "string"},
                        "remaining_usd": {"type": "string"},
                    },
                },
            },
        },
    },
    "GatewayModelList": {
        "type": "object",
        "properties": {
            "object": {"type": "string", "example": "list"},
            "data": {"type": "array", "items": _ref("GatewayModel")},
        },
    },
}


_SCHEMAS |= {
    "AnthropicError": {
        "type": "object",
        "description": "Anthropic's error format, for /v1/messages.",
        "required": ["type", "error"],
        "properties": {
            "type": {"type": "string", "example": "error"},
            "error": {
                "type": "object",
                "required": ["type", "message"],
                "properties": {
                    "type": {"type": "string", "example": "rate_limit_error"},
                    "message": {"type": "string"},
                },
            },
        },
    },
    "AnthropicMessageRequest": {
        "type": "object",
        "description": "Anthropic's Messages API request: model (a public model of the tenant), max_tokens,"
        " messages, and optionally system, tools, tool_choice, stop_sequences, temperature, top_p,"
        " metadata and stream.",
        "required": ["model", "max_tokens", "messages"],
        "properties": {
            "model": {"type": "string"},
            "max_tokens": {"type": "integer", "minimum": 1},
            "messages": {"type": "array", "items": {"type": "object"}},
            "system": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}]},
            "stream": {"type": "boolean"},
        },
    },
    "AnthropicMessage": {
        "type": "object",
        "description": "Anthropic's message: content blocks (text, tool_use), stop_reason and usage.",
        "properties": {
            "id": {"type": "string"},
            "type": {"type": "string", "example": "message"},
            "role": {"type": "string", "example": "assistant"},
            "model": {"type": "string"},
            "content": {"type": "array", "items": {"type": "object"}},
            "stop_reason": {"type": "string", "nullable": True},
            "usage": {"type": "object"},
        },
    },
    "AnthropicTokenCount": {
        "type": "object",
        "properties": {"input_tokens": {"type": "integer"}},
    },
}


def _anthropic_operation(operation_id: str, summary: str, description: str, ok: str, errors: list[str]) -> dict:
    return {
        "operationId": operation_id,
        "tags": [TAG],
        "summary": summary,
        "description": description,
        "security": [{SECURITY: []}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("AnthropicMessageRequest")}}},
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": _ref(ok)}}},
            **{
                code: {
                    "description": _ERROR_CODES[code],
                    "content": {"application/json": {"schema": _ref("AnthropicError")}},
                }
                for code in errors
            },
        },
    }


def _errors(codes: list[str]) -> dict[str, Any]:
    out = {}
    for code in codes:
        headers = dict(_COMMON_HEADERS)
        if code in ("429", "503"):
            headers |= _RETRY_AFTER | (_RATE_HEADERS if code == "429" else {})
        out[code] = {
            "description": _ERROR_CODES[code],
            "headers": headers,
            "content": {"application/json": {"schema": _ref("GatewayError")}},
        }
    return out


def _operation(
    operation_id: str, summary: str, description: str, ok: str, errors: list[str], body: str | None = None
) -> dict:
    op: dict[str, Any] = {
        "operationId": operation_id,
        "tags": [TAG],
        "summary": summary,
        "description": description,
        "security": [{SECURITY: []}],
        "responses": {
            "200": {
                "description": "OK",
                "headers": {**_COMMON_HEADERS, **_RATE_HEADERS},
                "content": {"application/json": {"schema": _ref(ok)}},
            },
            **_errors(errors),
        },
    }
    if body:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(body)}}}
    return op


_RESPONSE_ID = {"name": "response_id", "in": "path", "required": True, "schema": {"type": "string"}}

CALL_ERRORS = ["400", "401", "404", "413", "429", "502", "503", "504"]

PATHS: dict[str, Any] = {
    "/v1/chat/completions": {
        "post": _operation(
            "gateway_chat_completions_create",
            "Chat completion",
            "OpenAI-compatible. Routed to the tenant's deployments of `model`, in order. With `stream: true`"
            " the answer is `text/event-stream`, relayed chunk by chunk.",
            "GatewayChatResponse",
            CALL_ERRORS,
            body="GatewayChatRequest",
        )
    },
    "/v1/embeddings": {
        "post": _operation(
            "gateway_embeddings_create",
            "Embeddings",
            "OpenAI-compatible.",
            "GatewayEmbeddingsResponse",
            CALL_ERRORS,
            body="GatewayEmbeddingsRequest",
        )
    },
    "/v1/responses": {
        "post": _operation(
            "gateway_responses_create",
            "Response (Responses API)",
            "OpenAI's Responses API, served by the chat pipeline on every provider kind: `input` items, function"
            " tools, `text.format`. With `stream: true`, the documented numbered event sequence. `store` (on by"
            " default) keeps the answer for this tenant, as it was sent upstream; `previous_response_id` continues"
            " it on any provider (404 `response_not_found` for an unknown one).",
            "GatewayResponse",
            CALL_ERRORS,
            body="GatewayResponsesRequest",
        )
    },
    "/v1/responses/{response_id}": {
        "get": {
            **_operation(
                "gateway_responses_retrieve",
                "Retrieve a stored response",
                "A response stored for this key's tenant (`store`), as it was sent upstream: the data policy's"
                " pseudonyms, never the values. 404 `response_not_found` for another tenant's or a deleted one.",
                "GatewayResponse",
                ["401", "404"],
            ),
            "parameters": [_RESPONSE_ID],
        },
        "delete": {
            **_operation(
                "gateway_responses_delete",
                "Delete a stored response",
                "Deletes it and its input items; 404 `response_not_found` when there is none.",
                "GatewayResponseDeleted",
                ["401", "404"],
            ),
            "parameters": [_RESPONSE_ID],
        },
    },
    "/v1/responses/{response_id}/input_items": {
        "get": {
            **_operation(
                "gateway_responses_input_items_list",
                "List a stored response's input items",
                "Paginated: `limit` (1-100, default 20), `order` (`desc` by default, or `asc`), `after` (an item id).",
                "GatewayResponseItemList",
                ["400", "401", "404"],
            ),
            "parameters": [
                _RESPONSE_ID,
                {"name": "limit", "in": "query", "required": False, "schema": {"type": "integer", "default": 20}},
                {
                    "name": "order",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "enum": ["asc", "desc"]},
                },
                {"name": "after", "in": "query", "required": False, "schema": {"type": "string"}},
            ],
        }
    },
    "/v1/feedback": {
        "post": _operation(
            "gateway_feedback_create",
            "Score a call",
            "A quality score of one of this key's calls (an admin key: of any call of its tenant): `call_id` (the"
            " `x-gateway-call-id` header) or `request_id`, `name` (default `thumbs`, 0 or 1; others as defined"
            " under `scores:`), `value`, `weight` (0 to 1), `comment`, `metadata`. A later score with the same"
            " name replaces the earlier one. 404 `call_not_found` for another key's call (unless this is an admin"
            " key) or another tenant's.",
            "GatewayFeedback",
            ["400", "401", "404"],
            body="GatewayFeedbackRequest",
        )
    },
    "/v1/completions": {
        "post": _operation(
            "gateway_completions_create",
            "Completion (legacy)",
            "OpenAI's legacy completions, served by the chat pipeline: the prompt becomes one user message."
            " `suffix`, `logprobs`, `best_of` above 1, token prompts and several prompts are a 400.",
            "GatewayCompletionsResponse",
            CALL_ERRORS,
            body="GatewayCompletionsRequest",
        )
    },
    "/v1/messages": {
        "post": _anthropic_operation(
            "gateway_messages_create",
            "Message (Anthropic format)",
            "Anthropic's Messages API over the same keys, routing, limits, budgets and logs. The virtual key goes"
            " in `x-api-key` or `Authorization: Bearer`. Translated for non-Anthropic deployments; relayed"
            " untouched (apart from the model) to Anthropic ones. With `stream: true`, Anthropic's event stream.",
            "AnthropicMessage",
            CALL_ERRORS,
        )
    },
    "/v1/messages/count_tokens": {
        "post": _anthropic_operation(
            "gateway_messages_count_tokens",
            "Count tokens (Anthropic format)",
            "An estimate of the request's input tokens; no provider is called.",
            "AnthropicTokenCount",
            ["400", "401", "404"],
        )
    },
    "/v1/gateway/key": {
        "get": _operation(
            "gateway_key_retrieve",
            "This key",
            "The calling key's name, models, limits and budgets with this period's spend: no management token"
            " needed, and nothing of any other key.",
            "GatewayKey",
            ["401", "503"],
        )
    },
    "/v1/models": {
        "get": _operation(
            "gateway_models_list",
            "List models",
            "Only the models this key may use.",
            "GatewayModelList",
            ["401", "503"],
        )
    },
    "/v1/models/{model}": {
        "get": {
            **_operation(
                "gateway_models_retrieve",
                "Retrieve a model",
                "404 for a model this key may not use.",
                "GatewayModel",
                ["401", "404", "503"],
            ),
            "parameters": [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}],
        }
    },
}


_JSONRPC = {
    "type": "object",
    "description": "One JSON-RPC 2.0 message of the Model Context Protocol (no batches).",
    "required": ["jsonrpc"],
    "properties": {
        "jsonrpc": {"type": "string", "enum": ["2.0"]},
        "id": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
        "method": {"type": "string"},
        "params": {"type": "object"},
        "result": {"type": "object"},
        "error": {
            "type": "object",
            "properties": {"code": {"type": "integer"}, "message": {"type": "string"}, "data": {}},
        },
    },
}


def _mcp_operation(operation_id: str, summary: str, description: str) -> dict:
    error = {"content": {"application/json": {"schema": _JSONRPC}}}
    return {
        "operationId": operation_id,
        "tags": [TAG],
        "summary": summary,
        "description": description,
        "security": [{SECURITY: []}],
        "parameters": [
            {"name": "Mcp-Session-Id", "in": "header", "required": False, "schema": {"type": "string"}},
            {"name": "MCP-Protocol-Version", "in": "header", "required": False, "schema": {"type": "string"}},
        ],
        "requestBody": {"required": True, "content": {"application/json": {"schema": _JSONRPC}}},
        "responses": {
            "200": {
                "description": "The answer: JSON, or server-sent events (progress, then the answer) for a tools/call"
                " with a progress token from a client that accepts text/event-stream.",
                "headers": {"Mcp-Session-Id": {"schema": {"type": "string"}}},
                "content": {
                    "application/json": {"schema": _JSONRPC},
                    "text/event-stream": {"schema": {"type": "string"}},
                },
            },
            "202": {"description": "A notification or a response, accepted."},
            "400": {"description": "Not one JSON-RPC message, or no session id.", **error},
            "401": {"description": "Missing, unknown, revoked or expired key.", **error},
            "403": {"description": "The key has no MCP access.", **error},
            "404": {
                "description": "Unknown session (send initialize again), or a server this key may not use.",
                **error,
            },
        },
    }


MCP_PATHS: dict[str, Any] = {
    "/mcp": {
        "post": _mcp_operation(
            "gateway_mcp",
            "MCP (every server of the key)",
            "The Model Context Protocol over Streamable HTTP: the tenant's MCP servers that this key may use, tools"
            " and prompts named `<server>__<name>`. tools/list shows only the key's tools; other tools are refused"
            " without being relayed. Each tool call is logged, limited and passes the data policy.",
        ),
        "delete": {
            "operationId": "gateway_mcp_end",
            "tags": [TAG],
            "summary": "End an MCP session",
            "security": [{SECURITY: []}],
            "responses": {"204": {"description": "Ended."}},
        },
    },
    "/mcp/{server}": {
        "post": {
            **_mcp_operation(
                "gateway_mcp_server",
                "MCP (one server)",
                "One of the tenant's MCP servers, with its own tool and prompt names; 404 for a server this key may"
                " not use.",
            ),
        },
    },
}
MCP_PATHS["/mcp/{server}"]["post"]["parameters"] = [
    {"name": "server", "in": "path", "required": True, "schema": {"type": "string"}},
    *MCP_PATHS["/mcp"]["post"]["parameters"],
]
PATHS.update(MCP_PATHS)


def add_gateway_api(result: dict, generator: Any, request: Any, public: bool) -> dict:
    """drf-spectacular POSTPROCESSING_HOOKS entry: add the /v1 paths, their schemas and the key scheme."""
    # Copies: the schema is cached and rendered per request; nobody may edit the module's templates.
    result.setdefault("paths", {}).update(copy.deepcopy(PATHS))
    components = result.setdefault("components", {})
    components.setdefault("schemas", {}).update(copy.deepcopy(_SCHEMAS))
    components.setdefault("securitySchemes", {})[SECURITY] = {
        "type": "http",
        "scheme": "bearer",
        "description": "A virtual key (`sk-gw-…`) as `Authorization: Bearer <key>`; the `api-key` header works too.",
    }
    tags = [t for t in result.get("tags", []) if t.get("name") != TAG]
    tags.append(
        {
            "name": TAG,
            "description": "The OpenAI-compatible API your applications call with a virtual key. Point an OpenAI"
            " SDK's base URL at `<gateway>/v1`. Errors use OpenAI's format.",
        }
    )
    result["tags"] = tags
    return result
