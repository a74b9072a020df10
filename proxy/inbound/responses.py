"""OpenAI's Responses API (POST /v1/responses) over the chat pipeline: a first, stateless slice.

The openai SDKs promote `responses.create`, and several frameworks use it by default. Here a request
is translated into a chat request, served by the chat pipeline on every provider kind, and translated
back:
- the answer becomes a `response` object;
- a stream becomes the documented event sequence (response.created, response.in_progress,
  response.output_item.added, response.content_part.added, response.output_text.delta and .done,
  response.function_call_arguments.delta and .done, response.output_item.done, response.completed),
  each event numbered.

Routing, retries, fallbacks, limits, budgets, data policies, the cache, logging and costs are the
chat pipeline's. The call log names the endpoint `responses`.

Request: `input` (a string, or items: messages with input_text / input_image / output_text parts,
function_call, function_call_output), `instructions`, function `tools`, `tool_choice`,
`parallel_tool_calls`, `text.format`, `reasoning.effort`, `max_output_tokens`, `temperature`,
`top_p`, `metadata`, `user`, `stream`, `store`, `previous_response_id`. Built-in tools (web_search,
file_search, ...) are a 400 naming the tool unless the route relays natively.

Native relay (`native_kind`): without policy steps, `openai` and `azure` deployments get the client's own
body (the model swapped) on their Responses API, and the answer and events come back untouched
(proxy.providers.openai.ResponsesRelayStream); they are stored all the same (render_native,
native_stream_filter).

State (`store`, on by default): the answer, this request's input items and the whole conversation
are kept per tenant with the call's log row (observability.stored_responses), as they were sent
upstream (after the data policy: pseudonyms, never the values). `previous_response_id` continues a
stored conversation on any provider; `GET /v1/responses/{id}`, `DELETE` and `input_items` read it
(proxy.inbound.response_store).
"""

from __future__ import annotations

import os
import time
from contextvars import ContextVar
from typing import Any

import orjson
from django.http import HttpRequest

from proxy import errors
from proxy.inbound import openai as inbound
from proxy.inbound import response_store
from proxy.providers.base import relays
from proxy.sse import event_data

# The request's own settings, echoed in the response object (one request per task).
REQUEST: ContextVar[dict[str, Any] | None] = ContextVar("responses_request", default=None)
# The built-in tools (web_search, ...) the request names: served only by native relay to OpenAI.
BUILT_IN_TOOLS: ContextVar[tuple[str, ...]] = ContextVar("responses_built_in_tools", default=())
# The previous_response_id the client sent (the native body may lose it to the stored conversation).
PREVIOUS: ContextVar[str] = ContextVar("responses_previous", default="")


def _new_id(prefix: str) -> str:
    return f"{prefix}_{os.urandom(12).hex()}"


def _content(parts: Any, where: str) -> str | list[dict[str, Any]]:
    if isinstance(parts, str):
        return parts
    if not isinstance(parts, list):
        raise errors.bad_request(f"'{where}' must be a string or a list of content parts.", param=where)
    out: list[dict[str, Any]] = []
    for i, part in enumerate(parts):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text") and isinstance(part.get("text"), str):
            out.append({"type": "text", "text": part["text"]})
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            image: dict[str, Any] = {"url": part["image_url"]}
            if part.get("detail") in ("low", "high", "auto"):
                image["detail"] = part["detail"]
            out.append({"type": "image_url", "image_url": image})
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            out.append({"type": "text", "text": part["refusal"]})
        else:
            raise errors.bad_request(
                f"Unsupported content part at {where}[{i}] ({kind!r}): use input_text or input_image.",
                param=f"{where}[{i}]",
                code="unsupported_value",
            )
    return out


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    raw = body.get("input")
    if isinstance(raw, str):
        messages.append({"role": "user", "content": raw})
        return messages
    if not isinstance(raw, list) or not raw:
        raise errors.bad_request("'input' must be a string or a non-empty list of items.", param="input")
    for i, item in enumerate(raw):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise errors.bad_request(f"{where} must be an object.", param=where)
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise errors.bad_request(f"{where}.role must be user, assistant, system or developer.", param=where)
            content = _content(item.get("content"), f"{where}.content")
            if role == "assistant" and isinstance(content, list):
                content = "".join(p.get("text", "") for p in content)
            messages.append({"role": role, "content": content})
        elif kind == "function_call":
            call = {
                "id": str(item.get("call_id") or item.get("id") or ""),
                "type": "function",
                "function": {"name": str(item.get("name") or ""), "arguments": str(item.get("arguments") or "")},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and last.get("tool_calls") is not None:
                last["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else orjson.dumps(output).decode()
            messages.append({"role": "tool", "tool_call_id": str(item.get("call_id") or ""), "content": text})
        elif kind == "reasoning":
            continue  # a previous answer's reasoning summary: nothing a chat model takes back
        else:
            raise errors.bad_request(f"Unsupported input item type {kind!r} at {where}.", param=where)
    return messages


def _tools(body: dict[str, Any], chat: dict[str, Any]) -> None:
    tools = body.get("tools")
    if tools:
        if not isinstance(tools, list):
            raise errors.bad_request("'tools' must be a list.", param="tools")
        converted = []
        built_in = []
        for i, tool in enumerate(tools):
            kind = tool.get("type") if isinstance(tool, dict) else None
            if kind != "function":
                # Checked once the route is known (check_plan): only OpenAI's own Responses API has them.
                built_in.append(f"{kind}@{i}")
                continue
            function = {k: tool[k] for k in ("name", "description", "parameters", "strict") if tool.get(k) is not None}
            converted.append({"type": "function", "function": function})
        if converted:
            chat["tools"] = converted
        BUILT_IN_TOOLS.set(tuple(built_in))
    choice = body.get("tool_choice")
    if isinstance(choice, str):
        chat["tool_choice"] = choice
    elif isinstance(choice, dict) and choice.get("type") == "function" and choice.get("name"):
        chat["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    if isinstance(body.get("parallel_tool_calls"), bool):
        chat["parallel_tool_calls"] = body["parallel_tool_calls"]


def _format(body: dict[str, Any], chat: dict[str, Any]) -> None:
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return
    if fmt["type"] == "json_object":
        chat["response_format"] = {"type": "json_object"}
    elif fmt["type"] == "json_schema" and isinstance(fmt.get("schema"), dict):
        schema = {"name": fmt.get("name") or "output", "schema": fmt["schema"]}
        if fmt.get("strict") is not None:
            schema["strict"] = fmt["strict"]
        chat["response_format"] = {"type": "json_schema", "json_schema": schema}
    else:
        raise errors.bad_request("text.format must be text, json_object or json_schema.", param="text.format")


def to_chat(body: dict[str, Any]) -> dict[str, Any]:
    inbound.require_model(body)
    previous = body.get("previous_response_id")
    if previous is not None and not isinstance(previous, str):
        raise errors.bad_request("'previous_response_id' must be a string.", param="previous_response_id")
    if body.get("store") is not None and not isinstance(body["store"], bool):
        raise errors.bad_request("'store' must be a boolean.", param="store", code="invalid_type")
    chat: dict[str, Any] = {"model": body["model"], "messages": _messages(body)}
    BUILT_IN_TOOLS.set(())
    PREVIOUS.set(previous or "")
    _tools(body, chat)
    _format(body, chat)
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and isinstance(reasoning.get("effort"), str):
        chat["reasoning_effort"] = reasoning["effort"]
    if body.get("max_output_tokens") is not None:
        chat["max_completion_tokens"] = body["max_output_tokens"]
    for name in ("temperature", "top_p", "user", "metadata", "service_tier"):
        if body.get(name) is not None:
            chat[name] = body[name]
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise errors.bad_request("'stream' must be a boolean.", param="stream", code="invalid_type")
    if stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    inbound.validate_chat(chat)
    return chat


# --- the answer -----------------------------------------------------------------------------------------


def _usage(usage: Any) -> dict[str, Any]:
    usage = usage if isinstance(usage, dict) else {}
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": int(cached),
            "cache_write_tokens": int((usage.get("prompt_tokens_details") or {}).get("cache_write_tokens") or 0),
        },
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": int(reasoning)},
        "total_tokens": prompt + completion,
    }


def _envelope(response_id: str, model: str, status: str) -> dict[str, Any]:
    body = REQUEST.get() or {}
    previous = PREVIOUS.get()
    text = body.get("text") if isinstance(body.get("text"), dict) else {"format": {"type": "text"}}
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": model,
        "output": [],
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": previous or None,
        "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
        "store": body.get("store") is not False,
        "temperature": body.get("temperature", 1.0),
        "text": text,
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation") or "disabled",
        "metadata": body.get("metadata") or {},
        **({"user": body["user"]} if isinstance(body.get("user"), str) else {}),
    }


def _message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
        if status == "completed"
        else [],
    }


def _call_item(item_id: str, call_id: str, name: str, arguments: str, status: str = "completed") -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def _finish(response: dict[str, Any], finish_reason: Any) -> None:
    if finish_reason == "length":
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": "max_output_tokens"}
    elif finish_reason == "content_filter":
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": "content_filter"}
    else:
        response["status"] = "completed"


def to_response(completion: dict[str, Any]) -> dict[str, Any]:
    response = _envelope(response_store.new_response_id(), str(completion.get("model") or ""), "completed")
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    content = message.get("content")
    if isinstance(content, str) and content:
        response["output"].append(_message_item(_new_id("msg"), content))
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        response["output"].append(
            _call_item(
                _new_id("fc"),
                str(call.get("id") or ""),
                str(function.get("name") or ""),
                str(function.get("arguments") or ""),
            )
        )
    _finish(response, choice.get("finish_reason"))
    response["usage"] = _usage(completion.get("usage"))
    return response


# --- state: previous_response_id and store -------------------------------------------------------------


async def prepare(call: Any, chat: dict[str, Any]) -> None:
    """Put the stored conversation a request continues (`previous_response_id`) before its own input,
    after its own instructions (instructions are never carried over), and note where its own input
    starts, for keeping it."""
    body = REQUEST.get() or {}
    instructions = isinstance(body.get("instructions"), str) and bool(body["instructions"])
    head = 1 if instructions else 0
    own_from = head
    previous = PREVIOUS.get()
    history: list[dict[str, Any]] = []
    if previous:
        stored = await response_store.load(call.key.tenant_id, previous)
        if stored is not None:
            history = list(stored["messages"])
            chat["messages"][head:head] = history
            own_from += len(history)
    # Not stored here: an id of OpenAI's own, which only a native relay to OpenAI can continue, or a
    # 404 (check_plan, once the route is known).
    call.step_state["responses"] = (head, own_from, bool(previous) and not history, history)


def check_plan(call: Any, plan: Any, relay: bool) -> None:
    """What only OpenAI's own Responses API can serve (built-in tools, a previous_response_id stored
    there) needs a native relay to an `openai` deployment; with one, the stored conversation a request
    continues goes upstream as input items (OpenAI does not know this gateway's ids)."""
    _head, _own_from, unresolved, history = call.step_state["responses"]
    deployments = plan.deployments()
    native = relay and bool(deployments) and all(relays(d.kind, "responses") for d in deployments)
    built_in = BUILT_IN_TOOLS.get()
    if built_in and not native:
        kind, _, index = built_in[0].rpartition("@")
        raise errors.bad_request(
            f"The built-in tool {kind!r} (tools[{index}]) is served only by OpenAI's own Responses API: every "
            "deployment of this model must be of kind openai or azure, with no data policy or cache rewriting the "
            "request; otherwise only function tools are.",
            param=f"tools[{index}]",
            code="unsupported_value",
        )
    previous = PREVIOUS.get()
    if unresolved and not native:
        raise response_store.not_found(previous, param="previous_response_id")
    if history and relay:
        body = REQUEST.get()
        assert body is not None
        own = body.get("input")
        own_items = [{"role": "user", "content": own}] if isinstance(own, str) else list(own or [])
        body["input"] = [*_native_items(history), *own_items]
        body.pop("previous_response_id", None)


def _native_items(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stored chat messages as input items for OpenAI's Responses API (without this gateway's item ids)."""
    items = _input_items(messages)
    for item in items:
        item.pop("id", None)
        item.pop("status", None)
    return items


def _input_items(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat messages as the Responses API's input items, with ids (GET .../input_items)."""
    items: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        content = message.get("content")
        if role == "tool":
            items.append(
                {
                    "id": _new_id("fco"),
                    "type": "function_call_output",
                    "call_id": str(message.get("tool_call_id") or ""),
                    "output": content if isinstance(content, str) else orjson.dumps(content).decode(),
                    "status": "completed",
                }
            )
            continue
        if role == "assistant":
            text = content if isinstance(content, str) else ""
            if text:
                items.append(_message_item(_new_id("msg"), text))
            for call in message.get("tool_calls") or ():
                function = call.get("function") or {}
                items.append(
                    _call_item(
                        _new_id("fc"),
                        str(call.get("id") or ""),
                        str(function.get("name")),
                        str(function.get("arguments")),
                    )
                )
            continue
        parts: list[dict[str, Any]] = []
        given: list[dict[str, Any]] = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        for part in given:
            if part.get("type") == "text":
                parts.append({"type": "input_text", "text": part.get("text") or ""})
            elif part.get("type") == "image_url":
                image = part.get("image_url") or {}
                parts.append(
                    {"type": "input_image", "image_url": image.get("url"), "detail": image.get("detail", "auto")}
                )
        items.append({"id": _new_id("msg"), "type": "message", "role": role, "status": "completed", "content": parts})
    return items


def _answer_message(response: dict[str, Any]) -> dict[str, Any]:
    """A response's output as the assistant message that continues the conversation."""
    text = "".join(
        part.get("text") or ""
        for item in response["output"]
        if item.get("type") == "message"
        for part in item.get("content") or ()
    )
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    calls = [
        {"id": item["call_id"], "type": "function", "function": {"name": item["name"], "arguments": item["arguments"]}}
        for item in response["output"]
        if item.get("type") == "function_call"
    ]
    if calls:
        message["tool_calls"] = calls
    return message


def keep(call: Any, response: dict[str, Any]) -> None:
    """Have the answer stored with the call's row (unless the request said `store: false`): what the
    provider saw, so the data policy's pseudonyms stay in place of the values."""
    body = REQUEST.get() or {}
    if body.get("store") is False or call.payload is None or call.key is None:
        return
    head, own_from, _unresolved, _history = call.step_state.get("responses", (0, 0, False, []))
    session = call.step_state.get("pii")
    kept = orjson.loads(orjson.dumps(response))
    if session is not None:
        kept = session.conceal(kept)
    sent = call.payload["messages"]
    stored = {
        "id": kept["id"],
        "previous_response_id": kept.get("previous_response_id") or "",
        "response": kept,
        "input_items": _input_items(sent[own_from:]),
        "messages": [*sent[head:], _answer_message(kept)],
    }
    call.stored = stored
    response_store.remember(call.key.tenant_id, stored)


def input_items_page(items: list[dict[str, Any]], query: Any) -> dict[str, Any]:
    """A page of a stored response's input items (`limit` 1-100, default 20; `order` desc by default;
    `after` an item id), as OpenAI's ResponseItemList."""
    try:
        limit = int(query.get("limit", 20))
    except ValueError:
        raise errors.bad_request("'limit' must be an integer between 1 and 100.", param="limit") from None
    if not 1 <= limit <= 100:
        raise errors.bad_request("'limit' must be an integer between 1 and 100.", param="limit")
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise errors.bad_request("'order' must be asc or desc.", param="order")
    ordered = items if order == "asc" else items[::-1]
    after = query.get("after")
    if after:
        ids = [item["id"] for item in ordered]
        if after not in ids:
            raise errors.bad_request(f"No input item {after[:100]!r} in this response.", param="after")
        ordered = ordered[ids.index(after) + 1 :]
    page = ordered[:limit]
    return {
        "object": "list",
        "data": page,
        "has_more": len(ordered) > limit,
        "first_id": page[0]["id"] if page else "",
        "last_id": page[-1]["id"] if page else "",
    }


class StreamTranslator:
    """chat.completion.chunk events -> the Responses API's event sequence, numbered."""

    def __init__(self, call: Any = None) -> None:
        self.call = call
        self.sequence = 0
        self.response: dict[str, Any] | None = None
        self.text_item: dict[str, Any] | None = None
        self.text = ""
        self.calls: dict[int, dict[str, Any]] = {}  # chat tool call index -> its item
        self.finish_reason: Any = None
        self.usage: Any = None
        self.done = False

    def _event(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

    def _start(self, chunk: dict[str, Any], out: list[bytes]) -> None:
        if self.response is not None:
            return
        self.response = _envelope(_new_id("resp"), str(chunk.get("model") or ""), "in_progress")
        out.append(self._event("response.created", response=self.response))
        out.append(self._event("response.in_progress", response=self.response))

    def _output_index(self) -> int:
        assert self.response is not None
        return len(self.response["output"])

    def _text(self, delta: str, out: list[bytes]) -> None:
        assert self.response is not None
        if self.text_item is None:
            self.text_item = _message_item(_new_id("msg"), "", status="in_progress")
            index = self._output_index()
            self.response["output"].append(self.text_item)
            self.text_item["_index"] = index
            item = {k: v for k, v in self.text_item.items() if k != "_index"}
            out.append(self._event("response.output_item.added", output_index=index, item=item))
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            out.append(
                self._event(
                    "response.content_part.added", item_id=item["id"], output_index=index, content_index=0, part=part
                )
            )
        self.text += delta
        out.append(
            self._event(
                "response.output_text.delta",
                item_id=self.text_item["id"],
                output_index=self.text_item["_index"],
                content_index=0,
                delta=delta,
                logprobs=[],
            )
        )

    def _call(self, piece: dict[str, Any], out: list[bytes]) -> None:
        assert self.response is not None
        index = piece.get("index", 0)
        function = piece.get("function") or {}
        item = self.calls.get(index)
        if item is None:
            item = _call_item(
                _new_id("fc"), str(piece.get("id") or ""), str(function.get("name") or ""), "", "in_progress"
            )
            item["_index"] = self._output_index()
            self.response["output"].append(item)
            self.calls[index] = item
            shown = {k: v for k, v in item.items() if k != "_index"}
            out.append(self._event("response.output_item.added", output_index=item["_index"], item=shown))
        arguments = function.get("arguments") or ""
        if arguments:
            item["arguments"] += arguments
            out.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=item["_index"],
                    delta=arguments,
                )
            )

    def _close(self, out: list[bytes]) -> None:
        assert self.response is not None
        if self.text_item is not None:
            item, index = self.text_item, self.text_item.pop("_index")
            part = {"type": "output_text", "text": self.text, "annotations": [], "logprobs": []}
            out.append(
                self._event(
                    "response.output_text.done",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    text=self.text,
                    logprobs=[],
                )
            )
            out.append(
                self._event(
                    "response.content_part.done", item_id=item["id"], output_index=index, content_index=0, part=part
                )
            )
            item.update(status="completed", content=[part])
            out.append(self._event("response.output_item.done", output_index=index, item=item))
        for item in self.calls.values():
            index = item.pop("_index")
            out.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    arguments=item["arguments"],
                )
            )
            item["status"] = "completed"
            out.append(self._event("response.output_item.done", output_index=index, item=item))
        _finish(self.response, self.finish_reason)
        self.response["usage"] = _usage(self.usage)
        kind = "response.completed" if self.response["status"] == "completed" else "response.incomplete"
        out.append(self._event(kind, response=self.response))
        self.done = True
        if self.call is not None:
            keep(self.call, self.response)

    def __call__(self, event: bytes) -> bytes | None:
        if self.done:
            return None
        data = event_data(event)
        out: list[bytes] = []
        if data == b"[DONE]":
            if self.response is not None:
                self._close(out)
            return b"".join(out) or None
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(chunk, dict):
            return None
        if "error" in chunk:
            error = chunk["error"] if isinstance(chunk["error"], dict) else {}
            self.done = True
            return self._event(
                "error", code=error.get("code"), message=str(error.get("message") or ""), param=error.get("param")
            )
        self._start(chunk, out)
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            if not isinstance(delta, dict):
                delta = {}
            content = delta.get("content")
            if isinstance(content, str) and content:
                self._text(content, out)
            for piece in delta.get("tool_calls") or ():
                if isinstance(piece, dict):
                    self._call(piece, out)
            if choice.get("finish_reason") is not None:
                self.finish_reason = choice["finish_reason"]
        return b"".join(out) or None


class ResponsesFront(inbound.OpenAIFront):
    """OpenAI's credentials and error shape (OpenAIFront); the body and the answer translated."""

    name = "responses"
    stateful = True
    # Without policy steps, a request routed to `openai` or `azure` deployments is relayed to their
    # Responses API as the client sent it (the model swapped): built-in tools, reasoning items, every
    # field this translation does not know. Other kinds are served by translation.
    native_kind = "responses"

    def parse(self, request: HttpRequest, endpoint: str) -> dict[str, Any]:
        body = inbound.parse_body(request)
        chat = to_chat(body)
        REQUEST.set(body)
        return chat

    def parse_native(self, request: HttpRequest, endpoint: str) -> tuple[dict[str, Any], dict[str, Any]]:
        body = inbound.parse_body(request)
        chat = to_chat(body)
        REQUEST.set(body)
        return chat, body

    def check_plan(self, call: Any, plan: Any, relay: bool) -> None:
        check_plan(call, plan, relay)

    def render_native(self, call: Any, body: bytes) -> bytes:
        """A relayed answer of OpenAI's Responses API, as it came: kept (store) like a translated one."""
        try:
            response = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body
        if isinstance(response, dict) and response.get("object") == "response":
            keep(call, response)
        return body

    def native_stream_filter(self, call: Any) -> Any:
        def observe(event: bytes) -> bytes:
            # The final event carries the whole response: kept (store) like a translated one.
            if event.startswith((b"event: response.completed", b"event: response.incomplete")):
                try:
                    data = orjson.loads(event_data(event))
                except orjson.JSONDecodeError:
                    return event
                if isinstance(data, dict) and isinstance(data.get("response"), dict):
                    keep(call, data["response"])
            return event

        return observe

    async def prepare(self, call: Any, payload: dict[str, Any]) -> None:
        await prepare(call, payload)

    def render(self, call: Any, body: bytes) -> bytes:
        completion = inbound.chat_completion_of(body)
        if completion is None:
            return body
        response = to_response(completion)
        keep(call, response)
        return orjson.dumps(response)

    def stream_filter(self, call: Any) -> StreamTranslator:
        return StreamTranslator(call)


RESPONSES = ResponsesFront()
