"""The quickstart demo: a tenant, a key and models served by the built-in mock provider.

The demo key and password are derived from SECRET_KEY (under `make run`, a random key generated on
first run and kept in `.gateway-secret`), so `make run` prints the same working key on every start
without storing the secret in the database, and no two installs share it.

Seeding runs on every `make run`. It only creates what is missing: providers, models and keys the user
added or changed in the demo tenant are never deleted or overwritten, and a demo key the user revoked
stays revoked.
"""

from __future__ import annotations

import hashlib
import hmac

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from gateway_project.common.env import LEGACY_DEV_SECRET
from routing.models import ModelDeployment, ProviderCredential, ProviderKind
from routing.services import model_deployments_set, provider_upsert
from tenants.audit import Actor, audit
from tenants.changes import record_change
from tenants.models import KEY_PREFIX, Membership, Role, Tenant, VirtualKey, hash_secret
from tenants.services import tenant_upsert, virtual_key_revoke

DEMO_SLUG = "demo"
DEMO_NAME = "Demo tenant"
DEMO_EMAIL = "demo@example.com"
DEMO_PROVIDER = "mock"
# public model name -> the mock provider's upstream model
DEMO_MODELS = {"gpt-4o-mini": "mock-chat", "text-embedding-3-small": "mock-embed"}


def _derive(label: str, length: int, secret_key: str | None = None) -> str:
    key = (secret_key or settings.SECRET_KEY).encode()
    return hmac.new(key, f"demo:{label}".encode(), hashlib.sha256).hexdigest()[:length]


def demo_key_secret(secret_key: str | None = None) -> str:
    return KEY_PREFIX + "demo" + _derive("key", 40, secret_key)


def demo_password(secret_key: str | None = None) -> str:
    return "demo-" + _derive("password", 12, secret_key)


@transaction.atomic
def seed_demo() -> list[str]:
    """Create whatever of the demo is missing; returns one line per thing created or retired."""
    actor = Actor(label="seed-demo")
    changes: list[str] = []
    tenant = Tenant.objects.filter(slug=DEMO_SLUG).first()
    if tenant is None:
        tenant, _ = tenant_upsert(slug=DEMO_SLUG, name=DEMO_NAME, actor=actor)
        changes.append(f"+ tenant {DEMO_SLUG}")

    provider = ProviderCredential.objects.filter(tenant=tenant, name=DEMO_PROVIDER).first()
    if provider is None:
        provider, _ = provider_upsert(tenant, name=DEMO_PROVIDER, kind=ProviderKind.MOCK, actor=actor)
        changes.append(f"+ provider {DEMO_PROVIDER}")
    # A provider the user turned into something else is theirs: no demo model is pointed at it.
    if provider.kind == ProviderKind.MOCK:
        for name, upstream in DEMO_MODELS.items():
            if not ModelDeployment.objects.filter(tenant=tenant, model_name=name).exists():
                model_deployments_set(tenant, model_name=name, deployments=[(provider, upstream)], actor=actor)
                changes.append(f"+ model {name}")

    secret = demo_key_secret()
    key, created = VirtualKey.objects.get_or_create(
        key_hash=hash_secret(secret),
        defaults={"tenant": tenant, "name": "demo", "prefix": secret[: len(KEY_PREFIX) + 4]},
    )
    if created:
        audit(tenant, actor=actor, action="key.create", target=key, changes={"name": key.name})
        record_change("key", key.key_hash)
        changes.append("+ key demo")
        changes += _retire_legacy_demo(tenant, actor=actor)

    User = get_user_model()
    if not User.objects.filter(email=DEMO_EMAIL).exists():
        from allauth.account.models import EmailAddress

        user = User.objects.create_user(username="demo", email=DEMO_EMAIL, password=demo_password())
        EmailAddress.objects.create(user=user, email=DEMO_EMAIL, verified=True, primary=True)
        Membership.objects.get_or_create(user=user, tenant=tenant, defaults={"role": Role.OWNER})
        changes.append(f"+ user {DEMO_EMAIL}")
    return changes


def _retire_legacy_demo(tenant: Tenant, *, actor: Actor) -> list[str]:
    """Installs seeded before per-install keys hold a demo key and password anyone can compute.
    Runs once, when this install's own demo key is first created."""
    if settings.SECRET_KEY == LEGACY_DEV_SECRET:
        return []
    changes = []
    legacy = VirtualKey.objects.filter(key_hash=hash_secret(demo_key_secret(LEGACY_DEV_SECRET)), revoked=False)
    for key in legacy:
        virtual_key_revoke(key.tenant, key=key, actor=actor)
        changes.append("- key demo (derived from the old shared development secret)")
    user = get_user_model().objects.filter(email=DEMO_EMAIL).first()
    if user is not None and user.check_password(demo_password(LEGACY_DEV_SECRET)):
        user.set_password(demo_password())
        user.save(update_fields=["password"])
        changes.append(f"~ user {DEMO_EMAIL} password (was derived from the old shared development secret)")
    return changes
