"""Front ends: how a client's request is read and its answer written, per wire format.

OpenAI's (`openai.py`) and Anthropic's /v1/messages (`anthropic.py`), over the same OpenAI-format
pipeline. `Front` is the interface; relaying the client's own body to an upstream of the same
format is an optional capability (`native_kind`).
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse

from proxy.errors import ProxyError


class Front:
    name = ""
    # Upstreams of this kind speak this front end's format: without policy steps the pipeline relays
    # the client's own body to them (`parse_native`). Empty when the front end has no such kind.
    native_kind = ""
    # A front end that keeps state between calls (the Responses API's stored responses) is given the
    # authenticated call and the parsed payload before the policy steps see it (`prepare`).
    stateful = False

    def credential(self, request: HttpRequest) -> str:
        raise NotImplementedError

    def parse(self, request: HttpRequest, endpoint: str) -> dict[str, Any]:
        """The body as an OpenAI-format payload, validated for this endpoint."""
        raise NotImplementedError

    def parse_native(self, request: HttpRequest, endpoint: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the OpenAI-format payload, the client's own body): only for a front end with a native_kind."""
        raise NotImplementedError

    async def prepare(self, call: Any, payload: dict[str, Any]) -> None:
        """Complete the payload from stored state (only for a `stateful` front end)."""

    def check_plan(self, call: Any, plan: Any, relay: bool) -> None:
        """Refuse what the route cannot serve (for a front end with a native_kind); `relay`: the request may be
        relayed to upstreams of `native_kind`."""

    def render_native(self, call: Any, body: bytes) -> bytes:
        """A successful answer relayed from a same-format upstream: as it came, by default."""
        return body

    def native_stream_filter(self, call: Any) -> Any:
        """Watches a relayed stream's events (None: nothing to watch)."""
        return None

    def render(self, call: Any, body: bytes) -> bytes:
        """A successful OpenAI-format answer, as this front end's clients expect it."""
        raise NotImplementedError

    def render_upstream_error(self, call: Any, status: int, body: bytes) -> bytes:
        """A failed attempt's OpenAI-format error body, in this front end's error shape."""
        raise NotImplementedError

    def stream_filter(self, call: Any) -> Any:
        """Translates OpenAI stream events for this front end's clients; None when they need none."""
        raise NotImplementedError

    def error_response(self, exc: ProxyError) -> HttpResponse:
        raise NotImplementedError
