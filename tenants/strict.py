"""Serializers that refuse what they do not know: a misspelt field (`"bogus": 1`, `?limt=5`) is a 400
naming it, never silently dropped (the client would believe it was applied)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers


class StrictSerializer(serializers.Serializer):
    """A serializer whose input may hold only its own fields (read-only ones included: echoing an
    object back is fine)."""

    def to_internal_value(self, data: Any) -> Any:
        if hasattr(data, "keys"):
            unknown = sorted(set(data.keys()) - set(self.fields))
            if unknown:
                known = ", ".join(sorted(name for name, f in self.fields.items() if not f.read_only))
                takes = f"This endpoint takes: {known}." if known else "This endpoint takes none."
                raise serializers.ValidationError({name: [f"Unknown field. {takes}"] for name in unknown})
        return super().to_internal_value(data)


class NoInput(StrictSerializer):
    """What an endpoint that takes nothing but its path validates its query (GET) or body (other methods)
    with: any field sent is a 400 naming it."""


def refuse_any(data: Any) -> None:
    """Refuse every key of `data` (a JSON object or a query string); anything else is left to the view."""
    if hasattr(data, "keys") and data.keys():
        NoInput(data=data).is_valid(raise_exception=True)
