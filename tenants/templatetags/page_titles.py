"""The console's <title>: a page names itself in `{% block page_title %}`, or its section does it."""

from __future__ import annotations

from django import template

register = template.Library()

# The side navigation's labels (templates/base.html), by the `section` a view puts in the context.
SECTION_TITLES = {
    "overview": "Overview",
    "keys": "Virtual keys",
    "providers": "Providers",
    "models": "Models",
    "rules": "Routing rules",
    "policies": "Data policies",
    "budgets": "Budgets",
    "limits": "Rate limits",
    "spend": "Spend",
    "billing": "Billing",
    "dashboard": "Dashboard",
    "live": "Live calls",
    "logs": "Log explorer",
    "playground": "Playground",
    "evaluators": "Evaluators",
    "members": "Members",
    "tokens": "API tokens",
    "audit": "Audit log",
    "settings": "Settings",
}


@register.filter
def section_title(section: str | None) -> str:
    return SECTION_TITLES.get(section or "", "Console")
