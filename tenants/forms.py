"""Console forms. They check the shape of the input; the rules live in tenants.services."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from tenants.models import Role
from tenants.services import mcp_access_clean


def add_service_errors(form: forms.Form, exc: ValidationError) -> None:
    """Show a service's ValidationError on the form: on its field when the form has one, else on top."""
    if hasattr(exc, "error_dict"):
        for field, messages in exc.message_dict.items():
            form.add_error(field if field in form.fields else None, messages)
    else:
        form.add_error(None, exc.messages)


class UTCDateTimeInput(forms.DateTimeInput):
    input_type = "datetime-local"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(format="%Y-%m-%dT%H:%M", **kwargs)


class KeyForm(forms.Form):
    name = forms.CharField(max_length=200, help_text="Who or what uses it, e.g. “billing-service (prod)”.")
    models = forms.MultipleChoiceField(
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Allowed models",
        help_text="Leave all unticked to allow every model of the tenant, including ones added later.",
    )
    expires_at = forms.DateTimeField(
        required=False, widget=UTCDateTimeInput(), label="Expires (UTC)", help_text="Optional."
    )
    metadata = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false", "placeholder": '{"team": "search"}'}),
        help_text="Optional JSON object, copied into every call log of this key.",
    )
    mcp = forms.CharField(
        required=False,
        label="MCP access",
        widget=forms.Textarea(
            attrs={"rows": 2, "spellcheck": "false", "placeholder": '{"github": ["search_issues"], "docs": "*"}'}
        ),
        help_text="The MCP servers and tools this key may use at /mcp, as JSON; “*” for every tool of a "
        "server. Leave empty for no MCP access.",
    )
    admin = forms.BooleanField(
        required=False,
        label="Admin key",
        help_text="May score every call of the tenant through /v1/feedback, including calls made with other keys; "
        "other keys score only their own calls.",
    )

    def __init__(self, *args: Any, model_names: list[str], can_grant: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        chosen = list(self.initial.get("models") or [])
        self.fields["models"].choices = [(m, m) for m in sorted(set(model_names) | set(chosen))]
        if not can_grant:
            # MCP access runs the tenant's tools and an admin key acts on other keys' calls: an admin's
            # grant, as in the key API. A disabled field keeps the stored value whatever is posted.
            self.fields["mcp"].disabled = True
            self.fields["mcp"].help_text = "Only an owner or admin may grant MCP access."
            self.fields["admin"].disabled = True
            self.fields["admin"].help_text = "Only an owner or admin may make a key an admin key."

    def clean_metadata(self) -> dict:
        raw = (self.cleaned_data.get("metadata") or "").strip()
        if not raw:
            return {}
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"Not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}).") from None
        if not isinstance(value, dict):
            raise ValidationError('Metadata must be a JSON object, like {"team": "search"}.')
        return value

    def clean_mcp(self) -> dict | None:
        raw = (self.cleaned_data.get("mcp") or "").strip()
        if not raw:
            return None
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"Not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}).") from None
        try:
            return mcp_access_clean(value)
        except ValidationError as exc:
            raise ValidationError(exc.message_dict.get("mcp", exc.messages)) from None

    @classmethod
    def initial_for(cls, key: Any) -> dict:
        return {
            "name": key.name,
            "models": key.allowed_models,
            "expires_at": key.expires_at,
            "metadata": json.dumps(key.metadata, indent=2) if key.metadata else "",
            "mcp": json.dumps(key.mcp) if key.mcp is not None else "",
            "admin": key.admin,
        }


class RoleChoiceForm(forms.Form):
    """Base for forms that hand out a role: only roles up to the caller's own are offered."""

    role = forms.ChoiceField(choices=Role.choices)

    def __init__(self, *args: Any, roles: list[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["role"].choices = roles


class InviteForm(RoleChoiceForm):
    email = forms.EmailField(widget=forms.EmailInput(attrs={"autocomplete": "off", "placeholder": "name@company.com"}))
    field_order = ["email", "role"]


class MemberRoleForm(RoleChoiceForm):
    pass


class TokenForm(RoleChoiceForm):
    name = forms.CharField(max_length=200, help_text="What will use it, e.g. “terraform” or “CI deploy”.")
    field_order = ["name", "role"]


class TenantSettingsForm(forms.Form):
    name = forms.CharField(max_length=200)
    log_bodies = forms.BooleanField(
        required=False,
        label="Store request and response bodies in call logs",
        help_text="Stored after PII redaction, cut at 64 KiB each, and purged with the log.",
    )
    log_retention_days = forms.IntegerField(
        min_value=1, max_value=3650, required=False, label="Keep call logs for (days)"
    )


class TenantCreateForm(forms.Form):
    name = forms.CharField(max_length=200, help_text="Usually a company, team or environment.")
    slug = forms.CharField(
        max_length=63,
        required=False,
        help_text="Used in URLs and YAML files. Leave empty to derive it from the name.",
    )


class TenantDeleteForm(forms.Form):
    confirm = forms.CharField(label="Type the tenant's slug to confirm")

    def __init__(self, *args: Any, slug: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.slug = slug

    def clean_confirm(self) -> str:
        value = self.cleaned_data["confirm"].strip()
        if value != self.slug:
            raise ValidationError(f"Type {self.slug} exactly to delete this tenant.")
        return value


class AuditFilterForm(forms.Form):
    """The audit page's filters, read from the query string. Dates are whole days in UTC."""

    actor = forms.CharField(max_length=200, required=False, label="Who")
    action = forms.CharField(
        max_length=60,
        required=False,
        widget=forms.TextInput(attrs={"list": "audit-actions"}),
        help_text="An action (key.create) or a family (key).",
    )
    target = forms.CharField(max_length=200, required=False)
    since = forms.DateField(required=False, label="From (UTC)", widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, label="To (UTC)", widget=forms.DateInput(attrs={"type": "date"}))
    sign_ins = forms.BooleanField(required=False, label="Show sign-ins")

    def clean(self) -> dict:
        data = super().clean()
        since, until = data.get("since"), data.get("until")
        if since and until and until < since:
            self.add_error("until", "The end date must be on or after the start date.")
        return data
