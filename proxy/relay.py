"""A streamed answer: the relay from the upstream's events to the client, and its one-time close.

`GatewayStreamResponse` is what the pipeline returns for a stream. The proxy's ASGI handler iterates
`events` itself (not Django's wrapper around it), so that a client that leaves closes the relay at
once, and calls `close_relay` when the relay never started (the client left before the first byte).

The call's deadline (the route's `timeout_s`, from the request's start) covers the stream to its last
byte, and an upstream that goes quiet mid-stream for GATEWAY_STREAM_IDLE_TIMEOUT ends it sooner: one
timer per stream, armed when the relay starts (each event only notes the loop's time; the timer re-arms
itself from that when it fires early). When it fires while the relay waits on the upstream, the wait is
cancelled; the client gets an error event and the call is logged as timed out (504, upstream_timeout).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator

from django.conf import settings
from django.http import StreamingHttpResponse

from proxy.call import Call
from proxy.providers.base import UpstreamStream, stream_error_event
from proxy.steps import STREAM_END, StreamFilter, apply_filters

logger = logging.getLogger("gateway.proxy")


TIMEOUT_MESSAGE = "The upstream stream did not finish within this model's timeout ({:g} s)"
IDLE_MESSAGE = "The upstream stream sent nothing for {:g} s (GATEWAY_STREAM_IDLE_TIMEOUT)"


async def _tails(filters: list[StreamFilter]) -> list[bytes]:
    """What filters with a `tail` (an output guardrail that calls a model) send once the upstream is done:
    each tail's events pass the filters after it, like any event."""
    out: list[bytes] = []
    for i, stream_filter in enumerate(filters):
        tail = getattr(stream_filter, "tail", None)
        if tail is not None:
            for event in await tail():
                if joined := _one_write(apply_filters(filters[i + 1 :], event)):
                    out.append(joined)
    return out


def _one_write(events: list[bytes]) -> bytes:
    """The events made of one upstream event (a translation's several) as one write: the same bytes, one
    ASGI send instead of several."""
    return events[0] if len(events) == 1 else b"".join(events)


class GatewayStreamResponse(StreamingHttpResponse):
    def __init__(
        self, call: Call, upstream: UpstreamStream, filters: list[StreamFilter], deadline: float | None = None
    ) -> None:
        self.call = call
        self.upstream = upstream
        self.filters = filters
        self.closed = False
        self.deadline = deadline  # time.perf_counter() value
        self.expired = False
        self.idle_s = settings.GATEWAY_STREAM_IDLE_TIMEOUT
        self.idled = False  # expired by the idle timeout, not the deadline
        self._last = 0.0  # the loop's time at the latest upstream event
        self._deadline_at = 0.0  # the deadline on the loop's clock
        self._waiting = False  # the relay awaits the upstream's next event (cancel-safe to interrupt)
        self._task: asyncio.Task | None = None
        self._timer: asyncio.TimerHandle | None = None
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

    def _arm(self) -> None:
        self._task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        self._last = now = loop.time()
        # perf_counter and the loop's clock (monotonic) share no origin: convert once.
        self._deadline_at = now + (self.deadline - time.perf_counter()) if self.deadline is not None else float("inf")
        self._schedule(loop)

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        at = min(self._deadline_at, self._last + self.idle_s) if self.idle_s > 0 else self._deadline_at
        if at != float("inf"):
            self._timer = loop.call_at(at, self._expire)

    def _expire(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now < self._deadline_at and not (self.idle_s > 0 and now - self._last >= self.idle_s):
            self._schedule(loop)  # events came since it was set: not idle yet
            return
        self.expired = True
        self.idled = now < self._deadline_at
        if self._waiting and self._task is not None:
            self._task.cancel()

    async def _relay(self) -> AsyncGenerator[bytes]:
        call, filters = self.call, self.filters
        disconnected = False
        self._arm()
        clock = asyncio.get_running_loop().time
        events = self.upstream.__aiter__()
        try:
            while not self.expired:
                self._waiting = True
                try:
                    event = await anext(events)
                except StopAsyncIteration:
                    break
                except asyncio.CancelledError:
                    if not self.expired or self._task is None or self._task.uncancel():
                        raise  # not (only) our deadline: a disconnect or a shutdown
                    break
                finally:
                    self._waiting = False
                self._last = clock()
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
                out = _one_write(apply_filters(filters, event))
                if out:
                    yield out
                if call.step_state.get(STREAM_END):
                    break  # a filter ended the stream (an output guardrail's error event): read no more
            for out in await self._closing():
                yield out
        except (asyncio.CancelledError, GeneratorExit):
            disconnected = True
            raise
        except Exception as exc:
            logger.exception("stream relay failed")
            call.error_type = "gateway_error"
            call.error_message = f"{type(exc).__name__}: {exc}"[:1000]
        finally:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._task = None  # the task holds this response: no cycle left for the garbage collector
            await self.close_relay(disconnected)

    async def _closing(self) -> list[bytes]:
        """The last events: the filters' tails when the upstream finished, the timeout's error event when the
        deadline ended it."""
        filters = self.filters
        if self.expired:
            final = self._timed_out()
            return apply_filters(filters, final) if filters else [final]
        if filters and not self.call.step_state.get(STREAM_END):
            return await _tails(filters)
        return []

    def _timed_out(self) -> bytes:
        call = self.call
        if self.idled:
            message = IDLE_MESSAGE.format(self.idle_s)
        else:
            message = TIMEOUT_MESSAGE.format(round((self.deadline or 0.0) - call.started, 3))
        call.status = 504
        call.error_type = "upstream_timeout"
        call.error_message = message
        return stream_error_event(message, "upstream_timeout")
