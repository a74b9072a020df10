"""Client disconnects mid-stream, and call logs surviving a normal shutdown."""

from __future__ import annotations

import signal
import socket
import time

import httpx
import pytest

from observability.models import CallLog
from tests.helpers import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_client_disconnect_cancels_the_upstream_stream_and_is_logged(gateway, acme, mint, upstream):
    key = mint(acme)
    body = b'{"model": "slow", "stream": true, "messages": [{"role": "user", "content": "long story"}]}'
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {key}\r\nx-request-id: gone-early\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
        sock.sendall(request)
        received = b""
        while received.count(b"data: ") < 3:
            received += sock.recv(65536)
    # The socket is closed mid-stream: the gateway must drop the upstream request at once.
    assert wait_for(lambda: upstream.stream_cancellations == 1, timeout=3)
    assert upstream.streams_completed == 0
    assert wait_for(lambda: CallLog.objects.filter(request_id="gone-early").exists())
    log = CallLog.objects.get(request_id="gone-early")
    assert log.client_disconnected is True
    assert log.error_type == "client_disconnected"
    assert log.ttfb_ms is not None


def test_buffered_call_logs_are_written_on_a_normal_shutdown(gateway_factory, acme, mint):
    # A flush interval far longer than the test: only the shutdown flush can write these rows.
    gateway = gateway_factory(extra_env={"GATEWAY_LOG_FLUSH_INTERVAL": "300", "GATEWAY_LOG_BATCH_SIZE": "100000"})
    key = mint(acme)
    for i in range(5):
        response = httpx.post(
            f"{gateway.url}/v1/chat/completions",
            json={"model": "local", "messages": [{"role": "user", "content": f"n{i}"}]},
            headers={"Authorization": f"Bearer {key}", "x-request-id": f"shutdown-{i}"},
        )
        assert response.status_code == 200
    time.sleep(0.3)
    assert CallLog.objects.filter(request_id__startswith="shutdown-").count() == 0
    assert gateway.stop(signal.SIGTERM) == 0
    assert CallLog.objects.filter(request_id__startswith="shutdown-").count() == 5
