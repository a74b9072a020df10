"""The durable call log stream under a real gateway: SIGTERM under load loses no call log."""

from __future__ import annotations

import threading

import httpx
import pytest
from django.conf import settings

from observability import stream
from observability.models import CallLog
from tests.helpers import wait_for

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not settings.REDIS_URL, reason="the log stream needs Redis (REDIS_URL)"),
]


def test_a_gateway_stopped_with_sigterm_under_load_loses_no_call_log(acme, mint, gateway_factory, rds):
    secret = mint(acme, name="load")
    server = gateway_factory()
    answered: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {secret}"}, timeout=5) as http:
            while not stop.is_set():
                try:
                    response = http.post(
                        "/v1/chat/completions",
                        json={"model": "local", "messages": [{"role": "user", "content": "hi"}]},
                    )
                except httpx.HTTPError:
                    return  # the server went away
                if response.status_code == 200:
                    with lock:
                        answered.append(response.headers["x-request-id"])

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    assert wait_for(lambda: len(answered) >= 40, timeout=10)
    server.stop()  # SIGTERM while the clients keep sending
    stop.set()
    for t in threads:
        t.join(10)
    assert server.proc.returncode == 0, server.log()
    ids = set(answered)
    stored = list(CallLog.objects.filter(request_id__in=ids).values_list("request_id", flat=True))
    assert len(stored) == len(ids)  # every answered call, once
    assert set(stored) == ids
    assert rds.xlen(stream.stream_name()) == 0  # drained into the database before the process exited
