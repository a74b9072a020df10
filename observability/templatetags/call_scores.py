"""The call detail page's quality scores (feedback and evaluators), read for the one call shown."""

from __future__ import annotations

from typing import Any

from django import template

from observability.scores import scores_of

register = template.Library()


@register.simple_tag
def call_scores(log: Any) -> list[dict[str, Any]]:
    """The scores of this call (one query), by name then source."""
    if not getattr(log, "call_id", ""):
        return []
    return scores_of(log.tenant_id, [log.call_id]).get(log.call_id, [])
