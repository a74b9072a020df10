"""The console's data-policy pages: the tenant's PII policy and cache settings, a key's own PII policy and
guardrails, and the preview; the guardrails, one check at a time, and their preview on a pasted text."""

from __future__ import annotations

from typing import Any, cast

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from gateway_project.common.htmx import HtmxHttpRequest
from routing.policies.forms import (
    CachePolicyForm,
    GuardrailForm,
    GuardrailPreviewForm,
    KeyGuardrailsForm,
    PiiPolicyForm,
    PolicyPreviewForm,
)
from routing.policies.guardrails import (
    TEXT_CHECKS,
    GuardrailSpecError,
    PreviewVerdict,
    export_guardrails,
    normalize_guardrails,
)
from routing.policies.guardrails import preview as guardrails_preview_run
from routing.policies.services import preview as policy_preview_run
from routing.policies.services import (
    tenant_cache_policy_set,
    tenant_guardrails_locked,
    tenant_guardrails_set,
    tenant_pii_policy_set,
    virtual_key_guardrails_set,
    virtual_key_pii_policy_set,
)
from routing.policies.spec import pii_policy_clean
from tenants.models import VirtualKey
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
    """A key's own PII policy and guardrails, which replace the tenant's for its calls. Admins only: either
    can switch the tenant's protection off."""
    access = tenant_access(request, slug)
    key = access_key(access, key_id)
    if request.method == "POST" and request.POST.get("part") == "guardrails":
        return _key_guardrails_post(request, access, key)
    form = _key_pii_form(key, request.POST or None)
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
                form = _key_pii_form(key)
    template = "routing/key_policy.html#pii_form" if request.htmx else "routing/key_policy.html"
    return render(request, template, _key_policy_context(access, key, pii_form=form, pii_saved=saved))


def _key_policy_context(access: TenantAccess, key: VirtualKey, **parts: Any) -> dict[str, Any]:
    """The key's policy page: both parts, each as stored unless the request's own form is given."""
    context: dict[str, Any] = {
        "section": "policies",
        "key": key,
        "preview_form": PolicyPreviewForm(),
        "tenant_has_policy": access.tenant.pii_policy is not None,
        "tenant_has_guardrails": bool(access.tenant.guardrails),
        **parts,
    }
    if "pii_form" not in context:
        context["pii_form"] = _key_pii_form(key)
    if "guardrails_form" not in context:
        context["guardrails_form"] = _key_guardrails_form(access, key)
    return context


def _key_pii_form(key: VirtualKey, data: Any = None) -> PiiPolicyForm:
    return PiiPolicyForm(data, initial=PiiPolicyForm.initial_from(key.pii_policy, for_key=True), for_key=True)


def _key_guardrails_form(access: TenantAccess, key: VirtualKey, data: Any = None) -> KeyGuardrailsForm:
    initial = KeyGuardrailsForm.initial_from(key.guardrails, access.tenant.guardrails)
    # Prefixed: the PII form on the same page has a `source` too, and ids must be unique.
    return KeyGuardrailsForm(data, initial=initial, prefix="guardrails")


def _key_guardrails_post(request: HtmxHttpRequest, access: TenantAccess, key: VirtualKey) -> HttpResponse:
    """The guardrails part of key_policy: its own form on the same page, told apart by `part`."""
    access.require(CONFIG_WRITE)
    form = _key_guardrails_form(access, key, request.POST)
    saved = False
    if form.is_valid():
        try:
            virtual_key_guardrails_set(access.tenant, key=key, guardrails=form.guardrails(), actor=access.actor)
        except ValidationError as exc:
            form.add_service_errors(exc.message_dict)
        else:
            if not request.htmx:
                messages.success(request, f"Saved the guardrails of {key.name}. Proxies use them within a second.")
                return redirect("key-policy", slug=access.tenant.slug, key_id=key.id)
            saved = True
            form = _key_guardrails_form(access, key)
    if request.htmx:
        context = {"key": key, "guardrails_form": form, "guardrails_saved": saved}
        return render(request, "routing/key_policy.html#guardrails_form", context)
    return render(
        request,
        "routing/key_policy.html",
        _key_policy_context(access, key, guardrails_form=form, guardrails_saved=saved),
    )


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


# --- Guardrails ----------------------------------------------------------------------------------------


def _guardrails_context(access: TenantAccess, **extra: Any) -> dict[str, Any]:
    context: dict[str, Any] = {
        "section": "policies",
        # Every filter present: a template reads `applies_to.keys` as the dict's keys() when "keys" is absent.
        "checks": [
            {
                **row,
                "applies_to": {"models": [], "keys": [], "tags": [], **(row.get("applies_to") or {})},
                "any_call": not row.get("applies_to"),
            }
            for row in access.tenant.guardrails or []
        ],
        "form": GuardrailForm(),
        "editing": "",
        "preview_form": GuardrailPreviewForm(),
    }
    context.update(extra)
    return context


def _exported(access: TenantAccess) -> list[dict[str, Any]]:
    """The tenant's checks as YAML items: what the grammar reads back (stored rows are not all YAML)."""
    return export_guardrails(access.tenant.guardrails) or []


def _guardrail_write(access: TenantAccess, items: list[dict[str, Any]], *, form: GuardrailForm, index: int) -> bool:
    """Replace the tenant's checks by `items` (YAML items) as `gateway apply` does; False with the refusal on
    the form: on the box it names when it is about the check in the form (item `index`), else above it."""
    try:
        tenant_guardrails_set(access.tenant, guardrails=items, actor=access.actor)
    except ValidationError as exc:
        for path, errors in exc.message_dict.items():
            if path.startswith(f"guardrails[{index}]"):
                for message in errors:
                    form.add_grammar_error(path, message)
            else:
                form.add_error(None, [f"{path}: {e}" for e in errors])
        return False
    return True


@transaction.atomic
def _guardrail_save(access: TenantAccess, form: GuardrailForm) -> bool:
    """Add the form's check, or replace the one it edits (`original`) where it stands: checks run in order."""
    if not form.is_valid():
        return False
    original, item = form.cleaned_data["original"], form.item()
    tenant_guardrails_locked(access.tenant)  # the list as it is now, held until this change is written
    current = _exported(access)
    names = [c["name"] for c in current]
    if original and original not in names:
        form.add_error(None, f"The check {original!r} is gone (deleted or renamed meanwhile); add it anew.")
        return False
    if item["name"] != original and item["name"] in names:
        form.add_error("name", f"Another check is named {item['name']!r}: names are unique.")
        return False
    if original:
        index = names.index(original)
        current[index] = item
    else:
        index = len(current)
        current.append(item)
    return _guardrail_write(access, current, form=form, index=index)


def _guardrails_saved(request: HtmxHttpRequest, slug: str, message: str) -> HttpResponse:
    messages.success(request, message)
    url = reverse("guardrails", kwargs={"slug": slug})
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


def _guardrail_editor(
    request: HtmxHttpRequest, access: TenantAccess, form: GuardrailForm, *, editing: str
) -> HttpResponse:
    if request.htmx:
        return render(request, "routing/guardrails.html#editor", {"form": form, "editing": editing})
    return render(request, "routing/guardrails.html", _guardrails_context(access, form=form, editing=editing))


@login_required
@require_http_methods(["GET", "POST"])
def guardrails(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    """The tenant's guardrails and the preview; a POST adds a check."""
    access = tenant_access(request, slug)
    if request.method == "GET":
        return render(request, "routing/guardrails.html", _guardrails_context(access))
    access.require(CONFIG_WRITE)
    form = GuardrailForm(request.POST)
    if _guardrail_save(access, form):
        return _guardrails_saved(
            request, slug, f"Added the check {form.cleaned_data['name']}. Proxies use it within a second."
        )
    return _guardrail_editor(request, access, form, editing="")


@login_required
@require_http_methods(["GET", "POST"])
def guardrail_edit(request: HtmxHttpRequest, slug: str, name: str) -> HttpResponse:
    access = tenant_access(request, slug)
    item = next((c for c in _exported(access) if c["name"] == name), None)
    if item is None:
        raise Http404("No such guardrail in this tenant.")
    if request.method == "GET":
        return _guardrail_editor(request, access, GuardrailForm(initial=GuardrailForm.initial_from(item)), editing=name)
    access.require(CONFIG_WRITE)
    form = GuardrailForm(request.POST)
    if _guardrail_save(access, form):
        return _guardrails_saved(
            request, slug, f"Saved the check {form.cleaned_data['name']}. Proxies use it within a second."
        )
    return _guardrail_editor(request, access, form, editing=name)


@login_required
@require_POST
def guardrail_delete(request: HtmxHttpRequest, slug: str, name: str) -> HttpResponse:
    access = tenant_access(request, slug, CONFIG_WRITE)
    with transaction.atomic():
        tenant_guardrails_locked(access.tenant)
        current = _exported(access)
        if not any(c["name"] == name for c in current):
            raise Http404("No such guardrail in this tenant.")
        remaining = [c for c in current if c["name"] != name]
        tenant_guardrails_set(access.tenant, guardrails=remaining, actor=access.actor)
    return _guardrails_saved(request, slug, f"Deleted the check {name}.")


def _editor_check(request: HtmxHttpRequest) -> tuple[dict[str, Any] | None, str, str]:
    """The check in the editor, sent along with the preview: (normalized row, the name it replaces, the
    problem with it)."""
    editor = GuardrailForm(request.POST)
    if not editor.is_valid():
        problems = "; ".join(
            f"{editor[f].label if f in editor.fields else 'check'}: {' '.join(e)}"
            # An ErrorList iterates as its messages (strings).
            for f, e in cast("dict[str, list[str]]", editor.errors).items()
        )
        return None, "", f"Fix the check in the editor first ({problems})."
    try:
        row = normalize_guardrails([editor.item()])[0]
    except GuardrailSpecError as exc:
        editor.add_grammar_error(exc.path, exc.message)
        field = next(iter(editor.errors))
        label = editor[field].label if field in editor.fields else "check"
        return None, "", f"Fix the check in the editor first ({label}: {exc.message})."
    return row, editor.cleaned_data["original"], ""


def _decision(verdicts: list[PreviewVerdict]) -> dict[str, Any]:
    """What the step would do with a call holding the text: the first check that stops it, in order."""
    for v in verdicts:
        if v.verdict.outcome == "block":
            return {"refused": True, "by": v, "status": 400, "code": "guardrail_blocked"}
        if v.verdict.outcome == "error" and v.fail == "closed":
            return {"refused": True, "by": v, "status": 503, "code": "guardrail_failed"}
    return {"refused": False, "recorded": [v for v in verdicts if v.verdict.outcome in ("flag", "log", "error")]}


@login_required
@require_POST
def guardrail_preview(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    """Each text check's verdict on a pasted text, for the saved checks and, when asked, the check in the
    editor (unsaved: it replaces the one it edits). The text is neither stored nor logged and no provider is
    called, so anyone in the tenant may try it."""
    access = tenant_access(request, slug)
    form = GuardrailPreviewForm(request.POST)
    context: dict[str, Any] = {"preview_form": form}
    rows = list(access.tenant.guardrails or [])
    unsaved = ""
    # The editor's boxes come along with htmx (hx-include); a plain form post has none to try.
    if form.is_valid() and form.cleaned_data["with_editor"] and "check" in request.POST:
        row, original, problem = _editor_check(request)
        if row is None:
            context["preview_error"] = problem
        else:
            unsaved = row["name"]
            replaced = [i for i, r in enumerate(rows) if r["name"] in (original, unsaved)]
            if replaced:
                rows[replaced[0]] = row
                rows = [r for i, r in enumerate(rows) if i not in replaced[1:]]
            else:
                rows.append(row)
    if form.is_valid() and "preview_error" not in context:
        verdicts = guardrails_preview_run(rows, form.cleaned_data["text"], source=form.cleaned_data["source"])
        context.update(
            verdicts=verdicts,
            decision=_decision(verdicts),
            unsaved=unsaved,
            not_run=[r for r in rows if r["check"] not in TEXT_CHECKS or r["on"] == "output"],
            previewed=True,
        )
    if not request.htmx:
        editor = GuardrailForm(request.POST) if "check" in request.POST else GuardrailForm()
        return render(request, "routing/guardrails.html", _guardrails_context(access, form=editor, **context))
    return render(request, "routing/guardrails.html#preview_result", context)
