"""Prometheus metrics at `/metrics`, summed over every gateway process, at no cost per request.

The numbers come from the call-log buffer's flushed batches (`record_batch`, a log-buffer hook), not
from the request path: each batch is folded into a few hundred counter increments and, with
REDIS_URL, added to one Redis hash in one round trip, so one scrape of any process sees the calls of
all of them. Without Redis (the embedded single-process default) the counters live in this process.

Label values are bounded by configuration: models the tenant serves (a call for an unknown model
counts under `model="other"`), provider names, HTTP status codes, and fixed reason words; never
free text from a request. Names tenants choose are capped per metric (MAX_LABEL_VALUES): the least
used beyond the cap are summed under "other". Histograms keep one counter per bucket and are made cumulative on render.
"""

from __future__ import annotations

import hmac
import threading
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from observability import metrics as internal

REDIS_KEY = "gateway:metrics"
UNKNOWN_MODEL = "other"
SEP = "\x1f"

# (upper bounds in seconds), an implicit +Inf bucket after the last.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
OVERHEAD_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

COUNTERS: dict[str, str] = {
    "gateway_requests_total": "Calls answered, by public model, provider and HTTP status.",
    "gateway_tokens_total": "Tokens by public model, provider and type (prompt, completion, cached).",
    "gateway_spend_usd_total": "Cost of the calls in USD, exact, by public model and provider.",
    "gateway_upstream_attempts_total": "Upstream attempts by provider and HTTP status (0: no answer).",
    "gateway_upstream_errors_total": "Failed upstream attempts by provider and HTTP status (0: no answer).",
    "gateway_retries_total": "Extra attempts on the same deployment, by provider.",
    "gateway_fallbacks_total": "Calls served by a fallback model, by the public model asked for.",
    "gateway_cache_total": "Exact-cache lookups by public model and result (hit, miss).",
    "gateway_pii_actions_total": "Data-policy actions by detector and action.",
    "gateway_guardrail_verdicts_total": "Guardrail verdicts other than pass, by check, side and outcome.",
    "gateway_refusals_total": "Calls the gateway refused itself, by reason (rate_limit, budget, ...).",
    "gateway_internal_events_total": "Call-log writer events (rows refused, degraded, lost).",
}
HISTOGRAMS: dict[str, tuple[str, tuple[float, ...]]] = {
    "gateway_request_duration_seconds": ("Time from request to the end of the answer, by model.", LATENCY_BUCKETS),
    "gateway_ttfb_seconds": ("Time to the first byte of the answer, by model.", LATENCY_BUCKETS),
    "gateway_overhead_seconds": ("Time spent in the gateway itself, upstream time excluded.", OVERHEAD_BUCKETS),
}
# Error codes of the gateway's own refusals -> the reason label.
REFUSALS = {
    "rate_limit_exceeded": "rate_limit",
    "deployment_rate_limited": "rate_limit",
    "budget_exceeded": "budget",
    "budget_unavailable": "budget_unavailable",
    "model_not_found": "model_not_found",
}
# Attempts the gateway recorded without calling the upstream -> the refusal reason.
NOT_SENT = {"deployment_rate_limited": "deployment_rate_limit", "upstream_blocked": "upstream_blocked"}
PII_WORD_MAX = 40

# Extra gauges from other apps (the proxy's breaker states): callables returning
# [(name, help, {label: value}, value)], read at scrape time in the scraping process.
_gauges: list[Callable[[], Iterable[tuple[str, str, dict[str, str], float]]]] = []


def register_gauges(provider: Callable[[], Iterable[tuple[str, str, dict[str, str], float]]]) -> None:
    if provider not in _gauges:
        _gauges.append(provider)


def _encode(key: tuple) -> str:
    """("name", ("label", value), ...) -> the Redis hash field "name<SEP>label=value<SEP>..."."""
    return SEP.join([key[0], *(f"{k}={v}" for k, v in key[1:])])


def _field(name: str, **labels: Any) -> str:
    return _encode((name, *labels.items()))


# Bucket and sum field names per histogram, made once (collect() runs for every logged call).
_BUCKET_NAMES = {name: [f"{name}:b{i}" for i in range(len(b) + 1)] for name, (_h, b) in HISTOGRAMS.items()}
_SUM_NAMES = {name: f"{name}:sum_us" for name in HISTOGRAMS}


def _observe(deltas: Counter, name: str, bounds: tuple[float, ...], seconds: float, *labels: tuple) -> None:
    index = bisect_left(bounds, seconds)  # bucket i counts values <= bounds[i]; len(bounds) is +Inf
    deltas[(_BUCKET_NAMES[name][index], *labels)] += 1
    deltas[(_SUM_NAMES[name], *labels)] += round(seconds * 1_000_000)


# Label values come from tenants' configuration (model and provider names): stored and scraped only
# as printable text of bounded length. A control character (the field separator above among them) would
# forge labels or break every scrape.
LABEL_MAX = 100
_CONTROL = dict.fromkeys([*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029], "?")


def _value(text: str) -> str:
    return text[:LABEL_MAX].translate(_CONTROL)


def _word(value: Any) -> str:
    # Detector and action names come from the tenant's policy config; keep them label-safe and short.
    text = str(value)[:PII_WORD_MAX]
    return text if text.replace("_", "").replace("-", "").isalnum() else "other"


def collect(records: Iterable[dict[str, Any]]) -> Counter:  # noqa: C901
    """The counter increments for a batch of call-log records (pure: no I/O)."""
    deltas: Counter = Counter()
    for r in records:
        provider = r.get("provider") or ""
        # Only a model the config served is a label value: a routed call has a deployment, a cache hit
        # was answered for a served model. Anything else (an unknown or refused model) is "other".
        known = r.get("deployment_id") is not None or r.get("cache_status") == "hit"
        model = _value(r.get("requested_model") or UNKNOWN_MODEL) if known else UNKNOWN_MODEL
        provider = _value(provider)
        status = int(r.get("status_code") or 0)
        m, p = ("model", model), ("provider", provider)
        deltas[("gateway_requests_total", m, p, ("status", status))] += 1
        latency = r.get("latency_ms")
        if latency is not None:
            _observe(deltas, "gateway_request_duration_seconds", LATENCY_BUCKETS, latency / 1000, m)
        ttfb = r.get("ttfb_ms")
        if ttfb is not None:
            _observe(deltas, "gateway_ttfb_seconds", LATENCY_BUCKETS, ttfb / 1000, m)
        overhead = r.get("overhead_ms")
        if overhead is not None:
            _observe(deltas, "gateway_overhead_seconds", OVERHEAD_BUCKETS, overhead / 1000)  # no labels
        for kind in ("prompt", "completion", "cached"):
            tokens = r.get(f"{kind}_tokens")
            if tokens:
                deltas[("gateway_tokens_total", m, p, ("type", kind))] += tokens
        cost = r.get("cost_picodollars")
        if cost:
            deltas[("gateway_spend_usd_total:pico", m, p)] += cost
        previous = None
        for attempt in r.get("attempts") or ():
            a_provider = _value(attempt.get("provider") or "")
            a_status = int(attempt.get("status") or 0)
            skipped = NOT_SENT.get(attempt.get("error") or "")
            if skipped is not None:
                # The gateway did not call this deployment (its own limit, a refused address).
                deltas[("gateway_refusals_total", ("reason", skipped))] += 1
                continue
            deltas[("gateway_upstream_attempts_total", ("provider", a_provider), ("status", a_status))] += 1
            if a_status >= 400 or a_status == 0 or attempt.get("error"):
                deltas[("gateway_upstream_errors_total", ("provider", a_provider), ("status", a_status))] += 1
            if previous is not None and previous == attempt.get("deployment"):
                deltas[("gateway_retries_total", ("provider", a_provider))] += 1
            previous = attempt.get("deployment")
        if r.get("fallback_reason"):
            deltas[("gateway_fallbacks_total", m)] += 1
        cache = r.get("cache_status")
        if cache in ("hit", "miss"):
            deltas[("gateway_cache_total", m, ("result", cache))] += 1
        for detector, actions in (r.get("pii_actions") or {}).items():
            if isinstance(actions, dict):
                for action, count in actions.items():
                    if isinstance(count, int) and count > 0:
                        key = ("gateway_pii_actions_total", ("detector", _word(detector)), ("action", _word(action)))
                        deltas[key] += count
        for verdict in (r.get("guardrails") or {}).values():
            if isinstance(verdict, dict) and verdict.get("outcome") not in (None, "pass"):
                key = (
                    "gateway_guardrail_verdicts_total",
                    ("check", _word(str(verdict.get("check")))),
                    ("side", _word(str(verdict.get("side")))),
                    ("outcome", _word(str(verdict.get("outcome")))),
                )
                deltas[key] += 1
        reason = REFUSALS.get(r.get("error_type") or "")
        if reason is not None and not r.get("attempts"):
            deltas[("gateway_refusals_total", ("reason", reason))] += 1
    # Keys are tuples while counting (cheap to build); fields are encoded once per distinct series.
    return Counter({_encode(key): amount for key, amount in deltas.items()})


# --- storage: one Redis hash shared by every process, or this process alone ---------------------------

_local: Counter = Counter()
_local_lock = threading.Lock()
_internal_pushed: dict[str, int] = {}
_redis: Any = None


def _client() -> Any:
    global _redis
    if _redis is None:
        import redis

        _redis = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    return _redis


def add(deltas: Counter) -> None:
    if not deltas:
        return
    if settings.REDIS_URL:
        pipe = _client().pipeline(transaction=False)
        for name, amount in deltas.items():
            pipe.hincrby(REDIS_KEY, name, amount)
        pipe.execute()
    else:
        with _local_lock:
            _local.update(deltas)


def _internal_deltas() -> Counter:
    """What this process's internal counters (observability.metrics) gained since the last push."""
    deltas: Counter = Counter()
    with _local_lock:  # flushes run in worker threads: each gain is pushed once
        for name, value in internal.snapshot().items():
            gained = value - _internal_pushed.get(name, 0)
            if gained > 0:
                deltas[_field("gateway_internal_events_total", event=name)] += gained
                _internal_pushed[name] = value
    return deltas


def record_batch(records: list[dict[str, Any]]) -> None:
    """Log-buffer hook: fold a flushed batch into the shared counters (one Redis round trip)."""
    deltas = collect(records)
    deltas.update(_internal_deltas())
    add(deltas)


def current() -> dict[str, int]:
    if settings.REDIS_URL:
        return {k.decode(): int(v) for k, v in _client().hgetall(REDIS_KEY).items()}
    with _local_lock:
        return dict(_local)


# --- rendering: Prometheus text format 0.0.4 -------------------------------------------------------------


def _escape(value: str) -> str:
    # Older stored values may hold control characters (before _value cleaned them): never render one.
    return _value(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    body = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)
    return "{" + body + "}" if body else ""


def _seconds(value: float) -> str:
    return repr(float(value))


# Label values that name what tenants configure (models, providers, custom detectors, deployments): any
# tenant may create as many as it likes, so each metric keeps its most used values of each such label
# and sums the rest under "other". No tenant can grow a scrape without bound, and totals still add up.
MAX_MODELS = 200
MAX_LABEL_VALUES = {"model": MAX_MODELS, "provider": 100, "detector": 100, "deployment": 200}
OTHER = UNKNOWN_MODEL
LABEL_NAMES = frozenset({"model", "provider", "status", "type", "reason", "detector", "action", "result", "event"})


def _kept_values(usage: dict[tuple[str, str], Counter]) -> dict[tuple[str, str], set[str]]:
    """(metric, label) -> the values shown as they are, for the labels over their cap; by use, then name."""
    kept = {}
    for (metric, label), counts in usage.items():
        cap = MAX_LABEL_VALUES[label]
        if len(counts) > cap:
            ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
            kept[(metric, label)] = {value for value, _n in ranked[:cap]}
    return kept


def _cap_series(values: dict[str, int]) -> dict[str, int]:
    """The stored fields with each metric's capped labels folded into "other" beyond their cap.

    A histogram's buckets, sum and count share the metric's kept values, so folded series stay consistent.
    """
    usage: dict[tuple[str, str], Counter] = {}
    for field, value in values.items():
        name, *labels = field.split(SEP)
        metric = name.partition(":")[0]
        for label in labels:
            key, _sep, label_value = label.partition("=")
            if key in MAX_LABEL_VALUES:
                usage.setdefault((metric, key), Counter())[label_value] += abs(value)
    kept = _kept_values(usage)
    if not kept:
        return values
    capped: Counter = Counter()
    for field, value in values.items():
        name, *labels = field.split(SEP)
        metric = name.partition(":")[0]
        parts = [name]
        for label in labels:
            key, _sep, label_value = label.partition("=")
            shown = kept.get((metric, key))
            parts.append(label if shown is None or label_value in shown else f"{key}={OTHER}")
        capped[SEP.join(parts)] += value
    return dict(capped)


def _cap_gauges(samples: list[tuple[str, str, dict[str, str], float]]) -> list[tuple[str, str, dict[str, str], float]]:
    """Gauges from other apps, capped like the counters: beyond the cap, values are summed under "other"
    (for breaker states: how many of the other deployments are in each state)."""
    usage: dict[tuple[str, str], Counter] = {}
    for name, _help, labels, value in samples:
        for key, label_value in labels.items():
            if key in MAX_LABEL_VALUES:
                usage.setdefault((name, key), Counter())[str(label_value)] += abs(value)
    kept = _kept_values(usage)
    if not kept:
        return samples
    folded: dict[tuple[str, tuple], list] = {}
    for name, help_text, labels, value in samples:
        shown = {
            key: (str(v) if (name, key) not in kept or str(v) in kept[(name, key)] else OTHER)
            for key, v in labels.items()
        }
        if OTHER in shown.values():
            # A folded series folds whole (a breaker's deployment, provider and model together), so that
            # what is beyond the cap really is one series per remaining label value.
            shown = {key: (OTHER if key in MAX_LABEL_VALUES else v) for key, v in shown.items()}
        entry = folded.setdefault((name, tuple(shown.items())), [name, help_text, shown, 0.0])
        entry[3] += value
    return [tuple(entry) for entry in folded.values()]  # type: ignore[misc]


def render(values: dict[str, int]) -> str:
    counters: dict[str, list[tuple[tuple, str]]] = {}
    histograms: dict[str, dict[tuple, dict[str, int]]] = {}
    for field, value in _cap_series(values).items():
        name, *labels = field.split(SEP)
        pairs = tuple(tuple(label.split("=", 1)) for label in labels)
        if any(len(pair) != 2 or pair[0] not in LABEL_NAMES for pair in pairs):
            continue  # a field forged before label values were cleaned: never rendered
        base, _, part = name.partition(":")
        if base in HISTOGRAMS:
            histograms.setdefault(base, {}).setdefault(pairs, {})[part] = value
        elif part == "pico":
            counters.setdefault(base, []).append((pairs, str(Decimal(value) / Decimal(10**12))))
        elif base in COUNTERS:
            counters.setdefault(base, []).append((pairs, str(value)))
    lines: list[str] = []
    for name, help_text in COUNTERS.items():
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
        for pairs, value in sorted(counters.get(name, ())):
            lines.append(f"{name}{_labels(pairs)} {value}")
    for name, (help_text, bounds) in HISTOGRAMS.items():
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        for pairs, parts in sorted(histograms.get(name, {}).items()):
            total = 0
            for i, bound in enumerate((*bounds, None)):
                total += parts.get(f"b{i}", 0)
                le = "+Inf" if bound is None else _seconds(bound)
                lines.append(f"{name}_bucket{_labels((*pairs, ('le', le)))} {total}")
            lines.append(f"{name}_sum{_labels(pairs)} {_seconds(parts.get('sum_us', 0) / 1_000_000)}")
            lines.append(f"{name}_count{_labels(pairs)} {total}")
    seen: set[str] = set()
    for provider in _gauges:
        for name, help_text, labels, value in _cap_gauges(list(provider())):
            if name not in seen:
                seen.add(name)
                lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
            lines.append(f"{name}{_labels(sorted(labels.items()))} {_seconds(value)}")
    return "\n".join(lines) + "\n"


@never_cache
@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    token = settings.GATEWAY_METRICS_TOKEN
    if not token:
        return HttpResponse("Not found\n", status=404, content_type="text/plain")
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        response = HttpResponse("Send the metrics token as 'Authorization: Bearer ...'.\n", status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        response["Content-Type"] = "text/plain"
        return response
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        return HttpResponse("This metrics token is not valid.\n", status=403, content_type="text/plain")
    return HttpResponse(render(current()), content_type="text/plain; version=0.0.4; charset=utf-8")
