from __future__ import annotations

from django.db.models import QuerySet

from tenants.models import Membership


def memberships_for_user(user) -> QuerySet[Membership]:
    return Membership.objects.filter(user=user).select_related("tenant").order_by("tenant__name")
