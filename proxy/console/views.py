"""Console fragments that need the proxy's runtime state or the call logs: live deployment health, the
A/B split comparison and the routing simulator. The pages that embed them (routing.views) cannot
import `proxy`, so they load these with htmx (`hx-get` on load, every 5 s for health).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.shortcuts import render
from django.urls import path
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods

from gateway_project.common.htmx import HtmxHttpRequest
from observability.ab import TESTS, split_verdict
from observability.selectors import DeploymentStats, deployment_stats
from observability.views import scope_key_ids
from proxy.breakers import health
from proxy.console import mcp
from proxy.console.simulate import SimulateRequest, breaker_states, simulate
from routing.forms import SimulateForm
from routing.selectors import model_names_for, models_for, route_settings_of, split_models_for
from tenants.permissions import TenantAccess, tenant_access, visible_keys

HEALTH_WINDOW = timedelta(minutes=15)
AB_PERIODS = {"1": "Last 24 hours", "7": "Last 7 days", "30": "Last 30 days"}


@dataclass
class DeploymentHealth:
    model: str
    provider: str
    upstream_model: str
    breaker: str
    in_flight: int
    ttfb_ms: float | None  # this process's moving average
    recent: DeploymentStats


@login_required
@require_GET
def routing_health(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    access = tenant_access(request, slug)
    entries = models_for(access.tenant)
    dep_ids = [d.id for m in entries for d in m.deployments]
    states = breaker_states(dep_ids)
    stats = deployment_stats(access.tenant, since=timezone.now() - HEALTH_WINDOW, key_ids=scope_key_ids(access))
    rows = []
    for m in entries:
        for d in m.deployments:
            ewma = health.latency(d.id)
            rows.append(
                DeploymentHealth(
                    model=m.name,
                    provider=d.provider.name,
                    upstream_model=d.upstream_model,
                    breaker=states[d.id],
                    in_flight=health.in_flight(d.id),
                    ttfb_ms=ewma * 1000 if ewma is not None else None,
                    recent=stats.get(d.id, DeploymentStats()),
                )
            )
    context = {"section": "models", "rows": rows, "checked_at": timezone.now()}
    template = "routing/health.html#panel" if request.htmx else "routing/health.html"
    return render(request, template, context)


@login_required
@require_GET
def routing_ab(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    access = tenant_access(request, slug)
    model = request.GET.get("model", "").strip()
    if not model.isprintable():
        raise Http404("No such model in this tenant.")  # a NUL or control character: no model has one
    days = request.GET.get("days", "7")
    if days not in AB_PERIODS:
        days = "7"
    context: dict = {"section": "models", "periods": AB_PERIODS, "days": days, "model": model}
    if not model:
        context["split_models"] = split_models_for(access.tenant)
    else:
        settings = route_settings_of(access.tenant, model)
        if settings is None:
            raise Http404("No such model in this tenant.")
        variant = settings["split"]["model"] if settings["split"] else ""
        since = timezone.now() - timedelta(days=int(days))
        verdict = split_verdict(access.tenant, model, variant, since=since, key_ids=scope_key_ids(access))
        context.update(variant=variant, groups=verdict.groups, metrics=verdict.metrics, tests=TESTS)
    template = "routing/ab.html#panel" if request.htmx else "routing/ab.html"
    return render(request, template, context)


def simulate_form(access: TenantAccess, data: dict | None = None) -> SimulateForm:
    keys = sorted(set(visible_keys(access).filter(revoked=False).values_list("name", flat=True)))
    return SimulateForm(data, models=model_names_for(access.tenant), keys=keys)


@login_required
@require_http_methods(["GET", "POST"])
def routing_simulate(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    # Any member may simulate: it shows routing config they can already read, and calls no provider.
    access = tenant_access(request, slug)
    form = simulate_form(access, request.POST if request.method == "POST" else None)
    result, error = None, ""
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            result = simulate(
                access.tenant.id,
                SimulateRequest(
                    model=data["model"],
                    key=data["key"],
                    tags=tuple(form.tag_list()),
                    user=data["user"],
                    prompt_bytes=data["prompt_bytes"] or 0,
                ),
            )
        except Http404 as exc:
            error = str(exc)
    context = {"section": "rules", "sim_form": form, "result": result, "sim_error": error}
    template = "routing/simulate.html#panel" if request.htmx else "routing/simulate.html"
    return render(request, template, context)


# Mounted at the root by gateway_project.urls, next to routing.urls.
console_urlpatterns = [
    path("t/<slug:slug>/routing/health/", routing_health, name="routing-health"),
    path("t/<slug:slug>/routing/ab/", routing_ab, name="routing-ab"),
    path("t/<slug:slug>/routing/simulate/", routing_simulate, name="routing-simulate"),
    path("t/<slug:slug>/mcp/", mcp.mcp_servers, name="mcp-servers"),
    path("t/<slug:slug>/mcp/<int:server_id>/", mcp.mcp_server_detail, name="mcp-server-detail"),
    path("t/<slug:slug>/mcp/<int:server_id>/delete/", mcp.mcp_server_delete_view, name="mcp-server-delete"),
    path("t/<slug:slug>/mcp/<int:server_id>/test/", mcp.mcp_server_test, name="mcp-server-test"),
]
