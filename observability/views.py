"""Console pages over the call logs: the dashboard (from rollups), the log explorer with its detail view and
streamed exports, and the playground.

Members see only the calls of the keys they created; viewers and up see the whole tenant. Another
tenant's logs answer 404, like everything else of another tenant.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async
from django.contrib.auth.decorators import login_required
from django.core.handlers.asgi import ASGIRequest
from django.http import Http404, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from gateway_project.common.htmx import HtmxHttpRequest
from gateway_project.common.money import from_pico
from observability import selectors
from observability.charts import bar_chart, line_chart
from observability.exports import export_lines
from observability.forms import STATUS_CHOICES, LogFilterForm, PlaygroundForm, RangeForm
from observability.guardrail_stats import TOP as GUARDRAILS_TOP
from observability.guardrail_stats import guardrail_stats
from observability.models import HISTOGRAM_FLOOR_MS, HISTOGRAM_RELATIVE_ERROR, CallLog
from observability.playground import (
    KEY_TTL,
    MAX_TURNS,
    Ask,
    Turn,
    ask_all,
    dump_conversation,
    messages_for,
    playground_key_get_or_create,
    playground_key_of,
    playground_models,
)
from observability.selectors import (
    LogFilters,
    access_log,
    body_of,
    export_estimate,
    filtered_logs,
    key_usage,
    log_by_request_id,
    log_page,
    score_names,
    score_sorted_page,
    variant_usage,
)
from observability.selectors import (
    dashboard as dashboard_data,
)
from routing.selectors import model_names_for
from tenants.models import Role, VirtualKey
from tenants.permissions import KEYS_WRITE, TenantAccess, own_keys, tenant_access, visible_keys


def scope_key_ids(access: TenantAccess) -> list[int] | None:
    """The keys whose calls the caller may see: a member's own keys, None (all) for everyone else."""
    if access.role == Role.MEMBER:
        return list(own_keys(access).values_list("id", flat=True))
    return None


# --- Dashboard -------------------------------------------------------------------------------------


def _label(at: datetime, step: timedelta) -> str:
    return at.strftime("%m-%d %H:%M" if step < timedelta(days=1) else "%Y-%m-%d")


def _step_label(step: timedelta) -> str:
    minutes = int(step.total_seconds() // 60)
    if minutes % 1440 == 0:
        return "day" if minutes == 1440 else f"{minutes // 1440} days"
    if minutes % 60 == 0:
        return "hour" if minutes == 60 else f"{minutes // 60} hours"
    return "minute" if minutes == 1 else f"{minutes} minutes"


@login_required
@require_GET
def dashboard(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    access = tenant_access(request, slug)
    form = RangeForm(request.GET or None)
    if request.GET and not form.is_valid():
        context = {"section": "dashboard", "form": form, "board": None}
        return render(request, "observability/dashboard.html", context, status=400)
    data = form.cleaned_data if request.GET else {"range": "24h"}
    if not request.GET:
        end = datetime.now(UTC)
        data = {"range": "24h", "start": end - timedelta(hours=24), "end": end}
    key_ids = scope_key_ids(access)
    board = dashboard_data(access.tenant, start=data["start"], end=data["end"], key_ids=key_ids)
    labels = [_label(p.at, board.step) for p in board.series]
    ms = lambda v: round(v, 3) if v is not None else None  # noqa: E731  (sub-millisecond calls keep their digits)
    charts = {
        "requests": bar_chart("Requests", labels, [p.totals.requests for p in board.series]),
        "errors": line_chart(
            "Error rate (%)",
            labels,
            {"errors %": [(p.totals.error_rate or 0) * 100 if p.totals.requests else None for p in board.series]},
            unit="%",
        ),
        "latency": line_chart(
            "Latency (ms)",
            labels,
            {
                "p50": [ms(p.totals.p50) for p in board.series],
                "p95": [ms(p.totals.p95) for p in board.series],
                "p99": [ms(p.totals.p99) for p in board.series],
            },
            unit=" ms",
        ),
        "ttfb": line_chart(
            "Time to first token (ms)",
            labels,
            {
                "p50": [ms(p.totals.ttfb_p50) for p in board.series],
                "p95": [ms(p.totals.ttfb_p95) for p in board.series],
                "p99": [ms(p.totals.ttfb_p99) for p in board.series],
            },
            unit=" ms",
        ),
        "tokens": bar_chart("Tokens", labels, [p.totals.total_tokens for p in board.series]),
        "spend": bar_chart(
            "Spend (USD)", labels, [float(from_pico(p.totals.cost_picodollars)) for p in board.series], unit=" USD"
        ),
    }
    context = {
        "section": "dashboard",
        "form": form if request.GET else RangeForm(initial={"range": "24h"}),
        "range": data["range"],
        "board": board,
        "charts": charts,
        # Over the range the board shows (widened to its rollup's buckets), from the call log itself.
        "guardrails": guardrail_stats(access.tenant, start=board.start, end=board.end, key_ids=key_ids),
        "guardrails_top": GUARDRAILS_TOP,
        "own_only": access.role == Role.MEMBER,
        "step_label": _step_label(board.step),
        "percentile_error": f"{round(HISTOGRAM_RELATIVE_ERROR * 100):d} %",
        "percentile_floor": f"{HISTOGRAM_FLOOR_MS:g} ms",
    }
    return render(request, "observability/dashboard.html", context)


# --- Log explorer ----------------------------------------------------------------------------------


def _filter_form(request: HtmxHttpRequest, access: TenantAccess) -> LogFilterForm:
    keys = list(visible_keys(access).order_by("name").values_list("id", "name"))
    return LogFilterForm(request.GET, keys=keys)


# Without a start, the explorer and its export cover this much: a filter that matches few rows must not
# walk every day's partition of the retention period (a request id lookup is not bounded).
DEFAULT_RANGE = timedelta(days=7)


def _filters(form: LogFilterForm) -> LogFilters:
    d = form.cleaned_data
    since = d.get("since")
    if since is None and not (d.get("request_id") or "").strip():
        since = (d.get("until") or datetime.now(UTC)) - DEFAULT_RANGE
    return LogFilters(
        since=since,
        until=d.get("until"),
        key_id=d.get("key"),
        model=d.get("model") or "",
        status=d.get("status") or "",
        end_user=d.get("user") or "",
        tag=d.get("tag") or "",
        request_id=(d.get("request_id") or "").strip(),
        score=d.get("score"),
    )


def _query_without(request: HtmxHttpRequest, *names: str) -> str:
    params = request.GET.copy()
    for name in names:
        params.pop(name, None)
    return params.urlencode()


@login_required
@require_GET
def log_explorer(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    access = tenant_access(request, slug)
    form = _filter_form(request, access)
    rows: list[CallLog] = []
    next_cursor = ""
    status = 200
    sort_score = ""
    if form.is_valid():
        sort_score = form.cleaned_data["sort"]
        key_ids, cursor = scope_key_ids(access), request.GET.get("cursor", "")
        if sort_score:
            rows, next_cursor = score_sorted_page(
                access.tenant,
                _filters(form),
                name=sort_score,
                ascending=form.cleaned_data.get("order") == "asc",
                key_ids=key_ids,
                cursor=cursor,
                size=selectors.PAGE_SIZE,
            )
        else:
            rows, next_cursor = log_page(
                access.tenant, _filters(form), key_ids=key_ids, cursor=cursor, size=selectors.PAGE_SIZE
            )
    else:
        status = 400
    key_names = dict(VirtualKey.objects.filter(tenant=access.tenant).values_list("id", "name"))
    query = _query_without(request, "cursor")
    context = {
        "section": "logs",
        "form": form,
        "rows": [(row, key_names.get(row.virtual_key_id)) for row in rows],
        "next_cursor": next_cursor,
        "query": query,
        "status_choices": STATUS_CHOICES,
        "models": model_names_for(access.tenant),
        "score_names": score_names(access.tenant),
        "sort_score": sort_score,
        "own_only": access.role == Role.MEMBER,
        "default_range": form.is_valid() and not form.cleaned_data.get("since"),
    }
    template = (
        "observability/logs.html#rows" if request.htmx and request.GET.get("cursor") else "observability/logs.html"
    )
    return render(request, template, context, status=status)


@login_required
@require_GET
def log_detail(request: HtmxHttpRequest, slug: str, log_id: int) -> HttpResponse:
    access = tenant_access(request, slug)
    log = access_log(access.tenant, log_id, key_ids=scope_key_ids(access))
    key = VirtualKey.objects.filter(tenant=access.tenant, id=log.virtual_key_id).first()
    context = {
        "section": "logs",
        "log": log,
        "key": key,
        "body": body_of(log),
        "cost": from_pico(log.cost_picodollars) if log.cost_picodollars is not None else None,
        "saved": from_pico(log.cost_saved_picodollars) if log.cost_saved_picodollars is not None else None,
        "error": bool(log.status_code >= 400 or log.error_type),
    }
    return render(request, "observability/log_detail.html", context)


@login_required
@require_GET
def log_by_request(request: HtmxHttpRequest, slug: str, request_id: str) -> HttpResponse:
    """The log entry of a request id (the playground links here before it knows the row's id)."""
    access = tenant_access(request, slug)
    if not request_id.isprintable():  # NUL and friends: no call has such an id (and PostgreSQL refuses it)
        raise Http404("No call with this request id.")
    log = log_by_request_id(access.tenant, request_id, key_ids=scope_key_ids(access))
    if log is None:
        raise Http404("No call with this request id yet: logs are written within a second or two.")
    return redirect("log-detail", slug=slug, log_id=log.id)


# --- Exports ---------------------------------------------------------------------------------------


async def _async_lines(lines: Iterator[str]) -> AsyncIterator[str]:
    # Each chunk is one indexed query, run in the thread that owns the database connection; the event
    # loop only ever holds one chunk of text.
    done = object()
    while True:
        item = await sync_to_async(next)(lines, done)
        if item is done:
            return
        yield item


@login_required
@require_GET
def log_export(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    access = tenant_access(request, slug)
    fmt = request.GET.get("format", "csv")
    if fmt not in ("csv", "jsonl"):
        return HttpResponse("Unknown export format: use csv or jsonl.", status=400, content_type="text/plain")
    form = _filter_form(request, access)
    if not form.is_valid():
        errors = "; ".join(f"{name}: {' '.join(errs)}" for name, errs in form.errors.items())
        return HttpResponse(f"Invalid filters: {errors}", status=400, content_type="text/plain")
    filters, key_ids = _filters(form), scope_key_ids(access)
    rows = filtered_logs(access.tenant, filters, key_ids=key_ids)
    key_names = dict(VirtualKey.objects.filter(tenant=access.tenant).values_list("id", "name"))
    lines = export_lines(rows, key_names, fmt)
    content: Any = _async_lines(lines) if isinstance(request, ASGIRequest) else lines
    content_type = "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson"
    response = StreamingHttpResponse(content, content_type=content_type)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    response["Content-Disposition"] = f'attachment; filename="{access.tenant.slug}-logs-{stamp}.{fmt}"'
    estimate = export_estimate(access.tenant, filters, key_ids=key_ids)
    if estimate is not None:
        # For the console's progress bar: rows expected (an upper bound when filtering by status or tag).
        response["x-gateway-export-estimate"] = str(estimate)
    response["Cache-Control"] = "no-store"
    return response


# --- Playground ------------------------------------------------------------------------------------

# How often (once a second) a fresh answer's cost is asked of the call log before the page gives up: the
# row is written within a flush interval or two (GATEWAY_LOG_FLUSH_INTERVAL, 0.5 s by default).
COST_POLLS = 15
# What stays from one turn to the next (and through "New conversation"): all but the message.
PLAYGROUND_SETTINGS = ("model", "compare_with", "system", "temperature", "max_tokens")


def _playground_page(
    request: HtmxHttpRequest,
    access: TenantAccess,
    form: PlaygroundForm,
    *,
    turns: list[Turn],
    key: VirtualKey | None,
) -> HttpResponse:
    context = {
        "section": "playground",
        "form": form,
        "turns": turns,
        "key": key,
        "can_send": access.can(KEYS_WRITE),
        "role": access.role,
        "ttl_minutes": int(KEY_TTL.total_seconds() // 60),
        "max_turns": MAX_TURNS,
    }
    template = "observability/playground.html#chat" if request.htmx else "observability/playground.html"
    return render(request, template, context)


@login_required
@require_GET
def playground(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    access = tenant_access(request, slug)
    key = playground_key_of(access.tenant, user=request.user)
    form = PlaygroundForm(models=playground_models(access.tenant, key))
    return _playground_page(request, access, form, turns=[], key=key)


@login_required
@require_POST
def playground_send(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    """One turn: the message, after the conversation so far, to one model or to two at once. Sending needs
    a key of one's own, so whoever may create keys may send."""
    access = tenant_access(request, slug, KEYS_WRITE)
    key = playground_key_of(access.tenant, user=request.user)
    models = playground_models(access.tenant, key)
    if "reset" in request.POST:
        # A new conversation: the settings stay as they were, the turns and the message box go.
        kept = {name: request.POST.get(name, "") for name in PLAYGROUND_SETTINGS}
        return _playground_page(request, access, PlaygroundForm(initial=kept, models=models), turns=[], key=key)
    form = PlaygroundForm(request.POST, models=models)
    if not form.is_valid():
        # Answered with 200 and the errors, which htmx swaps in (it leaves a 4xx response unswapped).
        shown = form.cleaned_data.get("conversation") or []
        return _playground_page(request, access, form, turns=shown, key=key)
    data = form.cleaned_data
    columns = [data["model"]] + ([data["compare_with"]] if data["compare_with"] else [])
    asks = [
        Ask(model, messages_for(data["system"], data["conversation"], data["message"], column))
        for column, model in enumerate(columns)
    ]
    key, secret = playground_key_get_or_create(access.tenant, actor=access.actor)
    # Under the ASGI server this runs on its event loop (this thread waits), where the proxy keeps its
    # upstream connections; the key's transaction has committed, so the proxy finds the key.
    answers = async_to_sync(ask_all)(secret, asks, temperature=data["temperature"], max_tokens=data["max_tokens"])
    turns = [*data["conversation"], Turn(user=data["message"], answers=answers, fresh=True)]
    # The next message's form: the same settings and the conversation so far, an empty message box.
    initial = {**{name: data[name] for name in PLAYGROUND_SETTINGS}, "conversation": dump_conversation(turns)}
    return _playground_page(request, access, PlaygroundForm(initial=initial, models=models), turns=turns, key=key)


@login_required
@require_GET
def playground_cost(request: HtmxHttpRequest, slug: str, request_id: str) -> HttpResponse:
    """A playground answer's cost as its call-log row has it, asked again each second until the row is
    written. A call the person may not see reads as not logged yet, like one that does not exist."""
    access = tenant_access(request, slug)
    log = None
    if request_id.isprintable():  # NUL and friends: no call has such an id (and PostgreSQL refuses it)
        log = log_by_request_id(access.tenant, request_id, key_ids=scope_key_ids(access))
    tries = request.GET.get("try", "")
    attempt = int(tries) if tries.isdigit() and len(tries) < 4 else 0
    context = {
        "request_id": request_id,
        "log": log,
        "cost": from_pico(log.cost_picodollars) if log is not None and log.cost_picodollars is not None else None,
        "next_try": attempt + 1,
        "gave_up": attempt >= COST_POLLS,
    }
    return render(request, "observability/playground.html#cost", context)


# --- Spend page fragment ---------------------------------------------------------------------------


@login_required
@require_GET
def spend_usage(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    """Keys with their calls, spend and last use, and the A/B variants, for billing's Spend page (which
    embeds this with htmx: billing does not read the call-log rollups itself)."""
    access = tenant_access(request, slug)
    try:
        if "start" not in request.GET and "end" not in request.GET:
            # Opened on its own (a bookmark, a new tab): the last 30 days.
            end = timezone.now()
            start = end - timedelta(days=30)
        else:
            start = datetime.fromisoformat(request.GET["start"])
            end = datetime.fromisoformat(request.GET["end"])
        if start.tzinfo is None or end.tzinfo is None or start >= end:
            raise ValueError
    except (KeyError, ValueError):
        return HttpResponse("start and end must be ISO 8601 date-times with an offset, start first.", status=400)
    key_ids = scope_key_ids(access)
    usage = key_usage(access.tenant, start=start, end=end, key_ids=key_ids)
    keys = visible_keys(access).order_by("revoked", "name")
    context = {
        "key_rows": [(key, usage.get(key.id)) for key in keys],
        "variants": variant_usage(access.tenant, start=start, end=end, key_ids=key_ids),
    }
    template = "observability/spend_usage.html"
    if not request.htmx:
        context["section"] = "spend"
        template = "observability/spend_usage_page.html"
    return render(request, template, context)
