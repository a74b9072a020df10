"""Reads for the console and the API. Everything is scoped to a tenant passed in by an access helper."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, time

from django.contrib.auth import get_user_model
from django.db.models import CharField, Q, QuerySet, Value
from django.db.models.functions import Cast, Concat
from django.utils import timezone

from tenants.models import AuditLog, Invitation, ManagementToken, Membership, Tenant, VirtualKey, hash_secret

# What the tenant pages show of other apps' data, registered from those apps' AppConfig.ready() so that
# tenants imports none of them: counts for the overview page (routing: providers and models; the
# project: calls of the last day), and the tenant's model names, which the key form offers (routing).
OVERVIEW_COUNTS: dict[str, Callable[[Tenant], dict[str, int]]] = {}
MODEL_NAMES: dict[str, Callable[[Tenant], list[str]]] = {}


def memberships_for_user(user) -> QuerySet[Membership]:
    return Membership.objects.filter(user=user).select_related("tenant").order_by("tenant__name")


def members_for(tenant: Tenant) -> QuerySet[Membership]:
    return Membership.objects.filter(tenant=tenant).select_related("user").order_by("user__email")


def pending_invitations_for(tenant: Tenant) -> QuerySet[Invitation]:
    return Invitation.objects.filter(tenant=tenant, accepted_at=None).order_by("-created_at")


def invitation_by_token(token: str) -> Invitation | None:
    return Invitation.objects.filter(token_hash=hash_secret(token)).select_related("tenant", "invited_by").first()


def management_tokens_for(tenant: Tenant) -> QuerySet[ManagementToken]:
    return (
        ManagementToken.objects.filter(tenant=tenant).select_related("created_by").order_by("revoked_at", "-created_at")
    )


def management_token_by_secret(secret: str) -> ManagementToken | None:
    return (
        ManagementToken.objects.filter(token_hash=hash_secret(secret), revoked_at=None)
        .select_related("tenant", "created_by")
        .first()
    )


LOGIN_ACTION = "user.login"


def audit_entries_for(tenant: Tenant) -> QuerySet[AuditLog]:
    """The tenant's own log, plus console logins of its current members (recorded once per login)."""
    member_ids = Membership.objects.filter(tenant=tenant).values("user_id")
    return AuditLog.objects.filter(Q(tenant=tenant) | Q(tenant=None, action=LOGIN_ACTION, actor_id__in=member_ids))


def audit_entries_filtered(
    tenant: Tenant,
    *,
    actor: str = "",
    action: str = "",
    target: str = "",
    since: date | None = None,
    until: date | None = None,
    sign_ins: bool = False,
) -> QuerySet[AuditLog]:
    """The console's view of the log. Sign-ins outnumber changes, so they stay out unless asked for."""
    entries = audit_entries_for(tenant)
    if actor:
        entries = entries.filter(actor_label__icontains=actor)
    if action:
        # "key" means the family (key.create, key.revoke...), "key.create" the one action.
        entries = entries.filter(action=action) if "." in action else entries.filter(action__startswith=f"{action}.")
    if not sign_ins and action != LOGIN_ACTION:
        entries = entries.exclude(action=LOGIN_ACTION)
    if target:
        entries = entries.filter(_audit_target_matches(tenant, target))
    if since:
        entries = entries.filter(created_at__gte=datetime.combine(since, time.min, tzinfo=UTC))
    if until:
        # time.max rather than the next midnight: date.max + 1 day would overflow.
        entries = entries.filter(created_at__lte=datetime.combine(until, time.max, tzinfo=UTC))
    return entries


def audit_actions_for(tenant: Tenant) -> list[str]:
    """The actions the tenant's log holds, for the filter's suggestions."""
    return list(audit_entries_for(tenant).order_by("action").values_list("action", flat=True).distinct())


# Audit rows name their target by type and id; these give the objects' current names, scoped to the
# tenant so that a row can never reveal another tenant's object: target type -> (objects, name field).
# Other apps register theirs from AppConfig.ready(), as with OVERVIEW_COUNTS.
AUDIT_TARGETS: dict[str, Callable[[Tenant], tuple[QuerySet, str]]] = {
    "VirtualKey": lambda tenant: (VirtualKey.objects.filter(tenant=tenant), "name"),
    "ManagementToken": lambda tenant: (ManagementToken.objects.filter(tenant=tenant), "name"),
    "Invitation": lambda tenant: (Invitation.objects.filter(tenant=tenant), "email"),
    "Membership": lambda tenant: (Membership.objects.filter(tenant=tenant), "user__email"),
    "User": lambda tenant: (get_user_model().objects.filter(memberships__tenant=tenant), "email"),
}
# Labels written as "<kind>:<id>" (a rate limit's scope "key:1"): the kind's target type.
_LABEL_KINDS = {"key": "VirtualKey", "token": "ManagementToken", "user": "User"}
_ID_LABEL = re.compile(r"^([a-z_]+):(\d{1,18})$")


def _target_ref(entry: AuditLog) -> tuple[str, str, str] | None:
    """(target type, id, prefix) of a row whose stored label is missing or only an id, else None."""
    label = entry.target_label.strip()
    if entry.target_type in AUDIT_TARGETS and entry.target_id.isdigit() and label in ("", entry.target_id):
        return entry.target_type, entry.target_id, ""
    match = _ID_LABEL.match(label)
    if match and match.group(1) in _LABEL_KINDS:
        return _LABEL_KINDS[match.group(1)], match.group(2), match.group(1)
    return None


def audit_rows(tenant: Tenant, entries: Iterable[AuditLog]) -> list[tuple[AuditLog, str]]:
    """Each entry with its target's name for people: the stored label, or for a label that is missing or
    only an id ("key:1"), the object's current name; one query per target type on the page."""
    entries = list(entries)
    refs = {entry.id: _target_ref(entry) for entry in entries}
    wanted: dict[str, set[int]] = defaultdict(set)
    for ref in refs.values():
        if ref:
            wanted[ref[0]].add(int(ref[1]))
    names: dict[str, dict[str, str]] = {}
    for target_type, ids in wanted.items():
        objects, field = AUDIT_TARGETS[target_type](tenant)
        names[target_type] = {str(pk): name for pk, name in objects.filter(pk__in=ids).values_list("pk", field)}
    rows = []
    for entry in entries:
        ref = refs[entry.id]
        name = names[ref[0]].get(ref[1]) if ref else None
        if name:
            rows.append((entry, f"{ref[2]} {name}" if ref[2] else name))
        else:
            rows.append((entry, entry.target_label))
    return rows


def _audit_target_matches(tenant: Tenant, text: str) -> Q:
    """Rows whose stored label or type matches, or whose target (by id) currently has a matching name."""
    condition = Q(target_label__icontains=text) | Q(target_type__iexact=text)
    for target_type, targets in AUDIT_TARGETS.items():
        objects, field = targets(tenant)
        named = objects.filter(**{f"{field}__icontains": text})
        condition |= Q(target_type=target_type, target_id__in=named.values(ref=Cast("pk", CharField())))
        for kind in (kind for kind, kind_type in _LABEL_KINDS.items() if kind_type == target_type):
            labels = named.values(label=Concat(Value(f"{kind}:"), Cast("pk", CharField())))
            condition |= Q(target_label__in=labels)
    return condition


def tenant_overview(tenant: Tenant) -> dict:
    now = timezone.now()
    keys = VirtualKey.objects.filter(tenant=tenant)
    stats = {
        "active_keys": keys.filter(revoked=False).filter(Q(expires_at=None) | Q(expires_at__gt=now)).count(),
        "members": Membership.objects.filter(tenant=tenant).count(),
    }
    for counts in OVERVIEW_COUNTS.values():
        stats.update(counts(tenant))
    return stats


def model_names_for(tenant: Tenant) -> list[str]:
    return [name for names in MODEL_NAMES.values() for name in names(tenant)]
