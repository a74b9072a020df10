"""Gauges the proxy adds to /metrics (observability.exposition), read at scrape time.

Circuit breakers live in each process's memory and are synced between processes through Redis
pub/sub (proxy.breakers), so the scraped process's view stands for all of them. Only deployments this
process has called appear, labelled with the deployment's id and, from the configuration this process
has loaded, its provider and upstream model.
"""

from __future__ import annotations

from collections.abc import Iterator

from proxy.breakers import CLOSED, HALF_OPEN, OPEN, health
from proxy.configcache import state

HELP = "Circuit breaker of a deployment (1 for its current state), as this process sees it."


def _names() -> dict[int, tuple[str, str]]:
    """deployment id -> (provider name, upstream model), from the tenants this process has loaded (read
    at scrape time, never per request)."""
    out = {}
    for tenant in list(state.tenants.values()):
        for deployments in tenant.models.values():
            for d in deployments:
                out[d.id] = (d.provider_name, d.upstream_model)
    return out


def breaker_states() -> Iterator[tuple[str, str, dict[str, str], float]]:
    names = _names()
    for dep_id in sorted(list(health._deps)):  # a copy: requests may add deployments meanwhile
        current = health.state(dep_id)
        provider, model = names.get(dep_id, ("", ""))
        labels = {"deployment": str(dep_id), "provider": provider, "model": model}
        for state_name in (CLOSED, OPEN, HALF_OPEN):
            yield "gateway_breaker_state", HELP, {**labels, "state": state_name}, float(state_name == current)
