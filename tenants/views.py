"""Console pages for a tenant: overview, keys, members, API tokens, settings and the audit log.

Every page works as a plain HTML form without JavaScript. With htmx, the same view answers with
a fragment of the same template (`{% partialdef %}`): forms validate and save in place, lists reload
when an event such as `keys-changed` fires.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect, reswap, retarget, trigger_client_event

from gateway_project.common.htmx import HtmxHttpRequest
from tenants.adapters import INVITATION_SESSION_KEY
from tenants.audit import Actor
from tenants.config import export_config
from tenants.forms import (
    AuditFilterForm,
    InviteForm,
    KeyForm,
    MemberRoleForm,
    TenantCreateForm,
    TenantDeleteForm,
    TenantSettingsForm,
    TokenForm,
    add_service_errors,
)
from tenants.models import Role
from tenants.permissions import (
    AUDIT_VIEW,
    CONFIG_WRITE,
    KEYS_WRITE,
    MEMBERS_MANAGE,
    TENANT_DELETE,
    TenantAccess,
    access_invitation,
    access_key,
    access_membership,
    access_token,
    client_ip,
    tenant_access,
    visible_keys,
)
from tenants.selectors import (
    audit_actions_for,
    audit_entries_filtered,
    audit_entries_for,
    audit_rows,
    invitation_by_token,
    management_tokens_for,
    members_for,
    memberships_for_user,
    model_names_for,
    pending_invitations_for,
    tenant_overview,
)
from tenants.services import (
    invitation_accept,
    invitation_create,
    invitation_revoke,
    management_token_create,
    management_token_revoke,
    membership_remove,
    membership_set_role,
    tenant_create,
    tenant_delete,
    tenant_log_settings_set,
    tenant_rename,
    virtual_key_create,
    virtual_key_revoke,
    virtual_key_rotate,
    virtual_key_update,
)


def _base_url(request: HttpRequest) -> str:
    return request.build_absolute_uri("/").rstrip("/")


def _no_store(response: HttpResponse) -> HttpResponse:
    """Pages that can show a new secret (once) must not be kept by the browser's or a proxy's cache,
    nor come back from the back button."""
    add_never_cache_headers(response)
    return response


@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"status": "ok"})


# --- Tenants ---------------------------------------------------------------------------------------


@login_required
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    memberships = list(memberships_for_user(request.user))
    if len(memberships) == 1:
        return redirect("tenant-overview", slug=memberships[0].tenant.slug)
    return render(request, "tenants/home.html", {"memberships": memberships})


@login_required
@require_http_methods(["GET", "POST"])
def tenant_new(request: HttpRequest) -> HttpResponse:
    form = TenantCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            tenant = tenant_create(
                name=form.cleaned_data["name"],
                slug=form.cleaned_data["slug"],
                owner=request.user,
                actor=Actor(user=request.user, ip=client_ip(request)),
            )
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            messages.success(request, f"Created {tenant.name}. You are its owner.")
            return redirect("tenant-overview", slug=tenant.slug)
    return render(request, "tenants/tenant_new.html", {"form": form})


@login_required
@require_GET
def overview(request: HttpRequest, slug: str) -> HttpResponse:
    access = tenant_access(request, slug)
    stats = tenant_overview(access.tenant)
    recent = audit_entries_for(access.tenant).select_related("actor")[:8] if access.can(AUDIT_VIEW) else []
    context = {"section": "overview", "stats": stats, "recent": recent, "base_url": _base_url(request)}
    return render(request, "tenants/overview.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def tenant_settings(request: HttpRequest, slug: str) -> HttpResponse:
    access = tenant_access(request, slug)
    tenant = access.tenant
    initial = {"name": tenant.name, "log_bodies": tenant.log_bodies, "log_retention_days": tenant.log_retention_days}
    form = TenantSettingsForm(request.POST or None, initial=initial)
    saved = False
    if request.method == "POST":
        access.require(CONFIG_WRITE)
        if form.is_valid():
            try:
                tenant_rename(access.tenant, name=form.cleaned_data["name"], actor=access.actor)
                tenant_log_settings_set(
                    access.tenant,
                    log_bodies=form.cleaned_data["log_bodies"],
                    log_retention_days=form.cleaned_data["log_retention_days"] or tenant.log_retention_days,
                    actor=access.actor,
                )
            except ValidationError as exc:
                add_service_errors(form, exc)
            else:
                saved = True
                if not request.htmx:
                    messages.success(request, "Settings saved.")
                    return redirect("tenant-settings", slug=slug)
    context = {
        "section": "settings",
        "form": form,
        "saved": saved,
        "delete_form": TenantDeleteForm(slug=slug),
    }
    template = "tenants/settings.html#settings_form" if request.htmx else "tenants/settings.html"
    return render(request, template, context)


@login_required
@require_POST
def tenant_delete_view(request: HttpRequest, slug: str) -> HttpResponse:
    access = tenant_access(request, slug, TENANT_DELETE)
    form = TenantDeleteForm(request.POST, slug=slug)
    if not form.is_valid():
        context = {
            "section": "settings",
            "form": TenantSettingsForm(initial={"name": access.tenant.name}),
            "delete_form": form,
        }
        template = "tenants/settings.html#delete_form" if request.htmx else "tenants/settings.html"
        return render(request, template, context)
    name = access.tenant.name
    tenant_delete(access.tenant, actor=access.actor)
    messages.success(request, f"Deleted {name} and everything in it.")
    if request.htmx:
        return HttpResponseClientRedirect(reverse("home"))
    return redirect("home")


@login_required
@require_GET
def export_yaml(request: HttpRequest, slug: str) -> HttpResponse:
    access = tenant_access(request, slug, CONFIG_WRITE)
    response = HttpResponse(export_config(access.tenant), content_type="application/yaml; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{access.tenant.slug}.yaml"'
    return response


# --- Virtual keys ----------------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def keys(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    access = tenant_access(request, slug)
    model_names = model_names_for(access.tenant)
    grant = access.can(CONFIG_WRITE)
    form = KeyForm(request.POST or None, model_names=model_names, can_grant=grant)
    context: dict = {"section": "keys", "base_url": _base_url(request)}
    if request.method == "POST":
        access.require(KEYS_WRITE)
        if form.is_valid():
            try:
                key, secret = virtual_key_create(access.tenant, actor=access.actor, **form.cleaned_data)
            except ValidationError as exc:
                add_service_errors(form, exc)
            else:
                context.update(key=key, secret=secret)
                if request.htmx:
                    response = render(request, "tenants/keys.html#reveal", context)
                    return _no_store(trigger_client_event(response, "keys-changed"))
                form = KeyForm(model_names=model_names, can_grant=grant)
        if form.errors and request.htmx:
            response = render(request, "tenants/keys.html#create_form", {**context, "form": form})
            return retarget(reswap(response, "outerHTML"), "#key-create-form")
    keys_qs = visible_keys(access).select_related("created_by").order_by("revoked", "-created_at")
    context.update(form=form, keys=keys_qs, has_models=bool(model_names))
    template = "tenants/keys.html#rows" if request.htmx else "tenants/keys.html"
    return _no_store(render(request, template, context))


@login_required
@require_http_methods(["GET", "POST"])
def key_detail(request: HtmxHttpRequest, slug: str, key_id: int) -> HttpResponse:
    access = tenant_access(request, slug)
    key = access_key(access, key_id, write=request.method == "POST")
    model_names = model_names_for(access.tenant)
    grant = access.can(CONFIG_WRITE)
    form = KeyForm(request.POST or None, initial=KeyForm.initial_for(key), model_names=model_names, can_grant=grant)
    saved = False
    if request.method == "POST" and form.is_valid():
        try:
            data = form.cleaned_data
            virtual_key_update(
                access.tenant,
                key=key,
                actor=access.actor,
                name=data["name"],
                models=data["models"],
                expires_at=data["expires_at"] if "expires_at" in form.changed_data else "unchanged",
                metadata=data["metadata"],
                mcp=data["mcp"],
                admin=data["admin"],
            )
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            if not request.htmx:
                messages.success(request, f"Saved {key.name}.")
                return redirect("key-detail", slug=slug, key_id=key.id)
            saved = True
            form = KeyForm(initial=KeyForm.initial_for(key), model_names=model_names, can_grant=grant)
    context = {
        "section": "keys",
        "key": key,
        "form": form,
        "saved": saved,
        "can_edit": access.can_edit_key(key),
        "base_url": _base_url(request),
    }
    template = "tenants/key_detail.html#edit_form" if request.htmx else "tenants/key_detail.html"
    return render(request, template, context)


@login_required
@require_POST
def key_revoke(request: HtmxHttpRequest, slug: str, key_id: int) -> HttpResponse:
    access = tenant_access(request, slug)
    key = access_key(access, key_id, write=True)
    virtual_key_revoke(access.tenant, key=key, actor=access.actor)
    if request.htmx:
        response = render(request, "tenants/keys.html#row", {"key": key, "access": access})
        return trigger_client_event(response, "key-revoked", {"id": key.id})
    messages.success(request, f"Revoked {key.name}. Calls with it are refused from now on.")
    return redirect("keys", slug=slug)


@login_required
@require_POST
def key_rotate(request: HtmxHttpRequest, slug: str, key_id: int) -> HttpResponse:
    access = tenant_access(request, slug)
    key = access_key(access, key_id, write=True)
    try:
        key, secret = virtual_key_rotate(access.tenant, key=key, actor=access.actor)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        if request.htmx:
            return HttpResponseClientRedirect(reverse("keys", kwargs={"slug": slug}))
        return redirect("keys", slug=slug)
    context = {"section": "keys", "key": key, "secret": secret, "rotated": True, "base_url": _base_url(request)}
    if request.htmx:
        response = render(request, "tenants/keys.html#reveal", context)
        response = retarget(reswap(response, "innerHTML"), "#secret-reveal")
        return _no_store(trigger_client_event(response, "keys-changed"))
    model_names = model_names_for(access.tenant)
    keys_qs = visible_keys(access).select_related("created_by").order_by("revoked", "-created_at")
    context.update(
        form=KeyForm(model_names=model_names, can_grant=access.can(CONFIG_WRITE)),
        keys=keys_qs,
        has_models=bool(model_names),
    )
    return _no_store(render(request, "tenants/keys.html", context))


# --- Members and invitations -----------------------------------------------------------------------


def _members_context(access: TenantAccess, invite_form: InviteForm | None = None) -> dict:
    return {
        "section": "members",
        "members": members_for(access.tenant),
        "invitations": pending_invitations_for(access.tenant),
        "invite_form": invite_form or InviteForm(roles=access.assignable_roles(), initial={"role": Role.MEMBER}),
        "roles": Role.choices,
    }


@login_required
@require_http_methods(["GET", "POST"])
def members(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    access = tenant_access(request, slug)
    if request.method == "POST":
        access.require(MEMBERS_MANAGE)
        form = InviteForm(request.POST, roles=access.assignable_roles())
        if form.is_valid():
            try:
                invitation, _token = invitation_create(access.tenant, actor=access.actor, **form.cleaned_data)
            except ValidationError as exc:
                add_service_errors(form, exc)
            else:
                if request.htmx:
                    context = _members_context(access)
                    context["invited"] = invitation
                    response = render(request, "tenants/members.html#invite_form", context)
                    return trigger_client_event(response, "members-changed")
                messages.success(request, f"Invitation sent to {invitation.email}.")
                return redirect("members", slug=slug)
        context = _members_context(access, form)
        template = "tenants/members.html#invite_form" if request.htmx else "tenants/members.html"
        return render(request, template, context)
    template = "tenants/members.html#lists" if request.htmx else "tenants/members.html"
    return render(request, template, _members_context(access))


@login_required
@require_POST
def member_role(request: HtmxHttpRequest, slug: str, membership_id: int) -> HttpResponse:
    access = tenant_access(request, slug, MEMBERS_MANAGE)
    membership = access_membership(access, membership_id)
    form = MemberRoleForm(request.POST, roles=Role.choices)
    error = ""
    if form.is_valid():
        try:
            membership_set_role(
                access.tenant, membership=membership, role=form.cleaned_data["role"], actor=access.actor
            )
        except ValidationError as exc:
            error = " ".join(exc.messages)
    else:
        error = "Pick one of the roles."
    if request.htmx:
        membership.refresh_from_db()
        context = {**_members_context(access), "m": membership, "row_error": error}
        return render(request, "tenants/members.html#member_row", context)
    if error:
        messages.error(request, error)
    else:
        messages.success(request, f"{membership.user.email} is now {membership.get_role_display().lower()}.")
    return redirect("members", slug=slug)


@login_required
@require_POST
def member_remove(request: HtmxHttpRequest, slug: str, membership_id: int) -> HttpResponse:
    access = tenant_access(request, slug, MEMBERS_MANAGE)
    membership = access_membership(access, membership_id)
    try:
        membership_remove(access.tenant, membership=membership, actor=access.actor)
    except ValidationError as exc:
        if request.htmx:
            context = {**_members_context(access), "m": membership, "row_error": " ".join(exc.messages)}
            return render(request, "tenants/members.html#member_row", context)
        messages.error(request, " ".join(exc.messages))
        return redirect("members", slug=slug)
    if membership.user_id == request.user.id:
        # Removing yourself: this tenant is gone from your console.
        return HttpResponseClientRedirect(reverse("home")) if request.htmx else redirect("home")
    if request.htmx:
        return HttpResponse("")
    messages.success(request, f"Removed {membership.user.email}.")
    return redirect("members", slug=slug)


@login_required
@require_POST
def invitation_revoke_view(request: HtmxHttpRequest, slug: str, invitation_id: int) -> HttpResponse:
    access = tenant_access(request, slug, MEMBERS_MANAGE)
    invitation = access_invitation(access, invitation_id)
    invitation_revoke(access.tenant, invitation=invitation, actor=access.actor)
    if request.htmx:
        return HttpResponse("")
    messages.success(request, f"Cancelled the invitation for {invitation.email}.")
    return redirect("members", slug=slug)


@require_http_methods(["GET", "POST"])
def invitation_accept_view(request: HttpRequest, token: str) -> HttpResponse:
    """The link from the invitation email. Anyone with it sees whom it is for; joining needs that email."""
    invitation = invitation_by_token(token)
    if invitation is not None and invitation.accepted_at and request.user.is_authenticated:
        # Signing up through the link joins on email verification (tenants.signals), and the sign-up
        # then lands back here: a member is simply taken to the tenant.
        membership = memberships_for_user(request.user).filter(tenant=invitation.tenant).first()
        if membership is not None:
            return redirect("tenant-overview", slug=membership.tenant.slug)
    if invitation is None or not invitation.is_pending:
        return render(request, "tenants/invitation.html", {"invitation": None}, status=404)
    if not request.user.is_authenticated:
        # Lets the invitee sign up even when self-service sign-up is closed (tenants.adapters).
        request.session[INVITATION_SESSION_KEY] = token
        return render(request, "tenants/invitation.html", {"invitation": invitation, "next": request.path})
    error = ""
    if request.method == "POST":
        try:
            membership = invitation_accept(
                invitation, user=request.user, actor=Actor(user=request.user, ip=client_ip(request))
            )
        except ValidationError as exc:
            error = " ".join(exc.messages)
        else:
            request.session.pop(INVITATION_SESSION_KEY, None)
            messages.success(request, f"Welcome to {membership.tenant.name}.")
            return redirect("tenant-overview", slug=membership.tenant.slug)
    return render(request, "tenants/invitation.html", {"invitation": invitation, "error": error})


# --- Management API tokens -------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def tokens(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    access = tenant_access(request, slug, CONFIG_WRITE)
    form = TokenForm(request.POST or None, roles=access.assignable_roles(), initial={"role": Role.VIEWER})
    context: dict = {"section": "tokens", "base_url": _base_url(request)}
    if request.method == "POST" and form.is_valid():
        try:
            token, secret = management_token_create(
                access.tenant, actor=access.actor, grantor_role=access.role, **form.cleaned_data
            )
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            context.update(token=token, secret=secret)
            form = TokenForm(roles=access.assignable_roles(), initial={"role": Role.VIEWER})
    context.update(form=form, tokens=management_tokens_for(access.tenant))
    template = "tenants/tokens.html#main" if request.htmx else "tenants/tokens.html"
    return _no_store(render(request, template, context))


@login_required
@require_POST
def token_revoke(request: HtmxHttpRequest, slug: str, token_id: int) -> HttpResponse:
    access = tenant_access(request, slug, CONFIG_WRITE)
    token = access_token(access, token_id)
    management_token_revoke(access.tenant, token=token, actor=access.actor)
    if request.htmx:
        return render(request, "tenants/tokens.html#token_row", {"t": token})
    messages.success(request, f"Revoked the API token {token.name}.")
    return redirect("tokens", slug=slug)


# --- Audit log -------------------------------------------------------------------------------------


def _audit_query(request: HtmxHttpRequest, **changes: str | None) -> str:
    """The page's query string without its page number, with some parameters set (or dropped for None)."""
    params = request.GET.copy()
    params.pop("page", None)
    for name, value in changes.items():
        params.pop(name, None)
        if value is not None:
            params[name] = value
    return params.urlencode()


@login_required
@require_GET
def audit_log(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    access = tenant_access(request, slug, AUDIT_VIEW)
    form = AuditFilterForm(request.GET)
    page, rows = None, []
    if form.is_valid():
        entries = audit_entries_filtered(access.tenant, **form.cleaned_data)
        page = Paginator(entries, 50).get_page(request.GET.get("page"))
        rows = audit_rows(access.tenant, page.object_list)
    sign_ins = form.is_valid() and form.cleaned_data["sign_ins"]
    context = {
        "section": "audit",
        "form": form,
        "page": page,
        "rows": rows,
        "actions": audit_actions_for(access.tenant),
        "query": _audit_query(request),
        "sign_ins": sign_ins,
        "sign_ins_query": _audit_query(request, sign_ins=None if sign_ins else "on"),
        "filtered": any(request.GET.get(name) for name in ("actor", "action", "target", "since", "until")),
    }
    if request.htmx and not request.htmx.history_restore_request:
        # "Load older entries" appends rows; the filter form replaces the form and the table.
        template = "tenants/audit.html#rows" if request.GET.get("page") else "tenants/audit.html#results"
    else:
        template = "tenants/audit.html"
    # A bad filter is a 400 for a full page; htmx leaves 4xx answers unswapped, so its fragment is a 200.
    status = 400 if form.errors and template == "tenants/audit.html" else 200
    return render(request, template, context, status=status)
