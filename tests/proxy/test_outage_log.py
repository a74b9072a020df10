"""A Redis outage is one log line when it starts and one when it ends, not a traceback per call; every
failure is still counted (observability.metrics, shown on /metrics)."""

from __future__ import annotations

import logging

from observability import metrics
from proxy.admission import _Outage


def test_a_thousand_failed_checks_log_two_lines_and_count_a_thousand(caplog):
    outage = _Outage()
    before = metrics.value("limiter_error")
    with caplog.at_level(logging.WARNING, logger="gateway.money"):
        for _ in range(1000):
            outage.failed("limit check", ConnectionError("Connection refused"))
        outage.ok()
        outage.ok()  # nothing more to say once recovered
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.money"]
    assert len(lines) == 2
    assert "limit check failed: ConnectionError: Connection refused" in lines[0]
    assert "answers again" in lines[1] and "1000 failed checks" in lines[1]
    assert metrics.value("limiter_error") - before == 1000
    assert all(r.exc_info is None for r in caplog.records)  # no tracebacks
