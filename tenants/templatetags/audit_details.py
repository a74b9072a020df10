"""Audit entries for people: "role: member → admin" lines instead of raw Python lists."""

from __future__ import annotations

from typing import Any

from django import template

register = template.Library()

ARROW = "→"
# Services record a change as [old, new]; creations record plain values (some are lists: a key's models).
_CREATIONS = (".create", ".add")


def _text(value: Any) -> str:
    if value is None or value == "" or value == "None":
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(_text(v) for v in value) if value else "none"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_text(v)}" for k, v in value.items()) if value else "none"
    return str(value)


def _is_pair(action: str, value: Any) -> bool:
    if not isinstance(value, list) or len(value) != 2:
        return False
    if not action.endswith(_CREATIONS):
        return True
    # A creation that still recorded [default, value] (budgets do): only the second half is news.
    return value[0] in (None, "", "None") or isinstance(value[0], list)


def audit_lines_for(action: str, changes: dict | None) -> list[tuple[str, str]]:
    """(field, text) pairs, one per changed field, in the order the service recorded them."""
    if not isinstance(changes, dict):
        return [("details", _text(changes))] if changes else []
    lines = []
    changes = dict(changes)
    if "before" in changes and "after" in changes:
        # A model's deployments: the whole list before and after.
        before, after = changes.pop("before"), changes.pop("after")
        lines.append(("deployments", f"{_text(before)} {ARROW} {_text(after)}"))
    for field, value in changes.items():
        label = str(field).replace("_", " ")
        if _is_pair(action, value):
            old, new = value
            if action.endswith(_CREATIONS) and old in (None, "", "None"):
                lines.append((label, _text(new)))
            else:
                lines.append((label, f"{_text(old)} {ARROW} {_text(new)}"))
        else:
            lines.append((label, _text(value)))
    return lines


@register.filter
def audit_lines(entry: Any) -> list[tuple[str, str]]:
    """`{% for field, text in entry|audit_lines %}` for an AuditLog row."""
    return audit_lines_for(getattr(entry, "action", ""), getattr(entry, "changes", None))
