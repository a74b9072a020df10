"""Console pages over the call logs: the dashboard (from rollups), the log explorer with its detail view and
streamed exports, and the playground.

Members see only the calls of the keys they created; viewers and up see the whole tenant. Another
tenant's logs answer 404, like everything else of another tenant.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.handlers.asgi import ASGIRequest
from django.http import Http404, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from gateway_project.common.htmx import HtmxHttpRequest
from gateway_project.common.money import from_pico
from observability import selectors
from observability.charts import bar_chart, line_chart
from observability.exports import export_lines
from observability.forms import STATUS_CHOICES, LogFilterForm, RangeForm
from observability.models import HISTOGRAM_FLOOR_MS, HISTOGRAM_RELATIVE_ERROR, CallLog
from observability.selectors import (
    LogFilters,
    access_log,
    body_of,
    export_estimate,
    filtered_logs,
    key_usage,
    log_by_request_id,
    log_page,
    variant_usage,
)
from observability.selectors import (
    dashboard as dashboard_data,
)
from routing.selectors import model_names_for
from tenants.models import Role, VirtualKey
from tenants.permissions import KEYS_WRITE, TenantAccess, own_keys, tenant_access, visible_keys
from tenants.services import virtual_key_create

PLAYGROUND_KEY_TTL = timedelta(minutes=15)


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
    board = dashboard_data(access.tenant, start=data["start"], end=data["end"], key_ids=scope_key_ids(access))
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
    if form.is_valid():
        rows, next_cursor = log_page(
            access.tenant,
            _filters(form),
            key_ids=scope_key_ids(access),
            cursor=request.GET.get("cursor", ""),
            size=selectors.PAGE_SIZE,
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


@login_required
@require_GET
def playground(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    access = tenant_access(request, slug)
    context = {
        "section": "playground",
        "models": model_names_for(access.tenant),
        "can_mint": access.can(KEYS_WRITE),
        "ttl_minutes": int(PLAYGROUND_KEY_TTL.total_seconds() // 60),
        "log_url_template": reverse("log-by-request", kwargs={"slug": slug, "request_id": "REQUEST_ID"}),
    }
    return render(request, "observability/playground.html", context)


@login_required
@require_POST
def playground_key(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    """A short-lived key for the playground, created by (and counted against) the signed-in member."""
    access = tenant_access(request, slug, KEYS_WRITE)
    expires = datetime.now(UTC) + PLAYGROUND_KEY_TTL
    try:
        key, secret = virtual_key_create(
            access.tenant,
            name=f"playground {request.user.email or request.user.get_username()}"[:200],
            actor=access.actor,
            expires_at=expires,
            metadata={"source": "playground"},
        )
    except ValidationError as exc:
        return JsonResponse({"error": " ".join(exc.messages)}, status=400)
    return JsonResponse({"key": secret, "name": key.name, "expires_at": expires.isoformat()})


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
