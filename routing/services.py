"""Writes for provider credentials and model deployments."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from gateway_project.common import crypto
from gateway_project.common.netguard import UnsafeUpstreamError, validate_base_url
from routing.models import (
    AWS_SECRET_FIELDS,
    DEFAULT_BASE_URLS,
    MAX_COOLDOWN_FAILURES,
    MAX_PROMPT_BYTES,
    MAX_RETRIES,
    MAX_TIMEOUT_S,
    MAX_WEIGHT,
    MAX_WINDOW_S,
    ROUTE_DEFAULTS,
    ModelDeployment,
    ModelRoute,
    ProviderCredential,
    ProviderKind,
    RouteRule,
    Sticky,
    Strategy,
)
from tenants.audit import Actor, audit
from tenants.bounds import MAX_NAME_CHARS, MAX_SECRET_CHARS, MAX_TAG_CHARS, check_length, check_text
from tenants.changes import record_change
from tenants.models import Tenant

KEEP = object()  # "leave the stored API key (or other secret) as it is"

# Which optional settings each kind takes; anything else given for the kind is refused, not ignored,
# so a typo'd kind never silently drops a credential.
KIND_FIELDS: dict[str, frozenset[str]] = {
    ProviderKind.OPENAI: frozenset({"api_key", "headers"}),
    ProviderKind.OPENAI_COMPATIBLE: frozenset({"api_key", "headers"}),
    ProviderKind.ANTHROPIC: frozenset({"api_key", "headers"}),
    ProviderKind.GEMINI: frozenset({"api_key", "headers"}),
    ProviderKind.AZURE: frozenset({"api_key", "api_version", "headers"}),
    ProviderKind.BEDROCK: frozenset({"region", *AWS_SECRET_FIELDS, "headers"}),
    ProviderKind.MOCK: frozenset({"api_key"}),
}
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    ProviderKind.AZURE: ("base_url", "api_version"),
    ProviderKind.BEDROCK: ("region", "aws_access_key_id", "aws_secret_access_key"),
}
# RFC 9110 token characters: anything else cannot be a header name.
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# Headers the HTTP client or the adapter must control: overriding them would break framing or routing.
_RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "te", "upgrade"})
# Both end up in a URL (Azure's query string, Bedrock's host name): keep them to their documented shapes.
# Provider names are /metrics label values and YAML keys (their column holds 100).
MAX_PROVIDER_NAME_CHARS = 100
# Extra headers go out on every upstream call: a few, each of a size servers accept.
MAX_HEADERS = 32
MAX_HEADER_NAME_CHARS = 100
# Where a secret came from ("env:NAME"), as the api_key_source column holds it.
MAX_SOURCE_CHARS = 200
_API_VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.\-]{0,39}$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$")


def _check_base_url(kind: str, base_url: str) -> str:
    if kind == ProviderKind.MOCK:
        return ""
    base_url = (base_url or DEFAULT_BASE_URLS.get(kind, "")).strip().rstrip("/")
    if not base_url and kind == ProviderKind.BEDROCK:
        # Stored empty and derived from the region when used (ProviderCredential.endpoint_url), so a
        # region change moves the host too. The derived host is AWS's public one: nothing to guard.
        return ""
    if not base_url:
        raise ValidationError({"base_url": f"A {kind} provider needs a base_url."})
    try:
        validate_base_url(base_url)
    except UnsafeUpstreamError as exc:
        raise ValidationError({"base_url": str(exc)}) from None
    return base_url


def header_problem(name: str, value: str) -> str:
    """Why `name: value` cannot be sent as an extra header, or "" when it can."""
    if len(name) > MAX_HEADER_NAME_CHARS:
        return f"a header name has at most {MAX_HEADER_NAME_CHARS} characters"
    if not _HEADER_NAME.match(name):
        return f"{name!r} is not a valid HTTP header name"
    if name.lower() in _RESERVED_HEADERS:
        return f"{name} is set by the gateway and cannot be overridden"
    if any(ch in value for ch in "\r\n\0"):
        return f"the value of {name} must not contain line breaks"
    if len(value) > MAX_SECRET_CHARS:
        return f"the value of {name} has at most {MAX_SECRET_CHARS:,} characters (this has {len(value):,})"
    return ""


def headers_clean(headers: dict) -> dict[str, str]:
    """Extra headers as {name: value}, refusing invalid names, duplicates and values that could split a request."""
    out: dict[str, str] = {}
    seen: set[str] = set()
    if len(headers) > MAX_HEADERS:
        raise ValidationError(
            {"headers": f"A provider has at most {MAX_HEADERS} extra headers (this has {len(headers)})."}
        )
    for name, value in headers.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise ValidationError({"headers": "Header names and values are strings."})
        problem = header_problem(name, value)
        if problem:
            raise ValidationError({"headers": problem[0].upper() + problem[1:] + "."})
        if name.lower() in seen:
            raise ValidationError({"headers": f"{name} is given twice."})
        seen.add(name.lower())
        out[name] = value.strip()
    return out


def provider_settings_check(kind: str, given: dict[str, Any]) -> None:
    """Refuse settings the kind does not take and format errors in api_version/region (before any merge)."""
    allowed = KIND_FIELDS.get(kind, frozenset())
    for field_name, value in given.items():
        if value and field_name not in allowed:
            raise ValidationError({field_name: f"{field_name} is not a setting of a {kind} provider."})
    if given.get("api_version") and not _API_VERSION.match(given["api_version"]):
        raise ValidationError({"api_version": "An api_version looks like 2024-10-21 or 2024-10-01-preview."})
    if given.get("region") and not _REGION.match(given["region"]):
        raise ValidationError({"region": "A region looks like us-east-1."})


def _check_provider_text(name: str, api_key: object, api_key_source: str, sources: dict | None, *aws: object) -> None:
    """Bound the provider's name and secrets: stored encrypted, decrypted and sent on every call."""
    check_text(name, "name", max_chars=MAX_PROVIDER_NAME_CHARS, what="provider name")
    if isinstance(api_key, str):
        check_length(api_key, "api_key", max_chars=MAX_SECRET_CHARS, what="API key")
    for field_name, value in zip(AWS_SECRET_FIELDS, aws, strict=True):
        if isinstance(value, str):
            check_length(value, field_name, max_chars=MAX_SECRET_CHARS, what=field_name)
    check_text(api_key_source, "api_key_source", max_chars=MAX_SOURCE_CHARS, what="secret source")
    for field_name, source in (sources or {}).items():
        for value in source.values() if isinstance(source, dict) else [source]:
            check_text(value, f"secret_sources.{field_name}", max_chars=MAX_SOURCE_CHARS, what="secret source")


@transaction.atomic
def provider_upsert(  # noqa: C901
    tenant: Tenant,
    *,
    name: str,
    kind: str,
    actor: Actor,
    base_url: str = "",
    api_key: str | object = KEEP,
    api_key_source: str = "",
    api_version: str = "",
    region: str = "",
    aws_access_key_id: str | object = KEEP,
    aws_secret_access_key: str | object = KEEP,
    aws_session_token: str | object = KEEP,
    headers: dict | object = KEEP,
    secret_sources: dict | None = None,
) -> tuple[ProviderCredential, bool]:
    """Create or update a provider. Returns (provider, changed).

    Secrets (api_key, aws_*, headers) left as KEEP stay as stored; settings the new kind does not take
    are dropped when the kind changes. `secret_sources` names where the given secrets came from
    ({"aws_secret_access_key": "env:NAME", "headers": {"X-Name": "env:NAME"}}), for `gateway export`.
    """
    if kind not in ProviderKind.values:
        raise ValidationError({"kind": f"Unknown provider kind {kind!r}; use one of {', '.join(ProviderKind.values)}."})
    _check_provider_text(name, api_key, api_key_source, secret_sources, aws_access_key_id, aws_secret_access_key,
                         aws_session_token)  # fmt: skip
    api_version, region = (api_version or "").strip(), (region or "").strip()
    given_secrets = {
        f: v
        for f, v in zip(AWS_SECRET_FIELDS, (aws_access_key_id, aws_secret_access_key, aws_session_token), strict=True)
        if v is not KEEP
    }
    given: dict[str, Any] = {"api_version": api_version, "region": region, **given_secrets}
    if api_key is not KEEP:
        given["api_key"] = api_key
    if headers is not KEEP:
        assert isinstance(headers, dict)
        headers = headers_clean(headers)
        given["headers"] = headers
    provider_settings_check(kind, given)
    base_url = _check_base_url(kind, base_url)
    provider = ProviderCredential.objects.filter(tenant=tenant, name=name).first()
    created = provider is None
    if provider is None:
        provider = ProviderCredential(tenant=tenant, name=name)
    allowed = KIND_FIELDS[kind]
    changes: dict = {}
    if provider.kind != kind:
        changes["kind"] = [provider.kind, kind]
        provider.kind = kind
    if provider.base_url != base_url:
        changes["base_url"] = [provider.base_url, base_url]
        provider.base_url = base_url
    for field_name, value in (("api_version", api_version), ("region", region)):
        if getattr(provider, field_name) != value:
            changes[field_name] = [getattr(provider, field_name), value]
            setattr(provider, field_name, value)
    if "api_key" not in allowed and api_key is KEEP and provider.api_key_encrypted:
        api_key = ""  # e.g. a provider turned into a bedrock one: its old key has no use there
    if api_key is not KEEP:
        assert isinstance(api_key, str)
        current = crypto.decrypt(provider.api_key_encrypted) if provider.api_key_encrypted else ""
        if current != api_key:
            provider.api_key_encrypted = crypto.encrypt(api_key) if api_key else ""
            provider.api_key_last4 = api_key[-4:] if len(api_key) >= 12 else ""
            changes["api_key"] = "changed"
    if provider.api_key_source != api_key_source and api_key is not KEEP:
        changes.setdefault("api_key_source", [provider.api_key_source, api_key_source])
        provider.api_key_source = api_key_source
    _merge_secrets(provider, allowed, given_secrets, headers, secret_sources or {}, changes)
    for field_name in REQUIRED_FIELDS.get(kind, ()):
        present = provider.base_url if field_name == "base_url" else getattr(provider, field_name, None)
        if field_name in AWS_SECRET_FIELDS:
            present = _stored_secrets(provider).get(field_name)
        if not present:
            raise ValidationError({field_name: f"A {kind} provider needs {field_name}."})
    if not created and not changes:
        return provider, False
    provider.full_clean()
    provider.save()
    audit(
        tenant,
        actor=actor,
        action="provider.create" if created else "provider.update",
        target=provider,
        changes=changes,
    )
    record_change("tenant", tenant.id)
    return provider, True


def _stored_secrets(provider: ProviderCredential) -> dict:
    return provider.secrets() if provider.secrets_encrypted else {}


def _merge_secrets(
    provider: ProviderCredential,
    allowed: frozenset[str],
    given: dict[str, Any],
    headers: dict | object,
    sources: dict,
    changes: dict,
) -> None:
    """Fold the given extra secrets into the encrypted blob; only what changed is named in `changes`."""
    before = _stored_secrets(provider)
    after = {k: v for k, v in before.items() if k in allowed}  # a kind change drops the others
    new_sources = {k: v for k, v in (provider.secret_sources or {}).items() if k in allowed}
    for field_name, value in given.items():
        assert isinstance(value, str)
        if value:
            after[field_name] = value
            new_sources[field_name] = sources.get(field_name) or "literal"
        else:
            after.pop(field_name, None)
            new_sources.pop(field_name, None)
    if headers is not KEEP:
        assert isinstance(headers, dict)
        after["headers"] = headers
        header_sources = sources.get("headers") or {}
        new_sources["headers"] = {n: header_sources.get(n) or "literal" for n in headers}
    after = {k: v for k, v in after.items() if v}
    new_sources = {k: v for k, v in new_sources.items() if v}
    for field_name in sorted(set(before) | set(after)):
        if before.get(field_name) != after.get(field_name):
            changes[field_name] = "changed"
    if after != before:
        provider.secrets_encrypted = crypto.encrypt(json.dumps(after, sort_keys=True)) if after else ""
        provider.header_names = sorted(after.get("headers", {}))
    if new_sources != (provider.secret_sources or {}):
        changes.setdefault("secret_sources", "changed")
        provider.secret_sources = new_sources


@transaction.atomic
def provider_delete(tenant: Tenant, *, provider: ProviderCredential, actor: Actor) -> None:
    if provider.tenant_id != tenant.id:
        raise ProviderCredential.DoesNotExist
    audit(tenant, actor=actor, action="provider.delete", target=provider)
    provider.delete()
    record_change("tenant", tenant.id)


# As many as the console's deployment editor takes (routing.forms.DeploymentFormSet).
MAX_DEPLOYMENTS = 50

DeploymentSpec = (
    tuple[ProviderCredential, str]
    | tuple[ProviderCredential, str, int | None]
    | tuple[ProviderCredential, str, int | None, str | None]
)


@transaction.atomic
def model_deployments_set(tenant: Tenant, *, model_name: str, deployments: list[DeploymentSpec], actor: Actor) -> bool:
    """Make `model_name` served by exactly these (provider, upstream model[, weight[, base_model]]) entries.

    A weight or base_model left out (or None) keeps the deployment's current one, so editors that do
    not show them never reset them; a new deployment starts at weight 1 and no base_model.
    """
    model_name = check_text(model_name, "name", what="model name").strip()
    if not model_name:
        raise ValidationError({"name": "A model needs a name."})
    if not deployments:
        raise ValidationError({"deployments": f"Model {model_name!r} needs at least one deployment."})
    if len(deployments) > MAX_DEPLOYMENTS:
        raise ValidationError(
            {"deployments": f"A model has at most {MAX_DEPLOYMENTS} deployments (this lists {len(deployments)})."}
        )
    existing = list(ModelDeployment.objects.filter(tenant=tenant, model_name=model_name).select_related("provider"))
    by_pair = {(d.provider_id, d.upstream_model): d for d in existing}
    wanted: list[tuple[ProviderCredential, str, int, str]] = []
    for spec in deployments:
        provider, upstream = spec[0], spec[1]
        weight = spec[2] if len(spec) > 2 else None
        base_model = spec[3] if len(spec) > 3 else None
        if provider.tenant_id != tenant.id:
            raise ValidationError({"provider": "Unknown provider."})
        check_text(upstream, "model", what="upstream model name")
        current = by_pair.get((provider.id, upstream))
        if weight is None:
            weight = current.weight if current is not None else 1
        if isinstance(weight, bool) or not isinstance(weight, int) or not 1 <= weight <= MAX_WEIGHT:
            raise ValidationError({"weight": f"A weight is a whole number from 1 to {MAX_WEIGHT}."})
        if base_model is None:
            base_model = current.base_model if current is not None else ""
        base_model = check_text(base_model, "base_model", what="base_model").strip()
        wanted.append((provider, upstream, weight, base_model))
    if len({(p.id, m) for p, m, _w, _b in wanted}) != len(wanted):
        raise ValidationError({"deployments": f"Model {model_name!r} lists the same deployment twice."})
    want = [(p.id, m, w, b) for p, m, w, b in wanted]
    have = [(d.provider_id, d.upstream_model, d.weight, d.base_model) for d in existing]
    if want == have:
        return False
    keep_ids = set()
    for priority, (provider, upstream, weight, base_model) in enumerate(wanted):
        dep = by_pair.get((provider.id, upstream))
        if dep is None:
            dep = ModelDeployment.objects.create(
                tenant=tenant,
                model_name=model_name,
                provider=provider,
                upstream_model=upstream,
                priority=priority,
                weight=weight,
                base_model=base_model,
            )
        elif (dep.priority, dep.weight, dep.base_model) != (priority, weight, base_model):
            dep.priority, dep.weight, dep.base_model = priority, weight, base_model
            dep.save(update_fields=["priority", "weight", "base_model"])
        keep_ids.add(dep.id)
    ModelDeployment.objects.filter(tenant=tenant, model_name=model_name).exclude(id__in=keep_ids).delete()

    def label(name: str, upstream: str, weight: int, base_model: str = "") -> str:
        return (
            f"{name}/{upstream}"
            + (f" (weight {weight})" if weight != 1 else "")
            + (f" (priced as {base_model})" if base_model else "")
        )

    audit(
        tenant,
        actor=actor,
        action="model.update" if existing else "model.create",
        target_type="Model",
        target_label=model_name,
        changes={
            # Provider names, not ids: the audit log is read by people.
            "before": [label(d.provider.name, d.upstream_model, d.weight, d.base_model) for d in existing],
            "after": [label(p.name, m, w, b) for p, m, w, b in wanted],
        },
    )
    record_change("tenant", tenant.id)
    return True


@transaction.atomic
def model_delete(tenant: Tenant, *, model_name: str, actor: Actor) -> int:
    """Remove a model with its route settings, and every reference to it from other models and rules."""
    deleted, _ = ModelDeployment.objects.filter(tenant=tenant, model_name=model_name).delete()
    if not deleted:
        return 0
    ModelRoute.objects.filter(tenant=tenant, model_name=model_name).delete()
    # A fallback, split or rule naming a model that no longer exists would fail every request it catches.
    dropped: list[str] = []
    for route in ModelRoute.objects.filter(tenant=tenant).select_for_update():
        before = route.settings()
        after = _without_model(before, model_name)
        if after != before:
            _store_route(tenant, route.model_name, after, route)
            dropped.append(route.model_name)
    rules = [(r.match, r.route) for r in RouteRule.objects.filter(tenant=tenant)]
    if any(route == model_name for _m, route in rules):
        _store_rules(tenant, [(m, r) for m, r in rules if r != model_name])
        dropped.append("rules")
    audit(
        tenant,
        actor=actor,
        action="model.delete",
        target_type="Model",
        target_label=model_name,
        changes={"references_removed_from": dropped} if dropped else None,
    )
    record_change("tenant", tenant.id)
    return deleted


def _without_model(settings: dict, model_name: str) -> dict:
    out = dict(settings)
    out["fallbacks"] = [m for m in settings["fallbacks"] if m != model_name]
    out["context_window_fallbacks"] = [m for m in settings["context_window_fallbacks"] if m != model_name]
    if settings["split"] and settings["split"]["model"] == model_name:
        out["split"] = None
    return out


# --- Route settings: strategy, retries, deadline, fallbacks, split, breaker ------------------------------

ROUTE_FIELDS = set(ROUTE_DEFAULTS)
SPLIT_FIELDS = {"model", "percent", "sticky", "stop_when"}
STOP_WHEN_FIELDS = {"score", "min_calls", "significant"}
STOP_WHEN_DEFAULTS = {"min_calls": 500, "significant": True}
MAX_STOP_MIN_CALLS = 10_000_000


def stop_when_clean(value: object) -> dict:
    """A split's `stop_when` ({score, min_calls, significant}), checked and with its defaults."""
    if not isinstance(value, dict):
        raise ValidationError({"split.stop_when": "must be a mapping {score, min_calls, significant}"})
    if set(value) - STOP_WHEN_FIELDS:
        raise ValidationError({f"split.stop_when.{sorted(set(value) - STOP_WHEN_FIELDS)[0]}": "unknown field"})
    score = value.get("score")
    if not isinstance(score, str) or not score.strip() or len(score) > 64 or not score.isprintable():
        raise ValidationError({"split.stop_when.score": "name the score that decides (e.g. thumbs)"})
    out = {"score": score.strip(), **STOP_WHEN_DEFAULTS}
    if value.get("min_calls") is not None:
        out["min_calls"] = int(
            _number(value["min_calls"], "split.stop_when.min_calls", low=2, high=MAX_STOP_MIN_CALLS, whole=True)
        )
    if value.get("significant") is not None:
        if not isinstance(value["significant"], bool):
            raise ValidationError({"split.stop_when.significant": "must be true or false"})
        out["significant"] = value["significant"]
    return out


COOLDOWN_FIELDS = {"failures", "window_s", "cooldown_s"}


def _number(value: object, field: str, *, low: float, high: float, whole: bool, low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (whole and not isinstance(value, int)):
        raise ValidationError({field: "must be a whole number" if whole else "must be a number"})
    if value != value or (value <= low if low_open else value < low) or value > high:  # NaN fails the first test
        lo, hi = (int(x) if float(x).is_integer() else x for x in (low, high))
        if low_open:
            raise ValidationError({field: f"must be more than {lo} and at most {hi}"})
        raise ValidationError({field: f"must be from {lo} to {hi}"})
    return value


def _model_list(value: object, field: str) -> list[str]:
    if not isinstance(value, (list, tuple)):
        raise ValidationError({field: "must be a list of model names"})
    out: list[str] = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise ValidationError({f"{field}[{i}]": "must be a model name"})
        if item.strip() in out:
            raise ValidationError({f"{field}[{i}]": f"{item.strip()!r} is listed twice"})
        out.append(item.strip())
    return out


def route_settings_clean(settings: dict) -> dict:  # noqa: C901
    """Check the values of one model's route settings and fill the defaults (same shape as ROUTE_DEFAULTS).

    Errors are ValidationError({"field.path": message}); references to other models are checked by
    route_references_check, which needs the whole tenant.
    """
    unknown = set(settings) - ROUTE_FIELDS
    if unknown:
        raise ValidationError({sorted(unknown)[0]: "unknown field"})
    out = {
        k: (list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v)
        for k, v in ROUTE_DEFAULTS.items()
    }
    if settings.get("strategy") is not None:
        if settings["strategy"] not in Strategy.values:
            raise ValidationError(
                {"strategy": f"unknown strategy {settings['strategy']!r} (use one of: {', '.join(Strategy.values)})"}
            )
        out["strategy"] = settings["strategy"]
    if settings.get("retries") is not None:
        out["retries"] = int(_number(settings["retries"], "retries", low=0, high=MAX_RETRIES, whole=True))
    if settings.get("timeout_s") is not None:
        out["timeout_s"] = float(
            _number(settings["timeout_s"], "timeout_s", low=0, high=MAX_TIMEOUT_S, whole=False, low_open=True)
        )
    for field in ("fallbacks", "context_window_fallbacks"):
        if settings.get(field) is not None:
            out[field] = _model_list(settings[field], field)
    split = settings.get("split")
    if split is not None:
        if not isinstance(split, dict):
            raise ValidationError({"split": "must be a mapping {model, percent, sticky, stop_when}"})
        if set(split) - SPLIT_FIELDS:
            raise ValidationError({f"split.{sorted(set(split) - SPLIT_FIELDS)[0]}": "unknown field"})
        model = split.get("model")
        if not isinstance(model, str) or not model.strip():
            raise ValidationError({"split.model": "a split needs the model that takes the share"})
        if split.get("percent") is None:
            raise ValidationError({"split.percent": "a split needs a percent from 0 to 100"})
        sticky = split.get("sticky") or Sticky.USER.value
        if sticky not in Sticky.values:
            raise ValidationError({"split.sticky": f"unknown sticky {sticky!r} (use user or key)"})
        out["split"] = {
            "model": model.strip(),
            "percent": float(_number(split["percent"], "split.percent", low=0, high=100, whole=False)),
            "sticky": sticky,
        }
        if split.get("stop_when") is not None:
            out["split"]["stop_when"] = stop_when_clean(split["stop_when"])
    cooldown = settings.get("cooldown")
    if cooldown is not None:
        if not isinstance(cooldown, dict):
            raise ValidationError({"cooldown": "must be a mapping {failures, window_s, cooldown_s}"})
        if set(cooldown) - COOLDOWN_FIELDS:
            raise ValidationError({f"cooldown.{sorted(set(cooldown) - COOLDOWN_FIELDS)[0]}": "unknown field"})
        c = out["cooldown"]
        if cooldown.get("failures") is not None:
            c["failures"] = int(
                _number(cooldown["failures"], "cooldown.failures", low=1, high=MAX_COOLDOWN_FAILURES, whole=True)
            )
        for field in ("window_s", "cooldown_s"):
            if cooldown.get(field) is not None:
                c[field] = float(
                    _number(cooldown[field], f"cooldown.{field}", low=0, high=MAX_WINDOW_S, whole=False, low_open=True)
                )
    return out


def route_references_check(
    routes: dict[str, dict], known_models: set[str], *, where: Callable[[str, str], str] | None = None
) -> None:
    """Every model named by a route exists, no split points at its own model, and fallbacks have no cycle.

    `routes` maps model name -> cleaned settings for every model that has any. A cycle through
    fallbacks or context_window_fallbacks (a -> b -> a) is refused: the attempt loop could go round it.
    Errors are ValidationError({where(model, field path): message}), by default "<model>.<field path>".
    """
    where = where or (lambda name, field: f"{name}.{field}")
    for name, settings in routes.items():
        for field in ("fallbacks", "context_window_fallbacks"):
            for i, other in enumerate(settings[field]):
                if other == name:
                    raise ValidationError({where(name, f"{field}[{i}]"): f"{name!r} cannot fall back to itself"})
                if other not in known_models:
                    raise ValidationError({where(name, f"{field}[{i}]"): f"unknown model {other!r}"})
        split = settings["split"]
        if split:
            if split["model"] == name:
                raise ValidationError({where(name, "split.model"): f"{name!r} cannot split to itself"})
            if split["model"] not in known_models:
                raise ValidationError({where(name, "split.model"): f"unknown model {split['model']!r}"})
    edges = {n: s["fallbacks"] + s["context_window_fallbacks"] for n, s in routes.items()}
    done: set[str] = set()
    for start in sorted(edges):
        if start in done:
            continue
        # Iterative depth-first search; `path` is the chain from `start` to where we stand.
        stack: list[tuple[str, int]] = [(start, 0)]
        path = [start]
        while stack:
            node, i = stack[-1]
            nexts = edges.get(node, [])
            if i >= len(nexts):
                stack.pop()
                path.pop()
                done.add(node)
                continue
            stack[-1] = (node, i + 1)
            nxt = nexts[i]
            if nxt in path:
                cycle = " -> ".join([*path[path.index(nxt) :], nxt])
                n_fb = len(routes[node]["fallbacks"])
                field = f"fallbacks[{i}]" if i < n_fb else f"context_window_fallbacks[{i - n_fb}]"
                raise ValidationError({where(node, field): f"fallbacks form a cycle: {cycle}"})
            if nxt not in done:
                stack.append((nxt, 0))
                path.append(nxt)


def _store_route(tenant: Tenant, model_name: str, settings: dict, row: ModelRoute | None) -> None:
    if settings == ROUTE_DEFAULTS:
        if row is not None:
            row.delete()
        return
    row = row or ModelRoute(tenant=tenant, model_name=model_name)
    row.strategy = settings["strategy"]
    row.retries = settings["retries"]
    row.timeout_s = settings["timeout_s"]
    row.fallbacks = settings["fallbacks"]
    row.context_window_fallbacks = settings["context_window_fallbacks"]
    split = settings["split"] or {"model": "", "percent": 0.0, "sticky": Sticky.USER.value}
    row.split_model, row.split_percent, row.split_sticky = split["model"], split["percent"], split["sticky"]
    row.split_stop_when = split.get("stop_when")
    cooldown = settings["cooldown"]
    row.cooldown_failures = cooldown["failures"]
    row.cooldown_window_s = cooldown["window_s"]
    row.cooldown_s = cooldown["cooldown_s"]
    row.full_clean(exclude=["tenant"])
    row.save()


@transaction.atomic
def model_routes_set(tenant: Tenant, *, routes: dict[str, dict], actor: Actor) -> list[str]:
    """Set the route settings of the named models (each dict as in the YAML; absent fields take defaults).

    Models not named keep theirs. All of them are checked together, so a file may turn a -> b into
    b -> a in one go. Returns the names of the models whose settings changed.
    """
    known = set(ModelDeployment.objects.filter(tenant=tenant).values_list("model_name", flat=True))
    rows = {r.model_name: r for r in ModelRoute.objects.filter(tenant=tenant).select_for_update()}
    current = {name: row.settings() for name, row in rows.items()}
    wanted: dict[str, dict] = {}
    for name, raw in routes.items():
        if name not in known:
            raise ValidationError({name: f"unknown model {name!r}"})
        try:
            wanted[name] = route_settings_clean(raw)
        except ValidationError as exc:
            raise ValidationError({f"{name}.{k}": v for k, v in exc.message_dict.items()}) from None
    merged = {**current, **wanted}
    route_references_check({n: s for n, s in merged.items() if n in known}, known)
    changed = []
    for name in sorted(wanted):
        before = current.get(name, ROUTE_DEFAULTS)
        after = wanted[name]
        if before == after:
            continue
        _store_route(tenant, name, after, rows.get(name))
        audit(
            tenant,
            actor=actor,
            action="model.routing",
            target_type="Model",
            target_label=name,
            changes={k: [before[k], after[k]] for k in ROUTE_DEFAULTS if before[k] != after[k]},
        )
        changed.append(name)
    if changed:
        record_change("tenant", tenant.id)
    return changed


# --- Tenant-level routing rules ---------------------------------------------------------------------------

RULE_CONDITIONS = {"key", "metadata", "tags", "user", "prompt_bytes_over"}
# Rules are evaluated on every call, in order; as many as the console's rule editor takes.
MAX_RULES = 100
MAX_RULE_NAMES = 100  # names (keys, users, tags) or metadata entries in one condition
MAX_RULE_METADATA_KEY_CHARS = 100
MAX_RULE_METADATA_VALUE_CHARS = 500


def _names(value: object, field: str, *, max_chars: int = MAX_NAME_CHARS) -> list[str]:
    items = [value] if isinstance(value, (str, int)) and not isinstance(value, bool) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise ValidationError({field: "must be a name or a non-empty list of names"})
    out: list[str] = []
    for i, item in enumerate(items):
        where = f"{field}[{i}]" if isinstance(value, (list, tuple)) else field
        if isinstance(item, bool) or not isinstance(item, (str, int)) or not str(item).strip():
            raise ValidationError({where: "must be a name"})
        name = check_text(str(item).strip(), where, max_chars=max_chars)
        if name not in out:
            out.append(name)
    if len(out) > MAX_RULE_NAMES:
        raise ValidationError({field: f"at most {MAX_RULE_NAMES} names in one condition (this has {len(out)})"})
    return out


def rule_match_clean(match: dict) -> dict:
    """Normalize one rule's conditions: names become lists, metadata values strings (compared as text)."""
    if not isinstance(match, dict) or not match:
        raise ValidationError({"if": "a rule needs at least one condition"})
    unknown = set(match) - RULE_CONDITIONS
    if unknown:
        raise ValidationError({f"if.{sorted(unknown)[0]}": "unknown condition"})
    out: dict = {}
    for field in ("key", "user"):
        if match.get(field) is not None:
            out[field] = _names(match[field], f"if.{field}")
    if match.get("tags") is not None:
        if not isinstance(match["tags"], (list, tuple)):
            raise ValidationError({"if.tags": "must be a list of tags"})
        out["tags"] = _names(match["tags"], "if.tags", max_chars=MAX_TAG_CHARS)
    if match.get("metadata") is not None:
        meta = match["metadata"]
        if not isinstance(meta, dict) or not meta:
            raise ValidationError({"if.metadata": "must be a non-empty mapping"})
        if len(meta) > MAX_RULE_NAMES:
            raise ValidationError({"if.metadata": f"at most {MAX_RULE_NAMES} entries (this has {len(meta)})"})
        out["metadata"] = {}
        for k, v in meta.items():
            if isinstance(v, (dict, list)) or v is None:
                raise ValidationError({f"if.metadata.{k}": "must be a plain value"})
            name = check_text(str(k), "if.metadata", max_chars=MAX_RULE_METADATA_KEY_CHARS, what="metadata key")
            text = str(v).lower() if isinstance(v, bool) else str(v)
            out["metadata"][name] = check_text(
                text, f"if.metadata.{name}", max_chars=MAX_RULE_METADATA_VALUE_CHARS, what="metadata value"
            )
    if match.get("prompt_bytes_over") is not None:
        out["prompt_bytes_over"] = int(
            _number(match["prompt_bytes_over"], "if.prompt_bytes_over", low=0, high=MAX_PROMPT_BYTES, whole=True)
        )
    if not out:
        raise ValidationError({"if": "a rule needs at least one condition"})
    return out


def _store_rules(tenant: Tenant, rules: list[tuple[dict, str]]) -> None:
    RouteRule.objects.filter(tenant=tenant).delete()
    RouteRule.objects.bulk_create(
        [RouteRule(tenant=tenant, position=i, match=match, route=route) for i, (match, route) in enumerate(rules)]
    )


@transaction.atomic
def route_rules_set(tenant: Tenant, *, rules: list[dict], actor: Actor) -> bool:
    """Replace the tenant's rules with `rules` ([{"if": {...}, "route": MODEL}], evaluated in this order)."""
    if len(rules) > MAX_RULES:
        raise ValidationError({"rules": f"A tenant has at most {MAX_RULES} rules (this has {len(rules)})."})
    known = set(ModelDeployment.objects.filter(tenant=tenant).values_list("model_name", flat=True))
    wanted: list[tuple[dict, str]] = []
    for i, rule in enumerate(rules):
        try:
            match = rule_match_clean(rule.get("if"))
        except ValidationError as exc:
            raise ValidationError({f"rules[{i}].{k}": v for k, v in exc.message_dict.items()}) from None
        route = str(rule.get("route") or "").strip()
        if route not in known:
            raise ValidationError({f"rules[{i}].route": f"unknown model {route!r}"})
        wanted.append((match, route))
    have = [(r.match, r.route) for r in RouteRule.objects.filter(tenant=tenant).select_for_update()]
    if have == wanted:
        return False
    _store_rules(tenant, wanted)
    audit(
        tenant,
        actor=actor,
        action="routing.rules",
        target_type="RouteRule",
        target_label=f"{len(wanted)} rule{'' if len(wanted) == 1 else 's'}",
        changes={
            "before": [{"if": m, "route": r} for m, r in have],
            "after": [{"if": m, "route": r} for m, r in wanted],
        },
    )
    record_change("tenant", tenant.id)
    return True


@transaction.atomic
def rotate_encryption() -> int:
    """Re-encrypt every provider key under the primary GATEWAY_ENCRYPTION_KEY."""
    count = 0
    for provider in ProviderCredential.objects.select_for_update().exclude(api_key_encrypted=""):
        provider.api_key_encrypted = crypto.rotate(provider.api_key_encrypted)
        provider.save(update_fields=["api_key_encrypted"])
        count += 1
    return count


STARTER_MODEL = "mock-chat"


@transaction.atomic
def starter_setup(tenant: Tenant, *, actor: Actor) -> None:
    """The built-in mock provider and one model it serves, so a new tenant can make a call in a minute."""
    existing = ProviderCredential.objects.filter(tenant=tenant, name="mock").first()
    # Never turn someone's own provider that happens to be called "mock" into the built-in one.
    name = "mock" if existing is None or existing.kind == ProviderKind.MOCK else "builtin-mock"
    provider, _ = provider_upsert(tenant, name=name, kind=ProviderKind.MOCK, actor=actor)
    if not ModelDeployment.objects.filter(tenant=tenant, model_name=STARTER_MODEL).exists():
        model_deployments_set(tenant, model_name=STARTER_MODEL, deployments=[(provider, "mock-chat")], actor=actor)
