"""Console forms for providers and models. Rules (SSRF guard, uniqueness) live in routing.services."""

from __future__ import annotations

from typing import Any

from django import forms

from routing.models import ProviderCredential, ProviderKind


class ProviderForm(forms.Form):
    name = forms.SlugField(max_length=100, help_text="Referenced by models and YAML files, e.g. “openai-prod”.")
    kind = forms.ChoiceField(choices=ProviderKind.choices)
    base_url = forms.CharField(
        max_length=500,
        required=False,
        label="Base URL",
        widget=forms.URLInput(attrs={"placeholder": "https://api.openai.com/v1"}),
        help_text="Needed for OpenAI-compatible servers; OpenAI's own is the default.",
    )
    # Never rendered back: the stored key is only ever shown as its last four characters.
    api_key = forms.CharField(
        required=False,
        label="API key",
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
    )

    def __init__(self, *args: Any, editing: ProviderCredential | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.editing = editing
        if editing is not None:
            # The name identifies the provider in YAML and deployments; renaming is delete + create.
            self.fields["name"].disabled = True
            self.fields["name"].required = False
            self.fields["api_key"].help_text = (
                f"Stored and encrypted ({editing.masked_key or 'set'}). Leave empty to keep it."
                if editing.api_key_encrypted
                else "No key stored."
            )


class DeploymentForm(forms.Form):
    provider = forms.ModelChoiceField(queryset=ProviderCredential.objects.none(), empty_label="— provider —")
    model = forms.CharField(
        max_length=200, label="Upstream model", widget=forms.TextInput(attrs={"placeholder": "gpt-4o-mini"})
    )

    def __init__(self, *args: Any, providers: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["provider"].queryset = providers


class BaseDeploymentFormSet(forms.BaseFormSet):
    def clean(self) -> None:
        if any(self.errors):
            return
        if not self.deployments():
            raise forms.ValidationError("Add at least one deployment: a provider and the model name it knows.")

    def deployments(self) -> list[tuple[ProviderCredential, str]]:
        return [
            (f.cleaned_data["provider"], f.cleaned_data["model"].strip())
            for f in self.forms
            if f.cleaned_data and not f.cleaned_data.get("DELETE")
        ]


DeploymentFormSet = forms.formset_factory(
    DeploymentForm, formset=BaseDeploymentFormSet, extra=1, can_delete=True, can_delete_extra=False
)


class ModelNameForm(forms.Form):
    name = forms.CharField(
        max_length=200,
        label="Model name",
        help_text="The name clients send as “model”, e.g. gpt-4o-mini or fast-chat.",
        widget=forms.TextInput(attrs={"placeholder": "gpt-4o-mini"}),
    )
