from __future__ import annotations

from typing import Any

from tenants.models import AuditLog, Tenant


class Actor:
    """Who is acting: a console user, an API token, or the command line."""

    def __init__(self, *, user: Any = None, label: str = "", ip: str | None = None) -> None:
        self.user = user if (user is not None and getattr(user, "is_authenticated", False)) else None
        self.label = label or (getattr(user, "email", "") if self.user else "") or "system"
        self.ip = ip

    @classmethod
    def cli(cls) -> Actor:
        return cls(label="cli")


def audit(
    tenant: Tenant | None,
    *,
    actor: Actor,
    action: str,
    target: Any = None,
    target_type: str = "",
    target_label: str = "",
    changes: dict | None = None,
) -> AuditLog:
    return AuditLog.objects.create(
        tenant=tenant,
        actor=actor.user,
        actor_label=actor.label[:200],
        action=action,
        target_type=target_type or (type(target).__name__ if target is not None else ""),
        target_id=str(getattr(target, "pk", "") or ""),
        target_label=(target_label or (str(target) if target is not None else ""))[:200],
        changes=changes or {},
        ip_address=actor.ip,
    )
