"""In-process cache of virtual keys and tenant routing config, with cross-process invalidation.

The proxy never queries the database synchronously: a request finds its key and its tenant's
deployments in the dictionaries below. A miss (first request for a key in this process) loads from
the database through the async ORM, once per key even under concurrency. Entries are dropped when
a change event arrives: through Redis pub/sub when REDIS_URL is set, otherwise by polling the
ConfigChange table. GATEWAY_CACHE_TTL bounds the damage if an event is ever missed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings

from tenants.changes import channel

logger = logging.getLogger("gateway.state")

NEGATIVE_TTL = 30.0
# With Redis: how often the change log is polled as a safety net for lost pub/sub messages.
SAFETY_NET_POLL = 1.0
# How many ids back each poll looks for changes that committed late.
TRAILING_IDS = 200
MAX_NEGATIVE = 50_000


@dataclass(slots=True)
class KeyEntry:
    key_id: int
    tenant_id: int
    name: str
    allowed_models: frozenset[str]  # empty = every model of the tenant
    expires_at: float | None  # unix time
    revoked: bool
    metadata: dict
    loaded_at: float
    rpm: int | None = None
    tpm: int | None = None
    max_parallel: int | None = None
    tags: tuple[str, ...] = ()
    # The key's own `pii:` policy replaces the tenant's (proxy.steps.pii.with_key_policy); the step
    # is None when the override does nothing.
    pii_override: bool = False
    pii_step: Any = None

    def usable_now(self, now: float) -> bool:
        return not self.revoked and (self.expires_at is None or self.expires_at > now)

    def may_use(self, model: str) -> bool:
        return not self.allowed_models or model in self.allowed_models


@dataclass(slots=True)
class Deployment:
    id: int
    model_name: str
    provider_name: str
    kind: str
    base_url: str
    api_key: str
    upstream_model: str
    price: Any = None  # gateway_project.common.money.Price, or None when the model has no known price
    rpm: int | None = None
    tpm: int | None = None
    # Set when the base URL is an IP literal the operator has not allowed (checked once at load).
    blocked: str = ""
    # Precomputed per deployment so the hot path does no string work: full URLs and auth header.
    urls: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    # Provider-kind settings (issue 10): Azure's api-version, Bedrock's region and AWS credentials,
    # headers the operator adds to every call (`headers:` in YAML), and the model whose price and
    # context window apply when the upstream id is a custom name.
    api_version: str = ""
    region: str = ""
    aws_access_key_id: str = ""
    aws_secret_access_key: str = ""
    aws_session_token: str = ""
    extra_headers: dict[str, str] = field(default_factory=dict)
    base_model: str = ""
    weight: int = 1  # share of traffic under the `weighted` strategy


@dataclass(slots=True, frozen=True)
class SplitSpec:
    model: str  # the other public model
    percent: float  # 0..100
    sticky: str  # "user" | "key"


@dataclass(slots=True, frozen=True)
class CooldownSpec:
    failures: int = 3
    window_s: float = 60.0
    cooldown_s: float = 30.0


@dataclass(slots=True)
class ModelRoute:
    name: str
    deployments: list[Deployment]  # in listed order (priority)
    strategy: str = "priority"  # priority | weighted | least-latency | lowest-cost | least-busy
    retries: int = 1  # extra attempts per deployment on retryable errors
    timeout_s: float = 600.0  # overall deadline for every attempt
    fallbacks: tuple[str, ...] = ()
    context_window_fallbacks: tuple[str, ...] = ()
    split: SplitSpec | None = None
    cooldown: CooldownSpec = CooldownSpec()  # default breaker settings when not configured


@dataclass(slots=True, frozen=True)
class RouteRule:
    """Every condition given must hold (routing.models.RouteRule); an empty one is not checked."""

    index: int
    key_names: frozenset[str] = frozenset()  # if: {key: name or [names]}
    metadata: tuple[tuple[str, str], ...] = ()  # if: {metadata: {k: v}}  (all must match, str compare)
    tags: frozenset[str] = frozenset()  # if: {tags: [..]} any tag matches (key tags + x-gateway-tags)
    users: frozenset[str] = frozenset()  # if: {user: name or [names]}
    prompt_bytes_over: int | None = None  # if: {prompt_bytes_over: N}
    route: str = ""  # the public model to route to


@dataclass(slots=True)
class BudgetSpec:
    id: int
    scope_kind: str  # tenant | key | user | tag
    scope_value: str
    limit_nanos: int
    period: str
    hard: bool
    alert_at: tuple[int, ...]

    @property
    def scope(self) -> str:
        return self.scope_kind if self.scope_kind == "tenant" else f"{self.scope_kind}:{self.scope_value}"


@dataclass(slots=True)
class TenantEntry:
    tenant_id: int
    slug: str
    models: dict[str, list[Deployment]]
    loaded_at: float
    routes: dict[str, ModelRoute] = field(default_factory=dict)  # same keys as `models`
    rules: tuple[RouteRule, ...] = ()
    tz: Any = None  # zoneinfo.ZoneInfo
    rpm: int | None = None
    tpm: int | None = None
    budgets: list[BudgetSpec] = field(default_factory=list)
    # Policy steps compiled from the tenant's policies (proxy.steps.Step), in the order they run.
    steps: tuple = ()


# --- loading (runs in a worker thread via sync_to_async; never on the per-request path) ---------------


def load_key(key_hash: str) -> KeyEntry | None:
    from tenants.models import VirtualKey

    row = (
        VirtualKey.objects.filter(key_hash=key_hash)
        .values("id", "tenant_id", "name", "allowed_models", "expires_at", "revoked", "metadata", "pii_policy")
        .first()
    )
    if row is None:
        return None
    from billing.models import LimitScope, RateLimit
    from proxy.steps.pii import pii_step

    limit = RateLimit.objects.filter(tenant_id=row["tenant_id"], scope=LimitScope.KEY, ref=str(row["id"])).first()
    metadata = row["metadata"] or {}
    tags = metadata.get("tags") if isinstance(metadata, dict) else None
    return KeyEntry(
        key_id=row["id"],
        tenant_id=row["tenant_id"],
        name=row["name"],
        allowed_models=frozenset(row["allowed_models"] or ()),
        expires_at=row["expires_at"].timestamp() if row["expires_at"] else None,
        revoked=row["revoked"],
        metadata=metadata,
        loaded_at=time.monotonic(),
        rpm=limit.rpm if limit else None,
        tpm=limit.tpm if limit else None,
        max_parallel=limit.max_parallel if limit else None,
        tags=tuple(str(t) for t in tags if isinstance(t, str)) if isinstance(tags, list) else (),
        pii_override=row["pii_policy"] is not None,
        pii_step=pii_step(row["pii_policy"]),
    )


def load_tenant(tenant_id: int) -> TenantEntry | None:
    from urllib.parse import urlsplit

    from gateway_project.common import crypto
    from gateway_project.common.netguard import UnsafeUpstreamError, check_address, literal_ip
    from proxy.providers import adapter_for
    from routing.models import ModelDeployment
    from routing.models import ModelRoute as RouteRow
    from routing.models import RouteRule as RuleRow
    from tenants.models import Tenant

    tenant = (
        Tenant.objects.filter(id=tenant_id).values("id", "slug", "cache_policy", "pii_policy", "log_bodies").first()
    )
    if tenant is None:
        return None
    from proxy.loader import load_money_config

    money = load_money_config(tenant_id)
    models: dict[str, list[Deployment]] = {}
    for d in (
        ModelDeployment.objects.filter(tenant_id=tenant_id)
        .select_related("provider")
        .order_by("model_name", "priority", "id")
    ):
        p = d.provider
        try:
            api_key = crypto.decrypt(p.api_key_encrypted)
            secrets = p.secrets()  # aws_* and the operator's headers, encrypted together
        except crypto.DecryptionError as exc:
            api_key, secrets, blocked = "", {}, str(exc)
        else:
            blocked = ""
        base_url = p.endpoint_url  # Bedrock without a base_url: its regional host
        host = urlsplit(base_url).hostname or ""
        ip = literal_ip(host) if host else None
        if ip is not None:
            try:
                check_address(host, str(ip))
            except UnsafeUpstreamError as exc:
                blocked = str(exc)
        rpm, tpm = money.deployment_limits.get(d.id, (None, None))
        dep = Deployment(
            id=d.id,
            model_name=d.model_name,
            provider_name=p.name,
            kind=p.kind,
            base_url=base_url.rstrip("/"),
            api_key=api_key,
            upstream_model=d.upstream_model,
            blocked=blocked,
            # A custom upstream id (an Azure deployment name) is priced as the model it runs.
            price=money.price_for(d.upstream_model, d.base_model),
            rpm=rpm,
            tpm=tpm,
            weight=d.weight,
            api_version=p.api_version,
            region=p.region,
            aws_access_key_id=secrets.get("aws_access_key_id", ""),
            aws_secret_access_key=secrets.get("aws_secret_access_key", ""),
            aws_session_token=secrets.get("aws_session_token", ""),
            extra_headers=dict(secrets.get("headers") or {}),
            base_model=d.base_model,
        )
        adapter_for(dep.kind).prepare(dep)
        models.setdefault(d.model_name, []).append(dep)
    # One query each for route settings and rules, whatever the number of models.
    rows = {r.model_name: r for r in RouteRow.objects.filter(tenant_id=tenant_id)}
    routes = {name: _model_route(name, deps, rows.get(name)) for name, deps in models.items()}
    rules = tuple(_route_rule(i, r.match, r.route) for i, r in enumerate(RuleRow.objects.filter(tenant_id=tenant_id)))
    from proxy.steps.bodylog import BODY_LOG
    from proxy.steps.cache import compile_cache
    from proxy.steps.pii import pii_step

    # The prompt cache is always the last step: it keys on the request as the earlier steps left it.
    cache_step = compile_cache(tenant["cache_policy"])
    return TenantEntry(
        tenant_id=tenant["id"],
        slug=tenant["slug"],
        models=models,
        routes=routes,
        rules=rules,
        loaded_at=time.monotonic(),
        tz=money.tz,
        rpm=money.tenant_rpm,
        tpm=money.tenant_tpm,
        budgets=money.budgets,
        # PII first (every later step sees only the redacted request), the prompt cache last.
        # Body logging sits between them: it keeps the request and the answer as PII redaction left them.
        steps=tuple(
            step
            for step in (pii_step(tenant["pii_policy"]), BODY_LOG if tenant["log_bodies"] else None, cache_step)
            if step is not None
        ),
    )


def _model_route(name: str, deployments: list[Deployment], row: Any) -> ModelRoute:
    if row is None:
        return ModelRoute(name=name, deployments=deployments)
    return ModelRoute(
        name=name,
        deployments=deployments,
        strategy=row.strategy,
        retries=row.retries,
        timeout_s=float(row.timeout_s),
        fallbacks=tuple(row.fallbacks or ()),
        context_window_fallbacks=tuple(row.context_window_fallbacks or ()),
        split=SplitSpec(row.split_model, float(row.split_percent), row.split_sticky) if row.split_model else None,
        cooldown=CooldownSpec(row.cooldown_failures, float(row.cooldown_window_s), float(row.cooldown_s)),
    )


def _route_rule(index: int, match: dict, route: str) -> RouteRule:
    over = match.get("prompt_bytes_over")
    return RouteRule(
        index=index,
        key_names=frozenset(match.get("key") or ()),
        metadata=tuple(sorted((str(k), str(v)) for k, v in (match.get("metadata") or {}).items())),
        tags=frozenset(match.get("tags") or ()),
        users=frozenset(match.get("user") or ()),
        prompt_bytes_over=int(over) if over is not None else None,
        route=route,
    )


def _max_change_id() -> int:
    from tenants.models import ConfigChange

    last = ConfigChange.objects.order_by("-id").values_list("id", flat=True).first()
    return last or 0


def _changes_since(last_id: int) -> list[tuple[int, str, str]]:
    from tenants.models import ConfigChange

    return list(ConfigChange.objects.filter(id__gt=last_id).order_by("id").values_list("id", "kind", "ref")[:1000])


class ConfigState:
    def __init__(self) -> None:
        self.keys: dict[str, KeyEntry] = {}
        self.negative: dict[str, float] = {}
        self.tenants: dict[int, TenantEntry] = {}
        self._key_loads: dict[str, asyncio.Future] = {}
        self._tenant_loads: dict[int, asyncio.Future] = {}
        self._listener: asyncio.Task | None = None
        self._poller: asyncio.Task | None = None
        # Bumped on every invalidation: a load that raced with an event is used once but not cached.
        self._generation = 0
        self.ttl = settings.GATEWAY_CACHE_TTL

    # -- lookups --------------------------------------------------------------------------------------

    async def key(self, key_hash: str) -> KeyEntry | None:
        entry = self.keys.get(key_hash)
        now = time.monotonic()
        if entry is not None and now - entry.loaded_at < self.ttl:
            return entry
        neg = self.negative.get(key_hash)
        if neg is not None and now - neg < NEGATIVE_TTL:
            return None
        generation = self._generation
        entry = await self._single_flight(self._key_loads, key_hash, load_key)
        if generation != self._generation:
            return entry
        if entry is None:
            if len(self.negative) > MAX_NEGATIVE:
                self.negative.clear()
            self.negative[key_hash] = now
        else:
            self.keys[key_hash] = entry
        return entry

    async def tenant(self, tenant_id: int) -> TenantEntry | None:
        entry = self.tenants.get(tenant_id)
        if entry is not None and time.monotonic() - entry.loaded_at < self.ttl:
            return entry
        generation = self._generation
        entry = await self._single_flight(self._tenant_loads, tenant_id, load_tenant)
        if entry is not None and generation == self._generation:
            self.tenants[tenant_id] = entry
        return entry

    async def _single_flight(self, pending: dict, ident: Any, loader: Any) -> Any:
        # The load runs as its own task and every caller (the first included) awaits it shielded:
        # a client that hangs up cancels only its own wait, never the load the others wait for.
        task = pending.get(ident)
        if task is None:
            task = asyncio.get_running_loop().create_task(sync_to_async(loader, thread_sensitive=False)(ident))
            pending[ident] = task
            task.add_done_callback(lambda _t: pending.pop(ident, None))
        return await asyncio.shield(task)

    # -- invalidation ---------------------------------------------------------------------------------

    def apply_event(self, kind: str, ref: str) -> None:
        self._generation += 1
        if kind == "key":
            self.keys.pop(ref, None)
            self.negative.pop(ref, None)
        elif kind == "tenant":
            try:
                self.tenants.pop(int(ref), None)
            except ValueError:
                pass
        else:
            self.clear()

    def clear(self) -> None:
        self._generation += 1
        self.keys.clear()
        self.negative.clear()
        self.tenants.clear()

    def start(self) -> None:
        """Start the invalidation listeners on the running loop (idempotent).

        Without Redis the change log is polled. With Redis, pub/sub brings changes in milliseconds and
        a slower poll of the same log is the safety net for a publish that failed.
        """
        if self._listener is None or self._listener.done():
            loop = asyncio.get_running_loop()
            if settings.REDIS_URL:
                self._listener = loop.create_task(self._listen_redis(), name="gateway-invalidation")
                self._poller = loop.create_task(self._poll_db(SAFETY_NET_POLL), name="gateway-invalidation-poll")
            else:
                self._listener = loop.create_task(
                    self._poll_db(settings.GATEWAY_INVALIDATION_POLL_INTERVAL), name="gateway-invalidation"
                )

    async def stop(self) -> None:
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.cancel()
        if self._listener is not None:
            self._listener.cancel()
            try:
                await self._listener
            except (asyncio.CancelledError, Exception):
                pass
            self._listener = None

    async def _poll_db(self, interval: float) -> None:
        last_id = None
        # Ids are handed out at insert but become visible at commit, so a lower id can appear after a
        # higher one: every poll re-reads a trailing window of ids and skips those already applied.
        seen: set[int] = set()
        while True:
            try:
                if last_id is None:
                    last_id = await sync_to_async(_max_change_id, thread_sensitive=False)()
                    # Anything cached before we knew where the log stood may be stale.
                    self.clear()
                since = max(last_id - TRAILING_IDS, 0)
                for change_id, kind, ref in await sync_to_async(_changes_since, thread_sensitive=False)(since):
                    if change_id in seen or change_id <= since:
                        continue
                    seen.add(change_id)
                    self.apply_event(kind, ref)
                    last_id = max(last_id, change_id)
                floor = last_id - TRAILING_IDS
                seen = {i for i in seen if i > floor}
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("polling config changes failed; clearing the cache")
                self.clear()
            await asyncio.sleep(interval)

    async def _listen_redis(self) -> None:
        import redis.asyncio as aioredis

        backoff = 0.1
        while True:
            client = aioredis.Redis.from_url(settings.REDIS_URL)
            try:
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(channel())
                # Events published while we were not subscribed are lost: start from a clean slate.
                self.clear()
                backoff = 0.1
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    data = message["data"].decode() if isinstance(message["data"], bytes) else message["data"]
                    kind, _, ref = data.partition(":")
                    self.apply_event(kind, ref)
            except asyncio.CancelledError:
                await client.aclose()
                raise
            except Exception:
                logger.warning("config change subscription lost; reconnecting", exc_info=True)
                self.clear()
                await client.aclose()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)


state = ConfigState()
