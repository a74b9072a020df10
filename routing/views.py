"""Console pages for provider credentials and models (see tenants.views for the conventions)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect, reswap, retarget, trigger_client_event

from gateway_project.common.htmx import HtmxHttpRequest
from routing.forms import (
    BaseDeploymentFormSet,
    BaseRuleFormSet,
    DeploymentFormSet,
    ModelNameForm,
    ProviderForm,
    RouteSettingsForm,
    RuleForm,
    RuleFormSet,
)
from routing.models import ProviderCredential, ProviderKind
from routing.permissions import access_model, access_provider
from routing.probe import provider_test_connection
from routing.selectors import (
    model_names_for,
    models_for,
    providers_for,
    route_rules_for,
    route_settings_of,
    split_models_for,
)
from routing.services import (
    model_delete,
    model_deployments_set,
    model_routes_set,
    provider_delete,
    provider_upsert,
    route_rules_set,
    starter_setup,
)
from tenants.forms import add_service_errors
from tenants.permissions import (
    CONFIG_WRITE,
    TenantAccess,
    tenant_access,
)

# --- Providers -------------------------------------------------------------------------------------


@login_required
@never_cache  # a form shown again with an error holds the API key just typed
@require_http_methods(["GET", "POST"])
def providers(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    access = tenant_access(request, slug)
    form = ProviderForm(request.POST or None, initial={"kind": ProviderKind.OPENAI})
    if request.method == "POST":
        access.require(CONFIG_WRITE)
        if form.is_valid():
            data = form.cleaned_data
            if providers_for(access.tenant).filter(name=data["name"]).exists():
                form.add_error("name", f"There is already a provider named {data['name']}.")
            else:
                try:
                    provider, _changed = provider_upsert(
                        access.tenant, name=data["name"], kind=data["kind"], actor=access.actor, **form.upsert_kwargs()
                    )
                except ValidationError as exc:
                    add_service_errors(form, exc)
                else:
                    if request.htmx:
                        response = render(
                            request, "routing/providers.html#create_form", {"form": ProviderForm(), "created": provider}
                        )
                        return trigger_client_event(response, "providers-changed")
                    messages.success(request, f"Added {provider.name}. Use “Test connection” to check the key.")
                    return redirect("providers", slug=slug)
        if request.htmx:
            return render(request, "routing/providers.html#create_form", {"form": form})
    context = {"section": "providers", "form": form, "providers": providers_for(access.tenant)}
    template = "routing/providers.html#rows" if request.htmx else "routing/providers.html"
    return render(request, template, context)


def _provider_initial(provider: ProviderCredential) -> dict:
    # Settings only: secrets are never put back into the page.
    return {
        "name": provider.name,
        "kind": provider.kind,
        "base_url": provider.base_url,
        "api_version": provider.api_version,
        "region": provider.region,
    }


@login_required
@never_cache  # a form shown again with an error holds the API key just typed
@require_http_methods(["GET", "POST"])
def provider_detail(request: HtmxHttpRequest, slug: str, provider_id: int) -> HttpResponse:
    access = tenant_access(request, slug)
    provider = access_provider(access, provider_id)
    initial = _provider_initial(provider)
    form = ProviderForm(request.POST or None, initial=initial, editing=provider)
    saved = False
    if request.method == "POST":
        access.require(CONFIG_WRITE)
        if form.is_valid():
            data = form.cleaned_data
            try:
                provider_upsert(
                    access.tenant,
                    name=provider.name,
                    kind=data["kind"],
                    # An empty secret field keeps the stored one: it is never sent back to the browser to resubmit.
                    **form.upsert_kwargs(),
                    actor=access.actor,
                )
            except ValidationError as exc:
                add_service_errors(form, exc)
            else:
                if not request.htmx:
                    messages.success(request, f"Saved {provider.name}.")
                    return redirect("provider-detail", slug=slug, provider_id=provider.id)
                provider.refresh_from_db()
                saved = True
                form = ProviderForm(initial=_provider_initial(provider), editing=provider)
    context = {"section": "providers", "provider": provider, "form": form, "saved": saved}
    template = "routing/provider_detail.html#edit_form" if request.htmx else "routing/provider_detail.html"
    return render(request, template, context)


@login_required
@require_POST
def provider_delete_view(request: HtmxHttpRequest, slug: str, provider_id: int) -> HttpResponse:
    access = tenant_access(request, slug, CONFIG_WRITE)
    provider = access_provider(access, provider_id)
    provider_delete(access.tenant, provider=provider, actor=access.actor)
    messages.success(request, f"Deleted {provider.name} and the deployments that used it.")
    if request.htmx:
        return HttpResponseClientRedirect(reverse("providers", kwargs={"slug": slug}))
    return redirect("providers", slug=slug)


@login_required
@require_POST
def provider_test(request: HtmxHttpRequest, slug: str, provider_id: int) -> HttpResponse:
    # Any member may test: it reveals nothing about the key, and it helps whoever is debugging a call.
    access = tenant_access(request, slug)
    provider = access_provider(access, provider_id)
    result = provider_test_connection(provider)
    context = {"section": "providers", "provider": provider, "result": result}
    if request.htmx:
        return render(request, "routing/provider_detail.html#test_result", context)
    initial = _provider_initial(provider)
    context["form"] = ProviderForm(initial=initial, editing=provider)
    return render(request, "routing/provider_detail.html", context)


@login_required
@require_POST
def starter(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    access = tenant_access(request, slug, CONFIG_WRITE)
    starter_setup(access.tenant, actor=access.actor)
    messages.success(request, "Added the built-in mock provider and the model “mock-chat”. Create a key to try it.")
    if request.htmx:
        return HttpResponseClientRedirect(reverse("keys", kwargs={"slug": slug}))
    return redirect("keys", slug=slug)


# --- Models ----------------------------------------------------------------------------------------


def _deployment_formset(
    access: TenantAccess, data: QueryDict | None = None, initial: list[dict] | None = None
) -> BaseDeploymentFormSet:
    return DeploymentFormSet(
        data, initial=initial, prefix="dep", form_kwargs={"providers": providers_for(access.tenant)}
    )


@login_required
@require_http_methods(["GET", "POST"])
def models(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    access = tenant_access(request, slug)
    form = ModelNameForm(request.POST or None)
    formset = _deployment_formset(access, request.POST or None)
    if request.method == "POST":
        access.require(CONFIG_WRITE)
        if form.is_valid() and formset.is_valid():
            name = form.cleaned_data["name"].strip()
            if name in {m.name for m in models_for(access.tenant)}:
                form.add_error("name", f"{name} already exists; open it to change its deployments.")
            else:
                try:
                    model_deployments_set(
                        access.tenant, model_name=name, deployments=formset.deployments(), actor=access.actor
                    )
                except ValidationError as exc:
                    add_service_errors(form, exc)
                else:
                    if request.htmx:
                        context = {
                            "form": ModelNameForm(),
                            "formset": _deployment_formset(access),
                            "created": name,
                        }
                        response = render(request, "routing/models.html#create_form", context)
                        return trigger_client_event(response, "models-changed")
                    messages.success(request, f"Added {name}. Keys can call it now.")
                    return redirect("models", slug=slug)
        if request.htmx:
            response = render(request, "routing/models.html#create_form", {"form": form, "formset": formset})
            return retarget(reswap(response, "outerHTML"), "#model-create-form")
    context = {
        "section": "models",
        "form": form,
        "formset": formset,
        "models": models_for(access.tenant),
        "has_providers": providers_for(access.tenant).exists(),
    }
    template = "routing/models.html#rows" if request.htmx else "routing/models.html"
    return render(request, template, context)


def _deployment_initial(deployments: list) -> list[dict]:
    return [{"provider": d.provider, "model": d.upstream_model, "weight": d.weight} for d in deployments]


def _route_form(access: TenantAccess, name: str, data: QueryDict | None = None) -> RouteSettingsForm:
    settings = route_settings_of(access.tenant, name)
    assert settings is not None  # callers checked the model with access_model
    others = [m for m in model_names_for(access.tenant) if m != name]
    return RouteSettingsForm(
        data, initial=RouteSettingsForm.initial_from(settings), model_name=name, other_models=others
    )


@login_required
@require_http_methods(["GET", "POST"])
def model_detail(request: HtmxHttpRequest, slug: str, name: str) -> HttpResponse:
    access = tenant_access(request, slug)
    deployments = access_model(access, name)
    formset = _deployment_formset(access, request.POST or None, initial=_deployment_initial(deployments))
    saved, error = False, ""
    if request.method == "POST":
        access.require(CONFIG_WRITE)
        if formset.is_valid():
            try:
                model_deployments_set(
                    access.tenant, model_name=name, deployments=formset.deployments(), actor=access.actor
                )
            except ValidationError as exc:
                error = " ".join(exc.messages)
            else:
                if not request.htmx:
                    messages.success(request, f"Saved {name}.")
                    return redirect("model-detail", slug=slug, name=name)
                saved = True
                deployments = access_model(access, name)
                formset = _deployment_formset(access, initial=_deployment_initial(deployments))
    context = {
        "section": "models",
        "name": name,
        "deployments": deployments,
        "formset": formset,
        "saved": saved,
        "error": error,
    }
    if request.htmx:
        return render(request, "routing/model_detail.html#edit_form", context)
    context["route_form"] = _route_form(access, name)
    context["split_model"] = split_models_for(access.tenant).get(name, "")
    return render(request, "routing/model_detail.html", context)


@login_required
@require_POST
def model_route(request: HtmxHttpRequest, slug: str, name: str) -> HttpResponse:
    """Save a model's routing settings (strategy, retries, deadline, fallbacks, split, breaker)."""
    access = tenant_access(request, slug, CONFIG_WRITE)
    access_model(access, name)
    form = _route_form(access, name, request.POST)
    saved = False
    if form.is_valid():
        try:
            current = route_settings_of(access.tenant, name)
            changed = model_routes_set(access.tenant, routes={name: form.settings(current)}, actor=access.actor)
        except ValidationError as exc:
            form.add_service_errors(exc.message_dict)
        else:
            if not request.htmx:
                messages.success(request, f"Saved the routing of {name}." if changed else "Nothing changed.")
                return redirect("model-detail", slug=slug, name=name)
            saved = True
            form = _route_form(access, name)
    context = {"section": "models", "name": name, "route_form": form, "route_saved": saved}
    if request.htmx:
        return render(request, "routing/model_detail.html#route_form", context)
    context["deployments"] = access_model(access, name)
    context["formset"] = _deployment_formset(access, initial=_deployment_initial(context["deployments"]))
    context["split_model"] = split_models_for(access.tenant).get(name, "")
    return render(request, "routing/model_detail.html", context)


# --- Routing rules ---------------------------------------------------------------------------------


def _rule_formset(access: TenantAccess, data: QueryDict | None = None) -> BaseRuleFormSet:
    initial = [RuleForm.initial_from(r.match, r.route) for r in route_rules_for(access.tenant)]
    return RuleFormSet(
        data,
        initial=initial,
        prefix="rule",
        form_kwargs={"models": model_names_for(access.tenant)},
    )


@login_required
@require_http_methods(["GET", "POST"])
def route_rules(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    """The tenant's ordered routing rules, edited as one list, and the routing simulator."""
    access = tenant_access(request, slug)
    formset = _rule_formset(access, request.POST or None)
    saved = False
    if request.method == "POST":
        access.require(CONFIG_WRITE)
        if formset.is_valid():
            try:
                route_rules_set(access.tenant, rules=formset.rules(), actor=access.actor)
            except ValidationError as exc:
                formset.add_service_errors(exc.message_dict)
            else:
                if not request.htmx:
                    messages.success(request, "Saved the routing rules.")
                    return redirect("route-rules", slug=slug)
                saved = True
                formset = _rule_formset(access)
    context = {
        "section": "rules",
        "formset": formset,
        "saved": saved,
        "models": model_names_for(access.tenant),
    }
    template = "routing/rules.html#rules_form" if request.htmx else "routing/rules.html"
    return render(request, template, context)


@login_required
@require_POST
def model_delete_view(request: HtmxHttpRequest, slug: str, name: str) -> HttpResponse:
    access = tenant_access(request, slug, CONFIG_WRITE)
    access_model(access, name)
    model_delete(access.tenant, model_name=name, actor=access.actor)
    messages.success(request, f"Deleted {name}. Calls for it now get “model not found”.")
    if request.htmx:
        return HttpResponseClientRedirect(reverse("models", kwargs={"slug": slug}))
    return redirect("models", slug=slug)
