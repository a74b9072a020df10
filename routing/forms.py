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
    # The stored key is never rendered (the edit form's initial data has no key; it is shown only as its
    # last four characters). What the user just typed is kept when the form comes back with an error.
    api_key = forms.CharField(
        required=False,
        label="API key",
        widget=forms.PasswordInput(render_value=True, attrs={"autocomplete": "off"}),
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
    """All of a model's deployments in one form: add rows, tick "Remove", renumber "Order" to reorder."""

    def add_fields(self, form: forms.Form, index: int | None) -> None:
        super().add_fields(form, index)
        if self.can_order:
            form.fields[forms.formsets.ORDERING_FIELD_NAME].label = "Order"
            form.fields[forms.formsets.ORDERING_FIELD_NAME].widget.attrs.update({"min": 0, "class": "order-input"})
        if self.can_delete:
            form.fields[forms.formsets.DELETION_FIELD_NAME].label = "Remove"

    def clean(self) -> None:
        if any(self.errors):
            return
        chosen = self.deployments()
        if not chosen:
            raise forms.ValidationError("Add at least one deployment: a provider and the model name it knows.")
        seen = set()
        for provider, model in chosen:
            if (provider.id, model) in seen:
                raise forms.ValidationError(f"{provider.name}/{model} is listed twice; remove one of the rows.")
            seen.add((provider.id, model))

    def deployments(self) -> list[tuple[ProviderCredential, str]]:
        """The kept rows in the order the user gave (rows without an order number keep their place, last)."""
        kept = [
            (index, f)
            for index, f in enumerate(self.forms)
            if f.cleaned_data and not f.cleaned_data.get(forms.formsets.DELETION_FIELD_NAME)
        ]

        def position(item: tuple[int, forms.Form]) -> tuple[bool, int, int]:
            index, f = item
            order = f.cleaned_data.get(forms.formsets.ORDERING_FIELD_NAME)
            return (order is None, order or 0, index)

        return [(f.cleaned_data["provider"], f.cleaned_data["model"].strip()) for _, f in sorted(kept, key=position)]


DeploymentFormSet = forms.formset_factory(
    DeploymentForm,
    formset=BaseDeploymentFormSet,
    extra=1,
    can_delete=True,
    can_delete_extra=True,
    can_order=True,
    max_num=50,
    validate_max=True,
)


class ModelNameForm(forms.Form):
    name = forms.CharField(
        max_length=200,
        label="Model name",
        help_text="The name clients send as “model”, e.g. gpt-4o-mini or fast-chat.",
        widget=forms.TextInput(attrs={"placeholder": "gpt-4o-mini"}),
    )
