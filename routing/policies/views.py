"""The console's data-policy pages: the tenant's PII policy and cache settings, a key's own PII policy,
and the preview."""

from __future__ import annotations

from typing import Any, cast

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from gateway_project.common.htmx import HtmxHttpRequest
from routing.policies.forms import CachePolicyForm, PiiPolicyForm, PolicyPreviewForm
from routing.policies.services import preview as policy_preview_run
from routing.policies.services import tenant_cache_policy_set, tenant_pii_policy_set, virtual_key_pii_policy_set
from routing.policies.spec import pii_policy_clean
from tenants.permissions import CONFIG_WRITE, TenantAccess, access_key, tenant_access, visible_keys


def _policy_context(access: TenantAccess, **extra: Any) -> dict:
    tenant = access.tenant
    context = {
        "section": "policies",
        "pii_form": PiiPolicyForm(initial=PiiPolicyForm.initial_from(tenant.pii_policy)),
        "cache_form": CachePolicyForm(initial=CachePolicyForm.initial_from(tenant.cache_policy)),
        "preview_form": PolicyPreviewForm(),
        "keys": visible_keys(access).order_by("name").only("id", "name", "prefix", "revoked", "pii_policy"),
    }
    context.update(extra)
    return context


@login_required
@require_http_methods(["GET", "POST"])
def policies(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    """The tenant's PII policy and prompt-cache settings, with a preview of what a policy does to a text."""
    access = tenant_access(request, slug)
    if request.method == "GET":
        return render(request, "routing/policies.html", _policy_context(access))
    access.require(CONFIG_WRITE)
    form = PiiPolicyForm(request.POST)
    saved = False
    if form.is_valid():
        try:
            tenant_pii_policy_set(access.tenant, policy=form.policy(), actor=access.actor)
        except ValidationError as exc:
            form.add_service_errors(exc.message_dict)
        else:
            if not request.htmx:
                messages.success(request, "Saved the PII policy. Proxies use it within a second.")
                return redirect("policies", slug=slug)
            saved = True
            form = PiiPolicyForm(initial=PiiPolicyForm.initial_from(access.tenant.pii_policy))
    if request.htmx:
        return render(request, "routing/policies.html#pii_form", {"pii_form": form, "pii_saved": saved})
    return render(request, "routing/policies.html", _policy_context(access, pii_form=form))


@login_required
@require_POST
def policy_cache(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    access = tenant_access(request, slug, CONFIG_WRITE)
    form = CachePolicyForm(request.POST)
    saved = False
    if form.is_valid():
        try:
            tenant_cache_policy_set(access.tenant, policy=form.policy(), actor=access.actor)
        except ValidationError as exc:
            form.add_service_errors(exc.message_dict)
        else:
            if not request.htmx:
                messages.success(request, "Saved the cache settings.")
                return redirect("policies", slug=slug)
            saved = True
            form = CachePolicyForm(initial=CachePolicyForm.initial_from(access.tenant.cache_policy))
    if request.htmx:
        return render(request, "routing/policies.html#cache_form", {"cache_form": form, "cache_saved": saved})
    return render(request, "routing/policies.html", _policy_context(access, cache_form=form))


@login_required
@require_http_methods(["GET", "POST"])
def key_policy(request: HtmxHttpRequest, slug: str, key_id: int) -> HttpResponse:
    """A key's own PII policy, which replaces the tenant's for its calls. Admins only: it can switch
    the tenant's protection off."""
    access = tenant_access(request, slug)
    key = access_key(access, key_id)
    form = PiiPolicyForm(
        request.POST or None, initial=PiiPolicyForm.initial_from(key.pii_policy, for_key=True), for_key=True
    )
    saved = False
    if request.method == "POST":
        access.require(CONFIG_WRITE)
        if form.is_valid():
            try:
                virtual_key_pii_policy_set(access.tenant, key=key, policy=form.policy(), actor=access.actor)
            except ValidationError as exc:
                form.add_service_errors(exc.message_dict)
            else:
                if not request.htmx:
                    messages.success(request, f"Saved the PII policy of {key.name}.")
                    return redirect("key-policy", slug=slug, key_id=key.id)
                saved = True
                form = PiiPolicyForm(initial=PiiPolicyForm.initial_from(key.pii_policy, for_key=True), for_key=True)
    context = {
        "section": "policies",
        "key": key,
        "pii_form": form,
        "pii_saved": saved,
        "preview_form": PolicyPreviewForm(),
        "tenant_has_policy": access.tenant.pii_policy is not None,
    }
    template = "routing/key_policy.html#pii_form" if request.htmx else "routing/key_policy.html"
    return render(request, template, context)


@login_required
@require_POST
def policy_preview(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    """What a policy would send upstream for a pasted text and what would come back restored. The policy
    is the one in the editor next to the panel (sent along, saved or not), else the tenant's saved one.
    Nothing is stored and no provider is called, so anyone in the tenant may try it."""
    access = tenant_access(request, slug)
    form = PolicyPreviewForm(request.POST)
    context: dict[str, Any] = {"preview_form": form}
    policy = access.tenant.pii_policy
    if "source" in request.POST:
        source = request.POST["source"]
        editor = PiiPolicyForm(request.POST, for_key=source == "inherit")
        if not editor.is_valid():
            problems = "; ".join(
                f"{editor[f].label if f in editor.fields else 'policy'}: {' '.join(e)}"
                # An ErrorList iterates as its messages (strings).
                for f, e in cast("dict[str, list[str]]", editor.errors).items()
            )
            context["preview_error"] = f"Fix the policy in the editor first ({problems})."
        elif source == "own":
            policy = editor.policy()
    if form.is_valid() and "preview_error" not in context:
        if policy is None:
            context["preview_error"] = "No PII policy applies: the text would be sent as it is."
        else:
            try:
                policy = pii_policy_clean(policy)
            except ValidationError as exc:
                problems = "; ".join(f"{path}: {' '.join(errors)}" for path, errors in exc.message_dict.items())
                context["preview_error"] = f"Fix the policy in the editor first ({problems})."
            else:
                try:
                    result = policy_preview_run(policy, form.cleaned_data["text"], form.cleaned_data["answer"] or None)
                except ValidationError as exc:
                    context["preview_error"] = " ".join(exc.messages)
                else:
                    context.update(result=result, policy_mode=policy["mode"])
    if not request.htmx:
        return render(request, "routing/policies.html", _policy_context(access, **context))
    return render(request, "routing/includes/pii_preview.html", context)
