"""The console's forms for data policies: the `pii:` and `cache:` sections, one check of `guardrails:`,
and the previews."""

from __future__ import annotations

import re
from typing import Any, cast

import yaml
from django import forms

from routing.forms import name_list
from routing.policies.guardrails import CHECKS, MODERATION_CATEGORIES, PREVIEW_SOURCES, export_guardrails
from routing.policies.spec import ACTIONS, DETECTORS, MAX_TTL_S
from tenants.config import ConfigError, load_yaml


class PiiPolicyForm(forms.Form):
    """The `pii:` section as a form. Custom patterns are lines of `name action pattern`; terms one per line."""

    source = forms.ChoiceField(widget=forms.RadioSelect, label="Policy")
    mode = forms.ChoiceField(
        choices=[("enforce", "Enforce"), ("log-only", "Log only (trial: count what would happen, change nothing)")],
        initial="enforce",
    )
    custom = forms.CharField(
        required=False,
        strip=False,  # line numbers in errors count the lines as typed
        label="Custom patterns",
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false", "placeholder": r"order_id redact ORD-\d{6}"}),
        help_text="One per line: a name, an action and a regular expression, separated by spaces.",
    )
    terms = forms.CharField(
        required=False,
        label="Terms",
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "Project Falcon"}),
        help_text="Words or phrases to catch, one per line.",
    )
    terms_action = forms.ChoiceField(label="Action for terms", initial="redact")
    scan_responses = forms.BooleanField(required=False, label="Also scan the answers")

    def __init__(self, *args: Any, for_key: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.for_key = for_key
        cast(forms.ChoiceField, self.fields["source"]).choices = (
            [("inherit", "The tenant's policy"), ("own", "Its own policy, below")]
            if for_key
            else [("none", "No PII policy: requests are sent as they are"), ("own", "This policy")]
        )
        self.fields["source"].initial = "inherit" if for_key else "none"
        actions = [(a, a) for a in ACTIONS]
        cast(forms.ChoiceField, self.fields["terms_action"]).choices = actions
        # One select per detector (the person detector only where Presidio is installed), after `mode`.
        detectors = [f"detector_{name}" for name in DETECTORS]
        for name in detectors:
            self.fields[name] = forms.ChoiceField(choices=[("", "off"), *actions], required=False, label=name[9:])
        self.order_fields(["source", "mode", *detectors])

    @property
    def detector_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in self.fields if name.startswith("detector_")]

    @classmethod
    def initial_from(cls, policy: dict | None, *, for_key: bool = False) -> dict:
        if policy is None:
            return {"source": "inherit" if for_key else "none"}
        terms = policy.get("terms") or {}
        return {
            "source": "own",
            "mode": policy.get("mode", "enforce"),
            **{f"detector_{name}": action for name, action in (policy.get("detectors") or {}).items()},
            "custom": "\n".join(f"{c['name']} {c['action']} {c['pattern']}" for c in policy.get("custom") or []),
            "terms": "\n".join(terms.get("words") or []),
            "terms_action": terms.get("action", "redact"),
            "scan_responses": bool(policy.get("scan_responses")),
        }

    def clean_custom(self) -> list[dict]:
        items, self._custom_lines = [], []
        for number, line in enumerate((self.cleaned_data.get("custom") or "").splitlines(), start=1):
            if not line.strip():
                continue
            parts = line.strip().split(None, 2)
            if len(parts) < 3:
                raise forms.ValidationError(
                    f"Line {number}: write a name, an action and a pattern, e.g. “order_id redact ORD-\\d{{6}}”."
                )
            items.append({"name": parts[0], "action": parts[1], "pattern": parts[2]})
            self._custom_lines.append(number)
        return items

    def clean_terms(self) -> list[str]:
        return [line.strip() for line in (self.cleaned_data.get("terms") or "").splitlines() if line.strip()]

    def policy(self) -> dict | None:
        """The policy to save (None: no policy, or inherit the tenant's), in the YAML section's shape."""
        data = self.cleaned_data
        if data["source"] != "own":
            return None
        policy: dict[str, Any] = {
            "mode": data["mode"],
            "detectors": {f.name[len("detector_") :]: data[f.name] for f in self.detector_fields if data[f.name]},
            "custom": data["custom"],
            "scan_responses": data["scan_responses"],
        }
        if data["terms"]:
            policy["terms"] = {"words": data["terms"], "action": data["terms_action"]}
        return policy

    def add_service_errors(self, messages: dict[str, list[str]]) -> None:
        """Errors keyed by the section's paths ("pii.custom[0].pattern") go on the field that holds them."""
        for path, errors in messages.items():
            rest = path.split(".", 1)[1] if "." in path else ""
            head = re.split(r"[.\[]", rest, maxsplit=1)[0]
            if head == "detectors" and f"detector_{rest.split('.')[-1]}" in self.fields:
                self.add_error(f"detector_{rest.split('.')[-1]}", errors)
            elif head == "custom":
                index = re.match(r"custom\[(\d+)\]", rest)
                lines = getattr(self, "_custom_lines", [])
                if index and int(index.group(1)) < len(lines):
                    line = lines[int(index.group(1))]
                    field = rest.rsplit(".", 1)[-1] if "." in rest else "entry"
                    errors = [f"Line {line} ({field}): {e}" for e in errors]
                self.add_error("custom", errors)
            elif head == "terms":
                self.add_error("terms_action" if rest.endswith("action") else "terms", errors)
            elif head in ("mode", "scan_responses"):
                self.add_error(head, errors)
            else:
                self.add_error(None, errors)


class CachePolicyForm(forms.Form):
    enabled = forms.BooleanField(required=False, label="Cache answers")
    ttl_s = forms.IntegerField(
        label="Keep answers for (seconds)",
        min_value=1,
        max_value=MAX_TTL_S,
        initial=3600,
        help_text=f"From 1 second to 30 days ({MAX_TTL_S}).",
    )
    models = forms.CharField(
        required=False,
        max_length=5000,
        help_text="Comma-separated public model names; leave empty to cache every model. Names not added yet are fine.",
    )

    @classmethod
    def initial_from(cls, policy: dict | None) -> dict:
        if policy is None:
            return {"enabled": False, "ttl_s": 3600, "models": ""}
        return {
            "enabled": policy.get("enabled", True),
            "ttl_s": policy.get("ttl_s", 3600),
            "models": ", ".join(policy.get("models") or []),
        }

    def policy(self) -> dict:
        data = self.cleaned_data
        policy: dict[str, Any] = {"enabled": data["enabled"], "ttl_s": data["ttl_s"]}
        models = name_list(data["models"])
        if models:
            policy["models"] = models
        return policy

    def add_service_errors(self, messages: dict[str, list[str]]) -> None:
        for path, errors in messages.items():
            field = path.split(".", 1)[1].split("[")[0] if "." in path else ""
            self.add_error(field if field in self.fields else None, errors)


class PolicyPreviewForm(forms.Form):
    text = forms.CharField(
        max_length=20000,
        label="Text to send",
        widget=forms.Textarea(attrs={"rows": 5, "placeholder": "Write to jane@example.com about ORD-123456"}),
        help_text="Paste a prompt: nothing is sent to any provider.",
    )
    answer = forms.CharField(
        required=False,
        max_length=20000,
        label="The model's answer (optional)",
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Placeholders in it are restored as the client would see them; empty: the sent text comes back.",
    )


# --- Guardrails ---------------------------------------------------------------------------------------

PREVIEW_MAX_BYTES = 64 * 1024


_SOURCE_LABELS = {
    "user": "A user turn",
    "tool": "A tool result (a tool's output or a retrieved document: where indirect injection hides)",
}


class _GrammarChoiceField(forms.ChoiceField):
    """A select whose value the guardrails grammar judges (normalize_guardrails), so a value the select
    does not offer is refused in the words YAML uses."""

    def validate(self, value: Any) -> None:
        forms.Field.validate(self, value)


def _number(text: str) -> int | float | str:
    """A number typed in a box, as YAML would read it; anything else as typed, for the grammar to refuse."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


class GuardrailForm(forms.Form):
    """One check of the `guardrails:` section. The form only reads the boxes: what is allowed is the
    grammar's (routing.policies.guardrails.normalize_guardrails), so the console and YAML refuse the same."""

    original = forms.CharField(required=False, widget=forms.HiddenInput)  # the name being edited; "" adds one
    name = forms.CharField(help_text="Letters, digits, '-' and '_'. Call logs and errors name the check by it.")
    check = _GrammarChoiceField(
        choices=[(c, c) for c in CHECKS],
        initial="prompt_injection",
        help_text="prompt_injection: instruction overrides, role hijacks, prompt extraction, in user turns and "
        "tool results. moderation: a judge model of yours (or a moderation endpoint) says whether a text falls "
        "in the categories. denied_topics, keywords: whole words and phrases. output_schema: the answer follows "
        "the JSON schema the request asked for (a failing answer is asked for once more). max_input_tokens, "
        "max_output_tokens: token limits.",
    )
    on = _GrammarChoiceField(
        required=False,
        label="On",
        choices=[
            ("", "its default"),
            ("input", "input (the request)"),
            ("output", "output (the answer)"),
            ("both", "both"),
        ],
        help_text="prompt_injection and max_input_tokens read the request, output_schema and max_output_tokens "
        "the answer; topics and keywords either or both.",
    )
    action = _GrammarChoiceField(
        choices=[("block", "block"), ("flag", "flag"), ("log-only", "log-only (trial)")],
        initial="block",
        help_text="block refuses the call; flag lets it through, marked in the call log. log-only is the way to "
        "trial a check on real traffic before enforcing it: the call log records what it would have done, and "
        "nothing changes.",
    )
    fail = _GrammarChoiceField(
        choices=[("closed", "closed"), ("open", "open")],
        initial="closed",
        help_text="When the check itself fails (an error, not a hit): closed refuses the call, open records it "
        "and lets the call through.",
    )
    threshold = forms.CharField(
        required=False,
        widget=forms.TextInput(attrs={"placeholder": "0.5", "inputmode": "decimal"}),
        help_text="prompt_injection: the score from which a text counts as an injection, more than 0 and at "
        "most 1 (empty: 0.5).",
    )
    words = forms.CharField(
        required=False,
        label="Topics or words",
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "legal advice"}),
        help_text="denied_topics and keywords: one per line, matched as whole words and phrases.",
    )
    max = forms.CharField(
        required=False,
        label="Max tokens",
        widget=forms.TextInput(attrs={"inputmode": "numeric"}),
        help_text="max_input_tokens and max_output_tokens: a whole number of tokens.",
    )
    timeout_s = forms.CharField(
        required=False,
        label="Timeout (seconds)",
        widget=forms.TextInput(attrs={"placeholder": "1", "inputmode": "decimal"}),
        help_text="More than 0 and at most 60 (empty: 1).",
    )
    model = forms.CharField(
        required=False,
        label="Moderation model",
        help_text="moderation: one of this tenant's models, called through the gateway (logged and billed, tagged "
        "guardrail): a chat model as the judge, or with the moderations API a moderation model.",
    )
    api = _GrammarChoiceField(
        required=False,
        label="Moderation API",
        choices=[("", "chat (a judge model)"), ("moderations", "moderations (an OpenAI-format endpoint)")],
    )
    categories = forms.CharField(
        required=False,
        help_text="moderation: comma-separated, from " + ", ".join(MODERATION_CATEGORIES) + ".",
    )
    embedding_model = forms.CharField(
        required=False,
        label="Embedding model",
        help_text="prompt_injection: also a classifier over this model's embeddings (one of this tenant's "
        "embedding models), for attacks worded as the rules have no words for. Empty: the rules alone.",
    )
    models = forms.CharField(required=False, label="Only for models", help_text="Comma-separated; empty: any.")
    keys = forms.CharField(required=False, label="Only for keys", help_text="Key names, comma-separated; empty: any.")
    tags = forms.CharField(required=False, label="Only for tags", help_text="Comma-separated; empty: any.")

    # Where the grammar's paths ("guardrails[2].applies_to.models") land on the form.
    FIELD_OF_PATH = {"topics": "words", "words": "words", "applies_to": "models"}

    def item(self) -> dict[str, Any]:
        """The check as a YAML item: only the boxes filled in (an empty one is a field not written)."""
        d = self.cleaned_data
        item: dict[str, Any] = {"name": d["name"], "check": d["check"], "action": d["action"], "fail": d["fail"]}
        if d["on"]:
            item["on"] = d["on"]
        for field in ("threshold", "max", "timeout_s"):
            if d[field].strip():
                item[field] = _number(d[field].strip())
        for field in ("model", "api", "embedding_model"):
            if d[field].strip():
                item[field] = d[field].strip()
        if name_list(d["categories"]):
            item["categories"] = name_list(d["categories"])
        words = [line.strip() for line in d["words"].splitlines() if line.strip()]
        if words:
            item["topics" if d["check"] == "denied_topics" else "words"] = words
        applies = {field: name_list(d[field]) for field in ("models", "keys", "tags") if name_list(d[field])}
        if applies:
            item["applies_to"] = applies
        return item

    @staticmethod
    def initial_from(item: dict[str, Any]) -> dict[str, Any]:
        """The boxes of an exported check (routing.policies.guardrails.export_guardrails)."""
        applies = item.get("applies_to") or {}
        return {
            "original": item["name"],
            "name": item["name"],
            "check": item["check"],
            "on": item.get("on", ""),
            "action": item.get("action", "block"),
            "fail": item.get("fail", "closed"),
            **{
                f: str(item[f])
                for f in ("threshold", "max", "timeout_s", "model", "api", "embedding_model")
                if f in item
            },
            "categories": ", ".join(item.get("categories") or []),
            "words": "\n".join(item.get("words") or item.get("topics") or []),
            **{f: ", ".join(applies.get(f) or []) for f in ("models", "keys", "tags")},
        }

    def add_grammar_error(self, path: str, message: str) -> None:
        """A refusal of normalize_guardrails about this check ("guardrails[0].threshold") on its box."""
        rest = path.split("].", 1)[1] if "]." in path else ""
        parts = rest.split(".")
        head = parts[0]
        if head == "applies_to" and len(parts) > 1 and parts[1] in self.fields:
            head = parts[1]
        field = self.FIELD_OF_PATH.get(head, head)
        self.add_error(field if field in self.fields and field != "original" else None, message)


class GuardrailPreviewForm(forms.Form):
    text = forms.CharField(
        strip=False,  # checked as pasted
        label="Text",
        widget=forms.Textarea(attrs={"rows": 5, "placeholder": "Ignore all previous instructions and …"}),
        help_text="Nothing is stored or sent to any provider. At most 64 KB.",
    )
    source = forms.ChoiceField(
        label="It arrives as",
        widget=forms.RadioSelect,
        initial="user",
        choices=[(s, _SOURCE_LABELS[s]) for s in PREVIEW_SOURCES],
    )
    with_editor = forms.BooleanField(required=False, label="Also try the check in the editor, unsaved")

    def clean_text(self) -> str:
        text = self.cleaned_data["text"]
        size = len(text.encode())
        if size > PREVIEW_MAX_BYTES:
            raise forms.ValidationError(
                f"The text is {size / 1024:.0f} KB; the preview reads at most {PREVIEW_MAX_BYTES // 1024} KB. "
                "Paste the part to check."
            )
        return text


class KeyGuardrailsForm(forms.Form):
    """A key's own guardrails: the tenant's, or a list of checks written as under `guardrails:` in the tenant
    YAML (JSON is YAML too). The grammar is the service's (normalize_guardrails); the form only reads the text,
    and puts the grammar's refusals on the box with their line."""

    source = forms.ChoiceField(
        widget=forms.RadioSelect,
        label="Checks",
        choices=[("inherit", "The tenant's checks"), ("own", "Its own checks, below")],
        initial="inherit",
    )
    checks = forms.CharField(
        required=False,
        strip=False,  # line numbers in errors count the lines as typed
        label="Its own checks",
        widget=forms.Textarea(
            attrs={
                "rows": 8,
                "spellcheck": "false",
                "placeholder": "- {name: no-falcon, check: keywords, words: [falcon]}",
            }
        ),
        help_text="A list of checks in YAML or JSON, as under <code>guardrails:</code> in the tenant YAML; they "
        "replace the tenant's for this key's calls. Empty: the key runs no checks.",
    )

    @classmethod
    def initial_from(cls, own: list[dict[str, Any]] | None, tenant: list[dict[str, Any]] | None) -> dict[str, Any]:
        """The key's own checks; while it inherits, the tenant's fill the box as a start for its own."""
        shown = export_guardrails(own if own is not None else tenant)
        return {
            "source": "inherit" if own is None else "own",
            "checks": yaml.safe_dump(shown, sort_keys=False, allow_unicode=True) if shown else "",
        }

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        data["guardrails"] = None
        if data.get("source") != "own":
            return data
        text = data.get("checks") or ""
        if not text.strip():
            data["guardrails"] = []
            return data
        try:
            value, located = load_yaml(text)
        except ConfigError as exc:
            self.add_error("checks", str(exc))
            return data
        self._located = located
        data["guardrails"] = value
        return data

    def guardrails(self) -> list[Any] | None:
        """What to store: None inherits the tenant's, [] runs none, else the checks as written."""
        return cast("list[Any] | None", self.cleaned_data["guardrails"])

    def add_service_errors(self, messages: dict[str, list[str]]) -> None:
        """The grammar's refusals ("guardrails[0].check") on the box, with the line they are on."""
        located = getattr(self, "_located", None)
        for path, errors in messages.items():
            line = located.line(path.removeprefix("guardrails")) if located is not None else None
            where = f"line {line}, {path}" if line else path
            self.add_error("checks", [f"{where}: {e}" for e in errors])
