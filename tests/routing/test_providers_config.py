"""Provider kinds (anthropic, azure, gemini, bedrock, extra headers): YAML, storage, loader,
console form and management API.

Alice runs acme: Claude, an Azure resource, Gemini, Bedrock and an OpenRouter account with extra headers.
"""

from __future__ import annotations

import json
import socket

import pytest
from django.db import connection
from django.urls import reverse

from gateway_project.common.money import shipped_prices
from gateway_project.common.redact import secrets_of
from proxy.loader import load_tenant
from routing.models import ModelDeployment, ProviderCredential
from tenants.config import ConfigError, apply_config, export_config
from tenants.models import Role, Tenant

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}

SECRETS = {
    "ANTHROPIC_API_KEY": "sk-ant-api03-alice-anthropic-secret",
    "AZURE_KEY": "azure-alice-0123456789abcdef",
    "GEMINI_API_KEY": "AIzaSy-alice-gemini-secret-key",
    "AWS_ACCESS_KEY_ID": "AKIAALICEEXAMPLE0001",
    "AWS_SECRET_ACCESS_KEY": "alice/aws/secret+access/key/EXAMPLEKEY",
    "AWS_SESSION_TOKEN": "alice-session-token-FwoGZXIvYXdzEXAMPLE",
    "OPENROUTER_KEY": "sk-or-v1-alice-openrouter-secret",
    "OPENROUTER_TITLE_TOKEN": "alice-title-token-secret-value",
}

ACME = """\
tenant: acme
name: Acme Corp
providers:
  - {name: claude, kind: anthropic, api_key: env:ANTHROPIC_API_KEY}
  - {name: azure-eu, kind: azure, base_url: https://acme.openai.azure.com, api_key: env:AZURE_KEY, api_version: "2024-10-21"}
  - {name: gemini, kind: gemini, api_key: env:GEMINI_API_KEY}
  - {name: aws, kind: bedrock, region: us-east-1, aws_access_key_id: env:AWS_ACCESS_KEY_ID,
     aws_secret_access_key: env:AWS_SECRET_ACCESS_KEY, aws_session_token: env:AWS_SESSION_TOKEN}
  - name: openrouter
    kind: openai-compatible
    base_url: https://openrouter.ai/api/v1
    api_key: env:OPENROUTER_KEY
    headers:
      X-Title: env:OPENROUTER_TITLE_TOKEN
      HTTP-Referer: https://acme.example
models:
  - name: gpt-4o-eu
    deployments:
      - {provider: azure-eu, model: my-gpt4o-deployment, base_model: gpt-4o}
  - name: claude
    deployments:
      - {provider: claude, model: claude-sonnet-4-5}
      - {provider: aws, model: us.anthropic.claude-sonnet-4-5-20250929-v1:0}
  - name: flash
    deployments:
      - {provider: gemini, model: gemini-2.5-flash}
      - {provider: openrouter, model: google/gemini-2.5-flash}
"""


@pytest.fixture(autouse=True)
def env(monkeypatch):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(autouse=True)
def public_dns(monkeypatch):
    # No network in tests: every provider host resolves to a public address (the SSRF guard resolves).
    real = socket.getaddrinfo

    def fake(host, *args, **kwargs):
        if host in ("localhost", "127.0.0.1"):
            return real(host, *args, **kwargs)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("104.18.7.192", 443))]

    monkeypatch.setattr(socket, "getaddrinfo", fake)


def raw_rows() -> str:
    """Everything stored for the providers, as the database holds it."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM routing_providercredential")
        return json.dumps(cursor.fetchall(), default=str)


# --- YAML ------------------------------------------------------------------------------------------


def test_every_kind_applies_and_exports_as_env_references_only():
    tenant, changes = apply_config(ACME)
    assert "+ provider aws" in changes and "+ model gpt-4o-eu" in changes
    exported = export_config(tenant)
    for secret in SECRETS.values():
        assert secret not in exported
    assert """\
- name: aws
  kind: bedrock
  region: us-east-1
  aws_access_key_id: env:AWS_ACCESS_KEY_ID
  aws_secret_access_key: env:AWS_SECRET_ACCESS_KEY
  aws_session_token: env:AWS_SESSION_TOKEN
- name: azure-eu
  kind: azure
  base_url: https://acme.openai.azure.com
  api_key: env:AZURE_KEY
  api_version: '2024-10-21'
- name: claude
  kind: anthropic
  base_url: https://api.anthropic.com
  api_key: env:ANTHROPIC_API_KEY
- name: gemini
  kind: gemini
  base_url: https://generativelanguage.googleapis.com
  api_key: env:GEMINI_API_KEY
- name: openrouter
  kind: openai-compatible
  base_url: https://openrouter.ai/api/v1
  api_key: env:OPENROUTER_KEY
  headers:
    HTTP-Referer: env:ACME_OPENROUTER_HEADER_HTTP_REFERER
    X-Title: env:OPENROUTER_TITLE_TOKEN
""" in exported.replace("providers:\n", "")
    assert "  - provider: azure-eu\n    model: my-gpt4o-deployment\n    base_model: gpt-4o\n" in exported


def test_the_export_applies_back_with_no_change():
    tenant, _ = apply_config(ACME)
    exported = export_config(tenant)
    # The literal header value is exported as a variable name: whoever re-applies provides it. Applying
    # it records the new source (env:), and from then on the file and the tenant agree.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ACME_OPENROUTER_HEADER_HTTP_REFERER", "https://acme.example")
        _tenant, changes = apply_config(exported)
        assert changes == ["~ provider openrouter"]
        assert export_config(tenant) == exported
        _tenant, changes = apply_config(exported)
    assert changes == []
    assert export_config(tenant) == exported


def test_a_file_of_env_references_applies_twice_with_no_change():
    text = ACME.replace("HTTP-Referer: https://acme.example", "HTTP-Referer: env:ANTHROPIC_API_KEY")
    tenant, _ = apply_config(text)
    _tenant, changes = apply_config(text)
    assert changes == []
    _tenant, changes = apply_config(export_config(tenant))
    assert changes == []


def test_a_file_without_the_new_fields_exports_as_before():
    text = "tenant: acme\nname: Acme Corp\nproviders:\n- name: local\n  kind: mock\nmodels:\n- name: m\n  deployments:\n  - provider: local\n    model: mock-chat\n"
    tenant, _ = apply_config(text)
    assert export_config(tenant) == text


def test_secrets_are_encrypted_at_rest():
    apply_config(ACME)
    stored = raw_rows()
    assert "env:AWS_SECRET_ACCESS_KEY" in stored  # the source is kept, for export
    for secret in SECRETS.values():
        assert secret not in stored
    aws = ProviderCredential.objects.get(name="aws")
    assert aws.secrets()["aws_secret_access_key"] == SECRETS["AWS_SECRET_ACCESS_KEY"]
    assert ProviderCredential.objects.get(name="openrouter").header_names == ["HTTP-Referer", "X-Title"]


def test_removing_a_header_or_the_session_token_from_the_file_removes_it():
    tenant, _ = apply_config(ACME)
    text = ACME.replace("      X-Title: env:OPENROUTER_TITLE_TOKEN\n", "").replace(
        ", aws_session_token: env:AWS_SESSION_TOKEN", ""
    )
    _tenant, changes = apply_config(text)
    assert "~ provider openrouter" in changes and "~ provider aws" in changes
    assert ProviderCredential.objects.get(name="openrouter").secrets()["headers"] == {
        "HTTP-Referer": "https://acme.example"
    }
    assert "aws_session_token" not in ProviderCredential.objects.get(name="aws").secrets()
    assert "aws_session_token" not in export_config(tenant)


def _with_provider(line: str) -> str:
    return f"tenant: acme\nproviders:\n{line}\n"


@pytest.mark.parametrize(
    ("provider", "expected"),
    [
        (
            "  - {name: p, kind: openai,\n     region: us-east-1}",
            "line 4, providers[0].region: unknown field 'region' for a openai provider",
        ),
        (
            "  - {name: p, kind: bedrock, region: us-east-1, api_key: x,\n     aws_access_key_id: a}",
            "providers[0].api_key",
        ),
        (
            "  - {name: p, kind: azure, base_url: https://x.openai.azure.com}",
            "line 3, providers[0].api_version: a azure provider needs api_version",
        ),
        ("  - {name: p, kind: azure, api_version: '2024-10-21'}", "providers[0].base_url: a azure provider needs"),
        (
            "  - {name: p, kind: bedrock, aws_access_key_id: a, aws_secret_access_key: b}",
            "providers[0].region: a bedrock provider needs region",
        ),
        (
            "  - {name: p, kind: bedrock, region: us-east-1, aws_access_key_id: a}",
            "providers[0].aws_secret_access_key: a bedrock provider needs",
        ),
        (
            "  - {name: p, kind: bedrock, region: evil.example/x, aws_access_key_id: a, aws_secret_access_key: b}",
            "providers[0].region: A region looks like us-east-1",
        ),
        (
            "  - {name: p, kind: azure, base_url: https://x.openai.azure.com, api_version: '1?x=y'}",
            "providers[0].api_version",
        ),
        (
            "  - name: p\n    kind: openai\n    headers:\n      Bad Name: x",
            "line 6, providers[0].headers.Bad Name: 'Bad Name' is not a valid HTTP header name",
        ),
        (
            '  - name: p\n    kind: openai\n    headers:\n      X-Ok: "a\\r\\nX-Evil: 1"',
            "line 6, providers[0].headers.X-Ok: the value of X-Ok must not contain line breaks",
        ),
        (
            "  - name: p\n    kind: openai\n    headers:\n      X-Ok: env:SPLIT_HEADER",
            "line 6, providers[0].headers.X-Ok: the value of X-Ok must not contain line breaks",
        ),
        (
            "  - name: p\n    kind: openai\n    headers:\n      Host: evil.example",
            "providers[0].headers.Host: Host is set by the gateway",
        ),
        (
            "  - name: p\n    kind: openai\n    headers:\n      X-A: a\n      x-a: b",
            "line 7, providers[0].headers.x-a: header x-a is given twice",
        ),
        ("  - name: p\n    kind: openai\n    headers: [a]", "line 5, providers[0].headers: expected a mapping"),
        ("  - {name: p, kind: mock, headers: {X-A: b}}", "providers[0].headers: unknown field 'headers' for a mock"),
    ],
)
def test_bad_provider_settings_fail_naming_the_line_and_field(monkeypatch, provider, expected):
    monkeypatch.setenv("SPLIT_HEADER", "value\r\nX-Injected: 1")
    with pytest.raises(ConfigError) as exc:
        apply_config(_with_provider(provider))
    assert expected in str(exc.value)
    assert not Tenant.objects.filter(slug="acme").exists()


def test_base_model_is_checked_and_optional():
    text = ACME.replace("base_model: gpt-4o}", "base_model: [gpt-4o]}")
    with pytest.raises(ConfigError, match=r"line 19, models\[0\].deployments\[0\].base_model: expected a string"):
        apply_config(text)


# --- Runtime config --------------------------------------------------------------------------------


def test_the_loader_builds_deployments_with_decrypted_settings_and_base_model_prices():
    tenant, _ = apply_config(ACME)
    entry = load_tenant(tenant.id)
    (azure,) = entry.models["gpt-4o-eu"]
    assert (azure.kind, azure.base_url, azure.api_key, azure.api_version) == (
        "azure",
        "https://acme.openai.azure.com",
        SECRETS["AZURE_KEY"],
        "2024-10-21",
    )
    # "my-gpt4o-deployment" has no price of its own: it is priced as gpt-4o.
    assert azure.base_model == "gpt-4o" and azure.price == shipped_prices()["gpt-4o"]
    claude, aws = entry.models["claude"]
    assert claude.base_url == "https://api.anthropic.com" and claude.api_key == SECRETS["ANTHROPIC_API_KEY"]
    assert aws.base_url == "https://bedrock-runtime.us-east-1.amazonaws.com" and aws.region == "us-east-1"
    assert (aws.aws_access_key_id, aws.aws_secret_access_key, aws.aws_session_token) == (
        SECRETS["AWS_ACCESS_KEY_ID"],
        SECRETS["AWS_SECRET_ACCESS_KEY"],
        SECRETS["AWS_SESSION_TOKEN"],
    )
    assert aws.price is not None  # found through the us. prefix and the version suffix
    _gemini, openrouter = entry.models["flash"]
    assert openrouter.extra_headers == {
        "X-Title": SECRETS["OPENROUTER_TITLE_TOKEN"],
        "HTTP-Referer": "https://acme.example",
    }
    assert SECRETS["OPENROUTER_TITLE_TOKEN"] in secrets_of(openrouter)


def test_an_unknown_base_model_leaves_the_deployment_unpriced():
    tenant, _ = apply_config(ACME.replace("base_model: gpt-4o}", "base_model: no-such-model}"))
    (azure,) = load_tenant(tenant.id).models["gpt-4o-eu"]
    assert azure.price is None


def test_a_changed_region_moves_bedrocks_host():
    tenant, _ = apply_config(ACME)
    apply_config(ACME.replace("region: us-east-1", "region: eu-central-1"))
    _claude, aws = load_tenant(tenant.id).models["claude"]
    assert aws.base_url == "https://bedrock-runtime.eu-central-1.amazonaws.com"


# --- Console ---------------------------------------------------------------------------------------


def url(view: str, **kwargs) -> str:
    return reverse(view, kwargs={"slug": "acme", **kwargs})


def test_alice_adds_a_bedrock_provider_in_the_console(world, client_as):
    client = client_as(world.alice)
    page = client.get(url("providers")).content.decode()
    assert 'data-kinds="bedrock"' in page and "data-provider-kind" in page
    response = client.post(
        url("providers"),
        {
            "name": "aws",
            "kind": "bedrock",
            "region": "us-west-2",
            "aws_access_key_id": "AKIACONSOLE000000001",
            "aws_secret_access_key": "console/secret/access/key/EXAMPLE",
            # Typed before switching the kind to bedrock: hidden, and ignored.
            "api_version": "2024-10-21",
            "api_key": "sk-typed-before-switching",
        },
        **HTMX,
    )
    assert "Added" in response.content.decode(), response.content.decode()
    aws = ProviderCredential.objects.get(tenant=world.acme, name="aws")
    assert (aws.kind, aws.region, aws.api_version, aws.api_key_encrypted, aws.base_url) == (
        "bedrock",
        "us-west-2",
        "",
        "",
        "",
    )
    assert aws.secrets() == {
        "aws_access_key_id": "AKIACONSOLE000000001",
        "aws_secret_access_key": "console/secret/access/key/EXAMPLE",
    }
    assert "console/secret" not in raw_rows()
    detail = client.get(url("provider-detail", provider_id=aws.id)).content.decode()
    assert "console/secret" not in detail and "AKIACONSOLE" not in detail
    assert "Stored and encrypted. Leave empty to keep it." in detail
    # Saving without retyping the secrets keeps them.
    client.post(url("provider-detail", provider_id=aws.id), {"kind": "bedrock", "region": "eu-west-1"}, **HTMX)
    aws.refresh_from_db()
    assert aws.region == "eu-west-1" and aws.secrets()["aws_secret_access_key"] == "console/secret/access/key/EXAMPLE"


def test_alice_adds_an_azure_provider_with_headers_in_the_console(world, client_as):
    client = client_as(world.alice)
    response = client.post(
        url("providers"),
        {
            "name": "azure-eu",
            "kind": "azure",
            "base_url": "https://acme.openai.azure.com",
            "api_key": "azure-console-key-0123456789",
            "api_version": "2024-10-21",
            "headers": "X-Team: search\r\nX-Trace-Token: trace-secret-value-123",
        },
        **HTMX,
    )
    assert "Added" in response.content.decode(), response.content.decode()
    azure = ProviderCredential.objects.get(tenant=world.acme, name="azure-eu")
    assert azure.api_version == "2024-10-21"
    assert azure.secrets()["headers"] == {"X-Team": "search", "X-Trace-Token": "trace-secret-value-123"}
    detail = client.get(url("provider-detail", provider_id=azure.id)).content.decode()
    assert "trace-secret-value-123" not in detail and "X-Trace-Token" in detail


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"kind": "azure", "base_url": "https://acme.openai.azure.com"}, "A azure provider needs api_version."),
        ({"kind": "bedrock", "region": "us-east-1"}, "A bedrock provider needs aws_access_key_id."),
        ({"kind": "openai", "headers": "Bad Header: x"}, "is not a valid HTTP header name"),
    ],
)
def test_the_console_form_shows_what_is_missing(world, client_as, data, message):
    response = client_as(world.alice).post(url("providers"), {"name": "p", **data}, **HTMX)
    assert message in response.content.decode()
    assert not ProviderCredential.objects.filter(tenant=world.acme, name="p").exists()


# --- Management API --------------------------------------------------------------------------------


def api_post(client, path: str, data: dict, method: str = "POST"):
    return client.generic(method, path, data=json.dumps(data), content_type="application/json")


def test_the_api_creates_a_bedrock_provider_without_returning_secrets(world, api_as):
    client = api_as(Role.ADMIN)
    response = api_post(
        client,
        "/api/v1/providers/",
        {
            "name": "aws",
            "kind": "bedrock",
            "region": "us-east-1",
            "aws_access_key_id": "AKIAAPI0000000000001",
            "aws_secret_access_key": "api/secret/access/key/EXAMPLE",
            "headers": {"X-Team": "api-header-secret-value"},
        },
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["region"] == "us-east-1" and body["aws_credentials_set"] is True and body["headers"] == ["X-Team"]
    text = response.content.decode() + client.get(f"/api/v1/providers/{body['id']}/").content.decode()
    assert "api/secret" not in text and "AKIAAPI" not in text and "api-header-secret-value" not in text
    # PATCH: the stored secrets stay unless given.
    response = api_post(client, f"/api/v1/providers/{body['id']}/", {"region": "eu-west-1"}, "PATCH")
    assert response.status_code == 200, response.content
    aws = ProviderCredential.objects.get(id=body["id"])
    assert aws.region == "eu-west-1" and aws.secrets()["aws_secret_access_key"] == "api/secret/access/key/EXAMPLE"


def test_the_api_creates_an_azure_provider_and_refuses_settings_of_other_kinds(world, api_as):
    client = api_as(Role.ADMIN)
    payload = {"name": "az", "kind": "azure", "base_url": "https://acme.openai.azure.com", "api_key": "k" * 20}
    response = api_post(client, "/api/v1/providers/", payload)
    assert response.status_code == 400 and "api_version" in response.json()["error"]["message"] + json.dumps(
        response.json()
    )
    response = api_post(client, "/api/v1/providers/", {**payload, "api_version": "2024-10-21"})
    assert response.status_code == 201 and response.json()["api_version"] == "2024-10-21"
    response = api_post(client, "/api/v1/providers/", {"name": "o", "kind": "openai", "region": "us-east-1"})
    assert response.status_code == 400 and "region is not a setting of a openai provider" in response.content.decode()
    response = api_post(client, "/api/v1/providers/", {"name": "h", "kind": "openai", "headers": {"X-A": "a\nb"}})
    assert response.status_code == 400 and "line breaks" in response.content.decode()


def test_a_kind_change_drops_the_old_kinds_secrets(world, api_as):
    client = api_as(Role.ADMIN)
    pid = api_post(
        client,
        "/api/v1/providers/",
        {
            "name": "aws",
            "kind": "bedrock",
            "region": "us-east-1",
            "aws_access_key_id": "a" * 20,
            "aws_secret_access_key": "b" * 30,
        },
    ).json()["id"]
    response = api_post(
        client, f"/api/v1/providers/{pid}/", {"kind": "anthropic", "api_key": "sk-ant-" + "c" * 20}, "PATCH"
    )
    assert response.status_code == 200, response.content
    provider = ProviderCredential.objects.get(id=pid)
    assert (provider.region, provider.secrets(), provider.base_url) == ("", {}, "https://api.anthropic.com")


def test_deployments_keep_their_base_model_when_an_editor_leaves_it_out(world):
    from routing.services import model_deployments_set
    from tenants.audit import Actor

    provider = world.objects["provider"]
    actor = Actor(user=world.alice)
    model_deployments_set(world.acme, model_name="m", deployments=[(provider, "custom", 1, "gpt-4o")], actor=actor)
    model_deployments_set(world.acme, model_name="m", deployments=[(provider, "custom", 2)], actor=actor)
    assert ModelDeployment.objects.get(tenant=world.acme, model_name="m").base_model == "gpt-4o"


def test_a_stored_keys_last_characters_are_escaped_on_the_provider_page(world, client_as):
    """A key ending in "<!--" would hide the rest of the page if its last four characters were raw HTML."""
    client = client_as(world.alice)
    client.post(
        url("providers"),
        {
            "name": "odd",
            "kind": "openai-compatible",
            "base_url": "https://api.odd.example/v1",
            "api_key": "sk-long-enough-ends<!--",
        },
        **HTMX,
    )
    odd = ProviderCredential.objects.get(tenant=world.acme, name="odd")
    assert odd.api_key_last4 == "<!--"
    detail = client.get(url("provider-detail", provider_id=odd.id)).content.decode()
    assert "<!--" not in detail.split("Stored and encrypted", 1)[1][:200]
    assert "&lt;!--" in detail
    listing = client.get(url("providers")).content.decode()
    assert "&lt;!--" in listing
