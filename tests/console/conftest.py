"""Named people in two tenants.

acme: Alice (owner), Dave (admin), Erin (member), Charlie (viewer).
globex: Bob (owner). Bob must never see or touch anything of acme's, and the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from allauth.account.models import EmailAddress
from django.contrib.auth import get_user_model
from django.test import Client

from routing.models import ProviderKind
from routing.services import model_deployments_set, provider_upsert
from tenants.audit import Actor
from tenants.models import Membership, Role, Tenant
from tenants.services import invitation_create, management_token_create, virtual_key_create

PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    # allauth keeps rate-limit counters in the cache (Redis), which outlives each test's transaction.
    from django.core.cache import cache

    cache.clear()


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # The production setting is ServeStatic's manifest storage, which needs collectstatic first.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


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


@pytest.fixture
def world(db) -> World:
    return build_world()


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


@pytest.fixture
def client_as():
    def make(user) -> Client:
        client = Client()
        if user is not None:
            client.force_login(user)
        return client

    return make


@pytest.fixture
def api_as(world):
    """A DRF-less JSON client with a management token of the given role in the given tenant."""

    def make(role: str, tenant: Tenant | None = None) -> Client:
        tenant = tenant or world.acme
        owner = world.alice if tenant == world.acme else world.bob
        _token, secret = management_token_create(tenant, name=f"test-{role}", role=role, actor=Actor(user=owner))
        return Client(headers={"Authorization": f"Bearer {secret}"})

    return make


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "browser: drives Chromium through Playwright")


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """Say loudly when the browser test did not run, so a green run without Chromium is not mistaken."""
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if "BROWSER TESTS SKIPPED" in str(r.longrepr)]
    if skipped:
        terminalreporter.write_sep("!", "BROWSER TESTS SKIPPED", red=True, bold=True)
        terminalreporter.write_line(
            f"{len(skipped)} browser test(s) did not run: Chromium is not installed at /usr/bin/chromium. "
            "Install it with `apt-get install chromium` (.ci/run does).",
            red=True,
            bold=True,
        )
