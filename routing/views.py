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

from routing.forms import BaseDeploymentFormSet, DeploymentFormSet, ModelNameForm, ProviderForm
from routing.models import ProviderKind
from routing.probe import provider_test_connection
from routing.selectors import models_for, providers_for
from routing.services import model_delete, model_deployments_set, provider_delete, provider_upsert, starter_setup
from tenants.forms import add_service_errors
from tenants.permissions import CONFIG_WRITE, TenantAccess, access_model, access_provider, tenant_access
from tenants.views import HtmxHttpRequest

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
                        access.tenant,
                        name=data["name"],
                        kind=data["kind"],
                        base_url=data["base_url"],
                        api_key=data["api_key"],
                        actor=access.actor,
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


@login_required
@never_cache  # a form shown again with an error holds the API key just typed
@require_http_methods(["GET", "POST"])
def provider_detail(request: HtmxHttpRequest, slug: str, provider_id: int) -> HttpResponse:
    access = tenant_access(request, slug)
    provider = access_provider(access, provider_id)
    initial = {"name": provider.name, "kind": provider.kind, "base_url": provider.base_url}
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
                    base_url=data["base_url"],
                    # An empty field keeps the stored key: it is never sent back to the browser to resubmit.
                    **({"api_key": data["api_key"]} if data["api_key"] else {}),
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
                form = ProviderForm(
                    initial=initial | {"kind": provider.kind, "base_url": provider.base_url}, editing=provider
                )
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
    initial = {"name": provider.name, "kind": provider.kind, "base_url": provider.base_url}
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


@login_required
@require_http_methods(["GET", "POST"])
def model_detail(request: HtmxHttpRequest, slug: str, name: str) -> HttpResponse:
    access = tenant_access(request, slug)
    deployments = access_model(access, name)
    initial = [{"provider": d.provider, "model": d.upstream_model} for d in deployments]
    formset = _deployment_formset(access, request.POST or None, initial=initial)
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
                initial = [{"provider": d.provider, "model": d.upstream_model} for d in deployments]
                formset = _deployment_formset(access, initial=initial)
    context = {
        "section": "models",
        "name": name,
        "deployments": deployments,
        "formset": formset,
        "saved": saved,
        "error": error,
    }
    template = "routing/model_detail.html#edit_form" if request.htmx else "routing/model_detail.html"
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
