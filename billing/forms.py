"""Console forms for money. They check the shape of the input; the rules live in billing.services."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from billing.models import Budget, BudgetMode, BudgetPeriod
from billing.services import DEFAULT_ALERTS, MAX_ALERT_PERCENT, MAX_LIMIT


class BudgetForm(forms.Form):
    scope = forms.CharField(
        max_length=220,
        initial="tenant",
        help_text="<code>tenant</code>, <code>key:NAME</code>, <code>user:ID</code> or <code>tag:TAG</code>.",
    )
    limit_usd = forms.DecimalField(
        label="Limit (USD)",
        min_value=Decimal(0),
        max_digits=18,
        decimal_places=6,
        widget=forms.NumberInput(attrs={"step": "any"}),
    )
    period = forms.ChoiceField(choices=BudgetPeriod.choices, initial=BudgetPeriod.MONTH)
    mode = forms.ChoiceField(choices=BudgetMode.choices, initial=BudgetMode.HARD)
    alert_at = forms.CharField(
        label="Alert at (%)",
        required=False,
        initial=", ".join(str(a) for a in DEFAULT_ALERTS),
        help_text="Comma-separated percentages; an email goes out once per threshold and period. Empty: 50, 80, 100.",
    )

    def __init__(self, *args: Any, editing: Budget | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if editing is not None:
            # Scope and period identify a budget (one per scope and period): changing them is a new budget.
            for name in ("scope", "period"):
                self.fields[name].disabled = True
                self.fields[name].help_text = ""

    def clean_alert_at(self) -> list[int] | None:
        raw = (self.cleaned_data.get("alert_at") or "").replace("%", "").replace(",", " ")
        if not raw.strip():
            return None  # budget_upsert then uses the defaults
        try:
            alerts = [int(part) for part in raw.split()]
        except ValueError:
            raise ValidationError("Use whole percentages separated by commas, like 50, 80, 100.") from None
        if any(a < 1 or a > MAX_ALERT_PERCENT for a in alerts):
            raise ValidationError(f"Each percentage must be between 1 and {MAX_ALERT_PERCENT}.")
        return alerts

    @classmethod
    def initial_for(cls, budget: Budget) -> dict:
        return {
            "scope": budget.scope,
            "limit_usd": budget.limit_usd.normalize(),
            "period": budget.period,
            "mode": budget.mode,
            "alert_at": ", ".join(str(a) for a in budget.alert_at),
        }


class LimitForm(forms.Form):
    """RPM/TPM (and, for keys, parallel requests). Empty means unlimited; all empty removes the limit."""

    rpm = forms.IntegerField(label="Requests / min", required=False, min_value=1, max_value=MAX_LIMIT)
    tpm = forms.IntegerField(label="Tokens / min", required=False, min_value=1, max_value=MAX_LIMIT)
    max_parallel = forms.IntegerField(label="Parallel requests", required=False, min_value=1, max_value=MAX_LIMIT)

    def __init__(self, *args: Any, parallel: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not parallel:
            # Only keys have a parallel-requests limit (billing.models.RateLimit).
            del self.fields["max_parallel"]


class BillingSettingsForm(forms.Form):
    timezone = forms.CharField(
        label="Time zone",
        max_length=64,
        help_text="IANA name such as <code>Europe/Berlin</code>. Budget periods and spend days start at midnight here.",
    )


class SpendRangeForm(forms.Form):
    """The Spend page's date range: whole days in the tenant's time zone."""

    PRESETS = [("month", "This month"), ("7d", "Last 7 days"), ("30d", "Last 30 days"), ("custom", "Custom")]

    range = forms.ChoiceField(choices=PRESETS, required=False)
    since = forms.DateField(required=False, label="From", widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, label="To (inclusive)", widget=forms.DateInput(attrs={"type": "date"}))

    def clean(self) -> dict:
        data = super().clean()
        choice = data.get("range") or ("custom" if data.get("since") or data.get("until") else "month")
        data["range"] = choice
        since, until = data.get("since"), data.get("until")
        if choice == "custom":
            if since is None:
                self.add_error("since", "A custom range needs a first day.")
            elif until is not None and until < since:
                self.add_error("until", "The last day must not be before the first.")
            elif until is not None and (until - since).days > 3660:
                self.add_error("since", "Ranges are limited to ten years.")
        return data
