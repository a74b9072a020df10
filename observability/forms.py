"""Query forms of the dashboard and the log explorer, and the playground's form: bad input becomes a form
error, never a 500."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from django import forms

from observability.models import EvaluatorKind
from observability.playground import MAX_OUTPUT_TOKENS, MAX_TEXT_CHARS, MAX_TURNS, Turn, parse_conversation

RANGES = {"24h": ("Last 24 hours", timedelta(hours=24)), "7d": ("Last 7 days", timedelta(days=7))}
RANGES["30d"] = ("Last 30 days", timedelta(days=30))
MAX_RANGE = timedelta(days=400)
STATUS_CHOICES = [
    ("", "Any status"),
    ("2xx", "2xx"),
    ("4xx", "4xx"),
    ("5xx", "5xx"),
    ("error", "Errors (>= 400 or failed mid-stream)"),
]
DATETIME_FORMATS = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"]


class UtcDateTimeField(forms.DateTimeField):
    """A <input type=datetime-local> read as UTC (the console shows times in UTC)."""

    widget = forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M")

    def __init__(self, **kwargs) -> None:
        super().__init__(input_formats=DATETIME_FORMATS, required=False, **kwargs)

    def to_python(self, value):
        result = super().to_python(value)
        if result is not None:
            result = result.replace(tzinfo=UTC) if result.tzinfo is None else result.astimezone(UTC)
        return result


class RangeForm(forms.Form):
    range = forms.ChoiceField(
        choices=[(k, label) for k, (label, _) in RANGES.items()] + [("custom", "Custom")], required=False
    )
    since = UtcDateTimeField(label="From (UTC)")
    until = UtcDateTimeField(label="To (UTC)")

    def clean(self) -> dict:
        data = super().clean()
        choice = data.get("range") or ("custom" if data.get("since") else "24h")
        data["range"] = choice
        if choice == "custom":
            since, until = data.get("since"), data.get("until") or datetime.now(UTC)
            if since is None:
                self.add_error("since", "A custom range needs a start.")
            elif since >= until:
                self.add_error("until", "The end must be after the start.")
            elif until - since > MAX_RANGE:
                self.add_error("since", "Ranges are limited to 400 days.")
            else:
                data["start"], data["end"] = since, until
        else:
            data["end"] = datetime.now(UTC)
            data["start"] = data["end"] - RANGES[choice][1]
        return data


# The explorer's score filter: a name, and optionally a comparison with a number ("helpfulness>=4").
SCORE_FILTER = re.compile(r"([A-Za-z0-9_-]{1,64})\s*(?:(>=|<=|=|>|<)\s*(-?\d+(?:\.\d+)?))?")
# The explorer's sort by a score: "score.helpfulness".
SCORE_SORT = re.compile(r"score\.([A-Za-z0-9_-]{1,64})")
ORDER_CHOICES = [("desc", "Highest first"), ("asc", "Lowest first")]


class LogFilterForm(forms.Form):
    since = UtcDateTimeField(label="From (UTC)")
    until = UtcDateTimeField(label="To (UTC)")
    key = forms.TypedChoiceField(coerce=int, required=False, empty_value=None, label="Key")
    model = forms.CharField(max_length=200, required=False)
    status = forms.CharField(max_length=5, required=False, widget=forms.TextInput(attrs={"list": "status-choices"}))
    user = forms.CharField(max_length=200, required=False, label="End user")
    tag = forms.CharField(max_length=200, required=False)
    request_id = forms.CharField(max_length=100, required=False, label="Request id")
    score = forms.CharField(
        max_length=100,
        required=False,
        label="Score",
        help_text="thumbs, thumbs=1, helpfulness>=4, json_ok<1: calls with that score (any source).",
    )
    sort = forms.CharField(
        max_length=80,
        required=False,
        label="Sort by",
        widget=forms.TextInput(attrs={"list": "sort-choices", "placeholder": "newest first"}),
        help_text="score.helpfulness: the calls with that score by its value (the mean of its sources), then the others.",
    )
    order = forms.ChoiceField(choices=ORDER_CHOICES, required=False, label="Order")

    def __init__(self, data=None, *, keys: list[tuple[int, str]] = (), **kwargs) -> None:
        super().__init__(data, **kwargs)
        self.fields["key"].choices = [("", "Any key"), *keys]

    def clean_sort(self) -> str:
        """The score name to sort by, "" for newest first."""
        text = self.cleaned_data["sort"].strip()
        if not text:
            return ""
        match = SCORE_SORT.fullmatch(text)
        if match is None:
            raise forms.ValidationError("Sort by a score: score.<name>, e.g. score.helpfulness; or leave it empty.")
        return match.group(1)

    def clean_status(self) -> str:
        status = self.cleaned_data["status"].strip().lower()
        if status and status not in {"2xx", "3xx", "4xx", "5xx", "error"}:
            if not (status.isdigit() and 100 <= int(status) <= 599):
                raise forms.ValidationError("Use a code (e.g. 429), a class (2xx, 4xx, 5xx) or 'error'.")
        return status

    def clean_score(self) -> tuple[str, str, float | None] | None:
        text = self.cleaned_data["score"].strip()
        if not text:
            return None
        match = SCORE_FILTER.fullmatch(text)
        if match is None:
            raise forms.ValidationError("Write a score name, optionally with =, >=, <=, > or < and a number.")
        name, op, number = match.group(1), match.group(2) or "", match.group(3)
        return name, op, float(number) if number is not None else None

    def clean(self) -> dict:
        data = super().clean()
        since, until = data.get("since"), data.get("until")
        if since and until and since >= until:
            self.add_error("until", "The end must be after the start.")
        return data


class PlaygroundForm(forms.Form):
    """One turn of the playground: the settings, the new message and the conversation so far."""

    model = forms.ChoiceField(error_messages={"invalid_choice": "“%(value)s” is not a model you can use here."})
    compare_with = forms.ChoiceField(
        required=False,
        label="Side by side with",
        help_text="Optional: the same conversation goes to this model too, at the same time.",
        error_messages={"invalid_choice": "“%(value)s” is not a model you can use here."},
    )
    system = forms.CharField(
        required=False, max_length=MAX_TEXT_CHARS, label="System prompt", widget=forms.Textarea(attrs={"rows": 2})
    )
    temperature = forms.FloatField(
        required=False,
        min_value=0,
        max_value=2,
        widget=forms.NumberInput(attrs={"step": "0.1"}),
        help_text="From 0 to 2; blank for the model's default.",
    )
    max_tokens = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_OUTPUT_TOKENS,
        label="Max tokens",
        help_text=f"The answer's length cap, 1 to {MAX_OUTPUT_TOKENS:,}; blank for the model's default.",
    )
    message = forms.CharField(
        max_length=MAX_TEXT_CHARS,
        widget=forms.Textarea(attrs={"rows": 3}),
        error_messages={"required": "Write a message to send."},
    )
    conversation = forms.CharField(required=False, strip=False, widget=forms.HiddenInput)

    def __init__(self, *args: Any, models: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cast(forms.ChoiceField, self.fields["model"]).choices = [(m, m) for m in models]
        cast(forms.ChoiceField, self.fields["compare_with"]).choices = [("", "— none —"), *((m, m) for m in models)]

    def clean_conversation(self) -> list[Turn]:
        try:
            turns = parse_conversation(self.cleaned_data["conversation"])
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None
        if len(turns) >= MAX_TURNS:
            raise forms.ValidationError(f"A conversation holds up to {MAX_TURNS} turns: start a new one.")
        return turns


# --- the evaluator editor ------------------------------------------------------------------------------

_LISTS = ("models", "variants", "keys", "tags")


def _number(text: str) -> int | float | str:
    """A number typed in a box, as YAML would read it; anything else as typed, for the grammar to refuse."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


class EvaluatorForm(forms.Form):
    """One evaluator as the `evaluators:` YAML writes it. The form only reads the boxes: what is allowed is
    the grammar's (observability.evaluators.parse_evaluators), so the console and YAML refuse the same."""

    original = forms.CharField(required=False, widget=forms.HiddenInput)  # the name being edited; "" adds one
    name = forms.CharField(help_text="Letters, digits, '-' and '_'. It is the source of the scores it gives.")
    kind = forms.ChoiceField(choices=EvaluatorKind.choices, initial=EvaluatorKind.JSON_VALID)
    score = forms.CharField(
        widget=forms.TextInput(attrs={"list": "score-names"}),
        help_text="The score it gives. A rule gives 0 or 1 (a boolean score, defined or not); a judge's score must be defined.",
    )
    model = forms.CharField(
        required=False,
        label="Judge model",
        widget=forms.TextInput(attrs={"list": "model-names"}),
        help_text="LLM judge: one of the tenant's models, called through the gateway (logged and billed).",
    )
    prompt = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="LLM judge: the rubric, naming {answer} (and maybe {request}); the first number of the reply is the score.",
    )
    schema = forms.CharField(
        required=False,
        label="JSON schema",
        widget=forms.Textarea(attrs={"rows": 4, "class": "mono"}),
        help_text="json_schema: the schema the answer must match, as JSON.",
    )
    pattern = forms.CharField(required=False, strip=False, help_text="regex: a Python regular expression to find.")
    max = forms.CharField(
        required=False, label="Max characters", help_text="max_length: the longest answer that passes."
    )
    value = forms.CharField(required=False, label="Text", help_text="contains: the text the answer must contain.")
    models = forms.CharField(required=False, label="Only for models", help_text="Comma-separated; empty: any.")
    variants = forms.CharField(required=False, label="Only for A/B variants", help_text="Comma-separated; empty: any.")
    keys = forms.CharField(required=False, label="Only for keys", help_text="Key names, comma-separated; empty: any.")
    tags = forms.CharField(required=False, label="Only for tags", help_text="Comma-separated; empty: any.")
    sample = forms.CharField(
        required=False,
        widget=forms.TextInput(attrs={"placeholder": "1", "inputmode": "decimal"}),
        help_text="The share of those calls evaluated, more than 0 and at most 1 (empty: all).",
    )

    def clean_schema(self) -> Any:
        text = self.cleaned_data["schema"].strip()
        if not text:
            return None
        try:
            return json.loads(text)
        except ValueError as exc:
            raise forms.ValidationError(f"Not JSON: {exc}") from None

    def item(self) -> dict[str, Any]:
        """The evaluator as a YAML item: only the boxes filled in (an empty one is a field not written)."""
        d = self.cleaned_data
        item: dict[str, Any] = {"name": d["name"], "kind": d["kind"], "score": d["score"]}
        for field in ("model", "prompt", "pattern", "value"):
            if d[field]:
                item[field] = d[field]
        if d["schema"] is not None:
            item["schema"] = d["schema"]
        if d["max"]:
            item["max"] = _number(d["max"])
        applies: dict[str, Any] = {}
        for field in _LISTS:
            names = [n.strip() for n in d[field].split(",") if n.strip()]
            if names:
                applies[field] = names
        if d["sample"].strip():
            applies["sample"] = _number(d["sample"].strip())
        if applies:
            item["applies_to"] = applies
        return item

    @staticmethod
    def initial_from(item: dict[str, Any]) -> dict[str, Any]:
        """The boxes of an exported evaluator (observability.evaluators.export_evaluators)."""
        applies = item.get("applies_to") or {}
        initial = {f: item.get(f, "") for f in ("name", "kind", "score", "model", "prompt", "pattern", "max", "value")}
        initial["original"] = item["name"]
        if "schema" in item:
            initial["schema"] = json.dumps(item["schema"], indent=2)
        for field in _LISTS:
            initial[field] = ", ".join(applies.get(field, ()))
        initial["sample"] = applies.get("sample", "")
        return initial


class EvaluatorPreviewForm(forms.Form):
    call = forms.TypedChoiceField(
        coerce=int, label="Recent call", help_text="One of the last calls with stored bodies."
    )

    def __init__(self, *args: Any, calls: list[tuple[int, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cast(forms.ChoiceField, self.fields["call"]).choices = calls


class BackfillForm(forms.Form):
    evaluator = forms.ChoiceField()
    since = UtcDateTimeField(label="From (UTC)")
    until = UtcDateTimeField(label="To (UTC)", help_text="Empty: now.")

    def __init__(self, *args: Any, evaluators: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cast(forms.ChoiceField, self.fields["evaluator"]).choices = [(n, n) for n in evaluators]
        self.fields["since"].required = True

    def clean(self) -> dict:
        data = super().clean()
        since, until = data.get("since"), data.get("until") or datetime.now(UTC)
        data["until"] = until
        if since is not None:
            if since >= until:
                self.add_error("until", "The end must be after the start.")
            elif until - since > MAX_RANGE:
                self.add_error("since", "Ranges are limited to 400 days.")
        return data
