"""Gauges the proxy adds to /metrics (observability.exposition), read at scrape time.

Circuit breakers live in each process's memory and are synced between processes through Redis
pub/sub (proxy.breakers), so the scraped process's view stands for all of them. Only deployments this
process has called appear: the label values are deployment ids of the configuration.
"""

from __future__ import annotations

from collections.abc import Iterator

from proxy.breakers import CLOSED, HALF_OPEN, OPEN, health

HELP = "Circuit breaker of a deployment (1 for its current state), as this process sees it."


def breaker_states() -> Iterator[tuple[str, str, dict[str, str], float]]:
    for dep_id in sorted(list(health._deps)):  # a copy: requests may add deployments meanwhile
        current = health.state(dep_id)
        for state in (CLOSED, OPEN, HALF_OPEN):
            yield "gateway_breaker_state", HELP, {"deployment": str(dep_id), "state": state}, float(state == current)
