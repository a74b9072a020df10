"""All the fixtures of the suite (the only conftest with fixtures; tests/e2e/conftest.py only marks).

Named people: Alice owns acme, Bob owns globex (`alice`, `bob` on the fake OpenAI upstream); the
console's `world` adds Dave (admin), Erin (member) and Charlie (viewer) in acme. Bob must never reach
anything of Alice's, and the other way round. Also: the fake OpenAI upstream, real gateway servers
(`gateway`, `gateway_factory`: only tests under tests/e2e may use them), ledger keys and invoice people.

Helpers that are not fixtures live in tests/helpers/ and tests/fakes/; test modules import those,
never each other or a conftest. Each run gets its own test databases and Redis databases: see
tests/isolation.py (GATEWAY_TEST_RUN).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest
from django.conf import settings
from django.test import Client

from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.azure_upstream import FakeAzure
from tests.fakes.bedrock_upstream import FakeBedrock
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.quoting_upstream import QuotingUpstream
from tests.helpers import ACME_MODELS, LOOPBACK, UPSTREAM_KEY, GatewayServer, SpareGateway, start_gateway, tenant_yaml
from tests.helpers.billing import People
from tests.helpers.people import World, build_world
from tests.isolation import RUN_ENV


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


# --- speed: what each test pays for, made cheap ------------------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def _fast_test_plumbing() -> Iterator[None]:
    """Two costs every test paid, for nothing a test checks:
    - A transactional test empties the database after itself (Django's flush): one TRUNCATE of every
      table, which PostgreSQL pays per table in files (about a second a test). The tables hold a few rows
      by then: DELETE them instead, in the same transaction, foreign keys checked at its end (Django's
      are deferrable).
    - Every httpx client (each openai SDK client a test makes) loaded the CA bundle again, 45 ms each;
      the tests talk plain HTTP on loopback, so one context serves them all."""
    from django.db.backends.postgresql.operations import DatabaseOperations
    from httpx._transports import default as httpx_transport

    flush, ssl_context = DatabaseOperations.sql_flush, httpx_transport.create_ssl_context

    def sql_flush(self, style, tables, *, reset_sequences=False, allow_cascade=False):
        if reset_sequences or not tables:
            return flush(self, style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade)
        return ["SET CONSTRAINTS ALL DEFERRED;", *(f"DELETE FROM {self.quote_name(t)};" for t in tables)]

    shared: dict = {}

    def create_ssl_context(verify=True, cert=None, trust_env=True):
        if verify is not True or cert is not None:
            return ssl_context(verify=verify, cert=cert, trust_env=trust_env)
        if trust_env not in shared:
            shared[trust_env] = ssl_context(verify=verify, cert=cert, trust_env=trust_env)
        return shared[trust_env]

    DatabaseOperations.sql_flush = sql_flush
    httpx_transport.create_ssl_context = create_ssl_context
    yield
    DatabaseOperations.sql_flush = flush
    httpx_transport.create_ssl_context = ssl_context


# --- per-run databases ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix) -> None:
    """test_<name>_gw0 becomes test_<name>_gw0_<run>: another run on this PostgreSQL never drops ours."""
    run = os.environ[RUN_ENV]  # set by tests/isolation.py
    for db in settings.DATABASES.values():
        name = db.get("TEST", {}).get("NAME")
        if not name:
            if db["ENGINE"] == "django.db.backends.sqlite3":
                continue  # in memory, per process
            name = f"test_{db['NAME']}"
        if name != ":memory:":
            db.setdefault("TEST", {})["NAME"] = f"{name}_{run}"


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker) -> Iterator[None]:
    """pytest-django's, and at the end: close the sessions this process's threads left open on its test
    database, or PostgreSQL refuses to drop it and, its name being this run's, nobody else ever would."""
    yield
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        )


@pytest.fixture(autouse=True)
def _test_settings(settings, request):
    # The fake upstreams live on loopback, which the gateway refuses by default (SSRF defence).
    settings.GATEWAY_PRIVATE_UPSTREAMS = LOOPBACK
    # Users made in this process are hashed fast: PBKDF2 at Django's cost took half a second per user,
    # seconds per test that builds the named people. Not in end-to-end tests: the gateway processes they
    # start keep the production hashers and must check the passwords this process sets.
    if request.node.get_closest_marker("e2e") is None:
        settings.PASSWORD_HASHERS = [
            "django.contrib.auth.hashers.MD5PasswordHasher",
            "django.contrib.auth.hashers.PBKDF2PasswordHasher",
        ]


# --- fake upstreams -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def fake_openai() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    yield server
    server.stop()


@pytest.fixture
def upstream(fake_openai: FakeOpenAI) -> FakeOpenAI:
    fake_openai.reset()
    return fake_openai


@pytest.fixture
def quoting_upstream() -> Iterator[QuotingUpstream]:
    server = QuotingUpstream().start()
    yield server
    server.stop()


# The provider fakes: one server per test module, reset for each test (`claude`, `azure`, `gemini`, `bedrock`).


@pytest.fixture(scope="module")
def fake_anthropic() -> Iterator[FakeAnthropic]:
    server = FakeAnthropic().start()
    yield server
    server.stop()


@pytest.fixture
def claude(fake_anthropic: FakeAnthropic) -> FakeAnthropic:
    fake_anthropic.reset()
    return fake_anthropic


@pytest.fixture(scope="module")
def fake_azure() -> Iterator[FakeAzure]:
    server = FakeAzure().start()
    yield server
    server.stop()


@pytest.fixture
def azure(fake_azure: FakeAzure) -> FakeAzure:
    fake_azure.reset()
    return fake_azure


@pytest.fixture(scope="module")
def fake_gemini() -> Iterator[FakeGemini]:
    server = FakeGemini().start()
    yield server
    server.stop()


@pytest.fixture
def gemini(fake_gemini: FakeGemini) -> FakeGemini:
    fake_gemini.reset()
    return fake_gemini


@pytest.fixture(scope="module")
def fake_bedrock() -> Iterator[FakeBedrock]:
    server = FakeBedrock().start()
    yield server
    server.stop()


@pytest.fixture
def bedrock(fake_bedrock: FakeBedrock) -> FakeBedrock:
    fake_bedrock.reset()
    return fake_bedrock


@pytest.fixture
def rds():
    """This process's Redis database, with the call log stream emptied before and after."""
    import redis

    from observability import stream

    client = redis.Redis.from_url(settings.REDIS_URL)
    client.delete(stream.stream_name())
    yield client
    client.delete(stream.stream_name())


# --- tenants and people on the fake OpenAI upstream -----------------------------------------------------


@pytest.fixture
def make_tenant(upstream: FakeOpenAI, monkeypatch) -> Callable:
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", UPSTREAM_KEY)

    def make(slug: str, models: dict[str, str] | None = None):
        from tenants.config import apply_config

        tenant, _changes = apply_config(tenant_yaml(slug, upstream.base_url, models))
        return tenant

    return make


@pytest.fixture
def acme(make_tenant):
    return make_tenant("acme", ACME_MODELS)


@pytest.fixture
def globex(make_tenant):
    return make_tenant("globex", {"globex-secret-model": "gpt-4o", "gpt-4o-mini": "gpt-4o-mini"})


@pytest.fixture
def alice(acme, django_user_model):
    from tenants.models import Membership, Role

    user = django_user_model.objects.create_user(username="alice", email="alice@acme.test", password="pw-alice-123!")
    Membership.objects.create(user=user, tenant=acme, role=Role.OWNER)
    return user


@pytest.fixture
def bob(globex, django_user_model):
    from tenants.models import Membership, Role

    user = django_user_model.objects.create_user(username="bob", email="bob@globex.test", password="pw-bob-123!")
    Membership.objects.create(user=user, tenant=globex, role=Role.OWNER)
    return user


@pytest.fixture
def mint() -> Callable:
    from tenants.audit import Actor
    from tenants.services import virtual_key_create

    def make(tenant, name: str = "app", **kwargs) -> str:
        _key, secret = virtual_key_create(tenant, name=name, actor=Actor.cli(), **kwargs)
        return secret

    return make


@pytest.fixture
def keys(acme, mint):
    """acme's keys "web" and "batch", for ledger and call-log rows (tests.helpers.billing.record)."""
    from tenants.models import VirtualKey

    mint(acme, name="web")
    mint(acme, name="batch")
    return VirtualKey.objects.get(name="web"), VirtualKey.objects.get(name="batch")


# --- the console's people (tests.helpers.people) --------------------------------------------------------


@pytest.fixture
def console_defaults(settings):
    """What console tests run with: fresh rate limits, fast password hashing, static files without a manifest.

    Modules ask for it with `pytestmark = pytest.mark.usefixtures("console_defaults")`: it empties the
    cache (this process's Redis database), which the end-to-end money tests share with running gateways.
    """
    # allauth keeps rate-limit counters in the cache (Redis), which outlives each test's transaction.
    from django.core.cache import cache

    cache.clear()
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # The production setting is ServeStatic's manifest storage, which needs collectstatic first.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.fixture
def world(db) -> World:
    return build_world()


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
    from tenants.audit import Actor
    from tenants.services import management_token_create

    def make(role: str, tenant=None) -> Client:
        tenant = tenant or world.acme
        owner = world.alice if tenant == world.acme else world.bob
        _token, secret = management_token_create(tenant, name=f"test-{role}", role=role, actor=Actor(user=owner))
        return Client(headers={"Authorization": f"Bearer {secret}"})

    return make


@pytest.fixture
def people(db, django_user_model, settings) -> People:
    """Two tenants and their people, without password hashing or providers: invoices need neither."""
    from tenants.models import Membership, Role, Tenant

    # Console pages render without collectstatic (the production storage needs its manifest).
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    acme = Tenant.objects.create(slug="acme", name="Acme Corp")
    globex = Tenant.objects.create(slug="globex", name="Globex")
    users = {}
    for name, tenant, role in (("alice", acme, Role.OWNER), ("erin", acme, Role.MEMBER), ("bob", globex, Role.OWNER)):
        users[name] = django_user_model.objects.create_user(username=name, email=f"{name}@{tenant.slug}.example")
        Membership.objects.create(user=users[name], tenant=tenant, role=role)
    return People(acme, globex, users["alice"], users["erin"], users["bob"])


# --- real gateway servers (tests/e2e only) ---------------------------------------------------------------


@pytest.fixture
def gateway_factory(request, transactional_db, tmp_path) -> Iterator[Callable[..., GatewayServer]]:
    if request.node.get_closest_marker("e2e") is None:
        pytest.fail("this test starts a gateway server: it belongs under tests/e2e/ (see tests/e2e/conftest.py)")
    servers: list[GatewayServer] = []

    def factory(**kwargs) -> GatewayServer:
        server = start_gateway(tmp_path, **kwargs)
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def spare_gateway(django_db_setup) -> Iterator[SpareGateway]:
    # Depends on the test database: the spare is stopped before the database is dropped.
    spare = SpareGateway()
    yield spare
    spare.close()


@pytest.fixture
def gateway(gateway_factory, spare_gateway) -> Iterator[GatewayServer]:
    server = spare_gateway.take()
    if server is None:
        yield gateway_factory()
        return
    yield server
    server.stop()
