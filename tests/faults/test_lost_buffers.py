"""No answered call unlogged or unbilled when what carries its log row dies: a gateway process
SIGKILLed with rows still in its memory buffer, or a Redis killed (no persistence) while its call-log
stream holds rows no consumer has written yet. The local spool (observability.spool) has every row;
a gateway of the same database stores what the database lacks, with its ledger entry, once.

Each test ends with the same checks: the client's 200s are the call-log rows, and the ledger equals
the call logs (row for row, and in total)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import httpx
import pytest
import redis
from django.db.models import Sum

from billing.models import SpendLedger
from billing.selectors import reconcile
from observability.models import CallLog
from tests.helpers import free_port, wait_for
from tests.helpers.redis_server import start_redis

# Rows stay in the memory buffer: no flush in the test's time (the spool has them from the first write).
HOLD_ROWS = {"GATEWAY_LOG_FLUSH_INTERVAL": "120", "GATEWAY_LOG_BATCH_SIZE": "100000"}
SETTLE_FAST = {"GATEWAY_SPOOL_GRACE": "0.5", "GATEWAY_SPOOL_SEGMENT": "0.5"}


def _kill_tree(pid: int) -> None:
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    for child in children:
        os.kill(int(child), signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)


def _answered(server, secret: str, n: int) -> list[str]:
    ids = []
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for i in range(n):
            response = client.post(
                "/v1/chat/completions",
                headers={"Authorization": f"Bearer {secret}"},
                json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"hello {i}"}], "user": "alice"},
            )
            assert response.status_code == 200, response.text
            ids.append(response.headers["x-request-id"])
    return ids


def _assert_logged_and_billed_once(tenant, ids: list[str]) -> None:
    rows = CallLog.objects.filter(tenant=tenant, request_id__in=ids)
    assert rows.count() == len(ids)  # client 200s = call-log rows, none twice
    logged = rows.aggregate(c=Sum("cost_picodollars"))["c"]
    billed = SpendLedger.objects.filter(tenant=tenant).aggregate(c=Sum("cost_picodollars"), n=Sum("requests"))
    assert logged and billed == {"c": logged, "n": len(ids)}  # ledger = call logs
    assert reconcile(tenant) == []


def test_a_killed_gateways_buffered_rows_are_stored_by_the_next_one(gateway_factory, make_tenant, mint):
    acme = make_tenant("acme")
    secret = mint(acme, name="alice-app")
    first = gateway_factory(extra_env=HOLD_ROWS, redis=False)
    ids = _answered(first, secret, 20)
    assert CallLog.objects.filter(request_id__in=ids).count() == 0  # still in the buffer
    _kill_tree(first.proc.pid)
    first.proc.wait(5)
    gateway_factory(extra_env=SETTLE_FAST, redis=False)  # a replacement worker on the same machine
    assert wait_for(lambda: CallLog.objects.filter(request_id__in=ids).count() == len(ids), timeout=20)
    _assert_logged_and_billed_once(acme, ids)


@pytest.fixture
def own_redis(tmp_path):
    """A Redis of this test's own, without persistence, for the test to kill."""
    port = free_port()
    proc = start_redis(port, tmp_path)
    yield proc, f"redis://127.0.0.1:{port}/0"
    if proc.poll() is None:
        proc.kill()
        proc.wait(5)


def test_rows_in_a_redis_stream_that_dies_with_its_data_are_stored_from_the_spool(
    gateway_factory, make_tenant, mint, own_redis
):
    proc, url = own_redis
    acme = make_tenant("acme")
    secret = mint(acme, name="alice-app")
    # No consumer in the gateway: the stream keeps a backlog, as when the consumers fall behind.
    env = {"REDIS_URL": url, "GATEWAY_LOG_CONSUMER": "0", **SETTLE_FAST, "GATEWAY_SPOOL_GRACE": "3"}
    server = gateway_factory(extra_env=env, redis=False)
    ids = _answered(server, secret, 20)
    client = redis.Redis.from_url(url)
    assert wait_for(lambda: sum(client.xlen(k) for k in client.scan_iter(_type="stream")) > 0, timeout=5)
    assert CallLog.objects.filter(request_id__in=ids).count() == 0  # only in the stream (and the spool)
    proc.kill()  # Redis dies, and the stream's backlog with it
    proc.wait(5)
    started = time.monotonic()
    assert wait_for(lambda: CallLog.objects.filter(request_id__in=ids).count() == len(ids), timeout=30)
    assert time.monotonic() - started < 30
    _assert_logged_and_billed_once(acme, ids)
