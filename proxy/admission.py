"""Admission (rate limits, parallel caps, budget reservations) and settlement for one proxied call."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Any

from django.conf import settings

from billing.display import display_usd
from billing.models import ALERT_REFUSED, Budget
from billing.periods import period_key, seconds_to_next_period
from billing.selectors import spent_in_period_pico
from billing.tasks import send_budget_alert
from gateway_project.common.dbconn import db_thread
from gateway_project.common.money import NANO, pico_to_nanos_ceil
from observability import metrics
from observability.selectors import calls_stored
from proxy.background import spawn
from proxy.errors import ProxyError
from proxy.limits import BudgetCheck, RateCheck, Reservation, limiter
from proxy.snapshot import BudgetSpec, Deployment, KeyEntry, TenantEntry

logger = logging.getLogger("gateway.money")

# How long past its deadline an unsettled call keeps its parallel slot and budget reservation: time
# for the settlement of a call that ended right at its deadline to arrive.
HOLD_MARGIN_S = 30.0


class _Outage:
    """One log line when the shared counters (Redis) stop answering and one when they answer again,
    instead of a traceback per refused or unchecked call; every failure is counted
    (`gateway_internal_events_total{event="limiter_error"}` on /metrics)."""

    def __init__(self) -> None:
        self.since: float | None = None
        self.failures = 0

    def failed(self, what: str, exc: BaseException) -> None:
        metrics.incr("limiter_error")
        self.failures += 1
        if self.since is None:
            self.since = time.monotonic()
            logger.error("%s failed: %s: %s; counting further failures quietly", what, type(exc).__name__, exc)

    def ok(self) -> None:
        if self.since is not None:
            logger.warning(
                "the limiter answers again after %.1f s (%d failed checks)",
                time.monotonic() - self.since,
                self.failures,
            )
            self.since, self.failures = None, 0
        if unsettled:
            spawn(settle_again())


outage = _Outage()


_slot_pid = 0
_slot_prefix = ""
_slot_seq = 0


def slot_prefix() -> str:
    """This process's random prefix of reservation ids (PREFIX_LEN hex digits), also the name of its
    lease (proxy.recovery). Re-drawn after a fork."""
    global _slot_pid, _slot_prefix, _slot_seq
    pid = os.getpid()
    if pid != _slot_pid:
        _slot_pid, _slot_prefix, _slot_seq = pid, os.urandom(PREFIX_LEN // 2).hex(), 0
    return _slot_prefix


PREFIX_LEN = 12


def new_slot_id() -> str:
    """A reservation id unique across processes and restarts: a random per-process prefix and a counter
    (one getrandom call per process instead of one per request)."""
    global _slot_seq
    slot_prefix()
    _slot_seq += 1
    return f"{_slot_prefix}{_slot_seq:x}"


def _applies(budget: BudgetSpec, key: KeyEntry, user: str, tags: list[str]) -> bool:
    kind = budget.scope_kind
    if kind == "tenant":
        return True
    if kind == "key":
        return budget.scope_value == key.name
    if kind == "user":
        return bool(user) and budget.scope_value == user
    if kind == "tag":
        return budget.scope_value in tags
    return False


# Tokens an image or audio part may cost, whatever its size in the request: a conservative ceiling.
MEDIA_PART_TOKENS = 30_000


def prompt_ceiling(body: bytes) -> int:
    """An upper bound on the prompt's tokens: a token is at least one byte of text, and media parts
    are counted at a flat ceiling. Hard budgets reserve this, so they hold whatever the tokenizer."""
    media = body.count(b'"image_url"') + body.count(b'"input_audio"') + body.count(b'"file_data"')
    return len(body) + media * MEDIA_PART_TOKENS


async def admit(  # noqa: C901
    *,
    key: KeyEntry,
    tenant: TenantEntry,
    deployment: Deployment,
    payload: dict,
    body: bytes,
    endpoint: str,
    user: str,
    tags: list[str],
    prompt_estimate: int,
    now: datetime,
    prices: list | None = None,
    deployment_limits: bool = True,
    cache: Any = None,
    cache_key: str = "",
    hold_s: float | None = None,
    unpriced: Callable[[], list[Deployment]] | None = None,
) -> tuple[Reservation | None, dict[str, str]]:
    """Admit one call, in one round trip: the key's and tenant's rates, the key's parallel cap,
    every budget that applies and, with `deployment_limits`, the deployment's own rates (when the
    call can go nowhere else; otherwise the attempt loop admits each deployment it tries,
    `admit_deployment`). A hard budget reserves the worst case over `prices` (every deployment the
    call may fall back to), by default the deployment's own price.

    `cache` is the call's prompt-cache lookup when the cache is on: its GET at `cache_key` rides on
    this same round trip. A hit answers the call and reserves nothing; an in-process hit is known
    before admission even starts.

    `hold_s` is the call's timeout: should the call never settle (its process died), its parallel slot
    and budget reservation are freed that long after admission plus HOLD_MARGIN_S."""
    rates = []
    if key.rpm or key.tpm:
        rates.append(RateCheck(f"k:{key.key_id}", key.rpm, key.tpm))
    if tenant.rpm or tenant.tpm:
        rates.append(RateCheck(f"t:{tenant.tenant_id}", tenant.rpm, tenant.tpm))
    if deployment_limits and (deployment.rpm or deployment.tpm):
        rates.append(RateCheck(f"d:{deployment.id}", deployment.rpm, deployment.tpm))
    parallel = (f"k:{key.key_id}", key.max_parallel) if key.max_parallel else None
    budgets = [b for b in tenant.budgets if _applies(b, key, user, tags)] if tenant.budgets else []
    if cache is not None and cache.hit is not None:
        return None, {}
    if unpriced is not None and budgets and any(b.hard for b in budgets) and (missing := unpriced()):
        # A call no price can be put on would pass through a hard budget uncounted (an A/B split to a
        # fine-tuned model sent every call of a key past it): refused, with how to mend it.
        _refuse_unpriced(missing, [b for b in budgets if b.hard])
    if not rates and not parallel and not budgets:
        if cache_key:
            await cache.fetch(cache_key)  # nothing to admit: the lookup is the call's one round trip
        return None, {}

    max_out = requested_output(endpoint, payload)
    # TPM counts the prompt and the requested output cap up front, as OpenAI does; settled after.
    tokens = prompt_estimate + (max_out or 0) if any(r.tpm for r in rates) else 0
    checks = []
    for b in budgets:
        pk = period_key(b.period, now, tenant.tz)
        checks.append(BudgetCheck(b.id, budget_counter_key(b.id, pk), b.limit_nanos, b.hard, b.alert_at, b.scope, pk))
    reserve = 0
    if prices is None:
        prices = [deployment.price] if deployment.price is not None else []
    if checks and prices:
        choices = payload.get("n")
        choices = choices if isinstance(choices, int) and not isinstance(choices, bool) and choices > 1 else 1
        ceiling = prompt_ceiling(body)
        reserve = max(
            price.worst_case_nanos(ceiling, (max_out if max_out is not None else price.max_output) * choices)
            for price in prices
        )
    # Reservations are keyed by a gateway-made id: client request ids may repeat.
    slot_id = new_slot_id()
    try:
        hold_ms = int(min(settings.GATEWAY_RESERVATION_TTL, hold_s + HOLD_MARGIN_S) * 1000) if hold_s else 0
        admission, reservation = await _admit_seeding(
            slot_id, rates, tokens, parallel, checks, reserve, tenant, now, cache_key, hold_ms
        )
    except asyncio.CancelledError:
        # The client left while the script ran: whatever it recorded must not wait 12 minutes to expire.
        spawn(_release(slot_id, rates, tokens, parallel, checks, reserve))
        raise
    except Exception as exc:
        outage.failed("limit check", exc)
        if any(c.hard for c in checks) and not tenant.budgets_fail_open:
            # Without the shared counters a hard budget cannot be guaranteed: refuse rather than overspend
            # (unless the tenant chose to let calls through; billing's hard_budgets_on_redis_outage).
            raise ProxyError(
                503,
                "Budget enforcement is temporarily unavailable; retry shortly.",
                type="server_error",
                code="budget_unavailable",
                headers={"retry-after": "1"},
            ) from None
        return None, {}  # rate limits fail open: better a burst than an outage
    if outage.since is not None:
        outage.ok()
    if cache_key and cache.found(admission.cached):
        # Served from the cache, refused or not (it costs nothing): give back what was just admitted,
        # after the answer. Only the request itself stays counted against RPM.
        if reservation is not None:
            spawn(settle(reservation, 0, 0))
        return None, admission.headers if admission.ok else {}
    if admission.ok:
        return reservation, admission.headers
    if admission.reason == "budget":
        check, budget = checks[admission.index], budgets[admission.index]
        # Calls are refused from now on: the owners hear it once per budget and period, whatever share
        # is spent (a call is refused as soon as its worst case does not fit).
        spawn(_alert(check, ALERT_REFUSED, admission.spent_nanos))
        headers = dict(admission.headers)
        wait = seconds_to_next_period(budget.period, now, tenant.tz)
        if wait:
            headers["retry-after"] = str(wait)
        raise ProxyError(
            429,
            _budget_refusal(
                admission.scope, budget.period, check.limit_nanos, admission.spent_nanos, reserve, prices, body, payload
            ),
            type="insufficient_quota",
            code="budget_exceeded",
            headers=headers,
        )
    what = {
        "rpm": "requests per minute (RPM)",
        "tpm": "tokens per minute (TPM)",
        "parallel": "parallel requests",
    }[admission.reason]
    retry = max(math.ceil(admission.retry_after), 1)
    raise ProxyError(
        429,
        f"Rate limit reached for {what} on {_scope_label(admission.scope, key, tenant, deployment)}. "
        f"Please try again in {retry}s.",
        type="requests" if admission.reason != "tpm" else "tokens",
        code="rate_limit_exceeded",
        headers={**admission.headers, "retry-after": str(retry)},
    )


def _budget_refusal(
    scope: str, period: str, limit: int, spent: int, reserve: int, prices: list, body: bytes, payload: dict
) -> str:
    """What a refused client needs to act: what is left, what this request would reserve at most, and
    the largest `max_tokens` that would fit (built only on refusal)."""
    left = max(limit - spent, 0)

    def usd(nanos: int) -> str:
        return display_usd(Decimal(nanos) / NANO)

    text = (
        f"Budget exceeded for {scope}: the {period} budget of {usd(limit)} USD has {usd(left)} USD left "
        f"(spent and held by calls in flight: {usd(min(spent, limit))} USD)"
    )
    if not reserve or not prices:
        return text + "."
    text += f", and this request would reserve up to {usd(reserve)} USD (its prompt and its output cap, at the highest price it may be billed at)."
    choices = payload.get("n")
    choices = choices if isinstance(choices, int) and not isinstance(choices, bool) and choices > 1 else 1
    ceiling = prompt_ceiling(body)

    def cost(out: int) -> int:
        return max(price.worst_case_nanos(ceiling, out * choices) for price in prices)

    if cost(1) > left:
        return text + " Even one output token does not fit: the budget resets at the next period, or raise it."
    low, high = 1, 1 << 31
    while low < high:  # the largest output cap that fits what is left
        mid = (low + high + 1) // 2
        if cost(mid) <= left:
            low = mid
        else:
            high = mid - 1
    return text + f" A request with max_tokens (max_completion_tokens) of at most {low} would fit."


def _refuse_unpriced(missing: list[Deployment], hard: list[Any]) -> None:
    names = ", ".join(sorted({f"'{d.model_name}' ({d.provider_name}/{d.upstream_model})" for d in missing}))
    scopes = ", ".join(sorted({b.scope for b in hard}))
    raise ProxyError(
        403,
        f"This call may be served by {names}, which has no known price, and a hard budget applies ({scopes}): "
        "a call that cannot be priced cannot be held to it. Give the deployment a price (its `base_model`, "
        "priced as a known model, or a negotiated price under Billing > Prices), or take it out of this "
        "key's routes.",
        type="permission_denied",
        code="model_unpriced",
    )


def requested_output(endpoint: str, payload: dict) -> int | None:
    """The output cap the request sets (0 for embeddings, which generate none); None when unset."""
    if endpoint == "embeddings":
        return 0
    max_out = payload.get("max_completion_tokens") or payload.get("max_tokens")
    return max_out if isinstance(max_out, int) and max_out > 0 else None


async def admit_deployment(deployment: Deployment, *, tokens: int) -> Reservation | None:
    """Admit one attempt on a deployment with its own RPM/TPM (one round trip, only for those).

    `tokens` is what the call counts against TPM (its prompt estimate plus the requested output cap).
    Raises a 429 ProxyError when the deployment is at its limit: the attempt loop then tries the
    next deployment without calling this one."""
    if not (deployment.rpm or deployment.tpm):
        return None
    rates = [RateCheck(f"d:{deployment.id}", deployment.rpm, deployment.tpm)]
    tokens = tokens if deployment.tpm else 0
    slot_id = new_slot_id()
    try:
        admission, reservation = await limiter().admit(slot_id, rates, tokens, None, [], 0)
    except asyncio.CancelledError:
        spawn(_release(slot_id, rates, tokens, None, [], 0))
        raise
    except Exception as exc:
        outage.failed("deployment limit check", exc)
        return None  # rate limits fail open
    if admission.ok:
        return reservation
    retry = max(math.ceil(admission.retry_after), 1)
    what = "tokens per minute (TPM)" if admission.reason == "tpm" else "requests per minute (RPM)"
    raise ProxyError(
        429,
        f"Rate limit reached for {what} on deployment {deployment.provider_name}/{deployment.upstream_model}.",
        type="requests" if admission.reason != "tpm" else "tokens",
        code="rate_limit_exceeded",
        headers={"retry-after": str(retry)},
    )


def _scope_label(scope: str, key: KeyEntry, tenant: TenantEntry, deployment: Deployment) -> str:
    """The limited scope as the caller knows it; limiter scopes ("k:12", "t:3", "d:40") are internal ids.
    Built only on refusal."""
    kind = scope.partition(":")[0]
    if kind == "k":
        return f"key '{key.name}'"
    if kind == "t":
        return f"tenant '{tenant.slug}'"
    if kind == "d":
        return f"model '{deployment.model_name}'"
    return "this key"


def budget_counter_key(budget_id: int, period: str) -> str:
    return f"gw:b:{budget_id}:{period}"


def ledger_for_seed(budget_id: int, tz: tzinfo, now: datetime, orphans: list[str]) -> tuple[int, list[str]]:
    """The budget period's spend in the ledger (nanos, rounded up) and which of the orphan calls (request
    ids settled while the counter was missing) it holds already."""
    budget = Budget.objects.filter(id=budget_id).first()
    if budget is None:
        return 0, []
    spent = spent_in_period_pico(budget, now=now, tz=tz)
    stored = calls_stored(budget.tenant_id, orphans, since=now - timedelta(days=1)) if orphans else []
    return pico_to_nanos_ceil(spent), stored


async def seed_budget_counter(budget_id: int, counter_key: str, tz: tzinfo, now: datetime) -> None:
    """Start a budget period's counter from the ledger (a live counter is never overwritten). Right
    after Redis lost its data the epoch is young: wait until every process has stored its spooled logs
    and registered its open reservations again (proxy.recovery), so the ledger is whole."""
    lim = limiter()
    delay_ms = int(settings.GATEWAY_REBUILD_DELAY * 1000)
    deadline = time.monotonic() + settings.GATEWAY_REBUILD_DELAY + 5.0
    while True:
        orphans = await lim.orphans(counter_key)
        nanos, stored = await db_thread(ledger_for_seed)(budget_id, tz, now, list(orphans))
        wait = await lim.seed(counter_key, nanos, stored, delay_ms)
        if not wait:
            return
        if time.monotonic() + wait > deadline:
            raise RuntimeError("the budget counter's epoch stays too young to rebuild it")
        await asyncio.sleep(wait)


async def _admit_seeding(slot_id, rates, tokens, parallel, checks, reserve, tenant, now, cache_key="", hold_ms=0):
    """Admit; when a budget's counter is missing, start it from the ledger and try again."""
    for _ in range(len(checks) + 1):
        admission, reservation = await limiter().admit(
            slot_id, rates, tokens, parallel, checks, reserve, cache_key=cache_key, hold_ms=hold_ms
        )
        if admission.reason != "seed":
            if reservation is not None and (reservation.parallel_key or reservation.reserve_nanos):
                held[slot_id] = reservation
            return admission, reservation
        check = checks[admission.index]
        await seed_budget_counter(check.budget_id, check.key, tenant.tz, now)
    raise RuntimeError("budget counters could not be seeded")


async def _release(slot_id, rates, tokens, parallel, checks, reserve) -> None:
    reservation = Reservation(slot_id, rates, tokens, parallel[0] if parallel else None, checks, reserve)
    try:
        await limiter().settle(reservation, tokens, 0)
    except Exception as exc:
        outage.failed("releasing the slots of a cancelled request", exc)


# Settlements that could not reach the limiter (Redis down or restarting), retried once it answers
# again: otherwise their spend would be missing from a counter that survived (a Redis restarted with
# its data), for the rest of the period. Bounded: beyond it the oldest are dropped (and counted).
MAX_UNSETTLED = 100_000
unsettled: deque[tuple[Reservation, int, int]] = deque()


# This process's open reservations and parallel slots, by slot id: registered again in Redis after it
# lost its data (proxy.recovery), so calls in flight keep counting against their budgets.
held: dict[str, Reservation] = {}


async def settle(reservation: Reservation, tokens: int, nanos: int) -> None:
    held.pop(reservation.request_id, None)
    try:
        results = await limiter().settle(reservation, tokens, nanos)
    except Exception as exc:
        outage.failed("settling a request", exc)
        if len(unsettled) >= MAX_UNSETTLED:
            unsettled.popleft()
            metrics.incr("settle_dropped")
        unsettled.append((reservation, tokens, nanos))
        return
    if outage.since is not None:
        outage.ok()
    for check, (before, after) in zip(reservation.budgets, results, strict=False):
        for threshold in check.alert_at:
            mark = check.limit_nanos * threshold / 100
            if before < mark <= after:
                spawn(_alert(check, threshold, after))


async def settle_again() -> None:
    """The settlements that failed during the outage, in order; one that fails again stays queued."""
    for _ in range(len(unsettled)):
        reservation, tokens, nanos = unsettled.popleft()
        await settle(reservation, tokens, nanos)
        if outage.since is not None:
            return  # away again: what is left waits for the next recovery


# Alerts this process already queued. The database row makes each alert exactly-once across
# processes; this set only keeps a refused burst from queueing one task per refused request.
_queued: set[tuple[int, str, int]] = set()


async def _alert(check: BudgetCheck, threshold: int, spent_nanos: int) -> None:
    ident = (check.budget_id, check.period_key, threshold)
    if (threshold not in check.alert_at and threshold != ALERT_REFUSED) or ident in _queued:
        return
    if len(_queued) > 10_000:
        _queued.clear()
    _queued.add(ident)
    try:
        await db_thread(_enqueue_alert)(check.budget_id, check.period_key, threshold, spent_nanos)
    except Exception:
        _queued.discard(ident)  # the broker was away: let the next crossing or refusal try again
        raise


def _enqueue_alert(budget_id: int, period: str, threshold: int, spent_nanos: int) -> None:
    send_budget_alert.delay(budget_id=budget_id, period_key=period, threshold=threshold, spent_nanos=spent_nanos)
