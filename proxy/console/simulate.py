"""The routing simulator: what the router would do for a request, without calling a provider.

Used by `POST /api/v1/routing/simulate/` (proxy.console.apis) and the console's simulate panel (proxy.console.views).
It runs the same `proxy.router.plan` the hot path runs, over the tenant config loaded fresh from the
database (not the proxy's cache, so an edit just saved is what gets simulated).

Breaker states come from this process's `proxy.breakers.health`. The console and the management API may
run in a process that serves no proxy traffic, so an opening announced by another process through
Redis (proxy.breakers.SNAPSHOT_KEY) also counts as open.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

from django.conf import settings
from django.http import Http404

from proxy import router
from proxy.breakers import CLOSED, OPEN, SNAPSHOT_KEY, health
from proxy.loader import load_key, load_tenant
from proxy.snapshot import KeyEntry, TenantEntry
from tenants.models import VirtualKey

logger = logging.getLogger("gateway.simulate")

MAX_TAGS = 50


@dataclass(frozen=True)
class SimulateRequest:
    model: str
    key: str = ""  # a key name in the tenant; empty: a key without name, tags or metadata
    tags: tuple[str, ...] = ()
    user: str = ""
    prompt_bytes: int = 0


def _announced_open(dep_ids: list[int]) -> set[int]:
    """Deployments whose breaker another process announced open and whose cooldown has not ended."""
    if not settings.REDIS_URL or not dep_ids:
        return set()
    try:
        import redis

        client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
        try:
            raw = client.hmget(SNAPSHOT_KEY, [str(i) for i in dep_ids])
        finally:
            client.close()
    except Exception:
        # The local view is still an answer; a simulation must not fail because Redis is away.
        logger.warning("could not read announced breaker openings", exc_info=True)
        return set()
    now = time.time()
    opened = set()
    for dep_id, message in zip(dep_ids, raw, strict=True):
        if message is None:
            continue
        try:
            if float(json.loads(message)["until"]) > now:
                opened.add(dep_id)
        except (ValueError, TypeError, KeyError):
            continue
    return opened


def breaker_states(dep_ids: list[int]) -> dict[int, str]:
    """ "closed" | "open" | "half_open" per deployment, as this process sees it plus Redis announcements."""
    states = {i: health.state(i) for i in dep_ids}
    for dep_id in _announced_open([i for i, s in states.items() if s == CLOSED]):
        states[dep_id] = OPEN
    return states


def tenant_entry(tenant_id: int) -> TenantEntry:
    entry = load_tenant(tenant_id)
    if entry is None:  # the tenant was deleted under us
        raise Http404("No such tenant.")
    return entry


def key_entry(tenant_id: int, name: str) -> KeyEntry:
    if not name:
        return KeyEntry(
            key_id=0,
            tenant_id=tenant_id,
            name="",
            allowed_models=frozenset(),
            expires_at=None,
            revoked=False,
            metadata={},
            loaded_at=time.monotonic(),
        )
    # Names are not unique; the newest key of that name is the one people mean.
    key_hash = (
        VirtualKey.objects.filter(tenant_id=tenant_id, name=name)
        .order_by("-created_at")
        .values_list("key_hash", flat=True)
    ).first()
    entry = load_key(key_hash) if key_hash else None
    if entry is None:
        raise Http404(f"No key named {name!r} in this tenant.")
    return entry


def simulate(tenant_id: int, request: SimulateRequest) -> dict:
    """The routing decision for `request`, in the shape of the simulate API's answer.

    Raises Http404 for a model or key the tenant does not have (or a model the key may not use): the
    message names only what the caller sent, never another tenant's objects.
    """
    tenant = tenant_entry(tenant_id)
    key = key_entry(tenant_id, request.key)
    if request.model not in tenant.routes:
        raise Http404(f"No model named {request.model!r} in this tenant.")
    if not key.may_use(request.model):
        raise Http404(f"Key {key.name!r} may not use model {request.model!r}.")
    # Tags as the proxy sees them: the key's own first, then the request's.
    tags = [t for t in key.tags if t.strip()]
    tags += [t for t in request.tags if t and t not in tags]
    plan = router.plan(
        tenant, key, request.model, user=request.user, tags=tags[:MAX_TAGS], prompt_bytes=request.prompt_bytes
    )
    deployments = plan.groups[0].deployments if plan.groups else []
    states = breaker_states([d.id for d in deployments])
    return {
        "model": plan.model,
        "rule": plan.rule,
        "variant": plan.variant,
        "deployments": [
            {"provider": d.provider_name, "model": d.upstream_model, "breaker": states[d.id]} for d in deployments
        ],
        "fallbacks": [g.model for g in plan.groups[1:]],
    }
