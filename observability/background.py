"""What a server process runs for the call logs, started by the ASGI lifespan (gateway_project.asgi).

Only a server process: an in-process test that drives the pipeline, a management command or
`flush_sync` keep writing straight to the database, which they then read back.
"""

from __future__ import annotations

from django.conf import settings

from observability import live, stream
from observability.logbuffer import DatabaseSink, LogBuffer, buffer
from observability.spool import Spool


def serve(log_buffer: LogBuffer = buffer) -> None:
    """The local spool (observability.spool), live logs, and with REDIS_URL the durable stream and this
    process's consumer of it.

    `LogBuffer.stop()` (lifespan shutdown) flushes into the stream and then stops the consumer, which
    drains the stream into the database first.
    """
    if settings.GATEWAY_SPOOL and log_buffer.spool is None:
        log_buffer.spool = Spool()
    if not any(isinstance(sink, live.LiveSink) for sink in log_buffer.fanout):
        log_buffer.fanout.append(live.LiveSink())
    if stream.enabled() and isinstance(log_buffer.sink, DatabaseSink):
        log_buffer.sink = stream.StreamSink(fallback=DatabaseSink(dedupe=True))
        if settings.GATEWAY_LOG_CONSUMER:
            log_buffer.consumer = stream.StreamConsumer()
            log_buffer.consumer.start()
    log_buffer.start()
