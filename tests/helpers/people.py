"""The console's named people in two tenants (the `world` fixture in tests/conftest.py builds them).

acme: Alice (owner), Dave (admin), Erin (member), Charlie (viewer).
globex: Bob (owner). Bob must never see or touch anything of acme's, and the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass

from allauth.account.models import EmailAddress
from django.contrib.auth import get_user_model

from routing.models import ProviderKind
from routing.services import model_deployments_set, provider_upsert
from tenants.audit import Actor
from tenants.models import Membership, Role, Tenant
from tenants.services import invitation_create, management_token_create, virtual_key_create

PASSWORD = "correct horse battery staple"


def make_user(email: str):
    user = get_user_model().objects.create_user(username=email.split("@")[0], email=email, password=PASSWORD)
    EmailAddress.objects.create(user=user, email=email, verified=True, primary=True)
    return user


@dataclass
class World:
    acme: Tenant
    globex: Tenant
    alice: object
    dave: object
    erin: object
    charlie: object
    bob: object
    objects: dict  # name -> object in acme ("key", "erin_key", "provider", ...) and globex ("g_key", ...)

    def user(self, name: str):
        return getattr(self, name)


def _populate(tenant: Tenant, owner, prefix: str) -> dict:
    actor = Actor(user=owner)
    provider, _ = provider_upsert(tenant, name="mock", kind=ProviderKind.MOCK, actor=actor)
    model_deployments_set(tenant, model_name="gpt-4o-mini", deployments=[(provider, "mock-chat")], actor=actor)
    key, secret = virtual_key_create(tenant, name=f"{prefix}-service", actor=actor)
    invitation, _ = invitation_create(tenant, email=f"newcomer@{prefix}.example", role=Role.MEMBER, actor=actor)
    token, token_secret = management_token_create(tenant, name=f"{prefix}-ci", role=Role.ADMIN, actor=actor)
    return {
        "provider": provider,
        "model": "gpt-4o-mini",
        "key": key,
        "key_secret": secret,
        "invitation": invitation,
        "token": token,
        "token_secret": token_secret,
    }


def build_world() -> World:
    """Alice's acme with one person per role, and Bob's globex, each with keys, providers and tokens."""
    acme = Tenant.objects.create(slug="acme", name="Acme Corp")
    globex = Tenant.objects.create(slug="globex", name="Globex")
    alice, dave, erin, charlie = (make_user(f"{n}@acme.example") for n in ("alice", "dave", "erin", "charlie"))
    bob = make_user("bob@globex.example")
    for user, role in ((alice, Role.OWNER), (dave, Role.ADMIN), (erin, Role.MEMBER), (charlie, Role.VIEWER)):
        Membership.objects.create(tenant=acme, user=user, role=role)
    Membership.objects.create(tenant=globex, user=bob, role=Role.OWNER)
    objects = _populate(acme, alice, "acme")
    # A model only acme has, so a request for it from globex can only succeed by leaking across tenants.
    model_deployments_set(
        acme, model_name="acme-secret-model", deployments=[(objects["provider"], "mock-chat")], actor=Actor(user=alice)
    )
    erin_key, erin_secret = virtual_key_create(acme, name="erin-notebook", actor=Actor(user=erin))
    objects.update(erin_key=erin_key, erin_key_secret=erin_secret)
    objects.update({f"g_{k}": v for k, v in _populate(globex, bob, "globex").items()})
    objects["memberships"] = {m.user.email.split("@")[0]: m for m in Membership.objects.select_related("user")}
    return World(acme, globex, alice, dave, erin, charlie, bob, objects)
