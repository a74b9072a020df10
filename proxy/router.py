"""The per-request routing decision: rules, then the A/B split, then the strategy's order, then the
fallback chain. Pure over the cached tenant config and process-local health, so the simulator
(`POST /api/v1/routing/simulate/`) calls the same function the proxy does.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

from proxy.breakers import health
from proxy.snapshot import Deployment, KeyEntry, RouteSpec, RuleSpec, TenantEntry
from proxy.strategies import order


@dataclass(slots=True)
class Group:
    """One public model's deployments, in the order they will be tried."""

    model: str
    route: RouteSpec
    deployments: list[Deployment]
    fallback: bool = False  # a model of the fallback chain, not the one asked for


@dataclass(slots=True)
class Plan:
    model: str  # the public model after rules and split
    rule: int | None = None  # index of the rule that matched
    variant: str | None = None  # the split's model, when this call was sent there
    groups: list[Group] = field(default_factory=list)  # the model first, then its fallbacks
    context_window: list[Group] = field(default_factory=list)  # for context-length errors
    timeout_s: float = 600.0

    @property
    def per_attempt_limits(self) -> bool:
        """Whether deployments' own RPM/TPM are admitted per attempt: only when the call has somewhere
        else to go. A call with one deployment admits it with the request, in the same round trip."""
        return len(self.groups) + len(self.context_window) > 1 or any(len(g.deployments) > 1 for g in self.groups)

    @property
    def first(self) -> Deployment | None:
        for group in self.groups:
            if group.deployments:
                return group.deployments[0]
        return None

    def deployments(self) -> list[Deployment]:
        """Every deployment a call under this plan may reach, fallbacks included, in order."""
        return [d for g in (*self.groups, *self.context_window) for d in g.deployments]

    def prices(self) -> list:
        """Every price a call under this plan may be billed at (for the worst-case reservation)."""
        return [d.price for d in self.deployments() if d.price is not None]

    def unpriced(self) -> list[Deployment]:
        """The deployments a call under this plan may reach that have no known price."""
        return [d for d in self.deployments() if d.price is None]


def _matches(rule: RuleSpec, key: KeyEntry, tags: list[str], user: str, prompt_bytes: int) -> bool:
    if rule.key_names and key.name not in rule.key_names:
        return False
    if rule.metadata:
        metadata = key.metadata if isinstance(key.metadata, dict) else {}
        if any(k not in metadata or str(metadata[k]) != v for k, v in rule.metadata):
            return False
    if rule.tags and not any(t in rule.tags for t in tags):
        return False
    if rule.users and user not in rule.users:
        return False
    return rule.prompt_bytes_over is None or prompt_bytes > rule.prompt_bytes_over


def bucket(*parts: object) -> float:
    """A stable number in [0, 100) for these parts: the same in every process and after restarts
    (Python's hash() is salted per process, so it will not do)."""
    digest = hashlib.blake2b(":".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest) * 100 / 2**64


def _group(tenant: TenantEntry, name: str, fallback: bool, rng: random.Random | None) -> Group | None:
    route = tenant.routes.get(name)
    if route is None:
        return None
    return Group(name, route, order(route.strategy, route.deployments, health, rng), fallback)


def plan(
    tenant: TenantEntry,
    key: KeyEntry,
    model: str,
    *,
    user: str = "",
    tags: list[str] | None = None,
    prompt_bytes: int = 0,
    no_fallback: bool = False,
    rng: random.Random | None = None,
) -> Plan:
    tags = tags or []
    target, rule_index = model, None
    for rule in tenant.rules:
        if rule.route in tenant.routes and _matches(rule, key, tags, user, prompt_bytes):
            target, rule_index = rule.route, rule.index
            break
    variant = None
    route = tenant.routes[target]
    split = route.split
    if split is not None and split.model in tenant.routes and split.percent > 0:
        # Sticky per end user (or per key when the request names no user): the same one always
        # lands in the same group.
        sticky = user if split.sticky == "user" and user else f"key:{key.key_id}"
        if bucket(tenant.tenant_id, target, sticky) < split.percent:
            target = variant = split.model
            route = tenant.routes[target]
    result = Plan(model=target, rule=rule_index, variant=variant, timeout_s=route.timeout_s)
    seen = {target}
    group = _group(tenant, target, False, rng)
    if group is not None:
        result.groups.append(group)
    if not no_fallback:
        for name in route.fallbacks:
            if name not in seen and (group := _group(tenant, name, True, rng)) is not None:
                seen.add(name)
                result.groups.append(group)
        for name in route.context_window_fallbacks:
            if name != target and (group := _group(tenant, name, True, rng)) is not None:
                result.context_window.append(group)
    return result
