"""Prometheus metrics across real gateway processes: one scrape sums the calls of all of them."""

from __future__ import annotations

import httpx
import pytest

from tests.helpers import wait_for
from tests.helpers.observability import samples, value

TOKEN = "metrics-token-0123456789"


def test_one_scrape_sums_the_calls_of_two_gateway_processes(gateway_factory, acme, mint, upstream, settings):
    if not settings.REDIS_URL:
        pytest.skip("metrics across processes are summed in Redis")
    env = {"GATEWAY_METRICS_TOKEN": TOKEN}
    first, second = gateway_factory(extra_env=env), gateway_factory(extra_env=env)
    secret = mint(acme)
    auth = {"Authorization": f"Bearer {TOKEN}"}

    def requests_ok() -> float:
        scrape = httpx.get(f"{first.url}/metrics", headers=auth, timeout=5)
        assert scrape.status_code == 200
        return value(samples(scrape.text), "gateway_requests_total", model="gpt-4o-mini", provider="main", status=200)

    start = requests_ok()
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(timeout=10, headers={"Authorization": f"Bearer {secret}"}) as http:
        for server, count in ((first, 3), (second, 4)):
            for _ in range(count):
                response = http.post(f"{server.url}/v1/chat/completions", json=body)
                assert response.status_code == 200
                assert float(response.headers["x-gateway-overhead-ms"]) >= 0
    # Each process folds its own batches in; the first process's scrape sees both.
    assert wait_for(lambda: requests_ok() - start == 7, timeout=10), requests_ok() - start
    assert httpx.get(f"{second.url}/metrics", timeout=5).status_code == 401
