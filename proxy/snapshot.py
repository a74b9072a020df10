"""The proxy's runtime config: frozen-at-load snapshots of a tenant and its keys.

Plain data, built by proxy.loader from the database and kept by proxy.configcache; every phase of a
call reads them without touching the database. This module imports nothing from the proxy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
    # The key's own `guardrails:` replace the tenant's (proxy.steps.guardrails.with_key_guardrails); the
    # step is None when the key runs no checks ([]).
    guardrails_override: bool = False
    guardrail_step: Any = None
    # MCP access (tenants.services.mcp_access_clean): server -> None (every tool) or the tool names;
    # None: no MCP access at all.
    mcp: dict[str, frozenset[str] | None] | None = None
    # An admin key scores the calls of every key of its tenant (observability.scores.record_feedback).
    admin: bool = False

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
    # Provider-kind settings: Azure's api-version, Bedrock's region and AWS credentials,
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
class RouteSpec:
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
class RuleSpec:
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
class McpServerSpec:
    """An upstream MCP server (routing.models.McpServer), with its secrets decrypted at load."""

    id: int
    name: str
    url: str
    transport: str  # streamable_http | sse
    headers: dict[str, str]  # bearer and extra headers, ready to send
    timeout_s: float
    rpm: int | None = None
    blocked: str = ""  # why it cannot be used (a secret that no longer decrypts, a forbidden address)


@dataclass(slots=True)
class TenantEntry:
    tenant_id: int
    slug: str
    models: dict[str, list[Deployment]]
    loaded_at: float
    routes: dict[str, RouteSpec] = field(default_factory=dict)  # same keys as `models`
    rules: tuple[RuleSpec, ...] = ()
    tz: Any = None  # zoneinfo.ZoneInfo
    rpm: int | None = None
    tpm: int | None = None
    budgets: list[BudgetSpec] = field(default_factory=list)
    # While Redis is unreachable: let calls covered by hard budgets through (True) or refuse them.
    budgets_fail_open: bool = False
    # Policy steps compiled from the tenant's policies (proxy.steps.Step), in the order they run.
    steps: tuple = ()
    mcp_servers: dict[str, McpServerSpec] = field(default_factory=dict)
    # The PII policy's step (also first in `steps`), for MCP tool arguments and results.
    pii: Any = None
    # The guardrails' step (also in `steps`), for MCP tool results and the pipeline's answer side
    # (proxy.steps.guardrails.guard_for).
    guardrails: Any = None
    # Score definitions by name (observability.scores.definitions_of), for POST /v1/feedback.
    score_definitions: dict[str, dict[str, Any]] = field(default_factory=dict)
