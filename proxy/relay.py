"""A streamed answer: the relay from the upstream's events to the client, and its one-time close.

`GatewayStreamResponse` is what the pipeline returns for a stream. The proxy's ASGI handler iterates
`events` itself (not Django's wrapper around it), so that a client that leaves closes the relay at
once, and calls `close` when the relay never started (the client left before the first byte).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator

from django.http import StreamingHttpResponse

from proxy.call import Call
from proxy.providers.base import UpstreamStream
from proxy.steps import StreamFilter, apply_filters

logger = logging.getLogger("gateway.proxy")


class GatewayStreamResponse(StreamingHttpResponse):
    def __init__(self, call: Call, upstream: UpstreamStream, filters: list[StreamFilter]) -> None:
        self.call = call
        self.upstream = upstream
        self.filters = filters
        self.closed = False
        self.events = self._relay()
        super().__init__(self.events, content_type="text/event-stream")
        self["cache-control"] = "no-cache"
        self["x-accel-buffering"] = "no"
        call.status = 200

    async def close_relay(self, disconnected: bool = False) -> None:
        """Close the upstream, settle and log: once, whether the relay ran, failed or never started."""
        if self.closed:
            return
        self.closed = True
        call, upstream = self.call, self.upstream
        if disconnected:
            call.disconnected = True
            call.error_type = call.error_type or "client_disconnected"
        try:
            await upstream.aclose()
        finally:
            call.set_usage(upstream.usage)
            if upstream.error_type and not call.error_type:
                # The client saw a 200 and then an error event: the log records the failure.
                call.status = 502
                call.error_type = upstream.error_type
                call.error_message = upstream.error_message
            if call.cache is not None:
                call.cache.stream_ended(call, upstream)  # stores a stream that ended cleanly
            call.finish()

    async def _relay(self) -> AsyncGenerator[bytes]:
        call, filters = self.call, self.filters
        disconnected = False
        try:
            async for event in self.upstream:
                if call.ttfb is None:
                    call.ttfb = time.perf_counter()
                # What was generated, for the estimate if the usage chunk never comes.
                call.content_events += 1
                start = event.find(b'"content":"')
                if start >= 0:
                    end = event.find(b'"', start + 11)
                    call.content_bytes += max(end - start - 11, 0)
                if not filters:
                    yield event
                    continue
                for out in apply_filters(filters, event):
                    yield out
        except (asyncio.CancelledError, GeneratorExit):
            disconnected = True
            raise
        except Exception as exc:
            logger.exception("stream relay failed")
            call.error_type = "gateway_error"
            call.error_message = f"{type(exc).__name__}: {exc}"[:1000]
        finally:
            await self.close_relay(disconnected)
