from __future__ import annotations

import hashlib

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

slug_validator = RegexValidator(
    r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$",
    "Use lowercase letters, digits and dashes (1-63 characters, no leading or trailing dash).",
)

KEY_PREFIX = "sk-gw-"


def hash_secret(secret: str) -> str:
    # Keys are 256-bit random strings, so a fast hash is enough: no dictionary attack is possible.
    return hashlib.sha256(secret.encode()).hexdigest()


class Tenant(models.Model):
    slug = models.SlugField(max_length=63, unique=True, validators=[slug_validator])
    name = models.CharField(max_length=200)
    created_at = models.DateTimeField(default=timezone.now)
    # Data policies, as the normalized `pii:` and `cache:` sections of the tenant YAML
    # (routing.policies.spec validates them); null when the tenant has none.
    pii_policy = models.JSONField(null=True, blank=True)
    cache_policy = models.JSONField(null=True, blank=True)
    # Guardrails, as the normalized `guardrails:` section (routing.policies.guardrails); null: none.
    guardrails = models.JSONField(null=True, blank=True)
    # Observability: request and response bodies are stored (after PII redaction, size-capped) only
    # when the tenant turns it on; call logs older than the retention are purged.
    log_bodies = models.BooleanField(default=False)
    log_retention_days = models.PositiveIntegerField(default=30)

    def __str__(self) -> str:
        return self.slug


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    MEMBER = "member", "Member"
    VIEWER = "viewer", "Viewer"


class Membership(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "tenant"], name="uniq_membership")]

    def __str__(self) -> str:
        return f"{self.user} in {self.tenant} as {self.role}"


class VirtualKey(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="virtual_keys")
    name = models.CharField(max_length=200)
    key_hash = models.CharField(max_length=64, unique=True)
    # First characters of the secret, enough to recognise a key in a list without revealing it.
    prefix = models.CharField(max_length=16)
    allowed_models = models.JSONField(default=list, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked = models.BooleanField(default=False)
    revoked_at = models.DateTimeField(null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    # The key's own `pii:` policy, replacing the tenant's for calls made with this key; null inherits.
    pii_policy = models.JSONField(null=True, blank=True)
    # The key's own `guardrails:` checks, replacing the tenant's for its calls; null inherits, [] runs none.
    guardrails = models.JSONField(null=True, blank=True)
    # The MCP servers and tools this key may use ({"github": ["search_issues"], "docs": "*"}); null: none.
    mcp = models.JSONField(null=True, blank=True)
    # An admin key may act on every call of its tenant (score calls made with other keys), not only its own.
    admin = models.BooleanField(default=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["tenant", "name"])]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def is_active(self) -> bool:
        return not self.revoked and not self.is_expired


class ConfigChange(models.Model):
    """Append-only change log that gateway processes poll when no Redis is configured.

    With Redis, the same events go through pub/sub; the table still records them so a process that
    (re)connects can tell how far behind it is.
    """

    kind = models.CharField(max_length=20)  # "key" | "tenant" | "all"
    ref = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.kind}:{self.ref}"


class AuditLog(models.Model):
    """Who changed what, when and from where. Never holds secrets: services pass only safe fields."""

    tenant = models.ForeignKey(Tenant, null=True, on_delete=models.CASCADE, related_name="audit_logs")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # "cli", "api-token:NAME" or the user's email: readable even after the user is deleted.
    actor_label = models.CharField(max_length=200, blank=True)
    action = models.CharField(max_length=60)
    target_type = models.CharField(max_length=60, blank=True)
    target_id = models.CharField(max_length=100, blank=True)
    target_label = models.CharField(max_length=200, blank=True)
    changes = models.JSONField(default=dict, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["tenant", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.actor_label} {self.action} {self.target_type}:{self.target_label}"


ROLE_RANK = {Role.VIEWER: 0, Role.MEMBER: 1, Role.ADMIN: 2, Role.OWNER: 3}

TOKEN_PREFIX = "gwm-"


def role_at_least(role: str, minimum: str) -> bool:
    return ROLE_RANK.get(role, -1) >= ROLE_RANK[minimum]


class ManagementToken(models.Model):
    """A bearer token for the management REST API. It acts in one tenant with one role."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="management_tokens")
    name = models.CharField(max_length=200)
    token_hash = models.CharField(max_length=64, unique=True)
    prefix = models.CharField(max_length=16)
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.VIEWER)
    # Keys created through a member-role token belong to this user ("own keys"); None when minted
    # from the command line.
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["tenant", "name"])]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class Invitation(models.Model):
    """An emailed link that makes whoever opens it, signed in with that email, a member of the tenant."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField()
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    token_hash = models.CharField(max_length=64, unique=True)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "email"], condition=models.Q(accepted_at=None), name="uniq_pending_invitation"
            )
        ]

    def __str__(self) -> str:
        return f"{self.email} to {self.tenant} as {self.role}"

    @property
    def is_pending(self) -> bool:
        return self.accepted_at is None and self.expires_at > timezone.now()
