"""The quickstart demo: a tenant, a key and models served by the built-in mock provider.

The demo key and password are derived from SECRET_KEY, so `make run` prints the same working key every
time without storing the secret anywhere.
"""

from __future__ import annotations

import hashlib
import hmac

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from tenants.audit import Actor
from tenants.config import apply_config
from tenants.models import KEY_PREFIX, Membership, Role, VirtualKey, hash_secret

DEMO_EMAIL = "demo@example.com"
DEMO_YAML = """\
tenant: demo
name: Demo tenant
providers:
  - name: mock
    kind: mock
models:
  - name: gpt-4o-mini
    deployments:
      - provider: mock
        model: mock-chat
  - name: text-embedding-3-small
    deployments:
      - provider: mock
        model: mock-embed
"""


def _derive(label: str, length: int) -> str:
    digest = hmac.new(settings.SECRET_KEY.encode(), f"demo:{label}".encode(), hashlib.sha256).hexdigest()
    return digest[:length]


def demo_key_secret() -> str:
    return KEY_PREFIX + "demo" + _derive("key", 40)


def demo_password() -> str:
    return "demo-" + _derive("password", 12)


@transaction.atomic
def seed_demo() -> list[str]:
    tenant, changes = apply_config(DEMO_YAML, actor=Actor(label="seed-demo"))
    secret = demo_key_secret()
    key, created = VirtualKey.objects.get_or_create(
        key_hash=hash_secret(secret),
        defaults={"tenant": tenant, "name": "demo", "prefix": secret[: len(KEY_PREFIX) + 4]},
    )
    if created:
        changes.append("+ key demo")
    elif key.revoked:
        # The demo should always work out of the box.
        key.revoked = False
        key.revoked_at = None
        key.save(update_fields=["revoked", "revoked_at"])
        changes.append("~ key demo un-revoked")
    User = get_user_model()
    user = User.objects.filter(email=DEMO_EMAIL).first()
    if user is None:
        user = User.objects.create_user(username="demo", email=DEMO_EMAIL, password=demo_password())
        changes.append(f"+ user {DEMO_EMAIL}")
    from allauth.account.models import EmailAddress

    EmailAddress.objects.update_or_create(user=user, email=DEMO_EMAIL, defaults={"verified": True, "primary": True})
    Membership.objects.get_or_create(user=user, tenant=tenant, defaults={"role": Role.OWNER})
    return changes
