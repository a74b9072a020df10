"""The provider adapter interface.

One adapter per provider family translates an OpenAI-format request into the provider's, and the
provider's answer, stream events, usage and errors back into OpenAI's format. The proxy view only
ever sees OpenAI-shaped bytes plus a usage dict.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from proxy.state import Deployment


@dataclass(slots=True)
class CallContext:
    request_id: str
    endpoint: str  # "chat/completions" | "embeddings"
    stream: bool
    # The client asked for stream usage itself (stream_options.include_usage); otherwise the gateway
    # asks the upstream for it and hides the extra chunk from the client.
    client_wants_usage: bool = False
    started: float = 0.0


@dataclass(slots=True)
class UpstreamResult:
    """A complete (non-streamed) answer, or an error before any stream byte."""

    status: int
    body: bytes
    usage: dict | None = None
    content_type: str = "application/json"
    error_type: str = ""
    error_message: str = ""
    headers: dict[str, str] = field(default_factory=dict)


class UpstreamStream:
    """An open stream: iterate to get OpenAI SSE events as bytes; usage is set when seen."""

    status = 200

    def __init__(self) -> None:
        self.usage: dict | None = None
        self.error_type = ""
        self.error_message = ""
        self.headers: dict[str, str] = {}

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.events()

    async def events(self) -> AsyncIterator[bytes]:  # pragma: no cover - interface
        raise NotImplementedError
        yield b""

    async def aclose(self) -> None:
        return None


class ProviderAdapter:
    kind: str = ""
    endpoints: frozenset[str] = frozenset({"chat/completions", "embeddings"})

    def prepare(self, deployment: Deployment) -> None:
        """Precompute per-deployment URLs and headers when the tenant config is loaded."""

    async def send(self, deployment: Deployment, payload: dict[str, Any], ctx: CallContext) -> UpstreamResult:
        raise NotImplementedError

    async def open_stream(
        self, deployment: Deployment, payload: dict[str, Any], ctx: CallContext
    ) -> UpstreamResult | UpstreamStream:
        raise NotImplementedError
