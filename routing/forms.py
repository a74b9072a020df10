"""Console forms for providers and models. Rules (SSRF guard, uniqueness) live in routing.services."""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils.html import format_html

from routing.models import (
    AWS_SECRET_FIELDS,
    MAX_COOLDOWN_FAILURES,
    MAX_PROMPT_BYTES,
    MAX_RETRIES,
    MAX_TIMEOUT_S,
    MAX_WEIGHT,
    MAX_WINDOW_S,
    ProviderCredential,
    ProviderKind,
    Sticky,
    Strategy,
)
from routing.services import KIND_FIELDS, header_problem
from tenants.bounds import MAX_SECRET_CHARS


def _kinds_taking(setting: str) -> str:
    """The kinds that take `setting`, for the console's show-by-kind toggle (static/js/console.js)."""
    return " ".join(kind for kind, fields in KIND_FIELDS.items() if setting in fields)


def _secret_input(setting: str) -> forms.PasswordInput:
    return forms.PasswordInput(render_value=True, attrs={"autocomplete": "off", "data-kinds": _kinds_taking(setting)})


class ProviderForm(forms.Form):
    name = forms.SlugField(max_length=100, help_text="Referenced by models and YAML files, e.g. “openai-prod”.")
    kind = forms.ChoiceField(choices=ProviderKind.choices, widget=forms.Select(attrs={"data-provider-kind": ""}))
    base_url = forms.CharField(
        max_length=500,
        required=False,
        label="Base URL",
        widget=forms.URLInput(attrs={"placeholder": "https://api.openai.com/v1"}),
        help_text=(
            "Needed for OpenAI-compatible servers and Azure (https://RESOURCE.openai.azure.com); OpenAI, "
            "Anthropic, Gemini and Bedrock (from the region) have a default."
        ),
    )
    # Stored secrets are never rendered (the edit form's initial data has none; the key is shown only as
    # its last four characters). What the user just typed is kept when the form comes back with an error.
    api_key = forms.CharField(
        required=False, max_length=MAX_SECRET_CHARS, label="API key", widget=_secret_input("api_key")
    )
    api_version = forms.CharField(
        max_length=40,
        required=False,
        label="API version",
        widget=forms.TextInput(attrs={"placeholder": "2024-10-21", "data-kinds": _kinds_taking("api_version")}),
        help_text="Azure's api-version parameter.",
    )
    region = forms.CharField(
        max_length=30,
        required=False,
        widget=forms.TextInput(attrs={"placeholder": "us-east-1", "data-kinds": _kinds_taking("region")}),
    )
    aws_access_key_id = forms.CharField(
        required=False,
        max_length=MAX_SECRET_CHARS,
        label="AWS access key ID",
        widget=_secret_input("aws_access_key_id"),
    )
    aws_secret_access_key = forms.CharField(
        required=False,
        max_length=MAX_SECRET_CHARS,
        label="AWS secret access key",
        widget=_secret_input("aws_secret_access_key"),
    )
    aws_session_token = forms.CharField(
        required=False,
        max_length=MAX_SECRET_CHARS,
        label="AWS session token",
        widget=_secret_input("aws_session_token"),
        help_text="Only for temporary credentials.",
    )
    headers = forms.CharField(
        required=False,
        label="Extra headers",
        widget=forms.Textarea(
            attrs={
                "rows": 3,
                "placeholder": "HTTP-Referer: https://example.com",
                "data-kinds": _kinds_taking("headers"),
            }
        ),
        help_text="One “Name: value” per line, sent with every call to this provider.",
    )

    SECRETS = ("api_key", *AWS_SECRET_FIELDS)

    def __init__(self, *args: Any, editing: ProviderCredential | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.editing = editing
        if editing is not None:
            # The name identifies the provider in YAML and deployments; renaming is delete + create.
            self.fields["name"].disabled = True
            self.fields["name"].required = False
            # help_text is rendered as HTML (includes/field.html): the key's last characters are escaped.
            self.fields["api_key"].help_text = (
                format_html("Stored and encrypted ({}). Leave empty to keep it.", editing.masked_key or "set")
                if editing.api_key_encrypted
                else "No key stored."
            )
            stored = editing.secret_sources or {}
            for setting in AWS_SECRET_FIELDS:
                if setting in stored:
                    self.fields[setting].help_text = "Stored and encrypted. Leave empty to keep it."
            if editing.header_names:
                self.fields["headers"].help_text = (
                    f"Stored and encrypted: {', '.join(editing.header_names)}. Leave empty to keep them; "
                    "entering headers replaces them all."
                )

    def clean_headers(self) -> dict[str, str] | None:
        """The lines as {name: value}; None when left empty (a new provider then has none)."""
        text = self.cleaned_data.get("headers") or ""
        if not text.strip():
            return None
        out: dict[str, str] = {}
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            name, sep, value = line.partition(":")
            name = name.strip()
            if not sep or not name:
                raise forms.ValidationError(f"Line {number}: write “Name: value”.")
            problem = header_problem(name, value.strip())
            if problem:
                raise forms.ValidationError(f"Line {number}: {problem}.")
            if name.lower() in {n.lower() for n in out}:
                raise forms.ValidationError(f"Line {number}: {name} is given twice.")
            out[name] = value.strip()
        return out

    def upsert_kwargs(self) -> dict[str, Any]:
        """provider_upsert's settings from the form: only the chosen kind's, an empty secret keeps the stored one.

        Fields of other kinds are still in the page (hidden by script) and may hold what was typed before
        switching kind: they are dropped here, not refused.
        """
        data = self.cleaned_data
        takes = KIND_FIELDS.get(data["kind"], frozenset())
        kwargs: dict[str, Any] = {
            "base_url": data["base_url"],
            "api_version": data["api_version"] if "api_version" in takes else "",
            "region": data["region"] if "region" in takes else "",
        }
        for setting in self.SECRETS:
            if setting in takes and data[setting]:
                kwargs[setting] = data[setting]
        if "headers" in takes and data["headers"] is not None:
            kwargs["headers"] = data["headers"]
        elif self.editing is None and "headers" in takes:
            kwargs["headers"] = {}
        return kwargs


ORDER = forms.formsets.ORDERING_FIELD_NAME
REMOVE = forms.formsets.DELETION_FIELD_NAME


def label_order_and_remove(form: forms.Form, index: int | None) -> None:
    """The "Order" and "Remove" fields of an ordered list's row (deployments, rules).

    A row's place on screen is its order: an empty "Order" shows that place as a placeholder (a row
    added in the browser from the blank template gets it from static/js/console.js).
    """
    order = form.fields[ORDER]
    order.label = "Order"
    order.widget.attrs.update({"min": 0, "class": "order-input"})
    if index is not None:
        order.widget.attrs["placeholder"] = str(index + 1)
    form.fields[REMOVE].label = "Remove"


def kept_in_order(formset: forms.BaseFormSet) -> list[forms.Form]:
    """The filled rows not marked "Remove", in the order on screen unless the user typed another.

    An empty "Order" stands for the row's place on screen (1, 2, ...), as do the numbers Django fills
    in for saved rows. A number the user typed or changed wins a tie with a place, so typing 1 on the
    third row moves it first; rows that still tie keep their order on screen.
    """

    def position(item: tuple[int, forms.Form]) -> tuple[int, bool, int]:
        index, form = item
        order = form.cleaned_data.get(ORDER)
        return (index + 1 if order is None else order, ORDER not in form.changed_data, index)

    kept = [(i, f) for i, f in enumerate(formset.forms) if f.cleaned_data and not f.cleaned_data.get(REMOVE)]
    return [form for _, form in sorted(kept, key=position)]


class DeploymentForm(forms.Form):
    provider = forms.ModelChoiceField(queryset=ProviderCredential.objects.none(), empty_label="— provider —")
    model = forms.CharField(
        max_length=200, label="Upstream model", widget=forms.TextInput(attrs={"placeholder": "gpt-4o-mini"})
    )
    # Left empty, the service keeps the deployment's current weight (1 for a new one).
    weight = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_WEIGHT,
        label="Weight",
        widget=forms.NumberInput(attrs={"placeholder": "1", "class": "order-input"}),
        help_text="Share under “weighted”.",
    )

    def __init__(self, *args: Any, providers: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["provider"].queryset = providers


class BaseDeploymentFormSet(forms.BaseFormSet):
    """All of a model's deployments in one form: add rows, tick "Remove", renumber "Order" to reorder."""

    def add_fields(self, form: forms.Form, index: int | None) -> None:
        super().add_fields(form, index)
        label_order_and_remove(form, index)

    def clean(self) -> None:
        if any(self.errors):
            return
        chosen = self.deployments()
        if not chosen:
            raise forms.ValidationError("Add at least one deployment: a provider and the model name it knows.")
        seen = set()
        for provider, model, _weight in chosen:
            if (provider.id, model) in seen:
                raise forms.ValidationError(f"{provider.name}/{model} is listed twice; remove one of the rows.")
            seen.add((provider.id, model))

    def deployments(self) -> list[tuple[ProviderCredential, str, int | None]]:
        """The kept rows, first the primary: the order on screen unless the user typed another."""
        return [
            (f.cleaned_data["provider"], f.cleaned_data["model"].strip(), f.cleaned_data.get("weight"))
            for f in kept_in_order(self)
        ]


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


def name_list(value: str) -> list[str]:
    """ "a, b c" -> ["a", "b", "c"]: lists of names are typed as one text field."""
    return [part for part in value.replace(",", " ").split() if part]


class RouteSettingsForm(forms.Form):
    """One model's strategy, retries, deadline, fallbacks, A/B split and breaker (routing.services checks them)."""

    strategy = forms.ChoiceField(choices=Strategy.choices)
    retries = forms.IntegerField(
        min_value=0, max_value=MAX_RETRIES, help_text="Extra attempts per deployment on 429, 5xx and timeouts."
    )
    timeout_s = forms.FloatField(
        min_value=0.001, max_value=MAX_TIMEOUT_S, label="Deadline (s)", help_text="Covers every attempt."
    )
    fallbacks = forms.CharField(
        required=False, max_length=2000, help_text="Other models tried in order when every deployment failed."
    )
    context_window_fallbacks = forms.CharField(
        required=False,
        max_length=2000,
        label="Context window fallbacks",
        help_text="Models for prompts too long for this one.",
    )
    split_model = forms.ChoiceField(required=False, label="A/B split: variant model")
    split_percent = forms.FloatField(
        required=False, min_value=0, max_value=100, label="Share (%)", help_text="Of this model's traffic."
    )
    split_sticky = forms.ChoiceField(
        choices=Sticky.choices,
        label="Sticky",
        initial=Sticky.USER,
        help_text="Per end user: by the request's “user”; requests without a “user” are bucketed per key.",
    )
    cooldown_failures = forms.IntegerField(
        min_value=1, max_value=MAX_COOLDOWN_FAILURES, label="Breaker: failures", help_text="Opens the breaker …"
    )
    cooldown_window_s = forms.FloatField(min_value=0.001, max_value=MAX_WINDOW_S, label="within (s)")
    cooldown_s = forms.FloatField(
        min_value=0.001, max_value=MAX_WINDOW_S, label="Cooldown (s)", help_text="… and skips the deployment this long."
    )

    # Service error paths ("split.percent", "fallbacks[1]") -> the field that shows them.
    SERVICE_FIELDS = {
        "split.model": "split_model",
        "split.percent": "split_percent",
        "split.sticky": "split_sticky",
        "cooldown.failures": "cooldown_failures",
        "cooldown.window_s": "cooldown_window_s",
        "cooldown.cooldown_s": "cooldown_s",
    }

    def __init__(self, *args: Any, model_name: str, other_models: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.model_name = model_name
        self.fields["split_model"].choices = [("", "— no split —")] + [(m, m) for m in other_models]

    @classmethod
    def initial_from(cls, settings: dict) -> dict:
        split = settings["split"] or {}
        cooldown = settings["cooldown"]
        return {
            "strategy": settings["strategy"],
            "retries": settings["retries"],
            "timeout_s": settings["timeout_s"],
            "fallbacks": ", ".join(settings["fallbacks"]),
            "context_window_fallbacks": ", ".join(settings["context_window_fallbacks"]),
            "split_model": split.get("model", ""),
            "split_percent": split.get("percent"),
            "split_sticky": split.get("sticky", Sticky.USER.value),
            "cooldown_failures": cooldown["failures"],
            "cooldown_window_s": cooldown["window_s"],
            "cooldown_s": cooldown["cooldown_s"],
        }

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("split_model") and data.get("split_percent") is None:
            self.add_error("split_percent", "Give the share of traffic the variant gets, from 0 to 100.")
        return data

    def settings(self, current: dict | None = None) -> dict:
        """The cleaned form in the shape routing.services.model_routes_set takes. The split's `stop_when`
        (set in YAML or the API; the form has no fields for it) is kept while the variant stays the same."""
        d = self.cleaned_data
        split = (
            {"model": d["split_model"], "percent": d["split_percent"], "sticky": d["split_sticky"]}
            if d["split_model"]
            else None
        )
        kept = (current or {}).get("split") or {}
        if split and kept.get("stop_when") and kept.get("model") == split["model"]:
            split["stop_when"] = kept["stop_when"]
        return {
            "strategy": d["strategy"],
            "retries": d["retries"],
            "timeout_s": d["timeout_s"],
            "fallbacks": name_list(d["fallbacks"]),
            "context_window_fallbacks": name_list(d["context_window_fallbacks"]),
            "split": split,
            "cooldown": {
                "failures": d["cooldown_failures"],
                "window_s": d["cooldown_window_s"],
                "cooldown_s": d["cooldown_s"],
            },
        }

    def add_service_errors(self, messages: dict[str, list[str]]) -> None:
        prefix = f"{self.model_name}."
        for path, errors in messages.items():
            path = path.removeprefix(prefix)
            field = self.SERVICE_FIELDS.get(path, path.split("[", 1)[0])
            self.add_error(field if field in self.fields else None, [f"{path}: {e}" for e in errors])


class RuleForm(forms.Form):
    """One rule: every condition filled in must hold; then the request goes to `route`."""

    key = forms.CharField(required=False, max_length=1000, label="Key names", help_text="Any of these keys.")
    metadata = forms.CharField(
        required=False, max_length=1000, label="Key metadata", help_text="k=v, k2=v2 (all must match)."
    )
    tags = forms.CharField(required=False, max_length=1000, help_text="Any of these tags.")
    user = forms.CharField(required=False, max_length=1000, label="End users", help_text="Any of these users.")
    prompt_bytes_over = forms.IntegerField(
        required=False, min_value=0, max_value=MAX_PROMPT_BYTES, label="Prompt bytes over"
    )
    route = forms.ChoiceField(label="Route to")

    def __init__(self, *args: Any, models: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["route"].choices = [("", "— model —")] + [(m, m) for m in models]

    @staticmethod
    def initial_from(match: dict, route: str) -> dict:
        return {
            "key": ", ".join(match.get("key") or []),
            "metadata": ", ".join(f"{k}={v}" for k, v in (match.get("metadata") or {}).items()),
            "tags": ", ".join(match.get("tags") or []),
            "user": ", ".join(match.get("user") or []),
            "prompt_bytes_over": match.get("prompt_bytes_over"),
            "route": route,
        }

    def clean_metadata(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for part in self.cleaned_data["metadata"].split(","):
            if not part.strip():
                continue
            k, sep, v = part.partition("=")
            if not sep or not k.strip():
                raise forms.ValidationError(f"Write each condition as key=value (got {part.strip()!r}).")
            out[k.strip()] = v.strip()
        return out

    def rule(self) -> dict:
        d = self.cleaned_data
        match: dict[str, Any] = {}
        for field in ("key", "tags", "user"):
            if names := name_list(d[field]):
                match[field] = names
        if d["metadata"]:
            match["metadata"] = d["metadata"]
        if d["prompt_bytes_over"] is not None:
            match["prompt_bytes_over"] = d["prompt_bytes_over"]
        return {"if": match, "route": d["route"]}


class BaseRuleFormSet(forms.BaseFormSet):
    """The ordered rule list in one form, like the deployments: "Order" to reorder, "Remove" to drop."""

    def add_fields(self, form: forms.Form, index: int | None) -> None:
        super().add_fields(form, index)
        label_order_and_remove(form, index)

    def rules(self) -> list[dict]:
        return [f.rule() for f in kept_in_order(self)]  # type: ignore[attr-defined]

    def add_service_errors(self, messages: dict[str, list[str]]) -> None:
        """Show the service's errors ("rules[1].if.tags") above the list, naming the rule by its position."""
        errors = self.error_class(list(self.non_form_errors()), error_class="nonform")
        for path, texts in messages.items():
            label = path
            if path.startswith("rules[") and "]" in path:
                index, _, rest = path[len("rules[") :].partition("]")
                if index.isdigit():
                    label = f"Rule {int(index) + 1}" + (f" ({rest.lstrip('.')})" if rest else "")
            errors.extend(f"{label}: {text}" for text in texts)
        self._non_form_errors = errors


RuleFormSet = forms.formset_factory(
    RuleForm,
    formset=BaseRuleFormSet,
    extra=1,
    can_delete=True,
    can_delete_extra=True,
    can_order=True,
    max_num=100,
    validate_max=True,
)


class SimulateForm(forms.Form):
    """What the routing simulator is asked: a request's model and the facts rules look at."""

    model = forms.ChoiceField()
    key = forms.ChoiceField(required=False, help_text="Rules on key names, metadata and tags read it.")
    tags = forms.CharField(required=False, max_length=1000, help_text="As in the x-gateway-tags header.")
    user = forms.CharField(required=False, max_length=200, label="End user", help_text="The request's “user”.")
    prompt_bytes = forms.IntegerField(required=False, min_value=0, max_value=MAX_PROMPT_BYTES, label="Prompt bytes")

    def __init__(self, *args: Any, models: list[str], keys: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["model"].choices = [(m, m) for m in models]
        self.fields["key"].choices = [("", "— no key —")] + [(k, k) for k in keys]

    def tag_list(self) -> list[str]:
        return [t.strip() for t in self.cleaned_data["tags"].split(",") if t.strip()]
